/*
 * ddb_impl.h - inside the DynamoDB store: the HTTP client that signs and sends the JSON API's
 * calls (ddb_conn.c), the store's operations (store_ddb.c) and the Streams change feed
 * (ddb_feed.c).
 */
#ifndef TC_DDB_IMPL_H
#define TC_DDB_IMPL_H

#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#define DDB_POOL 8 /* kept easy handles (each with its kept-alive connection) at most */

/* One endpoint (DynamoDB's, or its Streams'): where, how to sign, and the kept handles. */
typedef struct ddb_client {
    char *url;     /* "https://dynamodb.us-east-1.amazonaws.com/" or the configured endpoint */
    char *host;    /* the Host header: host[:port] as in url */
    char *prefix;  /* the X-Amz-Target prefix: "DynamoDB_20120810." or "DynamoDBStreams_..." */
    const char *region, *access_key_id, *secret_access_key, *session_token; /* the store's */
    int64_t timeout_ms;
    const void *owner;
    pthread_mutex_t *mu; /* replaced in a fork()ed child (ddb_fork_fixup) */
    void *idle[DDB_POOL]; /* CURL * */
    int nidle;
    atomic_uint gen, fixing;
} ddb_client;

/* A call's outcome besides TC_OK: the service's error (its __type, short form) is in why. */
#define DDB_TYPE_MAX 96

/* The store (store_ddb.c) with its feed's state (ddb_feed.c). */
typedef struct ddb_feed ddb_feed;
typedef struct ddb_store {
    tc__store base;
    ddb_client db, streams;
    char *table, *feed_table;
    char *key_attr, *value_attr, *version_attr;
    char *region, *access_key_id, *secret_access_key, *session_token;
    int64_t max_value_bytes;
    int create_table; /* store.create_table: the feed's table too */
    ddb_feed *feed;
    /* Woken by this process's own writes (feed_wait). */
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    atomic_llong writes;
} ddb_store;

/* Sets the client up for url (NULL: DynamoDB's regional endpoint, or, when streams, the
 * Streams one). TC_OK, TC_ECONFIG (a URL that is not http(s)://host[:port][/]), TC_ENOMEM. */
int tc__ddb_client_init(ddb_client *c, const char *url, int streams, const ddb_store *s);
void tc__ddb_client_free(ddb_client *c);

/* Sends operation (e.g. "GetItem") with body, signed; *out receives the parsed answer (free it
 * with json_decref). Throttling, 5xx and failed connections are retried with capped
 * exponential backoff and jitter until the client's timeout. TC_OK; TC_ESTATE when the service
 * answered ConditionalCheckFailedException (no message is recorded: the caller decides);
 * TC_ESTORE with DynamoDB's type and message in tc_errmsg otherwise; TC_ENOMEM. type, when not
 * NULL, receives the error's short type ("" on success). */
int tc__ddb_call(ddb_client *c, const char *operation, json_t *body, json_t **out,
                 char type[DDB_TYPE_MAX]);

/* The Streams feed (ddb_feed.c): store.h's feed operations over the table's stream, with the
 * consumers' checkpoints and leases in the table <table>_tc_feed. */
int tc__ddb_feed_read(tc__store *s, int64_t after, int max, tc__change_fn fn, void *ctx,
                      int *out_n);
int tc__ddb_feed_claim(tc__store *s, const char *consumer, const char *holder, int64_t lease_ms,
                       int64_t *out_seq);
int tc__ddb_feed_commit(tc__store *s, const char *consumer, const char *holder, int64_t seq);
int tc__ddb_feed_release(tc__store *s, const char *consumer, const char *holder);
int tc__ddb_feed_takeover(tc__store *s, const char *consumer, const char *holder,
                          int64_t lease_ms, tc__holder_dead_fn dead, void *ctx,
                          int64_t *out_seq);
int tc__ddb_feed_trim(tc__store *s, int64_t retention_ms, int64_t *out_removed);
int tc__ddb_feed_wait(tc__store *s, int64_t after, int64_t timeout_ms);
void tc__ddb_feed_free(ddb_store *s);

/* (ddb_item.c) Creates table (a string partition key key_attr, on demand billing, and with stream a
 * NEW_AND_OLD_IMAGES stream) unless it exists, and waits until it is ACTIVE. */
int tc__ddb_ensure_table(ddb_store *s, const char *table, const char *key_attr, int stream);

/* A version attribute's value ({"N": "123"}), or 0 when absent or not a plain count
 * (ddb_item.c, as the two below and tc__ddb_ensure_table). */
int64_t tc__ddb_number(json_t *attr);
/* The version a stream record (its NewImage / OldImage) stands for: the new
 * image's version when it went up, else one past the old one (a write from outside the library
 * that left the version alone, or a plain DeleteItem). */
int64_t tc__ddb_change_version(const ddb_store *s, json_t *new_image, json_t *old_image);
/* The key of an image as a string, or NULL. */
const char *tc__ddb_image_key(const ddb_store *s, json_t *image, size_t *len);

#endif
