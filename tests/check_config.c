/*
 * check_config.c - the config object: defaults, setters, the JSON loader and every error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "tc_test.h"

static tc_config *cfg;

static void setup(void)
{
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
}

static void teardown(void)
{
    tc_config_free(cfg);
    cfg = NULL;
}

static int load(const char *json)
{
    return tc_config_load_json(cfg, json, strlen(json));
}

/* The load fails with TC_ECONFIG and the message contains want. */
static void expect_error(const char *json, const char *want)
{
    ck_assert_int_eq(load(json), TC_ECONFIG);
    ck_assert_msg(strstr(tc_config_errmsg(cfg), want) != NULL, "json %s: message \"%s\" lacks \"%s\"",
                  json, tc_config_errmsg(cfg), want);
}

START_TEST(test_defaults)
{
    ck_assert_int_eq(cfg->default_ttl_ms, 300000);
    ck_assert_int_eq(cfg->edge_enabled, 1);
    ck_assert_str_eq(cfg->redis_host, "");
    ck_assert_str_eq(cfg->redis_namespace, "tc:");
    ck_assert_str_eq(cfg->store_type, "sqlite");
    ck_assert_str_eq(cfg->store_path, "tiercache.db");
    ck_assert_str_eq(tc_config_errmsg(cfg), "");
}
END_TEST

START_TEST(test_load_full)
{
    const char *json = "{\"default_ttl_ms\": 1000, \"max_value_bytes\": 2048,"
                       " \"tombstone_ttl_ms\": 500,"
                       " \"edge\": {\"enabled\": false, \"max_entries\": 10, \"max_bytes\": 8192,"
                       "            \"max_ttl_ms\": 700},"
                       " \"redis\": {\"host\": \"127.0.0.1\", \"port\": 6380, \"unix_socket\": \"\","
                       "            \"namespace\": \"app:\", \"connect_timeout_ms\": 50,"
                       "            \"command_timeout_ms\": 60, \"retry_interval_ms\": 0},"
                       " \"store\": {\"type\": \"sqlite\", \"path\": \"/tmp/x.db\", \"table\": \"kv_1\","
                       "            \"busy_timeout_ms\": 10}}";
    ck_assert_int_eq(load(json), TC_OK);
    ck_assert_int_eq(cfg->default_ttl_ms, 1000);
    ck_assert_int_eq(cfg->max_value_bytes, 2048);
    ck_assert_int_eq(cfg->edge_enabled, 0);
    ck_assert_int_eq(cfg->edge_max_ttl_ms, 700);
    ck_assert_str_eq(cfg->redis_host, "127.0.0.1");
    ck_assert_int_eq(cfg->redis_port, 6380);
    ck_assert_str_eq(cfg->redis_namespace, "app:");
    ck_assert_int_eq(cfg->redis_retry_interval_ms, 0);
    ck_assert_str_eq(cfg->store_path, "/tmp/x.db");
    ck_assert_str_eq(cfg->store_table, "kv_1");
    ck_assert_int_eq(cfg->store_busy_timeout_ms, 10);
}
END_TEST

START_TEST(test_syntax_error_has_line_and_column)
{
    expect_error("{\n  \"default_ttl_ms\": 10,\n  oops\n}", "line 3, column");
    expect_error("", "line");
    expect_error("{\"a\": 1", "line 1");
}
END_TEST

START_TEST(test_every_error_names_the_key)
{
    expect_error("[1, 2]", "must be a JSON object");
    expect_error("{\"default_ttl\": 1}", "unknown option \"default_ttl\"");
    expect_error("{\"redis\": {\"hots\": \"x\"}}", "unknown option \"redis.hots\"");
    expect_error("{\"cache\": {\"x\": 1}}", "unknown section \"cache\"");
    expect_error("{\"redis\": 5}", "redis: must be an object");
    expect_error("{\"redis\": {\"port\": {\"a\": 1}}}", "redis.port: must be an integer");
    expect_error("{\"redis\": {\"port\": \"6379\"}}", "redis.port: must be an integer");
    expect_error("{\"redis\": {\"port\": 1.5}}", "redis.port: must be an integer");
    expect_error("{\"redis\": {\"port\": 0}}", "redis.port: 0 is out of range");
    expect_error("{\"redis\": {\"port\": 65536}}", "redis.port: 65536 is out of range");
    expect_error("{\"redis\": {\"host\": 7}}", "redis.host: must be a string");
    expect_error("{\"redis\": {\"host\": \"a\\u0000b\"}}", "redis.host: contains a NUL byte");
    expect_error("{\"edge\": {\"enabled\": 1}}", "edge.enabled: must be true or false");
    expect_error("{\"edge\": {\"max_bytes\": 100}}", "edge.max_bytes: 100 is out of range");
    expect_error("{\"default_ttl_ms\": -5}", "default_ttl_ms: -5 is out of range");
    expect_error("{\"max_value_bytes\": 0}", "max_value_bytes: 0 is out of range");
    expect_error("{\"store\": {\"type\": \"mysql\"}}", "store.type: unknown store type \"mysql\"");
    expect_error("{\"store\": {\"table\": \"kv; DROP TABLE x\"}}", "store.table: must match");
    expect_error("{\"store\": {\"table\": \"1kv\"}}", "store.table: must match");
    expect_error("{\"store\": {\"path\": \"\"}}", "store.path: length 0 is out of range");
    expect_error("{\"default_ttl_ms\": 1, \"default_ttl_ms\": 2}", "duplicate");
    expect_error("{\"redis\": {\"namespace\": null}}", "redis.namespace: must be a string");
    expect_error("{\"redis\": {\"namespace\": \"\"}}", "redis.namespace: length 0 is out of range");
}
END_TEST

START_TEST(test_all_or_nothing)
{
    ck_assert_int_eq(load("{\"default_ttl_ms\": 1234, \"redis\": {\"port\": 0}}"), TC_ECONFIG);
    ck_assert_int_eq(cfg->default_ttl_ms, 300000);
    ck_assert_int_eq(load("{\"default_ttl_ms\": 1234}"), TC_OK);
    ck_assert_int_eq(cfg->default_ttl_ms, 1234);
    ck_assert_str_eq(tc_config_errmsg(cfg), "");
}
END_TEST

START_TEST(test_setters)
{
    ck_assert_int_eq(tc_config_set_int(cfg, "redis.port", 7000), TC_OK);
    ck_assert_int_eq(cfg->redis_port, 7000);
    ck_assert_int_eq(tc_config_set_string(cfg, "redis.host", "localhost"), TC_OK);
    ck_assert_str_eq(cfg->redis_host, "localhost");
    ck_assert_int_eq(tc_config_set_bool(cfg, "edge.enabled", 0), TC_OK);
    ck_assert_int_eq(cfg->edge_enabled, 0);

    ck_assert_int_eq(tc_config_set_int(cfg, "redis.prot", 1), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_config_errmsg(cfg), "unknown option \"redis.prot\""));
    ck_assert_int_eq(tc_config_set_int(cfg, "redis.host", 1), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_config_errmsg(cfg), "redis.host: must be a string"));
    ck_assert_int_eq(tc_config_set_string(cfg, "redis.port", "1"), TC_ECONFIG);
    ck_assert_int_eq(tc_config_set_bool(cfg, "redis.port", 1), TC_ECONFIG);
    ck_assert_int_eq(tc_config_set_int(cfg, "redis.port", -1), TC_ECONFIG);
    ck_assert_int_eq(cfg->redis_port, 7000);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.table", "bad name"), TC_ECONFIG);
    ck_assert_str_eq(cfg->store_table, "tiercache");
    /* The thread's message names the option too. */
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "store.table"));
}
END_TEST

START_TEST(test_null_arguments)
{
    ck_assert_int_eq(tc_config_new(NULL), TC_EINVAL);
    ck_assert_int_eq(tc_config_load_json(NULL, "{}", 2), TC_EINVAL);
    ck_assert_int_eq(tc_config_load_json(cfg, NULL, 2), TC_EINVAL);
    ck_assert_int_eq(tc_config_load_file(cfg, NULL), TC_EINVAL);
    ck_assert_int_eq(tc_config_set_int(NULL, "redis.port", 1), TC_EINVAL);
    ck_assert_int_eq(tc_config_set_int(cfg, NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc_config_set_string(cfg, "redis.host", NULL), TC_EINVAL);
    ck_assert_int_eq(tc_config_set_bool(NULL, "edge.enabled", 1), TC_EINVAL);
    ck_assert_str_eq(tc_config_errmsg(NULL), "");
    tc_config_free(NULL);
}
END_TEST

START_TEST(test_load_file)
{
    char dir[256], path[300];
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/c.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"redis\": {\"port\": 6390}}", f);
    fclose(f);
    ck_assert_int_eq(tc_config_load_file(cfg, path), TC_OK);
    ck_assert_int_eq(cfg->redis_port, 6390);

    f = fopen(path, "w");
    fputs("{\n\"redis\": {\"port\": 6390,}\n}", f);
    fclose(f);
    ck_assert_int_eq(tc_config_load_file(cfg, path), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_config_errmsg(cfg), path));
    ck_assert_ptr_nonnull(strstr(tc_config_errmsg(cfg), "line 2"));

    snprintf(path, sizeof path, "%s/missing.json", dir);
    ck_assert_int_eq(tc_config_load_file(cfg, path), TC_EIO);
    ck_assert_ptr_nonnull(strstr(tc_config_errmsg(cfg), "missing.json"));
    ck_assert_int_eq(tc_config_load_file(cfg, dir), TC_EIO); /* a directory */
    tct_rmrf(dir);
}
END_TEST

START_TEST(test_open_rejects_nothing_valid)
{
    /* A config that passed validation opens; tc_open with NULL uses the defaults. */
    char dir[256], path[300];
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/t.db", dir);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.path", path), TC_OK);
    tc_cache *c;
    ck_assert_int_eq(tc_open(&c, cfg), TC_OK);
    tc_close(c);
    ck_assert_int_eq(tc_open(NULL, cfg), TC_EINVAL);
    tct_rmrf(dir);
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_load_full);
    tcase_add_test(tc, test_syntax_error_has_line_and_column);
    tcase_add_test(tc, test_every_error_names_the_key);
    tcase_add_test(tc, test_all_or_nothing);
    tcase_add_test(tc, test_setters);
    tcase_add_test(tc, test_null_arguments);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_open_rejects_nothing_valid);
    suite_add_tcase(s, tc);
    return s;
}
