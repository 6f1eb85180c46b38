/*
 * bench.c - `make bench`: each figure is measured next to its baseline in the same run and
 * printed as one line:  BENCH <id> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 *
 *   edge-hit        ns per tc_get_into answered by the edge   vs  a prepared SQLite point read
 *   wt-put-sqlite-noredis  us per tc_put (write-through, no Redis)  vs  the same bare upsert
 *   redis-get       us per tc_get answered by Redis           vs  a raw hiredis GET loop
 *   shared-warm     us per call on the module-scope handle    vs  opening a handle per call
 *
 * Timings are medians of several rounds, on whatever this machine is doing: compare ratios.
 */
#include <hiredis.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tc_test.h"
#include "bench_util.h"
#include "tiercache.h"

#define ROUNDS 5

_Noreturn static void die(const char *what, int rc, tc_cache *c)
{
    fprintf(stderr, "bench: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(c));
    exit(1);
}

static tc_cache *open_cache(const char *path, int redis_port, int edge)
{
    tc_config *cfg;
    tc_cache *c;
    int rc = tc_config_new(&cfg);
    if (rc == TC_OK)
        rc = tc_config_set_string(cfg, "store.path", path);
    if (rc == TC_OK)
        rc = tc_config_set_bool(cfg, "edge.enabled", edge);
    if (rc == TC_OK && redis_port > 0) {
        rc = tc_config_set_string(cfg, "redis.host", "127.0.0.1");
        if (rc == TC_OK)
            rc = tc_config_set_int(cfg, "redis.port", redis_port);
    }
    if (rc == TC_OK)
        rc = tc_open(&c, cfg);
    tc_config_free(cfg);
    if (rc != TC_OK)
        die("open", rc, NULL);
    return c;
}

#define NKEYS 10000

static void key_of(char *buf, size_t n, int i)
{
    snprintf(buf, n, "bench:key:%d", i);
}

static void bench_edge_hit(const char *dir)
{
    char path[512], key[64], val[64], buf[64];
    snprintf(path, sizeof path, "%s/edge.db", dir);
    tc_cache *c = open_cache(path, 0, 1);
    memset(val, 'v', sizeof val);
    for (int i = 0; i < NKEYS; i++) {
        key_of(key, sizeof key, i);
        int rc = tc_put(c, key, strlen(key), val, sizeof val, 0);
        if (rc != TC_OK)
            die("put", rc, c);
    }
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT value, version FROM tiercache WHERE key = ?", -1, &st,
                           NULL) != SQLITE_OK) {
        fprintf(stderr, "bench: sqlite: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    /* Keys formatted and chosen before the clock starts: the loops time the reads alone. */
    enum { OPS = 200000, KEYLEN = 24 };
    static char keys[NKEYS][KEYLEN];
    static size_t klen[NKEYS];
    static int order[OPS];
    for (int i = 0; i < NKEYS; i++) {
        key_of(keys[i], KEYLEN, i);
        klen[i] = strlen(keys[i]);
    }
    unsigned seed = 1;
    for (int i = 0; i < OPS; i++) {
        seed = seed * 1103515245u + 12345u;
        order[i] = (int)((seed >> 8) % NKEYS);
    }
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < OPS; i++) {
            size_t len;
            const int k = order[i];
            if (tc_get_into(&len, c, keys[k], klen[k], buf, sizeof buf) != TC_OK)
                die("get", -1, c);
        }
        v[r] = (now_ns() - t0) / OPS;
        t0 = now_ns();
        for (int i = 0; i < OPS; i++) {
            const int k = order[i];
            sqlite3_bind_text(st, 1, keys[k], (int)klen[k], SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_ROW)
                die("sqlite read", -1, NULL);
            memcpy(buf, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
            sqlite3_reset(st);
        }
        b[r] = (now_ns() - t0) / OPS;
    }
    report("edge-hit", "ns_per_get", median(v, ROUNDS), median(b, ROUNDS));
    sqlite3_finalize(st);
    sqlite3_close(db);
    tc_close(c);
}

static void bench_put(const char *dir)
{
    char path[512], bpath[512], key[64], val[100];
    snprintf(path, sizeof path, "%s/put.db", dir);
    snprintf(bpath, sizeof bpath, "%s/bare.db", dir);
    tc_cache *c = open_cache(path, 0, 1);
    tc_cache *bare_init = open_cache(bpath, 0, 0); /* same schema, same pragmas */
    tc_close(bare_init);
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(bpath, &db) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", NULL, NULL,
                     NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO tiercache(key, value, version, updated_at) "
                           "VALUES (?, ?, 1, 0) ON CONFLICT(key) DO UPDATE SET "
                           "value = excluded.value, version = version + 1",
                           -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench: sqlite: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    memset(val, 'p', sizeof val);
    const int ops = 300;
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            key_of(key, sizeof key, i);
            int rc = tc_put(c, key, strlen(key), val, sizeof val, 0);
            if (rc != TC_OK)
                die("put", rc, c);
        }
        v[r] = (now_ns() - t0) / ops / 1000;
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            key_of(key, sizeof key, i);
            sqlite3_bind_text(st, 1, key, (int)strlen(key), SQLITE_STATIC);
            sqlite3_bind_blob(st, 2, val, sizeof val, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE)
                die("sqlite write", -1, NULL);
            sqlite3_reset(st);
        }
        b[r] = (now_ns() - t0) / ops / 1000;
    }
    report("wt-put-sqlite-noredis", "us_per_put", median(v, ROUNDS), median(b, ROUNDS));
    sqlite3_finalize(st);
    sqlite3_close(db);
    tc_close(c);
}

static void bench_redis_get(const char *dir, int port)
{
    char path[512], key[64], val[64], full[80];
    snprintf(path, sizeof path, "%s/redis.db", dir);
    tc_cache *c = open_cache(path, port, 0);
    memset(val, 'r', sizeof val);
    for (int i = 0; i < 1000; i++) {
        key_of(key, sizeof key, i);
        if (tc_put(c, key, strlen(key), val, sizeof val, 0) != TC_OK)
            die("put", -1, c);
    }
    struct timeval tv = {1, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (rc == NULL || rc->err) {
        fprintf(stderr, "bench: cannot connect to redis\n");
        exit(1);
    }
    const int ops = 20000;
    double v[ROUNDS], b[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            key_of(key, sizeof key, i % 1000);
            void *out;
            size_t len;
            if (tc_get(&out, &len, c, key, strlen(key)) != TC_OK)
                die("get", -1, c);
            tc_free(out);
        }
        v[r] = (now_ns() - t0) / ops / 1000;
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            key_of(key, sizeof key, i % 1000);
            snprintf(full, sizeof full, "tc:%s", key);
            const char *argv[2] = {"GET", full};
            size_t lens[2] = {3, strlen(full)};
            redisReply *reply = redisCommandArgv(rc, 2, argv, lens);
            if (reply == NULL || reply->type != REDIS_REPLY_STRING)
                die("raw GET", -1, NULL);
            freeReplyObject(reply);
        }
        b[r] = (now_ns() - t0) / ops / 1000;
    }
    report("redis-get", "us_per_get", median(v, ROUNDS), median(b, ROUNDS));
    redisFree(rc);
    tc_close(c);
}

static void bench_shared(const char *dir)
{
    char path[512], json[700];
    snprintf(path, sizeof path, "%s/shared.db", dir);
    snprintf(json, sizeof json, "{\"store\": {\"path\": \"%s\"}}", path);
    setenv("TIERCACHE_CONFIG", json, 1);
    const int ops = 300;
    double v[ROUNDS], b[ROUNDS];
    tc_cache *c;
    if (tc_shared(&c) != TC_OK || tc_put(c, "k", 1, "v", 1, 0) != TC_OK)
        die("shared", -1, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        char buf[8];
        size_t len;
        /* A handler invocation: get the handle, read one key. */
        double t0 = now_ns();
        for (int i = 0; i < ops; i++)
            if (tc_shared(&c) != TC_OK || tc_get_into(&len, c, "k", 1, buf, sizeof buf) != TC_OK)
                die("warm", -1, c);
        v[r] = (now_ns() - t0) / ops / 1000;
        t0 = now_ns();
        for (int i = 0; i < ops; i++) {
            c = open_cache(path, 0, 1);
            if (tc_get_into(&len, c, "k", 1, buf, sizeof buf) != TC_OK)
                die("cold", -1, c);
            tc_close(c);
        }
        b[r] = (now_ns() - t0) / ops / 1000;
    }
    report("shared-warm", "us_per_invocation", median(v, ROUNDS), median(b, ROUNDS));
    tc_shared_reset();
}

int main(void)
{
    char dir[256];
    if (tct_tmpdir(dir, sizeof dir) != 0)
        return 1;
    bench_edge_hit(dir);
    bench_put(dir);
    bench_shared(dir);
    tct_redis redis;
    if (tct_redis_start(&redis) == 0) {
        bench_redis_get(dir, redis.port);
        tct_redis_stop(&redis);
    } else {
        printf("bench: redis-server not available: redis-get skipped\n");
    }
    tct_rmrf(dir);
    return 0;
}
