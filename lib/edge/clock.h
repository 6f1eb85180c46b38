/*
 * clock.h - the edge clock (clock.c), as edge.c uses it. The clock's value itself,
 * tc__edge_clock, is declared in edge_layout.h, since the inline hit path reads it.
 */
#ifndef TC_EDGE_CLOCK_H
#define TC_EDGE_CLOCK_H

#include "edge/edge_layout.h"

/* The clock when the ticker is not publishing (parked, absent or not started yet): reads the
 * coarse clock, and wakes or starts the ticker if an edge exists. Any thread; never call it
 * while holding a shard. */
EDGE_COLD int64_t tc__edge_clock_slow(void);
/* An edge begins and ends using the clock (tc__edge_new, tc__edge_free): the ticker runs only
 * while some edge exists, and the last release joins it. */
void tc__edge_clock_acquire(void);
void tc__edge_clock_release(void);
/* edge.c's pthread_atfork handlers, in its lock order (the clock's lock first): held across
 * fork(); in the child the ticker is gone and the clock unpublished until a read starts one. */
void tc__edge_clock_before_fork(void);
void tc__edge_clock_after_fork_parent(void);
void tc__edge_clock_after_fork_child(void);

#endif
