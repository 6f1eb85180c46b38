/*
 * server.c - tiercache-edge: an HTTP/1.1 shared cache (RFC 9111) in front of an origin, on
 * libmicrohttpd, with the library's tiers as its storage: the in-process edge, and Redis when
 * the config has one, so that every tiercache-edge process shares entries and invalidations.
 *
 * A GET or HEAD goes: key -> lookup (the library says fresh, stale or must-revalidate, and the
 * Age) -> serve, or revalidate with the origin (a 304 is merged into the stored response), or
 * fetch (one origin request for concurrent misses of one key) -> store (if a shared cache may)
 * -> serve. Other methods go to the origin, and a success invalidates the target URI and its
 * Location / Content-Location (RFC 9111 4.4).
 */
#include "edge_server.h"
#include "tiercache.h"
#include "http/cache_control.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- the configuration ---------------------------------------------------------------------- */

typedef struct origin {
    char *prefix, *url;
} origin;

typedef struct conf {
    char host[64];
    int port;
    origin origins[16];
    int n_origins;
    ed_origin_opts fetch;
    size_t max_request_body;
    size_t max_header_bytes;
    char *key_headers[8];
    int n_key_headers;
    char *tag_header;
    int heuristic_percent;
    int64_t heuristic_max_s;
    int64_t default_ttl_s;
    int access_log;
    char admin_host[64];
    int admin_port;
    char *admin_token;
} conf;

static conf cf;
static tc_cache *cache;
static atomic_long invalidation_seq;

static const char usage[] =
    "usage: tiercache-edge --listen HOST:PORT --origin URL [-c FILE]\n"
    "       tiercache-edge -c FILE\n"
    "\n"
    "An RFC 9111 shared HTTP cache in front of an origin, on libtiercache's tiers.\n"
    "\n"
    "  --listen HOST:PORT  the address to serve on (IPv4), default 127.0.0.1:8080\n"
    "  --origin URL        the origin, e.g. http://127.0.0.1:9000 (no trailing slash)\n"
    "  -c FILE             the library's JSON config; its edge_server section configures the\n"
    "                      server (docs/edge-server.md). Without it: the in-process tier\n"
    "                      alone, no Redis, no file written.\n"
    "  -h, --help          this text\n"
    "\n"
    "Runs in the foreground and logs one line per request to stderr. SIGTERM or SIGINT stops\n"
    "it cleanly. Exit status: 0 after a clean stop, 2 for bad arguments or config, 1 when it\n"
    "cannot start.\n";

static int parse_hostport(char *host, size_t host_cap, int *port, const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= host_cap)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535)
        return -1;
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return -1;
    *port = (int)p;
    return 0;
}

static int add_origin(const char *prefix, const char *url)
{
    if (cf.n_origins == (int)(sizeof cf.origins / sizeof cf.origins[0]) ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) || prefix[0] != '/')
        return -1;
    size_t l = strlen(url);
    while (l > 0 && url[l - 1] == '/')
        l--;
    cf.origins[cf.n_origins].prefix = strdup(prefix);
    cf.origins[cf.n_origins].url = strndup(url, l);
    cf.n_origins++;
    return 0;
}

static int bad_conf(const char *what)
{
    fprintf(stderr, "tiercache-edge: config: %s\n", what);
    return -1;
}

/* The edge_server section: every member is known, or the config is refused. */
static int load_section(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        fprintf(stderr, "tiercache-edge: %s:%d: %s\n", path, jerr.line, jerr.text);
        return -1;
    }
    json_t *sec = json_object_get(root, "edge_server");
    int rc = 0;
    const char *k;
    json_t *v;
    if (sec != NULL && !json_is_object(sec))
        rc = bad_conf("edge_server must be an object");
    json_object_foreach(sec, k, v)
    {
        if (rc != 0)
            break;
        int is_int = json_is_integer(v);
        json_int_t n = is_int ? json_integer_value(v) : -1;
        if (strcmp(k, "listen") == 0) {
            if (!json_is_string(v) ||
                parse_hostport(cf.host, sizeof cf.host, &cf.port, json_string_value(v)) != 0)
                rc = bad_conf("listen must be \"IPV4:PORT\"");
        } else if (strcmp(k, "origin") == 0) {
            if (!json_is_string(v) || add_origin("/", json_string_value(v)) != 0)
                rc = bad_conf("origin must be an http:// or https:// URL");
        } else if (strcmp(k, "origins") == 0) {
            size_t i;
            json_t *o;
            if (!json_is_array(v))
                rc = bad_conf("origins must be an array of {\"prefix\", \"url\"}");
            json_array_foreach(v, i, o)
            {
                json_t *p = json_object_get(o, "prefix"), *u = json_object_get(o, "url");
                if (rc == 0 && (!json_is_string(p) || !json_is_string(u) ||
                                add_origin(json_string_value(p), json_string_value(u)) != 0))
                    rc = bad_conf("origins: each needs a prefix (\"/...\") and an http(s) url");
            }
        } else if (strcmp(k, "connect_timeout_ms") == 0 && n > 0) {
            cf.fetch.connect_timeout_ms = (long)n;
        } else if (strcmp(k, "timeout_ms") == 0 && n > 0) {
            cf.fetch.timeout_ms = (long)n;
        } else if (strcmp(k, "max_body_bytes") == 0 && n > 0 && n <= (256 << 20)) {
            cf.fetch.max_body = (size_t)n;
        } else if (strcmp(k, "max_pass_bytes") == 0 && n > 0) {
            cf.fetch.max_pass = (size_t)n;
        } else if (strcmp(k, "max_request_body_bytes") == 0 && n >= 0) {
            cf.max_request_body = (size_t)n;
        } else if (strcmp(k, "max_header_bytes") == 0 && n >= 1024) {
            cf.max_header_bytes = (size_t)n;
        } else if (strcmp(k, "key_headers") == 0 && json_is_array(v) &&
                   json_array_size(v) <= 8) {
            size_t i;
            json_t *h;
            json_array_foreach(v, i, h)
            {
                if (!json_is_string(h))
                    rc = bad_conf("key_headers: names only");
                else
                    cf.key_headers[cf.n_key_headers++] = strdup(json_string_value(h));
            }
        } else if (strcmp(k, "tag_header") == 0 && json_is_string(v)) {
            free(cf.tag_header);
            cf.tag_header = strdup(json_string_value(v));
        } else if (strcmp(k, "heuristic_percent") == 0 && n >= 0 && n <= 100) {
            cf.heuristic_percent = (int)n;
        } else if (strcmp(k, "heuristic_max_s") == 0 && n >= 0) {
            cf.heuristic_max_s = n;
        } else if (strcmp(k, "default_ttl_s") == 0 && n >= 0) {
            cf.default_ttl_s = n;
        } else if (strcmp(k, "access_log") == 0 && json_is_boolean(v)) {
            cf.access_log = json_is_true(v);
        } else if (strcmp(k, "admin") == 0 && json_is_object(v)) {
            json_t *l = json_object_get(v, "listen"), *t = json_object_get(v, "token");
            if (!json_is_string(l) || !json_is_string(t) || json_string_length(t) < 16 ||
                parse_hostport(cf.admin_host, sizeof cf.admin_host, &cf.admin_port,
                               json_string_value(l)) != 0)
                rc = bad_conf("admin needs listen (\"IPV4:PORT\") and a token of 16+ bytes");
            else
                cf.admin_token = strdup(json_string_value(t));
        } else {
            fprintf(stderr, "tiercache-edge: config: edge_server.%s: unknown, or a bad value\n",
                    k);
            rc = -1;
        }
    }
    json_decref(root);
    return rc;
}

/* ---- the cache key -------------------------------------------------------------------------- */

/* uri, then for each key header "\x1f" name ":" value; the variants of a Vary response add
 * "\x1e" and the request's values of the fields it names. */
static int primary_key(char *out, size_t cap, const char *uri, const ed_fields *req)
{
    size_t n = (size_t)snprintf(out, cap, "%s", uri);
    for (int i = 0; i < cf.n_key_headers && n < cap; i++) {
        const char *v = ed_fields_get(req, cf.key_headers[i]);
        n += (size_t)snprintf(out + n, cap - n, "\x1f%s:%s", cf.key_headers[i], v ? v : "");
    }
    return n < cap && n <= TC_KEY_MAX ? (int)n : -1;
}

static int variant_key(char *out, size_t cap, const char *primary, const char *vary,
                       const ed_fields *req)
{
    size_t n = (size_t)snprintf(out, cap, "%s\x1e", primary);
    char *list = strdup(vary);
    if (list == NULL)
        return -1;
    for (char *save = NULL, *tok = strtok_r(list, ", \t", &save); tok != NULL && n < cap;
         tok = strtok_r(NULL, ", \t", &save)) {
        char *v = ed_fields_join(req, tok);
        n += (size_t)snprintf(out + n, cap - n, "%s=%s;", tok, v ? v : "");
        free(v);
    }
    free(list);
    return n < cap && n <= TC_KEY_MAX ? (int)n : -1;
}

/* ---- lookups -------------------------------------------------------------------------------- */

typedef struct found {
    ed_resp r;
    unsigned state;
    int64_t age_s;
    char key[TC_KEY_MAX + 1]; /* the key it was found under (a variant's, with Vary) */
} found;

/* 1 found, 0 not. A Vary marker ('V' | field list) sends the lookup on to the variant. */
static int lookup(found *f, const char *primary, const ed_fields *req)
{
    snprintf(f->key, sizeof f->key, "%s", primary);
    for (int hop = 0; hop < 2; hop++) {
        void *v;
        size_t len;
        int rc = tc_get_http(&v, &len, &f->state, &f->age_s, NULL, cache, f->key,
                             strlen(f->key), TC_HTTP_ONLY_IF_CACHED | TC_HTTP_SPLIT_STALE);
        if (rc != TC_OK)
            return 0;
        if (len > 0 && ((char *)v)[0] == 'V' && hop == 0) {
            char vk[TC_KEY_MAX + 1];
            int ok = variant_key(vk, sizeof vk, primary, (char *)v + 1, req) > 0;
            tc_free(v);
            if (!ok)
                return 0;
            snprintf(f->key, sizeof f->key, "%s", vk);
            continue;
        }
        if (ed_resp_decode(&f->r, v, len) != 0) {
            tc_free(v);
            return 0;
        }
        return 1;
    }
    return 0;
}

/* ---- storing -------------------------------------------------------------------------------- */

static int heuristic_status(int s)
{
    /* RFC 9110 15.1: cacheable by default. */
    return s == 200 || s == 203 || s == 204 || s == 300 || s == 301 || s == 308 || s == 404 ||
           s == 405 || s == 410 || s == 414 || s == 501;
}

static void http_date(char *out, size_t cap, int64_t unix_s)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* The qualified no-cache="a, b" names fields the cache must not send without revalidating
 * (RFC 9111 5.2.2.4): the stored copy goes without them. */
static void strip_qualified_no_cache(ed_fields *h, const char *cc)
{
    for (const char *p = cc; (p = strcasestr(p, "no-cache=\"")) != NULL;) {
        p += 10;
        const char *q = strchr(p, '"');
        if (q == NULL)
            return;
        char *names = strndup(p, (size_t)(q - p));
        if (names == NULL)
            return;
        for (char *save = NULL, *tok = strtok_r(names, ", \t", &save); tok != NULL;
             tok = strtok_r(NULL, ", \t", &save))
            ed_fields_del(h, tok);
        free(names);
        p = q;
    }
}

/* Whether a shared cache may store this response to this request (RFC 9111 3, 3.5), and its
 * heuristic lifetime (4.2.2) in *heuristic_s (0 when it has an explicit one). */
static int may_store(const ed_fields *req, const ed_resp *r, int64_t now_ms, int64_t *heuristic_s)
{
    *heuristic_s = 0;
    if (r->too_big || r->status == 206 || r->status == 304 || r->status < 200)
        return 0;
    char *rcc = ed_fields_join(req, "Cache-Control");
    tc__cc req_cc;
    tc__cc_parse(&req_cc, rcc ? rcc : "", rcc ? strlen(rcc) : 0);
    free(rcc);
    if (req_cc.flags & TC__CC_NO_STORE)
        return 0;
    const char *vary = ed_fields_get(&r->h, "Vary");
    if (vary != NULL && strchr(vary, '*') != NULL)
        return 0; /* never matches a later request (4.1) */
    char *cc = ed_fields_join(&r->h, "Cache-Control");
    const char *exp = ed_fields_get(&r->h, "Expires"), *date = ed_fields_get(&r->h, "Date");
    const char *age = ed_fields_get(&r->h, "Age");
    tc__freshness fr;
    tc__freshness_compute(&fr, cc, cc ? strlen(cc) : 0, exp, exp ? strlen(exp) : 0, date,
                          date ? strlen(date) : 0, age, age ? strlen(age) : 0, now_ms, now_ms);
    free(cc);
    if (!fr.storable)
        return 0;
    int pub = (fr.cc_flags & TC__CC_PUBLIC) != 0;
    if (ed_fields_get(req, "Authorization") != NULL && !pub && !fr.must_revalidate)
        return 0; /* 3.5: only public, s-maxage or must-revalidate (s-maxage implies it) */
    if (fr.explicit_lifetime || fr.no_cache)
        return heuristic_status(r->status) || fr.explicit_lifetime || pub;
    if (!heuristic_status(r->status))
        return 0;
    const char *lm = ed_fields_get(&r->h, "Last-Modified");
    int64_t now_s = now_ms / 1000, lm_s, date_s = now_s;
    if (date != NULL)
        tc__http_date_parse(&date_s, date, strlen(date), now_s);
    if (lm != NULL && tc__http_date_parse(&lm_s, lm, strlen(lm), now_s) == TC_OK &&
        lm_s < date_s)
        *heuristic_s = (date_s - lm_s) * cf.heuristic_percent / 100;
    else
        *heuristic_s = cf.default_ttl_s;
    if (*heuristic_s > cf.heuristic_max_s)
        *heuristic_s = cf.heuristic_max_s;
    return *heuristic_s > 0;
}

/* The lines tc_put_http reads: the response's, with a heuristic lifetime as Expires, and the
 * configured tag header as Surrogate-Key. Only the library sees them; clients get r->h. */
static int put_response(const char *key, const ed_resp *r, int64_t heuristic_s,
                        const void *value, size_t value_len)
{
    const char **lines = calloc(r->h.n + 2, sizeof *lines);
    char **own = calloc(r->h.n + 2, sizeof *own);
    size_t n = 0;
    int rc = TC_ENOMEM;
    if (lines == NULL || own == NULL)
        goto out;
    for (size_t i = 0; i < r->h.n; i++) {
        const char *name = r->h.v[i].name;
        if (heuristic_s > 0 && strcasecmp(name, "Expires") == 0)
            continue;
        if (strcasecmp(name, "Surrogate-Key") == 0 && strcasecmp(cf.tag_header, name) != 0)
            continue; /* only the configured tag header tags */
        if (strcasecmp(name, cf.tag_header) == 0)
            name = "Surrogate-Key";
        if (asprintf(&own[n], "%s: %s", name, r->h.v[i].value) < 0)
            goto out;
        lines[n] = own[n];
        n++;
    }
    if (heuristic_s > 0) {
        const char *date = ed_fields_get(&r->h, "Date");
        int64_t now_s = time(NULL), date_s = now_s;
        if (date != NULL)
            tc__http_date_parse(&date_s, date, strlen(date), now_s);
        char d[64];
        http_date(d, sizeof d, date_s + heuristic_s);
        if (asprintf(&own[n], "Expires: %s", d) < 0)
            goto out;
        lines[n] = own[n];
        n++;
    }
    unsigned stored;
    rc = tc_put_http(&stored, cache, key, strlen(key), value, value_len, lines, n);
out:
    for (size_t i = 0; own != NULL && i < n; i++)
        free(own[i]);
    free(own);
    free(lines);
    return rc;
}

/* Stores r (the response to req) under primary, or under its variant with a marker at
 * primary. 1 stored, 0 not. */
static int store(const char *primary, const ed_fields *req, ed_resp *r)
{
    int64_t heuristic_s;
    if (!may_store(req, r, (int64_t)time(NULL) * 1000, &heuristic_s))
        return 0;
    char *cc = ed_fields_join(&r->h, "Cache-Control");
    ed_resp kept = {r->status, {0}, r->body, r->len, 0, NULL};
    int ok = ed_fields_merge(&kept.h, &r->h) == 0;
    if (cc != NULL)
        strip_qualified_no_cache(&kept.h, cc);
    free(cc);
    ed_fields_del(&kept.h, "Age"); /* the library keeps the age; Age is sent as it is then */
    char key[TC_KEY_MAX + 1];
    snprintf(key, sizeof key, "%s", primary);
    char *vary = ed_fields_join(&r->h, "Vary");
    if (ok && vary != NULL) {
        size_t vl = strlen(vary);
        char *marker = malloc(vl + 2);
        ok = marker != NULL && variant_key(key, sizeof key, primary, vary, req) > 0;
        if (ok) {
            marker[0] = 'V';
            memcpy(marker + 1, vary, vl + 1);
            ok = put_response(primary, r, heuristic_s, marker, vl + 2) == TC_OK;
        }
        free(marker);
    }
    free(vary);
    char *blob = NULL;
    size_t blob_len = 0;
    ok = ok && ed_resp_encode(&blob, &blob_len, &kept) == 0 &&
         put_response(key, r, heuristic_s, blob, blob_len) == TC_OK;
    free(blob);
    ed_fields_free(&kept.h);
    return ok;
}

/* ---- invalidation --------------------------------------------------------------------------- */

/* Removes uri and all its variants from every tier of every process (through the bus). */
static int64_t invalidate_uri(const char *uri)
{
    char pat[2 * TC_KEY_MAX + 4];
    size_t n = 0;
    for (const char *p = uri; *p != '\0' && n < sizeof pat - 4; p++) {
        if (*p == '*' || *p == '?' || *p == '\\')
            pat[n++] = '\\';
        pat[n++] = *p;
    }
    pat[n++] = '*'; /* the key headers (\x1f) and Vary's variants (\x1e) follow the URI */
    pat[n] = '\0';
    int64_t total = 0, removed = 0;
    if (tc_invalidate(cache, uri, strlen(uri)) == TC_OK)
        total++;
    for (const char *sep = "\x1f\x1e"; *sep != '\0'; sep++) {
        pat[n - 1] = *sep;
        pat[n] = '*';
        pat[n + 1] = '\0';
        if (tc_invalidate_pattern(&removed, cache, pat, n + 1) == TC_OK)
            total += removed;
    }
    return total;
}

/* A Location or Content-Location of the same origin, as a path; NULL otherwise. */
static const char *same_origin_path(const origin *o, const char *v)
{
    if (v == NULL)
        return NULL;
    if (v[0] == '/' && v[1] != '/')
        return v;
    size_t l = strlen(o->url);
    if (strncmp(v, o->url, l) == 0 && v[l] == '/')
        return v + l;
    return NULL;
}

/* ---- single flight -------------------------------------------------------------------------- */

typedef struct flight {
    struct flight *next;
    char *key;
    int done;
    int waiters;
} flight;

static pthread_mutex_t flights_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flights_cv = PTHREAD_COND_INITIALIZER;
static flight *flights;

/* 1: the caller leads (fetches, then calls flight_land); 0: another led and landed, or the
 * wait ran past the origin's timeout: look again, then fetch alone. */
static int flight_take(const char *key)
{
    pthread_mutex_lock(&flights_mu);
    flight *f = flights;
    while (f != NULL && strcmp(f->key, key) != 0)
        f = f->next;
    if (f == NULL) {
        f = calloc(1, sizeof *f);
        if (f != NULL && (f->key = strdup(key)) != NULL) {
            f->next = flights;
            flights = f;
        } else {
            free(f);
        }
        pthread_mutex_unlock(&flights_mu);
        return 1;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += cf.fetch.timeout_ms / 1000 + 1;
    f->waiters++;
    while (!f->done && pthread_cond_timedwait(&flights_cv, &flights_mu, &until) != ETIMEDOUT)
        ;
    if (--f->waiters == 0 && f->done) {
        free(f->key);
        free(f);
    }
    pthread_mutex_unlock(&flights_mu);
    return 0;
}

static void flight_land(const char *key)
{
    pthread_mutex_lock(&flights_mu);
    for (flight **p = &flights; *p != NULL; p = &(*p)->next) {
        if (strcmp((*p)->key, key) == 0) {
            flight *f = *p;
            *p = f->next;
            f->done = 1;
            if (f->waiters == 0) {
                free(f->key);
                free(f);
            }
            break;
        }
    }
    pthread_cond_broadcast(&flights_cv);
    pthread_mutex_unlock(&flights_mu);
}

/* ---- serving -------------------------------------------------------------------------------- */

typedef struct request {
    char *uri; /* the raw request target, query included */
    char *body;
    size_t body_len;
    int too_big;
    int started; /* the first call (the header) has been answered */
    ed_fields h;
} request;

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    (void)kind;
    ed_fields *f = cls;
    ed_fields_add(f, key, strlen(key), value ? value : "", value ? strlen(value) : 0);
    return MHD_YES;
}

static const char *status_word(const char *state)
{
    return strcmp(state, "HIT") == 0 ? "hit" : strcmp(state, "STALE") == 0 ? "fwd=stale" : 
           strcmp(state, "REVALIDATED") == 0 ? "fwd=stale; fwd-status=304" :
           strcmp(state, "BYPASS") == 0 ? "fwd=bypass" : "fwd=miss";
}

static void log_line(struct MHD_Connection *conn, const char *method, const char *uri,
                     int status, size_t len, const char *state)
{
    if (!cf.access_log)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[INET6_ADDRSTRLEN] = "-";
    if (ci != NULL && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)ci->client_addr)->sin_addr, addr, sizeof addr);
    char when[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    fprintf(stderr, "%s - - [%s] \"%s %s HTTP/1.1\" %d %zu %s\n", addr, when, method, uri, status,
            len, state);
}

static void free_owner(void *owner)
{
    tc_free(owner);
}

/* Queues r. With give (a hit), a body that points into a library value goes to MHD without a
 * copy, and MHD frees the value when it is sent: r no longer owns it afterwards. */
static enum MHD_Result send_resp_ex(struct MHD_Connection *conn, const char *method,
                                    const char *uri, ed_resp *r, int status, int with_body,
                                    int64_t age_s, const char *state, int give)
{
    struct MHD_Response *resp;
    if (give && with_body && r->owner != NULL) {
        resp = MHD_create_response_from_buffer_with_free_callback_cls(r->len, r->body,
                                                                      free_owner, r->owner);
        if (resp != NULL) {
            r->owner = NULL;
            r->body = NULL;
        }
    } else {
        resp = MHD_create_response_from_buffer(with_body ? r->len : 0,
                                               with_body ? r->body : (void *)"",
                                               MHD_RESPMEM_MUST_COPY);
    }
    if (resp == NULL)
        return MHD_NO;
    for (size_t i = 0; i < r->h.n; i++) {
        /* A 304 carries the fields that say what it validated (RFC 9110 15.4.5). */
        const char *n = r->h.v[i].name;
        if (status == 304 && strcasecmp(n, "ETag") && strcasecmp(n, "Cache-Control") &&
            strcasecmp(n, "Expires") && strcasecmp(n, "Vary") && strcasecmp(n, "Date") &&
            strcasecmp(n, "Content-Location") && strcasecmp(n, "Last-Modified"))
            continue;
        MHD_add_response_header(resp, n, r->h.v[i].value);
    }
    if (age_s >= 0) {
        char a[32];
        snprintf(a, sizeof a, "%lld", (long long)age_s);
        MHD_add_response_header(resp, "Age", a);
    }
    MHD_add_response_header(resp, "X-Cache", state);
    char cs[96];
    snprintf(cs, sizeof cs, "tiercache-edge; %s", status_word(state));
    MHD_add_response_header(resp, "Cache-Status", cs);
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    log_line(conn, method, uri, status, with_body ? r->len : 0, state);
    return ok;
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, const char *method,
                                 const char *uri, ed_resp *r, int status, int with_body,
                                 int64_t age_s, const char *state)
{
    return send_resp_ex(conn, method, uri, r, status, with_body, age_s, state, 0);
}

static enum MHD_Result send_error(struct MHD_Connection *conn, const char *method,
                                  const char *uri, int status, const char *why)
{
    ed_resp r = {0};
    r.body = (char *)why;
    r.len = strlen(why);
    ed_fields_add(&r.h, "Content-Type", 12, "text/plain", 10);
    ed_fields_add(&r.h, "Cache-Control", 13, "no-store", 8);
    enum MHD_Result ok = send_resp(conn, method, uri, &r, status, 1, -1, "BYPASS");
    ed_fields_free(&r.h);
    return ok;
}

static int fetch_error_status(int rc)
{
    return rc == ED_ETIMEOUT ? 504 : 502;
}

/* If-None-Match (weak comparison) over If-Modified-Since (RFC 9110 13.2.2): 1 to answer 304. */
static int not_modified(const ed_fields *req, const ed_resp *r)
{
    const char *inm = ed_fields_get(req, "If-None-Match");
    const char *etag = ed_fields_get(&r->h, "ETag");
    if (inm != NULL) {
        if (etag == NULL)
            return 0;
        const char *e = strncmp(etag, "W/", 2) == 0 ? etag + 2 : etag;
        char *list = strdup(inm);
        int match = 0;
        for (char *save = NULL, *tok = list ? strtok_r(list, ", \t", &save) : NULL;
             tok != NULL && !match; tok = strtok_r(NULL, ", \t", &save)) {
            const char *t = strncmp(tok, "W/", 2) == 0 ? tok + 2 : tok;
            match = strcmp(t, "*") == 0 || strcmp(t, e) == 0;
        }
        free(list);
        return match;
    }
    const char *ims = ed_fields_get(req, "If-Modified-Since");
    const char *lm = ed_fields_get(&r->h, "Last-Modified");
    int64_t a, b, now = time(NULL);
    return ims != NULL && lm != NULL && tc__http_date_parse(&a, ims, strlen(ims), now) == 0 &&
           tc__http_date_parse(&b, lm, strlen(lm), now) == 0 && b <= a;
}

static enum MHD_Result serve_cached(struct MHD_Connection *conn, const char *method,
                                    const char *uri, const ed_fields *req, found *f,
                                    const char *state, int give)
{
    if (not_modified(req, &f->r))
        return send_resp(conn, method, uri, &f->r, 304, 0, f->age_s, state);
    /* For HEAD, MHD sends the body's Content-Length and leaves the body out. */
    return send_resp_ex(conn, method, uri, &f->r, f->r.status, 1, f->age_s, state, give);
}

static const origin *origin_for(const char *uri)
{
    const origin *best = NULL;
    for (int i = 0; i < cf.n_origins; i++)
        if (strncmp(uri, cf.origins[i].prefix, strlen(cf.origins[i].prefix)) == 0 &&
            (best == NULL || strlen(cf.origins[i].prefix) > strlen(best->prefix)))
            best = &cf.origins[i];
    return best;
}

static char *url_of(const origin *o, const char *uri)
{
    char *url;
    return asprintf(&url, "%s%s", o->url, uri) < 0 ? NULL : url;
}

/* A revalidation (cached: the stored copy, or NULL for a plain fetch): the origin's answer
 * merged, stored when allowed, in *out. TC_OK-like 0, or an ED_E* code. */
static int refetch(ed_resp *out, const origin *o, const char *uri, const char *primary,
                   const ed_fields *req, const found *cached, int *stored)
{
    char *url = url_of(o, uri);
    if (url == NULL)
        return ED_EDOWN;
    char err[256];
    const char *inm = cached ? ed_fields_get(&cached->r.h, "ETag") : NULL;
    const char *ims = cached ? ed_fields_get(&cached->r.h, "Last-Modified") : NULL;
    int rc = ed_origin_fetch(out, &cf.fetch, "GET", url, req, inm, ims, NULL, 0, err, sizeof err);
    free(url);
    if (rc != ED_OK) {
        fprintf(stderr, "tiercache-edge: origin %s%s: %s\n", o->url, uri, err);
        return rc;
    }
    ed_fields_strip_hop(&out->h);
    if (out->status == 304 && cached != NULL) {
        /* 4.3.4: the stored response, with the 304's fields over its own. */
        ed_resp merged = {cached->r.status, {0}, NULL, cached->r.len, 0, NULL};
        merged.body = malloc(cached->r.len + 1);
        if (merged.body == NULL || ed_fields_merge(&merged.h, &cached->r.h) != 0 ||
            ed_fields_merge(&merged.h, &out->h) != 0) {
            ed_resp_free(&merged);
            ed_resp_free(out);
            return ED_EDOWN;
        }
        memcpy(merged.body, cached->r.body, cached->r.len);
        ed_resp_free(out);
        *out = merged;
    }
    *stored = store(primary, req, out);
    return ED_OK;
}

/* Background revalidation inside stale-while-revalidate: one per key (the flight). */
typedef struct bg_job {
    const origin *o;
    char *uri, *primary;
    ed_fields req;
    found cached;
} bg_job;

static atomic_int bg_running;

/* A request may see the stale copy just before another revalidation stores the fresh one, and
 * take the flight just after that one landed. The job therefore looks again before it fetches,
 * as the library's single flight does (core/read.c's second look): a key that is fresh now is
 * not fetched a second time. */
static int fresh_now(const bg_job *j)
{
    found now;
    memset(&now, 0, sizeof now);
    int fresh = lookup(&now, j->primary, &j->req) && now.state == TC_HTTP_FRESH;
    ed_resp_free(&now.r);
    return fresh;
}

static void *bg_main(void *arg)
{
    bg_job *j = arg;
    ed_resp r;
    int stored;
    if (!fresh_now(j) &&
        refetch(&r, j->o, j->uri, j->primary, &j->req, &j->cached, &stored) == ED_OK)
        ed_resp_free(&r);
    flight_land(j->primary);
    ed_resp_free(&j->cached.r);
    ed_fields_free(&j->req);
    free(j->uri);
    free(j->primary);
    free(j);
    atomic_fetch_sub(&bg_running, 1);
    return NULL;
}

static int flight_try(const char *key)
{
    pthread_mutex_lock(&flights_mu);
    flight *f = flights;
    while (f != NULL && strcmp(f->key, key) != 0)
        f = f->next;
    pthread_mutex_unlock(&flights_mu);
    return f == NULL && flight_take(key);
}

static void revalidate_in_background(const origin *o, const char *uri, const char *primary,
                                     const ed_fields *req, found *f)
{
    if (!flight_try(primary))
        return; /* one already runs */
    bg_job *j = calloc(1, sizeof *j);
    pthread_t t;
    pthread_attr_t attr;
    if (j == NULL || (j->uri = strdup(uri)) == NULL || (j->primary = strdup(primary)) == NULL ||
        ed_fields_merge(&j->req, req) != 0) {
        goto fail;
    }
    j->o = o;
    j->cached = *f; /* the job takes the stored copy */
    memset(&f->r, 0, sizeof f->r);
    atomic_fetch_add(&bg_running, 1);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, bg_main, j) == 0) {
        pthread_attr_destroy(&attr);
        return;
    }
    pthread_attr_destroy(&attr);
    atomic_fetch_sub(&bg_running, 1);
    *f = j->cached;
fail:
    flight_land(primary);
    if (j != NULL) {
        ed_fields_free(&j->req);
        free(j->uri);
        free(j->primary);
        free(j);
    }
}

static enum MHD_Result serve_get(struct MHD_Connection *conn, const char *method,
                                 const origin *o, request *rq)
{
    char primary[TC_KEY_MAX + 1];
    const char *uri = rq->uri;
    char *rcc = ed_fields_join(&rq->h, "Cache-Control");
    tc__cc req_cc;
    tc__cc_parse(&req_cc, rcc ? rcc : "", rcc ? strlen(rcc) : 0);
    int only_if_cached = rcc != NULL && strcasestr(rcc, "only-if-cached") != NULL;
    int revalidate = (req_cc.flags & TC__CC_NO_CACHE) || req_cc.max_age == 0 ||
                     (rcc == NULL && ed_fields_get(&rq->h, "Pragma") != NULL &&
                      strcasestr(ed_fields_get(&rq->h, "Pragma"), "no-cache") != NULL);
    free(rcc);
    found f;
    memset(&f, 0, sizeof f);
    enum MHD_Result ok;
    if (primary_key(primary, sizeof primary, uri, &rq->h) < 0) {
        /* Too long to be a key: passed through, never stored. */
        ed_resp r;
        char err[256], *url = url_of(o, uri);
        int rc = url ? ed_origin_fetch(&r, &cf.fetch, method, url, &rq->h, NULL, NULL, NULL, 0,
                                       err, sizeof err)
                     : ED_EDOWN;
        free(url);
        if (rc != ED_OK)
            return send_error(conn, method, uri, fetch_error_status(rc), "origin failed\n");
        ed_fields_strip_hop(&r.h);
        ok = send_resp(conn, method, uri, &r, r.status, 1, -1, "BYPASS");
        ed_resp_free(&r);
        return ok;
    }
    int lead = 0; /* whether this request holds the key's flight (and so lands it) */
    for (int attempt = 0; attempt < 2; attempt++) {
        int have = lookup(&f, primary, &rq->h);
        if (have && !revalidate && f.state == TC_HTTP_FRESH) {
            ok = serve_cached(conn, method, uri, &rq->h, &f, "HIT", 1);
            ed_resp_free(&f.r);
            return ok;
        }
        if (have && !revalidate && f.state == TC_HTTP_STALE) {
            ok = serve_cached(conn, method, uri, &rq->h, &f, "STALE", 0);
            revalidate_in_background(o, uri, primary, &rq->h, &f);
            ed_resp_free(&f.r);
            return ok;
        }
        if (only_if_cached) {
            ed_resp_free(&f.r);
            return send_error(conn, method, uri, 504, "not cached (only-if-cached)\n");
        }
        if (have || attempt == 1)
            break;
        if ((lead = flight_take(primary)) != 0)
            break;
        ed_resp_free(&f.r); /* another request fetched it meanwhile: look again */
    }
    int have = f.r.status != 0;
    ed_resp r;
    int stored = 0;
    int rc = refetch(&r, o, uri, primary, &rq->h, have ? &f : NULL, &stored);
    if (lead)
        flight_land(primary);
    if (rc != ED_OK) {
        if (have && f.state == TC_HTTP_STALE_IF_ERROR) {
            ok = serve_cached(conn, method, uri, &rq->h, &f, "STALE", 0);
        } else {
            ok = send_error(conn, method, uri, fetch_error_status(rc),
                            rc == ED_ETIMEOUT ? "origin timed out\n" : "origin failed\n");
        }
        ed_resp_free(&f.r);
        return ok;
    }
    if (have && r.status >= 500 && f.state == TC_HTTP_STALE_IF_ERROR) {
        ok = serve_cached(conn, method, uri, &rq->h, &f, "STALE", 0);
        ed_resp_free(&f.r);
        ed_resp_free(&r);
        return ok;
    }
    const char *state = have && r.status == f.r.status && stored ? "REVALIDATED" : "MISS";
    if (have && ed_fields_get(&r.h, "ETag") != NULL && r.len == f.r.len &&
        memcmp(r.body, f.r.body, r.len) == 0)
        state = "REVALIDATED";
    /* Straight from the origin: its own Age (if any) goes with it, no Age of ours. */
    found served = {r, 0, -1, {0}};
    if (r.status >= 200 && r.status < 300)
        ok = serve_cached(conn, method, uri, &rq->h, &served, state, 0);
    else
        ok = send_resp(conn, method, uri, &r, r.status, 1, -1, state);
    ed_resp_free(&f.r);
    ed_resp_free(&r);
    return ok;
}

static enum MHD_Result serve_unsafe(struct MHD_Connection *conn, const char *method,
                                    const origin *o, request *rq)
{
    char err[256], *url = url_of(o, rq->uri);
    ed_resp r;
    int rc = url ? ed_origin_fetch(&r, &cf.fetch, method, url, &rq->h, NULL, NULL, rq->body,
                                   rq->body_len, err, sizeof err)
                 : ED_EDOWN;
    free(url);
    if (rc != ED_OK)
        return send_error(conn, method, rq->uri, fetch_error_status(rc), "origin failed\n");
    ed_fields_strip_hop(&r.h);
    int safe = strcmp(method, "OPTIONS") == 0 || strcmp(method, "TRACE") == 0;
    if (!safe && r.status >= 200 && r.status < 400) {
        /* RFC 9111 4.4: the target, and Location / Content-Location of the same origin. */
        invalidate_uri(rq->uri);
        const char *loc[] = {ed_fields_get(&r.h, "Location"),
                             ed_fields_get(&r.h, "Content-Location")};
        for (int i = 0; i < 2; i++) {
            const char *p = same_origin_path(o, loc[i]);
            if (p != NULL)
                invalidate_uri(p);
        }
    }
    enum MHD_Result ok = send_resp(conn, method, rq->uri, &r, r.status, 1, -1, "BYPASS");
    ed_resp_free(&r);
    return ok;
}

/* MHD hands over the raw request target here, before it splits off the query. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls, (void)conn;
    request *rq = calloc(1, sizeof *rq);
    if (rq != NULL && (rq->uri = strdup(uri)) == NULL) {
        free(rq);
        rq = NULL;
    }
    return rq;
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    request *rq = *con_cls;
    if (rq == NULL)
        return;
    free(rq->uri);
    free(rq->body);
    ed_fields_free(&rq->h);
    free(rq);
    *con_cls = NULL;
}

/* Reads the upload into rq; 1 when it is all in. */
static int take_upload(request *rq, const char *data, size_t *size)
{
    if (!rq->started) {
        rq->started = 1; /* MHD's first call has the header alone; the body follows */
        return 0;
    }
    if (*size == 0)
        return 1;
    if (rq->too_big || rq->body_len + *size > cf.max_request_body) {
        rq->too_big = 1;
    } else {
        char *b = realloc(rq->body, rq->body_len + *size + 1);
        if (b == NULL) {
            rq->too_big = 1;
        } else {
            memcpy(b + rq->body_len, data, *size);
            rq->body = b;
            rq->body_len += *size;
        }
    }
    *size = 0;
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls, (void)url;
    request *rq = *con_cls;
    if (rq == NULL)
        return MHD_NO;
    if (!take_upload(rq, upload, upload_size))
        return MHD_YES;
    if (rq->too_big)
        return send_error(conn, method, rq->uri, 413, "request body too large\n");
    if (rq->uri[0] != '/')
        return send_error(conn, method, rq->uri, 400, "the target must be a path\n");
    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect, &rq->h);
    if (strcmp(version, "HTTP/1.1") == 0 && ed_fields_get(&rq->h, "Host") == NULL)
        return send_error(conn, method, rq->uri, 400, "HTTP/1.1 needs Host\n"); /* 9112 3.2 */
    const origin *o = origin_for(rq->uri);
    if (o == NULL)
        return send_error(conn, method, rq->uri, 404, "no origin for this path\n");
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        return serve_get(conn, method, o, rq);
    return serve_unsafe(conn, method, o, rq);
}

/* ---- the admin endpoint --------------------------------------------------------------------- */

/* Compares in time that does not depend on where the bytes differ. */
static int same_secret(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* POST /invalidate {"paths": [PATTERN, ...], "tags": [TAG, ...]}, with Authorization: Bearer TOKEN:
 * every tier of every process, through the bus. Answers {"id": ..., "removed": N}. */
static enum MHD_Result on_admin(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **con_cls)
{
    (void)cls, (void)version;
    request *rq = *con_cls;
    if (rq == NULL)
        return MHD_NO;
    if (!take_upload(rq, upload, upload_size))
        return MHD_YES;
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    size_t tl = strlen(cf.admin_token);
    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != tl ||
        !same_secret(auth + 7, cf.admin_token, tl))
        return send_error(conn, method, rq->uri, 401, "a bearer token is needed\n");
    if (strcmp(url, "/invalidate") != 0 || strcmp(method, "POST") != 0)
        return send_error(conn, method, rq->uri, 404, "POST /invalidate only\n");
    if (rq->too_big)
        return send_error(conn, method, rq->uri, 413, "request body too large\n");
    json_error_t jerr;
    json_t *root = json_loadb(rq->body ? rq->body : "", rq->body_len, 0, &jerr);
    json_t *paths = json_object_get(root, "paths"), *tags = json_object_get(root, "tags");
    if (root == NULL || (paths != NULL && !json_is_array(paths)) ||
        (tags != NULL && !json_is_array(tags)) || (paths == NULL && tags == NULL)) {
        json_decref(root);
        return send_error(conn, method, rq->uri, 400,
                          "expected {\"paths\": [...], \"tags\": [...]}\n");
    }
    int64_t total = 0;
    size_t i;
    json_t *v;
    int bad = 0;
    json_array_foreach(paths, i, v)
    {
        int64_t removed = 0;
        if (!json_is_string(v) || tc_invalidate_pattern(&removed, cache, json_string_value(v),
                                                        json_string_length(v)) != TC_OK)
            bad = 1;
        total += removed;
    }
    json_array_foreach(tags, i, v)
    {
        int64_t removed = 0;
        if (!json_is_string(v) || tc_invalidate_tag(&removed, cache, json_string_value(v),
                                                    json_string_length(v)) != TC_OK)
            bad = 1;
        total += removed;
    }
    json_decref(root);
    char body[160];
    snprintf(body, sizeof body, "{\"id\": \"I%lld-%ld\", \"removed\": %lld%s}\n",
             (long long)time(NULL), atomic_fetch_add(&invalidation_seq, 1) + 1,
             (long long)total, bad ? ", \"error\": \"a path or tag was refused\"" : "");
    ed_resp r = {0};
    r.body = body;
    r.len = strlen(body);
    ed_fields_add(&r.h, "Content-Type", 12, "application/json", 16);
    enum MHD_Result ok = send_resp(conn, method, rq->uri, &r, bad ? 400 : 200, 1, -1, "BYPASS");
    ed_fields_free(&r.h);
    return ok;
}

/* ---- main ----------------------------------------------------------------------------------- */

static struct MHD_Daemon *start(const char *host, int port, MHD_AccessHandlerCallback fn)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    return MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                MHD_USE_ERROR_LOG,
                            (uint16_t)port, NULL, NULL, fn, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, cf.max_header_bytes,
                            MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_LISTENING_ADDRESS_REUSE,
                            1u, MHD_OPTION_END);
}

int main(int argc, char **argv)
{
    const char *config = NULL, *listen = NULL, *origin_url = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--origin") == 0 && i + 1 < argc) {
            origin_url = argv[++i];
        } else {
            fprintf(stderr, "tiercache-edge: unknown argument \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    snprintf(cf.host, sizeof cf.host, "127.0.0.1");
    cf.port = 8080;
    cf.fetch = (ed_origin_opts){2000, 10000, 8u << 20, 64u << 20};
    cf.max_request_body = 1u << 20;
    cf.max_header_bytes = 32u << 10;
    cf.tag_header = strdup("Surrogate-Key");
    cf.heuristic_percent = 10;
    cf.heuristic_max_s = 86400;
    cf.access_log = 1;
    if (config != NULL && load_section(config) != 0)
        return 2;
    if (listen != NULL && parse_hostport(cf.host, sizeof cf.host, &cf.port, listen) != 0) {
        fprintf(stderr, "tiercache-edge: --listen takes IPV4:PORT\n");
        return 2;
    }
    if (origin_url != NULL && add_origin("/", origin_url) != 0) {
        fprintf(stderr, "tiercache-edge: --origin takes an http:// or https:// URL\n");
        return 2;
    }
    if (cf.n_origins == 0) {
        fprintf(stderr, "tiercache-edge: no origin (--origin URL, or edge_server.origin)\n%s",
                usage);
        return 2;
    }

    /* The library: the caches alone, whatever the file's store says. */
    tc_config *lc;
    if (tc_config_new(&lc) != TC_OK)
        return 1;
    int rc = config != NULL ? tc_config_load_file(lc, config) : TC_OK;
    if (rc == TC_OK)
        rc = tc_config_set_string(lc, "store.type", "none");
    if (rc == TC_OK)
        rc = tc_config_set_int(lc, "max_value_bytes", (int64_t)cf.fetch.max_body + (1 << 20));
    if (rc != TC_OK) {
        fprintf(stderr, "tiercache-edge: config: %s\n", tc_config_errmsg(lc));
        tc_config_free(lc);
        return 2;
    }
    rc = tc_open(&cache, lc);
    tc_config_free(lc);
    if (rc != TC_OK) {
        fprintf(stderr, "tiercache-edge: %s\n", tc_errmsg(NULL));
        return 1;
    }
    if (ed_origin_init() != 0) {
        fprintf(stderr, "tiercache-edge: libcurl failed to start\n");
        tc_close(cache);
        return 1;
    }

    /* Signals go to sigwait here; the server's threads inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct MHD_Daemon *d = start(cf.host, cf.port, on_request), *admin = NULL;
    if (d != NULL && cf.admin_token != NULL)
        admin = start(cf.admin_host, cf.admin_port, on_admin);
    int status = 0;
    if (d == NULL || (cf.admin_token != NULL && admin == NULL)) {
        fprintf(stderr, "tiercache-edge: cannot listen on %s:%d%s\n", cf.host, cf.port,
                d != NULL ? " (admin)" : "");
        status = 1;
    } else {
        fprintf(stderr, "tiercache-edge: listening on %s:%d, origin %s\n", cf.host, cf.port,
                cf.origins[0].url);
        int sig;
        sigwait(&set, &sig);
        fprintf(stderr, "tiercache-edge: stopping (signal %d)\n", sig);
    }
    if (admin != NULL)
        MHD_stop_daemon(admin);
    if (d != NULL)
        MHD_stop_daemon(d);
    for (int i = 0; i < 2000 && atomic_load(&bg_running) > 0; i++) {
        struct timespec ms = {0, 5000000};
        nanosleep(&ms, NULL);
    }
    ed_origin_cleanup();
    tc_close(cache);
    for (int i = 0; i < cf.n_origins; i++) {
        free(cf.origins[i].prefix);
        free(cf.origins[i].url);
    }
    for (int i = 0; i < cf.n_key_headers; i++)
        free(cf.key_headers[i]);
    free(cf.tag_header);
    free(cf.admin_token);
    return status;
}
