/*
 * bench_bus.c - how long a write made in plain SQL takes to leave the edge tiers of the other
 * handles: the invalidator's end-to-end path (change log -> invalidator -> Redis tombstone and
 * bus -> edge eviction), against a private redis-server.
 *
 *   bus-e2e-<store>  from the return of a plain-SQL UPDATE's commit (its own connection) to the
 *                    moment the last of 2 other handles (this process, each with its own edge
 *                    and bus subscription) serves the new version; they hold the old version in
 *                    their edge beforehand and poll with tc_get_ex. p50 and p99, in us.
 *                    Baseline: SQLite: feed.poll_ms (the invalidator polls the log; nothing
 *                    wakes it on another connection's commit); PostgreSQL: a raw PUBLISH ->
 *                    SUBSCRIBE delivery measured with hiredis in the same run (NOTIFY wakes the
 *                    invalidator, so the bus is the floor).
 *
 * Usage: bench_bus [sqlite|postgres]... (none: both; postgres is skipped when the store has no
 * change feed in this build or no server is installed).
 */
#include <hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "pg_harness.h"
#include "tc_test.h"
#include "tiercache.h"

#define ROUNDS 200
#define POLL_MS 20

static tct_redis redis;

static tc_cache *open_json(const char *json)
{
    tc_config *cfg;
    tc_cache *c = NULL;
    int rc = tc_config_new(&cfg);
    if (rc == TC_OK)
        rc = tc_config_load_json(cfg, json, strlen(json));
    if (rc == TC_OK)
        rc = tc_open(&c, cfg);
    if (rc != TC_OK) {
        fprintf(stderr, "bench_bus: open: %s (%s %s)\n", tc_strerror(rc), tc_config_errmsg(cfg),
                tc_errmsg(NULL));
        exit(1);
    }
    tc_config_free(cfg);
    return c;
}

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

/* ---- raw PUBLISH -> SUBSCRIBE ------------------------------------------------------------- */

static double pub_ns[ROUNDS], recv_ns[ROUNDS];

static void *subscriber(void *arg)
{
    redisContext *s = arg;
    for (int i = 0; i < ROUNDS; i++) {
        redisReply *r;
        if (redisGetReply(s, (void **)&r) != REDIS_OK)
            return NULL;
        double t = now_ns();
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3)
            recv_ns[atoi(r->element[2]->str)] = t;
        freeReplyObject(r);
    }
    return NULL;
}

/* The p50 of PUBLISH -> delivery, in us. */
static double pubsub_p50_us(void)
{
    redisContext *s = redisConnect("127.0.0.1", redis.port);
    redisContext *p = redisConnect("127.0.0.1", redis.port);
    if (s == NULL || s->err || p == NULL || p->err)
        return 0;
    redisReply *r = redisCommand(s, "SUBSCRIBE bench-bus-raw");
    freeReplyObject(r);
    pthread_t th;
    pthread_create(&th, NULL, subscriber, s);
    for (int i = 0; i < ROUNDS; i++) {
        pub_ns[i] = now_ns();
        r = redisCommand(p, "PUBLISH bench-bus-raw %d", i);
        freeReplyObject(r);
        usleep(1000);
    }
    pthread_join(th, NULL);
    double lat[ROUNDS];
    for (int i = 0; i < ROUNDS; i++)
        lat[i] = (recv_ns[i] - pub_ns[i]) / 1e3;
    redisFree(s);
    redisFree(p);
    return median(lat, ROUNDS);
}

/* ---- the end-to-end run ------------------------------------------------------------------- */

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
            fprintf(stderr, "bench_bus: update: %s\n", sqlite3_errmsg(db));
        sqlite3_finalize(st);
    } else {
        const char *params[2] = {key, val};
        PGresult *r = PQexecParams(pg, "UPDATE tiercache SET value = convert_to($2, 'UTF8') "
                                       "WHERE key = $1", 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fprintf(stderr, "bench_bus: update: %s", PQerrorMessage(pg));
        PQclear(r);
    }
}

static void bench_store(const char *store)
{
    int is_pg = strcmp(store, "postgres") == 0;
    tct_pg pg;
    memset(&pg, 0, sizeof pg);
    char dir[256], json[2048], db_path[600];
    if (tct_tmpdir(dir, sizeof dir) != 0)
        exit(1);
    snprintf(db_path, sizeof db_path, "%s/bus.db", dir);
    if (is_pg && (!tct_pg_available() || tct_pg_start(&pg) != 0)) {
        printf("# bus-e2e-postgres: skipped (no PostgreSQL server)\n");
        tct_rmrf(dir);
        return;
    }
    snprintf(json, sizeof json,
             "{\"redis\": {\"host\": \"127.0.0.1\", \"port\": %d}, \"store\": {\"type\": \"%s\", "
             "\"path\": \"%s\", \"conninfo\": \"%s\"}, \"edge\": {\"max_ttl_ms\": 60000}, "
             "\"default_ttl_ms\": 60000, \"feed\": {\"poll_ms\": %d}}",
             redis.port, store, db_path, is_pg ? pg.conninfo : "", POLL_MS);
    tc_cache *w = open_json(json), *a = open_json(json), *b = open_json(json);
    tc_invalidator *inv = NULL;
    if (tc_invalidator_new(&inv, w) != TC_OK) {
        printf("# bus-e2e-%s: skipped (%s)\n", store, tc_errmsg(w));
        tc_close(a);
        tc_close(b);
        tc_close(w);
        if (is_pg)
            tct_pg_stop(&pg);
        tct_rmrf(dir);
        return;
    }
    tc_invalidator_start(inv);
    sqlite3 *db = NULL;
    PGconn *pgc = NULL;
    if (is_pg)
        pgc = PQconnectdb(pg.conninfo);
    else
        sqlite3_open(db_path, &db), sqlite3_busy_timeout(db, 10000);

    double e2e[ROUNDS];
    int n = 0;
    for (int i = 0; i < ROUNDS; i++) {
        char key[32];
        snprintf(key, sizeof key, "bus:%d", i % 16);
        if (i < 16)
            tc_put(w, key, strlen(key), "init", 4, 0);
        usleep(30000); /* the previous round's changes applied: the invalidator is idle */
        int64_t old_a = version_of(a, key), old_b = version_of(b, key);
        if (old_a == 0 || old_a != old_b || version_of(a, key) != old_a)
            continue;
        sql_update(db, pgc, key, i);
        double t0 = now_ns(), ta = 0, tb = 0;
        while ((ta == 0 || tb == 0) && now_ns() - t0 < 5e9) {
            if (ta == 0 && version_of(a, key) > old_a)
                ta = now_ns();
            if (tb == 0 && version_of(b, key) > old_b)
                tb = now_ns();
        }
        if (ta == 0 || tb == 0) {
            fprintf(stderr, "bench_bus: %s: round %d never saw the new version\n", store, i);
            continue;
        }
        e2e[n++] = ((ta > tb ? ta : tb) - t0) / 1e3;
    }
    tc_invalidator_free(inv);
    if (db != NULL)
        sqlite3_close(db);
    if (pgc != NULL)
        PQfinish(pgc);
    tc_close(a);
    tc_close(b);
    tc_close(w);
    if (n > 0) {
        qsort(e2e, (size_t)n, sizeof *e2e, cmp_double);
        double p50 = e2e[n / 2], p99 = e2e[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
        double base = is_pg ? pubsub_p50_us() : POLL_MS * 1000.0;
        char id[64];
        snprintf(id, sizeof id, "bus-e2e-%s", store);
        report(id, "p50-us", p50, base);
        report(id, "p99-us", p99, base);
        if (!is_pg)
            printf("# bus-e2e-sqlite: raw PUBLISH->SUBSCRIBE p50 %.1f us\n", pubsub_p50_us());
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
    if (tct_redis_start(&redis) != 0)
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
