/*
 * lambda.c - a serverless handler, written the bad way and the good way.
 *
 * A function platform (AWS Lambda, Cloud Functions) keeps a process alive between invocations
 * and calls the handler again and again. The handler here reads a feature flag. The bad way
 * connects inside the handler: tc_open + tc_get + tc_close on every invocation, so every call
 * opens the database and, with Redis configured, a new Redis connection (and the bus's) and
 * starts with an empty edge. The good way takes the module-scope handle, tc_shared(): the first
 * invocation (the cold start) builds it, every later one (a warm start) finds it open, with its
 * connections and its edge ready.
 *
 * It prints each way's cold start (the first invocation), its warm starts (the median
 * invocation after the first) and the ratio between the two ways. Timings depend on the
 * machine, so the only thing asserted is that both ways read the same value every time.
 *
 * Runs on the embedded default (each bad invocation opens the SQLite file) or with Redis (each
 * bad invocation connects to Redis and reads from it):
 *   ./lambda
 *   TIERCACHE_CONFIG='{"redis":{"host":"127.0.0.1","port":6379}}' ./lambda
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tiercache.h>

#define INVOCATIONS 200
#define KEY "example:lambda:flags"
#define FLAGS "{\"new_checkout\":true}"

static int fail(tc_cache *cache, const char *what, int rc)
{
    fprintf(stderr, "lambda: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(cache));
    return rc;
}

/* What tc_shared does on its first call, written out for the bad way: TIERCACHE_CONFIG holds
 * a file path or inline JSON (first non-blank character '{'); unset or empty: the defaults. */
static int open_from_env(tc_cache **out)
{
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return fail(NULL, "tc_config_new", rc);
    const char *p = getenv("TIERCACHE_CONFIG");
    for (p = p != NULL ? p : ""; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++)
        ;
    if (*p == '{')
        rc = tc_config_load_json(cfg, p, strlen(p));
    else if (*p != '\0')
        rc = tc_config_load_file(cfg, p);
    if (rc != TC_OK) {
        fprintf(stderr, "lambda: TIERCACHE_CONFIG: %s: %s\n", tc_strerror(rc),
                tc_config_errmsg(cfg));
        tc_config_free(cfg);
        return rc;
    }
    rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc == TC_OK ? TC_OK : fail(NULL, "tc_open", rc);
}

/* The handler's work on an open handle: read the flags into out. */
static int read_flags(char *out, size_t size, unsigned *source, tc_cache *cache)
{
    void *value;
    size_t len;
    int rc = tc_get_ex(&value, &len, source, NULL, cache, KEY, strlen(KEY));
    if (rc != TC_OK)
        return fail(cache, "tc_get_ex " KEY, rc);
    snprintf(out, size, "%.*s", (int)len, (char *)value);
    tc_free(value);
    return TC_OK;
}

/* The bad way: connect inside the handler. */
static int handler_connect_each_time(char *out, size_t size, unsigned *source)
{
    tc_cache *cache;
    int rc = open_from_env(&cache);
    if (rc != TC_OK)
        return rc;
    rc = read_flags(out, size, source, cache);
    tc_close(cache);
    return rc;
}

/* The good way: the module-scope handle. */
static int handler_module_scope(char *out, size_t size, unsigned *source)
{
    tc_cache *cache;
    int rc = tc_shared(&cache);
    if (rc != TC_OK)
        return fail(NULL, "tc_shared", rc);
    return read_flags(out, size, source, cache);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct timing {
    double cold_us, warm_median_us;
    int from[4]; /* invocations answered by edge, redis, store */
} timing;

/* Invokes handler INVOCATIONS times; every answer must equal FLAGS. */
static int invoke(timing *t, int (*handler)(char *, size_t, unsigned *), const char *name)
{
    static double warm[INVOCATIONS - 1];
    memset(t, 0, sizeof *t);
    for (int i = 0; i < INVOCATIONS; i++) {
        char flags[64];
        unsigned source = 0;
        double t0 = now_us();
        int rc = handler(flags, sizeof flags, &source);
        double dt = now_us() - t0;
        if (rc != TC_OK)
            return -1;
        if (strcmp(flags, FLAGS) != 0) {
            fprintf(stderr, "lambda: %s read \"%s\", not \"%s\"\n", name, flags, FLAGS);
            return -1;
        }
        t->from[source & 3]++;
        if (i == 0)
            t->cold_us = dt;
        else
            warm[i - 1] = dt;
    }
    qsort(warm, INVOCATIONS - 1, sizeof warm[0], cmp_double);
    t->warm_median_us = warm[(INVOCATIONS - 1) / 2];
    printf("  %-28s cold start %8.1f us, warm starts %8.1f us (median); reads from edge %d, "
           "redis %d, store %d\n", name, t->cold_us, t->warm_median_us, t->from[TC_SOURCE_EDGE],
           t->from[TC_SOURCE_REDIS], t->from[TC_SOURCE_STORE]);
    return 0;
}

int main(void)
{
    /* The deploy wrote the flags (a handle of its own, closed again: the good way's first
     * tc_shared below is a real cold start). */
    tc_cache *deploy;
    if (open_from_env(&deploy) != TC_OK)
        return 1;
    int rc = tc_put(deploy, KEY, strlen(KEY), FLAGS, strlen(FLAGS), 0);
    if (rc != TC_OK)
        return fail(deploy, "tc_put " KEY, rc), 1;
    tc_close(deploy);
    printf("%d invocations of a handler that reads %s = %s, each way:\n", INVOCATIONS, KEY,
           FLAGS);

    timing bad, good;
    if (invoke(&bad, handler_connect_each_time, "connect in the handler:") != 0 ||
        invoke(&good, handler_module_scope, "module scope (tc_shared):") != 0)
        return 1;
    printf("  connecting in the handler: %.0fx the time of a warm invocation (cold starts: %.1fx)\n",
           bad.warm_median_us / (good.warm_median_us > 0 ? good.warm_median_us : 1),
           bad.cold_us / (good.cold_us > 0 ? good.cold_us : 1));

    tc_cache *shared;
    char *stats;
    if ((rc = tc_shared(&shared)) != TC_OK)
        return fail(NULL, "tc_shared", rc), 1;
    if ((rc = tc_stats_json(&stats, shared)) != TC_OK)
        return fail(shared, "tc_stats_json", rc), 1;
    printf("  the module-scope handle's stats: %s\n", stats);
    tc_free(stats);
    tc_shared_reset();
    printf("both ways read the same flags on all %d invocations\n", 2 * INVOCATIONS);
    printf("lambda: ok\n");
    return 0;
}
