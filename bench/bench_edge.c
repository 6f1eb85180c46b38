/*
 * bench_edge.c - the edge tier's benchmarks, each figure next to its baseline from the same run:
 *   BENCH <id> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 *
 *   edge-hit-<keys>-<dist>        ns per tc__edge_get_into hit (tc_get_into's read, inline as
 *                                 it is there; the baseline is inline too) copying a
 *                                 64-byte value out, vs a bare open-addressing lookup plus
 *                                 memcpy on the same keys and trace
 *   edge-scale-self-<set>         2-thread aggregate hits/s vs the same edge at 1 thread
 *   edge-scale-vs-mutex-lru-<set> 2-thread hits/s vs a global-mutex LRU map at 2 threads
 *   edge-scale-machine-<set>      (reference) the bare table's own 2-thread vs 1-thread scaling:
 *                                 what this machine allows at all
 *   edge-missratio-<trace>-<size> miss ratio of the edge itself (16 shards, S3-FIFO) vs LRU
 *   edge-missratio-fifo-...       FIFO vs LRU on the same trace
 *   edge-missratio-belady-...     Belady's optimum (MIN) vs LRU: the bound; the '#' lines give
 *                                 the share of LRU's gap to it that each policy closes
 *   edge-missratio-wtinylfu-...   a W-TinyLFU simulation (Caffeine's design, fixed 1% window)
 *                                 vs LRU
 *   edge-vs-caffeine-...          the edge vs Debian's libcaffeine-java replaying the same
 *                                 trace (bench/bench_caffeine.sh sets BENCH_CAFFEINE)
 *   edge-ttl-<keys>-<dist>        ns per hit with the TTL check vs the same code compiled without
 *   api-hit-into-<keys>-<dist>    ns per tc_get_into answered by the edge, through a handle (the
 *                                 caches alone, store.type "none"), vs the bare lookup and copy
 *   api-hit-get-<keys>-<dist>     ns per tc_get + tc_free answered by the edge vs the bare
 *                                 lookup and copy into a malloc'd buffer, then free
 *
 * Miss-ratio traces (1M keys, 10M requests each): Zipf with alpha 0.6, 0.8, 0.99, 1.2; "scan",
 * Zipf 0.99 phases interleaved with sequential scans of keys that are never seen again; "loop",
 * a cycle over 1.1 times the cache's size; "shift", "block" and "once" (trace_mix): a popular
 * set that drifts, a block-storage-like mix of one-hit wonders and long reuse distances, and
 * mostly keys seen once. Cache sizes are 0.1%, 0.5%, 1%, 10%, 50%, 80% and 95% of the key
 * space. BENCH_EDGE_TRACES=zipf0.99,shift (any of them) runs only those traces.
 * LRU, FIFO, SIEVE and S3-FIFO are also simulated (global, exact, one entry per key) and printed
 * as '#' lines: that is the comparison the edge's policy was chosen on (docs/eviction.md).
 *
 * Timings are medians of 7 rounds, on whatever this machine is doing: compare ratios. The whole
 * program takes about 5 minutes on 2 cores (the miss-ratio part 3.5 of them), more with the
 * Caffeine replay.
 * BENCH_EDGE_INSTR=<kind> runs one table's reads for bench/bench_instr.sh (callgrind) alone.
 * BENCH_EDGE_QUICK=1 in the environment runs everything smaller (a smoke test);
 * BENCH_EDGE_ONLY=hit,scale,missratio (any of them) runs only those parts; BENCH_EDGE_HIT_KEYS=10k
 * (or 1m) only that size of the hit part.
 */

/* The TTL baseline is this very edge compiled without its TTL check: a second copy of edge.c,
 * built here with EDGE_BENCH_NO_TTL and its functions renamed, next to the library's. Included
 * first so that edge.h declares the renamed functions; the library's declarations follow. A
 * function or variable added to edge.h, or to edge_layout.h's shared section, needs a line in
 * both lists (the link fails on a duplicate otherwise). edge_layout.h's layout is read once (the
 * two copies share their structures), its shared section and edge_hit.h twice, so that both
 * tc__edge_get_into and nottl_edge_get_into are inline here, as tc__edge_get_into is in
 * tc_get_into. The copy shares the library's eviction policy (policy.c) and clock (clock.c):
 * so this program must not fork(), where both copies' atfork handlers would take the clock's
 * lock. */
#define EDGE_BENCH_NO_TTL 1
#define tc__edge_new nottl_edge_new
#define tc__edge_free nottl_edge_free
#define tc__edge_get nottl_edge_get
#define tc__edge_get_flags nottl_edge_get_flags
#define tc__edge_get_into nottl_edge_get_into
#define tc__edge_set_flags nottl_edge_set_flags
#define tc__edge_set nottl_edge_set
#define tc__edge_tombstone nottl_edge_tombstone
#define tc__edge_remove nottl_edge_remove
#define tc__edge_clear nottl_edge_clear
#define tc__edge_counts nottl_edge_counts
#define tc__edge_remove_matching nottl_edge_remove_matching
#define tc__edge_retire nottl_edge_retire
#define tc__edge_peek nottl_edge_peek
#define tc__edge_get_into_slow nottl_edge_get_into_slow
#define tc__edge_thread_slot nottl_edge_thread_slot
#define tc__edge_try_hit nottl_edge_try_hit
#define edge_hit nottl_edge_hit
#include "edge/edge.c"
#include "edge/edge_hit.h"
#undef tc__edge_new
#undef tc__edge_free
#undef tc__edge_get
#undef tc__edge_get_flags
#undef tc__edge_get_into
#undef tc__edge_set_flags
#undef tc__edge_set
#undef tc__edge_tombstone
#undef tc__edge_remove
#undef tc__edge_clear
#undef tc__edge_counts
#undef tc__edge_remove_matching
#undef tc__edge_retire
#undef tc__edge_peek
#undef tc__edge_get_into_slow
#undef tc__edge_thread_slot
#undef tc__edge_try_hit
#undef edge_hit
#undef EDGE_BENCH_NO_TTL
#undef TC_EDGE_H
#undef TC_EDGE_HIT_H
#undef TC_EDGE_SHARED_H
#include "edge/edge.h"
#include "edge/edge_hit.h"
#include "edge/policy.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>

#define ROUNDS 7
#define VALUE_LEN 64
#define LONG_TTL_MS 3600000
#define KEY_MAX_LEN 24

static int quick;

static void die(const char *what)
{
    fprintf(stderr, "bench_edge: %s\n", what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        die("out of memory");
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        die("out of memory");
    return p;
}

/* ---- random numbers and Zipf ---------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Zipf ranks 1..n by rejection-inversion (Hoermann and Derflinger 1996, as in Apache Commons
 * RNG): O(1) per sample and no table, exact for any alpha > 0 including values near 1. */
typedef struct zipf {
    double alpha, h_x1, h_n, s;
    uint32_t n;
} zipf;

static double zipf_helper1(double x)
{
    return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - x * 0.25));
}

static double zipf_helper2(double x)
{
    return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + x * 0.25));
}

static double zipf_h(const zipf *z, double x)
{
    return exp(-z->alpha * log(x));
}

static double zipf_hint(const zipf *z, double x)
{
    double lx = log(x);
    return zipf_helper2((1 - z->alpha) * lx) * lx;
}

static double zipf_hint_inv(const zipf *z, double x)
{
    double t = x * (1 - z->alpha);
    if (t < -1)
        t = -1;
    return exp(zipf_helper1(t) * x);
}

static void zipf_init(zipf *z, uint32_t n, double alpha)
{
    z->alpha = alpha;
    z->n = n;
    z->h_x1 = zipf_hint(z, 1.5) - 1;
    z->h_n = zipf_hint(z, n + 0.5);
    z->s = 2 - zipf_hint_inv(z, zipf_hint(z, 2.5) - zipf_h(z, 2));
}

/* A rank in 0..n-1, 0 the most popular. */
static uint32_t zipf_next(const zipf *z, uint64_t *rng)
{
    for (;;) {
        double u = z->h_n + uniform01(rng) * (z->h_x1 - z->h_n);
        double x = zipf_hint_inv(z, u);
        double k = floor(x + 0.5);
        if (k < 1)
            k = 1;
        else if (k > z->n)
            k = z->n;
        if (k - x <= z->s || u >= zipf_hint(z, k + 0.5) - zipf_h(z, k))
            return (uint32_t)k - 1;
    }
}

/* Popularity rank -> key id, so that hot keys are scattered over ids (and shards). */
static uint32_t *random_permutation(uint32_t n, uint64_t seed)
{
    uint32_t *p = xmalloc(n * sizeof *p);
    for (uint32_t i = 0; i < n; i++)
        p[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(splitmix(&seed) % (i + 1));
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return p;
}

/* A trace of `len` key ids in 0..n-1: Zipf(alpha), or uniform for alpha 0. */
static uint32_t *make_trace(uint32_t n, double alpha, size_t len, uint64_t seed)
{
    uint32_t *t = xmalloc(len * sizeof *t);
    uint32_t *perm = random_permutation(n, seed ^ 0x5bd1e995u);
    zipf z;
    zipf_init(&z, n, alpha > 0 ? alpha : 1);
    for (size_t i = 0; i < len; i++)
        t[i] = alpha > 0 ? perm[zipf_next(&z, &seed)] : (uint32_t)(splitmix(&seed) % n);
    free(perm);
    return t;
}

/* ---- keys ------------------------------------------------------------------------------------ */

typedef struct keyset {
    uint32_t n;
    char (*key)[KEY_MAX_LEN];
    uint8_t *len;
} keyset;

static void keyset_init(keyset *ks, uint32_t n)
{
    ks->n = n;
    ks->key = xmalloc(n * sizeof *ks->key);
    ks->len = xmalloc(n);
    for (uint32_t i = 0; i < n; i++)
        ks->len[i] = (uint8_t)snprintf(ks->key[i], KEY_MAX_LEN, "bench:item:%u", i);
}

static void keyset_free(keyset *ks)
{
    free(ks->key);
    free(ks->len);
}

/* ---- the baselines: a bare open-addressing table and a global-mutex LRU ---------------------- */

/* The edge's own hash (from the copy of edge.c included above) with fixed secrets, so that the
 * comparison prices the table and not the hash. */
static uint64_t bare_hash(const char *key, size_t len)
{
    return hash_with(0xa0761d6478bd642full, 0xe7037ed1a0b428dbull, key, len);
}

/* Linear probing over (hash, record) slots at load <= 0.5; a record holds key and value in one
 * allocation, as any table with variable-length keys and values must keep them somewhere. Keys
 * are compared with the edge's own inline compare (key_eq), as they are hashed with its hash:
 * the ratio prices the edge's machinery, not a memcmp call one side makes and the other not. */
typedef struct bare_rec {
    uint32_t key_len, value_len;
    char data[];
} bare_rec;

typedef struct bare_slot {
    uint64_t hash;
    bare_rec *rec;
} bare_slot;

typedef struct bare_table {
    bare_slot *slots;
    size_t mask;
} bare_table;

static void bare_build(bare_table *t, const keyset *ks, const char *value)
{
    size_t cap = 16;
    while (cap < (size_t)ks->n * 2)
        cap *= 2;
    t->slots = xcalloc(cap, sizeof *t->slots);
    t->mask = cap - 1;
    for (uint32_t i = 0; i < ks->n; i++) {
        bare_rec *r = xmalloc(sizeof *r + ks->len[i] + VALUE_LEN);
        r->key_len = ks->len[i];
        r->value_len = VALUE_LEN;
        memcpy(r->data, ks->key[i], ks->len[i]);
        memcpy(r->data + ks->len[i], value, VALUE_LEN);
        uint64_t h = bare_hash(ks->key[i], ks->len[i]);
        size_t j = h & t->mask;
        while (t->slots[j].rec != NULL)
            j = (j + 1) & t->mask;
        t->slots[j].hash = h;
        t->slots[j].rec = r;
    }
}

/* Inlined in the read loop, as it always was: the baseline pays no call. */
EDGE_INLINE int bare_get(const bare_table *t, const char *key, size_t len, void *out)
{
    uint64_t h = bare_hash(key, len);
    for (size_t j = h & t->mask;; j = (j + 1) & t->mask) {
        const bare_slot *s = &t->slots[j];
        if (s->rec == NULL)
            return 0;
        if (s->hash == h && s->rec->key_len == len && key_eq(s->rec->data, key, len)) {
            memcpy(out, s->rec->data + len, s->rec->value_len);
            return 1;
        }
    }
}

/* The same lookup comparing keys with memcmp, as the baseline did before the edge's hit path
 * got its inline compare; printed as a '#' line for comparison with earlier figures. */
EDGE_INLINE int bare_get_memcmp(const bare_table *t, const char *key, size_t len, void *out)
{
    uint64_t h = bare_hash(key, len);
    for (size_t j = h & t->mask;; j = (j + 1) & t->mask) {
        const bare_slot *s = &t->slots[j];
        if (s->rec == NULL)
            return 0;
        if (s->hash == h && s->rec->key_len == len && memcmp(s->rec->data, key, len) == 0) {
            memcpy(out, s->rec->data + len, s->rec->value_len);
            return 1;
        }
    }
}

static void bare_free(bare_table *t)
{
    for (size_t j = 0; j <= t->mask; j++)
        free(t->slots[j].rec);
    free(t->slots);
}

/* What "a cache with a lock" usually is: one mutex, a chained table, an LRU list moved on every
 * hit. */
typedef struct lru_node {
    struct lru_node *hnext, *prev, *next;
    uint64_t hash;
    uint32_t key_len, value_len;
    char data[];
} lru_node;

typedef struct mutex_lru {
    pthread_mutex_t lock;
    lru_node **buckets;
    size_t mask;
    lru_node head; /* head.next is the most recent */
} mutex_lru;

static void mlru_build(mutex_lru *m, const keyset *ks, const char *value)
{
    size_t cap = 16;
    while (cap < ks->n)
        cap *= 2;
    pthread_mutex_init(&m->lock, NULL);
    m->buckets = xcalloc(cap, sizeof *m->buckets);
    m->mask = cap - 1;
    m->head.next = m->head.prev = &m->head;
    for (uint32_t i = 0; i < ks->n; i++) {
        lru_node *nd = xmalloc(sizeof *nd + ks->len[i] + VALUE_LEN);
        nd->hash = bare_hash(ks->key[i], ks->len[i]);
        nd->key_len = ks->len[i];
        nd->value_len = VALUE_LEN;
        memcpy(nd->data, ks->key[i], ks->len[i]);
        memcpy(nd->data + ks->len[i], value, VALUE_LEN);
        nd->hnext = m->buckets[nd->hash & m->mask];
        m->buckets[nd->hash & m->mask] = nd;
        nd->next = m->head.next;
        nd->prev = &m->head;
        m->head.next->prev = nd;
        m->head.next = nd;
    }
}

static int mlru_get(mutex_lru *m, const char *key, size_t len, void *out)
{
    uint64_t h = bare_hash(key, len);
    pthread_mutex_lock(&m->lock);
    lru_node *nd = m->buckets[h & m->mask];
    while (nd != NULL && (nd->hash != h || nd->key_len != len || memcmp(nd->data, key, len) != 0))
        nd = nd->hnext;
    if (nd != NULL) {
        nd->prev->next = nd->next;
        nd->next->prev = nd->prev;
        nd->next = m->head.next;
        nd->prev = &m->head;
        m->head.next->prev = nd;
        m->head.next = nd;
        memcpy(out, nd->data + len, nd->value_len);
    }
    pthread_mutex_unlock(&m->lock);
    return nd != NULL;
}

static void mlru_free(mutex_lru *m)
{
    for (size_t j = 0; j <= m->mask; j++) {
        lru_node *nd = m->buckets[j];
        while (nd != NULL) {
            lru_node *next = nd->hnext;
            free(nd);
            nd = next;
        }
    }
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
}

/* ---- the tables under test, behind one reader function --------------------------------------- */

enum table_kind {
    T_EDGE, T_EDGE_NOTTL, T_BARE, T_MUTEX_LRU, T_BARE_MEMCMP,
    T_API_INTO, T_API_GET, T_BARE_MALLOC /* the handle's reads, and tc_get's baseline */
};

typedef struct tables {
    const keyset *ks;
    tc__edge *edge, *nottl;
    bare_table bare;
    mutex_lru lru;
    tc_cache *api; /* T_API_*: a handle whose edge holds every key */
} tables;

/* A handle as a user opens one for the caches alone (no file, no Redis), every key put once:
 * its edge holds them all for the whole run. */
static tc_cache *filled_handle(const keyset *ks, const char *value)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"store\": {\"type\": \"none\"}, \"ttl_jitter_pct\": 0, "
             "\"edge\": {\"max_entries\": %lu, \"max_bytes\": %lu, \"max_ttl_ms\": %d}}",
             (unsigned long)ks->n * 2, (unsigned long)ks->n * 1024 + (64ul << 20), LONG_TTL_MS);
    tc_cache *c = bench_open_json("bench_edge", json);
    for (uint32_t i = 0; i < ks->n; i++)
        if (tc_put(c, ks->key[i], ks->len[i], value, VALUE_LEN, LONG_TTL_MS) != TC_OK)
            die("tc_put");
    return c;
}

static tc__edge *filled_edge(const keyset *ks, const char *value, int nottl)
{
    tc__edge *e;
    /* Twice the keys, so that no shard's share is exceeded by hash imbalance: every read hits. */
    size_t entries = (size_t)ks->n * 2, bytes = (size_t)ks->n * 1024 + ((size_t)64 << 20);
    if ((nottl ? nottl_edge_new(&e, entries, bytes) : tc__edge_new(&e, entries, bytes)) != TC_OK)
        die("edge_new");
    for (uint32_t i = 0; i < ks->n; i++) {
        int rc = nottl ? nottl_edge_set(e, ks->key[i], ks->len[i], value, VALUE_LEN, 1, LONG_TTL_MS)
                       : tc__edge_set(e, ks->key[i], ks->len[i], value, VALUE_LEN, 1, LONG_TTL_MS);
        if (rc != 1)
            die("edge_set");
    }
    return e;
}

static void tables_build(tables *t, const keyset *ks, int kinds)
{
    char value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    memset(t, 0, sizeof *t);
    t->ks = ks;
    if (kinds & (1 << T_EDGE))
        t->edge = filled_edge(ks, value, 0);
    if (kinds & (1 << T_EDGE_NOTTL))
        t->nottl = filled_edge(ks, value, 1);
    if (kinds & (1 << T_BARE))
        bare_build(&t->bare, ks, value);
    if (kinds & (1 << T_MUTEX_LRU))
        mlru_build(&t->lru, ks, value);
    if (kinds & (1 << T_API_INTO))
        t->api = filled_handle(ks, value);
}

static void tables_free(tables *t)
{
    tc__edge_free(t->edge);
    nottl_edge_free(t->nottl);
    if (t->bare.slots != NULL)
        bare_free(&t->bare);
    if (t->lru.buckets != NULL)
        mlru_free(&t->lru);
    tc_close(t->api);
}

/* Reads trace[from .. from+count) (wrapping) from one table; returns the hits. `stop`, if not
 * NULL, ends the run early when it turns non-zero (checked every 256 reads). */
static size_t read_trace(tables *t, enum table_kind kind, const uint32_t *trace, size_t len,
                         size_t from, size_t count, atomic_int *stop, size_t *done)
{
    char out[VALUE_LEN];
    size_t hits = 0, i = 0, j = from % len, vlen;
    int64_t ver;
    const keyset *ks = t->ks;
    for (; i < count; i++, j = j + 1 < len ? j + 1 : 0) {
        if (stop != NULL && (i & 255) == 0 && atomic_load_explicit(stop, memory_order_relaxed))
            break;
        uint32_t k = trace[j];
        const char *key = ks->key[k];
        size_t klen = ks->len[k];
        switch (kind) {
        case T_EDGE:
            hits += tc__edge_get_into(t->edge, key, klen, out, sizeof out, &vlen, &ver, NULL) ==
                    TC_OK;
            break;
        case T_EDGE_NOTTL:
            hits += nottl_edge_get_into(t->nottl, key, klen, out, sizeof out, &vlen, &ver, NULL) ==
                    TC_OK;
            break;
        case T_BARE:
            hits += (size_t)bare_get(&t->bare, key, klen, out);
            break;
        case T_MUTEX_LRU:
            hits += (size_t)mlru_get(&t->lru, key, klen, out);
            break;
        case T_BARE_MEMCMP:
            hits += (size_t)bare_get_memcmp(&t->bare, key, klen, out);
            break;
        case T_API_INTO:
            hits += tc_get_into(&vlen, t->api, key, klen, out, sizeof out) == TC_OK;
            break;
        case T_API_GET: {
            void *v;
            if (tc_get(&v, &vlen, t->api, key, klen) == TC_OK) {
                hits++;
                tc_free(v);
            }
            break;
        }
        case T_BARE_MALLOC: {
            /* tc_get's work without the library: the lookup, a buffer of the value's size (and
             * its NUL, as tc_get's), the copy, the free. */
            void *v = malloc(VALUE_LEN + 1);
            if (v != NULL) {
                hits += (size_t)bare_get(&t->bare, key, klen, v);
                ((char *)v)[VALUE_LEN] = '\0';
                out[0] = ((char *)v)[0];
                free(v);
            }
            break;
        }
        }
    }
    if (done != NULL)
        *done = i;
    return hits;
}

/* ns per read over `count` reads; every one must hit. */
static double time_reads(tables *t, enum table_kind kind, const uint32_t *trace, size_t len,
                         size_t count)
{
    double t0 = now_ns();
    size_t hits = read_trace(t, kind, trace, len, 0, count, NULL, NULL);
    double ns = (now_ns() - t0) / (double)count;
    if (hits != count)
        die("a read missed in a hit benchmark");
    return ns;
}

/* ---- edge-hit and edge-ttl ------------------------------------------------------------------ */

static void bench_hit(uint32_t nkeys, const char *keys_name)
{
    keyset ks;
    keyset_init(&ks, nkeys);
    tables t;
    tables_build(&t, &ks, 1 << T_EDGE | 1 << T_EDGE_NOTTL | 1 << T_BARE | 1 << T_API_INTO);
    size_t len = quick ? 100000 : nkeys >= 1000000 ? 1000000 : 2000000;
    static const double alphas[] = {0.99, 0};
    for (int a = 0; a < 2; a++) {
        uint32_t *trace = make_trace(nkeys, alphas[a], len, 42 + (uint64_t)a);
        const char *dist = alphas[a] > 0 ? "zipf0.99" : "uniform";
        double edge[ROUNDS], bare[ROUNDS], nottl[ROUNDS], bare_mc[ROUNDS];
        double into[ROUNDS], get[ROUNDS], bare_malloc[ROUNDS];
        read_trace(&t, T_EDGE, trace, len, 0, len, NULL, NULL); /* warm the caches and the clock */
        read_trace(&t, T_API_INTO, trace, len, 0, len, NULL, NULL);
        for (int r = 0; r < ROUNDS; r++) {
            edge[r] = time_reads(&t, T_EDGE, trace, len, len);
            bare[r] = time_reads(&t, T_BARE, trace, len, len);
            nottl[r] = time_reads(&t, T_EDGE_NOTTL, trace, len, len);
            bare_mc[r] = time_reads(&t, T_BARE_MEMCMP, trace, len, len);
            into[r] = time_reads(&t, T_API_INTO, trace, len, len);
            get[r] = time_reads(&t, T_API_GET, trace, len, len);
            bare_malloc[r] = time_reads(&t, T_BARE_MALLOC, trace, len, len);
        }
        char id[64];
        double e = median(edge, ROUNDS);
        snprintf(id, sizeof id, "edge-hit-%s-%s", keys_name, dist);
        report(id, "ns_per_hit", e, median(bare, ROUNDS));
        double bm = median(bare_mc, ROUNDS);
        printf("# edge-hit-%s-%s against the baseline with memcmp (before the edge compared keys "
               "inline): baseline=%.4g ratio=%.4g\n",
               keys_name, dist, bm, e / bm);
        snprintf(id, sizeof id, "edge-ttl-%s-%s", keys_name, dist);
        report(id, "ns_per_hit", e, median(nottl, ROUNDS));
        /* What a user's call costs over the edge's own hit (the call into the library and its
         * checks; tc_get's allocation) against the same bare lookup. */
        snprintf(id, sizeof id, "api-hit-into-%s-%s", keys_name, dist);
        report(id, "ns_per_hit", median(into, ROUNDS), median(bare, ROUNDS));
        snprintf(id, sizeof id, "api-hit-get-%s-%s", keys_name, dist);
        report(id, "ns_per_hit", median(get, ROUNDS), median(bare_malloc, ROUNDS));
        free(trace);
    }
    tables_free(&t);
    keyset_free(&ks);
}

/* What the cached clock saves on each hit: the vDSO coarse clock against one atomic load. The
 * edge clock measured is the bench's copy's (edge_now is file-local), kept ticking by an edge. */
static void bench_clock(void)
{
    const int n = quick ? 100000 : 5000000;
    double direct[ROUNDS], cached[ROUNDS];
    volatile int64_t sink = 0;
    tc__edge *e;
    if (nottl_edge_new(&e, 10, 4096) != TC_OK)
        die("edge_new");
    edge_now();
    struct timespec d = {0, 20 * 1000000L};
    nanosleep(&d, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++)
            sink += tc__now_ms();
        direct[r] = (now_ns() - t0) / n;
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            sink += edge_now();
        cached[r] = (now_ns() - t0) / n;
    }
    (void)sink;
    nottl_edge_free(e);
    printf("# clock: tc__now_ms() (coarse clock) %.2f ns per call, cached edge clock %.2f ns\n",
           median(direct, ROUNDS), median(cached, ROUNDS));
}

/* ---- edge-scale ----------------------------------------------------------------------------- */

typedef struct scale_arg {
    tables *t;
    enum table_kind kind;
    const uint32_t *trace;
    size_t len, from, done;
    atomic_int *go, *stop;
} scale_arg;

static void *scale_thread(void *p)
{
    scale_arg *a = p;
    while (!atomic_load(a->go))
        ;
    read_trace(a->t, a->kind, a->trace, a->len, a->from, SIZE_MAX, a->stop, &a->done);
    return NULL;
}

/* Aggregate reads per second of `threads` threads reading for `ms` milliseconds, each from
 * its own place in the trace. */
static double throughput(tables *t, enum table_kind kind, const uint32_t *trace, size_t len,
                         int threads, int ms)
{
    atomic_int go = 0, stop = 0;
    pthread_t th[2];
    scale_arg args[2];
    for (int i = 0; i < threads; i++) {
        args[i] = (scale_arg){t, kind, trace, len, len / 2 * (size_t)i, 0, &go, &stop};
        if (pthread_create(&th[i], NULL, scale_thread, &args[i]) != 0)
            die("pthread_create");
    }
    double t0 = now_ns();
    atomic_store(&go, 1);
    struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    double total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += (double)args[i].done;
    }
    return total / ((now_ns() - t0) / 1e9);
}

static void bench_scale(uint32_t nkeys, const char *keys_name, double alpha)
{
    keyset ks;
    keyset_init(&ks, nkeys);
    tables t;
    tables_build(&t, &ks, 1 << T_EDGE | 1 << T_BARE | 1 << T_MUTEX_LRU);
    size_t len = 2000000;
    uint32_t *trace = make_trace(nkeys, alpha, len, 7);
    int ms = quick ? 20 : 200;
    double e1[ROUNDS], e2[ROUNDS], l2[ROUNDS], b1[ROUNDS], b2[ROUNDS];
    read_trace(&t, T_EDGE, trace, len, 0, len, NULL, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        e1[r] = throughput(&t, T_EDGE, trace, len, 1, ms);
        e2[r] = throughput(&t, T_EDGE, trace, len, 2, ms);
        l2[r] = throughput(&t, T_MUTEX_LRU, trace, len, 2, ms);
        b1[r] = throughput(&t, T_BARE, trace, len, 1, ms);
        b2[r] = throughput(&t, T_BARE, trace, len, 2, ms);
    }
    char set[48], id[96];
    snprintf(set, sizeof set, "%s-%s", keys_name, alpha > 0 ? "zipf0.99" : "uniform");
    double edge2 = median(e2, ROUNDS);
    snprintf(id, sizeof id, "edge-scale-self-%s", set);
    report(id, "hits_per_s", edge2, median(e1, ROUNDS));
    snprintf(id, sizeof id, "edge-scale-vs-mutex-lru-%s", set);
    report(id, "hits_per_s", edge2, median(l2, ROUNDS));
    snprintf(id, sizeof id, "edge-scale-machine-%s", set);
    report(id, "hits_per_s", median(b2, ROUNDS), median(b1, ROUNDS));
    free(trace);
    tables_free(&t);
    keyset_free(&ks);
}

/* ---- edge-missratio: trace simulation ------------------------------------------------------- */
/* Exact simulations over dense key ids, one entry per key, capacity in entries. */

enum policy { P_LRU, P_FIFO, P_SIEVE, P_S3FIFO, P_WTLFU, P_BELADY, P_EDGE, P_COUNT };
static const char *const policy_names[P_COUNT] = {"lru",     "fifo",   "sieve", "s3fifo",
                                                  "wtinylfu", "belady", "edge"};

typedef struct sim {
    uint32_t cap, count;
    uint64_t misses;
    int32_t *prev, *next; /* list links: prev toward the newest end */
    uint8_t *in;          /* 0 absent, 1 present (S3-FIFO: 1 small, 2 main) */
    uint8_t *bit;         /* SIEVE visited, S3-FIFO frequency */
    int32_t newest, oldest, hand;
    /* S3-FIFO */
    int32_t *ring[2];
    uint32_t rhead[2], rtail[2], rcount[2], small_cap;
    uint64_t *ghost; /* per id: ghost insertion number, 0 for none */
    uint64_t ghosts, ghost_cap;
    int has_evicted;
} sim;

static void sim_init(sim *s, uint32_t universe, uint32_t cap, enum policy p)
{
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->prev = xmalloc(universe * sizeof *s->prev);
    s->next = xmalloc(universe * sizeof *s->next);
    s->in = xcalloc(universe, 1);
    s->bit = xcalloc(universe, 1);
    s->newest = s->oldest = s->hand = -1;
    if (p == P_S3FIFO) {
        for (int q = 0; q < 2; q++)
            s->ring[q] = xmalloc((cap + 1) * sizeof *s->ring[q]);
        s->small_cap = cap / 10 > 0 ? cap / 10 : 1;
        s->ghost = xcalloc(universe, sizeof *s->ghost);
        s->ghost_cap = cap - cap / 10 > 0 ? cap - cap / 10 : 1;
    }
}

static void sim_free(sim *s)
{
    free(s->prev);
    free(s->next);
    free(s->in);
    free(s->bit);
    free(s->ring[0]);
    free(s->ring[1]);
    free(s->ghost);
}

static void list_push_newest(sim *s, int32_t x)
{
    s->prev[x] = -1;
    s->next[x] = s->newest;
    if (s->newest >= 0)
        s->prev[s->newest] = x;
    else
        s->oldest = x;
    s->newest = x;
}

static void list_unlink(sim *s, int32_t x)
{
    if (s->prev[x] >= 0)
        s->next[s->prev[x]] = s->next[x];
    else
        s->newest = s->next[x];
    if (s->next[x] >= 0)
        s->prev[s->next[x]] = s->prev[x];
    else
        s->oldest = s->prev[x];
}

/* LRU and FIFO: evict the oldest; LRU also moves a hit to the newest end. */
static void sim_list(sim *s, int32_t x, int lru)
{
    if (s->in[x]) {
        if (lru && s->newest != x) {
            list_unlink(s, x);
            list_push_newest(s, x);
        }
        return;
    }
    s->misses++;
    if (s->count == s->cap) {
        int32_t v = s->oldest;
        list_unlink(s, v);
        s->in[v] = 0;
        s->count--;
    }
    list_push_newest(s, x);
    s->in[x] = 1;
    s->count++;
}

/* SIEVE (Zhang et al., NSDI'24): a hit sets a bit; the hand walks from old to new, clearing
 * bits, and evicts the first unvisited entry, staying where it stopped. */
static void sim_sieve(sim *s, int32_t x)
{
    if (s->in[x]) {
        s->bit[x] = 1;
        return;
    }
    s->misses++;
    if (s->count == s->cap) {
        int32_t o = s->hand >= 0 ? s->hand : s->oldest;
        while (s->bit[o]) {
            s->bit[o] = 0;
            o = s->prev[o] >= 0 ? s->prev[o] : s->oldest;
        }
        s->hand = s->prev[o];
        list_unlink(s, o);
        s->in[o] = 0;
        s->count--;
    }
    list_push_newest(s, x);
    s->in[x] = 1;
    s->bit[x] = 0;
    s->count++;
}

static void ring_push(sim *s, int q, int32_t x)
{
    s->ring[q][s->rtail[q]] = x;
    s->rtail[q] = (s->rtail[q] + 1) % (s->cap + 1);
    s->rcount[q]++;
}

static int32_t ring_pop(sim *s, int q)
{
    int32_t x = s->ring[q][s->rhead[q]];
    s->rhead[q] = (s->rhead[q] + 1) % (s->cap + 1);
    s->rcount[q]--;
    return x;
}

/* S3-FIFO as in libCacheSim's S3FIFO.c (small 10%, move-to-main threshold 2, 2-bit main
 * CLOCK, ghost of 90% of the size), the reference for lib/edge/edge.c's per-shard version. */
static void s3fifo_evict(sim *s)
{
    s->has_evicted = 1;
    if (s->rcount[1] > s->cap - s->small_cap || s->rcount[0] == 0) {
        for (;;) {
            int32_t t = ring_pop(s, 1);
            if (s->bit[t] > 0) {
                s->bit[t]--;
                ring_push(s, 1, t);
            } else {
                s->in[t] = 0;
                s->count--;
                return;
            }
        }
    }
    while (s->rcount[0] > 0) {
        int32_t t = ring_pop(s, 0);
        if (s->bit[t] >= EDGE_MOVE_TO_MAIN) {
            s->bit[t] = 0;
            s->in[t] = 2;
            ring_push(s, 1, t);
        } else {
            s->in[t] = 0;
            s->count--;
            s->ghost[t] = ++s->ghosts;
            return;
        }
    }
}

static void sim_s3fifo(sim *s, int32_t x)
{
    if (s->in[x]) {
        if (s->bit[x] < EDGE_FREQ_MAX)
            s->bit[x]++;
        return;
    }
    s->misses++;
    while (s->count >= s->cap)
        s3fifo_evict(s);
    int ghost = s->ghost[x] != 0 && s->ghosts - s->ghost[x] < s->ghost_cap;
    s->ghost[x] = 0;
    s->bit[x] = 0;
    s->count++;
    if (ghost || (!s->has_evicted && s->rcount[0] >= s->small_cap)) {
        s->in[x] = 2;
        ring_push(s, 1, x);
    } else {
        s->in[x] = 1;
        ring_push(s, 0, x);
    }
}

/* Belady's optimum (MIN): on a miss with the cache full, evict the entry whose next use is
 * farthest (never again first). A max-heap of (next use, id) with lazy deletion: an entry is
 * stale when its next use is no longer the id's. The bound every policy is measured against. */
typedef struct opt_ent {
    uint32_t next, id;
} opt_ent;

static void heap_push(opt_ent *h, size_t *n, opt_ent e)
{
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2].next < e.next) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

static opt_ent heap_pop(opt_ent *h, size_t *n)
{
    opt_ent top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1].next > h[c].next)
            c++;
        if (h[c].next <= last.next)
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

static double belady_miss_ratio(const uint32_t *trace, size_t len, uint32_t universe,
                                uint32_t cap)
{
    uint32_t *next = xmalloc(len * sizeof *next), *last = xmalloc(universe * sizeof *last);
    for (uint32_t k = 0; k < universe; k++)
        last[k] = UINT32_MAX;
    for (size_t i = len; i-- > 0;) {
        next[i] = last[trace[i]];
        last[trace[i]] = (uint32_t)i;
    }
    uint32_t *cur = last; /* reused: per id, its next use while cached, UINT32_MAX-1 absent */
    for (uint32_t k = 0; k < universe; k++)
        cur[k] = UINT32_MAX - 1;
    opt_ent *h = xmalloc((len + 1) * sizeof *h);
    size_t hn = 0, count = 0;
    uint64_t misses = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t x = trace[i];
        if (cur[x] == UINT32_MAX - 1) {
            misses++;
            if (count == cap) {
                for (;;) {
                    opt_ent e = heap_pop(h, &hn);
                    if (cur[e.id] == e.next) {
                        cur[e.id] = UINT32_MAX - 1;
                        break;
                    }
                }
                count--;
            }
            count++;
        }
        cur[x] = next[i] == UINT32_MAX ? UINT32_MAX - 2 : next[i]; /* never again: farthest */
        heap_push(h, &hn, (opt_ent){cur[x], x});
    }
    free(next);
    free(last);
    free(h);
    return (double)misses / (double)len;
}

/* W-TinyLFU as Caffeine builds it (Einziger et al., "TinyLFU", 2017): a window LRU of 1% of the
 * entries, then a main segmented LRU (a probation part and a protected part of 80% of the main),
 * and a count-min sketch of 4-bit counters (4 rows, as wide as the cache, all halved after 10
 * times the cache's size of increments) for every access, seen or not. A candidate leaving the
 * window enters the main only if the sketch says it is used more often than the main's victim.
 * Caffeine's hill climber, which moves the window's share, is not simulated: a fixed window is
 * its starting point. */
typedef struct tlfu {
    uint32_t cap, wcap, pcap; /* window, protected */
    uint8_t *where;           /* per id: 0 absent, 1 window, 2 probation, 3 protected */
    int32_t *prev, *next;
    int32_t head[4], tail[4]; /* per segment list: head newest, tail oldest */
    uint32_t size[4];
    uint8_t *sketch;
    uint32_t width_mask;
    uint64_t adds, sample;
} tlfu;

static uint32_t tlfu_hash(uint32_t x, int row)
{
    uint64_t h = (uint64_t)x * 0x9E3779B97F4A7C15ull + (uint64_t)row * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static unsigned tlfu_freq(const tlfu *t, uint32_t x)
{
    unsigned f = 15;
    for (int r = 0; r < 4; r++) {
        unsigned c = t->sketch[(size_t)r * (t->width_mask + 1) + (tlfu_hash(x, r) & t->width_mask)];
        f = c < f ? c : f;
    }
    return f;
}

static void tlfu_add(tlfu *t, uint32_t x)
{
    for (int r = 0; r < 4; r++) {
        uint8_t *c = &t->sketch[(size_t)r * (t->width_mask + 1) + (tlfu_hash(x, r) & t->width_mask)];
        if (*c < 15)
            (*c)++;
    }
    if (++t->adds >= t->sample) { /* aging: every counter halved */
        for (size_t i = 0; i < 4 * ((size_t)t->width_mask + 1); i++)
            t->sketch[i] >>= 1;
        t->adds /= 2;
    }
}

static void seg_push(tlfu *t, int g, int32_t x)
{
    t->prev[x] = -1;
    t->next[x] = t->head[g];
    if (t->head[g] >= 0)
        t->prev[t->head[g]] = x;
    else
        t->tail[g] = x;
    t->head[g] = x;
    t->size[g]++;
    t->where[x] = (uint8_t)g;
}

static void seg_unlink(tlfu *t, int32_t x)
{
    int g = t->where[x];
    if (t->prev[x] >= 0)
        t->next[t->prev[x]] = t->next[x];
    else
        t->head[g] = t->next[x];
    if (t->next[x] >= 0)
        t->prev[t->next[x]] = t->prev[x];
    else
        t->tail[g] = t->prev[x];
    t->size[g]--;
    t->where[x] = 0;
}

static double wtinylfu_miss_ratio(const uint32_t *trace, size_t len, uint32_t universe,
                                  uint32_t cap)
{
    tlfu t;
    memset(&t, 0, sizeof t);
    t.cap = cap;
    t.wcap = cap / 100 > 0 ? cap / 100 : 1;
    t.pcap = (cap - t.wcap) * 8 / 10;
    t.where = xcalloc(universe, 1);
    t.prev = xmalloc(universe * sizeof *t.prev);
    t.next = xmalloc(universe * sizeof *t.next);
    for (int g = 0; g < 4; g++)
        t.head[g] = t.tail[g] = -1;
    uint32_t w = 16;
    while (w < cap)
        w <<= 1;
    t.width_mask = w - 1;
    t.sketch = xcalloc(4 * (size_t)w, 1);
    t.sample = 10 * (uint64_t)cap;
    uint64_t misses = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t x = (int32_t)trace[i];
        tlfu_add(&t, (uint32_t)x);
        int g = t.where[x];
        if (g == 1 || g == 3) { /* window or protected: to its newest end */
            seg_unlink(&t, x);
            seg_push(&t, g, x);
            continue;
        }
        if (g == 2) { /* probation hit: promoted, the protected part's oldest demoted */
            seg_unlink(&t, x);
            seg_push(&t, 3, x);
            if (t.size[3] > t.pcap) {
                int32_t d = t.tail[3];
                seg_unlink(&t, d);
                seg_push(&t, 2, d);
            }
            continue;
        }
        misses++;
        seg_push(&t, 1, x);
        if (t.size[1] <= t.wcap)
            continue;
        int32_t cand = t.tail[1]; /* leaves the window */
        seg_unlink(&t, cand);
        if (t.size[2] + t.size[3] < cap - t.wcap) {
            seg_push(&t, 2, cand);
            continue;
        }
        int32_t victim = t.tail[2] >= 0 ? t.tail[2] : t.tail[3];
        if (tlfu_freq(&t, (uint32_t)cand) > tlfu_freq(&t, (uint32_t)victim)) {
            seg_unlink(&t, victim);
            seg_push(&t, 2, cand);
        } /* else the candidate is dropped */
    }
    free(t.where);
    free(t.prev);
    free(t.next);
    free(t.sketch);
    return (double)misses / (double)len;
}

/* The edge itself on the trace: a read, and a fill on a miss. Keys are 'm' and 8 hex digits. */
static double edge_miss_ratio(const uint32_t *trace, size_t len, uint32_t cap)
{
    tc__edge *e;
    if (tc__edge_new(&e, cap, (size_t)1 << 40) != TC_OK)
        die("edge_new");
    static const char hex[] = "0123456789abcdef";
    char key[9] = {'m'};
    uint64_t misses = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t id = trace[i];
        for (int d = 0; d < 8; d++)
            key[1 + d] = hex[(id >> (28 - 4 * d)) & 15];
        if (tc__edge_get(e, key, sizeof key, NULL, NULL) != TC_OK) {
            misses++;
            if (tc__edge_set(e, key, sizeof key, "12345678", 8, 1, LONG_TTL_MS) != 1)
                die("edge_set");
        }
    }
    tc__edge_free(e);
    return (double)misses / (double)len;
}

static double miss_ratio(enum policy p, const uint32_t *trace, size_t len, uint32_t universe,
                         uint32_t cap)
{
    if (p == P_EDGE)
        return edge_miss_ratio(trace, len, cap);
    if (p == P_BELADY)
        return belady_miss_ratio(trace, len, universe, cap);
    if (p == P_WTLFU)
        return wtinylfu_miss_ratio(trace, len, universe, cap);
    sim s;
    sim_init(&s, universe, cap, p);
    for (size_t i = 0; i < len; i++) {
        int32_t x = (int32_t)trace[i];
        switch (p) {
        case P_LRU: sim_list(&s, x, 1); break;
        case P_FIFO: sim_list(&s, x, 0); break;
        case P_SIEVE: sim_sieve(&s, x); break;
        default: sim_s3fifo(&s, x); break;
        }
    }
    double r = (double)s.misses / (double)len;
    sim_free(&s);
    return r;
}

/* The jobs of one trace (policy x cache size), shared by two worker threads. */
#define NSIZES 7
static const double size_fractions[NSIZES] = {0.001, 0.005, 0.01, 0.1, 0.5, 0.8, 0.95};
static const char *const size_names[NSIZES] = {"0.1pct", "0.5pct", "1pct", "10pct",
                                               "50pct",  "80pct",  "95pct"};

typedef struct mr_jobs {
    const uint32_t *trace[NSIZES]; /* per size (the loop trace differs by size) */
    size_t len;
    uint32_t universe, keys;
    atomic_int next;
    double result[NSIZES][P_COUNT];
} mr_jobs;

static void *mr_worker(void *p)
{
    mr_jobs *j = p;
    for (;;) {
        int k = atomic_fetch_add(&j->next, 1);
        if (k >= NSIZES * P_COUNT)
            return NULL;
        /* The slow jobs (the edge, large sizes) first, so that the two workers end together. */
        int size = NSIZES - 1 - k / P_COUNT, pol = P_COUNT - 1 - k % P_COUNT;
        uint32_t cap = (uint32_t)(j->keys * size_fractions[size]);
        j->result[size][pol] =
            miss_ratio((enum policy)pol, j->trace[size], j->len, j->universe, cap);
    }
}

/* BENCH_CAFFEINE, a command (bench/bench_caffeine.sh sets it: "java -cp ... CaffeineReplay"):
 * the same traces replayed by Debian's libcaffeine-java, the W-TinyLFU a Java user would pick,
 * in this run. Each distinct trace is written to a file and the command given it and the
 * capacities; out[s] receives the miss ratio per size, or -1 where it could not run. */
static void caffeine_run(const mr_jobs *j, double *out)
{
    for (int s = 0; s < NSIZES; s++)
        out[s] = -1;
    const char *cmd = getenv("BENCH_CAFFEINE");
    if (cmd == NULL || *cmd == '\0')
        return;
    for (int s = 0; s < NSIZES; s++) {
        if (out[s] >= 0)
            continue; /* done with an earlier size's trace */
        char path[] = "/tmp/tc-caffeine-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
            return;
        FILE *f = fdopen(fd, "wb");
        int ok = f != NULL && fwrite(j->trace[s], sizeof *j->trace[s], j->len, f) == j->len;
        if (f == NULL || fclose(f) != 0 || !ok) {
            unlink(path);
            return;
        }
        char line[4096];
        int n = snprintf(line, sizeof line, "%s %s", cmd, path);
        for (int t = s; t < NSIZES; t++)
            if (j->trace[t] == j->trace[s])
                n += snprintf(line + n, sizeof line - (size_t)n, " %u",
                              (unsigned)(j->keys * size_fractions[t]));
        FILE *p = popen(line, "r");
        unsigned long long cap, misses;
        while (p != NULL && fscanf(p, "%llu %llu", &cap, &misses) == 2)
            for (int t = s; t < NSIZES; t++)
                if (j->trace[t] == j->trace[s] &&
                    cap == (unsigned long long)(unsigned)(j->keys * size_fractions[t]))
                    out[t] = (double)misses / (double)j->len;
        if (p != NULL)
            pclose(p);
        unlink(path);
    }
}

static void mr_run(mr_jobs *j, const char *trace_name)
{
    const char *only = getenv("BENCH_EDGE_TRACES"); /* a comma-separated list: those alone */
    if (only != NULL && *only != '\0' && strstr(only, trace_name) == NULL)
        return;
    pthread_t th;
    atomic_init(&j->next, 0);
    if (pthread_create(&th, NULL, mr_worker, j) != 0)
        die("pthread_create");
    mr_worker(j);
    pthread_join(th, NULL);
    double caffeine[NSIZES];
    caffeine_run(j, caffeine);
    for (int s = 0; s < NSIZES; s++) {
        double *r = j->result[s];
        char id[96];
        printf("# missratio %-9s %-6s", trace_name, size_names[s]);
        for (int p = 0; p < P_COUNT; p++)
            printf(" %s=%.4f", policy_names[p], r[p]);
        if (caffeine[s] >= 0)
            printf(" caffeine=%.4f", caffeine[s]);
        /* The share of LRU's distance to the optimum that a policy closes (negative: worse
         * than LRU). */
        double gap = r[P_LRU] - r[P_BELADY];
        if (gap > 1e-9)
            printf("  gap-closed edge=%.2f s3fifo=%.2f wtinylfu=%.2f",
                   (r[P_LRU] - r[P_EDGE]) / gap, (r[P_LRU] - r[P_S3FIFO]) / gap,
                   (r[P_LRU] - r[P_WTLFU]) / gap);
        printf("\n");
        snprintf(id, sizeof id, "edge-missratio-%s-%s", trace_name, size_names[s]);
        report(id, "miss_ratio", r[P_EDGE], r[P_LRU]);
        snprintf(id, sizeof id, "edge-missratio-fifo-%s-%s", trace_name, size_names[s]);
        report(id, "miss_ratio", r[P_FIFO], r[P_LRU]);
        snprintf(id, sizeof id, "edge-missratio-belady-%s-%s", trace_name, size_names[s]);
        report(id, "miss_ratio", r[P_BELADY], r[P_LRU]);
        snprintf(id, sizeof id, "edge-missratio-wtinylfu-%s-%s", trace_name, size_names[s]);
        report(id, "miss_ratio", r[P_WTLFU], r[P_LRU]);
        if (caffeine[s] >= 0) {
            snprintf(id, sizeof id, "edge-vs-caffeine-%s-%s", trace_name, size_names[s]);
            report(id, "miss_ratio", r[P_EDGE], caffeine[s]);
        }
    }
}

/* The shapes modelled on published workloads. Each request is, with probability fresh_pct %, a
 * key never seen before and never seen again (a one-hit wonder), else a Zipf(alpha) draw over
 * keys; with shift, the popular set drifts: every 1M requests, the ranks move by 5% of the keys
 * (a popular set that shifts over time, as in Twitter's and Meta's traces). "shift": Zipf 0.9,
 * drifting. "block": block-storage-like (the MSR and Alibaba block traces: long reuse
 * distances, many blocks read once): 40% one-hit wonders, the rest Zipf 0.6. "once": most keys
 * seen once (a CDN's long tail): 90% one-hit wonders, the rest Zipf 1.0. */
static void trace_mix(struct mr_jobs *j, const char *name, uint32_t keys, size_t len,
                      double alpha, unsigned fresh_pct, int shift)
{
    uint32_t *t = xmalloc(len * sizeof *t);
    uint32_t *perm = random_permutation(keys, 91 + fresh_pct);
    uint64_t rng = 92 + fresh_pct;
    zipf z;
    zipf_init(&z, keys, alpha);
    uint32_t fresh = keys, offset = 0;
    for (size_t i = 0; i < len; i++) {
        if (shift && i > 0 && i % 1000000 == 0)
            offset = (offset + keys / 20) % keys;
        if (splitmix(&rng) % 100 < fresh_pct)
            t[i] = fresh++;
        else
            t[i] = perm[(zipf_next(&z, &rng) + offset) % keys];
    }
    free(perm);
    j->universe = fresh;
    for (int s = 0; s < NSIZES; s++)
        j->trace[s] = t;
    mr_run(j, name);
    free(t);
}

/* 1M keys and 10M requests per trace: the miss-ratio part takes about a minute on 2 cores (both
 * run simulations), the whole of bench_edge about a minute and a half. */
#define TRACE_KEYS 1000000u
#define TRACE_REQUESTS 10000000u
#define SCAN_ZIPF_PHASE 200000u
#define SCAN_LENGTH 100000u

static void bench_missratio(void)
{
    uint32_t keys = quick ? 100000u : TRACE_KEYS;
    size_t len = quick ? 400000u : TRACE_REQUESTS;
    mr_jobs j;
    memset(&j, 0, sizeof j);
    j.len = len;
    j.keys = keys;
    static const double alphas[] = {0.6, 0.8, 0.99, 1.2};
    for (int a = 0; a < 4; a++) {
        uint32_t *t = make_trace(keys, alphas[a], len, 1000 + (uint64_t)a);
        char name[32];
        snprintf(name, sizeof name, "zipf%.2g", alphas[a]);
        j.universe = keys;
        for (int s = 0; s < NSIZES; s++)
            j.trace[s] = t;
        mr_run(&j, name);
        free(t);
    }

    /* scan: Zipf 0.99 phases, each followed by a scan of never-seen keys. */
    uint32_t *t = xmalloc(len * sizeof *t);
    uint32_t *perm = random_permutation(keys, 77);
    uint64_t rng = 78;
    zipf z;
    zipf_init(&z, keys, 0.99);
    uint32_t fresh = keys;
    for (size_t i = 0; i < len;) {
        for (uint32_t k = 0; k < SCAN_ZIPF_PHASE && i < len; k++)
            t[i++] = perm[zipf_next(&z, &rng)];
        for (uint32_t k = 0; k < SCAN_LENGTH && i < len; k++)
            t[i++] = fresh++;
    }
    free(perm);
    j.universe = fresh;
    for (int s = 0; s < NSIZES; s++)
        j.trace[s] = t;
    mr_run(&j, "scan");
    free(t);

    /* loop: a cycle over 1.1 times the cache's size. */
    uint32_t *loops[NSIZES];
    for (int s = 0; s < NSIZES; s++) {
        uint32_t cap = (uint32_t)(keys * size_fractions[s]), span = cap + cap / 10;
        loops[s] = xmalloc(len * sizeof *loops[s]);
        for (size_t i = 0; i < len; i++)
            loops[s][i] = (uint32_t)(i % span);
        j.trace[s] = loops[s];
    }
    j.universe = keys + keys / 10; /* the largest span */
    mr_run(&j, "loop");
    for (int s = 0; s < NSIZES; s++)
        free(loops[s]);
    trace_mix(&j, "shift", keys, len, 0.9, 0, 1);
    trace_mix(&j, "block", keys, len, 0.6, 40, 0);
    trace_mix(&j, "once", keys, len, 1.0, 90, 0);
}

/* ---- instructions per hit (bench/bench_instr.sh) ------------------------------------------- */

/* The reads that callgrind counts (--toggle-collect='instr_reads*': GCC may clone it); the
 * rest of the program, building the tables and the trace, is not counted. */
__attribute__((noinline)) static size_t instr_reads(tables *t, enum table_kind kind,
                                                    const uint32_t *trace, size_t len)
{
    return read_trace(t, kind, trace, len, 0, len, NULL, NULL);
}

/* BENCH_EDGE_INSTR=<kind>: 10k keys, one pass to warm, then 100k Zipf 0.99 reads of one table,
 * counted by the script that runs this under callgrind. */
static int instr_mode(const char *name)
{
    static const struct { const char *name; enum table_kind kind; } kinds[] = {
        {"bare", T_BARE}, {"edge", T_EDGE}, {"api-into", T_API_INTO},
        {"api-get", T_API_GET}, {"bare-malloc", T_BARE_MALLOC},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(name, kinds[i].name) != 0)
            continue;
        keyset ks;
        keyset_init(&ks, 10000);
        tables t;
        tables_build(&t, &ks, 1 << T_EDGE | 1 << T_BARE | 1 << T_API_INTO);
        size_t len = 100000;
        uint32_t *trace = make_trace(ks.n, 0.99, len, 42);
        read_trace(&t, kinds[i].kind, trace, len, 0, len, NULL, NULL);
        if (instr_reads(&t, kinds[i].kind, trace, len) != len)
            die("a read missed in the instruction count");
        printf("reads=%zu\n", len);
        free(trace);
        tables_free(&t);
        keyset_free(&ks);
        return 0;
    }
    fprintf(stderr, "BENCH_EDGE_INSTR: no kind %s\n", name);
    return 2;
}

/* BENCH_EDGE_ONLY, a comma-separated list of hit, scale, missratio, selects parts. */
static int wanted(const char *part)
{
    const char *only = getenv("BENCH_EDGE_ONLY");
    return only == NULL || *only == '\0' || strstr(only, part) != NULL;
}

int main(void)
{
    const char *q = getenv("BENCH_EDGE_QUICK");
    quick = q != NULL && *q != '\0' && *q != '0';
    const char *instr = getenv("BENCH_EDGE_INSTR");
    if (instr != NULL && *instr != '\0')
        return instr_mode(instr);
    double t0 = now_ns();
    if (wanted("hit")) {
        /* BENCH_EDGE_HIT_KEYS=10k or 1m runs only that size of edge-hit and edge-ttl. */
        const char *hk = getenv("BENCH_EDGE_HIT_KEYS");
        int all = hk == NULL || *hk == '\0';
        bench_clock();
        if (all || strcmp(hk, "10k") == 0)
            bench_hit(10000, "10k");
        if (all || strcmp(hk, "1m") == 0)
            bench_hit(quick ? 100000 : 1000000, quick ? "100k" : "1m");
    }
    if (wanted("scale")) {
        bench_scale(10000, "10k", 0.99);
        bench_scale(quick ? 100000 : 1000000, quick ? "100k" : "1m", 0);
    }
    if (wanted("missratio"))
        bench_missratio();
    printf("# bench_edge: %.0f s\n", (now_ns() - t0) / 1e9);
    return 0;
}
