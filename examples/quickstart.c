/*
 * quickstart - the library in a few calls: open from TIERCACHE_CONFIG (or the embedded
 * default: edge + a SQLite file in the current directory), write through, read back from this
 * handle and from a second one, and show which tier answered each call.
 *
 *   TIERCACHE_CONFIG='{"redis":{"host":"127.0.0.1","port":6379}}' ./quickstart
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tiercache.h>

static const char *tier_name(unsigned info)
{
    switch (info & 0xff) {
    case TC_SOURCE_EDGE: return "edge";
    case TC_SOURCE_REDIS: return "redis";
    case TC_SOURCE_STORE: return "store";
    default: return "?";
    }
}

static int show_get(tc_cache *cache, const char *key)
{
    void *value;
    size_t len;
    unsigned info;
    int64_t version;
    int rc = tc_get_ex(&value, &len, &info, &version, cache, key, strlen(key));
    if (rc == TC_ENOTFOUND) {
        printf("get %-14s -> not found\n", key);
        return 0;
    }
    if (rc != TC_OK) {
        fprintf(stderr, "get %s: %s (%s)\n", key, tc_strerror(rc), tc_errmsg(cache));
        return -1;
    }
    printf("get %-14s -> \"%.*s\" (version %lld, from %s)\n", key, (int)len, (char *)value,
           (long long)version, tier_name(info));
    tc_free(value);
    return 0;
}

int main(void)
{
    tc_cache *cache;
    /* The module-scope handle: built on the first call, reused by every later one. */
    int rc = tc_shared(&cache);
    if (rc != TC_OK) {
        fprintf(stderr, "tc_shared: %s: %s\n", tc_strerror(rc), tc_errmsg(NULL));
        return 1;
    }
    printf("libtiercache %s\n", tc_version_string());

    const char *key = "user:123:bio";
    const char *bio = "Software Engineer";
    rc = tc_put(cache, key, strlen(key), bio, strlen(bio), 60000);
    if (rc != TC_OK) {
        fprintf(stderr, "put: %s (%s)\n", tc_strerror(rc), tc_errmsg(cache));
        return 1;
    }
    printf("put %-14s <- \"%s\" (committed to the store, then cached)\n", key, bio);

    if (show_get(cache, key) != 0) /* the edge answers: put filled it */
        return 1;

    /* Another process has an edge of its own, still empty: it reads from Redis when one is
     * configured (the put filled it), else from the store. A second handle plays it here. */
    tc_config *cfg;
    tc_cache *other;
    const char *env = getenv("TIERCACHE_CONFIG");
    if (tc_config_new(&cfg) != TC_OK)
        return 1;
    if (env != NULL && env[0] == '{' && tc_config_load_json(cfg, env, strlen(env)) != TC_OK) {
        fprintf(stderr, "config: %s\n", tc_config_errmsg(cfg));
        return 1;
    }
    rc = tc_open(&other, cfg);
    tc_config_free(cfg);
    if (rc != TC_OK) {
        fprintf(stderr, "tc_open: %s: %s\n", tc_strerror(rc), tc_errmsg(NULL));
        return 1;
    }
    printf("(another handle, as another process would have)\n");
    if (show_get(other, key) != 0 || show_get(other, key) != 0)
        return 1;
    tc_close(other);

    tc_invalidate(cache, key, strlen(key)); /* caches only; Redis errors are not fatal here */
    printf("invalidate %s (edge and redis)\n", key);
    if (show_get(cache, key) != 0 || show_get(cache, key) != 0) /* store, then edge again */
        return 1;
    if (tc_del(cache, key, strlen(key)) != TC_OK)
        return 1;
    printf("del %s\n", key);
    if (show_get(cache, key) != 0)
        return 1;

    char *stats;
    if (tc_stats_json(&stats, cache) == TC_OK) {
        printf("stats %s\n", stats);
        tc_free(stats);
    }
    tc_shared_reset();
    printf("quickstart: ok\n");
    return 0;
}
