/*
 * judge.c - what a cached HTTP record means for a read now (fresh, stale inside
 * stale-while-revalidate, or to be revalidated against the store), and the background refresh
 * that stale-while-revalidate asks for (http/http_policy.c has the RFC 9111 arithmetic).
 */
#include "core/handle.h"
#include "http/http_policy.h"

#include <stdlib.h>
#include <string.h>

/* Takes r->raw as the value's HTTP record. */
static void adopt_rec(tc__reader *r)
{
    free(r->rec);
    r->rec = r->raw;
    r->rec_len = r->raw_len;
    r->raw = NULL;
}

/* Queues the background refresh of a record served inside stale-while-revalidate. The job is
 * the old version and the record's headers without the value. */
static void start_refresh(tc_cache *c, const char *key, size_t key_len, const tc__rec *rec,
                          int64_t version)
{
    if (c->refresher == NULL)
        return;
    tc__rec policy = *rec;
    policy.value_len = 0;
    size_t n = tc__rec_size(&policy);
    unsigned char *job = malloc(8 + n);
    if (job == NULL)
        return; /* the stale copy is served; a later hit asks again */
    memcpy(job, &version, 8);
    tc__rec_encode(job + 8, &policy);
    tc__refresher_submit(c->refresher, key, key_len, job, 8 + n);
    free(job);
}

/* What a cache's HTTP record (in r->raw, from tier `source`) means for this read:
 * 1 served (fresh, or inside stale-while-revalidate), 0 not usable as it is (r->raw stays, as
 * the fallback and the headers to revalidate), or a negative error. */
int tc__judge_http(tc_cache *c, const char *key, size_t key_len, tc__reader *r, int from_redis,
                   tc__rec *rec)
{
    if (tc__rec_decode(rec, r->raw, r->raw_len) != TC_OK)
        return tc__err(c, TC_EPROTO, "get: a cached record is damaged");
    int stale;
    int fresh = tc__rec_fresh(rec, tc__wall_ms(), &stale);
    int only_cached = (r->flags & TC_HTTP_ONLY_IF_CACHED) != 0;
    if (!fresh && stale != TC__STALE_SWR && !only_cached)
        return 0;
    int64_t version = r->raw_version;
    if (from_redis)
        tc__fill_edge(c, key, key_len, r->raw, r->raw_len, TC__EDGE_HTTP, version, r->raw_ttl,
                      r->epoch);
    int rc = tc__deliver_value(r, rec->value, rec->value_len);
    if (rc != TC_OK)
        return rc;
    r->version = version;
    int split = (r->flags & TC_HTTP_SPLIT_STALE) != 0;
    r->state = fresh                               ? TC_HTTP_FRESH
               : stale == TC__STALE_SIE && split   ? TC_HTTP_STALE_IF_ERROR
               : stale != TC__STALE_NO             ? TC_HTTP_STALE
                                                   : TC_HTTP_MUST_REVALIDATE;
    if (!fresh && !only_cached)
        start_refresh(c, key, key_len, rec, version);
    adopt_rec(r);
    return 1;
}

/* The background refresh of a record served inside stale-while-revalidate: the read-through
 * path below the edge. A reader that saw the stale copy just before a refresh ended may ask
 * again: a fresh copy in the edge or in Redis (another process refreshed it) then ends the job
 * without asking the store, so the store is asked once. */
static int fresh_in(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    tc__reader *r = ctx;
    tc__rec rec;
    int stale;
    r->raw_version = version;
    if (r->edge_flags == 0)
        return TC_OK; /* a plain value put since: nothing to refresh */
    return tc__rec_decode(&rec, data, len) == TC_OK && tc__rec_fresh(&rec, tc__wall_ms(), &stale)
               ? TC_OK
               : TC_ENOTFOUND;
}

int tc__refresh_key(void *owner, const char *key, size_t key_len, const void *job,
                    size_t job_len)
{
    tc_cache *c = owner;
    int64_t old_version;
    tc__rec old;
    if (job_len < 8)
        return 0;
    memcpy(&old_version, job, 8);
    if (tc__rec_decode(&old, (const char *)job + 8, job_len - 8) != TC_OK)
        return 0;
    uint64_t epoch = atomic_load(&c->edge_epoch);
    tc__reader r = {.c = c, .epoch = epoch};
    if (tc__edge_usable(c) &&
        tc__edge_get_flags(c->edge, key, key_len, fresh_in, &r, &r.edge_flags, NULL) == TC_OK &&
        r.raw_version >= old_version)
        return 0;
    tc__rec rec;
    int stale;
    /* In Redis, a newer version (another writer's, with its own headers) or a fresh copy of
     * this one (another process refreshed it) ends the job. */
    if (c->redis != NULL &&
        tc__redis_get(c->redis, key, key_len, tc__deliver_copy, &r) == TC_OK &&
        tc__rec_decode(&rec, r.raw, r.raw_len) == TC_OK &&
        (r.raw_version > old_version ||
         (r.raw_version == old_version && tc__rec_fresh(&rec, tc__wall_ms(), &stale)))) {
        tc__fill_edge_rec(c, key, key_len, r.raw, r.raw_len, r.raw_version, r.raw_ttl, epoch);
        tc__reader_done(&r);
        return 0;
    }
    free(r.raw);
    r.raw = NULL;
    int done = 0;
    if (tc__store_get(c, key, key_len, &r) == TC_OK) {
        TC__INC(c->stats.store.hits);
        int64_t now = tc__wall_ms();
        int64_t ttl = c->cfg->default_ttl_ms;
        if (r.raw_version == old_version) {
            tc__http_revalidated(&rec, &old, old_version, r.raw, r.raw_len, r.raw_version, now);
            ttl = tc__http_cache_ttl(&rec, now, c->cfg->default_ttl_ms);
        } else {
            /* A newer value: the old headers do not describe it. */
            rec = (tc__rec){.kind = TC__REC_PLAIN, .value = r.raw, .value_len = r.raw_len};
        }
        tc__fill_caches(c, key, key_len, &rec, r.raw_version, ttl, epoch, NULL, NULL, NULL);
        done = 1;
    }
    tc__reader_done(&r);
    return done;
}
