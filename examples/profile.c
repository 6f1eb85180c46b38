/*
 * profile.c - a change made in plain SQL, behind the library's back, reaches the caches.
 *
 * User 123's bio is cached ("Software Engineer"). An administrator then runs
 *   UPDATE tiercache SET value = 'Principal Engineer' WHERE key = 'user:123'
 * on the database directly (here with the sqlite3 API, on the same SQLite file). The store's
 * triggers log the change in its change feed; the invalidator (tc_invalidator_new +
 * tc_invalidator_start: a thread of this program, as a service would run it) reads the feed and
 * deletes user:123 from every cache: Redis (a versioned tombstone), this handle's edge, and,
 * over the Redis bus, every other process's edge. The next read goes to the store, gets the new
 * bio and fills the caches again; tc_get_ex's source shows each step.
 *
 * The store is the SQLite file tiercache.db in the current directory, whatever TIERCACHE_CONFIG
 * says about the store (the SQL below needs that file); Redis is used when it configures one:
 *   ./profile
 *   TIERCACHE_CONFIG='{"redis":{"host":"127.0.0.1","port":6379}}' ./profile
 * Its Redis keys live under the namespace "example:profile:", apart from any other data.
 * Build: cc profile.c $(pkg-config --cflags --libs tiercache sqlite3) -o profile
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>
#include <tiercache.h>

#define DB_PATH "tiercache.db"
#define KEY "user:123"

static int fail(tc_cache *cache, const char *what, int rc)
{
    fprintf(stderr, "profile: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(cache));
    return 1;
}

/* The deployment's configuration, read as tc_shared reads it (TIERCACHE_CONFIG: a file path or
 * inline JSON; unset: the embedded default), with the store pinned to the SQLite file. */
static int open_cache(tc_cache **out, const char *ns)
{
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return fail(NULL, "tc_config_new", rc);
    const char *env = getenv("TIERCACHE_CONFIG");
    const char *p = env != NULL ? env : "";
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '{')
        rc = tc_config_load_json(cfg, p, strlen(p));
    else if (*p != '\0')
        rc = tc_config_load_file(cfg, p);
    if (rc == TC_OK)
        rc = tc_config_set_string(cfg, "store.type", "sqlite");
    if (rc == TC_OK)
        rc = tc_config_set_string(cfg, "store.path", DB_PATH);
    if (rc == TC_OK)
        rc = tc_config_set_string(cfg, "store.table", "tiercache");
    if (rc == TC_OK) /* an example keeps its Redis keys apart from the deployment's own data */
        rc = tc_config_set_string(cfg, "redis.namespace", ns);
    if (rc != TC_OK) {
        fprintf(stderr, "profile: TIERCACHE_CONFIG: %s: %s\n", tc_strerror(rc),
                tc_config_errmsg(cfg));
        tc_config_free(cfg);
        return 1;
    }
    rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc == TC_OK ? 0 : fail(NULL, "tc_open", rc);
}

static const char *tier_name(unsigned info)
{
    switch (info & 0xff) {
    case TC_SOURCE_EDGE: return "edge";
    case TC_SOURCE_REDIS: return "redis";
    case TC_SOURCE_STORE: return "store";
    default: return "?";
    }
}

/* Reads the bio into buf and prints it with where it came from; returns the tier or -1. */
static int read_bio(char *buf, size_t size, tc_cache *cache, const char *who)
{
    void *value;
    size_t len;
    unsigned info;
    int64_t version;
    int rc = tc_get_ex(&value, &len, &info, &version, cache, KEY, strlen(KEY));
    if (rc != TC_OK) {
        fail(cache, "tc_get_ex " KEY, rc);
        return -1;
    }
    snprintf(buf, size, "%.*s", (int)len, (char *)value);
    tc_free(value);
    printf("  %-8s get %s -> \"%s\" (version %lld, from %s)\n", who, KEY, buf,
           (long long)version, tier_name(info));
    return (int)(info & 0xff);
}

/* What an administrator does: plain SQL on the database file, no library involved. */
static int sql_update_bio(const char *bio)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(DB_PATH, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "UPDATE tiercache SET value = ?1 WHERE key = ?2", -1, &st,
                                NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(st, 1, bio, (int)strlen(bio), SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, KEY, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE)
        rc = sqlite3_changes(db) == 1 ? SQLITE_OK : SQLITE_NOTFOUND;
    if (rc != SQLITE_OK)
        fprintf(stderr, "profile: UPDATE on %s: %s\n", DB_PATH,
                rc == SQLITE_NOTFOUND ? "no row updated" : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Runs the invalidator until it has applied every change in the feed. A service runs it on a
 * thread instead (tc_invalidator_start) or as the program tiercache-invalidator. */
static int catch_up(tc_cache *cache, tc_invalidator *inv)
{
    int64_t applied, total = 0, seq;
    do {
        int rc = tc_invalidator_step(&applied, &seq, inv);
        if (rc != TC_OK)
            return fail(cache, "tc_invalidator_step", rc);
        total += applied;
    } while (applied > 0);
    printf("  invalidator: %lld change(s) applied from the feed, checkpoint at %lld\n",
           (long long)total, (long long)seq);
    return 0;
}

int main(void)
{
    const char *before = "Software Engineer", *after = "Principal Engineer";
    char bio[128];
    tc_cache *cache;
    if (open_cache(&cache, "example:profile:") != 0)
        return 1;
    tc_invalidator *inv;
    int rc = tc_invalidator_new(&inv, cache);
    if (rc != TC_OK)
        return fail(cache, "tc_invalidator_new", rc);
    printf("the invalidator follows %s's change feed (stepped by hand here)\n", DB_PATH);
    if (catch_up(cache, inv) != 0) /* what earlier runs in this directory left in the feed */
        return 1;

    if ((rc = tc_put(cache, KEY, strlen(KEY), before, strlen(before), 0)) != TC_OK)
        return fail(cache, "tc_put " KEY, rc);
    printf("put %s <- \"%s\" (the store, then the caches)\n", KEY, before);
    if (read_bio(bio, sizeof bio, cache, "app") != TC_SOURCE_EDGE || strcmp(bio, before) != 0) {
        fprintf(stderr, "profile: expected \"%s\" from the edge\n", before);
        return 1;
    }

    printf("an administrator runs: UPDATE tiercache SET value = '%s' WHERE key = '%s'\n", after,
           KEY);
    if (sql_update_bio(after) != 0)
        return 1;

    if (read_bio(bio, sizeof bio, cache, "app") != TC_SOURCE_EDGE || strcmp(bio, before) != 0) {
        fprintf(stderr, "profile: the caches should not know of the change yet\n");
        return 1;
    }
    printf("  (the caches do not know yet: the change is in the feed)\n");

    if (catch_up(cache, inv) != 0)
        return 1;
    if (read_bio(bio, sizeof bio, cache, "app") != TC_SOURCE_STORE || strcmp(bio, after) != 0) {
        fprintf(stderr, "profile: expected \"%s\" from the store\n", after);
        return 1;
    }
    if (read_bio(bio, sizeof bio, cache, "app") != TC_SOURCE_EDGE || strcmp(bio, after) != 0) {
        fprintf(stderr, "profile: expected \"%s\" from the edge again\n", after);
        return 1;
    }
    printf("the caches hold the new bio again\n");

    tc_invalidator_free(inv);
    tc_close(cache);
    printf("profile: ok\n");
    return 0;
}
