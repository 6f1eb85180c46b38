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
#include "common/bus.h"
#include "core/cache.h"
#include "http/cache_control.h"
#include "core/config.h"
#include "edge/edge_hit.h"
#include "http/http_headers.h"
#include "common/items.h"
#include "common/pattern.h"
#include "redis/pubsub.h"
#include "common/record.h"
#include "redis/redis_tier.h"
#include "core/refresh.h"
#include "core/singleflight.h"
#include "ext/stats.h"
#include "store/store.h"

#include <hiredis.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct tc_cache {
    tc_config *cfg;
    tc__edge *edge;   /* NULL when edge.enabled is false; emptied in a child after fork */
    tc__redis *redis; /* NULL when no Redis is configured */
    tc__pubsub *pubsub; /* subscriptions; NULL without Redis */
    /* The invalidation bus (bus.h). Writes publish on it when publish is set; the subscription
     * evicts what other handles' writes changed from this handle's edge. While it is not
     * confirmed (edge_synced 0) messages may be lost, so the edge is neither read nor filled,
     * and it is emptied before it is used again. */
    int publish;
    tc__sub *bus;
    atomic_int edge_synced;
    /* Bumped when the link goes down or up and before every unversioned eviction a message
     * asks for (a key, pattern or tag): a fill whose lower-tier read began under another
     * epoch is dropped, so a copy read before the eviction cannot land after it. */
    atomic_ullong edge_epoch;
    atomic_int publish_lost; /* a publish failed: a FLUSH goes out before the next message */
    char *bus_channel; /* namespace + redis.bus_channel, for PUBLISH */
    size_t bus_channel_len;
    unsigned char bus_id[TC__BUS_ID_LEN];
    tc__store *store;
    tc__refresher *refresher; /* stale-while-revalidate refreshes */
    tc__flights *flights;     /* one store read per key at a time */
    /* The miss leases this process's threads hold (lease_step), so that a fork()ed child can
     * tell whether its parent's other threads held any: those are theirs, and for as long as
     * they may live (lease_ms) the child reads the store rather than wait on them. */
    pthread_mutex_t leases_mu;
    struct lease *leases;
    atomic_llong lease_skip_until; /* tc__now_ms() before which no lease is taken or awaited */
    tc__stats stats;
    atomic_uint fork_gen; /* tc__fork_generation() the edge was last emptied in, or
                           * EDGE_REPAIRING while a child empties it */
};

#define EDGE_REPAIRING UINT_MAX

/* A child of fork() may have missed invalidations its parent would have seen later (invariant
 * 3), so its first call on the handle empties the edge it inherited. The edge itself is safe
 * to use in the child (edge.c holds its shards across fork()); the Redis tier and the store
 * repair their connections themselves. */
#if defined(__SANITIZE_THREAD__)
#define TC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TC_TSAN 1
#endif
#endif

static void leases_after_fork(tc_cache *c);

static void fork_repair(tc_cache *c, int resume)
{
    unsigned gen = tc__fork_generation();
    unsigned seen = atomic_load_explicit(&c->fork_gen, memory_order_acquire);
    while (seen != gen) {
        if (seen != EDGE_REPAIRING &&
            atomic_compare_exchange_strong(&c->fork_gen, &seen, EDGE_REPAIRING)) {
            if (c->bus != NULL) {
                /* Down until the child's own subscription is confirmed (bus_link). */
                atomic_store(&c->edge_synced, 0);
                atomic_fetch_add(&c->edge_epoch, 1);
            }
            /* The child's messages must not look like its parent's (each skips its own). */
            tc__bus_new_id(c->bus_id);
            tc__edge_clear(c->edge);
            tc__refresher_after_fork(c->refresher);
            tc__flights_after_fork(c->flights);
            leases_after_fork(c);
            tc__pubsub_after_fork(c->pubsub); /* the bus is down: the edge is not used */
#ifndef TC_TSAN
            /* ThreadSanitizer aborts a child of a multi-threaded process that starts a
             * thread: under it, a child goes without its bus (and so without its edge). */
            if (resume)
                tc__pubsub_resume(c->pubsub);
#endif
            atomic_store_explicit(&c->fork_gen, gen, memory_order_release);
            return;
        }
        sched_yield();
        seen = atomic_load_explicit(&c->fork_gen, memory_order_acquire);
    }
}

static void fork_check(tc_cache *c)
{
    fork_repair(c, 1);
}

void tc__cache_fork_check(tc_cache *c)
{
    fork_check(c);
}

void (*tc__hook_after_commit)(tc_cache *cache, const char *key, size_t key_len);
_Atomic(tc__store_hook) tc__hook_before_store_read;
_Atomic(tc__store_hook) tc__hook_before_flight_join;
_Atomic(tc__bus_hook) tc__hook_bus_applied;

tc__edge *tc__cache_edge(tc_cache *c)
{
    return c->edge;
}

tc__redis *tc__cache_redis(tc_cache *c)
{
    return c->redis;
}

const struct tc_config *tc__cache_config(tc_cache *c)
{
    return c->cfg;
}

struct tc__pubsub *tc__cache_pubsub(tc_cache *c)
{
    return c->pubsub;
}

struct tc__refresher *tc__cache_refresher(tc_cache *c)
{
    return c->refresher;
}

struct tc__flights *tc__cache_flights(tc_cache *c)
{
    return c->flights;
}

struct tc__store *tc__cache_store(tc_cache *c)
{
    return c->store;
}

static int bus_send(tc_cache *c, unsigned op, int64_t version, const char *arg,
                    size_t arg_len);
static int64_t min64(int64_t a, int64_t b);

int tc__cache_apply_change(tc_cache *c, const char *key, size_t key_len, int64_t version)
{
    fork_check(c);
    int rc = tc__check_key(c, key, key_len);
    if (rc != TC_OK)
        return rc == TC_EKEY ? TC_OK : rc; /* a key the library cannot hold was never cached */
    int64_t ttl = c->cfg->tombstone_ttl_ms;
    if (c->redis != NULL && (rc = tc__redis_retire(c->redis, key, key_len, version, ttl)) != TC_OK)
        return rc;
    if (c->edge != NULL &&
        tc__edge_retire(c->edge, key, key_len, version, min64(ttl, c->cfg->edge_max_ttl_ms)) < 0)
        tc__edge_remove(c->edge, key, key_len);
    /* Not bus_publish: a lost message must fail the change, so that it is applied again. */
    if (c->publish && (rc = bus_send(c, TC__BUS_CHANGED, version, key, key_len)) != TC_OK)
        return tc__err(c, rc, "invalidator: publish on the bus failed");
    return TC_OK;
}

int tc_version_number(void)
{
    return TC_VERSION_NUMBER;
}

const char *tc_version_string(void)
{
    return TC_VERSION_STRING;
}

static int refresh_key(void *owner, const char *key, size_t key_len, const void *job,
                       size_t job_len);

/* ---- the invalidation bus ------------------------------------------------------------------ */

static int64_t min64(int64_t a, int64_t b);

/* Tells the other handles what changed. A failure is counted, not reported: the write itself
 * succeeded, and the receivers' edges hold copies for at most edge.max_ttl_ms. */
static int bus_send(tc_cache *c, unsigned op, int64_t version, const char *arg,
                    size_t arg_len);

/* Tells the other handles what changed. A failure is counted, not reported (the write itself
 * succeeded), and remembered: before this handle's next message, a FLUSH tells every other
 * handle to empty its edge, since one of its copies may be the one the lost message named.
 * Until then, their copies live at most edge.max_ttl_ms. */
static void bus_publish(tc_cache *c, unsigned op, int64_t version, const char *arg,
                        size_t arg_len)
{
    if (!c->publish)
        return;
    if (atomic_load(&c->publish_lost)) {
        if (bus_send(c, TC__BUS_FLUSH, 0, "*", 1) != TC_OK)
            return; /* still lost; the flush covers this message too */
        atomic_store(&c->publish_lost, 0);
    }
    if (bus_send(c, op, version, arg, arg_len) != TC_OK)
        atomic_store(&c->publish_lost, 1);
}

static int bus_send(tc_cache *c, unsigned op, int64_t version, const char *arg,
                    size_t arg_len)
{
    unsigned char msg[TC__BUS_HEADER + TC_KEY_MAX];
    tc__bus_msg m = {.op = op, .version = version, .arg = arg, .arg_len = arg_len};
    memcpy(m.sender, c->bus_id, TC__BUS_ID_LEN);
    tc__bus_encode(msg, &m);
    const char *argv[] = {"PUBLISH", c->bus_channel, (const char *)msg};
    const size_t lens[] = {7, c->bus_channel_len, tc__bus_size(arg_len)};
    struct redisReply *reply = NULL;
    /* Idempotent as far as the receivers go: an invalidation applied twice is one. */
    int rc = tc__redis_run(c->redis, "PUBLISH", 1, 3, argv, lens, &reply);
    if (rc == TC_OK && (reply == NULL || reply->type != REDIS_REPLY_INTEGER))
        rc = TC_EPROTO;
    if (rc != TC_OK)
        TC__INC(c->stats.redis.errors);
    if (reply != NULL)
        freeReplyObject(reply);
    return rc;
}

static int match_pattern(void *ctx, const char *key, size_t key_len, const void *value,
                         size_t value_len, unsigned flags);
static int match_tag(void *ctx, const char *key, size_t key_len, const void *value,
                     size_t value_len, unsigned flags);

typedef struct pattern_ref {
    const char *p;
    size_t n;
} pattern_ref;

typedef struct tag_ref {
    const char *tag;
    size_t len;
} tag_ref;

/* On the subscriber thread: another handle's write. Its own are skipped: they updated this
 * edge already. A message that makes no sense is dropped. */
static void bus_message(void *ctx, const char *channel, size_t channel_len, const void *data,
                        size_t len)
{
    tc_cache *c = ctx;
    tc__bus_msg m;
    if (tc__bus_decode(&m, data, len) != TC_OK) {
        TC__INC(c->stats.redis.errors);
        return;
    }
    if (memcmp(m.sender, c->bus_id, TC__BUS_ID_LEN) == 0)
        return;
    /* Unversioned evictions void the fills whose reads began before them (fill_edge). The
     * epoch moves first: a fill that lands after the eviction walked its shard then sees it. */
    if (m.op != TC__BUS_CHANGED)
        atomic_fetch_add(&c->edge_epoch, 1);
    switch (m.op) {
    case TC__BUS_CHANGED:
        /* Copies older than the new version go. One of the very version stays: versions are
         * unique per write, so it is that write's value (filled from Redis after the write,
         * before its message arrived, or this message is the invalidator's for a write made
         * through the library). */
        if (tc__edge_retire(c->edge, m.arg, m.arg_len, m.version,
                            min64(c->cfg->tombstone_ttl_ms, c->cfg->edge_max_ttl_ms)) < 0)
            tc__edge_remove(c->edge, m.arg, m.arg_len);
        break;
    case TC__BUS_DROP:
        tc__edge_remove(c->edge, m.arg, m.arg_len);
        break;
    case TC__BUS_PATTERN:
        if (tc__pattern_check(NULL, m.arg, m.arg_len) == TC_OK) {
            pattern_ref pat = {m.arg, m.arg_len};
            tc__edge_remove_matching(c->edge, match_pattern, &pat);
        }
        break;
    case TC__BUS_TAG: {
        tag_ref t = {m.arg, m.arg_len};
        tc__edge_remove_matching(c->edge, match_tag, &t);
        break;
    }
    case TC__BUS_FLUSH:
        tc__edge_clear(c->edge);
        break;
    }
    tc__bus_hook hook = atomic_load(&tc__hook_bus_applied);
    if (hook != NULL)
        hook(c);
}

/* On the subscriber thread: while the subscription is down, messages may be lost. */
static void bus_link(void *ctx, int up)
{
    tc_cache *c = ctx;
    atomic_fetch_add(&c->edge_epoch, 1); /* fills begun before the change are dropped */
    if (!up) {
        atomic_store_explicit(&c->edge_synced, 0, memory_order_release);
        return;
    }
    /* Emptied before it is used again: what it holds may have been invalidated meanwhile. */
    tc__edge_clear(c->edge);
    atomic_store_explicit(&c->edge_synced, 1, memory_order_release);
}

static int bus_start(tc_cache *c)
{
    const tc_config *k = c->cfg;
    atomic_store(&c->edge_synced, 1);
    if (c->redis == NULL || !k->redis_bus)
        return TC_OK;
    size_t ns_len = strlen(k->redis_namespace), ch_len = strlen(k->redis_bus_channel);
    c->bus_channel = malloc(ns_len + ch_len + 1);
    if (c->bus_channel == NULL)
        return tc__err(NULL, TC_ENOMEM, "tc_open: out of memory");
    memcpy(c->bus_channel, k->redis_namespace, ns_len);
    memcpy(c->bus_channel + ns_len, k->redis_bus_channel, ch_len + 1);
    c->bus_channel_len = ns_len + ch_len;
    tc__bus_new_id(c->bus_id);
    c->publish = 1;
    if (c->edge == NULL)
        return TC_OK; /* nothing to evict here: publish only */
    atomic_store(&c->edge_synced, 0);
    /* Waiting for the first subscription makes a handle whose Redis is up use its edge from
     * the first call; with Redis down it goes on trying in the background. */
    int rc = tc__pubsub_subscribe(&c->bus, c->pubsub, k->redis_bus_channel, ch_len, bus_message,
                                  bus_link, c, 1);
    if (rc == TC_EREDIS)
        rc = tc__pubsub_subscribe(&c->bus, c->pubsub, k->redis_bus_channel, ch_len, bus_message,
                                  bus_link, c, 0);
    return rc;
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
    pthread_mutex_init(&c->leases_mu, NULL);
    int rc;
    if (cfg != NULL) {
        rc = tc__config_dup(&c->cfg, cfg);
    } else {
        rc = tc_config_new(&c->cfg);
    }
    if (rc != TC_OK)
        goto fail;
    const tc_config *k = c->cfg;

    if (k->user_store != NULL)
        rc = tc__store_user_open(&c->store, k->user_store, k->max_value_bytes, c);
    else if (strcmp(k->store_type, "postgres") == 0)
        rc = tc__store_pg_open(&c->store, k->store_conninfo, k->store_table, k->store_pool_size,
                               c);
    else
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
            .retry_max_ms = k->redis_retry_max_ms,
            .username = k->redis_username,
            .password = k->redis_password,
            .database = (int)k->redis_database,
            .keepalive = k->redis_keepalive,
            /* Records add their header (HTTP headers are bounded by tc_put_http). */
            .max_value_bytes = (size_t)k->max_value_bytes + 128 * 1024,
            .tombstone_ttl_ms = k->tombstone_ttl_ms,
        };
        rc = tc__redis_new(&c->redis, &o, c, &c->stats);
        if (rc != TC_OK)
            goto fail;
        /* The subscriber connects as the tier does; an idle one PINGs every second. */
        rc = tc__pubsub_new(&c->pubsub, &o, 1000, c);
        if (rc != TC_OK)
            goto fail;
    }
    rc = k->single_flight ? tc__flights_new(&c->flights) : TC_OK;
    if (rc != TC_OK) {
        tc__err(NULL, rc, "tc_open: out of memory");
        goto fail;
    }
    rc = tc__refresher_new(&c->refresher, refresh_key, c, 64);
    if (rc != TC_OK) {
        tc__err(NULL, rc, "tc_open: out of memory");
        goto fail;
    }
    rc = bus_start(c);
    if (rc != TC_OK)
        goto fail;
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
    fork_repair(c, 0); /* in a fork()ed child, forget the parent's threads (start none) */
    tc__pubsub_free(c->pubsub);       /* no callback runs after this */
    free(c->bus_channel);
    tc__refresher_free(c->refresher); /* its thread uses the tiers */
    tc__flights_free(c->flights);
    tc__redis_free(c->redis);
    tc__edge_free(c->edge);
    if (c->store != NULL)
        c->store->ops->close(c->store);
    tc_config_free(c->cfg);
    pthread_mutex_destroy(&c->leases_mu);
    free(c);
}

/* ---- records in the caches ------------------------------------------------------------- */

/* The caches hold records (record.h): the value behind a one-byte header, or an HTTP
 * response's caching headers too. Encodes r into a new buffer. */
static int rec_alloc(tc_cache *c, const tc__rec *r, void **out, size_t *out_len)
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

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* The edge may be read and filled: it exists and has missed no invalidation the bus carries. */
static int edge_usable(tc_cache *c)
{
    return c->edge != NULL && atomic_load_explicit(&c->edge_synced, memory_order_acquire);
}

static int64_t add_sat64(int64_t a, int64_t b)
{
    return b > 0 && a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* How long the caches keep an HTTP record: while fresh, then through its stale windows. One
 * that is stale at once and may not be served stale is kept for default_ttl_ms anyway: its
 * headers are what the next revalidation keeps. */
static int64_t http_cache_ttl(const tc_cache *c, const tc__rec *r, int64_t now)
{
    int64_t fresh = r->fresh_until_ms > now ? r->fresh_until_ms - now : 0;
    int64_t ttl = add_sat64(fresh, r->swr_ms > r->sie_ms ? r->swr_ms : r->sie_ms);
    return ttl > 0 ? ttl : c->cfg->default_ttl_ms;
}

/* The edge keeps a plain value bare, so that a hit copies it straight into the caller's buffer
 * (tc__edge_get_into), and an HTTP record whole, flagged EDGE_HTTP. */
#define EDGE_HTTP 1u
/* A negative entry: the store had no such key (negative_ttl_ms); its value is empty and its
 * version 0, so any real version (a put, a del's tombstone, a bus message) replaces it. */
#define EDGE_NEGATIVE 2u
/* deliver_edge's answer for a negative entry. */
#define READ_NEGATIVE 3

/* An edge entry never outlives the Redis copy it came from (invariant 4), nor edge.max_ttl_ms. */
/* The epoch of a write's own fill: its value is the newest committed, never one read before
 * an eviction, so it always replaces what the edge holds (read-your-writes). */
#define EPOCH_WRITE UINT64_MAX

static void fill_edge(tc_cache *c, const char *key, size_t key_len, const void *data,
                      size_t len, unsigned flags, int64_t version, int64_t ttl_ms,
                      uint64_t epoch)
{
    if (!edge_usable(c) || (epoch != EPOCH_WRITE && atomic_load(&c->edge_epoch) != epoch))
        return;
    int rc = tc__edge_set_flags(c->edge, key, key_len, data, len, version,
                                min64(ttl_ms, c->cfg->edge_max_ttl_ms), flags);
    /* An eviction bumps the epoch before it walks the shards: one that missed this copy
     * shows here, and the copy goes. */
    if (rc > 0 && epoch != EPOCH_WRITE && atomic_load(&c->edge_epoch) != epoch) {
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
static void fill_edge_rec(tc_cache *c, const char *key, size_t key_len, const void *rec,
                          size_t rec_len, int64_t version, int64_t ttl_ms, uint64_t epoch)
{
    const unsigned char *p = rec;
    if (rec_len >= 1 && p[0] == TC__REC_PLAIN)
        fill_edge(c, key, key_len, p + 1, rec_len - 1, 0, version, ttl_ms, epoch);
    else
        fill_edge(c, key, key_len, rec, rec_len, EDGE_HTTP, version, ttl_ms, epoch);
}

/* A negative entry (negative_ttl_ms) in the edge, for ttl_ms. */
static void fill_edge_negative(tc_cache *c, const char *key, size_t key_len, int64_t ttl_ms,
                               uint64_t epoch)
{
    if (ttl_ms > 0)
        fill_edge(c, key, key_len, "", 0, EDGE_NEGATIVE, 0, ttl_ms, epoch);
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
    if (announced != NULL && c->publish && !atomic_load(&c->publish_lost)) {
        unsigned char msg[TC__BUS_HEADER + TC_KEY_MAX];
        tc__bus_msg m = {.op = TC__BUS_CHANGED, .version = version, .arg = key,
                         .arg_len = key_len};
        memcpy(m.sender, c->bus_id, TC__BUS_ID_LEN);
        tc__bus_encode(msg, &m);
        rc = tc__redis_set_publish(c->redis, key, key_len, rec, rec_len, version, ttl_ms,
                                   c->bus_channel, c->bus_channel_len, msg,
                                   tc__bus_size(key_len));
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
static int fill_caches(tc_cache *c, const char *key, size_t key_len, const tc__rec *r,
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
                         .fresh_until_ms = add_sat64(now, ttl_ms), .lifetime_ms = ttl_ms,
                         .sie_ms = window, .value = r->value, .value_len = r->value_len};
        r = &kept;
        ttl_ms = add_sat64(ttl_ms, window);
    }
    void *rec = NULL;
    size_t rec_len = 0;
    int rc = rec_alloc(c, r, &rec, &rec_len);
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
        fill_edge(c, key, key_len, rec, rec_len, EDGE_HTTP, version, ttl_ms, epoch);
    else
        fill_edge(c, key, key_len, r->value, r->value_len, 0, version, ttl_ms, epoch);
    if (announced == NULL) {
        if (between != NULL)
            between(between_arg);
        fill_redis(c, key, key_len, rec, rec_len, r, version, ttl_ms, NULL);
    }
    free(rec);
    return TC_OK;
}

/* A stale HTTP record revalidated against the store's value: the same headers (ETag and
 * Last-Modified only if the store still has the version they described), fresh again for the
 * same lifetime from now. */
static void revalidated(tc__rec *out, const tc__rec *old, int64_t old_version,
                        const void *value, size_t len, int64_t version, int64_t now)
{
    *out = *old;
    out->date_ms = now;
    out->fresh_until_ms = add_sat64(now, old->lifetime_ms);
    if (version != old_version) {
        out->etag_len = out->last_modified_len = 0;
    }
    out->value = value;
    out->value_len = len;
}

/* ---- get ---------------------------------------------------------------------------------- */

/* A reader flag of tc_get_many's: the caches were asked already, the read starts at the store. */
#define READ_STORE_ONLY 0x100u

/* Where a read delivers, and what it found. */
typedef struct reader {
    tc_cache *c;
    void *buf;      /* caller's buffer (tc_get_into), or NULL to allocate */
    size_t cap;
    unsigned flags; /* TC_HTTP_ONLY_IF_CACHED */
    /* The result. */
    void *copy;     /* the value, allocated (when buf is NULL) */
    size_t len;
    int64_t version;
    unsigned state; /* TC_HTTP_* */
    void *rec;      /* the HTTP record behind the value (allocated), NULL for a plain one */
    size_t rec_len;
    /* A tier's bytes on their way up (a record, or the store's value), allocated. */
    void *raw;
    size_t raw_len;
    int64_t raw_version, raw_ttl;
    unsigned edge_flags; /* the flags of the edge entry being read */
    int64_t tomb_version; /* a tombstone the edge holds for the key, -1 for none */
    uint64_t epoch;       /* edge_epoch when the read began (fill_edge) */
} reader;

static int deliver_value(reader *r, const void *data, size_t len)
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
 * caller as it is (take_raw). */
static int keep_raw(reader *r, const void *data, size_t len, int64_t version, int64_t ttl)
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
static int deliver_edge(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    reader *r = ctx;
    r->version = version;
    if (r->edge_flags == 0)
        return deliver_value(r, data, len);
    if (r->edge_flags & EDGE_NEGATIVE)
        return READ_NEGATIVE;
    return keep_raw(r, data, len, version, ttl);
}

/* Lower tiers always hand over a copy: the upper tiers are filled from it after the tier's
 * reply or statement is released (never while holding a connection or a database lock). */
static int deliver_copy(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    return keep_raw(ctx, data, len, version, ttl);
}

/* The value is r->raw from byte skip on: hand it over without another copy when the caller
 * takes an allocated value. */
static int take_raw(reader *r, size_t skip)
{
    if (r->buf != NULL)
        return deliver_value(r, (char *)r->raw + skip, r->raw_len - skip);
    char *p = r->raw;
    if (skip > 0)
        memmove(p, p + skip, r->raw_len - skip + 1); /* with its NUL */
    free(r->copy);
    r->copy = p;
    r->len = r->raw_len - skip;
    r->raw = NULL;
    return TC_OK;
}

/* Takes r->raw as the value's HTTP record. */
static void adopt_rec(reader *r)
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
static int judge_http(tc_cache *c, const char *key, size_t key_len, reader *r, int from_redis,
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
        fill_edge(c, key, key_len, r->raw, r->raw_len, EDGE_HTTP, version, r->raw_ttl,
                  r->epoch);
    int rc = deliver_value(r, rec->value, rec->value_len);
    if (rc != TC_OK)
        return rc;
    r->version = version;
    r->state = fresh ? TC_HTTP_FRESH
                     : stale != TC__STALE_NO ? TC_HTTP_STALE : TC_HTTP_MUST_REVALIDATE;
    if (!fresh && !only_cached)
        start_refresh(c, key, key_len, rec, version);
    adopt_rec(r);
    return 1;
}

/* A key the store lacks, remembered for negative_ttl_ms: in Redis (so that other processes do
 * not ask their store either) and in this edge. */
static void fill_negative(tc_cache *c, const char *key, size_t key_len, uint64_t epoch)
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
    fill_edge_negative(c, key, key_len, ttl, epoch);
}

/* The miss lease across processes (lease_ms): what lease_step found. */
enum {
    LEASE_NONE,        /* no lease: read the store */
    LEASE_HELD,        /* this process holds it: read the store, fill, release */
    LEASE_PEER_VALUE,  /* the holder filled Redis: r->raw is the value, no store read */
    LEASE_PEER_ABSENT, /* the holder found no such key (a negative record) */
};
typedef struct lease {
    int state;
    int64_t ttl_ms; /* LEASE_PEER_*: the remaining life of what the holder filled */
    char token[16];
    struct lease *next; /* LEASE_HELD: in c->leases */
    pthread_t holder;
} lease;

/* Like the flights list, walkable at any instant a fork catches (one pointer store per change),
 * and the leases it links live on their holders' stacks, which the child has copies of. A
 * lease the forking thread holds stays: it releases it in the child as in the parent. */
static void leases_after_fork(tc_cache *c)
{
    (void)tc__mutex_after_fork(&c->leases_mu);
    int others = 0;
    for (lease **p = &c->leases; *p != NULL;) {
        if (tc__is_forking_thread((*p)->holder)) {
            p = &(*p)->next;
        } else {
            others = 1;
            *p = (*p)->next;
        }
    }
    if (others)
        atomic_store(&c->lease_skip_until, add_sat64(tc__now_ms(), c->cfg->lease_ms));
}

static void lease_hold(tc_cache *c, lease *ls)
{
    ls->state = LEASE_HELD;
    ls->holder = pthread_self();
    pthread_mutex_lock(&c->leases_mu);
    ls->next = c->leases;
    c->leases = ls;
    pthread_mutex_unlock(&c->leases_mu);
}

/* A token no other holder has: 16 random bytes (a counter and the clock if getrandom fails). */
static void lease_token(char *token)
{
    if (getrandom(token, 16, GRND_NONBLOCK) == 16)
        return;
    static atomic_ullong counter;
    uint64_t a = atomic_fetch_add(&counter, 1) ^ ((uint64_t)getpid() << 32);
    uint64_t b = (uint64_t)tc__wall_ms() ^ (uint64_t)(uintptr_t)token;
    memcpy(token, &a, 8);
    memcpy(token + 8, &b, 8);
}

/* Takes the key's lease, or waits (up to lease_wait_ms, polling with a growing pause) for its
 * holder's fill. Any Redis failure, an expired wait, or a fill this reader cannot take as it is
 * (an HTTP record, which the single-key path judges) leaves LEASE_NONE: the store is read, as
 * without a lease (slower, never wrong). */
static void lease_step(tc_cache *c, const char *key, size_t key_len, reader *r, lease *ls)
{
    if (tc__now_ms() < atomic_load_explicit(&c->lease_skip_until, memory_order_relaxed))
        return; /* a child whose parent's threads held leases (leases_after_fork) */
    lease_token(ls->token);
    int64_t deadline = add_sat64(tc__wall_ms(), c->cfg->lease_wait_ms);
    unsigned pause_us = 250;
    for (;;) {
        int rc = tc__redis_lease(c->redis, key, key_len, ls->token, sizeof ls->token,
                                 c->cfg->lease_ms, deliver_copy, r);
        if (rc == TC__LEASE_TAKEN) {
            TC__INC(c->stats.leases);
            lease_hold(c, ls);
            return;
        }
        if (rc == TC_OK) {
            const unsigned char *p = r->raw;
            /* A fill older than a tombstone this edge holds is a late one: not taken. */
            if (r->raw_version >= r->tomb_version && r->raw_len >= 1) {
                ls->ttl_ms = r->raw_ttl;
                if (r->raw_len == 1 && p[0] == TC__REC_NEGATIVE) {
                    ls->state = LEASE_PEER_ABSENT;
                    return;
                }
                if (p[0] == TC__REC_PLAIN) {
                    memmove(r->raw, p + 1, r->raw_len); /* with its NUL */
                    r->raw_len--;
                    ls->state = LEASE_PEER_VALUE;
                    return;
                }
            }
            free(r->raw);
            r->raw = NULL;
            return;
        }
        /* TC_ENOTFOUND: a value that expired between the script's look and ours; the next
         * look sees it expired and takes the lease, or finds the next holder's. */
        if ((rc != TC__LEASE_BUSY && rc != TC_ENOTFOUND) || tc__wall_ms() >= deadline)
            return;
        if (rc == TC_ENOTFOUND)
            continue;
        TC__INC(c->stats.lease_waits);
        struct timespec ts = {0, (long)pause_us * 1000};
        nanosleep(&ts, NULL);
        if (pause_us < 4000)
            pause_us *= 2;
    }
}

static void lease_release(tc_cache *c, const char *key, size_t key_len, lease *ls)
{
    if (ls->state != LEASE_HELD)
        return;
    pthread_mutex_lock(&c->leases_mu);
    for (lease **p = &c->leases; *p != NULL; p = &(*p)->next) {
        if (*p == ls) {
            *p = ls->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->leases_mu);
    ls->state = LEASE_NONE;
    tc__redis_unlease(c->redis, key, key_len, ls->token, sizeof ls->token);
}

/* Every read of the store, the read path's and the refresher's, with the tests' hook. */
static int store_get(tc_cache *c, const char *key, size_t key_len, reader *r)
{
    tc__store_hook hook = atomic_load(&tc__hook_before_store_read);
    if (hook != NULL)
        hook(c, key, key_len);
    return c->store->ops->get(c->store, key, key_len, deliver_copy, r);
}

static int check_get_args(tc_cache *c, const char *key, size_t key_len)
{
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "get: cache is NULL");
    fork_check(c);
    return tc__check_key(c, key, key_len);
}

/* What every get that returns an allocated value checks first: the outputs are reset, then
 * must be there, then the handle and key. */
static int begin_get(void **out, size_t *out_len, tc_cache *c, const char *what, const char *key,
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
static void land(tc_cache *c, tc__flight **fl, int rc, const reader *r)
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
    const reader *r;
} landing;

static void land_ok(void *arg)
{
    landing *lg = arg;
    land(lg->c, lg->fl, TC_OK, lg->r);
}

/* The read path. On TC_OK the value is in r. */
static int read_through(tc_cache *c, const char *key, size_t key_len, reader *r,
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
    if (r->flags & READ_STORE_ONLY)
        goto store;
    if (edge_usable(c)) {
        rc = TC__EDGE_FLAGGED;
        if (r->buf != NULL) /* tc_get_into: a plain value is copied in without a callback */
            rc = tc__edge_get_into(c->edge, key, key_len, r->buf, r->cap, &r->len, &r->version,
                                   &r->tomb_version);
        if (rc == TC__EDGE_FLAGGED)
            rc = tc__edge_get_flags(c->edge, key, key_len, deliver_edge, r, &r->edge_flags,
                                    &r->tomb_version);
        if (rc == READ_NEGATIVE) {
            /* Remembered as absent: no lower tier is asked until it expires. */
            TC__INC(c->stats.edge.misses);
            return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
        }
        if (rc == TC_OK && r->raw != NULL) {
            rc = judge_http(c, key, key_len, r, 0, &rec);
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
        rc = tc__redis_get(c->redis, key, key_len, deliver_copy, r);
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
                fill_edge_negative(c, key, key_len, r->raw_ttl, r->epoch);
                TC__INC(c->stats.redis.hits);
                free(fallback);
                return tc__err(c, TC_ENOTFOUND, "key not found (remembered for negative_ttl_ms)");
            }
            if (r->raw_len >= 1 && p[0] == TC__REC_PLAIN) {
                fill_edge(c, key, key_len, p + 1, r->raw_len - 1, 0, r->raw_version, r->raw_ttl,
                          r->epoch);
                r->version = r->raw_version;
                rc = take_raw(r, 1);
            } else {
                rc = judge_http(c, key, key_len, r, 1, &rec);
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
    lease ls = {.state = LEASE_NONE};
    int refound = 0;
    if (leader && fl != NULL && fallback == NULL && edge_usable(c)) {
        /* The previous flight of this key may have landed between this reader's miss and its
         * join, and a flight lands after its fill: then the edge has the answer now (a plain
         * value, or the key's absence). Not for HTTP records (stale-while-revalidate and
         * stale-if-error judge those): they read the store as before. Counted as the miss the
         * first look was. */
        unsigned ef = 0;
        int prc = tc__edge_peek(c->edge, key, key_len, deliver_copy, r, &ef);
        if (prc == TC_OK && (ef & EDGE_NEGATIVE)) {
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
            lease_step(c, key, key_len, r, &ls);
        if (ls.state == LEASE_PEER_VALUE) {
            rc = TC_OK;
        } else if (ls.state == LEASE_PEER_ABSENT) {
            rc = TC_ENOTFOUND;
        } else {
            rc = store_get(c, key, key_len, r);
        }
    }
    /* A leader lands its flight once the edge is filled (a reader arriving later finds the
     * value there: see refound), or at once if there is nothing to fill. */
    if (rc == TC_ENOTFOUND) {
        free(fallback);
        if (ls.state == LEASE_PEER_ABSENT) {
            fill_edge_negative(c, key, key_len, ls.ttl_ms, r->epoch);
        } else {
            TC__INC(c->stats.store.misses);
            if (!follower)
                fill_negative(c, key, key_len, r->epoch);
        }
        land(c, &fl, rc, r);
        lease_release(c, key, key_len, &ls);
        tc__err(c, TC_ENOTFOUND, "key not found");
        return rc;
    }
    if (rc != TC_OK) {
        land(c, &fl, rc, r);
        lease_release(c, key, key_len, &ls);
    }
    if (rc != TC_OK) {
        if (rc == TC_ESTORE)
            TC__INC(c->stats.store.errors);
        /* stale-if-error: the store failed, a stale copy inside its window is served. */
        int stale = TC__STALE_NO;
        if (fallback != NULL && tc__rec_decode(&rec, fallback, fallback_len) == TC_OK &&
            !tc__rec_fresh(&rec, tc__wall_ms(), &stale) && stale != TC__STALE_NO) {
            int drc = deliver_value(r, rec.value, rec.value_len);
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
    if (!follower && ls.state != LEASE_PEER_VALUE)
        TC__INC(c->stats.store.hits);
    r->version = r->raw_version;
    *source = refound                          ? TC_SOURCE_EDGE
              : ls.state == LEASE_PEER_VALUE ? TC_SOURCE_REDIS
                                             : TC_SOURCE_STORE;
    int64_t now = tc__wall_ms();
    tc__rec fresh = {.kind = TC__REC_PLAIN, .value = r->raw, .value_len = r->raw_len};
    int64_t ttl = c->cfg->default_ttl_ms;
    /* The kept headers describe the version they came with: a newer value (written in plain
     * SQL, or put by another process whose record Redis lost) comes back plain. */
    if (fallback != NULL && fallback_version == r->raw_version &&
        tc__rec_decode(&rec, fallback, fallback_len) == TC_OK && rec.kind == TC__REC_HTTP) {
        revalidated(&fresh, &rec, fallback_version, r->raw, r->raw_len, r->raw_version, now);
        ttl = http_cache_ttl(c, &fresh, now);
    }
    if (ls.state == LEASE_PEER_VALUE) /* Redis has it: only this edge is filled */
        fill_edge(c, key, key_len, r->raw, r->raw_len, 0, r->raw_version, ls.ttl_ms, r->epoch);
    else if (!follower) { /* the leader filled them */
        landing lg = {c, &fl, r};
        fill_caches(c, key, key_len, &fresh, r->raw_version, ttl, r->epoch, NULL, land_ok, &lg);
    }
    land(c, &fl, TC_OK, r); /* if the fill did not */
    lease_release(c, key, key_len, &ls); /* after the fill: a waiter now finds the value */
    if (fresh.kind == TC__REC_HTTP) {
        tc__rec header = fresh;
        header.value_len = 0;
        void *h = NULL;
        size_t hl = 0;
        if (rec_alloc(c, &header, &h, &hl) == TC_OK) {
            r->rec = h;
            r->rec_len = hl;
        }
    }
    free(fallback);
    return take_raw(r, 0);
}

static void reader_done(reader *r)
{
    free(r->raw);
    free(r->rec);
}

int tc_get_ex(void **out, size_t *out_len, unsigned *out_info, int64_t *out_version,
              tc_cache *c, const char *key, size_t key_len)
{
    if (out_info != NULL)
        *out_info = 0;
    if (out_version != NULL)
        *out_version = 0;
    int rc = begin_get(out, out_len, c, "get", key, key_len);
    if (rc != TC_OK)
        return rc;
    reader r = {.c = c};
    unsigned source = 0;
    rc = read_through(c, key, key_len, &r, &source);
    reader_done(&r);
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
    reader r = {.c = c, .buf = buf ? buf : &dummy, .cap = buf_size};
    unsigned source = 0;
    rc = read_through(c, key, key_len, &r, &source);
    reader_done(&r);
    if (rc == TC_OK || rc == TC_ERANGE)
        *out_len = r.len;
    if (rc == TC_ERANGE)
        tc__err(c, TC_ERANGE, "get_into: value is %zu bytes, buffer is %zu", r.len, buf_size);
    return rc;
}

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
    if (h->edge_flags & EDGE_NEGATIVE)
        return READ_NEGATIVE;
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
        fill_edge_negative(m->c, m->keys[i], m->key_lens[i], ttl, m->epoch);
        m->state[i] = MANY_DONE; /* known absent: the item keeps no value */
    } else if (len >= 1 && p[0] == TC__REC_PLAIN) {
        fill_edge(m->c, m->keys[i], m->key_lens[i], p + 1, len - 1, 0, version, ttl, m->epoch);
        if (tc__items_set_value(m->items, i, p + 1, len - 1) != TC_OK)
            return TC_ENOMEM;
        m->state[i] = MANY_DONE;
    } else if (tc__rec_decode(&rec, data, len) == TC_OK && tc__rec_fresh(&rec, tc__wall_ms(),
                                                                         &stale)) {
        fill_edge(m->c, m->keys[i], m->key_lens[i], data, len, EDGE_HTTP, version, ttl,
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

/* One key through read_through (from the store, or the whole path); the value into the list. */
static int many_one(many *m, size_t i, unsigned flags)
{
    reader r = {.c = m->c, .flags = flags};
    unsigned source = 0;
    int rc = read_through(m->c, m->keys[i], m->key_lens[i], &r, &source);
    reader_done(&r);
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
        if (!edge_usable(c))
            continue;
        many_edge_hit h = {m, i, 0};
        int64_t tomb = -1;
        rc = tc__edge_get_flags(c->edge, m->keys[i], m->key_lens[i], many_edge, &h,
                                &h.edge_flags, &tomb);
        if (rc == TC_ENOMEM)
            return tc__err(c, TC_ENOMEM, "get_many: out of memory");
        if (rc == TC_OK || rc == READ_NEGATIVE) {
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
    for (size_t i = 0; i < n; i++) {
        if (m->state[i] == MANY_DONE)
            continue;
        if (m->state[i] == MANY_STORE && c->redis != NULL)
            TC__INC(c->stats.redis.misses);
        rc = many_one(m, i, m->state[i] == MANY_FULL ? 0 : READ_STORE_ONLY);
        if (rc != TC_OK)
            return rc;
    }
    return TC_OK;
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
    fork_check(c);
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

int tc_get_http(void **out, size_t *out_len, unsigned *out_state, int64_t *out_age_s,
                char **out_headers, tc_cache *c, const char *key, size_t key_len,
                unsigned flags)
{
    if (out_state != NULL)
        *out_state = 0;
    if (out_age_s != NULL)
        *out_age_s = 0;
    if (out_headers != NULL)
        *out_headers = NULL;
    int rc = begin_get(out, out_len, c, "get_http", key, key_len);
    if (rc == TC_OK && (flags & ~TC_HTTP_ONLY_IF_CACHED))
        return tc__err(c, TC_EINVAL, "get_http: unknown flags 0x%x", flags);
    if (rc != TC_OK)
        return rc;
    reader r = {.c = c, .flags = flags};
    unsigned source = 0;
    rc = read_through(c, key, key_len, &r, &source);
    int64_t age_s = 0;
    char *headers = NULL;
    tc__rec rec;
    if (rc == TC_OK) {
        int http = r.rec != NULL && tc__rec_decode(&rec, r.rec, r.rec_len) == TC_OK &&
                   rec.kind == TC__REC_HTTP;
        if (http) {
            int64_t now = tc__wall_ms();
            /* Saturating: a damaged record from Redis may hold any date. */
            age_s = rec.date_ms < 0 || now <= rec.date_ms ? 0 : (now - rec.date_ms) / 1000;
        }
        headers = tc__http_block(http ? &rec : NULL, age_s);
        if (headers == NULL)
            rc = tc__err(c, TC_ENOMEM, "get_http: out of memory for the headers");
    }
    reader_done(&r);
    if (rc != TC_OK) {
        free(r.copy);
        return rc;
    }
    *out = r.copy;
    *out_len = r.len;
    if (out_state != NULL)
        *out_state = r.state;
    if (out_age_s != NULL)
        *out_age_s = age_s;
    if (out_headers != NULL)
        *out_headers = headers;
    else
        free(headers);
    return TC_OK;
}

/* The background refresh of a record served inside stale-while-revalidate: the read-through
 * path below the edge. A reader that saw the stale copy just before a refresh ended may ask
 * again: a fresh copy in the edge or in Redis (another process refreshed it) then ends the job
 * without asking the store, so the store is asked once. */
static int fresh_in(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    reader *r = ctx;
    tc__rec rec;
    int stale;
    r->raw_version = version;
    if (r->edge_flags == 0)
        return TC_OK; /* a plain value put since: nothing to refresh */
    return tc__rec_decode(&rec, data, len) == TC_OK && tc__rec_fresh(&rec, tc__wall_ms(), &stale)
               ? TC_OK
               : TC_ENOTFOUND;
}

static int refresh_key(void *owner, const char *key, size_t key_len, const void *job,
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
    reader r = {.c = c, .epoch = epoch};
    if (edge_usable(c) &&
        tc__edge_get_flags(c->edge, key, key_len, fresh_in, &r, &r.edge_flags, NULL) == TC_OK &&
        r.raw_version >= old_version)
        return 0;
    tc__rec rec;
    int stale;
    /* In Redis, a newer version (another writer's, with its own headers) or a fresh copy of
     * this one (another process refreshed it) ends the job. */
    if (c->redis != NULL &&
        tc__redis_get(c->redis, key, key_len, deliver_copy, &r) == TC_OK &&
        tc__rec_decode(&rec, r.raw, r.raw_len) == TC_OK &&
        (r.raw_version > old_version ||
         (r.raw_version == old_version && tc__rec_fresh(&rec, tc__wall_ms(), &stale)))) {
        fill_edge_rec(c, key, key_len, r.raw, r.raw_len, r.raw_version, r.raw_ttl, epoch);
        reader_done(&r);
        return 0;
    }
    free(r.raw);
    r.raw = NULL;
    int done = 0;
    if (store_get(c, key, key_len, &r) == TC_OK) {
        TC__INC(c->stats.store.hits);
        int64_t now = tc__wall_ms();
        int64_t ttl = c->cfg->default_ttl_ms;
        if (r.raw_version == old_version) {
            revalidated(&rec, &old, old_version, r.raw, r.raw_len, r.raw_version, now);
            ttl = http_cache_ttl(c, &rec, now);
        } else {
            /* A newer value: the old headers do not describe it. */
            rec = (tc__rec){.kind = TC__REC_PLAIN, .value = r.raw, .value_len = r.raw_len};
        }
        fill_caches(c, key, key_len, &rec, r.raw_version, ttl, epoch, NULL, NULL, NULL);
        done = 1;
    }
    reader_done(&r);
    return done;
}

/* ---- writes ------------------------------------------------------------------------------- */

static int check_write_args(tc_cache *c, const char *op, const char *key, size_t key_len)
{
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "%s: cache is NULL", op);
    fork_check(c);
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
    fill_caches(c, key, key_len, r, version, ttl_ms, EPOCH_WRITE, &announced, NULL, NULL);
    if (!announced)
        bus_publish(c, TC__BUS_CHANGED, version, key, key_len);
    return TC_OK;
}

int tc_put(tc_cache *c, const char *key, size_t key_len, const void *value, size_t value_len,
           int64_t ttl_ms)
{
    int rc = check_write_args(c, "put", key, key_len);
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
    int rc = check_write_args(c, "put_http", key, key_len);
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
    tc__freshness f;
    tc__freshness_compute(&f, v[TC__H_CC], l[TC__H_CC], v[TC__H_EXPIRES], l[TC__H_EXPIRES], v[TC__H_DATE],
                          l[TC__H_DATE], v[TC__H_AGE], l[TC__H_AGE], now, now);
    if (!f.storable) {
        /* A shared cache may not store it; nothing older may be served in its place. */
        free(buf);
        return tc_del(c, key, key_len);
    }
    tc__rec r = {
        .kind = TC__REC_HTTP,
        .flags = (f.must_revalidate ? TC__REC_MUST_REVALIDATE : 0) |
                 (f.no_cache ? TC__REC_NO_CACHE : 0) | (f.immutable ? TC__REC_IMMUTABLE : 0),
        .date_ms = now - f.age_ms,
        .lifetime_ms = f.explicit_lifetime ? f.lifetime_ms : c->cfg->default_ttl_ms,
        .swr_ms = f.swr_ms,
        .sie_ms = f.sie_ms,
        .etag = v[TC__H_ETAG], .etag_len = l[TC__H_ETAG],
        .last_modified = v[TC__H_LM], .last_modified_len = l[TC__H_LM],
        .cache_control = v[TC__H_CC], .cache_control_len = l[TC__H_CC],
        .tags = v[TC__H_TAGS], .tags_len = l[TC__H_TAGS],
        .value = value ? value : "",
        .value_len = value_len,
    };
    r.fresh_until_ms = add_sat64(now, f.explicit_lifetime ? f.ttl_ms : c->cfg->default_ttl_ms);
    rc = write_through(c, key, key_len, &r, http_cache_ttl(c, &r, now));
    free(buf);
    if (rc == TC_OK && out_stored != NULL)
        *out_stored = 1;
    return rc;
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
    bus_publish(c, TC__BUS_CHANGED, version, key, key_len);
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
        if (rc != TC_OK)
            TC__INC(c->stats.redis.errors);
    }
    bus_publish(c, TC__BUS_DROP, 0, key, key_len);
    return rc;
}

static int match_pattern(void *ctx, const char *key, size_t key_len, const void *value,
                         size_t value_len, unsigned flags)
{
    const pattern_ref *pat = ctx;
    return tc__pattern_match(pat->p, pat->n, key, key_len);
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
    bus_publish(c, op, 0, arg, len);
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
    fork_check(c);
    int rc = tc__pattern_check(c, pattern, pattern_len);
    if (rc != TC_OK)
        return rc;
    pattern_ref pat = {pattern, pattern_len};
    return invalidate_many(out_removed, c, pattern, pattern_len, tc__redis_invalidate_pattern,
                           match_pattern, &pat, TC__BUS_PATTERN);
}

static int tag_is(void *ctx, const char *tag, size_t tag_len)
{
    const tag_ref *t = ctx;
    return tag_len == t->len && memcmp(tag, t->tag, tag_len) == 0;
}

static int match_tag(void *ctx, const char *key, size_t key_len, const void *value,
                     size_t value_len, unsigned flags)
{
    tc__rec rec;
    if (!(flags & EDGE_HTTP) || value == NULL || tc__rec_decode(&rec, value, value_len) != TC_OK)
        return 0;
    return tc__rec_each_tag(rec.tags, rec.tags_len, tag_is, ctx);
}

int tc_invalidate_tag(int64_t *out_removed, tc_cache *c, const char *tag, size_t tag_len)
{
    if (out_removed != NULL)
        *out_removed = 0;
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "invalidate_tag: cache is NULL");
    fork_check(c);
    if (tag == NULL || tag_len == 0 || tag_len > TC_KEY_MAX)
        return tc__err(c, TC_EINVAL, "invalidate_tag: the tag must be 1..%d bytes", TC_KEY_MAX);
    for (size_t i = 0; i < tag_len; i++)
        if (tag[i] == '\0' || tag[i] == ' ' || tag[i] == '\t')
            return tc__err(c, TC_EINVAL, "invalidate_tag: the tag holds a NUL, space or tab");
    tag_ref t = {tag, tag_len};
    return invalidate_many(out_removed, c, tag, tag_len, tc__redis_invalidate_tag, match_tag, &t,
                           TC__BUS_TAG);
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
