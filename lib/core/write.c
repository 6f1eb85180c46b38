/*
 * write.c - the write path: the store commits and draws the version, then Redis (with the bus
 * message in the same script), then the edge; a change from the store's feed the same way.
 */
#include "core/handle.h"
#include "core/fork.h"
#include "core/cache.h"
#include "http/http_headers.h"
#include "http/http_policy.h"

#include <stdlib.h>
#include <string.h>

int tc__cache_apply_change(tc_cache *c, const char *key, size_t key_len, int64_t version)
{
    tc__fork_check(c);
    int rc = tc__check_key(c, key, key_len);
    if (rc != TC_OK)
        return rc == TC_EKEY ? TC_OK : rc; /* a key the library cannot hold was never cached */
    int64_t ttl = c->cfg->tombstone_ttl_ms;
    /* The tombstone and the bus message in one round trip (the message goes out right after
     * the tombstone is in Redis, so a reader that drops its copy reloads past it); apart only
     * while this handle's own journal is not empty, which goes first. */
    int sent = 0;
    if (c->redis != NULL && c->publish && !tc__bus_journal_pending(c)) {
        unsigned char msg[TC__BUS_HEADER + TC_KEY_MAX];
        size_t n = tc__bus_own_msg(c, msg, TC__BUS_CHANGED, version, key, key_len);
        rc = tc__redis_retire_publish(c->redis, key, key_len, version, ttl, c->bus_channel,
                                      c->bus_channel_len, msg, n);
        if (rc != TC_OK)
            return tc__err(c, rc, "invalidator: tombstone and publish failed");
        sent = 1;
    } else if (c->redis != NULL &&
               (rc = tc__redis_retire(c->redis, key, key_len, version, ttl)) != TC_OK) {
        return rc;
    }
    if (c->edge != NULL &&
        tc__edge_retire(c->edge, key, key_len, version,
                        tc__min64(ttl, c->cfg->edge_max_ttl_ms)) < 0)
        tc__edge_remove(c->edge, key, key_len);
    /* Not bus_publish: a lost message must fail the change, so that it is applied again. */
    if (c->publish && !sent &&
        (rc = tc__bus_send(c, TC__BUS_CHANGED, version, key, key_len)) != TC_OK)
        return tc__err(c, rc, "invalidator: publish on the bus failed");
    return TC_OK;
}

/* ---- writes ------------------------------------------------------------------------------- */

int tc__check_write_args(tc_cache *c, const char *op, const char *key, size_t key_len)
{
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "%s: cache is NULL", op);
    tc__fork_check(c);
    return tc__check_key(c, key, key_len);
}

static int check_value(tc_cache *c, const char *op, const void *value, size_t value_len)
{
    if (value == NULL && value_len > 0)
        return tc__err(c, TC_EINVAL, "%s: value is NULL but value_len is %zu", op, value_len);
    /* Compared unsigned: a huge size_t must not turn negative and slip through. */
    if ((uint64_t)value_len > (uint64_t)c->cfg->max_value_bytes)
        return tc__err(c, TC_ETOOBIG, "%s: value is %zu bytes, max_value_bytes is %lld", op,
                       value_len, (long long)c->cfg->max_value_bytes);
    return TC_OK;
}

/* Commits value and fills the caches with r (whose value is value). */
static int write_through(tc_cache *c, const char *key, size_t key_len, tc__rec *r,
                         int64_t ttl_ms)
{
    int64_t version = 0;
    int rc = c->store->ops->put(c->store, key, key_len, r->value, r->value_len, &version);
    if (rc != TC_OK) {
        if (rc == TC_ESTORE)
            TC__INC(c->stats.store.errors);
        return rc; /* nothing committed, no cache touched */
    }
    TC__INC(c->stats.store.sets);
    if (tc__hook_after_commit != NULL)
        tc__hook_after_commit(c, key, key_len);

    /* Committed. From here on failures only make caches colder: the Redis tier remembers a key
     * it could not overwrite and, before it serves again, leaves a tombstone of this version. */
    int announced = 0;
    tc__fill_caches(c, key, key_len, r, version, ttl_ms, TC__EPOCH_WRITE, &announced, NULL, NULL);
    if (!announced)
        tc__bus_publish(c, TC__BUS_CHANGED, version, key, key_len);
    return TC_OK;
}

int tc_put(tc_cache *c, const char *key, size_t key_len, const void *value, size_t value_len,
           int64_t ttl_ms)
{
    int rc = tc__check_write_args(c, "put", key, key_len);
    if (rc == TC_OK)
        rc = check_value(c, "put", value, value_len);
    if (rc != TC_OK)
        return rc;
    if (ttl_ms < 0)
        return tc__err(c, TC_EINVAL, "put: ttl_ms is negative (%lld)", (long long)ttl_ms);
    if (ttl_ms == 0)
        ttl_ms = c->cfg->default_ttl_ms;
    tc__rec r = {.kind = TC__REC_PLAIN, .value = value ? value : "", .value_len = value_len};
    return write_through(c, key, key_len, &r, ttl_ms);
}

int tc_put_http(unsigned *out_stored, tc_cache *c, const char *key, size_t key_len,
                const void *value, size_t value_len, const char *const *headers,
                size_t n_headers)
{
    if (out_stored != NULL)
        *out_stored = 0;
    int rc = tc__check_write_args(c, "put_http", key, key_len);
    if (rc == TC_OK)
        rc = check_value(c, "put_http", value, value_len);
    if (rc != TC_OK)
        return rc;
    if (headers == NULL && n_headers > 0)
        return tc__err(c, TC_EINVAL, "put_http: headers is NULL but n_headers is %zu",
                       n_headers);
    char *buf = malloc(TC__HTTP_FIELDS_MAX);
    if (buf == NULL)
        return tc__err(c, TC_ENOMEM, "put_http: out of memory");
    const char *v[TC__H_COUNT];
    size_t l[TC__H_COUNT];
    rc = tc__http_fields(c, "put_http", headers, n_headers, buf, v, l);
    if (rc != TC_OK) {
        free(buf);
        return rc;
    }
    int64_t now = tc__wall_ms();
    tc__rec r;
    if (!tc__http_record(&r, v, l, value, value_len, now, c->cfg->default_ttl_ms)) {
        /* A shared cache may not store it; nothing older may be served in its place. */
        free(buf);
        return tc_del(c, key, key_len);
    }
    rc = write_through(c, key, key_len, &r, tc__http_cache_ttl(&r, now, c->cfg->default_ttl_ms));
    free(buf);
    if (rc == TC_OK && out_stored != NULL)
        *out_stored = 1;
    return rc;
}

int tc_del(tc_cache *c, const char *key, size_t key_len)
{
    int rc = tc__check_write_args(c, "del", key, key_len);
    if (rc != TC_OK)
        return rc;
    int64_t version = 0;
    rc = c->store->ops->del(c->store, key, key_len, &version);
    if (rc != TC_OK) {
        if (rc == TC_ESTORE)
            TC__INC(c->stats.store.errors);
        return rc;
    }
    TC__INC(c->stats.store.sets);
    if (tc__hook_after_commit != NULL)
        tc__hook_after_commit(c, key, key_len);
    /* Tombstones, not plain deletes: a read that loaded the old row before the delete must not
     * put it back afterwards. */
    int64_t tomb_ttl = c->cfg->tombstone_ttl_ms;
    if (c->redis != NULL &&
        tc__redis_tombstone(c->redis, key, key_len, version, tomb_ttl) != TC_OK)
        TC__INC(c->stats.redis.errors);
    if (c->edge != NULL &&
        tc__edge_tombstone(c->edge, key, key_len, version,
                           tc__min64(tomb_ttl, c->cfg->edge_max_ttl_ms)) < 0) {
        TC__INC(c->stats.edge.errors);
        tc__edge_remove(c->edge, key, key_len);
    }
    tc__bus_publish(c, TC__BUS_CHANGED, version, key, key_len);
    return TC_OK;
}
