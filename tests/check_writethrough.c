/*
 * check_writethrough.c - the write-through tier's fail-safe and stampede rules across tiers:
 * the stale window when the store is down, negative entries shared through Redis, the
 * cross-process lease. A private redis-server and SQLite files in a temp dir.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tc_test.h"

#define K(s) (s), strlen(s)

/* Reads key; returns the result code, the value (checked against want when TC_OK) and info. */
static int get_info(tc_cache *c, const char *key, const char *want, unsigned *info)
{
    void *v = NULL;
    size_t len = 0;
    int64_t ver;
    int rc = tc_get_ex(&v, &len, info, &ver, c, key, strlen(key));
    if (rc == TC_OK) {
        ck_assert_uint_eq(len, strlen(want));
        ck_assert_int_eq(memcmp(v, want, len), 0);
    }
    tc_free(v);
    return rc;
}

static void store_path(char *out, size_t n)
{
    snprintf(out, n, "%s/db.db", tct_dir);
}

/* ---- the store down: the stale window ------------------------------------------------------- */

START_TEST(test_stale_window_serves_last_known_value)
{
    tc_cache *c = tct_open(tct_dir, "db", _i ? tct_srv.port : 0,
                           "{\"default_ttl_ms\": 100, \"ttl_jitter_pct\": 0,"
                           " \"store\": {\"stale_window_ms\": 60000, \"busy_timeout_ms\": 10}}");
    char path[512];
    store_path(path, sizeof path);
    unsigned info;
    ck_assert_int_eq(tc_put(c, K("k"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_EDGE); /* fresh: no stale flag */

    /* Past the TTL with the store healthy: read from the store, fresh again. */
    tct_sleep_ms(150);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_EDGE);

    /* Past the TTL with the store down: the last known value, marked stale. */
    tct_sleep_ms(150);
    tct_sql(path, "ALTER TABLE tiercache RENAME TO tiercache_away");
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE | TC_INFO_STALE);
    /* A key the caches never held: the store's error, clearly. */
    ck_assert_int_eq(get_info(c, "never", NULL, &info), TC_ESTORE);
    ck_assert_uint_eq(info, 0);
    /* A put with the store down fails and leaves the caches alone. */
    ck_assert_int_eq(tc_put(c, K("k"), "v2", 2, 0), TC_ESTORE);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE | TC_INFO_STALE);

    /* The store is back: fresh again. */
    tct_sql(path, "ALTER TABLE tiercache_away RENAME TO tiercache");
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE);
    tc_close(c);
}
END_TEST

START_TEST(test_outside_stale_window_is_an_error)
{
    tc_cache *c = tct_open(tct_dir, "db", tct_srv.port,
                           "{\"default_ttl_ms\": 100, \"ttl_jitter_pct\": 0,"
                           " \"store\": {\"stale_window_ms\": 100, \"busy_timeout_ms\": 10}}");
    tc_cache *nowindow = tct_open(tct_dir, "db", tct_srv.port,
                                  "{\"default_ttl_ms\": 100, \"ttl_jitter_pct\": 0,"
                                  " \"store\": {\"busy_timeout_ms\": 10}}");
    char path[512];
    store_path(path, sizeof path);
    unsigned info;
    ck_assert_int_eq(tc_put(c, K("k"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(tc_put(nowindow, K("n"), "n1", 2, 0), TC_OK);
    tct_sleep_ms(300); /* past TTL + window */
    tct_sql(path, "ALTER TABLE tiercache RENAME TO tiercache_away");
    ck_assert_int_eq(get_info(c, "k", NULL, &info), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "tiercache"));
    ck_assert_int_eq(get_info(nowindow, "n", NULL, &info), TC_ESTORE); /* no window at all */
    tct_sql(path, "ALTER TABLE tiercache_away RENAME TO tiercache");
    tc_close(c);
    tc_close(nowindow);
}
END_TEST

/* ---- negative entries shared through Redis ------------------------------------------------- */

START_TEST(test_negative_entries_shared_through_redis)
{
    const char *conf = "{\"negative_ttl_ms\": 60000}";
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, conf);
    tc_cache *b = tct_open(tct_dir, "db", tct_srv.port, conf); /* another process's view */
    unsigned info;
    tct_count_store_reads(0);
    ck_assert_int_eq(get_info(a, "nokey", NULL, &info), TC_ENOTFOUND);
    ck_assert_int_eq(tct_store_reads(), 1);
    /* b's edge never saw the key: Redis tells it the store lacks it, the store is not asked. */
    ck_assert_int_eq(get_info(b, "nokey", NULL, &info), TC_ENOTFOUND);
    ck_assert_int_eq(get_info(b, "nokey", NULL, &info), TC_ENOTFOUND);
    ck_assert_int_eq(tct_store_reads(), 1);
    ck_assert_int_eq(tct_stat(b, "redis", "hits"), 1); /* then its own edge remembered it */

    /* A put replaces the memory in every tier. */
    ck_assert_int_eq(tc_put(b, K("nokey"), "now", 3, 0), TC_OK);
    ck_assert_int_eq(get_info(b, "nokey", "now", &info), TC_OK);
    tc_cache *c = tct_open(tct_dir, "db", tct_srv.port, conf);
    ck_assert_int_eq(get_info(c, "nokey", "now", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_REDIS);
    /* get_many takes Redis's negative entries as they are, too. */
    ck_assert_int_eq(get_info(a, "gone", NULL, &info), TC_ENOTFOUND);
    tc_items *items;
    const char *keys[] = {"gone", "nokey"};
    size_t lens[] = {4, 5};
    ck_assert_int_eq(tc_get_many(&items, c, keys, lens, 2), TC_OK);
    size_t vl;
    ck_assert_ptr_null(tc_items_value(items, 0, &vl));
    ck_assert_ptr_nonnull(tc_items_value(items, 1, &vl));
    tc_items_free(items);
    ck_assert_int_eq(tct_store_reads(), 2);
    tct_count_store_reads_off();
    tc_close(a);
    tc_close(b);
    tc_close(c);
}
END_TEST

/* ---- the miss lease across processes -------------------------------------------------------- */

/* A child's handle on the shared SQLite file and Redis. */
static tc_cache *open_lease_child(void *conf)
{
    return tct_open(tct_dir, "db", tct_srv.port, conf);
}

/* 4 processes x 8 threads miss on one key while its store read takes 100 ms: with the lease,
 * the store is read once (without it, once per process: 4 here). */
START_TEST(test_lease_one_store_read_across_processes)
{
    const char *conf = "{\"lease_ms\": 5000, \"lease_wait_ms\": 5000}";
    /* The row, written by another program: every tier starts empty. No handle is open in this
     * process while it forks. */
    char path[512];
    store_path(path, sizeof path);
    tc_close(tct_open(tct_dir, "db", 0, NULL)); /* creates the table */
    tct_sql(path, "INSERT INTO tiercache(key, value) VALUES ('hot', 'hot value')");
    tct_count_store_reads(100);
    tct_burst(open_lease_child, (void *)conf, 4, 8, "hot", "hot value");
    ck_assert_int_eq(tct_store_reads(), 1);
    tct_count_store_reads_off();
}
END_TEST

/* The same burst on a key whose every copy is stale, with store.stale_window_ms on: each reader
 * holds the stale copy for stale-if-error, and still takes the lease (or waits for its
 * holder's fresh record), so the store is read once here too. The holder's fill is fresh for
 * the put's TTL again (the record's lifetime), so that TTL must outlast the burst: with 100 ms,
 * a waiter under valgrind that looked after the fill had gone stale read the store a second
 * time (rightly: the copy it found had expired). */
START_TEST(test_lease_with_stale_window)
{
    const char *conf = "{\"lease_ms\": 5000, \"lease_wait_ms\": 5000, \"ttl_jitter_pct\": 0,"
                       " \"store\": {\"stale_window_ms\": 60000}}";
    tc_cache *c = tct_open(tct_dir, "db", tct_srv.port, conf);
    ck_assert_int_eq(tc_put(c, K("hot"), K("hot value"), 2000), TC_OK);
    tc_close(c);
    tct_sleep_ms(2100); /* stale in Redis, kept there for the window */
    tct_count_store_reads(100);
    tct_burst(open_lease_child, (void *)conf, 4, 8, "hot", "hot value");
    ck_assert_int_eq(tct_store_reads(), 1);
    tct_count_store_reads_off();
}
END_TEST

Suite *writethrough_suite(void)
{
    Suite *s = suite_create("writethrough");
    TCase *tc = tcase_create("failsafe");
    tcase_add_unchecked_fixture(tc, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(tc, tct_dir_setup, tct_dir_teardown);
    tcase_add_loop_test(tc, test_stale_window_serves_last_known_value, 0, 2);
    tcase_add_test(tc, test_outside_stale_window_is_an_error);
    tcase_add_test(tc, test_negative_entries_shared_through_redis);
    tcase_add_test(tc, test_lease_one_store_read_across_processes);
    tcase_add_test(tc, test_lease_with_stale_window);
    suite_add_tcase(s, tc);
    return s;
}
