/*
 * invalidator.c - applies the store's change feed to the caches (tiercache.h, "The
 * invalidator"): the design's "a change in the database deletes the key from Redis and from
 * every process's edge", for writes that never went through the library too.
 *
 * A step: claim (or renew) the consumer's lease and read its checkpoint; read a batch of changes
 * after it; apply each (tc__cache_apply_change); move the checkpoint past what was applied. The
 * order matters for at-least-once: a crash between applying and committing re-applies the batch
 * after the restart, which is harmless (a tombstone of a version already retired changes
 * nothing), while committing first could lose changes. Applying is ordered by seq, and a failed
 * change stops the batch there, so the checkpoint never passes a change that was not applied.
 *
 * Changes are copied out of the feed before they are applied: the store's read runs under its
 * connection's lock, and applying does network round trips.
 *
 * The lease keeps two invalidators from both working (each would be correct, but doubled); the
 * checkpoint commit is fenced by it, so one whose lease expired while it was stalled cannot move
 * the checkpoint of the one that took over.
 */
#include "common/bus.h"
#include "core/cache.h"
#include "core/config.h"
#include "store/store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often a step trims the log at most (more often with a shorter retention). */
#define TRIM_EVERY_MS 10000

typedef struct change {
    int64_t seq, version;
    size_t key_len;
    char *key;
} change;

struct tc_invalidator {
    tc_cache *c;
    tc__store *store;
    const tc_config *cfg;
    char holder[64 + 2 * TC__BUS_ID_LEN + 1]; /* process name (tc__process_name), random id */
    int held;              /* the last claim succeeded: released on free */
    int64_t claimed_ms;    /* tc__now_ms() of the last claim that succeeded */
    int64_t last_seq;      /* the checkpoint after the last step */
    int last_rc;           /* the last step's result */
    int64_t last_trim_ms;
    change *batch;         /* feed.batch slots, reused */
    /* The thread, and the fork generation of this copy (a child has no such thread, and the
     * lease it finds held under holder is its parent's: see fork_check). */
    int started;
    unsigned gen;
    atomic_int stop;
    pthread_t thread;
};

/* Its own name in the lease, never the handle's: every invalidator must be told apart from
 * every other (a handle without the bus has no id of its own). The process's name comes first,
 * so that a standby on the same host can tell when the holder's process is gone and take over
 * at once, instead of waiting out the lease (feed.lease_ms); a random id follows. */
static void new_holder(tc_invalidator *inv)
{
    unsigned char id[TC__BUS_ID_LEN];
    tc__bus_new_id(id);
    char proc[64];
    tc__process_name(proc, sizeof proc);
    size_t n = (size_t)snprintf(inv->holder, sizeof inv->holder, "%s.", proc);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < TC__BUS_ID_LEN; i++) {
        inv->holder[n + 2 * i] = hex[id[i] >> 4];
        inv->holder[n + 2 * i + 1] = hex[id[i] & 15];
    }
    inv->holder[n + 2 * TC__BUS_ID_LEN] = '\0';
}

static int holder_gone(void *ctx, const char *holder)
{
    return tc__process_gone(holder);
}

int tc_invalidator_new(tc_invalidator **out, tc_cache *c)
{
    if (out == NULL || c == NULL)
        return tc__err(c, TC_EINVAL, "invalidator: NULL argument");
    *out = NULL;
    tc__store *store = tc__cache_store(c);
    if (store->ops->feed_read == NULL)
        return tc__err(c, TC_EINVAL,
                       "invalidator: this store has no change feed (a store of your own: call "
                       "tc_invalidate when your database changes)");
    tc_invalidator *inv = calloc(1, sizeof *inv);
    if (inv != NULL)
        inv->batch = calloc((size_t)tc__cache_config(c)->feed_batch, sizeof *inv->batch);
    if (inv == NULL || inv->batch == NULL) {
        free(inv);
        return tc__err(c, TC_ENOMEM, "invalidator: out of memory");
    }
    inv->c = c;
    inv->store = store;
    inv->gen = tc__fork_generation();
    inv->cfg = tc__cache_config(c);
    new_holder(inv);
    atomic_init(&inv->stop, 0);
    *out = inv;
    return TC_OK;
}

typedef struct collector {
    tc_invalidator *inv;
    int n;
} collector;

static int collect(void *ctx, int64_t seq, const char *key, size_t key_len, int64_t version)
{
    collector *col = ctx;
    change *ch = &col->inv->batch[col->n];
    ch->key = malloc(key_len + 1);
    if (ch->key == NULL)
        return tc__err(col->inv->c, TC_ENOMEM, "invalidator: out of memory");
    memcpy(ch->key, key, key_len);
    ch->key[key_len] = '\0';
    ch->key_len = key_len;
    ch->seq = seq;
    ch->version = version;
    col->n++;
    return TC_OK;
}

static void trim_now_and_then(tc_invalidator *inv)
{
    int64_t now = tc__wall_ms();
    int64_t every = inv->cfg->feed_retention_ms < TRIM_EVERY_MS ? inv->cfg->feed_retention_ms
                                                                 : TRIM_EVERY_MS;
    if (now - inv->last_trim_ms < every)
        return;
    inv->last_trim_ms = now;
    int64_t removed;
    /* A failed trim is retried next time; the log only grows meanwhile. */
    inv->store->ops->feed_trim(inv->store, inv->cfg->feed_retention_ms, &removed);
}

/* The first call in a fork()ed child: the parent's thread and lease stay the parent's. The
 * child takes a name of its own, so that it never renews or releases the parent's lease, nor
 * fences the parent's checkpoint with it; it claims the lease anew, as any other invalidator
 * would. */
static void fork_check(tc_invalidator *inv)
{
    unsigned g = tc__fork_generation();
    if (inv->gen == g)
        return;
    inv->gen = g;
    inv->started = 0;
    inv->held = 0;
    atomic_store(&inv->stop, 0);
    new_holder(inv);
}

/* The lease, renewed only once a third of it has passed: a renewal is a write to the store,
 * and on the path of every change it was one round trip (and on SQLite one WAL write, which
 * wakes the feed's watch) between a commit and its invalidation. The checkpoint is then this
 * invalidator's own last commit: nobody else moves it while the lease is held, and one that
 * lapsed unnoticed (a stall) is caught by the fenced commit. */
static int claim_step(tc_invalidator *inv, int64_t *seq)
{
    int64_t now = tc__now_ms();
    if (inv->held && inv->last_rc == TC_OK &&
        now - inv->claimed_ms < inv->cfg->feed_lease_ms / 3) {
        *seq = inv->last_seq;
        return TC_OK;
    }
    tc__store *st = inv->store;
    int rc = st->ops->feed_claim(st, inv->cfg->feed_consumer, inv->holder,
                                 inv->cfg->feed_lease_ms, seq);
    /* Held by another: taken over at once if its process is gone (killed, crashed). */
    if (rc == TC_ESTATE && st->ops->feed_takeover != NULL)
        rc = st->ops->feed_takeover(st, inv->cfg->feed_consumer, inv->holder,
                                    inv->cfg->feed_lease_ms, holder_gone, NULL, seq);
    inv->held = rc == TC_OK;
    inv->last_rc = rc;
    if (rc == TC_OK)
        inv->claimed_ms = now;
    return rc;
}

int tc_invalidator_step(int64_t *out_applied, int64_t *out_seq, tc_invalidator *inv)
{
    if (out_applied != NULL)
        *out_applied = 0;
    if (out_seq != NULL)
        *out_seq = 0;
    if (inv == NULL)
        return tc__err(NULL, TC_EINVAL, "invalidator: NULL argument");
    fork_check(inv);
    tc__store *st = inv->store;
    const char *consumer = inv->cfg->feed_consumer;
    int64_t seq = 0;
    int rc = claim_step(inv, &seq);
    if (rc != TC_OK)
        return rc;
    if (out_seq != NULL)
        *out_seq = seq;

    collector col = {inv, 0};
    int n = 0;
    rc = st->ops->feed_read(st, seq, (int)inv->cfg->feed_batch, collect, &col, &n);
    int applied = 0;
    if (rc == TC_OK) {
        for (; applied < col.n; applied++) {
            change *ch = &inv->batch[applied];
            rc = tc__cache_apply_change(inv->c, ch->key, ch->key_len, ch->version);
            if (rc != TC_OK)
                break;
        }
    }
    /* What was applied is committed even when a later change failed: the next step starts at
     * the failed one. */
    if (applied > 0) {
        int64_t upto = inv->batch[applied - 1].seq;
        int crc = st->ops->feed_commit(st, consumer, inv->holder, upto);
        if (crc != TC_OK) {
            if (crc == TC_ESTATE)
                inv->held = 0;
            if (rc == TC_OK)
                rc = crc;
        } else if (out_seq != NULL) {
            *out_seq = upto;
        }
    }
    for (int i = 0; i < col.n; i++)
        free(inv->batch[i].key);
    inv->last_seq = applied > 0 ? inv->batch[applied - 1].seq : seq;
    inv->last_rc = rc;
    if (rc == TC_OK) {
        if (out_applied != NULL)
            *out_applied = applied;
        trim_now_and_then(inv);
    }
    return rc;
}

static void pause_ms(tc_invalidator *inv, int64_t ms);

int tc_invalidator_wait(tc_invalidator *inv)
{
    if (inv == NULL)
        return tc__err(NULL, TC_EINVAL, "invalidator: NULL argument");
    fork_check(inv);
    if (inv->last_rc != TC_OK) {
        /* A standby, or a failure: the log has changes this invalidator did not apply, so a
         * wait for "changes after" would return at once. Try again at the poll's pace. */
        pause_ms(inv, inv->cfg->feed_poll_ms);
        return TC_OK;
    }
    return inv->store->ops->feed_wait(inv->store, inv->last_seq, inv->cfg->feed_poll_ms);
}

/* Sleeps up to ms, in slices, returning early when the invalidator is being stopped. */
static void pause_ms(tc_invalidator *inv, int64_t ms)
{
    while (ms > 0 && !atomic_load(&inv->stop)) {
        int64_t slice = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

static void *run(void *arg)
{
    tc_invalidator *inv = arg;
    /* Woken by the store at a change; otherwise at least this often, so that the lease is
     * renewed in time (claim_step renews after a third of it). */
    int64_t poll = inv->cfg->feed_poll_ms, wait = poll < 1000 ? poll : 1000;
    if (wait > inv->cfg->feed_lease_ms / 4)
        wait = inv->cfg->feed_lease_ms / 4;
    while (!atomic_load(&inv->stop)) {
        int64_t applied = 0, seq = 0;
        int rc = tc_invalidator_step(&applied, &seq, inv);
        if (rc == TC_OK && applied >= inv->cfg->feed_batch)
            continue; /* a backlog: the next batch at once */
        if (rc == TC_OK)
            inv->store->ops->feed_wait(inv->store, seq, wait);
        else
            pause_ms(inv, poll); /* a standby, or a failure: try again later */
    }
    return NULL;
}

int tc_invalidator_start(tc_invalidator *inv)
{
    if (inv != NULL)
        fork_check(inv);
    if (inv == NULL || inv->started)
        return tc__err(NULL, TC_EINVAL, "invalidator: NULL or already started");
    if (pthread_create(&inv->thread, NULL, run, inv) != 0)
        return tc__err(inv->c, TC_ENOMEM, "invalidator: cannot start its thread");
    inv->started = 1;
    return TC_OK;
}

void tc_invalidator_free(tc_invalidator *inv)
{
    if (inv == NULL)
        return;
    fork_check(inv); /* a child's copy: no thread to stop, no lease of its own to release */
    if (inv->started) {
        atomic_store(&inv->stop, 1);
        pthread_join(inv->thread, NULL);
    }
    if (inv->held)
        inv->store->ops->feed_release(inv->store, inv->cfg->feed_consumer, inv->holder);
    free(inv->batch);
    free(inv);
}
