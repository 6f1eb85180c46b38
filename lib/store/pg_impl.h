/*
 * pg_impl.h - the PostgreSQL store's inside, shared by its files (store/ only):
 *   pg_conn.c    connections: messages, prepared statements, the pool (take, give), fork repair
 *   pg_schema.c  the table, the change log and their triggers, made or upgraded at open
 *   pg_feed.c    the change feed: the log read in order, the consumer's lease and checkpoint,
 *                LISTEN/NOTIFY to wait for the next commit
 *   store_pg.c   the store's operations (get, put, del), the vtable, open and close
 */
#ifndef TC_STORE_PG_IMPL_H
#define TC_STORE_PG_IMPL_H

#include "common/batcher.h"
#include "store/store.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>

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
    ST_FEED_HOLDER,
    ST_FEED_TAKEOVER,
    ST_COUNT
};

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
    /* The feed lease's session advisory lock (pg_feed.c): a connection of its own, outside
     * the pool, under *lmu like the listener, and the holder and consumer that took the lock
     * on it ("" when none). */
    pg_slot lock;
    char lock_holder[128];
    char lock_consumer[128];
    /* Group commit: puts and dels that arrive together share one transaction on one pooled
     * connection, pipelined (store_pg.c); common/batcher.h, fork-safe by itself. */
    tc__batcher group;
} pg_store;

/* The prepared statements by ST_* (pg_conn.c): names, SQL with %s for the table, parameter
 * types and counts. */
extern const char *const tc__pg_st_name[ST_COUNT];
extern const char *const tc__pg_st_fmt[ST_COUNT];
extern const Oid tc__pg_st_types[ST_COUNT][4];
extern const int tc__pg_st_nparams[ST_COUNT];

/* A failed call: TC_ESTORE with the result's message, or the connection's. */
int tc__pg_fail(const pg_store *s, PGconn *pg, const PGresult *res, const char *op);

/* True when the connection cannot be used any more: the socket is gone, or the server said
 * so (08xxx connection exceptions; 57P01-57P03: terminated by an administrator, a shutdown,
 * the server cannot take connections now). */
int tc__pg_conn_broken(PGconn *pg, const PGresult *res);

int tc__pg_result_version(const pg_store *s, const PGresult *res, const char *op,
                          int64_t *out);

char *tc__pg_fmt_sql(const char *fmt, const char *t);

/* Opens a connection for slot and prepares the statements. NULL with the error recorded in
 * *rc. */
PGconn *tc__pg_conn_new(const pg_store *s, pg_slot *slot, int prepare, int *rc);

/* Frees an inherited connection without a byte on its socket: /dev/null takes the descriptor's
 * place, so PQfinish's Terminate message and close() reach only /dev/null. */
void tc__pg_abandon(PGconn *pg);

int tc__pg_new_sync(pthread_mutex_t **mu, pthread_cond_t **cv);

/* The first call in a child: see the top of the file. */
int tc__pg_fork_fixup(pg_store *s, unsigned gen);

int tc__pg_take(pg_store *s, int fresh, pg_slot **out_slot);

/* Gives the connection back; broken: close it and free the slot instead. */
void tc__pg_give(pg_store *s, pg_slot *slot, int broken);

int tc__pg_feed_read(tc__store *base, int64_t after, int max, tc__change_fn fn, void *ctx,
                     int *out_n);

int tc__pg_feed_claim(tc__store *base, const char *consumer, const char *holder,
                      int64_t lease_ms, int64_t *out_seq);

int tc__pg_feed_commit(tc__store *base, const char *consumer, const char *holder,
                       int64_t seq);

int tc__pg_feed_release(tc__store *base, const char *consumer, const char *holder);

int tc__pg_feed_takeover(tc__store *base, const char *consumer, const char *holder,
                          int64_t lease_ms, tc__holder_dead_fn dead, void *ctx,
                          int64_t *out_seq);
int tc__pg_feed_trim(tc__store *base, int64_t retention_ms, int64_t *out_removed);

/* Listens first, then looks for a change after `after` (so one committed between the caller's
 * read and this wait is either seen by that look or notified), then waits on the listener's
 * socket. One waiter at a time uses the listener; others wait for the lock up to their own
 * timeout and, once they have it, find what the first was woken for by their look. */
int tc__pg_feed_wait(tc__store *base, int64_t after, int64_t timeout_ms);

int tc__pg_create_schema(const pg_store *s, PGconn *pg);

#endif
