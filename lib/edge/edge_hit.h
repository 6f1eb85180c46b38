/*
 * edge_hit.h - the edge's hit path, inline: tc__edge_get_into, the read that tc_get_into makes
 * first. It belongs to edge.c; it is in a header only so that this one read can be compiled into
 * its caller: a call's register saves and stack arguments lengthen every hit, and at a million
 * keys, where hits wait on memory, a longer hit leaves the processor fewer hits' cache misses to
 * overlap. Inlined, the same code read 1.16-1.19 times faster at 10k keys and 1.16-1.35 at 1M
 * (docs/eviction.md, "Third round"). Only this read is meant for other files (core/read.c).
 * What it reads of the edge's layout is in edge_layout.h, which edge.c includes too; this
 * header is included by the hit's callers, never by edge.c.
 */
#ifndef TC_EDGE_HIT_H
#define TC_EDGE_HIT_H

#include "edge/edge.h"
#include "edge/edge_layout.h"


/* The read without a callback, for callers that want the bytes in their own buffer. TC_OK
 * (copied; *out_len and *out_version set), TC_ERANGE (longer than cap: *out_len is its length,
 * buf untouched), TC_ENOTFOUND, TC__EDGE_FLAGGED (the entry has flags: nothing copied, read it
 * with tc__edge_get_flags), TC_EINVAL. out_tomb_version as for tc__edge_get_flags (may be
 * NULL). The locking is tc__edge_get's; any thread.
 *
 * Written out for the common case (a plain live value read by a thread with its own reader
 * slot, no writer in the shard, the clock published), so that it carries nothing else. Every
 * other case goes to tc__edge_get_into_slow, from the start (nothing was done yet) or after
 * leaving the shard (an expired, flagged or tombstone entry: only the frequency bump was
 * skipped, and the general path does it). The reader protocol is edge.c's edge_read. The key is
 * read first: at a million keys it is the hit's first cache miss, and the sooner it is asked for
 * the more of it overlaps the previous hit's. */
#ifdef EDGE_BENCH_NO_TTL
#define EDGE_HIT_CLOCK() ((int64_t)1)
#define EDGE_HIT_EXPIRED(en, now) 0
#else
#define EDGE_HIT_CLOCK() ((int64_t)atomic_load_explicit(&tc__edge_clock.now, memory_order_relaxed))
#define EDGE_HIT_EXPIRED(en, now) ((now) >= (en)->expires_ms)
#endif
/* The body of both reads below. try_only is a constant at each, so the compiler keeps one of
 * the two answers of every case that is not the common hit: the general path's, or
 * TC__EDGE_SLOW. */
#define EDGE_HIT_SLOW()                                                                         \
    (try_only ? TC__EDGE_SLOW                                                                   \
              : tc__edge_get_into_slow(e, key, key_len, buf, cap, out_len, out_version,         \
                                       out_tomb_version))
EDGE_INLINE int edge_hit(tc__edge *e, const char *key, size_t key_len, void *buf, size_t cap,
                         size_t *out_len, int64_t *out_version, int64_t *out_tomb_version,
                         const int try_only)
{
    if (EDGE_UNLIKELY(e == NULL || key == NULL || buf == NULL || out_len == NULL ||
                      out_version == NULL))
        return EDGE_HIT_SLOW();
    uint64_t hash = edge_hash(e, key, key_len);
    unsigned slot = tc__edge_thread_slot - 1; /* UINT_MAX before the first read */
    int64_t now = EDGE_HIT_CLOCK();
    if (EDGE_UNLIKELY(slot >= EDGE_READER_SLOTS || now == 0))
        return EDGE_HIT_SLOW();
    if (out_tomb_version != NULL)
        *out_tomb_version = -1;
    size_t si = shard_index(e, hash);
    struct edge_shard *sh = &e->shards[si];

    atomic_ullong *mine = &e->readers[slot].n[si];
    unsigned long long mark = atomic_load_explicit(mine, memory_order_relaxed);
    atomic_store(mine, mark + 1); /* the hit's one fence (see edge_read) */
    if (EDGE_UNLIKELY(atomic_load(&sh->writer) != 0)) {
        atomic_store_explicit(mine, mark, memory_order_release);
        return EDGE_HIT_SLOW();
    }
    const struct edge_slot *slots = sh->slots;
    size_t mask = sh->mask, i = hash & mask;
    struct edge_entry *en;
    while ((en = slots[i].en) != NULL &&
           !(slots[i].hash == hash && en->key_len == key_len && key_eq(en->data, key, key_len)))
        i = (i + 1) & mask;
    if (EDGE_UNLIKELY(en == NULL || EDGE_HIT_EXPIRED(en, now) || en->tombstone ||
                      en->flags != 0)) {
        atomic_store_explicit(mine, mark, memory_order_release);
        if (en == NULL)
            return TC_ENOTFOUND;
        return EDGE_HIT_SLOW();
    }
    policy_hit(en);
    uint32_t len = en->value_len;
    *out_len = len;
    *out_version = en->version;
    int rc = TC_ERANGE;
    if (EDGE_LIKELY(len <= cap)) {
        const unsigned char *src = (const unsigned char *)en->data + key_len;
        if (EDGE_LIKELY(len <= EDGE_SHORT_COPY))
            copy_short(buf, src, len);
        else
            memcpy(buf, src, len);
        rc = TC_OK;
    }
    atomic_store_explicit(mine, mark + EDGE_HIT_UNIT, memory_order_release); /* left, counted */
    return rc;
}
#undef EDGE_HIT_SLOW
#undef EDGE_HIT_CLOCK
#undef EDGE_HIT_EXPIRED

EDGE_INLINE int tc__edge_get_into(tc__edge *e, const char *key, size_t key_len, void *buf,
                                  size_t cap, size_t *out_len, int64_t *out_version,
                                  int64_t *out_tomb_version)
{
    return edge_hit(e, key, key_len, buf, cap, out_len, out_version, out_tomb_version, 0);
}

/* tc__edge_get_into's common case alone: TC_OK, TC_ERANGE and TC_ENOTFOUND (no entry) as
 * there, and TC__EDGE_SLOW for everything else (an argument NULL, a thread's first read, a
 * writer in the shard, an expired, tombstone or flagged entry), with nothing done. It makes no
 * call, so a caller that reads every other case again its own way (tc_get_into) makes none on
 * its hit either. */
EDGE_INLINE int tc__edge_try_hit(tc__edge *e, const char *key, size_t key_len, void *buf,
                                 size_t cap, size_t *out_len, int64_t *out_version)
{
    return edge_hit(e, key, key_len, buf, cap, out_len, out_version, NULL, 1);
}

#endif /* TC_EDGE_HIT_H */
