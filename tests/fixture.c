/*
 * fixture.c - what the integration suites share: a redis-server per TCase, a fresh temp dir
 * per test, and opening caches.
 */
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cache.h"
#include "tc_test.h"

tct_redis tct_srv;
char tct_dir[256];

void tct_srv_up(void)
{
    ck_assert_msg(tct_redis_start(&tct_srv) == 0, "cannot start redis-server");
}

void tct_srv_down(void)
{
    tct_redis_stop(&tct_srv);
    tct_srv.port = 0; /* a later TCase without a server flushes nothing */
}

void tct_dir_setup(void)
{
    ck_assert_int_eq(tct_tmpdir(tct_dir, sizeof tct_dir), 0);
    if (tct_srv.port > 0) {
        const char *flush[] = {"FLUSHALL", NULL};
        free(tct_redis_cmd(&tct_srv, flush));
    }
}

void tct_dir_teardown(void)
{
    tct_run_deferred(); /* before the files its threads may use go */
    tct_rmrf(tct_dir);
}

tc_cache *tct_open(const char *dir, const char *name, int redis_port, const char *extra_json)
{
    tc_config *cfg;
    char path[512];
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    snprintf(path, sizeof path, "%s/%s.db", dir, name);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.path", path), TC_OK);
    if (redis_port > 0) {
        ck_assert_int_eq(tc_config_set_string(cfg, "redis.host", "127.0.0.1"), TC_OK);
        ck_assert_int_eq(tc_config_set_int(cfg, "redis.port", redis_port), TC_OK);
        ck_assert_int_eq(tc_config_set_int(cfg, "redis.retry_interval_ms", 0), TC_OK);
    }
    if (extra_json != NULL)
        ck_assert_msg(tc_config_load_json(cfg, extra_json, strlen(extra_json)) == TC_OK, "%s",
                      tc_config_errmsg(cfg));
    tc_cache *c = NULL;
    int rc = tc_open(&c, cfg);
    ck_assert_msg(rc == TC_OK, "tc_open: %s", tc_errmsg(NULL));
    tc_config_free(cfg);
    return c;
}

long long tct_stat(tc_cache *c, const char *section, const char *field)
{
    char *text;
    ck_assert_int_eq(tc_stats_json(&text, c), TC_OK);
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    ck_assert_msg(root != NULL, "stats are not JSON: %s", text);
    json_t *v = json_object_get(json_object_get(root, section), field);
    ck_assert_msg(json_is_integer(v), "stats lack %s.%s: %s", section, field, text);
    long long n = json_integer_value(v);
    json_decref(root);
    tc_free(text);
    return n;
}

void tct_sql(const char *path, const char *stmt)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000); /* as any program sharing the file would */
    char *err = NULL;
    int rc = sqlite3_exec(db, stmt, NULL, NULL, &err);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", stmt, err ? err : "?");
    sqlite3_close(db);
}

void tct_wait_edge(tc_cache *c)
{
    for (int waited = 0; waited < 10000; waited += 10) {
        ck_assert_int_eq(tc_put(c, "tct:probe", 9, "p", 1, 0), TC_OK);
        void *v = NULL;
        size_t len;
        unsigned info = 0;
        int rc = tc_get_ex(&v, &len, &info, NULL, c, "tct:probe", 9);
        tc_free(v);
        if (rc == TC_OK && (info & 0xff) == TC_SOURCE_EDGE)
            return;
        tct_sleep_ms(10);
    }
    ck_abort_msg("the handle's edge did not come into use within 10 s (bus not subscribed?)");
}

/* ---- counting store reads, across forked children ------------------------------------------ */

static atomic_int *store_reads; /* MAP_SHARED: children count into it too */
static atomic_int store_read_ms;

static void count_store_read(tc_cache *c, const char *key, size_t key_len)
{
    atomic_fetch_add(store_reads, 1);
    if (atomic_load(&store_read_ms) > 0)
        tct_sleep_ms(atomic_load(&store_read_ms));
}

void tct_count_store_reads(int delay_ms)
{
    store_reads = mmap(NULL, sizeof *store_reads, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(store_reads, MAP_FAILED);
    atomic_store(store_reads, 0);
    atomic_store(&store_read_ms, delay_ms);
    atomic_store(&tc__hook_before_store_read, count_store_read);
}

int tct_store_reads(void)
{
    return atomic_load(store_reads);
}

void tct_count_store_reads_off(void)
{
    atomic_store(&tc__hook_before_store_read, NULL);
    munmap(store_reads, sizeof *store_reads);
}

/* ---- store reads held in the hook ---------------------------------------------------------- */

static pid_t hold_pid;
static atomic_int holding, held;
static _Atomic(tct_fork_hook) hold_fork_hook;

static void hold_store_read(tc_cache *c, const char *key, size_t key_len)
{
    if (getpid() != hold_pid)
        return; /* a forked child's reads go through */
    tct_fork_hook f = atomic_exchange(&hold_fork_hook, NULL);
    if (f != NULL) {
        f(c, key, key_len);
        if (getpid() != hold_pid)
            return; /* the child of a fork made on this thread: its read goes on */
    }
    atomic_fetch_add(&held, 1);
    while (atomic_load(&holding))
        tct_sleep_ms(1);
}

static void hook_off(void *arg)
{
    atomic_store(&tc__hook_before_store_read, NULL);
    atomic_store(&hold_fork_hook, NULL);
}

static void release_undo(void *arg)
{
    tct_hold_release();
}

void tct_hold_begin(void)
{
    hold_pid = getpid();
    atomic_store(&holding, 1);
    atomic_store(&held, 0);
    atomic_store(&hold_fork_hook, NULL);
    atomic_store(&tc__hook_before_store_read, hold_store_read);
    tct_defer(hook_off, NULL); /* first registered, so run last: after the threads left it */
}

void tct_hold_threads_started(void)
{
    tct_defer(release_undo, NULL); /* run before the threads' stops, which wait for them */
}

void tct_hold_pass(void)
{
    atomic_store(&holding, 0);
}

void tct_hold_fork_hook(tct_fork_hook f)
{
    atomic_store(&hold_fork_hook, f);
}

void tct_wait_held(int n)
{
    long long deadline = tct_mono_ms() + 20000;
    while (atomic_load(&held) < n && tct_mono_ms() < deadline)
        tct_sleep_ms(1);
    int now = atomic_load(&held);
    ck_assert_msg(now >= n, "%d store reads held, want %d", now, n);
}

void tct_hold_release(void)
{
    atomic_store(&holding, 0);
}

pid_t tct_hold_pid(void)
{
    return hold_pid;
}

/* ---- a burst of misses across processes ---------------------------------------------------- */

typedef struct burst {
    tc_cache *c;
    const char *key, *want;
} burst;

static void *burst_read(void *p)
{
    const burst *b = p;
    void *v = NULL;
    size_t len = 0;
    int rc = tc_get(&v, &len, b->c, b->key, strlen(b->key));
    int ok = rc == TC_OK && len == strlen(b->want) && memcmp(v, b->want, len) == 0;
    tc_free(v);
    return ok ? NULL : (void *)1;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A child: its own handle, threads readers released together at start_ms. Plain checks only (no
 * ck_assert in a child): the exit status tells. */
static int burst_child(tc_cache *(*open)(void *), void *ctx, int threads, int64_t start_ms,
                       const char *key, const char *want)
{
    tc_cache *c = open(ctx);
    if (c == NULL)
        return 100;
    int64_t now = wall_ms();
    if (start_ms > now)
        tct_sleep_ms((int)(start_ms - now));
    pthread_t t[64];
    burst b = {c, key, want};
    int bad = 0, n = threads < 64 ? threads : 64;
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, burst_read, &b);
    for (int i = 0; i < n; i++) {
        void *res;
        pthread_join(t[i], &res);
        bad += res != NULL;
    }
    tc_close(c);
    return bad;
}

void tct_burst(tc_cache *(*open)(void *ctx), void *ctx, int procs, int threads, const char *key,
               const char *want)
{
    int64_t start = wall_ms() + 1000; /* every child open and waiting */
    pid_t pid[16];
    ck_assert_int_le(procs, 16);
    for (int i = 0; i < procs; i++) {
        pid[i] = fork();
        ck_assert_int_ge(pid[i], 0);
        if (pid[i] == 0)
            _exit(burst_child(open, ctx, threads, start, key, want));
    }
    for (int i = 0; i < procs; i++) {
        int st;
        ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %d", i, st);
    }
}

/* ---- concurrent misses in one process ------------------------------------------------------ */

typedef struct stampede {
    tc_cache *c;
    const char *key;
    atomic_int *go;
    int rc;
    char value[16];
} stampede;

static void *stampede_reader(void *arg)
{
    stampede *s = arg;
    while (!atomic_load(s->go))
        sched_yield();
    void *v = NULL;
    size_t len = 0;
    s->rc = tc_get(&v, &len, s->c, s->key, strlen(s->key));
    if (s->rc == TC_OK) {
        snprintf(s->value, sizeof s->value, "%.*s", (int)len, (char *)v);
        tc_free(v);
    }
    return NULL;
}

void tct_stampede(tc_cache *c, const char *key, int want_rc, const char *want)
{
    enum { N = 8 };
    atomic_int go = 0;
    stampede s[N];
    pthread_t t[N];
    tct_count_store_reads(200); /* every other reader arrives while this one reads */
    for (int i = 0; i < N; i++) {
        s[i] = (stampede){.c = c, .key = key, .go = &go};
        ck_assert_int_eq(pthread_create(&t[i], NULL, stampede_reader, &s[i]), 0);
    }
    atomic_store(&go, 1);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    int n = tct_store_reads();
    tct_count_store_reads_off();
    ck_assert_int_eq(n, 1);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(s[i].rc, want_rc);
        if (want != NULL)
            ck_assert_str_eq(s[i].value, want);
    }
}
