/*
 * shared.h - the process-wide handle's internals (shared.c), for the stats.
 */
#ifndef TC_EXT_SHARED_H
#define TC_EXT_SHARED_H

#include "common/internal.h"

/* Calls of tc_shared() that built the handle (cold) and that found it built (warm). */
void tc__shared_counts(int64_t *cold, int64_t *warm);

#endif
