/*
 * policy.c - the edge's eviction policy, S3-FIFO (Yang et al., SOSP'23), apart from the table:
 * per shard, a small and a main FIFO queue and a ghost of recently evicted keys. edge.c calls
 * it only through policy.h, always holding the shard exclusively; the one step a hit takes
 * (policy_hit, a frequency bump) is inline in edge_layout.h because readers take it without a
 * lock. docs/eviction.md gives the measurements behind the choice and its parameters.
 */
#include "edge/policy.h"

#include <stdlib.h>
#include <string.h>


/* ---- the ghost ---------------------------------------------------------------------------- */
/* A set-associative table of 32-bit hash tags with insertion stamps: a key is a ghost while
 * fewer than ghost_span() insertions happened after its own. It is a hint (a false answer only
 * places an entry in the other queue), so it is dropped rather than rehashed when it grows. */

static uint32_t ghost_tag(uint64_t hash)
{
    /* The low bits choose the bucket (and the table's slot), bits 40-43 the shard: 28 of the
     * tag's 32 bits tell the keys of one bucket apart. */
    return (uint32_t)(hash >> 20) | 1;
}

/* How many recent ghost insertions count: nine tenths of the entries held, as the paper's
 * ghost holds as many keys as the main queue. Following the live count rather than the bound
 * keeps the ghost right whichever bound (entries or bytes) binds. */
static uint32_t ghost_span(const struct edge_shard *sh)
{
    size_t span = sh->count - sh->count / EDGE_SMALL_DIV;
    if (span < 1)
        span = 1;
    return span > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)span;
}

static struct ghost_slot *ghost_bucket(struct edge_shard *sh, uint64_t hash)
{
    return &sh->ghost[(hash & sh->gmask) * EDGE_GHOST_WAYS];
}

static void ghost_add(struct edge_shard *sh, uint64_t hash)
{
    if (sh->ghost == NULL)
        return;
    if (++sh->gclock == 0)
        sh->gclock = 1;
    struct ghost_slot *b = ghost_bucket(sh, hash), *oldest = &b[0];
    for (int i = 0; i < EDGE_GHOST_WAYS; i++) {
        if (b[i].stamp == 0) {
            oldest = &b[i];
            break;
        }
        if ((uint32_t)(sh->gclock - b[i].stamp) > (uint32_t)(sh->gclock - oldest->stamp))
            oldest = &b[i];
    }
    oldest->tag = ghost_tag(hash);
    oldest->stamp = sh->gclock;
}

/* Whether the key is a ghost; if so it stops being one (it is coming back). */
static int ghost_take(struct edge_shard *sh, uint64_t hash)
{
    if (sh->ghost == NULL)
        return 0;
    struct ghost_slot *b = ghost_bucket(sh, hash);
    uint32_t tag = ghost_tag(hash), span = ghost_span(sh);
    for (int i = 0; i < EDGE_GHOST_WAYS; i++) {
        if (b[i].stamp != 0 && b[i].tag == tag && (uint32_t)(sh->gclock - b[i].stamp) < span) {
            b[i].stamp = 0;
            return 1;
        }
    }
    return 0;
}

/* As many ghost slots as table slots (two to four per entry). If the allocation fails the old
 * ghost stays: a smaller ghost only forgets sooner. */
void tc__edge_ghost_resize(struct edge_shard *sh, size_t table_slots)
{
    size_t nb = table_slots / EDGE_GHOST_WAYS;
    if (nb < 1)
        nb = 1;
    struct ghost_slot *g = calloc(nb * EDGE_GHOST_WAYS, sizeof *g);
    if (g == NULL)
        return;
    free(sh->ghost);
    sh->ghost = g;
    sh->gmask = nb - 1;
}

/* ---- eviction policy: S3-FIFO ------------------------------------------------------------- */
/* Two FIFO queues and a ghost. New keys enter the small queue S (a tenth of the shard); a key
 * the ghost remembers, or one replacing an entry of the main queue M, enters M. Eviction takes
 * from S while S holds its share: an entry read EDGE_MOVE_TO_MAIN times moves to M, any other
 * leaves and becomes a ghost. From M, an entry read since it was last looked at goes round
 * again with its count lowered by one (a 2-bit CLOCK); one that was not leaves.
 *
 * Hits only bump an entry's frequency (policy_hit), which readers do concurrently without any
 * lock; every other call is made by a writer holding the shard exclusively. One-hit keys (a
 * scan) pass through S without disturbing M, which is where LRU loses its hot set. */

static struct edge_queue *queue_of(struct edge_shard *sh, const struct edge_entry *en)
{
    return en->queue == EDGE_MAIN ? &sh->main : &sh->small;
}

static void queue_push(struct edge_queue *q, struct edge_entry *en)
{
    struct edge_links *l = links_of(en);
    l->older = q->newest;
    l->newer = NULL;
    if (q->newest != NULL)
        links_of(q->newest)->newer = en;
    else
        q->oldest = en;
    q->newest = en;
    q->count++;
    q->bytes += charge_of(en);
}

static void queue_unlink(struct edge_queue *q, struct edge_entry *en)
{
    struct edge_links *l = links_of(en);
    if (l->newer != NULL)
        links_of(l->newer)->older = l->older;
    else
        q->newest = l->older;
    if (l->older != NULL)
        links_of(l->older)->newer = l->newer;
    else
        q->oldest = l->newer;
    l->newer = l->older = NULL;
    q->count--;
    q->bytes -= charge_of(en);
}

/* A queue's share is counted in both budgets: in the one that binds (entries for small values,
 * bytes for large ones) it is the paper's share, and the other never decides. */
void tc__edge_policy_init(struct edge_shard *sh)
{
    size_t div = EDGE_SMALL_DIV;
    sh->small_max_entries = sh->max_entries / div + (sh->max_entries % div != 0);
    sh->small_max_bytes = sh->max_bytes / div + (sh->max_bytes % div != 0);
    sh->main_max_entries = sh->max_entries - sh->small_max_entries;
    sh->main_max_bytes = sh->max_bytes - sh->small_max_bytes;
}

static int small_is_full(const struct edge_shard *sh)
{
    return sh->small.count >= sh->small_max_entries || sh->small.bytes >= sh->small_max_bytes;
}

static int main_is_over(const struct edge_shard *sh)
{
    return sh->main.count > sh->main_max_entries || sh->main.bytes > sh->main_max_bytes;
}


/* Adds an entry. A key the ghost remembers goes to M. Until the first eviction, keys arriving
 * once S is full go to M too, so a cold cache keeps its first keys in M rather than churning
 * them through S before anything needs room (libCacheSim's S3FIFO.c does the same). */
void tc__edge_policy_insert(struct edge_shard *sh, struct edge_entry *en,
                            struct tc__edge_policy_hint hint)
{
    if (hint.known) {
        en->queue = hint.queue;
        set_freq(en, hint.freq);
    } else if (ghost_take(sh, hash_of(en)) || (!sh->has_evicted && small_is_full(sh))) {
        en->queue = EDGE_MAIN;
    } else {
        en->queue = EDGE_SMALL;
    }
    queue_push(queue_of(sh, en), en);
}

/* Takes the entry out of its queue. With `remember` (it expired or was deleted, rather than
 * replaced or chosen by the policy), a key that showed reuse becomes a ghost, so that its next
 * version (a refill after expiry or invalidation) goes straight to M. */
void tc__edge_policy_remove(struct edge_shard *sh, struct edge_entry *en, int remember)
{
    if (remember && (en->queue == EDGE_MAIN || freq_of(en) > 0))
        ghost_add(sh, hash_of(en));
    queue_unlink(queue_of(sh, en), en);
}

/* An expired entry is absent for every reader already; a short look at the old end of each
 * queue finds many of them (entries of one TTL expire in insertion order) and spares a live
 * entry, without a sweep over the whole table. */
static struct edge_entry *find_expired(struct edge_queue *q, int64_t now)
{
    struct edge_entry *en = q->oldest;
    for (int i = 0; i < EDGE_EXPIRED_PROBE && en != NULL; i++, en = newer_of(en))
        if (is_expired(en, now))
            return en;
    return NULL;
}

/* The small queue's eviction: entries read often enough move to M; the first that was not is
 * the victim and becomes a ghost. NULL if S emptied into M. */
static struct edge_entry *evict_small(struct edge_shard *sh)
{
    struct edge_entry *en;
    while ((en = sh->small.oldest) != NULL) {
        if (freq_of(en) < EDGE_MOVE_TO_MAIN) {
            ghost_add(sh, hash_of(en));
            return en;
        }
        queue_unlink(&sh->small, en);
        en->queue = EDGE_MAIN;
        set_freq(en, 0);
        queue_push(&sh->main, en);
    }
    return NULL;
}

/* The main queue's eviction, a CLOCK with a 2-bit count: each pass over an entry costs it one
 * read, so this ends within EDGE_FREQ_MAX + 1 passes (amortised, one step per read). */
static struct edge_entry *evict_main(struct edge_shard *sh)
{
    struct edge_entry *en;
    while ((en = sh->main.oldest) != NULL) {
        unsigned f = freq_of(en);
        if (f == 0)
            return en;
        set_freq(en, f - 1);
        queue_unlink(&sh->main, en);
        queue_push(&sh->main, en);
    }
    return NULL;
}

/* The entry to give up for room, still linked (the caller unlinks it). The shard is not empty.
 * *expired says the victim had expired (it is then not an eviction). */
struct edge_entry *tc__edge_policy_victim(struct edge_shard *sh, int64_t now, int *expired)
{
    struct edge_entry *en = find_expired(&sh->small, now);
    if (en == NULL)
        en = find_expired(&sh->main, now);
    *expired = en != NULL;
    if (en != NULL)
        return en;
    sh->has_evicted = 1;
    if (sh->small.count > 0 && !main_is_over(sh) && (en = evict_small(sh)) != NULL)
        return en;
    /* M over its share, S empty, or S emptied into M: M always has one to give then. */
    return evict_main(sh);
}

void tc__edge_policy_reset(struct edge_shard *sh)
{
    memset(&sh->small, 0, sizeof sh->small);
    memset(&sh->main, 0, sizeof sh->main);
    sh->has_evicted = 0;
    if (sh->ghost != NULL)
        memset(sh->ghost, 0, (sh->gmask + 1) * EDGE_GHOST_WAYS * sizeof *sh->ghost);
    sh->gclock = 0;
}

