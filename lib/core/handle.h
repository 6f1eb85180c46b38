/*
 * handle.h - the handle (struct tc_cache) and what the files of core/ share. Only core/
 * includes it: the layer above (ext/) and the tests see the handle through core/cache.h.
 *
 * The files of core/ follow the data flow (docs/architecture.md has the walk of a get and a put),
 * each calling only those listed before it (make check-layers checks that no two call each
 * other, directly or round a circle):
 *   cache.c       the handle's parts for the layers above and the tests (cache.h), the hooks
 *   reader.c      where a read delivers, and how a tier hands its bytes up
 *   lease.c       the miss lease across processes (lease_ms), a step of the store read
 *   fork.c        the handle's repair in a fork()ed child
 *   fill.c        the caches filled on the way back up (a read) or after a commit (a write)
 *   buslink.c     the invalidation bus: what this handle publishes and what it applies
 *   judge.c       what a cached HTTP record means now; the stale-while-revalidate refresh
 *   read.c        the read path: edge -> Redis -> store, one step a function
 *   read_http.c   tc_get_http
 *   read_many.c   tc_get_many: the edge, one Redis pipeline, then the read path per key
 *   write.c       tc_put, tc_put_http, tc_del, and the change feed's changes
 *   invalidate.c  tc_invalidate, by key, pattern and tag
 *   open.c        tc_open (config -> store, edge, Redis, flights, refresher, bus) and tc_close
 */
#ifndef TC_CORE_HANDLE_H
#define TC_CORE_HANDLE_H

#include "common/bus.h"
#include "common/internal.h"
#include "common/record.h"
#include "core/config.h"
#include "core/refresh.h"
#include "core/singleflight.h"
#include "edge/edge.h"
#include "redis/pubsub.h"
#include "redis/redis_tier.h"
#include "store/store.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

struct lease;

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
    /* The bus journal (buslink.c): messages of this handle's writes that could not be
     * published, sent before its next message, before it reads Redis again, and when its bus
     * link comes back; past TC__JOURNAL_MAX entries, one FLUSH stands for them all. */
    pthread_mutex_t journal_mu;
    struct tc__journal_entry *journal; /* under journal_mu, oldest first */
    atomic_int journal_n;              /* entries, or TC__JOURNAL_MAX + 1 when overflowed */
    atomic_int journal_flushing;       /* one thread sends it at a time */
    char *bus_channel; /* namespace + redis.bus_channel, for PUBLISH */
    size_t bus_channel_len;
    unsigned char bus_id[TC__BUS_ID_LEN];
    tc__store *store;
    tc__refresher *refresher; /* stale-while-revalidate refreshes */
    tc__flights *flights;     /* one store read per key at a time */
    /* The miss leases this process's threads hold (lease.c), so that a fork()ed child can tell
     * whether its parent's other threads held any: those are theirs, and for as long as they
     * may live (lease_ms) the child reads the store rather than wait on them. */
    pthread_mutex_t leases_mu;
    struct lease *leases;
    atomic_llong lease_skip_until; /* tc__now_ms() before which no lease is taken or awaited */
    tc__stats stats;
    atomic_uint fork_gen; /* tc__fork_generation() the edge was last emptied in, or
                           * TC__EDGE_REPAIRING while a child empties it */
};

#define TC__EDGE_REPAIRING UINT_MAX
/* The bus journal's bound (entries); more stand as one FLUSH. */
#define TC__JOURNAL_MAX 1024

/* The edge keeps a plain value bare, so that a hit copies it straight into the caller's buffer
 * (tc__edge_get_into), and an HTTP record whole, flagged TC__EDGE_HTTP. */
#define TC__EDGE_HTTP 1u
/* A negative entry: the store had no such key (negative_ttl_ms); its value is empty and its
 * version 0, so any real version (a put, a del's tombstone, a bus message) replaces it. */
#define TC__EDGE_NEGATIVE 2u
/* A read of the edge that found a negative entry (its deliver callbacks' answer). */
#define TC__READ_NEGATIVE 3
/* The epoch of a write's own fill: its value is the newest committed, never one read before
 * an eviction, so it always replaces what the edge holds (read-your-writes). */
#define TC__EPOCH_WRITE UINT64_MAX

/* The edge may be read and filled: it exists and has missed no invalidation the bus carries. */
static inline int tc__edge_usable(tc_cache *c)
{
    return c->edge != NULL && atomic_load_explicit(&c->edge_synced, memory_order_acquire);
}

/* ---- read.c: where a read delivers, and what it found ---- */
/* A reader flag of tc_get_many's: the caches were asked already, the read starts at the store. */
#define TC__READ_STORE_ONLY 0x100u

typedef struct tc__reader {
    tc_cache *c;
    void *buf;      /* caller's buffer (tc_get_into), or NULL to allocate */
    size_t cap;
    unsigned flags; /* TC_HTTP_ONLY_IF_CACHED, TC__READ_STORE_ONLY */
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
    uint64_t epoch;       /* edge_epoch when the read began (tc__fill_edge) */
    /* The store's answer fetched ahead in a batch (tc_get_many and the store's get_many):
     * tc__store_get hands it over once instead of asking the store. pre_state: 0 none, 1 the
     * value pre (pre_len bytes, pre_version), 2 not found. */
    int pre_state;
    const void *pre;
    size_t pre_len;
    int64_t pre_version;
} tc__reader;

/* The read path: on TC_OK the value is in r (r->copy, or the caller's r->buf) and *source says
 * which tier answered. r starts zeroed but for c, buf, cap and flags. */
int tc__read_through(tc_cache *c, const char *key, size_t key_len, tc__reader *r,
                     unsigned *source);
/* Edge hits land here under the shard lock (a tc__value_fn): a plain value goes straight to
 * where the caller wants it; an HTTP record is copied out, to be judged after the lock is
 * released; a negative entry answers TC__READ_NEGATIVE. */
int tc__deliver_edge(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl);
/* The value is r->raw from byte skip on: hand it over without another copy when the caller
 * takes an allocated value. */
int tc__take_raw(tc__reader *r, size_t skip);
/* Frees what a read kept besides its result (r->raw, r->rec). */
void tc__reader_done(tc__reader *r);
/* A tc__value_fn that keeps a copy of the bytes in r->raw (NUL-terminated), with their version
 * and TTL: how every lower tier hands a value up, so that the caches are filled after the
 * tier's reply or statement is released. */
int tc__deliver_copy(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl);
/* The value into the caller's buffer (r->buf; TC_ERANGE if it is too small) or a new copy. */
int tc__deliver_value(tc__reader *r, const void *data, size_t len);
/* get's argument checks: outputs reset, then present; the handle; the key. */
int tc__begin_get(void **out, size_t *out_len, tc_cache *c, const char *what, const char *key,
                  size_t key_len);
/* Every read of the store, the read path's and the refresher's, with the tests' hook. */
int tc__store_get(tc_cache *c, const char *key, size_t key_len, tc__reader *r);

/* ---- lease.c: the miss lease across processes (lease_ms) ---- */
enum {
    TC__LEASE_NONE,        /* no lease: read the store */
    TC__LEASE_HELD,        /* this process holds it: read the store, fill, release */
    TC__LEASE_PEER_VALUE,  /* the holder filled Redis: r->raw is the value, no store read */
    TC__LEASE_PEER_ABSENT, /* the holder found no such key (a negative record) */
    TC__LEASE_PEER_RECORD, /* the holder filled a fresh HTTP record: r->raw, to be judged */
};
typedef struct lease {
    int state;
    int64_t ttl_ms; /* TC__LEASE_PEER_*: the remaining life of what the holder filled */
    char token[16];
    struct lease *next; /* TC__LEASE_HELD: in c->leases */
    pthread_t holder;
} tc__lease;
/* Takes the key's lease, or waits (up to lease_wait_ms) for its holder's fill; any failure
 * leaves TC__LEASE_NONE, and the store is read as without a lease (slower, never wrong).
 * floor: the version of a stale copy the reader holds (-1 for none); a fill older than it, or
 * than a tombstone the edge holds, is not taken. */
void tc__lease_step(tc_cache *c, const char *key, size_t key_len, int64_t floor, tc__reader *r,
                    tc__lease *ls);
/* Gives a held lease back (after the fill: a waiter then finds the value); else nothing. */
void tc__lease_release(tc_cache *c, const char *key, size_t key_len, tc__lease *ls);
/* In a fork()ed child (tc__fork_repair). */
void tc__leases_after_fork(tc_cache *c);

/* ---- judge.c ---- */
/* What a cache's HTTP record (in r->raw; from Redis when from_redis) means for this read:
 * 1 served (fresh, or inside stale-while-revalidate, which queues a refresh), 0 not usable as it
 * is (r->raw stays, as the fallback and the headers to revalidate), or a negative error. */
int tc__judge_http(tc_cache *c, const char *key, size_t key_len, tc__reader *r, int from_redis,
                   tc__rec *rec);
/* The refresher's job (tc__refresher_new's fn): owner is the handle. */
int tc__refresh_key(void *owner, const char *key, size_t key_len, const void *job,
                    size_t job_len);

/* ---- fill.c: the caches, on the way back up or after a commit ---- */
/* The caches hold records (record.h). Encodes r into a new buffer (for the caller to free). */
int tc__rec_alloc(tc_cache *c, const tc__rec *r, void **out, size_t *out_len);
/* A value into the edge unless its read began under another epoch (TC__EPOCH_WRITE: a write's
 * own fill, always). Never longer than edge.max_ttl_ms. */
void tc__fill_edge(tc_cache *c, const char *key, size_t key_len, const void *data, size_t len,
                   unsigned flags, int64_t version, int64_t ttl_ms, uint64_t epoch);
/* A record from Redis into the edge: a plain value bare, an HTTP record whole. */
void tc__fill_edge_rec(tc_cache *c, const char *key, size_t key_len, const void *rec,
                       size_t rec_len, int64_t version, int64_t ttl_ms, uint64_t epoch);
/* A negative entry (negative_ttl_ms) in the edge, for ttl_ms. */
void tc__fill_edge_negative(tc_cache *c, const char *key, size_t key_len, int64_t ttl_ms,
                            uint64_t epoch);
/* A key the store lacks, remembered for negative_ttl_ms in Redis and in this edge. */
void tc__fill_negative(tc_cache *c, const char *key, size_t key_len, uint64_t epoch);
/* Both caches get the record r of version, for ttl_ms less the jitter. announced: NULL for a
 * read's fill; for a write, receives whether its bus message went out with the Redis write
 * (else the caller publishes it). A write fills Redis, then the edge; a read fills the edge,
 * then calls between(between_arg) if it is not NULL (a read-through leader lands its flight
 * there, so that its followers do not wait for Redis), then fills Redis. */
int tc__fill_caches(tc_cache *c, const char *key, size_t key_len, const tc__rec *r,
                    int64_t version, int64_t ttl_ms, uint64_t epoch, int *announced,
                    void (*between)(void *), void *between_arg);

/* ---- buslink.c: the invalidation bus ---- */
/* Subscribes the handle to its bus (tc_open): with Redis up, its edge serves from the first
 * call; with Redis down the subscription goes on trying in the background. */
int tc__bus_start(tc_cache *c);
/* Tells the other handles what changed. A failure is counted, not reported (the write itself
 * succeeded), and the message is journalled: it goes out before this handle's next one. */
void tc__bus_publish(tc_cache *c, unsigned op, int64_t version, const char *arg,
                     size_t arg_len);
/* Sends what the journal holds, if anything (one atomic load when it is empty). Entries that
 * cannot be sent stay, in order. */
void tc__bus_journal_flush(tc_cache *c);
static inline int tc__bus_journal_pending(tc_cache *c)
{
    return atomic_load_explicit(&c->journal_n, memory_order_acquire) != 0;
}
/* Frees the journal (tc_close, after a last flush). */
void tc__bus_journal_free(tc_cache *c);
/* The bytes of this handle's bus message (op, version, arg) into msg, which holds
 * TC__BUS_HEADER + TC_KEY_MAX; returns their count. */
static inline size_t tc__bus_own_msg(const tc_cache *c, unsigned char *msg, unsigned op,
                                     int64_t version, const char *arg, size_t arg_len)
{
    tc__bus_msg m = {.op = op, .version = version, .arg = arg, .arg_len = arg_len};
    memcpy(m.sender, c->bus_id, TC__BUS_ID_LEN);
    tc__bus_encode(msg, &m);
    return tc__bus_size(arg_len);
}
/* One message, whose failure the caller must know (the change feed's: it is applied again). */
int tc__bus_send(tc_cache *c, unsigned op, int64_t version, const char *arg, size_t arg_len);

/* ---- write.c ---- */
/* A write's and an invalidation's argument checks: the handle (then the fork check), the key. */
int tc__check_write_args(tc_cache *c, const char *op, const char *key, size_t key_len);

/* ---- buslink.c: what an eviction by pattern or tag matches in the edge ---- */
typedef struct tc__pattern_ref {
    const char *p;
    size_t n;
} tc__pattern_ref;
typedef struct tc__tag_ref {
    const char *tag;
    size_t len;
} tc__tag_ref;
/* tc__edge_match_fn: ctx a tc__pattern_ref, or a tc__tag_ref (the tags of an HTTP record). */
int tc__match_pattern(void *ctx, const char *key, size_t key_len, const void *value,
                      size_t value_len, unsigned flags);
int tc__match_tag(void *ctx, const char *key, size_t key_len, const void *value,
                  size_t value_len, unsigned flags);

#endif
