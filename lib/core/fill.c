/*
 * fill.c - the caches filled: on the way back up a read (edge first, then Redis), after a
 * commit (Redis first, with the bus message in the same script, then the edge), and the
 * remembered absences. Every copy carries the store's version, so fills that race land in any
 * order.
 */
#include "core/handle.h"

#include <stdlib.h>
#include <string.h>

/* ---- records in the caches ------------------------------------------------------------- */

/* The caches hold records (record.h): the value behind a one-byte header, or an HTTP
 * response's caching headers too. Encodes r into a new buffer. */
int tc__rec_alloc(tc_cache *c, const tc__rec *r, void **out, size_t *out_len)
{
    size_t n = tc__rec_size(r);
    void *p = n == SIZE_MAX ? NULL : malloc(n);
    if (p == NULL)
        return tc__err(c, TC_ENOMEM, "out of memory for a %zu-byte cache record", n);
    tc__rec_encode(p, r);
    *out = p;
    *out_len = n;
    return TC_OK;
}

void tc__fill_edge(tc_cache *c, const char *key, size_t key_len, const void *data,
                   size_t len, unsigned flags, int64_t version, int64_t ttl_ms,
                   uint64_t epoch)
{
    if (!tc__edge_usable(c) || (epoch != TC__EPOCH_WRITE && atomic_load(&c->edge_epoch) != epoch))
        return;
    int rc = tc__edge_set_flags(c->edge, key, key_len, data, len, version,
                                tc__min64(ttl_ms, c->cfg->edge_max_ttl_ms), flags);
    /* An eviction bumps the epoch before it walks the shards: one that missed this copy
     * shows here, and the copy goes. */
    if (rc > 0 && epoch != TC__EPOCH_WRITE && atomic_load(&c->edge_epoch) != epoch) {
        tc__edge_remove(c->edge, key, key_len);
        return;
    }
    if (rc < 0) {
        TC__INC(c->stats.edge.errors);
        tc__edge_remove(c->edge, key, key_len);
    } else if (rc > 0) {
        TC__INC(c->stats.edge.sets);
    }
}

/* A record from Redis into the edge: a plain value bare, an HTTP record whole. */
void tc__fill_edge_rec(tc_cache *c, const char *key, size_t key_len, const void *rec,
                       size_t rec_len, int64_t version, int64_t ttl_ms, uint64_t epoch)
{
    const unsigned char *p = rec;
    if (rec_len >= 1 && p[0] == TC__REC_PLAIN)
        tc__fill_edge(c, key, key_len, p + 1, rec_len - 1, 0, version, ttl_ms, epoch);
    else
        tc__fill_edge(c, key, key_len, rec, rec_len, TC__EDGE_HTTP, version, ttl_ms, epoch);
}

/* A negative entry (negative_ttl_ms) in the edge, for ttl_ms. */
void tc__fill_edge_negative(tc_cache *c, const char *key, size_t key_len, int64_t ttl_ms,
                            uint64_t epoch)
{
    if (ttl_ms > 0)
        tc__fill_edge(c, key, key_len, "", 0, TC__EDGE_NEGATIVE, 0, ttl_ms, epoch);
}

typedef struct tag_args {
    const char *tags[64];
    size_t lens[64];
    size_t n;
} tag_args;

static int collect_tag(void *ctx, const char *tag, size_t tag_len)
{
    tag_args *a = ctx;
    if (a->n == sizeof a->tags / sizeof a->tags[0])
        return 1;
    a->tags[a->n] = tag;
    a->lens[a->n++] = tag_len;
    return 0;
}

/* *announced (when not NULL) tells whether the write's bus message went with the Redis write
 * (one round trip: the guard script publishes it after the write). */
static void fill_redis(tc_cache *c, const char *key, size_t key_len, const void *rec,
                       size_t rec_len, const tc__rec *r, int64_t version, int64_t ttl_ms,
                       int *announced)
{
    if (c->redis == NULL)
        return;
    int rc;
    if (announced != NULL && c->publish && !tc__bus_journal_pending(c)) {
        unsigned char msg[TC__BUS_HEADER + TC_KEY_MAX];
        size_t n = tc__bus_own_msg(c, msg, TC__BUS_CHANGED, version, key, key_len);
        rc = tc__redis_set_publish(c->redis, key, key_len, rec, rec_len, version, ttl_ms,
                                   c->bus_channel, c->bus_channel_len, msg, n);
        *announced = rc == TC_OK;
    } else {
        rc = tc__redis_set(c->redis, key, key_len, rec, rec_len, version, ttl_ms);
    }
    if (rc != TC_OK) {
        TC__INC(c->stats.redis.errors);
        return;
    }
    TC__INC(c->stats.redis.sets);
    if (r != NULL && r->tags_len > 0) {
        /* Batches of 64 tags: tc_put_http bounds their number, not their count per call. */
        size_t off = 0;
        while (off < r->tags_len) {
            tag_args a = {.n = 0};
            int full = tc__rec_each_tag(r->tags + off, r->tags_len - off, collect_tag, &a);
            if (a.n > 0 &&
                tc__redis_tag(c->redis, key, key_len, a.tags, a.lens, a.n, ttl_ms) != TC_OK) {
                /* A tagged value whose tag set does not list it would survive the tag's
                 * invalidation: take it out instead (journalled if Redis is gone). */
                TC__INC(c->stats.redis.errors);
                tc__redis_del(c->redis, key, key_len);
                return;
            }
            if (!full)
                break;
            off = (size_t)(a.tags[a.n - 1] + a.lens[a.n - 1] - r->tags);
        }
    }
}

/* After a commit, or a read from the store: the caches get the record of version. */
/* ttl_ms less up to ttl_jitter_pct percent, at random: entries filled together (a deploy, a
 * warm-up) then do not all expire in the same instant and reload together. Never longer, so
 * an edge copy still never outlives its Redis copy. */
static int64_t jitter(const tc_cache *c, int64_t ttl_ms)
{
    static _Thread_local uint64_t state;
    int64_t pct = c->cfg->ttl_jitter_pct;
    if (pct <= 0 || ttl_ms < 2)
        return ttl_ms;
    if (state == 0)
        state = ((uint64_t)(uintptr_t)&state ^ (uint64_t)tc__wall_ms()) | 1;
    state ^= state << 13; /* xorshift64: a spread, not a secret */
    state ^= state >> 7;
    state ^= state << 17;
    int64_t span = ttl_ms / 100 * pct + ttl_ms % 100 * pct / 100;
    int64_t cut = span > 0 ? (int64_t)(state % (uint64_t)(span + 1)) : 0;
    return ttl_ms - cut > 0 ? ttl_ms - cut : 1;
}

/* announced: NULL for a read's fill; for a write, receives whether its bus message went out
 * with the Redis write (else the caller publishes it). A write fills Redis, then the edge; a
 * read fills the edge, then calls between(between_arg) if it is not NULL (a read-through leader
 * lands its flight there, so that its followers do not wait for Redis), then fills Redis. */
int tc__fill_caches(tc_cache *c, const char *key, size_t key_len, const tc__rec *r,
                    int64_t version, int64_t ttl_ms, uint64_t epoch, int *announced,
                    void (*between)(void *), void *between_arg)
{
    ttl_ms = jitter(c, ttl_ms);
    /* store.stale_window_ms: a plain value is cached as a record that is fresh for its TTL and
     * then usable only if the store fails (stale-if-error), so the caches keep it that much
     * longer, and a read past its TTL still goes to the store first. Its hits then take the
     * record path (decode, copy) instead of the bare-value copy. */
    tc__rec kept;
    int64_t window = c->cfg->store_stale_window_ms;
    if (r->kind == TC__REC_PLAIN && window > 0) {
        int64_t now = tc__wall_ms();
        kept = (tc__rec){.kind = TC__REC_HTTP, .date_ms = now,
                         .fresh_until_ms = tc__add_sat64(now, ttl_ms), .lifetime_ms = ttl_ms,
                         .sie_ms = window, .value = r->value, .value_len = r->value_len};
        r = &kept;
        ttl_ms = tc__add_sat64(ttl_ms, window);
    }
    void *rec = NULL;
    size_t rec_len = 0;
    int rc = tc__rec_alloc(c, r, &rec, &rec_len);
    if (rc != TC_OK) {
        /* The caches may hold an older version: take it out rather than leave it. */
        if (c->edge != NULL)
            tc__edge_remove(c->edge, key, key_len);
        if (c->redis != NULL)
            tc__redis_del(c->redis, key, key_len);
        return rc;
    }
    if (announced != NULL)
        fill_redis(c, key, key_len, rec, rec_len, r, version, ttl_ms, announced);
    if (r->kind == TC__REC_HTTP)
        tc__fill_edge(c, key, key_len, rec, rec_len, TC__EDGE_HTTP, version, ttl_ms, epoch);
    else
        tc__fill_edge(c, key, key_len, r->value, r->value_len, 0, version, ttl_ms, epoch);
    if (announced == NULL) {
        if (between != NULL)
            between(between_arg);
        fill_redis(c, key, key_len, rec, rec_len, r, version, ttl_ms, NULL);
    }
    free(rec);
    return TC_OK;
}

/* A key the store lacks, remembered for negative_ttl_ms: in Redis (so that other processes do
 * not ask their store either) and in this edge. */
void tc__fill_negative(tc_cache *c, const char *key, size_t key_len, uint64_t epoch)
{
    int64_t ttl = c->cfg->negative_ttl_ms;
    if (ttl <= 0)
        return;
    if (c->redis != NULL) {
        static const char neg = TC__REC_NEGATIVE;
        if (tc__redis_set(c->redis, key, key_len, &neg, 1, 0, ttl) == TC_OK)
            TC__INC(c->stats.redis.sets);
        else
            TC__INC(c->stats.redis.errors);
    }
    tc__fill_edge_negative(c, key, key_len, ttl, epoch);
}
