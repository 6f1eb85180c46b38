/*
 * store_sqlite.c - the SQLite store.
 *
 * Schema, for a table name <t> that the config layer validated ([A-Za-z_][A-Za-z0-9_]*; checked
 * again here, and only ever pasted into SQL through sqlite3_mprintf's %w inside double quotes,
 * so even a keyword such as "order" is a valid table name):
 *
 *   <t>(key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 0,
 *       updated_at INTEGER NOT NULL DEFAULT 0)
 *   <t>_seq(id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL)      one row
 *   <t>_ai, <t>_av   triggers that version rows written by other programs in plain SQL
 *
 * Versions come from the one-row sequence, never from a per-key counter: a key deleted and
 * written again must get a version above its tombstone's, and a per-key counter would restart
 * at 1. Every library write is BEGIN IMMEDIATE; bump the sequence; write the row; COMMIT, so
 * versions are unique across the table and increase with every write, deletes included.
 * Group commit: the writes of threads that call at the same time share one such transaction,
 * each row with its own bump (so its own version), and one durable flush (group_round).
 * Keys and values are always bound as parameters, never pasted into SQL.
 *
 * Threads: one connection per store (and per process, see fork below), serialised by a mutex,
 * with its statements prepared once. A store is shared by every thread of a handle, and a
 * SQLite point read costs a few microseconds, so one connection is the simple correct choice.
 * Its cost: a put that waits (up to busy_timeout) for another process's write lock also holds
 * up this process's gets. A pool of read connections would lift that if it ever matters.
 *
 * fork(): SQLite forbids using or closing a connection in any process but the one that opened
 * it (https://sqlite.org/howtocorrupt.html, section 2.6). Each store records the fork
 * generation (tc__fork_generation) its connection belongs to; the first call in a child
 * abandons the inherited connection and opens the child's own (fork_fixup). That alone is not
 * enough, because SQLite's per-process bookkeeping of open files survives the fork: see
 * "inherited SQLite state" below.
 */
#include "store/sqlite_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* fn runs on the calling thread, under the store's mutex and while the row is valid: it must
 * copy what it keeps and must not call into the same store (it would deadlock). */
static int sqlite_get(tc__store *base, const char *key, size_t key_len, tc__value_fn fn,
                      void *ctx)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = tc__sqlite_check_args(s, key, key_len);
    if (rc != TC_OK)
        return rc;
    if ((rc = tc__sqlite_enter(s)) != TC_OK)
        return rc;
    sqlite3_stmt *st = s->st[ST_GET];
    if (sqlite3_bind_text(st, 1, key, (int)key_len, SQLITE_STATIC) != SQLITE_OK) {
        rc = tc__sqlite_db_fail(s, s->db, "get");
    } else {
        int src = sqlite3_step(st);
        if (src == SQLITE_ROW) {
            /* column_blob before column_bytes: the documented safe order. A 0-byte value gives
             * NULL, which the callback must never see. */
            const void *data = sqlite3_column_blob(st, 0);
            size_t len = (size_t)sqlite3_column_bytes(st, 0);
            int64_t version = sqlite3_column_int64(st, 1);
            if (data == NULL && sqlite3_errcode(s->db) == SQLITE_NOMEM)
                rc = tc__sqlite_db_fail(s, s->db, "get");
            else if (fn != NULL)
                rc = fn(ctx, data != NULL ? data : "", len, version, -1);
        } else if (src == SQLITE_DONE) {
            rc = TC_ENOTFOUND; /* a normal outcome: no message */
        } else {
            rc = tc__sqlite_db_fail(s, s->db, "get");
        }
    }
    /* Reset ends the read transaction; one left open would hold back checkpoints. */
    tc__sqlite_done(st);
    tc__sqlite_leave(s);
    return rc;
}

/* One write of a group commit (tc__batcher's call): what it writes, and what it got. */
typedef struct gwrite {
    tc__bcall b; /* first: the batcher's */
    const char *key;
    size_t key_len;
    const void *value;
    size_t len;
    int is_put;
    int64_t version;
    int rc;
    char msg[320]; /* when rc is not TC_OK */
} gwrite;

static gwrite *next_write(const gwrite *w)
{
    return (gwrite *)w->b.next;
}

/* Steps one of the transaction's statements (BEGIN, COMMIT) to its end. */
static int step_done(sqlite_store *s, int which, const char *op)
{
    sqlite3_stmt *st = s->st[which];
    int ok = sqlite3_step(st) == SQLITE_DONE;
    int rc = ok ? TC_OK : tc__sqlite_db_fail(s, s->db, op);
    tc__sqlite_done(st);
    return rc;
}

/* Inside the transaction: bump the sequence; upsert (a put) or delete the row; w->version =
 * the bumped value. */
static int write_row(sqlite_store *s, const char *op, gwrite *w)
{
    sqlite3 *db = s->db;
    sqlite3_stmt *st = s->st[ST_BUMP];
    int rc = TC_OK;
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    tc__sqlite_done(st);
    if (sqlite3_changes(db) != 1) {
        /* No row to bump: someone deleted the sequence row. Restarting it at 1 would reuse
         * versions, so refuse loudly instead. */
        return tc__err(s->base.owner, TC_ESTORE, "sqlite %s: %s: sequence row missing in %s_seq",
                       s->path, op, s->table);
    }
    st = s->st[ST_SEQ];
    if (sqlite3_step(st) != SQLITE_ROW)
        goto fail;
    int64_t v = sqlite3_column_int64(st, 0);
    tc__sqlite_done(st);
    if (w->is_put) {
        st = s->st[ST_UPSERT];
        /* A 0-byte value must be bound as an empty blob, not NULL (value is NOT NULL). */
        if (sqlite3_bind_text(st, 1, w->key, (int)w->key_len, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_blob64(st, 2, w->len > 0 ? w->value : "", w->len, SQLITE_STATIC) !=
                SQLITE_OK ||
            sqlite3_bind_int64(st, 3, v) != SQLITE_OK ||
            sqlite3_bind_int64(st, 4, tc__wall_ms()) != SQLITE_OK)
            goto fail;
    } else {
        st = s->st[ST_DELETE];
        if (sqlite3_bind_text(st, 1, w->key, (int)w->key_len, SQLITE_STATIC) != SQLITE_OK)
            goto fail;
    }
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    tc__sqlite_done(st);
    w->version = v;
    return TC_OK;
fail:
    rc = tc__sqlite_db_fail(s, db, op);
    tc__sqlite_done(st);
    return rc;
}

/* The writes of a batch in one transaction: BEGIN IMMEDIATE; each row as write_row; COMMIT
 * (one durable flush). Any failure rolls the whole transaction back: none of them is
 * committed. Called under *s->mu. */
static int write_txn(sqlite_store *s, gwrite *batch)
{
    const char *op = next_write(batch) != NULL ? "group commit"
                     : batch->is_put            ? "put"
                                                : "del";
    int rc = step_done(s, ST_BEGIN, op);
    for (gwrite *w = batch; rc == TC_OK && w != NULL; w = next_write(w))
        rc = write_row(s, op, w);
    if (rc == TC_OK)
        rc = step_done(s, ST_COMMIT, op);
    if (rc != TC_OK && !sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->st[ST_ROLLBACK]); /* the message stays the failure's */
        tc__sqlite_done(s->st[ST_ROLLBACK]);
    }
    return rc;
}

/* Each write's outcome, the message of a failure copied for its caller's thread. */
static void write_outcome(sqlite_store *s, gwrite *w, int rc)
{
    w->rc = rc;
    if (rc != TC_OK)
        snprintf(w->msg, sizeof w->msg, "%s", tc_errmsg((const tc_cache *)s->base.owner));
}

/* One round of group commit (tc__batcher_ops.round): what is queued, in one transaction. If it
 * fails, each write runs again in a transaction of its own, so that one write's failure (a
 * row SQLite refuses) fails that write alone, and a failure of the whole (the disk full, the
 * database locked past busy_timeout) fails each write with its own clear error; nothing of a
 * rolled-back transaction is reported committed. */
static int group_round(void *ctx, tc__bcall *taken)
{
    sqlite_store *s = ctx;
    gwrite *batch = (gwrite *)taken;
    if (batch == NULL)
        return 0;
    int rc = tc__sqlite_enter(s), committed = 0;
    if (rc != TC_OK) {
        for (gwrite *w = batch; w != NULL; w = next_write(w))
            write_outcome(s, w, rc);
    } else {
        rc = write_txn(s, batch);
        if (rc == TC_OK || next_write(batch) == NULL) {
            committed = rc == TC_OK;
            for (gwrite *w = batch; w != NULL; w = next_write(w))
                write_outcome(s, w, rc);
        } else {
            for (gwrite *w = batch; w != NULL; w = next_write(w)) {
                tc__bcall *rest = w->b.next;
                w->b.next = NULL;
                int one = write_txn(s, w);
                w->b.next = rest;
                write_outcome(s, w, one);
                committed |= one == TC_OK;
            }
        }
        tc__sqlite_leave(s);
    }
    if (committed)
        tc__sqlite_wake(s);
    for (gwrite *w = batch, *next; w != NULL; w = next) {
        next = next_write(w); /* w may be gone once answered */
        tc__batcher_done(&w->b);
    }
    return 1;
}

static const tc__batcher_ops group_ops = {group_round, NULL, NULL};

/* A put or a del through the group commit: returns once its transaction committed (TC_OK,
 * *out_version its version) or failed (its message set on this thread). */
static int group_write(sqlite_store *s, gwrite *w, int64_t *out_version)
{
    tc__batcher_call(&s->group, &w->b, &group_ops, s);
    if (w->rc != TC_OK)
        return tc__err(s->base.owner, w->rc, "%s", w->msg);
    *out_version = w->version;
    return TC_OK;
}

static int sqlite_put(tc__store *base, const char *key, size_t key_len, const void *value,
                      size_t len, int64_t *out_version)
{
    sqlite_store *s = (sqlite_store *)base;
    if (out_version != NULL)
        *out_version = 0;
    if (out_version == NULL || (value == NULL && len > 0))
        return tc__err(s->base.owner, TC_EINVAL, "sqlite put: NULL argument");
    int rc = tc__sqlite_check_args(s, key, key_len);
    if (rc != TC_OK)
        return rc;
    gwrite w = {.key = key, .key_len = key_len, .value = value, .len = len, .is_put = 1};
    return group_write(s, &w, out_version);
}

static int sqlite_del(tc__store *base, const char *key, size_t key_len, int64_t *out_version)
{
    sqlite_store *s = (sqlite_store *)base;
    if (out_version != NULL)
        *out_version = 0;
    if (out_version == NULL)
        return tc__err(s->base.owner, TC_EINVAL, "sqlite del: NULL argument");
    int rc = tc__sqlite_check_args(s, key, key_len);
    if (rc != TC_OK)
        return rc;
    gwrite w = {.key = key, .key_len = key_len};
    return group_write(s, &w, out_version);
}

static void sqlite_close(tc__store *base)
{
    if (base == NULL)
        return;
    sqlite_store *s = (sqlite_store *)base;
    if (atomic_load_explicit(&s->gen, memory_order_acquire) == tc__fork_generation()) {
        tc__sqlite_finalize_all(s->st);
        sqlite3_close_v2(s->db); /* NULL is a no-op */
        tc__sqlite_registry_leave(s->node);
        pthread_mutex_destroy(s->mu);
        free(s->mu);
        tc__sqlite_waker_free(s->waker);
    } else {
        /* Closed in a child before any call: the connection, mutex and waker are the
         * parent's. */
        tc__sqlite_bury(s->db, s->mu, -1);
        tc__sqlite_bury_waker(s->waker);
    }
    free(s->path);
    free(s->table);
    free(s);
}

static const tc__store_ops sqlite_ops = {
    .get = sqlite_get,
    .put = sqlite_put,
    .del = sqlite_del,
    .close = sqlite_close,
    .feed_read = tc__sqlite_feed_read,
    .feed_claim = tc__sqlite_feed_claim,
    .feed_commit = tc__sqlite_feed_commit,
    .feed_release = tc__sqlite_feed_release,
    .feed_takeover = tc__sqlite_feed_takeover,
    .feed_trim = tc__sqlite_feed_trim,
    .feed_wait = tc__sqlite_feed_wait,
};

/* ---- open ----------------------------------------------------------------------------------- */

/* Opens the connection now (so a bad path fails here, with everything freed), in WAL mode with
 * synchronous=FULL, creating the schema if missing. TC_OK, TC_EINVAL (NULL argument, invalid
 * table name, negative timeout), TC_ESTORE, TC_ENOMEM; *out is NULL on failure. */
int tc__store_sqlite_open(tc__store **out, const char *path, const char *table,
                          int64_t busy_timeout_ms, const void *owner)
{
    if (out == NULL || path == NULL || table == NULL)
        return tc__err(owner, TC_EINVAL, "sqlite open: NULL argument");
    *out = NULL;
    if (!tc__valid_identifier(table, SIZE_MAX))
        return tc__err(owner, TC_EINVAL, "sqlite %s: invalid table name", path);
    if (busy_timeout_ms < 0)
        return tc__err(owner, TC_EINVAL, "sqlite %s: negative busy timeout", path);

    sqlite_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return tc__err(owner, TC_ENOMEM, "sqlite %s: out of memory", path);
    s->base.ops = &sqlite_ops;
    s->base.owner = owner;
    s->busy_timeout_ms = busy_timeout_ms > INT_MAX ? INT_MAX : (int)busy_timeout_ms;
    s->path = strdup(path);
    s->table = strdup(table);
    s->mu = malloc(sizeof *s->mu);
    if (s->path == NULL || s->table == NULL || s->mu == NULL ||
        pthread_mutex_init(s->mu, NULL) != 0) {
        free(s->mu);
        free(s->path);
        free(s->table);
        free(s);
        return tc__err(owner, TC_ENOMEM, "sqlite %s: out of memory", path);
    }
    atomic_init(&s->gen, tc__fork_generation());
    atomic_init(&s->fixing, 0);
    atomic_init(&s->writes, 0);
    tc__batcher_init(&s->group);
    s->waker = tc__sqlite_waker_new(); /* NULL (out of memory): feed_wait polls */

    int rc = tc__sqlite_conn_open(s);
    if (rc != TC_OK) {
        tc__sqlite_waker_free(s->waker);
        pthread_mutex_destroy(s->mu);
        free(s->mu);
        free(s->path);
        free(s->table);
        free(s);
        return rc;
    }
    *out = &s->base;
    return TC_OK;
}
