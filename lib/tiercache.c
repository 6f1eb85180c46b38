/*
 * tiercache.c - orchestration: the data flow through the tiers, and nothing else.
 *
 *   get   edge -> redis -> store; a tier that missed is filled on the way back up
 *   put   store commits (new version) -> redis -> edge
 *   del   store deletes (new version) -> tombstone in redis and edge
 *   inv   edge and redis only
 *
 * Every cached value carries the store's version, and the tiers refuse to replace a newer
 * version by an older one, so the order in which concurrent fills land does not matter.
 */
#include "cache.h"
#include "config.h"
#include "edge.h"
#include "pattern.h"
#include "redis_tier.h"
#include "stats.h"
#include "store.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tc_cache {
    tc_config *cfg;
    tc__edge *edge;   /* NULL when edge.enabled is false; emptied in a child after fork */
    tc__redis *redis; /* NULL when no Redis is configured */
    tc__store *store;
    tc__stats stats;
    atomic_uint fork_gen; /* tc__fork_generation() the edge was last emptied in, or
                           * EDGE_REPAIRING while a child empties it */
};

#define EDGE_REPAIRING UINT_MAX

/* A child of fork() may have missed invalidations its parent would have seen later (invariant
 * 3), so its first call on the handle empties the edge it inherited. The edge itself is safe
 * to use in the child (edge.c holds its shards across fork()); the Redis tier and the store
 * repair their connections themselves. */
static void fork_check(tc_cache *c)
{
    unsigned gen = tc__fork_generation();
    unsigned seen = atomic_load_explicit(&c->fork_gen, memory_order_acquire);
    while (seen != gen) {
        if (seen != EDGE_REPAIRING &&
            atomic_compare_exchange_strong(&c->fork_gen, &seen, EDGE_REPAIRING)) {
            tc__edge_clear(c->edge);
            atomic_store_explicit(&c->fork_gen, gen, memory_order_release);
            return;
        }
        sched_yield();
        seen = atomic_load_explicit(&c->fork_gen, memory_order_acquire);
    }
}

void (*tc__hook_after_commit)(tc_cache *cache, const char *key, size_t key_len);

tc__edge *tc__cache_edge(tc_cache *c)
{
    return c->edge;
}

tc__redis *tc__cache_redis(tc_cache *c)
{
    return c->redis;
}

int tc_version_number(void)
{
    return TC_VERSION_NUMBER;
}

const char *tc_version_string(void)
{
    return TC_VERSION_STRING;
}

/* ---- open / close ------------------------------------------------------------------------- */

int tc_open(tc_cache **out, const tc_config *cfg)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_open: out is NULL");
    *out = NULL;
    tc_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return tc__err(NULL, TC_ENOMEM, "tc_open: out of memory");
    int rc;
    if (cfg != NULL) {
        rc = tc__config_dup(&c->cfg, cfg);
    } else {
        rc = tc_config_new(&c->cfg);
    }
    if (rc != TC_OK)
        goto fail;
    const tc_config *k = c->cfg;

    rc = tc__store_sqlite_open(&c->store, k->store_path, k->store_table,
                               k->store_busy_timeout_ms, c);
    if (rc != TC_OK)
        goto fail;
    if (k->edge_enabled) {
        rc = tc__edge_new(&c->edge, (size_t)k->edge_max_entries, (size_t)k->edge_max_bytes);
        if (rc != TC_OK) {
            tc__err(NULL, rc, "tc_open: cannot create the edge tier");
            goto fail;
        }
    }
    if (k->redis_host[0] != '\0' || k->redis_unix_socket[0] != '\0') {
        tc__redis_opts o = {
            .host = k->redis_host,
            .port = (int)k->redis_port,
            .unix_socket = k->redis_unix_socket,
            .ns = k->redis_namespace,
            .connect_timeout_ms = k->redis_connect_timeout_ms,
            .command_timeout_ms = k->redis_command_timeout_ms,
            .retry_interval_ms = k->redis_retry_interval_ms,
            .max_value_bytes = (size_t)k->max_value_bytes,
            .tombstone_ttl_ms = k->tombstone_ttl_ms,
        };
        rc = tc__redis_new(&c->redis, &o, c, &c->stats);
        if (rc != TC_OK)
            goto fail;
    }
    atomic_store(&c->fork_gen, tc__fork_generation());
    *out = c;
    return TC_OK;
fail:
    /* Keep the detail for tc_errmsg(NULL): it was recorded under c, which dies here. */
    {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tc_errmsg(NULL));
        tc_close(c);
        tc__err(NULL, rc, "%s", msg);
    }
    return rc;
}

void tc_close(tc_cache *c)
{
    if (c == NULL)
        return;
    tc__redis_free(c->redis);
    tc__edge_free(c->edge);
    if (c->store != NULL)
        c->store->ops->close(c->store);
    tc_config_free(c->cfg);
    free(c);
}

/* ---- get ---------------------------------------------------------------------------------- */

/* Where a read delivers: a buffer it allocates (tc_get) or the caller's (tc_get_into). */
typedef struct reader {
    tc_cache *c;
    void *buf;      /* caller's buffer, or NULL to allocate */
    size_t cap;
    void *copy;     /* allocated copy (tc_get; or a lower tier's value on its way up) */
    size_t len;
    int64_t version;
    int64_t ttl_ms; /* remaining life in the tier that answered; -1 from the store */
} reader;

static int alloc_copy(reader *r, const void *data, size_t len)
{
    /* One byte more for a terminating NUL: text values are then usable as C strings. */
    char *p = malloc(len + 1);
    if (p == NULL)
        return tc__err(r->c, TC_ENOMEM, "get: out of memory for a %zu-byte value", len);
    if (len > 0)
        memcpy(p, data, len);
    p[len] = '\0';
    r->copy = p;
    return TC_OK;
}

/* Edge hits land here under the shard lock: copy straight to where the caller wants it. */
static int deliver_edge(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    reader *r = ctx;
    r->len = len;
    r->version = version;
    r->ttl_ms = ttl;
    if (r->buf == NULL)
        return alloc_copy(r, data, len);
    if (len > r->cap)
        return TC_ERANGE;
    if (len > 0)
        memcpy(r->buf, data, len);
    return TC_OK;
}

/* Lower tiers always hand over a copy: the upper tiers are filled from it after the tier's
 * reply or statement is released (never while holding a connection or a database lock). */
static int deliver_copy(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    reader *r = ctx;
    r->len = len;
    r->version = version;
    r->ttl_ms = ttl;
    return alloc_copy(r, data, len);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* An edge entry never outlives the Redis copy it came from (invariant 4), nor edge.max_ttl_ms. */
static void fill_edge(tc_cache *c, const char *key, size_t key_len, const reader *r,
                      int64_t ttl_ms)
{
    if (c->edge == NULL)
        return;
    int rc = tc__edge_set(c->edge, key, key_len, r->copy, r->len, r->version,
                          min64(ttl_ms, c->cfg->edge_max_ttl_ms));
    if (rc < 0) {
        TC__INC(c->stats.edge.errors);
        tc__edge_remove(c->edge, key, key_len);
    } else if (rc > 0) {
        TC__INC(c->stats.edge.sets);
    }
}

static void fill_redis(tc_cache *c, const char *key, size_t key_len, const void *value,
                       size_t len, int64_t version, int64_t ttl_ms)
{
    if (c->redis == NULL)
        return;
    if (tc__redis_set(c->redis, key, key_len, value, len, version, ttl_ms) == TC_OK)
        TC__INC(c->stats.redis.sets);
    else
        TC__INC(c->stats.redis.errors);
}

static int check_get_args(tc_cache *c, const char *key, size_t key_len)
{
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "get: cache is NULL");
    fork_check(c);
    return tc__check_key(c, key, key_len);
}

/* The read path. On TC_OK the value is in r (r->copy when it was allocated). */
static int read_through(tc_cache *c, const char *key, size_t key_len, reader *r,
                        unsigned *source)
{
    int rc;
    if (c->edge != NULL) {
        rc = tc__edge_get(c->edge, key, key_len, deliver_edge, r);
        if (rc != TC_ENOTFOUND) {
            if (rc == TC_OK || rc == TC_ERANGE) {
                TC__INC(c->stats.edge.hits);
                *source = TC_SOURCE_EDGE;
            }
            return rc;
        }
        TC__INC(c->stats.edge.misses);
    }

    if (c->redis != NULL) {
        rc = tc__redis_get(c->redis, key, key_len, deliver_copy, r);
        if (rc == TC_OK) {
            TC__INC(c->stats.redis.hits);
            fill_edge(c, key, key_len, r, r->ttl_ms);
            *source = TC_SOURCE_REDIS;
            return TC_OK;
        }
        if (rc == TC_ENOMEM)
            return rc;
        /* A miss, or Redis down or confused: either way the store answers (slower, not wrong). */
        if (rc == TC_ENOTFOUND)
            TC__INC(c->stats.redis.misses);
        else
            TC__INC(c->stats.redis.errors);
    }

    rc = c->store->ops->get(c->store, key, key_len, deliver_copy, r);
    if (rc == TC_ENOTFOUND) {
        TC__INC(c->stats.store.misses);
        tc__err(c, TC_ENOTFOUND, "key not found");
        return rc;
    }
    if (rc != TC_OK) {
        if (rc == TC_ESTORE)
            TC__INC(c->stats.store.errors);
        return rc;
    }
    TC__INC(c->stats.store.hits);
    int64_t ttl = c->cfg->default_ttl_ms;
    fill_redis(c, key, key_len, r->copy, r->len, r->version, ttl);
    fill_edge(c, key, key_len, r, ttl);
    *source = TC_SOURCE_STORE;
    return TC_OK;
}

int tc_get_ex(void **out, size_t *out_len, unsigned *out_info, int64_t *out_version,
              tc_cache *c, const char *key, size_t key_len)
{
    if (out_info != NULL)
        *out_info = 0;
    if (out_version != NULL)
        *out_version = 0;
    if (out != NULL)
        *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (out == NULL || out_len == NULL)
        return tc__err(c, TC_EINVAL, "get: out or out_len is NULL");
    int rc = check_get_args(c, key, key_len);
    if (rc != TC_OK)
        return rc;
    reader r = {.c = c};
    unsigned source = 0;
    rc = read_through(c, key, key_len, &r, &source);
    if (rc != TC_OK) {
        free(r.copy);
        return rc;
    }
    *out = r.copy;
    *out_len = r.len;
    if (out_info != NULL)
        *out_info = source;
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
    /* A non-NULL buf tells the edge path to copy in place; a 0-byte buffer still needs one. */
    char dummy;
    reader r = {.c = c, .buf = buf ? buf : &dummy, .cap = buf_size};
    unsigned source = 0;
    rc = read_through(c, key, key_len, &r, &source);
    if (rc == TC_OK && r.copy != NULL) {
        /* A lower tier answered into an allocated copy. */
        if (r.len > buf_size)
            rc = TC_ERANGE;
        else if (r.len > 0)
            memcpy(buf, r.copy, r.len);
    }
    free(r.copy);
    if (rc == TC_OK || rc == TC_ERANGE)
        *out_len = r.len;
    if (rc == TC_ERANGE)
        tc__err(c, TC_ERANGE, "get_into: value is %zu bytes, buffer is %zu", r.len, buf_size);
    return rc;
}

/* ---- writes ------------------------------------------------------------------------------- */

static int check_write_args(tc_cache *c, const char *op, const char *key, size_t key_len)
{
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "%s: cache is NULL", op);
    fork_check(c);
    return tc__check_key(c, key, key_len);
}

int tc_put(tc_cache *c, const char *key, size_t key_len, const void *value, size_t value_len,
           int64_t ttl_ms)
{
    int rc = check_write_args(c, "put", key, key_len);
    if (rc != TC_OK)
        return rc;
    if (value == NULL && value_len > 0)
        return tc__err(c, TC_EINVAL, "put: value is NULL but value_len is %zu", value_len);
    if (ttl_ms < 0)
        return tc__err(c, TC_EINVAL, "put: ttl_ms is negative (%lld)", (long long)ttl_ms);
    /* Compared unsigned: a huge size_t must not turn negative and slip through. */
    if ((uint64_t)value_len > (uint64_t)c->cfg->max_value_bytes)
        return tc__err(c, TC_ETOOBIG, "put: value is %zu bytes, max_value_bytes is %lld",
                       value_len, (long long)c->cfg->max_value_bytes);
    if (value == NULL)
        value = "";
    if (ttl_ms == 0)
        ttl_ms = c->cfg->default_ttl_ms;

    int64_t version = 0;
    rc = c->store->ops->put(c->store, key, key_len, value, value_len, &version);
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
    fill_redis(c, key, key_len, value, value_len, version, ttl_ms);
    reader r = {.c = c, .copy = (void *)value, .len = value_len, .version = version};
    fill_edge(c, key, key_len, &r, ttl_ms);
    return TC_OK;
}

int tc_del(tc_cache *c, const char *key, size_t key_len)
{
    int rc = check_write_args(c, "del", key, key_len);
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
                           min64(tomb_ttl, c->cfg->edge_max_ttl_ms)) < 0) {
        TC__INC(c->stats.edge.errors);
        tc__edge_remove(c->edge, key, key_len);
    }
    return TC_OK;
}

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
                           min64(c->cfg->tombstone_ttl_ms, c->cfg->edge_max_ttl_ms)) < 0)
        tc__edge_remove(c->edge, key, key_len);
}

int tc_invalidate(tc_cache *c, const char *key, size_t key_len)
{
    int rc = check_write_args(c, "invalidate", key, key_len);
    if (rc != TC_OK)
        return rc;
    if (c->edge != NULL)
        edge_invalidate(c, key, key_len);
    if (c->redis != NULL) {
        rc = tc__redis_del(c->redis, key, key_len);
        if (rc != TC_OK) {
            TC__INC(c->stats.redis.errors);
            return rc;
        }
    }
    return TC_OK;
}

typedef struct pattern_ref {
    const char *p;
    size_t n;
} pattern_ref;

static int match_pattern(void *ctx, const char *key, size_t key_len)
{
    const pattern_ref *pat = ctx;
    return tc__pattern_match(pat->p, pat->n, key, key_len);
}

int tc_invalidate_pattern(int64_t *out_removed, tc_cache *c, const char *pattern,
                          size_t pattern_len)
{
    if (out_removed != NULL)
        *out_removed = 0;
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "invalidate_pattern: cache is NULL");
    fork_check(c);
    int rc = tc__pattern_check(c, pattern, pattern_len);
    if (rc != TC_OK)
        return rc;
    int64_t removed = 0;
    if (c->edge != NULL) {
        pattern_ref pat = {pattern, pattern_len};
        removed += tc__edge_remove_matching(c->edge, match_pattern, &pat);
    }
    if (c->redis != NULL) {
        int64_t n = 0;
        rc = tc__redis_invalidate_pattern(c->redis, pattern, pattern_len, &n);
        if (rc != TC_OK) {
            TC__INC(c->stats.redis.errors);
            return rc;
        }
        removed += n;
    }
    if (out_removed != NULL)
        *out_removed = removed;
    return TC_OK;
}

int tc_stats_json(char **out, tc_cache *c)
{
    if (out == NULL)
        return tc__err(c, TC_EINVAL, "stats: out is NULL");
    *out = NULL;
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "stats: cache is NULL");
    fork_check(c);
    return tc__stats_render(out, &c->stats, c->edge, c);
}

/* ---- the process-wide handle ------------------------------------------------------------- */

/* Published with release/acquire so the warm path is one atomic load and no lock; the mutex
 * only serialises the cold start, so exactly one handle is ever built. */
static _Atomic(tc_cache *) shared_handle;
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;
static atomic_llong shared_cold, shared_warm;

/* Held across fork() so the child never inherits the mutex locked by a thread that does not
 * exist there. */
static void shared_prefork(void)
{
    pthread_mutex_lock(&shared_mu);
}
static void shared_postfork(void)
{
    pthread_mutex_unlock(&shared_mu);
}
static void shared_init_once(void)
{
    pthread_atfork(shared_prefork, shared_postfork, shared_postfork);
}

void tc__shared_counts(int64_t *cold, int64_t *warm)
{
    *cold = TC__GET(shared_cold);
    *warm = TC__GET(shared_warm);
}

static int config_from_env(tc_config **out)
{
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return rc;
    const char *env = getenv("TIERCACHE_CONFIG");
    if (env != NULL) {
        const char *p = env;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '{')
            rc = tc_config_load_json(cfg, p, strlen(p));
        else if (*p != '\0')
            rc = tc_config_load_file(cfg, p);
        if (rc != TC_OK) {
            tc__err(NULL, rc, "TIERCACHE_CONFIG: %s", tc_config_errmsg(cfg));
            tc_config_free(cfg);
            return rc;
        }
    }
    *out = cfg;
    return TC_OK;
}

int tc_shared(tc_cache **out)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_shared: out is NULL");
    tc_cache *c = atomic_load_explicit(&shared_handle, memory_order_acquire);
    if (c != NULL) {
        TC__INC(shared_warm);
        *out = c;
        return TC_OK;
    }
    /* Register every atfork handler before taking shared_mu: glibc runs the prepare handlers
     * (ours locks shared_mu) under its own atfork lock, so registering one while holding
     * shared_mu would order the two locks both ways. */
    pthread_once(&shared_once, shared_init_once);
    (void)tc__fork_generation();
    pthread_mutex_lock(&shared_mu);
    c = atomic_load_explicit(&shared_handle, memory_order_relaxed);
    int rc = TC_OK;
    if (c != NULL) {
        TC__INC(shared_warm);
    } else {
        tc_config *cfg = NULL;
        rc = config_from_env(&cfg);
        if (rc == TC_OK)
            rc = tc_open(&c, cfg);
        tc_config_free(cfg);
        if (rc == TC_OK) {
            TC__INC(shared_cold);
            atomic_store_explicit(&shared_handle, c, memory_order_release);
        }
    }
    pthread_mutex_unlock(&shared_mu);
    *out = rc == TC_OK ? c : NULL;
    return rc;
}

void tc_shared_reset(void)
{
    pthread_mutex_lock(&shared_mu);
    tc_cache *c = atomic_exchange(&shared_handle, NULL);
    pthread_mutex_unlock(&shared_mu);
    tc_close(c);
}
