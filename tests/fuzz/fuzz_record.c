/*
 * fuzz_record.c - libFuzzer target for lib/common/record.c.
 *
 * The input is read three ways:
 *  - whole, as an encoded record (what Redis or the edge hands back): 'P' | value, or
 *    'H' | flags | 5 x i64 | 4 x (u32 length | bytes) | value, integers big-endian;
 *  - whole, as a record's tags list (space- or tab-separated);
 *  - as the fields of a record to encode: the first 40 bytes (cycled) give the times, the
 *    input split at '\n' gives ETag, Last-Modified, Cache-Control, tags and value.
 * So corpus files are binary records, as tc_put / tc_put_http store them.
 *
 * Besides the sanitizers, it checks invariants and abort()s when one breaks, so the replay
 * driver (tests/fuzz/replay.c) fails too without any sanitizer:
 *  - tc__rec_decode returns TC_OK or TC_EPROTO, TC_OK exactly for a 'P' record or an 'H'
 *    record with non-negative lifetime, swr and sie whose four lengths fit; the fields of a
 *    decoded record lie inside the input, laid out in order;
 *  - a decoded record re-encodes (tc__rec_size, tc__rec_encode) to exactly the input bytes,
 *    and that decodes to the same fields; an encoded record decodes to what was encoded;
 *    tc__rec_size saturates at SIZE_MAX;
 *  - tc__rec_fresh, at now 0, INT64_MIN, INT64_MAX, an ordinary time and around the record's
 *    own times, gives what record.h says (no signed overflow: UBSan);
 *  - tc__rec_each_tag visits, in order, exactly the maximal runs of bytes other than space and
 *    tab, each non-empty and inside the list, and stops at the first non-zero result.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ilib \
 *            tests/fuzz/fuzz_record.c lib/common/record.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* 2023-11-14T22:13:20Z */
#define NOW_MS INT64_C(1700000000000)

/* 'H', flags, five i64. */
#define HTTP_FIXED 42

static void *xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    CHECK(p != NULL);
    return p;
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return u;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Whether the bytes are a record, as record.h describes one. */
static int ref_valid(const unsigned char *d, size_t len)
{
    if (len < 1)
        return 0;
    if (d[0] == TC__REC_PLAIN)
        return 1;
    if (d[0] != TC__REC_HTTP || len < HTTP_FIXED)
        return 0;
    /* lifetime, swr, sie (at 18, 26, 34) are never negative. */
    if ((d[18] | d[26] | d[34]) & 0x80)
        return 0;
    size_t off = HTTP_FIXED;
    for (int i = 0; i < 4; i++) {
        if (len - off < 4)
            return 0;
        uint32_t n = be32(d + off);
        off += 4;
        if (len - off < n)
            return 0;
        off += n;
    }
    return 1;
}

static int same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Same fields; the strings compared by content. */
static void check_same(const tc__rec *a, const tc__rec *b)
{
    CHECK(a->kind == b->kind);
    CHECK(same_bytes(a->value, a->value_len, b->value, b->value_len));
    if (a->kind != TC__REC_HTTP)
        return;
    CHECK(a->flags == b->flags);
    CHECK(a->date_ms == b->date_ms && a->fresh_until_ms == b->fresh_until_ms);
    CHECK(a->lifetime_ms == b->lifetime_ms && a->swr_ms == b->swr_ms && a->sie_ms == b->sie_ms);
    CHECK(same_bytes(a->etag, a->etag_len, b->etag, b->etag_len));
    CHECK(same_bytes(a->last_modified, a->last_modified_len, b->last_modified,
                     b->last_modified_len));
    CHECK(same_bytes(a->cache_control, a->cache_control_len, b->cache_control,
                     b->cache_control_len));
    CHECK(same_bytes(a->tags, a->tags_len, b->tags, b->tags_len));
}

/* ---- tags ---- */

typedef struct tag_walk {
    const char *base;
    size_t len;
    size_t next; /* where the previous tag ended */
    size_t count;
    size_t stop_at; /* return non-zero at this tag (1-based), 0 never */
} tag_walk;

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static int on_tag(void *ctx, const char *tag, size_t tag_len)
{
    tag_walk *w = ctx;
    CHECK(tag != NULL && tag_len > 0);
    CHECK(tag >= w->base && tag_len <= w->len && (size_t)(tag - w->base) <= w->len - tag_len);
    size_t start = (size_t)(tag - w->base), end = start + tag_len;
    CHECK(start >= w->next);
    /* Only separators were skipped, and the tag is a maximal run of other bytes. */
    for (size_t i = w->next; i < start; i++)
        CHECK(is_ws(w->base[i]));
    for (size_t i = start; i < end; i++)
        CHECK(!is_ws(w->base[i]));
    CHECK(start == 0 || is_ws(w->base[start - 1]));
    CHECK(end == w->len || is_ws(w->base[end]));
    w->next = end;
    w->count++;
    return w->count == w->stop_at ? 7 : 0;
}

static void check_tags(const char *tags, size_t tags_len)
{
    size_t want = 0;
    for (size_t i = 0; i < tags_len; i++)
        want += !is_ws(tags[i]) && (i == 0 || is_ws(tags[i - 1]));

    tag_walk w = {tags, tags_len, 0, 0, 0};
    CHECK(tc__rec_each_tag(tags, tags_len, on_tag, &w) == 0);
    CHECK(w.count == want);
    for (size_t i = w.next; i < tags_len; i++)
        CHECK(is_ws(tags[i]));

    /* Stops at the second tag and hands its result back. */
    tag_walk stop = {tags, tags_len, 0, 0, 2};
    int rc = tc__rec_each_tag(tags, tags_len, on_tag, &stop);
    CHECK(rc == (want >= 2 ? 7 : 0));
    CHECK(stop.count == (want >= 2 ? 2 : want));
}

/* ---- freshness ---- */

static void check_fresh_at(const tc__rec *r, int64_t now)
{
    int stale = -1;
    int fresh = tc__rec_fresh(r, now, &stale);
    CHECK(fresh == 0 || fresh == 1);
    CHECK(stale == TC__STALE_NO || stale == TC__STALE_SWR || stale == TC__STALE_SIE);
    if (r->kind != TC__REC_HTTP) {
        CHECK(fresh == 1 && stale == TC__STALE_NO);
        return;
    }
    int want_fresh = 0, want_stale = TC__STALE_NO;
    if (!(r->flags & TC__REC_NO_CACHE) && now < r->fresh_until_ms) {
        want_fresh = 1;
    } else if (!(r->flags & (TC__REC_MUST_REVALIDATE | TC__REC_NO_CACHE))) {
        /* now >= fresh_until here, so the difference is exact as an unsigned number. */
        uint64_t late = (uint64_t)now - (uint64_t)r->fresh_until_ms;
        if (late < (uint64_t)r->swr_ms)
            want_stale = TC__STALE_SWR;
        else if (late < (uint64_t)r->sie_ms)
            want_stale = TC__STALE_SIE;
    }
    CHECK(fresh == want_fresh && stale == want_stale);
}

static void check_fresh(const tc__rec *r)
{
    static const int64_t fixed[] = {0, INT64_MIN, INT64_MAX, NOW_MS, -1, 1};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_fresh_at(r, fixed[i]);
    if (r->kind != TC__REC_HTTP)
        return;
    int64_t fu = r->fresh_until_ms;
    check_fresh_at(r, fu);
    check_fresh_at(r, r->date_ms);
    if (fu > INT64_MIN)
        check_fresh_at(r, fu - 1);
    if (fu < INT64_MAX)
        check_fresh_at(r, fu + 1);
    const int64_t windows[] = {r->swr_ms, r->sie_ms};
    for (int i = 0; i < 2; i++) {
        /* windows are >= 0 in a decoded record */
        if (fu <= INT64_MAX - windows[i]) {
            check_fresh_at(r, fu + windows[i]);
            if (fu + windows[i] > INT64_MIN)
                check_fresh_at(r, fu + windows[i] - 1);
        }
    }
}

/* ---- encode / decode ---- */

/* Encodes r, checks the size, decodes it back; returns decode's result. */
static int roundtrip(const tc__rec *r)
{
    size_t n = tc__rec_size(r);
    unsigned char *buf = xmalloc(n);
    tc__rec_encode(buf, r);
    tc__rec back;
    int rc = tc__rec_decode(&back, buf, n);
    CHECK(rc == TC_OK || rc == TC_EPROTO);
    CHECK((rc == TC_OK) == ref_valid(buf, n));
    if (rc == TC_OK) {
        check_same(r, &back);
        CHECK(tc__rec_size(&back) == n);
    }
    free(buf);
    return rc;
}

static void check_decoded(const tc__rec *r, const unsigned char *d, size_t len)
{
    const char *base = (const char *)d, *end = base + len;
    CHECK(r->kind == TC__REC_PLAIN || r->kind == TC__REC_HTTP);
    if (r->kind == TC__REC_PLAIN) {
        CHECK((const char *)r->value == base + 1 && r->value_len == len - 1);
    } else {
        CHECK(r->flags == d[1] && r->lifetime_ms >= 0 && r->swr_ms >= 0 && r->sie_ms >= 0);
        CHECK(r->etag == base + HTTP_FIXED + 4);
        CHECK(r->last_modified == r->etag + r->etag_len + 4);
        CHECK(r->cache_control == r->last_modified + r->last_modified_len + 4);
        CHECK(r->tags == r->cache_control + r->cache_control_len + 4);
        CHECK((const char *)r->value == r->tags + r->tags_len);
        CHECK(r->value_len == (size_t)(end - (const char *)r->value));
    }

    /* Re-encoding gives back the input, byte for byte. */
    size_t n = tc__rec_size(r);
    CHECK(n == len);
    unsigned char *buf = xmalloc(n);
    tc__rec_encode(buf, r);
    CHECK(memcmp(buf, d, len) == 0);
    free(buf);
    CHECK(roundtrip(r) == TC_OK);
}

/* A record made of the input's pieces, encoded then decoded. */
static void check_encode(const unsigned char *d, size_t len)
{
    unsigned char ib[40];
    for (size_t i = 0; i < sizeof ib; i++)
        ib[i] = len > 0 ? d[(len - 1 - i % len)] : 0;
    if (len > 0 && (d[0] & 1)) {
        /* Mostly valid times: lifetime, swr, sie non-negative. */
        ib[16] &= 0x7f;
        ib[24] &= 0x7f;
        ib[32] &= 0x7f;
    }
    tc__rec r;
    memset(&r, 0, sizeof r);
    r.kind = TC__REC_HTTP;
    r.flags = len > 0 ? d[len / 2] : 0;
    r.date_ms = (int64_t)be64(ib);
    r.fresh_until_ms = (int64_t)be64(ib + 8);
    r.lifetime_ms = (int64_t)be64(ib + 16);
    r.swr_ms = (int64_t)be64(ib + 24);
    r.sie_ms = (int64_t)be64(ib + 32);

    const char *s = (const char *)d;
    const char **field[4] = {&r.etag, &r.last_modified, &r.cache_control, &r.tags};
    size_t *flen[4] = {&r.etag_len, &r.last_modified_len, &r.cache_control_len, &r.tags_len};
    size_t pos = 0;
    int i = 0;
    for (; i < 4 && len > 0; i++) {
        const char *nl = memchr(s + pos, '\n', len - pos);
        if (nl == NULL)
            break;
        *field[i] = s + pos;
        *flen[i] = (size_t)(nl - (s + pos));
        pos = (size_t)(nl - s) + 1;
    }
    /* Fields left out stay NULL with length 0, as tc_put_http leaves absent headers. */
    r.value = len > pos ? s + pos : NULL;
    r.value_len = len - pos;

    int rc = roundtrip(&r);
    int negative = r.lifetime_ms < 0 || r.swr_ms < 0 || r.sie_ms < 0;
    CHECK(rc == (negative ? TC_EPROTO : TC_OK));
    if (rc == TC_OK)
        check_fresh(&r);
    check_tags(r.tags, r.tags_len);

    /* The same value, plain. */
    tc__rec p;
    memset(&p, 0, sizeof p);
    p.kind = TC__REC_PLAIN;
    p.value = s;
    p.value_len = len;
    CHECK(tc__rec_size(&p) == len + 1);
    CHECK(roundtrip(&p) == TC_OK);
    check_fresh(&p);
}

static void check_size_saturates(void)
{
    tc__rec r;
    memset(&r, 0, sizeof r);
    r.kind = TC__REC_PLAIN;
    r.value_len = SIZE_MAX;
    CHECK(tc__rec_size(&r) == SIZE_MAX);
    r.kind = TC__REC_HTTP;
    r.value_len = 1;
    r.etag_len = SIZE_MAX - 20;
    CHECK(tc__rec_size(&r) == SIZE_MAX);
    r.etag_len = 0;
    r.tags_len = SIZE_MAX / 2;
    r.cache_control_len = SIZE_MAX / 2;
    CHECK(tc__rec_size(&r) == SIZE_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A zero-size input may come with a NULL pointer; record.c's callers always pass bytes. */
    static const uint8_t empty[1] = {0};
    if (data == NULL)
        data = empty;

    tc__rec r;
    int rc = tc__rec_decode(&r, data, size);
    CHECK(rc == TC_OK || rc == TC_EPROTO);
    CHECK((rc == TC_OK) == ref_valid(data, size));
    if (rc == TC_OK) {
        check_decoded(&r, data, size);
        check_fresh(&r);
        if (r.kind == TC__REC_HTTP)
            check_tags(r.tags, r.tags_len);
    }
    check_tags((const char *)data, size);
    check_encode(data, size);
    check_size_saturates();
    return 0;
}
