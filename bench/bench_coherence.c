/*
 * bench_coherence.c - the coherence window: how long a write made in plain SQL by another
 * program stays visible in the edge tiers of the processes that read it.
 *
 *   coherence-window-<store>  READERS reader processes, each with its own handle (edge, bus
 *                             subscription), hold a key's old version in their edge and read it
 *                             in a loop (a read every ~200 us, which leaves the CPU to the
 *                             path measured). A separate process runs the invalidator. This
 *                             process commits an UPDATE in plain SQL on its own connection
 *                             and takes the time when the commit returns; the window
 *                             is from then until the last reader's edge dropped the old version
 *                             (the bus message applied: from that instant no read of the reader
 *                             returns it). p50, p99 and max in milliseconds, over ROUNDS rounds.
 *                             The first read that returns the new version (the window plus one
 *                             reload from the store) is printed as a comment line (# hop).
 *   Baselines, measured in the same run:
 *     PostgreSQL: raw NOTIFY -> LISTEN (a commit that notifies, to a libpq listener that polls
 *                 its socket: the floor of a database that pushes changes) plus raw PUBLISH ->
 *                 SUBSCRIBE (hiredis: the floor of the bus), the p50 of each, summed.
 *     SQLite:     raw PUBLISH -> SUBSCRIBE alone (a same-host writer's commit is seen through
 *                 the WAL file's change, which costs no round trip).
 *
 * Usage: bench_coherence [sqlite|postgres]... (none: both; postgres is skipped when no server
 * is installed).
 */
#include <errno.h>
#include <hiredis.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "core/cache.h"
#include "pg_harness.h"
#include "tc_test.h"
#include "tiercache.h"

#define ROUNDS 200
#define READERS 4
#define KEYS 16

static tct_redis redis;

/* What the processes share (MAP_SHARED, made before the forks). */
typedef struct shared {
    atomic_int round;           /* the round the readers prepare; -1: stop */
    atomic_int ready[READERS];  /* the round each reader holds the old version of */
    atomic_int done[READERS];   /* the round each reader saw the new version in */
    atomic_llong old_version[READERS];
    double seen_ns[READERS];    /* when each reader's read returned the new version */
    double bus_ns[READERS];     /* when each reader applied the first bus message after ready */
} shared;

static shared *sh;

static int64_t version_of(tc_cache *c, const char *key)
{
    void *v = NULL;
    size_t len;
    int64_t ver = 0;
    if (tc_get_ex(&v, &len, NULL, &ver, c, key, strlen(key)) != TC_OK)
        ver = 0;
    tc_free(v);
    return ver;
}

static void pause_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

static void key_of(char *key, size_t n, int round)
{
    snprintf(key, n, "coh:%d", round % KEYS);
}

/* ---- the readers ---------------------------------------------------------------------------- */

static int my_slot = -1;
static atomic_int bus_armed;

/* On the reader's subscriber thread: the first bus message after the reader is ready. */
static void on_bus(tc_cache *c)
{
    (void)c;
    if (atomic_exchange(&bus_armed, 0))
        sh->bus_ns[my_slot] = now_ns();
}

static void reader_main(int slot, const char *json)
{
    my_slot = slot;
    tc_cache *c = bench_open_json("bench_coherence", json);
    atomic_store(&tc__hook_bus_applied, on_bus);
    for (int last = -1;;) {
        int r = atomic_load(&sh->round);
        if (r == -1)
            break;
        if (r == last || r < 0) {
            pause_us(200);
            continue;
        }
        char key[32];
        key_of(key, sizeof key, r);
        int64_t old = version_of(c, key);
        if (old == 0 || version_of(c, key) != old) {
            pause_us(1000);
            continue; /* not settled yet: the parent waits, and this is tried again */
        }
        last = r;
        atomic_store(&sh->old_version[slot], old);
        atomic_store(&bus_armed, 1);
        atomic_store(&sh->ready[slot], r);
        double until = now_ns() + 5e9;
        while (now_ns() < until && atomic_load(&sh->round) == r) {
            if (version_of(c, key) > old) {
                sh->seen_ns[slot] = now_ns();
                atomic_store(&sh->done[slot], r);
                break;
            }
            pause_us(200);
        }
    }
    atomic_store(&tc__hook_bus_applied, NULL);
    tc_close(c);
    _exit(0);
}

static void invalidator_main(const char *json)
{
    tc_cache *c = bench_open_json("bench_coherence", json);
    tc_invalidator *inv = NULL;
    if (tc_invalidator_new(&inv, c) != TC_OK || tc_invalidator_start(inv) != TC_OK) {
        fprintf(stderr, "bench_coherence: invalidator: %s\n", tc_errmsg(c));
        _exit(1);
    }
    while (atomic_load(&sh->round) != -1)
        pause_us(10000);
    tc_invalidator_free(inv);
    tc_close(c);
    _exit(0);
}

/* ---- raw baselines -------------------------------------------------------------------------- */

static double pub_ns[ROUNDS], recv_ns[ROUNDS];

static void *raw_subscriber(void *arg)
{
    redisContext *s = arg;
    for (int i = 0; i < ROUNDS; i++) {
        redisReply *r;
        if (redisGetReply(s, (void **)&r) != REDIS_OK)
            return NULL;
        double t = now_ns();
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            int k = atoi(r->element[2]->str);
            if (k >= 0 && k < ROUNDS)
                recv_ns[k] = t;
        }
        freeReplyObject(r);
    }
    return NULL;
}

/* The p50 of PUBLISH -> delivery, in ms. */
static double raw_pubsub_ms(void)
{
    redisContext *s = redisConnect("127.0.0.1", redis.port);
    redisContext *p = redisConnect("127.0.0.1", redis.port);
    if (s == NULL || s->err || p == NULL || p->err)
        return 0;
    const char *sub[2] = {"SUBSCRIBE", "bench-coh-raw"};
    redisReply *r = redisCommandArgv(s, 2, sub, NULL);
    freeReplyObject(r);
    pthread_t th;
    pthread_create(&th, NULL, raw_subscriber, s);
    for (int i = 0; i < ROUNDS; i++) {
        char n[16];
        snprintf(n, sizeof n, "%d", i);
        const char *argv[3] = {"PUBLISH", "bench-coh-raw", n};
        pub_ns[i] = now_ns();
        r = redisCommandArgv(p, 3, argv, NULL);
        freeReplyObject(r);
        pause_us(1000);
    }
    pthread_join(th, NULL);
    double lat[ROUNDS];
    for (int i = 0; i < ROUNDS; i++)
        lat[i] = (recv_ns[i] - pub_ns[i]) / 1e6;
    redisFree(s);
    redisFree(p);
    return median(lat, ROUNDS);
}

/* The p50 of a notifying commit's return -> the listener's receipt, in ms. */
static double raw_notify_ms(const char *conninfo)
{
    PGconn *l = PQconnectdb(conninfo), *w = PQconnectdb(conninfo);
    double lat[ROUNDS];
    int n = 0;
    if (PQstatus(l) == CONNECTION_OK && PQstatus(w) == CONNECTION_OK) {
        PQclear(PQexec(l, "LISTEN bench_coh_raw"));
        for (int i = 0; i < ROUNDS; i++) {
            PGresult *res = PQexec(w, "NOTIFY bench_coh_raw");
            double t0 = now_ns();
            PQclear(res);
            for (int got = 0; !got;) {
                struct pollfd p = {.fd = PQsocket(l), .events = POLLIN};
                if (poll(&p, 1, 5000) <= 0 || !PQconsumeInput(l))
                    break;
                PGnotify *note;
                while ((note = PQnotifies(l)) != NULL) {
                    PQfreemem(note);
                    got = 1;
                }
                if (got)
                    lat[n++] = (now_ns() - t0) / 1e6;
            }
            pause_us(1000);
        }
    }
    PQfinish(l);
    PQfinish(w);
    return n > 0 ? median(lat, n) : 0;
}

/* ---- one store ------------------------------------------------------------------------------ */

static void sql_update(sqlite3 *db, PGconn *pg, const char *key, int i)
{
    char val[64];
    snprintf(val, sizeof val, "sql-%d", i);
    if (db != NULL) {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(db, "UPDATE tiercache SET value = ?2 WHERE key = ?1", -1, &st, NULL);
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(st, 2, val, (int)strlen(val), SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            fprintf(stderr, "bench_coherence: update: %s\n", sqlite3_errmsg(db));
        sqlite3_finalize(st);
    } else {
        const char *params[2] = {key, val};
        PGresult *r = PQexecParams(pg, "UPDATE tiercache SET value = convert_to($2, 'UTF8') "
                                       "WHERE key = $1", 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fprintf(stderr, "bench_coherence: update: %s", PQerrorMessage(pg));
        PQclear(r);
    }
}

static int all_at(atomic_int *v, int round, double timeout_ns)
{
    double until = now_ns() + timeout_ns;
    for (;;) {
        int n = 0;
        for (int i = 0; i < READERS; i++)
            n += atomic_load(&v[i]) == round;
        if (n == READERS)
            return 1;
        if (now_ns() > until)
            return 0;
        pause_us(100);
    }
}

static double pct(const double *sorted, int n, int p)
{
    int i = (n * p) / 100;
    return sorted[i < n ? i : n - 1];
}

/* Runs the rounds; window[] and bus[] receive each round's figures (ms); returns their count. */
static int run_rounds(const char *json, sqlite3 *db, PGconn *pgc, double *window, double *bus)
{
    tc_cache *w = bench_open_json("bench_coherence", json);
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        key_of(key, sizeof key, k);
        tc_put(w, key, strlen(key), "init", 4, 0);
    }
    tc_close(w);
    int n = 0;
    for (int r = 0; r < ROUNDS; r++) {
        char key[32];
        key_of(key, sizeof key, r);
        atomic_store(&sh->round, r);
        if (!all_at(sh->ready, r, 5e9)) {
            fprintf(stderr, "bench_coherence: round %d: the readers did not settle\n", r);
            continue;
        }
        pause_us(20000); /* the invalidator is idle, waiting for the next change */
        sql_update(db, pgc, key, r);
        double t0 = now_ns();
        if (!all_at(sh->done, r, 5e9)) {
            fprintf(stderr, "bench_coherence: round %d: a reader never saw the new version\n", r);
            continue;
        }
        double last = 0, last_bus = 0;
        for (int i = 0; i < READERS; i++) {
            if (sh->seen_ns[i] > last)
                last = sh->seen_ns[i];
            if (sh->bus_ns[i] > last_bus)
                last_bus = sh->bus_ns[i];
        }
        window[n] = (last - t0) / 1e6;
        bus[n] = (last_bus - t0) / 1e6;
        n++;
    }
    return n;
}

static void bench_store(const char *store)
{
    int is_pg = strcmp(store, "postgres") == 0;
    tct_pg pg;
    memset(&pg, 0, sizeof pg);
    char dir[256], json[2048], db_path[600];
    if (tct_tmpdir(dir, sizeof dir) != 0)
        exit(1);
    snprintf(db_path, sizeof db_path, "%s/coherence.db", dir);
    if (is_pg && (!tct_pg_available() || tct_pg_start(&pg) != 0)) {
        printf("# coherence-window-postgres: skipped (no PostgreSQL server)\n");
        tct_rmrf(dir);
        return;
    }
    snprintf(json, sizeof json,
             "{\"redis\": {\"host\": \"127.0.0.1\", \"port\": %d, \"namespace\": \"coh-%s:\"}, "
             "\"store\": {\"type\": \"%s\", "
             "\"path\": \"%s\", \"conninfo\": \"%s\"}, \"edge\": {\"max_ttl_ms\": 60000}, "
             "\"default_ttl_ms\": 60000}",
             redis.port, store, store, db_path, is_pg ? pg.conninfo : "");
    /* The table exists before anyone writes it in plain SQL. */
    tc_close(bench_open_json("bench_coherence", json));

    memset(sh, 0, sizeof *sh);
    for (int i = 0; i < READERS; i++) {
        atomic_store(&sh->ready[i], -1);
        atomic_store(&sh->done[i], -1);
    }
    atomic_store(&sh->round, -2); /* nothing to prepare yet, and not stopped */
    pid_t pids[READERS + 1];
    for (int i = 0; i <= READERS; i++) {
        fflush(NULL);
        pids[i] = fork();
        if (pids[i] == 0) {
            if (i == READERS)
                invalidator_main(json);
            reader_main(i, json);
        }
    }
    sqlite3 *db = NULL;
    PGconn *pgc = NULL;
    if (is_pg)
        pgc = PQconnectdb(pg.conninfo);
    else
        sqlite3_open(db_path, &db), sqlite3_busy_timeout(db, 10000);

    static double window[ROUNDS], bus[ROUNDS];
    int n = run_rounds(json, db, pgc, window, bus);
    atomic_store(&sh->round, -1);
    for (int i = 0; i <= READERS; i++)
        waitpid(pids[i], NULL, 0);
    if (db != NULL)
        sqlite3_close(db);
    if (pgc != NULL)
        PQfinish(pgc);
    if (n > 0) {
        double raw_pub = raw_pubsub_ms();
        double raw_notify = is_pg ? raw_notify_ms(pg.conninfo) : 0;
        double base = raw_pub + raw_notify;
        qsort(window, (size_t)n, sizeof *window, cmp_double);
        qsort(bus, (size_t)n, sizeof *bus, cmp_double);
        char id[64];
        snprintf(id, sizeof id, "coherence-window-%s", store);
        printf("# %s: %d rounds, %d readers; raw PUBLISH->SUBSCRIBE p50 %.3f ms%s", id, n,
               READERS, raw_pub, is_pg ? "" : "\n");
        if (is_pg)
            printf(", raw NOTIFY->LISTEN p50 %.3f ms\n", raw_notify);
        report(id, "p50_ms", pct(bus, n, 50), base);
        report(id, "p99_ms", pct(bus, n, 99), base);
        report(id, "max_ms", bus[n - 1], base);
        /* The first read that returns the new version: the window plus one reload (Redis holds
         * the tombstone, so the store is read and both caches filled). */
        printf("# hop %s commit -> the last reader's read of the new version: p50 %.3f p99 "
               "%.3f max %.3f ms\n", id, pct(window, n, 50), pct(window, n, 99),
               window[n - 1]);
    }
    if (is_pg)
        tct_pg_stop(&pg);
    tct_rmrf(dir);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "sqlite") != 0 && strcmp(argv[i], "postgres") != 0) {
            fprintf(stderr, "usage: %s [sqlite|postgres]...\n", argv[0]);
            return 2;
        }
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || tct_redis_start(&redis) != 0)
        return 1;
    if (argc < 2) {
        bench_store("sqlite");
        bench_store("postgres");
    }
    for (int i = 1; i < argc; i++)
        bench_store(argv[i]);
    tct_redis_stop(&redis);
    return 0;
}
