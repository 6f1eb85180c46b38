/*
 * bench_util.h - what every benchmark program shares: a clock, medians, and the one output
 * format, one line per figure:
 *   BENCH <id> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 * Header-only (static functions): each bench is one standalone program.
 */
#ifndef TC_BENCH_UTIL_H
#define TC_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place. */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static inline void report(const char *id, const char *metric, double value, double baseline)
{
    printf("BENCH %s %s value=%.4g baseline=%.4g ratio=%.4g\n", id, metric, value, baseline,
           value / baseline);
    fflush(stdout);
}

#endif
