/*
 * subscriber_impl.h - the subscriber engine's inside (pubsub.h is its interface), shared by its
 * two files (redis/ only):
 *   subscriber_thread.c  the subscriber thread: its connection, the channels it settles, the
 *                        replies it hands on, its loop and liveness checks
 *   subscriber.c         the object and the calls on it: new, free, subscribe, unsubscribe,
 *                        and a fork()ed child's repair
 * subscriber.c's head describes the design.
 */
#ifndef TC_REDIS_SUBSCRIBER_IMPL_H
#define TC_REDIS_SUBSCRIBER_IMPL_H

#include "redis/pubsub.h"
#include "redis/redis_conn.h"

#include <hiredis.h>
#include <pthread.h>

enum { C_OFF, C_SUBSCRIBING, C_ON, C_UNSUBSCRIBING };

/* A channel on the connection: the thread's alone (and the child's repair's). */
typedef struct chan {
    _Atomic(struct chan *) next;
    int state;
    size_t nlive; /* live subscriptions attached */
    size_t len;
    char name[];  /* namespace + channel */
} chan;

struct tc__sub {
    _Atomic(tc__sub *) next; /* p->subs; changed under p->mu, one store at a time */
    tc__pubsub *p;
    tc__message_fn fn;
    tc__link_fn on_link;
    void *ctx;
    /* Under p->mu. */
    int dead;    /* unsubscribed, or its waiting subscribe failed: no callback from now on */
    int waiter;  /* a tc__pubsub_subscribe is waiting on it: do not free */
    int result;  /* for the waiter: 0 pending, 1 confirmed, or TC_E* */
    int up;      /* the last on_link value passed (-1: none yet); set by the thread */
    int want_up; /* what it should be told next (-1: nothing); set by the thread */
    /* The thread's alone. */
    chan *ch;    /* attached to (counted in ch->nlive), or NULL */
    size_t len;
    char name[]; /* namespace + channel */
};

#define REPAIR_BIT 0x80000000u

struct tc__pubsub {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a subscription confirmed or failed, a callback ended */
    _Atomic(tc__sub *) subs;    /* newest first; under mu */
    _Atomic(chan *) chans;      /* the thread's */
    tc__sub *running;           /* whose callback runs now; under mu */
    pthread_t thread;
    int started, stop;          /* under mu */
    int thread_up;              /* the thread runs its loop; under mu */
    int connect_now;            /* a waiting subscribe wants a connect at once; under mu */
    int wake_pending;           /* a byte is in the pipe; under mu */
    int wake_rd, wake_wr;       /* the self-pipe */
    char last_err[192];         /* why the last connect or connection failed; under mu */
    _Atomic(redisContext *) conn; /* the thread's connection, for a child to close */
    atomic_int conn_busy;       /* the thread is inside hiredis on conn */
    atomic_uint gen;            /* the fork generation; | REPAIR_BIT while a child repairs */
    const void *owner;
    char *host, *unix_socket, *username, *password, *where;
    int port, database, keepalive;
    struct timeval connect_tv;
    int64_t connect_timeout_ms, retry_interval_ms, retry_max_ms, ping_interval_ms;
    char *ns;
    size_t ns_len;
    /* Server-assisted client-side caching (tc__pubsub_track): set before the thread starts. */
    tc__tracked_fn track_fn;
    void *track_ctx;
    atomic_llong track_id; /* this connection's client id while it receives invalidations */
};

int tc__ps_open_pipe(int fds[2]);

/* Under mu. The read end stays open while anyone may call this (closed only by free, after
 * the last caller, and by the child's repair, which replaces both ends), so the write cannot
 * raise SIGPIPE. */
void tc__ps_wake(tc__pubsub *p);

void tc__ps_conn_close(tc__pubsub *p, redisContext *c);

int tc__ps_has_live(tc__pubsub *p, int *any_waiter);

/* Under mu. */
int tc__ps_start_thread(tc__pubsub *p);

#endif
