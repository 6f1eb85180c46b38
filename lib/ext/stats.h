/*
 * stats.h - rendering the counters (the counters themselves are in internal.h).
 */
#ifndef TC_STATS_H
#define TC_STATS_H

#include "edge/edge.h"
#include "common/internal.h"

/* JSON text of the counters, edge sizes (edge may be NULL) and the process-wide tc_shared
 * counts; *out is malloc'd, for tc_free. */
int tc__stats_render(char **out, tc__stats *s, tc__edge *edge, const void *owner);

#endif
