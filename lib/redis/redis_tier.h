/*
 * redis_tier.h - the shared tier. Values are stored with a small header (the store's version,
 * the absolute expiry) so a reader knows which version it got and how long it may keep it.
 * Connections are per thread, opened lazily, reopened after the server dropped them or after
 * fork(). A failed connect makes the tier skip Redis for retry_interval_ms.
 */
#ifndef TC_REDIS_TIER_H
#define TC_REDIS_TIER_H

#include "common/internal.h"

typedef struct tc__redis tc__redis;

typedef struct tc__redis_opts {
    const char *host;        /* used when unix_socket is NULL or "" */
    int port;
    const char *unix_socket; /* NULL or "" for TCP */
    const char *ns;          /* prefix of every key */
    int64_t connect_timeout_ms, command_timeout_ms, retry_interval_ms, retry_max_ms;
    const char *username, *password; /* NULL or "" for none */
    int database;                    /* SELECT when > 0 */
    int keepalive;
    size_t max_value_bytes;  /* a larger value in Redis is a protocol error */
    int64_t tombstone_ttl_ms; /* life of the tombstones invalidations leave; 0: 10 s */
    /* redis.pipelining "auto": single commands of threads calling at the same time share one
     * connection and one write (redis/autopipe.h); 0: each thread's own connection. */
    int autopipe;
} tc__redis_opts;

/* Copies opts; connects nothing yet. */
int tc__redis_new(tc__redis **out, const tc__redis_opts *opts, const void *owner,
                  tc__stats *stats);
void tc__redis_free(tc__redis *r);

/* TC_OK after fn(ctx, value, len, version, remaining_ttl_ms), TC_ENOTFOUND (absent or a
 * tombstone), TC_EREDIS (unreachable, or the tier is skipping Redis), TC_EPROTO (a reply or a
 * stored value that makes no sense), TC_ENOMEM, or fn's result. A connection the server closed
 * is reopened and the read retried once before TC_EREDIS. */
int tc__redis_get(tc__redis *r, const char *key, size_t key_len, tc__value_fn fn, void *ctx);

/* Writes the value with PX ttl_ms (> 0) unless Redis holds a newer version or tombstone of the
 * key (then TC_OK, nothing written): a Lua script compares versions atomically. On failure the
 * key is remembered and deleted from Redis as soon as it can be reached again, before this tier
 * serves any read. */
int tc__redis_set(tc__redis *r, const char *key, size_t key_len, const void *value, size_t len,
                  int64_t version, int64_t ttl_ms);
/* tc__redis_set, then PUBLISH of msg on channel (the full channel name), in one round trip
 * (the guard script publishes after its write, whether the write was made or refused). TC_OK:
 * both were done; on failure neither is known to be, and the key is remembered as above. */
int tc__redis_set_publish(tc__redis *r, const char *key, size_t key_len, const void *value,
                          size_t len, int64_t version, int64_t ttl_ms, const char *channel,
                          size_t channel_len, const void *msg, size_t msg_len);
/* A tombstone of this version for ttl_ms, under the same version rule; on failure, remembered
 * as above. */
int tc__redis_tombstone(tc__redis *r, const char *key, size_t key_len, int64_t version,
                        int64_t ttl_ms);
/* For a change the store's feed reports (the invalidator): a tombstone of this version for
 * ttl_ms unless Redis holds this version or a newer one, which stays (a write through the
 * library already put it there: taking it out would only cost the next read a store trip). On
 * failure, remembered as above. */
int tc__redis_retire(tc__redis *r, const char *key, size_t key_len, int64_t version,
                     int64_t ttl_ms);
/* CLIENT TRACKING for this tier's connections, redirected to client_id (tc__rconns_set_tracking;
 * 0: none for connections opened or re-registered from now on). */
void tc__redis_set_tracking(tc__redis *r, long long client_id);
/* tc__redis_retire, then PUBLISH of msg on channel, in one round trip (as set_publish). */
int tc__redis_retire_publish(tc__redis *r, const char *key, size_t key_len, int64_t version,
                             int64_t ttl_ms, const char *channel, size_t channel_len,
                             const void *msg, size_t msg_len);
/* Takes the key's value out of Redis, leaving a tombstone of the value's version (for
 * tombstone_ttl_ms) so that a late fill of an older version is still refused, while a fill of
 * the same version (the next read-through) is accepted; on failure, remembered as above. */
int tc__redis_del(tc__redis *r, const char *key, size_t key_len);

/* tc__redis_del for every key matching the path pattern (pattern.h), found with cursor SCAN
 * (never KEYS: it blocks the server); *out_removed receives how many values were taken out.
 * TC_EINVAL for a bad pattern, TC_EREDIS/TC_EPROTO when Redis fails (not remembered: the
 * caller reports it). */
int tc__redis_invalidate_pattern(tc__redis *r, const char *pat, size_t pat_len,
                                 int64_t *out_removed);

/* Tags (surrogate keys). A tag's set lives at namespace + "\0" + "tag:" + tag: a NUL right
 * after the namespace, which no data key can have (keys never contain a NUL), so a set never
 * collides with a value, and the tier's SCANs over the namespace skip every key with a NUL
 * (pattern invalidation and the journal's overflow clearing neither touch nor count tag sets,
 * this namespace's or those of a namespace it is a prefix of). A set's members are the keys
 * without the namespace. The Redis structures of the public API (redis_structs.c) live the same
 * way at namespace + "\0" + "s:" + name, and are skipped by the same SCANs. */

/* Adds key to the set of each of the ntags tags (tags[i] is tag_lens[i] bytes: 1..TC_KEY_MAX,
 * any bytes but NUL), and makes each set live at least ttl_ms (> 0) from now, never shortening
 * a set's TTL (and leaving a set that has none without one). One round trip: a script
 * (TC__SCRIPT_TAG); anything else found under a set's name is replaced. ntags == 0 is TC_OK
 * without I/O (tags and tag_lens may then be NULL). The arguments are only read during the
 * call. Returns TC_OK, TC_EINVAL (r, tags, tag_lens or a tag NULL; a tag empty, too long or with
 * a NUL; ttl_ms out of range; nothing is written then), TC_EKEY / TC_EINVAL for a bad key as
 * tc__check_key says, TC_EREDIS / TC_EPROTO when Redis fails, TC_ENOMEM. A failure is not
 * journalled: the caller counts it. Safe to call from any thread, like the rest of the tier. */
int tc__redis_tag(tc__redis *r, const char *key, size_t key_len, const char *const *tags,
                  const size_t *tag_lens, size_t ntags, int64_t ttl_ms);

/* Invalidates every key in the tag's set exactly as tc__redis_del does one key (the value is
 * taken out, a tombstone of its version stays for tombstone_ttl_ms, so a late fill of an older
 * version is refused and the next read-through's fill is accepted), and empties the set, which
 * Redis then deletes. The set is walked with SSCAN, each batch (at most 256 keys) settled and
 * removed from the set by one script call (TC__SCRIPT_TAG_DROP), so a large tag never blocks
 * the server for long, and a member leaves the set only together with its value: after a
 * failure part-way, the rest stays in the set for the next try. A key tagged while the walk
 * runs may stay in the set (it is not lost for the next invalidation). *out_removed receives
 * how many live values were taken out (keys whose value was already gone do not count; on
 * failure, those taken out before it). Returns TC_OK (also for a tag that has no set),
 * TC_EINVAL (r, tag or out_removed NULL; tag empty, too long or with a NUL), TC_EREDIS /
 * TC_EPROTO when Redis fails (TC_EPROTO also when something else than a set is under the
 * tag's name), TC_ENOMEM; a failure is not journalled: the caller reports it. */
int tc__redis_invalidate_tag(tc__redis *r, const char *tag, size_t tag_len,
                             int64_t *out_removed);

/* Runs one command (argv-style; user bytes never in a format string) on the calling thread's
 * connection, with the tier's reconnect, breaker and journal. what names the command in
 * messages (NULL: "command").
 *
 * idempotent != 0 (GET, ZADD, HSET, PEXPIRE, ...): a connection found broken while running it
 * (closed by the server, a timeout) is replaced and the command sent once more.
 * idempotent == 0 (ZINCRBY, HINCRBY, PUBLISH, ...): the command is never sent twice. Just
 * before it is written, the connection is checked without a round trip (a MSG_PEEK recv: EOF, a
 * socket error or unsolicited bytes mean the server closed it, e.g. an idle timeout, CLIENT
 * KILL or a restart); such a connection is released as broken and the command goes on a fresh
 * one. Once the command was written, any failure (the connection closed under it, a timeout)
 * is returned as TC_EREDIS without a resend: the server may or may not have executed it.
 *
 * *out receives the reply (any type, error replies included: the caller checks it and frees it
 * with freeReplyObject) or NULL on failure. TC_OK, TC_EINVAL, TC_EREDIS, TC_EPROTO (the reply
 * stream made no sense), TC_ENOMEM. */
struct redisReply;
int tc__redis_run(tc__redis *r, const char *what, int idempotent, int argc, const char **argv,
                  const size_t *lens, struct redisReply **out);

/* One command for tc__redis_pipeline: argc arguments, argv[i] lens[i] bytes each. */
typedef struct tc__redis_cmd {
    int argc;
    const char **argv;
    const size_t *lens;
} tc__redis_cmd;

/* Runs n idempotent commands pipelined (all written, then all replies read: one round trip)
 * on the calling thread's connection, with the tier's reconnect, breaker and journal as
 * tc__redis_run; a broken connection is replaced and the whole pipeline sent once more (so
 * only commands that may run twice: reads, MULTI ... EXEC of reads, absolute writes).
 * replies[i] receives command i's reply (any type; free each with freeReplyObject); on failure
 * every replies[i] is NULL. n == 0 is TC_OK without I/O. TC_OK, TC_EINVAL, TC_EREDIS,
 * TC_EPROTO, TC_ENOMEM. */
int tc__redis_pipeline(tc__redis *r, const char *what, size_t n, const tc__redis_cmd *cmds,
                       struct redisReply **replies);

/* Receives one hit of tc__redis_get_many: key i's value (len bytes, valid during the call
 * only), its version and remaining life in Redis. A non-zero return stops the walk and is
 * returned by tc__redis_get_many. */
typedef int (*tc__many_fn)(void *ctx, size_t i, const void *data, size_t len, int64_t version,
                           int64_t ttl_ms);

/* Reads n keys (keys[i], key_lens[i] bytes, the rules of tc__check_key; a key may repeat)
 * with pipelined GETs: one round trip per 1000 keys. Each value is decoded as tc__redis_get
 * decodes it, and fn(ctx, i, ...) is called for every key that holds a live value, in
 * increasing i, on the calling thread, after the connection was released (fn may call into the
 * tier). Absent and expired keys, tombstones, and keys holding something that is not one of our
 * values (another type, a foreign string) are misses: fn is not called for them. fn may be
 * NULL (then nothing is delivered).
 * The journal is applied first (as before every command); a connection found broken is
 * replaced and the chunk of 1000 retried once (GET is idempotent); a chunk's hits are
 * delivered only once all its replies arrived, so no key is delivered twice.
 * Returns TC_OK (whatever the number of hits), TC_EINVAL (r NULL; keys or key_lens NULL with
 * n > 0), TC_EKEY / TC_EINVAL (a bad key: nothing is sent, the message names its index),
 * TC_EREDIS / TC_EPROTO (Redis failed: fn may have been called for hits of earlier chunks;
 * treat the other keys as misses), TC_ENOMEM, or fn's non-zero result. n == 0: TC_OK, no I/O. */
int tc__redis_get_many(tc__redis *r, size_t n, const char *const *keys, const size_t *key_lens,
                       tc__many_fn fn, void *ctx);

/* The miss lease across processes (SET NX PX with a token, at namespace + "\0l:" + key): the
 * process holding it reads the store; the others wait for its fill instead of reading too.
 * One round trip (TC__SCRIPT_LEASE) reads the key and, only when it holds no live value, tries
 * to take the lease for lease_ms (> 0). Returns TC_OK after fn(ctx, ...) as tc__redis_get for a
 * live value (or TC_ENOTFOUND for one that expired or is of an older format), TC__LEASE_TAKEN
 * (the caller now holds it with token: it reads the store, fills, then tc__redis_unlease),
 * TC__LEASE_BUSY (another holder has it), TC_EINVAL, TC_EKEY, TC_EREDIS, TC_EPROTO, TC_ENOMEM.
 * Failures are not journalled: a lease only saves work, it guards nothing. */
#define TC__LEASE_TAKEN 1
#define TC__LEASE_BUSY 2
int tc__redis_lease(tc__redis *r, const char *key, size_t key_len, const char *token,
                    size_t token_len, int64_t lease_ms, tc__value_fn fn, void *ctx);
/* Releases the lease if token still holds it (TC_OK either way), so that waiters need not wait
 * for its expiry when the holder's read filled nothing (a store error, a miss). */
int tc__redis_unlease(tc__redis *r, const char *key, size_t key_len, const char *token,
                      size_t token_len);

/* The tier's namespace (the prefix of every key), and its length. */
const char *tc__redis_namespace(const tc__redis *r, size_t *len);

/* The server-side scripts and their SHA1s (a test checks each against SCRIPT LOAD);
 * TC__SCRIPT_COUNT is one past the last. */
#define TC__SCRIPT_GUARD 0
#define TC__SCRIPT_SETTLE 1
#define TC__SCRIPT_TAG 2
#define TC__SCRIPT_TAG_DROP 3
#define TC__SCRIPT_LEASE 4
#define TC__SCRIPT_UNLEASE 5
#define TC__SCRIPT_COUNT 6
int tc__redis_script(int which, const char **out_text, const char **out_sha);

#endif
