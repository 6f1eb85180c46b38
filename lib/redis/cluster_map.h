/*
 * cluster_map.h - Redis Cluster's slot map: which master serves each of the 16384 slots, read
 * from a CLUSTER SLOTS reply. Checked whole before use: a reply that is not one, from a node
 * that is confused or not a cluster node, is an error, never a partial map. Immutable once
 * built; thread-safe to read.
 */
#ifndef TC_REDIS_CLUSTER_MAP_H
#define TC_REDIS_CLUSTER_MAP_H

#include "common/internal.h"
#include "redis/slot.h"

#include <hiredis/hiredis.h>

typedef struct tc__cmap tc__cmap;

/* The map of a CLUSTER SLOTS reply (rep; the caller keeps and frees it): *out, to be freed with
 * tc__cmap_free. A slot no range covers is unassigned (a cluster being set up, or one with a
 * master lost and no replica). TC_OK; TC_EPROTO with a message saying what is wrong (not an
 * array, a range that is not [start, end, [host, port, ...], ...], start > end, a slot past
 * 16383, overlapping ranges, a host empty or over 255 bytes, a port out of 1..65535);
 * TC_ENOMEM. owner tags the messages. */
int tc__cmap_from_slots(tc__cmap **out, const redisReply *rep, const void *owner);
void tc__cmap_free(tc__cmap *m);

/* The number of distinct masters in the map. */
size_t tc__cmap_masters(const tc__cmap *m);
/* The master serving slot (< TC__REDIS_SLOTS): its index, 0 .. masters - 1, or -1 when the
 * slot is unassigned. */
int tc__cmap_master_of(const tc__cmap *m, unsigned slot);
/* Master i's address: its host (NUL-terminated, owned by the map) and *port. */
const char *tc__cmap_address(const tc__cmap *m, size_t i, int *port);

#endif
