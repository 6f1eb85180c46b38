/*
 * read.c - the read path: the edge, then Redis, then the store under single flight and the
 * miss lease; whatever answered fills the tiers above it on the way back up.
 */
#include "core/handle.h"
#include "core/fork.h"
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

/* ---- the read path, one step a function ------------------------------------------------- */

/* A step's answer when the read is not answered yet: the next tier is asked. */
#define READ_ON 1

/* What the steps of one read share. */
typedef struct read_state {
    tc_cache *c;
    const char *key;
    size_t key_len;
    tc__reader *r;
    unsigned *source;
    tc__rec rec; /* a record decoded on the way */
    /* A stale HTTP record a cache held: its headers for the revalidation, and the value to
     * serve inside stale-if-error if the store fails. Freed when the read ends. */
    void *fallback;
    size_t fallback_len;
    int64_t fallback_version;
    tc__flight *fl;              /* the flight this reader leads, until it lands */
    int leader, follower, refound;
    int final;                   /* the store step answered the read whole: nothing to finish */
    tc__lease ls;
} read_state;

/* r->raw becomes the fallback, unless the one kept is newer. */
static void keep_fallback(read_state *st)
{
    tc__reader *r = st->r;
    if (st->fallback != NULL && r->raw_version < st->fallback_version)
        return; /* r->raw is freed when the store step begins */
    free(st->fallback);
    st->fallback = r->raw;
    st->fallback_len = r->raw_len;
    st->fallback_version = r->raw_version;
    r->raw = NULL;
}

/* The edge: a plain value copied straight out, an HTTP record judged, a negative entry. */
static int read_edge(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    if (!tc__edge_usable(c))
        return READ_ON;
    int rc = TC__EDGE_FLAGGED;
    if (r->buf != NULL) /* tc_get_into: a plain value is copied in without a callback */
        rc = tc__edge_get_into(c->edge, st->key, st->key_len, r->buf, r->cap, &r->len,
                               &r->version, &r->tomb_version);
    if (rc == TC__EDGE_FLAGGED)
        rc = tc__edge_get_flags(c->edge, st->key, st->key_len, tc__deliver_edge, r,
                                &r->edge_flags, &r->tomb_version);
    if (rc == TC__READ_NEGATIVE) {
        /* Remembered as absent: no lower tier is asked until it expires. */
        TC__INC(c->stats.edge.misses);
        return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
    }
    if (rc == TC_OK && r->raw != NULL) {
        rc = tc__judge_http(c, st->key, st->key_len, r, 0, &st->rec);
        if (rc == 0) {
            keep_fallback(st);
            rc = TC_ENOTFOUND;
        } else if (rc == 1) {
            rc = TC_OK;
        }
    }
    if (rc != TC_ENOTFOUND) {
        if (rc == TC_OK || rc == TC_ERANGE)
            *st->source = TC_SOURCE_EDGE; /* the edge counts its hits itself */
        return rc;
    }
    TC__INC(c->stats.edge.misses);
    return READ_ON;
}

/* What Redis held (r->raw): a negative record, a plain value, or an HTTP record to judge. A miss
 * or nonsense is counted and the read goes on to the store. */
static int redis_hit(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    const unsigned char *p = r->raw;
    int rc;
    if (r->raw_len == 1 && p[0] == TC__REC_NEGATIVE) {
        /* Another process found the store without the key a moment ago. */
        tc__fill_edge_negative(c, st->key, st->key_len, r->raw_ttl, r->epoch);
        TC__INC(c->stats.redis.hits);
        return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
    }
    if (r->raw_len >= 1 && p[0] == TC__REC_PLAIN) {
        tc__fill_edge(c, st->key, st->key_len, p + 1, r->raw_len - 1, 0, r->raw_version,
                      r->raw_ttl, r->epoch);
        r->version = r->raw_version;
        rc = tc__take_raw(r, 1);
    } else {
        rc = tc__judge_http(c, st->key, st->key_len, r, 1, &st->rec);
        if (rc == TC_EPROTO)
            rc = TC_EREDIS; /* nonsense in Redis: the store answers */
        if (rc == 0) {
            keep_fallback(st); /* stale here too */
            rc = TC_ENOTFOUND;
        } else if (rc == 1) {
            rc = TC_OK;
        }
    }
    if (rc == TC_ENOTFOUND || rc == TC_EREDIS) {
        if (rc == TC_ENOTFOUND)
            TC__INC(c->stats.redis.misses);
        else
            TC__INC(c->stats.redis.errors);
        return READ_ON;
    }
    if (rc == TC_OK || rc == TC_ERANGE) {
        TC__INC(c->stats.redis.hits);
        *st->source = TC_SOURCE_REDIS;
    }
    return rc;
}

static int read_redis(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    if (c->redis == NULL)
        return READ_ON;
    /* Invalidations this handle could not publish go first: Redis is answering again if this
     * read gets through, and other handles must not keep what they name a moment longer. */
    tc__bus_journal_flush(c);
    int rc = tc__redis_get(c->redis, st->key, st->key_len, tc__deliver_copy, r);
    if (rc == TC_OK) {
        /* Older than what the edge held (a stale record, or a tombstone a write or a bus
         * message left): a late fill, or a write Redis missed. Invariant 2: never served; the
         * store answers. */
        if ((st->fallback == NULL || r->raw_version >= st->fallback_version) &&
            r->raw_version >= r->tomb_version)
            return redis_hit(st);
        rc = TC_ENOTFOUND;
    }
    if (rc == TC_ENOMEM)
        return rc;
    /* A miss, or Redis down or confused: either way the store answers (slower, not wrong). */
    if (rc == TC_ENOTFOUND)
        TC__INC(c->stats.redis.misses);
    else
        TC__INC(c->stats.redis.errors);
    return READ_ON;
}

/* One store read per key at a time: a reader that finds one under way waits for its result
 * instead of reading too (the leader fills the caches for everyone). READ_ON for a reader that
 * reads the store itself (the leader; anyone with single_flight off, the benchmarks' baseline,
 * or without memory for a flight), else the leader's result, as a follower. */
static int join_flight(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    st->leader = 1;
    if (c->flights == NULL)
        return READ_ON;
    tc__store_hook hook = atomic_load(&tc__hook_before_flight_join);
    if (hook != NULL)
        hook(c, st->key, st->key_len);
    st->fl = tc__flight_join(c->flights, st->key, st->key_len, &st->leader);
    if (st->fl == NULL || st->leader)
        return READ_ON;
    void *v = NULL;
    size_t vl = 0;
    int64_t ver = 0;
    int rc = tc__flight_wait(c->flights, st->fl, &v, &vl, &ver);
    st->fl = NULL;
    if (rc == TC_OK) {
        r->raw = v, r->raw_len = vl, r->raw_version = ver, r->raw_ttl = -1;
        st->follower = 1;
    } else if (rc == TC_ENOTFOUND) {
        st->follower = 1; /* the leader remembered the absence (negative_ttl_ms) */
    } else if (rc == TC_ENOMEM) {
        st->leader = 1; /* no shared result: read for ourselves */
        return READ_ON;
    }
    return rc;
}

/* The previous flight of this key may have landed between this reader's miss and its join, and
 * a flight lands after its fill: then the edge has the answer now (a plain value, or the key's
 * absence). Not for HTTP records (stale-while-revalidate and stale-if-error judge those): they
 * read the store as before. Counted as the miss the first look was. */
static int look_again(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    unsigned ef = 0;
    int prc = tc__edge_peek(c->edge, st->key, st->key_len, tc__deliver_copy, r, &ef);
    if (prc == TC_OK && (ef & TC__EDGE_NEGATIVE)) {
        land(c, &st->fl, TC_ENOTFOUND, r);
        free(r->raw);
        r->raw = NULL;
        st->final = 1;
        return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
    }
    if (prc == TC_OK && ef == 0 && r->raw != NULL) {
        st->refound = 1;
        st->follower = 1; /* loaded and filled by another reader */
        return TC_OK;
    }
    free(r->raw);
    r->raw = NULL;
    return READ_ON;
}

/* The lease holder filled a fresh HTTP record (tc_put_http's, or a value cached with
 * store.stale_window_ms): served as one found in Redis is, its value handed to the followers.
 * The read is whole then; a record gone stale since the lease's look, or damaged, reads the
 * store. */
static int peer_record(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    tc__rec rec;
    if (st->fl != NULL && tc__rec_decode(&rec, r->raw, r->raw_len) == TC_OK) {
        tc__flight_land(c->flights, st->fl, TC_OK, rec.value, rec.value_len, r->raw_version);
        st->fl = NULL;
    }
    int rc = tc__judge_http(c, st->key, st->key_len, r, 1, &st->rec);
    if (rc == 0 || rc == TC_EPROTO) {
        st->ls.state = TC__LEASE_NONE;
        free(r->raw);
        r->raw = NULL;
        return tc__store_get(c, st->key, st->key_len, r);
    }
    st->final = 1;
    if (rc == 1 || rc == TC_ERANGE) {
        TC__INC(c->stats.redis.hits);
        *st->source = TC_SOURCE_REDIS;
    }
    return rc == 1 ? TC_OK : rc;
}

/* The leader's load: across processes, wait for the holder of the key's lease or take it; then
 * the store, unless the holder's fill answered. A reader holding a stale copy takes the lease
 * too (a stampede of stale-if-error readers is a stampede still), and takes no fill older than
 * its copy. */
static int load(read_state *st)
{
    tc_cache *c = st->c;
    if (c->redis != NULL && c->cfg->lease_ms > 0) {
        int64_t floor = st->fallback != NULL ? st->fallback_version : -1;
        tc__lease_step(c, st->key, st->key_len, floor, st->r, &st->ls);
    }
    if (st->ls.state == TC__LEASE_PEER_VALUE)
        return TC_OK;
    if (st->ls.state == TC__LEASE_PEER_ABSENT)
        return TC_ENOTFOUND;
    if (st->ls.state == TC__LEASE_PEER_RECORD)
        return peer_record(st);
    return tc__store_get(c, st->key, st->key_len, st->r);
}

/* Below the caches: the value in r->raw on TC_OK. */
static int read_store(read_state *st)
{
    free(st->r->raw);
    st->r->raw = NULL;
    int rc = join_flight(st);
    if (rc == READ_ON && st->fl != NULL && st->fallback == NULL && tc__edge_usable(st->c))
        rc = look_again(st);
    if (rc == READ_ON)
        rc = load(st);
    return rc;
}

/* The store has no such key: remembered (negative_ttl_ms) unless a peer did it. A leader lands
 * its flight once the caches are filled (a reader arriving later finds the answer there). */
static int finish_miss(read_state *st)
{
    tc_cache *c = st->c;
    if (st->ls.state == TC__LEASE_PEER_ABSENT) {
        tc__fill_edge_negative(c, st->key, st->key_len, st->ls.ttl_ms, st->r->epoch);
    } else {
        TC__INC(c->stats.store.misses);
        if (!st->follower)
            tc__fill_negative(c, st->key, st->key_len, st->r->epoch);
    }
    land(c, &st->fl, TC_ENOTFOUND, st->r);
    tc__lease_release(c, st->key, st->key_len, &st->ls);
    return tc__err(c, TC_ENOTFOUND, "key not found");
}

/* The store failed: its error goes to the followers too. stale-if-error: a stale copy a cache
 * held inside its window is served instead. */
static int store_failed(read_state *st, int rc)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    land(c, &st->fl, rc, r);
    tc__lease_release(c, st->key, st->key_len, &st->ls);
    if (rc == TC_ESTORE)
        TC__INC(c->stats.store.errors);
    int stale = TC__STALE_NO;
    if (st->fallback != NULL &&
        tc__rec_decode(&st->rec, st->fallback, st->fallback_len) == TC_OK &&
        !tc__rec_fresh(&st->rec, tc__wall_ms(), &stale) && stale != TC__STALE_NO) {
        int drc = tc__deliver_value(r, st->rec.value, st->rec.value_len);
        if (drc == TC_OK || drc == TC_ERANGE) {
            r->version = st->fallback_version;
            r->state = TC_HTTP_STALE;
            r->rec = st->fallback; /* the reader's now */
            r->rec_len = st->fallback_len;
            st->fallback = NULL;
            *st->source = TC_SOURCE_STORE;
            return drc;
        }
    }
    return rc;
}

/* What a read that found the value fills: a peer's lease fill only this edge (Redis has it); a
 * follower's or a second look's nothing (the leader filled them); a leader's both caches, with
 * its flight landed between the edge and Redis. */
static void fill_up(read_state *st, const tc__rec *fresh, int64_t ttl)
{
    tc__reader *r = st->r;
    if (st->ls.state == TC__LEASE_PEER_VALUE) {
        tc__fill_edge(st->c, st->key, st->key_len, r->raw, r->raw_len, 0, r->raw_version,
                      st->ls.ttl_ms, r->epoch);
    } else if (!st->follower) {
        landing lg = {st->c, &st->fl, r};
        tc__fill_caches(st->c, st->key, st->key_len, fresh, r->raw_version, ttl, r->epoch,
                        NULL, land_ok, &lg);
    }
}

/* The value found below the caches (r->raw): the caches filled, the flight landed, the lease
 * released, the value handed to the caller. A stale HTTP record of the same version is
 * revalidated: its headers go back into the caches, fresh again. */
static int finish_hit(read_state *st)
{
    tc_cache *c = st->c;
    tc__reader *r = st->r;
    if (!st->follower && st->ls.state != TC__LEASE_PEER_VALUE)
        TC__INC(c->stats.store.hits);
    r->version = r->raw_version;
    *st->source = st->refound                          ? TC_SOURCE_EDGE
                  : st->ls.state == TC__LEASE_PEER_VALUE ? TC_SOURCE_REDIS
                                                         : TC_SOURCE_STORE;
    int64_t now = tc__wall_ms();
    tc__rec fresh = {.kind = TC__REC_PLAIN, .value = r->raw, .value_len = r->raw_len};
    int64_t ttl = c->cfg->default_ttl_ms;
    /* The kept headers describe the version they came with: a newer value (written in plain
     * SQL, or put by another process whose record Redis lost) comes back plain. */
    if (st->fallback != NULL && st->fallback_version == r->raw_version &&
        tc__rec_decode(&st->rec, st->fallback, st->fallback_len) == TC_OK &&
        st->rec.kind == TC__REC_HTTP) {
        tc__http_revalidated(&fresh, &st->rec, st->fallback_version, r->raw, r->raw_len,
                             r->raw_version, now);
        ttl = tc__http_cache_ttl(&fresh, now, c->cfg->default_ttl_ms);
    }
    fill_up(st, &fresh, ttl);
    land(c, &st->fl, TC_OK, r); /* if the fill did not */
    tc__lease_release(c, st->key, st->key_len, &st->ls); /* after the fill: a waiter finds it */
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
    return tc__take_raw(r, 0);
}

int tc__read_through(tc_cache *c, const char *key, size_t key_len, tc__reader *r,
                     unsigned *source)
{
    read_state st = {.c = c, .key = key, .key_len = key_len, .r = r, .source = source};
    r->state = TC_HTTP_FRESH;
    r->tomb_version = -1;
    r->epoch = atomic_load(&c->edge_epoch);
    int rc = READ_ON;
    if (!(r->flags & TC__READ_STORE_ONLY)) {
        rc = read_edge(&st);
        if (rc == READ_ON)
            rc = read_redis(&st);
        if (rc == READ_ON && (r->flags & TC_HTTP_ONLY_IF_CACHED))
            rc = tc__err(c, TC_ENOTFOUND, "key not in the caches (only-if-cached)");
    }
    if (rc == READ_ON) {
        rc = read_store(&st);
        if (!st.final)
            rc = rc == TC_ENOTFOUND ? finish_miss(&st)
                 : rc != TC_OK      ? store_failed(&st, rc)
                                    : finish_hit(&st);
    }
    free(st.fallback);
    return rc;
}

/* tc_get's hit, as tc_get_into's below: a live plain value in the edge, copied by the edge's
 * inline read into a buffer on the stack, then into the caller's allocation (with its NUL).
 * A longer value, whose hit that read counted already, is copied by the edge's general read
 * without counting it again. TC_OK, or anything else for the whole path to read afresh. The
 * short copy is tc__deliver_value's allocation written out: going through a reader (zeroed, and
 * a call) cost this hit 57 instructions more, a seventh of it, under callgrind. */
static int edge_hit_alloc(void **out, size_t *out_len, int64_t *version, tc_cache *c,
                          const char *key, size_t key_len)
{
    char small[256];
    size_t len;
    int rc = tc__edge_try_hit(c->edge, key, key_len, small, sizeof small, &len, version);
    if (rc == TC_OK) {
        char *p = malloc(len + 1);
        if (p == NULL)
            return TC_ENOMEM;
        memcpy(p, small, len);
        p[len] = '\0';
        *out = p;
        *out_len = len;
        return TC_OK;
    }
    if (rc != TC_ERANGE)
        return rc;
    tc__reader r = {.c = c};
    unsigned flags = 0;
    rc = tc__edge_peek(c->edge, key, key_len, tc__deliver_copy, &r, &flags);
    if (rc != TC_OK || flags != 0) { /* gone or replaced meanwhile: the whole path tells */
        free(r.raw);
        return rc == TC_OK ? TC__EDGE_SLOW : rc;
    }
    *out = r.raw; /* NUL-terminated, as tc_get's values are */
    *out_len = r.raw_len;
    *version = r.raw_version;
    return TC_OK;
}

int tc_get_ex(void **out, size_t *out_len, unsigned *out_info, int64_t *out_version,
              tc_cache *c, const char *key, size_t key_len)
{
    if (out_info != NULL)
        *out_info = 0;
    if (out_version != NULL)
        *out_version = 0;
    /* The hit first, the key's checks on a miss: see tc_get_into. */
    int64_t version;
    if (out != NULL && out_len != NULL && c != NULL && key_len <= TC_KEY_MAX) {
        tc__fork_check(c);
        if (tc__edge_usable(c) &&
            edge_hit_alloc(out, out_len, &version, c, key, key_len) == TC_OK) {
            if (out_info != NULL)
                *out_info = TC_SOURCE_EDGE;
            if (out_version != NULL)
                *out_version = version;
            return TC_OK;
        }
    }
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

/* tc_get_into's answer for a buffer too small (*out_len says what is needed). */
static int too_small(tc_cache *c, size_t len, size_t buf_size)
{
    return tc__err(c, TC_ERANGE, "get_into: value is %zu bytes, buffer is %zu", len, buf_size);
}

/* tc_get_into's whole path: every case but the hit that tc_get_into answers itself. */
static __attribute__((noinline)) int get_into_path(size_t *out_len, tc_cache *c,
                                                   const char *key, size_t key_len, void *buf,
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
        return too_small(c, r.len, buf_size);
    return rc;
}

/* The hit as the user calls it: a live plain value in the edge is copied out by the edge's
 * inline read (the variant with no call in it) before any of the read's state is made. The
 * key's checks can wait for a miss: every key the edge holds passed them when it was put or
 * filled, so a hit proves it valid, and a NULL key is one of tc__edge_try_hit's other cases.
 * Only the length is checked first, so that a wrong one is never read past TC_KEY_MAX bytes.
 * Every other case (a miss, an entry the fast read leaves, a handle to repair after a fork, a
 * bad argument) goes to the whole path, which reads afresh and tells each apart. */
int tc_get_into(size_t *out_len, tc_cache *c, const char *key, size_t key_len, void *buf,
                size_t buf_size)
{
    if (EDGE_LIKELY(out_len != NULL && c != NULL && buf != NULL && key_len <= TC_KEY_MAX &&
                    tc__fork_current(c) && tc__edge_usable(c))) {
        int64_t version;
        size_t len;
        int rc = tc__edge_try_hit(c->edge, key, key_len, buf, buf_size, &len, &version);
        if (rc == TC_OK || rc == TC_ERANGE) { /* the edge counted the hit: answered here */
            *out_len = len;
            return rc == TC_OK ? TC_OK : too_small(c, len, buf_size);
        }
    }
    return get_into_path(out_len, c, key, key_len, buf, buf_size);
}
