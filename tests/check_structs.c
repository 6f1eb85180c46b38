/*
 * check_structs.c - Redis structures (lib/ext/redis_structs.c: leaderboards and hashes), the result
 * lists (lib/common/items.c), the tier's batched read (tc__redis_get_many) and its rule that a command
 * which is not idempotent is never sent twice (tc__redis_run), against a private redis-server.
 *
 * TCase "items": the list builder, no server. TCase "structs" and "many": one server shared by
 * the tests, started in the runner process (an unchecked fixture) and flushed before each test.
 * TCase "faults": tests that kill servers, or block one, start their own.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "core/cache.h"
#include "common/items.h"
#include "redis/redis_tier.h"
#include "tc_test.h"

static tct_redis srv; /* shared by a TCase's tests; started in the runner */
static int srv_ok;
static char dir[256]; /* per test */

static void srv_up(void)
{
    srv_ok = tct_redis_start(&srv) == 0;
}

static void srv_down(void)
{
    if (srv_ok)
        tct_redis_stop(&srv);
    srv_ok = 0;
    srv.port = 0;
}

static void dir_setup(void)
{
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    if (srv.port > 0) {
        ck_assert_msg(srv_ok, "redis-server could not be started (package redis-server)");
        const char *flush[] = {"FLUSHALL", NULL};
        free(tct_redis_cmd(&srv, flush));
    }
}

static void dir_teardown(void)
{
    tct_rmrf(dir);
}

#define K(s) (s), strlen(s)

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A raw command with binary arguments (structure keys have a NUL); the reply is the caller's. */
static redisReply *raw_cmd(const tct_redis *s, int argc, const char **argv, const size_t *lens)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    ck_assert_msg(c != NULL && c->err == 0, "raw_cmd: cannot connect");
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);
    ck_assert_msg(rep != NULL, "raw_cmd %s: no reply", argv[0]);
    redisFree(c);
    return rep;
}

/* The Redis key of structure name under namespace ns: ns, NUL, "s:", name. */
static size_t struct_key(char *out, size_t size, const char *ns, const char *name)
{
    size_t n = strlen(ns), m = strlen(name);
    ck_assert_uint_lt(n + 3 + m, size);
    memcpy(out, ns, n);
    memcpy(out + n, "\0s:", 3);
    memcpy(out + n + 3, name, m);
    return n + 3 + m;
}

/* TYPE of a structure as Redis holds it ("none" when absent). The result is static. */
static const char *struct_type(const char *ns, const char *name)
{
    static char type[32];
    char key[256];
    const char *argv[2] = {"TYPE", key};
    size_t lens[2] = {4, struct_key(key, sizeof key, ns, name)};
    redisReply *rep = raw_cmd(&srv, 2, argv, lens);
    ck_assert_int_eq(rep->type, REDIS_REPLY_STATUS);
    snprintf(type, sizeof type, "%s", rep->str);
    freeReplyObject(rep);
    return type;
}

static double score_of(tc_cache *c, const char *set, const char *member)
{
    double s = -12345;
    int rc = tc_zrank(NULL, &s, c, K(set), K(member));
    ck_assert_msg(rc == TC_OK, "zrank %s %s: %s (%s)", set, member, tc_strerror(rc),
                  tc_errmsg(c));
    return s;
}

/* Checks item i of a list: name, and score (leaderboards) or value (hashes, NULL: none). */
static void expect_item(const tc_items *it, size_t i, const char *name, double score)
{
    size_t len = 99;
    const char *n = tc_items_name(it, i, &len);
    ck_assert_ptr_nonnull(n);
    ck_assert_uint_eq(len, strlen(name));
    ck_assert_int_eq(memcmp(n, name, len), 0);
    ck_assert_int_eq(n[len], '\0');
    ck_assert_msg(tc_items_score(it, i) == score, "item %zu (%s): score %.17g, want %.17g", i,
                  name, tc_items_score(it, i), score);
}

/* ---- items ---------------------------------------------------------------------------------- */

START_TEST(test_items_builder)
{
    ck_assert_uint_eq(tc_items_count(NULL), 0);
    size_t len = 7;
    ck_assert_ptr_null(tc_items_name(NULL, 0, &len));
    ck_assert_uint_eq(len, 0);
    len = 7;
    ck_assert_ptr_null(tc_items_value(NULL, 0, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert(tc_items_score(NULL, 0) == 0);
    tc_items_free(NULL);
    ck_assert_int_eq(tc__items_new(NULL, 1), TC_EINVAL);

    tc_items *it;
    ck_assert_int_eq(tc__items_new(&it, 0), TC_OK); /* grows from nothing */
    ck_assert_uint_eq(tc_items_count(it), 0);
    ck_assert_ptr_null(tc_items_name(it, 0, NULL));
    /* Many items with binary names and values: the buffer moves while it grows. */
    for (int i = 0; i < 1000; i++) {
        char name[32], value[64];
        int n = snprintf(name, sizeof name, "n%d", i);
        name[0] = '\0'; /* binary-safe: a NUL in the name */
        int m = snprintf(value, sizeof value, "v\x01%d", i);
        value[1] = '\0';
        ck_assert_int_eq(tc__items_add(it, name, (size_t)n, i % 3 == 0 ? NULL : value,
                                       i % 3 == 0 ? 0 : (size_t)m, i * 0.5),
                         TC_OK);
    }
    ck_assert_uint_eq(tc_items_count(it), 1000);
    for (size_t i = 0; i < 1000; i++) {
        char want[32], wantv[64];
        int n = snprintf(want, sizeof want, "n%zu", i);
        want[0] = '\0';
        int m = snprintf(wantv, sizeof wantv, "v\x01%zu", i);
        wantv[1] = '\0';
        const char *name = tc_items_name(it, i, &len);
        ck_assert_uint_eq(len, (size_t)n);
        ck_assert_int_eq(memcmp(name, want, len), 0);
        ck_assert_int_eq(name[len], '\0');
        const char *v = tc_items_value(it, i, &len);
        if (i % 3 == 0) {
            ck_assert_ptr_null(v);
            ck_assert_uint_eq(len, 0);
        } else {
            ck_assert_uint_eq(len, (size_t)m);
            ck_assert_int_eq(memcmp(v, wantv, len), 0);
            ck_assert_int_eq(v[len], '\0');
        }
        ck_assert(tc_items_score(it, i) == (double)i * 0.5);
    }
    /* Out of range. */
    len = 5;
    ck_assert_ptr_null(tc_items_name(it, 1000, &len));
    ck_assert_uint_eq(len, 0);
    len = 5;
    ck_assert_ptr_null(tc_items_value(it, (size_t)-1, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert(tc_items_score(it, 1000) == 0);
    /* Set afterwards, out of order; an empty value is a value. */
    ck_assert_int_eq(tc__items_set_value(it, 3, "", 0), TC_OK);
    const char *v = tc_items_value(it, 3, &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(v[0], '\0');
    ck_assert_int_eq(tc__items_set_value(it, 4, NULL, 0), TC_OK);
    ck_assert_ptr_null(tc_items_value(it, 4, &len));
    ck_assert_int_eq(tc__items_set_value(it, 0, "abc", 3), TC_OK);
    ck_assert_str_eq(tc_items_value(it, 0, NULL), "abc");
    ck_assert_int_eq(tc__items_set_score(it, 0, -2.5), TC_OK);
    ck_assert(tc_items_score(it, 0) == -2.5);
    /* Bad arguments. */
    ck_assert_int_eq(tc__items_set_value(it, 1000, "x", 1), TC_EINVAL);
    ck_assert_int_eq(tc__items_set_value(it, 0, NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc__items_set_value(NULL, 0, "x", 1), TC_EINVAL);
    ck_assert_int_eq(tc__items_set_score(it, 1000, 1), TC_EINVAL);
    ck_assert_int_eq(tc__items_add(it, NULL, 1, NULL, 0, 0), TC_EINVAL);
    ck_assert_int_eq(tc__items_add(it, "a", 1, NULL, 1, 0), TC_EINVAL);
    ck_assert_int_eq(tc__items_add(NULL, "a", 1, NULL, 0, 0), TC_EINVAL);
    ck_assert_uint_eq(tc_items_count(it), 1000);
    tc_items_free(it);

    ck_assert_int_eq(tc__items_new(&it, 4), TC_OK);
    ck_assert_int_eq(tc__items_add(it, NULL, 0, NULL, 0, 1), TC_OK); /* an empty name */
    ck_assert_str_eq(tc_items_name(it, 0, &len), "");
    ck_assert_uint_eq(len, 0);
    tc_items_free(it);
}
END_TEST

/* ---- leaderboards --------------------------------------------------------------------------- */

START_TEST(test_leaderboard)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    ck_assert_int_eq(tc_zadd(c, K("board"), K("alice"), 10), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("board"), K("bob"), 20), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("board"), K("carol"), 15), TC_OK);
    ck_assert_str_eq(struct_type("tc:", "board"), "zset");

    tc_items *top;
    ck_assert_int_eq(tc_ztop(&top, c, K("board"), 2), TC_OK);
    ck_assert_uint_eq(tc_items_count(top), 2);
    expect_item(top, 0, "bob", 20);
    expect_item(top, 1, "carol", 15);
    ck_assert_ptr_null(tc_items_value(top, 0, NULL));
    tc_items_free(top);
    ck_assert_int_eq(tc_ztop(&top, c, K("board"), 100), TC_OK);
    ck_assert_uint_eq(tc_items_count(top), 3);
    expect_item(top, 2, "alice", 10);
    tc_items_free(top);
    ck_assert_int_eq(tc_ztop(&top, c, K("board"), 0), TC_OK);
    ck_assert_ptr_nonnull(top);
    ck_assert_uint_eq(tc_items_count(top), 0);
    tc_items_free(top);

    int64_t rank = -1;
    double score = -1;
    ck_assert_int_eq(tc_zrank(&rank, &score, c, K("board"), K("bob")), TC_OK);
    ck_assert_int_eq(rank, 0);
    ck_assert(score == 20);
    ck_assert_int_eq(tc_zrank(&rank, NULL, c, K("board"), K("alice")), TC_OK);
    ck_assert_int_eq(rank, 2);
    ck_assert_int_eq(tc_zrank(NULL, NULL, c, K("board"), K("carol")), TC_OK);

    /* zadd sets (replaces) the score; zincrby adds. */
    ck_assert_int_eq(tc_zadd(c, K("board"), K("alice"), 12), TC_OK);
    ck_assert(score_of(c, "board", "alice") == 12);
    double now = 0;
    ck_assert_int_eq(tc_zincrby(&now, c, K("board"), K("alice"), 13), TC_OK);
    ck_assert(now == 25);
    ck_assert_int_eq(tc_zrank(&rank, &score, c, K("board"), K("alice")), TC_OK);
    ck_assert_int_eq(rank, 0);
    ck_assert(score == 25);
    /* From 0 when absent, NULL out_score accepted. */
    ck_assert_int_eq(tc_zincrby(NULL, c, K("board"), K("dave"), 1), TC_OK);
    ck_assert(score_of(c, "board", "dave") == 1);
    ck_assert_int_eq(tc_zincrby(&now, c, K("new"), K("x"), -3), TC_OK);
    ck_assert(now == -3);

    int removed = -1;
    ck_assert_int_eq(tc_zrem(&removed, c, K("board"), K("carol")), TC_OK);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(tc_zrem(&removed, c, K("board"), K("carol")), TC_OK);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(tc_zrem(NULL, c, K("board"), K("dave")), TC_OK);
    rank = 7;
    score = 7;
    ck_assert_int_eq(tc_zrank(&rank, &score, c, K("board"), K("carol")), TC_ENOTFOUND);
    ck_assert_int_eq(rank, 0);
    ck_assert(score == 0);
    ck_assert_int_eq(tc_zrank(NULL, &score, c, K("board"), K("carol")), TC_ENOTFOUND);
    ck_assert_int_eq(tc_ztop(&top, c, K("board"), 10), TC_OK);
    ck_assert_uint_eq(tc_items_count(top), 2);
    expect_item(top, 0, "alice", 25);
    expect_item(top, 1, "bob", 20);
    tc_items_free(top);
    tc_close(c);
}
END_TEST

START_TEST(test_ties_and_scores)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    /* Ties: Redis orders equal scores by member, descending for a reverse range. */
    ck_assert_int_eq(tc_zadd(c, K("t"), K("a"), 5), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("c"), 5), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("b"), 5), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("neg"), -1.5), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("tenth"), 0.1), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("tiny"), -1e-300), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("huge"), 1.7976931348623157e308), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("t"), K("third"), 1.0 / 3), TC_OK);
    tc_items *top;
    ck_assert_int_eq(tc_ztop(&top, c, K("t"), 10), TC_OK);
    ck_assert_uint_eq(tc_items_count(top), 8);
    expect_item(top, 0, "huge", 1.7976931348623157e308);
    expect_item(top, 1, "c", 5);
    expect_item(top, 2, "b", 5);
    expect_item(top, 3, "a", 5);
    expect_item(top, 4, "third", 1.0 / 3); /* every bit round-trips */
    expect_item(top, 5, "tenth", 0.1);
    expect_item(top, 6, "tiny", -1e-300);
    expect_item(top, 7, "neg", -1.5);
    tc_items_free(top);
    int64_t rank;
    ck_assert_int_eq(tc_zrank(&rank, NULL, c, K("t"), K("a")), TC_OK);
    ck_assert_int_eq(rank, 3);
    ck_assert_int_eq(tc_zrank(&rank, NULL, c, K("t"), K("neg")), TC_OK);
    ck_assert_int_eq(rank, 7);
    /* Fractional increments. */
    double s;
    ck_assert_int_eq(tc_zincrby(&s, c, K("t"), K("neg"), 0.25), TC_OK);
    ck_assert(s == -1.25);
    ck_assert_int_eq(tc_zincrby(&s, c, K("t"), K("tenth"), 0.2), TC_OK);
    ck_assert(s == 0.1 + 0.2);
    /* Overflow to infinity is Redis's answer, and reads back. */
    ck_assert_int_eq(tc_zincrby(&s, c, K("t"), K("huge"), 1.7976931348623157e308), TC_OK);
    ck_assert(isinf(s) && s > 0);
    ck_assert(isinf(score_of(c, "t", "huge")));
    tc_close(c);
}
END_TEST

START_TEST(test_absent)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    tc_items *it = NULL;
    ck_assert_int_eq(tc_ztop(&it, c, K("nope"), 10), TC_OK);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(tc_items_count(it), 0);
    tc_items_free(it);
    ck_assert_int_eq(tc_hgetall(&it, c, K("nope")), TC_OK);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(tc_items_count(it), 0);
    tc_items_free(it);
    int64_t rank = 9;
    ck_assert_int_eq(tc_zrank(&rank, NULL, c, K("nope"), K("m")), TC_ENOTFOUND);
    ck_assert_int_eq(tc_zrank(NULL, NULL, c, K("nope"), K("m")), TC_ENOTFOUND);
    int removed = 9;
    ck_assert_int_eq(tc_zrem(&removed, c, K("nope"), K("m")), TC_OK);
    ck_assert_int_eq(removed, 0);
    removed = 9;
    ck_assert_int_eq(tc_hdel(&removed, c, K("nope"), K("f")), TC_OK);
    ck_assert_int_eq(removed, 0);
    void *v = (void *)1;
    size_t len = 9;
    ck_assert_int_eq(tc_hget(&v, &len, c, K("nope"), K("f")), TC_ENOTFOUND);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tc_struct_expire(c, K("nope"), 1000), TC_ENOTFOUND);
    removed = 9;
    ck_assert_int_eq(tc_struct_del(&removed, c, K("nope")), TC_OK);
    ck_assert_int_eq(removed, 0);
    /* A present hash, an absent field. */
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), "v", 1), TC_OK);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("h"), K("g")), TC_ENOTFOUND);
    ck_assert_ptr_null(v);
    tc_close(c);
}
END_TEST

/* ---- hashes --------------------------------------------------------------------------------- */

START_TEST(test_hash)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    static const char bin[] = {'a', 0, 'b', 0, 0, (char)0xff, 'c'};
    ck_assert_int_eq(tc_hset(c, K("cart:42"), K("sku-1"), bin, sizeof bin), TC_OK);
    ck_assert_int_eq(tc_hset(c, K("cart:42"), K("sku-2"), "2", 1), TC_OK);
    ck_assert_int_eq(tc_hset(c, K("cart:42"), K("empty"), NULL, 0), TC_OK);
    ck_assert_str_eq(struct_type("tc:", "cart:42"), "hash");

    void *v;
    size_t len;
    ck_assert_int_eq(tc_hget(&v, &len, c, K("cart:42"), K("sku-1")), TC_OK);
    ck_assert_uint_eq(len, sizeof bin);
    ck_assert_int_eq(memcmp(v, bin, len), 0);
    ck_assert_int_eq(((char *)v)[len], '\0');
    tc_free(v);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("cart:42"), K("empty")), TC_OK);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 0);
    tc_free(v);
    /* Overwrite. */
    ck_assert_int_eq(tc_hset(c, K("cart:42"), K("sku-2"), "3", 1), TC_OK);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("cart:42"), K("sku-2")), TC_OK);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(memcmp(v, "3", 1), 0);
    tc_free(v);

    tc_items *all;
    ck_assert_int_eq(tc_hgetall(&all, c, K("cart:42")), TC_OK);
    ck_assert_uint_eq(tc_items_count(all), 3);
    int seen = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t nlen, vlen;
        const char *name = tc_items_name(all, i, &nlen);
        const char *val = tc_items_value(all, i, &vlen);
        ck_assert_ptr_nonnull(val);
        ck_assert_int_eq(val[vlen], '\0');
        ck_assert(tc_items_score(all, i) == 0);
        if (nlen == 5 && memcmp(name, "sku-1", 5) == 0) {
            ck_assert_uint_eq(vlen, sizeof bin);
            ck_assert_int_eq(memcmp(val, bin, vlen), 0);
            seen |= 1;
        } else if (nlen == 5 && memcmp(name, "sku-2", 5) == 0) {
            ck_assert_uint_eq(vlen, 1);
            ck_assert_int_eq(val[0], '3');
            seen |= 2;
        } else if (nlen == 5 && memcmp(name, "empty", 5) == 0) {
            ck_assert_uint_eq(vlen, 0);
            seen |= 4;
        }
    }
    ck_assert_int_eq(seen, 7);
    tc_items_free(all);

    int removed = -1;
    ck_assert_int_eq(tc_hdel(&removed, c, K("cart:42"), K("sku-1")), TC_OK);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(tc_hdel(&removed, c, K("cart:42"), K("sku-1")), TC_OK);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("cart:42"), K("sku-1")), TC_ENOTFOUND);
    ck_assert_int_eq(tc_hgetall(&all, c, K("cart:42")), TC_OK);
    ck_assert_uint_eq(tc_items_count(all), 2);
    tc_items_free(all);
    tc_close(c);
}
END_TEST

START_TEST(test_expire_and_del)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    ck_assert_int_eq(tc_hset(c, K("session"), K("user"), "u1", 2), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("keep"), K("m"), 1), TC_OK);
    ck_assert_int_eq(tc_struct_expire(c, K("session"), 100), TC_OK);
    /* Poll with a generous deadline: the structure goes, the other stays. */
    long long deadline = mono_ms() + 10000;
    tc_items *all = NULL;
    for (;;) {
        ck_assert_int_eq(tc_hgetall(&all, c, K("session")), TC_OK);
        size_t n = tc_items_count(all);
        tc_items_free(all);
        if (n == 0)
            break;
        ck_assert_msg(mono_ms() < deadline, "the hash did not expire");
        tct_sleep_ms(20);
    }
    ck_assert_str_eq(struct_type("tc:", "session"), "none");
    ck_assert(score_of(c, "keep", "m") == 1);
    /* A long TTL on a sorted set: it is there, with a TTL. */
    ck_assert_int_eq(tc_struct_expire(c, K("keep"), 600000), TC_OK);
    char key[64];
    const char *argv[2] = {"PTTL", key};
    size_t lens[2] = {4, struct_key(key, sizeof key, "tc:", "keep")};
    redisReply *rep = raw_cmd(&srv, 2, argv, lens);
    ck_assert_int_eq(rep->type, REDIS_REPLY_INTEGER);
    ck_assert(rep->integer > 0 && rep->integer <= 600000);
    freeReplyObject(rep);

    int removed = -1;
    ck_assert_int_eq(tc_struct_del(&removed, c, K("keep")), TC_OK);
    ck_assert_int_eq(removed, 1);
    ck_assert_str_eq(struct_type("tc:", "keep"), "none");
    ck_assert_int_eq(tc_struct_del(&removed, c, K("keep")), TC_OK);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), "v", 1), TC_OK);
    ck_assert_int_eq(tc_struct_del(NULL, c, K("h")), TC_OK);
    ck_assert_str_eq(struct_type("tc:", "h"), "none");
    tc_close(c);
}
END_TEST

/* ---- living beside the cache ---------------------------------------------------------------- */

START_TEST(test_names_apart_from_cache_keys)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    ck_assert_int_eq(tc_put(c, K("x"), "cached", 6, 0), TC_OK);
    ck_assert_int_eq(tc_hset(c, K("x"), K("f"), "hash", 4), TC_OK);
    /* The cached value went to Redis under tc:x, the hash under tc:\0s:x. */
    const char *type_argv[] = {"TYPE", "tc:x", NULL};
    char *t = tct_redis_cmd(&srv, type_argv);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t, "string");
    free(t);
    ck_assert_str_eq(struct_type("tc:", "x"), "hash");
    /* Each reads back its own. */
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("x")), TC_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(memcmp(v, "cached", 6), 0);
    tc_free(v);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("x"), K("f")), TC_OK);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(v, "hash", 4), 0);
    tc_free(v);
    /* A del of the key leaves the structure; a del of the structure leaves the key. */
    ck_assert_int_eq(tc_del(c, K("x")), TC_OK);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("x"), K("f")), TC_OK);
    tc_free(v);
    ck_assert_int_eq(tc_put(c, K("x"), "again", 5, 0), TC_OK);
    ck_assert_int_eq(tc_struct_del(NULL, c, K("x")), TC_OK);
    ck_assert_int_eq(tc_get(&v, &len, c, K("x")), TC_OK);
    ck_assert_uint_eq(len, 5);
    tc_free(v);
    /* A tag named like a structure does not collide either ("\0tag:" vs "\0s:"). */
    ck_assert_int_eq(tc_zadd(c, K("tag:x"), K("m"), 1), TC_OK);
    ck_assert_str_eq(struct_type("tc:", "tag:x"), "zset");
    tc_close(c);
}
END_TEST

START_TEST(test_pattern_invalidation_spares_structures)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    ck_assert_int_eq(tc_put(c, K("k1"), "v", 1, 0), TC_OK);
    ck_assert_int_eq(tc_put(c, K("s:k2"), "v", 1, 0), TC_OK);
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), "v", 1), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("z"), K("m"), 3), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("k1"), K("m"), 4), TC_OK);
    int64_t removed = -1;
    int rc = tc_invalidate_pattern(&removed, c, K("*"));
    ck_assert_msg(rc == TC_OK, "invalidate_pattern: %s", tc_errmsg(c));
    /* Two edge entries and two Redis values; no structure counted. */
    ck_assert_int_eq(removed, 4);
    ck_assert_str_eq(struct_type("tc:", "h"), "hash");
    ck_assert_str_eq(struct_type("tc:", "z"), "zset");
    ck_assert_str_eq(struct_type("tc:", "k1"), "zset");
    ck_assert(score_of(c, "z", "m") == 3);
    ck_assert(score_of(c, "k1", "m") == 4);
    void *v;
    size_t len;
    ck_assert_int_eq(tc_hget(&v, &len, c, K("h"), K("f")), TC_OK);
    tc_free(v);
    /* A pattern that spells the infix does not reach them either. */
    ck_assert_int_eq(tc_invalidate_pattern(&removed, c, K("s:*")), TC_OK);
    ck_assert_str_eq(struct_type("tc:", "z"), "zset");
    tc_close(c);
}
END_TEST

/* ---- errors --------------------------------------------------------------------------------- */

START_TEST(test_bad_arguments)
{
    tc_cache *c = tct_open(dir, "db", srv.port, "{\"max_value_bytes\": 1024}");
    char big[TC_KEY_MAX + 1];
    memset(big, 'n', sizeof big);
    const char nul[] = {'a', 0, 'b'};
    tc_items *it = (tc_items *)1;
    void *v = (void *)1;
    size_t len = 1;
    double s = 1;
    int64_t rank = 1;

    /* NULL handle. */
    ck_assert_int_eq(tc_zadd(NULL, K("s"), K("m"), 1), TC_EINVAL);
    ck_assert_int_eq(tc_zincrby(&s, NULL, K("s"), K("m"), 1), TC_EINVAL);
    ck_assert(s == 0);
    ck_assert_int_eq(tc_ztop(&it, NULL, K("s"), 1), TC_EINVAL);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(tc_zrank(&rank, NULL, NULL, K("s"), K("m")), TC_EINVAL);
    ck_assert_int_eq(tc_zrem(NULL, NULL, K("s"), K("m")), TC_EINVAL);
    ck_assert_int_eq(tc_hset(NULL, K("h"), K("f"), "v", 1), TC_EINVAL);
    ck_assert_int_eq(tc_hget(&v, &len, NULL, K("h"), K("f")), TC_EINVAL);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(tc_hdel(NULL, NULL, K("h"), K("f")), TC_EINVAL);
    ck_assert_int_eq(tc_hgetall(&it, NULL, K("h")), TC_EINVAL);
    ck_assert_int_eq(tc_struct_expire(NULL, K("h"), 10), TC_EINVAL);
    ck_assert_int_eq(tc_struct_del(NULL, NULL, K("h")), TC_EINVAL);

    /* NULL outputs that are required. */
    ck_assert_int_eq(tc_ztop(NULL, c, K("s"), 1), TC_EINVAL);
    ck_assert_int_eq(tc_hgetall(NULL, c, K("h")), TC_EINVAL);
    ck_assert_int_eq(tc_hget(NULL, &len, c, K("h"), K("f")), TC_EINVAL);
    ck_assert_int_eq(tc_hget(&v, NULL, c, K("h"), K("f")), TC_EINVAL);

    /* Names: NULL, empty, too long, with a NUL. */
    ck_assert_int_eq(tc_zadd(c, NULL, 1, K("m"), 1), TC_EINVAL);
    ck_assert_int_eq(tc_zadd(c, "", 0, K("m"), 1), TC_EKEY);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "name"));
    ck_assert_int_eq(tc_zadd(c, big, sizeof big, K("m"), 1), TC_EKEY);
    ck_assert_int_eq(tc_zadd(c, big, TC_KEY_MAX, K("m"), 1), TC_OK); /* the longest is fine */
    ck_assert_int_eq(tc_zadd(c, nul, sizeof nul, K("m"), 1), TC_EKEY);
    ck_assert_int_eq(tc_hset(c, nul, sizeof nul, K("f"), "v", 1), TC_EKEY);
    ck_assert_int_eq(tc_hgetall(&it, c, "", 0), TC_EKEY);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(tc_ztop(&it, c, big, sizeof big, 1), TC_EKEY);
    ck_assert_int_eq(tc_struct_expire(c, "", 0, 10), TC_EKEY);
    ck_assert_int_eq(tc_struct_del(NULL, c, nul, sizeof nul), TC_EKEY);
    /* Members and fields. */
    ck_assert_int_eq(tc_zadd(c, K("s"), NULL, 1, 1), TC_EINVAL);
    ck_assert_int_eq(tc_zadd(c, K("s"), "", 0, 1), TC_EKEY);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "member"));
    ck_assert_int_eq(tc_zincrby(NULL, c, K("s"), big, sizeof big, 1), TC_EKEY);
    ck_assert_int_eq(tc_zrank(NULL, NULL, c, K("s"), nul, sizeof nul), TC_EKEY);
    ck_assert_int_eq(tc_zrem(NULL, c, K("s"), "", 0), TC_EKEY);
    ck_assert_int_eq(tc_hset(c, K("h"), nul, sizeof nul, "v", 1), TC_EKEY);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "field"));
    ck_assert_int_eq(tc_hget(&v, &len, c, K("h"), "", 0), TC_EKEY);
    ck_assert_int_eq(tc_hdel(NULL, c, K("h"), big, sizeof big), TC_EKEY);
    /* Scores. */
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), NAN), TC_EINVAL);
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), INFINITY), TC_EINVAL);
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), -INFINITY), TC_EINVAL);
    s = 5;
    ck_assert_int_eq(tc_zincrby(&s, c, K("s"), K("m"), NAN), TC_EINVAL);
    ck_assert(s == 0);
    ck_assert_int_eq(tc_zincrby(&s, c, K("s"), K("m"), INFINITY), TC_EINVAL);
    /* Values. */
    static char value[1025];
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), value, 1025), TC_ETOOBIG);
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), value, 1024), TC_OK);
    /* n and TTLs. */
    ck_assert_int_eq(tc_ztop(&it, c, K("s"), TC_GET_MANY_MAX + 1), TC_EINVAL);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(tc_struct_expire(c, K("h"), 0), TC_EINVAL);
    ck_assert_int_eq(tc_struct_expire(c, K("h"), -5), TC_EINVAL);
    ck_assert_int_eq(tc_struct_expire(c, K("h"), INT64_MAX), TC_EINVAL);
    /* Nothing bad was written. */
    ck_assert_str_eq(struct_type("tc:", "s"), "none");
    void *got;
    ck_assert_int_eq(tc_hget(&got, &len, c, K("h"), K("f")), TC_OK);
    ck_assert_uint_eq(len, 1024);
    tc_free(got);
    tc_close(c);
}
END_TEST

START_TEST(test_wrong_type)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    ck_assert_int_eq(tc_hset(c, K("w"), K("f"), "v", 1), TC_OK);
    ck_assert_int_eq(tc_zadd(c, K("w"), K("m"), 1), TC_EPROTO);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "another type"));
    double s = 3;
    ck_assert_int_eq(tc_zincrby(&s, c, K("w"), K("m"), 1), TC_EPROTO);
    ck_assert(s == 0);
    tc_items *it = (tc_items *)1;
    ck_assert_int_eq(tc_ztop(&it, c, K("w"), 5), TC_EPROTO);
    ck_assert_ptr_null(it);
    int64_t rank = 3;
    ck_assert_int_eq(tc_zrank(&rank, &s, c, K("w"), K("m")), TC_EPROTO);
    ck_assert_int_eq(rank, 0);
    ck_assert_int_eq(tc_zrank(NULL, &s, c, K("w"), K("m")), TC_EPROTO);
    ck_assert_int_eq(tc_zrem(NULL, c, K("w"), K("m")), TC_EPROTO);

    ck_assert_int_eq(tc_zadd(c, K("z"), K("m"), 1), TC_OK);
    void *v = (void *)1;
    size_t len = 3;
    ck_assert_int_eq(tc_hget(&v, &len, c, K("z"), K("f")), TC_EPROTO);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tc_hset(c, K("z"), K("f"), "v", 1), TC_EPROTO);
    ck_assert_int_eq(tc_hdel(NULL, c, K("z"), K("f")), TC_EPROTO);
    ck_assert_int_eq(tc_hgetall(&it, c, K("z")), TC_EPROTO);
    ck_assert_ptr_null(it);
    /* expire and del work on either type, and the handle goes on working. */
    ck_assert_int_eq(tc_struct_expire(c, K("z"), 60000), TC_OK);
    int removed;
    ck_assert_int_eq(tc_struct_del(&removed, c, K("w")), TC_OK);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(tc_zadd(c, K("w"), K("m"), 1), TC_OK);
    ck_assert(score_of(c, "w", "m") == 1);

    /* Something a foreign writer put there (a string): also TC_EPROTO. */
    char key[64];
    const char *argv[3] = {"SET", key, "junk"};
    size_t lens[3] = {3, struct_key(key, sizeof key, "tc:", "f"), 4};
    freeReplyObject(raw_cmd(&srv, 3, argv, lens));
    ck_assert_int_eq(tc_hgetall(&it, c, K("f")), TC_EPROTO);
    ck_assert_int_eq(tc_ztop(&it, c, K("f"), 3), TC_EPROTO);
    ck_assert_int_eq(tc_zrank(&rank, NULL, c, K("f"), K("m")), TC_EPROTO);
    tc_close(c);
}
END_TEST

START_TEST(test_no_redis)
{
    tc_cache *c = tct_open(dir, "db", 0, NULL);
    tc_items *it = (tc_items *)1;
    void *v = (void *)1;
    size_t len = 1;
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), 1), TC_EREDIS);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "configured"));
    ck_assert_int_eq(tc_zincrby(NULL, c, K("s"), K("m"), 1), TC_EREDIS);
    ck_assert_int_eq(tc_ztop(&it, c, K("s"), 1), TC_EREDIS);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(tc_zrank(NULL, NULL, c, K("s"), K("m")), TC_EREDIS);
    ck_assert_int_eq(tc_zrem(NULL, c, K("s"), K("m")), TC_EREDIS);
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), "v", 1), TC_EREDIS);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("h"), K("f")), TC_EREDIS);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(tc_hdel(NULL, c, K("h"), K("f")), TC_EREDIS);
    ck_assert_int_eq(tc_hgetall(&it, c, K("h")), TC_EREDIS);
    ck_assert_int_eq(tc_struct_expire(c, K("h"), 10), TC_EREDIS);
    ck_assert_int_eq(tc_struct_del(NULL, c, K("h")), TC_EREDIS);
    tc_close(c);
}
END_TEST

START_TEST(test_redis_down)
{
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tc_cache *c = tct_open(dir, "db", own.port, NULL);
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), 1), TC_OK);
    tct_redis_kill(&own);
    /* The open connection breaks, the reconnect is refused: an error at once, no hang. */
    tc_items *it = (tc_items *)1;
    void *v = (void *)1;
    size_t len = 1;
    double s = 1;
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), 2), TC_EREDIS);
    ck_assert_int_eq(tc_zincrby(&s, c, K("s"), K("m"), 1), TC_EREDIS);
    ck_assert(s == 0);
    ck_assert_int_eq(tc_ztop(&it, c, K("s"), 1), TC_EREDIS);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(tc_zrank(NULL, NULL, c, K("s"), K("m")), TC_EREDIS);
    ck_assert_int_eq(tc_zrank(NULL, &s, c, K("s"), K("m")), TC_EREDIS);
    ck_assert_int_eq(tc_zrem(NULL, c, K("s"), K("m")), TC_EREDIS);
    ck_assert_int_eq(tc_hset(c, K("h"), K("f"), "v", 1), TC_EREDIS);
    ck_assert_int_eq(tc_hget(&v, &len, c, K("h"), K("f")), TC_EREDIS);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(tc_hdel(NULL, c, K("h"), K("f")), TC_EREDIS);
    ck_assert_int_eq(tc_hgetall(&it, c, K("h")), TC_EREDIS);
    ck_assert_int_eq(tc_struct_expire(c, K("h"), 10), TC_EREDIS);
    ck_assert_int_eq(tc_struct_del(NULL, c, K("h")), TC_EREDIS);
    ck_assert_str_ne(tc_errmsg(c), "");
    /* Back: works again (nothing persisted: the server started empty). */
    ck_assert_int_eq(tct_redis_restart(&own), 0);
    ck_assert_int_eq(tc_zincrby(&s, c, K("s"), K("m"), 1), TC_OK);
    ck_assert(s == 1);
    tc_close(c);
    tct_redis_stop(&own);
}
END_TEST

/* ---- never twice ---------------------------------------------------------------------------- */

START_TEST(test_killed_connection_incr_once)
{
    tc_cache *c = tct_open(dir, "db", srv.port, NULL);
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), 0), TC_OK);
    ck_assert_int_eq(tct_stat(c, "redis", "connects"), 1);
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    for (int i = 1; i <= 5; i++) {
        /* The server closes the connection while it is idle (as an idle timeout would): the
         * increment notices before sending, goes on a new connection, and counts once. */
        char *killed = tct_redis_cmd(&srv, kill_cmd);
        ck_assert_ptr_nonnull(killed);
        ck_assert_int_ge(atoi(killed), 1);
        free(killed);
        double s = 0;
        int rc = tc_zincrby(&s, c, K("s"), K("m"), 1);
        ck_assert_msg(rc == TC_OK, "zincrby after CLIENT KILL: %s (%s)", tc_strerror(rc),
                      tc_errmsg(c));
        ck_assert(s == i);
        ck_assert_int_eq(tct_stat(c, "redis", "connects"), 1 + i);
    }
    ck_assert(score_of(c, "s", "m") == 5);
    /* Removals likewise: the reply says it was there. */
    free(tct_redis_cmd(&srv, kill_cmd));
    int removed = 0;
    ck_assert_int_eq(tc_zrem(&removed, c, K("s"), K("m")), TC_OK);
    ck_assert_int_eq(removed, 1);
    tc_close(c);
}
END_TEST

/* Blocks the server for ms milliseconds with a busy script (DEBUG SLEEP needs
 * enable-debug-command, which Redis 7 turns off). */
typedef struct blocker {
    const tct_redis *srv;
    int ms;
} blocker;

static void *block_server(void *arg)
{
    blocker *b = arg;
    char ms[24];
    snprintf(ms, sizeof ms, "%d", b->ms);
    const char *argv[] = {"EVAL",
                          "local t = redis.call('TIME')\n"
                          "local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000\n"
                          "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop\n"
                          "return 1",
                          "0", ms, NULL};
    free(tct_redis_cmd(b->srv, argv));
    return NULL;
}

START_TEST(test_timeout_not_resent)
{
    /* The command reaches the server, which is busy: the client times out before the reply.
     * An idempotent command would be sent again on a new connection and then run twice when
     * the server gets to it; an increment must not. */
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tc_cache *c = tct_open(dir, "db", own.port, "{\"redis\": {\"command_timeout_ms\": 200}}");
    ck_assert_int_eq(tc_zadd(c, K("s"), K("m"), 0), TC_OK);
    blocker b = {&own, 1500};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, block_server, &b), 0);
    tct_sleep_ms(300); /* the script is running (if not: the increment just succeeds) */
    int rc = tc_zincrby(NULL, c, K("s"), K("m"), 1);
    ck_assert_msg(rc == TC_OK || rc == TC_EREDIS, "zincrby: %s", tc_strerror(rc));
    pthread_join(th, NULL);
    /* The server has read the command by now or will soon; give it every chance to run a
     * second copy, then expect exactly one. */
    double s = -1;
    long long deadline = mono_ms() + 10000;
    do {
        tct_sleep_ms(50);
        rc = tc_zrank(NULL, &s, c, K("s"), K("m"));
    } while ((rc != TC_OK || s == 0) && mono_ms() < deadline);
    ck_assert_int_eq(rc, TC_OK);
    tct_sleep_ms(300);
    ck_assert_int_eq(tc_zrank(NULL, &s, c, K("s"), K("m")), TC_OK);
    ck_assert_msg(s == 1, "the increment ran %g times", s);
    tc_close(c);
    tct_redis_stop(&own);
}
END_TEST

/* ---- tc__redis_get_many --------------------------------------------------------------------- */

static tc__redis *tier_open(const tct_redis *s, const char *ns, tc__stats *st)
{
    tc__redis_opts o = {
        .host = "127.0.0.1",
        .port = s->port,
        .ns = ns,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000, /* generous: valgrind is slow */
        .retry_interval_ms = 0,
        .max_value_bytes = 1u << 20,
    };
    tc__redis *r = NULL;
    int rc = tc__redis_new(&r, &o, NULL, st);
    ck_assert_msg(rc == TC_OK, "tc__redis_new: %d %s", rc, tc_errmsg(NULL));
    return r;
}

#define MANY 2500

typedef struct hits {
    size_t n, calls, last;
    int ordered;
    char *val[MANY];
    size_t len[MANY];
    int64_t version[MANY], ttl[MANY];
    int fail_at; /* return an error from this index on; -1: never */
} hits;

static int on_hit(void *ctx, size_t i, const void *data, size_t len, int64_t version,
                  int64_t ttl_ms)
{
    hits *h = ctx;
    ck_assert_uint_lt(i, h->n);
    if (h->calls > 0 && i <= h->last)
        h->ordered = 0;
    h->last = i;
    h->calls++;
    if (h->fail_at >= 0 && i >= (size_t)h->fail_at)
        return TC_ESTATE;
    ck_assert_ptr_null(h->val[i]); /* an index is delivered once (a repeated key at each) */
    h->val[i] = malloc(len + 1);
    memcpy(h->val[i], data, len);
    h->val[i][len] = '\0';
    h->len[i] = len;
    h->version[i] = version;
    h->ttl[i] = ttl_ms;
    return 0;
}

static hits *hits_new(size_t n)
{
    hits *h = calloc(1, sizeof *h);
    ck_assert_ptr_nonnull(h);
    h->n = n;
    h->ordered = 1;
    h->fail_at = -1;
    return h;
}

static void hits_free(hits *h)
{
    for (size_t i = 0; i < MANY; i++)
        free(h->val[i]);
    free(h);
}

START_TEST(test_get_many_basic)
{
    tc__stats st = {0};
    tc__redis *r = tier_open(&srv, "gm:", &st);
    ck_assert_int_eq(tc__redis_set(r, K("a"), "va", 2, 7, 60000), TC_OK);
    static const char bin[] = {'x', 0, 'y'};
    ck_assert_int_eq(tc__redis_set(r, K("bin"), bin, sizeof bin, 8, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_set(r, K("empty"), "", 0, 9, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_tombstone(r, K("dead"), 3, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_set(r, K("gone"), "v", 1, 1, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_del(r, K("gone")), TC_OK); /* leaves a tombstone */
    const char *junk[] = {"SET", "gm:junk", "not an envelope", NULL};
    free(tct_redis_cmd(&srv, junk));
    const char *hash[] = {"HSET", "gm:hash", "f", "v", NULL};
    free(tct_redis_cmd(&srv, hash));

    const char *keys[] = {"a", "missing", "bin", "dead", "empty", "gone", "junk", "hash", "a"};
    size_t n = sizeof keys / sizeof keys[0], lens[sizeof keys / sizeof keys[0]];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(keys[i]);
    hits *h = hits_new(n);
    int rc = tc__redis_get_many(r, n, keys, lens, on_hit, h);
    ck_assert_msg(rc == TC_OK, "get_many: %s", tc_errmsg(NULL));
    ck_assert_uint_eq(h->calls, 4);
    ck_assert(h->ordered);
    ck_assert_str_eq(h->val[0], "va");
    ck_assert_int_eq(h->version[0], 7);
    ck_assert(h->ttl[0] > 0 && h->ttl[0] <= 60000);
    ck_assert_uint_eq(h->len[2], sizeof bin);
    ck_assert_int_eq(memcmp(h->val[2], bin, sizeof bin), 0);
    ck_assert_int_eq(h->version[2], 8);
    ck_assert_ptr_nonnull(h->val[4]);
    ck_assert_uint_eq(h->len[4], 0);
    ck_assert_str_eq(h->val[8], "va");
    for (size_t i = 0; i < n; i++)
        if (i != 0 && i != 2 && i != 4 && i != 8)
            ck_assert_ptr_null(h->val[i]);
    hits_free(h);

    /* fn NULL: nothing delivered, still TC_OK; n == 0: no I/O. */
    ck_assert_int_eq(tc__redis_get_many(r, n, keys, lens, NULL, NULL), TC_OK);
    ck_assert_int_eq(tc__redis_get_many(r, 0, NULL, NULL, on_hit, NULL), TC_OK);
    /* The callback's error stops the walk and comes back. */
    h = hits_new(n);
    h->fail_at = 2;
    ck_assert_int_eq(tc__redis_get_many(r, n, keys, lens, on_hit, h), TC_ESTATE);
    ck_assert_uint_eq(h->calls, 2); /* a, then bin failed */
    hits_free(h);

    /* Bad arguments: nothing sent, the index named. */
    const char *bad[] = {"a", "", "b"};
    size_t bad_lens[] = {1, 0, 1};
    ck_assert_int_eq(tc__redis_get_many(r, 3, bad, bad_lens, on_hit, NULL), TC_EKEY);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "keys[1]"));
    const char *nulk[] = {"a", NULL};
    size_t nul_lens[] = {1, 1};
    ck_assert_int_eq(tc__redis_get_many(r, 2, nulk, nul_lens, on_hit, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_get_many(r, 2, NULL, nul_lens, on_hit, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_get_many(r, 2, keys, NULL, on_hit, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_get_many(NULL, 2, keys, lens, on_hit, NULL), TC_EINVAL);
    tc__redis_free(r);
}
END_TEST

static const char *const *many_keys(size_t **out_lens)
{
    static char names[MANY][16];
    static const char *keys[MANY];
    static size_t lens[MANY];
    for (size_t i = 0; i < MANY; i++) {
        lens[i] = (size_t)snprintf(names[i], sizeof names[i], "k%zu", i);
        keys[i] = names[i];
    }
    *out_lens = lens;
    return keys;
}

START_TEST(test_get_many_chunks_and_kill)
{
    tc__stats st = {0};
    tc__redis *r = tier_open(&srv, "gm:", &st);
    size_t *lens;
    const char *const *keys = many_keys(&lens);
    /* Every third key is absent, every seventh a tombstone. */
    for (size_t i = 0; i < MANY; i++) {
        if (i % 3 == 0)
            continue;
        if (i % 7 == 0)
            ck_assert_int_eq(tc__redis_tombstone(r, keys[i], lens[i], (int64_t)i, 60000), TC_OK);
        else
            ck_assert_int_eq(tc__redis_set(r, keys[i], lens[i], keys[i], lens[i], (int64_t)i,
                                           60000),
                             TC_OK);
    }
    ck_assert_int_eq(TC__GET(st.connects), 1);
    const char *info[] = {"INFO", "commandstats", NULL};
    const char *reset[] = {"CONFIG", "RESETSTAT", NULL};
    free(tct_redis_cmd(&srv, reset));
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    for (int round = 0; round < 2; round++) {
        if (round == 1) /* the connection is closed under it: reconnect, retry, no duplicate */
            free(tct_redis_cmd(&srv, kill_cmd));
        hits *h = hits_new(MANY);
        int rc = tc__redis_get_many(r, MANY, keys, lens, on_hit, h);
        ck_assert_msg(rc == TC_OK, "get_many: %s", tc_errmsg(NULL));
        ck_assert(h->ordered);
        size_t want = 0;
        for (size_t i = 0; i < MANY; i++) {
            int hit = i % 3 != 0 && i % 7 != 0;
            want += (size_t)hit;
            if (hit) {
                ck_assert_ptr_nonnull(h->val[i]);
                ck_assert_str_eq(h->val[i], keys[i]);
                ck_assert_int_eq(h->version[i], (int64_t)i);
            } else {
                ck_assert_ptr_null(h->val[i]);
            }
        }
        ck_assert_uint_eq(h->calls, want);
        hits_free(h);
        ck_assert_int_eq(TC__GET(st.connects), 1 + round);
    }
    /* Pipelined: one GET per key and round, no more (the killed round's first try died before
     * the server read it). */
    char *stats = tct_redis_cmd(&srv, info);
    ck_assert_ptr_nonnull(stats);
    const char *p = strstr(stats, "cmdstat_get:calls=");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(strtoll(p + strlen("cmdstat_get:calls="), NULL, 10), 2 * MANY);
    free(stats);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_get_many_redis_down)
{
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tc__stats st = {0};
    tc__redis *r = tier_open(&own, "gm:", &st);
    ck_assert_int_eq(tc__redis_set(r, K("a"), "v", 1, 1, 60000), TC_OK);
    tct_redis_kill(&own);
    const char *keys[] = {"a", "b"};
    size_t lens[] = {1, 1};
    hits *h = hits_new(2);
    ck_assert_int_eq(tc__redis_get_many(r, 2, keys, lens, on_hit, h), TC_EREDIS);
    ck_assert_uint_eq(h->calls, 0);
    hits_free(h);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

/* The journal is applied before a batched read: a value whose update failed is not served. */
START_TEST(test_get_many_journal_first)
{
    tct_redis own;
    ck_assert_int_eq(tct_redis_start(&own), 0);
    tc__stats st = {0};
    tc__redis *r = tier_open(&own, "gm:", &st);
    ck_assert_int_eq(tc__redis_set(r, K("a"), "old", 3, 1, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_set(r, K("b"), "b", 1, 1, 60000), TC_OK);
    tct_redis_kill(&own);
    ck_assert_int_eq(tc__redis_set(r, K("a"), "new", 3, 2, 60000), TC_EREDIS); /* journalled */
    ck_assert_int_eq(tct_redis_restart(&own), 0);
    /* The restarted server is empty; put the old value back as if it had survived. */
    tc__redis *other = tier_open(&own, "gm:", NULL);
    ck_assert_int_eq(tc__redis_set(other, K("a"), "old", 3, 1, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_set(other, K("b"), "b", 1, 1, 60000), TC_OK);
    tc__redis_free(other);
    const char *keys[] = {"a", "b"};
    size_t lens[] = {1, 1};
    hits *h = hits_new(2);
    ck_assert_int_eq(tc__redis_get_many(r, 2, keys, lens, on_hit, h), TC_OK);
    ck_assert_ptr_null(h->val[0]); /* the old value was settled into a tombstone first */
    ck_assert_str_eq(h->val[1], "b");
    hits_free(h);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

Suite *structs_suite(void)
{
    Suite *s = suite_create("structs");

    TCase *items = tcase_create("items");
    tcase_add_test(items, test_items_builder);
    suite_add_tcase(s, items);

    TCase *structs = tcase_create("structs");
    tcase_set_timeout(structs, 60);
    tcase_add_unchecked_fixture(structs, srv_up, srv_down);
    tcase_add_checked_fixture(structs, dir_setup, dir_teardown);
    tcase_add_test(structs, test_leaderboard);
    tcase_add_test(structs, test_ties_and_scores);
    tcase_add_test(structs, test_absent);
    tcase_add_test(structs, test_hash);
    tcase_add_test(structs, test_expire_and_del);
    tcase_add_test(structs, test_names_apart_from_cache_keys);
    tcase_add_test(structs, test_pattern_invalidation_spares_structures);
    tcase_add_test(structs, test_bad_arguments);
    tcase_add_test(structs, test_wrong_type);
    tcase_add_test(structs, test_killed_connection_incr_once);
    tcase_add_test(structs, test_get_many_basic);
    tcase_add_test(structs, test_get_many_chunks_and_kill);
    suite_add_tcase(s, structs);

    TCase *faults = tcase_create("structs_faults");
    tcase_set_timeout(faults, 60);
    tcase_add_checked_fixture(faults, dir_setup, dir_teardown);
    tcase_add_test(faults, test_no_redis);
    tcase_add_test(faults, test_redis_down);
    tcase_add_test(faults, test_timeout_not_resent);
    tcase_add_test(faults, test_get_many_redis_down);
    tcase_add_test(faults, test_get_many_journal_first);
    suite_add_tcase(s, faults);
    return s;
}
