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

/* One library write: BEGIN IMMEDIATE; bump the sequence; upsert (is_put) or delete the row;
 * COMMIT; *out_version = the bumped value. Any failure rolls back. Called under *s->mu. */
static int write_txn(sqlite_store *s, const char *op, const char *key, size_t key_len,
                     const void *value, size_t len, int is_put, int64_t *out_version)
{
    sqlite3 *db = s->db;
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    int rc = TC_OK;

    st = s->st[ST_BEGIN];
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    tc__sqlite_done(st);

    st = s->st[ST_BUMP];
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    tc__sqlite_done(st);
    if (sqlite3_changes(db) != 1) {
        /* No row to bump: someone deleted the sequence row. Restarting it at 1 would reuse
         * versions, so refuse loudly instead. */
        rc = tc__err(s->base.owner, TC_ESTORE, "sqlite %s: %s: sequence row missing in %s_seq",
                     s->path, op, s->table);
        goto rollback;
    }
    st = s->st[ST_SEQ];
    if (sqlite3_step(st) != SQLITE_ROW)
        goto fail;
    v = sqlite3_column_int64(st, 0);
    tc__sqlite_done(st);

    if (is_put) {
        st = s->st[ST_UPSERT];
        /* A 0-byte value must be bound as an empty blob, not NULL (value is NOT NULL). */
        if (sqlite3_bind_text(st, 1, key, (int)key_len, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_blob64(st, 2, len > 0 ? value : "", len, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_int64(st, 3, v) != SQLITE_OK ||
            sqlite3_bind_int64(st, 4, tc__wall_ms()) != SQLITE_OK)
            goto fail;
    } else {
        st = s->st[ST_DELETE];
        if (sqlite3_bind_text(st, 1, key, (int)key_len, SQLITE_STATIC) != SQLITE_OK)
            goto fail;
    }
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    tc__sqlite_done(st);

    st = s->st[ST_COMMIT];
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    tc__sqlite_done(st);
    *out_version = v;
    return TC_OK;

fail:
    rc = tc__sqlite_db_fail(s, db, op); /* before ROLLBACK replaces the message */
rollback:
    tc__sqlite_done(st);
    if (!sqlite3_get_autocommit(db)) {
        sqlite3_step(s->st[ST_ROLLBACK]);
        tc__sqlite_done(s->st[ST_ROLLBACK]);
    }
    return rc;
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
    if ((rc = tc__sqlite_enter(s)) != TC_OK)
        return rc;
    rc = write_txn(s, "put", key, key_len, value, len, 1, out_version);
    tc__sqlite_leave(s);
    if (rc == TC_OK)
        tc__sqlite_wake(s);
    return rc;
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
    if ((rc = tc__sqlite_enter(s)) != TC_OK)
        return rc;
    rc = write_txn(s, "del", key, key_len, NULL, 0, 0, out_version);
    tc__sqlite_leave(s);
    if (rc == TC_OK)
        tc__sqlite_wake(s);
    return rc;
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
