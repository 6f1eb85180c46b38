/*
 * tier.c - the Redis tier (redis_tier.h): versioned values and tombstones in a small binary
 * envelope, one retry after a dropped connection, and a journal of invalidations that could not be
 * delivered while Redis was unreachable.
 *
 * Every command is sent argv-style with explicit lengths (tc__resp_command, redis_conn.h, which
 * writes RESP as redisCommandArgv does, with less work): keys and values are binary and never
 * pass through a format string.
 *
 * The journal. A put is committed to the store before the tier is updated; if the update then
 * fails (Redis down, timeout, error reply), Redis may still hold the previous version and would
 * shadow the committed one once it is reachable again. So every key whose set, tombstone or
 * del failed is remembered (deduplicated, up to PEND_MAX keys) and, before any command is run
 * on a connection, the remembered keys are DELeted; reads are not served until that succeeded.
 * A key leaves the journal only after a DEL sent after its last failure succeeded (each entry
 * carries the sequence number of its last failure). If the journal overflows (or cannot
 * allocate), it falls back to deleting every key under the namespace with SCAN + DEL before
 * serving: slow, but never wrong. With an empty namespace that is every key of the database.
 *
 * Connections, the breaker and fork safety are in redis_conn.c. The journal is protected by
 * the connection object's mutex. A child inherits the journal and applies it too; if a parent
 * thread was changing the journal at the instant of fork() (rare: only while writes fail or
 * the journal is being emptied), the child cannot trust it and falls back to clearing the
 * namespace (journal_torn).
 */
#include "redis/tier_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the tier ---------------------------------------------------------------------------- */

int tc__redis_new(tc__redis **out, const tc__redis_opts *opts, const void *owner,
                  tc__stats *stats)
{
    if (out == NULL)
        return tc__err(owner, TC_EINVAL, "redis: out is NULL");
    *out = NULL;
    if (opts == NULL)
        return tc__err(owner, TC_EINVAL, "redis: options are NULL");
    tc__redis *r = calloc(1, sizeof *r);
    if (r == NULL)
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    r->owner = owner;
    r->stats = stats != NULL ? stats : &r->own_stats;
    r->max_value_bytes = opts->max_value_bytes;
    r->tombstone_ttl_ms = opts->tombstone_ttl_ms > 0 ? opts->tombstone_ttl_ms : 10000;
    atomic_init(&r->pend_active, 0);
    atomic_init(&r->pend_busy, 0);
    atomic_init(&r->ap_calls, 0);

    const char *ns = opts->ns != NULL ? opts->ns : "";
    r->ns_len = strlen(ns);
    r->ns = malloc(r->ns_len + 1);
    /* SCAN MATCH is a glob: escape its metacharacters so a namespace like "app[1]:" matches
     * only itself. Worst case every byte is escaped, plus the trailing '*'. */
    r->scan_pattern = r->ns_len < SIZE_MAX / 2 - 2 ? malloc(2 * r->ns_len + 2) : NULL;
    if (r->ns == NULL || r->scan_pattern == NULL) {
        free(r->ns);
        free(r->scan_pattern);
        free(r);
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    }
    memcpy(r->ns, ns, r->ns_len + 1);
    size_t j = 0;
    for (size_t i = 0; i < r->ns_len; i++) {
        if (strchr("*?[]\\", ns[i]) != NULL)
            r->scan_pattern[j++] = '\\';
        r->scan_pattern[j++] = ns[i];
    }
    r->scan_pattern[j++] = '*';
    r->scan_pattern[j] = '\0';
    r->scan_pattern_len = j;

    tc__rconns_opts co = {
        .host = opts->host,
        .port = opts->port,
        .unix_socket = opts->unix_socket,
        .connect_timeout_ms = opts->connect_timeout_ms,
        .command_timeout_ms = opts->command_timeout_ms,
        .retry_interval_ms = opts->retry_interval_ms,
        .retry_max_ms = opts->retry_max_ms,
        .username = opts->username,
        .password = opts->password,
        .database = opts->database,
        .keepalive = opts->keepalive,
        .on_torn = tc__rt_journal_torn,
        .on_torn_arg = r,
    };
    int rc = tc__rconns_new(&r->conns, &co, owner, r->stats);
    if (rc == TC_OK && opts->autopipe) {
        rc = tc__ap_new(&r->ap, r->conns, owner, r->stats);
        if (rc != TC_OK)
            tc__rconns_free(r->conns);
    }
    if (rc != TC_OK) {
        free(r->ns);
        free(r->scan_pattern);
        free(r);
        return rc;
    }
    *out = r;
    return TC_OK;
}

/* Like tc_close, it must not run concurrently with any other use of r: no call in progress, and
 * no thread that used r exiting meanwhile (its connection's destructor would race with the
 * teardown; see tc__rconns_free). */
void tc__redis_free(tc__redis *r)
{
    if (r == NULL)
        return;
    tc__ap_free(r->ap);
    tc__rconns_free(r->conns);
    if (r->pend_buckets != NULL) {
        for (size_t i = 0; i < PEND_BUCKETS; i++) {
            pend_entry *e = r->pend_buckets[i];
            while (e != NULL) {
                pend_entry *next = e->next;
                free(e);
                e = next;
            }
        }
        free(r->pend_buckets);
    }
    free(r->ns);
    free(r->scan_pattern);
    free(r);
}

int tc__redis_get(tc__redis *r, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    nskey k;
    rc = tc__rt_nskey_make(&k, r, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *argv[2] = {"GET", k.p};
    size_t lens[2] = {3, k.len};
    redisReply *rep;
    rc = tc__rt_run(r, "GET", 2, argv, lens, &rep);
    tc__rt_nskey_free(&k);
    if (rc != TC_OK)
        return rc;
    /* The connection is released already: fn may do anything, even fork. */
    rc = tc__rt_deliver(r, rep, fn, ctx);
    freeReplyObject(rep);
    return rc;
}

/* A guarded write of an envelope with PX. Any failure after the key was found valid journals
 * the key; a refusal (a newer version is there) is not a failure. */
/* A message the guard script publishes after its write (tc__redis_set_publish). */
typedef struct publication {
    const char *channel;
    size_t channel_len;
    const void *msg;
    size_t msg_len;
} publication;

static int write_envelope(tc__redis *r, const char *key, size_t key_len, char kind,
                          const void *payload, size_t len, int64_t version, int64_t ttl_ms,
                          int keep_equal, const publication *pub)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *where = tc__rconns_where(r->conns);
    int64_t now = tc__wall_ms();
    char *blob = NULL;
    size_t blob_len = 0;
    nskey k = {0};
    if (payload == NULL && len > 0)
        rc = tc__err(r->owner, TC_EINVAL, "redis: value is NULL");
    else if (ttl_ms <= 0 || ttl_ms > INT64_MAX - now)
        rc = tc__err(r->owner, TC_EINVAL, "redis: ttl_ms %lld is out of range",
                     (long long)ttl_ms);
    else if (version < 0)
        rc = tc__err(r->owner, TC_EINVAL, "redis: version %lld is negative", (long long)version);
    else if (len > r->max_value_bytes)
        rc = tc__err(r->owner, TC_ETOOBIG, "redis: value of %zu bytes exceeds max_value_bytes "
                     "(%zu)", len, r->max_value_bytes);
    else if (tc__rt_envelope_build(&blob, &blob_len, kind, version, now + ttl_ms, payload,
                                   len) != 0)
        rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    else
        rc = tc__rt_nskey_make(&k, r, key, key_len);

    if (rc == TC_OK) {
        char px[24];
        snprintf(px, sizeof px, "%lld", (long long)ttl_ms);
        redisReply *rep;
        const char *rest[7] = {"1", k.p, blob, px, keep_equal ? "1" : "0"};
        size_t lens[7] = {1, k.len, blob_len, strlen(px), 1};
        int nrest = keep_equal ? 5 : 4;
        if (pub != NULL) {
            rest[5] = pub->channel, lens[5] = pub->channel_len;
            rest[6] = pub->msg, lens[6] = pub->msg_len;
            nrest = 7;
        }
        rc = tc__rt_run_script(r, TC__SCRIPT_GUARD, nrest, rest, lens, &rep);
        if (rc == TC_OK) {
            if (rep->type != REDIS_REPLY_INTEGER || (rep->integer != 0 && rep->integer != 1))
                rc = rep->type == REDIS_REPLY_INTEGER
                         ? tc__err(r->owner, TC_EPROTO, "redis %s: write: unexpected reply %lld",
                                   where, (long long)rep->integer)
                         : tc__rt_reply_error(r, rep, "write", "integer");
            freeReplyObject(rep);
        }
        tc__rt_nskey_free(&k);
    }
    free(blob);
    if (rc != TC_OK)
        tc__rt_pend_add(r, key, key_len, version);
    return rc;
}

int tc__redis_set_publish(tc__redis *r, const char *key, size_t key_len, const void *value,
                          size_t len, int64_t version, int64_t ttl_ms, const char *channel,
                          size_t channel_len, const void *msg, size_t msg_len)
{
    publication pub = {channel, channel_len, msg, msg_len};
    return write_envelope(r, key, key_len, ENV_VALUE, value, len, version, ttl_ms, 0, &pub);
}

int tc__redis_set(tc__redis *r, const char *key, size_t key_len, const void *value, size_t len,
                  int64_t version, int64_t ttl_ms)
{
    return write_envelope(r, key, key_len, ENV_VALUE, value, len, version, ttl_ms, 0, NULL);
}

int tc__redis_tombstone(tc__redis *r, const char *key, size_t key_len, int64_t version,
                        int64_t ttl_ms)
{
    return write_envelope(r, key, key_len, ENV_TOMBSTONE, NULL, 0, version, ttl_ms, 0, NULL);
}

int tc__redis_retire(tc__redis *r, const char *key, size_t key_len, int64_t version,
                     int64_t ttl_ms)
{
    return write_envelope(r, key, key_len, ENV_TOMBSTONE, NULL, 0, version, ttl_ms, 1, NULL);
}

void tc__redis_set_tracking(tc__redis *r, long long client_id)
{
    tc__rconns_set_tracking(r->conns, client_id, r->ns, r->ns_len);
}

int tc__redis_retire_publish(tc__redis *r, const char *key, size_t key_len, int64_t version,
                             int64_t ttl_ms, const char *channel, size_t channel_len,
                             const void *msg, size_t msg_len)
{
    publication pub = {channel, channel_len, msg, msg_len};
    return write_envelope(r, key, key_len, ENV_TOMBSTONE, NULL, 0, version, ttl_ms, 1, &pub);
}

int tc__redis_del(tc__redis *r, const char *key, size_t key_len)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    nskey k;
    rc = tc__rt_nskey_make(&k, r, key, key_len);
    if (rc == TC_OK) {
        settle_item item = {k.p, k.len, -1};
        rc = tc__rt_conn_settle(r, NULL, &item, 1, NULL); /* a script call of its own */
        tc__rt_nskey_free(&k);
    }
    if (rc != TC_OK)
        tc__rt_pend_add(r, key, key_len, -1);
    return rc;
}
