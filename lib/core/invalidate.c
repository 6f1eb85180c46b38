/*
 * invalidate.c - the caches only, never the store: a key, a path pattern or a tag, in Redis,
 * in this edge and, through the bus, in every other handle's edge.
 */
#include "core/handle.h"
#include "core/fork.h"
#include "common/pattern.h"

#include <string.h>

static int note_version(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    *(int64_t *)ctx = version;
    return TC_OK;
}

/* Takes the key's value out of the edge but keeps its version, as a tombstone: a late fill of
 * an older version (loaded before the write this invalidation follows) is still refused, the
 * refill of the same version is not. If a newer value lands in between, the tombstone is
 * refused and the newer value stays, which is as good. */
static void edge_invalidate(tc_cache *c, const char *key, size_t key_len)
{
    int64_t version = -1;
    if (tc__edge_get(c->edge, key, key_len, note_version, &version) != TC_OK || version < 0)
        return;
    if (tc__edge_tombstone(c->edge, key, key_len, version,
                           tc__min64(c->cfg->tombstone_ttl_ms, c->cfg->edge_max_ttl_ms)) < 0)
        tc__edge_remove(c->edge, key, key_len);
}

int tc_invalidate(tc_cache *c, const char *key, size_t key_len)
{
    int rc = tc__check_write_args(c, "invalidate", key, key_len);
    if (rc != TC_OK)
        return rc;
    if (c->edge != NULL)
        edge_invalidate(c, key, key_len);
    if (c->redis != NULL) {
        rc = tc__redis_del(c->redis, key, key_len);
        if (rc != TC_OK)
            TC__INC(c->stats.redis.errors);
    }
    tc__bus_publish(c, TC__BUS_DROP, 0, key, key_len);
    return rc;
}

/* A pattern or a tag: Redis first, then this edge, then the other handles' edges, so that a
 * handle that refills from Redis after its edge was walked finds the copies gone there
 * already; the epoch voids fills whose reads began before the walk. Edge entries and Redis
 * values removed are counted in *out_removed. */
static int invalidate_many(int64_t *out_removed, tc_cache *c, const char *arg, size_t len,
                           int (*redis_step)(tc__redis *, const char *, size_t, int64_t *),
                           tc__edge_match_fn match, void *match_ctx, unsigned op)
{
    int rc = TC_OK;
    int64_t removed = 0, n = 0;
    if (c->redis != NULL) {
        rc = redis_step(c->redis, arg, len, &n);
        if (rc != TC_OK) {
            TC__INC(c->stats.redis.errors);
            n = 0;
        }
    }
    if (c->edge != NULL) {
        atomic_fetch_add(&c->edge_epoch, 1);
        removed = tc__edge_remove_matching(c->edge, match, match_ctx);
    }
    tc__bus_publish(c, op, 0, arg, len);
    if (rc != TC_OK)
        return rc;
    if (out_removed != NULL)
        *out_removed = removed + n;
    return TC_OK;
}

int tc_invalidate_pattern(int64_t *out_removed, tc_cache *c, const char *pattern,
                          size_t pattern_len)
{
    if (out_removed != NULL)
        *out_removed = 0;
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "invalidate_pattern: cache is NULL");
    tc__fork_check(c);
    int rc = tc__pattern_check(c, pattern, pattern_len);
    if (rc != TC_OK)
        return rc;
    tc__pattern_ref pat = {pattern, pattern_len};
    return invalidate_many(out_removed, c, pattern, pattern_len, tc__redis_invalidate_pattern,
                           tc__match_pattern, &pat, TC__BUS_PATTERN);
}

int tc_invalidate_tag(int64_t *out_removed, tc_cache *c, const char *tag, size_t tag_len)
{
    if (out_removed != NULL)
        *out_removed = 0;
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "invalidate_tag: cache is NULL");
    tc__fork_check(c);
    if (tag == NULL || tag_len == 0 || tag_len > TC_KEY_MAX)
        return tc__err(c, TC_EINVAL, "invalidate_tag: the tag must be 1..%d bytes", TC_KEY_MAX);
    for (size_t i = 0; i < tag_len; i++)
        if (tag[i] == '\0' || tag[i] == ' ' || tag[i] == '\t')
            return tc__err(c, TC_EINVAL, "invalidate_tag: the tag holds a NUL, space or tab");
    tc__tag_ref t = {tag, tag_len};
    return invalidate_many(out_removed, c, tag, tag_len, tc__redis_invalidate_tag, tc__match_tag,
                           &t, TC__BUS_TAG);
}
