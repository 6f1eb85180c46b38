/*
 * buslink.c - the handle's end of the invalidation bus (common/bus.h has the message format):
 * what its writes publish, and what it applies to its edge of the other handles' writes.
 */
#include "core/handle.h"
#include "core/cache.h"
#include "common/pattern.h"

#include <hiredis.h>
#include <stdlib.h>
#include <string.h>

/* ---- the journal -------------------------------------------------------------------------
 *
 * A write has committed when it publishes, so a message that cannot go out (Redis down, or
 * too slow: command_timeout_ms) must not be forgotten: another handle whose link to Redis
 * stayed up would keep the old copy in its edge. The journal keeps such messages in memory,
 * bounded; once Redis answers again they go out before this handle's next message, before it
 * reads Redis, and when its own subscription comes back. A journal that overflowed is sent as
 * one FLUSH (every edge empties: colder, never stale). The durable record of the same writes
 * is the store's change feed, which the invalidator replays after a crash of this process. */

typedef struct tc__journal_entry {
    struct tc__journal_entry *next;
    unsigned op;
    int64_t version;
    size_t len;
    char arg[];
} journal_entry;

static void journal_free_list(journal_entry *e)
{
    while (e != NULL) {
        journal_entry *next = e->next;
        free(e);
        e = next;
    }
}

/* Appends the message (or marks the journal overflowed). */
static void journal_add(tc_cache *c, unsigned op, int64_t version, const char *arg,
                        size_t arg_len)
{
    journal_entry *e = NULL;
    pthread_mutex_lock(&c->journal_mu);
    int n = atomic_load(&c->journal_n);
    if (n < TC__JOURNAL_MAX && (e = malloc(sizeof *e + arg_len)) != NULL) {
        *e = (journal_entry){.op = op, .version = version, .len = arg_len};
        memcpy(e->arg, arg, arg_len);
        journal_entry **pp = &c->journal;
        while (*pp != NULL)
            pp = &(*pp)->next;
        *pp = e;
        atomic_store(&c->journal_n, n + 1);
    } else {
        /* Full, or out of memory: the entries are replaced by one FLUSH. */
        journal_free_list(c->journal);
        c->journal = NULL;
        atomic_store(&c->journal_n, TC__JOURNAL_MAX + 1);
    }
    pthread_mutex_unlock(&c->journal_mu);
}

void tc__bus_journal_flush(tc_cache *c)
{
    if (!tc__bus_journal_pending(c) || atomic_exchange(&c->journal_flushing, 1))
        return;
    /* Taken out whole, sent without the lock (each send may wait command_timeout_ms); what
     * was added meanwhile queues behind what is put back. */
    pthread_mutex_lock(&c->journal_mu);
    journal_entry *list = c->journal;
    int overflowed = atomic_load(&c->journal_n) > TC__JOURNAL_MAX;
    c->journal = NULL;
    atomic_store(&c->journal_n, 0);
    pthread_mutex_unlock(&c->journal_mu);
    int ok = 1;
    if (overflowed) {
        ok = tc__bus_send(c, TC__BUS_FLUSH, 0, "*", 1) == TC_OK;
        if (!ok)
            journal_add(c, TC__BUS_FLUSH, 0, "*", 1);
    }
    while (ok && list != NULL) {
        if (tc__bus_send(c, list->op, list->version, list->arg, list->len) != TC_OK)
            break;
        journal_entry *next = list->next;
        free(list);
        list = next;
    }
    if (list != NULL) {
        /* Put back in front of what came meanwhile: order is kept. */
        pthread_mutex_lock(&c->journal_mu);
        int n = 0;
        journal_entry **pp = &list;
        while (*pp != NULL)
            pp = &(*pp)->next, n++;
        int was = atomic_load(&c->journal_n);
        if (was > TC__JOURNAL_MAX || was + n > TC__JOURNAL_MAX) {
            journal_free_list(list);
            journal_free_list(c->journal);
            c->journal = NULL;
            atomic_store(&c->journal_n, TC__JOURNAL_MAX + 1);
        } else {
            *pp = c->journal;
            c->journal = list;
            atomic_store(&c->journal_n, was + n);
        }
        pthread_mutex_unlock(&c->journal_mu);
    }
    atomic_store(&c->journal_flushing, 0);
}

void tc__bus_journal_free(tc_cache *c)
{
    journal_free_list(c->journal);
    c->journal = NULL;
    atomic_store(&c->journal_n, 0);
}

/* Tells the other handles what changed. A failure is counted, not reported (the write itself
 * succeeded): the message goes to the journal, which goes out first next time. */
void tc__bus_publish(tc_cache *c, unsigned op, int64_t version, const char *arg,
                     size_t arg_len)
{
    if (!c->publish)
        return;
    tc__bus_journal_flush(c);
    if (tc__bus_journal_pending(c) || tc__bus_send(c, op, version, arg, arg_len) != TC_OK)
        journal_add(c, op, version, arg, arg_len);
}

int tc__bus_send(tc_cache *c, unsigned op, int64_t version, const char *arg,
                 size_t arg_len)
{
    unsigned char msg[TC__BUS_HEADER + TC_KEY_MAX];
    size_t n = tc__bus_own_msg(c, msg, op, version, arg, arg_len);
    const char *argv[] = {"PUBLISH", c->bus_channel, (const char *)msg};
    const size_t lens[] = {7, c->bus_channel_len, n};
    struct redisReply *reply = NULL;
    /* Idempotent as far as the receivers go: an invalidation applied twice is one. */
    int rc = tc__redis_run(c->redis, "PUBLISH", 1, 3, argv, lens, &reply);
    if (rc == TC_OK && (reply == NULL || reply->type != REDIS_REPLY_INTEGER))
        rc = TC_EPROTO;
    if (rc != TC_OK)
        TC__INC(c->stats.redis.errors);
    if (reply != NULL)
        freeReplyObject(reply);
    return rc;
}

/* On the subscriber thread: another handle's write. Its own are skipped: they updated this
 * edge already. A message that makes no sense is dropped. */
static void bus_message(void *ctx, const char *channel, size_t channel_len, const void *data,
                        size_t len)
{
    tc_cache *c = ctx;
    tc__bus_msg m;
    if (tc__bus_decode(&m, data, len) != TC_OK) {
        TC__INC(c->stats.redis.errors);
        return;
    }
    if (memcmp(m.sender, c->bus_id, TC__BUS_ID_LEN) == 0)
        return;
    /* Unversioned evictions void the fills whose reads began before them (fill_edge). The
     * epoch moves first: a fill that lands after the eviction walked its shard then sees it. */
    if (m.op != TC__BUS_CHANGED)
        atomic_fetch_add(&c->edge_epoch, 1);
    switch (m.op) {
    case TC__BUS_CHANGED:
        /* Copies older than the new version go. One of the very version stays: versions are
         * unique per write, so it is that write's value (filled from Redis after the write,
         * before its message arrived, or this message is the invalidator's for a write made
         * through the library). */
        if (tc__edge_retire(c->edge, m.arg, m.arg_len, m.version,
                            tc__min64(c->cfg->tombstone_ttl_ms, c->cfg->edge_max_ttl_ms)) < 0)
            tc__edge_remove(c->edge, m.arg, m.arg_len);
        break;
    case TC__BUS_DROP:
        tc__edge_remove(c->edge, m.arg, m.arg_len);
        break;
    case TC__BUS_PATTERN:
        if (tc__pattern_check(NULL, m.arg, m.arg_len) == TC_OK) {
            tc__pattern_ref pat = {m.arg, m.arg_len};
            tc__edge_remove_matching(c->edge, tc__match_pattern, &pat);
        }
        break;
    case TC__BUS_TAG: {
        tc__tag_ref t = {m.arg, m.arg_len};
        tc__edge_remove_matching(c->edge, tc__match_tag, &t);
        break;
    }
    case TC__BUS_FLUSH:
        tc__edge_clear(c->edge);
        break;
    }
    tc__bus_hook hook = atomic_load(&tc__hook_bus_applied);
    if (hook != NULL)
        hook(c);
}

/* On the subscriber thread: Redis says a key this handle's connections read changed, by
 * whoever changed it (another client's SET or DEL, redis-cli, an expiry, an eviction), or with
 * key NULL that any may have (FLUSHALL). Unversioned: the copy goes, and the epoch moves
 * first, so that a fill whose Redis read began before cannot land after. */
static void tracked(void *ctx, const char *key, size_t key_len)
{
    tc_cache *c = ctx;
    atomic_fetch_add(&c->edge_epoch, 1);
    if (key == NULL)
        tc__edge_clear(c->edge);
    else
        tc__edge_remove(c->edge, key, key_len);
}

/* On the subscriber thread: while the subscription is down, messages may be lost. */
static void bus_link(void *ctx, int up)
{
    tc_cache *c = ctx;
    /* The tier's connections redirect their tracking to this link's connection before any
     * read that may fill the edge begins (the epoch below drops fills begun before). */
    if (up && c->cfg->redis_tracking)
        tc__redis_set_tracking(c->redis, tc__pubsub_tracking_id(c->pubsub));
    atomic_fetch_add(&c->edge_epoch, 1); /* fills begun before the change are dropped */
    if (!up) {
        atomic_store_explicit(&c->edge_synced, 0, memory_order_release);
        return;
    }
    /* Emptied before it is used again: what it holds may have been invalidated meanwhile. */
    tc__edge_clear(c->edge);
    atomic_store_explicit(&c->edge_synced, 1, memory_order_release);
    /* Redis is back: what this handle could not publish goes out now, not at its next call. */
    tc__bus_journal_flush(c);
}

int tc__bus_start(tc_cache *c)
{
    const tc_config *k = c->cfg;
    atomic_store(&c->edge_synced, 1);
    if (c->redis == NULL || !k->redis_bus)
        return TC_OK;
    size_t ns_len = strlen(k->redis_namespace), ch_len = strlen(k->redis_bus_channel);
    c->bus_channel = malloc(ns_len + ch_len + 1);
    if (c->bus_channel == NULL)
        return tc__err(NULL, TC_ENOMEM, "tc_open: out of memory");
    memcpy(c->bus_channel, k->redis_namespace, ns_len);
    memcpy(c->bus_channel + ns_len, k->redis_bus_channel, ch_len + 1);
    c->bus_channel_len = ns_len + ch_len;
    tc__bus_new_id(c->bus_id);
    c->publish = 1;
    if (c->edge == NULL)
        return TC_OK; /* nothing to evict here: publish only */
    atomic_store(&c->edge_synced, 0);
    if (k->redis_tracking)
        tc__pubsub_track(c->pubsub, tracked, c);
    /* Waiting for the first subscription makes a handle whose Redis is up use its edge from
     * the first call; with Redis down it goes on trying in the background. */
    int rc = tc__pubsub_subscribe(&c->bus, c->pubsub, k->redis_bus_channel, ch_len, bus_message,
                                  bus_link, c, 1);
    if (rc == TC_EREDIS)
        rc = tc__pubsub_subscribe(&c->bus, c->pubsub, k->redis_bus_channel, ch_len, bus_message,
                                  bus_link, c, 0);
    return rc;
}

/* ---- what an eviction by pattern or tag matches in the edge (here and in invalidate.c) ---- */

int tc__match_pattern(void *ctx, const char *key, size_t key_len, const void *value,
                      size_t value_len, unsigned flags)
{
    const tc__pattern_ref *pat = ctx;
    return tc__pattern_match(pat->p, pat->n, key, key_len);
}

static int tag_is(void *ctx, const char *tag, size_t tag_len)
{
    const tc__tag_ref *t = ctx;
    return tag_len == t->len && memcmp(tag, t->tag, tag_len) == 0;
}

int tc__match_tag(void *ctx, const char *key, size_t key_len, const void *value,
                  size_t value_len, unsigned flags)
{
    tc__rec rec;
    if (!(flags & TC__EDGE_HTTP) || value == NULL ||
        tc__rec_decode(&rec, value, value_len) != TC_OK)
        return 0;
    return tc__rec_each_tag(rec.tags, rec.tags_len, tag_is, ctx);
}
