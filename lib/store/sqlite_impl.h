/*
 * sqlite_impl.h - the SQLite store's inside, shared by its files (store/ only):
 *   sqlite_conn.c   the connection: opening, WAL and schema, statements, the files a process
 *                   has open (inherited across fork), the child's repair, the feed's wakers
 *   sqlite_feed.c   the change feed: reading the log, the consumer's lease and checkpoint
 *   store_sqlite.c  the store's operations (get, put, del), the vtable, open and close
 */
#ifndef TC_STORE_SQLITE_IMPL_H
#define TC_STORE_SQLITE_IMPL_H

#include "common/batcher.h"
#include "store/store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

/* A SQLite file this process has open (sqlite_conn.c's registry). */
typedef struct file_node file_node;
enum {
    ST_GET,
    ST_BEGIN,
    ST_BUMP,
    ST_SEQ,
    ST_UPSERT,
    ST_DELETE,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_FEED_READ,
    ST_FEED_CLAIM,
    ST_FEED_COMMIT,
    ST_FEED_RELEASE,
    ST_FEED_TRIM,
    ST_FEED_HOLDER,
    ST_FEED_TAKEOVER,
    ST_COUNT
};

typedef struct sqlite_store {
    tc__store base; /* first: a tc__store * is a sqlite_store * */
    char *path;
    char *table;
    int busy_timeout_ms;
    /* The fork generation that mu, db, st and node belong to. Written (release) only by open
     * and by fork_fixup; every call reads it (acquire) before touching anything else. */
    atomic_uint gen;
    /* Serialises fork_fixup between the threads of one child (a tag lock, see
     * tc__tag_lock). */
    atomic_uint fixing;
    /* On the heap so that a child can replace it instead of re-initialising a mutex that a
     * parent thread may have held at fork time (pthread_mutex_init on an initialised mutex is
     * undefined). */
    pthread_mutex_t *mu;
    /* Under *mu. db is NULL in a child until its first call, and after a failed reopen. */
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    file_node *node; /* the registry entry that counts db; NULL for ":memory:" */
    /* The feed's waiters (feed_wait), woken by this process's writes: replaced, like mu, in a
     * child. writes counts commits. */
    struct waker *waker;
    atomic_ulong writes;
    /* Group commit: puts and dels that arrive together share one transaction (one durable
     * flush); common/batcher.h, fork-safe by itself. */
    tc__batcher group;
} sqlite_store;

typedef struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* The feed's watch of the database's directory (sqlite_feed.c), made by the first
     * feed_wait: -1 until then, and where inotify cannot be had. Under mu. */
    int watch_fd;
    int watch_tried;
    struct waker *next_dead; /* in dead_wakers */
} waker;

/* ---- sqlite_conn.c ---- */
/* Errors: the message names the operation and SQLite's own text. Returns TC_ESTORE. */
int tc__sqlite_db_fail(const sqlite_store *s, sqlite3 *db, const char *op);
/* In a child: an inherited connection (and its mutex and descriptor) kept reachable, never
 * used, closed or destroyed; likewise an inherited waker. */
void tc__sqlite_bury(sqlite3 *db, pthread_mutex_t *mu, int fd);
void tc__sqlite_bury_waker(waker *w);
/* The connection on n closed (in the generation that opened it). */
void tc__sqlite_registry_leave(file_node *n);
void tc__sqlite_finalize_all(sqlite3_stmt **st);
/* Opens s->db and prepares s->st. Called with *s->mu held, or before the store is shared.
 * On failure everything it made is released and s->db stays NULL. */
int tc__sqlite_conn_open(sqlite_store *s);
/* The first call in a fork()ed child: a mutex, connection and waker of its own. */
int tc__sqlite_fork_fixup(sqlite_store *s, unsigned gen);
/* Locks the store for one call and makes sure it has a connection of this process.
 * TC_OK with *s->mu held, or an error with it released. */
int tc__sqlite_enter(sqlite_store *s);
void tc__sqlite_leave(sqlite_store *s);
/* A key's checks for an operation (TC_EKEY with the message). */
int tc__sqlite_check_args(const sqlite_store *s, const char *key, size_t key_len);
/* After a statement is used: reset it, and drop bindings that point into the caller's memory
 * (they are bound SQLITE_STATIC, without a copy, and the caller's memory is gone soon). */
void tc__sqlite_done(sqlite3_stmt *st);
/* The feed's wakers: NULL when out of memory (then feed_wait polls). */
waker *tc__sqlite_waker_new(void);
void tc__sqlite_waker_free(waker *w);
/* After a commit: feed_wait's sleepers look at once. */
void tc__sqlite_wake(sqlite_store *s);

/* ---- sqlite_feed.c: the feed's operations of the vtable (store.h says what each does) ---- */
int tc__sqlite_feed_wait(tc__store *base, int64_t after, int64_t timeout_ms);
int tc__sqlite_feed_read(tc__store *base, int64_t after, int max, tc__change_fn fn, void *ctx,
                         int *out_n);
int tc__sqlite_feed_claim(tc__store *base, const char *consumer, const char *holder,
                          int64_t lease_ms, int64_t *out_seq);
int tc__sqlite_feed_commit(tc__store *base, const char *consumer, const char *holder,
                           int64_t seq);
int tc__sqlite_feed_release(tc__store *base, const char *consumer, const char *holder);
int tc__sqlite_feed_takeover(tc__store *base, const char *consumer, const char *holder,
                              int64_t lease_ms, tc__holder_dead_fn dead, void *ctx,
                              int64_t *out_seq);
int tc__sqlite_feed_trim(tc__store *base, int64_t retention_ms, int64_t *out_removed);

#endif
