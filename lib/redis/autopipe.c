/*
 * autopipe.c - auto-pipelining on one shared connection, leader-follower, without a lock.
 *
 * A caller pushes its command onto the pipeline's queue (a lock-free stack), then either takes
 * the lead (one compare-and-swap) or sleeps on its call's state word. The leader, in rounds,
 * writes everything queued in one buffer, then reads the replies of the batch written the round
 * before and wakes their callers: one batch is on the wire while the last one's replies come
 * back. No thread of its own and no timer: a caller alone leads a batch of one and pays a push,
 * a CAS and a release over a bare command. Once its own call is answered, a leader leads a few
 * rounds more (ROUNDS) and then hands the lead to a caller of the batch in flight, or of the
 * queue, so that no caller serves the others for long.
 *
 * Why no mutex: on a machine where a context switch is the dominant cost (this one runs
 * paravirtualized), a caller woken with its answer that must then take a lock the leader holds
 * sleeps a second time. A woken caller here reads its answer and returns.
 *
 * The lead is a flag taken by CAS and given back by a store; what only the leader touches
 * (the connection, the batch in flight, the buffer) passes with it. A leader that gives the
 * lead back looks at the queue once more after its store, and a caller that could not take
 * the lead pushed before it tried, so a command is never left queued with nobody leading
 * (both sides sequentially consistent).
 *
 * Failures. The replies of a connection arrive in the order written, so a reply that never
 * comes (a timeout, a closed connection) ends every command not answered yet on it, the batch
 * in flight and the one written after it: they fail, each with its own error; the connection
 * is closed, so nothing of it reaches a later batch (a late reply on a kept connection would be
 * taken for the next command's). A command answered before the failure keeps its reply. A
 * closed or reset connection sends its unanswered commands back to their callers to be sent
 * once more, in a later batch, on a new connection (TC__AP_RETRY, the retry the
 * single-connection path makes); a timeout is not retried, and trips the breaker once for all
 * of them. A failure is described by the leader, which saw it, and the message is set on each
 * caller's own thread when it wakes (messages are per thread).
 *
 * Fork. In a child, the queue holds calls of threads that do not exist there, and a leader of
 * the parent may have held the lead: the first call in the child starts an empty pipeline
 * (check_fork), and the shared connection is the parent's, which redis_conn.c closes in the
 * child on its next use.
 */
#include "redis/autopipe.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct call {
    const char *what;
    int argc;
    const char *const *argv;
    const size_t *lens;
    redisReply *reply;
    int rc;          /* TC_OK, TC__AP_RETRY, or a TC_E* code */
    char msg[320];   /* when rc is not TC_OK */
    /* CALL_WAITING until a leader answers it (CALL_DONE) or hands it the lead (CALL_LEAD);
     * a futex word, so that a caller woken with its answer needs no lock to take it. */
    atomic_int state;
    struct call *next;
} call;

enum { CALL_WAITING, CALL_LEAD, CALL_DONE };

/* The caller sleeps on its call's state word while it is CALL_WAITING. A wake that comes after
 * the caller left (it saw CALL_DONE before the wake) lands on a stack word the kernel only
 * compares, or on no mapping at all: harmless, as the caller loops on the word. */
static void state_wait(atomic_int *w)
{
    while (atomic_load_explicit(w, memory_order_acquire) == CALL_WAITING)
        (void)syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, CALL_WAITING, NULL, NULL, 0);
}

static void state_wake(atomic_int *w)
{
    (void)syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

struct tc__ap {
    _Atomic(call *) queue; /* pushed, not taken yet: newest first */
    atomic_int leading;    /* a thread leads */
    /* The leader's, passed on with the lead: the batch written, its replies not read yet, and
     * the shared connection (NULL when not held). */
    call *inflight;
    redisContext *conn;
    int io_failed; /* this leader's I/O failed (for its SIGPIPE guard) */
    atomic_uint gen;   /* the fork generation the state belongs to */
    atomic_uint tag;   /* the repair's lock in a child */
    tc__rconns *cs;
    const void *owner;
    char *buf; /* the leader's: the batch as RESP */
    size_t cap;
    tc__stats *stats; /* batches and batched */
};

/* A batch's buffer is kept for the next one, unless a large value made it large. */
#define KEEP_BUF_BYTES (256u * 1024u)

int tc__ap_new(tc__ap **out, tc__rconns *cs, const void *owner, tc__stats *stats)
{
    *out = NULL;
    tc__ap *ap = calloc(1, sizeof *ap);
    if (ap == NULL)
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    atomic_init(&ap->queue, NULL);
    atomic_init(&ap->leading, 0);
    atomic_init(&ap->gen, tc__fork_generation());
    atomic_init(&ap->tag, 0);
    ap->stats = stats;
    ap->cs = cs;
    ap->owner = owner;
    *out = ap;
    return TC_OK;
}

void tc__ap_free(tc__ap *ap)
{
    if (ap == NULL)
        return;
    free(ap->buf);
    free(ap);
}

static void check_fork(tc__ap *ap)
{
    unsigned g = tc__fork_generation();
    if (atomic_load_explicit(&ap->gen, memory_order_acquire) == g)
        return;
    tc__tag_lock(&ap->tag, g);
    if (atomic_load_explicit(&ap->gen, memory_order_relaxed) != g) {
        atomic_store(&ap->queue, NULL); /* the parent's callers: not ours to answer */
        ap->inflight = NULL;
        ap->conn = NULL; /* the parent's: redis_conn.c closes the child's copy */
        atomic_store(&ap->leading, 0);
        atomic_store_explicit(&ap->gen, g, memory_order_release);
    }
    tc__tag_unlock(&ap->tag);
}

/* Every call of the batch from k on ends with rc and msg. */
static void fail_from(call *k, int rc, const char *msg)
{
    for (; k != NULL; k = k->next) {
        k->rc = rc;
        snprintf(k->msg, sizeof k->msg, "%s", msg);
    }
}

/* The calls from k on, unanswered when c broke: each told how, in its own words. */
static void broke_from(tc__ap *ap, call *k, const redisContext *c)
{
    int rc = TC_EREDIS;
    if (c->err == REDIS_ERR_OOM)
        rc = TC_ENOMEM;
    else if (c->err == REDIS_ERR_PROTOCOL)
        rc = TC_EPROTO;
    else if ((c->err == REDIS_ERR_IO || c->err == REDIS_ERR_EOF) && !tc__redis_ctx_timed_out(c))
        rc = TC__AP_RETRY; /* closed or reset by the server */
    for (; k != NULL; k = k->next) {
        k->rc = rc;
        snprintf(k->msg, sizeof k->msg, "redis %s: %s: %s", tc__rconns_where(ap->cs), k->what,
                 c->err != 0 ? c->errstr : "no reply");
    }
}

/* The batch's RESP in ap->buf: len bytes. 0, or -1 out of memory. */
static int format_batch(tc__ap *ap, call *batch, size_t *len)
{
    size_t need = 0;
    for (call *k = batch; k != NULL; k = k->next)
        need += tc__resp_size(k->argc, k->lens);
    if (need > ap->cap) {
        char *b = realloc(ap->buf, need);
        if (b == NULL)
            return -1;
        ap->buf = b;
        ap->cap = need;
    }
    char *p = ap->buf;
    for (call *k = batch; k != NULL; k = k->next)
        p = tc__resp_write(p, k->argc, k->argv, k->lens);
    *len = need;
    return 0;
}

/* Ends the leader's use of the connection: closed if it broke. */
static void drop_conn(tc__ap *ap, int broken)
{
    if (ap->conn == NULL)
        return;
    ap->io_failed |= broken;
    tc__rconns_release_shared(ap->cs, broken); /* the context is invalid from here if broken */
    ap->conn = NULL;
}

/* The connection for the leader's next write, opened or reused. TC_OK or the connect's code,
 * its message set on this thread. */
static int hold_conn(tc__ap *ap)
{
    if (ap->conn != NULL)
        return TC_OK;
    return tc__rconns_acquire_shared(&ap->conn, ap->cs);
}

/* The connection broke under calls written on it (the batch whose replies were being read, and
 * the one written after it): each is told how, the connection is closed, and a timeout trips
 * the breaker once for them all. */
static void conn_broke(tc__ap *ap, call *pending, call *next)
{
    redisContext *c = ap->conn;
    broke_from(ap, pending, c);
    broke_from(ap, next, c);
    if (tc__redis_ctx_timed_out(c))
        tc__rconns_timed_out(ap->cs, c->errstr);
    drop_conn(ap, 1);
}

/* Writes a batch in one append and one flush, without waiting for its replies. 0, or -1 with
 * the batch's calls failed (and the connection closed if it broke: then pending fails too). */
static int send_batch(tc__ap *ap, call *batch, call *pending)
{
    int rc = hold_conn(ap);
    if (rc != TC_OK) { /* the connect's own message, from this thread, for every caller */
        fail_from(batch, rc, tc_errmsg((const tc_cache *)ap->owner));
        return -1;
    }
    size_t len = 0;
    if (format_batch(ap, batch, &len) != 0) {
        fail_from(batch, TC_ENOMEM, "redis: out of memory"); /* nothing sent */
        return -1;
    }
    redisContext *c = ap->conn;
    int done = 0;
    if (redisAppendFormattedCommand(c, ap->buf, len) == REDIS_OK) {
        while (!done && redisBufferWrite(c, &done) == REDIS_OK) {
        }
    }
    if (ap->cap > KEEP_BUF_BYTES) {
        free(ap->buf);
        ap->buf = NULL;
        ap->cap = 0;
    }
    if (!done) {
        conn_broke(ap, pending, batch);
        return -1;
    }
    TC__INC(ap->stats->batches);
    return 0;
}

/* Reads a written batch's replies, in order, into its calls. On a failure the calls not
 * answered, and the batch written after it (next), fail. */
static void recv_batch(tc__ap *ap, call *batch, call *next)
{
    size_t n = 0;
    call *k = batch;
    for (; k != NULL; k = k->next, n++) {
        void *rep = NULL;
        if (redisGetReply(ap->conn, &rep) != REDIS_OK || rep == NULL)
            break;
        k->reply = rep;
        k->rc = TC_OK;
    }
    atomic_fetch_add_explicit(&ap->stats->batched, (long long)n, memory_order_relaxed);
    if (k != NULL)
        conn_broke(ap, k, next);
}

/* Every call of a batch answered: each caller woken to take its result. A caller's call lives
 * on its stack until it sees CALL_DONE, so next is read first, and only the wake (on the
 * word's address) comes after the store. */
static void complete(call *batch)
{
    for (call *k = batch, *next; k != NULL; k = next) {
        next = k->next;
        atomic_store_explicit(&k->state, CALL_DONE, memory_order_release);
        state_wake(&k->state);
    }
}

/* The queue taken whole, oldest first. */
static call *take_queue(tc__ap *ap)
{
    call *lifo = atomic_exchange(&ap->queue, NULL), *fifo = NULL;
    while (lifo != NULL) {
        call *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    return fifo;
}

/* One round: what is queued written, then the replies of the batch written the round before
 * read, its callers woken. 0 when there was nothing to do. */
static int round_trip(tc__ap *ap)
{
    call *next = take_queue(ap), *pending = ap->inflight;
    ap->inflight = NULL;
    if (next == NULL && pending == NULL)
        return 0;
    int sent = next != NULL && send_batch(ap, next, pending) == 0;
    if (pending != NULL && ap->conn != NULL)
        recv_batch(ap, pending, sent ? next : NULL);
    if (sent && ap->conn == NULL)
        sent = 0; /* the read broke the connection: next failed with it */
    if (pending != NULL)
        complete(pending);
    if (sent)
        ap->inflight = next;
    else if (next != NULL)
        complete(next);
    return 1;
}

/* Leads until nothing is queued or in flight, or for ROUNDS rounds once its own call is
 * answered. Then the lead is handed to a caller of the batch in flight, or of the queue (its
 * call is unanswered, so alive, until a leader answers it, and none can before the lead is
 * given back: the token goes first), or, with nothing left, given back and the queue looked at
 * once more. */
#define ROUNDS 4

static void lead(tc__ap *ap, call *me)
{
    /* SIGPIPE is blocked around this thread's I/O (redis_conn.h), for its own lead only: a
     * signal mask is the thread's. */
    tc__sigpipe_guard guard;
    tc__sigpipe_block(&guard);
    ap->io_failed = 0;
    for (;;) {
        int rounds = 0;
        while (round_trip(ap)) {
            if (atomic_load_explicit(&me->state, memory_order_relaxed) == CALL_DONE &&
                ++rounds >= ROUNDS)
                break;
        }
        call *heir = ap->inflight != NULL ? ap->inflight : atomic_load(&ap->queue);
        if (heir == NULL || heir == me)
            drop_conn(ap, 0); /* the next leader acquires it again */
        int failed = ap->io_failed;
        if (heir != NULL && heir != me) {
            int waiting = CALL_WAITING;
            int token = atomic_compare_exchange_strong(&heir->state, &waiting, CALL_LEAD);
            atomic_store(&ap->leading, 0);
            if (token)
                state_wake(&heir->state);
            tc__sigpipe_restore(&guard, failed);
            return;
        }
        atomic_store(&ap->leading, 0);
        int expect = 0;
        if (atomic_load(&ap->queue) == NULL ||
            !atomic_compare_exchange_strong(&ap->leading, &expect, 1)) {
            tc__sigpipe_restore(&guard, failed);
            return;
        }
        /* A caller pushed after the last take and lost the lead to us: serve it. */
    }
}

int tc__ap_command(tc__ap *ap, const char *what, int argc, const char *const *argv,
                   const size_t *lens, redisReply **out)
{
    *out = NULL;
    check_fork(ap);
    call me = {.what = what, .argc = argc, .argv = argv, .lens = lens};
    atomic_init(&me.state, CALL_WAITING);
    call *top = atomic_load(&ap->queue);
    do
        me.next = top;
    while (!atomic_compare_exchange_weak(&ap->queue, &top, &me));
    for (;;) {
        int expect = 0;
        if (atomic_load_explicit(&me.state, memory_order_acquire) != CALL_DONE &&
            atomic_compare_exchange_strong(&ap->leading, &expect, 1))
            lead(ap, &me);
        state_wait(&me.state);
        int lead_it = CALL_LEAD;
        /* Handed the lead: take it unless answered meanwhile (or unless a caller that arrived
         * since leads already: it answers this call too). */
        if (!atomic_compare_exchange_strong(&me.state, &lead_it, CALL_WAITING))
            break; /* CALL_DONE */
    }
    if (me.rc == TC_OK)
        *out = me.reply;
    else
        (void)tc__err(ap->owner, me.rc < 0 ? me.rc : TC_EREDIS, "%s", me.msg);
    return me.rc;
}
