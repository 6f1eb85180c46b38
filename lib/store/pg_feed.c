/*
 * pg_feed.c - the PostgreSQL store's change feed: the log that a trigger fills for every write,
 * read in order after a consumer's checkpoint; the consumer's lease and checkpoint, fenced by
 * the lease; LISTEN on the log's channel to wake at the next commit; trimming the log.
 */
#include "store/pg_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the change feed ------------------------------------------------------------------------ */

/* Runs one of the feed's statements (text parameters, text results); retried once on a fresh
 * connection when the connection broke: every one of them may run twice (a claim renews its
 * own lease, a commit takes the greater seq, release and trim are idempotent). *out: the
 * result on TC_OK, the caller clears it. */
static int feed_exec(pg_store *s, int st, const char *op, const char *const *vals,
                     PGresult **out)
{
    *out = NULL;
    for (int attempt = 0;; attempt++) {
        pg_slot *slot;
        int rc = tc__pg_take(s, attempt > 0, &slot);
        if (rc != TC_OK)
            return rc;
        PGresult *res = PQexecPrepared(slot->pg, tc__pg_st_name[st], tc__pg_st_nparams[st], vals,
                                       NULL, NULL, 0);
        ExecStatusType es = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
            tc__pg_give(s, slot, 0);
            *out = res;
            return TC_OK;
        }
        int broken = tc__pg_conn_broken(slot->pg, res);
        rc = tc__pg_fail(s, slot->pg, res, op);
        PQclear(res);
        tc__pg_give(s, slot, broken);
        if (!broken || attempt > 0)
            return rc;
    }
}

int tc__pg_feed_read(tc__store *base, int64_t after, int max, tc__change_fn fn, void *ctx,
                     int *out_n)
{
    pg_store *s = (pg_store *)base;
    *out_n = 0;
    if (fn == NULL)
        return tc__err(s->base.owner, TC_EINVAL, "postgres feed read: NULL argument");
    if (max <= 0)
        return TC_OK;
    char a[24], m[16];
    snprintf(a, sizeof a, "%lld", (long long)after);
    snprintf(m, sizeof m, "%d", max);
    const char *const vals[] = {a, m};
    PGresult *res;
    int rc = feed_exec(s, ST_FEED_READ, "feed read", vals, &res);
    if (rc != TC_OK)
        return rc;
    int n = PQntuples(res);
    /* fn runs with no connection held: it may call into the store. */
    for (int i = 0; rc == TC_OK && i < n; i++) {
        rc = fn(ctx, strtoll(PQgetvalue(res, i, 0), NULL, 10), PQgetvalue(res, i, 1),
                (size_t)PQgetlength(res, i, 1), strtoll(PQgetvalue(res, i, 2), NULL, 10));
        (*out_n)++;
    }
    PQclear(res);
    return rc;
}

/* Runs a bookkeeping statement; *out_rows: the rows it returned or changed. */
static int feed_stmt(pg_store *s, int st, const char *op, const char *const *vals,
                     int64_t *out_first, int *out_rows)
{
    PGresult *res;
    int rc = feed_exec(s, st, op, vals, &res);
    if (rc != TC_OK)
        return rc;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        *out_rows = PQntuples(res);
        if (*out_rows > 0 && out_first != NULL)
            *out_first = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    } else {
        *out_rows = atoi(PQcmdTuples(res));
    }
    PQclear(res);
    return TC_OK;
}

static int feed_args_ok(const pg_store *s, const char *consumer, const char *holder,
                        const char *op)
{
    if (consumer == NULL || holder == NULL)
        return tc__err(s->base.owner, TC_EINVAL, "postgres %s: NULL argument", op);
    return TC_OK;
}

/* ---- the lease's advisory lock ---------------------------------------------------------------
 *
 * The lease in the feed's table is a time: a holder that dies keeps it until it expires. A
 * session-level advisory lock dies with its holder's connection, on any host: the server drops
 * it as soon as the session ends (the process killed, its host gone once TCP notices). So the
 * active invalidator also holds pg_try_advisory_lock(the table and consumer) on a connection of
 * its own; whoever holds the lock is the live invalidator, and takes the lease row over
 * whatever the row's time says (others still take an expired row: see tc__pg_feed_claim).
 * The lock is checked at every claim (a try on the same session is re-entrant and answers
 * whether the session still holds it), and released by closing the connection. Where the
 * lock cannot be had (the lock connection fails), the claim falls back to the lease's time
 * alone. */

/* Whether holder holds consumer's lock (*got), trying to take it. TC_OK; TC_ENOTFOUND when the
 * store's lock session already serves another consumer (one per store: the others use the
 * time lease alone); or an error when the lock connection could not be used (the caller falls
 * back to the time lease). */
static int lock_take(pg_store *s, const char *consumer, const char *holder, int *got)
{
    *got = 0;
    if (strlen(holder) >= sizeof s->lock_holder || strlen(consumer) >= sizeof s->lock_consumer)
        return TC_EINVAL;
    int rc = TC_OK;
    pthread_mutex_lock(s->lmu);
    if (s->lock.pg != NULL && s->lock_holder[0] != '\0' &&
        strcmp(s->lock_consumer, consumer) != 0) {
        pthread_mutex_unlock(s->lmu);
        return TC_ENOTFOUND;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (s->lock.pg == NULL) {
            s->lock_holder[0] = '\0'; /* a new session holds nothing */
            PGconn *pg = tc__pg_conn_new(s, &s->lock, 0, &rc);
            if (pg == NULL)
                break;
            s->lock.pg = pg;
        }
        char key[sizeof s->lock_consumer + 80];
        snprintf(key, sizeof key, "%s/%s", s->table, consumer);
        const char *const vals[] = {key};
        PGresult *res = PQexecParams(s->lock.pg,
                                     "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", 1,
                                     NULL, vals, NULL, NULL, 0);
        if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            int mine = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
            PQclear(res);
            /* The session is this store's: another invalidator on the same store may have
             * taken the lock on it, and the lock is re-entrant. */
            if (mine && s->lock_holder[0] == '\0') {
                snprintf(s->lock_holder, sizeof s->lock_holder, "%s", holder);
                snprintf(s->lock_consumer, sizeof s->lock_consumer, "%s", consumer);
            }
            *got = mine && strcmp(s->lock_holder, holder) == 0 &&
                   strcmp(s->lock_consumer, consumer) == 0;
            rc = TC_OK;
            break;
        }
        rc = tc__pg_fail(s, s->lock.pg, res, "feed lock");
        PQclear(res);
        PQfinish(s->lock.pg); /* broken, or refused: a new session next time */
        s->lock.pg = NULL;
        s->lock_holder[0] = '\0';
    }
    pthread_mutex_unlock(s->lmu);
    return rc;
}

/* Ends the lock's session if holder took the lock on it. */
static void lock_release(pg_store *s, const char *consumer, const char *holder)
{
    pthread_mutex_lock(s->lmu);
    if (s->lock.pg != NULL && strcmp(s->lock_holder, holder) == 0 &&
        strcmp(s->lock_consumer, consumer) == 0) {
        PQfinish(s->lock.pg);
        s->lock.pg = NULL;
        s->lock_holder[0] = '\0';
    }
    pthread_mutex_unlock(s->lmu);
}

static int holder_is_dead(void *ctx, const char *holder)
{
    return 1; /* the caller holds the lock: whoever the row names is not alive */
}

static int lease_claim(pg_store *s, const char *consumer, const char *holder,
                       int64_t lease_ms, int64_t *out_seq);

int tc__pg_feed_claim(tc__store *base, const char *consumer, const char *holder,
                      int64_t lease_ms, int64_t *out_seq)
{
    pg_store *s = (pg_store *)base;
    int rc = feed_args_ok(s, consumer, holder, "feed claim");
    if (rc != TC_OK)
        return rc;
    unsigned gen = tc__fork_generation();
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen &&
        (rc = tc__pg_fork_fixup(s, gen)) != TC_OK)
        return rc;
    /* Without the lock the time lease still rules: a holder that is alive but stalled (its
     * session open, its process stopped) is taken over once its lease runs out, and takes the
     * row back, by its lock, when it resumes; the fenced commit keeps the two apart. */
    int got = 0;
    int lrc = lock_take(s, consumer, holder, &got);
    rc = lease_claim(s, consumer, holder, lease_ms, out_seq);
    if (rc == TC_ESTATE && lrc == TC_OK && got)
        rc = tc__pg_feed_takeover(base, consumer, holder, lease_ms, holder_is_dead, NULL,
                                  out_seq);
    return rc;
}

/* The claim by the lease's time: taken when free, expired or already holder's. */
static int lease_claim(pg_store *s, const char *consumer, const char *holder,
                       int64_t lease_ms, int64_t *out_seq)
{
    int rc;
    int64_t now = tc__wall_ms();
    char until[24], nows[24];
    snprintf(until, sizeof until, "%lld", (long long)(now + lease_ms));
    snprintf(nows, sizeof nows, "%lld", (long long)now);
    const char *const vals[] = {consumer, holder, until, nows};
    int rows = 0;
    int64_t seq = 0;
    rc = feed_stmt(s, ST_FEED_CLAIM, "feed claim", vals, &seq, &rows);
    if (rc == TC_OK && rows == 0)
        return tc__err(s->base.owner, TC_ESTATE,
                       "postgres %s: feed consumer \"%s\" is held by another invalidator",
                       s->table, consumer);
    if (rc == TC_OK && out_seq != NULL)
        *out_seq = seq;
    return rc;
}

int tc__pg_feed_commit(tc__store *base, const char *consumer, const char *holder,
                       int64_t seq)
{
    pg_store *s = (pg_store *)base;
    int rc = feed_args_ok(s, consumer, holder, "feed commit");
    if (rc != TC_OK)
        return rc;
    char q[24];
    snprintf(q, sizeof q, "%lld", (long long)seq);
    const char *const vals[] = {consumer, holder, q};
    int rows = 0;
    rc = feed_stmt(s, ST_FEED_COMMIT, "feed commit", vals, NULL, &rows);
    if (rc == TC_OK && rows == 0)
        return tc__err(s->base.owner, TC_ESTATE,
                       "postgres %s: feed consumer \"%s\": the lease was lost", s->table,
                       consumer);
    return rc;
}

int tc__pg_feed_release(tc__store *base, const char *consumer, const char *holder)
{
    pg_store *s = (pg_store *)base;
    int rc = feed_args_ok(s, consumer, holder, "feed release");
    if (rc != TC_OK)
        return rc;
    lock_release(s, consumer, holder);
    const char *const vals[] = {consumer, holder};
    int rows = 0;
    return feed_stmt(s, ST_FEED_RELEASE, "feed release", vals, NULL, &rows);
}

int tc__pg_feed_takeover(tc__store *base, const char *consumer, const char *holder,
                          int64_t lease_ms, tc__holder_dead_fn dead, void *ctx,
                          int64_t *out_seq)
{
    pg_store *s = (pg_store *)base;
    int rc = feed_args_ok(s, consumer, holder, "feed takeover");
    if (rc != TC_OK)
        return rc;
    const char *const who[] = {consumer};
    PGresult *res;
    rc = feed_exec(s, ST_FEED_HOLDER, "feed takeover", who, &res);
    if (rc != TC_OK)
        return rc;
    char old[128] = "";
    if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) < (int)sizeof old)
        memcpy(old, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0) + 1);
    PQclear(res);
    if (old[0] == '\0' || strcmp(old, holder) == 0 || !dead(ctx, old))
        return tc__err(s->base.owner, TC_ESTATE,
                       "postgres %s: feed consumer \"%s\" is held by a live invalidator",
                       s->table, consumer);
    char until[24];
    snprintf(until, sizeof until, "%lld", (long long)(tc__wall_ms() + lease_ms));
    const char *const vals[] = {consumer, holder, until, old};
    int rows = 0;
    int64_t seq = 0;
    rc = feed_stmt(s, ST_FEED_TAKEOVER, "feed takeover", vals, &seq, &rows);
    if (rc == TC_OK && rows == 0)
        return tc__err(s->base.owner, TC_ESTATE,
                       "postgres %s: feed consumer \"%s\" changed hands", s->table, consumer);
    if (rc == TC_OK && out_seq != NULL)
        *out_seq = seq;
    return rc;
}

int tc__pg_feed_trim(tc__store *base, int64_t retention_ms, int64_t *out_removed)
{
    pg_store *s = (pg_store *)base;
    char before[24];
    snprintf(before, sizeof before, "%lld", (long long)(tc__wall_ms() - retention_ms));
    const char *const vals[] = {before};
    int rows = 0;
    int rc = feed_stmt(s, ST_FEED_TRIM, "feed trim", vals, NULL, &rows);
    if (out_removed != NULL)
        *out_removed = rc == TC_OK ? rows : 0;
    return rc;
}

/* Reads what came on the listener and drops the notifications: *got is set when there was
 * one. 0 when the connection broke (then it is closed). */
static int listener_drain(pg_store *s, int *got)
{
    PGconn *pg = s->lis.pg;
    if (s->lis.fatal || PQstatus(pg) != CONNECTION_OK || !PQconsumeInput(pg) || s->lis.fatal) {
        PQfinish(pg);
        s->lis.pg = NULL;
        return 0;
    }
    PGnotify *note;
    while ((note = PQnotifies(pg)) != NULL) {
        PQfreemem(note);
        *got = 1;
    }
    return 1;
}

/* Makes sure the listener is connected and LISTENing; under *lmu. */
static int listener_up(pg_store *s)
{
    int got = 0;
    if (s->lis.pg != NULL && listener_drain(s, &got))
        return TC_OK;
    int rc;
    PGconn *pg = tc__pg_conn_new(s, &s->lis, 0, &rc);
    if (pg == NULL)
        return rc;
    PGresult *res = PQexec(pg, s->listen_sql);
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = tc__pg_fail(s, pg, res, "feed listen");
        PQclear(res);
        PQfinish(pg);
        return rc;
    }
    PQclear(res);
    s->lis.pg = pg;
    return TC_OK;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Listens first, then looks for a change after `after` (so one committed between the caller's
 * read and this wait is either seen by that look or notified), then waits on the listener's
 * socket. One waiter at a time uses the listener; others wait for the lock up to their own
 * timeout and, once they have it, find what the first was woken for by their look. */
int tc__pg_feed_wait(tc__store *base, int64_t after, int64_t timeout_ms)
{
    pg_store *s = (pg_store *)base;
    unsigned gen = tc__fork_generation();
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        int rc = tc__pg_fork_fixup(s, gen);
        if (rc != TC_OK)
            return rc;
    }
    if (timeout_ms <= 0)
        return TC_OK;
    int64_t deadline = mono_ms() + timeout_ms;
    struct timespec abs;
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_sec += timeout_ms / 1000;
    abs.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (abs.tv_nsec >= 1000000000L) {
        abs.tv_sec++;
        abs.tv_nsec -= 1000000000L;
    }
    if (pthread_mutex_timedlock(s->lmu, &abs) != 0)
        return TC_OK; /* another waiter held the listener all along: timed out */
    int rc = listener_up(s);
    if (rc == TC_OK) {
        char a[24];
        snprintf(a, sizeof a, "%lld", (long long)after);
        const char *const vals[] = {a};
        int rows = 0;
        rc = feed_stmt(s, ST_FEED_ANY, "feed wait", vals, NULL, &rows);
        for (int got = 0; rc == TC_OK && rows == 0 && !got;) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                break;
            struct pollfd p = {.fd = PQsocket(s->lis.pg), .events = POLLIN};
            int n = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
            if (n < 0 && errno != EINTR)
                break;
            /* A broken listener ends the wait early: the caller reads again, the next wait
             * opens a new one. */
            if (n > 0 && !listener_drain(s, &got))
                break;
        }
    }
    pthread_mutex_unlock(s->lmu);
    if (rc != TC_OK) {
        /* The database is away: the caller's loop would spin on the error; wait it out. */
        int64_t left = deadline - mono_ms();
        if (left > 0) {
            struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
    }
    return rc;
}
