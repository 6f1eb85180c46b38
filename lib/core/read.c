/*
 * read.c - the read path: the edge, then Redis, then the store under single flight and the
 * miss lease; whatever answered fills the tiers above it on the way back up.
 */
#include "core/handle.h"
#include "core/cache.h"
#include "edge/edge_hit.h"
#include "http/http_policy.h"

#include <stdlib.h>
#include <string.h>

static int check_get_args(tc_cache *c, const char *key, size_t key_len)
{
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "get: cache is NULL");
    tc__fork_check(c);
    return tc__check_key(c, key, key_len);
}

/* What every get that returns an allocated value checks first: the outputs are reset, then
 * must be there, then the handle and key. */
int tc__begin_get(void **out, size_t *out_len, tc_cache *c, const char *what, const char *key,
                     size_t key_len)
{
    if (out != NULL)
        *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (out == NULL || out_len == NULL)
        return tc__err(c, TC_EINVAL, "%s: out or out_len is NULL", what);
    return check_get_args(c, key, key_len);
}

/* Lands the leader's flight (*fl, then NULL) with rc and the value in r->raw; no-op without
 * one. */
static void land(tc_cache *c, tc__flight **fl, int rc, const tc__reader *r)
{
    if (*fl == NULL)
        return;
    tc__flight_land(c->flights, *fl, rc, r->raw, r->raw_len, r->raw_version);
    *fl = NULL;
}

/* land() as fill_caches' between: once the edge is filled, before Redis. */
typedef struct landing {
    tc_cache *c;
    tc__flight **fl;
    const tc__reader *r;
} landing;

static void land_ok(void *arg)
{
    landing *lg = arg;
    land(lg->c, lg->fl, TC_OK, lg->r);
}

/* The read path. On TC_OK the value is in r. */
int tc__read_through(tc_cache *c, const char *key, size_t key_len, tc__reader *r,
                        unsigned *source)
{
    int rc;
    tc__rec rec;
    /* A stale HTTP record a cache held: its headers for the revalidation, and the value to
     * serve inside stale-if-error if the store fails. */
    void *fallback = NULL;
    size_t fallback_len = 0;
    int64_t fallback_version = 0;

    r->state = TC_HTTP_FRESH;
    r->tomb_version = -1;
    r->epoch = atomic_load(&c->edge_epoch);
    if (r->flags & TC__READ_STORE_ONLY)
        goto store;
    if (tc__edge_usable(c)) {
        rc = TC__EDGE_FLAGGED;
        if (r->buf != NULL) /* tc_get_into: a plain value is copied in without a callback */
            rc = tc__edge_get_into(c->edge, key, key_len, r->buf, r->cap, &r->len, &r->version,
                                   &r->tomb_version);
        if (rc == TC__EDGE_FLAGGED)
            rc = tc__edge_get_flags(c->edge, key, key_len, tc__deliver_edge, r, &r->edge_flags,
                                    &r->tomb_version);
        if (rc == TC__READ_NEGATIVE) {
            /* Remembered as absent: no lower tier is asked until it expires. */
            TC__INC(c->stats.edge.misses);
            return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
        }
        if (rc == TC_OK && r->raw != NULL) {
            rc = tc__judge_http(c, key, key_len, r, 0, &rec);
            if (rc == 0) {
                fallback = r->raw, fallback_len = r->raw_len, fallback_version = r->raw_version;
                r->raw = NULL;
                rc = TC_ENOTFOUND;
            } else if (rc == 1) {
                rc = TC_OK;
            }
        }
        if (rc != TC_ENOTFOUND) {
            if (rc == TC_OK || rc == TC_ERANGE)
                *source = TC_SOURCE_EDGE; /* the edge counts its hits itself */
            free(fallback);
            return rc;
        }
        TC__INC(c->stats.edge.misses);
    }

    if (c->redis != NULL) {
        rc = tc__redis_get(c->redis, key, key_len, tc__deliver_copy, r);
        if (rc == TC_OK && ((fallback != NULL && r->raw_version < fallback_version) ||
                            r->raw_version < r->tomb_version)) {
            /* Older than what the edge held (a stale record, or a tombstone a write or a bus
             * message left): a late fill, or a write Redis missed. Invariant 2: never served;
             * the store answers. */
            rc = TC_ENOTFOUND;
        } else if (rc == TC_OK) {
            const unsigned char *p = r->raw;
            if (r->raw_len == 1 && p[0] == TC__REC_NEGATIVE) {
                /* Another process found the store without the key a moment ago. */
                tc__fill_edge_negative(c, key, key_len, r->raw_ttl, r->epoch);
                TC__INC(c->stats.redis.hits);
                free(fallback);
                return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
            }
            if (r->raw_len >= 1 && p[0] == TC__REC_PLAIN) {
                tc__fill_edge(c, key, key_len, p + 1, r->raw_len - 1, 0, r->raw_version, r->raw_ttl,
                          r->epoch);
                r->version = r->raw_version;
                rc = tc__take_raw(r, 1);
            } else {
                rc = tc__judge_http(c, key, key_len, r, 1, &rec);
                if (rc == TC_EPROTO)
                    rc = TC_EREDIS; /* nonsense in Redis: the store answers */
                if (rc == 0) {
                    /* Stale here too: keep the newer of the two as the fallback. */
                    if (fallback == NULL || r->raw_version >= fallback_version) {
                        free(fallback);
                        fallback = r->raw, fallback_len = r->raw_len;
                        fallback_version = r->raw_version;
                        r->raw = NULL;
                    }
                    rc = TC_ENOTFOUND;
                } else if (rc == 1) {
                    rc = TC_OK;
                }
            }
            if (rc != TC_ENOTFOUND && rc != TC_EREDIS) {
                if (rc == TC_OK || rc == TC_ERANGE) {
                    TC__INC(c->stats.redis.hits);
                    *source = TC_SOURCE_REDIS;
                }
                free(fallback);
                return rc;
            }
        }
        if (rc == TC_ENOMEM) {
            free(fallback);
            return rc;
        }
        /* A miss, or Redis down or confused: either way the store answers (slower, not wrong). */
        if (rc == TC_ENOTFOUND)
            TC__INC(c->stats.redis.misses);
        else
            TC__INC(c->stats.redis.errors);
    }

    if (r->flags & TC_HTTP_ONLY_IF_CACHED) {
        free(fallback);
        return tc__err(c, TC_ENOTFOUND, "key not in the caches (only-if-cached)");
    }
store:
    free(r->raw);
    r->raw = NULL;
    /* One store read per key at a time: a reader that finds one under way waits for its
     * result instead of reading too (the leader fills the caches for everyone). */
    int leader = 1, follower = 0;
    rc = TC_ENOMEM;
    tc__flight *fl = NULL;
    if (c->flights != NULL) { /* single_flight off: every reader reads (benchmarks' baseline) */
        tc__store_hook hook = atomic_load(&tc__hook_before_flight_join);
        if (hook != NULL)
            hook(c, key, key_len);
        fl = tc__flight_join(c->flights, key, key_len, &leader);
    }
    if (fl != NULL && !leader) {
        void *v = NULL;
        size_t vl = 0;
        int64_t ver = 0;
        rc = tc__flight_wait(c->flights, fl, &v, &vl, &ver);
        fl = NULL;
        if (rc == TC_OK) {
            r->raw = v, r->raw_len = vl, r->raw_version = ver, r->raw_ttl = -1;
            follower = 1;
        } else if (rc == TC_ENOTFOUND) {
            follower = 1; /* the leader remembered the absence (negative_ttl_ms) */
        } else if (rc == TC_ENOMEM) {
            leader = 1; /* no shared result: read for ourselves */
        }
    }
    tc__lease ls = {.state = TC__LEASE_NONE};
    int refound = 0;
    if (leader && fl != NULL && fallback == NULL && tc__edge_usable(c)) {
        /* The previous flight of this key may have landed between this reader's miss and its
         * join, and a flight lands after its fill: then the edge has the answer now (a plain
         * value, or the key's absence). Not for HTTP records (stale-while-revalidate and
         * stale-if-error judge those): they read the store as before. Counted as the miss the
         * first look was. */
        unsigned ef = 0;
        int prc = tc__edge_peek(c->edge, key, key_len, tc__deliver_copy, r, &ef);
        if (prc == TC_OK && (ef & TC__EDGE_NEGATIVE)) {
            land(c, &fl, TC_ENOTFOUND, r);
            free(r->raw);
            r->raw = NULL;
            return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
        }
        if (prc == TC_OK && ef == 0 && r->raw != NULL) {
            refound = 1;
            follower = 1; /* loaded and filled by another reader */
            rc = TC_OK;
        } else {
            free(r->raw);
            r->raw = NULL;
        }
    }
    if (leader && !refound) {
        /* Across processes: wait for the holder of the key's lease, or take it. */
        if (c->redis != NULL && c->cfg->lease_ms > 0 && fallback == NULL)
            tc__lease_step(c, key, key_len, r, &ls);
        if (ls.state == TC__LEASE_PEER_VALUE) {
            rc = TC_OK;
        } else if (ls.state == TC__LEASE_PEER_ABSENT) {
            rc = TC_ENOTFOUND;
        } else {
            rc = tc__store_get(c, key, key_len, r);
        }
    }
    /* A leader lands its flight once the edge is filled (a reader arriving later finds the
     * value there: see refound), or at once if there is nothing to fill. */
    if (rc == TC_ENOTFOUND) {
        free(fallback);
        if (ls.state == TC__LEASE_PEER_ABSENT) {
            tc__fill_edge_negative(c, key, key_len, ls.ttl_ms, r->epoch);
        } else {
            TC__INC(c->stats.store.misses);
            if (!follower)
                tc__fill_negative(c, key, key_len, r->epoch);
        }
        land(c, &fl, rc, r);
        tc__lease_release(c, key, key_len, &ls);
        tc__err(c, TC_ENOTFOUND, "key not found");
        return rc;
    }
    if (rc != TC_OK) {
        land(c, &fl, rc, r);
        tc__lease_release(c, key, key_len, &ls);
    }
    if (rc != TC_OK) {
        if (rc == TC_ESTORE)
            TC__INC(c->stats.store.errors);
        /* stale-if-error: the store failed, a stale copy inside its window is served. */
        int stale = TC__STALE_NO;
        if (fallback != NULL && tc__rec_decode(&rec, fallback, fallback_len) == TC_OK &&
            !tc__rec_fresh(&rec, tc__wall_ms(), &stale) && stale != TC__STALE_NO) {
            int drc = tc__deliver_value(r, rec.value, rec.value_len);
            if (drc == TC_OK || drc == TC_ERANGE) {
                r->version = fallback_version;
                r->state = TC_HTTP_STALE;
                r->rec = fallback;
                r->rec_len = fallback_len;
                *source = TC_SOURCE_STORE;
                return drc;
            }
        }
        free(fallback);
        return rc;
    }
    if (!follower && ls.state != TC__LEASE_PEER_VALUE)
        TC__INC(c->stats.store.hits);
    r->version = r->raw_version;
    *source = refound                          ? TC_SOURCE_EDGE
              : ls.state == TC__LEASE_PEER_VALUE ? TC_SOURCE_REDIS
                                             : TC_SOURCE_STORE;
    int64_t now = tc__wall_ms();
    tc__rec fresh = {.kind = TC__REC_PLAIN, .value = r->raw, .value_len = r->raw_len};
    int64_t ttl = c->cfg->default_ttl_ms;
    /* The kept headers describe the version they came with: a newer value (written in plain
     * SQL, or put by another process whose record Redis lost) comes back plain. */
    if (fallback != NULL && fallback_version == r->raw_version &&
        tc__rec_decode(&rec, fallback, fallback_len) == TC_OK && rec.kind == TC__REC_HTTP) {
        tc__http_revalidated(&fresh, &rec, fallback_version, r->raw, r->raw_len, r->raw_version, now);
        ttl = tc__http_cache_ttl(&fresh, now, c->cfg->default_ttl_ms);
    }
    if (ls.state == TC__LEASE_PEER_VALUE) /* Redis has it: only this edge is filled */
        tc__fill_edge(c, key, key_len, r->raw, r->raw_len, 0, r->raw_version, ls.ttl_ms, r->epoch);
    else if (!follower) { /* the leader filled them */
        landing lg = {c, &fl, r};
        tc__fill_caches(c, key, key_len, &fresh, r->raw_version, ttl, r->epoch, NULL, land_ok, &lg);
    }
    land(c, &fl, TC_OK, r); /* if the fill did not */
    tc__lease_release(c, key, key_len, &ls); /* after the fill: a waiter now finds the value */
    if (fresh.kind == TC__REC_HTTP) {
        tc__rec header = fresh;
        header.value_len = 0;
        void *h = NULL;
        size_t hl = 0;
        if (tc__rec_alloc(c, &header, &h, &hl) == TC_OK) {
            r->rec = h;
            r->rec_len = hl;
        }
    }
    free(fallback);
    return tc__take_raw(r, 0);
}

int tc_get_ex(void **out, size_t *out_len, unsigned *out_info, int64_t *out_version,
              tc_cache *c, const char *key, size_t key_len)
{
    if (out_info != NULL)
        *out_info = 0;
    if (out_version != NULL)
        *out_version = 0;
    int rc = tc__begin_get(out, out_len, c, "get", key, key_len);
    if (rc != TC_OK)
        return rc;
    tc__reader r = {.c = c};
    unsigned source = 0;
    rc = tc__read_through(c, key, key_len, &r, &source);
    tc__reader_done(&r);
    if (rc != TC_OK) {
        free(r.copy);
        return rc;
    }
    *out = r.copy;
    *out_len = r.len;
    if (out_info != NULL)
        *out_info = source | (r.state == TC_HTTP_STALE ? TC_INFO_STALE : 0u);
    if (out_version != NULL)
        *out_version = r.version;
    return TC_OK;
}

int tc_get(void **out, size_t *out_len, tc_cache *c, const char *key, size_t key_len)
{
    return tc_get_ex(out, out_len, NULL, NULL, c, key, key_len);
}

int tc_get_into(size_t *out_len, tc_cache *c, const char *key, size_t key_len, void *buf,
                size_t buf_size)
{
    if (out_len == NULL)
        return tc__err(c, TC_EINVAL, "get_into: out_len is NULL");
    *out_len = 0;
    if (buf == NULL && buf_size > 0)
        return tc__err(c, TC_EINVAL, "get_into: buf is NULL but buf_size is %zu", buf_size);
    int rc = check_get_args(c, key, key_len);
    if (rc != TC_OK)
        return rc;
    /* A non-NULL buf makes every path copy in place; a 0-byte buffer still needs one. */
    char dummy;
    tc__reader r = {.c = c, .buf = buf ? buf : &dummy, .cap = buf_size};
    unsigned source = 0;
    rc = tc__read_through(c, key, key_len, &r, &source);
    tc__reader_done(&r);
    if (rc == TC_OK || rc == TC_ERANGE)
        *out_len = r.len;
    if (rc == TC_ERANGE)
        tc__err(c, TC_ERANGE, "get_into: value is %zu bytes, buffer is %zu", r.len, buf_size);
    return rc;
}
