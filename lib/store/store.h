/*
 * store.h - the store interface: the source of truth behind the caches. Each row carries a
 * version, unique across the store and increasing with every write (including deletes), so a
 * version says which of two states of a key is newer.
 */
#ifndef TC_STORE_H
#define TC_STORE_H

#include "common/internal.h"

typedef struct tc__store tc__store;

/* One change of the feed: key's row was written (or deleted) and now has (or, deleted, took)
 * version; seq orders the changes. */
typedef int (*tc__change_fn)(void *ctx, int64_t seq, const char *key, size_t key_len,
                             int64_t version);

/* Whether the feed's lease holder named holder is known to be dead (feed_takeover). */
typedef int (*tc__holder_dead_fn)(void *ctx, const char *holder);

typedef struct tc__store_ops {
    /* TC_OK after fn(ctx, value, len, version, -1), TC_ENOTFOUND, TC_ESTORE, or fn's result. */
    int (*get)(tc__store *s, const char *key, size_t key_len, tc__value_fn fn, void *ctx);
    /* Commits the value; *out_version receives its new version. TC_OK only once committed. */
    int (*put)(tc__store *s, const char *key, size_t key_len, const void *value, size_t len,
               int64_t *out_version);
    /* Commits the deletion (absent keys included); *out_version receives the version that the
     * deletion took, newer than any the key had. */
    int (*del)(tc__store *s, const char *key, size_t key_len, int64_t *out_version);
    void (*close)(tc__store *s);
    /* Optional (NULL: the read path asks get key by key): the n keys in as few round trips as
     * the database allows; fn(ctx, i, value, len, version) for each key i found, in any order.
     * TC_OK (also when some were not found), TC_ESTORE, or fn's result. */
    int (*get_many)(tc__store *s, size_t n, const char *const *keys, const size_t *key_lens,
                    int (*fn)(void *ctx, size_t i, const void *value, size_t len,
                              int64_t version),
                    void *ctx);

    /* The change feed (store.h's built-in stores; NULL in a store without one): a log of every
     * insert, update and delete of the table, plain SQL by other programs included (triggers
     * write it), with a sequence that only increases, and per consumer a checkpoint and a
     * lease, so that one invalidator at a time applies it.
     *
     * feed_read: fn for each change after seq `after`, in order, at most max; *out_n how many.
     * fn's non-OK result stops the walk and is returned. */
    int (*feed_read)(tc__store *s, int64_t after, int max, tc__change_fn fn, void *ctx,
                     int *out_n);
    /* Takes or renews consumer's lease for holder until now + lease_ms, and reads its
     * checkpoint (0 for a new consumer). TC_OK, TC_ESTATE (another holder's lease is live). */
    int (*feed_claim)(tc__store *s, const char *consumer, const char *holder, int64_t lease_ms,
                      int64_t *out_seq);
    /* Moves consumer's checkpoint up to seq if holder still holds the lease (TC_ESTATE if not;
     * a checkpoint never goes back). */
    int (*feed_commit)(tc__store *s, const char *consumer, const char *holder, int64_t seq);
    /* Gives the lease up at once (a clean stop: the standby need not wait for it to expire). */
    int (*feed_release)(tc__store *s, const char *consumer, const char *holder);
    /* Takes consumer's lease from its current holder, live lease or not, when dead(ctx,
     * holder) says that holder is dead (its process is gone: the caller can tell for holders
     * on its own host), and reads the checkpoint. TC_OK, TC_ESTATE (no holder, a live one, or
     * the lease changed hands meanwhile: claim again). */
    int (*feed_takeover)(tc__store *s, const char *consumer, const char *holder, int64_t lease_ms,
                         tc__holder_dead_fn dead, void *ctx, int64_t *out_seq);
    /* Deletes changes every consumer has passed that are older than retention_ms. */
    int (*feed_trim)(tc__store *s, int64_t retention_ms, int64_t *out_removed);
    /* Waits up to timeout_ms for changes after `after`: woken at once by this process's own
     * writes through the store, and by the database's notifications where it has them
     * (PostgreSQL's NOTIFY); otherwise the caller's poll interval is the delay. TC_OK, or
     * TC_ESTORE when the database cannot be reached (after waiting out the timeout, so that a
     * polling caller never spins). */
    int (*feed_wait)(tc__store *s, int64_t after, int64_t timeout_ms);
} tc__store_ops;

/* Every store begins with this header. Stores are thread-safe and fork-safe (a child never
 * uses its parent's database connection). owner tags error messages (tc__err). */
struct tc__store {
    const tc__store_ops *ops;
    const void *owner;
};

/* The SQLite store: a table (key TEXT PRIMARY KEY, value BLOB, version INTEGER, updated_at
 * INTEGER) in WAL mode, created if missing, with triggers that give a new version to rows that
 * other programs write in plain SQL. */
int tc__store_sqlite_open(tc__store **out, const char *path, const char *table,
                          int64_t busy_timeout_ms, const void *owner);

/* The PostgreSQL store (store_pg.c): the same table shape (key TEXT PRIMARY KEY, value BYTEA,
 * version BIGINT, updated_at BIGINT) with a sequence and a trigger that give every insert and
 * update a new version, plain SQL from other programs included. Connections come from a pool of
 * at most pool_size, opened on demand and kept (the module-scope connection); a connection the
 * server dropped is reopened once on the next call. conninfo is libpq's ("" for its defaults);
 * messages never show its password. */
int tc__store_pg_open(tc__store **out, const char *conninfo, const char *table,
                      int64_t pool_size, const void *owner);

/* The caches alone (store_none.c): puts and deletes commit nothing and return versions from
 * the wall clock (microseconds, increasing within the process); gets find nothing. */
int tc__store_none_open(tc__store **out, const void *owner);

/* The DynamoDB store (store_ddb.c): an item per key with its value and version attributes,
 * through DynamoDB's JSON API (signed with SigV4) on kept-alive connections; the change feed is
 * the table's stream. Empty strings mean the default (endpoint: the region's; region: the
 * environment's AWS_REGION, else us-east-1; credentials: the environment's, else these). */
typedef struct tc__ddb_options {
    const char *table, *region, *endpoint, *streams_endpoint;
    const char *access_key_id, *secret_access_key, *session_token;
    const char *key_attribute, *value_attribute, *version_attribute;
    int create_table;
    int64_t timeout_ms, max_value_bytes;
} tc__ddb_options;
int tc__store_ddb_open(tc__store **out, const tc__ddb_options *o, const void *owner);

/* The store a user supplies through tc_config_set_store (store_user.c). */
struct tc__user_store;
int tc__store_user_open(tc__store **out, struct tc__user_store *def, int64_t max_value_bytes,
                        const void *owner);
/* Counted references on a definition: a config and each cache opened from it hold one. */
/* A definition of the caller's callbacks (all three given), with one reference: NULL and
 * TC_ENOMEM if it cannot be made. */
int tc__user_store_new(struct tc__user_store **out, tc_store_get_fn get, tc_store_put_fn put,
                       tc_store_del_fn del, void *userdata, tc_store_free_fn free_userdata);
void tc__user_store_ref(struct tc__user_store *def);
void tc__user_store_unref(struct tc__user_store *def);

#endif
