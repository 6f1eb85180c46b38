/*
 * store_pg.c - the PostgreSQL store.
 *
 * Schema, for a table name <t> that the config layer validated ([A-Za-z_][A-Za-z0-9_]*; checked
 * again here, at most 58 bytes so that <t>_feed etc. fit PostgreSQL's 63-byte names, and only
 * ever pasted into SQL inside double quotes, so case is kept and keywords are fine):
 *
 *   <t>(key TEXT PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL DEFAULT 0,
 *       updated_at BIGINT NOT NULL DEFAULT 0)          updated_at: epoch milliseconds
 *   <t>_seq            the sequence every version comes from
 *   <t>_lock()         the function of tiercache_lock, a BEFORE INSERT OR UPDATE OR DELETE
 *                      FOR EACH STATEMENT trigger: takes the table's write lock (below)
 *   <t>_ver()          the function of two BEFORE triggers, tiercache_version_ins (INSERT)
 *                      and tiercache_version_upd (UPDATE), that version plain-SQL writes
 *   <t>_del(k)         the library's delete: returns the deletion's version (the one the log
 *                      trigger drew for it; a fresh one when there was no row)
 *
 * Versions. Every version is a nextval of <t>_seq, so versions are unique across the table
 * and increase with every write, deletes included, and a key deleted and written again gets a
 * version above its tombstone's (a per-key counter would restart).
 *
 * Versions follow commit order, for every writer, plain SQL included. The table's write lock
 * is a transaction advisory lock, (1952670054, hashtext('<t>')), the very lock the change
 * feed's log triggers take (below). tiercache_lock takes it before any write statement on
 * <t> touches a row, so a transaction holds it from its first write of <t> until it commits
 * or rolls back, and every version is drawn while holding it: by the BEFORE row triggers, by
 * the library's statements (a nextval evaluated after the statement trigger fired), by
 * <t>_del (which takes the lock itself first) and by the delete log trigger. Hence a
 * transaction that commits before another drew all its versions before the other drew any:
 * a write can no longer draw its version, wait for a row that a concurrent transaction holds,
 * and commit after it with the lower version (a tc_put behind a plain-SQL DELETE used to leave
 * the row below the delete's tombstone, invisible to readers until the tombstone expired).
 * Versions drawn outside a write (a `SELECT nextval(...)` before the transaction's first
 * write of <t>) are not covered: a plain-SQL writer that sets version itself is trusted and
 * must draw it inside its write statement, from <t>_seq.
 *
 * The price: write transactions on one table run one at a time, each from its first write
 * statement to its commit (before, only their commits were serialised, by the log triggers'
 * lock); reads never wait. A plain-SQL transaction that stays open after writing <t> blocks
 * every other writer of <t>, the library's included, until it ends. And a deadlock that was
 * impossible before: T1 locks a row of <t> without writing (SELECT ... FOR UPDATE / FOR
 * SHARE, or a foreign-key check), T2 writes <t> (takes the table lock) and waits for that
 * row, then T1 writes <t>: T1 waits for the table lock held by T2. Likewise two transactions
 * that write two such tables in opposite orders. PostgreSQL detects these after
 * deadlock_timeout and aborts one of the two (SQLSTATE 40P01; a library call so aborted
 * returns TC_ESTORE), it never hangs; programs that lock rows of <t> and then write should
 * write first or retry. (A session that turns triggers off, session_replication_role =
 * replica or ALTER TABLE ... DISABLE TRIGGER, escapes the versioning altogether.)
 *
 * A library write is one statement in autocommit (one round trip, TC_OK only once
 * committed): the put an upsert with RETURNING, the delete a call of <t>_del. They need no
 * lock of their own: the table lock also orders two library writes of one key (an earlier
 * version of this file took a per-key advisory lock for that, now redundant and dropped).
 * An upsert's nextval in its VALUES is evaluated after the statement trigger took the lock;
 * the update branch reuses it (EXCLUDED.version): no transaction can have committed a write
 * of <t> in between, even if the upsert waited for the row (only non-writers can hold a row
 * of <t> while this holds the table lock).
 *
 * The triggers version rows that other programs write in plain SQL: an INSERT that brings no
 * version (0, the default) and an UPDATE that does not raise the version (a plain
 * `UPDATE t SET value = ... WHERE key = ...` keeps OLD.version) get a nextval and a fresh
 * updated_at. The library's own writes always carry a version above the row's old one, so the
 * triggers' WHEN leaves them alone: one nextval per put, and no PL/pgSQL call beyond
 * tiercache_lock's. The one exception: a plain-SQL writer that set a version above the one a
 * put drew; then the trigger gives the put a newer one, and the put returns what the row
 * really got (RETURNING).
 *
 * Creating the schema: opening checks, in one query, that every object exists; if any is
 * missing, it creates them all (IF NOT EXISTS / OR REPLACE / a check for the triggers) in one
 * transaction under a transaction advisory lock on the table name, so processes that open the
 * same new table at once serialise instead of failing on the catalogs' unique indexes. A
 * table made by an older version of this file lacks <t>_lock and tiercache_lock: the check
 * fails, and the creation adds them and replaces <t>_del (OR REPLACE); a process of the older
 * version still running keeps its own put statement, whose per-key lock then comes after the
 * table lock, which is harmless.
 *
 * The change feed (store.h's feed_* operations):
 *
 *   <t>_log(seq BIGSERIAL PRIMARY KEY, key, version, at)   one row per change; at: epoch ms
 *   <t>_feed(consumer PRIMARY KEY, seq, holder, lease_until)  a checkpoint and lease each
 *   <t>_chg()          the function of three constraint triggers, tiercache_log_ins/upd/del
 *
 * Every insert, update and delete of <t> is logged, plain SQL included: an insert or update
 * with the row's final version (an AFTER trigger sees what the BEFORE versioning trigger made
 * of it), a key changed by UPDATE under its old key too, a delete with a fresh nextval of
 * <t>_seq, newer than any copy of the row. The log triggers are plain AFTER ... FOR EACH ROW
 * triggers, run at the end of each statement under the table's write lock (taken since the
 * transaction's first write by tiercache_lock; <t>_chg takes it again, which costs nothing and
 * keeps the log right on its own), so the seqs are drawn one transaction at a time, in commit
 * order: a log row's seq is never below that of a row committed before it, and a consumer that
 * has read up to seq N can never later find a row <= N appear (with plain BIGSERIAL, a
 * transaction that drew a lower seq but committed later would be skipped for ever). Writers of
 * one table serialise (see "Versions follow commit order": one WAL flush each, no group commit
 * among them). They used to be constraint triggers deferred to the commit (the lock was then
 * taken only there); but a delete's version drawn at commit is above that of a row the same
 * transaction wrote after the delete (`DELETE k; INSERT k; COMMIT` logged the insert below the
 * delete's tombstone, and the row stayed invisible). Opening a table whose log triggers are
 * still deferred replaces them. TRUNCATE is neither logged nor locked.
 * The same function NOTIFYs channel "<t>_feed" (delivered at commit), on which feed_wait
 * LISTENs through a connection of its own.
 *
 * Keys and values are always bound parameters of prepared statements, in binary format both
 * ways (a bytea travels as its raw bytes, no escaping). Keys must be valid in the database's
 * encoding (UTF-8 normally): other bytes are refused by the server, TC_ESTORE.
 *
 * Pool. At most pool_size connections per store, each with its statements prepared once.
 * Opening the store opens the first (so a bad conninfo fails tc_open); later ones open on
 * demand, when every open connection is busy, and stay open: the module-scope connections that
 * later calls reuse. A call takes an idle connection under the mutex and gives it back after;
 * when all pool_size are busy it waits on the condition variable. Connections are opened
 * outside the mutex (a connect takes milliseconds, up to connect_timeout: 5 s unless the
 * conninfo sets it).
 *
 * Broken connections. An idle connection whose socket is readable has been told something
 * while idle: the server's goodbye (a restart, pg_terminate_backend) or EOF; it is checked and,
 * if dead, replaced before it is used, which costs one poll() per call. A call that still fails
 * with the connection broken (CONNECTION_BAD, or a class 08 / 57P0x error) discards the
 * connection. A get, which is idempotent, is then retried once on a freshly opened connection.
 * A put or a del is not: the server may have committed it before the connection broke, and
 * nothing says whether it did, so the caller gets TC_ESTORE.
 *
 * fork(): the child must never use a connection of its parent, nor close it: closing sends a
 * Terminate message on the socket, which the parent shares, and the parent's backend would end.
 * Each store records the fork generation (tc__fork_generation) its pool belongs to; the first
 * call in a child abandons every inherited connection (idle or held by a parent thread) by
 * putting /dev/null over its descriptor and then freeing it with PQfinish, whose goodbye thus
 * goes nowhere; it replaces the mutex and condition variable (a parent thread may have held
 * the mutex at fork time, and in the child that thread does not exist) and then opens the
 * child's own connections on demand. A connection a parent thread was opening at fork time is
 * not in the pool yet and is simply leaked in the child.
 *
 * Messages never show the conninfo's password: connection errors name only host, port, dbname
 * and user (PQconninfoParse), a conninfo that does not parse is not shown at all, and the
 * password is blanked out of any server message that would contain it.
 */
#include "store/store.h"

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

#define TABLE_MAX 58 /* 63 (NAMEDATALEN - 1) minus the longest suffixes, "_feed", "_lock" */

enum {
    ST_GET,
    ST_PUT,
    ST_DEL,
    ST_FEED_READ,
    ST_FEED_ANY,
    ST_FEED_CLAIM,
    ST_FEED_COMMIT,
    ST_FEED_RELEASE,
    ST_FEED_TRIM,
    ST_COUNT
};
static const char *const st_name[ST_COUNT] = {"tc_get",        "tc_put",         "tc_del",
                                              "tc_feed_read",  "tc_feed_any",    "tc_feed_claim",
                                              "tc_feed_commit", "tc_feed_release", "tc_feed_trim"};

typedef struct pg_slot {
    PGconn *pg; /* NULL: no connection in this slot */
    int busy;   /* taken by a call (pg set) or being opened (pg NULL) */
    int fatal;  /* the server sent a FATAL while the connection was idle (see on_notice) */
} pg_slot;

typedef struct pg_store {
    tc__store base; /* first: a tc__store * is a pg_store * */
    char *conninfo;
    char *where;    /* "host=... port=... dbname=... user=...": conninfo without secrets */
    char *password; /* the conninfo's password, to blank out of messages; NULL if none */
    char *table;    /* unquoted; validated */
    char *sql[ST_COUNT];
    int pool_size;
    /* The fork generation that mu, cv and slots belong to. Written (release) only by open and
     * by fork_fixup; every call reads it (acquire) before touching anything else. */
    atomic_uint gen;
    atomic_uint fixing; /* serialises fork_fixup between a child's threads (tc__tag_lock) */
    /* On the heap so that a child can replace them (see fork_fixup). */
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    pg_slot *slots; /* pool_size of them, under *mu */
    /* feed_wait's listener: a connection of its own, outside the pool, LISTENing on the feed's
     * channel; opened on the first wait, kept, reopened when broken. Only the thread holding
     * *lmu touches it. Of the fork generation gen, like the pool. */
    pthread_mutex_t *lmu;
    pg_slot lis;
    char *listen_sql;
} pg_store;

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
static int fail(const pg_store *s, PGconn *pg, const PGresult *res, const char *op)
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
static int conn_broken(PGconn *pg, const PGresult *res)
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
static int result_version(const pg_store *s, const PGresult *res, const char *op,
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
static char *fmt_sql(const char *fmt, const char *t)
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
static const char *const st_fmt[ST_COUNT] = {
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
};
static const Oid st_types[ST_COUNT][4] = {
    {25 /* text */},
    {25, 17 /* bytea */, 20 /* int8 */},
    {25},
    {20, 23 /* int4 */},
    {20},
    {25, 25, 20, 20},
    {25, 25, 20},
    {25, 25},
    {20},
};
static const int st_nparams[ST_COUNT] = {1, 3, 1, 2, 1, 4, 3, 2, 1};

/* Opens a connection for slot and prepares the statements. NULL with the error recorded in
 * *rc. */
static PGconn *conn_new(const pg_store *s, pg_slot *slot, int prepare, int *rc)
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
        PGresult *res = PQprepare(pg, st_name[i], s->sql[i], st_nparams[i], st_types[i]);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            *rc = fail(s, pg, res, "prepare");
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
static void abandon(PGconn *pg)
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

static int new_sync(pthread_mutex_t **mu, pthread_cond_t **cv)
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
static int fork_fixup(pg_store *s, unsigned gen)
{
    int rc = TC_OK;
    tc__tag_lock(&s->fixing, gen);
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        pthread_mutex_t *mu, *lmu = malloc(sizeof *lmu);
        pthread_cond_t *cv;
        if (lmu == NULL || pthread_mutex_init(lmu, NULL) != 0) {
            free(lmu);
            rc = tc__err(s->base.owner, TC_ENOMEM, "postgres: after fork: out of memory");
        } else if (new_sync(&mu, &cv) != 0) {
            pthread_mutex_destroy(lmu);
            free(lmu);
            rc = tc__err(s->base.owner, TC_ENOMEM, "postgres: after fork: out of memory");
        } else {
            if (s->lis.pg != NULL)
                abandon(s->lis.pg);
            s->lis.pg = NULL;
            free(s->lmu);
            s->lmu = lmu;
            for (int i = 0; i < s->pool_size; i++) {
                if (s->slots[i].pg != NULL)
                    abandon(s->slots[i].pg);
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
static int take(pg_store *s, int fresh, pg_slot **out_slot)
{
    unsigned gen = tc__fork_generation();
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        int rc = fork_fixup(s, gen);
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
        PGconn *pg = conn_new(s, slot, 1, &rc);
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
static void give(pg_store *s, pg_slot *slot, int broken)
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

/* ---- operations ----------------------------------------------------------------------------- */

/* fn runs on the calling thread while the result is valid: it must copy what it keeps. */
static int pg_get(tc__store *base, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    pg_store *s = (pg_store *)base;
    int rc = tc__check_key(s->base.owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *vals[1] = {key};
    const int lens[1] = {(int)key_len};
    const int fmts[1] = {1};
    for (int attempt = 0;; attempt++) {
        pg_slot *slot;
        if ((rc = take(s, attempt > 0, &slot)) != TC_OK)
            return rc;
        PGresult *res = PQexecPrepared(slot->pg, st_name[ST_GET], 1, vals, lens, fmts, 1);
        if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
            if (PQntuples(res) == 0) {
                rc = TC_ENOTFOUND; /* a normal outcome: no message */
            } else if (PQnfields(res) != 2 || PQgetlength(res, 0, 1) != 8) {
                rc = tc__err(s->base.owner, TC_ESTORE, "postgres: get: unexpected result shape");
            } else {
                int64_t version = (int64_t)tc__get_be64(PQgetvalue(res, 0, 1));
                /* PQgetvalue of a 0-byte value is "", never NULL. */
                if (fn != NULL)
                    rc = fn(ctx, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), version,
                            -1);
            }
            PQclear(res);
            give(s, slot, 0);
            return rc;
        }
        int broken = conn_broken(slot->pg, res);
        rc = fail(s, slot->pg, res, "get");
        PQclear(res);
        give(s, slot, broken);
        /* Idempotent: one more try on a fresh connection when this one broke. */
        if (!broken || attempt > 0)
            return rc;
    }
}

/* Runs a write (ST_PUT or ST_DEL) once; never retried (see the top of the file). */
static int write_call(pg_store *s, int st, const char *op, int n, const char *const *vals,
                      const int *lens, int64_t *out_version)
{
    static const int fmts[3] = {1, 1, 1};
    pg_slot *slot;
    int rc = take(s, 0, &slot);
    if (rc != TC_OK)
        return rc;
    PGresult *res = PQexecPrepared(slot->pg, st_name[st], n, vals, lens, fmts, 1);
    int broken = 0;
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
        rc = result_version(s, res, op, out_version);
    } else {
        broken = conn_broken(slot->pg, res);
        rc = fail(s, slot->pg, res, op);
    }
    PQclear(res);
    give(s, slot, broken);
    return rc;
}

static int pg_put(tc__store *base, const char *key, size_t key_len, const void *value,
                  size_t len, int64_t *out_version)
{
    pg_store *s = (pg_store *)base;
    if (out_version != NULL)
        *out_version = 0;
    if (out_version == NULL || (value == NULL && len > 0))
        return tc__err(s->base.owner, TC_EINVAL, "postgres put: NULL argument");
    if (len > 0x3fffffff) /* PostgreSQL's limit for one field (1 GB - 1) */
        return tc__err(s->base.owner, TC_EINVAL, "postgres put: value of %zu bytes is too large",
                       len);
    int rc = tc__check_key(s->base.owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    unsigned char at[8];
    tc__put_be64(at, (uint64_t)tc__wall_ms());
    const char *vals[3] = {key, len > 0 ? value : "", (const char *)at};
    const int lens[3] = {(int)key_len, (int)len, 8};
    return write_call(s, ST_PUT, "put", 3, vals, lens, out_version);
}

static int pg_del(tc__store *base, const char *key, size_t key_len, int64_t *out_version)
{
    pg_store *s = (pg_store *)base;
    if (out_version != NULL)
        *out_version = 0;
    if (out_version == NULL)
        return tc__err(s->base.owner, TC_EINVAL, "postgres del: NULL argument");
    int rc = tc__check_key(s->base.owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *vals[1] = {key};
    const int lens[1] = {(int)key_len};
    return write_call(s, ST_DEL, "del", 1, vals, lens, out_version);
}

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
        int rc = take(s, attempt > 0, &slot);
        if (rc != TC_OK)
            return rc;
        PGresult *res = PQexecPrepared(slot->pg, st_name[st], st_nparams[st], vals, NULL, NULL, 0);
        ExecStatusType es = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
            give(s, slot, 0);
            *out = res;
            return TC_OK;
        }
        int broken = conn_broken(slot->pg, res);
        rc = fail(s, slot->pg, res, op);
        PQclear(res);
        give(s, slot, broken);
        if (!broken || attempt > 0)
            return rc;
    }
}

static int pg_feed_read(tc__store *base, int64_t after, int max, tc__change_fn fn, void *ctx,
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

static int pg_feed_claim(tc__store *base, const char *consumer, const char *holder,
                         int64_t lease_ms, int64_t *out_seq)
{
    pg_store *s = (pg_store *)base;
    int rc = feed_args_ok(s, consumer, holder, "feed claim");
    if (rc != TC_OK)
        return rc;
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

static int pg_feed_commit(tc__store *base, const char *consumer, const char *holder,
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

static int pg_feed_release(tc__store *base, const char *consumer, const char *holder)
{
    pg_store *s = (pg_store *)base;
    int rc = feed_args_ok(s, consumer, holder, "feed release");
    if (rc != TC_OK)
        return rc;
    const char *const vals[] = {consumer, holder};
    int rows = 0;
    return feed_stmt(s, ST_FEED_RELEASE, "feed release", vals, NULL, &rows);
}

static int pg_feed_trim(tc__store *base, int64_t retention_ms, int64_t *out_removed)
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
    PGconn *pg = conn_new(s, &s->lis, 0, &rc);
    if (pg == NULL)
        return rc;
    PGresult *res = PQexec(pg, s->listen_sql);
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = fail(s, pg, res, "feed listen");
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
static int pg_feed_wait(tc__store *base, int64_t after, int64_t timeout_ms)
{
    pg_store *s = (pg_store *)base;
    unsigned gen = tc__fork_generation();
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) {
        int rc = fork_fixup(s, gen);
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

static void free_store(pg_store *s)
{
    for (int i = 0; i < ST_COUNT; i++)
        free(s->sql[i]);
    free(s->slots);
    free(s->listen_sql);
    free(s->conninfo);
    free(s->where);
    free(s->password);
    free(s->table);
    free(s);
}

static void pg_close(tc__store *base)
{
    if (base == NULL)
        return;
    pg_store *s = (pg_store *)base;
    if (atomic_load_explicit(&s->gen, memory_order_acquire) == tc__fork_generation()) {
        for (int i = 0; i < s->pool_size; i++)
            PQfinish(s->slots[i].pg);
        PQfinish(s->lis.pg);
        pthread_cond_destroy(s->cv);
        pthread_mutex_destroy(s->mu);
        pthread_mutex_destroy(s->lmu);
    } else {
        /* Closed in a child before any call: the connections are the parent's. */
        for (int i = 0; i < s->pool_size; i++)
            if (s->slots[i].pg != NULL)
                abandon(s->slots[i].pg);
        if (s->lis.pg != NULL)
            abandon(s->lis.pg);
    }
    free(s->lmu);
    free(s->mu);
    free(s->cv);
    free_store(s);
}

static const tc__store_ops pg_ops = {
    .get = pg_get,
    .put = pg_put,
    .del = pg_del,
    .close = pg_close,
    .feed_read = pg_feed_read,
    .feed_claim = pg_feed_claim,
    .feed_commit = pg_feed_commit,
    .feed_release = pg_feed_release,
    .feed_trim = pg_feed_trim,
    .feed_wait = pg_feed_wait,
};

/* ---- schema --------------------------------------------------------------------------------- */

static const char schema_fmt[] =
    "CREATE SEQUENCE IF NOT EXISTS \"@_seq\";\n"
    "CREATE TABLE IF NOT EXISTS \"@\" (key TEXT PRIMARY KEY, value BYTEA NOT NULL,"
    " version BIGINT NOT NULL DEFAULT 0, updated_at BIGINT NOT NULL DEFAULT 0);\n"
    /* Plain-SQL writers: see the top of the file. The triggers' WHEN decides, so the library's
     * own writes, which always raise the version, never call into PL/pgSQL. */
    "CREATE OR REPLACE FUNCTION \"@_ver\"() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  NEW.version := nextval('\"@_seq\"');\n"
    "  NEW.updated_at := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  RETURN NEW;\n"
    "END $f$;\n"
    /* The table's write lock (see the top of the file). Statement-level: once per write
     * statement, whatever the number of rows (none included). */
    "CREATE OR REPLACE FUNCTION \"@_lock\"() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1952670054, hashtext('@'));\n"
    "  RETURN NULL;\n"
    "END $f$;\n"
    /* A function, not one statement: its DELETE must run under a snapshot taken after the
     * table's lock (PL/pgSQL takes one per statement; the DELETE's own statement trigger would
     * take the lock only after its snapshot), or it would miss a row that a put committed
     * while this waited for the lock, and return a version above that put's. */
    "CREATE OR REPLACE FUNCTION \"@_del\"(k text) RETURNS bigint LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1952670054, hashtext('@'));\n"
    "  DELETE FROM \"@\" WHERE key = k;\n"
    "  IF FOUND THEN\n"
    "    RETURN currval('\"@_seq\"');\n"
    "  END IF;\n"
    "  RETURN nextval('\"@_seq\"');\n"
    "END $f$;\n"
    /* The change feed (store.h): see "The change feed" at the top of the file. */
    "CREATE TABLE IF NOT EXISTS \"@_log\" (seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL,"
    " version BIGINT NOT NULL, at BIGINT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS \"@_feed\" (consumer TEXT PRIMARY KEY,"
    " seq BIGINT NOT NULL DEFAULT 0, holder TEXT NOT NULL DEFAULT '',"
    " lease_until BIGINT NOT NULL DEFAULT 0);\n"
    "CREATE OR REPLACE FUNCTION \"@_chg\"() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "DECLARE\n"
    "  now_ms bigint;\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1952670054, hashtext('@'));\n"
    "  now_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  IF TG_OP = 'DELETE' THEN\n"
    "    INSERT INTO \"@_log\" (key, version, at) VALUES (OLD.key, nextval('\"@_seq\"'), now_ms);\n"
    "  ELSE\n"
    "    INSERT INTO \"@_log\" (key, version, at) VALUES (NEW.key, NEW.version, now_ms);\n"
    "    IF TG_OP = 'UPDATE' AND NEW.key IS DISTINCT FROM OLD.key THEN\n"
    "      INSERT INTO \"@_log\" (key, version, at) VALUES (OLD.key, NEW.version, now_ms);\n"
    "    END IF;\n"
    "  END IF;\n"
    "  PERFORM pg_notify('@_feed', '');\n"
    "  RETURN NULL;\n"
    "END $f$;\n";

/* Fires before any row of the statement is touched (and before an INSERT's VALUES or SELECT
 * is evaluated): for the library's upsert, both as INSERT and as UPDATE. */
static const char lock_trigger_fmt[] =
    "CREATE TRIGGER tiercache_lock BEFORE INSERT OR UPDATE OR DELETE ON \"@\""
    " FOR EACH STATEMENT EXECUTE FUNCTION \"@_lock\"()";

static const char trigger_fmt[] =
    "CREATE TRIGGER tiercache_version_ins BEFORE INSERT ON \"@\" FOR EACH ROW"
    " WHEN (NEW.version IS NULL OR NEW.version <= 0) EXECUTE FUNCTION \"@_ver\"();\n"
    "CREATE TRIGGER tiercache_version_upd BEFORE UPDATE ON \"@\" FOR EACH ROW"
    " WHEN (NEW.version IS NULL OR NEW.version <= OLD.version) EXECUTE FUNCTION \"@_ver\"()";

/* Immediate: they run at the end of each statement, under the table's write lock, so the log's
 * seqs and a delete's version are drawn in commit order, and in statement order within a
 * transaction. See the top of the file. */
static const char log_trigger_fmt[] =
    "CREATE TRIGGER tiercache_log_ins AFTER INSERT ON \"@\""
    " FOR EACH ROW EXECUTE FUNCTION \"@_chg\"();\n"
    "CREATE TRIGGER tiercache_log_upd AFTER UPDATE ON \"@\" FOR EACH ROW"
    " WHEN (NEW.version IS DISTINCT FROM OLD.version OR NEW.key IS DISTINCT FROM OLD.key)"
    " EXECUTE FUNCTION \"@_chg\"();\n"
    "CREATE TRIGGER tiercache_log_del AFTER DELETE ON \"@\""
    " FOR EACH ROW EXECUTE FUNCTION \"@_chg\"()";

/* An older schema's log triggers were deferred constraint triggers: dropped, then made again. */
static const char log_trigger_drop_fmt[] =
    "DROP TRIGGER IF EXISTS tiercache_log_ins ON \"@\";\n"
    "DROP TRIGGER IF EXISTS tiercache_log_upd ON \"@\";\n"
    "DROP TRIGGER IF EXISTS tiercache_log_del ON \"@\"";

/* A statement whose result the caller does not need. */
static int exec_ok(const pg_store *s, PGconn *pg, const char *sql, int nparams,
                   const char *const *vals, const char *op, PGresult **out)
{
    PGresult *res = nparams > 0 ? PQexecParams(pg, sql, nparams, NULL, vals, NULL, NULL, 0)
                                : PQexec(pg, sql);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = fail(s, pg, res, op);
        PQclear(res);
        return rc;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return TC_OK;
}

/* Creates a group of triggers (all of group's names, made by sql) if none exists; under the
 * schema lock. Some but not all: an error, since this library makes them together. */
static int create_triggers(const pg_store *s, PGconn *pg, const char *rel, const char *names,
                           int count, const char *sql)
{
    const char *const args[] = {rel, names};
    PGresult *res = NULL;
    int rc = exec_ok(s, pg,
                     "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass"
                     " AND tgname = ANY (string_to_array($2, ','))",
                     2, args, "schema", &res);
    if (rc != TC_OK)
        return rc;
    int have = PQntuples(res);
    PQclear(res);
    if (have == 0)
        return exec_ok(s, pg, sql, 0, NULL, "schema trigger", NULL);
    if (have != count)
        return tc__err(s->base.owner, TC_ESTORE,
                       "postgres: schema: %s has only some of its triggers %s; drop them or "
                       "create the others",
                       s->table, names);
    return TC_OK;
}

/* Drops the log triggers if an older schema made them deferred (sql drops all three); under
 * the schema lock, before create_triggers makes them again. */
static int drop_deferred_log_triggers(const pg_store *s, PGconn *pg, const char *rel,
                                      const char *sql)
{
    const char *const args[] = {rel};
    PGresult *res = NULL;
    int rc = exec_ok(s, pg,
                     "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgdeferrable"
                     " AND tgname IN ('tiercache_log_ins', 'tiercache_log_upd',"
                     " 'tiercache_log_del')",
                     1, args, "schema", &res);
    if (rc != TC_OK)
        return rc;
    int deferred = PQntuples(res) > 0;
    PQclear(res);
    return deferred ? exec_ok(s, pg, sql, 0, NULL, "schema trigger", NULL) : TC_OK;
}

static int create_schema(const pg_store *s, PGconn *pg)
{
    char rel[TABLE_MAX + 3], seq[TABLE_MAX + 7], ver[TABLE_MAX + 9], del[TABLE_MAX + 13];
    char log[TABLE_MAX + 7], feed[TABLE_MAX + 8], chg[TABLE_MAX + 9], lck[TABLE_MAX + 10];
    snprintf(rel, sizeof rel, "\"%s\"", s->table);
    snprintf(seq, sizeof seq, "\"%s_seq\"", s->table);
    snprintf(ver, sizeof ver, "\"%s_ver\"()", s->table);
    snprintf(del, sizeof del, "\"%s_del\"(text)", s->table);
    snprintf(log, sizeof log, "\"%s_log\"", s->table);
    snprintf(feed, sizeof feed, "\"%s_feed\"", s->table);
    snprintf(chg, sizeof chg, "\"%s_chg\"()", s->table);
    snprintf(lck, sizeof lck, "\"%s_lock\"()", s->table);
    const char *const names[] = {rel, seq, ver, del, log, feed, chg, lck};

    /* Usually all there: one query, no lock, no catalog writes. A table made before the feed
     * or the table lock existed lacks their objects and gets them here. */
    static const char check[] =
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL"
        " AND to_regprocedure($3) IS NOT NULL AND to_regprocedure($4) IS NOT NULL"
        " AND to_regclass($5) IS NOT NULL AND to_regclass($6) IS NOT NULL"
        " AND to_regprocedure($7) IS NOT NULL AND to_regprocedure($8) IS NOT NULL"
        " AND (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1)"
        " AND tgname IN ('tiercache_version_ins', 'tiercache_version_upd', 'tiercache_log_ins',"
        " 'tiercache_log_upd', 'tiercache_log_del', 'tiercache_lock') AND NOT tgdeferrable) = 6";
    PGresult *res = NULL;
    int rc = exec_ok(s, pg, check, 8, names, "schema", &res);
    if (rc != TC_OK)
        return rc;
    int present = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (present)
        return TC_OK;

    char *ddl = fmt_sql(schema_fmt, s->table);
    char *trig = fmt_sql(trigger_fmt, s->table);
    char *log_trig = fmt_sql(log_trigger_fmt, s->table);
    char *lock_trig = fmt_sql(lock_trigger_fmt, s->table);
    char *log_drop = fmt_sql(log_trigger_drop_fmt, s->table);
    if (ddl == NULL || trig == NULL || log_trig == NULL || lock_trig == NULL || log_drop == NULL) {
        free(ddl), free(trig), free(log_trig), free(lock_trig), free(log_drop);
        return tc__err(s->base.owner, TC_ENOMEM, "postgres: schema: out of memory");
    }
    /* Under a lock on the table's name: two processes creating one table at once would
     * otherwise collide on the catalogs (unique_violation, "tuple concurrently updated").
     * 1952669025 ("tcaa") keeps this lock apart from other users of advisory locks. */
    const char *const lock_args[] = {rel};
    rc = exec_ok(s, pg, "BEGIN", 0, NULL, "schema", NULL);
    if (rc == TC_OK)
        rc = exec_ok(s, pg, "SELECT pg_advisory_xact_lock(1952669025, hashtext($1))", 1,
                     lock_args, "schema lock", NULL);
    if (rc == TC_OK)
        rc = exec_ok(s, pg, ddl, 0, NULL, "schema", NULL);
    if (rc == TC_OK)
        rc = create_triggers(s, pg, rel, "tiercache_version_ins,tiercache_version_upd", 2, trig);
    if (rc == TC_OK)
        rc = drop_deferred_log_triggers(s, pg, rel, log_drop);
    if (rc == TC_OK)
        rc = create_triggers(s, pg, rel, "tiercache_log_ins,tiercache_log_upd,tiercache_log_del",
                             3, log_trig);
    if (rc == TC_OK)
        rc = create_triggers(s, pg, rel, "tiercache_lock", 1, lock_trig);
    if (rc == TC_OK)
        rc = exec_ok(s, pg, "COMMIT", 0, NULL, "schema commit", NULL);
    if (rc != TC_OK)
        PQclear(PQexec(pg, "ROLLBACK"));
    free(ddl);
    free(trig);
    free(log_trig);
    free(lock_trig);
    free(log_drop);
    return rc;
}

/* ---- open ----------------------------------------------------------------------------------- */

/* Fills s->where and s->password from the conninfo. TC_EINVAL if it does not parse: its text
 * is not shown then, since it may hold a password, and so may libpq's parse error. */
static int parse_conninfo(pg_store *s, const void *owner)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(s->conninfo, &err);
    if (opts == NULL) {
        int nomem = err == NULL;
        PQfreemem(err);
        if (nomem)
            return tc__err(owner, TC_ENOMEM, "postgres: out of memory");
        return tc__err(owner, TC_EINVAL,
                       "postgres: store.conninfo does not parse (not shown: it may hold a "
                       "password)");
    }
    char where[512] = "";
    size_t n = 0;
    int nomem = 0;
    static const char *const shown[] = {"host", "hostaddr", "port", "dbname", "user"};
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "password") == 0) {
            s->password = strdup(o->val);
            nomem |= s->password == NULL;
            continue;
        }
        for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
            if (strcmp(o->keyword, shown[i]) == 0 && n < sizeof where) {
                int k = snprintf(where + n, sizeof where - n, "%s%s=%s", n > 0 ? " " : "",
                                 o->keyword, o->val);
                n += k > 0 ? (size_t)k : 0;
            }
    }
    PQconninfoFree(opts);
    s->where = strdup(n > 0 ? where : "(libpq defaults)");
    if (s->where == NULL || nomem)
        return tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    return TC_OK;
}

/* Opens the first connection now (so a bad conninfo fails here, with everything freed) and
 * creates the schema if missing. TC_OK, TC_EINVAL (NULL argument, invalid table name, pool
 * size < 1, a conninfo that does not parse), TC_ESTORE, TC_ENOMEM; *out is NULL on failure. */
int tc__store_pg_open(tc__store **out, const char *conninfo, const char *table,
                      int64_t pool_size, const void *owner)
{
    if (out == NULL || conninfo == NULL || table == NULL)
        return tc__err(owner, TC_EINVAL, "postgres open: NULL argument");
    *out = NULL;
    if (!tc__valid_identifier(table, TABLE_MAX))
        return tc__err(owner, TC_EINVAL,
                       "postgres: invalid table name (want [A-Za-z_][A-Za-z0-9_]*, at most %d "
                       "bytes)",
                       TABLE_MAX);
    if (pool_size < 1 || pool_size > 1024)
        return tc__err(owner, TC_EINVAL, "postgres: pool size %lld out of range 1..1024",
                       (long long)pool_size);

    pg_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    s->base.ops = &pg_ops;
    s->base.owner = owner;
    s->pool_size = (int)pool_size;
    s->conninfo = strdup(conninfo);
    s->table = strdup(table);
    s->slots = calloc((size_t)pool_size, sizeof *s->slots);
    int rc = TC_OK;
    if (s->conninfo == NULL || s->table == NULL || s->slots == NULL)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    for (int i = 0; rc == TC_OK && i < ST_COUNT; i++)
        if ((s->sql[i] = fmt_sql(st_fmt[i], table)) == NULL)
            rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc == TC_OK)
        rc = parse_conninfo(s, owner);
    if (rc == TC_OK && (s->listen_sql = fmt_sql("LISTEN \"@_feed\"", table)) == NULL)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc == TC_OK && (s->lmu = malloc(sizeof *s->lmu)) == NULL)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc == TC_OK && pthread_mutex_init(s->lmu, NULL) != 0) {
        free(s->lmu);
        s->lmu = NULL;
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    }
    if (rc == TC_OK && new_sync(&s->mu, &s->cv) != 0)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc != TC_OK) {
        if (s->lmu != NULL)
            pthread_mutex_destroy(s->lmu);
        free(s->lmu);
        free_store(s);
        return rc;
    }
    atomic_init(&s->gen, tc__fork_generation());
    atomic_init(&s->fixing, 0);

    /* The schema before the statements: preparing them needs the table and functions. */
    PGconn *pg = conn_new(s, &s->slots[0], 0, &rc);
    if (pg != NULL) {
        rc = create_schema(s, pg);
        for (int i = 0; rc == TC_OK && i < ST_COUNT; i++) {
            PGresult *res = PQprepare(pg, st_name[i], s->sql[i], st_nparams[i], st_types[i]);
            if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
                rc = fail(s, pg, res, "prepare");
            PQclear(res);
        }
    }
    if (rc != TC_OK) {
        PQfinish(pg);
        pthread_cond_destroy(s->cv);
        pthread_mutex_destroy(s->mu);
        pthread_mutex_destroy(s->lmu);
        free(s->lmu);
        free(s->mu);
        free(s->cv);
        free_store(s);
        return rc;
    }
    s->slots[0].pg = pg; /* idle: the first call takes it */
    *out = &s->base;
    return TC_OK;
}
