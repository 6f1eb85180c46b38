/*
 * check_feed.c - the change feed and the invalidator on the SQLite store: writes made in plain
 * SQL by another program reach every tier; checkpoint, lease, restart and trim. A private
 * redis-server and SQLite files in a temp dir.
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tc_test.h"

#define K(s) (s), strlen(s)

static const char *db_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/db.db", tct_dir);
    return path;
}

/* The number a one-value query gives. */
static long long sql_int(const char *query)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_open(db_path(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    ck_assert_int_eq(sqlite3_prepare_v2(db, query, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The value get returns, as a string ("" when absent), after polling up to 10 s for want. */
static int eventually(tc_cache *c, const char *key, const char *want)
{
    for (int i = 0; i < 1000; i++) {
        void *v = NULL;
        size_t len = 0;
        int rc = tc_get(&v, &len, c, key, strlen(key));
        int ok = want == NULL ? rc == TC_ENOTFOUND
                              : rc == TC_OK && len == strlen(want) && memcmp(v, want, len) == 0;
        tc_free(v);
        if (ok)
            return 1;
        tct_sleep_ms(10);
    }
    return 0;
}

static void expect(tc_cache *c, const char *key, const char *want)
{
    void *v = NULL;
    size_t len = 0;
    int rc = tc_get(&v, &len, c, key, strlen(key));
    ck_assert_msg(rc == TC_OK, "get %s: %s", key, tc_strerror(rc));
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_int_eq(memcmp(v, want, len), 0);
    tc_free(v);
}

static tc_invalidator *invalidator(tc_cache *c)
{
    tc_invalidator *inv = NULL;
    ck_assert_int_eq(tc_invalidator_new(&inv, c), TC_OK);
    return inv;
}

static int64_t step(tc_invalidator *inv, int want_rc)
{
    int64_t applied = -1, seq = -1;
    int rc = tc_invalidator_step(&applied, &seq, inv);
    ck_assert_msg(rc == want_rc, "step: %s", tc_strerror(rc));
    return applied;
}

static void *sql_after_a_moment(void *arg)
{
    tct_thread *t = arg;
    tct_sleep_ms(200);
    tct_sql(db_path(), "UPDATE tiercache SET value = 'late' WHERE key = 'w'");
    return t;
}

/* Another connection's commit wakes the invalidator's wait (the watch of the database's
 * directory): with feed.poll_ms at a minute, a wait that polled would outlast the test's
 * timeout. */
START_TEST(test_plain_sql_wakes_the_wait)
{
    tc_cache *c = tct_open(tct_dir, "db", tct_srv.port, "{\"feed\": {\"poll_ms\": 60000}}");
    ck_assert_int_eq(tc_put(c, K("w"), "v1", 2, 0), TC_OK);
    tc_invalidator *inv = invalidator(c);
    step(inv, TC_OK);
    ck_assert_int_eq(step(inv, TC_OK), 0); /* idle: the next wait has nothing queued */
    static tct_thread t; /* the harness's undo list outlives this frame */
    tct_thread_start(&t, sql_after_a_moment, NULL);
    ck_assert_int_eq(tc_invalidator_wait(inv), TC_OK);
    tct_thread_stop(&t);
    ck_assert_int_eq(step(inv, TC_OK), 1);
    expect(c, "w", "late");
    tc_invalidator_free(inv);
    tc_close(c);
}
END_TEST

/* The profile story: a plain-SQL UPDATE reaches every handle through the invalidator. */
START_TEST(test_plain_sql_reaches_every_tier)
{
    const char *conf = "{\"default_ttl_ms\": 600000}";
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, conf);
    tc_cache *b = tct_open(tct_dir, "db", tct_srv.port, conf);
    tc_cache *i = tct_open(tct_dir, "db", tct_srv.port, conf);
    tc_invalidator *inv = invalidator(i);
    ck_assert_int_eq(tc_invalidator_start(inv), TC_OK);
    ck_assert_int_eq(tc_invalidator_start(inv), TC_EINVAL);

    tct_sql(db_path(), "INSERT INTO tiercache(key, value) VALUES ('user:123', "
                       "'Software Engineer')");
    expect(a, "user:123", "Software Engineer"); /* a read fills Redis and a's edge */
    expect(b, "user:123", "Software Engineer");
    tct_sql(db_path(), "UPDATE tiercache SET value = 'Principal Engineer' WHERE key = 'user:123'");
    ck_assert(eventually(a, "user:123", "Principal Engineer"));
    ck_assert(eventually(b, "user:123", "Principal Engineer"));

    tct_sql(db_path(), "DELETE FROM tiercache WHERE key = 'user:123'");
    ck_assert(eventually(a, "user:123", NULL));
    ck_assert(eventually(b, "user:123", NULL));
    tc_invalidator_free(inv);
    tc_close(a);
    tc_close(b);
    tc_close(i);
}
END_TEST

/* A plain-SQL rename of a key: the old key goes from every tier, the new one is read. */
START_TEST(test_plain_sql_rename)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_cache *i = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_invalidator *inv = invalidator(i);
    ck_assert_int_eq(tc_put(a, K("old"), "v", 1, 0), TC_OK);
    expect(a, "old", "v");
    tct_sql(db_path(), "UPDATE tiercache SET key = 'new' WHERE key = 'old'");
    long long renamed = sql_int("SELECT version FROM tiercache WHERE key = 'new'");
    ck_assert_int_gt(sql_int("SELECT MAX(version) FROM tiercache_log WHERE key = 'old'"), 0);
    ck_assert_int_eq(sql_int("SELECT MAX(version) FROM tiercache_log WHERE key = 'new'"),
                     renamed);
    while (step(inv, TC_OK) > 0) {
    }
    ck_assert(eventually(a, "old", NULL));
    expect(a, "new", "v");
    tc_invalidator_free(inv);
    tc_close(a);
    tc_close(i);
}
END_TEST

/* A library write is in the log too; applying it leaves the new copy in Redis. */
START_TEST(test_library_writes_keep_their_copy)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_cache *i = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_invalidator *inv = invalidator(i);
    ck_assert_int_eq(tc_put(a, K("k"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(step(inv, TC_OK), 1);
    tc_cache *fresh = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tct_wait_edge(a);
    tct_wait_edge(fresh);
    void *v;
    size_t len;
    unsigned info;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, NULL, fresh, K("k")), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_REDIS);
    tc_free(v);
    step(inv, TC_OK); /* caught up, the probes included */
    /* The edges keep that very version too: the writer's, and one filled from Redis (after the
     * invalidator's bus message for the change had time to arrive). */
    ck_assert_int_eq(tc_put(a, K("k"), "v2", 2, 0), TC_OK);
    ck_assert(eventually(fresh, "k", "v2")); /* a's bus message arrived; v2 is in fresh's edge */
    ck_assert_int_eq(step(inv, TC_OK), 1);
    tct_sleep_ms(300);
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, NULL, a, K("k")), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_EDGE);
    tc_free(v);
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, NULL, fresh, K("k")), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_EDGE);
    ck_assert_int_eq(memcmp(v, "v2", 2), 0);
    tc_free(v);
    tc_invalidator_free(inv);
    tc_close(a);
    tc_close(i);
    tc_close(fresh);
}
END_TEST

/* A late fill of the row's old version is refused after the invalidator ran (its tombstone
 * carries the new version). */
START_TEST(test_old_version_not_refilled)
{
    tc_cache *i = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    tc_invalidator *inv = invalidator(i);
    tct_sql(db_path(), "INSERT INTO tiercache(key, value) VALUES ('k', 'old')");
    long long old_version = sql_int("SELECT version FROM tiercache WHERE key = 'k'");
    tct_sql(db_path(), "UPDATE tiercache SET value = 'new' WHERE key = 'k'");
    ck_assert_int_eq(step(inv, TC_OK), 2);
    /* What a reader that loaded the old row before the UPDATE would write back late. */
    const char *argv[] = {"GET", "tc:k", NULL};
    char *raw = tct_redis_cmd(&tct_srv, argv);
    ck_assert_ptr_nonnull(raw); /* a tombstone */
    free(raw);
    ck_assert_int_gt(sql_int("SELECT version FROM tiercache WHERE key = 'k'"), old_version);
    expect(a, "k", "new");
    tc_invalidator_free(inv);
    tc_close(a);
    tc_close(i);
}
END_TEST

/* Checkpoint, restart, lease and standby, trim. */
START_TEST(test_checkpoint_lease_and_trim)
{
    const char *conf = "{\"feed\": {\"lease_ms\": 300, \"retention_ms\": 0, \"batch\": 2}}";
    tc_cache *c1 = tct_open(tct_dir, "db", tct_srv.port, conf);
    tc_cache *c2 = tct_open(tct_dir, "db", tct_srv.port, conf);
    tc_invalidator *one = invalidator(c1), *two = invalidator(c2);
    for (int k = 0; k < 3; k++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO tiercache(key, value) VALUES ('k%d', 'v')", k);
        tct_sql(db_path(), sql);
    }
    ck_assert_int_eq(step(one, TC_OK), 2); /* a batch of 2 */
    ck_assert_int_eq(step(two, TC_ESTATE), 0); /* one holds the lease: two stands by */
    ck_assert_int_eq(step(one, TC_OK), 1);
    ck_assert_int_eq(step(one, TC_OK), 0);
    ck_assert_int_eq(sql_int("SELECT COUNT(*) FROM tiercache_log"), 0); /* trimmed: retention 0 */

    /* one dies without a word (kill -9): two takes over once the lease expired, from the
     * checkpoint, missing nothing written meanwhile. */
    tct_sql(db_path(), "UPDATE tiercache SET value = 'w' WHERE key = 'k1'");
    ck_assert_int_eq(step(two, TC_ESTATE), 0);
    tct_sleep_ms(400);
    ck_assert_int_eq(step(two, TC_OK), 1);
    ck_assert_int_eq(step(two, TC_OK), 0);
    /* A clean stop gives the lease up at once. */
    tc_invalidator_free(two);
    tct_sql(db_path(), "DELETE FROM tiercache WHERE key = 'k2'");
    ck_assert_int_eq(step(one, TC_OK), 1);
    tc_invalidator_free(one);
    tc_close(c1);
    tc_close(c2);
}
END_TEST

/* Without Redis (no bus id): two invalidators are still told apart by the lease. */
START_TEST(test_lease_without_redis)
{
    tc_cache *c1 = tct_open(tct_dir, "db", 0, NULL), *c2 = tct_open(tct_dir, "db", 0, NULL);
    tc_invalidator *one = invalidator(c1), *two = invalidator(c2);
    step(one, TC_OK);
    step(two, TC_ESTATE);
    ck_assert_int_eq(tc_invalidator_wait(two), TC_OK); /* a standby's wait: the poll interval */
    tc_invalidator_free(one);
    step(two, TC_OK);
    tc_invalidator_free(two);
    tc_close(c1);
    tc_close(c2);
}
END_TEST

/* In a child of tct_fork_holding: an invalidator on the handle takes the feed's lease. */
static int hold_the_lease(void *arg)
{
    tc_invalidator *inv = NULL;
    int64_t applied, seq;
    return tc_invalidator_new(&inv, arg) != TC_OK ||
           tc_invalidator_step(&applied, &seq, inv) != TC_OK;
}

/* An invalidator killed with -9 while holding a minute-long lease is replaced at once by one
 * on the same host: its process is gone (a zombie first, then no process at all), so the lease
 * is taken over without waiting it out. A live holder's lease is never taken. */
START_TEST(test_killed_invalidator_replaced_at_once)
{
    const char *conf = "{\"feed\": {\"lease_ms\": 60000}}";
    tc_cache *c1 = tct_open(tct_dir, "db", 0, conf);
    pid_t pid = tct_fork_holding(hold_the_lease, c1);
    tc_cache *c2 = tct_open(tct_dir, "db", 0, conf);
    tc_invalidator *two = invalidator(c2);
    step(two, TC_ESTATE); /* the child lives: its lease stands */
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int taken = 0;
    for (int i = 0; i < 200 && !taken; i++) { /* a zombie until reaped: gone all the same */
        int64_t applied, seq;
        taken = tc_invalidator_step(&applied, &seq, two) == TC_OK;
        if (!taken)
            tct_sleep_ms(5);
    }
    ck_assert_msg(taken, "the dead holder's lease was not taken over");
    tct_child_status(pid);
    tc_cache *c3 = tct_open(tct_dir, "db", 0, conf);
    tc_invalidator *three = invalidator(c3);
    step(three, TC_ESTATE); /* two lives (this process): never taken from it */
    tc_invalidator_free(three);
    tc_invalidator_free(two);
    tc_close(c3);
    tc_close(c2);
    tc_close(c1);
}
END_TEST

/* A fork()ed child's copy of an invalidator that holds the lease: the lease stays its parent's.
 * The child stands by (it never renews the parent's lease under the parent's name), and
 * freeing its copy releases nothing; the parent still holds the lease afterwards. */
START_TEST(test_invalidator_in_child)
{
    /* A minute-long lease: only the holder's identity decides, never a slow run's clock. */
    const char *conf = "{\"feed\": {\"lease_ms\": 60000}}";
    tc_cache *c1 = tct_open(tct_dir, "db", 0, conf), *c2 = tct_open(tct_dir, "db", 0, conf);
    tc_invalidator *one = invalidator(c1), *two = invalidator(c2);
    step(one, TC_OK); /* one holds the lease */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tct_child_alarm(20);
        int64_t applied = 0, seq = 0;
        int rc = tc_invalidator_step(&applied, &seq, one), bad = rc != TC_ESTATE;
        if (bad)
            fprintf(stderr, "child: step: %s: %s\n", tc_strerror(rc), tc_errmsg(c1));
        tc_invalidator_free(one); /* must not release the parent's lease */
        tc_invalidator_free(two);
        tc_close(c1);
        tc_close(c2);
        _exit(bad);
    }
    int status = tct_child_status(pid);
    ck_assert_msg(status == 0, "child: status %d", status);
    step(two, TC_ESTATE); /* the lease is still one's */
    step(one, TC_OK);
    tc_invalidator_free(one);
    tc_invalidator_free(two);
    tc_close(c1);
    tc_close(c2);
}
END_TEST

START_TEST(test_no_feed_in_a_store_of_your_own)
{
    tc_invalidator *inv = (tc_invalidator *)1;
    ck_assert_int_eq(tc_invalidator_new(&inv, NULL), TC_EINVAL);
    ck_assert_int_eq(tc_invalidator_new(NULL, NULL), TC_EINVAL);
    ck_assert_int_eq(tc_invalidator_step(NULL, NULL, NULL), TC_EINVAL);
    ck_assert_int_eq(tc_invalidator_start(NULL), TC_EINVAL);
    ck_assert_int_eq(tc_invalidator_wait(NULL), TC_EINVAL);
    tc_invalidator_free(NULL);
}
END_TEST

Suite *feed_suite(void)
{
    Suite *s = suite_create("feed");
    TCase *tc = tcase_create("sqlite");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(tc, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(tc, test_plain_sql_reaches_every_tier);
    tcase_add_test(tc, test_plain_sql_wakes_the_wait);
    tcase_add_test(tc, test_library_writes_keep_their_copy);
    tcase_add_test(tc, test_plain_sql_rename);
    tcase_add_test(tc, test_lease_without_redis);
    tcase_add_test(tc, test_old_version_not_refilled);
    tcase_add_test(tc, test_checkpoint_lease_and_trim);
    tcase_add_test(tc, test_no_feed_in_a_store_of_your_own);
    tcase_add_test(tc, test_invalidator_in_child);
    tcase_add_test(tc, test_killed_invalidator_replaced_at_once);
    suite_add_tcase(s, tc);
    return s;
}
