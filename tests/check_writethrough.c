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

Suite *writethrough_suite(void)
{
    Suite *s = suite_create("writethrough");
    TCase *tc = tcase_create("failsafe");
    tcase_add_unchecked_fixture(tc, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(tc, tct_dir_setup, tct_dir_teardown);
    tcase_add_loop_test(tc, test_stale_window_serves_last_known_value, 0, 2);
    tcase_add_test(tc, test_outside_stale_window_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}
