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
 * Group commit: writes of threads that call at the same time are queued (common/batcher.h),
 * and the leader sends a batch's statements pipelined on one connection with one Sync, so they
 * run as one implicit transaction (one WAL flush), each with its own nextval, in queue order
 * (write_batch). A write alone is the single autocommit statement above.
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
        if ((rc = tc__pg_take(s, attempt > 0, &slot)) != TC_OK)
            return rc;
        PGresult *res = PQexecPrepared(slot->pg, tc__pg_st_name[ST_GET], 1, vals, lens, fmts, 1);
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
            tc__pg_give(s, slot, 0);
            return rc;
        }
        int broken = tc__pg_conn_broken(slot->pg, res);
        rc = tc__pg_fail(s, slot->pg, res, "get");
        PQclear(res);
        tc__pg_give(s, slot, broken);
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
    int rc = tc__pg_take(s, 0, &slot);
    if (rc != TC_OK)
        return rc;
    PGresult *res = PQexecPrepared(slot->pg, tc__pg_st_name[st], n, vals, lens, fmts, 1);
    int broken = 0;
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
        rc = tc__pg_result_version(s, res, op, out_version);
    } else {
        broken = tc__pg_conn_broken(slot->pg, res);
        rc = tc__pg_fail(s, slot->pg, res, op);
    }
    PQclear(res);
    tc__pg_give(s, slot, broken);
    return rc;
}

/* ---- group commit --------------------------------------------------------------------------- */

/* One write of a group commit (tc__batcher's call): its statement and parameters, and what it
 * got. */
typedef struct pgwrite {
    tc__bcall b; /* first: the batcher's */
    int st;      /* ST_PUT or ST_DEL */
    const char *op;
    int n;
    const char *vals[3];
    int lens[3];
    int64_t version;
    int rc;
    char msg[320]; /* when rc is not TC_OK */
} pgwrite;

static pgwrite *next_write(const pgwrite *w)
{
    return (pgwrite *)w->b.next;
}

/* write_batch's answer when the transaction was rolled back as a whole (a write refused): none
 * of the batch committed, each is run again alone. */
#define BATCH_ROLLED_BACK 1

/* The writes of a batch in one transaction, in one round trip: libpq's pipeline mode sends
 * every statement and then a Sync, and the statements between two Syncs run as one implicit
 * transaction, committed at the Sync (one WAL flush) or rolled back whole at the first error.
 * TC_OK: all committed, each w->version set. BATCH_ROLLED_BACK: an error rolled it back. An
 * error code (message set): the connection failed, and whether the transaction committed is
 * not known, as for a single write that loses its connection (never retried). */
static int write_batch(pg_store *s, pgwrite *batch)
{
    static const int fmts[3] = {1, 1, 1};
    pg_slot *slot;
    int rc = tc__pg_take(s, 0, &slot);
    if (rc != TC_OK)
        return rc;
    PGconn *pg = slot->pg;
    if (PQenterPipelineMode(pg) != 1) {
        tc__pg_give(s, slot, 0);
        return BATCH_ROLLED_BACK; /* nothing sent: each alone */
    }
    int sent = 1;
    for (pgwrite *w = batch; sent && w != NULL; w = next_write(w))
        sent = PQsendQueryPrepared(pg, tc__pg_st_name[w->st], w->n, w->vals, w->lens, fmts, 1);
    sent = sent && PQpipelineSync(pg) == 1 && PQflush(pg) == 0;
    int refused = 0, lost = !sent, shape = TC_OK;
    for (pgwrite *w = batch; !lost && w != NULL; w = next_write(w)) {
        PGresult *res = PQgetResult(pg);
        if (res == NULL) {
            lost = 1;
            break;
        }
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            int vrc = tc__pg_result_version(s, res, "group commit", &w->version);
            if (vrc != TC_OK)
                shape = vrc; /* committed all the same, as write_call's would be */
        }
        else if (tc__pg_conn_broken(pg, res))
            lost = 1;
        else
            refused = 1; /* the statement's error, or PGRES_PIPELINE_ABORTED after it */
        PQclear(res);
        PQclear(PQgetResult(pg)); /* the NULL that ends each statement's results */
    }
    if (!lost) {
        PGresult *res = PQgetResult(pg);
        lost = res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC;
        PQclear(res);
    }
    if (lost) {
        rc = tc__pg_fail(s, pg, NULL, "group commit");
        tc__pg_give(s, slot, 1);
        return rc;
    }
    PQexitPipelineMode(pg);
    tc__pg_give(s, slot, 0);
    return refused ? BATCH_ROLLED_BACK : shape;
}

/* Each write's outcome, the message of a failure copied for its caller's thread. */
static void write_outcome(pg_store *s, pgwrite *w, int rc)
{
    w->rc = rc;
    if (rc != TC_OK)
        snprintf(w->msg, sizeof w->msg, "%s", tc_errmsg((const tc_cache *)s->base.owner));
}

/* One round of group commit (tc__batcher_ops.round): a write alone as the single statement it
 * always was; several in one pipelined transaction, and if a write was refused (the
 * transaction rolled back whole), each again alone, so that the refusal fails that write
 * only. */
static int group_round(void *ctx, tc__bcall *taken)
{
    pg_store *s = ctx;
    pgwrite *batch = (pgwrite *)taken;
    if (batch == NULL)
        return 0;
    int rc = next_write(batch) != NULL ? write_batch(s, batch) : BATCH_ROLLED_BACK;
    for (pgwrite *w = batch; w != NULL; w = next_write(w)) {
        if (rc == BATCH_ROLLED_BACK)
            write_outcome(s, w, write_call(s, w->st, w->op, w->n, w->vals, w->lens,
                                           &w->version));
        else
            write_outcome(s, w, rc);
    }
    for (pgwrite *w = batch, *next; w != NULL; w = next) {
        next = next_write(w); /* w may be gone once answered */
        tc__batcher_done(&w->b);
    }
    return 1;
}

static const tc__batcher_ops group_ops = {group_round, NULL, NULL};

static int group_write(pg_store *s, pgwrite *w, int64_t *out_version)
{
    tc__batcher_call(&s->group, &w->b, &group_ops, s);
    if (w->rc != TC_OK)
        return tc__err(s->base.owner, w->rc, "%s", w->msg);
    *out_version = w->version;
    return TC_OK;
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
    pgwrite w = {.st = ST_PUT, .op = "put", .n = 3,
                 .vals = {key, len > 0 ? value : "", (const char *)at},
                 .lens = {(int)key_len, (int)len, 8}};
    return group_write(s, &w, out_version);
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
    pgwrite w = {.st = ST_DEL, .op = "del", .n = 1, .vals = {key}, .lens = {(int)key_len}};
    return group_write(s, &w, out_version);
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
        PQfinish(s->lock.pg); /* ends the session: the lease's lock goes with it */
        pthread_cond_destroy(s->cv);
        pthread_mutex_destroy(s->mu);
        pthread_mutex_destroy(s->lmu);
    } else {
        /* Closed in a child before any call: the connections are the parent's. */
        for (int i = 0; i < s->pool_size; i++)
            if (s->slots[i].pg != NULL)
                tc__pg_abandon(s->slots[i].pg);
        if (s->lis.pg != NULL)
            tc__pg_abandon(s->lis.pg);
        if (s->lock.pg != NULL)
            tc__pg_abandon(s->lock.pg);
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
    .feed_read = tc__pg_feed_read,
    .feed_claim = tc__pg_feed_claim,
    .feed_commit = tc__pg_feed_commit,
    .feed_release = tc__pg_feed_release,
    .feed_takeover = tc__pg_feed_takeover,
    .feed_trim = tc__pg_feed_trim,
    .feed_wait = tc__pg_feed_wait,
};

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
/* The first connection's setup: the schema before the statements, since preparing them needs
 * the table and functions. */
static int schema_and_statements(pg_store *s, PGconn *pg)
{
    int rc = tc__pg_create_schema(s, pg);
    for (int i = 0; rc == TC_OK && i < ST_COUNT; i++) {
        PGresult *res = PQprepare(pg, tc__pg_st_name[i], s->sql[i], tc__pg_st_nparams[i],
                                  tc__pg_st_types[i]);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = tc__pg_fail(s, pg, res, "prepare");
        PQclear(res);
    }
    return rc;
}

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
        if ((s->sql[i] = tc__pg_fmt_sql(tc__pg_st_fmt[i], table)) == NULL)
            rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc == TC_OK)
        rc = parse_conninfo(s, owner);
    if (rc == TC_OK && (s->listen_sql = tc__pg_fmt_sql("LISTEN \"@_feed\"", table)) == NULL)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc == TC_OK && (s->lmu = malloc(sizeof *s->lmu)) == NULL)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc == TC_OK && pthread_mutex_init(s->lmu, NULL) != 0) {
        free(s->lmu);
        s->lmu = NULL;
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    }
    if (rc == TC_OK && tc__pg_new_sync(&s->mu, &s->cv) != 0)
        rc = tc__err(owner, TC_ENOMEM, "postgres: out of memory");
    if (rc != TC_OK) {
        if (s->lmu != NULL)
            pthread_mutex_destroy(s->lmu);
        free(s->lmu);
        free_store(s);
        return rc;
    }
    atomic_init(&s->gen, tc__fork_generation());
    tc__batcher_init(&s->group);
    atomic_init(&s->fixing, 0);

    PGconn *pg = tc__pg_conn_new(s, &s->slots[0], 0, &rc);
    if (pg != NULL)
        rc = schema_and_statements(s, pg);
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
