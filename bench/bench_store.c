/*
 * bench_store.c - the stores' figures, each next to a bare-client baseline measured in the same
 * run, against private servers (tests/pg_harness.c, tests/harness.c):
 *   BENCH <id> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 *
 *   pg-conn-reuse   ops/s of warm tc_get (edge off, no Redis:   vs PQconnectdb, one SELECT of the
 *                   every call reaches PostgreSQL on the pool's    same row, PQfinish per call
 *                   kept connection)
 *   wt-put-pg       us per tc_put on the postgres store (edge on, vs the same write made bare, as any
 *                   private Redis: the whole write-through)        program would: one prepared
 *                                                                  autocommit upsert into the
 *                                                                  store's own table (its
 *                                                                  triggers version and log it)
 *   wt-put-sqlite   us per tc_put on the SQLite store (edge on,   vs the same for SQLite: one
 *                   private Redis)                                 upsert into the store's table
 *                                                                  from another connection, with
 *                                                                  the store's pragmas (WAL,
 *                                                                  synchronous=FULL)
 *
 *   wt-put-concurrent-<db>-T  puts/s of T threads through one     vs T threads, each on a bare
 *                   handle (tc_put, edge and Redis on; SQLite's     connection of its own, doing
 *                   group commit shares transactions)              the bare upsert
 *                   for db = sqlite, pg and T = 1, 4, 16
 *
 *   wt-put-pg-bound,    us per bare write followed by a SET of   vs the bare write alone
 *   wt-put-sqlite-bound the key in Redis over a raw connection
 *                       kept open: the least any write-through
 *                       can cost on this machine
 *
 * The baselines write the store's own table, not a table of their own: the triggers that give
 * plain-SQL writes their versions and log them are part of the store every writer pays for, so
 * the ratio is what the library adds (its versioned transaction, Redis, the edge, the bus).
 * The PostgreSQL server runs with fsync on (durable commits, as in production): a put's cost
 * is mostly its commit's flush, on both sides. Rounds alternate baseline and subject; the
 * figure is the median of ROUNDS. Compare ratios, not absolute figures.
 *
 * With -v (or BENCH_VERBOSE=1) it also prints where a put's time goes: the store's put alone
 * (tc__store through the internal interface) next to the whole tc_put.
 */
#include <hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "pg_harness.h"
#include "store/store.h"
#include "tc_test.h"
#include "tiercache.h"

#define ROUNDS 7
#define VLEN 100
#define NKEYS 100

static tct_pg pg;
static tct_redis redis;
static char dir[256];
static char val[VLEN];
static int verbose;

_Noreturn static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, detail != NULL ? detail : tc_errmsg(NULL));
    tct_pg_stop(&pg);
    tct_redis_stop(&redis);
    if (dir[0] != '\0')
        tct_rmrf(dir);
    exit(1);
}

static tc_cache *open_cache(const char *store_json, int edge, int with_redis)
{
    char json[1024], redis_json[128] = "";
    if (with_redis)
        snprintf(redis_json, sizeof redis_json,
                 ", \"redis\": {\"host\": \"127.0.0.1\", \"port\": %d}", redis.port);
    snprintf(json, sizeof json, "{\"store\": %s, \"edge\": {\"enabled\": %s}%s}", store_json,
             edge ? "true" : "false", redis_json);
    return bench_open_json("bench_store", json);
}

static const char *key_of(int i)
{
    static char k[NKEYS][16];
    if (k[i][0] == '\0')
        snprintf(k[i], sizeof k[i], "key:%d", i);
    return k[i];
}

/* ---- pg-conn-reuse -------------------------------------------------------------------------- */

static double warm_gets(tc_cache *c, int n)
{
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        size_t len;
        char buf[VLEN];
        if (tc_get_into(&len, c, "hot", 3, buf, sizeof buf) != TC_OK)
            die("tc_get", NULL);
    }
    return n / ((now_ns() - t0) / 1e9);
}

static double connect_per_call(const char *table, int n)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT value, version FROM %s WHERE key = $1", table);
    const char *params[1] = {"hot"};
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        PGconn *conn = PQconnectdb(pg.conninfo);
        if (PQstatus(conn) != CONNECTION_OK)
            die("connect", PQerrorMessage(conn));
        PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 1);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            die("select", PQerrorMessage(conn));
        PQclear(res);
        PQfinish(conn);
    }
    return n / ((now_ns() - t0) / 1e9);
}

static void bench_conn_reuse(void)
{
    char store[512];
    snprintf(store, sizeof store,
             "{\"type\": \"postgres\", \"conninfo\": \"%s\", \"table\": \"bench_get\"}",
             pg.conninfo);
    tc_cache *c = open_cache(store, 0, 0);
    if (tc_put(c, "hot", 3, val, VLEN, 0) != TC_OK)
        die("tc_put", NULL);
    warm_gets(c, 200); /* warm-up */
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        b[r] = connect_per_call("bench_get", 40);
        v[r] = warm_gets(c, 2000);
    }
    report("pg-conn-reuse", "ops/s", median(v, ROUNDS), median(b, ROUNDS));
    tc_close(c);
}

/* ---- wt-put-pg ------------------------------------------------------------------------------ */

static PGconn *raw_pg(const char *table)
{
    PGconn *conn = PQconnectdb(pg.conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        die("connect", PQerrorMessage(conn));
    char sql[512];
    /* table is one of this file's fixed names. */
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE"
             " SET value = EXCLUDED.value",
             table);
    PGresult *res = PQprepare(conn, "up", sql, 2, (const Oid[]){25, 17});
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die("raw prepare", PQerrorMessage(conn));
    PQclear(res);
    return conn;
}

/* The bounds' second half: the key's new value SET in Redis over a raw connection kept open,
 * the least any write-through can add to its commit (no version guard, no edge, no bus). */
static redisContext *raw_redis(void)
{
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    if (rc == NULL || rc->err)
        die("raw redis connect", rc != NULL ? rc->errstr : "out of memory");
    return rc;
}

static void raw_set(redisContext *rc, const char *k)
{
    if (rc == NULL)
        return;
    const char *argv[] = {"SET", k, val, "PX", "600000"};
    const size_t lens[] = {3, strlen(k), VLEN, 2, 6};
    redisReply *rep = redisCommandArgv(rc, 5, argv, lens);
    if (rep == NULL || rep->type != REDIS_REPLY_STATUS)
        die("raw redis SET", rc->errstr);
    freeReplyObject(rep);
}

/* rc: NULL for the bare write; else each write is followed by raw_set (the bound). */
static double raw_pg_puts(PGconn *conn, redisContext *rc, int n)
{
    static const int fmts[2] = {1, 1};
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        const char *k = key_of(i % NKEYS);
        const char *vals[2] = {k, val};
        const int lens[2] = {(int)strlen(k), VLEN};
        PGresult *res = PQexecPrepared(conn, "up", 2, vals, lens, fmts, 1);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            die("raw upsert", PQerrorMessage(conn));
        PQclear(res);
        raw_set(rc, k);
    }
    return (now_ns() - t0) / 1e3 / n;
}

static double tc_puts(tc_cache *c, int n)
{
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        const char *k = key_of(i % NKEYS);
        val[0] = (char)('a' + i % 26);
        if (tc_put(c, k, strlen(k), val, VLEN, 0) != TC_OK)
            die("tc_put", NULL);
    }
    return (now_ns() - t0) / 1e3 / n;
}

static double store_puts(tc__store *s, int n)
{
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        const char *k = key_of(i % NKEYS);
        int64_t v;
        if (s->ops->put(s, k, strlen(k), val, VLEN, &v) != TC_OK)
            die("store put", NULL);
    }
    return (now_ns() - t0) / 1e3 / n;
}

static void bench_wt_put_pg(void)
{
    char store[512];
    snprintf(store, sizeof store,
             "{\"type\": \"postgres\", \"conninfo\": \"%s\", \"table\": \"bench_put\"}",
             pg.conninfo);
    tc_cache *c = open_cache(store, 1, 1);
    PGconn *raw = raw_pg("bench_put"); /* the table the handle writes */
    tc__store *s = NULL;
    tc_cache *nr = NULL; /* verbose: the same put without the Redis tier */
    if (verbose) {
        if (tc__store_pg_open(&s, pg.conninfo, "bench_put2", 1, NULL) != TC_OK)
            die("store open", NULL);
        snprintf(store, sizeof store,
                 "{\"type\": \"postgres\", \"conninfo\": \"%s\", \"table\": \"bench_put3\"}",
                 pg.conninfo);
        nr = open_cache(store, 1, 0);
    }
    redisContext *rr = raw_redis();
    tc_puts(c, 100); /* warm-up: every key exists, so every put is an update */
    raw_pg_puts(raw, NULL, 100);
    if (s != NULL) {
        store_puts(s, 100);
        tc_puts(nr, 100);
    }
    double v[ROUNDS], b[ROUNDS], st[ROUNDS], vnr[ROUNDS], lv[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        b[r] = raw_pg_puts(raw, NULL, 300);
        v[r] = tc_puts(c, 300);
        lv[r] = raw_pg_puts(raw, rr, 300);
        if (s != NULL) {
            st[r] = store_puts(s, 300);
            vnr[r] = tc_puts(nr, 300);
        }
    }
    report("wt-put-pg", "us/op", median(v, ROUNDS), median(b, ROUNDS));
    report("wt-put-pg-bound", "us/op", median(lv, ROUNDS), median(b, ROUNDS));
    if (s != NULL) {
        fprintf(stderr, "  wt-put-pg breakdown (medians): bare upsert %.1f us, store put alone "
                        "%.1f us, tc_put without Redis %.1f us, tc_put %.1f us\n",
                median(b, ROUNDS), median(st, ROUNDS), median(vnr, ROUNDS), median(v, ROUNDS));
        s->ops->close(s);
        tc_close(nr);
    }
    redisFree(rr);
    PQfinish(raw);
    tc_close(c);
}

/* ---- wt-put-sqlite -------------------------------------------------------------------------- */

static void sq_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err);
}

static double raw_sqlite_puts(sqlite3 *db, sqlite3_stmt *st, redisContext *rc, int n)
{
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        const char *k = key_of(i % NKEYS);
        sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, val, VLEN, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("raw sqlite upsert", sqlite3_errmsg(db));
        sqlite3_reset(st);
        raw_set(rc, k);
    }
    return (now_ns() - t0) / 1e3 / n;
}

static void bench_wt_put_sqlite(void)
{
    char store[512], raw_path[300];
    snprintf(store, sizeof store, "{\"type\": \"sqlite\", \"path\": \"%s/wt.db\"}", dir);
    tc_cache *c = open_cache(store, 1, 1);
    /* The store's own file and table, from a connection of its own (another program). */
    snprintf(raw_path, sizeof raw_path, "%s/wt.db", dir);
    sqlite3 *db;
    if (sqlite3_open(raw_path, &db) != SQLITE_OK)
        die("sqlite open", sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 10000);
    sq_exec(db, "PRAGMA journal_mode=WAL");
    sq_exec(db, "PRAGMA synchronous=FULL");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO tiercache (key, value) VALUES (?1, ?2)"
                           " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           -1, &st, NULL) != SQLITE_OK)
        die("sqlite prepare", sqlite3_errmsg(db));
    tc__store *s = NULL;
    char sp[300];
    snprintf(sp, sizeof sp, "%s/store.db", dir);
    if (verbose && tc__store_sqlite_open(&s, sp, "tiercache", 5000, NULL) != TC_OK)
        die("store open", NULL);
    redisContext *rr = raw_redis();
    tc_puts(c, 100);
    raw_sqlite_puts(db, st, NULL, 100);
    if (s != NULL)
        store_puts(s, 100);
    double v[ROUNDS], b[ROUNDS], sv[ROUNDS], lv[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        b[r] = raw_sqlite_puts(db, st, NULL, 300);
        v[r] = tc_puts(c, 300);
        lv[r] = raw_sqlite_puts(db, st, rr, 300);
        if (s != NULL)
            sv[r] = store_puts(s, 300);
    }
    report("wt-put-sqlite", "us/op", median(v, ROUNDS), median(b, ROUNDS));
    report("wt-put-sqlite-bound", "us/op", median(lv, ROUNDS), median(b, ROUNDS));
    if (s != NULL) {
        fprintf(stderr, "  wt-put-sqlite breakdown: store put alone %.1f us, tc_put %.1f us, "
                        "bare upsert %.1f us (medians)\n",
                median(sv, ROUNDS), median(v, ROUNDS), median(b, ROUNDS));
        s->ops->close(s);
    }
    redisFree(rr);
    sqlite3_finalize(st);
    sqlite3_close(db);
    tc_close(c);
}

/* ---- wt-put-concurrent ---------------------------------------------------------------------- */

#define CONC_TOTAL 1200 /* puts per measurement, over all threads */

typedef struct conc {
    tc_cache *c;     /* the library's side: one handle for every thread */
    sqlite3 *db;     /* the baseline's: a connection of this thread's own, SQLite ... */
    sqlite3_stmt *st;
    PGconn *pg;      /* ... or PostgreSQL */
    int id, n;
} conc;

static void *conc_work(void *arg)
{
    conc *w = arg;
    static const int fmts[2] = {1, 1};
    for (int i = 0; i < w->n; i++) {
        const char *k = key_of((w->id * w->n + i) % NKEYS);
        if (w->c != NULL) {
            if (tc_put(w->c, k, strlen(k), val, VLEN, 0) != TC_OK)
                die("tc_put", NULL);
        } else if (w->db != NULL) {
            sqlite3_bind_text(w->st, 1, k, -1, SQLITE_STATIC);
            sqlite3_bind_blob(w->st, 2, val, VLEN, SQLITE_STATIC);
            if (sqlite3_step(w->st) != SQLITE_DONE)
                die("raw sqlite upsert", sqlite3_errmsg(w->db));
            sqlite3_reset(w->st);
        } else {
            const char *vals[2] = {k, val};
            const int lens[2] = {(int)strlen(k), VLEN};
            PGresult *res = PQexecPrepared(w->pg, "up", 2, vals, lens, fmts, 1);
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                die("raw upsert", PQerrorMessage(w->pg));
            PQclear(res);
        }
    }
    return NULL;
}

/* A bare writer's own SQLite connection to path, as bench_wt_put_sqlite's. */
static sqlite3 *raw_sqlite(const char *path, sqlite3_stmt **st)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die("sqlite open", sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 60000);
    sq_exec(db, "PRAGMA journal_mode=WAL");
    sq_exec(db, "PRAGMA synchronous=FULL");
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO tiercache (key, value) VALUES (?1, ?2)"
                           " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           -1, st, NULL) != SQLITE_OK)
        die("sqlite prepare", sqlite3_errmsg(db));
    return db;
}

/* puts/s of t threads: through c, or each on a bare connection of its own (c NULL; path set
 * for SQLite, NULL for PostgreSQL's bench_conc table). */
static double conc_run(tc_cache *c, const char *path, int t)
{
    conc w[16];
    pthread_t th[16];
    for (int i = 0; i < t; i++) {
        w[i] = (conc){.c = c, .id = i, .n = CONC_TOTAL / t};
        if (c == NULL && path != NULL)
            w[i].db = raw_sqlite(path, &w[i].st);
        else if (c == NULL)
            w[i].pg = raw_pg("bench_conc");
    }
    double t0 = now_ns();
    for (int i = 0; i < t; i++)
        if (pthread_create(&th[i], NULL, conc_work, &w[i]) != 0)
            die("thread", "pthread_create");
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    double secs = (now_ns() - t0) / 1e9;
    for (int i = 0; i < t; i++) {
        if (w[i].db != NULL) {
            sqlite3_finalize(w[i].st);
            sqlite3_close(w[i].db);
        }
        if (w[i].pg != NULL)
            PQfinish(w[i].pg);
    }
    return (double)(CONC_TOTAL / t) * t / secs;
}

static void bench_wt_put_concurrent(void)
{
    static const int threads[] = {1, 4, 16};
    char store[512], path[300];
    snprintf(path, sizeof path, "%s/conc.db", dir);
    snprintf(store, sizeof store, "{\"type\": \"sqlite\", \"path\": \"%s\"}", path);
    tc_cache *sq = open_cache(store, 1, 1);
    snprintf(store, sizeof store,
             "{\"type\": \"postgres\", \"conninfo\": \"%s\", \"table\": \"bench_conc\"}",
             pg.conninfo);
    tc_cache *pc = open_cache(store, 1, 1);
    for (int db = 0; db < 2; db++) {
        tc_cache *c = db == 0 ? sq : pc;
        const char *p = db == 0 ? path : NULL;
        conc_run(c, p, 4); /* warm-up: every key exists, so every put is an update */
        conc_run(NULL, p, 4);
        for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
            double v[3], b[3];
            for (int r = 0; r < 3; r++) {
                b[r] = conc_run(NULL, p, threads[k]);
                v[r] = conc_run(c, p, threads[k]);
            }
            char id[64];
            snprintf(id, sizeof id, "wt-put-concurrent-%s-%d", db == 0 ? "sqlite" : "pg",
                     threads[k]);
            report(id, "puts/s", median(v, 3), median(b, 3));
        }
    }
    tc_close(sq);
    tc_close(pc);
}

int main(int argc, char **argv)
{
    const char *env = getenv("BENCH_VERBOSE");
    verbose = (argc > 1 && strcmp(argv[1], "-v") == 0) || (env != NULL && env[0] == '1');
    signal(SIGPIPE, SIG_IGN);
    memset(val, 'v', sizeof val);
    if (tct_tmpdir(dir, sizeof dir) != 0)
        die("tmpdir", "mkdtemp failed");
    if (tct_pg_start_opts(&pg, 1) != 0)
        die("postgres", "cannot start a private server (see above)");
    if (tct_redis_start(&redis) != 0)
        die("redis", "cannot start a private redis-server");
    bench_conn_reuse();
    bench_wt_put_pg();
    bench_wt_put_sqlite();
    bench_wt_put_concurrent();
    tct_redis_stop(&redis);
    tct_pg_stop(&pg);
    tct_rmrf(dir);
    return 0;
}
