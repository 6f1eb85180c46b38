/*
 * open.c - tc_open builds a handle from a config in the order the data flows up: the store,
 * the edge, Redis and its subscriber, single flight, the refresher, then the bus; tc_close takes
 * it down in the reverse order.
 */
#include "core/handle.h"
#include "core/fork.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- open: one step a part, in the order the data flows up ------------------------------- */

static int open_store(tc_cache *c)
{
    const tc_config *k = c->cfg;
    if (k->user_store != NULL)
        return tc__store_user_open(&c->store, k->user_store, k->max_value_bytes, c);
    if (strcmp(k->store_type, "none") == 0)
        return tc__store_none_open(&c->store, c);
    if (strcmp(k->store_type, "dynamodb") == 0) {
        tc__ddb_options o = {k->store_table,          k->store_region,
                             k->store_endpoint,       k->store_streams_endpoint,
                             k->store_access_key_id,  k->store_secret_access_key,
                             k->store_session_token,  k->store_key_attribute,
                             k->store_value_attribute, k->store_version_attribute,
                             k->store_create_table,   k->store_timeout_ms,
                             k->max_value_bytes};
        return tc__store_ddb_open(&c->store, &o, c);
    }
    if (strcmp(k->store_type, "postgres") == 0)
        return tc__store_pg_open(&c->store, k->store_conninfo, k->store_table,
                                 k->store_pool_size, c);
    return tc__store_sqlite_open(&c->store, k->store_path, k->store_table,
                                 k->store_busy_timeout_ms, c);
}

static int open_edge(tc_cache *c)
{
    const tc_config *k = c->cfg;
    if (!k->edge_enabled)
        return TC_OK;
    int rc = tc__edge_new(&c->edge, (size_t)k->edge_max_entries, (size_t)k->edge_max_bytes);
    return rc == TC_OK ? TC_OK : tc__err(NULL, rc, "tc_open: cannot create the edge tier");
}

/* The tier and the subscriber, which connects as the tier does; none without a host or
 * socket. */
static int open_redis(tc_cache *c)
{
    const tc_config *k = c->cfg;
    if (k->redis_host[0] == '\0' && k->redis_unix_socket[0] == '\0')
        return TC_OK;
    tc__redis_opts o = {
        .host = k->redis_host,
        .port = (int)k->redis_port,
        .unix_socket = k->redis_unix_socket,
        .ns = k->redis_namespace,
        .connect_timeout_ms = k->redis_connect_timeout_ms,
        .command_timeout_ms = k->redis_command_timeout_ms,
        .retry_interval_ms = k->redis_retry_interval_ms,
        .retry_max_ms = k->redis_retry_max_ms,
        .username = k->redis_username,
        .password = k->redis_password,
        .database = (int)k->redis_database,
        .keepalive = k->redis_keepalive,
        /* Records add their header (HTTP headers are bounded by tc_put_http). */
        .max_value_bytes = (size_t)k->max_value_bytes + 128 * 1024,
        .tombstone_ttl_ms = k->tombstone_ttl_ms,
        .autopipe = strcmp(k->redis_pipelining, "auto") == 0,
    };
    int rc = tc__redis_new(&c->redis, &o, c, &c->stats);
    /* The subscriber PINGs after a quiet interval and calls the link lost after two: half of
     * command_timeout_ms, so a stalled server is treated as down (the edge stops serving and is
     * emptied before it serves again) within the time a command would wait for it. */
    int64_t ping = k->redis_command_timeout_ms / 2;
    ping = ping < 10 ? 10 : ping > 1000 ? 1000 : ping;
    return rc == TC_OK ? tc__pubsub_new(&c->pubsub, &o, ping, c) : rc;
}

/* What the read path keeps per process: single flight (unless off) and the refresher. */
static int open_readers(tc_cache *c)
{
    int rc = c->cfg->single_flight ? tc__flights_new(&c->flights) : TC_OK;
    if (rc == TC_OK)
        rc = tc__refresher_new(&c->refresher, tc__refresh_key, c, 64);
    return rc == TC_OK ? TC_OK : tc__err(NULL, rc, "tc_open: out of memory");
}

/* Keeps the detail for tc_errmsg(NULL): it was recorded under c, which dies here. */
static int open_failed(tc_cache *c, int rc)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", tc_errmsg(NULL));
    tc_close(c);
    tc__err(NULL, rc, "%s", msg);
    return rc;
}

int tc_open(tc_cache **out, const tc_config *cfg)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_open: out is NULL");
    *out = NULL;
    tc_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return tc__err(NULL, TC_ENOMEM, "tc_open: out of memory");
    pthread_mutex_init(&c->leases_mu, NULL);
    pthread_mutex_init(&c->journal_mu, NULL);
    int rc = cfg != NULL ? tc__config_dup(&c->cfg, cfg) : tc_config_new(&c->cfg);
    if (rc == TC_OK)
        rc = open_store(c);
    if (rc == TC_OK)
        rc = open_edge(c);
    if (rc == TC_OK)
        rc = open_redis(c);
    if (rc == TC_OK)
        rc = open_readers(c);
    if (rc == TC_OK)
        rc = tc__bus_start(c);
    if (rc != TC_OK)
        return open_failed(c, rc);
    atomic_store(&c->fork_gen, tc__fork_generation());
    *out = c;
    return TC_OK;
}

/* ---- close: the reverse order ---------------------------------------------------------------- */

void tc_close(tc_cache *c)
{
    if (c == NULL)
        return;
    tc__fork_repair(c, 0); /* in a fork()ed child, forget the parent's threads (start none) */
    tc__pubsub_free(c->pubsub);       /* no callback runs after this */
    tc__bus_journal_flush(c);         /* a last try for what could not be published */
    tc__bus_journal_free(c);
    free(c->bus_channel);
    tc__refresher_free(c->refresher); /* its thread uses the tiers */
    tc__flights_free(c->flights);
    tc__redis_free(c->redis);
    tc__edge_free(c->edge);
    if (c->store != NULL)
        c->store->ops->close(c->store);
    tc_config_free(c->cfg);
    pthread_mutex_destroy(&c->leases_mu);
    pthread_mutex_destroy(&c->journal_mu);
    free(c);
}
