/*
 * check_shared.c - the module-scope handle: one per process, built once however many threads
 * race, per-thread Redis connections, fork, and a server that dropped the connection.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"
#include "ext/shared.h"
#include "tc_test.h"

static tct_redis redis;
static char dir[256];

static void redis_up(void)
{
    ck_assert_msg(tct_redis_start(&redis) == 0, "cannot start redis-server");
}

static void redis_down(void)
{
    tct_redis_stop(&redis);
}

/* TIERCACHE_CONFIG as inline JSON pointing at the test's dir and the suite's Redis. */
static void set_config(const char *pipelining)
{
    char json[700];
    snprintf(json, sizeof json,
             "{\"store\": {\"path\": \"%s/shared.db\"},"
             " \"redis\": {\"host\": \"127.0.0.1\", \"port\": %d, \"retry_interval_ms\": 0,"
             " \"pipelining\": \"%s\"}}",
             dir, redis.port, pipelining);
    setenv("TIERCACHE_CONFIG", json, 1);
}

static void setup(void)
{
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    set_config("auto");
}

static void teardown(void)
{
    tc_shared_reset();
    unsetenv("TIERCACHE_CONFIG");
    tct_rmrf(dir);
}

#define K(s) (s), strlen(s)

START_TEST(test_same_handle_every_call)
{
    tc_cache *a, *b;
    long long cold0 = 0, warm0 = 0;
    ck_assert_int_eq(tc_shared(&a), TC_OK);
    cold0 = tct_stat(a, "shared", "cold_starts");
    warm0 = tct_stat(a, "shared", "warm_starts");
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(tc_shared(&b), TC_OK);
        ck_assert_ptr_eq(a, b);
    }
    ck_assert_int_eq(tct_stat(a, "shared", "cold_starts"), cold0);
    ck_assert_int_eq(tct_stat(a, "shared", "warm_starts"), warm0 + 10);
    tc_shared_reset();
    ck_assert_int_eq(tc_shared(&b), TC_OK);       /* a new cold start after reset */
    ck_assert_int_eq(tct_stat(b, "shared", "cold_starts"), cold0 + 1);
}
END_TEST

#define RACERS 8
static pthread_barrier_t barrier;

static void *race(void *arg)
{
    tc_cache **slot = arg;
    pthread_barrier_wait(&barrier);
    if (tc_shared(slot) != TC_OK)
        *slot = NULL;
    return NULL;
}

START_TEST(test_built_once_under_a_race)
{
    pthread_t t[RACERS];
    tc_cache *got[RACERS];
    pthread_barrier_init(&barrier, NULL, RACERS);
    tc_cache *probe;
    int64_t cold0, warm0, cold, warm;
    tc__shared_counts(&cold0, &warm0);
    for (int i = 0; i < RACERS; i++)
        pthread_create(&t[i], NULL, race, &got[i]);
    for (int i = 0; i < RACERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < RACERS; i++) {
        ck_assert_ptr_nonnull(got[i]);
        ck_assert_ptr_eq(got[i], got[0]);
    }
    ck_assert_int_eq(tc_shared(&probe), TC_OK);
    ck_assert_ptr_eq(probe, got[0]);
    tc__shared_counts(&cold, &warm);
    ck_assert_int_eq(cold, cold0 + 1);              /* exactly one racer built it */
    ck_assert_int_eq(warm, warm0 + RACERS);         /* the others and the probe reused it */
}
END_TEST

START_TEST(test_config_from_file_and_bad_config)
{
    char path[400];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    setenv("TIERCACHE_CONFIG", path, 1);
    tc_cache *c = (tc_cache *)1;
    ck_assert_int_eq(tc_shared(&c), TC_EIO);                   /* no such file yet */
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "cfg.json"));

    FILE *f = fopen(path, "w");
    fprintf(f, "{\"store\": {\"path\": \"%s/f.db\"}, \"edge\": {\"max_entris\": 5}}", dir);
    fclose(f);
    ck_assert_int_eq(tc_shared(&c), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "edge.max_entris"));

    f = fopen(path, "w");
    fprintf(f, "{\"store\": {\"path\": \"%s/f.db\"}}", dir);
    fclose(f);
    ck_assert_int_eq(tc_shared(&c), TC_OK);                    /* a failed build is retried */
    ck_assert_int_eq(tc_put(c, K("k"), "v", 1, 0), TC_OK);
    ck_assert_int_eq(tct_stat(c, "redis", "connects"), 0);     /* no Redis in that file */
    ck_assert_int_eq(access(path, F_OK), 0);

    setenv("TIERCACHE_CONFIG", "  {\"nonsense\": true}", 1);
    tc_shared_reset();
    ck_assert_int_eq(tc_shared(&c), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "nonsense"));
}
END_TEST

#define THREADS 4
#define CALLS 25

static void *reader(void *arg)
{
    long ok = 0;
    for (int i = 0; i < CALLS; i++) {
        tc_cache *c;
        void *v;
        size_t len;
        if (tc_shared(&c) == TC_OK && tc_invalidate(c, K("k")) == TC_OK &&
            tc_get(&v, &len, c, K("k")) == TC_OK) {
            ok++;
            tc_free(v);
        }
    }
    return (void *)ok;
}

/* _i 0: redis.pipelining "auto", one connection shared by the threads' concurrent calls (and a
 * thread's own for calls made while few others are under way); 1: "off", one per thread. */
START_TEST(test_one_connection_per_thread)
{
    tc_cache *c;
    if (_i == 1)
        set_config("off");
    ck_assert_int_eq(tc_shared(&c), TC_OK);
    ck_assert_int_eq(tc_put(c, K("k"), "v", 1, 0), TC_OK);     /* this thread: connect 1 */
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, reader, NULL);
    for (int i = 0; i < THREADS; i++) {
        void *ok;
        pthread_join(t[i], &ok);
        ck_assert_int_eq((long)ok, CALLS);
    }
    if (_i == 1) {
        ck_assert_int_eq(tct_stat(c, "redis", "connects"), 1 + THREADS);
        /* Each call of each thread uses Redis at least twice (DEL, GET; a SET when the GET
         * missed), all but the first on the thread's open connection. */
        ck_assert_int_ge(tct_stat(c, "redis", "reuses"), THREADS * (CALLS * 2 - 1));
    } else {
        /* The shared connection, and at most one per thread: a thread calling while few
         * others do takes its own (tier_base.c's AP_MIN_CALLS). */
        ck_assert_int_le(tct_stat(c, "redis", "connects"), 2 + THREADS);
        ck_assert_int_ge(tct_stat(c, "redis", "reuses"), 1);
    }
}
END_TEST

START_TEST(test_fork_child_opens_its_own)
{
    tc_cache *c;
    ck_assert_int_eq(tc_shared(&c), TC_OK);
    ck_assert_int_eq(tc_put(c, K("k"), "parent", 6, 0), TC_OK);
    long long connects = tct_stat(c, "redis", "connects");
    ck_assert_int_eq(connects, 1);
    /* The bus's subscriber connected and idle first: a fork while its thread is inside connect()
     * leaves the child a context only that (vanished) thread's stack pointed to, which
     * valgrind's leak check in the child reports as lost. */
    tct_wait_edge(c);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The child: the same handle object, but its own socket and database connection. */
        tc_cache *cc;
        int bad = 0;
        for (int i = 0; i < 50 && !bad; i++) {
            void *v;
            size_t len;
            bad |= tc_shared(&cc) != TC_OK || cc != c;
            bad |= tc_invalidate(cc, K("k")) != TC_OK;
            bad |= tc_get(&v, &len, cc, K("k")) != TC_OK;
            if (!bad) {
                bad |= len != 6 || memcmp(v, "parent", 6) != 0;
                tc_free(v);
            }
            bad |= tc_put(cc, K("child"), "c", 1, 0) != TC_OK;
        }
        bad |= tct_stat(cc, "redis", "connects") != 2;
        _exit(bad ? 1 : 0);
    }
    /* The parent keeps using its socket at the same time: replies must never cross. */
    for (int i = 0; i < 50; i++) {
        void *v;
        size_t len;
        ck_assert_int_eq(tc_invalidate(c, K("k")), TC_OK);
        ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_OK);
        ck_assert_int_eq(memcmp(v, "parent", 6), 0);
        tc_free(v);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_int_eq(tct_stat(c, "redis", "connects"), 1);
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("child")), TC_OK);
    tc_free(v);
}
END_TEST


START_TEST(test_server_closed_connection)
{
    tc_cache *c;
    ck_assert_int_eq(tc_shared(&c), TC_OK);
    ck_assert_int_eq(tc_put(c, K("k"), "v", 1, 0), TC_OK);
    /* An idle purge, as a managed Redis does: kill every normal client but the killer. */
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    char *r = tct_redis_cmd(&redis, kill_cmd);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_ne(r, "0");
    free(r);
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_OK); /* an edge hit: Redis not asked */
    tc_free(v);
    ck_assert_int_eq(tc_invalidate(c, K("k")), TC_OK);   /* DEL reconnects, no error */
    free(tct_redis_cmd(&redis, kill_cmd));
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_OK); /* GET reconnects, no error */
    tc_free(v);
    ck_assert_int_eq(tct_stat(c, "redis", "errors"), 0);
    ck_assert_int_eq(tct_stat(c, "redis", "connects"), 3);
}
END_TEST

Suite *shared_suite(void)
{
    Suite *s = suite_create("shared");
    TCase *tc = tcase_create("handle");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, redis_up, redis_down);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_same_handle_every_call);
    tcase_add_test(tc, test_built_once_under_a_race);
    tcase_add_test(tc, test_config_from_file_and_bad_config);
    tcase_add_loop_test(tc, test_one_connection_per_thread, 0, 2);
    tcase_add_test(tc, test_fork_child_opens_its_own);
    tcase_add_test(tc, test_server_closed_connection);
    suite_add_tcase(s, tc);
    return s;
}
