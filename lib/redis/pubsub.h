/*
 * pubsub.h - the subscribing side of Redis pub/sub: one thread per handle with a connection of
 * its own (a subscribed connection can do nothing else), delivering messages to callbacks one
 * after another; it reconnects with the handle's backoff and subscribes again. Publishing is
 * not here: it runs on the tier's per-thread connections (tc__redis_run).
 *
 * Channels are given without the namespace; the prefix is added here.
 */
#ifndef TC_PUBSUB_H
#define TC_PUBSUB_H

#include "common/internal.h"
#include "redis/redis_tier.h"

typedef struct tc__pubsub tc__pubsub;
typedef struct tc__sub tc__sub;

/* A subscriber connects where the handle's Redis tier does, with its credentials, timeouts
 * and backoff (tc__redis_opts: host or unix_socket, port, username, password, database,
 * keepalive, connect_timeout_ms, retry_interval_ms, retry_max_ms, and ns as the channel
 * prefix). ping_interval_ms: how often an idle subscriber PINGs the server to find a dead
 * connection that no FIN announced (a partition, a paused server); a connection silent for
 * twice this is dropped and reconnected. */

/* Copies opts; no thread and no connection yet. Thread-safe from here on: every function below
 * may be called from any thread (tc__pubsub_free and tc__pubsub_after_fork excepted). */
int tc__pubsub_new(tc__pubsub **out, const tc__redis_opts *opts, int64_t ping_interval_ms,
                   const void *owner);
/* Ends every subscription (no callback runs after it returns, and every tc__sub of p is freed:
 * pointers to them are invalid), joins the thread (waiting for a connect in progress: at most
 * the connect timeout and the handshake), frees. NULL is accepted. Not from a callback, and not
 * concurrently with any other call on p. */
void tc__pubsub_free(tc__pubsub *p);

/* A message: channel without the namespace. */
typedef void (*tc__message_fn)(void *ctx, const char *channel, size_t channel_len,
                               const void *message, size_t message_len);
/* The subscription's link: up 0 when the connection dropped or could not be made (messages
 * may be lost from then on), up 1 once the subscription is (again) confirmed by the server.
 * Called on the subscriber thread, in order, never twice in a row with the same value. */
typedef void (*tc__link_fn)(void *ctx, int up);

/* Subscribes fn (and on_link, may be NULL) to channel. With wait, returns once the server
 * confirmed it (on_link(ctx, 1) has then run), or TC_EREDIS if the server could not be reached
 * within the connect timeout (nothing subscribed; the waiting call makes the thread try at once
 * instead of after the backoff, and gives up after 4 x connect timeout + 1 s at the latest,
 * which covers connect, AUTH, SELECT and SUBSCRIBE). Without wait, returns at once; the thread
 * keeps trying in the background with the backoff, calling on_link(ctx, 0) while it cannot.
 * TC_OK, TC_EINVAL, TC_EKEY (channel 1..TC_KEY_MAX bytes, no NUL), TC_EREDIS, TC_ENOMEM. */
int tc__pubsub_subscribe(tc__sub **out, tc__pubsub *p, const char *channel, size_t channel_len,
                         tc__message_fn fn, tc__link_fn on_link, void *ctx, int wait);
/* Ends one subscription: when it returns, its callbacks are not running and never run again;
 * from inside its own callback, it returns at once and the subscription ends after the
 * callback. */
void tc__pubsub_unsubscribe(tc__sub *s);

/* Server-assisted client-side caching (Redis 6+ CLIENT TRACKING, RESP2): the subscriber's
 * connection, at each connect, also subscribes to __redis__:invalidate and learns its client
 * id, which the tier's connections name as their REDIRECT target (tc__redis_set_tracking).
 * fn(ctx, key, key_len) then runs on the subscriber thread for each key Redis says changed, in
 * the namespace, without it (keys outside it are skipped); fn(ctx, NULL, 0) when Redis says any
 * key may have (FLUSHALL, FLUSHDB, a tracking table over its limit). Set once, before the first
 * subscribe; fn stays valid until tc__pubsub_free. */
typedef void (*tc__tracked_fn)(void *ctx, const char *key, size_t key_len);
void tc__pubsub_track(tc__pubsub *p, tc__tracked_fn fn, void *ctx);
/* The client id that receives the invalidations while the link is up (0: none: tracking off,
 * refused by the server, or the link down). */
long long tc__pubsub_tracking_id(tc__pubsub *p);

/* In a fork()ed child, before any other use: the thread and its connection stayed with the
 * parent. The subscriptions are kept; each gets on_link(ctx, 0) and the thread is started
 * again, in the child, on the next tc__pubsub_resume. */
void tc__pubsub_after_fork(tc__pubsub *p);
/* Starts the thread again if there are subscriptions and it is not running (after fork). */
int tc__pubsub_resume(tc__pubsub *p);

#endif
