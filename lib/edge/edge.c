/*
 * edge.c - the in-process tier: a sharded hash map with TTL, versions, tombstones and bounded
 * size, evicting with S3-FIFO.
 *
 * A key's hash picks a shard; each shard is a complete small cache of its own (hash table,
 * eviction queues, share of the entry and byte budgets), so threads working on different keys
 * rarely meet, and no operation ever holds two shards. The budgets are split exactly (the shares
 * sum to the configured bounds), so the whole map never exceeds them.
 *
 * Reads and writes are asymmetric, because a cache is read far more than it is written:
 *  - A hit writes nothing shared. It announces itself in its thread's reader counter (a cache
 *    line only that thread writes), checks that no writer holds the shard, looks up, bumps the
 *    entry's 2-bit frequency if it is not already saturated, copies out and leaves. No lock,
 *    no list move, no clock call: two threads reading the same shard never write the same cache
 *    line, which is what lets reads scale (docs/eviction.md has the measurements; with a
 *    pthread_rwlock's shared reader count 2 threads read no faster than 1). The announcement is
 *    the hit's one fence; leaving is a plain store, because the counter has one writer.
 *  - A writer takes the shard's mutex, raises the shard's writer flag and waits for the shard's
 *    reader counters to drain. Readers that find the flag raised wait on the mutex instead, so
 *    neither side starves. Copies and frees happen outside: the exclusive section covers only
 *    table and queue surgery.
 *
 * The table is open addressing with linear probing over (hash, entry) slots at most half full,
 * so a hit compares hashes in one slot line and then reads one entry, a single allocation
 * holding the key and the value (a set is one malloc). Chaining at one entry per bucket reads
 * half an extra entry per hit on average.
 *
 * The eviction policy lives in policy.c and is reached only through policy.h. It is S3-FIFO
 * (Yang et al., SOSP'23), chosen over LRU, FIFO and SIEVE on the traces in bench/bench_edge.c;
 * docs/eviction.md gives the numbers and the reasons.
 *
 * The structures, the hash and the entries' accessors are in edge_layout.h, which the inline
 * hit path of tc_get_into (edge_hit.h, tc__edge_get_into) shares, so that the hit can be
 * compiled into its caller.
 */
#include "edge/edge.h"
#include "edge/clock.h"
#include "edge/policy.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A shard with only a handful of entries wastes much of its share to hash imbalance, and a
 * small byte share refuses ordinary values; small caches are not contended enough to need
 * shards anyway, so they get fewer (down to one). 512 KiB is RocksDB's minimum shard size for
 * the same reason. */
#define EDGE_MIN_SHARD_ENTRIES 32
#define EDGE_MIN_SHARD_BYTES ((size_t)512 * 1024)
/* Table slots per shard at first; the table doubles whenever it would be more than half full. */
#define EDGE_MIN_SLOTS 32


/* ---- the edge clock (clock.c) ------------------------------------------------------------ */

EDGE_INLINE int64_t edge_now(void)
{
    int64_t t = atomic_load_explicit(&tc__edge_clock.now, memory_order_relaxed);
    return t != 0 ? t : tc__edge_clock_slow();
}

/* bench/bench_edge.c compiles a second copy of this file with EDGE_BENCH_NO_TTL to price the TTL
 * check on the hit path against a table without one; the library never defines it. */
#ifdef EDGE_BENCH_NO_TTL
#define hit_clock() ((int64_t)0)
#define hit_expired(en, now) ((void)(now), 0)
#else
#define hit_clock() edge_now()
#define hit_expired(en, now) is_expired(en, now)
#endif

/* ---- entries ------------------------------------------------------------------------------ */

static void entry_free(struct edge_entry *en)
{
    free(en);
}

/* Built and filled before the shard is locked, so a large copy never holds other threads up.
 * The caller has checked the lengths against the fields. NULL when out of memory. */
static struct edge_entry *entry_new(uint64_t hash, const char *key, size_t key_len,
                                    const void *value, size_t value_len, int64_t version,
                                    int64_t expires_ms, int tombstone, unsigned flags)
{
    struct edge_entry *en =
        malloc(links_offset(key_len, value_len) + sizeof(struct edge_links));
    if (en == NULL)
        return NULL;
    en->value_len = (uint32_t)value_len;
    en->key_len = (uint16_t)key_len;
    en->tombstone = tombstone != 0;
    en->queue = EDGE_SMALL;
    en->flags = flags & TC__EDGE_FLAGS_MASK;
    atomic_init(&en->freq, 0);
    en->expires_ms = expires_ms;
    en->version = version;
    memcpy(en->data, key, key_len);
    if (value_len > 0)
        memcpy(en->data + key_len, value, value_len);
    struct edge_links *l = links_of(en);
    l->newer = l->older = NULL;
    l->hash = hash;
    return en;
}

/* Hands an unlinked entry to be freed once the shard is released (chained through its links,
 * which it no longer needs). */
static void garbage_add(struct edge_entry **garbage, struct edge_entry *en)
{
    links_of(en)->newer = *garbage;
    *garbage = en;
}

static void free_chain(struct edge_entry *en)
{
    while (en != NULL) {
        struct edge_entry *next = newer_of(en);
        entry_free(en);
        en = next;
    }
}

/* ---- shard locking ------------------------------------------------------------------------ */

_Thread_local unsigned tc__edge_thread_slot EDGE_TLS_MODEL;

/* The shared slot's reads in progress in this thread, innermost first (the frames live on the
 * stack of get_shared): after a fork from inside one of them, the child gives them back to the
 * counts it clears (after_fork_child), so that leaving them does not wrap the count. */
struct shared_frame {
    atomic_ullong *word;
    struct shared_frame *outer;
};
static _Thread_local struct shared_frame *shared_frames;

/* Which exclusive slots are taken, process-wide, and how many were ever used (writers look at
 * those and the shared one). A thread's slot goes back through a thread-specific key's
 * destructor when it exits. */
static atomic_uchar reader_slot_taken[EDGE_READER_SLOTS];
static atomic_uint reader_slots_used;
static pthread_key_t reader_slot_key;
static pthread_once_t reader_slot_once = PTHREAD_ONCE_INIT;
static int reader_slot_key_ok;

static void reader_slot_release(void *p)
{
    unsigned s = (unsigned)(uintptr_t)p - 1;
    if (s < EDGE_READER_SLOTS)
        atomic_store(&reader_slot_taken[s], 0);
}

static void reader_slot_init(void)
{
    reader_slot_key_ok = pthread_key_create(&reader_slot_key, reader_slot_release) == 0;
}

#if defined(__GNUC__)
/* When libtiercache.so is unloaded, threads that outlive it must not call its destructor. */
__attribute__((destructor)) static void reader_slot_unload(void)
{
    if (reader_slot_key_ok)
        pthread_key_delete(reader_slot_key);
}
#endif

EDGE_COLD static unsigned reader_slot_claim(void)
{
    pthread_once(&reader_slot_once, reader_slot_init);
    /* Without a destructor a slot would never come back: share instead. */
    for (unsigned i = 0; reader_slot_key_ok && i < EDGE_READER_SLOTS; i++) {
        unsigned char free_slot = 0;
        if (!atomic_compare_exchange_strong(&reader_slot_taken[i], &free_slot, 1))
            continue;
        if (pthread_setspecific(reader_slot_key, (void *)(uintptr_t)(i + 1)) != 0) {
            atomic_store(&reader_slot_taken[i], 0);
            break;
        }
        /* Raised before the slot is first used: a writer that misses the new mark cannot miss
         * the reader, which then sees the writer's flag (both sequentially consistent). */
        unsigned used = atomic_load(&reader_slots_used);
        while (used < i + 1 && !atomic_compare_exchange_weak(&reader_slots_used, &used, i + 1))
            ;
        return i;
    }
    return EDGE_SHARED_SLOT;
}

EDGE_INLINE unsigned reader_slot(void)
{
    unsigned s = tc__edge_thread_slot;
    if (s == 0) {
        s = reader_slot_claim() + 1;
        tc__edge_thread_slot = s;
    }
    return s - 1;
}

static void wait_readers(atomic_ullong *n)
{
    for (unsigned spins = 0; (atomic_load(n) & EDGE_READING_MASK) != 0; spins++) {
        /* A reader only copies a value out; if it was preempted, let it run. */
        if (spins >= 100)
            sched_yield();
    }
}

/* Exclusive access: the mutex orders writers (and readers that found the shard busy); the flag
 * turns new readers away; then the readers already inside are waited out. The flag store and
 * the counter loads are sequentially consistent, as are the reader's counter store and flag load
 * (a Dekker handshake): either the reader sees the flag or the writer sees the reader. */
static void shard_write_lock(tc__edge *e, size_t si)
{
    struct edge_shard *sh = &e->shards[si];
    pthread_mutex_lock(&sh->lock);
    atomic_store(&sh->writer, 1);
    unsigned used = atomic_load(&reader_slots_used);
    for (unsigned s = 0; s < used; s++)
        wait_readers(&e->readers[s].n[si]);
    wait_readers(&e->readers[EDGE_SHARED_SLOT].n[si]);
}

static void shard_write_unlock(struct edge_shard *sh)
{
    atomic_store_explicit(&sh->writer, 0, memory_order_release);
    pthread_mutex_unlock(&sh->lock);
}

/* ---- the table ---------------------------------------------------------------------------- */
/* Linear probing; a removal shifts the entries after it back instead of leaving a marker, so a
 * probe always ends at the first free slot. Only writers change it, with the shard held
 * exclusively. */

EDGE_INLINE int key_is(const struct edge_slot *s, uint64_t hash, const char *key, size_t key_len)
{
    return s->hash == hash && s->en->key_len == key_len && key_eq(s->en->data, key, key_len);
}

/* The slot holding the key, or the free slot where it would go. */
EDGE_INLINE size_t find_slot(const struct edge_shard *sh, uint64_t hash, const char *key,
                             size_t key_len)
{
    size_t i = hash & sh->mask;
    while (sh->slots[i].en != NULL && !key_is(&sh->slots[i], hash, key, key_len))
        i = (i + 1) & sh->mask;
    return i;
}

static size_t slot_of(const struct edge_shard *sh, struct edge_entry *target)
{
    size_t i = hash_of(target) & sh->mask;
    while (sh->slots[i].en != target)
        i = (i + 1) & sh->mask;
    return i;
}

/* Empties slot i, moving back every later entry of the run that may live there. */
static void slot_delete(struct edge_shard *sh, size_t i)
{
    size_t mask = sh->mask;
    for (size_t j = (i + 1) & mask; sh->slots[j].en != NULL; j = (j + 1) & mask) {
        size_t home = sh->slots[j].hash & mask;
        /* The entry at j may move to i if i lies on its probe path, from home to j. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            sh->slots[i] = sh->slots[j];
            i = j;
        }
    }
    sh->slots[i].en = NULL;
    sh->slots[i].hash = 0;
}

/* Takes the entry at slot i out of the table, the policy and the accounting, and hands it to
 * *garbage to be freed once the shard is released. `remember` as for policy_remove. */
static void shard_unlink(struct edge_shard *sh, size_t i, int remember,
                         struct edge_entry **garbage)
{
    struct edge_entry *en = sh->slots[i].en;
    slot_delete(sh, i);
    tc__edge_policy_remove(sh, en, remember);
    sh->count--;
    sh->bytes -= charge_of(en);
    garbage_add(garbage, en);
}

/* Doubles the table when one more entry would fill more than half of it. 0 if that was needed
 * and failed while the table is already three quarters full: then the entry is not stored.
 * Below that, a failed allocation only makes probes longer. */
static int shard_make_slot(struct edge_shard *sh)
{
    size_t n = sh->mask + 1;
    if ((sh->count + 1) * 2 <= n)
        return 1;
    struct edge_slot *ns = n <= SIZE_MAX / 2 / sizeof *ns ? calloc(n * 2, sizeof *ns) : NULL;
    if (ns == NULL)
        return (sh->count + 1) * 4 <= n * 3;
    size_t nmask = n * 2 - 1;
    for (size_t i = 0; i < n; i++) {
        if (sh->slots[i].en == NULL)
            continue;
        size_t j = sh->slots[i].hash & nmask;
        while (ns[j].en != NULL)
            j = (j + 1) & nmask;
        ns[j] = sh->slots[i];
    }
    free(sh->slots);
    sh->slots = ns;
    sh->mask = nmask;
    tc__edge_ghost_resize(sh, n * 2);
    return 1;
}

/* Evicts until one more entry of `need` bytes fits. The caller has checked that need alone fits
 * the shard's budget, so this ends at the latest with the shard empty. Expired entries removed
 * here are not counted as evictions: they were already gone for every reader. */
static void shard_make_room(struct edge_shard *sh, size_t need, int64_t now,
                            struct edge_entry **garbage)
{
    while (sh->count + 1 > sh->max_entries || sh->bytes + need > sh->max_bytes) {
        int expired;
        struct edge_entry *victim = tc__edge_policy_victim(sh, now, &expired);
        if (!expired)
            sh->evictions++;
        /* A victim chosen by the policy was made a ghost there if the policy wanted it. */
        shard_unlink(sh, slot_of(sh, victim), expired, garbage);
    }
}

/* Stores a new entry whose key is absent. 0 if the table could not grow for it. */
static int shard_insert(struct edge_shard *sh, struct edge_entry *en,
                        struct tc__edge_policy_hint hint, int64_t now,
                        struct edge_entry **garbage)
{
    if (!shard_make_slot(sh))
        return 0;
    shard_make_room(sh, charge_of(en), now, garbage);
    /* Probed after making room: removals move entries. */
    uint64_t hash = hash_of(en);
    size_t i = hash & sh->mask;
    while (sh->slots[i].en != NULL)
        i = (i + 1) & sh->mask;
    sh->slots[i].hash = hash;
    sh->slots[i].en = en;
    tc__edge_policy_insert(sh, en, hint);
    sh->count++;
    sh->bytes += charge_of(en);
    return 1;
}

/* ---- fork() ------------------------------------------------------------------------------- */
/* A child has only the thread that forked. Whatever the others held must not stay held there:
 * a shard mutex (a writer), a reader counter (a reader in the middle of a hit), an exclusive
 * reader slot. So the fork waits for writers (every shard mutex is taken around it), and the
 * child clears the counters and slots of the threads it does not have. Lock order: clock_lock,
 * edges_lock, shard mutexes (nothing takes clock_lock or edges_lock inside a shard).
 *
 * Callers may hold their own locks while they create an edge (tc_shared holds shared_mu around
 * tc_open, and its prepare handler takes shared_mu). Prepare handlers run in the reverse order of
 * their registration, so ours are registered when the library is loaded, before any other of
 * the library's: they run last, after shared_mu is taken, and the order is the same both ways.
 * Registering them lazily would also call pthread_atfork with a caller's lock held, which orders
 * glibc's atfork lock after it. */

static pthread_mutex_t edges_lock = PTHREAD_MUTEX_INITIALIZER;
static tc__edge *edges; /* every live edge */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void edges_lock_shards(void)
{
    for (tc__edge *e = edges; e != NULL; e = e->next_edge)
        for (size_t i = 0; i < e->nshards; i++)
            pthread_mutex_lock(&e->shards[i].lock);
}

static void edges_unlock_shards(void)
{
    for (tc__edge *e = edges; e != NULL; e = e->next_edge)
        for (size_t i = 0; i < e->nshards; i++)
            pthread_mutex_unlock(&e->shards[i].lock);
}

static void before_fork(void)
{
    tc__edge_clock_before_fork();
    pthread_mutex_lock(&edges_lock);
    edges_lock_shards();
}

static void after_fork_parent(void)
{
    edges_unlock_shards();
    pthread_mutex_unlock(&edges_lock);
    tc__edge_clock_after_fork_parent();
}

static void after_fork_child(void)
{
    unsigned own = tc__edge_thread_slot; /* 1 + slot, 0 for none */
    for (unsigned s = 0; s < EDGE_READER_SLOTS; s++)
        atomic_store(&reader_slot_taken[s], own == s + 1);
    /* The reads in progress of threads the child does not have are gone; the forking thread's
     * own stay counted (it may have forked from a read's callback, and will leave that read):
     * its own slot is left as it is, and its frames in the shared slot are given back. The
     * hit bits stay. */
    for (tc__edge *e = edges; e != NULL; e = e->next_edge)
        for (unsigned s = 0; s <= EDGE_READER_SLOTS; s++)
            for (size_t i = 0; (s + 1 != own || s == EDGE_SHARED_SLOT) && i < EDGE_MAX_SHARDS;
                 i++)
                atomic_store(&e->readers[s].n[i],
                             atomic_load(&e->readers[s].n[i]) & ~EDGE_READING_MASK);
    for (struct shared_frame *f = shared_frames; f != NULL; f = f->outer)
        atomic_fetch_add(f->word, 1);
    edges_unlock_shards();
    pthread_mutex_unlock(&edges_lock);
    tc__edge_clock_after_fork_child(); /* releases the clock's lock */
}

static void fork_init(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

#if defined(__GNUC__)
__attribute__((constructor)) static void fork_register_at_load(void)
{
    pthread_once(&fork_once, fork_init);
}
#endif

static void edges_add(tc__edge *e)
{
    pthread_once(&fork_once, fork_init); /* done at load already where constructors exist */
    pthread_mutex_lock(&edges_lock);
    e->prev_edge = NULL;
    e->next_edge = edges;
    if (edges != NULL)
        edges->prev_edge = e;
    edges = e;
    pthread_mutex_unlock(&edges_lock);
}

static void edges_remove(tc__edge *e)
{
    pthread_mutex_lock(&edges_lock);
    if (e->prev_edge != NULL)
        e->prev_edge->next_edge = e->next_edge;
    else
        edges = e->next_edge;
    if (e->next_edge != NULL)
        e->next_edge->prev_edge = e->prev_edge;
    pthread_mutex_unlock(&edges_lock);
}

/* ---- the tier ----------------------------------------------------------------------------- */

static size_t pick_shards(size_t max_entries, size_t max_bytes)
{
    size_t n = EDGE_MAX_SHARDS;
    while (n > 1 &&
           (max_entries / n < EDGE_MIN_SHARD_ENTRIES || max_bytes / n < EDGE_MIN_SHARD_BYTES))
        n /= 2;
    return n;
}

/* Secrets differ per map and per run (ASLR, clock), so an outsider cannot precompute keys that
 * collide; nothing here needs to be unpredictable to a local attacker. */
static void make_secret(tc__edge *e)
{
    static atomic_uint_fast64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t c = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    uint64_t x = fold_mul(t ^ 0xa0761d6478bd642full, (uint64_t)(uintptr_t)e ^ 0xe7037ed1a0b428dbull);
    e->secret[0] = fold_mul(x ^ c, 0x8ebc6af09c88c6e3ull) | 1;
    e->secret[1] = fold_mul(x ^ 0x589965cc75374cc3ull, e->secret[0] ^ t) | 1;
}

static void free_queue(struct edge_queue *q)
{
    struct edge_entry *en = q->newest;
    while (en != NULL) {
        struct edge_entry *older = older_of(en);
        entry_free(en);
        en = older;
    }
}

static void edge_destroy(tc__edge *e, size_t initialised)
{
    for (size_t i = 0; i < initialised; i++) {
        struct edge_shard *sh = &e->shards[i];
        free_queue(&sh->small);
        free_queue(&sh->main);
        free(sh->slots);
        free(sh->ghost);
        pthread_mutex_destroy(&sh->lock);
    }
    free(e->readers);
    free(e->shards);
    free(e);
}

int tc__edge_new(tc__edge **out, size_t max_entries, size_t max_bytes)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "edge: out is NULL");
    *out = NULL;
    if (max_entries < 1 || max_bytes < 4096)
        return tc__err(NULL, TC_EINVAL, "edge: max_entries %zu (>= 1), max_bytes %zu (>= 4096)",
                       max_entries, max_bytes);

    tc__edge *e = calloc(1, sizeof *e);
    if (e == NULL)
        return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
    size_t n = pick_shards(max_entries, max_bytes);
    /* aligned_alloc wants a size that is a multiple of the alignment; alignas on the first
     * member makes sizeof of both structs one. */
    e->shards = aligned_alloc(alignof(struct edge_shard), n * sizeof *e->shards);
    e->readers = aligned_alloc(alignof(struct edge_readers),
                               (EDGE_READER_SLOTS + 1) * sizeof *e->readers);
    if (e->shards == NULL || e->readers == NULL) {
        free(e->shards);
        free(e->readers);
        free(e);
        return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
    }
    memset(e->shards, 0, n * sizeof *e->shards);
    for (size_t s = 0; s <= EDGE_READER_SLOTS; s++)
        for (size_t i = 0; i < EDGE_MAX_SHARDS; i++)
            atomic_init(&e->readers[s].n[i], 0);
    e->nshards = n;
    make_secret(e);

    for (size_t i = 0; i < n; i++) {
        struct edge_shard *sh = &e->shards[i];
        atomic_init(&sh->writer, 0);
        sh->slots = calloc(EDGE_MIN_SLOTS, sizeof *sh->slots);
        tc__edge_ghost_resize(sh, EDGE_MIN_SLOTS);
        if (sh->slots == NULL || sh->ghost == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->slots);
            free(sh->ghost);
            edge_destroy(e, i);
            return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
        }
        sh->mask = EDGE_MIN_SLOTS - 1;
        /* The remainder goes to the first shards so that the shares add up to the bounds. */
        sh->max_entries = max_entries / n + (i < max_entries % n);
        sh->max_bytes = max_bytes / n + (i < max_bytes % n);
        tc__edge_policy_init(sh);
    }
    tc__edge_clock_acquire();
    edges_add(e);
    *out = e;
    return TC_OK;
}

void tc__edge_free(tc__edge *e)
{
    if (e == NULL)
        return;
    edges_remove(e);
    edge_destroy(e, e->nshards);
    tc__edge_clock_release();
}

/* Places a value or a tombstone under the version rule shared by set and tombstone. */
/* edge_put's tombstone argument: 0 a value; TOMB_PLAIN a tombstone; TOMB_RETIRE a tombstone
 * that also leaves an entry of the very same version in place. */
#define TOMB_PLAIN 1
#define TOMB_RETIRE 2

static int edge_put(tc__edge *e, const char *key, size_t key_len, const void *value, size_t len,
                    int64_t version, int64_t ttl_ms, int tombstone, unsigned flags)
{
    if (e == NULL || key == NULL || (value == NULL && len > 0))
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    if (ttl_ms <= 0)
        return tc__err(NULL, TC_EINVAL, "edge: ttl_ms %lld is not positive", (long long)ttl_ms);

    uint64_t hash = edge_hash(e, key, key_len);
    size_t si = shard_index(e, hash);
    struct edge_shard *sh = &e->shards[si];
    /* max_bytes and the key bound keep the sum from overflowing once len fits. */
    int too_big = len > sh->max_bytes || len > UINT32_MAX || key_len > UINT16_MAX ||
                  entry_charge(key_len, len) > sh->max_bytes;
    int64_t now = edge_now();
    struct edge_entry *fresh = NULL;
    if (!too_big)
        fresh = entry_new(hash, key, key_len, value, len, version, expiry_after(now, ttl_ms),
                          tombstone, flags);

    struct edge_entry *garbage = NULL;
    int rc;
    shard_write_lock(e, si);
    size_t i = find_slot(sh, hash, key, key_len);
    struct edge_entry *old = sh->slots[i].en;
    struct tc__edge_policy_hint hint = {0, EDGE_SMALL, 0};
    if (old != NULL && !is_expired(old, now) &&
        (old->version > version || (tombstone == TOMB_RETIRE && old->version == version))) {
        rc = 0; /* refusing does not depend on memory: report the refusal, not ENOMEM */
    } else {
        /* The older copy goes in every case: whether the new one is stored, too big or could
         * not be allocated, serving the older version after this call would go back in time. */
        if (old != NULL) {
            int live = !is_expired(old, now);
            if (live && fresh != NULL)
                hint = (struct tc__edge_policy_hint){1, old->queue, freq_of(old)};
            shard_unlink(sh, i, !(live && fresh != NULL), &garbage);
        }
        if (too_big) {
            rc = 0;
        } else if (fresh == NULL || !shard_insert(sh, fresh, hint, now, &garbage)) {
            rc = TC_ENOMEM;
        } else {
            fresh = NULL;
            rc = 1;
        }
    }
    shard_write_unlock(sh);

    entry_free(fresh);
    free_chain(garbage);
    if (rc == TC_ENOMEM)
        return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
    return rc;
}

int tc__edge_set(tc__edge *e, const char *key, size_t key_len, const void *value, size_t len,
                 int64_t version, int64_t ttl_ms)
{
    return edge_put(e, key, key_len, value, len, version, ttl_ms, 0, 0);
}

int tc__edge_set_flags(tc__edge *e, const char *key, size_t key_len, const void *value,
                       size_t len, int64_t version, int64_t ttl_ms, unsigned flags)
{
    return edge_put(e, key, key_len, value, len, version, ttl_ms, 0, flags);
}

int tc__edge_tombstone(tc__edge *e, const char *key, size_t key_len, int64_t version,
                       int64_t ttl_ms)
{
    return edge_put(e, key, key_len, NULL, 0, version, ttl_ms, TOMB_PLAIN, 0);
}

int tc__edge_retire(tc__edge *e, const char *key, size_t key_len, int64_t version,
                    int64_t ttl_ms)
{
    return edge_put(e, key, key_len, NULL, 0, version, ttl_ms, TOMB_RETIRE, 0);
}

/* Returned by lookup() for an expired entry, which only a writer may remove. */
#define EDGE_EXPIRED 1

/* What a read does with the entry it finds: call fn (with *flags set first, when flags is not
 * NULL), or, without fn, copy the value into buf (tc__edge_get_into). */
struct edge_read {
    int count; /* a hit counts in the thread's reader word (EDGE_HIT_UNIT) */
    tc__value_fn fn;
    void *ctx;
    unsigned *flags;
    int64_t *tomb_version; /* receives a tombstone's version, when not NULL */
    void *buf;
    size_t cap;
    size_t *len;
    int64_t *version;
};

/* Copies a plain entry's value out: tc_get_into's read when it takes the general path
 * (tc__edge_get_into_slow). */
EDGE_INLINE int copy_into(const struct edge_read *rd, const struct edge_entry *en)
{
    if (en->flags != 0)
        return TC__EDGE_FLAGGED;
    *rd->len = en->value_len;
    *rd->version = en->version;
    if (en->value_len > rd->cap)
        return TC_ERANGE;
    memcpy(rd->buf, en->data + en->key_len, en->value_len);
    return TC_OK;
}

/* The read itself, shared by the lock-free and the locked path: it changes nothing but the
 * entry's frequency. */
EDGE_INLINE int lookup(struct edge_shard *sh, uint64_t hash, const char *key, size_t key_len,
                       int64_t now, const struct edge_read *rd)
{
    struct edge_entry *en = sh->slots[find_slot(sh, hash, key, key_len)].en;
    if (en == NULL)
        return TC_ENOTFOUND;
    if (hit_expired(en, now))
        return EDGE_EXPIRED;
    /* A tombstone counts as read too: it is worth keeping exactly while its key is being asked
     * for, since that is when a late fill of an older version would arrive. */
    policy_hit(en);
    if (en->tombstone) {
        if (rd->tomb_version != NULL)
            *rd->tomb_version = en->version;
        return TC_ENOTFOUND;
    }
    if (rd->fn == NULL && rd->buf != NULL)
        return copy_into(rd, en);
    if (rd->flags != NULL)
        *rd->flags = en->flags;
    if (rd->fn != NULL) {
        int r = rd->fn(rd->ctx, en->data + en->key_len, en->value_len, en->version,
                       en->expires_ms - now);
        if (r != 0)
            return r;
    }
    return TC_OK;
}

/* Removes the key's entry if it is (still) expired. */
static void drop_expired(tc__edge *e, size_t si, uint64_t hash, const char *key,
                         size_t key_len)
{
    struct edge_shard *sh = &e->shards[si];
    struct edge_entry *garbage = NULL;
    int64_t now = edge_now(); /* before the shard: clock_lock is never taken inside one */
    shard_write_lock(e, si);
    size_t i = find_slot(sh, hash, key, key_len);
    if (sh->slots[i].en != NULL && is_expired(sh->slots[i].en, now))
        shard_unlink(sh, i, 1, &garbage);
    shard_write_unlock(sh);
    free_chain(garbage);
}

/* The read under the shard's mutex, for a reader that found a writer in: it queues behind it
 * as writers do. */
EDGE_COLD static int get_locked(struct edge_shard *sh, uint64_t hash, const char *key,
                                size_t key_len, int64_t now, const struct edge_read *rd)
{
    pthread_mutex_lock(&sh->lock);
    int rc = lookup(sh, hash, key, key_len, now, rd);
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/* The read of a thread without a slot of its own (past EDGE_READER_SLOTS threads): the shared
 * counter takes read-modify-writes. */
EDGE_COLD static int get_shared(tc__edge *e, size_t si, uint64_t hash, const char *key,
                                size_t key_len, int64_t now, const struct edge_read *rd)
{
    struct edge_shard *sh = &e->shards[si];
    atomic_ullong *shared = &e->readers[EDGE_SHARED_SLOT].n[si];
    struct shared_frame frame = {shared, shared_frames};
    shared_frames = &frame;
    unsigned long long before = atomic_fetch_add(shared, 1);
    /* Half the in-progress bits in use (32,768 readers of one shard at once): the mutex
     * instead, long before the count could carry into the hit bits. */
    int busy = (before & EDGE_READING_MASK) >= EDGE_READING_MASK / 2 ||
               atomic_load(&sh->writer) != 0;
    int rc = busy ? TC_ENOTFOUND : lookup(sh, hash, key, key_len, now, rd);
    atomic_fetch_sub_explicit(shared, 1, memory_order_release);
    shared_frames = frame.outer;
    if (busy)
        rc = get_locked(sh, hash, key, key_len, now, rd);
    if (rd->count && (rc == TC_OK || rc == TC_ERANGE))
        atomic_fetch_add_explicit(shared, EDGE_HIT_UNIT, memory_order_relaxed);
    return rc;
}

/* Every read: hash, the reader protocol, lookup, and the removal of an expired entry. */
EDGE_INLINE int edge_read(tc__edge *e, const char *key, size_t key_len,
                          const struct edge_read *rd)
{
    uint64_t hash = edge_hash(e, key, key_len);
    size_t si = shard_index(e, hash);
    struct edge_shard *sh = &e->shards[si];
    int64_t now = hit_clock();
    unsigned slot = reader_slot();
    int rc;

    if (EDGE_UNLIKELY(slot == EDGE_SHARED_SLOT)) {
        rc = get_shared(e, si, hash, key, key_len, now, rd);
    } else {
        /* The word is this thread's alone: a load and a store do (a nested read from a
         * callback just counts up). The store is the hit's one fence. */
        atomic_ullong *mine = &e->readers[slot].n[si];
        unsigned long long mark = atomic_load_explicit(mine, memory_order_relaxed);
        atomic_store(mine, mark + 1);
        int locked = atomic_load(&sh->writer) != 0;
        if (EDGE_UNLIKELY(locked)) {
            atomic_store_explicit(mine, mark, memory_order_release);
            rc = get_locked(sh, hash, key, key_len, now, rd);
        } else {
            rc = lookup(sh, hash, key, key_len, now, rd);
        }
        /* Leaving counts a hit (EDGE_HIT_UNIT). The word is read again rather than restored
         * to mark: a read nested in fn counted its own hit meanwhile. After the locked read the
         * word is back at mark already, and the count is added the same way. */
        unsigned long long hit = rd->count && (rc == TC_OK || rc == TC_ERANGE) ? EDGE_HIT_UNIT : 0;
        unsigned long long cur = atomic_load_explicit(mine, memory_order_relaxed);
        if (!locked)
            atomic_store_explicit(mine, cur - 1 + hit, memory_order_release);
        else if (hit)
            atomic_store_explicit(mine, cur + hit, memory_order_relaxed);
    }
    if (EDGE_UNLIKELY(rc == EDGE_EXPIRED)) {
        drop_expired(e, si, hash, key, key_len);
        rc = TC_ENOTFOUND;
    }
    return rc;
}

int tc__edge_get(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    if (e == NULL || key == NULL)
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    struct edge_read rd = {.fn = fn, .ctx = ctx};
    return edge_read(e, key, key_len, &rd);
}

int tc__edge_get_flags(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx,
                       unsigned *out_flags, int64_t *out_tomb_version)
{
    if (e == NULL || key == NULL || out_flags == NULL)
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    *out_flags = 0;
    if (out_tomb_version != NULL)
        *out_tomb_version = -1;
    struct edge_read rd = {
        .count = 1, .fn = fn, .ctx = ctx, .flags = out_flags, .tomb_version = out_tomb_version};
    return edge_read(e, key, key_len, &rd);
}

int tc__edge_peek(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx,
                  unsigned *out_flags)
{
    if (e == NULL || key == NULL)
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    if (out_flags != NULL)
        *out_flags = 0;
    struct edge_read rd = {.fn = fn, .ctx = ctx, .flags = out_flags};
    return edge_read(e, key, key_len, &rd);
}

int tc__edge_get_into_slow(tc__edge *e, const char *key, size_t key_len, void *buf, size_t cap,
                           size_t *out_len, int64_t *out_version, int64_t *out_tomb_version)
{
    if (e == NULL || key == NULL || buf == NULL || out_len == NULL || out_version == NULL)
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    if (out_tomb_version != NULL)
        *out_tomb_version = -1;
    struct edge_read rd = {.count = 1,
                           .buf = buf,
                           .cap = cap,
                           .len = out_len,
                           .version = out_version,
                           .tomb_version = out_tomb_version};
    return edge_read(e, key, key_len, &rd);
}

int tc__edge_remove(tc__edge *e, const char *key, size_t key_len)
{
    if (e == NULL || key == NULL)
        return 0;
    uint64_t hash = edge_hash(e, key, key_len);
    size_t si = shard_index(e, hash);
    struct edge_shard *sh = &e->shards[si];
    int64_t now = edge_now();
    struct edge_entry *garbage = NULL;
    int removed = 0;

    shard_write_lock(e, si);
    size_t i = find_slot(sh, hash, key, key_len);
    if (sh->slots[i].en != NULL) {
        /* An expired entry is dropped too but not reported: it was already absent. */
        removed = !is_expired(sh->slots[i].en, now);
        shard_unlink(sh, i, 1, &garbage);
    }
    shard_write_unlock(sh);

    free_chain(garbage);
    return removed;
}

void tc__edge_clear(tc__edge *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nshards; i++) {
        struct edge_shard *sh = &e->shards[i];
        shard_write_lock(e, i);
        /* Every entry is on one of the queues, so they are the whole shard's free list. */
        struct edge_queue small = sh->small, main = sh->main;
        tc__edge_policy_reset(sh);
        memset(sh->slots, 0, (sh->mask + 1) * sizeof *sh->slots);
        sh->count = 0;
        sh->bytes = 0;
        shard_write_unlock(sh);

        free_queue(&small);
        free_queue(&main);
    }
}

/* Walks one queue, unlinking the entries match accepts; returns how many were not expired. */
static int64_t remove_matching_in(struct edge_shard *sh, struct edge_queue *q,
                                  tc__edge_match_fn match, void *ctx, int64_t now,
                                  struct edge_entry **garbage)
{
    int64_t removed = 0;
    struct edge_entry *en = q->oldest;
    while (en != NULL) {
        struct edge_entry *newer = newer_of(en);
        if (match(ctx, en->data, en->key_len, en->tombstone ? NULL : en->data + en->key_len,
                  en->tombstone ? 0 : en->value_len, en->flags)) {
            removed += !is_expired(en, now);
            shard_unlink(sh, slot_of(sh, en), 1, garbage);
        }
        en = newer;
    }
    return removed;
}

int64_t tc__edge_remove_matching(tc__edge *e, tc__edge_match_fn match, void *ctx)
{
    if (e == NULL || match == NULL)
        return 0;
    int64_t removed = 0;
    for (size_t i = 0; i < e->nshards; i++) {
        struct edge_shard *sh = &e->shards[i];
        struct edge_entry *garbage = NULL;
        int64_t now = edge_now();
        shard_write_lock(e, i);
        removed += remove_matching_in(sh, &sh->small, match, ctx, now, &garbage);
        removed += remove_matching_in(sh, &sh->main, match, ctx, now, &garbage);
        shard_write_unlock(sh);
        free_chain(garbage);
    }
    return removed;
}

void tc__edge_counts(tc__edge *e, int64_t *entries, int64_t *bytes, int64_t *evictions,
                     int64_t *hits)
{
    int64_t n = 0, b = 0, ev = 0, h = 0;
    if (e != NULL) {
        for (size_t i = 0; i < e->nshards; i++) {
            /* The counts change only under the mutex; readers never touch them. */
            struct edge_shard *sh = &e->shards[i];
            pthread_mutex_lock(&sh->lock);
            n += (int64_t)sh->count;
            b += (int64_t)sh->bytes;
            ev += sh->evictions;
            /* Each word's hits modulo 2^48: what they moved since last time. Exact as long as
             * no word takes 2^48 hits between two calls (65 days of 50 M hits a second). */
            for (unsigned s = 0; s <= EDGE_READER_SLOTS; s++) {
                uint64_t now_hits = (uint64_t)atomic_load_explicit(&e->readers[s].n[i],
                                                                   memory_order_relaxed) /
                                    EDGE_HIT_UNIT;
                sh->hits += (int64_t)((now_hits - sh->hits_seen[s]) & (UINT64_MAX >> 16));
                sh->hits_seen[s] = now_hits;
            }
            h += sh->hits;
            pthread_mutex_unlock(&sh->lock);
        }
    }
    if (entries != NULL)
        *entries = n;
    if (bytes != NULL)
        *bytes = b;
    if (evictions != NULL)
        *evictions = ev;
    if (hits != NULL)
        *hits = h;
}
