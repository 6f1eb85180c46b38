/*
 * autopipe.c - auto-pipelining on one shared connection, on common/batcher.h's leader-follower
 * scheme (no lock, no thread of its own, a caller alone not delayed).
 *
 * Each round of the leader writes everything queued in one buffer, then reads the replies of
 * the batch written the round before and answers their callers: one batch is on the wire while
 * the last one's replies come back and its callers wake. The batch in flight and the shared
 * connection pass with the lead; a caller of the batch in flight is the preferred heir.
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
 * Fork. The first call in a child starts an empty pipeline (the batcher's fork repair), and the
 * shared connection is the parent's, which redis_conn.c closes in the child on its next use.
 */
#include "redis/autopipe.h"
#include "common/batcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct call {
    tc__bcall b; /* first: the batcher's */
    const char *what;
    int argc;
    const char *const *argv;
    const size_t *lens;
    redisReply *reply;
    int rc;        /* TC_OK, TC__AP_RETRY, or a TC_E* code */
    char msg[320]; /* when rc is not TC_OK */
} call;

static call *next_of(const call *k)
{
    return (call *)k->b.next;
}

struct tc__ap {
    tc__batcher b;
    /* The leader's, passed on with the lead: the batch written, its replies not read yet, and
     * the shared connection (NULL when not held). */
    call *inflight;
    redisContext *conn;
    int io_failed; /* this round's I/O failed (for its SIGPIPE guard) */
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
    tc__batcher_init(&ap->b);
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

/* tc__batcher_ops.after_fork: the parent's batch in flight and connection are not ours
 * (redis_conn.c closes the child's copy of the connection). */
static void ap_after_fork(void *ctx)
{
    tc__ap *ap = ctx;
    ap->inflight = NULL;
    ap->conn = NULL;
}

/* Every call of the batch from k on ends with rc and msg. */
static void fail_from(call *k, int rc, const char *msg)
{
    for (; k != NULL; k = next_of(k)) {
        k->rc = rc;
        snprintf(k->msg, sizeof k->msg, "%s", msg);
    }
}

/* The calls from k on, unanswered when c broke: each told how, in its own words. */
static void broke_from(tc__ap *ap, call *k, const redisContext *c)
{
    int rc = tc__redis_ctx_code(c);
    if ((c->err == REDIS_ERR_IO || c->err == REDIS_ERR_EOF) && !tc__redis_ctx_timed_out(c))
        rc = TC__AP_RETRY; /* closed or reset by the server */
    for (; k != NULL; k = next_of(k)) {
        k->rc = rc;
        snprintf(k->msg, sizeof k->msg, "redis %s: %s: %s", tc__rconns_where(ap->cs), k->what,
                 c->err != 0 ? c->errstr : "no reply");
    }
}

/* The batch's RESP in ap->buf: len bytes. 0, or -1 out of memory. */
static int format_batch(tc__ap *ap, call *batch, size_t *len)
{
    size_t need = 0;
    for (call *k = batch; k != NULL; k = next_of(k))
        need += tc__resp_size(k->argc, k->lens);
    if (need > ap->cap) {
        char *b = realloc(ap->buf, need);
        if (b == NULL)
            return -1;
        ap->buf = b;
        ap->cap = need;
    }
    char *p = ap->buf;
    for (call *k = batch; k != NULL; k = next_of(k))
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
    for (; k != NULL; k = next_of(k), n++) {
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

/* Every call of a batch answered: each caller woken to take its result. */
static void complete(call *batch)
{
    for (call *k = batch, *next; k != NULL; k = next) {
        next = next_of(k); /* k may be gone once answered */
        tc__batcher_done(&k->b);
    }
}

/* One round of the leader (tc__batcher_ops.round): what is queued written, then the replies of
 * the batch written the round before read, its callers answered. SIGPIPE is blocked around the
 * round's I/O (redis_conn.h), on this thread: a signal mask is the thread's. */
static int ap_round(void *ctx, tc__bcall *taken)
{
    tc__ap *ap = ctx;
    call *next = (call *)taken, *pending = ap->inflight;
    ap->inflight = NULL;
    if (next == NULL && pending == NULL) {
        drop_conn(ap, 0); /* the next leader acquires it again */
        return 0;
    }
    tc__sigpipe_guard guard;
    tc__sigpipe_block(&guard);
    ap->io_failed = 0;
    int sent = next != NULL && send_batch(ap, next, pending) == 0;
    if (pending != NULL && ap->conn != NULL)
        recv_batch(ap, pending, sent ? next : NULL);
    if (sent && ap->conn == NULL)
        sent = 0; /* the read broke the connection: next failed with it */
    tc__sigpipe_restore(&guard, ap->io_failed);
    if (pending != NULL)
        complete(pending);
    if (sent)
        ap->inflight = next;
    else if (next != NULL)
        complete(next);
    return 1;
}

/* A caller of the batch in flight: it stays unanswered until its replies are read. */
static tc__bcall *ap_heir(void *ctx)
{
    tc__ap *ap = ctx;
    return ap->inflight != NULL ? &ap->inflight->b : NULL;
}

static const tc__batcher_ops ap_ops = {ap_round, ap_heir, ap_after_fork};

int tc__ap_command(tc__ap *ap, const char *what, int argc, const char *const *argv,
                   const size_t *lens, redisReply **out)
{
    *out = NULL;
    call me = {.what = what, .argc = argc, .argv = argv, .lens = lens};
    tc__batcher_call(&ap->b, &me.b, &ap_ops, ap);
    if (me.rc == TC_OK)
        *out = me.reply;
    else
        (void)tc__err(ap->owner, me.rc < 0 ? me.rc : TC_EREDIS, "%s", me.msg);
    return me.rc;
}
