/*
 * check_pg_wt.c - the write-through rules of check_writethrough.c and check_cache.c, with the
 * PostgreSQL store behind them: the cache-aside race, single-flight, the miss lease across
 * processes, the stale window with the store down. Through the public API with
 * store.type=postgres, a private PostgreSQL server (tests/pg_harness.c) and a private
 * redis-server (tests/fixture.c) per TCase, both started in the runner; each test uses tables
 * of its own.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/cache.h"
#include "edge/edge.h"
#include "pg_harness.h"
#include "redis/redis_tier.h"
#include "tc_test.h"

#define K(s) (s), strlen(s)

static tct_pg pg_srv;

static void pg_up(void)
{
    ck_assert_msg(tct_pg_available(),
                  "PostgreSQL server binaries not found (TCT_PG_BINDIR overrides): install the "
                  "postgresql package (make deps)");
    ck_assert_msg(tct_pg_start(&pg_srv) == 0, "cannot start a private PostgreSQL server");
}

static void pg_down(void)
{
    tct_pg_stop(&pg_srv);
}

/* A cache on table in the private server; with Redis at redis_port (0: none); extra: more
 * JSON members (NULL for none). */
static tc_cache *pgwt_open(const char *table, int redis_port, const char *extra_json)
{
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.type", "postgres"), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.conninfo", pg_srv.conninfo), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.table", table), TC_OK);
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
    tc_config_free(cfg);
    ck_assert_msg(rc == TC_OK, "tc_open: %s", tc_errmsg(NULL));
    return c;
}

/* Runs one statement as another program would. */
static void pg_sql(const char *sql)
{
    PGconn *pg = PQconnectdb(pg_srv.conninfo);
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(pg);
}

static void expect_value(tc_cache *c, const char *key, const char *want, unsigned source)
{
    void *v = NULL;
    size_t len = 0;
    unsigned info = 0;
    int rc = tc_get_ex(&v, &len, &info, NULL, c, key, strlen(key));
    ck_assert_msg(rc == TC_OK, "get %s: %s (%s)", key, tc_strerror(rc), tc_errmsg(c));
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_int_eq(memcmp(v, want, len), 0);
    if (source != 0)
        ck_assert_uint_eq(info & 0xff, source);
    tc_free(v);
}

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

/* ---- the cache-aside race ------------------------------------------------------------------- */

/* Interleaved by hand, as check_cache.c's test_cache_aside_race: (1) a reader misses and loads
 * v1 from the store; (2) a writer commits v2 and invalidates; (3) the reader's fill of v1
 * lands. Every tier must end with v2 or nothing, never v1. */
START_TEST(test_cache_aside_race)
{
    tc_cache *reader = pgwt_open("wt_race", tct_srv.port, NULL);
    tc_cache *writer = pgwt_open("wt_race", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    tc_cache *store_only = pgwt_open("wt_race", 0, "{\"edge\": {\"enabled\": false}}");
    ck_assert_int_eq(tc_put(writer, K("k"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(tc_invalidate(writer, K("k")), TC_OK);
    /* (1) the reader's load of v1, as its read-through saw it */
    void *v;
    size_t len;
    unsigned info;
    int64_t v1;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, &v1, store_only, K("k")), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_STORE);
    tc_free(v);
    /* (2) the writer */
    ck_assert_int_eq(tc_put(writer, K("k"), "v2", 2, 0), TC_OK);
    ck_assert_int_eq(tc_invalidate(writer, K("k")), TC_OK);
    /* (3) the late fill of v1, into both of the reader's cache tiers */
    ck_assert_int_eq(tc__redis_set(tc__cache_redis(reader), K("k"), "v1", 2, v1, 60000), TC_OK);
    ck_assert_int_ge(tc__edge_set(tc__cache_edge(reader), K("k"), "v1", 2, v1, 60000), 0);
    /* The reader's edge never saw v2, so its late copy is taken there (the bus is what
     * invalidates edges across processes). Redis refused it: */
    tc__edge_remove(tc__cache_edge(reader), K("k"));
    expect_value(reader, "k", "v2", 0);
    const char *payload[] = {"GETRANGE", "tc:k", "20", "-1", NULL};
    char *r = tct_redis_cmd(&tct_srv, payload);
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strcmp(r, "v2") == 0 || strcmp(r, "") == 0, "redis holds %s", r);
    free(r);
    expect_value(store_only, "k", "v2", TC_SOURCE_STORE);
    tc_close(reader);
    tc_close(writer);
    tc_close(store_only);
}
END_TEST

/* ---- single-flight -------------------------------------------------------------------------- */

START_TEST(test_single_flight)
{
    tc_cache *c = pgwt_open("wt_flight", 0, NULL);
    ck_assert_int_eq(tc_put(c, K("hot"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(tc_invalidate(c, K("hot")), TC_OK); /* out of the edge: a miss */
    long long hits = tct_stat(c, "store", "hits");
    tct_stampede(c, "hot", TC_OK, "v1");
    ck_assert_int_eq(tct_stat(c, "store", "hits") - hits, 1);
    tct_stampede(c, "never", TC_ENOTFOUND, NULL);
    expect_value(c, "hot", "v1", TC_SOURCE_EDGE);
    tc_close(c);
}
END_TEST

/* ---- the miss lease across processes -------------------------------------------------------- */

/* A child's handle on the shared table and Redis. */
static tc_cache *open_lease_child(void *conf)
{
    return pgwt_open("wt_lease", tct_srv.port, conf);
}

/* 4 processes x 8 threads miss on one key while its store read takes 100 ms: with the lease,
 * the store is read once in all. */
START_TEST(test_lease_one_store_read_across_processes)
{
    const char *conf = "{\"lease_ms\": 5000, \"lease_wait_ms\": 5000}";
    /* The row, written by another program: every tier starts empty. No handle is open in this
     * process while it forks. */
    tc_close(pgwt_open("wt_lease", 0, NULL)); /* creates the table */
    pg_sql("INSERT INTO wt_lease (key, value) VALUES ('hot', 'hot value')");
    tct_count_store_reads(100);
    tct_burst(open_lease_child, (void *)conf, 4, 8, "hot", "hot value");
    int n = tct_store_reads();
    tct_count_store_reads_off();
    ck_assert_int_eq(n, 1);
}
END_TEST

/* ---- the store down: the stale window ------------------------------------------------------- */

START_TEST(test_stale_window_serves_last_known_value)
{
    const char *table = _i ? "wt_stale_r" : "wt_stale";
    char away[64], back[64];
    snprintf(away, sizeof away, "ALTER TABLE %s RENAME TO %s_away", table, table);
    snprintf(back, sizeof back, "ALTER TABLE %s_away RENAME TO %s", table, table);
    tc_cache *c = pgwt_open(table, _i ? tct_srv.port : 0,
                            "{\"default_ttl_ms\": 100, \"ttl_jitter_pct\": 0,"
                            " \"store\": {\"stale_window_ms\": 60000}}");
    unsigned info;
    ck_assert_int_eq(tc_put(c, K("k"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_EDGE); /* fresh: no stale flag */

    /* Past the TTL with the store healthy: read from the store, fresh again. */
    tct_sleep_ms(150);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE);

    /* Past the TTL with the store down: the last known value, marked stale. */
    tct_sleep_ms(150);
    pg_sql(away);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE | TC_INFO_STALE);
    /* A key the caches never held: the store's error. */
    ck_assert_int_eq(get_info(c, "never", NULL, &info), TC_ESTORE);
    /* A put with the store down fails and leaves the caches alone. */
    ck_assert_int_eq(tc_put(c, K("k"), "v2", 2, 0), TC_ESTORE);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE | TC_INFO_STALE);

    /* The store is back: fresh again. */
    pg_sql(back);
    ck_assert_int_eq(get_info(c, "k", "v1", &info), TC_OK);
    ck_assert_uint_eq(info, TC_SOURCE_STORE);
    tc_close(c);
}
END_TEST

START_TEST(test_outside_stale_window_is_an_error)
{
    tc_cache *c = pgwt_open("wt_window", tct_srv.port,
                            "{\"default_ttl_ms\": 100, \"ttl_jitter_pct\": 0,"
                            " \"store\": {\"stale_window_ms\": 100}}");
    tc_cache *nowindow = pgwt_open("wt_window", tct_srv.port,
                                   "{\"default_ttl_ms\": 100, \"ttl_jitter_pct\": 0}");
    unsigned info;
    ck_assert_int_eq(tc_put(c, K("k"), "v1", 2, 0), TC_OK);
    ck_assert_int_eq(tc_put(nowindow, K("n"), "n1", 2, 0), TC_OK);
    tct_sleep_ms(300); /* past TTL + window */
    pg_sql("ALTER TABLE wt_window RENAME TO wt_window_away");
    ck_assert_int_eq(get_info(c, "k", NULL, &info), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "wt_window"));
    ck_assert_int_eq(get_info(nowindow, "n", NULL, &info), TC_ESTORE); /* no window at all */
    pg_sql("ALTER TABLE wt_window_away RENAME TO wt_window");
    tc_close(c);
    tc_close(nowindow);
}
END_TEST

Suite *pgwt_suite(void)
{
    Suite *s = suite_create("pgwt");
    TCase *tc = tcase_create("pgwt");
    tcase_add_unchecked_fixture(tc, pg_up, pg_down);
    tcase_add_unchecked_fixture(tc, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(tc, tct_dir_setup, tct_dir_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cache_aside_race);
    tcase_add_test(tc, test_single_flight);
    tcase_add_test(tc, test_lease_one_store_read_across_processes);
    tcase_add_loop_test(tc, test_stale_window_serves_last_known_value, 0, 2);
    tcase_add_test(tc, test_outside_stale_window_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}
