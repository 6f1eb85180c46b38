/*
 * subscriber.c - the subscriber engine of pubsub.h: the object and the calls on it (its thread
 * is in subscriber_thread.c; the public tc_publish / tc_subscribe / tc_unsubscribe, in
 * ext/pubsub_api.c, use it).
 *
 * Threads. One thread per tc__pubsub, started by the first subscription, owns the connection:
 * no other thread ever touches it, so hiredis needs no lock. Other threads only change the
 * subscription list and the subscriptions' flags under p->mu and wake the thread. The list
 * itself is the request queue: a new subscription (not yet attached) is a subscribe request, a
 * dead one an unsubscribe request; the thread compares what the list wants with what the
 * connection has (its channel records) and sends the difference. A separate queue of requests
 * would have to be kept consistent with the list for every case (unsubscribed before the request
 * was served, the same channel twice, reconnects), which this makes impossible to get wrong.
 *
 * Wake-up. The thread sleeps in poll() on the connection's socket and on a self-pipe; every
 * request writes one byte to the pipe (only when none is pending, so it never fills). That gives
 * a new subscription a wake-up latency of a context switch, and the idle thread wakes only when
 * something happens or a ping is due, where a short read timeout (50-100 ms) would cost a
 * latency of up to that timeout and twenty wake-ups a second per handle forever. hiredis is used
 * as a buffer and parser: poll() says the socket is readable, redisBufferRead() reads what is
 * there, redisGetReplyFromReader() takes complete replies out: the API 0.14 and 1.x share. The
 * socket keeps blocking mode with a send timeout (redisSetTimeout, the connect timeout), which
 * bounds the handshake and every write to a server that stopped reading.
 *
 * Channels. Several subscriptions may share a channel; Redis holds one subscription per channel
 * and connection, so the thread keeps a record per namespaced channel: OFF, SUBSCRIBING, ON,
 * UNSUBSCRIBING, and the number of live subscriptions attached. SUBSCRIBE is sent when a channel
 * is OFF and wanted; UNSUBSCRIBE when it is ON and nobody wants it; nothing is sent for a
 * channel with a command in flight: the reply decides the next step. A subscription on a channel
 * that is ON is confirmed at once (the server already delivers that channel to us).
 *
 * Liveness. Every reply counts as a sign of life. Idle for ping_interval_ms, the thread sends
 * PING (in RESP2 subscribed mode Redis 7 answers ["pong", ""]; outside it, or over RESP3, a
 * +PONG status: both are accepted); with nothing at all received for twice the interval, the
 * connection is dropped. A dropped connection, an error reply (e.g. NOPERM from an ACL) or a
 * reply that makes no sense all end the connection the same way: on_link(ctx, 0) for each
 * subscription that was up, reconnect after retry_interval_ms, doubling up to retry_max_ms, and
 * reset after a connect that succeeded. A subscribe that waits does not wait for the backoff:
 * it makes the thread try at once, so its bound is the connect timeout plus the handshake.
 *
 * Callbacks run on the thread without p->mu held. p->running names the subscription whose
 * callback runs; tc__pubsub_unsubscribe waits until it is not its own (unless called from that
 * callback). Only the thread frees a subscription while it runs (a dead one, once no callback
 * and no waiter uses it), so the thread's pointers stay valid across its unlocked callbacks.
 *
 * Fork. A child has the memory but not the thread. Its first call repairs the object (as
 * redis_conn.c does, lazily, without pthread_atfork locks; see there why): the mutex and
 * condition are re-created (the thread may have held them), the inherited self-pipe is
 * replaced (it is shared with the parent, whose wake-ups the child would steal), and the
 * parent's connection is closed with redisFree, which only close()s the child's copy of the
 * descriptor and sends nothing; if the thread was inside hiredis at the instant of fork, only
 * the descriptor is closed and the context's memory is left alone. The links of both lists are
 * atomic and each change of a list is a single store, so a child sees each list either before
 * or after a change, never half-way. Subscriptions that were up get on_link(ctx, 0) from the
 * child's new thread, which subscribes again.
 */
#include "redis/subscriber_impl.h"
#include "redis/redis_conn.h"
#include "redis/redis_tier.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ------------------------------------------------------------------------ */

static char *dup_str(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* ---- fork ---------------------------------------------------------------------------------- */

/* The condition waits on the monotonic clock: a subscribe's deadline must not move with the
 * wall clock. */
static void init_sync(tc__pubsub *p)
{
    pthread_condattr_t ca;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void repair(tc__pubsub *p)
{
    /* Whatever the parent's thread held is gone with it; nobody in the child waits on these. */
    init_sync(p);
    close(p->wake_rd);
    close(p->wake_wr);
    int fds[2];
    if (tc__ps_open_pipe(fds) == 0) {
        p->wake_rd = fds[0];
        p->wake_wr = fds[1];
    } else {
        p->wake_rd = p->wake_wr = -1; /* resume fails with TC_ENOMEM: no thread */
    }
    p->wake_pending = 0;
    redisContext *c = atomic_exchange(&p->conn, NULL);
    if (c != NULL) {
        if (atomic_load(&p->conn_busy)) {
            if (c->fd >= 0)
                close(c->fd); /* its buffers may be half-updated: leave them */
        } else {
            redisFree(c); /* sends nothing: only our copy of the descriptor is closed */
        }
    }
    atomic_store(&p->conn_busy, 0);
    chan *ch = atomic_load(&p->chans);
    atomic_store(&p->chans, NULL);
    while (ch != NULL) {
        chan *next = atomic_load(&ch->next);
        free(ch);
        ch = next;
    }
    for (tc__sub *s = atomic_load(&p->subs); s != NULL; s = atomic_load(&s->next)) {
        s->ch = NULL;
        if (s->waiter) {
            /* Its caller was a parent thread: nobody will get this subscription. */
            s->waiter = 0;
            s->dead = 1;
        }
        if (s->dead)
            continue;
        s->want_up = s->up == 1 ? 0 : -1;
    }
    p->running = NULL;
    p->started = 0;
    p->thread_up = 0;
    p->stop = 0;
    p->connect_now = 0;
}

/* At the top of every entry point: one atomic load when nothing forked. Several threads of a
 * child may race here: one repairs, the others wait; a repair mark left by an ancestor (fork()
 * during a repair) belongs to another generation and is taken over. */
static void check_fork(tc__pubsub *p)
{
    unsigned g = tc__fork_generation();
    for (;;) {
        unsigned seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (seen == g)
            return;
        if (seen == (g | REPAIR_BIT)) {
            sched_yield();
            continue;
        }
        if (atomic_compare_exchange_weak(&p->gen, &seen, g | REPAIR_BIT)) {
            repair(p);
            atomic_store_explicit(&p->gen, g, memory_order_release);
            return;
        }
    }
}

/* ---- the object ------------------------------------------------------------------------------ */

static void free_fields(tc__pubsub *p)
{
    free(p->host);
    free(p->unix_socket);
    free(p->username);
    tc__free_secret(p->password);
    free(p->where);
    free(p->ns);
}

void tc__pubsub_track(tc__pubsub *p, tc__tracked_fn fn, void *ctx)
{
    pthread_mutex_lock(&p->mu);
    p->track_fn = fn;
    p->track_ctx = ctx;
    pthread_mutex_unlock(&p->mu);
}

long long tc__pubsub_tracking_id(tc__pubsub *p)
{
    return atomic_load(&p->track_id);
}

int tc__pubsub_new(tc__pubsub **out, const tc__redis_opts *opts, int64_t ping_interval_ms,
                   const void *owner)
{
    if (out == NULL)
        return tc__err(owner, TC_EINVAL, "pubsub: out is NULL");
    *out = NULL;
    if (opts == NULL)
        return tc__err(owner, TC_EINVAL, "pubsub: options are NULL");
    const char *ns = opts->ns != NULL ? opts->ns : "";
    size_t ns_len = strlen(ns);
    int use_unix = opts->unix_socket != NULL && opts->unix_socket[0] != '\0';
    if (!use_unix && (opts->host == NULL || opts->host[0] == '\0'))
        return tc__err(owner, TC_EINVAL, "pubsub: neither a host nor a unix socket is set");
    if (!use_unix && (opts->port < 1 || opts->port > 65535))
        return tc__err(owner, TC_EINVAL, "pubsub: port %d is out of range", opts->port);
    if (opts->connect_timeout_ms < 1 || opts->retry_interval_ms < 0 || opts->retry_max_ms < 0 ||
        ping_interval_ms < 0)
        return tc__err(owner, TC_EINVAL, "pubsub: a timeout or interval is out of range");

    tc__pubsub *p = calloc(1, sizeof *p);
    if (p == NULL)
        return tc__err(owner, TC_ENOMEM, "pubsub: out of memory");
    p->owner = owner;
    p->port = opts->port;
    p->database = opts->database;
    p->keepalive = opts->keepalive;
    p->connect_timeout_ms = opts->connect_timeout_ms;
    p->connect_tv.tv_sec = (time_t)(opts->connect_timeout_ms / 1000);
    p->connect_tv.tv_usec = (suseconds_t)((opts->connect_timeout_ms % 1000) * 1000);
    p->retry_interval_ms = opts->retry_interval_ms;
    p->retry_max_ms = opts->retry_max_ms;
    p->ping_interval_ms = ping_interval_ms;
    p->ns_len = ns_len;
    p->username = dup_str(opts->username);
    p->password = dup_str(opts->password);
    p->ns = malloc(ns_len + 1);
    if (p->ns != NULL) {
        memcpy(p->ns, ns, ns_len + 1);
    }
    const char *where = use_unix ? opts->unix_socket : opts->host;
    size_t wn = strlen(where) + 16;
    p->where = malloc(wn);
    if (p->where != NULL) {
        if (use_unix)
            snprintf(p->where, wn, "%s", where);
        else
            snprintf(p->where, wn, "%s:%d", where, opts->port);
    }
    if (use_unix)
        p->unix_socket = dup_str(opts->unix_socket);
    else
        p->host = dup_str(opts->host);
    int fds[2] = {-1, -1};
    if (p->ns == NULL || p->where == NULL || (use_unix ? p->unix_socket : p->host) == NULL ||
        (opts->username != NULL && opts->username[0] != '\0' && p->username == NULL) ||
        (opts->password != NULL && opts->password[0] != '\0' && p->password == NULL) ||
        tc__ps_open_pipe(fds) != 0) {
        free_fields(p);
        free(p);
        return tc__err(owner, TC_ENOMEM, "pubsub: out of memory or file descriptors");
    }
    p->wake_rd = fds[0];
    p->wake_wr = fds[1];
    init_sync(p);
    atomic_init(&p->subs, NULL);
    atomic_init(&p->chans, NULL);
    atomic_init(&p->conn, NULL);
    atomic_init(&p->track_id, 0);
    atomic_init(&p->conn_busy, 0);
    /* Also registers process.c's atfork handler before any thread exists. */
    atomic_init(&p->gen, tc__fork_generation());
    *out = p;
    return TC_OK;
}

void tc__pubsub_free(tc__pubsub *p)
{
    if (p == NULL)
        return;
    check_fork(p);
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    tc__ps_wake(p);
    int join = p->started;
    pthread_mutex_unlock(&p->mu);
    if (join)
        pthread_join(p->thread, NULL);
    /* No callback runs now and none will; the connection was closed by the thread. */
    tc__sub *s = atomic_load(&p->subs);
    while (s != NULL) {
        tc__sub *next = atomic_load(&s->next);
        free(s);
        s = next;
    }
    chan *ch = atomic_load(&p->chans);
    while (ch != NULL) {
        chan *next = atomic_load(&ch->next);
        free(ch);
        ch = next;
    }
    tc__ps_conn_close(p, atomic_load(&p->conn)); /* a thread that never ran: nothing */
    close(p->wake_rd);
    close(p->wake_wr);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free_fields(p);
    free(p);
}

/* ---- subscriptions --------------------------------------------------------------------------- */

static void add_ms(struct timespec *ts, int64_t ms)
{
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Under mu: waits until the subscriber thread confirmed s or gave up on it. The connect, AUTH,
 * SELECT and SUBSCRIBE each take at most the connect timeout (the socket's timeout); the margin
 * covers a busy machine. */
static void await_confirmation(tc__pubsub *p, tc__sub *s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    add_ms(&deadline, 4 * p->connect_timeout_ms + 1000);
    int late = 0;
    while (s->result == 0) {
        /* Past the deadline while its on_link runs: wait for that without a deadline (a
         * timed wait would return at once, again and again). */
        int w = late ? pthread_cond_wait(&p->cv, &p->mu)
                     : pthread_cond_timedwait(&p->cv, &p->mu, &deadline);
        if (w == ETIMEDOUT && s->result == 0) {
            if (p->running != s) {
                s->result = TC_EREDIS;
                s->dead = 1;
                snprintf(p->last_err, sizeof p->last_err,
                         "no confirmation from the server in time");
            } else {
                late = 1;
            }
        }
    }
}

int tc__pubsub_subscribe(tc__sub **out, tc__pubsub *p, const char *channel, size_t channel_len,
                         tc__message_fn fn, tc__link_fn on_link, void *ctx, int wait)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "subscribe: out is NULL");
    *out = NULL;
    if (p == NULL || fn == NULL)
        return tc__err(NULL, TC_EINVAL, "subscribe: the subscriber or fn is NULL");
    const void *owner = p->owner;
    int rc = tc__check_key(owner, channel, channel_len);
    if (rc != TC_OK)
        return rc;
    check_fork(p);

    tc__sub *s = calloc(1, sizeof *s + p->ns_len + channel_len);
    if (s == NULL)
        return tc__err(owner, TC_ENOMEM, "subscribe: out of memory");
    s->p = p;
    s->fn = fn;
    s->on_link = on_link;
    s->ctx = ctx;
    s->up = -1;
    s->want_up = -1;
    s->waiter = wait != 0;
    s->len = p->ns_len + channel_len;
    memcpy(s->name, p->ns, p->ns_len);
    memcpy(s->name + p->ns_len, channel, channel_len);

    pthread_mutex_lock(&p->mu);
    /* From a callback, on the subscriber thread: it cannot confirm while it waits for itself,
     * so the subscription is confirmed after the callback returns. */
    if (wait && p->started && pthread_equal(pthread_self(), p->thread)) {
        wait = 0;
        s->waiter = 0;
    }
    rc = tc__ps_start_thread(p);
    if (rc != TC_OK) {
        pthread_mutex_unlock(&p->mu);
        free(s);
        return rc;
    }
    atomic_init(&s->next, atomic_load(&p->subs));
    atomic_store(&p->subs, s);
    if (wait)
        p->connect_now = 1;
    tc__ps_wake(p);
    if (!wait) {
        pthread_mutex_unlock(&p->mu);
        *out = s;
        return TC_OK;
    }
    await_confirmation(p, s);
    s->waiter = 0;
    rc = s->result == 1 ? TC_OK : s->result;
    char why[sizeof p->last_err];
    memcpy(why, p->last_err, sizeof why);
    if (rc != TC_OK)
        tc__ps_wake(p); /* the thread frees it */
    pthread_mutex_unlock(&p->mu);
    if (rc != TC_OK)
        return tc__err(owner, rc, "subscribe: redis %s: %s", p->where, why);
    *out = s;
    return TC_OK;
}

void tc__pubsub_unsubscribe(tc__sub *s)
{
    if (s == NULL)
        return;
    tc__pubsub *p = s->p;
    check_fork(p);
    pthread_mutex_lock(&p->mu);
    s->dead = 1;
    int on_thread = p->started && pthread_equal(pthread_self(), p->thread);
    while (!on_thread && p->running == s)
        pthread_cond_wait(&p->cv, &p->mu);
    if (!p->started) {
        /* No thread (a child before resume): nothing refers to s but the list. */
        _Atomic(tc__sub *) *pp = &p->subs;
        for (tc__sub *x; (x = atomic_load(pp)) != NULL; pp = &x->next) {
            if (x == s) {
                atomic_store(pp, atomic_load(&s->next));
                free(s);
                break;
            }
        }
    } else {
        tc__ps_wake(p);
    }
    pthread_mutex_unlock(&p->mu);
}

void tc__pubsub_after_fork(tc__pubsub *p)
{
    if (p != NULL)
        check_fork(p);
}

int tc__pubsub_resume(tc__pubsub *p)
{
    if (p == NULL)
        return TC_OK;
    check_fork(p);
    pthread_mutex_lock(&p->mu);
    int waiter, rc = TC_OK;
    if (tc__ps_has_live(p, &waiter))
        rc = tc__ps_start_thread(p);
    pthread_mutex_unlock(&p->mu);
    return rc;
}
