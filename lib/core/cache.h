/*
 * cache.h - orchestration internals that tests reach.
 */
#ifndef TC_CACHE_H
#define TC_CACHE_H

#include "edge/edge.h"
#include "common/internal.h"

/* Test hook: when set, called by put and del right after the store committed and before any
 * cache is updated (to check write-through ordering, and to inject races). Not exported. */
extern void (*tc__hook_after_commit)(tc_cache *cache, const char *key, size_t key_len);
/* Bench hook: when set, called on the subscriber thread after a bus message from another
 * handle was applied to this handle's edge. Not exported. */
/* Test hook: when set, called right before a read goes to the store (by the one reader of a
 * key that does, or by a stale-while-revalidate refresh; to slow it down in stampede tests, or
 * to hold it while a test forks). Not exported. */
typedef void (*tc__store_hook)(tc_cache *cache, const char *key, size_t key_len);
extern _Atomic(tc__store_hook) tc__hook_before_store_read;
/* Test hook: when set, called by a reader that missed every cache right before it joins the
 * key's flight (single-flight; to hold it between its miss and its join). Not exported. */
extern _Atomic(tc__store_hook) tc__hook_before_flight_join;
typedef void (*tc__bus_hook)(tc_cache *cache);
extern _Atomic(tc__bus_hook) tc__hook_bus_applied; /* set while the subscriber may run */

/* The handle's edge and Redis tiers (NULL when absent), for tests that look inside. */
tc__edge *tc__cache_edge(tc_cache *cache);
struct tc__redis *tc__cache_redis(tc_cache *cache);
/* In a fork()ed child, repairs the handle (once): what every public call does first. */
void tc__cache_fork_check(tc_cache *cache);
/* Its configuration, and its pub/sub subscriber (NULL without Redis). */
const struct tc_config *tc__cache_config(tc_cache *cache);
struct tc__pubsub *tc__cache_pubsub(tc_cache *cache);
/* Its stale-while-revalidate refresher (refresh.h). */
struct tc__refresher *tc__cache_refresher(tc_cache *cache);
/* Its single-flight table (singleflight.h), NULL with single_flight off. */
struct tc__flights *tc__cache_flights(tc_cache *cache);
/* Its counters (internal.h), which the handle owns. */
tc__stats *tc__cache_stats(tc_cache *cache);
/* Its store (store.h). */
struct tc__store *tc__cache_store(tc_cache *cache);
/* Applies one change of the store's feed: key now has (or, deleted, took) version. Redis gets a
 * tombstone of it unless it holds that version or a newer one; this handle's edge drops older
 * copies (one of that very version stays); the bus tells every other handle's edge the same.
 * TC_OK once all of that was done (an edge-only handle: at once), else the failure
 * (TC_EREDIS...): the change must be applied again. */
int tc__cache_apply_change(tc_cache *cache, const char *key, size_t key_len, int64_t version);

#endif
