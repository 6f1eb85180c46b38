/*
 * check_http.c - values put with their HTTP caching headers (tc_put_http, tc_get_http):
 * freshness as a shared cache judges it, stale-while-revalidate refreshed once in the
 * background, stale-if-error when the store fails, tags (Surrogate-Key) across both caches.
 *
 * No test waits for a response to go stale: an Age header as large as max-age makes it stale
 * the moment it is put.
 */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cache.h"
#include "redis/redis_tier.h"
#include "core/refresh.h"
#include "tc_test.h"

#define K(s) (s), strlen(s)
#define N(a) (sizeof(a) / sizeof(a)[0])

static void put_http(tc_cache *c, const char *key, const char *value,
                     const char *const *headers, size_t n, unsigned want_stored)
{
    unsigned stored = 99;
    int rc = tc_put_http(&stored, c, K(key), value, strlen(value), headers, n);
    ck_assert_msg(rc == TC_OK, "put_http %s: %s (%s)", key, tc_strerror(rc), tc_errmsg(c));
    ck_assert_uint_eq(stored, want_stored);
}

typedef struct got {
    char value[64];
    unsigned state;
    int64_t age;
    char headers[512];
    unsigned source;
} got;

/* tc_get_http, then tc_get_ex for the tier: both must agree on the value. */
static int get_http(got *g, tc_cache *c, const char *key, unsigned flags)
{
    void *v = NULL;
    size_t len = 0;
    char *h = NULL;
    memset(g, 0, sizeof *g);
    int rc = tc_get_http(&v, &len, &g->state, &g->age, &h, c, K(key), flags);
    if (rc != TC_OK) {
        ck_assert_ptr_null(v);
        ck_assert_ptr_null(h);
        ck_assert_uint_eq(g->state, 0);
        return rc;
    }
    ck_assert_uint_lt(len, sizeof g->value);
    ck_assert_int_eq(((char *)v)[len], '\0');
    memcpy(g->value, v, len + 1);
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_lt(strlen(h), sizeof g->headers);
    strcpy(g->headers, h);
    tc_free(v);
    tc_free(h);
    return TC_OK;
}

static void expect_http(tc_cache *c, const char *key, unsigned flags, const char *value,
                        unsigned state)
{
    got g;
    int rc = get_http(&g, c, key, flags);
    ck_assert_msg(rc == TC_OK, "get_http %s: %s (%s)", key, tc_strerror(rc), tc_errmsg(c));
    ck_assert_str_eq(g.value, value);
    ck_assert_uint_eq(g.state, state);
}

static unsigned source_of(tc_cache *c, const char *key)
{
    void *v;
    size_t len;
    unsigned info = 0;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, NULL, c, K(key)), TC_OK);
    tc_free(v);
    return info & 0xff;
}

/* ---- freshness ------------------------------------------------------------------------------ */

START_TEST(test_fresh_with_headers)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    const char *h[] = {"Cache-Control: public, max-age=3600", "ETag: \"v1\"",
                       "last-modified: Wed, 21 Oct 2015 07:28:00 GMT", "X-Other: ignored",
                       "Age: 100"};
    put_http(c, "/a", "body-a", h, N(h), 1);
    got g;
    ck_assert_int_eq(get_http(&g, c, "/a", 0), TC_OK);
    ck_assert_str_eq(g.value, "body-a");
    ck_assert_uint_eq(g.state, TC_HTTP_FRESH);
    ck_assert_int_ge(g.age, 100);
    ck_assert_int_lt(g.age, 200);
    ck_assert_ptr_nonnull(strstr(g.headers, "Cache-Control: public, max-age=3600\r\n"));
    ck_assert_ptr_nonnull(strstr(g.headers, "ETag: \"v1\"\r\n"));
    ck_assert_ptr_nonnull(strstr(g.headers, "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n"));
    char age[32];
    snprintf(age, sizeof age, "Age: %lld\r\n", (long long)g.age);
    ck_assert_ptr_nonnull(strstr(g.headers, age));
    ck_assert_ptr_null(strstr(g.headers, "X-Other"));
    /* The plain API reads the body, from the edge. */
    ck_assert_uint_eq(source_of(c, "/a"), TC_SOURCE_EDGE);
    char buf[16];
    size_t len;
    ck_assert_int_eq(tc_get_into(&len, c, K("/a"), buf, sizeof buf), TC_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(memcmp(buf, "body-a", 6), 0);
    ck_assert_int_eq(tc_get_into(&len, c, K("/a"), buf, 3), TC_ERANGE);
    ck_assert_uint_eq(len, 6);

    /* A plain value through tc_get_http: fresh, age 0, no headers. */
    ck_assert_int_eq(tc_put(c, K("plain"), "p", 1, 0), TC_OK);
    ck_assert_int_eq(get_http(&g, c, "plain", 0), TC_OK);
    ck_assert_str_eq(g.value, "p");
    ck_assert_uint_eq(g.state, TC_HTTP_FRESH);
    ck_assert_int_eq(g.age, 0);
    ck_assert_str_eq(g.headers, "");
    tc_close(c);
}
END_TEST

START_TEST(test_not_storable_deletes)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    const char *ok[] = {"Cache-Control: max-age=60"};
    const char *no_store[] = {"Cache-Control: no-store"};
    const char *priv[] = {"Cache-Control: private, max-age=60"};
    put_http(c, "/x", "old", ok, 1, 1);
    put_http(c, "/x", "new", no_store, 1, 0);
    got g;
    ck_assert_int_eq(get_http(&g, c, "/x", 0), TC_ENOTFOUND);
    put_http(c, "/y", "old", ok, 1, 1);
    put_http(c, "/y", "new", priv, 1, 0);
    ck_assert_int_eq(get_http(&g, c, "/y", 0), TC_ENOTFOUND);
    tc_close(c);
}
END_TEST

START_TEST(test_smaxage_and_must_revalidate)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    /* s-maxage wins over max-age for a shared cache, and forbids serving stale. */
    const char *h[] = {"Cache-Control: max-age=3600, s-maxage=10, stale-while-revalidate=600",
                       "Age: 20", "ETag: \"e\""};
    put_http(c, "/s", "v", h, N(h), 1);
    expect_http(c, "/s", TC_HTTP_ONLY_IF_CACHED, "v", TC_HTTP_MUST_REVALIDATE);
    /* Without only-if-cached the call revalidates against the store: fresh, same headers. */
    got g;
    ck_assert_int_eq(get_http(&g, c, "/s", 0), TC_OK);
    ck_assert_uint_eq(g.state, TC_HTTP_FRESH);
    ck_assert_int_lt(g.age, 5);
    ck_assert_ptr_nonnull(strstr(g.headers, "ETag: \"e\""));
    expect_http(c, "/s", TC_HTTP_ONLY_IF_CACHED, "v", TC_HTTP_FRESH);
    ck_assert_int_eq(tct_stat(c, "store", "hits"), 1);

    const char *mr[] = {"Cache-Control: max-age=60, must-revalidate, stale-if-error=600",
                        "Age: 61"};
    put_http(c, "/m", "w", mr, N(mr), 1);
    expect_http(c, "/m", TC_HTTP_ONLY_IF_CACHED, "w", TC_HTTP_MUST_REVALIDATE);
    expect_http(c, "/m", 0, "w", TC_HTTP_FRESH);

    /* A malformed max-age is stale at once (RFC 9111 §4.2.1). */
    const char *bad[] = {"Cache-Control: max-age=ten"};
    put_http(c, "/b", "b", bad, 1, 1);
    expect_http(c, "/b", TC_HTTP_ONLY_IF_CACHED, "b", TC_HTTP_MUST_REVALIDATE);

    /* Expires in the past: stale; Expires "0": stale. */
    const char *exp0[] = {"Expires: 0"};
    put_http(c, "/e", "e", exp0, 1, 1);
    expect_http(c, "/e", TC_HTTP_ONLY_IF_CACHED, "e", TC_HTTP_MUST_REVALIDATE);
    /* No explicit freshness: default_ttl_ms. */
    put_http(c, "/d", "d", NULL, 0, 1);
    expect_http(c, "/d", TC_HTTP_ONLY_IF_CACHED, "d", TC_HTTP_FRESH);
    tc_close(c);
}
END_TEST

START_TEST(test_no_cache_revalidates_each_time)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    const char *h[] = {"Cache-Control: no-cache, max-age=3600", "ETag: \"n1\""};
    put_http(c, "/n", "v1", h, N(h), 1);
    for (int i = 0; i < 3; i++) {
        got g;
        ck_assert_int_eq(get_http(&g, c, "/n", 0), TC_OK);
        ck_assert_str_eq(g.value, "v1");
        ck_assert_uint_eq(g.state, TC_HTTP_FRESH);
        ck_assert_ptr_nonnull(strstr(g.headers, "ETag: \"n1\""));
    }
    ck_assert_int_eq(tct_stat(c, "store", "hits"), 3);
    /* A write made behind the caches' back is seen at once; the headers put with v1 do not
     * describe it: it comes back plain. */
    tc_cache *other = tct_open(tct_dir, "db", 0, "{\"edge\": {\"enabled\": false}}");
    ck_assert_int_eq(tc_put(other, K("/n"), "v2", 2, 0), TC_OK);
    got g;
    ck_assert_int_eq(get_http(&g, c, "/n", 0), TC_OK);
    ck_assert_str_eq(g.value, "v2");
    ck_assert_str_eq(g.headers, "");
    tc_close(other);
    tc_close(c);
}
END_TEST

START_TEST(test_bad_arguments)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    unsigned stored = 7;
    const char *no_colon[] = {"Cache-Control max-age=1"};
    ck_assert_int_eq(tc_put_http(&stored, c, K("/k"), "v", 1, no_colon, 1), TC_EINVAL);
    ck_assert_uint_eq(stored, 0);
    const char *null_line[] = {NULL};
    ck_assert_int_eq(tc_put_http(NULL, c, K("/k"), "v", 1, null_line, 1), TC_EINVAL);
    ck_assert_int_eq(tc_put_http(NULL, c, K("/k"), "v", 1, NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc_put_http(NULL, NULL, K("/k"), "v", 1, NULL, 0), TC_EINVAL);
    ck_assert_int_eq(tc_put_http(NULL, c, "", 0, "v", 1, NULL, 0), TC_EKEY);
    ck_assert_int_eq(tc_put_http(NULL, c, K("/k"), NULL, 1, NULL, 0), TC_EINVAL);
    char longtag[600];
    memcpy(longtag, "Surrogate-Key: a ", 17);
    memset(longtag + 17, 't', 520);
    longtag[537] = '\0';
    const char *lt[] = {longtag};
    ck_assert_int_eq(tc_put_http(NULL, c, K("/k"), "v", 1, lt, 1), TC_EINVAL);
    char *huge = malloc(70 * 1024);
    memcpy(huge, "ETag: ", 6);
    memset(huge + 6, 'e', 70 * 1024 - 7);
    huge[70 * 1024 - 1] = '\0';
    const char *hh[] = {huge};
    ck_assert_int_eq(tc_put_http(NULL, c, K("/k"), "v", 1, hh, 1), TC_EINVAL);
    free(huge);
    /* Nothing of the failed puts was stored. */
    got g;
    ck_assert_int_eq(get_http(&g, c, "/k", 0), TC_ENOTFOUND);

    void *v = (void *)1;
    size_t len = 9;
    ck_assert_int_eq(tc_get_http(&v, &len, NULL, NULL, NULL, c, K("/k"), 0x80), TC_EINVAL);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(tc_get_http(NULL, &len, NULL, NULL, NULL, c, K("/k"), 0), TC_EINVAL);
    ck_assert_int_eq(tc_get_http(&v, &len, NULL, NULL, NULL, NULL, K("/k"), 0), TC_EINVAL);
    ck_assert_int_eq(get_http(&g, c, "/k", TC_HTTP_ONLY_IF_CACHED), TC_ENOTFOUND);

    int64_t n = 5;
    ck_assert_int_eq(tc_invalidate_tag(&n, c, "a b", 3), TC_EINVAL);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tc_invalidate_tag(&n, c, "", 0), TC_EINVAL);
    ck_assert_int_eq(tc_invalidate_tag(&n, c, NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc_invalidate_tag(&n, c, "a\0b", 3), TC_EINVAL);
    ck_assert_int_eq(tc_invalidate_tag(&n, NULL, "a", 1), TC_EINVAL);
    ck_assert_int_eq(tc_invalidate_tag(NULL, c, "nothing", 7), TC_OK);
    tc_close(c);
}
END_TEST

/* ---- stale-while-revalidate ----------------------------------------------------------------- */

typedef struct swr_reader {
    tc_cache *c;
    int stale, fresh, bad;
} swr_reader;

static void *swr_read(void *arg)
{
    swr_reader *s = arg;
    for (int i = 0; i < 200; i++) {
        void *v;
        size_t len;
        unsigned state;
        if (tc_get_http(&v, &len, &state, NULL, NULL, s->c, K("/swr"), 0) != TC_OK) {
            s->bad++;
            continue;
        }
        s->bad += len != 2 || memcmp(v, "v1", 2) != 0;
        s->stale += state == TC_HTTP_STALE;
        s->fresh += state == TC_HTTP_FRESH;
        tc_free(v);
    }
    return NULL;
}

/* Stale inside stale-while-revalidate: every reader gets the stale copy at once, and the store
 * is asked once, in the background, however many readers saw it stale. */
static void swr_once(int redis_port)
{
    tc_cache *c = tct_open(tct_dir, "db", redis_port, NULL);
    const char *h[] = {"Cache-Control: max-age=60, stale-while-revalidate=600", "Age: 60"};
    put_http(c, "/swr", "v1", h, N(h), 1);
    long long store_hits = tct_stat(c, "store", "hits");
    swr_reader r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (swr_reader){.c = c};
        ck_assert_int_eq(pthread_create(&t[i], NULL, swr_read, &r[i]), 0);
    }
    int stale = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(r[i].bad, 0);
        stale += r[i].stale;
        ck_assert_int_eq(r[i].stale + r[i].fresh, 200);
    }
    ck_assert_int_ge(stale, 1);
    tc__refresher_drain(tc__cache_refresher(c));
    ck_assert_int_eq(tc__refresher_done(tc__cache_refresher(c)), 1);
    ck_assert_int_eq(tct_stat(c, "store", "hits") - store_hits, 1);
    /* Refreshed: fresh for its lifetime again, from the edge. */
    got g;
    ck_assert_int_eq(get_http(&g, c, "/swr", 0), TC_OK);
    ck_assert_uint_eq(g.state, TC_HTTP_FRESH);
    ck_assert_int_lt(g.age, 5);
    ck_assert_uint_eq(source_of(c, "/swr"), TC_SOURCE_EDGE);
    tc_close(c);
}

START_TEST(test_swr_refreshes_once)
{
    swr_once(0);
}
END_TEST

START_TEST(test_swr_refreshes_once_with_redis)
{
    swr_once(tct_srv.port);
}
END_TEST

/* Another process refreshed the copy in Redis: the refresh takes it and leaves the store. */
START_TEST(test_swr_takes_a_fresh_redis_copy)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_cache *b = tct_open(tct_dir, "db", tct_srv.port, NULL);
    const char *h[] = {"Cache-Control: max-age=60, stale-while-revalidate=600", "Age: 60"};
    put_http(a, "/r", "v1", h, N(h), 1);
    expect_http(b, "/r", 0, "v1", TC_HTTP_STALE); /* b's edge now holds the stale copy too */
    tc__refresher_drain(tc__cache_refresher(b));
    ck_assert_int_eq(tc__refresher_done(tc__cache_refresher(b)), 1); /* b refreshed Redis */
    expect_http(a, "/r", 0, "v1", TC_HTTP_STALE);                    /* a's edge: stale */
    tc__refresher_drain(tc__cache_refresher(a));
    ck_assert_int_eq(tc__refresher_done(tc__cache_refresher(a)), 0); /* found b's copy */
    ck_assert_int_eq(tct_stat(a, "store", "hits"), 0);
    expect_http(a, "/r", 0, "v1", TC_HTTP_FRESH);
    tc_close(a);
    tc_close(b);
}
END_TEST

/* ---- stale-if-error -------------------------------------------------------------------------- */

START_TEST(test_stale_if_error)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, "{\"store\": {\"busy_timeout_ms\": 10}}");
    const char *sie[] = {"Cache-Control: max-age=60, stale-if-error=600", "Age: 61"};
    const char *none[] = {"Cache-Control: max-age=60", "Age: 61"};
    put_http(c, "/sie", "v1", sie, N(sie), 1);
    put_http(c, "/none", "n1", none, N(none), 1);
    expect_http(c, "/sie", TC_HTTP_ONLY_IF_CACHED, "v1", TC_HTTP_STALE);
    /* The store fails: its table is gone (renamed by another program). */
    char path[512];
    snprintf(path, sizeof path, "%s/db.db", tct_dir);
    tct_sql(path, "ALTER TABLE tiercache RENAME TO tiercache_away");
    expect_http(c, "/sie", 0, "v1", TC_HTTP_STALE);
    got g;
    ck_assert_int_eq(get_http(&g, c, "/none", 0), TC_ESTORE); /* no window: the error */
    /* The store is back: the stale copy is revalidated. */
    tct_sql(path, "ALTER TABLE tiercache_away RENAME TO tiercache");
    expect_http(c, "/sie", 0, "v1", TC_HTTP_FRESH);
    expect_http(c, "/none", 0, "n1", TC_HTTP_FRESH);
    tc_close(c);
}
END_TEST

/* ---- tags ------------------------------------------------------------------------------------ */

START_TEST(test_tags_both_tiers)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    tc_cache *noedge = tct_open(tct_dir, "db", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    const char *ab[] = {"Cache-Control: max-age=3600", "Surrogate-Key: red  blue"};
    const char *b[] = {"Surrogate-Key: blue", "surrogate-key: green"};
    const char *none[] = {"Cache-Control: max-age=3600"};
    put_http(a, "/1", "one", ab, N(ab), 1);
    put_http(a, "/2", "two", b, N(b), 1);
    put_http(a, "/3", "three", none, N(none), 1);
    int64_t n = -1;
    ck_assert_int_eq(tc_invalidate_tag(&n, a, K("red")), TC_OK);
    ck_assert_int_eq(n, 2); /* /1 in the edge and in Redis */
    ck_assert_uint_eq(source_of(noedge, "/1"), TC_SOURCE_STORE);
    ck_assert_uint_eq(source_of(noedge, "/2"), TC_SOURCE_REDIS);
    ck_assert_uint_eq(source_of(a, "/2"), TC_SOURCE_EDGE);
    ck_assert_int_eq(tc_invalidate_tag(&n, a, K("green")), TC_OK); /* a joined Surrogate-Key */
    ck_assert_int_eq(n, 2);
    ck_assert_uint_eq(source_of(a, "/2"), TC_SOURCE_STORE);
    ck_assert_uint_eq(source_of(a, "/3"), TC_SOURCE_EDGE);
    ck_assert_int_eq(tc_invalidate_tag(&n, a, K("nothing")), TC_OK);
    ck_assert_int_eq(n, 0);
    /* Pattern invalidation takes HTTP entries as well. */
    ck_assert_int_eq(tc_invalidate_pattern(&n, a, K("/*")), TC_OK);
    ck_assert_int_ge(n, 3);
    ck_assert_uint_eq(source_of(a, "/3"), TC_SOURCE_STORE);
    tc_close(noedge);
    tc_close(a);
}
END_TEST

/* A record in Redis that makes no sense: the store answers, and the caller sees no error. */
START_TEST(test_damaged_record_in_redis)
{
    tc_cache *c = tct_open(tct_dir, "db", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    const char *h[] = {"Cache-Control: max-age=3600"};
    put_http(c, "/d", "body", h, N(h), 1);
    ck_assert_uint_eq(source_of(c, "/d"), TC_SOURCE_REDIS);
    /* The record's kind byte follows the tier's 19-byte header. */
    const char *bad_d[] = {"SETRANGE", "tc:/d", "19", "Z", NULL};
    free(tct_redis_cmd(&tct_srv, bad_d));
    expect_http(c, "/d", 0, "body", TC_HTTP_FRESH);
    ck_assert_uint_eq(source_of(c, "/d"), TC_SOURCE_REDIS); /* repaired by the refill */
    tc_close(c);
}
END_TEST

/* A CR or LF inside a value would come back as a header line of its own. */
START_TEST(test_control_characters_refused)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    const char *crlf[] = {"Cache-Control: max-age=60", "ETag: \"x\"\r\nSet-Cookie: s=evil"};
    const char *lf[] = {"Cache-Control: max-age=60\nX: y"};
    const char *del[] = {"ETag: a\x7f"};
    ck_assert_int_eq(tc_put_http(NULL, c, K("/i"), "v", 1, crlf, N(crlf)), TC_EINVAL);
    ck_assert_int_eq(tc_put_http(NULL, c, K("/i"), "v", 1, lf, N(lf)), TC_EINVAL);
    ck_assert_int_eq(tc_put_http(NULL, c, K("/i"), "v", 1, del, N(del)), TC_EINVAL);
    /* A trailing CRLF and a tab are fine; the last ETag wins. */
    const char *ok[] = {"Cache-Control:\tmax-age=60\r\n", "ETag: \"a\"", "ETag: \"b\""};
    put_http(c, "/i", "v", ok, N(ok), 1);
    got g;
    ck_assert_int_eq(get_http(&g, c, "/i", 0), TC_OK);
    ck_assert_ptr_nonnull(strstr(g.headers, "Cache-Control: max-age=60\r\nETag: \"b\"\r\n"));
    tc_close(c);
}
END_TEST

/* A child of fork() closes the handle its parent used for refreshes: no thread to join. */
START_TEST(test_close_in_child)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    const char *h[] = {"Cache-Control: max-age=60, stale-while-revalidate=600", "Age: 60"};
    put_http(c, "/swr", "v1", h, N(h), 1);
    expect_http(c, "/swr", 0, "v1", TC_HTTP_STALE); /* starts the refresher thread */
    tc__refresher_drain(tc__cache_refresher(c));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* Check handles SIGALRM: it would kill the test */
        alarm(20);                /* a hang fails the test */
        tc_close(c);
        _exit(0);
    }
    int status = -1;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
    tc_close(c);
}
END_TEST

/* fork() while the refresher thread runs a refresh (its store read held in the hook): the child
 * starts with an empty queue and no thread, so a stale hit of the same key there queues a
 * refresh and runs it on a thread of the child's own at once; nothing leaks. Under TSan the
 * child cannot start a thread: it only closes the handle. */
START_TEST(test_fork_during_refresh)
{
    tc_cache *c = tct_open(tct_dir, "db", 0, NULL);
    const char *h[] = {"Cache-Control: max-age=60, stale-while-revalidate=600", "Age: 60"};
    put_http(c, "/swr", "v1", h, N(h), 1);
    tct_hold_begin();
    tct_hold_threads_started(); /* the refresher is released before the teardown goes on */
    expect_http(c, "/swr", 0, "v1", TC_HTTP_STALE); /* queues the refresh; its read is held */
    tct_wait_held(1);
    tc__refresher *rf = tc__cache_refresher(c);
    ck_assert_int_eq(tc__refresher_done(rf), 0);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tct_child_alarm(20); /* a refresh stuck behind the parent's would hang the drain */
        unsigned stored = 0, state = 0;
        int bad = tc_put_http(&stored, c, K("/swr"), "v2", 2, h, N(h)) != TC_OK || stored != 1;
        if (!TCT_TSAN) {
            void *v = NULL;
            size_t len = 0;
            bad |= tc_get_http(&v, &len, &state, NULL, NULL, c, K("/swr"), 0) != TC_OK ||
                   state != TC_HTTP_STALE;
            tc_free(v);
            tc__refresher_drain(rf);
            bad |= tc__refresher_done(rf) != 1;
        }
        tc_close(c);
        _exit(bad);
    }
    int status = tct_child_status(pid);
    ck_assert_msg(status == 0, "child: status %d", status);
    tct_hold_release();
    tc__refresher_drain(rf);
    ck_assert_int_eq(tc__refresher_done(rf), 1);
    tc_close(c);
}
END_TEST

/* A refresh of an old record must not put the old headers over a newer value. */
START_TEST(test_refresh_keeps_newer_headers)
{
    /* Without the bus, a does not hear b's write: its edge keeps the old stale record. */
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, "{\"redis\": {\"bus\": false}}");
    tc_cache *b = tct_open(tct_dir, "db", tct_srv.port, "{\"edge\": {\"enabled\": false}}");
    const char *old[] = {"Cache-Control: max-age=60, stale-while-revalidate=600", "Age: 60",
                         "Surrogate-Key: oldtag"};
    put_http(a, "/r", "v1", old, N(old), 1);
    const char *nw[] = {"Cache-Control: no-cache", "Surrogate-Key: newtag", "ETag: \"v2\""};
    put_http(b, "/r", "v2", nw, N(nw), 1);
    expect_http(a, "/r", 0, "v1", TC_HTTP_STALE); /* a's edge: the old one, stale */
    tc__refresher_drain(tc__cache_refresher(a));
    got g;
    ck_assert_int_eq(get_http(&g, b, "/r", 0), TC_OK);
    ck_assert_str_eq(g.value, "v2");
    ck_assert_ptr_nonnull(strstr(g.headers, "Cache-Control: no-cache"));
    ck_assert_int_eq(get_http(&g, a, "/r", 0), TC_OK); /* a took v2's record from Redis */
    ck_assert_str_eq(g.value, "v2");
    ck_assert_ptr_nonnull(strstr(g.headers, "ETag: \"v2\""));
    int64_t n = 0;
    ck_assert_int_eq(tc_invalidate_tag(&n, a, K("newtag")), TC_OK);
    ck_assert_int_ge(n, 1);
    ck_assert_uint_ne(source_of(a, "/r"), TC_SOURCE_EDGE);
    tc_close(a);
    tc_close(b);
}
END_TEST

/* Redis lost the newer copy and got a late fill of an older one: the edge's newer (stale)
 * record must win over it (invariant 2). */
START_TEST(test_older_redis_copy_not_served)
{
    tc_cache *a = tct_open(tct_dir, "db", tct_srv.port, NULL);
    const char *h1[] = {"Cache-Control: max-age=3600"};
    const char *h2[] = {"Cache-Control: max-age=60, must-revalidate", "Age: 61"};
    put_http(a, "/o", "v1", h1, N(h1), 1);
    int64_t v1 = 0;
    void *v;
    size_t len;
    unsigned info;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, &v1, a, K("/o")), TC_OK);
    tc_free(v);
    put_http(a, "/o", "v2", h2, N(h2), 1);
    const char *flush[] = {"FLUSHALL", NULL};
    free(tct_redis_cmd(&tct_srv, flush));
    ck_assert_int_eq(tc__redis_set(tc__cache_redis(a), K("/o"), "Pv1", 3, v1, 60000), TC_OK);
    expect_http(a, "/o", 0, "v2", TC_HTTP_FRESH);
    tc_close(a);
}
END_TEST

/* store.type "none": the caches alone, for a source of truth the library does not write (an
 * HTTP origin). Puts reach the edge and nothing else, a miss is TC_ENOTFOUND, no file is
 * written, and the split stale states tell stale-if-error from stale-while-revalidate. */
START_TEST(test_caches_only)
{
    char cwd_db[PATH_MAX];
    snprintf(cwd_db, sizeof cwd_db, "%s/none.db", tct_dir);
    tc_cache *c = tct_open(tct_dir, "none", 0, "{\"store\": {\"type\": \"none\"}}");
    ck_assert_int_eq(access(cwd_db, F_OK), -1); /* no database file */
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("/x")), TC_ENOTFOUND);
    ck_assert_int_eq(tc_put(c, K("/x"), "one", 3, 0), TC_OK);
    ck_assert_int_eq(tc_get(&v, &len, c, K("/x")), TC_OK);
    ck_assert_uint_eq(len, 3);
    tc_free(v);
    ck_assert_int_eq(tc_put(c, K("/x"), "two", 3, 0), TC_OK); /* a newer version wins */
    ck_assert_int_eq(tc_get(&v, &len, c, K("/x")), TC_OK);
    ck_assert_int_eq(memcmp(v, "two", 3), 0);
    tc_free(v);
    ck_assert_int_eq(tc_del(c, K("/x")), TC_OK);
    ck_assert_int_eq(tc_get(&v, &len, c, K("/x")), TC_ENOTFOUND);

    const char *swr[] = {"Cache-Control: max-age=0, stale-while-revalidate=60"};
    const char *sie[] = {"Cache-Control: max-age=0, stale-if-error=60"};
    put_http(c, "/swr", "s", swr, N(swr), 1);
    put_http(c, "/sie", "e", sie, N(sie), 1);
    got g;
    unsigned only = TC_HTTP_ONLY_IF_CACHED, split = only | TC_HTTP_SPLIT_STALE;
    ck_assert_int_eq(get_http(&g, c, "/swr", split), TC_OK);
    ck_assert_uint_eq(g.state, TC_HTTP_STALE);
    ck_assert_int_eq(get_http(&g, c, "/sie", split), TC_OK);
    ck_assert_uint_eq(g.state, TC_HTTP_STALE_IF_ERROR);
    ck_assert_int_eq(get_http(&g, c, "/sie", only), TC_OK); /* unsplit: as before */
    ck_assert_uint_eq(g.state, TC_HTTP_STALE);
    ck_assert_int_eq(get_http(&g, c, "/gone", split), TC_ENOTFOUND);
    ck_assert_int_eq(get_http(&g, c, "/sie", 8u), TC_EINVAL);
    tc_close(c);

    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.type", "nowhere"), TC_ECONFIG);
    ck_assert_ptr_nonnull(strstr(tc_config_errmsg(cfg), "none"));
    tc_config_free(cfg);
}
END_TEST

Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *local = tcase_create("local");
    tcase_set_timeout(local, 30);
    tcase_add_checked_fixture(local, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(local, test_fresh_with_headers);
    tcase_add_test(local, test_not_storable_deletes);
    tcase_add_test(local, test_smaxage_and_must_revalidate);
    tcase_add_test(local, test_no_cache_revalidates_each_time);
    tcase_add_test(local, test_bad_arguments);
    tcase_add_test(local, test_swr_refreshes_once);
    tcase_add_test(local, test_stale_if_error);
    tcase_add_test(local, test_control_characters_refused);
    tcase_add_test(local, test_close_in_child);
    tcase_add_test(local, test_fork_during_refresh);
    tcase_add_test(local, test_caches_only);
    suite_add_tcase(s, local);

    TCase *tiers = tcase_create("tiers");
    tcase_set_timeout(tiers, 30);
    tcase_add_unchecked_fixture(tiers, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(tiers, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(tiers, test_swr_refreshes_once_with_redis);
    tcase_add_test(tiers, test_swr_takes_a_fresh_redis_copy);
    tcase_add_test(tiers, test_tags_both_tiers);
    tcase_add_test(tiers, test_damaged_record_in_redis);
    tcase_add_test(tiers, test_refresh_keeps_newer_headers);
    tcase_add_test(tiers, test_older_redis_copy_not_served);
    suite_add_tcase(s, tiers);
    return s;
}
