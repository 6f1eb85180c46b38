/*
 * pubsub.c - the subscriber thread (see pubsub.h) and the public tc_publish / tc_subscribe /
 * tc_unsubscribe.
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
#include "redis/pubsub.h"
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
};

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

static int open_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        fcntl(fds[i], F_SETFL, fl | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

/* Under mu. The read end stays open while anyone may call this (closed only by free, after
 * the last caller, and by the child's repair, which replaces both ends), so the write cannot
 * raise SIGPIPE. */
static void wake(tc__pubsub *p)
{
    if (p->wake_pending)
        return;
    p->wake_pending = 1;
    ssize_t n;
    do {
        n = write(p->wake_wr, "x", 1);
    } while (n < 0 && errno == EINTR);
}

/* Under mu: drained before the thread looks at the state, so a request made after the look
 * leaves a byte for the next poll(). */
static void drain_wake(tc__pubsub *p)
{
    char buf[64];
    while (read(p->wake_rd, buf, sizeof buf) > 0) {
    }
    p->wake_pending = 0;
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
    if (open_pipe(fds) == 0) {
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

/* ---- the connection (the thread's) ---------------------------------------------------------- */

static void set_err(tc__pubsub *p, const char *fmt, ...) TC__PRINTF(2, 3);
static void set_err(tc__pubsub *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&p->mu);
    vsnprintf(p->last_err, sizeof p->last_err, fmt, ap);
    pthread_mutex_unlock(&p->mu);
    va_end(ap);
}

static void conn_close(tc__pubsub *p, redisContext *c)
{
    if (c == NULL)
        return;
    atomic_store(&p->conn, NULL);
    redisFree(c);
}

/* One handshake command: status +OK or a failure recorded in last_err. */
static int handshake(tc__pubsub *p, redisContext *c, const char *what, int argc,
                     const char **argv, const size_t *lens)
{
    tc__sigpipe_guard g;
    tc__sigpipe_block(&g);
    atomic_store(&p->conn_busy, 1);
    redisReply *r = redisCommandArgv(c, argc, argv, lens);
    atomic_store(&p->conn_busy, 0);
    tc__sigpipe_restore(&g, r == NULL);
    if (r == NULL) {
        set_err(p, "%s failed: %s", what, c->errstr);
        return -1;
    }
    int ok = r->type == REDIS_REPLY_STATUS && r->len == 2 && memcmp(r->str, "OK", 2) == 0;
    if (!ok) {
        /* The server's words, never the arguments: AUTH's hold the password. */
        if (r->type == REDIS_REPLY_ERROR) {
            char said[160] = "";
            tc__append_redacted(said, sizeof said, r->str, r->len > 150 ? 150 : r->len,
                                p->password);
            set_err(p, "%s refused: %s", what, said);
        }
        else
            set_err(p, "%s: unexpected reply", what);
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static redisContext *conn_open(tc__pubsub *p)
{
    tc__sigpipe_refresh();
    redisContext *c = p->unix_socket != NULL
                          ? redisConnectUnixWithTimeout(p->unix_socket, p->connect_tv)
                          : redisConnectWithTimeout(p->host, p->port, p->connect_tv);
    if (c == NULL) {
        set_err(p, "connect: out of memory");
        return NULL;
    }
    if (c->err != 0) {
        set_err(p, "connect failed: %s", c->errstr);
        redisFree(c);
        return NULL;
    }
    atomic_store(&p->conn, c);
    /* Bounds the handshake and every later write; reads wait in poll(). */
    if (redisSetTimeout(c, p->connect_tv) != REDIS_OK) {
        set_err(p, "setting the timeout failed: %s", c->errstr);
        conn_close(p, c);
        return NULL;
    }
    if (p->unix_socket == NULL && p->keepalive && redisEnableKeepAlive(c) != REDIS_OK) {
        set_err(p, "enabling TCP keepalive failed: %s", c->errstr);
        conn_close(p, c);
        return NULL;
    }
    if (p->password != NULL) {
        const char *argv[3];
        size_t lens[3];
        int argc = 0;
        argv[argc] = "AUTH", lens[argc++] = 4;
        if (p->username != NULL)
            argv[argc] = p->username, lens[argc] = strlen(p->username), argc++;
        argv[argc] = p->password, lens[argc] = strlen(p->password), argc++;
        if (handshake(p, c, "AUTH", argc, argv, lens) != 0) {
            conn_close(p, c);
            return NULL;
        }
    }
    if (p->database > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", p->database);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        if (handshake(p, c, "SELECT", 2, argv, lens) != 0) {
            conn_close(p, c);
            return NULL;
        }
    }
    return c;
}

/* Queues one command in hiredis's output buffer. */
static int conn_append(tc__pubsub *p, redisContext *c, const char *cmd, const chan *ch)
{
    const char *argv[2] = {cmd, ch != NULL ? ch->name : NULL};
    size_t lens[2] = {strlen(cmd), ch != NULL ? ch->len : 0};
    atomic_store(&p->conn_busy, 1);
    int rc = redisAppendCommandArgv(c, ch != NULL ? 2 : 1, argv, lens);
    atomic_store(&p->conn_busy, 0);
    return rc == REDIS_OK ? 0 : -1;
}

static int conn_flush(tc__pubsub *p, redisContext *c)
{
    int done = 0, rc = REDIS_OK;
    tc__sigpipe_guard g;
    tc__sigpipe_block(&g);
    atomic_store(&p->conn_busy, 1);
    while (!done && rc == REDIS_OK)
        rc = redisBufferWrite(c, &done);
    atomic_store(&p->conn_busy, 0);
    tc__sigpipe_restore(&g, rc != REDIS_OK);
    return rc == REDIS_OK ? 0 : -1;
}

/* ---- the thread: channels and subscriptions -------------------------------------------------- */

static chan *chan_find(tc__pubsub *p, const char *name, size_t len)
{
    for (chan *ch = atomic_load(&p->chans); ch != NULL; ch = atomic_load(&ch->next))
        if (ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static void chan_unlink(tc__pubsub *p, chan *ch)
{
    _Atomic(chan *) *pp = &p->chans;
    for (chan *x; (x = atomic_load(pp)) != NULL; pp = &x->next) {
        if (x == ch) {
            atomic_store(pp, atomic_load(&ch->next));
            free(ch);
            return;
        }
    }
}

static int ns_prefixed(const tc__pubsub *p, const char *name, size_t len)
{
    return len >= p->ns_len && memcmp(name, p->ns, p->ns_len) == 0;
}

/* Under mu. Frees the dead subscriptions nobody uses any more, attaches the new ones to their
 * channels, appends SUBSCRIBE / UNSUBSCRIBE for the difference to c's output buffer (when
 * connected; *queued says so; the caller flushes it once mu is released: no I/O under mu), and
 * marks the subscriptions whose channel is ON to be told so. -1: hiredis could not append (out
 * of memory): the caller drops the connection. */
static int settle(tc__pubsub *p, redisContext *c, int *queued)
{
    *queued = 0;
    _Atomic(tc__sub *) *pp = &p->subs;
    for (tc__sub *s; (s = atomic_load(pp)) != NULL;) {
        if (s->dead && !s->waiter && p->running != s) {
            atomic_store(pp, atomic_load(&s->next));
            if (s->ch != NULL)
                s->ch->nlive--;
            free(s);
            continue;
        }
        pp = &s->next;
        if (s->dead)
            continue;
        if (s->ch == NULL) {
            chan *ch = chan_find(p, s->name, s->len);
            if (ch == NULL) {
                ch = malloc(sizeof *ch + s->len);
                if (ch == NULL)
                    continue; /* stays unattached: tried again on the next pass */
                ch->state = C_OFF;
                ch->nlive = 0;
                ch->len = s->len;
                memcpy(ch->name, s->name, s->len);
                atomic_init(&ch->next, atomic_load(&p->chans));
                atomic_store(&p->chans, ch);
            }
            s->ch = ch;
            ch->nlive++;
        }
    }
    for (chan *ch = atomic_load(&p->chans), *next; ch != NULL; ch = next) {
        next = atomic_load(&ch->next);
        if (c == NULL)
            continue;
        if (ch->state == C_OFF && ch->nlive > 0) {
            if (conn_append(p, c, "SUBSCRIBE", ch) != 0)
                return -1;
            ch->state = C_SUBSCRIBING;
            *queued = 1;
        } else if (ch->state == C_ON && ch->nlive == 0) {
            if (conn_append(p, c, "UNSUBSCRIBE", ch) != 0)
                return -1;
            ch->state = C_UNSUBSCRIBING;
            *queued = 1;
        } else if (ch->state == C_OFF && ch->nlive == 0) {
            chan_unlink(p, ch);
        }
    }
    if (c == NULL) {
        /* Not connected: channels with nobody left need no UNSUBSCRIBE. */
        for (chan *ch = atomic_load(&p->chans), *next; ch != NULL; ch = next) {
            next = atomic_load(&ch->next);
            if (ch->nlive == 0)
                chan_unlink(p, ch);
        }
    }
    for (tc__sub *s = atomic_load(&p->subs); s != NULL; s = atomic_load(&s->next))
        if (!s->dead && s->ch != NULL && s->ch->state == C_ON && s->up != 1)
            s->want_up = 1;
    return 0;
}

/* Under mu, which it releases around each callback: passes every pending link change, and
 * answers the waiters whose subscription is up. */
static void notify(tc__pubsub *p)
{
    for (tc__sub *s = atomic_load(&p->subs); s != NULL;) {
        if (s->dead || s->want_up < 0 || s->want_up == s->up) {
            if (!s->dead && s->waiter && s->up == 1 && s->result == 0) {
                s->result = 1;
                pthread_cond_broadcast(&p->cv);
            }
            s->want_up = -1;
            s = atomic_load(&s->next);
            continue;
        }
        int up = s->want_up;
        s->up = up;
        s->want_up = -1;
        if (s->on_link != NULL) {
            p->running = s;
            pthread_mutex_unlock(&p->mu);
            s->on_link(s->ctx, up);
            pthread_mutex_lock(&p->mu);
            p->running = NULL;
            pthread_cond_broadcast(&p->cv);
        }
        /* s stays valid (only this thread frees), and so does s->next; look at s again for
         * its waiter. */
    }
}

/* Under mu: the connection is gone (or never came). Every channel is OFF; a subscription that
 * was up is told it is down once; a waiting subscribe fails (nothing subscribed); one that
 * never was up and nobody waits for hears it is down (it is not yet subscribed). */
static void link_down(tc__pubsub *p)
{
    for (chan *ch = atomic_load(&p->chans); ch != NULL; ch = atomic_load(&ch->next))
        ch->state = C_OFF;
    for (tc__sub *s = atomic_load(&p->subs); s != NULL; s = atomic_load(&s->next)) {
        if (s->dead)
            continue;
        if (s->waiter) {
            if (s->result == 0) {
                s->result = TC_EREDIS;
                s->dead = 1;
                pthread_cond_broadcast(&p->cv);
            }
            continue;
        }
        if (s->up != 0)
            s->want_up = 0;
    }
}

static int str_is(const redisReply *r, const char *s)
{
    size_t n = strlen(s);
    return (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->len == n &&
           strncasecmp(r->str, s, n) == 0;
}

static int is_str(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING;
}

/* A message: to each live subscription of the channel that is up, one after another, without
 * mu (released around each call). */
static void deliver(tc__pubsub *p, const redisReply *chn, const redisReply *msg)
{
    if (!ns_prefixed(p, chn->str, chn->len))
        return;
    pthread_mutex_lock(&p->mu);
    chan *ch = chan_find(p, chn->str, chn->len);
    if (ch != NULL && ch->state == C_ON) {
        for (tc__sub *s = atomic_load(&p->subs); s != NULL; s = atomic_load(&s->next)) {
            if (s->dead || s->ch != ch || s->up != 1)
                continue;
            p->running = s;
            pthread_mutex_unlock(&p->mu);
            s->fn(s->ctx, chn->str + p->ns_len, chn->len - p->ns_len, msg->str, msg->len);
            pthread_mutex_lock(&p->mu);
            p->running = NULL;
            pthread_cond_broadcast(&p->cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* One reply. 0, or -1 for a protocol error or an error reply (the connection is dropped). */
static int on_reply(tc__pubsub *p, redisContext *c, redisReply *r)
{
    if (r->type == REDIS_REPLY_STATUS && str_is(r, "PONG"))
        return 0; /* PING outside subscribed mode, or RESP3 */
    if (r->type == REDIS_REPLY_ERROR) {
        set_err(p, "the server replied: %.120s", r->str);
        return -1;
    }
    int agg = r->type == REDIS_REPLY_ARRAY;
#ifdef REDIS_REPLY_PUSH /* hiredis >= 1.0: RESP3 delivers pub/sub messages as push replies */
    agg = agg || r->type == REDIS_REPLY_PUSH;
#endif
    if (!agg || r->elements < 2 || r->element[0] == NULL ||
        !is_str(r->element[0]))
        goto bad;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i] == NULL)
            goto bad;
    redisReply **e = r->element;
    if (str_is(e[0], "message")) {
        if (r->elements != 3 || !is_str(e[1]) || !is_str(e[2]))
            goto bad;
        deliver(p, e[1], e[2]);
        return 0;
    }
    if (str_is(e[0], "pong")) {
        if (r->elements != 2 || !is_str(e[1]))
            goto bad;
        return 0;
    }
    if (str_is(e[0], "subscribe") || str_is(e[0], "unsubscribe")) {
        if (r->elements != 3 || e[2]->type != REDIS_REPLY_INTEGER)
            goto bad;
        if (e[1]->type == REDIS_REPLY_NIL)
            return 0; /* an UNSUBSCRIBE without channels we never send */
        if (!is_str(e[1]))
            goto bad;
        int sub = str_is(e[0], "subscribe");
        pthread_mutex_lock(&p->mu);
        chan *ch = chan_find(p, e[1]->str, e[1]->len);
        int ok = ch != NULL && ch->state == (sub ? C_SUBSCRIBING : C_UNSUBSCRIBING);
        int queued = 0, rc = 0;
        if (ok) {
            /* At once, before the next reply: a message right behind the confirmation is for
             * a subscription that on_link(1) already announced. */
            ch->state = sub ? C_ON : C_OFF;
            rc = settle(p, c, &queued);
            notify(p);
        }
        pthread_mutex_unlock(&p->mu);
        if (!ok)
            goto bad; /* a confirmation of something we did not ask */
        if (rc == 0 && queued)
            rc = conn_flush(p, c);
        if (rc != 0)
            set_err(p, "write failed: %s", c->errstr);
        return rc;
    }
    /* Pattern and shard messages and their confirmations: never asked for, harmless. */
    if (str_is(e[0], "pmessage") || str_is(e[0], "smessage") || str_is(e[0], "psubscribe") ||
        str_is(e[0], "punsubscribe") || str_is(e[0], "ssubscribe") ||
        str_is(e[0], "sunsubscribe"))
        return 0;
bad:
    set_err(p, "protocol error: an unexpected reply");
    return -1;
}

/* ---- the thread's loop ----------------------------------------------------------------------- */

static int has_live(tc__pubsub *p, int *any_waiter)
{
    int live = 0;
    *any_waiter = 0;
    for (tc__sub *s = atomic_load(&p->subs); s != NULL; s = atomic_load(&s->next)) {
        if (!s->dead)
            live = 1;
        if (!s->dead && s->waiter && s->result == 0)
            *any_waiter = 1;
    }
    return live;
}

/* Waits on the pipe (and fd when >= 0) for up to ms (-1: no limit). Returns the revents of fd. */
static short wait_io(tc__pubsub *p, int fd, int64_t ms)
{
    struct pollfd pf[2] = {{p->wake_rd, POLLIN, 0}, {fd, POLLIN, 0}};
    int timeout = ms < 0 ? -1 : ms > 60000 ? 60000 : (int)ms;
    int n = poll(pf, fd >= 0 ? 2 : 1, timeout);
    if (n <= 0 || fd < 0)
        return 0;
    return pf[1].revents;
}

static int64_t next_backoff(const tc__pubsub *p, int64_t cur)
{
    /* A zero interval would reconnect in a tight loop against a server that is down. */
    int64_t lo = p->retry_interval_ms > 10 ? p->retry_interval_ms : 10;
    int64_t hi = p->retry_max_ms > lo ? p->retry_max_ms : lo;
    if (cur <= 0)
        return lo;
    return cur >= hi / 2 ? hi : cur * 2;
}

static void *pubsub_main(void *arg)
{
    tc__pubsub *p = arg;
    redisContext *c = NULL;
    int64_t backoff = 0, retry_at = 0, last_rx = 0, last_ping = 0;
    const int64_t pi = p->ping_interval_ms;

    pthread_mutex_lock(&p->mu);
    p->thread_up = 1;
    pthread_cond_broadcast(&p->cv);
    for (;;) {
        drain_wake(p);
        if (p->stop)
            break;
        int any_waiter;
        int live = has_live(p, &any_waiter);
        if (c == NULL && live && (any_waiter || p->connect_now || tc__now_ms() >= retry_at)) {
            p->connect_now = 0;
            pthread_mutex_unlock(&p->mu);
            c = conn_open(p);
            pthread_mutex_lock(&p->mu);
            if (c == NULL) {
                backoff = next_backoff(p, backoff);
                retry_at = tc__now_ms() + backoff;
                link_down(p);
            } else {
                backoff = 0;
                last_rx = last_ping = tc__now_ms();
            }
        } else if (c != NULL && !live) {
            /* Nobody subscribed: no connection to keep alive. */
            conn_close(p, c);
            c = NULL;
            link_down(p);
        }
        int queued = 0;
        int failed = settle(p, c, &queued) != 0;
        notify(p);
        if (p->stop)
            break;

        int64_t now = tc__now_ms(), wait_ms = -1;
        if (c == NULL) {
            live = has_live(p, &any_waiter);
            if (!live)
                p->connect_now = 0;
            else if (any_waiter || p->connect_now)
                continue; /* connect now */
            else
                wait_ms = retry_at > now ? retry_at - now : 0;
        } else {
            wait_ms = -1;
            if (pi > 0) {
                int64_t due = last_ping > last_rx ? last_rx + 2 * pi : last_rx + pi;
                wait_ms = due - now;
                if (wait_ms < 1)
                    wait_ms = 1;
            }
        }
        pthread_mutex_unlock(&p->mu);

        if (c != NULL && !failed && queued && conn_flush(p, c) != 0) {
            set_err(p, "write failed: %s", c->errstr);
            failed = 1;
        }
        if (c != NULL && !failed) {
            short ev = wait_io(p, c->fd, wait_ms);
            if (ev != 0) {
                atomic_store(&p->conn_busy, 1);
                int rc = redisBufferRead(c);
                atomic_store(&p->conn_busy, 0);
                if (rc != REDIS_OK) {
                    set_err(p, "connection lost: %s", c->errstr);
                    failed = 1;
                }
                while (!failed) {
                    void *reply = NULL;
                    atomic_store(&p->conn_busy, 1);
                    rc = redisGetReplyFromReader(c, &reply);
                    atomic_store(&p->conn_busy, 0);
                    if (rc != REDIS_OK) {
                        set_err(p, "protocol error: %s", c->errstr);
                        failed = 1;
                    }
                    if (reply == NULL)
                        break;
                    last_rx = tc__now_ms();
                    if (on_reply(p, c, reply) != 0)
                        failed = 1;
                    freeReplyObject(reply);
                }
            }
            now = tc__now_ms();
            if (!failed && pi > 0) {
                if (now - last_rx >= 2 * pi) {
                    set_err(p, "no reply to PING in %lld ms", (long long)(2 * pi));
                    failed = 1;
                } else if (now - last_rx >= pi && last_ping <= last_rx) {
                    last_ping = now;
                    if (conn_append(p, c, "PING", NULL) != 0 || conn_flush(p, c) != 0) {
                        set_err(p, "write failed: %s", c->errstr);
                        failed = 1;
                    }
                }
            }
        } else if (c == NULL) {
            wait_io(p, -1, wait_ms);
        }

        pthread_mutex_lock(&p->mu);
        if (failed) {
            conn_close(p, c);
            c = NULL;
            backoff = next_backoff(p, backoff);
            retry_at = tc__now_ms() + backoff;
            link_down(p);
        }
    }
    pthread_mutex_unlock(&p->mu);
    conn_close(p, c);
    return NULL;
}

/* Under mu. */
static int start_thread(tc__pubsub *p)
{
    if (p->started)
        return TC_OK;
    if (p->wake_rd < 0)
        return tc__err(p->owner, TC_ENOMEM, "pubsub: no self-pipe for the subscriber thread");
    /* The thread takes no signals: they belong to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->thread, NULL, pubsub_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return tc__err(p->owner, TC_ENOMEM, "pubsub: cannot start the subscriber thread: %s",
                       strerror(rc));
    p->started = 1;
    /* Returns once the thread runs its loop, so that its start-up (which allocates in the C
     * library and sanitizer runtimes) never overlaps a fork() the caller makes next: GCC 12's
     * AddressSanitizer does not lock its allocator around fork() (see edge.c clock_start). */
    while (!p->thread_up)
        pthread_cond_wait(&p->cv, &p->mu);
    return TC_OK;
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
        open_pipe(fds) != 0) {
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
    wake(p);
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
    conn_close(p, atomic_load(&p->conn)); /* a thread that never ran: nothing */
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
    rc = start_thread(p);
    if (rc != TC_OK) {
        pthread_mutex_unlock(&p->mu);
        free(s);
        return rc;
    }
    atomic_init(&s->next, atomic_load(&p->subs));
    atomic_store(&p->subs, s);
    if (wait)
        p->connect_now = 1;
    wake(p);
    if (!wait) {
        pthread_mutex_unlock(&p->mu);
        *out = s;
        return TC_OK;
    }
    /* The connect, AUTH, SELECT and SUBSCRIBE each take at most the connect timeout (the
     * socket's timeout); the margin covers a busy machine. */
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
    s->waiter = 0;
    rc = s->result == 1 ? TC_OK : s->result;
    char why[sizeof p->last_err];
    memcpy(why, p->last_err, sizeof why);
    if (rc != TC_OK)
        wake(p); /* the thread frees it */
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
        wake(p);
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
    if (has_live(p, &waiter))
        rc = start_thread(p);
    pthread_mutex_unlock(&p->mu);
    return rc;
}
