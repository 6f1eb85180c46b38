/*
 * tc_test.h - what the test suites share: the suites' constructors and a harness that starts a
 * private redis-server on a free loopback port in a temp dir.
 */
#ifndef TC_TEST_H
#define TC_TEST_H

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "tiercache.h"

Suite *error_suite(void);
Suite *config_suite(void);
Suite *edge_suite(void);
Suite *store_suite(void);
Suite *group_suite(void);
Suite *redis_suite(void);
Suite *autopipe_suite(void);
Suite *cluster_suite(void);
Suite *cache_suite(void);
Suite *shared_suite(void);
Suite *cache_control_suite(void);
Suite *pattern_suite(void);
Suite *http_suite(void);
Suite *structs_suite(void);
Suite *pubsub_suite(void);
Suite *bus_suite(void);
Suite *userstore_suite(void);
Suite *writethrough_suite(void);
Suite *feed_suite(void);
Suite *pg_suite(void);
Suite *pgwt_suite(void);
Suite *sigv4_suite(void);
Suite *ddb_suite(void);
/* check_bus.c: the second process of the bus test (check_main.c runs it when TCT_BUS_PEER is
 * set); returns the exit status. */
int tct_bus_peer_main(const char *spec);
/* The test program's own path (check_main.c), to run it again. */
extern const char *tct_self_path;

/* A private redis-server. */
typedef struct tct_redis {
    pid_t pid;
    int port;
    char dir[256];
} tct_redis;

/* Starts redis-server (no persistence) on 127.0.0.1 at a free port, in a fresh temp dir, and
 * waits until it answers PING. 0 on success. */
int tct_redis_start(tct_redis *r);
/* tct_redis_start with extra_conf_lines (NULL for none; lines separated by '\n', e.g.
 * "requirepass sekret" or ACL "user ..." lines) written to dir/redis.conf, which the server
 * reads before its command-line options. A server that wants AUTH counts as up when it answers
 * NOAUTH. */
int tct_redis_start_conf(tct_redis *r, const char *extra_conf_lines);
/* Replaces dir/redis.conf (NULL or "": removes it) for the next tct_redis_restart. 0 on
 * success. */
int tct_redis_write_conf(const tct_redis *r, const char *lines);
/* SIGKILLs it (a crash); the port and dir stay reserved for tct_redis_restart. */
void tct_redis_kill(tct_redis *r);
/* Starts it again on the same port after a kill. 0 on success. */
int tct_redis_restart(tct_redis *r);
/* Stops it (if running) and removes its dir. */
void tct_redis_stop(tct_redis *r);
/* Runs one command given as a NUL-terminated argv against it; returns the reply as a malloc'd
 * string ("(nil)", integers in decimal, errors as "ERR ...", arrays joined by '\n'), or NULL if
 * unreachable. For assertions on what Redis really holds. */
char *tct_redis_cmd(const tct_redis *r, const char *const *argv);
/* tct_redis_cmd after AUTH [user] pass on the same connection (pass NULL: no AUTH, user NULL:
 * AUTH pass alone). A failed AUTH returns the AUTH error instead of running argv. */
char *tct_redis_cmd_auth(const tct_redis *r, const char *user, const char *pass,
                         const char *const *argv);

/* A server child the harness started in dir: at this process's exit it is stopped with sig
 * and dir removed, unless tct_untrack_server(dir) came first (the harnesses' own stops). */
void tct_track_server(pid_t server, const char *dir, int sig);
void tct_untrack_server(const char *dir);
/* A loopback TCP port nobody listens on right now (bind port 0), or -1; someone may take it
 * before the caller binds it, so a caller retries a failed start with a new one. */
int tct_free_port(void);
/* CLOCK_MONOTONIC in milliseconds, for deadlines. */
long long tct_mono_ms(void);

/* A fresh temp dir (mkdtemp) in out; 0 on success. tct_rmrf removes a tree. */
int tct_tmpdir(char *out, size_t size);
void tct_rmrf(const char *path);

/* 1 under ThreadSanitizer, which refuses to start a thread in the child of a multi-threaded
 * process (die_after_fork): such a child does only what needs no thread. */
#if defined(__SANITIZE_THREAD__)
#define TCT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TCT_TSAN 1
#endif
#endif
#ifndef TCT_TSAN
#define TCT_TSAN 0
#endif

/* In a fork()ed test child: SIGALRM back to its default (Check handles it) and an alarm of
 * seconds, so that a hang fails the test instead of stalling the suite. */
void tct_child_alarm(unsigned seconds);
/* Waits for a test child; 0 if it exited with status 0, else its wait status (or -1). */
int tct_child_status(pid_t pid);
/* Forks a child that runs fn(arg) and, if it returns 0, stays alive (paused, under a 30 s
 * alarm) holding what fn took, until killed; returns its pid once fn has returned 0 there.
 * Fails the test if the fork fails or fn does not return 0. */
pid_t tct_fork_holding(int (*fn)(void *), void *arg);

/* ---- harness.c: undone in every outcome ---- */
/* A test that starts a thread or a process, or sets a hook, registers how to undo it. Under
 * CK_FORK=no (valgrind) a failed assertion leaves the test function at once, and a thread it
 * started would spin on through the rest of the suite; the checked teardowns (tct_dir_teardown
 * and the suites' own) call tct_run_deferred after every test, passed or failed, which runs what
 * is registered, newest first, and forgets it. An undo must be safe to run after the test undid
 * the same thing itself (tct_thread_stop is). At most 32 at once: more fails the test. */
typedef void (*tct_undo_fn)(void *arg);
void tct_defer(tct_undo_fn fn, void *arg);
void tct_run_deferred(void);
/* A thread that runs until told to stop: fn is called with the tct_thread itself, whose arg is
 * the arg given, and loops while !atomic_load(&t->stop). Started by tct_thread_start (fails the
 * test if it cannot; returns once the thread runs fn, so a fork() that follows never overlaps
 * its start-up), stopped by tct_thread_stop (sets stop, joins; returns fn's result, or NULL if
 * it was stopped already), which tct_run_deferred also calls. */
typedef struct tct_thread {
    pthread_t th;
    void *(*fn)(void *);
    void *arg;
    atomic_int stop;
    atomic_int entered; /* set by the thread as it enters fn */
    int running;
    void *result;
} tct_thread;
void tct_thread_start(tct_thread *t, void *(*fn)(void *), void *arg);
void *tct_thread_stop(tct_thread *t);

/* ---- fixture.c: caches for integration tests ---- */
/* The fixtures most integration suites share: tct_srv_up/down as a TCase's unchecked
 * fixture (one redis-server in the runner for the TCase's tests), tct_dir_setup/teardown as
 * its checked fixture (a fresh tct_dir per test, and tct_srv flushed when it runs). */
extern tct_redis tct_srv;
extern char tct_dir[256];
void tct_srv_up(void);
void tct_srv_down(void);
void tct_dir_setup(void);
void tct_dir_teardown(void);
/* Opens a cache on a SQLite file dir/name.db; with Redis at port (0: no Redis tier); extra is
 * a JSON object whose members are applied after those (NULL for none). Fails the test on error. */
tc_cache *tct_open(const char *dir, const char *name, int redis_port, const char *extra_json);
/* Counts the reads that go to the store (tc__hook_before_store_read), in this process and in
 * children forked after the call, each taking delay_ms first; _off removes the hook. */
void tct_count_store_reads(int delay_ms);
int tct_store_reads(void);
void tct_count_store_reads_off(void);
/* 8 threads miss on key at once while the store read takes 200 ms: exactly one store read,
 * and every reader gets want_rc (and, for TC_OK, the value want). Fails the test otherwise. */
void tct_stampede(tc_cache *c, const char *key, int want_rc, const char *want);
/* A burst of misses: procs forked processes, each opening its own handle with open(ctx) (which
 * returns NULL on failure; it runs in the child) and reading key with threads threads (at most
 * 64) released together; every read must return want. Fails the test otherwise. No handle may
 * be open in the calling process. */
void tct_burst(tc_cache *(*open)(void *ctx), void *ctx, int procs, int threads, const char *key,
               const char *want);
/* A JSON integer field of tc_stats_json, e.g. tct_stat(c, "redis", "connects"). */
long long tct_stat(tc_cache *c, const char *section, const char *field);
/* Runs one SQL statement on the SQLite file at path, as another program would; fails the test
 * on error. */
void tct_sql(const char *path, const char *stmt);
/* Waits (up to 10 s, else fails the test) until c's edge serves: with Redis and the bus on, the
 * edge is neither read nor filled until the bus subscription is up. Writes a probe key. */
void tct_wait_edge(tc_cache *c);
/* Store reads held (tc__hook_before_store_read), to fork while a reader is parked between its
 * flight's join and its landing, with its lease taken if it has one. tct_hold_begin: from now
 * on, every store read made in this process waits in the hook until tct_hold_release (a forked
 * child's go through at once); the teardown removes the hook. A test starts its reader threads,
 * then calls tct_hold_threads_started (so that the teardown releases them before it joins
 * them) and tct_wait_held(n) (n reads are parked; fails the test after 20 s). tct_hold_pass:
 * reads go through again, hook kept. tct_hold_fork_hook(f): the next read to reach the hook
 * calls f(cache, key, key_len) first, on its own thread (to fork there); the hook then lets a
 * child's read go on. tct_hold_pid: the process that called tct_hold_begin. */
typedef void (*tct_fork_hook)(tc_cache *c, const char *key, size_t key_len);
void tct_hold_begin(void);
void tct_hold_threads_started(void);
void tct_wait_held(int n);
void tct_hold_pass(void);
void tct_hold_fork_hook(tct_fork_hook f);
void tct_hold_release(void);
pid_t tct_hold_pid(void);
/* Sleeps ms milliseconds (harness.c). */
void tct_sleep_ms(int ms);

/* ---- harness.c: fork() under AddressSanitizer ---- */
/* GCC 12's AddressSanitizer (Debian 12's) does not lock its allocator around fork(), as glibc's
 * malloc, TSan and valgrind do: a child forked while another thread was inside malloc waits on
 * ASan's lock forever. A test thread that calls into the library while another thread forks
 * wraps each call in tct_fork_quiet_enter/leave: under ASan the fork then waits until no such
 * call is running (a writer-preferring lock, taken by an atfork handler); in every other build
 * they do nothing, so the plain, TSan and valgrind runs fork in the middle of those calls.
 * tct_fork_quiet_init is called once by the forking thread before it starts those threads. */
void tct_fork_quiet_init(void);
void tct_fork_quiet_enter(void);
void tct_fork_quiet_leave(void);

#endif
