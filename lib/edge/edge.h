/*
 * edge.h - the in-process tier: a thread-safe map with TTL, bounded by entries and bytes, that
 * keeps the store's version with every entry and refuses to go back in time.
 */
#ifndef TC_EDGE_H
#define TC_EDGE_H

#include "common/internal.h"

typedef struct tc__edge tc__edge;

/* max_entries >= 1, max_bytes >= 4096 (entries are charged key + value + overhead). */
int tc__edge_new(tc__edge **out, size_t max_entries, size_t max_bytes);
void tc__edge_free(tc__edge *e);

/* TC_OK after calling fn with the live value, TC_ENOTFOUND when absent, expired or a tombstone,
 * or what fn returned. fn runs while the shard is held for reading (its writers wait): copy and
 * return, and never write to the edge from it. Takes no lock and writes no shared cache line
 * unless a writer holds the shard. fn may be NULL. */
int tc__edge_get(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx);

/* Flags a caller may keep with an entry (tc__edge_set_flags), 2 bits. */
#define TC__EDGE_FLAGS_MASK 3u
/* tc__edge_get_into's answer for an entry with flags: it copies only entries without. */
#define TC__EDGE_FLAGGED 2
/* tc__edge_try_hit's answer for every case but the common hit (edge_hit.h). */
#define TC__EDGE_SLOW 3

/* tc__edge_get that also gives the entry's flags: *out_flags is set before fn is called (0
 * when nothing was found); and, when out_tomb_version is not NULL, the version of a live
 * tombstone found instead of a value (-1 when none): a lower tier's copy older than it must not
 * be served. */
int tc__edge_get_flags(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx,
                       unsigned *out_flags, int64_t *out_tomb_version);

/* tc__edge_get_flags without the hit counted in the stats and without out_tomb_version: a
 * second look at an entry a read already counted as a miss (out_flags may be NULL). */
int tc__edge_peek(tc__edge *e, const char *key, size_t key_len, tc__value_fn fn, void *ctx,
                  unsigned *out_flags);

/* tc__edge_get_into, the read into the caller's buffer (tc_get_into's), is inline, in
 * edge_hit.h. */

/* Stores a copy for ttl_ms (> 0). Returns 1 if stored, 0 if refused because the entry already
 * holds a newer version or a newer tombstone (equal versions are accepted: a refresh), or
 * TC_ENOMEM. Values larger than the shard's budget (or 4 GiB, or keys over 64 KiB) are not
 * stored (returns 0) and any older copy is removed. */
int tc__edge_set(tc__edge *e, const char *key, size_t key_len, const void *value, size_t len,
                 int64_t version, int64_t ttl_ms);
/* tc__edge_set keeping flags (TC__EDGE_FLAGS_MASK bits) with the entry. */
int tc__edge_set_flags(tc__edge *e, const char *key, size_t key_len, const void *value,
                       size_t len, int64_t version, int64_t ttl_ms, unsigned flags);

/* Replaces the entry with a tombstone of this version for ttl_ms, unless the entry is newer.
 * Returns 1 if placed, 0 if the entry was newer, or TC_ENOMEM (then the entry is removed). */
int tc__edge_tombstone(tc__edge *e, const char *key, size_t key_len, int64_t version,
                       int64_t ttl_ms);

/* tc__edge_tombstone for a bus message or a change the invalidator applies: an entry of this
 * very version stays too (versions are unique per write: it is that write's value). Same
 * returns. */
int tc__edge_retire(tc__edge *e, const char *key, size_t key_len, int64_t version,
                    int64_t ttl_ms);

/* Removes the entry (live or tombstone). Returns 1 if one was removed, else 0. */
int tc__edge_remove(tc__edge *e, const char *key, size_t key_len);

/* Drops every entry (used when invalidations may have been missed). */
void tc__edge_clear(tc__edge *e);

/* Removes every entry (live or tombstone) that match accepts (returns non-zero), as
 * tc__edge_remove would each. match sees the key, the value (NULL and 0 for a tombstone) and
 * the entry's flags;
 * it runs with one shard held exclusively at a time: it must only look and must not call into
 * the edge. Returns how many entries that were not expired were removed. O(entries); reads of
 * the shard being walked wait for it. */
typedef int (*tc__edge_match_fn)(void *ctx, const char *key, size_t key_len, const void *value,
                                 size_t value_len, unsigned flags);
int64_t tc__edge_remove_matching(tc__edge *e, tc__edge_match_fn match, void *ctx);

/* Current number of entries (tombstones included), bytes charged, evictions so far, and hits
 * (live values found by tc__edge_get_into and tc__edge_get_flags: TC_OK or TC_ERANGE). Any
 * pointer may be NULL. */
void tc__edge_counts(tc__edge *e, int64_t *entries, int64_t *bytes, int64_t *evictions,
                     int64_t *hits);

#endif
