/*
 * record.h - what the caches (edge and Redis) hold for a key: a small header, then the value.
 * The store holds the value alone, so that a program reading the table in plain SQL sees the
 * bytes that were put.
 *
 * A plain record (tc_put, or a value read from the store) is one byte, then the value. An HTTP
 * record (tc_put_http) also carries what the response's caching headers said, so that every
 * process that finds it in Redis judges its freshness the same way: times are wall-clock unix
 * milliseconds, since records cross processes and hosts.
 *
 * Layout (integers big-endian):
 *   plain: 'P' | value
 *   http:  'H' | flags u8 | date i64 | fresh_until i64 | lifetime i64 | swr i64 | sie i64 |
 *          4 x (u32 length | bytes): ETag, Last-Modified, Cache-Control, tags | value
 * Pure functions; thread-safe.
 */
#ifndef TC_RECORD_H
#define TC_RECORD_H

#include "common/internal.h"

#define TC__REC_PLAIN 'P'
#define TC__REC_HTTP 'H'
/* Redis only: the store had no such key (negative_ttl_ms), one byte, version 0, so any real
 * version replaces it. Not a tc__rec: the reader checks the first byte before decoding. */
#define TC__REC_NEGATIVE 'N'

/* tc__rec.flags */
#define TC__REC_MUST_REVALIDATE 1u /* a stale copy is never served (swr and sie are 0 then) */
#define TC__REC_NO_CACHE 2u        /* every use revalidates against the store */
#define TC__REC_IMMUTABLE 4u

typedef struct tc__rec {
    unsigned kind; /* TC__REC_PLAIN or TC__REC_HTTP; the rest is for HTTP records */
    unsigned flags;
    int64_t date_ms;        /* when the response was generated: its age at t is t - date_ms */
    int64_t fresh_until_ms; /* stale from then on */
    int64_t lifetime_ms;    /* the freshness lifetime, kept for refreshes */
    int64_t swr_ms, sie_ms; /* after fresh_until: stale-while-revalidate, stale-if-error */
    const char *etag, *last_modified, *cache_control, *tags; /* not NUL-terminated */
    size_t etag_len, last_modified_len, cache_control_len, tags_len;
    const void *value;
    size_t value_len;
} tc__rec;

/* Bytes tc__rec_encode writes (saturates at SIZE_MAX). */
size_t tc__rec_size(const tc__rec *r);
/* Writes tc__rec_size(r) bytes to out. */
void tc__rec_encode(void *out, const tc__rec *r);
/* Reads a record; the pointers of *out point into data. TC_OK, or TC_EPROTO for bytes that are
 * not a record (truncated, unknown kind, lengths past the end). */
int tc__rec_decode(tc__rec *out, const void *data, size_t len);

/* Calls fn(ctx, tag, tag_len) for each tag of a space-separated list (empty items skipped);
 * stops at and returns the first non-zero result, else 0. */
int tc__rec_each_tag(const char *tags, size_t tags_len,
                     int (*fn)(void *ctx, const char *tag, size_t tag_len), void *ctx);

/* When a stale copy may still be used, at wall-clock now. */
#define TC__STALE_NO 0
#define TC__STALE_SWR 1 /* inside stale-while-revalidate: serve, refresh in the background */
#define TC__STALE_SIE 2 /* inside stale-if-error only: serve if the store fails */
/* 1 if the record is fresh at now (plain records always are: their TTL is the cache's), else 0
 * and *stale receives TC__STALE_*. */
int tc__rec_fresh(const tc__rec *r, int64_t now_ms, int *stale);

#endif
