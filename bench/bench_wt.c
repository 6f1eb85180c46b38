/*
 * bench_wt.c - the write-through tier's read path, counted rather than timed. The store is a
 * store of the caller's own (tc_config_set_store) that counts its reads, so the figures say
 * what the database in front of which the caches sit would see.
 *
 *   wt-readthrough  store reads per 1,000 requests of a Zipf 0.99 replay (100,000 keys, an
 *                   edge holding 10% of them, no Redis)  vs  the requests no cache answered
 *                   (the edge's misses); the two must be equal: a miss costs one read, a hit none.
 *   wt-stampede     loads per expiry of one hot key read in a loop by 64 threads in each of 4
 *                   processes through a shared Redis, with a 5 ms loader and a 200 ms TTL, for
 *                   2 s  vs  the same with coalescing off (single_flight false, lease_ms 0).
 *                   Loads are grouped into expiries by time: a load more than half a TTL after
 *                   the first load of the current group starts the next group.
 *   wt-stampede-window  the same, with store.stale_window_ms on in both runs: every reader past
 *                   the TTL holds a stale copy for stale-if-error, and the lease holds still.
 *
 * Usage: bench_wt [readthrough|stampede]... (none: all). BENCH_WT_STATS=1: each stampede child
 * prints its handle's stats JSON (store reads, leases taken, lease waits) to stderr.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_util.h"
#include "tc_test.h"
#include "tiercache.h"

_Noreturn static void die(const char *what, int rc, tc_cache *c)
{
    fprintf(stderr, "bench_wt: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(c));
    exit(1);
}

/* ---- the counting store ------------------------------------------------------------------- */

#define MAX_LOADS 100000

/* In shared memory: the children of the stampede run count into it too. */
typedef struct counts {
    atomic_long reads;
    atomic_long nloads; /* reads of the hot key, and their times */
    double load_ns[MAX_LOADS];
} counts;

static counts *shared;
static int loader_ms; /* how long a read of the hot key takes */

static int store_get(void *ud, const char *key, size_t key_len, tc_store_result *result)
{
    atomic_fetch_add(&shared->reads, 1);
    if (strcmp(key, "hot") == 0) {
        struct timespec ts = {0, (long)loader_ms * 1000000L};
        nanosleep(&ts, NULL);
        long i = atomic_fetch_add(&shared->nloads, 1);
        if (i < MAX_LOADS)
            shared->load_ns[i] = now_ns();
        return tc_store_result_set(result, "hot value", 9, 1);
    }
    /* k<N>: a 64-byte value of version N + 1. */
    char v[64];
    memset(v, 'v', sizeof v);
    memcpy(v, key, key_len < sizeof v ? key_len : sizeof v);
    return tc_store_result_set(result, v, sizeof v, atoll(key + 1) + 1);
}

static int store_put(void *ud, const char *key, size_t key_len, const void *value, size_t len,
                     int64_t *out_version)
{
    return TC_ESTORE; /* read-only: the benchmarks only read */
}

static int store_del(void *ud, const char *key, size_t key_len, int64_t *out_version)
{
    return TC_ESTORE;
}

static tc_cache *open_cache(const char *json)
{
    tc_config *cfg;
    tc_cache *c = NULL;
    int rc = tc_config_new(&cfg);
    if (rc == TC_OK)
        rc = tc_config_load_json(cfg, json, strlen(json));
    if (rc == TC_OK)
        rc = tc_config_set_store(cfg, store_get, store_put, store_del, NULL, NULL);
    if (rc == TC_OK)
        rc = tc_open(&c, cfg);
    if (rc != TC_OK)
        die("open", rc, NULL);
    tc_config_free(cfg);
    return c;
}

/* A counter of tc_stats_json, e.g. stat(c, "edge", "misses"). */
static long long stat(tc_cache *c, const char *tier, const char *name)
{
    char *text;
    int rc = tc_stats_json(&text, c);
    if (rc != TC_OK)
        die("stats", rc, c);
    json_t *root = json_loads(text, 0, NULL);
    long long v = json_integer_value(json_object_get(json_object_get(root, tier), name));
    json_decref(root);
    tc_free(text);
    return v;
}

/* ---- wt-readthrough ------------------------------------------------------------------------ */

#define RT_KEYS 100000
#define RT_REQUESTS 400000

/* Zipf ranks by inverting the cumulative weights (a table of RT_KEYS doubles, binary search). */
static double *zipf_cdf(int n, double alpha)
{
    double *cdf = malloc((size_t)n * sizeof *cdf), sum = 0;
    if (cdf == NULL)
        die("zipf", TC_ENOMEM, NULL);
    for (int i = 0; i < n; i++)
        cdf[i] = sum += pow(i + 1, -alpha);
    for (int i = 0; i < n; i++)
        cdf[i] /= sum;
    return cdf;
}

static int zipf_rank(const double *cdf, int n, uint64_t *rng)
{
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    double u = (double)(*rng >> 11) / 9007199254740992.0;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void bench_readthrough(void)
{
    char json[128];
    snprintf(json, sizeof json, "{\"edge\": {\"max_entries\": %d}}", RT_KEYS / 10);
    tc_cache *c = open_cache(json);
    double *cdf = zipf_cdf(RT_KEYS, 0.99);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    atomic_store(&shared->reads, 0);
    for (int i = 0; i < RT_REQUESTS; i++) {
        char key[16], buf[64];
        size_t len;
        int n = snprintf(key, sizeof key, "k%d", zipf_rank(cdf, RT_KEYS, &rng));
        int rc = tc_get_into(&len, c, key, (size_t)n, buf, sizeof buf);
        if (rc != TC_OK)
            die("get", rc, c);
    }
    double reads = (double)atomic_load(&shared->reads);
    double misses = (double)stat(c, "edge", "misses");
    report("wt-readthrough", "store-reads-per-1000", reads * 1000 / RT_REQUESTS,
           misses * 1000 / RT_REQUESTS);
    free(cdf);
    tc_close(c);
}

/* ---- wt-stampede --------------------------------------------------------------------------- */

#define PROCS 4
#define THREADS 64
#define TTL_MS 200
#define RUN_MS 2000

typedef struct reader {
    tc_cache *c;
    double until_ns;
    long errors;
} reader;

static void *hot_loop(void *p)
{
    reader *r = p;
    char buf[16];
    size_t len;
    while (now_ns() < r->until_ns)
        if (tc_get_into(&len, r->c, "hot", 3, buf, sizeof buf) != TC_OK)
            r->errors++;
    return NULL;
}

static int stampede_child(const char *json, double start_ns)
{
    tc_cache *c = open_cache(json);
    while (now_ns() < start_ns) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    reader r[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (reader){c, start_ns + RUN_MS * 1e6, 0};
        if (pthread_create(&t[i], NULL, hot_loop, &r[i]) != 0)
            return 2;
    }
    long errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        errors += r[i].errors;
    }
    if (getenv("BENCH_WT_STATS") != NULL) {
        char *js;
        if (tc_stats_json(&js, c) == TC_OK) {
            fprintf(stderr, "%s\n", js);
            tc_free(js);
        }
    }
    tc_close(c);
    if (errors > 0)
        fprintf(stderr, "bench_wt: %ld failed reads\n", errors);
    return errors > 0;
}

static int cmp_ns(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Loads per expiry of one run with the given options. */
static double stampede_run(int port, const char *options)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"default_ttl_ms\": %d, \"ttl_jitter_pct\": 0, %s,"
             " \"redis\": {\"host\": \"127.0.0.1\", \"port\": %d, \"namespace\": \"st%d:\"}}",
             TTL_MS, options, port, (int)getpid());
    atomic_store(&shared->nloads, 0);
    double start = now_ns() + 300e6;
    pid_t pid[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pid[i] = fork();
        if (pid[i] < 0)
            die("fork", TC_ENOMEM, NULL);
        if (pid[i] == 0)
            _exit(stampede_child(json, start));
    }
    for (int i = 0; i < PROCS; i++) {
        int st;
        if (waitpid(pid[i], &st, 0) != pid[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("stampede child", TC_ESTATE, NULL);
    }
    long n = atomic_load(&shared->nloads);
    if (n > MAX_LOADS)
        n = MAX_LOADS;
    qsort(shared->load_ns, (size_t)n, sizeof shared->load_ns[0], cmp_ns);
    long groups = 0;
    double group_start = 0;
    for (long i = 0; i < n; i++) {
        if (groups == 0 || shared->load_ns[i] - group_start > TTL_MS * 1e6 / 2) {
            groups++;
            group_start = shared->load_ns[i];
        }
    }
    return groups > 0 ? (double)n / (double)groups : 0;
}

static void bench_stampede(void)
{
    tct_redis srv;
    if (tct_redis_start(&srv) != 0) {
        fprintf(stderr, "bench_wt: redis-server could not be started\n");
        exit(1);
    }
    loader_ms = 5;
    double base = stampede_run(srv.port, "\"single_flight\": false, \"lease_ms\": 0");
    double value = stampede_run(srv.port, "\"lease_ms\": 1000, \"lease_wait_ms\": 1000");
    report("wt-stampede", "loads-per-expiry", value, base);
    /* The same with the fail-safe window on: every reader past the TTL holds a stale copy for
     * stale-if-error, and the lease must hold all the same. */
    const char *window = "\"store\": {\"stale_window_ms\": 60000}";
    char off[128], on[128];
    snprintf(off, sizeof off, "\"single_flight\": false, \"lease_ms\": 0, %s", window);
    snprintf(on, sizeof on, "\"lease_ms\": 1000, \"lease_wait_ms\": 1000, %s", window);
    base = stampede_run(srv.port, off);
    value = stampede_run(srv.port, on);
    report("wt-stampede-window", "loads-per-expiry", value, base);
    tct_redis_stop(&srv);
}

int main(int argc, char **argv)
{
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                  0);
    if (shared == MAP_FAILED)
        die("mmap", TC_ENOMEM, NULL);
    int all = argc < 2;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "readthrough") != 0 && strcmp(argv[i], "stampede") != 0) {
            fprintf(stderr, "usage: %s [readthrough|stampede]...\n", argv[0]);
            return 2;
        }
    for (int i = all ? 0 : 1; i < (all ? 1 : argc); i++) {
        if (all || strcmp(argv[i], "readthrough") == 0)
            bench_readthrough();
        if (all || strcmp(argv[i], "stampede") == 0)
            bench_stampede();
    }
    munmap(shared, sizeof *shared);
    return 0;
}
