/*
 * check_autopipe.c - auto-pipelining (lib/redis/autopipe.c) through the Redis tier, against a
 * private redis-server: callers interleaved on one shared connection, the connection killed
 * and the server paused in the middle of batches, fork while batches are in flight, and the
 * public switch (redis.pipelining).
 *
 * Each thread owns its keys and checks every reply against what it wrote: a reply handed to
 * the wrong caller (a desynchronized pipeline) shows as a wrong value.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis/redis_tier.h"
#include "tc_test.h"

static tct_redis srv;
static int srv_ok;

static void srv_up(void)
{
    srv_ok = tct_redis_start(&srv) == 0;
}

static void srv_down(void)
{
    if (srv_ok)
        tct_redis_stop(&srv);
    srv_ok = 0;
}

static void srv_flush(void)
{
    ck_assert_msg(srv_ok, "redis-server could not be started (package redis-server)");
    const char *flush[] = {"FLUSHALL", NULL};
    free(tct_redis_cmd(&srv, flush));
}

static tc__redis *ap_open(int64_t timeout_ms, tc__stats *st)
{
    tc__redis_opts o = {
        .host = "127.0.0.1",
        .port = srv.port,
        .ns = "ap:",
        .connect_timeout_ms = 2000,
        .command_timeout_ms = timeout_ms,
        .max_value_bytes = 1u << 20,
        .autopipe = 1,
    };
    tc__redis *r = NULL;
    int rc = tc__redis_new(&r, &o, NULL, st);
    ck_assert_msg(rc == TC_OK, "tc__redis_new: %d %s", rc, tc_errmsg(NULL));
    return r;
}

/* A value a thread checks its reads against: thread, key, version. */
typedef struct got {
    char buf[64];
    size_t len;
    int64_t version;
} got;

static int collect(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl_ms)
{
    (void)ttl_ms;
    got *g = ctx;
    g->len = len < sizeof g->buf ? len : sizeof g->buf;
    memcpy(g->buf, data, g->len);
    g->version = version;
    return TC_OK;
}

typedef struct worker {
    tc__redis *r;
    int id, ops;
    atomic_int *stop; /* NULL: run ops rounds */
    long done, errors, wrong; /* wrong: a reply that was not this thread's */
    int last_rc;
} worker;

/* One round: a put of a new version of one of the thread's keys, then its read. */
static void round_trip(worker *w, int i)
{
    char key[32], val[48];
    int klen = snprintf(key, sizeof key, "t%d:%d", w->id, i % 8);
    int vlen = snprintf(val, sizeof val, "value of thread %d, round %d", w->id, i);
    tct_fork_quiet_enter();
    int rc = tc__redis_set(w->r, key, (size_t)klen, val, (size_t)vlen, i + 1, 60000);
    got g = {0};
    if (rc == TC_OK)
        rc = tc__redis_get(w->r, key, (size_t)klen, collect, &g);
    tct_fork_quiet_leave();
    w->done++;
    if (rc != TC_OK) {
        w->errors++;
        w->last_rc = rc;
        return;
    }
    /* Another round of this thread may have written a later version of the key meanwhile
     * only if the set failed; it did not, so the read is this round's value. */
    if (g.len != (size_t)vlen || memcmp(g.buf, val, g.len) != 0 || g.version != i + 1)
        w->wrong++;
}

static void *work(void *arg)
{
    worker *w = arg;
    for (int i = 0; w->stop != NULL ? !atomic_load(w->stop) : i < w->ops; i++)
        round_trip(w, i);
    return NULL;
}

#define MAXT 16

static void run_workers(worker *w, int n, pthread_t *th)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
}

static void join_workers(worker *w, int n, pthread_t *th, long *errors, long *wrong)
{
    *errors = *wrong = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        *errors += w[i].errors;
        *wrong += w[i].wrong;
    }
}

/* 16 threads, 200 rounds each, on one shared connection: every reply is its caller's, and
 * commands did go out together (fewer batches than commands). */
START_TEST(test_interleaved_callers)
{
    tc__stats st = {0};
    tc__redis *r = ap_open(5000, &st);
    worker w[MAXT];
    pthread_t th[MAXT];
    for (int i = 0; i < MAXT; i++)
        w[i] = (worker){.r = r, .id = i, .ops = 200};
    run_workers(w, MAXT, th);
    long errors, wrong;
    join_workers(w, MAXT, th, &errors, &wrong);
    ck_assert_int_eq(errors, 0);
    ck_assert_int_eq(wrong, 0);
    /* The shared one, and the own connections of threads that called while fewer than
     * AP_MIN_CALLS calls were under way (tier_base.c). */
    ck_assert_int_ge(TC__GET(st.connects), 1);
    ck_assert_int_le(TC__GET(st.connects), 1 + MAXT);
    ck_assert_int_lt(TC__GET(st.batches), TC__GET(st.batched)); /* some went out together */
    /* A caller alone still works: */
    worker one = {.r = r, .id = 99, .ops = 3};
    work(&one);
    ck_assert_int_eq(one.errors + one.wrong, 0);
    tc__redis_free(r);
}
END_TEST

/* The connection killed by the server while batches are in flight, five times: the unanswered
 * commands are retried on their callers' own connections, nobody sees an error or another's
 * reply, and the pipeline goes on on a new connection. */
START_TEST(test_kill_mid_batch)
{
    tc__stats st = {0};
    tc__redis *r = ap_open(5000, &st);
    atomic_int stop = 0;
    worker w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        w[i] = (worker){.r = r, .id = i, .stop = &stop};
    run_workers(w, 8, th);
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    for (int k = 0; k < 5; k++) {
        tct_sleep_ms(30);
        free(tct_redis_cmd(&srv, kill_cmd));
    }
    tct_sleep_ms(30);
    atomic_store(&stop, 1);
    long errors, wrong;
    join_workers(w, 8, th, &errors, &wrong);
    ck_assert_int_eq(errors, 0);
    ck_assert_int_eq(wrong, 0);
    ck_assert_int_ge(TC__GET(st.connects), 2); /* the kills were seen */
    tc__redis_free(r);
}
END_TEST

/* The server paused past the command timeout while batches are in flight: the callers of the
 * batch get TC_EREDIS (a timeout, not retried), no later reply reaches another caller, and once
 * the server answers again every call succeeds. */
START_TEST(test_timeout_mid_batch)
{
    tc__stats st = {0};
    tc__redis *r = ap_open(150, &st);
    atomic_int stop = 0;
    worker w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        w[i] = (worker){.r = r, .id = i, .stop = &stop};
    run_workers(w, 8, th);
    tct_sleep_ms(50);
    const char *pause[] = {"CLIENT", "PAUSE", "500", NULL};
    free(tct_redis_cmd(&srv, pause));
    tct_sleep_ms(1200); /* the pause, then calls that succeed */
    atomic_store(&stop, 1);
    long errors, wrong;
    join_workers(w, 8, th, &errors, &wrong);
    ck_assert_int_gt(errors, 0);
    ck_assert_int_eq(wrong, 0);
    /* Recovered: a round of every thread now succeeds. */
    for (int i = 0; i < 8; i++) {
        worker again = {.r = r, .id = 200 + i, .ops = 2};
        work(&again);
        ck_assert_msg(again.errors == 0, "thread %d: rc %d %s", i, again.last_rc,
                      tc_errmsg(NULL));
        ck_assert_int_eq(again.wrong, 0);
    }
    tc__redis_free(r);
}
END_TEST

/* fork() while threads have batches in flight on the shared connection: the child's calls
 * work on a connection of the child's own (no reply of the parent's reaches it, and it writes
 * nothing on the parent's), and the parent's threads go on unharmed. */
START_TEST(test_fork_mid_batch)
{
    tc__redis *r = ap_open(5000, NULL);
    atomic_int stop = 0;
    worker w[4];
    pthread_t th[4];
    tct_fork_quiet_init();
    for (int i = 0; i < 4; i++)
        w[i] = (worker){.r = r, .id = i, .stop = &stop};
    run_workers(w, 4, th);
    int result = 0, n;
    for (n = 0; n < 10 && result == 0; n++) {
        tct_sleep_ms(5);
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL); /* Check handles SIGALRM: it would kill the test */
            alarm(20);                /* a deadlock: no report, the test fails */
            worker c = {.r = r, .id = 100 + n, .ops = 20};
            work(&c);
            unsigned char bad = (c.errors > 0) | (c.wrong > 0) << 1;
            ssize_t wr = write(fds[1], &bad, 1);
            if (wr == 1) /* leave by exec: the parent threads' memory is lost by design */
                execl("/bin/true", "true", (char *)NULL);
            _exit(1);
        }
        close(fds[1]);
        unsigned char bad = 0xff;
        if (pid < 0 || read(fds[0], &bad, 1) != 1)
            result = -1;
        else
            result = bad;
        close(fds[0]);
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    atomic_store(&stop, 1);
    long errors, wrong;
    join_workers(w, 4, th, &errors, &wrong);
    ck_assert_msg(result == 0, "child %d: result %d", n - 1, result);
    ck_assert_int_eq(errors, 0);
    ck_assert_int_eq(wrong, 0);
    tc__redis_free(r);
}
END_TEST

/* The public switch: "auto" and "off" open, anything else is refused with a clear message. */
START_TEST(test_config_switch)
{
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "redis.pipelining", "off"), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "redis.pipelining", "auto"), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "redis.pipelining", "on"), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "auto, off"));
    tc_config_free(cfg);
}
END_TEST

Suite *autopipe_suite(void)
{
    Suite *s = suite_create("autopipe");
    TCase *tc = tcase_create("autopipe");
    tcase_add_unchecked_fixture(tc, srv_up, srv_down);
    tcase_add_checked_fixture(tc, srv_flush, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_interleaved_callers);
    tcase_add_test(tc, test_kill_mid_batch);
    tcase_add_test(tc, test_timeout_mid_batch);
    tcase_add_test(tc, test_fork_mid_batch);
    tcase_add_test(tc, test_config_switch);
    suite_add_tcase(s, tc);
    return s;
}
