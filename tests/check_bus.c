/*
 * check_bus.c - the invalidation bus: a write in one process evicts the copies in every other
 * process's edge; a handle's own writes show at once; a dropped bus empties the edge before it
 * is used again.
 *
 * Two real processes: the child opens a handle of its own on the same SQLite file and Redis.
 * Arrival is polled with a generous deadline: a test never asserts how fast it is.
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cache.h"
#include "tc_test.h"

#define K(s) (s), strlen(s)
#define DEADLINE_MS 10000

/* The tier that answers key (TC_SOURCE_*), or -1 if the read fails; the value into buf. */
static int read_src(tc_cache *c, const char *key, char *buf, size_t cap)
{
    void *v;
    size_t len;
    unsigned info;
    if (tc_get_ex(&v, &len, &info, NULL, c, K(key)) != TC_OK)
        return -1;
    snprintf(buf, cap, "%.*s", (int)len, (char *)v);
    tc_free(v);
    return (int)(info & 0xff);
}

/* Reads until the value is want and came from a tier other than the edge, or the deadline. */
static int wait_for(tc_cache *c, const char *key, const char *want)
{
    char buf[64];
    for (int waited = 0; waited < DEADLINE_MS; waited += 5) {
        int src = read_src(c, key, buf, sizeof buf);
        if (src > 0 && strcmp(buf, want) == 0)
            return 1;
        tct_sleep_ms(5);
    }
    return 0;
}

/* Reads until a read is not answered by the edge (it was evicted), or the deadline. */
static int wait_evicted(tc_cache *c, const char *key)
{
    char buf[64];
    for (int waited = 0; waited < DEADLINE_MS; waited += 5) {
        int src = read_src(c, key, buf, sizeof buf);
        if (src != TC_SOURCE_EDGE)
            return 1;
        tct_sleep_ms(5);
    }
    return 0;
}

/* Reads until the edge answers, or the deadline. */
static int wait_edge(tc_cache *c, const char *key)
{
    char buf[64];
    for (int waited = 0; waited < DEADLINE_MS; waited += 5) {
        if (read_src(c, key, buf, sizeof buf) == TC_SOURCE_EDGE)
            return 1;
        tct_sleep_ms(5);
    }
    return 0;
}

static void put_str(tc_cache *c, const char *key, const char *v)
{
    ck_assert_int_eq(tc_put(c, K(key), v, strlen(v), 0), TC_OK);
}

/* The other process: the test binary itself, run again with TCT_BUS_PEER set (a fresh exec,
 * not only a fork: a handle opened in a forked copy of a multi-threaded process is not what a
 * second program is, and ThreadSanitizer forbids it). It reads every key twice (the second
 * read from its edge), says so on the ready pipe, waits for the go byte, then waits for each
 * of the writer's invalidations to reach its edge. Exit status 0 when all did. */
int tct_bus_peer_main(const char *spec)
{
    char pdir[256];
    int port, ready, go;
    if (sscanf(spec, "%255s %d %d %d", pdir, &port, &ready, &go) != 4)
        return 2;
    /* Not tct_open: Check's assertions work only inside a test. */
    char path[512];
    snprintf(path, sizeof path, "%s/db.db", pdir);
    tc_config *cfg = NULL;
    tc_cache *b = NULL;
    if (tc_config_new(&cfg) != TC_OK || tc_config_set_string(cfg, "store.path", path) != TC_OK ||
        tc_config_set_string(cfg, "redis.host", "127.0.0.1") != TC_OK ||
        tc_config_set_int(cfg, "redis.port", port) != TC_OK || tc_open(&b, cfg) != TC_OK) {
        fprintf(stderr, "bus peer: %s\n", tc_errmsg(NULL));
        tc_config_free(cfg);
        return 3;
    }
    tc_config_free(cfg);
    char buf[64];
    int bad = 0;
    const char *keys[] = {"k", "/img/a.png", "/css/a.css", "gone", "/t", "inv"};
    for (size_t i = 0; i < 6; i++) {
        bad |= read_src(b, keys[i], buf, sizeof buf) <= 0;
        bad |= (read_src(b, keys[i], buf, sizeof buf) != TC_SOURCE_EDGE) << 1;
    }
    char byte = (char)bad;
    if (write(ready, &byte, 1) != 1 || read(go, &byte, 1) != 1)
        bad |= 4;
    bad |= !wait_for(b, "k", "v2") << 3;
    bad |= !wait_evicted(b, "/img/a.png") << 4;
    bad |= !wait_evicted(b, "/t") << 5;
    bad |= !wait_evicted(b, "inv") << 6;
    for (int waited = 0; waited < DEADLINE_MS && read_src(b, "gone", buf, sizeof buf) >= 0;
         waited += 5)
        tct_sleep_ms(5);
    bad |= (read_src(b, "gone", buf, sizeof buf) != -1) << 7;
    /* What no message named stays in the edge. */
    bad |= (read_src(b, "/css/a.css", buf, sizeof buf) != TC_SOURCE_EDGE) << 8;
    tc_close(b);
    if (bad != 0)
        fprintf(stderr, "bus peer: failed checks 0x%x\n", bad);
    return bad == 0 ? 0 : 1;
}

START_TEST(test_two_processes)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    put_str(a, "k", "v1");
    put_str(a, "/img/a.png", "png");
    put_str(a, "/css/a.css", "css");
    put_str(a, "gone", "g");
    const char *tagged[] = {"Cache-Control: max-age=3600", "Surrogate-Key: red"};
    ck_assert_int_eq(tc_put_http(NULL, a, K("/t"), "t1", 2, tagged, 2), TC_OK);
    ck_assert_int_eq(tc_put(a, K("inv"), "i", 1, 0), TC_OK);

    int ready[2], go[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(go), 0);
    char spec[512];
    snprintf(spec, sizeof spec, "%s %d %d %d", tct_dir, tct_srv.port, ready[1], go[0]);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("TCT_BUS_PEER", spec, 1);
        setenv("CK_FORK", "no", 1);
        execl(tct_self_path, "check_tiercache", (char *)NULL);
        _exit(127);
    }
    close(ready[1]); /* a peer that dies gives EOF, not a wait */
    close(go[0]);
    char byte = 99;
    ck_assert_int_eq(read(ready[0], &byte, 1), 1);
    ck_assert_int_eq(byte, 0);
    put_str(a, "k", "v2");
    int64_t n;
    ck_assert_int_eq(tc_invalidate_pattern(&n, a, K("/img/*")), TC_OK);
    ck_assert_int_eq(tc_invalidate_tag(&n, a, K("red")), TC_OK);
    ck_assert_int_eq(tc_invalidate(a, K("inv")), TC_OK);
    ck_assert_int_eq(tc_del(a, K("gone")), TC_OK);
    /* Read-your-writes: this handle sees its own put at once, from its edge. */
    char buf[64];
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_EDGE);
    ck_assert_str_eq(buf, "v2");
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    int status = -1;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "peer status %d", status);
    tc_close(a);
    close(ready[0]), close(go[1]);
}
END_TEST

/* The bus connection dropped: messages may have been lost, so the edge is emptied before it
 * is read again, and the handle subscribes again. */
START_TEST(test_dropped_bus_empties_the_edge)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_cache *w = tct_open(tct_dir, "db", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    put_str(a, "k", "v1");
    char buf[64];
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_EDGE);
    const char *kill[] = {"CLIENT", "KILL", "TYPE", "pubsub", NULL};
    free(tct_redis_cmd(&tct_srv, kill));
    ck_assert(wait_evicted(a, "k"));
    /* Subscribed again: the edge serves again, and hears other handles' writes. */
    int edge_again = 0;
    for (int waited = 0; waited < DEADLINE_MS && !edge_again; waited += 5) {
        edge_again = read_src(a, "k", buf, sizeof buf) == TC_SOURCE_EDGE;
        if (!edge_again)
            tct_sleep_ms(5);
    }
    ck_assert(edge_again);
    put_str(w, "k", "v2");
    ck_assert(wait_for(a, "k", "v2"));
    tc_close(w);
    tc_close(a);
}
END_TEST

/* Redis down when the handle opens: the edge stays unused (slower, never wrong) until the bus
 * is subscribed, then it serves. */
START_TEST(test_bus_comes_up_later)
{
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tct_redis_kill(&own);
    tc_cache *a = tct_open(tct_dir, "db", own.port, "{\"redis\": {\"connect_timeout_ms\": 100, "
                                                "\"retry_interval_ms\": 20, \"retry_max_ms\": 100}}");
    put_str(a, "k", "v");
    char buf[64];
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_STORE);
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_STORE);
    ck_assert_int_eq(tct_redis_restart(&own), 0);
    int edge = 0;
    for (int waited = 0; waited < DEADLINE_MS && !edge; waited += 10) {
        edge = read_src(a, "k", buf, sizeof buf) == TC_SOURCE_EDGE;
        if (!edge)
            tct_sleep_ms(10);
    }
    ck_assert(edge);
    tc_close(a);
    tct_redis_stop(&own);
}
END_TEST

static int64_t ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* A handle on own whose commands time out after 100 ms (so its bus PINGs every 50 ms), with a
 * short retry interval. */
static tc_cache *impatient(const tct_redis *own)
{
    return tct_open(tct_dir, "db", own->port,
                    "{\"redis\": {\"command_timeout_ms\": 100, \"connect_timeout_ms\": 100, "
                    "\"retry_interval_ms\": 50, \"retry_max_ms\": 100}}");
}

/* A write whose bus message never reached Redis (the handle was skipping a stalled server)
 * is journalled and published once Redis answers, with no further call on the writer: the
 * reader, whose own link stayed up through the stall (its PINGs are a second apart), drops
 * its copy. Without the journal it kept it for edge.max_ttl_ms. */
START_TEST(test_journal_reaches_an_edge_that_stayed_up)
{
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tc_cache *a = impatient(&own);
    tc_cache *b = tct_open(tct_dir, "db", own.port,
                           "{\"redis\": {\"command_timeout_ms\": 5000}, "
                           "\"edge\": {\"max_ttl_ms\": 600000}, \"default_ttl_ms\": 600000}");
    put_str(a, "k1", "v1");
    put_str(a, "k2", "v1");
    char buf[64];
    for (int i = 0; i < 2; i++) {
        read_src(b, "k1", buf, sizeof buf);
        ck_assert_int_eq(read_src(b, "k2", buf, sizeof buf), i == 0 ? TC_SOURCE_REDIS
                                                                    : TC_SOURCE_EDGE);
    }
    ck_assert_int_eq(kill(own.pid, SIGSTOP), 0);
    put_str(a, "k1", "v2"); /* times out in Redis: the server runs it when it resumes */
    put_str(a, "k2", "v2"); /* Redis skipped: its message is only in the journal */
    tct_sleep_ms(300);
    ck_assert_int_eq(kill(own.pid, SIGCONT), 0);
    ck_assert(wait_for(b, "k1", "v2"));
    ck_assert(wait_for(b, "k2", "v2"));
    tc_close(b);
    tc_close(a);
    tct_redis_stop(&own);
}
END_TEST

/* A Redis stall longer than the command timeout: no call waits for it past the timeout
 * (a put returns TC_OK once committed), and the edge is out of service until the bus is
 * confirmed again, so nothing it holds is trusted while invalidations may be missed. */
START_TEST(test_stall_blocks_no_call_and_untrusts_the_edge)
{
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tc_cache *a = impatient(&own);
    put_str(a, "k", "v1");
    char buf[64];
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_EDGE);
    ck_assert_int_eq(kill(own.pid, SIGSTOP), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int served = 0, reads = 0;
    int64_t slowest = 0;
    while (ms_since(&t0) < 2500) {
        struct timespec c0;
        clock_gettime(CLOCK_MONOTONIC, &c0);
        put_str(a, "k", "v2");
        int src = read_src(a, "k", buf, sizeof buf);
        int64_t took = ms_since(&c0);
        slowest = took > slowest ? took : slowest;
        if (ms_since(&t0) > 1000) { /* the link was lost after 100 ms of silence */
            reads++;
            served += src == TC_SOURCE_EDGE;
        }
        tct_sleep_ms(20);
    }
    ck_assert_int_eq(kill(own.pid, SIGCONT), 0);
    /* A liveness bound, not a speed figure: a call that waited out the stall took 2.5 s. */
    ck_assert_msg(slowest < 1500, "a put and a read took %lld ms in a stall", (long long)slowest);
    ck_assert_msg(reads > 0 && served == 0, "the edge served %d of %d reads in the stall", served,
                  reads);
    ck_assert(wait_for(a, "k", "v2"));
    tc_close(a);
    tct_redis_stop(&own);
}
END_TEST

/* redis.tracking: a change made in Redis behind the library's back (redis-cli DEL, FLUSHALL) of
 * a key the handle read from Redis drops it from the edge; so does the tracking connection's
 * loss (it is the bus's). */
START_TEST(test_tracking_sees_redis_side_changes)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, "{\"redis\": {\"tracking\": true}}");
    tc_cache *w = tct_open(tct_dir, "db", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    put_str(w, "t1", "v1");
    put_str(w, "t2", "v1");
    char buf[64];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(read_src(a, "t1", buf, sizeof buf), i == 0 ? TC_SOURCE_REDIS
                                                                    : TC_SOURCE_EDGE);
        ck_assert_int_eq(read_src(a, "t2", buf, sizeof buf), i == 0 ? TC_SOURCE_REDIS
                                                                    : TC_SOURCE_EDGE);
    }
    const char *del[] = {"DEL", "tc:t1", NULL};
    free(tct_redis_cmd(&tct_srv, del));
    ck_assert(wait_evicted(a, "t1"));
    ck_assert_int_eq(read_src(a, "t2", buf, sizeof buf), TC_SOURCE_EDGE); /* only t1 */
    /* t1 came back from the store into Redis and the edge (Redis may report the fill's own
     * write, which costs one more Redis read), and a change of it is seen again: BCAST tracks
     * every key under the namespace, whoever wrote it last. */
    ck_assert(wait_edge(a, "t1"));
    free(tct_redis_cmd(&tct_srv, del));
    ck_assert(wait_evicted(a, "t1"));
    put_str(a, "t1", "v2");
    ck_assert(wait_edge(a, "t1"));
    free(tct_redis_cmd(&tct_srv, del));
    ck_assert(wait_evicted(a, "t1"));
    const char *flush[] = {"FLUSHALL", NULL};
    free(tct_redis_cmd(&tct_srv, flush));
    ck_assert(wait_evicted(a, "t1"));
    ck_assert(wait_evicted(a, "t2"));
    /* The tracking connection lost: the edge is emptied, and tracking resumes on the new
     * connection (a DEL after it is seen). */
    ck_assert(wait_edge(a, "t2"));
    const char *kill[] = {"CLIENT", "KILL", "TYPE", "pubsub", NULL};
    free(tct_redis_cmd(&tct_srv, kill));
    ck_assert(wait_evicted(a, "t2"));
    ck_assert(wait_edge(a, "t2"));
    const char *del2[] = {"DEL", "tc:t2", NULL};
    free(tct_redis_cmd(&tct_srv, del2));
    ck_assert(wait_evicted(a, "t2"));
    tc_close(w);
    tc_close(a);
}
END_TEST

/* redis.bus false: no subscription, nothing published; the edge is used at once. */
START_TEST(test_bus_off)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, "{\"redis\": {\"bus\": false}}");
    put_str(a, "k", "v");
    char buf[64];
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_EDGE);
    const char *numsub[] = {"PUBSUB", "NUMSUB", "tc:bus", NULL};
    char *r = tct_redis_cmd(&tct_srv, numsub);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r, "tc:bus\n0");
    free(r);
    tc_close(a);
}
END_TEST

/* Messages that make no sense on the bus channel are dropped, never a crash. */
START_TEST(test_garbage_on_the_bus)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    put_str(a, "k", "v");
    const char *junk[][4] = {
        {"PUBLISH", "tc:bus", "", NULL},
        {"PUBLISH", "tc:bus", "B", NULL},
        {"PUBLISH", "tc:bus", "B\001Zxxxxxxxxxxxxxxxxxxxxxxxxk", NULL},
        {"PUBLISH", "tc:bus", "hello world, this is not a bus message at all", NULL},
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        free(tct_redis_cmd(&tct_srv, junk[i]));
    char buf[64];
    tct_sleep_ms(50);
    ck_assert_int_eq(read_src(a, "k", buf, sizeof buf), TC_SOURCE_EDGE);
    ck_assert_str_eq(buf, "v");
    tc_close(a);
}
END_TEST

/* A pattern invalidation must reach Redis before the other handles hear of it: one that
 * refills from Redis as soon as its edge was walked (here: from inside the bus callback, the
 * worst moment) must not find the old copy there. */
static tc_cache *order_b;
static atomic_int order_armed, order_refilled, order_done;

static int any_value(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    return TC_OK;
}

static void refill_on_apply(tc_cache *c)
{
    if (c != order_b || !atomic_load(&order_armed))
        return;
    /* Only once the pattern's message was applied: an earlier message that arrives late (the
     * put's own, on a slow run) leaves the copy in the edge, and is not the moment tested. */
    if (tc__edge_peek(tc__cache_edge(c), K("/p/x"), any_value, NULL, NULL) == TC_OK)
        return;
    if (!atomic_exchange(&order_armed, 0))
        return;
    void *v;
    size_t n;
    if (tc_get(&v, &n, c, K("/p/x")) == TC_OK) {
        atomic_store(&order_refilled, 1);
        tc_free(v);
    }
    atomic_store(&order_done, 1);
}

START_TEST(test_pattern_reaches_redis_before_the_bus)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    order_b = tct_open(tct_dir, "db", tct_srv.port, NULL);
    /* Unrelated keys, so that the SCAN of the invalidation takes a while. */
    const char *fill[] = {"EVAL", "for i=1,100000 do redis.call('SET','zz'..i,'x') end", "0",
                          NULL};
    free(tct_redis_cmd(&tct_srv, fill));
    put_str(a, "/p/x", "v1");
    char buf[64];
    ck_assert_int_gt(read_src(order_b, "/p/x", buf, sizeof buf), 0);
    /* A write made in plain SQL (the caches do not know), then the path is invalidated. */
    char path[512];
    snprintf(path, sizeof path, "%s/db.db", tct_dir);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ck_assert_int_eq(
        sqlite3_exec(db, "UPDATE tiercache SET value = 'v2' WHERE key = '/p/x'", 0, 0, 0),
        SQLITE_OK);
    sqlite3_close(db);
    tc__hook_bus_applied = refill_on_apply;
    atomic_store(&order_armed, 1);
    int64_t removed;
    ck_assert_int_eq(tc_invalidate_pattern(&removed, a, K("/p/*")), TC_OK);
    for (int waited = 0; waited < DEADLINE_MS && !atomic_load(&order_done); waited += 5)
        tct_sleep_ms(5);
    tc__hook_bus_applied = NULL;
    ck_assert_int_eq(atomic_load(&order_refilled), 1);
    ck_assert_int_gt(read_src(order_b, "/p/x", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "v2");
    tc_close(order_b);
    tc_close(a);
}
END_TEST

Suite *bus_suite(void)
{
    Suite *s = suite_create("bus");
    TCase *tc = tcase_create("bus");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(tc, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(tc, test_two_processes);
    tcase_add_test(tc, test_dropped_bus_empties_the_edge);
    tcase_add_test(tc, test_bus_comes_up_later);
    tcase_add_test(tc, test_bus_off);
    tcase_add_test(tc, test_tracking_sees_redis_side_changes);
    tcase_add_test(tc, test_journal_reaches_an_edge_that_stayed_up);
    tcase_add_test(tc, test_stall_blocks_no_call_and_untrusts_the_edge);
    tcase_add_test(tc, test_garbage_on_the_bus);
    tcase_add_test(tc, test_pattern_reaches_redis_before_the_bus);
    suite_add_tcase(s, tc);
    return s;
}
