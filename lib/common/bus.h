/*
 * bus.h - the invalidation bus's messages: what a handle's write tells every other handle's
 * edge tier, over Redis pub/sub (pubsub.h), on the channel redis.bus_channel.
 *
 * Layout: 'B' | format 1 | op | sender (16 bytes) | version (i64, big-endian) | argument
 * The sender is a random id per handle, so that a handle skips its own messages (its own
 * writes already updated its edge, synchronously). Pure functions; thread-safe.
 */
#ifndef TC_BUS_H
#define TC_BUS_H

#include "common/internal.h"

#define TC__BUS_ID_LEN 16
#define TC__BUS_HEADER (3 + TC__BUS_ID_LEN + 8)

/* Operations: what the receiver does to its edge. */
#define TC__BUS_CHANGED 'K' /* version committed (a put, a del, or a change the invalidator
                             * applied): the key's older copies go */
#define TC__BUS_DROP 'I'    /* tc_invalidate: the key's copy goes, whatever its version */
#define TC__BUS_PATTERN 'P' /* tc_invalidate_pattern: every key matching the argument goes */
#define TC__BUS_TAG 'T'     /* tc_invalidate_tag: every entry with the tag goes */
#define TC__BUS_FLUSH 'F'   /* the sender lost messages (a publish failed): everything goes */

typedef struct tc__bus_msg {
    unsigned op;
    unsigned char sender[TC__BUS_ID_LEN];
    int64_t version; /* TC__BUS_CHANGED; 0 otherwise */
    const char *arg; /* key, pattern or tag; points into the decoded bytes */
    size_t arg_len;
} tc__bus_msg;

/* Bytes tc__bus_encode writes for an argument of arg_len bytes. */
size_t tc__bus_size(size_t arg_len);
/* Writes tc__bus_size(m->arg_len) bytes to out. */
void tc__bus_encode(void *out, const tc__bus_msg *m);
/* TC_OK, or TC_EPROTO for bytes that are not a message of a known op with a 1..TC_KEY_MAX
 * argument. */
int tc__bus_decode(tc__bus_msg *m, const void *data, size_t len);
/* A random sender id (getrandom, else clock, pid and address mixed). */
void tc__bus_new_id(unsigned char id[TC__BUS_ID_LEN]);

#endif
