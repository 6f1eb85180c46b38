/*
 * internal.h - what the modules of libtiercache share. Never installed.
 */
#ifndef TC_INTERNAL_H
#define TC_INTERNAL_H

#include "tiercache.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define TC__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TC__PRINTF(f, a)
#endif

/* ---- errors (error.c) ---- */
/* Records the detail of a failure for the calling thread, tagged with the handle it happened on
 * (owner may be NULL), and returns code so callers can write `return tc__err(...)`. */
int tc__err(const void *owner, int code, const char *fmt, ...) TC__PRINTF(3, 4);
/* Checks a key against the public rules (1..TC_KEY_MAX bytes, no NUL). */
int tc__check_key(const void *owner, const char *key, size_t key_len);
/* 1 if s is an SQL identifier the stores may paste into SQL ([A-Za-z_][A-Za-z0-9_]*) of at most
 * max_len bytes, else 0. */
int tc__valid_identifier(const char *s, size_t max_len);

/* ---- time and process (process.c) ---- */
/* Monotonic milliseconds, from a coarse clock: cheap enough for every cache hit. */
int64_t tc__now_ms(void);
/* Wall-clock milliseconds since the epoch: for expiry times that cross processes and hosts. */
int64_t tc__wall_ms(void);
/* A number that changes in the child at every fork(). A connection remembers the generation it
 * was opened in; a different one means it belongs to the parent and must not be used. */
unsigned tc__fork_generation(void);
/* The counter behind it, for a check inlined on the hit path: read it directly only where a
 * call of tc__fork_generation() has surely come first (every handle's tc_open makes one, which
 * registers the atfork handler that moves it). */
extern atomic_uint tc__fork_gen;
/* In a fork()ed child: 1 if t is the thread that called the last fork(), the only one of the
 * parent's threads that lives on in the child (a fork from inside a store callback leaves that
 * thread in the middle of a read, holding what the read holds). 0 in a process that never
 * forked. */
int tc__is_forking_thread(pthread_t t);
/* In a fork()ed child, before any other use of mu: makes mu usable again. Returns 1 if it was
 * free at the fork, so that what it protects is whole; 0 if a parent thread held it, so that
 * what it protects may be half-changed (the caller must neither walk nor free that). */
int tc__mutex_after_fork(pthread_mutex_t *mu);
/* This process's name for leases that must die with it: "<boot>.<pid>.<start>", the kernel's
 * boot id (its first 8 hex digits), the pid and the process's start time in clock ticks, so
 * that a reused pid is told apart. Empty where /proc cannot be read. cap >= 48. */
void tc__process_name(char *out, size_t cap);
/* 1 when name (a tc__process_name, possibly with more after a '.') is of a process on this
 * host, since this boot, that is gone (no such pid, a zombie, or another process under the
 * same pid); 0 when it lives, or when this cannot be told (another host, another boot, a name
 * of another form). */
int tc__process_gone(const char *name);
/* A lock that a child takes over when a parent's thread held it at fork time (process.c): the
 * stores' rare paths (opening a connection, the first call after a fork). gen is
 * tc__fork_generation(). */
void tc__tag_lock(atomic_uint *w, unsigned gen);
void tc__tag_unlock(atomic_uint *w);

/* ---- a growable string (strbuf.c) ---- */
/* Start from {0}. Each append keeps a terminating NUL; after a failed allocation `failed` is set
 * and later appends do nothing, so a caller checks once at the end (then frees p). */
typedef struct tc__strbuf {
    char *p;
    size_t len, cap;
    int failed;
} tc__strbuf;
void tc__strbuf_add(tc__strbuf *b, const char *s, size_t n);

/* ---- values between tiers ---- */
/* A tier hands a value to its caller through this callback, while the bytes are valid (under
 * the edge's lock, inside the hiredis reply, inside the SQLite statement), so each value is
 * copied exactly once into where it goes. ttl_ms is the value's remaining life in the tier it
 * came from, or -1 when that tier has none (the store). A non-zero return is passed back up
 * as the tier call's result. */
typedef int (*tc__value_fn)(void *ctx, const void *data, size_t len, int64_t version,
                            int64_t ttl_ms);

/* ---- saturating arithmetic on times (ms) ---- */
static inline int64_t tc__min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* a + b for b >= 0, saturating at INT64_MAX: a TTL of "forever" must not wrap into the past. */
static inline int64_t tc__add_sat64(int64_t a, int64_t b)
{
    return b > 0 && a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* ---- big-endian integers in the formats the library writes (Redis envelopes, records, bus
 * messages, PostgreSQL's binary results): a load and a byte swap, not a loop per byte (these
 * sit on every Redis hit). */
static inline uint64_t tc__get_be64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? __builtin_bswap64(v) : v;
}

static inline void tc__put_be64(void *p, uint64_t v)
{
    if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}

static inline uint32_t tc__get_be32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? __builtin_bswap32(v) : v;
}

static inline void tc__put_be32(void *p, uint32_t v)
{
    if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        v = __builtin_bswap32(v);
    memcpy(p, &v, 4);
}

/* ---- counters (stats.c) ---- */
typedef struct tc__tier_stats {
    atomic_llong hits, misses, sets, errors;
} tc__tier_stats;

typedef struct tc__stats {
    tc__tier_stats edge, redis, store;
    atomic_llong connects; /* Redis connections opened: cold starts */
    atomic_llong reuses;   /* calls served by a thread's already-open connection: warm starts */
    atomic_llong leases;      /* miss leases taken (lease_ms): store reads this process led */
    atomic_llong lease_waits; /* pauses waiting for another holder's fill */
    atomic_llong batches, batched; /* auto-pipeline writes, and the commands answered in them */
} tc__stats;

#define TC__INC(counter) atomic_fetch_add_explicit(&(counter), 1, memory_order_relaxed)
#define TC__GET(counter) atomic_load_explicit(&(counter), memory_order_relaxed)


#endif
