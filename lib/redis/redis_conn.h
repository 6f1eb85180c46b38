/*
 * redis_conn.h - the Redis connections of one tier object: one per thread, opened lazily on the
 * thread's first use and reused after that, closed when the thread exits, replaced after the
 * server dropped them or after fork(), and a breaker that skips connect attempts for a while
 * after one failed.
 */
#ifndef TC_REDIS_CONN_H
#define TC_REDIS_CONN_H

#include "common/internal.h"

#include <signal.h>

#include <hiredis/hiredis.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc__rconns tc__rconns;

typedef struct tc__rconns_opts {
    const char *host;        /* used when unix_socket is NULL or "" */
    int port;
    const char *unix_socket; /* NULL or "" for TCP */
    int64_t connect_timeout_ms, command_timeout_ms;
    int64_t retry_interval_ms; /* 0: never skip, try to connect every time */
    /* Capped exponential backoff: each failed connect in a row doubles the skip interval,
     * from retry_interval_ms up to retry_max_ms (<= retry_interval_ms: no growth). */
    int64_t retry_max_ms;
    const char *username; /* NULL or "": AUTH with the password alone (Redis < 6 style);
                           * set: AUTH username password (Redis 6 ACL), needs a password */
    const char *password; /* NULL or "": no AUTH. Copied, and wiped before the copy is freed;
                           * never part of a message */
    int database;         /* SELECT it after connecting when > 0 */
    int keepalive;        /* nonzero: TCP keepalive (redisEnableKeepAlive) on TCP connections */
    /* Called (may be NULL), in a child after fork(), when the object's mutex turned out to
     * have been held by a parent thread at the instant of fork: whatever the owner was
     * changing under tc__rconns_lock at that instant may be half-changed (the owner marks
     * its changes to know, see tier.c). Runs with the mutex held, on the first thread
     * that uses the object in the child; must not lock it. */
    void (*on_torn)(void *arg);
    void *on_torn_arg;
} tc__rconns_opts;

/* Copies opts (the strings too); connects nothing yet. owner tags error messages, stats
 * receives connects and reuses (both must outlive the object). TC_OK, TC_EINVAL (also for a
 * username without a password, a negative retry_max_ms or database), TC_ENOMEM (also when the
 * process ran out of pthread keys). */
int tc__rconns_new(tc__rconns **out, const tc__rconns_opts *opts, const void *owner,
                   tc__stats *stats);

/* Closes every connection of every thread and frees the object. NULL is accepted.
 * No other thread may use the object or exit concurrently while it runs: a thread that used it
 * must either have finished exiting (joined) or stay alive and not call in until it returns.
 * (The per-thread destructor of an exiting thread would otherwise touch freed memory; no lock
 * can protect a lock that is being destroyed.) */
void tc__rconns_free(tc__rconns *cs);

/* The calling thread's usable connection in *out, opening one if the thread has none, its
 * last one broke, or it was inherited across fork(). Counts stats->reuses or stats->connects.
 * TC_OK, TC_EREDIS (the connect failed, or connects are skipped after a recent failure: the
 * message says which and names the failed step, e.g. "AUTH failed: WRONGPASS ...",
 * "SELECT 99 failed: ..."; a failed AUTH or SELECT counts as a failed connect), TC_ENOMEM.
 * The connection stays owned by this object and the thread; after TC_OK the caller must call
 * tc__rconns_release once it is done with it. */
int tc__rconns_acquire(redisContext **out, tc__rconns *cs);

/* The object's one shared connection, for the auto-pipeline (redis/autopipe.h): as acquire,
 * but the connection belongs to no thread. Its callers must serialize themselves (one user
 * between acquire_shared and release_shared at a time, with a happens-before between users:
 * the pipeline's mutex); the thread that releases it need not be the one that acquired it. */
int tc__rconns_acquire_shared(redisContext **out, tc__rconns *cs);
void tc__rconns_release_shared(tc__rconns *cs, int close_it);

/* Server-assisted client-side caching: from now on each connection, before its next command,
 * turns CLIENT TRACKING on (BCAST for keys under prefix, which must outlive the object and be
 * the same at every call) with REDIRECT to client_id, the subscriber connection's, which
 * receives the invalidations; 0 stops registering new connections. */
void tc__rconns_set_tracking(tc__rconns *cs, long long client_id, const char *prefix,
                             size_t prefix_len);

/* Ends the use acquire began. close_it: an error made the connection unusable (c->err set, or
 * a reply stream out of step), so it is closed and the next acquire opens a new one. A
 * connection that received a NOAUTH error reply since acquire is closed the same way, whatever
 * close_it says (the caller still sees that reply as an error reply). */
void tc__rconns_release(tc__rconns *cs, int close_it);

/* A command on this object's connections timed out (command_timeout_ms): the server is up
 * but not answering (stopped, or stuck in a slow command). Trips the breaker as a failed
 * connect does, so that the calls that follow fail at once for retry_interval_ms instead of
 * each waiting out the timeout again: a stall costs one timeout per interval, not one per
 * call. */
void tc__rconns_timed_out(tc__rconns *cs, const char *why);
/* Whether c's error is a timeout (SO_RCVTIMEO's EAGAIN in every hiredis version on Linux,
 * or hiredis 1.1's REDIS_ERR_TIMEOUT). */
int tc__redis_ctx_timed_out(const redisContext *c);
/* The code for a failed context: TC_ENOMEM (hiredis ran out of memory), TC_EPROTO (a reply it
 * could not parse), else TC_EREDIS. */
int tc__redis_ctx_code(const redisContext *c);

/* "host:port" or the socket path, for messages. Valid as long as the object. */
const char *tc__rconns_where(const tc__rconns *cs);

/* A mutex of this object, also usable by its owner for short critical sections (no I/O under
 * it, and no fork). In a child after fork() it is repaired before first use (see on_torn). */
void tc__rconns_lock(tc__rconns *cs);
void tc__rconns_unlock(tc__rconns *cs);

/* Writing to a socket the server closed raises SIGPIPE, which kills a process that has not
 * ignored it, and hiredis writes without MSG_NOSIGNAL. A library must not change the process's
 * signal dispositions, so, as libpq does, the calling thread blocks SIGPIPE around its I/O and
 * swallows a SIGPIPE the I/O raised before restoring its mask. */
typedef struct tc__sigpipe_guard {
    sigset_t old;
    int blocked, was_pending;
} tc__sigpipe_guard;

/* Reads SIGPIPE's disposition (at each connect): while it is SIG_IGN the guard does nothing,
 * as nothing can kill the process. */
void tc__sigpipe_refresh(void);
void tc__sigpipe_block(tc__sigpipe_guard *g);
/* io_failed: the I/O under the guard reported an error (only then can a SIGPIPE be pending). */
void tc__sigpipe_restore(tc__sigpipe_guard *g, int io_failed);

/* Commands in RESP, written here rather than by hiredis's redisFormatCommandArgv: each
 * argument a length-prefixed bulk string exactly as there (binary safe; user bytes are never
 * in a format string), but into one buffer sized in advance, without hiredis's sds growth and
 * printf-style formatting per argument, which cost more client instructions than the rest of
 * a pipelined GET together (callgrind: ~2,300 of ~4,200 per key).
 *
 * tc__resp_size: the bytes of one command (argc >= 1; lens[i] its arguments' lengths).
 * tc__resp_write: writes it at out (tc__resp_size bytes), returns the end. */
size_t tc__resp_size(int argc, const size_t *lens);
char *tc__resp_write(char *out, int argc, const char *const *argv, const size_t *lens);

/* redisCommandArgv's equivalent: appends the command to c's output buffer, then waits for its
 * reply (NULL on failure: c->err says why, REDIS_ERR_OOM included). Blocking contexts only. */
redisReply *tc__resp_command(redisContext *c, int argc, const char *const *argv,
                             const size_t *lens);

#ifdef __cplusplus
}
#endif

/* Frees a NUL-terminated secret (a password copy) after overwriting it. NULL is accepted. */
void tc__free_secret(char *s);
/* Appends src[0 .. len) to out (size n, NUL-terminated), every occurrence of secret (may be
 * NULL) replaced by "(password)" and CR/LF by spaces: for server replies put in messages. */
void tc__append_redacted(char *out, size_t n, const char *src, size_t len, const char *secret);

#endif
