/*
 * redis_tier.h - the shared tier. Values are stored with a small header (the store's version,
 * the absolute expiry) so a reader knows which version it got and how long it may keep it.
 * Connections are per thread, opened lazily, reopened after the server dropped them or after
 * fork(). A failed connect makes the tier skip Redis for retry_interval_ms.
 */
#ifndef TC_REDIS_TIER_H
#define TC_REDIS_TIER_H

#include "internal.h"

typedef struct tc__redis tc__redis;

typedef struct tc__redis_opts {
    const char *host;        /* used when unix_socket is NULL or "" */
    int port;
    const char *unix_socket; /* NULL or "" for TCP */
    const char *ns;          /* prefix of every key */
    int64_t connect_timeout_ms, command_timeout_ms, retry_interval_ms;
    size_t max_value_bytes;  /* a larger value in Redis is a protocol error */
    int64_t tombstone_ttl_ms; /* life of the tombstones invalidations leave; 0: 10 s */
} tc__redis_opts;

/* Copies opts; connects nothing yet. */
int tc__redis_new(tc__redis **out, const tc__redis_opts *opts, const void *owner,
                  tc__stats *stats);
void tc__redis_free(tc__redis *r);

/* TC_OK after fn(ctx, value, len, version, remaining_ttl_ms), TC_ENOTFOUND (absent or a
 * tombstone), TC_EREDIS (unreachable, or the tier is skipping Redis), TC_EPROTO (a reply or a
 * stored value that makes no sense), TC_ENOMEM, or fn's result. A connection the server closed
 * is reopened and the read retried once before TC_EREDIS. */
int tc__redis_get(tc__redis *r, const char *key, size_t key_len, tc__value_fn fn, void *ctx);

/* Writes the value with PX ttl_ms (> 0) unless Redis holds a newer version or tombstone of the
 * key (then TC_OK, nothing written): a Lua script compares versions atomically. On failure the
 * key is remembered and deleted from Redis as soon as it can be reached again, before this tier
 * serves any read. */
int tc__redis_set(tc__redis *r, const char *key, size_t key_len, const void *value, size_t len,
                  int64_t version, int64_t ttl_ms);
/* A tombstone of this version for ttl_ms, under the same version rule; on failure, remembered
 * as above. */
int tc__redis_tombstone(tc__redis *r, const char *key, size_t key_len, int64_t version,
                        int64_t ttl_ms);
/* Takes the key's value out of Redis, leaving a tombstone of the value's version (for
 * tombstone_ttl_ms) so that a late fill of an older version is still refused, while a fill of
 * the same version (the next read-through) is accepted; on failure, remembered as above. */
int tc__redis_del(tc__redis *r, const char *key, size_t key_len);

/* tc__redis_del for every key matching the path pattern (pattern.h), found with cursor SCAN
 * (never KEYS: it blocks the server); *out_removed receives how many values were taken out.
 * TC_EINVAL for a bad pattern, TC_EREDIS/TC_EPROTO when Redis fails (not remembered: the
 * caller reports it). */
int tc__redis_invalidate_pattern(tc__redis *r, const char *pat, size_t pat_len,
                                 int64_t *out_removed);

/* The server-side scripts and their SHA1s (a test checks each against SCRIPT LOAD). */
#define TC__SCRIPT_GUARD 0
#define TC__SCRIPT_SETTLE 1
int tc__redis_script(int which, const char **out_text, const char **out_sha);

#endif
