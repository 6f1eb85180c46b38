/*
 * edge_hit.h - the edge's hit path, inline: tc__edge_get_into, the read that tc_get_into makes
 * first, and what it needs of the edge's layout. Everything here belongs to edge.c; it is in a
 * header only so that this one read can be compiled into its caller: a call's register saves
 * and stack arguments lengthen every hit, and at a million keys, where hits wait on memory, a
 * longer hit leaves the processor fewer hits' cache misses to overlap. Inlined, the same code
 * read 1.16-1.19 times faster at 10k keys and 1.16-1.35 at 1M (docs/eviction.md, "Third
 * round"). Only this read is meant for other files: tiercache.c uses nothing else here (the
 * bench and tests/check_edge.c borrow the hash and the key compare).
 *
 * Two parts, each with its own guard: the layout (constants, structures, the hash, the key
 * compare, the policy's hit hook), and the hit path proper (the shared state it reads and the
 * function). bench/bench_edge.c compiles a second copy of edge.c under other names and includes
 * the second part again for the library's own.
 */
#ifndef TC_EDGE_LAYOUT_H
#define TC_EDGE_LAYOUT_H

#include "common/internal.h"

/* edge.h's handle type, repeated (C11 allows it) so that the layout, which edge.c includes,
 * includes none of the edge's interface headers. */
typedef struct tc__edge tc__edge;

#include <pthread.h>
#include <stdalign.h>

/* Enough shards that 2-core to 16-core callers rarely collide on a lock. More would shrink each
 * shard's byte budget, which is also the largest value the shard can hold. */
#define EDGE_MAX_SHARDS 16
/* Reader counters: each of the first EDGE_READER_SLOTS concurrent threads owns one slot (given
 * back when the thread exits); any further thread shares one more slot, updated with atomic
 * read-modify-writes, correct but slower. A writer reads the slots in use so far. */
#define EDGE_READER_SLOTS 64
#define EDGE_SHARED_SLOT EDGE_READER_SLOTS
/* The 2-bit frequency's ceiling (S3-FIFO's, edge.c). */
#define EDGE_FREQ_MAX 3

/* An entry is one allocation: the entry proper, key and value, then (8-aligned) the queue links
 * and the hash, which only writers follow. A hit reads from the allocation's start only what it
 * needs (a 17-byte key and a 64-byte value end 105 bytes in), so it touches as few cache lines
 * as the allocator's alignment allows. */
struct edge_links {
    struct edge_entry *newer, *older; /* within the entry's queue; newer chains the garbage */
    uint64_t hash;
};

struct edge_entry {
    uint32_t value_len;
    uint16_t key_len;
    unsigned char tombstone : 1;
    unsigned char queue : 1; /* EDGE_SMALL or EDGE_MAIN */
    unsigned char flags : 2; /* the caller's (tc__edge_set_flags) */
    /* Reads since eviction last looked, saturating at EDGE_FREQ_MAX. Readers bump it
     * concurrently: a lost increment only makes the entry look a little colder. */
    atomic_uchar freq;
    int64_t expires_ms; /* edge clock; the entry is absent from then on */
    int64_t version;
    char data[]; /* key_len key bytes, then value_len value bytes */
};

/* A table slot: the entry (NULL when free) and its key's hash, compared before the entry is
 * touched. */
struct edge_slot {
    uint64_t hash;
    struct edge_entry *en;
};

/* A ghost remembers the hash of a key evicted from the small queue, so that a key coming back
 * soon after goes straight to the main queue. Stamps count ghost insertions; 0 is empty. */
struct ghost_slot {
    uint32_t tag;
    uint32_t stamp;
};

struct edge_queue {
    struct edge_entry *newest, *oldest;
    size_t count, bytes;
};

struct edge_shard {
    /* What every hit reads, on its own cache line, written only by writers. */
    alignas(64) atomic_int writer; /* a writer holds the shard: readers take the mutex */
    struct edge_slot *slots;
    size_t mask; /* slot count - 1; the count is a power of two */

    /* Writers' state, under the mutex (and the writer flag where readers could see it). */
    alignas(64) pthread_mutex_t lock;
    size_t count, bytes;
    size_t max_entries, max_bytes;
    int64_t evictions;
    struct edge_queue small, main;
    /* S's share (a tenth, rounded up) and M's (the rest), of each budget. */
    size_t small_max_entries, small_max_bytes, main_max_entries, main_max_bytes;
    int has_evicted;
    /* The hits of this shard's reader words, accumulated by tc__edge_counts: each word's hit
     * bits wrap at 2^48, so they are read as differences from what was seen last time. */
    uint64_t hits_seen[EDGE_READER_SLOTS + 1];
    int64_t hits;
    struct ghost_slot *ghost; /* (gmask + 1) * EDGE_GHOST_WAYS slots, as many as the table */
    size_t gmask;
    uint32_t gclock;
};

/* A thread's reads in each shard: one word per shard, written only by its owner (or, for the
 * shared slot, by every thread without one), read by writers. The low 16 bits count the reads
 * in progress there (a nested read from a callback counts up; the shared slot turns readers
 * away to the mutex before it could carry); the high 48 count the hits made there (of
 * tc__edge_get_into and tc__edge_get_flags), modulo 2^48, which tc__edge_counts accumulates. A
 * plain hit by a thread with its own slot is counted by the very store that ends it (the word
 * goes back to what it was, plus EDGE_HIT_UNIT): no second line written per hit, and no shared
 * one, which would be the one line every hit of every thread writes. */
#define EDGE_READING_MASK 0xffffull
#define EDGE_HIT_UNIT (EDGE_READING_MASK + 1)
struct edge_readers {
    alignas(64) atomic_ullong n[EDGE_MAX_SHARDS];
};

struct tc__edge {
    struct edge_shard *shards;
    size_t nshards;               /* a power of two */
    struct edge_readers *readers; /* EDGE_READER_SLOTS + 1 (the shared one) */
    uint64_t secret[2];
    struct tc__edge *next_edge, *prev_edge; /* every edge, for fork() */
};

/* The hit path is a handful of small functions; at a million keys, where every hit waits on
 * memory, calls between them cost as much as a cache miss (the out-of-order window overlaps
 * less of the next hit), so they are forced inline there, and the rare paths kept out of it. */
#if defined(__GNUC__)
#define EDGE_INLINE static inline __attribute__((always_inline))
#define EDGE_COLD __attribute__((noinline, cold))
#else
#define EDGE_INLINE static inline
#define EDGE_COLD
#endif
#if defined(__GNUC__)
#define EDGE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define EDGE_LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define EDGE_UNLIKELY(x) (x)
#define EDGE_LIKELY(x) (x)
#endif

/* ---- hashing ------------------------------------------------------------------------------ */
/* A wyhash-style hash: 16 bytes per 64x64->128 multiply, fast on the short keys caches see.
 * Both operands of every multiply carry a per-map random secret, because a known operand could
 * be cancelled to zero by a crafted key and collide whatever the seed (wyhash's "blinding"
 * weakness); keys may come from untrusted clients, and one long chain would serialise a shard.
 * Not a cryptographic PRF: SipHash would be the step up if that is ever needed. */

EDGE_INLINE uint64_t fold_mul(uint64_t a, uint64_t b)
{
#if defined(__SIZEOF_INT128__)
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
    uint64_t ha = a >> 32, la = (uint32_t)a, hb = b >> 32, lb = (uint32_t)b;
    uint64_t hh = ha * hb, hl = ha * lb, lh = la * hb, ll = la * lb;
    uint64_t mid = (ll >> 32) + (uint32_t)hl + (uint32_t)lh;
    uint64_t lo = (mid << 32) | (uint32_t)ll;
    uint64_t hi = hh + (hl >> 32) + (lh >> 32) + (mid >> 32);
    return lo ^ hi;
#endif
}

EDGE_INLINE uint64_t read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

EDGE_INLINE uint64_t read32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The hash proper, with the two secrets given (the bench's baseline table calls it with fixed
 * ones, so that the comparison prices the table and not the hash). */
EDGE_INLINE uint64_t hash_with(uint64_t s0, uint64_t s1, const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = s0;
    uint64_t a = 0, b = 0;
    size_t n = len;

    while (n > 16) {
        h = fold_mul(read64(p) ^ s1, read64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    /* The tail is read as two overlapping words rather than byte by byte. */
    if (n > 8) {
        a = read64(p);
        b = read64(p + n - 8);
    } else if (n >= 4) {
        a = read32(p);
        b = read32(p + n - 4);
    } else if (n > 0) {
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
    }
    return fold_mul(s1 ^ (uint64_t)len, fold_mul(a ^ s1, b ^ h));
}

EDGE_INLINE uint64_t edge_hash(const tc__edge *e, const char *key, size_t len)
{
    return hash_with(e->secret[0], e->secret[1], key, len);
}

/* Whether the entry's key bytes `a` equal the caller's `b` (n of each). Keys are short, and
 * a slot's full 64-bit hash already matched, so this almost always answers "equal": word
 * compares (overlapping, without early exit), inline, instead of a call to memcmp. Neither side
 * is read past its n bytes. */
EDGE_INLINE int key_eq(const char *a, const char *b, size_t n)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    if (n >= 8) {
        /* [0, 8) and [n - 8, n) cover up to 16 bytes; [8, 16) and [n - 16, n) the rest up to 32. */
        uint64_t d = (read64(x) ^ read64(y)) | (read64(x + n - 8) ^ read64(y + n - 8));
        if (n > 16) {
            d |= (read64(x + 8) ^ read64(y + 8)) | (read64(x + n - 16) ^ read64(y + n - 16));
            for (size_t i = 16; i + 16 < n; i += 8)
                d |= read64(x + i) ^ read64(y + i);
        }
        return d == 0;
    }
    if (n >= 4)
        return ((read32(x) ^ read32(y)) | (read32(x + n - 4) ^ read32(y + n - 4))) == 0;
    /* 1 to 3 bytes: the first, the middle and the last are all of them; no call to memcmp. */
    return n == 0 || (x[0] == y[0] && x[n >> 1] == y[n >> 1] && x[n - 1] == y[n - 1]);
}

EDGE_INLINE size_t shard_index(const tc__edge *e, uint64_t hash)
{
    /* High bits pick the shard, low bits the bucket, so the two choices are independent. */
    return (size_t)(hash >> 40) & (e->nshards - 1);
}

EDGE_INLINE unsigned freq_of(struct edge_entry *en)
{
    return atomic_load_explicit(&en->freq, memory_order_relaxed);
}

EDGE_INLINE void set_freq(struct edge_entry *en, unsigned f)
{
    atomic_store_explicit(&en->freq, (unsigned char)f, memory_order_relaxed);
}

/* The policy's only step on a hit (S3-FIFO, edge.c). */
EDGE_INLINE void policy_hit(struct edge_entry *en)
{
    /* Reading first keeps a saturated entry's line clean in every reader's cache. */
    unsigned f = freq_of(en);
    if (f < EDGE_FREQ_MAX)
        set_freq(en, f + 1);
}

/* The edge clock (edge.c): a process-wide copy of the coarse monotonic clock that a ticker
 * thread refreshes, so that a hit's TTL check is one load. */
struct edge_clock_state {
    alignas(64) atomic_int_fast64_t now; /* ms on tc__now_ms()'s clock; 0 when not published */
    atomic_int wake_pending;             /* a reader asked the parked or absent ticker to run */
};

/* initial-exec: the hit path should not call __tls_get_addr when this is a shared library; four
 * bytes of the static TLS that glibc reserves for dlopen()ed libraries is all it takes. */
#if defined(__GNUC__)
#define EDGE_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define EDGE_TLS_MODEL
#endif

/* Copies n <= EDGE_SHORT_COPY bytes inline, with two overlapping fixed-size moves: in a caller's
 * read loop a call to memcpy would also make it save and reload what it keeps in registers. */
#define EDGE_SHORT_COPY 64
EDGE_INLINE void copy_short(unsigned char *d, const unsigned char *s, size_t n)
{
    if (n > 32) {
        memcpy(d, s, 32);
        memcpy(d + n - 32, s + n - 32, 32);
    } else if (n > 16) {
        memcpy(d, s, 16);
        memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else if (n > 0) {
        d[0] = s[0];
        d[n >> 1] = s[n >> 1];
        d[n - 1] = s[n - 1];
    }
}

/* Which queue of its shard an entry is in (S3-FIFO: the small and the main queue, policy.c). */
enum { EDGE_SMALL, EDGE_MAIN };

/* ---- entries: what the table and the policy both read of one ---- */

/* Charged per entry besides key and value: the headers, its share of the table (two slots: the
 * table is between a quarter and a half full) and of the ghost (as many slots as the table).
 * Allocator overhead is left out: it is not ours to know. */
#define EDGE_OVERHEAD                                                                        \
    (sizeof(struct edge_entry) + alignof(struct edge_links) - 1 + sizeof(struct edge_links) + \
     2 * sizeof(struct edge_slot) + 2 * sizeof(struct ghost_slot))

EDGE_INLINE size_t entry_charge(size_t key_len, size_t value_len)
{
    return EDGE_OVERHEAD + key_len + value_len;
}

EDGE_INLINE size_t charge_of(const struct edge_entry *en)
{
    return entry_charge(en->key_len, en->value_len);
}

EDGE_INLINE int is_expired(const struct edge_entry *en, int64_t now)
{
    return now >= en->expires_ms;
}

EDGE_INLINE int64_t expiry_after(int64_t now, int64_t ttl_ms)
{
    /* A caller may pass "forever" as INT64_MAX; saturate instead of wrapping into the past. */
    return ttl_ms > INT64_MAX - now ? INT64_MAX : now + ttl_ms;
}

EDGE_INLINE size_t links_offset(size_t key_len, size_t value_len)
{
    size_t n = sizeof(struct edge_entry) + key_len + value_len;
    return (n + alignof(struct edge_links) - 1) / alignof(struct edge_links) *
           alignof(struct edge_links);
}

EDGE_INLINE struct edge_links *links_of(struct edge_entry *en)
{
    return (struct edge_links *)((char *)en + links_offset(en->key_len, en->value_len));
}

EDGE_INLINE uint64_t hash_of(struct edge_entry *en)
{
    return links_of(en)->hash;
}

EDGE_INLINE struct edge_entry *newer_of(struct edge_entry *en)
{
    return links_of(en)->newer;
}

EDGE_INLINE struct edge_entry *older_of(struct edge_entry *en)
{
    return links_of(en)->older;
}


#endif /* TC_EDGE_LAYOUT_H */

/* What the hit path reads of edge.c's state and where it hands every other case over. In a
 * section of its own: bench/bench_edge.c reads it twice, once under the names of its second copy
 * of edge.c and once under the library's. */
#ifndef TC_EDGE_SHARED_H
#define TC_EDGE_SHARED_H

#if defined(__GNUC__)
#define EDGE_HIDDEN __attribute__((visibility("hidden")))
#else
#define EDGE_HIDDEN
#endif

extern EDGE_HIDDEN struct edge_clock_state tc__edge_clock;
/* The calling thread's reader slot, plus one; 0 before its first read (edge.c). */
extern EDGE_HIDDEN _Thread_local unsigned tc__edge_thread_slot EDGE_TLS_MODEL;

/* tc__edge_get_into by the general path (edge.c): NULL arguments, a thread without a reader slot
 * of its own yet, a writer in the shard, an unpublished clock, an expired entry, a tombstone, a
 * flagged entry. Same arguments and returns. */
EDGE_HIDDEN int tc__edge_get_into_slow(tc__edge *e, const char *key, size_t key_len, void *buf,
                                       size_t cap, size_t *out_len, int64_t *out_version,
                                       int64_t *out_tomb_version);

#endif /* TC_EDGE_SHARED_H */
