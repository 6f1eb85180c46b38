#!/bin/sh
# check_install.sh - make install / uninstall, seen from a user's side.
#   1. make install PREFIX=<tmp>/prefix: exactly our files land there, with relative symlinks.
#   2. examples/quickstart.c, built with nothing but `pkg-config --cflags --libs tiercache`,
#      links libtiercache.so.<major> from the prefix and runs from a temp dir.
#   3. The same program linked statically against libtiercache.a with `pkg-config --static`.
#   4. make uninstall with the same PREFIX leaves no file behind.
#   5. make install/uninstall PREFIX=/usr DESTDIR=<tmp>/dest: files land under DESTDIR/usr, the
#      .pc names /usr (not DESTDIR), and uninstall removes them all.
# Environment: MAKE (default make), B (build dir, default build), CC (default cc).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
MAKE=${MAKE:-make}
B=${B:-build}
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
# The quickstart would otherwise follow the caller's configuration.
unset TIERCACHE_CONFIG

start=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tc-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' HUP INT TERM

hdr=$top/include/tiercache.h
major=$(sed -n 's/^#define TC_VERSION_MAJOR \([0-9][0-9]*\).*/\1/p' "$hdr")
minor=$(sed -n 's/^#define TC_VERSION_MINOR \([0-9][0-9]*\).*/\1/p' "$hdr")
patch=$(sed -n 's/^#define TC_VERSION_PATCH \([0-9][0-9]*\).*/\1/p' "$hdr")
version=$major.$minor.$patch

fail() {
    echo "install: FAIL: $*" >&2
    exit 1
}

# run LOG CMD...: runs CMD with its output in LOG, shown only if CMD fails.
run() {
    log=$1
    shift
    if ! "$@" > "$log" 2>&1; then
        cat "$log" >&2
        fail "$* (exit status above)"
    fi
}

# mk PREFIX DESTDIR TARGET: every install path is given, so none comes from the caller's
# environment or make command line (a LIBDIR=/usr/lib64 there must not send files outside tmp).
mk() {
    run "$tmp/make.log" "$MAKE" -C "$top" --no-print-directory B="$B" PREFIX="$1" \
        EXEC_PREFIX="$1" LIBDIR="$1/lib" INCLUDEDIR="$1/include" BINDIR="$1/bin" \
        PKGCONFIGDIR="$1/lib/pkgconfig" DESTDIR="$2" "$3"
}

# expect_files ROOT: ROOT holds exactly the files we install (internal headers must not leak),
# with the shared library's symlinks relative so that a DESTDIR tree stays valid when moved.
expect_files() {
    r=$1
    printf '%s\n' bin/tiercache bin/tiercache-edge bin/tiercache-invalidator include/tiercache.h lib/libtiercache.a \
        "lib/libtiercache.so" \
        "lib/libtiercache.so.$major" "lib/libtiercache.so.$version" lib/pkgconfig/tiercache.pc \
        | sort > "$tmp/want"
    (cd "$r" && find . ! -type d | sed 's|^\./||' | sort) > "$tmp/got"
    if ! cmp -s "$tmp/want" "$tmp/got"; then
        comm -23 "$tmp/want" "$tmp/got" | sed 's/^/  missing: /' >&2
        comm -13 "$tmp/want" "$tmp/got" | sed 's/^/  extra: /' >&2
        fail "$r does not hold exactly the files we install"
    fi
    [ "$(readlink "$r/lib/libtiercache.so")" = "libtiercache.so.$major" ] ||
        fail "$r/lib/libtiercache.so should be a symlink to libtiercache.so.$major"
    [ "$(readlink "$r/lib/libtiercache.so.$major")" = "libtiercache.so.$version" ] ||
        fail "$r/lib/libtiercache.so.$major should be a symlink to libtiercache.so.$version"
    [ -x "$r/lib/libtiercache.so.$version" ] || fail "$r/lib/libtiercache.so.$version is not executable"
}

# expect_empty ROOT: after uninstall only (empty) directories may remain.
expect_empty() {
    left=$(find "$1" ! -type d)
    [ -z "$left" ] || fail "uninstall left files behind: $left"
}

# run_prog NAME PROG LD_LIBRARY_PATH: runs PROG in a fresh temp cwd (the quickstart writes
# tiercache.db there) and checks that it succeeds and prints $expect_line.
run_prog() {
    wd=$tmp/run-$1
    mkdir "$wd"
    st=0
    (cd "$wd" && LD_LIBRARY_PATH=$3 "$2") > "$wd.out" 2>&1 || st=$?
    if [ "$st" -ne 0 ]; then
        cat "$wd.out" >&2
        fail "the $1 build of $src_name exited with status $st"
    fi
    if ! grep -qxF "$expect_line" "$wd.out"; then
        cat "$wd.out" >&2
        fail "the $1 build of $src_name did not print '$expect_line'"
    fi
}

# ---- 1. install under a prefix ----------------------------------------------------------------
prefix=$tmp/prefix
mk "$prefix" "" install
expect_files "$prefix"

PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_PATH
pc_version=$("$PKG_CONFIG" --modversion tiercache) || fail "pkg-config does not find tiercache"
[ "$pc_version" = "$version" ] || fail "tiercache.pc says version $pc_version, the header $version"
[ "$("$PKG_CONFIG" --variable=libdir tiercache)" = "$prefix/lib" ] ||
    fail "tiercache.pc libdir is not $prefix/lib"

# ---- 2. a user's program, with pkg-config only -----------------------------------------------
# examples/quickstart.c is the program a new user copies first; it prints this line when done.
src=$top/examples/quickstart.c
[ -f "$src" ] || fail "$src is missing"
expect_line='quickstart: ok'
src_name=$(basename "$src")

cflags=$("$PKG_CONFIG" --cflags tiercache)
libs=$("$PKG_CONFIG" --libs tiercache)
# pkg-config output is a list of flags: split on purpose, here and below.
# shellcheck disable=SC2086
run "$tmp/cc.log" "$CC" $cflags -o "$tmp/prog-shared" "$src" $libs
readelf -d "$tmp/prog-shared" | grep -q "NEEDED.*\[libtiercache\.so\.$major\]" ||
    fail "the program does not need libtiercache.so.$major"
LD_LIBRARY_PATH=$prefix/lib ldd "$tmp/prog-shared" |
    grep -qF "libtiercache.so.$major => $prefix/lib/libtiercache.so.$major " ||
    fail "the program does not load libtiercache.so.$major from $prefix/lib"
run_prog shared "$tmp/prog-shared" "$prefix/lib"

# ---- 3. the same program, libtiercache linked statically -------------------------------------
# -l:libtiercache.a picks the archive over the .so beside it; its dependencies stay shared, which
# is what proves Requires.private and Libs.private name everything the archive needs.
static_libs=
for f in $("$PKG_CONFIG" --static --libs tiercache); do
    [ "$f" = -ltiercache ] && f=-l:libtiercache.a
    static_libs="$static_libs $f"
done
# shellcheck disable=SC2086
run "$tmp/cc.log" "$CC" $cflags -o "$tmp/prog-static" "$src" $static_libs
if readelf -d "$tmp/prog-static" | grep -q 'NEEDED.*libtiercache'; then
    fail "the static build still needs libtiercache.so"
fi
run_prog static "$tmp/prog-static" ""

# ---- 3b. the Python binding finds the installed library ----------------------------------------
if command -v python3 > /dev/null; then
    got=$(cd "$tmp" && TIERCACHE_LIB="$prefix/lib/libtiercache.so" \
        PYTHONPATH="$top/bindings/python" python3 -c 'import tiercache; print(tiercache.version())') ||
        fail "the Python binding could not load the installed library"
    [ "$got" = "$version" ] || fail "the Python binding loaded version '$got', not $version"
fi

# ---- 4. uninstall ----------------------------------------------------------------------------
mk "$prefix" "" uninstall
expect_empty "$prefix"
echo "install: PREFIX: 8 files, pkg-config finds $version; $src_name built with pkg-config" \
     "runs shared and static; uninstall leaves no file"

# ---- 5. staged install with DESTDIR ----------------------------------------------------------
dest=$tmp/dest
mk /usr "$dest" install
outside=$(cd "$dest" && find . ! -type d ! -path './usr/*')
[ -z "$outside" ] || fail "files outside DESTDIR/usr: $outside"
expect_files "$dest/usr"
pc=$dest/usr/lib/pkgconfig/tiercache.pc
grep -qx 'prefix=/usr' "$pc" || fail "the DESTDIR tiercache.pc does not say prefix=/usr"
grep -qx 'libdir=/usr/lib' "$pc" || fail "the DESTDIR tiercache.pc does not say libdir=/usr/lib"
if grep -qF "$tmp" "$pc"; then
    fail "tiercache.pc holds a temp path (DESTDIR or an earlier PREFIX): $(grep -F "$tmp" "$pc")"
fi
mk /usr "$dest" uninstall
expect_empty "$dest"
echo "install: DESTDIR: 8 files under DESTDIR/usr, tiercache.pc says /usr; uninstall leaves no file"

echo "install: ok ($(($(date +%s) - start))s)"
