/*
 * fork.c - the handle's repair in a fork()ed child, made by the child's first call on it:
 * every per-process mechanism gets what docs/architecture.md ("What a fork()ed child
 * inherits") says.
 */
#include "core/handle.h"
#include "core/fork.h"
#include "core/cache.h"

#include <sched.h>

/* A child of fork() may have missed invalidations its parent would have seen later (invariant
 * 3), so its first call on the handle empties the edge it inherited. The edge itself is safe
 * to use in the child (edge.c holds its shards across fork()); the Redis tier and the store
 * repair their connections themselves. */
#if defined(__SANITIZE_THREAD__)
#define TC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TC_TSAN 1
#endif
#endif

void tc__fork_repair(tc_cache *c, int resume)
{
    unsigned gen = tc__fork_generation();
    unsigned seen = atomic_load_explicit(&c->fork_gen, memory_order_acquire);
    while (seen != gen) {
        if (seen != TC__EDGE_REPAIRING &&
            atomic_compare_exchange_strong(&c->fork_gen, &seen, TC__EDGE_REPAIRING)) {
            if (c->bus != NULL) {
                /* Down until the child's own subscription is confirmed (bus_link). */
                atomic_store(&c->edge_synced, 0);
                atomic_fetch_add(&c->edge_epoch, 1);
            }
            /* The child's messages must not look like its parent's (each skips its own). */
            tc__bus_new_id(c->bus_id);
            tc__edge_clear(c->edge);
            tc__refresher_after_fork(c->refresher);
            tc__flights_after_fork(c->flights);
            tc__leases_after_fork(c);
            /* The journal's messages are the parent's to send (its writes); a parent thread
             * may have held its lock or been sending it, so the child's copy is left, not
             * freed. */
            (void)tc__mutex_after_fork(&c->journal_mu);
            c->journal = NULL;
            atomic_store(&c->journal_n, 0);
            atomic_store(&c->journal_flushing, 0);
            tc__pubsub_after_fork(c->pubsub); /* the bus is down: the edge is not used */
#ifndef TC_TSAN
            /* ThreadSanitizer aborts a child of a multi-threaded process that starts a
             * thread: under it, a child goes without its bus (and so without its edge). */
            if (resume)
                tc__pubsub_resume(c->pubsub);
#endif
            atomic_store_explicit(&c->fork_gen, gen, memory_order_release);
            return;
        }
        sched_yield();
        seen = atomic_load_explicit(&c->fork_gen, memory_order_acquire);
    }
}

void tc__cache_fork_check(tc_cache *c)
{
    tc__fork_check(c);
}
