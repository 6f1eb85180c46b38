/*
 * reader.c - where a read delivers (the caller's buffer or a new copy) and how each tier hands
 * its bytes up (a copy, so that the caches are filled after the tier's reply or statement is
 * released, never while holding a connection or a database lock).
 */
#include "core/handle.h"
#include "core/cache.h"

#include <stdlib.h>
#include <string.h>

int tc__deliver_value(tc__reader *r, const void *data, size_t len)
{
    r->len = len;
    if (r->buf != NULL) {
        if (len > r->cap)
            return TC_ERANGE;
        if (len > 0)
            memcpy(r->buf, data, len);
        return TC_OK;
    }
    /* One byte more for a terminating NUL: text values are then usable as C strings. */
    char *p = malloc(len + 1);
    if (p == NULL)
        return tc__err(r->c, TC_ENOMEM, "get: out of memory for a %zu-byte value", len);
    if (len > 0)
        memcpy(p, data, len);
    p[len] = '\0';
    free(r->copy);
    r->copy = p;
    return TC_OK;
}

/* NUL-terminated like deliver_value's copies, so that a store's value can be handed to the
 * caller as it is (tc__take_raw). */
static int keep_raw(tc__reader *r, const void *data, size_t len, int64_t version, int64_t ttl)
{
    char *p = malloc(len + 1);
    if (p == NULL)
        return tc__err(r->c, TC_ENOMEM, "get: out of memory for a %zu-byte value", len);
    if (len > 0)
        memcpy(p, data, len);
    p[len] = '\0';
    free(r->raw);
    r->raw = p;
    r->raw_len = len;
    r->raw_version = version;
    r->raw_ttl = ttl;
    return TC_OK;
}

/* Edge hits land here under the shard lock: a plain value goes straight to where the caller
 * wants it; an HTTP record is copied out, to be judged after the lock is released. */
int tc__deliver_edge(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    tc__reader *r = ctx;
    r->version = version;
    if (r->edge_flags == 0)
        return tc__deliver_value(r, data, len);
    if (r->edge_flags & TC__EDGE_NEGATIVE)
        return TC__READ_NEGATIVE;
    return keep_raw(r, data, len, version, ttl);
}

/* Lower tiers always hand over a copy: the upper tiers are filled from it after the tier's
 * reply or statement is released (never while holding a connection or a database lock). */
int tc__deliver_copy(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    return keep_raw(ctx, data, len, version, ttl);
}

/* The value is r->raw from byte skip on: hand it over without another copy when the caller
 * takes an allocated value. */
int tc__take_raw(tc__reader *r, size_t skip)
{
    if (r->buf != NULL)
        return tc__deliver_value(r, (char *)r->raw + skip, r->raw_len - skip);
    char *p = r->raw;
    if (skip > 0)
        memmove(p, p + skip, r->raw_len - skip + 1); /* with its NUL */
    free(r->copy);
    r->copy = p;
    r->len = r->raw_len - skip;
    r->raw = NULL;
    return TC_OK;
}

/* Every read of the store, the read path's and the refresher's, with the tests' hook. */
int tc__store_get(tc_cache *c, const char *key, size_t key_len, tc__reader *r)
{
    tc__store_hook hook = atomic_load(&tc__hook_before_store_read);
    if (hook != NULL)
        hook(c, key, key_len);
    if (r->pre_state != 0) {
        /* The batch's answer, good once: a second look (a retry) asks the store. */
        int st = r->pre_state;
        r->pre_state = 0;
        return st == 1 ? tc__deliver_copy(r, r->pre, r->pre_len, r->pre_version, -1)
                       : TC_ENOTFOUND;
    }
    return c->store->ops->get(c->store, key, key_len, tc__deliver_copy, r);
}

void tc__reader_done(tc__reader *r)
{
    free(r->raw);
    free(r->rec);
}
