/*
 * fixture.c - what the integration suites share: a redis-server per TCase, a fresh temp dir
 * per test, and opening caches.
 */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
