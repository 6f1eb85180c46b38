/*
 * dynamodb.c - DAX's place and DynamoDB Streams' Lambda, on a DynamoDB table.
 *
 * Part 1, the read path: user 42's profile is written through (tc_put returns once DynamoDB
 * has it, and the caches then hold it). A read after the caches were emptied goes to DynamoDB
 * (milliseconds); the next is an edge hit (well under a microsecond).
 * Part 2, the stream: another program (here libcurl with its own SigV4 signer, as any AWS SDK
 * would) updates the item behind the library's back. The table's stream carries the change;
 * the invalidator (a thread of this program) reads it and retires the cached copies, and the
 * next read sees the new profile.
 *
 *   TC_DDB_ENDPOINT=http://127.0.0.1:8000 ./dynamodb      (DynamoDB Local; make demo starts one)
 *
 * Without TC_DDB_ENDPOINT it prints "dynamodb: skipped ..." and exits 0. Credentials are the
 * environment's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else "demo" / "demo" (DynamoDB Local
 * takes any). The table "profiles" is created, with its stream, if missing. Redis is used when
 * TIERCACHE_CONFIG configures one.
 * Build: cc dynamodb.c $(pkg-config --cflags --libs tiercache libcurl) -o dynamodb
 */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tiercache.h>

#define KEY "user:42"

static int fail(tc_cache *cache, const char *what, int rc)
{
    fprintf(stderr, "dynamodb: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(cache));
    return 1;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v != NULL && v[0] ? v : dflt;
}

/* TIERCACHE_CONFIG (inline JSON or a file), then the store pinned to the table. */
static int open_cache(tc_cache **out, const char *endpoint)
{
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    const char *env = getenv("TIERCACHE_CONFIG");
    if (rc == TC_OK && env != NULL && env[0] == '{')
        rc = tc_config_load_json(cfg, env, strlen(env));
    else if (rc == TC_OK && env != NULL && env[0] != '\0')
        rc = tc_config_load_file(cfg, env);
    const char *opts[][2] = {{"store.type", "dynamodb"},
                             {"store.table", "profiles"},
                             {"store.endpoint", endpoint},
                             {"store.region", "us-east-1"},
                             {"store.access_key_id", env_or("AWS_ACCESS_KEY_ID", "demo")},
                             {"store.secret_access_key", env_or("AWS_SECRET_ACCESS_KEY", "demo")},
                             {"redis.namespace", "example:dynamodb:"}};
    for (size_t i = 0; rc == TC_OK && i < sizeof opts / sizeof opts[0]; i++)
        rc = tc_config_set_string(cfg, opts[i][0], opts[i][1]);
    if (rc == TC_OK)
        rc = tc_config_set_bool(cfg, "store.create_table", 1);
    if (rc == TC_OK)
        rc = tc_config_set_int(cfg, "feed.poll_ms", 50);
    if (rc == TC_OK)
        rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc;
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p, (void)ctx;
    return size * n;
}

/* Another program's write: UpdateItem, adding one to the version as writers should. */
static int outside_update(const char *endpoint, const char *bio)
{
    char body[512], auth[256];
    snprintf(body, sizeof body,
             "{\"TableName\": \"profiles\", \"Key\": {\"pk\": {\"S\": \"" KEY "\"}}, "
             "\"UpdateExpression\": \"SET val = :v ADD ver :one\", "
             "\"ExpressionAttributeValues\": {\":v\": {\"S\": \"%s\"}, \":one\": {\"N\": \"1\"}}}",
             bio);
    snprintf(auth, sizeof auth, "%s:%s", env_or("AWS_ACCESS_KEY_ID", "demo"),
             env_or("AWS_SECRET_ACCESS_KEY", "demo"));
    CURL *h = curl_easy_init();
    if (h == NULL)
        return -1;
    struct curl_slist *hdr = curl_slist_append(NULL, "X-Amz-Target: DynamoDB_20120810.UpdateItem");
    hdr = curl_slist_append(hdr, "Content-Type: application/x-amz-json-1.0");
    curl_easy_setopt(h, CURLOPT_URL, endpoint);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:dynamodb");
    curl_easy_setopt(h, CURLOPT_USERPWD, auth);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return rc == CURLE_OK && status == 200 ? 0 : -1;
}

static const char *source_name(unsigned info)
{
    switch (info & 0xff) {
    case TC_SOURCE_EDGE: return "the edge";
    case TC_SOURCE_REDIS: return "Redis";
    default: return "DynamoDB";
    }
}

/* Reads the profile; prints where it came from and how long it took. */
static int show(tc_cache *c, char *bio, size_t cap)
{
    void *v = NULL;
    size_t len = 0;
    unsigned info = 0;
    double t0 = now_us();
    int rc = tc_get_ex(&v, &len, &info, NULL, c, KEY, strlen(KEY));
    double us = now_us() - t0;
    if (rc != TC_OK)
        return fail(c, "get", rc);
    snprintf(bio, cap, "%.*s", (int)len, (const char *)v);
    tc_free(v);
    printf("  read %-22s from %-8s in %8.1f us\n", bio, source_name(info), us);
    return 0;
}

int main(void)
{
    const char *endpoint = getenv("TC_DDB_ENDPOINT");
    if (endpoint == NULL || endpoint[0] == '\0') {
        printf("dynamodb: skipped (set TC_DDB_ENDPOINT to a DynamoDB endpoint, e.g. DynamoDB "
               "Local's http://127.0.0.1:8000; make demo starts one)\n");
        return 0;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tc_cache *c = NULL;
    int rc = open_cache(&c, endpoint);
    if (rc != TC_OK)
        return fail(NULL, "open", rc);

    printf("part 1: the read path (DAX's place)\n");
    const char *bio0 = "Software Engineer";
    if ((rc = tc_put(c, KEY, strlen(KEY), bio0, strlen(bio0), 0)) != TC_OK)
        return fail(c, "put", rc);
    if ((rc = tc_invalidate(c, KEY, strlen(KEY))) != TC_OK) /* empty the caches for the demo */
        return fail(c, "invalidate", rc);
    char bio[64];
    if (show(c, bio, sizeof bio) || show(c, bio, sizeof bio))
        return 1;

    printf("part 2: another program updates the item; the stream tells the caches\n");
    tc_invalidator *inv = NULL;
    if ((rc = tc_invalidator_new(&inv, c)) != TC_OK || (rc = tc_invalidator_start(inv)) != TC_OK)
        return fail(c, "invalidator", rc);
    const char *bio1 = "Principal Engineer";
    if (outside_update(endpoint, bio1) != 0) {
        fprintf(stderr, "dynamodb: the outside UpdateItem failed\n");
        return 1;
    }
    double t0 = now_us();
    int seen = 0;
    for (int i = 0; i < 200 && !seen; i++) {
        void *v = NULL;
        size_t len = 0;
        if (tc_get(&v, &len, c, KEY, strlen(KEY)) == TC_OK)
            seen = len == strlen(bio1) && memcmp(v, bio1, len) == 0;
        tc_free(v);
        if (!seen) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (!seen) {
        fprintf(stderr, "dynamodb: the outside write did not reach the caches in 10 s\n");
        return 1;
    }
    printf("  the caches had it %.0f ms after the write\n", (now_us() - t0) / 1e3);
    if (show(c, bio, sizeof bio))
        return 1;
    tc_invalidator_free(inv);
    tc_close(c);
    curl_global_cleanup();
    printf("dynamodb: ok\n");
    return 0;
}
