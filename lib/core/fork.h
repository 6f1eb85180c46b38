/*
 * fork.h - the handle's repair in a fork()ed child (fork.c), and the check at the top of every
 * public call that decides whether it is needed. The check is inline because it is on every
 * edge hit.
 */
#ifndef TC_CORE_FORK_H
#define TC_CORE_FORK_H

#include "core/handle.h"

/* The repair of a handle in a fork()ed child (fork.c says what the child gets); resume 0
 * (tc_close) leaves the bus stopped. A no-op once the handle is of this generation. */
void tc__fork_repair(tc_cache *c, int resume);

/* 1 when the handle needs no repair: two loads and a compare. The handle's generation is
 * loaded with acquire, as the repair stores it with release. */
static inline int tc__fork_current(tc_cache *c)
{
    return atomic_load_explicit(&c->fork_gen, memory_order_acquire) ==
           atomic_load_explicit(&tc__fork_gen, memory_order_relaxed);
}

/* At the top of every public call: nothing when nothing forked; the first call in a fork()ed
 * child repairs the handle. tc__cache_fork_check in cache.h is the same. */
static inline void tc__fork_check(tc_cache *c)
{
    if (!tc__fork_current(c))
        tc__fork_repair(c, 1);
}

#endif
