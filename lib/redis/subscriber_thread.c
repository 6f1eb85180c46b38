/*
 * subscriber_thread.c - the subscriber thread of subscriber.c: one per subscriber object,
 * started on the first subscribe. It owns the connection: it connects (AUTH, SELECT) when a live
 * subscription wants the link, settles each channel's SUBSCRIBE and UNSUBSCRIBE, hands messages
 * to their callbacks, PINGs an idle link and calls it lost when a PING goes unanswered, and
 * reconnects with backoff, telling each subscription when its link went down or up.
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

int tc__ps_open_pipe(int fds[2])
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
void tc__ps_wake(tc__pubsub *p)
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

void tc__ps_conn_close(tc__pubsub *p, redisContext *c)
{
    if (c == NULL)
        return;
    atomic_store(&p->track_id, 0);
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

#define TRACK_CHANNEL "__redis__:invalidate"

/* The tracking handshake (tc__pubsub_track): CLIENT ID, then SUBSCRIBE to the invalidation
 * channel, before any channel of ours, so that the link is reported up only once invalidations
 * arrive. A server that refuses either (before Redis 6 there is no tracking) leaves tracking
 * off (id 0): slower (only the bus evicts), never wrong. -1: the connection broke. */
static int track_handshake(tc__pubsub *p, redisContext *c)
{
    const char *idv[2] = {"CLIENT", "ID"};
    const char *subv[2] = {"SUBSCRIBE", TRACK_CHANNEL};
    size_t idl[2] = {6, 2}, subl[2] = {9, sizeof TRACK_CHANNEL - 1};
    tc__sigpipe_guard g;
    tc__sigpipe_block(&g);
    atomic_store(&p->conn_busy, 1);
    redisReply *id = redisCommandArgv(c, 2, idv, idl);
    redisReply *sr = id != NULL && id->type == REDIS_REPLY_INTEGER && id->integer > 0
                         ? redisCommandArgv(c, 2, subv, subl)
                         : NULL;
    atomic_store(&p->conn_busy, 0);
    tc__sigpipe_restore(&g, c->err != 0);
    int ok = sr != NULL && sr->type == REDIS_REPLY_ARRAY && sr->elements == 3;
    if (ok)
        atomic_store(&p->track_id, id->integer);
    if (id != NULL)
        freeReplyObject(id);
    if (sr != NULL)
        freeReplyObject(sr);
    if (c->err != 0) {
        set_err(p, "tracking handshake failed: %s", c->errstr);
        return -1;
    }
    return 0;
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
        tc__ps_conn_close(p, c);
        return NULL;
    }
    if (p->unix_socket == NULL && p->keepalive && redisEnableKeepAlive(c) != REDIS_OK) {
        set_err(p, "enabling TCP keepalive failed: %s", c->errstr);
        tc__ps_conn_close(p, c);
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
            tc__ps_conn_close(p, c);
            return NULL;
        }
    }
    if (p->database > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", p->database);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        if (handshake(p, c, "SELECT", 2, argv, lens) != 0) {
            tc__ps_conn_close(p, c);
            return NULL;
        }
    }
    if (p->track_fn != NULL && track_handshake(p, c) != 0) {
        tc__ps_conn_close(p, c);
        return NULL;
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

/* An invalidation of CLIENT TRACKING: an array of key names, or nil for "every key". */
static int on_tracked(tc__pubsub *p, const redisReply *keys)
{
    if (p->track_fn == NULL)
        return 0; /* never asked for: a foreign REDIRECT to this connection */
    if (keys->type == REDIS_REPLY_NIL) {
        p->track_fn(p->track_ctx, NULL, 0);
        return 0;
    }
    if (keys->type != REDIS_REPLY_ARRAY) {
        set_err(p, "protocol error: a tracking message that is not a list of keys");
        return -1;
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (k == NULL || !is_str(k)) {
            set_err(p, "protocol error: a tracking message with a key that is not a string");
            return -1;
        }
        if (k->len > p->ns_len && ns_prefixed(p, k->str, k->len))
            p->track_fn(p->track_ctx, k->str + p->ns_len, k->len - p->ns_len);
    }
    return 0;
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
    if (str_is(e[0], "message") && r->elements == 3 && is_str(e[1]) &&
        e[1]->len == sizeof TRACK_CHANNEL - 1 && memcmp(e[1]->str, TRACK_CHANNEL, e[1]->len) == 0)
        return on_tracked(p, e[2]);
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

int tc__ps_has_live(tc__pubsub *p, int *any_waiter)
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

/* What the thread's loop carries from one round to the next. */
typedef struct loop {
    tc__pubsub *p;
    redisContext *c; /* NULL while down */
    int64_t backoff, retry_at, last_rx, last_ping;
    int queued, failed; /* this round: commands appended, the link failed */
} loop;

/* Under mu: connects when a live subscription wants the link (at once for a waiter or a
 * resume, else when the backoff ends), or drops a link nobody needs any more. */
static void loop_connect(loop *l)
{
    tc__pubsub *p = l->p;
    int any_waiter;
    int live = tc__ps_has_live(p, &any_waiter);
    if (l->c == NULL && live && (any_waiter || p->connect_now || tc__now_ms() >= l->retry_at)) {
        p->connect_now = 0;
        pthread_mutex_unlock(&p->mu);
        l->c = conn_open(p);
        pthread_mutex_lock(&p->mu);
        if (l->c == NULL) {
            l->backoff = next_backoff(p, l->backoff);
            l->retry_at = tc__now_ms() + l->backoff;
            link_down(p);
        } else {
            l->backoff = 0;
            l->last_rx = l->last_ping = tc__now_ms();
        }
    } else if (l->c != NULL && !live) {
        /* Nobody subscribed: no connection to keep alive. */
        tc__ps_conn_close(p, l->c);
        l->c = NULL;
        link_down(p);
    }
}

/* Under mu: how long to wait for I/O (-1: until woken), in *wait_ms; 0 if the loop should go
 * round at once instead (down, and a waiter or a resume wants the link now). */
static int loop_wait(loop *l, int64_t *wait_ms)
{
    tc__pubsub *p = l->p;
    int64_t now = tc__now_ms(), pi = p->ping_interval_ms;
    *wait_ms = -1;
    if (l->c == NULL) {
        int any_waiter;
        int live = tc__ps_has_live(p, &any_waiter);
        if (!live)
            p->connect_now = 0;
        else if (any_waiter || p->connect_now)
            return 0;
        else
            *wait_ms = l->retry_at > now ? l->retry_at - now : 0;
    } else if (pi > 0) {
        int64_t due = l->last_ping > l->last_rx ? l->last_rx + 2 * pi : l->last_rx + pi;
        *wait_ms = due - now < 1 ? 1 : due - now;
    }
    return 1;
}

/* Without mu: every reply that arrived, handed on (on_reply). */
static void loop_read(loop *l)
{
    tc__pubsub *p = l->p;
    atomic_store(&p->conn_busy, 1);
    int rc = redisBufferRead(l->c);
    atomic_store(&p->conn_busy, 0);
    if (rc != REDIS_OK) {
        set_err(p, "connection lost: %s", l->c->errstr);
        l->failed = 1;
    }
    while (!l->failed) {
        void *reply = NULL;
        atomic_store(&p->conn_busy, 1);
        rc = redisGetReplyFromReader(l->c, &reply);
        atomic_store(&p->conn_busy, 0);
        if (rc != REDIS_OK) {
            set_err(p, "protocol error: %s", l->c->errstr);
            l->failed = 1;
        }
        if (reply == NULL)
            break;
        l->last_rx = tc__now_ms();
        if (on_reply(p, l->c, reply) != 0)
            l->failed = 1;
        freeReplyObject(reply);
    }
}

/* Without mu: the link's liveness. Quiet for an interval: a PING; quiet for two: lost. */
static void loop_ping(loop *l)
{
    tc__pubsub *p = l->p;
    int64_t now = tc__now_ms(), pi = p->ping_interval_ms;
    if (l->failed || pi <= 0)
        return;
    if (now - l->last_rx >= 2 * pi) {
        set_err(p, "no reply to PING in %lld ms", (long long)(2 * pi));
        l->failed = 1;
    } else if (now - l->last_rx >= pi && l->last_ping <= l->last_rx) {
        l->last_ping = now;
        if (conn_append(p, l->c, "PING", NULL) != 0 || conn_flush(p, l->c) != 0) {
            set_err(p, "write failed: %s", l->c->errstr);
            l->failed = 1;
        }
    }
}

/* Without mu: what settle queued goes out, then the wait for replies (or, down, for the
 * backoff or a wake-up). */
static void loop_io(loop *l, int64_t wait_ms)
{
    tc__pubsub *p = l->p;
    if (l->c == NULL) {
        wait_io(p, -1, wait_ms);
        return;
    }
    if (!l->failed && l->queued && conn_flush(p, l->c) != 0) {
        set_err(p, "write failed: %s", l->c->errstr);
        l->failed = 1;
    }
    if (l->failed)
        return;
    if (wait_io(p, l->c->fd, wait_ms) != 0)
        loop_read(l);
    loop_ping(l);
}

/* The subscriber thread: under mu but for the I/O, one round per wake-up, reply or timeout. */
static void *pubsub_main(void *arg)
{
    loop l = {.p = arg};
    tc__pubsub *p = l.p;
    pthread_mutex_lock(&p->mu);
    p->thread_up = 1;
    pthread_cond_broadcast(&p->cv);
    for (;;) {
        drain_wake(p);
        if (p->stop)
            break;
        loop_connect(&l);
        l.queued = 0;
        l.failed = settle(p, l.c, &l.queued) != 0;
        notify(p);
        if (p->stop)
            break;
        int64_t wait_ms;
        if (!loop_wait(&l, &wait_ms))
            continue; /* connect now */
        pthread_mutex_unlock(&p->mu);
        loop_io(&l, wait_ms);
        pthread_mutex_lock(&p->mu);
        if (l.failed) {
            tc__ps_conn_close(p, l.c);
            l.c = NULL;
            l.backoff = next_backoff(p, l.backoff);
            l.retry_at = tc__now_ms() + l.backoff;
            link_down(p);
        }
    }
    pthread_mutex_unlock(&p->mu);
    tc__ps_conn_close(p, l.c);
    return NULL;
}

/* Under mu. */
int tc__ps_start_thread(tc__pubsub *p)
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
