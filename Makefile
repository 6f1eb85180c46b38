# libtiercache - top-level Makefile.
#   make            the shared and static libraries under build/
#   make check      every test (unit and integration suites, exports, install, examples)
#   make check-asan / check-tsan / check-valgrind   the same suite, instrumented
#   make demo       installs what is missing (as root), builds, runs the examples
#   make install PREFIX=/usr/local DESTDIR=   /  make uninstall

# The version lives once, in the header.
VER_MAJOR := $(shell sed -n 's/^\#define TC_VERSION_MAJOR \([0-9]*\).*/\1/p' include/tiercache.h)
VER_MINOR := $(shell sed -n 's/^\#define TC_VERSION_MINOR \([0-9]*\).*/\1/p' include/tiercache.h)
VER_PATCH := $(shell sed -n 's/^\#define TC_VERSION_PATCH \([0-9]*\).*/\1/p' include/tiercache.h)
VERSION   := $(VER_MAJOR).$(VER_MINOR).$(VER_PATCH)

PREFIX       ?= /usr/local
EXEC_PREFIX  ?= $(PREFIX)
LIBDIR       ?= $(EXEC_PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BINDIR       ?= $(EXEC_PREFIX)/bin

CC       ?= cc
PKG_CONFIG ?= pkg-config
B        ?= build
CFLAGS   ?= -O2 -g
WERROR   ?=
DEPS_PC  := hiredis jansson sqlite3 libpq libcurl libcrypto
DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(DEPS_PC) 2>/dev/null)
DEP_LIBS   := $(shell $(PKG_CONFIG) --libs $(DEPS_PC) 2>/dev/null) -lpthread

# Our flags are added to the user's, never instead of them.
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
        -Wformat=2 -Wno-unused-parameter $(WERROR)
REAL_CFLAGS   := -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(CFLAGS) \
                 -Iinclude $(DEP_CFLAGS)
REAL_LDFLAGS  := $(LDFLAGS)

SONAME   := libtiercache.so.$(VER_MAJOR)
SHLIB    := $(B)/libtiercache.so.$(VERSION)
STLIB    := $(B)/libtiercache.a
# One folder a layer (docs/architecture.md); make check-layers checks that they call down only.
LIB_SRC  := $(wildcard lib/*/*.c)
LIB_HDR  := $(wildcard lib/*/*.h)
LIB_OBJ  := $(patsubst lib/%.c,$(B)/obj/%.o,$(LIB_SRC))
# tests/coherence.c is a program of its own (make check-coherence), not a suite.
TEST_SRC := $(filter-out tests/coherence.c,$(wildcard tests/*.c))
TEST_BIN := $(B)/tests/check_tiercache
EX_SRC   := $(wildcard examples/*.c)
EX_BIN   := $(patsubst examples/%.c,$(B)/examples/%,$(EX_SRC))
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

.PHONY: all lib examples tools check check-layers check-unit check-exports check-install check-examples \
        check-python check-cli check-edge-server check-coherence check-asan check-tsan check-valgrind demo deps \
        install uninstall clean bench bench-build check-fuzz-replay fuzz FORCE

all: lib examples tools

lib: $(SHLIB) $(STLIB)

$(B)/obj/%.o: lib/%.c $(LIB_HDR) include/tiercache.h
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -c $< -o $@

$(SHLIB): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname=$(SONAME) -Wl,--no-undefined $(REAL_CFLAGS) -o $@ $^ \
	      $(REAL_LDFLAGS) $(DEP_LIBS)
	ln -sf libtiercache.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $(B)/libtiercache.so

$(STLIB): $(LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

examples: $(EX_BIN)

# The command-line tool; tiercache-invalidator is a link to it (it runs the invalidator).
TOOL_BIN := $(B)/bin/tiercache
tools: $(TOOL_BIN)
$(TOOL_BIN): tools/tiercache.c $(SHLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -o $@ $< -L$(B) -ltiercache -Wl,-rpath,'$$ORIGIN/..:$$ORIGIN/../lib' \
	      $(REAL_LDFLAGS)
	ln -sf tiercache $(B)/bin/tiercache-invalidator

# tiercache-edge (docs/edge-server.md): linked with the static library, since it uses the
# library's HTTP module (lib/http) as tc_put_http does.
EDGE_BIN := $(B)/bin/tiercache-edge
EDGE_SRC := $(wildcard tools/edge/*.c)
EDGE_LIBS := $(shell $(PKG_CONFIG) --libs libmicrohttpd libcurl 2>/dev/null)
tools: $(EDGE_BIN)
$(EDGE_BIN): $(EDGE_SRC) tools/edge/edge_server.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -o $@ $(EDGE_SRC) $(STLIB) $(REAL_LDFLAGS) $(EDGE_LIBS) \
	      $(DEP_LIBS)

# Examples link the shared library, as a user's program would, and what else they use:
# profile edits the SQLite file with plain SQL.
$(B)/examples/profile: EX_LIBS = $(shell $(PKG_CONFIG) --libs sqlite3 2>/dev/null)
$(B)/examples/dynamodb: EX_LIBS = $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null)
$(B)/examples/%: examples/%.c $(SHLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -o $@ $< -L$(B) -ltiercache -Wl,-rpath,'$$ORIGIN/..' $(REAL_LDFLAGS) \
	      $(EX_LIBS)

# Tests link the static library, so they can reach internal tc__ functions.
$(TEST_BIN): $(TEST_SRC) $(wildcard tests/*.h) $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ $(TEST_SRC) $(STLIB) $(REAL_LDFLAGS) \
	      $(CHECK_LIBS) $(DEP_LIBS)

BENCH_BIN := $(B)/bench/bench
$(BENCH_BIN): bench/bench.c bench/bench_util.h tests/harness.c tests/tc_test.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ bench/bench.c tests/harness.c $(STLIB) \
	      $(REAL_LDFLAGS) $(CHECK_LIBS) $(DEP_LIBS)

BENCH_EDGE_BIN := $(B)/bench/bench_edge
$(BENCH_EDGE_BIN): bench/bench_edge.c bench/bench_util.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -o $@ bench/bench_edge.c $(STLIB) $(REAL_LDFLAGS) $(DEP_LIBS) -lm

BENCH_REDIS_BIN := $(B)/bench/bench_redis
$(BENCH_REDIS_BIN): bench/bench_redis.c bench/bench_util.h tests/harness.c tests/tc_test.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ bench/bench_redis.c tests/harness.c $(STLIB) \
	      $(REAL_LDFLAGS) $(CHECK_LIBS) $(DEP_LIBS)

BENCH_STORE_BIN := $(B)/bench/bench_store
$(BENCH_STORE_BIN): bench/bench_store.c bench/bench_util.h tests/harness.c tests/pg_harness.c \
                    tests/tc_test.h tests/pg_harness.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ bench/bench_store.c tests/harness.c \
	      tests/pg_harness.c $(STLIB) $(REAL_LDFLAGS) $(CHECK_LIBS) $(DEP_LIBS)

BENCH_WT_BIN := $(B)/bench/bench_wt
$(BENCH_WT_BIN): bench/bench_wt.c bench/bench_util.h tests/harness.c tests/tc_test.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ bench/bench_wt.c tests/harness.c $(STLIB) \
	      $(REAL_LDFLAGS) $(CHECK_LIBS) $(DEP_LIBS) -lm

BENCH_COH_BIN := $(B)/bench/bench_coherence
$(BENCH_COH_BIN): bench/bench_coherence.c bench/bench_util.h tests/harness.c tests/pg_harness.c \
                  tests/tc_test.h tests/pg_harness.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ bench/bench_coherence.c tests/harness.c \
	      tests/pg_harness.c $(STLIB) $(REAL_LDFLAGS) $(CHECK_LIBS) $(DEP_LIBS)

BENCH_DDB_BIN := $(B)/bench/bench_ddb
$(BENCH_DDB_BIN): bench/bench_ddb.c bench/bench_util.h tests/harness.c tests/ddb_harness.c \
                  tests/tc_test.h tests/ddb_harness.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ bench/bench_ddb.c tests/harness.c \
	      tests/ddb_harness.c $(STLIB) $(REAL_LDFLAGS) $(CHECK_LIBS) $(DEP_LIBS)

BENCH_BINS := $(BENCH_BIN) $(BENCH_EDGE_BIN) $(BENCH_REDIS_BIN) $(BENCH_STORE_BIN) $(BENCH_WT_BIN) \
              $(BENCH_COH_BIN) $(BENCH_DDB_BIN)

# make check builds the benchmarks without running them, so that one that no longer compiles
# or links fails there, not later in somebody's make bench.
bench-build: $(BENCH_BINS)

bench: $(BENCH_BINS) $(EDGE_BIN)
	$(BENCH_BIN)
	sh bench/bench_caffeine.sh $(BENCH_EDGE_BIN)
	sh bench/bench_instr.sh $(BENCH_EDGE_BIN)
	$(BENCH_REDIS_BIN)
	$(BENCH_STORE_BIN)
	$(BENCH_WT_BIN)
	$(BENCH_COH_BIN)
	$(BENCH_DDB_BIN)
	sh bench/bench_edge_http.sh $(EDGE_BIN)

check: check-layers check-exports check-install check-examples check-python check-cli check-unit \
       check-edge-server check-coherence bench-build

# RFC 9111 conformance: real HTTP to a real tiercache-edge before a test origin, and two
# servers sharing a private redis-server (tests/edge/test_edge_server.py).
check-edge-server: $(EDGE_BIN)
	python3 tests/edge/test_edge_server.py $(EDGE_BIN) $$(command -v redis-server)

check-unit: $(TEST_BIN) check-fuzz-replay
	$(TEST_BIN)

# Fuzz targets (tests/fuzz/fuzz_NAME.c, corpus in tests/fuzz/corpus/NAME/). Every check replays
# the corpus through a plain driver, with whatever compiler and sanitizers the build uses
# (zstd tests/fuzz/regression_driver.c); `make fuzz` runs libFuzzer itself, with clang.
FUZZ_TARGETS := cache_control pattern record
FUZZ_REPLAY  := $(patsubst %,$(B)/tests/fuzz/replay_%,$(FUZZ_TARGETS))

$(B)/tests/fuzz/replay_%: tests/fuzz/replay.c tests/fuzz/fuzz_%.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -o $@ tests/fuzz/replay.c tests/fuzz/fuzz_$*.c $(STLIB) \
	      $(REAL_LDFLAGS) $(DEP_LIBS)

check-fuzz-replay: $(FUZZ_REPLAY)
	@set -e; for t in $(FUZZ_TARGETS); do \
	    echo "$(B)/tests/fuzz/replay_$$t tests/fuzz/corpus/$$t"; \
	    $(B)/tests/fuzz/replay_$$t tests/fuzz/corpus/$$t; \
	done

# make fuzz [FUZZ_TIME=seconds per target]. New inputs go to $(B)/fuzz/corpus_NAME (copy the
# interesting ones into tests/fuzz/corpus/NAME/), crashes to $(B)/fuzz/crash-*.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 60
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_SRC_cache_control := lib/http/cache_control.c
FUZZ_SRC_pattern       := lib/common/pattern.c lib/common/error.c
FUZZ_SRC_record        := lib/common/record.c

$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRC) $(LIB_HDR) include/tiercache.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iinclude -Ilib -o $@ $< $(FUZZ_SRC_$*)

fuzz: $(patsubst %,$(B)/fuzz/fuzz_%,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(B)/fuzz/corpus_$$t; \
	    $(B)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_TIME) -max_len=4096 \
	        -artifact_prefix=$(B)/fuzz/ $(B)/fuzz/corpus_$$t tests/fuzz/corpus/$$t; \
	done

# The layers of lib/ call down only, with no circle and no oversized file or function
# (tests/check_layers.py says the rules); the self-test plants faults in a copy and wants them
# caught.
check-layers:
	python3 tests/check_layers.py lib
	python3 tests/check_layers.py --self-test lib

check-exports: $(SHLIB)
	sh tests/check_exports.sh $(SHLIB)

# The script runs make install/uninstall itself; naming $(MAKE) here lets that inner make share
# the jobserver and this make's B.
check-install: lib
	MAKE='$(MAKE)' B='$(B)' sh tests/check_install.sh

check-examples: examples
	sh tests/check_examples.sh $(B)

check-cli: tools
	sh tests/check_cli.sh $(B)

# The coherence test: readers, writers (library and plain SQL) and the real invalidator program
# in separate processes against a private Redis and store, the invalidator killed and Redis
# restarted midway; checks that no acknowledged write is lost and no read is stale past a bound.
COHERENCE_BIN := $(B)/tests/coherence
$(COHERENCE_BIN): tests/coherence.c tests/harness.c tests/pg_harness.c tests/ddb_harness.c \
                  tests/tc_test.h tests/pg_harness.h tests/ddb_harness.h $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(REAL_CFLAGS) -Ilib -Itests -o $@ tests/coherence.c tests/harness.c \
	      tests/pg_harness.c tests/ddb_harness.c $(STLIB) $(REAL_LDFLAGS) $(CHECK_LIBS) \
	      $(DEP_LIBS)

# Every store with a change feed. PostgreSQL was left out while a tc_put racing a plain-SQL DELETE of the same key
# could commit after it with a lower version (check 1, "versions increase", failed about 2 runs
# in 5); store_pg.c now draws every version under a per-table lock held until commit.
COHERENCE_STORES := sqlite postgres dynamodb
check-coherence: $(COHERENCE_BIN) tools
	@set -e; for s in $(COHERENCE_STORES); do \
	    echo "$(COHERENCE_BIN) --store $$s"; $(COHERENCE_BIN) --store $$s; \
	done

# The Python binding (bindings/python, the tiercache package, ctypes) installed into a fresh venv
# and tested there against this build's library; then the Python story in examples/python. The
# venv is made by the system's python3 with its site packages, so that pip builds the package
# with the system's setuptools and wheel, no package index needed (scripts/deps.sh installs
# them); PY_VENV_PYTHON picks another interpreter.
PY_VENV_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
PY_VENV := $(B)/py-venv
check-python: $(SHLIB)
	rm -rf $(PY_VENV)
	$(PY_VENV_PYTHON) -m venv --system-site-packages $(PY_VENV)
	$(PY_VENV)/bin/python -m pip install -q --no-build-isolation --no-index ./bindings/python
	TCT_PYTHON_VENV=$(CURDIR)/$(PY_VENV) $(PY_VENV)/bin/python tests/check_python.py $(SHLIB)
	cd $(B) && TIERCACHE_LIB=$(CURDIR)/$(SHLIB) $(CURDIR)/$(PY_VENV)/bin/python \
	    $(CURDIR)/examples/python/quickstart.py

# Sanitizer builds live in their own folders so they never mix objects with the normal build.
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer
check-asan:
	$(MAKE) B=build-asan CFLAGS="$(SAN_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" check-unit check-examples check-edge-server
check-tsan:
	$(MAKE) B=build-tsan CFLAGS="$(SAN_FLAGS) -fsanitize=thread" LDFLAGS="-fsanitize=thread" \
	    check-unit
check-valgrind: $(TEST_BIN) $(FUZZ_REPLAY)
	CK_FORK=no CK_DEFAULT_TIMEOUT=120 valgrind --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite --show-leak-kinds=definite -q $(TEST_BIN)
	TCT_EDGE_WRAP="valgrind -q --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite" $(MAKE) check-edge-server
	set -e; for t in $(FUZZ_TARGETS); do \
	    valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q \
	        $(B)/tests/fuzz/replay_$$t tests/fuzz/corpus/$$t; \
	done

deps:
	sh scripts/deps.sh

demo: deps
	$(MAKE) all
	sh scripts/demo.sh $(B)

# tiercache.pc bakes in the install paths, so it is rendered again whenever they change, not only
# when its template does: $(B)/tiercache.pc.vars keeps the values of the last rendering and is
# rewritten only when they differ (git's GIT-CFLAGS idiom).
PC_VARS := prefix=$(PREFIX) libdir=$(LIBDIR) includedir=$(INCLUDEDIR) version=$(VERSION)
$(B)/tiercache.pc.vars: FORCE
	@mkdir -p $(@D)
	@echo '$(PC_VARS)' | cmp -s - $@ || echo '$(PC_VARS)' > $@

$(B)/tiercache.pc: pkgconfig/tiercache.pc.in $(B)/tiercache.pc.vars
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' $< > $@

install: lib tools $(B)/tiercache.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(BINDIR)
	install -m 755 $(TOOL_BIN) $(DESTDIR)$(BINDIR)/
	install -m 755 $(EDGE_BIN) $(DESTDIR)$(BINDIR)/
	ln -sf tiercache $(DESTDIR)$(BINDIR)/tiercache-invalidator
	install -m 644 include/tiercache.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libtiercache.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libtiercache.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(B)/tiercache.pc $(DESTDIR)$(PKGCONFIGDIR)/

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/tiercache.h $(DESTDIR)$(LIBDIR)/libtiercache.so \
	      $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libtiercache.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/libtiercache.a $(DESTDIR)$(PKGCONFIGDIR)/tiercache.pc \
	      $(DESTDIR)$(BINDIR)/tiercache $(DESTDIR)$(BINDIR)/tiercache-invalidator \
	      $(DESTDIR)$(BINDIR)/tiercache-edge

clean:
	rm -rf build build-asan build-tsan
