/*
 * config.h - the configuration, as tc_open reads it.
 */
#ifndef TC_CONFIG_H
#define TC_CONFIG_H

#include "common/internal.h"

struct tc_config {
    int64_t default_ttl_ms, max_value_bytes, tombstone_ttl_ms;
    int64_t ttl_jitter_pct; /* cache TTLs are cut by up to this percentage, at random */
    int64_t negative_ttl_ms; /* how long the edge remembers a key the store lacks; 0: not */
    int single_flight;      /* one store read per key at a time in this process */
    int edge_enabled;
    int64_t edge_max_entries, edge_max_bytes, edge_max_ttl_ms;
    char *redis_host, *redis_unix_socket, *redis_namespace;
    int64_t redis_port, redis_connect_timeout_ms, redis_command_timeout_ms,
        redis_retry_interval_ms, redis_retry_max_ms;
    char *redis_username, *redis_password; /* "" for none */
    int64_t redis_database;                /* SELECT when > 0 */
    int redis_keepalive;
    int redis_bus;             /* the invalidation bus: publish writes, evict on messages */
    int redis_tracking;        /* CLIENT TRACKING: Redis-side changes evict from the edge */
    char *redis_bus_channel;   /* under the namespace */
    char *redis_pipelining;    /* "auto" or "off" */
    char *store_type, *store_path, *store_table;
    char *store_conninfo;          /* postgres: libpq conninfo ("" for libpq's defaults) */
    int64_t store_busy_timeout_ms;
    int64_t store_pool_size;       /* postgres: connections kept open at most */
    int64_t store_stale_window_ms; /* store down: serve a value expired less than this ago */
    /* dynamodb: where, as whom, the item's attribute names, whether to create the tables,
     * and how long one call may take with its retries */
    char *store_region, *store_endpoint, *store_streams_endpoint;
    char *store_access_key_id, *store_secret_access_key, *store_session_token;
    char *store_key_attribute, *store_value_attribute, *store_version_attribute;
    int store_create_table;
    int64_t store_timeout_ms;
    int64_t lease_ms;              /* cross-process miss lease in Redis; 0: none */
    int64_t lease_wait_ms;         /* how long a process waits for another's lease */
    struct tc__user_store *user_store; /* tc_config_set_store; counted reference */
    /* The invalidator (invalidator.c): the feed's consumer name, its poll interval, batch
     * size, lease, and how long applied changes stay in the log. */
    char *feed_consumer;
    int64_t feed_poll_ms, feed_batch, feed_lease_ms, feed_retention_ms;
    char errmsg[320];
};

/* A deep copy (tc_open keeps its own). */
int tc__config_dup(tc_config **out, const tc_config *src);

#endif
