/*
 * check_redis.c - the Redis tier (lib/redis/tier*.c, lib/redis/redis_conn.c) against a private
 * redis-server.
 *
 * TCase "redis": one server shared by the tests, started in the runner process (an unchecked
 * fixture) and flushed before each test. TCase "auth": two servers that want a password
 * (requirepass; an ACL user), shared the same way. TCase "outage": tests that kill and restart
 * a server start their own, inside the test.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "redis/redis_conn.h"
#include "redis/redis_tier.h"
#include "tc_test.h"

static tct_redis srv; /* the shared server; set in the runner before Check forks the tests */
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

/* ---- helpers ----------------------------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static tc__redis_opts opts_for(const tct_redis *s, const char *ns)
{
    tc__redis_opts o = {
        .host = "127.0.0.1",
        .port = s->port,
        .unix_socket = NULL,
        .ns = ns,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000, /* generous: valgrind is slow */
        .retry_interval_ms = 0,
        .max_value_bytes = 16u << 20,
    };
    return o;
}

static tc__redis *tier_open(const tc__redis_opts *o, tc__stats *st)
{
    tc__redis *r = NULL;
    int rc = tc__redis_new(&r, o, NULL, st);
    ck_assert_msg(rc == TC_OK, "tc__redis_new: %d %s", rc, tc_errmsg(NULL));
    return r;
}

/* A tct_redis_cmd that returns a long long (integer replies). */
static long long cmd_int(const tct_redis *s, const char *const *argv)
{
    char *out = tct_redis_cmd(s, argv);
    ck_assert_msg(out != NULL, "redis unreachable for %s", argv[0]);
    char *end;
    long long v = strtoll(out, &end, 10);
    ck_assert_msg(end != out && *end == '\0', "%s: not an integer: %s", argv[0], out);
    free(out);
    return v;
}

static long long exists(const tct_redis *s, const char *key)
{
    const char *argv[] = {"EXISTS", key, NULL};
    return cmd_int(s, argv);
}

/* The server's client count, our own query included; -1 if unreachable. No assertions: also
 * used in forked children. */
static long long clients(const tct_redis *s)
{
    const char *argv[] = {"INFO", "clients", NULL};
    char *out = tct_redis_cmd(s, argv);
    const char *p = out != NULL ? strstr(out, "connected_clients:") : NULL;
    long long n = p != NULL ? strtoll(p + strlen("connected_clients:"), NULL, 10) : -1;
    free(out);
    return n;
}

/* Waits (up to 2 s) until the server counts n clients, our own query included. */
static long long wait_clients(const tct_redis *s, long long n)
{
    long long c = clients(s);
    for (int i = 0; i < 200 && c != n; i++) {
        sleep_ms(10);
        c = clients(s);
    }
    return c;
}

/* Binary-safe raw access, for bytes tct_redis_cmd's C strings cannot carry. */
static void raw_set(const tct_redis *s, const char *key, const void *val, size_t len)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    ck_assert_msg(c != NULL && c->err == 0, "raw_set: cannot connect");
    const char *argv[3] = {"SET", key, val};
    size_t lens[3] = {3, strlen(key), len};
    redisReply *rep = redisCommandArgv(c, 3, argv, lens);
    ck_assert_msg(rep != NULL && rep->type == REDIS_REPLY_STATUS, "raw SET failed");
    freeReplyObject(rep);
    redisFree(c);
}

static char *raw_get(const tct_redis *s, const char *key, size_t *len)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    ck_assert_msg(c != NULL && c->err == 0, "raw_get: cannot connect");
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    redisReply *rep = redisCommandArgv(c, 2, argv, lens);
    ck_assert_ptr_nonnull(rep);
    char *out = NULL;
    *len = 0;
    if (rep->type == REDIS_REPLY_STRING) {
        out = malloc(rep->len + 1);
        ck_assert_ptr_nonnull(out);
        memcpy(out, rep->str, rep->len);
        *len = rep->len;
    }
    freeReplyObject(rep);
    redisFree(c);
    return out;
}

/* The stored layout, written independently of the library: 'T', 1, kind, version BE, expiry
 * BE, payload. */
static size_t envelope(unsigned char *out, char kind, int64_t version, int64_t expiry,
                       const char *payload, size_t len)
{
    out[0] = 'T';
    out[1] = 1;
    out[2] = (unsigned char)kind;
    for (int i = 0; i < 8; i++) {
        out[3 + i] = (unsigned char)((uint64_t)version >> (56 - 8 * i));
        out[11 + i] = (unsigned char)((uint64_t)expiry >> (56 - 8 * i));
    }
    memcpy(out + 19, payload, len);
    return 19 + len;
}

static int64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

typedef struct got {
    char *data;
    size_t len;
    int64_t version, ttl;
    int calls;
} got;

/* The key holds no value: it is absent, or a tombstone (of version want_version, unless -1). */
static int gone(const tct_redis *s, const char *key, int64_t want_version)
{
    size_t len;
    char *raw = raw_get(s, key, &len);
    if (raw == NULL)
        return 1;
    int ok = len == 19 && raw[0] == 'T' && raw[2] == 'X' &&
             (want_version < 0 || be64((const unsigned char *)raw + 3) == want_version);
    free(raw);
    return ok;
}

static int collect(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl_ms)
{
    got *g = ctx;
    free(g->data);
    g->data = malloc(len + 1);
    if (g->data == NULL)
        return TC_ENOMEM;
    if (len > 0)
        memcpy(g->data, data, len);
    g->len = len;
    g->version = version;
    g->ttl = ttl_ms;
    g->calls++;
    return TC_OK;
}

static void got_free(got *g)
{
    free(g->data);
    memset(g, 0, sizeof *g);
}

/* get must return exactly these bytes and version. */
static void expect_value(tc__redis *r, const char *key, const void *val, size_t len,
                         int64_t version)
{
    got g = {0};
    int rc = tc__redis_get(r, key, strlen(key), collect, &g);
    ck_assert_msg(rc == TC_OK, "get %s: %d %s", key, rc, tc_errmsg(NULL));
    ck_assert_int_eq(g.calls, 1);
    ck_assert_uint_eq(g.len, len);
    ck_assert_msg(len == 0 || memcmp(g.data, val, len) == 0, "get %s: other bytes", key);
    ck_assert_int_eq(g.version, version);
    got_free(&g);
}

static int get_rc(tc__redis *r, const char *key)
{
    got g = {0};
    int rc = tc__redis_get(r, key, strlen(key), collect, &g);
    got_free(&g);
    return rc;
}

static int set_str(tc__redis *r, const char *key, const char *val, int64_t version)
{
    return tc__redis_set(r, key, strlen(key), val, strlen(val), version, 60000);
}

/* ---- basics ------------------------------------------------------------------------------ */

START_TEST(test_roundtrip)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "rt:");
    tc__redis *r = tier_open(&o, &st);

    size_t big_len = 1u << 20;
    char *big = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)(i * 31 % 251); /* includes NUL bytes */
    static const char nul3[] = {'a', '\0', 'b', '\0', '\0'};
    struct {
        const char *key;
        const void *val;
        size_t len;
    } cases[] = {
        {"empty", "", 0},
        {"one", "x", 1},
        {"nuls", nul3, sizeof nul3},
        {"big", big, big_len},
        {"fmt %s%n%d \r\n* ?[x]", "%s%n", 4}, /* argv-style: format characters are data */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = tc__redis_set(r, cases[i].key, strlen(cases[i].key), cases[i].val, cases[i].len,
                               (int64_t)(100 + i), 60000);
        ck_assert_msg(rc == TC_OK, "set %s: %d %s", cases[i].key, rc, tc_errmsg(NULL));
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_value(r, cases[i].key, cases[i].val, cases[i].len, (int64_t)(100 + i));

    /* The remaining TTL handed to fn is positive and at most what was set. */
    got g = {0};
    ck_assert_int_eq(tc__redis_get(r, "one", 3, collect, &g), TC_OK);
    ck_assert_int_gt(g.ttl, 0);
    ck_assert_int_le(g.ttl, 60000);
    got_free(&g);

    /* A large version round-trips (all 8 bytes used). */
    ck_assert_int_eq(tc__redis_set(r, "v", 1, "z", 1, INT64_MAX, 60000), TC_OK);
    expect_value(r, "v", "z", 1, INT64_MAX);

    ck_assert_int_eq(get_rc(r, "absent"), TC_ENOTFOUND);
    ck_assert_int_eq(tc__redis_del(r, "absent", 6), TC_OK); /* deleting nothing succeeds */
    free(big);
    tc__redis_free(r);
}
END_TEST

static int fail_fn(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl_ms)
{
    (void)ctx;
    (void)data;
    (void)len;
    (void)version;
    (void)ttl_ms;
    return TC_ERANGE;
}

START_TEST(test_fn_result_passed_back)
{
    tc__redis_opts o = opts_for(&srv, "fn:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    ck_assert_int_eq(tc__redis_get(r, "k", 1, fail_fn, NULL), TC_ERANGE);
    ck_assert_int_eq(tc__redis_get(r, "k", 1, NULL, NULL), TC_OK);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_namespace_and_layout)
{
    tc__redis_opts o = opts_for(&srv, "app1:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, "hello", 5, 0x0102030405060708LL, 30000), TC_OK);
    ck_assert_int_eq(exists(&srv, "app1:k"), 1);
    ck_assert_int_eq(exists(&srv, "k"), 0);

    /* The exact stored bytes. */
    int64_t before = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    size_t len;
    char *raw = raw_get(&srv, "app1:k", &len);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_eq(len, 19 + 5);
    const unsigned char *p = (const unsigned char *)raw;
    ck_assert_int_eq(p[0], 'T');
    ck_assert_int_eq(p[1], 1);
    ck_assert_int_eq(p[2], 'V');
    ck_assert_int_eq(be64(p + 3), 0x0102030405060708LL);
    int64_t expiry = be64(p + 11);
    ck_assert_int_gt(expiry, before);
    ck_assert_int_le(expiry, before + 30000);
    ck_assert_int_eq(memcmp(raw + 19, "hello", 5), 0);
    free(raw);

    const char *pttl[] = {"PTTL", "app1:k", NULL};
    long long ttl = cmd_int(&srv, pttl);
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 30000);

    /* Another namespace does not see it; a key written without the prefix is not ours. */
    tc__redis_opts o2 = opts_for(&srv, "app2:");
    tc__redis *r2 = tier_open(&o2, NULL);
    ck_assert_int_eq(get_rc(r2, "k"), TC_ENOTFOUND);
    ck_assert_int_eq(tc__redis_del(r2, "k", 1), TC_OK);
    ck_assert_int_eq(exists(&srv, "app1:k"), 1);
    ck_assert_int_eq(tc__redis_del(r, "k", 1), TC_OK);
    ck_assert(gone(&srv, "app1:k", -1));
    tc__redis_free(r2);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_tombstone)
{
    tc__redis_opts o = opts_for(&srv, "ts:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "v1", 1), TC_OK);
    ck_assert_int_eq(tc__redis_tombstone(r, "k", 1, 2, 10000), TC_OK);
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    size_t len;
    char *raw = raw_get(&srv, "ts:k", &len);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_eq(len, 19);
    ck_assert_int_eq(raw[2], 'X');
    ck_assert_int_eq(be64((const unsigned char *)raw + 3), 2);
    free(raw);
    const char *pttl[] = {"PTTL", "ts:k", NULL};
    long long ttl = cmd_int(&srv, pttl);
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 10000);
    tc__redis_free(r);
}
END_TEST

/* The classic cache-aside race at the Redis tier: a reader loaded v1, a writer committed v2
 * (and later deleted: tombstone v3), then the reader's fill of v1 or v2 arrives late. */
START_TEST(test_versions_never_go_back)
{
    tc__redis_opts o = opts_for(&srv, "vg:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "v2", 2), TC_OK);
    ck_assert_int_eq(set_str(r, "k", "v1", 1), TC_OK);       /* refused, not an error */
    expect_value(r, "k", "v2", 2, 2);
    ck_assert_int_eq(set_str(r, "k", "v2b", 2), TC_OK);      /* equal version: a refresh */
    expect_value(r, "k", "v2b", 3, 2);
    ck_assert_int_eq(tc__redis_tombstone(r, "k", 1, 3, 10000), TC_OK);
    ck_assert_int_eq(set_str(r, "k", "v2", 2), TC_OK);       /* refused by the tombstone */
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    ck_assert_int_eq(tc__redis_tombstone(r, "k", 1, 1, 10000), TC_OK); /* older: refused */
    size_t len;
    char *raw = raw_get(&srv, "vg:k", &len);
    ck_assert_int_eq(be64((const unsigned char *)raw + 3), 3);
    free(raw);
    ck_assert_int_eq(set_str(r, "k", "v4", 4), TC_OK);       /* newer than the tombstone */
    expect_value(r, "k", "v4", 2, 4);
    /* Versions past 255 compare on every byte, not only the last. */
    ck_assert_int_eq(set_str(r, "k", "big", 0x10000), TC_OK);
    ck_assert_int_eq(set_str(r, "k", "small", 0xffff), TC_OK);
    expect_value(r, "k", "big", 3, 0x10000);
    /* A foreign value under our key is overwritten, not compared. */
    raw_set(&srv, "vg:k", "not ours", 8);
    ck_assert_int_eq(set_str(r, "k", "v5", 5), TC_OK);
    expect_value(r, "k", "v5", 2, 5);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_guard_script_sha_and_noscript)
{
    for (int which = 0; which < TC__SCRIPT_COUNT; which++) {
        const char *text, *want;
        ck_assert_int_eq(tc__redis_script(which, &text, &want), TC_OK);
        const char *load[] = {"SCRIPT", "LOAD", text, NULL};
        char *sha = tct_redis_cmd(&srv, load);
        ck_assert_ptr_nonnull(sha);
        ck_assert_str_eq(sha, want);
        free(sha);
    }
    const char *text, *sha;
    ck_assert_int_eq(tc__redis_script(TC__SCRIPT_COUNT, &text, &sha), TC_EINVAL);
    ck_assert_int_eq(tc__redis_script(-1, &text, &sha), TC_EINVAL);
    /* An emptied script cache (restart, SCRIPT FLUSH) costs one EVAL, never an error. */
    const char *flush[] = {"SCRIPT", "FLUSH", NULL};
    free(tct_redis_cmd(&srv, flush));
    tc__redis_opts o = opts_for(&srv, "ns:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "v", 7), TC_OK);
    expect_value(r, "k", "v", 1, 7);
    ck_assert_int_eq(set_str(r, "k", "w", 8), TC_OK);        /* EVALSHA now hits */
    expect_value(r, "k", "w", 1, 8);
    tc__redis_free(r);
}
END_TEST

/* The library's own RESP writer (tc__resp_write) gives hiredis's bytes, argument for argument:
 * empty and binary arguments (NUL, CR, LF), lengths across digit boundaries, many arguments. */
START_TEST(test_resp_matches_hiredis)
{
    static char big[100001];
    memset(big, 'x', sizeof big);
    const char bin[] = {'a', '\0', '\r', '\n', '$', '*', '\xff'};
    const char *argv[12];
    size_t lens[12];
    const size_t sizes[] = {0, 1, 9, 10, 99, 100, 999, 1000, 65535, 100000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int argc = 1; argc <= 12; argc++) {
            for (int i = 0; i < argc; i++) {
                argv[i] = i % 3 == 1 ? bin : big;
                lens[i] = i % 3 == 1 ? sizeof bin : i % 3 == 2 ? 0 : sizes[s];
            }
            char *want = NULL;
            long long want_len = redisFormatCommandArgv(&want, argc, argv, lens);
            ck_assert_int_gt(want_len, 0);
            size_t len = tc__resp_size(argc, lens);
            ck_assert_uint_eq(len, (size_t)want_len);
            char *mine = malloc(len);
            ck_assert_ptr_nonnull(mine);
            ck_assert_ptr_eq(tc__resp_write(mine, argc, argv, lens), mine + len);
            ck_assert_int_eq(memcmp(mine, want, len), 0);
            free(mine);
            redisFreeCommand(want);
        }
    }
}
END_TEST

START_TEST(test_invalidate_pattern)
{
    tc__redis_opts o = opts_for(&srv, "pi:");
    tc__redis *r = tier_open(&o, NULL);
    tc__redis_opts o2 = opts_for(&srv, "other:");
    tc__redis *other = tier_open(&o2, NULL);
    const char *hit[] = {"/images/a.png", "/images/b/c.png", "/img[1]/x"};
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(set_str(r, hit[i], "v", 1), TC_OK);
    ck_assert_int_eq(set_str(r, "/css/site.css", "v", 1), TC_OK);
    ck_assert_int_eq(set_str(r, "/img1/x", "v", 1), TC_OK);
    ck_assert_int_eq(set_str(other, "/images/a.png", "v", 1), TC_OK);
    ck_assert_int_eq(tc__redis_tombstone(r, "/images/gone", 12, 9, 10000), TC_OK);
    raw_set(&srv, "pi:/images/foreign", "not ours", 8);

    int64_t n = -1;
    ck_assert_int_eq(tc__redis_invalidate_pattern(r, "/images/*", 9, &n), TC_OK);
    ck_assert_int_eq(n, 3); /* a.png, b/c.png, foreign; the tombstone stays */
    ck_assert(gone(&srv, "pi:/images/a.png", 1));   /* tombstones of their own versions */
    ck_assert(gone(&srv, "pi:/images/b/c.png", 1));
    ck_assert_int_eq(exists(&srv, "pi:/images/foreign"), 0);
    ck_assert(gone(&srv, "pi:/images/gone", 9));
    ck_assert_int_eq(set_str(r, "/images/a.png", "v", 1), TC_OK); /* same version: refill */
    expect_value(r, "/images/a.png", "v", 1, 1);
    ck_assert_int_eq(exists(&srv, "pi:/css/site.css"), 1);
    ck_assert_int_eq(exists(&srv, "other:/images/a.png"), 1); /* another namespace */
    ck_assert_int_eq(set_str(r, "/images/gone", "late", 8), TC_OK); /* still refused */
    ck_assert_int_eq(get_rc(r, "/images/gone"), TC_ENOTFOUND);

    /* Redis glob syntax in a key is matched literally. */
    ck_assert_int_eq(tc__redis_invalidate_pattern(r, "/img[1]/*", 9, &n), TC_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(exists(&srv, "pi:/img1/x"), 1);
    ck_assert_int_eq(get_rc(r, "/img1/x"), TC_OK);
    ck_assert_int_eq(tc__redis_invalidate_pattern(r, "/nothing/*", 10, &n), TC_OK);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tc__redis_invalidate_pattern(r, "/bad\\", 5, &n), TC_EINVAL);

    /* Many keys: the SCAN cursor walks more than one batch. */
    char key[32];
    for (int i = 0; i < 2500; i++) {
        snprintf(key, sizeof key, "/many/%d", i);
        ck_assert_int_eq(set_str(r, key, "v", 1), TC_OK);
    }
    ck_assert_int_eq(tc__redis_invalidate_pattern(r, "/many/*", 7, &n), TC_OK);
    ck_assert_int_eq(n, 2500);
    tc__redis_free(r);
    tc__redis_free(other);
}
END_TEST

START_TEST(test_del_keeps_tombstone)
{
    tc__redis_opts o = opts_for(&srv, "dk:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    ck_assert_int_eq(tc__redis_del(r, "k", 1), TC_OK);
    ck_assert(gone(&srv, "dk:k", 1));
    ck_assert_int_eq(set_str(r, "k", "v0", 0), TC_OK);     /* older than what was there: refused */
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);      /* the same version: the refill */
    expect_value(r, "k", "v", 1, 1);
    ck_assert_int_eq(tc__redis_tombstone(r, "k", 1, 5, 10000), TC_OK);
    ck_assert_int_eq(tc__redis_del(r, "k", 1), TC_OK);
    ck_assert_int_eq(exists(&srv, "dk:k"), 1);
    ck_assert_int_eq(set_str(r, "k", "old", 4), TC_OK);
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_ttl_expiry)
{
    tc__redis_opts o = opts_for(&srv, "ttl:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, "v", 1, 1, 150), TC_OK);
    const char *pttl[] = {"PTTL", "ttl:k", NULL};
    long long ttl = cmd_int(&srv, pttl);
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 150);
    got g = {0};
    int rc = tc__redis_get(r, "k", 1, collect, &g);
    if (rc == TC_OK) { /* unless a slow machine already passed 150 ms */
        ck_assert_int_ge(g.ttl, 1);
        ck_assert_int_le(g.ttl, 150);
    }
    got_free(&g);
    sleep_ms(400);
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    ck_assert_int_eq(exists(&srv, "ttl:k"), 0);

    /* An envelope whose own expiry has passed is a miss even while Redis still keeps it. */
    unsigned char buf[64];
    size_t n = envelope(buf, 'V', 7, 1000 /* 1970 */, "old", 3);
    raw_set(&srv, "ttl:stale", buf, n);
    ck_assert_int_eq(get_rc(r, "stale"), TC_ENOTFOUND);
    /* And one written by hand in the right format is read. */
    n = envelope(buf, 'V', 7, INT64_MAX, "new", 3);
    raw_set(&srv, "ttl:fresh", buf, n);
    expect_value(r, "fresh", "new", 3, 7);
    tc__redis_free(r);
}
END_TEST

/* ---- what Redis may hold that we did not write -------------------------------------------- */

static void expect_eproto(tc__redis *r, const char *key, const char *msg_part)
{
    got g = {0};
    int rc = tc__redis_get(r, key, strlen(key), collect, &g);
    ck_assert_msg(rc == TC_EPROTO, "%s: expected TC_EPROTO, got %d (%s)", key, rc,
                  tc_errmsg(NULL));
    ck_assert_int_eq(g.calls, 0);
    ck_assert_msg(strstr(tc_errmsg(NULL), msg_part) != NULL, "%s: message '%s' lacks '%s'", key,
                  tc_errmsg(NULL), msg_part);
    got_free(&g);
}

START_TEST(test_garbage_values)
{
    tc__redis_opts o = opts_for(&srv, "g:");
    tc__redis *r = tier_open(&o, NULL);
    const char *sets[][3] = {
        {"SET", "g:empty", ""},
        {"SET", "g:short", "garbage"},
        {"SET", "g:magic", "Xaaaaaaaaaaaaaaaaaaaaaaaaa"},
        {"SET", "g:format", "T\002Vaaaaaaaaaaaaaaaaaaaaaa"},
        {"SET", "g:kind", "T\001Qaaaaaaaaaaaaaaaaaaaaaa"},
        {"SET", "g:negative", "T\001V\377aaaaaaaaaaaaaaaaaaaa"},
        {"SET", "g:header", "T\001Vaaaaaaaaaaaaaaa"}, /* 18 bytes: one short */
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        const char *argv[] = {sets[i][0], sets[i][1], sets[i][2], NULL};
        free(tct_redis_cmd(&srv, argv));
    }
    expect_eproto(r, "empty", "shorter");
    expect_eproto(r, "short", "shorter");
    expect_eproto(r, "header", "shorter");
    expect_eproto(r, "magic", "magic");
    expect_eproto(r, "format", "format");
    expect_eproto(r, "kind", "kind");
    expect_eproto(r, "negative", "negative");
    /* The connection is still good. */
    ck_assert_int_eq(set_str(r, "ok", "fine", 3), TC_OK);
    expect_value(r, "ok", "fine", 4, 3);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_wrong_type)
{
    tc__redis_opts o = opts_for(&srv, "wt:");
    tc__redis *r = tier_open(&o, NULL);
    const char *lpush[] = {"LPUSH", "wt:list", "a", "b", NULL};
    free(tct_redis_cmd(&srv, lpush));
    const char *hset[] = {"HSET", "wt:hash", "f", "v", NULL};
    free(tct_redis_cmd(&srv, hset));
    expect_eproto(r, "list", "non-string");
    expect_eproto(r, "hash", "non-string");
    /* Overwriting the key with a value works (SET replaces any type). */
    ck_assert_int_eq(set_str(r, "list", "now a string", 1), TC_OK);
    expect_value(r, "list", "now a string", 12, 1);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_oversized_value)
{
    tc__redis_opts big = opts_for(&srv, "ov:");
    tc__redis *writer = tier_open(&big, NULL);
    tc__redis_opts small = opts_for(&srv, "ov:");
    small.max_value_bytes = 10;
    tc__redis *reader = tier_open(&small, NULL);

    char val[100];
    memset(val, 'v', sizeof val);
    ck_assert_int_eq(tc__redis_set(writer, "k", 1, val, sizeof val, 1, 60000), TC_OK);
    expect_eproto(reader, "k", "max_value_bytes");
    ck_assert_int_eq(tc__redis_set(writer, "k10", 3, val, 10, 1, 60000), TC_OK);
    expect_value(reader, "k10", val, 10, 1);

    /* Refusing to write a value is a failed write like any other: the key, which may hold an
     * older value, is journalled and deleted before the next command. */
    ck_assert_int_eq(tc__redis_set(reader, "k10", 3, val, 11, 2, 60000), TC_ETOOBIG);
    ck_assert_int_eq(exists(&srv, "ov:k10"), 1);
    ck_assert_int_eq(get_rc(reader, "k10"), TC_ENOTFOUND);
    ck_assert(gone(&srv, "ov:k10", 2));
    tc__redis_free(reader);
    tc__redis_free(writer);
}
END_TEST

START_TEST(test_arguments)
{
    tc__redis *r = NULL;
    tc__redis_opts o = opts_for(&srv, "arg:");
    ck_assert_int_eq(tc__redis_new(NULL, &o, NULL, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_new(&r, NULL, NULL, NULL), TC_EINVAL);
    ck_assert_ptr_null(r);
    tc__redis_opts bad = o;
    bad.host = "";
    ck_assert_int_eq(tc__redis_new(&r, &bad, NULL, NULL), TC_EINVAL);
    bad = o;
    bad.port = 0;
    ck_assert_int_eq(tc__redis_new(&r, &bad, NULL, NULL), TC_EINVAL);
    bad = o;
    bad.command_timeout_ms = 0;
    ck_assert_int_eq(tc__redis_new(&r, &bad, NULL, NULL), TC_EINVAL);
    bad = o;
    bad.retry_interval_ms = -1;
    ck_assert_int_eq(tc__redis_new(&r, &bad, NULL, NULL), TC_EINVAL);
    ck_assert_ptr_null(r);
    tc__redis_free(NULL);

    r = tier_open(&o, NULL);
    ck_assert_int_eq(tc__redis_get(NULL, "k", 1, collect, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_get(r, NULL, 1, collect, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_get(r, "k", 0, collect, NULL), TC_EKEY);
    ck_assert_int_eq(tc__redis_get(r, "a\0b", 3, collect, NULL), TC_EKEY);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, NULL, 1, 1, 1000), TC_EINVAL);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, "v", 1, 1, 0), TC_EINVAL);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, "v", 1, 1, -5), TC_EINVAL);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, "v", 1, -1, 1000), TC_EINVAL);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, NULL, 0, 1, 1000), TC_OK);
    expect_value(r, "k", "", 0, 1);
    ck_assert_int_eq(tc__redis_tombstone(r, "", 0, 1, 1000), TC_EKEY);
    ck_assert_int_eq(tc__redis_del(r, NULL, 0), TC_EINVAL);
    tc__redis_free(r);
}
END_TEST

/* ---- tags ----------------------------------------------------------------------------------- */

/* A raw command with binary arguments (tag sets have a NUL in their name); the reply is the
 * caller's. */
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

/* The name of a tag's set: ns, NUL, "tag:", tag. */
static size_t tagset_name(char *out, size_t size, const char *ns, const char *tag)
{
    size_t n = strlen(ns), t = strlen(tag);
    ck_assert_uint_lt(n + 5 + t, size);
    memcpy(out, ns, n);
    memcpy(out + n, "\0tag:", 5);
    memcpy(out + n + 5, tag, t);
    return n + 5 + t;
}

/* cmd (EXISTS, PTTL, SCARD, ...) on a tag's set, for an integer reply. */
static long long tagset_int(const tct_redis *s, const char *cmd, const char *ns, const char *tag)
{
    char name[1024];
    const char *argv[2] = {cmd, name};
    size_t lens[2] = {strlen(cmd), tagset_name(name, sizeof name, ns, tag)};
    redisReply *rep = raw_cmd(s, 2, argv, lens);
    ck_assert_msg(rep->type == REDIS_REPLY_INTEGER, "%s on tag %s: reply type %d", cmd, tag,
                  rep->type);
    long long v = rep->integer;
    freeReplyObject(rep);
    return v;
}

static int tag_strs(tc__redis *r, const char *key, int64_t ttl_ms, size_t ntags, ...)
{
    const char *tags[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, ntags);
    for (size_t i = 0; i < ntags && i < 8; i++) {
        tags[i] = va_arg(ap, const char *);
        lens[i] = strlen(tags[i]);
    }
    va_end(ap);
    return tc__redis_tag(r, key, strlen(key), tags, lens, ntags, ttl_ms);
}

static int64_t invalidate(tc__redis *r, const char *tag)
{
    int64_t n = -1;
    int rc = tc__redis_invalidate_tag(r, tag, strlen(tag), &n);
    ck_assert_msg(rc == TC_OK, "invalidate tag %s: %d %s", tag, rc, tc_errmsg(NULL));
    return n;
}

START_TEST(test_tag_invalidate)
{
    /* The tag scripts are not in the server's cache yet: EVALSHA falls back to EVAL. */
    const char *flush[] = {"SCRIPT", "FLUSH", NULL};
    free(tct_redis_cmd(&srv, flush));
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "tg:");
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k1", "v1", 1), TC_OK);
    ck_assert_int_eq(set_str(r, "k2", "v2", 2), TC_OK);
    ck_assert_int_eq(set_str(r, "k3", "v3", 3), TC_OK);
    ck_assert_int_eq(set_str(r, "k4", "v4", 4), TC_OK);
    /* red: k1, k2; blue: k1, k2, k3; k4 untagged. Tags are binary and never a format. */
    ck_assert_int_eq(tag_strs(r, "k1", 60000, 2, "red", "blue"), TC_OK);
    ck_assert_int_eq(tag_strs(r, "k2", 60000, 2, "red", "blue"), TC_OK);
    ck_assert_int_eq(tag_strs(r, "k3", 60000, 2, "blue", "%s%n *?[x]\r\n\377"), TC_OK);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tg:", "red"), 2);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tg:", "blue"), 3);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tg:", "%s%n *?[x]\r\n\377"), 1);
    ck_assert_int_eq(exists(&srv, "tg:red"), 0); /* not under the tag's plain name */

    ck_assert_int_eq(invalidate(r, "red"), 2);
    ck_assert(gone(&srv, "tg:k1", 1)); /* tombstones of their own versions */
    ck_assert(gone(&srv, "tg:k2", 2));
    expect_value(r, "k3", "v3", 2, 3);
    expect_value(r, "k4", "v4", 2, 4);
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tg:", "red"), 0); /* the set is gone */
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tg:", "blue"), 3); /* the others stay */
    /* An older fill is refused; the same version (the read-through's refill) is accepted. */
    ck_assert_int_eq(set_str(r, "k1", "v0", 0), TC_OK);
    ck_assert_int_eq(get_rc(r, "k1"), TC_ENOTFOUND);
    ck_assert_int_eq(set_str(r, "k1", "v1", 1), TC_OK);
    expect_value(r, "k1", "v1", 2, 1);

    /* blue: k1 (refilled) and k3 are taken out; k2 was gone already and does not count. */
    ck_assert_int_eq(invalidate(r, "blue"), 2);
    ck_assert(gone(&srv, "tg:k1", 1));
    ck_assert(gone(&srv, "tg:k2", 2));
    ck_assert(gone(&srv, "tg:k3", 3));
    expect_value(r, "k4", "v4", 2, 4);
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tg:", "blue"), 0);
    ck_assert_int_eq(invalidate(r, "%s%n *?[x]\r\n\377"), 0); /* k3: gone already */
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tg:", "%s%n *?[x]\r\n\377"), 0);

    /* Again, and a tag that never had a set: nothing to do. */
    ck_assert_int_eq(invalidate(r, "blue"), 0);
    ck_assert_int_eq(invalidate(r, "never"), 0);
    /* A tagged key that holds nothing (expired, never filled) is no error and no count. */
    ck_assert_int_eq(tag_strs(r, "absent", 60000, 1, "green"), TC_OK);
    ck_assert_int_eq(invalidate(r, "green"), 0);
    ck_assert_int_eq(exists(&srv, "tg:absent"), 0);

    /* Another namespace's tag of the same name is another set. */
    tc__redis_opts o2 = opts_for(&srv, "tg2:");
    tc__redis *r2 = tier_open(&o2, NULL);
    ck_assert_int_eq(set_str(r2, "k4", "w", 9), TC_OK);
    ck_assert_int_eq(tag_strs(r2, "k4", 60000, 1, "red"), TC_OK);
    ck_assert_int_eq(tag_strs(r, "k4", 60000, 1, "red"), TC_OK);
    ck_assert_int_eq(invalidate(r2, "red"), 1);
    expect_value(r, "k4", "v4", 2, 4);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tg:", "red"), 1);
    ck_assert_int_eq(TC__GET(st.connects), 1); /* one connection, reused throughout */
    tc__redis_free(r2);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_tag_ttl)
{
    tc__redis_opts o = opts_for(&srv, "tt:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(tag_strs(r, "k", 60000, 1, "t"), TC_OK);
    long long ttl = tagset_int(&srv, "PTTL", "tt:", "t");
    ck_assert_int_gt(ttl, 50000);
    ck_assert_int_le(ttl, 60000);
    /* A shorter TTL never shortens the set's. */
    ck_assert_int_eq(tag_strs(r, "k2", 1000, 1, "t"), TC_OK);
    ttl = tagset_int(&srv, "PTTL", "tt:", "t");
    ck_assert_int_gt(ttl, 50000);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tt:", "t"), 2);
    /* A longer one extends it; in the same call, a new set gets its own TTL. */
    ck_assert_int_eq(tag_strs(r, "k", 120000, 2, "t", "u"), TC_OK);
    ttl = tagset_int(&srv, "PTTL", "tt:", "t");
    ck_assert_int_gt(ttl, 110000);
    ck_assert_int_le(ttl, 120000);
    ttl = tagset_int(&srv, "PTTL", "tt:", "u");
    ck_assert_int_gt(ttl, 110000);
    ck_assert_int_eq(tag_strs(r, "k", 5000, 2, "u", "v"), TC_OK);
    ck_assert_int_gt(tagset_int(&srv, "PTTL", "tt:", "u"), 110000);
    ttl = tagset_int(&srv, "PTTL", "tt:", "v");
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 5000);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tt:", "t"), 2); /* tagging twice: one member */

    /* A set without a TTL outlives any: it keeps none. */
    char name[64];
    const char *persist[2] = {"PERSIST", name};
    size_t plens[2] = {7, tagset_name(name, sizeof name, "tt:", "v")};
    freeReplyObject(raw_cmd(&srv, 2, persist, plens));
    ck_assert_int_eq(tag_strs(r, "k3", 5000, 1, "v"), TC_OK);
    ck_assert_int_eq(tagset_int(&srv, "PTTL", "tt:", "v"), -1);

    /* The set really expires. */
    ck_assert_int_eq(tag_strs(r, "k", 150, 1, "short"), TC_OK);
    sleep_ms(400);
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tt:", "short"), 0);
    tc__redis_free(r);
}
END_TEST

/* Sets key prefix + i (version 7) and tags it. */
static void fill_tagged(tc__redis *r, const char *prefix, int i, const char *tag)
{
    char key[64];
    snprintf(key, sizeof key, "%s%d", prefix, i);
    ck_assert_int_eq(set_str(r, key, "v", 7), TC_OK);
    ck_assert_int_eq(tag_strs(r, key, 60000, 1, tag), TC_OK);
}

/* "calls=N" of a command in INFO commandstats, 0 if it never ran. */
static long long command_calls(const char *info, const char *cmd)
{
    char field[64];
    snprintf(field, sizeof field, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(info, field);
    return p != NULL ? strtoll(p + strlen(field), NULL, 10) : 0;
}

START_TEST(test_tag_large)
{
    tc__redis_opts o = opts_for(&srv, "tl:");
    tc__redis *r = tier_open(&o, NULL);
    enum { NBIG = 5000, NNUM = 500 };
    for (int i = 0; i < NBIG; i++)
        fill_tagged(r, "/big/", i, "big");
    /* Numeric members make a small set an intset, which SSCAN returns whole whatever COUNT
     * says: more than one script batch in one reply. */
    for (int i = 0; i < NNUM; i++)
        fill_tagged(r, "", 1000 + i, "num");
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tl:", "big"), NBIG);
    const char *encoding[3] = {"OBJECT", "ENCODING", NULL};
    char name[64];
    size_t elens[3] = {6, 8, tagset_name(name, sizeof name, "tl:", "num")};
    encoding[2] = name;
    redisReply *rep = raw_cmd(&srv, 3, encoding, elens);
    ck_assert(rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS);
    ck_assert_str_eq(rep->str, "intset");
    freeReplyObject(rep);

    const char *reset[] = {"CONFIG", "RESETSTAT", NULL};
    free(tct_redis_cmd(&srv, reset));
    ck_assert_int_eq(invalidate(r, "big"), NBIG);
    const char *info[] = {"INFO", "commandstats", NULL};
    char *stats = tct_redis_cmd(&srv, info);
    ck_assert_ptr_nonnull(stats);
    long long sscans = command_calls(stats, "sscan");
    long long scripts = command_calls(stats, "evalsha") + command_calls(stats, "eval");
    long long smembers = command_calls(stats, "smembers");
    free(stats);
    ck_assert_msg(sscans >= 2, "%lld SSCANs", sscans);
    ck_assert_msg(scripts >= (NBIG + 255) / 256, "%lld script calls", scripts);
    ck_assert_int_eq(smembers, 0);
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tl:", "big"), 0);
    char key[64];
    for (int i = 0; i < NBIG; i += 499) {
        snprintf(key, sizeof key, "tl:/big/%d", i);
        ck_assert(gone(&srv, key, 7));
    }
    const char *dbsize[] = {"DBSIZE", NULL};
    ck_assert_int_eq(cmd_int(&srv, dbsize), NBIG + NNUM + 1); /* tombstones, values, num */

    ck_assert_int_eq(invalidate(r, "num"), NNUM);
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tl:", "num"), 0);
    ck_assert(gone(&srv, "tl:1000", 7));
    ck_assert(gone(&srv, "tl:1499", 7));
    ck_assert_int_eq(cmd_int(&srv, dbsize), NBIG + NNUM);
    tc__redis_free(r);
}
END_TEST

/* Pattern invalidation neither touches nor counts tag sets, whatever the namespace: not even
 * the empty namespace, to which every key belongs, touches another namespace's sets. */
START_TEST(test_tag_pattern_ignores_sets)
{
    const char *namespaces[] = {"tp:", ""};
    for (int i = 0; i < 2; i++) {
        const char *ns = namespaces[i];
        tc__redis_opts o = opts_for(&srv, ns);
        tc__redis *r = tier_open(&o, NULL);
        ck_assert_int_eq(set_str(r, "a", "v", 1), TC_OK);
        ck_assert_int_eq(set_str(r, "b", "v", 1), TC_OK);
        ck_assert_int_eq(tag_strs(r, "a", 60000, 2, "t", "u"), TC_OK);
        ck_assert_int_eq(tag_strs(r, "b", 60000, 1, "t"), TC_OK);
        int64_t n = -1;
        ck_assert_int_eq(tc__redis_invalidate_pattern(r, "*", 1, &n), TC_OK);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(tagset_int(&srv, "SCARD", ns, "t"), 2);
        ck_assert_int_eq(tagset_int(&srv, "SCARD", ns, "u"), 1);
        ck_assert_int_eq(tc__redis_invalidate_pattern(r, "?tag:*", 6, &n), TC_OK);
        ck_assert_int_eq(n, 0);
        ck_assert_int_eq(tagset_int(&srv, "SCARD", ns, "t"), 2);
        /* The keys they name were invalidated under their own names: nothing left to count. */
        ck_assert_int_eq(invalidate(r, "t"), 0);
        ck_assert_int_eq(tagset_int(&srv, "EXISTS", ns, "t"), 0);
        /* Reads, writes and deletes of data keys never meet a set. */
        ck_assert_int_eq(set_str(r, "a", "v", 2), TC_OK);
        expect_value(r, "a", "v", 1, 2);
        ck_assert_int_eq(tc__redis_del(r, "a", 1), TC_OK);
        ck_assert_int_eq(tc__redis_invalidate_pattern(r, "*", 1, &n), TC_OK);
        ck_assert_int_eq(tagset_int(&srv, "SCARD", ns, "u"), 1);
        tc__redis_free(r);
    }
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tp:", "u"), 1);
}
END_TEST

/* What a foreign writer may leave in or under a tag's set. */
START_TEST(test_tag_garbage)
{
    tc__redis_opts o = opts_for(&srv, "tj:");
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "ok", "v", 1), TC_OK);
    /* Members that cannot be keys: empty, with a NUL (namespace + "\0tag:x" would name a tag
     * set), too long. They are dropped from the set, nothing else. */
    ck_assert_int_eq(tag_strs(r, "ok", 60000, 1, "x"), TC_OK);
    ck_assert_int_eq(tag_strs(r, "ok", 60000, 1, "j"), TC_OK);
    char name[64], big[TC_KEY_MAX + 1];
    memset(big, 'b', sizeof big);
    const char *sadd[5] = {"SADD", name, "", "\0tag:x", big};
    size_t slens[5] = {4, tagset_name(name, sizeof name, "tj:", "j"), 0, 6, sizeof big};
    redisReply *rep = raw_cmd(&srv, 5, sadd, slens);
    ck_assert_int_eq(rep->type, REDIS_REPLY_INTEGER);
    ck_assert_int_eq(rep->integer, 3);
    freeReplyObject(rep);
    ck_assert_int_eq(invalidate(r, "j"), 1);
    ck_assert_int_eq(tagset_int(&srv, "EXISTS", "tj:", "j"), 0);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tj:", "x"), 1); /* untouched */

    /* A member whose key holds another type: taken out like any foreign value. */
    const char *lpush[] = {"LPUSH", "tj:list", "a", NULL};
    free(tct_redis_cmd(&srv, lpush));
    ck_assert_int_eq(tag_strs(r, "list", 60000, 1, "l"), TC_OK);
    ck_assert_int_eq(invalidate(r, "l"), 1);
    ck_assert_int_eq(exists(&srv, "tj:list"), 0);

    /* A string under a tag's name: invalidating says so (no crash, no count); tagging
     * replaces it with the set. */
    const char *set[3] = {"SET", name, "junk"};
    size_t setlens[3] = {3, tagset_name(name, sizeof name, "tj:", "s"), 4};
    freeReplyObject(raw_cmd(&srv, 3, set, setlens));
    int64_t n = -1;
    ck_assert_int_eq(tc__redis_invalidate_tag(r, "s", 1, &n), TC_EPROTO);
    ck_assert_int_eq(n, 0);
    ck_assert_msg(strstr(tc_errmsg(NULL), "another type") != NULL, "%s", tc_errmsg(NULL));
    ck_assert_int_eq(set_str(r, "ok", "v", 2), TC_OK);
    ck_assert_int_eq(tag_strs(r, "ok", 60000, 1, "s"), TC_OK);
    ck_assert_int_eq(tagset_int(&srv, "SCARD", "tj:", "s"), 1);
    ck_assert_int_gt(tagset_int(&srv, "PTTL", "tj:", "s"), 0);
    ck_assert_int_eq(invalidate(r, "s"), 1);
    /* The connection is still good. */
    ck_assert_int_eq(set_str(r, "ok", "w", 3), TC_OK);
    expect_value(r, "ok", "w", 1, 3);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_tag_arguments)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "ta:");
    tc__redis *r = tier_open(&o, &st);
    const char *tags[2] = {"ok", "t"};
    size_t lens[2] = {2, 1};
    ck_assert_int_eq(tc__redis_tag(NULL, "k", 1, tags, lens, 2, 1000), TC_EINVAL);
    ck_assert_int_eq(tc__redis_tag(r, NULL, 1, tags, lens, 2, 1000), TC_EINVAL);
    ck_assert_int_eq(tc__redis_tag(r, "", 0, tags, lens, 2, 1000), TC_EKEY);
    ck_assert_int_eq(tc__redis_tag(r, "a\0b", 3, tags, lens, 2, 1000), TC_EKEY);
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, NULL, lens, 2, 1000), TC_EINVAL);
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, tags, NULL, 2, 1000), TC_EINVAL);
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, tags, lens, 2, 0), TC_EINVAL);
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, tags, lens, 2, -1), TC_EINVAL);
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, tags, lens, 2, INT64_MAX), TC_EINVAL);
    /* One bad tag among good ones: nothing is written. */
    const char *bad_tags[][2] = {{"ok", NULL}, {"ok", ""}, {"ok", "a\0b"}, {"ok", "x"}};
    size_t bad_lens[][2] = {{2, 1}, {2, 0}, {2, 3}, {2, TC_KEY_MAX + 1}};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(tc__redis_tag(r, "k", 1, bad_tags[i], bad_lens[i], 2, 1000),
                         TC_EINVAL);
        ck_assert_msg(strstr(tc_errmsg(NULL), "tag") != NULL, "%s", tc_errmsg(NULL));
    }
    /* No tags: nothing to do, not even a connection. */
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, NULL, NULL, 0, 1000), TC_OK);
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, tags, lens, 0, 1000), TC_OK);
    ck_assert_int_eq(TC__GET(st.connects), 0);
    const char *dbsize[] = {"DBSIZE", NULL};
    ck_assert_int_eq(cmd_int(&srv, dbsize), 0);
    /* The longest tag is fine. */
    char longest[TC_KEY_MAX];
    memset(longest, 'L', sizeof longest);
    const char *lt[1] = {longest};
    size_t ll[1] = {sizeof longest};
    ck_assert_int_eq(tc__redis_tag(r, "k", 1, lt, ll, 1, 1000), TC_OK);
    int64_t n = -1;
    ck_assert_int_eq(tc__redis_invalidate_tag(r, longest, sizeof longest, &n), TC_OK);
    ck_assert_int_eq(n, 0);

    n = -1;
    ck_assert_int_eq(tc__redis_invalidate_tag(NULL, "t", 1, &n), TC_EINVAL);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tc__redis_invalidate_tag(r, NULL, 1, &n), TC_EINVAL);
    ck_assert_int_eq(tc__redis_invalidate_tag(r, "", 0, &n), TC_EINVAL);
    ck_assert_int_eq(tc__redis_invalidate_tag(r, "a\0b", 3, &n), TC_EINVAL);
    ck_assert_int_eq(tc__redis_invalidate_tag(r, longest, TC_KEY_MAX + 1, &n), TC_EINVAL);
    ck_assert_int_eq(tc__redis_invalidate_tag(r, "t", 1, NULL), TC_EINVAL);
    ck_assert_int_eq(tc__redis_invalidate_tag(NULL, "t", 1, NULL), TC_EINVAL);
    tc__redis_free(r);
}
END_TEST

/* ---- connections -------------------------------------------------------------------------- */

START_TEST(test_reuse_one_thread)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "re:");
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(TC__GET(st.connects), 0); /* lazy: nothing before the first use */
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(set_str(r, "k", "v", i), TC_OK);
        ck_assert_int_eq(get_rc(r, "k"), TC_OK);
    }
    ck_assert_int_eq(TC__GET(st.connects), 1);
    ck_assert_int_eq(TC__GET(st.reuses), 99);
    ck_assert_int_eq(wait_clients(&srv, 2), 2); /* ours and the query's */
    tc__redis_free(r);
    ck_assert_int_eq(wait_clients(&srv, 1), 1); /* free closed it */
}
END_TEST

#define NTHREADS 4

static void *thread_ops(void *arg)
{
    tc__redis *r = arg;
    char key[32];
    snprintf(key, sizeof key, "t%lu", (unsigned long)pthread_self());
    for (int i = 0; i < 25; i++) {
        if (tc__redis_set(r, key, strlen(key), "v", 1, i, 60000) != TC_OK)
            return (void *)1;
        if (tc__redis_get(r, key, strlen(key), NULL, NULL) != TC_OK)
            return (void *)1;
    }
    return NULL;
}

START_TEST(test_reuse_threads)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "re:");
    tc__redis *r = tier_open(&o, &st);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_ops, r), 0);
    int failed = 0;
    for (int i = 0; i < NTHREADS; i++) { /* join all before asserting (CK_FORK=no longjmps) */
        void *res;
        pthread_join(th[i], &res);
        failed += res != NULL;
    }
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(TC__GET(st.connects), NTHREADS);
    ck_assert_int_eq(TC__GET(st.reuses), NTHREADS * 49);
    /* Each thread's exit closed its connection (the key's destructor). */
    ck_assert_int_eq(wait_clients(&srv, 1), 1);
    /* This thread gets its own. */
    ck_assert_int_eq(get_rc(r, "x"), TC_ENOTFOUND);
    ck_assert_int_eq(TC__GET(st.connects), NTHREADS + 1);
    tc__redis_free(r);
    ck_assert_int_eq(wait_clients(&srv, 1), 1);
}
END_TEST

START_TEST(test_client_kill)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "ck:");
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    ck_assert_int_ge(cmd_int(&srv, kill_cmd), 1);
    /* The next read finds the connection closed, reconnects and retries: no error. */
    expect_value(r, "k", "v", 1, 1);
    ck_assert_int_eq(TC__GET(st.connects), 2);
    /* Same for a write. */
    ck_assert_int_ge(cmd_int(&srv, kill_cmd), 1);
    ck_assert_int_eq(set_str(r, "k", "v2", 2), TC_OK);
    ck_assert_int_eq(TC__GET(st.connects), 3);
    expect_value(r, "k", "v2", 2, 2);
    tc__redis_free(r);
}
END_TEST

/* Writing a large value to a connection the server closed gets EPIPE, which raises SIGPIPE;
 * the test process keeps SIGPIPE's default action (terminate), so this would die without the
 * tier's guard. */
START_TEST(test_no_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "sp:");
    tc__redis *r = tier_open(&o, &st);
    size_t len = 8u << 20;
    char *val = calloc(1, len);
    ck_assert_ptr_nonnull(val);
    ck_assert_int_eq(tc__redis_set(r, "k", 1, val, len, 1, 60000), TC_OK);
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_ge(cmd_int(&srv, kill_cmd), 1);
        sleep_ms(20); /* let the server's FIN and RST arrive first */
        int rc = tc__redis_set(r, "k", 1, val, len, 2 + i, 60000);
        ck_assert_msg(rc == TC_OK, "set after kill: %d %s", rc, tc_errmsg(NULL));
    }
    sigset_t pend;
    sigpending(&pend);
    ck_assert_int_eq(sigismember(&pend, SIGPIPE), 0);
    free(val);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_command_timeout)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "to:");
    o.command_timeout_ms = 100;
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    const char *pause[] = {"CLIENT", "PAUSE", "700", NULL};
    free(tct_redis_cmd(&srv, pause));
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    sleep_ms(900);
    expect_value(r, "k", "v", 1, 1);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_unix_socket)
{
    char path[300];
    snprintf(path, sizeof path, "%s/redis.sock", srv.dir);
    if (access(path, F_OK) != 0) {
        fprintf(stderr, "test_unix_socket: skipped, the server has no unix socket\n");
        return;
    }
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "ux:");
    o.host = NULL;
    o.port = 0;
    o.unix_socket = path;
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "via unix", 5), TC_OK);
    expect_value(r, "k", "via unix", 8, 5);
    ck_assert_int_eq(exists(&srv, "ux:k"), 1); /* seen over TCP */
    const char *list[] = {"CLIENT", "LIST", NULL};
    char *out = tct_redis_cmd(&srv, list);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strstr(out, "redis.sock") != NULL, "no unix client in: %s", out);
    free(out);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    tc__redis_free(r);
}
END_TEST

/* ---- fork ---------------------------------------------------------------------------------- */

START_TEST(test_fork)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "fk:");
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "parent", 1), TC_OK);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    ck_assert_int_eq(wait_clients(&srv, 2), 2);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* Check handles SIGALRM: it would kill the test */
        alarm(20); /* a deadlock fails the test instead of hanging it */
        int bad = 0;
        got g = {0};
        if (tc__redis_get(r, "k", 1, collect, &g) != TC_OK || g.len != 6 ||
            memcmp(g.data, "parent", 6) != 0)
            bad |= 1;
        got_free(&g);
        if (set_str(r, "k2", "child", 2) != TC_OK)
            bad |= 2;
        if (tc__redis_get(r, "k2", 2, NULL, NULL) != TC_OK)
            bad |= 4;
        /* Its own connection, not the parent's (the counters are the child's copy). */
        if (TC__GET(st.connects) != 2)
            bad |= 8;
        /* Parent's, child's, and the query's. */
        if (clients(&srv) != 3)
            bad |= 16;
        _exit(bad);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child died with signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_msg(WEXITSTATUS(status) == 0, "child failed checks: mask %d", WEXITSTATUS(status));

    /* The parent's connection is untouched: no reconnect, and its replies are in step. */
    expect_value(r, "k", "parent", 6, 1);
    expect_value(r, "k2", "child", 5, 2);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    ck_assert_int_eq(wait_clients(&srv, 2), 2); /* the child's is gone, ours remains */
    tc__redis_free(r);
}
END_TEST

typedef struct churn {
    tc__redis *r, *dead;
    atomic_int stop;
} churn;

static void *churn_once(void *arg)
{
    churn *c = arg;
    tc__redis_get(c->r, "k", 1, NULL, NULL);
    tc__redis_set(c->dead, "k", 1, "v", 1, 1, 1000); /* fails, journals: takes the lock */
    return NULL;
}

/* Threads whose first use and exit take the registry lock, over and over. */
static void *churn_loop(void *arg)
{
    churn *c = arg;
    while (!atomic_load(&c->stop)) {
        pthread_t t;
        /* The whole life of the thread, whose start and exit allocate too. */
        tct_fork_quiet_enter();
        if (pthread_create(&t, NULL, churn_once, c) == 0)
            pthread_join(t, NULL);
        tct_fork_quiet_leave();
    }
    return NULL;
}

/* fork() while other threads take and release the tier's locks: the child must never find one
 * held forever. */
START_TEST(test_fork_while_threads_busy)
{
    tc__redis_opts o = opts_for(&srv, "fs:");
    tc__redis *r = tier_open(&o, NULL);
    tc__redis_opts od = opts_for(&srv, "fs:");
    od.port = 1; /* nothing listens there: every write fails and is journalled */
    od.connect_timeout_ms = 50;
    tc__redis *dead = tier_open(&od, NULL);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    churn c = {.r = r, .dead = dead};
    atomic_init(&c.stop, 0);
    tct_fork_quiet_init();
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, churn_loop, &c), 0);
    /* The child reports through a pipe, not its exit status. */
    int result = 0, i;
    for (i = 0; i < 10 && result == 0; i++) {
        int fds[2];
        if (pipe(fds) != 0) {
            result = -1;
            break;
        }
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL); /* Check handles SIGALRM: it would kill the test */
            alarm(20); /* a deadlock: no report, the test fails */
            unsigned char bad = tc__redis_get(r, "k", 1, NULL, NULL) != TC_OK;
            bad |= (tc__redis_set(dead, "k", 1, "v", 1, 1, 1000) != TC_EREDIS) << 1;
            ssize_t w = write(fds[1], &bad, 1);
            /* Leave by exec: the memory of the threads that did not survive the fork is lost
             * by design, and a leak checker's report at exit would only be noise. */
            if (w == 1)
                execl("/bin/true", "true", (char *)NULL);
            _exit(w == 1 ? 0 : 1);
        }
        close(fds[1]);
        unsigned char bad = 0xff;
        if (pid < 0 || read(fds[0], &bad, 1) != 1)
            result = -2;
        else
            result = bad;
        close(fds[0]);
        if (pid > 0)
            waitpid(pid, NULL, 0);
        sleep_ms(5);
    }
    /* Stop the threads before asserting: with CK_FORK=no a failed assertion longjmps. */
    atomic_store(&c.stop, 1);
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    ck_assert_msg(result == 0, "child %d: result %d", i - 1, result);
    ck_assert_int_eq(get_rc(r, "k"), TC_OK);
    tc__redis_free(dead);
    tc__redis_free(r);
}
END_TEST

typedef struct holder {
    tc__rconns *cs;
    int fds[2]; /* the holder writes one byte once it holds the lock, then reads one to let go */
} holder;

static void *hold_lock(void *arg)
{
    holder *h = arg;
    char b = 1;
    tc__rconns_lock(h->cs);
    if (write(h->fds[1], &b, 1) != 1)
        b = 0;
    while (read(h->fds[0], &b, 1) == -1 && errno == EINTR) {
    }
    tc__rconns_unlock(h->cs);
    return NULL;
}

static void count_torn(void *arg)
{
    (*(int *)arg)++;
}

/* The child of a fork() taken while another thread held the connection object's mutex: the
 * mutex would stay locked forever; the child must repair it, say so (on_torn), and work. */
START_TEST(test_fork_while_lock_held)
{
    int torn = 0;
    tc__stats st = {0};
    tc__rconns_opts o = {
        .host = "127.0.0.1",
        .port = srv.port,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000,
        .on_torn = count_torn,
        .on_torn_arg = &torn,
    };
    tc__rconns *cs = NULL;
    ck_assert_int_eq(tc__rconns_new(&cs, &o, NULL, &st), TC_OK);
    redisContext *c;
    ck_assert_int_eq(tc__rconns_acquire(&c, cs), TC_OK);
    tc__rconns_release(cs, 0);
    ck_assert_int_eq(TC__GET(st.connects), 1);

    for (int held = 0; held < 2; held++) {
        holder h = {.cs = cs};
        int to_holder[2], from_holder[2], report[2];
        ck_assert_int_eq(pipe(to_holder), 0);
        ck_assert_int_eq(pipe(from_holder), 0);
        ck_assert_int_eq(pipe(report), 0);
        h.fds[0] = to_holder[0];
        h.fds[1] = from_holder[1];
        pthread_t t;
        char b = 0;
        if (held) {
            ck_assert_int_eq(pthread_create(&t, NULL, hold_lock, &h), 0);
            ck_assert_int_eq(read(from_holder[0], &b, 1), 1); /* it holds the lock now */
        }
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL); /* Check handles SIGALRM: it would kill the test */
            alarm(20); /* a stuck mutex: no report, the test fails */
            unsigned char res = 0;
            redisContext *cc;
            if (tc__rconns_acquire(&cc, cs) != TC_OK) {
                res |= 1;
            } else {
                redisReply *rep = redisCommand(cc, "PING");
                if (rep == NULL || rep->type != REDIS_REPLY_STATUS)
                    res |= 2;
                if (rep != NULL)
                    freeReplyObject(rep);
                tc__rconns_release(cs, 0);
            }
            if (TC__GET(st.connects) != 2) /* its own connection */
                res |= 4;
            if (torn != held)
                res |= 8;
            tc__rconns_lock(cs); /* usable again */
            tc__rconns_unlock(cs);
            tc__rconns_free(cs);
            ssize_t w = write(report[1], &res, 1);
            _exit(w == 1 ? 0 : 1);
        }
        close(report[1]); /* so that a child that died without reporting gives EOF */
        unsigned char res = 0xff;
        ssize_t n = pid > 0 ? read(report[0], &res, 1) : -1;
        if (pid > 0)
            waitpid(pid, NULL, 0);
        if (held) {
            ck_assert_int_eq(write(to_holder[1], &b, 1), 1);
            pthread_join(t, NULL);
        }
        close(to_holder[0]);
        close(to_holder[1]);
        close(from_holder[0]);
        close(from_holder[1]);
        close(report[0]);
        ck_assert_msg(n == 1 && res == 0, "held=%d: child result %d (read %zd)", held, res, n);
    }
    /* The parent was never repaired and its connection is the same one. */
    ck_assert_int_eq(torn, 0);
    ck_assert_int_eq(tc__rconns_acquire(&c, cs), TC_OK);
    redisReply *rep = redisCommand(c, "PING");
    ck_assert_ptr_nonnull(rep);
    ck_assert_int_eq(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    tc__rconns_release(cs, 0);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    tc__rconns_free(cs);
}
END_TEST

/* ---- outages (own servers) ------------------------------------------------------------------ */

START_TEST(test_breaker)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&own, "br:");
    o.retry_interval_ms = 1000;
    tc__redis *r = tier_open(&o, &st);
    tc__redis_opts o0 = opts_for(&own, "br:");
    o0.retry_interval_ms = 0;
    tc__stats st0 = {0};
    tc__redis *r0 = tier_open(&o0, &st0);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    ck_assert_int_eq(get_rc(r0, "k"), TC_OK);

    tct_redis_kill(&own);
    /* The open connection fails, one reconnect is refused: TC_EREDIS, breaker open. */
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    ck_assert_msg(strstr(tc_errmsg(NULL), "skipped") == NULL, "%s", tc_errmsg(NULL));
    /* Now Redis is skipped without a connect attempt. */
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    ck_assert_msg(strstr(tc_errmsg(NULL), "skipped until retry") != NULL, "%s",
                  tc_errmsg(NULL));
    ck_assert_msg(strstr(tc_errmsg(NULL), "Connection refused") != NULL, "%s", tc_errmsg(NULL));
    ck_assert_int_eq(set_str(r, "k", "v", 2), TC_EREDIS);
    ck_assert_msg(strstr(tc_errmsg(NULL), "skipped") != NULL, "%s", tc_errmsg(NULL));
    ck_assert_int_eq(TC__GET(st.connects), 1);

    /* retry_interval_ms 0: every call tries (and says why it failed, not "skipped"). */
    ck_assert_int_eq(get_rc(r0, "k"), TC_EREDIS);
    ck_assert_int_eq(get_rc(r0, "k"), TC_EREDIS);
    ck_assert_msg(strstr(tc_errmsg(NULL), "skipped") == NULL, "%s", tc_errmsg(NULL));
    ck_assert_msg(strstr(tc_errmsg(NULL), "Connection refused") != NULL, "%s", tc_errmsg(NULL));

    ck_assert_int_eq(tct_redis_restart(&own), 0);
    ck_assert_int_eq(get_rc(r0, "k"), TC_ENOTFOUND); /* no persistence: the data is gone */
    ck_assert_int_eq(TC__GET(st0.connects), 2);
    sleep_ms(1100); /* past retry_interval_ms */
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    ck_assert_int_eq(TC__GET(st.connects), 2);
    ck_assert_int_eq(set_str(r, "k", "back", 3), TC_OK);
    expect_value(r, "k", "back", 4, 3);
    tc__redis_free(r0);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

/* The put committed to the store while Redis was down must not be shadowed by the old copy. */
START_TEST(test_pending_invalidation)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    tc__redis_opts o = opts_for(&own, "pi:");
    o.retry_interval_ms = 200;
    tc__redis *r = tier_open(&o, NULL);
    tc__redis *writer = tier_open(&o, NULL); /* another process's view: its own journal */
    ck_assert_int_eq(set_str(r, "k", "v1", 1), TC_OK);

    tct_redis_kill(&own);
    ck_assert_int_eq(set_str(r, "k", "v2", 2), TC_EREDIS);
    ck_assert_int_eq(tc__redis_tombstone(r, "t", 1, 2, 10000), TC_EREDIS);
    ck_assert_int_eq(tc__redis_del(r, "d", 1), TC_EREDIS);
    ck_assert_int_eq(set_str(r, "k", "v3", 3), TC_EREDIS); /* deduplicated */

    ck_assert_int_eq(tct_redis_restart(&own), 0);
    /* Old copies reappear (a replica promoted, another writer, a late fill). */
    ck_assert_int_eq(set_str(writer, "k", "v1", 1), TC_OK);
    ck_assert_int_eq(set_str(writer, "t", "v1", 1), TC_OK);
    ck_assert_int_eq(set_str(writer, "d", "v1", 1), TC_OK);
    ck_assert_int_eq(set_str(writer, "other", "x", 1), TC_OK);
    ck_assert_int_eq(exists(&own, "pi:k"), 1);

    sleep_ms(300); /* past retry_interval_ms */
    /* The first command applies the journal before it reads. */
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    /* Replayed as tombstones of the failed writes' versions, so a late fill of v1 (read
     * before the writes) is refused from now on; an invalidation keeps what was there. */
    ck_assert(gone(&own, "pi:k", 3));
    ck_assert(gone(&own, "pi:t", 2));
    ck_assert(gone(&own, "pi:d", 1));
    ck_assert_int_eq(set_str(writer, "k", "v1", 1), TC_OK);
    ck_assert(gone(&own, "pi:k", 3));
    ck_assert_int_eq(exists(&own, "pi:other"), 1); /* only journalled keys */

    /* Applied once: later values stay. */
    ck_assert_int_eq(set_str(writer, "k", "v4", 4), TC_OK);
    expect_value(r, "k", "v4", 2, 4);
    expect_value(r, "other", "x", 1, 1);
    tc__redis_free(writer);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

/* More failed keys than the journal holds: the whole namespace is cleared, and nothing else. */
START_TEST(test_pending_overflow)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    /* Glob metacharacters in the namespace must match only themselves. */
    const char *ns = "o*[x]?\\:";
    tc__redis_opts o = opts_for(&own, ns);
    o.retry_interval_ms = 200;
    tc__redis *r = tier_open(&o, NULL);
    tc__redis *writer = tier_open(&o, NULL);
    /* Unescaped, the pattern o*[x]?\:* would match this namespace's keys. */
    tc__redis_opts on = opts_for(&own, "oZZx!:");
    tc__redis *neighbour = tier_open(&on, NULL);
    ck_assert_int_eq(set_str(r, "a", "v1", 1), TC_OK);

    tct_redis_kill(&own);
    char key[32];
    for (int i = 0; i < 10001; i++) {
        snprintf(key, sizeof key, "key%d", i);
        ck_assert_int_eq(set_str(r, key, "new", 2), TC_EREDIS);
    }
    ck_assert_int_eq(tct_redis_restart(&own), 0);
    for (int i = 0; i < 2500; i++) { /* several SCAN pages */
        snprintf(key, sizeof key, "key%d", i * 4);
        ck_assert_int_eq(set_str(writer, key, "old", 1), TC_OK);
    }
    ck_assert_int_eq(set_str(writer, "a", "old", 1), TC_OK);
    ck_assert_int_eq(set_str(neighbour, "keep", "n", 1), TC_OK);
    const char *plain[] = {"SET", "unrelated", "u", NULL};
    free(tct_redis_cmd(&own, plain));
    /* A tag set holds no value: it stays, and still names the key once it is filled again. */
    ck_assert_int_eq(tag_strs(writer, "a", 60000, 1, "t"), TC_OK);

    sleep_ms(300);
    ck_assert_int_eq(get_rc(r, "a"), TC_ENOTFOUND);
    const char *dbsize[] = {"DBSIZE", NULL};
    ck_assert_int_eq(cmd_int(&own, dbsize), 3);
    ck_assert_int_eq(exists(&own, "oZZx!:keep"), 1);
    ck_assert_int_eq(exists(&own, "unrelated"), 1);
    ck_assert_int_eq(tagset_int(&own, "SCARD", ns, "t"), 1);

    /* Done once: the journal is empty again. */
    ck_assert_int_eq(set_str(writer, "b", "fresh", 5), TC_OK);
    expect_value(r, "b", "fresh", 5, 5);
    ck_assert_int_eq(cmd_int(&own, dbsize), 4);
    ck_assert_int_eq(set_str(writer, "a", "again", 3), TC_OK);
    ck_assert_int_eq(invalidate(r, "t"), 1);
    ck_assert_int_eq(get_rc(r, "a"), TC_ENOTFOUND);
    tc__redis_free(neighbour);
    tc__redis_free(writer);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

typedef struct pend_arg {
    tc__redis *r;
    int id, phase, bad;
} pend_arg;

static void *pend_thread(void *p)
{
    pend_arg *a = p;
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "t%d-%d", a->id, i);
        if (a->phase == 0)
            a->bad += tc__redis_set(a->r, key, strlen(key), "new", 3, 2, 60000) != TC_EREDIS;
        else
            a->bad += tc__redis_get(a->r, key, strlen(key), NULL, NULL) != TC_ENOTFOUND;
    }
    return NULL;
}

/* Threads journal concurrently, then read concurrently: all journalled keys are gone first. */
START_TEST(test_pending_threads)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    tc__redis_opts o = opts_for(&own, "pt:");
    o.retry_interval_ms = 200;
    tc__redis *r = tier_open(&o, NULL);
    tc__redis *writer = tier_open(&o, NULL);
    tct_redis_kill(&own);
    pend_arg args[NTHREADS];
    pthread_t th[NTHREADS];
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) {
            ck_assert_int_eq(tct_redis_restart(&own), 0);
            char key[32];
            for (int t = 0; t < NTHREADS; t++)
                for (int i = 0; i < 50; i++) {
                    snprintf(key, sizeof key, "t%d-%d", t, i);
                    ck_assert_int_eq(set_str(writer, key, "old", 1), TC_OK);
                }
            sleep_ms(300);
        }
        for (int t = 0; t < NTHREADS; t++) {
            args[t] = (pend_arg){.r = r, .id = t, .phase = phase};
            ck_assert_int_eq(pthread_create(&th[t], NULL, pend_thread, &args[t]), 0);
        }
        for (int t = 0; t < NTHREADS; t++)
            pthread_join(th[t], NULL);
        for (int t = 0; t < NTHREADS; t++)
            ck_assert_msg(args[t].bad == 0, "phase %d thread %d: %d unexpected results", phase,
                          t, args[t].bad);
    }
    char key[32];
    for (int t = 0; t < NTHREADS; t++)
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof key, "pt:t%d-%d", t, i);
            ck_assert(gone(&own, key, 2));
        }
    tc__redis_free(writer);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Tagging and tag invalidation while Redis is down: TC_EREDIS at once, no hang, and they work
 * again once it is back. */
START_TEST(test_tag_redis_down)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    tc__redis_opts o = opts_for(&own, "td:");
    tc__redis *r = tier_open(&o, NULL);
    tc__redis_opts ob = opts_for(&own, "td:");
    ob.retry_interval_ms = 1000;
    tc__redis *breaker = tier_open(&ob, NULL);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    ck_assert_int_eq(tag_strs(r, "k", 60000, 1, "t"), TC_OK);
    ck_assert_int_eq(invalidate(breaker, "nothing"), 0); /* its connection is open */

    tct_redis_kill(&own);
    int64_t start = mono_ms();
    ck_assert_int_eq(tag_strs(r, "k", 60000, 2, "t", "u"), TC_EREDIS);
    int64_t n = -1;
    ck_assert_int_eq(tc__redis_invalidate_tag(r, "t", 1, &n), TC_EREDIS);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tc__redis_invalidate_tag(breaker, "t", 1, &n), TC_EREDIS);
    ck_assert_int_eq(tc__redis_invalidate_tag(breaker, "t", 1, &n), TC_EREDIS);
    ck_assert_msg(strstr(tc_errmsg(NULL), "skipped") != NULL, "%s", tc_errmsg(NULL));
    ck_assert_int_eq(tag_strs(breaker, "k", 60000, 1, "t"), TC_EREDIS);
    ck_assert_msg(mono_ms() - start < 3000, "took %lld ms", (long long)(mono_ms() - start));

    ck_assert_int_eq(tct_redis_restart(&own), 0);
    ck_assert_int_eq(set_str(r, "k", "v", 2), TC_OK);
    ck_assert_int_eq(tag_strs(r, "k", 60000, 1, "t"), TC_OK);
    ck_assert_int_eq(invalidate(r, "t"), 1);
    ck_assert(gone(&own, "td:k", 2));
    tc__redis_free(breaker);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

/* ---- AUTH, SELECT, keepalive, backoff ------------------------------------------------------- */

/* Servers that want a password: pw_srv (requirepass) and acl_srv (an ACL user restricted to
 * two key patterns; the default user is off). Started in the runner, like srv. */
static tct_redis pw_srv, acl_srv;
static int pw_ok, acl_ok;
#define PW "sekret"
#define ACL_USER "app"
#define ACL_PASS "apppass"

static void auth_up(void)
{
    pw_ok = tct_redis_start_conf(&pw_srv, "requirepass " PW) == 0;
    acl_ok = tct_redis_start_conf(&acl_srv, "user default off\n"
                                            "user " ACL_USER " on >" ACL_PASS
                                            " ~tc:* ~other:* &* +@all") == 0;
}

static void auth_down(void)
{
    if (pw_ok)
        tct_redis_stop(&pw_srv);
    if (acl_ok)
        tct_redis_stop(&acl_srv);
    pw_ok = acl_ok = 0;
}

static void auth_flush(void)
{
    ck_assert_msg(pw_ok && acl_ok, "redis-server with a password could not be started");
    const char *flush[] = {"FLUSHALL", NULL};
    free(tct_redis_cmd_auth(&pw_srv, NULL, PW, flush));
    free(tct_redis_cmd_auth(&acl_srv, ACL_USER, ACL_PASS, flush));
}

static void expect_msg(const char *must, const char *must_not)
{
    const char *m = tc_errmsg(NULL);
    ck_assert_msg(must == NULL || strstr(m, must) != NULL, "\"%s\" not in: %s", must, m);
    ck_assert_msg(must_not == NULL || strstr(m, must_not) == NULL, "\"%s\" in: %s", must_not,
                  m);
}

START_TEST(test_auth_password)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&pw_srv, "tc:");
    o.password = PW;
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    expect_value(r, "k", "v", 1, 1);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    const char *ex[] = {"EXISTS", "tc:k", NULL};
    char *out = tct_redis_cmd_auth(&pw_srv, NULL, PW, ex);
    ck_assert_str_eq(out, "1");
    free(out);
    /* A server restart drops the connection; the new one authenticates again. */
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    free(tct_redis_cmd_auth(&pw_srv, NULL, PW, kill_cmd));
    expect_value(r, "k", "v", 1, 1);
    ck_assert_int_eq(TC__GET(st.connects), 2);
    tc__redis_free(r);

    /* Over the unix socket too. */
    char path[300];
    snprintf(path, sizeof path, "%s/redis.sock", pw_srv.dir);
    if (access(path, F_OK) == 0) {
        o.host = NULL;
        o.port = 0;
        o.unix_socket = path;
        r = tier_open(&o, NULL);
        expect_value(r, "k", "v", 1, 1);
        tc__redis_free(r);
    }
}
END_TEST

START_TEST(test_auth_wrong_password)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&pw_srv, "tc:");
    o.password = "not-the-pw-4711";
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_EREDIS);
    expect_msg("AUTH failed", "not-the-pw-4711");
    expect_msg("WRONGPASS", NULL);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("AUTH failed", "not-the-pw-4711");
    ck_assert_int_eq(TC__GET(st.connects), 0);
    tc__redis_free(r);

    /* With the breaker: the failed AUTH counts as a failed connect, later calls skip. */
    o.retry_interval_ms = 60000;
    r = tier_open(&o, &st);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("skipping Redis for 60000 ms", "not-the-pw-4711");
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("skipped until retry", "not-the-pw-4711");
    expect_msg("AUTH failed", NULL);
    tc__redis_free(r);

    /* No password: the connect works, the first command is refused with NOAUTH; the
     * connection is then dropped, and the next connect checks (PING) and fails. */
    tc__stats st2 = {0};
    tc__redis_opts o2 = opts_for(&pw_srv, "tc:");
    r = tier_open(&o2, &st2);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("NOAUTH", NULL);
    ck_assert_int_eq(TC__GET(st2.connects), 1);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("NOAUTH", NULL);
    expect_msg("PING", NULL);
    ck_assert_int_eq(TC__GET(st2.connects), 1);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_auth_acl_user)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&acl_srv, "tc:");
    o.username = ACL_USER;
    o.password = ACL_PASS;
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    expect_value(r, "k", "v", 1, 1);
    ck_assert_int_eq(tc__redis_del(r, "k", 1), TC_OK);
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    tc__redis_free(r);

    o.ns = "other:";
    r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "w", 2), TC_OK);
    expect_value(r, "k", "w", 1, 2);
    tc__redis_free(r);
    const char *ex[] = {"EXISTS", "other:k", NULL};
    char *out = tct_redis_cmd_auth(&acl_srv, ACL_USER, ACL_PASS, ex);
    ck_assert_str_eq(out, "1");
    free(out);

    /* A namespace outside the user's key patterns: every command gets NOPERM, an error reply
     * like any other (TC_EREDIS), the connection stays usable. */
    tc__stats st3 = {0};
    o.ns = "forbidden:";
    r = tier_open(&o, &st3);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_EREDIS);
    expect_msg("NOPERM", ACL_PASS);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("NOPERM", NULL);
    ck_assert_int_eq(TC__GET(st3.connects), 1);
    tc__redis_free(r);
}
END_TEST

START_TEST(test_auth_acl_wrong)
{
    tc__redis_opts o = opts_for(&acl_srv, "tc:");
    o.username = ACL_USER;
    o.password = "bad-acl-pw-0815";
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("AUTH as user \"app\" failed", "bad-acl-pw-0815");
    expect_msg("WRONGPASS", NULL);
    tc__redis_free(r);

    o.username = "nosuchuser";
    o.password = ACL_PASS;
    r = tier_open(&o, NULL);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("AUTH as user \"nosuchuser\" failed", ACL_PASS);
    tc__redis_free(r);

    /* The right password without the user name: AUTH as the default user, which is off. */
    o.username = NULL;
    r = tier_open(&o, NULL);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("AUTH failed", ACL_PASS);
    tc__redis_free(r);

    /* A user name without a password is refused when the tier is made. */
    tc__redis_opts bad = opts_for(&acl_srv, "tc:");
    bad.username = ACL_USER;
    tc__redis *none = NULL;
    ck_assert_int_eq(tc__redis_new(&none, &bad, NULL, NULL), TC_EINVAL);
    ck_assert_ptr_null(none);
}
END_TEST

/* The public API: redis.password from JSON, against the requirepass server. */
START_TEST(test_auth_public_api)
{
    char dir[256];
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    tc_cache *c = tct_open(dir, "pw", pw_srv.port, "{\"redis\": {\"password\": \"" PW "\"}}");
    ck_assert_int_eq(tc_put(c, "key", 3, "value", 5, 60000), TC_OK);
    void *v = NULL;
    size_t len = 0;
    ck_assert_int_eq(tc_get(&v, &len, c, "key", 3), TC_OK);
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(memcmp(v, "value", 5), 0);
    tc_free(v);
    ck_assert_int_ge(tct_stat(c, "redis", "connects"), 1);
    tc_close(c);
    const char *ex[] = {"EXISTS", "tc:key", NULL};
    char *out = tct_redis_cmd_auth(&pw_srv, NULL, PW, ex);
    ck_assert_str_eq(out, "1");
    free(out);
    tct_rmrf(dir);
}
END_TEST

START_TEST(test_select_database)
{
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&srv, "db:");
    o.database = 3;
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "in three", 1), TC_OK);
    expect_value(r, "k", "in three", 8, 1);
    ck_assert_int_eq(exists(&srv, "db:k"), 0); /* not in db 0 */
    const char *info[] = {"INFO", "keyspace", NULL};
    char *out = tct_redis_cmd(&srv, info);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strstr(out, "db3:keys=1,") != NULL, "no key in db3: %s", out);
    ck_assert_msg(strstr(out, "db0:") == NULL, "keys in db0: %s", out);
    free(out);
    /* Every new connection selects it again. */
    const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};
    ck_assert_int_ge(cmd_int(&srv, kill_cmd), 1);
    expect_value(r, "k", "in three", 8, 1);
    ck_assert_int_eq(TC__GET(st.connects), 2);
    tc__redis_free(r);

    tc__stats st99 = {0};
    o.database = 99; /* redis-server has 16 */
    r = tier_open(&o, &st99);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("SELECT 99 failed", NULL);
    expect_msg("out of range", NULL);
    ck_assert_int_eq(TC__GET(st99.connects), 0);
    tc__redis_free(r);
}
END_TEST

/* One connection of a tc__rconns, its socket's SO_KEEPALIVE. */
static int keepalive_of(int on)
{
    tc__stats st = {0};
    tc__rconns_opts co = {
        .host = "127.0.0.1",
        .port = srv.port,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000,
        .keepalive = on,
    };
    tc__rconns *cs = NULL;
    ck_assert_int_eq(tc__rconns_new(&cs, &co, NULL, &st), TC_OK);
    redisContext *c = NULL;
    ck_assert_int_eq(tc__rconns_acquire(&c, cs), TC_OK);
    int v = -1;
    socklen_t len = sizeof v;
    int rc = getsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len);
    redisReply *rep = redisCommand(c, "PING");
    int pong = rep != NULL && rep->type == REDIS_REPLY_STATUS;
    if (rep != NULL)
        freeReplyObject(rep);
    tc__rconns_release(cs, 0);
    tc__rconns_free(cs);
    ck_assert_int_eq(rc, 0);
    ck_assert(pong);
    return v;
}

START_TEST(test_keepalive)
{
    ck_assert_int_ne(keepalive_of(1), 0);
#if HIREDIS_MAJOR == 0 /* 0.14 leaves the socket alone unless asked */
    ck_assert_int_eq(keepalive_of(0), 0);
#endif
    tc__redis_opts o = opts_for(&srv, "ka:");
    o.keepalive = 1;
    tc__redis *r = tier_open(&o, NULL);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    expect_value(r, "k", "v", 1, 1);
    tc__redis_free(r);
}
END_TEST

/* The connection's copy of the password is its own (the caller's buffer may change). */
START_TEST(test_auth_opts_copied)
{
    char pw[16], user[16];
    snprintf(pw, sizeof pw, "%s", PW);
    snprintf(user, sizeof user, "%s", "default");
    tc__redis_opts o = opts_for(&pw_srv, "tc:");
    o.password = pw;
    o.username = user; /* "AUTH default sekret": the requirepass user by its name */
    tc__redis *r = tier_open(&o, NULL);
    memset(pw, 'x', sizeof pw - 1);
    memset(user, 'y', sizeof user - 1);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    tc__redis_free(r);
}
END_TEST

/* The number after "skipping Redis for " in the last message; -1 if absent. */
static long long skip_ms(void)
{
    const char *p = strstr(tc_errmsg(NULL), "skipping Redis for ");
    return p != NULL ? strtoll(p + strlen("skipping Redis for "), NULL, 10) : -1;
}

/* Each failed connect in a row doubles the interval, up to retry_max_ms; a successful connect
 * starts over. The sleeps only need to be long enough (a slow run waits longer, which changes
 * nothing); the intervals are read from the messages. */
START_TEST(test_backoff)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    tct_redis_kill(&own); /* a dead port, reserved for the restart */
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&own, "bo:");
    o.retry_interval_ms = 50;
    o.retry_max_ms = 400;
    tc__redis *r = tier_open(&o, &st);
    const long long want[] = {50, 100, 200, 400, 400};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
        ck_assert_msg(skip_ms() == want[i], "attempt %zu: want %lld ms: %s", i, want[i],
                      tc_errmsg(NULL));
        sleep_ms(want[i] + 20);
    }

    /* Continuous calls for 1.5 s cost a handful of connect attempts (a fixed 50 ms would give
     * 30): every other call is skipped without one. */
    int attempts = 0, skipped = 0;
    int64_t end = mono_ms() + 1500;
    while (mono_ms() < end) {
        ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
        if (strstr(tc_errmsg(NULL), "skipped until retry") != NULL)
            skipped++;
        else
            attempts++;
        sleep_ms(1);
    }
    ck_assert_msg(attempts >= 2 && attempts <= 8, "%d attempts, %d skipped", attempts, skipped);
    ck_assert_int_gt(skipped, attempts);

    /* Back up: the next attempt connects and resets the backoff. */
    ck_assert_int_eq(tct_redis_restart(&own), 0);
    sleep_ms(450);
    ck_assert_int_eq(get_rc(r, "k"), TC_ENOTFOUND);
    ck_assert_int_eq(TC__GET(st.connects), 1);
    tct_redis_kill(&own);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    ck_assert_msg(skip_ms() == 50, "not reset: %s", tc_errmsg(NULL));

    /* retry_max_ms <= retry_interval_ms: no growth. */
    tc__redis_opts flat = o;
    flat.retry_interval_ms = 60;
    flat.retry_max_ms = 0;
    tc__redis *f = tier_open(&flat, NULL);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(get_rc(f, "k"), TC_EREDIS);
        ck_assert_msg(skip_ms() == 60, "attempt %d: %s", i, tc_errmsg(NULL));
        sleep_ms(80);
    }
    tc__redis_free(f);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

/* The server comes back with a password the tier was not given: the reconnect works, the
 * command gets NOAUTH; that connection is dropped and later connects check first, so the tier
 * backs off instead of reconnecting on every call. */
START_TEST(test_noauth_after_restart)
{
    tct_redis own;
    ck_assert_msg(tct_redis_start(&own) == 0, "cannot start redis-server");
    tc__stats st = {0};
    tc__redis_opts o = opts_for(&own, "na:");
    o.retry_interval_ms = 300; /* long enough for the next call to come before it, even slow */
    o.retry_max_ms = 600;
    tc__redis *r = tier_open(&o, &st);
    ck_assert_int_eq(set_str(r, "k", "v", 1), TC_OK);
    ck_assert_int_eq(TC__GET(st.connects), 1);

    tct_redis_kill(&own);
    ck_assert_int_eq(tct_redis_write_conf(&own, "requirepass " PW), 0);
    ck_assert_int_eq(tct_redis_restart(&own), 0);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("NOAUTH", NULL);
    ck_assert_int_eq(TC__GET(st.connects), 2);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("NOAUTH", NULL);
    expect_msg("skipping Redis for 300 ms", NULL);
    ck_assert_int_eq(get_rc(r, "k"), TC_EREDIS);
    expect_msg("skipped until retry", NULL);
    ck_assert_int_eq(TC__GET(st.connects), 2);

    /* With the password it works. */
    tc__redis_opts ok = o;
    ok.password = PW;
    tc__redis *r2 = tier_open(&ok, NULL);
    ck_assert_int_eq(set_str(r2, "k", "v", 2), TC_OK);
    expect_value(r2, "k", "v", 1, 2);
    tc__redis_free(r2);

    /* The password goes away again: the tier without one recovers at its next try. */
    const char *unset[] = {"CONFIG", "SET", "requirepass", "", NULL};
    char *out = tct_redis_cmd_auth(&own, NULL, PW, unset);
    ck_assert_str_eq(out, "OK");
    free(out);
    sleep_ms(350);
    expect_value(r, "k", "v", 1, 2);
    ck_assert_int_eq(TC__GET(st.connects), 3);
    tc__redis_free(r);
    tct_redis_stop(&own);
}
END_TEST

/* ---- the miss lease ------------------------------------------------------------------------ */

START_TEST(test_lease)
{
    tc__redis_opts o = opts_for(&srv, "ns:");
    tc__redis *r = tier_open(&o, NULL);
    got g = {0};
    /* One holder at a time; another token waits; only the holder releases it. */
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenA", 6, 5000, collect, &g), TC__LEASE_TAKEN);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenB", 6, 5000, collect, &g), TC__LEASE_BUSY);
    ck_assert_int_eq(tc__redis_lease(r, "other", 5, "tokenB", 6, 5000, collect, &g),
                     TC__LEASE_TAKEN);
    ck_assert_int_eq(tc__redis_unlease(r, "k", 1, "tokenB", 6), TC_OK);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenB", 6, 5000, collect, &g), TC__LEASE_BUSY);
    ck_assert_int_eq(tc__redis_unlease(r, "k", 1, "tokenA", 6), TC_OK);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenB", 6, 5000, collect, &g), TC__LEASE_TAKEN);
    ck_assert_int_eq(g.calls, 0);
    /* The lease key is no data key: a SCAN-based pattern invalidation does not see it. */
    int64_t removed = -1;
    ck_assert_int_eq(tc__redis_invalidate_pattern(r, "*", 1, &removed), TC_OK);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenC", 6, 5000, collect, &g), TC__LEASE_BUSY);

    /* A live value comes back instead of a lease; a tombstone does not count as one. */
    ck_assert_int_eq(tc__redis_set(r, "k", 1, "v7", 2, 7, 60000), TC_OK);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenC", 6, 5000, collect, &g), TC_OK);
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.version, 7);
    ck_assert_int_eq(memcmp(g.data, "v7", 2), 0);
    ck_assert_int_eq(tc__redis_del(r, "k", 1), TC_OK);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenC", 6, 5000, collect, &g), TC__LEASE_BUSY);
    ck_assert_int_eq(tc__redis_unlease(r, "k", 1, "tokenB", 6), TC_OK);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenC", 6, 50, collect, &g), TC__LEASE_TAKEN);
    sleep_ms(120); /* an expired lease frees the key for the next reader */
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenD", 6, 5000, collect, &g), TC__LEASE_TAKEN);
    ck_assert_int_eq(tc__redis_lease(r, "k", 1, "tokenD", 6, 0, collect, &g), TC_EINVAL);

    /* A value expired by the caller's clock, though Redis still holds it, is no value: the
     * lease is taken (the caller would otherwise read the store without one). */
    unsigned char env[64];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    raw_set(&srv, "ns:old", env, envelope(env, 'V', 3, now_ms - 1, "x", 1));
    ck_assert_int_eq(tc__redis_lease(r, "old", 3, "tokenA", 6, 5000, collect, &g),
                     TC__LEASE_TAKEN);
    /* Nonsense under the key: too short to be ours, so no value (the lease); a header of ours
     * with a negative version, reported. */
    raw_set(&srv, "ns:bad", "T\x01V", 3);
    ck_assert_int_eq(tc__redis_lease(r, "bad", 3, "tokenA", 6, 5000, collect, &g),
                     TC__LEASE_TAKEN);
    raw_set(&srv, "ns:neg", env, envelope(env, 'V', -1, now_ms + 60000, "x", 1));
    ck_assert_int_eq(tc__redis_lease(r, "neg", 3, "tokenA", 6, 5000, collect, &g), TC_EPROTO);
    got_free(&g);
    tc__redis_free(r);
}
END_TEST

Suite *redis_suite(void)
{
    Suite *s = suite_create("redis");

    TCase *tc = tcase_create("redis");
    tcase_add_unchecked_fixture(tc, srv_up, srv_down);
    tcase_add_checked_fixture(tc, srv_flush, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_fn_result_passed_back);
    tcase_add_test(tc, test_namespace_and_layout);
    tcase_add_test(tc, test_lease);
    tcase_add_test(tc, test_tombstone);
    tcase_add_test(tc, test_ttl_expiry);
    tcase_add_test(tc, test_versions_never_go_back);
    tcase_add_test(tc, test_invalidate_pattern);
    tcase_add_test(tc, test_del_keeps_tombstone);
    tcase_add_test(tc, test_guard_script_sha_and_noscript);
    tcase_add_test(tc, test_resp_matches_hiredis);
    tcase_add_test(tc, test_garbage_values);
    tcase_add_test(tc, test_wrong_type);
    tcase_add_test(tc, test_oversized_value);
    tcase_add_test(tc, test_arguments);
    tcase_add_test(tc, test_reuse_one_thread);
    tcase_add_test(tc, test_reuse_threads);
    tcase_add_test(tc, test_client_kill);
    tcase_add_test(tc, test_no_sigpipe);
    tcase_add_test(tc, test_command_timeout);
    tcase_add_test(tc, test_unix_socket);
    tcase_add_test(tc, test_fork);
    tcase_add_test(tc, test_fork_while_threads_busy);
    tcase_add_test(tc, test_fork_while_lock_held);
    tcase_add_test(tc, test_tag_invalidate);
    tcase_add_test(tc, test_tag_ttl);
    tcase_add_test(tc, test_tag_large);
    tcase_add_test(tc, test_tag_pattern_ignores_sets);
    tcase_add_test(tc, test_tag_garbage);
    tcase_add_test(tc, test_tag_arguments);
    tcase_add_test(tc, test_select_database);
    tcase_add_test(tc, test_keepalive);
    suite_add_tcase(s, tc);

    TCase *au = tcase_create("auth");
    tcase_add_unchecked_fixture(au, auth_up, auth_down);
    tcase_add_checked_fixture(au, auth_flush, NULL);
    tcase_set_timeout(au, 60);
    tcase_add_test(au, test_auth_password);
    tcase_add_test(au, test_auth_wrong_password);
    tcase_add_test(au, test_auth_acl_user);
    tcase_add_test(au, test_auth_acl_wrong);
    tcase_add_test(au, test_auth_opts_copied);
    tcase_add_test(au, test_auth_public_api);
    suite_add_tcase(s, au);

    TCase *out = tcase_create("outage");
    tcase_set_timeout(out, 120);
    tcase_add_test(out, test_breaker);
    tcase_add_test(out, test_pending_invalidation);
    tcase_add_test(out, test_pending_overflow);
    tcase_add_test(out, test_pending_threads);
    tcase_add_test(out, test_tag_redis_down);
    tcase_add_test(out, test_backoff);
    tcase_add_test(out, test_noauth_after_restart);
    suite_add_tcase(s, out);
    return s;
}
