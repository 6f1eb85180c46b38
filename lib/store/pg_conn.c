/*
 * pg_conn.c - the PostgreSQL store's connections: libpq's messages cleaned of secrets, the
 * prepared statements, the pool (take waits for a free connection within the timeout, give
 * returns it, a broken one is replaced), and a fork()ed child's repair. Why each is so is in
 * store_pg.c's head.
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

const char *const tc__pg_st_name[ST_COUNT] = {"tc_get",        "tc_put",         "tc_del",
                                              "tc_feed_read",  "tc_feed_any",    "tc_feed_claim",
                                              "tc_feed_commit", "tc_feed_release", "tc_feed_trim",
                                              "tc_feed_holder", "tc_feed_takeover"};

/* ---- messages ------------------------------------------------------------------------------- */

/* Copies a libpq message into buf without its trailing newline, and with the conninfo's
 * password blanked out should the server ever echo it. */
static const char *clean_msg(const pg_store *s, const char *msg, char *buf, size_t size)
{
    snprintf(buf, size, "%s", msg != NULL && msg[0] != '\0' ? msg : "unknown error");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (s->password != NULL && s->password[0] != '\0') {
        size_t plen = strlen(s->password);
        for (char *p = strstr(buf, s->password); p != NULL; p = strstr(p + plen, s->password))
            memset(p, '*', plen);
    }
    return buf;
}

/* A failed call: TC_ESTORE with the result's message, or the connection's. */
int tc__pg_fail(const pg_store *s, PGconn *pg, const PGresult *res, const char *op)
{
    char buf[1024];
    const char *msg = res != NULL ? PQresultErrorMessage(res) : NULL;
    if (msg == NULL || msg[0] == '\0')
        msg = pg != NULL ? PQerrorMessage(pg) : NULL;
    if (res == NULL && pg != NULL && PQstatus(pg) == CONNECTION_OK &&
        (msg == NULL || msg[0] == '\0'))
        return tc__err(s->base.owner, TC_ENOMEM, "postgres: %s: out of memory", op);
    return tc__err(s->base.owner, TC_ESTORE, "postgres: %s: %s", op,
                   clean_msg(s, msg, buf, sizeof buf));
}

/* True when the connection cannot be used any more: the socket is gone, or the server said
 * so (08xxx connection exceptions; 57P01-57P03: terminated by an administrator, a shutdown,
 * the server cannot take connections now). */
int tc__pg_conn_broken(PGconn *pg, const PGresult *res)
{
    if (PQstatus(pg) != CONNECTION_OK)
        return 1;
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state != NULL && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0);
}

/* libpq hands a message that arrives with no query running to the notice receiver, even a
 * FATAL ("terminating connection due to administrator command"): then the connection is about
 * to close, and the slot is marked so. Notices are otherwise dropped: libpq would print them on
 * stderr, and "relation ... already exists, skipping" from the schema's IF NOT EXISTS is
 * expected and nobody's business. Runs on the thread that owns the slot. */
static void on_notice(void *arg, const PGresult *res)
{
    pg_slot *slot = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (slot != NULL && sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        slot->fatal = 1;
}

/* ---- binary values -------------------------------------------------------------------------- */

/* Reads the one int8 (binary) of a one-row, one-column result. */
int tc__pg_result_version(const pg_store *s, const PGresult *res, const char *op,
                          int64_t *out)
{
    if (PQntuples(res) != 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0) ||
        PQgetlength(res, 0, 0) != 8)
        return tc__err(s->base.owner, TC_ESTORE, "postgres: %s: unexpected result shape", op);
    *out = (int64_t)tc__get_be64(PQgetvalue(res, 0, 0));
    return TC_OK;
}

/* ---- connections ---------------------------------------------------------------------------- */

/* fmt with every '@' replaced by the table name (the SQL texts here have no other '@'). */
char *tc__pg_fmt_sql(const char *fmt, const char *t)
{
    size_t tlen = strlen(t), n = 1;
    for (const char *p = fmt; *p != '\0'; p++)
        n += *p == '@' ? tlen : 1;
    char *out = malloc(n), *q = out;
    if (out == NULL)
        return NULL;
    for (const char *p = fmt; *p != '\0'; p++) {
        if (*p == '@') {
            memcpy(q, t, tlen);
            q += tlen;
        } else {
            *q++ = *p;
        }
    }
    *q = '\0';
    return out;
}

/* Statement texts; prepared on every connection. */
const char *const tc__pg_st_fmt[ST_COUNT] = {
    "SELECT value, version FROM \"@\" WHERE key = $1",
    /* No lock here: tiercache_lock, a statement trigger, takes the table's write lock before
     * the VALUES are evaluated, so the nextval is drawn under it, and the update branch can
     * reuse it (see "Versions follow commit order" at the top). */
    "INSERT INTO \"@\" AS t (key, value, version, updated_at)"
    " VALUES ($1, $2, nextval('\"@_seq\"'), $3)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,"
    " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
    " RETURNING t.version",
    "SELECT \"@_del\"($1)",
    /* The feed's statements take their parameters and give their results in text format. */
    "SELECT seq, key, version FROM \"@_log\" WHERE seq > $1 ORDER BY seq LIMIT $2",
    "SELECT 1 FROM \"@_log\" WHERE seq > $1 LIMIT 1",
    /* Taken when free, expired or already ours; RETURNING gives a row only then. */
    "INSERT INTO \"@_feed\" AS f (consumer, seq, holder, lease_until) VALUES ($1, 0, $2, $3)"
    " ON CONFLICT (consumer) DO UPDATE SET holder = EXCLUDED.holder,"
    " lease_until = EXCLUDED.lease_until"
    " WHERE f.holder = EXCLUDED.holder OR f.lease_until < $4 RETURNING f.seq",
    "UPDATE \"@_feed\" SET seq = GREATEST(seq, $3) WHERE consumer = $1 AND holder = $2",
    "UPDATE \"@_feed\" SET lease_until = 0 WHERE consumer = $1 AND holder = $2",
    "DELETE FROM \"@_log\" WHERE at < $1"
    " AND seq <= (SELECT COALESCE(MIN(seq), 0) FROM \"@_feed\")",
    "SELECT holder FROM \"@_feed\" WHERE consumer = $1",
    /* From a holder found dead, whatever its lease says. */
    "UPDATE \"@_feed\" SET holder = $2, lease_until = $3 WHERE consumer = $1 AND holder = $4"
    " RETURNING seq",
};
const Oid tc__pg_st_types[ST_COUNT][4] = {
    {25 /* text */},
    {25, 17 /* bytea */, 20 /* int8 */},
    {25},
    {20, 23 /* int4 */},
    {20},
    {25, 25, 20, 20},
    {25, 25, 20},
    {25, 25},
    {20},
    {25},
    {25, 25, 20, 25},
};
const int tc__pg_st_nparams[ST_COUNT] = {1, 3, 1, 2, 1, 4, 3, 2, 1, 1, 4};

/* Opens a connection for slot and prepares the statements. NULL with the error recorded in
 * *rc. */
PGconn *tc__pg_conn_new(const pg_store *s, pg_slot *slot, int prepare, int *rc)
{
    /* connect_timeout before dbname: the conninfo expands in dbname's place and, coming later,
     * wins when it sets its own. An empty conninfo is skipped: libpq's defaults. */
    const char *const kw[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const val[] = {"5", "tiercache", s->conninfo, NULL};
    PGconn *pg = PQconnectdbParams(kw, val, 1);
    if (pg == NULL) {
        *rc = tc__err(s->base.owner, TC_ENOMEM, "postgres: connect: out of memory");
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char buf[1024];
        *rc = tc__err(s->base.owner, TC_ESTORE, "postgres: connect to %s: %s", s->where,
                      clean_msg(s, PQerrorMessage(pg), buf, sizeof buf));
        PQfinish(pg);
        return NULL;
    }
    slot->fatal = 0;
    PQsetNoticeReceiver(pg, on_notice, slot);
    for (int i = 0; prepare && i < ST_COUNT; i++) {
        PGresult *res = PQprepare(pg, tc__pg_st_name[i], s->sql[i], tc__pg_st_nparams[i],
                                  tc__pg_st_types[i]);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            *rc = tc__pg_fail(s, pg, res, "prepare");
            PQclear(res);
            PQfinish(pg);
            return NULL;
        }
        PQclear(res);
    }
    *rc = TC_OK;
    return pg;
}

/* True when an idle connection is still usable. An idle connection is sent nothing unless the
 * server is about to drop it (or a NOTIFY/parameter change arrives, which is harmless), so the
 * common case costs one poll() that finds nothing. */
static int idle_ok(pg_slot *slot)
{
    PGconn *pg = slot->pg;
    for (int round = 0; round < 4; round++) {
        if (slot->fatal || PQstatus(pg) != CONNECTION_OK)
            return 0;
        struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
        if (p.fd < 0)
            return 0;
        int n = poll(&p, 1, 0);
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == EINTR;
        /* Reads what came (a FATAL goes to on_notice); EOF marks the connection bad. */
        if (!PQconsumeInput(pg))
            return 0;
        PGnotify *note;
        while ((note = PQnotifies(pg)) != NULL)
            PQfreemem(note);
    }
    return !slot->fatal && PQstatus(pg) == CONNECTION_OK;
}

/* Frees an inherited connection without a byte on its socket: /dev/null takes the descriptor's
 * place, so PQfinish's Terminate message and close() reach only /dev/null. */
void tc__pg_abandon(PGconn *pg)
{
    int fd = PQsocket(pg);
    if (fd >= 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, fd) < 0) {
            /* Cannot make the goodbye harmless: leak the connection instead. */
            if (null >= 0)
                close(null);
            return;
        }
        close(null);
    }
    PQfinish(pg);
}

int tc__pg_new_sync(pthread_mutex_t **mu, pthread_cond_t **cv)
{
    *mu = malloc(sizeof **mu);
    *cv = malloc(sizeof **cv);
    if (*mu == NULL || *cv == NULL || pthread_mutex_init(*mu, NULL) != 0) {
        free(*mu), free(*cv);
        return -1;
    }
    if (pthread_cond_init(*cv, NULL) != 0) {
        pthread_mutex_destroy(*mu);
        free(*mu), free(*cv);
        return -1;
    }
    return 0;
}

/* The first call in a child: see the top of the file. */
int tc__pg_fork_fixup(pg_store *s, unsigned gen)
{
    int rc = TC_OK;
    tc__tag_lock(&s->fixing, gen);
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        pthread_mutex_t *mu, *lmu = malloc(sizeof *lmu);
        pthread_cond_t *cv;
        if (lmu == NULL || pthread_mutex_init(lmu, NULL) != 0) {
            free(lmu);
            rc = tc__err(s->base.owner, TC_ENOMEM, "postgres: after fork: out of memory");
        } else if (tc__pg_new_sync(&mu, &cv) != 0) {
            pthread_mutex_destroy(lmu);
            free(lmu);
            rc = tc__err(s->base.owner, TC_ENOMEM, "postgres: after fork: out of memory");
        } else {
            if (s->lis.pg != NULL)
                tc__pg_abandon(s->lis.pg);
            s->lis.pg = NULL;
            /* The parent's session holds the parent's lock; the child has none. */
            if (s->lock.pg != NULL)
                tc__pg_abandon(s->lock.pg);
            s->lock.pg = NULL;
            s->lock_holder[0] = '\0';
            free(s->lmu);
            s->lmu = lmu;
            for (int i = 0; i < s->pool_size; i++) {
                if (s->slots[i].pg != NULL)
                    tc__pg_abandon(s->slots[i].pg);
                s->slots[i].pg = NULL;
                s->slots[i].busy = 0;
            }
            /* Neither destroyed nor reused: a parent thread may have held them at fork time.
             * glibc's mutexes and condition variables own no memory besides their own, so
             * freeing it is all that is left to do. */
            free(s->mu);
            free(s->cv);
            s->mu = mu;
            s->cv = cv;
            atomic_store_explicit(&s->gen, gen, memory_order_release);
        }
    }
    tc__tag_unlock(&s->fixing);
    return rc;
}

/* ---- the pool ------------------------------------------------------------------------------- */

/* Takes a connection for one call: an idle one that is still good, else a new one in a free
 * slot, else waits. fresh: the caller just lost a connection (a get about to retry), so it
 * wants a newly opened one, not another idle one that may have died the same way.
 * TC_OK and *out_slot, or an error (then no slot is held). */
int tc__pg_take(pg_store *s, int fresh, pg_slot **out_slot)
{
    unsigned gen = tc__fork_generation();
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        int rc = tc__pg_fork_fixup(s, gen);
        if (rc != TC_OK)
            return rc;
    }
    PGconn *dead = NULL;
    pg_slot *slot = NULL;
    pthread_mutex_lock(s->mu);
    for (;;) {
        pg_slot *empty = NULL, *idle = NULL;
        for (int i = 0; i < s->pool_size; i++) {
            pg_slot *e = &s->slots[i];
            if (e->busy)
                continue;
            if (e->pg == NULL) {
                if (empty == NULL)
                    empty = e;
            } else if (idle == NULL) {
                idle = e;
            }
        }
        if (idle != NULL && !fresh) {
            idle->busy = 1;
            slot = idle;
            break;
        }
        if (empty == NULL && idle != NULL) {
            /* fresh, and the pool is full of idle ones: replace one */
            dead = idle->pg;
            idle->pg = NULL;
            empty = idle;
        }
        if (empty != NULL) {
            empty->busy = 1; /* reserved while it opens, outside the mutex */
            slot = empty;
            break;
        }
        pthread_cond_wait(s->cv, s->mu);
    }
    pthread_mutex_unlock(s->mu);
    if (dead != NULL)
        PQfinish(dead);

    if (slot->pg != NULL && !idle_ok(slot)) {
        PQfinish(slot->pg); /* ours, and dead: its goodbye harms nobody */
        slot->pg = NULL;
    }
    if (slot->pg == NULL) {
        int rc;
        PGconn *pg = tc__pg_conn_new(s, slot, 1, &rc);
        if (pg == NULL) {
            pthread_mutex_lock(s->mu);
            slot->busy = 0;
            pthread_cond_signal(s->cv);
            pthread_mutex_unlock(s->mu);
            return rc;
        }
        slot->pg = pg; /* the slot is ours (busy): no lock needed to fill it */
    }
    *out_slot = slot;
    return TC_OK;
}

/* Gives the connection back; broken: close it and free the slot instead. */
void tc__pg_give(pg_store *s, pg_slot *slot, int broken)
{
    PGconn *dead = NULL;
    pthread_mutex_lock(s->mu);
    if (broken) {
        dead = slot->pg;
        slot->pg = NULL;
    }
    slot->busy = 0;
    pthread_cond_signal(s->cv);
    pthread_mutex_unlock(s->mu);
    PQfinish(dead); /* NULL is a no-op */
}
