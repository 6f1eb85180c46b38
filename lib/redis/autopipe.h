/*
 * autopipe.h - auto-pipelining (redis.pipelining "auto"): single commands from threads that
 * call at the same time on one tier go out on one shared connection in one write, and each
 * caller gets its own reply back, in order. rueidis's idea, done without a thread of its own:
 * the first caller to find no batch in flight leads one (leader-follower), so a caller alone
 * writes and reads at once, and the callers that arrive while a batch is in flight queue up
 * and go out together in the next one.
 */
#ifndef TC_REDIS_AUTOPIPE_H
#define TC_REDIS_AUTOPIPE_H

#include "redis/redis_conn.h"

typedef struct tc__ap tc__ap;

/* A pipeline over cs's shared connection (tc__rconns_acquire_shared); cs and stats (batches and
 * batched are counted there) must outlive it. TC_OK or TC_ENOMEM (message set, owner as
 * cs's). */
int tc__ap_new(tc__ap **out, tc__rconns *cs, const void *owner, tc__stats *stats);
/* No call may be in progress. NULL is accepted. */
void tc__ap_free(tc__ap *ap);

/* tc__ap_command's answer for a command sent on a connection that then broke in a way worth
 * one more try (closed by the server, reset): the caller may send it again (every command the
 * tier pipelines is idempotent), and the next batch reconnects. */
#define TC__AP_RETRY 1

/* Sends one command (argc >= 1; argv[i] lens[i] bytes; what names it in messages) and waits
 * for its reply: TC_OK with the reply in *out (any type; the caller frees it). Otherwise *out
 * is NULL, the message is set on the calling thread, and the answer is TC__AP_RETRY, or
 * TC_EREDIS (the connect failed or is skipped, a timeout: not worth a retry), TC_EPROTO (a
 * reply hiredis could not parse), TC_ENOMEM. A timed-out batch trips cs's breaker
 * (tc__rconns_timed_out) once for all its callers. Thread-safe; fork-safe (the first call in a
 * child starts an empty pipeline, on a connection of its own). */
int tc__ap_command(tc__ap *ap, const char *what, int argc, const char *const *argv,
                   const size_t *lens, redisReply **out);

#endif
