/*
 * bench_redis.c - the Redis tier's figures, each next to its raw-hiredis baseline in the same
 * run, with the client and a private redis-server pinned two ways: on the same core ("same")
 * and on different cores ("split"):
 *   BENCH <id>-<placement> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 *
 *   redis-get       ops/s of the tier's GET (tc_get, edge off)   vs raw redisCommandArgv GET
 *   redis-set       ops/s of the tier's SET (tc__redis_set: the   vs raw redisCommandArgv SET
 *                   version-guard script)
 *   redis-getmany   keys/s of tc_get_many, 100 keys, edge off     vs raw pipelined GETs, 100 deep
 *   edge-vs-redis   ns per edge hit (tc_get_into)                 vs ns per raw GET round trip
 *   bus-delivery    p99 us from PUBLISH of an invalidation to      vs p99 us from PUBLISH to a raw
 *                   its eviction from another handle's edge          subscriber's redisGetReply
 *   conn-reuse      us per warm call on tc_shared (a Redis GET)   vs connect, GET, free per call
 *   conn-per-thread-vs-pool  ops/s of 2 threads on the tier's      vs 2 threads on a pool of 2 raw
 *                   connections (redis.pipelining's default)        connections under a mutex
 *   redis-autopipe-get-T  ops/s of T threads doing tc_get (edge    vs T threads, each on its own
 *                   off) through one handle, auto-pipelined         raw connection, sequential GETs
 *   redis-autopipe-put-T  the same for the tier's set (the          vs ... sequential SETs
 *                   version-guard script)
 *                   for T = 1, 4, 16, 64
 *
 * Bounds: what raw hiredis code gets against the same baseline, in the same run: how near to
 * its target any client can come on this machine (docs/benchmarks.md).
 *   redis-set-bound     ops/s of EVALSHA of a script that only SETs  vs raw SET
 *   redis-set-vs-script ops/s of the tier's set                  vs the tier's own guard script
 *                       sent raw (EVALSHA, the same arguments) on a kept connection
 *   conn-reuse-bound    us per raw GET on a connection kept open     vs connect, GET, free per call
 *   redis-autopipe-get-bound-T  ops/s of one thread sending the GETs   vs the autopipe baseline
 *                   raw, T in one write, then their T replies (no thread to wake: what batching
 *                   T commands reaches at most here); -put-bound-T the same for SETs
 *   redis-autopipe-wake-bound-T  ops/s of T threads each sleeping    vs the autopipe baseline
 *                   on a futex until one dispatcher thread answers and wakes it, no Redis: the
 *                   wake every threaded design pays per call (T = 4, 16, 64)
 *
 * Rounds alternate value and baseline; medians of ROUNDS. Compare ratios, not absolute figures.
 *
 * SIGPIPE is ignored, as network servers set it: with its default disposition the tier blocks
 * it around each command (two system calls), measured here as redis-get-sigpipe-default.
 */
#include <hiredis.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench_util.h"
#include "common/bus.h"
#include "core/cache.h"
#include "redis/redis_tier.h"
#include "redis/tier_impl.h"
#include "tc_test.h"
#include "tiercache.h"

#define ROUNDS 5
#define NKEYS 1000
#define VLEN 64

static char dir[256];
static tct_redis srv;
static char keys[NKEYS][32], full[NKEYS][40], setkeys[NKEYS][32];
static size_t klen[NKEYS], flen[NKEYS], setklen[NKEYS];
static char val[VLEN];

_Noreturn static void die(const char *what)
{
    fprintf(stderr, "bench_redis: %s (%s)\n", what, tc_errmsg(NULL));
    exit(1);
}

static void pin(pid_t pid, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(pid, sizeof set, &set) != 0)
        fprintf(stderr, "bench_redis: cannot pin %d to cpu %d\n", (int)pid, cpu);
}

static tc_cache *open_cache(const char *name, int edge, int bus)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"store\": {\"path\": \"%s/%s.db\"}, \"edge\": {\"enabled\": %s},"
             " \"redis\": {\"host\": \"127.0.0.1\", \"port\": %d, \"bus\": %s}}",
             dir, name, edge ? "true" : "false", srv.port, bus ? "true" : "false");
    return bench_open_json("bench_redis", json);
}

static redisContext *raw_connect(void)
{
    struct timeval tv = {2, 0};
    redisContext *r = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    if (r == NULL || r->err)
        die("raw connect");
    return r;
}

static void raw_ok(redisReply *rep, int type)
{
    if (rep == NULL || rep->type != type)
        die("raw reply");
    freeReplyObject(rep);
}

/* ---- get, set, get-many ---------------------------------------------------------------------- */

static void bench_get_set(const char *place, tc_cache *c, redisContext *raw)
{
    const int ops = 10000;
    double v[ROUNDS], b[ROUNDS], sv[ROUNDS], sb[ROUNDS], lv[ROUNDS];
    tc__redis *tier = tc__cache_redis(c);
    int64_t version = 1000000;
    /* The bound: the least a script can do, SET and nothing else, sent raw. A version guard has
     * to be a script (Redis 7 has no compare-and-set), so no guarded SET runs faster than this
     * one on this machine. */
    redisReply *load = redisCommand(raw, "SCRIPT LOAD %s",
                                    "return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])");
    if (load == NULL || load->type != REDIS_REPLY_STRING || load->len != 40)
        die("script load");
    char sha[41];
    memcpy(sha, load->str, 41);
    freeReplyObject(load);
    /* The other bound: the tier's own guard script, sent raw with the arguments the tier's set
     * gives it (the key under the namespace, the envelope, PX), on a kept connection: what the
     * tier adds to its script is then all that is left. */
    const char *guard_text, *guard_sha;
    tc__redis_script(TC__SCRIPT_GUARD, &guard_text, &guard_sha);
    redisReply *gl = redisCommand(raw, "SCRIPT LOAD %s", guard_text);
    if (gl == NULL || gl->type != REDIS_REPLY_STRING)
        die("guard script load");
    freeReplyObject(gl);
    double gv[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            void *out;
            size_t len;
            if (tc_get(&out, &len, c, keys[i % NKEYS], klen[i % NKEYS]) != TC_OK)
                die("get");
            tc_free(out);
        }
        v[r] = ops / ((now_ns() - t0) / 1e9);
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            const char *argv[] = {"GET", full[i % NKEYS]};
            size_t lens[] = {3, flen[i % NKEYS]};
            raw_ok(redisCommandArgv(raw, 2, argv, lens), REDIS_REPLY_STRING);
        }
        b[r] = ops / ((now_ns() - t0) / 1e9);

        t0 = now_ns();
        for (int i = 0; i < ops; i++)
            if (tc__redis_set(tier, setkeys[i % NKEYS], setklen[i % NKEYS], val, VLEN,
                              ++version, 600000) != TC_OK)
                die("tier set");
        sv[r] = ops / ((now_ns() - t0) / 1e9);
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            const char *argv[] = {"SET", setkeys[i % NKEYS], val, "PX", "600000"};
            size_t lens[] = {3, setklen[i % NKEYS], VLEN, 2, 6};
            raw_ok(redisCommandArgv(raw, 5, argv, lens), REDIS_REPLY_STATUS);
        }
        sb[r] = ops / ((now_ns() - t0) / 1e9);
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            const char *argv[] = {"EVALSHA", sha, "1", setkeys[i % NKEYS], val, "600000"};
            size_t lens[] = {7, 40, 1, setklen[i % NKEYS], VLEN, 6};
            raw_ok(redisCommandArgv(raw, 6, argv, lens), REDIS_REPLY_STATUS);
        }
        lv[r] = ops / ((now_ns() - t0) / 1e9);
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            char *blob;
            size_t blen;
            if (tc__rt_envelope_build(&blob, &blen, ENV_VALUE, ++version,
                                      tc__wall_ms() + 600000, val, VLEN) != 0)
                die("envelope");
            char k[48];
            int kl = snprintf(k, sizeof k, "tc:%s", setkeys[i % NKEYS]);
            const char *argv[] = {"EVALSHA", guard_sha, "1", k, blob, "600000"};
            size_t lens[] = {7, 40, 1, (size_t)kl, blen, 6};
            raw_ok(redisCommandArgv(raw, 6, argv, lens), REDIS_REPLY_INTEGER);
            free(blob);
        }
        gv[r] = ops / ((now_ns() - t0) / 1e9);
    }
    char id[64];
    snprintf(id, sizeof id, "redis-set-vs-script-%s", place);
    report(id, "ops_per_s", median(sv, ROUNDS), median(gv, ROUNDS));
    snprintf(id, sizeof id, "redis-get-%s", place);
    report(id, "ops_per_s", median(v, ROUNDS), median(b, ROUNDS));
    snprintf(id, sizeof id, "redis-set-%s", place);
    report(id, "ops_per_s", median(sv, ROUNDS), median(sb, ROUNDS));
    snprintf(id, sizeof id, "redis-set-bound-%s", place);
    report(id, "ops_per_s", median(lv, ROUNDS), median(sb, ROUNDS));
}

/* redis-get alone, under whatever SIGPIPE disposition the process has. */
static void bench_get_only(tc_cache *c, redisContext *raw)
{
    const int ops = 10000;
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            void *out;
            size_t len;
            if (tc_get(&out, &len, c, keys[i % NKEYS], klen[i % NKEYS]) != TC_OK)
                die("get");
            tc_free(out);
        }
        v[r] = ops / ((now_ns() - t0) / 1e9);
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            const char *argv[] = {"GET", full[i % NKEYS]};
            size_t lens[] = {3, flen[i % NKEYS]};
            raw_ok(redisCommandArgv(raw, 2, argv, lens), REDIS_REPLY_STRING);
        }
        b[r] = ops / ((now_ns() - t0) / 1e9);
    }
    report("redis-get-sigpipe-default-same", "ops_per_s", median(v, ROUNDS), median(b, ROUNDS));
}

static void bench_getmany(const char *place, tc_cache *c, redisContext *raw)
{
    enum { DEPTH = 100 };
    const int calls = 300;
    const char *kp[DEPTH];
    size_t kl[DEPTH];
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int n = 0; n < calls; n++) {
            for (int i = 0; i < DEPTH; i++) {
                int k = (n * DEPTH + i) % NKEYS;
                kp[i] = keys[k];
                kl[i] = klen[k];
            }
            tc_items *items;
            if (tc_get_many(&items, c, kp, kl, DEPTH) != TC_OK ||
                tc_items_count(items) != DEPTH)
                die("get_many");
            tc_items_free(items);
        }
        v[r] = (double)calls * DEPTH / ((now_ns() - t0) / 1e9);
        t0 = now_ns();
        for (int n = 0; n < calls; n++) {
            for (int i = 0; i < DEPTH; i++) {
                int k = (n * DEPTH + i) % NKEYS;
                const char *argv[] = {"GET", full[k]};
                size_t lens[] = {3, flen[k]};
                redisAppendCommandArgv(raw, 2, argv, lens);
            }
            for (int i = 0; i < DEPTH; i++) {
                void *rep;
                if (redisGetReply(raw, &rep) != REDIS_OK)
                    die("raw pipeline");
                raw_ok(rep, REDIS_REPLY_STRING);
            }
        }
        b[r] = (double)calls * DEPTH / ((now_ns() - t0) / 1e9);
    }
    char id[64];
    snprintf(id, sizeof id, "redis-getmany-%s", place);
    report(id, "keys_per_s", median(v, ROUNDS), median(b, ROUNDS));
}

static void bench_edge_vs_redis(const char *place, redisContext *raw)
{
    tc_cache *c = open_cache("edge", 1, 0);
    for (int i = 0; i < NKEYS; i++)
        if (tc_put(c, keys[i], klen[i], val, VLEN, 0) != TC_OK)
            die("put");
    const int ops = 200000, rops = 10000;
    double v[ROUNDS], b[ROUNDS];
    char buf[VLEN];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            size_t len;
            if (tc_get_into(&len, c, keys[i % NKEYS], klen[i % NKEYS], buf, sizeof buf) != TC_OK)
                die("edge get");
        }
        v[r] = (now_ns() - t0) / ops;
        t0 = now_ns();
        for (int i = 0; i < rops; i++) {
            const char *argv[] = {"GET", full[i % NKEYS]};
            size_t lens[] = {3, flen[i % NKEYS]};
            raw_ok(redisCommandArgv(raw, 2, argv, lens), REDIS_REPLY_STRING);
        }
        b[r] = (now_ns() - t0) / rops;
    }
    char id[64];
    snprintf(id, sizeof id, "edge-vs-redis-%s", place);
    report(id, "ns_per_get", median(v, ROUNDS), median(b, ROUNDS));
    tc_close(c);
}

/* ---- bus delivery ---------------------------------------------------------------------------- */

static atomic_llong arrived; /* now_ns() of the last delivery, as an integer */

static void on_applied(tc_cache *c)
{
    (void)c;
    atomic_store(&arrived, (long long)now_ns());
}

static atomic_int raw_stop;

static void *raw_subscriber(void *arg)
{
    redisContext *sub = arg;
    while (!atomic_load(&raw_stop)) {
        void *rep;
        if (redisGetReply(sub, &rep) != REDIS_OK)
            break;
        atomic_store(&arrived, (long long)now_ns());
        freeReplyObject(rep);
    }
    return NULL;
}

/* One-way latencies of n messages sent one at a time, each after the previous arrived. */
static double p99_of(redisContext *pub, const char *channel, const void *msg, size_t len, int n)
{
    double *lat = malloc((size_t)n * sizeof *lat);
    for (int i = 0; i < n; i++) {
        long long before = atomic_load(&arrived);
        double t0 = now_ns();
        const char *argv[] = {"PUBLISH", channel, msg};
        size_t lens[] = {7, strlen(channel), len};
        raw_ok(redisCommandArgv(pub, 3, argv, lens), REDIS_REPLY_INTEGER);
        while (atomic_load(&arrived) == before)
            sched_yield();
        lat[i] = (double)atomic_load(&arrived) - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double p = lat[(int)(n * 0.99)] / 1000;
    free(lat);
    return p;
}

static void bench_bus(const char *place, redisContext *pub)
{
    const int n = 2000;
    tc_cache *b = open_cache("bus", 1, 1);
    tc__hook_bus_applied = on_applied;
    unsigned char msg[TC__BUS_HEADER + 8];
    tc__bus_msg m = {.op = TC__BUS_DROP, .arg = "bus:key", .arg_len = 7};
    tc__bus_new_id(m.sender);
    tc__bus_encode(msg, &m);

    redisContext *sub = raw_connect();
    const char *sargv[] = {"SUBSCRIBE", "bench:raw"};
    size_t slens[] = {9, 9};
    raw_ok(redisCommandArgv(sub, 2, sargv, slens), REDIS_REPLY_ARRAY);
    atomic_store(&raw_stop, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, raw_subscriber, sub) != 0)
        die("thread");
    double v[ROUNDS], base[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        v[r] = p99_of(pub, "tc:bus", msg, tc__bus_size(7), n / ROUNDS);
        base[r] = p99_of(pub, "bench:raw", msg, tc__bus_size(7), n / ROUNDS);
    }
    atomic_store(&raw_stop, 1);
    const char *bye[] = {"PUBLISH", "bench:raw", "bye"};
    size_t bye_lens[] = {7, 9, 3};
    raw_ok(redisCommandArgv(pub, 3, bye, bye_lens), REDIS_REPLY_INTEGER);
    pthread_join(t, NULL);
    redisFree(sub);
    tc__hook_bus_applied = NULL;
    tc_close(b);
    char id[64];
    snprintf(id, sizeof id, "bus-delivery-%s", place);
    report(id, "p99_us", median(v, ROUNDS), median(base, ROUNDS));
}

/* ---- per-thread connections against a pool ---------------------------------------------- */

/* Two threads doing GETs: the tier's per-thread connections against a pool of two raw
 * connections handed out under a mutex (the other common design). */
typedef struct pool {
    pthread_mutex_t mu;
    redisContext *free_list[2];
    int nfree;
} pool;

typedef struct worker {
    tc_cache *c;
    pool *pl;
    int ops;
    double ns;
} worker;

static void *tier_worker(void *arg)
{
    worker *w = arg;
    double t0 = now_ns();
    for (int i = 0; i < w->ops; i++) {
        void *out;
        size_t len;
        if (tc_get(&out, &len, w->c, keys[i % NKEYS], klen[i % NKEYS]) != TC_OK)
            die("get");
        tc_free(out);
    }
    w->ns = now_ns() - t0;
    return NULL;
}

static void *pool_worker(void *arg)
{
    worker *w = arg;
    double t0 = now_ns();
    for (int i = 0; i < w->ops; i++) {
        pthread_mutex_lock(&w->pl->mu);
        redisContext *rc = w->pl->free_list[--w->pl->nfree];
        pthread_mutex_unlock(&w->pl->mu);
        const char *argv[] = {"GET", full[i % NKEYS]};
        size_t lens[] = {3, flen[i % NKEYS]};
        raw_ok(redisCommandArgv(rc, 2, argv, lens), REDIS_REPLY_STRING);
        pthread_mutex_lock(&w->pl->mu);
        w->pl->free_list[w->pl->nfree++] = rc;
        pthread_mutex_unlock(&w->pl->mu);
    }
    w->ns = now_ns() - t0;
    return NULL;
}

static double two_threads(void *(*fn)(void *), tc_cache *c, pool *pl, int ops)
{
    worker w[2] = {{c, pl, ops, 0}, {c, pl, ops, 0}};
    pthread_t t[2];
    double t0 = now_ns();
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, fn, &w[i]) != 0)
            die("thread");
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return 2.0 * ops / ((now_ns() - t0) / 1e9);
}

static void bench_conn_model(const char *place, tc_cache *c)
{
    pool pl = {.nfree = 2};
    pthread_mutex_init(&pl.mu, NULL);
    pl.free_list[0] = raw_connect();
    pl.free_list[1] = raw_connect();
    const int ops = 5000;
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        v[r] = two_threads(tier_worker, c, NULL, ops);
        b[r] = two_threads(pool_worker, NULL, &pl, ops);
    }
    char id[64];
    snprintf(id, sizeof id, "conn-per-thread-vs-pool-%s", place);
    report(id, "ops_per_s_2threads", median(v, ROUNDS), median(b, ROUNDS));
    redisFree(pl.free_list[0]);
    redisFree(pl.free_list[1]);
    pthread_mutex_destroy(&pl.mu);
}

/* ---- auto-pipelining ---------------------------------------------------------------------- */

#define AP_TOTAL 24000 /* operations per measurement, over all threads */

typedef struct ap_worker {
    tc_cache *c;    /* NULL: the raw baseline, on raw */
    redisContext *raw;
    int id, ops, put;
    atomic_int *go;
} ap_worker;

static void *ap_work(void *arg)
{
    ap_worker *w = arg;
    tc__redis *tier = w->c != NULL ? tc__cache_redis(w->c) : NULL;
    int64_t version = (int64_t)w->id << 32;
    while (!atomic_load(w->go))
        sched_yield();
    for (int i = 0; i < w->ops; i++) {
        int k = (w->id * 131 + i) % NKEYS;
        if (w->put && tier != NULL) {
            if (tc__redis_set(tier, setkeys[k], setklen[k], val, VLEN, ++version, 600000) !=
                TC_OK)
                die("autopipe set");
        } else if (w->put) {
            const char *argv[] = {"SET", full[k], val, "PX", "600000"};
            size_t lens[] = {3, flen[k], VLEN, 2, 6};
            raw_ok(redisCommandArgv(w->raw, 5, argv, lens), REDIS_REPLY_STATUS);
        } else if (tier != NULL) {
            void *out;
            size_t len;
            if (tc_get(&out, &len, w->c, keys[k], klen[k]) != TC_OK)
                die("autopipe get");
            tc_free(out);
        } else {
            const char *argv[] = {"GET", full[k]};
            size_t lens[] = {3, flen[k]};
            raw_ok(redisCommandArgv(w->raw, 2, argv, lens), REDIS_REPLY_STRING);
        }
    }
    return NULL;
}

/* ops/s of t threads, each doing AP_TOTAL / t operations: through c, or each on a raw
 * connection of its own (c NULL). */
static double ap_run(tc_cache *c, int t, int put)
{
    ap_worker w[64];
    pthread_t th[64];
    atomic_int go = 0;
    for (int i = 0; i < t; i++)
        w[i] = (ap_worker){c, c == NULL ? raw_connect() : NULL, i, AP_TOTAL / t, put, &go};
    for (int i = 0; i < t; i++)
        if (pthread_create(&th[i], NULL, ap_work, &w[i]) != 0)
            die("thread");
    double t0 = now_ns();
    atomic_store(&go, 1);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    double secs = (now_ns() - t0) / 1e9;
    for (int i = 0; i < t; i++)
        if (w[i].raw != NULL)
            redisFree(w[i].raw);
    return (double)(AP_TOTAL / t) * t / secs;
}

/* The bound: one thread sending the same GETs (SETs) raw, t at a time in one write, then
 * reading their t replies. What batching t commands can reach at most on this machine, with no
 * thread to hand a reply to. */
static double ap_bound(redisContext *raw, int t, int put)
{
    int n = AP_TOTAL / t;
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < t; j++) {
            int k = (j * 131 + i) % NKEYS;
            if (put) {
                const char *argv[] = {"SET", full[k], val, "PX", "600000"};
                size_t lens[] = {3, flen[k], VLEN, 2, 6};
                redisAppendCommandArgv(raw, 5, argv, lens);
            } else {
                const char *argv[] = {"GET", full[k]};
                size_t lens[] = {3, flen[k]};
                redisAppendCommandArgv(raw, 2, argv, lens);
            }
        }
        for (int j = 0; j < t; j++) {
            void *rep;
            if (redisGetReply(raw, &rep) != REDIS_OK)
                die("bound reply");
            raw_ok(rep, put ? REDIS_REPLY_STATUS : REDIS_REPLY_STRING);
        }
    }
    return (double)n * t / ((now_ns() - t0) / 1e9);
}

/* The other bound: t threads that each post a request and sleep on a futex until one
 * dispatcher thread, polling their words, answers it and wakes them; no Redis at all. Any
 * design that hands each answer to a caller blocked in its own thread pays this wake per call
 * (rueidis's goroutines switch in user space and do not); on a paravirtualized machine it is
 * the larger part of a call. */
static atomic_int wake_word[64];
static atomic_int wake_stop;

static void *wake_caller(void *arg)
{
    atomic_int *w = arg;
    for (int i = 0; i < AP_TOTAL / 64 * 4; i++) {
        atomic_store(w, 1);
        while (atomic_load(w) == 1)
            syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
    }
    return NULL;
}

static void *wake_dispatcher(void *arg)
{
    int t = *(int *)arg;
    while (!atomic_load(&wake_stop)) {
        int any = 0;
        for (int i = 0; i < t; i++) {
            if (atomic_load(&wake_word[i]) == 1) {
                atomic_store(&wake_word[i], 2);
                syscall(SYS_futex, &wake_word[i], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
                any = 1;
            }
        }
        if (!any)
            sched_yield();
    }
    return NULL;
}

static double ap_wake_bound(int t)
{
    pthread_t th[64], d;
    atomic_store(&wake_stop, 0);
    for (int i = 0; i < t; i++)
        atomic_store(&wake_word[i], 0);
    if (pthread_create(&d, NULL, wake_dispatcher, &t) != 0)
        die("thread");
    double t0 = now_ns();
    for (int i = 0; i < t; i++)
        if (pthread_create(&th[i], NULL, wake_caller, &wake_word[i]) != 0)
            die("thread");
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    double secs = (now_ns() - t0) / 1e9;
    atomic_store(&wake_stop, 1);
    pthread_join(d, NULL);
    return (double)(AP_TOTAL / 64 * 4) * t / secs;
}

static void bench_autopipe(const char *place, tc_cache *c)
{
    static const int threads[] = {1, 4, 16, 64};
    redisContext *raw = raw_connect();
    for (int put = 0; put < 2; put++) {
        for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
            double v[ROUNDS], b[ROUNDS], lv[ROUNDS], wv[ROUNDS];
            for (int r = 0; r < ROUNDS; r++) {
                v[r] = ap_run(c, threads[k], put);
                b[r] = ap_run(NULL, threads[k], put);
                lv[r] = ap_bound(raw, threads[k], put);
                wv[r] = put || threads[k] == 1 ? 0 : ap_wake_bound(threads[k]);
            }
            char id[64];
            const char *op = put ? "put" : "get";
            snprintf(id, sizeof id, "redis-autopipe-%s-%d-%s", op, threads[k], place);
            report(id, "ops_per_s", median(v, ROUNDS), median(b, ROUNDS));
            snprintf(id, sizeof id, "redis-autopipe-%s-bound-%d-%s", op, threads[k], place);
            report(id, "ops_per_s", median(lv, ROUNDS), median(b, ROUNDS));
            if (wv[0] > 0) {
                snprintf(id, sizeof id, "redis-autopipe-wake-bound-%d-%s", threads[k], place);
                report(id, "ops_per_s", median(wv, ROUNDS), median(b, ROUNDS));
            }
        }
    }
    redisFree(raw);
}

/* ---- connection reuse ------------------------------------------------------------------------ */

static void bench_conn_reuse(const char *place)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"store\": {\"path\": \"%s/shared.db\"}, \"edge\": {\"enabled\": false},"
             " \"redis\": {\"host\": \"127.0.0.1\", \"port\": %d}}",
             dir, srv.port);
    setenv("TIERCACHE_CONFIG", json, 1);
    tc_cache *c;
    if (tc_shared(&c) != TC_OK || tc_put(c, "k", 1, val, VLEN, 0) != TC_OK)
        die("shared");
    const int ops = 1000;
    double v[ROUNDS], b[ROUNDS], lv[ROUNDS];
    /* The bound: the same GET on a raw connection kept open, which no reuse can beat. */
    redisContext *kept = raw_connect();
    for (int r = 0; r < ROUNDS; r++) {
        char buf[VLEN];
        size_t len;
        double t0 = now_ns();
        for (int i = 0; i < ops; i++)
            if (tc_shared(&c) != TC_OK || tc_get_into(&len, c, "k", 1, buf, sizeof buf) != TC_OK)
                die("warm");
        v[r] = (now_ns() - t0) / ops / 1000;
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            const char *argv[] = {"GET", "tc:k"};
            size_t lens[] = {3, 4};
            raw_ok(redisCommandArgv(kept, 2, argv, lens), REDIS_REPLY_STRING);
        }
        lv[r] = (now_ns() - t0) / ops / 1000;
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            redisContext *rc = raw_connect();
            const char *argv[] = {"GET", "tc:k"};
            size_t lens[] = {3, 4};
            raw_ok(redisCommandArgv(rc, 2, argv, lens), REDIS_REPLY_STRING);
            redisFree(rc);
        }
        b[r] = (now_ns() - t0) / ops / 1000;
    }
    char id[64];
    snprintf(id, sizeof id, "conn-reuse-%s", place);
    report(id, "us_per_call", median(v, ROUNDS), median(b, ROUNDS));
    snprintf(id, sizeof id, "conn-reuse-bound-%s", place);
    report(id, "us_per_call", median(lv, ROUNDS), median(b, ROUNDS));
    redisFree(kept);
    tc_shared_reset();
}

int main(int argc, char **argv)
{
    /* "bench_redis autopipe": that part alone, for working on it. */
    int only_autopipe = argc > 1 && strcmp(argv[1], "autopipe") == 0;
    if (tct_tmpdir(dir, sizeof dir) != 0 || tct_redis_start(&srv) != 0) {
        printf("bench_redis: redis-server not available: skipped\n");
        return 0;
    }
    memset(val, 'v', sizeof val);
    for (int i = 0; i < NKEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "bench:key:%d", i);
        klen[i] = strlen(keys[i]);
        snprintf(full[i], sizeof full[i], "tc:%s", keys[i]);
        flen[i] = strlen(full[i]);
        snprintf(setkeys[i], sizeof setkeys[i], "bench:set:%d", i);
        setklen[i] = strlen(setkeys[i]);
    }
    /* With SIGPIPE at its default first (the tier guards each command), then ignored. */
    if (!only_autopipe) {
        pin(srv.pid, 0);
        pin(0, 0);
        tc_cache *c = open_cache("db", 0, 0);
        for (int i = 0; i < NKEYS; i++)
            if (tc_put(c, keys[i], klen[i], val, VLEN, 0) != TC_OK)
                die("put");
        redisContext *raw = raw_connect();
        bench_get_only(c, raw);
        redisFree(raw);
        tc_close(c);
    }
    signal(SIGPIPE, SIG_IGN);
    static const struct { const char *name; int client_cpu; } places[] = {
        {"same", 0}, {"split", 1}};
    for (size_t p = 0; p < 2; p++) {
        pin(srv.pid, 0);
        pin(0, places[p].client_cpu);
        tc_cache *c = open_cache("db", 0, 0);
        for (int i = 0; i < NKEYS; i++)
            if (tc_put(c, keys[i], klen[i], val, VLEN, 0) != TC_OK)
                die("put");
        redisContext *raw = raw_connect();
        if (!only_autopipe) {
            bench_get_set(places[p].name, c, raw);
            bench_getmany(places[p].name, c, raw);
            bench_edge_vs_redis(places[p].name, raw);
            bench_bus(places[p].name, raw);
            bench_conn_model(places[p].name, c);
            bench_conn_reuse(places[p].name);
        }
        bench_autopipe(places[p].name, c);
        redisFree(raw);
        tc_close(c);
    }
    tct_redis_stop(&srv);
    tct_rmrf(dir);
    return 0;
}
