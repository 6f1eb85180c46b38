/*
 * origin.c - requests to the origin through libcurl (edge_server.h). One share handle holds the
 * connection cache and DNS for the whole process, and finished easy handles go back to a pool
 * with their connections, so a request to the origin reuses a kept-alive connection instead of
 * opening one.
 */
#include "edge_server.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static CURLSH *share;
static pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static CURL *pool[256];
static size_t pool_n;

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
    (void)h, (void)a, (void)u;
    pthread_mutex_lock(&share_mu[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
    (void)h, (void)u;
    pthread_mutex_unlock(&share_mu[d]);
}

int ed_origin_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&share_mu[i], NULL);
    share = curl_share_init();
    if (share == NULL)
        return -1;
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    return 0;
}

void ed_origin_cleanup(void)
{
    for (size_t i = 0; i < pool_n; i++)
        curl_easy_cleanup(pool[i]);
    pool_n = 0;
    if (share != NULL)
        curl_share_cleanup(share);
    share = NULL;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&share_mu[i]);
    curl_global_cleanup();
}

static CURL *take(void)
{
    pthread_mutex_lock(&pool_mu);
    CURL *h = pool_n > 0 ? pool[--pool_n] : NULL;
    pthread_mutex_unlock(&pool_mu);
    if (h == NULL)
        h = curl_easy_init();
    else
        curl_easy_reset(h); /* options go, the handle's connections stay */
    return h;
}

static void give_back(CURL *h)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_n < sizeof pool / sizeof pool[0]) {
        pool[pool_n++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
    if (h != NULL)
        curl_easy_cleanup(h);
}

typedef struct fetch {
    ed_resp *r;
    const ed_origin_opts *o;
    size_t cap;
    int failed, over;
} fetch;

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    fetch *f = arg;
    size_t len = size * n, l = len;
    while (l > 0 && (data[l - 1] == '\n' || data[l - 1] == '\r'))
        l--;
    if (l >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A status line: a new response begins (after a 1xx, or a redirect not followed). */
        ed_fields_free(&f->r->h);
        const char *sp = memchr(data, ' ', l);
        f->r->status = sp != NULL ? atoi(sp + 1) : 0;
        return len;
    }
    if (l == 0)
        return len;
    const char *colon = memchr(data, ':', l);
    if (colon == NULL || colon == data || data[0] == ' ' || data[0] == '\t') {
        f->failed = 1; /* no folded lines, no nameless fields: a broken answer */
        return len;
    }
    const char *v = colon + 1, *end = data + l;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *c = v; c < end; c++)
        if ((unsigned char)*c < 0x20 && *c != '\t')
            f->failed = 1;
    if (ed_fields_add(&f->r->h, data, (size_t)(colon - data), v, (size_t)(end - v)) != 0)
        return 0;
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    fetch *f = arg;
    size_t len = size * n;
    if (f->r->len + len > f->o->max_pass) {
        f->over = 1;
        return 0;
    }
    if (f->r->len + len + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 16384;
        while (cap < f->r->len + len + 1)
            cap *= 2;
        char *b = realloc(f->r->body, cap);
        if (b == NULL)
            return 0;
        f->r->body = b;
        f->cap = cap;
    }
    memcpy(f->r->body + f->r->len, data, len);
    f->r->len += len;
    f->r->body[f->r->len] = '\0';
    return len;
}

/* Request fields that are not forwarded as they are. */
static int not_forwarded(const char *name)
{
    static const char *const skip[] = {"Host",
                                       "Connection",
                                       "Keep-Alive",
                                       "Proxy-Connection",
                                       "TE",
                                       "Trailer",
                                       "Transfer-Encoding",
                                       "Upgrade",
                                       "Proxy-Authorization",
                                       "Content-Length",
                                       "Expect",
                                       "If-None-Match",
                                       "If-Modified-Since",
                                       "If-Match",
                                       "If-Unmodified-Since",
                                       "If-Range",
                                       "Range"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strcasecmp(name, skip[i]) == 0)
            return 1;
    return 0;
}

static struct curl_slist *add_line(struct curl_slist *l, const char *name, const char *value,
                                   int *ok)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (line == NULL) {
        *ok = 0;
        return l;
    }
    /* An empty value needs "Name;" for curl to send it rather than drop it. */
    if (value[0] == '\0')
        snprintf(line, n, "%s;", name);
    else
        snprintf(line, n, "%s: %s", name, value);
    struct curl_slist *nl = curl_slist_append(l, line);
    free(line);
    if (nl == NULL)
        *ok = 0;
    return nl != NULL ? nl : l;
}

int ed_origin_fetch(ed_resp *out, const ed_origin_opts *o, const char *method, const char *url,
                    const ed_fields *req, const char *inm, const char *ims, const char *body,
                    size_t body_len, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    CURL *h = take();
    if (h == NULL) {
        snprintf(err, err_len, "out of memory");
        return ED_EDOWN;
    }
    int ok = 1;
    struct curl_slist *lines = NULL;
    for (size_t i = 0; req != NULL && i < req->n; i++)
        if (!not_forwarded(req->v[i].name))
            lines = add_line(lines, req->v[i].name, req->v[i].value, &ok);
    if (inm != NULL)
        lines = add_line(lines, "If-None-Match", inm, &ok);
    if (ims != NULL)
        lines = add_line(lines, "If-Modified-Since", ims, &ok);
    /* "Expect:" removes curl's own: no 100-continue round trip. */
    struct curl_slist *nl = curl_slist_append(lines, "Expect:");
    if (nl == NULL)
        ok = 0;
    else
        lines = nl;
    fetch f = {out, o, 0, 0, 0};
    curl_easy_setopt(h, CURLOPT_SHARE, share);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, lines);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &f);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
            strcmp(method, "PATCH") == 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body != NULL ? body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        }
    }
    CURLcode cc = ok ? curl_easy_perform(h) : CURLE_OUT_OF_MEMORY;
    curl_slist_free_all(lines);
    int rc = ED_OK;
    if (f.over) {
        snprintf(err, err_len, "the origin's body is over %zu bytes", o->max_pass);
        rc = ED_ETOOBIG;
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(err, err_len, "%s", curl_easy_strerror(cc));
        rc = ED_ETIMEOUT;
    } else if (cc != CURLE_OK || f.failed || out->status < 100) {
        snprintf(err, err_len, "%s", cc != CURLE_OK ? curl_easy_strerror(cc)
                                                    : "a malformed response");
        rc = ED_EDOWN;
    }
    out->too_big = out->len > o->max_body;
    if (rc != ED_OK || cc != CURLE_OK) {
        curl_easy_cleanup(h); /* a connection in an unknown state is not kept */
        ed_resp_free(out);
    } else {
        give_back(h);
    }
    return rc;
}
