/*
 * policy.h - the edge's eviction policy (policy.c), as the table in edge.c calls it. Every call
 * is made by a writer that holds the shard exclusively.
 */
#ifndef TC_EDGE_POLICY_H
#define TC_EDGE_POLICY_H

#include "edge/edge_layout.h"

/* How far from the old end of each queue eviction looks for an expired entry before taking a
 * live one. */
#define EDGE_EXPIRED_PROBE 4

/* S3-FIFO parameters, the paper's: the small queue holds a tenth of the shard; an entry leaves
 * it for the main queue if it was read at least EDGE_MOVE_TO_MAIN times there (libCacheSim's
 * default 2; 1 was within 0.1 points on every trace but one, docs/eviction.md); the ghost
 * remembers as many evicted keys as nine tenths of the entries held. */
#define EDGE_SMALL_DIV 10
#define EDGE_MOVE_TO_MAIN 2
#define EDGE_GHOST_WAYS 4

/* What the entry being replaced (if live) tells about the new one: a new version of a key keeps
 * its queue and its reads. */
struct tc__edge_policy_hint {
    int known;
    unsigned char queue;
    unsigned freq;
};

/* Sets the queues' shares of the shard's budgets (max_entries and max_bytes set). */
void tc__edge_policy_init(struct edge_shard *sh);
/* Adds an entry to its queue: a new version of a key keeps its queue and reads (hint); a key the
 * ghost remembers goes to the main queue, as do keys arriving before the first eviction once the
 * small queue is full; any other to the small queue. */
void tc__edge_policy_insert(struct edge_shard *sh, struct edge_entry *en,
                            struct tc__edge_policy_hint hint);
/* Takes the entry out of its queue; with remember (it expired or was deleted rather than
 * replaced or evicted), a key that showed reuse becomes a ghost. */
void tc__edge_policy_remove(struct edge_shard *sh, struct edge_entry *en, int remember);
/* The entry to give up for room, still linked (the caller unlinks it); the shard is not empty.
 * *expired says it had expired (then it is no eviction). */
struct edge_entry *tc__edge_policy_victim(struct edge_shard *sh, int64_t now, int *expired);
/* Empties the queues and the ghost (the entries are the caller's to free). */
void tc__edge_policy_reset(struct edge_shard *sh);
/* Sizes the ghost to as many slots as table_slots; on a failed allocation the old one stays. */
void tc__edge_ghost_resize(struct edge_shard *sh, size_t table_slots);

#endif
