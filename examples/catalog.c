/*
 * catalog.c - an e-commerce store's web server with the caches as its CDN.
 *
 * The logo (/static/logo.png) and the list of product categories (/api/categories) come from
 * the shop's database and are served with "Cache-Control: public, max-age=3600". Each request
 * asks the caches first (tc_get_http); only a miss goes to the origin, which queries the
 * database and puts the response with its headers (tc_put_http) so that the next requests are
 * answered from the edge. Then a deploy writes a new logo to the database and invalidates
 * everything under /static/ (tc_invalidate_pattern with the pattern "/static/" and a star), as
 * `aws cloudfront create-invalidation --paths` does; the next request shows the new logo at
 * once, and the categories stay cached.
 *
 * The database here is an in-memory table that counts its queries, so the output shows what
 * the caches saved it. A cached response carries its headers; a body without them is the copy
 * the write-through store kept of an earlier response (the headers live in the caches only,
 * see tc_put_http), whose freshness nobody knows any more: the server asks the origin again.
 *
 * Runs on the embedded default (edge + a SQLite file in the current directory) or with Redis:
 *   ./catalog
 *   TIERCACHE_CONFIG='{"redis":{"host":"127.0.0.1","port":6379}}' ./catalog
 * Its Redis keys live under the namespace "example:catalog:", apart from any other data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tiercache.h>

#define REQUESTS 1000

/* ---- the shop's database: what the origin serves, with a query counter ---------------------- */
static struct {
    const char *logo;
    const char *categories;
    int queries;
} db = {
    .logo = "<png: logo v1, blue>",
    .categories = "[\"books\",\"garden\",\"kitchen\",\"toys\"]",
};

static const char *const cache_headers[] = {"Cache-Control: public, max-age=3600"};

static int fail(tc_cache *cache, const char *what, int rc)
{
    fprintf(stderr, "catalog: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(cache));
    return 1;
}

/* The deployment's configuration, read as tc_shared reads it: TIERCACHE_CONFIG holds a file
 * path or inline JSON (first non-blank character '{'); unset or empty: the embedded default. */
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
    /* An example keeps its Redis keys apart from the deployment's own data. */
    if (rc == TC_OK)
        rc = tc_config_set_string(cfg, "redis.namespace", ns);
    if (rc != TC_OK) {
        fprintf(stderr, "catalog: TIERCACHE_CONFIG: %s: %s\n", tc_strerror(rc),
                tc_config_errmsg(cfg));
        tc_config_free(cfg);
        return 1;
    }
    rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc == TC_OK ? 0 : fail(NULL, "tc_open", rc);
}

/* The origin: renders a path from the database (one query). */
static const char *origin(const char *path)
{
    db.queries++;
    if (strcmp(path, "/static/logo.png") == 0)
        return db.logo;
    if (strcmp(path, "/api/categories") == 0)
        return db.categories;
    return NULL;
}

typedef struct response {
    char body[128];
    char headers[256];
    int from_origin;
} response;

/* Serves one GET: the caches, else the origin (whose response is then cached). */
static int serve(response *res, tc_cache *cache, const char *path)
{
    void *body;
    size_t len;
    unsigned state;
    char *headers;
    res->from_origin = 0;
    int rc = tc_get_http(&body, &len, &state, NULL, &headers, cache, path, strlen(path), 0);
    if (rc == TC_OK && headers[0] != '\0') {
        snprintf(res->body, sizeof res->body, "%.*s", (int)len, (char *)body);
        snprintf(res->headers, sizeof res->headers, "%s", headers);
        tc_free(body);
        tc_free(headers);
        return TC_OK;
    }
    if (rc == TC_OK) { /* the store's header-less copy of an older response: ask the origin */
        tc_free(body);
        tc_free(headers);
    } else if (rc != TC_ENOTFOUND) {
        return rc;
    }
    const char *fresh = origin(path);
    if (fresh == NULL)
        return TC_ENOTFOUND;
    unsigned stored;
    rc = tc_put_http(&stored, cache, path, strlen(path), fresh, strlen(fresh), cache_headers, 1);
    if (rc != TC_OK)
        return rc;
    snprintf(res->body, sizeof res->body, "%s", fresh);
    snprintf(res->headers, sizeof res->headers, "%s\r\n", cache_headers[0]);
    res->from_origin = 1;
    return TC_OK;
}

/* A counter from tc_stats_json, e.g. counter(cache, "edge", "hits"); -1 if unreadable. */
static long long counter(tc_cache *cache, const char *tier, const char *name)
{
    char *json, pat[64];
    if (tc_stats_json(&json, cache) != TC_OK)
        return -1;
    long long v = -1;
    snprintf(pat, sizeof pat, "\"%s\":{", tier);
    const char *t = strstr(json, pat);
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *n = t != NULL ? strstr(t, pat) : NULL;
    if (n != NULL)
        v = strtoll(n + strlen(pat), NULL, 10);
    tc_free(json);
    return v;
}

int main(void)
{
    tc_cache *cache;
    if (open_cache(&cache, "example:catalog:") != 0)
        return 1;
    /* A clean start: what an earlier run left in the caches would answer the first requests. */
    int rc = tc_invalidate_pattern(NULL, cache, "/*", 2);
    if (rc != TC_OK)
        return fail(cache, "tc_invalidate_pattern /*", rc);

    static const char *const paths[] = {"/static/logo.png", "/api/categories"};
    response res;
    printf("%d requests for %s and %s:\n", REQUESTS, paths[0], paths[1]);
    long long edge0 = counter(cache, "edge", "hits");
    int from_origin = 0;
    for (int i = 0; i < REQUESTS; i++) {
        const char *path = paths[i % 2];
        if ((rc = serve(&res, cache, path)) != TC_OK)
            return fail(cache, path, rc);
        from_origin += res.from_origin;
        if (i < 4) {
            for (char *crlf; (crlf = strstr(res.headers, "\r\n")) != NULL;)
                memcpy(crlf, crlf[2] != '\0' ? "; " : "\0", 2); /* one line to print */
            printf("  GET %-17s -> %s: %s [%s]\n", path,
                   res.from_origin ? "origin (a database query)" : "cache", res.body,
                   res.headers);
        }
        else if (i == 4)
            printf("  ...\n");
    }
    long long edge_hits = counter(cache, "edge", "hits") - edge0;
    printf("%d requests, %d database queries (%lld answered by the edge)\n", REQUESTS, db.queries,
           edge_hits);
    if (db.queries != 2 || from_origin != 2 || strstr(res.headers, "max-age=3600") == NULL) {
        fprintf(stderr, "catalog: expected 2 database queries and cached headers\n");
        return 1;
    }

    printf("deploy: the new logo goes into the database\n");
    db.logo = "<png: logo v2, green>";
    if ((rc = serve(&res, cache, paths[0])) != TC_OK)
        return fail(cache, paths[0], rc);
    printf("  GET %-17s -> cache: %s (the caches still hold the old one)\n",
           paths[0], res.body);
    int64_t removed;
    if ((rc = tc_invalidate_pattern(&removed, cache, "/static/*", 9)) != TC_OK)
        return fail(cache, "tc_invalidate_pattern /static/*", rc);
    printf("deploy: invalidate /static/* (%lld cache entries removed)\n", (long long)removed);
    for (int i = 0; i < REQUESTS; i++) {
        const char *path = paths[i % 2];
        if ((rc = serve(&res, cache, path)) != TC_OK)
            return fail(cache, path, rc);
        if (i == 0) {
            printf("  GET %-17s -> %s: %s\n", path,
                   res.from_origin ? "origin (a database query)" : "cache", res.body);
            if (strcmp(res.body, db.logo) != 0) {
                fprintf(stderr, "catalog: the old logo was served after the invalidation\n");
                return 1;
            }
        }
    }
    int ok = db.queries == 3;
    printf("%d more requests; after the deploy: new logo served, %d queries\n", REQUESTS,
           db.queries);
    tc_close(cache);
    if (!ok) {
        fprintf(stderr, "catalog: expected 3 database queries in all\n");
        return 1;
    }
    printf("catalog: ok\n");
    return 0;
}
