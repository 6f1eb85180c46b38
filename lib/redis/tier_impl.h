/*
 * tier_impl.h - the Redis tier's inside, shared by its files (redis/ only): the stored
 * envelope, the key layout, the journal, and the helpers that run commands and scripts.
 *   tier_base.c   keys, the journal, replies and errors, running commands, pipelines, SCAN
 *   scripts.c     the server-side Lua scripts and how they are called (EVALSHA, then EVAL)
 *   tier.c        the tier's object and its single-key path: get, set, tombstone, del
 *   tier_tags.c   invalidation by pattern and by tag, and the tag index
 *   tier_many.c   batched reads (one pipeline for many keys) and the miss lease
 */
#ifndef TC_REDIS_TIER_IMPL_H
#define TC_REDIS_TIER_IMPL_H

#include "redis/autopipe.h"
#include "redis/redis_conn.h"
#include "redis/redis_tier.h"

#include <hiredis.h>

/* ---- the stored envelope ------------------------------------------------------------------
 *   byte 0      'T'
 *   byte 1      format version (1)
 *   byte 2      kind: 'V' value, 'X' tombstone
 *   bytes 3-10  the store's version, int64 big-endian
 *   bytes 11-18 absolute expiry, unix ms, int64 big-endian
 *   bytes 19-   the payload (none for a tombstone)
 * Fixed-width big-endian, so a server-side script can compare two versions as byte strings. */
#define ENV_MAGIC 'T'
#define ENV_FORMAT 1
#define ENV_VALUE 'V'
#define ENV_TOMBSTONE 'X'
#define ENV_HEADER 19

#define PEND_MAX 10000
#define PEND_BUCKETS 16384 /* a power of two, about 1.6 x PEND_MAX */
#define SETTLE_BATCH 256   /* keys per settle script call */
#define SCAN_COUNT "1000"
#define TAG_SCAN_COUNT "256" /* members per SSCAN: about one script batch */
#define CURSOR_SIZE 24       /* a SCAN cursor: up to 20 digits and a NUL */

typedef struct pend_entry {
    struct pend_entry *next;
    uint64_t hash, seq; /* seq: the journal's sequence number at the key's last failure */
    int64_t version;    /* the newest version a failed write carried, -1 if none (invalidate) */
    size_t len;
    char key[];         /* ns + key */
} pend_entry;

struct tc__redis {
    tc__rconns *conns;
    tc__ap *ap; /* NULL: redis.pipelining "off" */
    atomic_int ap_calls; /* single-command calls under way (tier_base.c's AP_MIN_CALLS) */
    char *ns, *scan_pattern;
    size_t ns_len, scan_pattern_len;
    size_t max_value_bytes;
    int64_t tombstone_ttl_ms;
    const void *owner;
    /* Only connects and reuses are counted here (redis_conn.c): the orchestration counts the
     * tier's hits, misses, sets and errors from the codes these functions return. */
    tc__stats *stats;
    tc__stats own_stats; /* used when the caller passes no stats */

    /* The journal, under tc__rconns_lock(conns). */
    pend_entry **pend_buckets; /* NULL while empty */
    size_t pend_count;
    uint64_t pend_seq;
    int pend_overflow;
    uint64_t pend_overflow_seq;
    atomic_int pend_active; /* pend_count > 0 || pend_overflow, for a lock-free fast path */
    atomic_int pend_busy;   /* the journal is being changed (see journal_torn) */
};

/* ---- keys -------------------------------------------------------------------------------- */

typedef struct nskey {
    char *p;
    size_t len;
    char buf[640];
} nskey;

/* A tag's set: namespace, NUL, "tag:", tag. No data key has a NUL (tc__check_key), so a set
 * never collides with one, and a SCAN can tell the two apart (is_tag_set). */
#define TAG_INFIX "\0tag:"
#define TAG_INFIX_LEN (sizeof TAG_INFIX - 1)

/* A key's miss lease: namespace, NUL, "l:", key (skipped by SCANs like tag sets). */
#define LEASE_INFIX "\0l:"
#define LEASE_INFIX_LEN (sizeof LEASE_INFIX - 1)

/* A key (with the namespace) for the settle script, and the version it must not go below. */
typedef struct settle_item {
    const char *key;
    size_t len;
    int64_t version; /* -1: none known */
} settle_item;

/* ---- running a command ------------------------------------------------------------------- */

/* One piece of work on a connection. It returns TC_OK or an error; *broken says the connection
 * failed (then the error is already recorded): BROKEN when the step may run again on a new
 * connection, BROKEN_SENT when it must not (a command that is not idempotent was written). */
typedef int (*conn_op)(tc__redis *r, redisContext *c, void *ctx, int *broken);
#define BROKEN 1
#define BROKEN_SENT 2

/* The one place that writes the layout; the guarded-write script reads the version from it at
 * the same offsets. *out is malloc'd. */
int tc__rt_envelope_build(char **out, size_t *out_len, char kind, int64_t version,
                          int64_t expiry_ms, const void *payload, size_t len);

int tc__rt_nskey_make(nskey *k, const tc__redis *r, const char *key, size_t key_len);

void tc__rt_nskey_free(nskey *k);

int tc__rt_check_tag(const tc__redis *r, const char *tag, size_t tag_len);

size_t tc__rt_tagkey_len(const tc__redis *r, size_t tag_len);

/* Writes the (checked) tag's set name at out, which has tagkey_len bytes. */
void tc__rt_tagkey_write(char *out, const tc__redis *r, const char *tag, size_t tag_len);

/* namespace + infix + name; infix starts with a NUL, so the key is never a data key. */
int tc__rt_infixkey_make(nskey *k, const tc__redis *r, const char *infix, size_t infix_len,
                         const char *name, size_t name_len);

int tc__rt_tagkey_make(nskey *k, const tc__redis *r, const char *tag, size_t tag_len);

/* Remembers that key (without the namespace) may hold a value older than the store's version
 * (the version of the failed write, or -1 for an invalidation). Never fails: when it cannot
 * remember the key it remembers to clear the whole namespace. */
void tc__rt_pend_add(tc__redis *r, const char *key, size_t key_len, int64_t version);

/* redis_conn.c's on_torn, in a child after fork(), with the mutex held: a parent thread held
 * the lock at the instant of fork. If it was changing the journal, the entries may be
 * half-linked: forget them (their memory stays allocated in this process) and clear the whole
 * namespace instead. Otherwise the journal is intact. */
void tc__rt_journal_torn(void *arg);

/* A NULL reply: the context's error says why. */
int tc__rt_ctx_error(const tc__redis *r, const redisContext *c, const char *what);

/* A reply of the wrong type: an error reply is Redis failing (TC_EREDIS), anything else is a
 * reply that makes no sense (TC_EPROTO). */
int tc__rt_reply_error(const tc__redis *r, const redisReply *rep, const char *what,
                       const char *expected);

/* Runs the settle script on c over n items (n <= SETTLE_BATCH); *removed += values taken out.
 * c NULL: as a call of its own (tc__rt_run_script: the auto-pipeline, or this thread's
 * connection), with its retry. */
int tc__rt_conn_settle(tc__redis *r, redisContext *c, const settle_item *items, size_t n,
                       int64_t *removed);

/* Checks a reply of the SCAN family ([cursor, [string, ...]]), copies its cursor into cursor
 * (CURSOR_SIZE bytes) and points *out_items at the strings. TC_OK, TC_EREDIS (an error reply),
 * TC_EPROTO (anything else that is not such a reply, or WRONGTYPE: a key that is not ours). */
int tc__rt_scan_reply(const tc__redis *r, const redisReply *rep, const char *what, char *cursor,
                      const redisReply **out_items);

/* Drops every key matching a Redis glob: SCAN MATCH, then each batch of keys found with a
 * plain DEL (evict == 0: the journal's overflow, which must leave no value behind) or through
 * the settle script (evict != 0: an invalidation, which leaves tombstones behind). Tag sets
 * are skipped in both cases: they hold no value, and a key they name is handled under its own
 * name. *removed, if not NULL, receives how many values were dropped. */
int tc__rt_scan_drop(tc__redis *r, redisContext *c, const char *glob, size_t glob_len,
                     int evict, int64_t *removed);

/* Runs op on the calling thread's connection, after the journal was applied on it. If the
 * connection turns out to be closed (server restart, CLIENT KILL, idle timeout), it is replaced
 * and the whole step runs once more, unless op said BROKEN_SENT: every other operation we send
 * is idempotent. */
int tc__rt_with_conn(tc__redis *r, conn_op op, void *ctx);

int tc__rt_run(tc__redis *r, const char *what, int argc, const char **argv, const size_t *lens,
               redisReply **out);

int tc__rt_run_script(tc__redis *r, int which, int nrest, const char **rest,
                      const size_t *lens, redisReply **out);

int tc__rt_op_pipeline(tc__redis *r, redisContext *c, void *ctx, int *broken);

/* Checks a GET reply and hands its payload to fn. */
int tc__rt_deliver(tc__redis *r, const redisReply *rep, tc__value_fn fn, void *ctx);

/* A script call's first two arguments: EVALSHA and the script's SHA1, or (eval) EVAL and its
 * text, the fallback when the server answers NOSCRIPT (tc__rt_is_noscript). */
void tc__rt_script_head(int which, int eval, const char **argv, size_t *lens);
int tc__rt_is_noscript(const redisReply *rep);

/* Runs a script on c with EVALSHA, and with EVAL once when the server does not know it (a
 * restart or SCRIPT FLUSH empties its cache; EVAL caches it again). rest is what follows the
 * script in the command: numkeys, keys, args. NULL with c->err set when the connection failed,
 * or with c->err == 0 when out of memory. */
redisReply *tc__rt_conn_eval(redisContext *c, int which, int nrest, const char **rest,
                             const size_t *rest_lens);

/* Pipelining: every command appended to the connection's output buffer, then every reply read,
 * so n commands cost one round trip. */
typedef struct pipe_call {
    const char *what;
    size_t n;
    const tc__redis_cmd *cmds;
    redisReply **replies; /* n entries; all NULL unless the step succeeded */
} pipe_call;

#endif
