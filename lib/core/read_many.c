/*
 * read_many.c - tc_get_many: the edge for each key, one Redis pipeline for the rest, then the
 * single-key read path for what is left (from the store, or whole where a record must be
 * judged).
 */
#include "core/handle.h"
#include "core/fork.h"
#include "common/items.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- get many ----------------------------------------------------------------------------- */

typedef struct many {
    tc_cache *c;
    uint64_t epoch;
    tc_items *items;
    const char *const *keys;
    const size_t *key_lens;
    size_t *rest;     /* indexes of the keys the edge did not answer */
    size_t nrest;
    unsigned char *state; /* per key: MANY_* */
    const char **rest_keys;
    size_t *rest_lens;
} many;

enum { MANY_TODO, MANY_DONE, MANY_STORE, MANY_FULL };

typedef struct many_edge_hit {
    many *m;
    size_t i;
    unsigned edge_flags;
} many_edge_hit;

/* An edge hit of tc_get_many: a plain value is the answer, copied once, straight into the list;
 * an HTTP record is judged by the single-key path (its staleness rules), so it is left to it. */
static int many_edge(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    many_edge_hit *h = ctx;
    if (h->edge_flags & TC__EDGE_NEGATIVE)
        return TC__READ_NEGATIVE;
    if (h->edge_flags != 0)
        return TC_ENOTFOUND;
    return tc__items_set_value(h->m->items, h->i, data, len) == TC_OK ? TC_OK : TC_ENOMEM;
}

static int many_redis(void *ctx, size_t j, const void *data, size_t len, int64_t version,
                      int64_t ttl)
{
    many *m = ctx;
    size_t i = m->rest[j];
    const unsigned char *p = data;
    tc__rec rec;
    int stale;
    if (len == 1 && p[0] == TC__REC_NEGATIVE) {
        tc__fill_edge_negative(m->c, m->keys[i], m->key_lens[i], ttl, m->epoch);
        m->state[i] = MANY_DONE; /* known absent: the item keeps no value */
    } else if (len >= 1 && p[0] == TC__REC_PLAIN) {
        tc__fill_edge(m->c, m->keys[i], m->key_lens[i], p + 1, len - 1, 0, version, ttl, m->epoch);
        if (tc__items_set_value(m->items, i, p + 1, len - 1) != TC_OK)
            return TC_ENOMEM;
        m->state[i] = MANY_DONE;
    } else if (tc__rec_decode(&rec, data, len) == TC_OK && tc__rec_fresh(&rec, tc__wall_ms(),
                                                                         &stale)) {
        tc__fill_edge(m->c, m->keys[i], m->key_lens[i], data, len, TC__EDGE_HTTP, version, ttl,
                      m->epoch);
        if (tc__items_set_value(m->items, i, rec.value, rec.value_len) != TC_OK)
            return TC_ENOMEM;
        m->state[i] = MANY_DONE;
    } else {
        m->state[i] = MANY_FULL; /* stale or damaged: the single-key path decides */
    }
    TC__INC(m->c->stats.redis.hits);
    return TC_OK;
}

/* The store's batch answer for the keys that go to the store (prefetch): a copy per key. */
typedef struct pre_answer {
    void *value; /* NULL: not found */
    size_t len;
    int64_t version;
} pre_answer;

typedef struct pre_batch {
    pre_answer *ans; /* indexed like the key list */
    size_t *index;   /* batch position -> key index */
} pre_batch;

static int pre_take(void *ctx, size_t j, const void *value, size_t len, int64_t version)
{
    pre_batch *b = ctx;
    pre_answer *a = &b->ans[b->index[j]];
    free(a->value);
    a->value = malloc(len ? len : 1);
    if (a->value == NULL)
        return TC_ENOMEM;
    memcpy(a->value, value, len);
    a->len = len;
    a->version = version;
    return TC_OK;
}

/* One batch read of the store for the keys that none of the caches answered (MANY_STORE), when
 * the store can: the single-key path then takes each answer instead of a round trip of its own,
 * with its fills, single flight and leases unchanged. A failed batch leaves the keys to it. */
static pre_answer *prefetch(many *m, size_t n)
{
    tc__store *st = m->c->store;
    if (st->ops->get_many == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (m->state[i] == MANY_STORE)
            m->rest_keys[k] = m->keys[i], m->rest_lens[k] = m->key_lens[i], m->rest[k++] = i;
    if (k < 2)
        return NULL;
    pre_batch b = {calloc(n, sizeof *b.ans), m->rest};
    if (b.ans == NULL)
        return NULL;
    if (st->ops->get_many(st, k, m->rest_keys, m->rest_lens, pre_take, &b) != TC_OK) {
        for (size_t i = 0; i < n; i++)
            free(b.ans[i].value);
        free(b.ans);
        return NULL;
    }
    return b.ans;
}

/* One key through read_through (from the store, or the whole path); the value into the list.
 * pre: the store's answer fetched ahead, or NULL. */
static int many_one(many *m, size_t i, unsigned flags, const pre_answer *pre)
{
    tc__reader r = {.c = m->c, .flags = flags};
    if (pre != NULL) {
        r.pre_state = pre->value != NULL ? 1 : 2;
        r.pre = pre->value;
        r.pre_len = pre->len;
        r.pre_version = pre->version;
    }
    unsigned source = 0;
    int rc = tc__read_through(m->c, m->keys[i], m->key_lens[i], &r, &source);
    tc__reader_done(&r);
    if (rc == TC_OK)
        rc = tc__items_set_value(m->items, i, r.copy, r.len) == TC_OK ? TC_OK : TC_ENOMEM;
    else if (rc == TC_ENOTFOUND)
        rc = TC_OK; /* the item keeps no value */
    free(r.copy);
    return rc;
}

static int get_many_run(many *m, size_t n)
{
    tc_cache *c = m->c;
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (tc__items_add(m->items, m->keys[i], m->key_lens[i], NULL, 0, 0) != TC_OK)
            return tc__err(c, TC_ENOMEM, "get_many: out of memory");
        m->state[i] = MANY_TODO;
        if (!tc__edge_usable(c))
            continue;
        many_edge_hit h = {m, i, 0};
        int64_t tomb = -1;
        rc = tc__edge_get_flags(c->edge, m->keys[i], m->key_lens[i], many_edge, &h,
                                &h.edge_flags, &tomb);
        if (rc == TC_ENOMEM)
            return tc__err(c, TC_ENOMEM, "get_many: out of memory");
        if (rc == TC_OK || rc == TC__READ_NEGATIVE) {
            m->state[i] = MANY_DONE; /* a negative entry: known absent, no value */
        } else {
            TC__INC(c->stats.edge.misses);
            /* A tombstone: Redis may hold an older copy; the single-key path checks. */
            if (tomb >= 0)
                m->state[i] = MANY_FULL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (m->state[i] == MANY_TODO) {
            m->rest[m->nrest] = i;
            m->rest_keys[m->nrest] = m->keys[i];
            m->rest_lens[m->nrest++] = m->key_lens[i];
            m->state[i] = MANY_STORE;
        }
    }
    if (c->redis != NULL && m->nrest > 0) {
        /* One pipelined round trip for every key the edge did not answer. */
        rc = tc__redis_get_many(c->redis, m->nrest, m->rest_keys, m->rest_lens, many_redis, m);
        if (rc == TC_ENOMEM)
            return tc__err(c, TC_ENOMEM, "get_many: out of memory");
        if (rc != TC_OK)
            TC__INC(c->stats.redis.errors); /* the store answers the rest */
    }
    pre_answer *pre = prefetch(m, n);
    rc = TC_OK;
    for (size_t i = 0; i < n && rc == TC_OK; i++) {
        if (m->state[i] == MANY_DONE)
            continue;
        if (m->state[i] == MANY_STORE && c->redis != NULL)
            TC__INC(c->stats.redis.misses);
        rc = many_one(m, i, m->state[i] == MANY_FULL ? 0 : TC__READ_STORE_ONLY,
                      pre != NULL && m->state[i] == MANY_STORE ? &pre[i] : NULL);
    }
    for (size_t i = 0; pre != NULL && i < n; i++)
        free(pre[i].value);
    free(pre);
    return rc;
}

int tc_get_many(tc_items **out, tc_cache *c, const char *const *keys, const size_t *key_lens,
                size_t n)
{
    if (out != NULL)
        *out = NULL;
    if (out == NULL || c == NULL)
        return tc__err(c, TC_EINVAL, "get_many: out or cache is NULL");
    if (n > TC_GET_MANY_MAX)
        return tc__err(c, TC_EINVAL, "get_many: %zu keys, the most is %d", n, TC_GET_MANY_MAX);
    if (n > 0 && (keys == NULL || key_lens == NULL))
        return tc__err(c, TC_EINVAL, "get_many: keys or key_lens is NULL");
    tc__fork_check(c);
    for (size_t i = 0; i < n; i++) {
        int rc = tc__check_key(c, keys[i], key_lens[i]);
        if (rc != TC_OK) {
            char why[256]; /* the message is about to be rewritten: copy it first */
            snprintf(why, sizeof why, "%s", tc_errmsg(c));
            return tc__err(c, rc, "get_many: key %zu: %s", i, why);
        }
    }
    many m = {.c = c, .keys = keys, .key_lens = key_lens, .epoch = atomic_load(&c->edge_epoch)};
    int rc = tc__items_new(&m.items, n);
    m.rest = malloc((n ? n : 1) * sizeof *m.rest);
    m.state = malloc(n ? n : 1);
    m.rest_keys = malloc((n ? n : 1) * sizeof *m.rest_keys);
    m.rest_lens = malloc((n ? n : 1) * sizeof *m.rest_lens);
    if (rc != TC_OK || !m.rest || !m.state || !m.rest_keys || !m.rest_lens)
        rc = tc__err(c, TC_ENOMEM, "get_many: out of memory");
    else
        rc = get_many_run(&m, n);
    free(m.rest);
    free(m.state);
    free(m.rest_keys);
    free(m.rest_lens);
    if (rc != TC_OK) {
        tc_items_free(m.items);
        return rc;
    }
    *out = m.items;
    return TC_OK;
}
