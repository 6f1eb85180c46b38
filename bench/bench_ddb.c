/*
 * bench_ddb.c - the DynamoDB store's figures next to a bare client in the same run, against a
 * private DynamoDB Local and redis-server (tests/ddb_harness.c, tests/harness.c):
 *   BENCH <id> <metric> value=<v> baseline=<b> ratio=<value/baseline>
 *
 *   ddb-read     ns per tc_get of a warm key (an edge hit)   vs ns per GetItem (ConsistentRead)
 *                                                             of the same item on one kept-alive
 *                                                             libcurl handle (the DAX claim:
 *                                                             microseconds against milliseconds)
 *   ddb-put      us per tc_put (edge on, Redis, the bus)      vs us per bare conditional
 *                                                             UpdateItem of the same shape plus
 *                                                             one SET in Redis on a raw kept
 *                                                             connection (goal <= 1.1)
 *   ddb-getmany  us per tc_get_many of 100 keys, caches cold  vs us per BatchGetItem of the same
 *                (edge off, no Redis)                         100 keys (goal >= 0.9 as
 *                                                             baseline/value; ratio printed is
 *                                                             value/baseline)
 *
 * The bare client signs with libcurl's own SigV4 (CURLOPT_AWS_SIGV4). DynamoDB Local is a Java
 * server with SQLite inside: its milliseconds are not DynamoDB's, so compare ratios. Rounds
 * alternate baseline and subject; each figure is the median of ROUNDS. Skipped (exit 0) when
 * DynamoDB Local is not installed.
 */
#include <curl/curl.h>
#include <hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "ddb_harness.h"
#include "tc_test.h"

#define ROUNDS 5
#define READS 20000
#define CALLS 200
#define MANY 100

static tct_ddb ddb;
static tct_redis redis;
static CURL *raw;
static struct curl_slist *hdr_get, *hdr_upd, *hdr_batch;

static size_t sink(char *p, size_t size, size_t n, void *ctx)
{
    (void)p, (void)ctx;
    return size * n;
}

static struct curl_slist *headers(const char *op)
{
    char t[96];
    snprintf(t, sizeof t, "X-Amz-Target: DynamoDB_20120810.%s", op);
    struct curl_slist *h = curl_slist_append(NULL, t);
    h = curl_slist_append(h, "Content-Type: application/x-amz-json-1.0");
    return curl_slist_append(h, "Expect:");
}

static void raw_call(struct curl_slist *h, const char *body)
{
    curl_easy_setopt(raw, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(raw, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(raw) != CURLE_OK ||
        (curl_easy_getinfo(raw, CURLINFO_RESPONSE_CODE, &status), status != 200)) {
        fprintf(stderr, "bench_ddb: raw call failed (HTTP %ld)\n", status);
        exit(1);
    }
}

static tc_cache *open_cache(int edge, int with_redis)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"store\": {\"type\": \"dynamodb\", \"table\": \"bench\", \"endpoint\": \"%s\", "
             "\"region\": \"%s\", \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\", "
             "\"create_table\": true}, \"edge\": {\"enabled\": %s}, "
             "\"redis\": {\"host\": \"%s\", \"port\": %d}}",
             ddb.endpoint, TCT_DDB_REGION, TCT_DDB_KEY, TCT_DDB_SECRET, edge ? "true" : "false",
             with_redis ? "127.0.0.1" : "", redis.port);
    return bench_open_json("bench_ddb", json);
}

int main(void)
{
    if (!tct_ddb_available()) {
        printf("bench_ddb: skipped (no DynamoDB Local: scripts/deps.sh)\n");
        return 0;
    }
    if (tct_ddb_start(&ddb) != 0 || tct_redis_start(&redis) != 0)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    raw = curl_easy_init();
    curl_easy_setopt(raw, CURLOPT_URL, ddb.endpoint);
    curl_easy_setopt(raw, CURLOPT_AWS_SIGV4, "aws:amz:" TCT_DDB_REGION ":dynamodb");
    curl_easy_setopt(raw, CURLOPT_USERPWD, TCT_DDB_KEY ":" TCT_DDB_SECRET);
    curl_easy_setopt(raw, CURLOPT_WRITEFUNCTION, sink);
    hdr_get = headers("GetItem");
    hdr_upd = headers("UpdateItem");
    hdr_batch = headers("BatchGetItem");
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", redis.port, tv);

    tc_cache *c = open_cache(1, 1), *cold = open_cache(0, 0);
    char value[100];
    memset(value, 'v', sizeof value);
    char *keys[MANY];
    size_t lens[MANY];
    for (int i = 0; i < MANY; i++) {
        keys[i] = malloc(16);
        lens[i] = (size_t)snprintf(keys[i], 16, "m%03d", i);
        tc_put(c, keys[i], lens[i], value, sizeof value, 0);
    }
    tc_put(c, "k", 1, value, sizeof value, 0);
    char batch[8192];
    size_t bn = (size_t)snprintf(batch, sizeof batch,
                                 "{\"RequestItems\": {\"bench\": {\"ConsistentRead\": true, "
                                 "\"Keys\": [");
    for (int i = 0; i < MANY; i++)
        bn += (size_t)snprintf(batch + bn, sizeof batch - bn, "%s{\"pk\": {\"S\": \"%s\"}}",
                               i ? ", " : "", keys[i]);
    snprintf(batch + bn, sizeof batch - bn, "]}}}");
    const char *get_body = "{\"TableName\": \"bench\", \"Key\": {\"pk\": {\"S\": \"k\"}}, "
                           "\"ConsistentRead\": true}";

    double rd[ROUNDS], rdb[ROUNDS], pt[ROUNDS], ptb[ROUNDS], gm[ROUNDS], gmb[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++)
            raw_call(hdr_get, get_body);
        rdb[r] = (now_ns() - t0) / CALLS;
        void *v;
        size_t len;
        tc_get(&v, &len, c, "k", 1);
        tc_free(v);
        t0 = now_ns();
        for (int i = 0; i < READS; i++) {
            tc_get(&v, &len, c, "k", 1);
            tc_free(v);
        }
        rd[r] = (now_ns() - t0) / READS;

        t0 = now_ns();
        for (int i = 0; i < CALLS; i++) {
            char body[512];
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            snprintf(body, sizeof body,
                     "{\"TableName\": \"bench\", \"Key\": {\"pk\": {\"S\": \"b\"}}, "
                     "\"UpdateExpression\": \"SET ver = :t, val = :v\", \"ConditionExpression\":"
                     " \"attribute_not_exists(ver) OR ver < :t\", \"ExpressionAttributeValues\":"
                     " {\":t\": {\"N\": \"%lld\"}, \":v\": {\"S\": \"%.100s\"}}, "
                     "\"ReturnValues\": \"UPDATED_NEW\"}",
                     (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, value);
            raw_call(hdr_upd, body);
            redisReply *rep = redisCommand(rc, "SET %s %b", "tc:b", value, sizeof value);
            freeReplyObject(rep);
        }
        ptb[r] = (now_ns() - t0) / CALLS / 1e3;
        t0 = now_ns();
        for (int i = 0; i < CALLS; i++)
            tc_put(c, "p", 1, value, sizeof value, 0);
        pt[r] = (now_ns() - t0) / CALLS / 1e3;

        t0 = now_ns();
        for (int i = 0; i < CALLS / 10; i++)
            raw_call(hdr_batch, batch);
        gmb[r] = (now_ns() - t0) / (CALLS / 10) / 1e3;
        t0 = now_ns();
        for (int i = 0; i < CALLS / 10; i++) {
            tc_items *items = NULL;
            if (tc_get_many(&items, cold, (const char *const *)keys, lens, MANY) != TC_OK) {
                fprintf(stderr, "bench_ddb: get_many: %s\n", tc_errmsg(cold));
                return 1;
            }
            tc_items_free(items);
        }
        gm[r] = (now_ns() - t0) / (CALLS / 10) / 1e3;
    }
    report("ddb-read", "ns_per_read", median(rd, ROUNDS), median(rdb, ROUNDS));
    report("ddb-put", "us_per_put", median(pt, ROUNDS), median(ptb, ROUNDS));
    report("ddb-getmany", "us_per_100_keys", median(gm, ROUNDS), median(gmb, ROUNDS));

    for (int i = 0; i < MANY; i++)
        free(keys[i]);
    tc_close(c);
    tc_close(cold);
    redisFree(rc);
    curl_slist_free_all(hdr_get), curl_slist_free_all(hdr_upd), curl_slist_free_all(hdr_batch);
    curl_easy_cleanup(raw);
    tct_redis_stop(&redis);
    tct_ddb_stop(&ddb);
    return 0;
}
