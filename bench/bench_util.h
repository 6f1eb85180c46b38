/*
 * bench_util.h - what every benchmark program shares: a clock, medians, and the one output
 * format, one line per figure:
 *   BENCH <id> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 * Header-only (static functions): each bench is one standalone program. Also the one way
 * every bench opens a handle from JSON.
 */
#ifndef TC_BENCH_UTIL_H
#define TC_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tiercache.h>

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

/* A handle from a JSON config, or the program exits saying what failed: a benchmark has no use
 * for a handle it could not open. */
static inline tc_cache *bench_open_json(const char *prog, const char *json)
{
    tc_config *cfg = NULL;
    tc_cache *c = NULL;
    int rc = tc_config_new(&cfg);
    if (rc == TC_OK)
        rc = tc_config_load_json(cfg, json, strlen(json));
    if (rc == TC_OK)
        rc = tc_open(&c, cfg);
    if (rc != TC_OK) {
        fprintf(stderr, "%s: open: %s (%s %s)\n", prog, tc_strerror(rc),
                cfg != NULL ? tc_config_errmsg(cfg) : "", tc_errmsg(NULL));
        exit(1);
    }
    tc_config_free(cfg);
    return c;
}

#endif
