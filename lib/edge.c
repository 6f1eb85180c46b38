/*
 * edge.c - the in-process tier: a sharded hash map with TTL, versions, tombstones and bounded
 * size.
 *
 * A key's hash picks a shard; each shard is a complete small cache of its own (mutex, chained
 * hash table, eviction list, share of the entry and byte budgets), so threads working on
 * different keys rarely meet on a lock, and no operation ever holds two locks. The budgets are
 * split exactly (the shares sum to the configured bounds), so the whole map never exceeds them.
 *
 * An entry is one allocation holding the key and the value, so a hit touches one or two cache
 * lines and a set is one malloc. Copies and frees happen outside the shard lock: the lock covers
 * only the table and list surgery (and the caller's copy-out callback on a hit).
 *
 * The eviction policy lives in its own section below and is reached only through policy_*
 * functions, so a scan-resistant policy (SIEVE, S3-FIFO) can replace plain LRU there alone.
 */
#include "edge.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Enough shards that 2-core to 16-core callers rarely collide on a lock. More would shrink each
 * shard's byte budget, which is also the largest value the shard can hold. */
#define EDGE_MAX_SHARDS 16
/* A shard with only a handful of entries wastes much of its share to hash imbalance, and a
 * small byte share refuses ordinary values; small caches are not contended enough to need
 * shards anyway, so they get fewer (down to one). 512 KiB is RocksDB's minimum shard size for
 * the same reason. */
#define EDGE_MIN_SHARD_ENTRIES 32
#define EDGE_MIN_SHARD_BYTES ((size_t)512 * 1024)
#define EDGE_MIN_BUCKETS 16
/* How far from the cold end eviction looks for an expired entry before taking a live one. */
#define EDGE_EXPIRED_PROBE 4

struct edge_entry {
    struct edge_entry *hnext;        /* hash chain; also the free-later chain once unlinked */
    struct edge_entry *newer, *older; /* eviction policy's links */
    uint64_t hash;
    int64_t version;
    int64_t expires_ms; /* tc__now_ms() clock; the entry is absent from then on */
    size_t value_len;
    uint32_t key_len;
    unsigned char tombstone;
    char data[]; /* key_len key bytes, then value_len value bytes */
};

/* Charged per entry besides key and value: the entry header and its share of the bucket array
 * (the table is kept at most one entry per bucket on average). Allocator overhead is left out:
 * it is not ours to know. */
#define EDGE_OVERHEAD (sizeof(struct edge_entry) + sizeof(struct edge_entry *))

struct edge_shard {
    /* One cache line per shard at least, so two threads on neighbouring shards do not bounce
     * each other's line. */
    alignas(64) pthread_mutex_t lock;
    struct edge_entry **buckets;
    size_t mask; /* bucket count - 1; the count is a power of two */
    size_t count, bytes;
    size_t max_entries, max_bytes;
    int64_t evictions;
    struct edge_entry *hottest, *coldest; /* policy state */
};

struct tc__edge {
    struct edge_shard *shards;
    size_t nshards; /* a power of two */
    uint64_t secret[2];
};

/* ---- hashing ------------------------------------------------------------------------------ */
/* A wyhash-style hash: 16 bytes per 64x64->128 multiply, fast on the short keys caches see.
 * Both operands of every multiply carry a per-map random secret, because a known operand could
 * be cancelled to zero by a crafted key and collide whatever the seed (wyhash's "blinding"
 * weakness); keys may come from untrusted clients, and one long chain would serialise a shard.
 * Not a cryptographic PRF: SipHash would be the step up if that is ever needed. */

static uint64_t fold_mul(uint64_t a, uint64_t b)
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

static uint64_t read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t read32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t edge_hash(const tc__edge *e, const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t s0 = e->secret[0], s1 = e->secret[1];
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

/* ---- entries ------------------------------------------------------------------------------ */

static size_t entry_charge(size_t key_len, size_t value_len)
{
    return EDGE_OVERHEAD + key_len + value_len;
}

static size_t charge_of(const struct edge_entry *en)
{
    return entry_charge(en->key_len, en->value_len);
}

static int is_expired(const struct edge_entry *en, int64_t now)
{
    return now >= en->expires_ms;
}

static int64_t expiry_after(int64_t now, int64_t ttl_ms)
{
    /* A caller may pass "forever" as INT64_MAX; saturate instead of wrapping into the past. */
    return ttl_ms > INT64_MAX - now ? INT64_MAX : now + ttl_ms;
}

/* Built and filled before the shard lock is taken, so a large copy never holds other threads
 * up. NULL when out of memory. */
static struct edge_entry *entry_new(uint64_t hash, const char *key, size_t key_len,
                                    const void *value, size_t value_len, int64_t version,
                                    int64_t expires_ms, int tombstone)
{
    struct edge_entry *en = malloc(sizeof *en + key_len + value_len);
    if (en == NULL)
        return NULL;
    en->hnext = en->newer = en->older = NULL;
    en->hash = hash;
    en->version = version;
    en->expires_ms = expires_ms;
    en->value_len = value_len;
    en->key_len = (uint32_t)key_len;
    en->tombstone = (unsigned char)(tombstone != 0);
    memcpy(en->data, key, key_len);
    if (value_len > 0)
        memcpy(en->data + key_len, value, value_len);
    return en;
}

/* Frees entries chained through hnext after they were unlinked under a lock. */
static void free_chain(struct edge_entry *en)
{
    while (en != NULL) {
        struct edge_entry *next = en->hnext;
        free(en);
        en = next;
    }
}

/* ---- eviction policy: plain LRU ----------------------------------------------------------- */
/* Everything the policy knows is the entry's newer/older links and the shard's hottest/coldest
 * ends. All calls are made under the shard lock. */

static void policy_insert(struct edge_shard *sh, struct edge_entry *en)
{
    en->older = sh->hottest;
    en->newer = NULL;
    if (sh->hottest != NULL)
        sh->hottest->newer = en;
    else
        sh->coldest = en;
    sh->hottest = en;
}

static void policy_remove(struct edge_shard *sh, struct edge_entry *en)
{
    if (en->newer != NULL)
        en->newer->older = en->older;
    else
        sh->hottest = en->older;
    if (en->older != NULL)
        en->older->newer = en->newer;
    else
        sh->coldest = en->newer;
    en->newer = en->older = NULL;
}

static void policy_touch(struct edge_shard *sh, struct edge_entry *en)
{
    if (sh->hottest == en)
        return;
    policy_remove(sh, en);
    policy_insert(sh, en);
}

/* The entry to give up for room. An expired entry is never touched again (reading it removes
 * it), so expired entries drift to the cold end under LRU: a short look there finds most of
 * them and spares a live entry, without a sweep over the whole table. */
static struct edge_entry *policy_victim(struct edge_shard *sh, int64_t now)
{
    struct edge_entry *en = sh->coldest;
    for (int i = 0; i < EDGE_EXPIRED_PROBE && en != NULL; i++, en = en->newer)
        if (is_expired(en, now))
            return en;
    return sh->coldest;
}

static void policy_reset(struct edge_shard *sh)
{
    sh->hottest = sh->coldest = NULL;
}

/* ---- shards ------------------------------------------------------------------------------- */

static struct edge_shard *shard_for(const tc__edge *e, uint64_t hash)
{
    /* High bits pick the shard, low bits the bucket, so the two choices are independent. */
    return &e->shards[(size_t)(hash >> 40) & (e->nshards - 1)];
}

/* The link that points at the key's entry, or at the NULL ending its chain. */
static struct edge_entry **find_link(struct edge_shard *sh, uint64_t hash, const char *key,
                                     size_t key_len)
{
    struct edge_entry **link = &sh->buckets[hash & sh->mask];
    for (; *link != NULL; link = &(*link)->hnext) {
        const struct edge_entry *en = *link;
        if (en->hash == hash && en->key_len == key_len && memcmp(en->data, key, key_len) == 0)
            break;
    }
    return link;
}

static struct edge_entry **link_of(struct edge_shard *sh, const struct edge_entry *target)
{
    struct edge_entry **link = &sh->buckets[target->hash & sh->mask];
    while (*link != target)
        link = &(*link)->hnext;
    return link;
}

/* Takes the entry at *link out of the table, the policy and the accounting, and hands it to
 * *garbage to be freed once the lock is released. */
static void shard_unlink(struct edge_shard *sh, struct edge_entry **link,
                         struct edge_entry **garbage)
{
    struct edge_entry *en = *link;
    *link = en->hnext;
    policy_remove(sh, en);
    sh->count--;
    sh->bytes -= charge_of(en);
    en->hnext = *garbage;
    *garbage = en;
}

/* Doubles the bucket array once entries outnumber buckets. If that allocation fails the table
 * stays as it is: chains get longer, nothing breaks, so there is no error to report. */
static void shard_maybe_grow(struct edge_shard *sh)
{
    size_t n = sh->mask + 1;
    if (sh->count <= n || n > SIZE_MAX / 2 / sizeof *sh->buckets)
        return;
    struct edge_entry **nb = calloc(n * 2, sizeof *nb);
    if (nb == NULL)
        return;
    size_t nmask = n * 2 - 1;
    for (size_t i = 0; i < n; i++) {
        struct edge_entry *en = sh->buckets[i];
        while (en != NULL) {
            struct edge_entry *next = en->hnext;
            en->hnext = nb[en->hash & nmask];
            nb[en->hash & nmask] = en;
            en = next;
        }
    }
    free(sh->buckets);
    sh->buckets = nb;
    sh->mask = nmask;
}

/* Evicts until one more entry of `need` bytes fits. The caller has checked that need alone fits
 * the shard's budget, so this ends at the latest with the shard empty. Expired entries removed
 * here are not counted as evictions: they were already gone for every reader. */
static void shard_make_room(struct edge_shard *sh, size_t need, int64_t now,
                            struct edge_entry **garbage)
{
    while (sh->count + 1 > sh->max_entries || sh->bytes + need > sh->max_bytes) {
        struct edge_entry *victim = policy_victim(sh, now);
        if (!is_expired(victim, now))
            sh->evictions++;
        shard_unlink(sh, link_of(sh, victim), garbage);
    }
}

static void shard_insert(struct edge_shard *sh, struct edge_entry *en, int64_t now,
                         struct edge_entry **garbage)
{
    shard_make_room(sh, charge_of(en), now, garbage);
    /* Looked up again: making room may have changed the chain. */
    struct edge_entry **head = &sh->buckets[en->hash & sh->mask];
    en->hnext = *head;
    *head = en;
    policy_insert(sh, en);
    sh->count++;
    sh->bytes += charge_of(en);
    shard_maybe_grow(sh);
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

static void edge_destroy(tc__edge *e, size_t initialised)
{
    for (size_t i = 0; i < initialised; i++) {
        struct edge_shard *sh = &e->shards[i];
        struct edge_entry *en = sh->hottest;
        while (en != NULL) {
            struct edge_entry *older = en->older;
            free(en);
            en = older;
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
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
     * member makes sizeof(struct edge_shard) one. */
    e->shards = aligned_alloc(alignof(struct edge_shard), n * sizeof *e->shards);
    if (e->shards == NULL) {
        free(e);
        return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
    }
    memset(e->shards, 0, n * sizeof *e->shards);
    e->nshards = n;
    make_secret(e);

    for (size_t i = 0; i < n; i++) {
        struct edge_shard *sh = &e->shards[i];
        sh->buckets = calloc(EDGE_MIN_BUCKETS, sizeof *sh->buckets);
        if (sh->buckets == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->buckets);
            edge_destroy(e, i);
            return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
        }
        sh->mask = EDGE_MIN_BUCKETS - 1;
        /* The remainder goes to the first shards so that the shares add up to the bounds. */
        sh->max_entries = max_entries / n + (i < max_entries % n);
        sh->max_bytes = max_bytes / n + (i < max_bytes % n);
    }
    *out = e;
    return TC_OK;
}

void tc__edge_free(tc__edge *e)
{
    if (e != NULL)
        edge_destroy(e, e->nshards);
}

/* Places a value or a tombstone under the version rule shared by set and tombstone. */
static int edge_put(tc__edge *e, const char *key, size_t key_len, const void *value, size_t len,
                    int64_t version, int64_t ttl_ms, int tombstone)
{
    if (e == NULL || key == NULL || (value == NULL && len > 0))
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    if (ttl_ms <= 0)
        return tc__err(NULL, TC_EINVAL, "edge: ttl_ms %lld is not positive", (long long)ttl_ms);

    uint64_t hash = edge_hash(e, key, key_len);
    struct edge_shard *sh = shard_for(e, hash);
    /* max_bytes and the key bound keep the sum from overflowing once len fits. */
    int too_big = len > sh->max_bytes || entry_charge(key_len, len) > sh->max_bytes;
    int64_t now = tc__now_ms();
    struct edge_entry *fresh = NULL;
    if (!too_big)
        fresh = entry_new(hash, key, key_len, value, len, version, expiry_after(now, ttl_ms),
                          tombstone);

    struct edge_entry *garbage = NULL;
    int rc;
    pthread_mutex_lock(&sh->lock);
    struct edge_entry **link = find_link(sh, hash, key, key_len);
    struct edge_entry *old = *link;
    if (old != NULL && !is_expired(old, now) && old->version > version) {
        rc = 0; /* refusing does not depend on memory: report the refusal, not ENOMEM */
    } else {
        /* The older copy goes in every case: whether the new one is stored, too big or could
         * not be allocated, serving the older version after this call would go back in time. */
        if (old != NULL)
            shard_unlink(sh, link, &garbage);
        if (too_big) {
            rc = 0;
        } else if (fresh == NULL) {
            rc = TC_ENOMEM;
        } else {
            shard_insert(sh, fresh, now, &garbage);
            fresh = NULL;
            rc = 1;
        }
    }
    pthread_mutex_unlock(&sh->lock);

    free(fresh);
    free_chain(garbage);
    if (rc == TC_ENOMEM)
        return tc__err(NULL, TC_ENOMEM, "edge: out of memory");
    return rc;
}

int tc__edge_set(tc__edge *e, const char *key, size_t key_len, const void *value, size_t len,
                 int64_t version, int64_t ttl_ms)
{
    return edge_put(e, key, key_len, value, len, version, ttl_ms, 0);
}

int tc__edge_tombstone(tc__edge *e, const char *key, size_t key_len, int64_t version,
                       int64_t ttl_ms)
{
    return edge_put(e, key, key_len, NULL, 0, version, ttl_ms, 1);
}

int tc__edge_get(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    if (e == NULL || key == NULL)
        return tc__err(NULL, TC_EINVAL, "edge: NULL argument");
    uint64_t hash = edge_hash(e, key, key_len);
    struct edge_shard *sh = shard_for(e, hash);
    int64_t now = tc__now_ms();
    struct edge_entry *garbage = NULL;
    int rc;

    pthread_mutex_lock(&sh->lock);
    struct edge_entry **link = find_link(sh, hash, key, key_len);
    struct edge_entry *en = *link;
    if (en == NULL) {
        rc = TC_ENOTFOUND;
    } else if (is_expired(en, now)) {
        shard_unlink(sh, link, &garbage);
        rc = TC_ENOTFOUND;
    } else {
        /* A tombstone is touched too: it is worth keeping exactly while its key is being asked
         * for, since that is when a late fill of an older version would arrive. */
        policy_touch(sh, en);
        if (en->tombstone) {
            rc = TC_ENOTFOUND;
        } else {
            rc = TC_OK;
            if (fn != NULL) {
                int r = fn(ctx, en->data + en->key_len, en->value_len, en->version,
                           en->expires_ms - now);
                if (r != 0)
                    rc = r;
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);

    free_chain(garbage);
    return rc;
}

int tc__edge_remove(tc__edge *e, const char *key, size_t key_len)
{
    if (e == NULL || key == NULL)
        return 0;
    uint64_t hash = edge_hash(e, key, key_len);
    struct edge_shard *sh = shard_for(e, hash);
    int64_t now = tc__now_ms();
    struct edge_entry *garbage = NULL;
    int removed = 0;

    pthread_mutex_lock(&sh->lock);
    struct edge_entry **link = find_link(sh, hash, key, key_len);
    if (*link != NULL) {
        /* An expired entry is dropped too but not reported: it was already absent. */
        removed = !is_expired(*link, now);
        shard_unlink(sh, link, &garbage);
    }
    pthread_mutex_unlock(&sh->lock);

    free_chain(garbage);
    return removed;
}

void tc__edge_clear(tc__edge *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nshards; i++) {
        struct edge_shard *sh = &e->shards[i];
        pthread_mutex_lock(&sh->lock);
        /* Every entry is on the policy list, so that list is the whole shard's free list. */
        struct edge_entry *en = sh->hottest;
        policy_reset(sh);
        memset(sh->buckets, 0, (sh->mask + 1) * sizeof *sh->buckets);
        sh->count = 0;
        sh->bytes = 0;
        pthread_mutex_unlock(&sh->lock);

        while (en != NULL) {
            struct edge_entry *older = en->older;
            free(en);
            en = older;
        }
    }
}

void tc__edge_counts(tc__edge *e, int64_t *entries, int64_t *bytes, int64_t *evictions)
{
    int64_t n = 0, b = 0, ev = 0;
    if (e != NULL) {
        for (size_t i = 0; i < e->nshards; i++) {
            struct edge_shard *sh = &e->shards[i];
            pthread_mutex_lock(&sh->lock);
            n += (int64_t)sh->count;
            b += (int64_t)sh->bytes;
            ev += sh->evictions;
            pthread_mutex_unlock(&sh->lock);
        }
    }
    if (entries != NULL)
        *entries = n;
    if (bytes != NULL)
        *bytes = b;
    if (evictions != NULL)
        *evictions = ev;
}
