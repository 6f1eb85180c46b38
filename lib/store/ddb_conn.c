/*
 * ddb_conn.c - the DynamoDB store's HTTP client (ddb_impl.h): one POST per call to the JSON API,
 * signed with SigV4 (sigv4.c), through libcurl.
 *
 * Connections: finished easy handles go back to a small pool and keep their connection alive,
 * so a call reuses the kept connection (the module-scope connection of the seed's Lambda)
 * instead of a TCP and TLS handshake per call. A fork()ed child never uses its parent's: the
 * first call in the child drops them (ddb_fork_fixup), pointing each kept socket at /dev/null
 * first, so that closing it cannot send a TLS close_notify down the parent's connection.
 *
 * Failures: throttling (ProvisionedThroughputExceededException, ThrottlingException,
 * RequestLimitExceeded), 5xx answers and connections that fail are retried with exponential
 * backoff (25 ms doubling to 1 s) with full jitter, until the client's timeout; a retried
 * write is safe because every write the store makes is conditional on the version it read or
 * leaves the same end state when repeated. Every other error answer is the caller's: TC_ESTORE
 * with DynamoDB's type and message, or TC_ESTATE for a failed condition.
 */
#include "store/ddb_impl.h"
#include "store/sigv4.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ANSWER (64 << 20) /* a BatchGetItem answer is at most 16 MB */
#define BACKOFF_MIN_MS 25
#define BACKOFF_MAX_MS 1000

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_start(void)
{
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

/* "http(s)://host[:port][/...]" -> the Host header value; NULL if url is not of that form. */
static char *host_of(const char *url)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0)
        p = url + 8;
    else if (strncmp(url, "http://", 7) == 0)
        p = url + 7;
    else
        return NULL;
    size_t n = strcspn(p, "/?#");
    if (n == 0 || n > 255)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || p[i] == '@' || (unsigned char)p[i] >= 0x7f)
            return NULL; /* no user info, no spaces or controls in a signed Host */
    return strndup(p, n);
}

int tc__ddb_client_init(ddb_client *c, const char *url, int streams, const ddb_store *s)
{
    memset(c, 0, sizeof *c);
    c->owner = s->base.owner;
    pthread_once(&curl_once, curl_start);
    if (!curl_ok)
        return tc__err(c->owner, TC_ESTORE, "dynamodb: libcurl cannot start");
    char dflt[160];
    if (url == NULL || url[0] == '\0') {
        snprintf(dflt, sizeof dflt, "https://%sdynamodb.%s.amazonaws.com/",
                 streams ? "streams." : "", s->region);
        url = dflt;
    }
    c->host = host_of(url);
    if (c->host == NULL)
        return tc__err(c->owner, TC_ECONFIG,
                       "dynamodb: endpoint \"%.200s\" is not http(s)://host[:port]", url);
    /* The JSON API lives at "/": whatever path the endpoint named is not signed twice. */
    size_t scheme = strncmp(url, "https://", 8) == 0 ? 8 : 7;
    size_t n = scheme + strlen(c->host);
    c->url = malloc(n + 2);
    c->prefix = strdup(streams ? "DynamoDBStreams_20120810." : "DynamoDB_20120810.");
    c->mu = malloc(sizeof *c->mu);
    if (c->url == NULL || c->prefix == NULL || c->mu == NULL ||
        pthread_mutex_init(c->mu, NULL) != 0) {
        free(c->mu);
        c->mu = NULL;
        return tc__err(c->owner, TC_ENOMEM, "dynamodb: out of memory");
    }
    memcpy(c->url, url, n);
    c->url[n] = '/';
    c->url[n + 1] = '\0';
    c->region = s->region;
    c->access_key_id = s->access_key_id;
    c->secret_access_key = s->secret_access_key;
    c->session_token = s->session_token;
    atomic_init(&c->gen, tc__fork_generation());
    atomic_init(&c->fixing, 0);
    return TC_OK;
}

/* Closes a handle that a parent may share: its socket first goes to /dev/null. */
static void drop_inherited(CURL *h)
{
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK && fd != CURL_SOCKET_BAD) {
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) {
            dup2(nul, fd);
            close(nul);
        }
    }
    curl_easy_cleanup(h);
}

void tc__ddb_client_free(ddb_client *c)
{
    if (c->mu == NULL)
        return;
    int child = atomic_load(&c->gen) != tc__fork_generation();
    for (int i = 0; i < c->nidle; i++) {
        if (child)
            drop_inherited(c->idle[i]);
        else
            curl_easy_cleanup(c->idle[i]);
    }
    c->nidle = 0;
    pthread_mutex_destroy(c->mu);
    free(c->mu);
    free(c->url), free(c->host), free(c->prefix);
    c->mu = NULL;
}

/* The first call in a child: the parent's kept handles are the parent's. */
static int fork_fixup(ddb_client *c, unsigned gen)
{
    int rc = TC_OK;
    tc__tag_lock(&c->fixing, gen);
    if (atomic_load(&c->gen) != gen) {
        pthread_mutex_t *mu = malloc(sizeof *mu);
        if (mu == NULL || pthread_mutex_init(mu, NULL) != 0) {
            free(mu);
            rc = tc__err(c->owner, TC_ENOMEM, "dynamodb: after fork: out of memory");
        } else {
            /* A parent thread may have held the old lock; the pool it guards was whole only
             * if not, so only then are its handles dropped (else they are left, unreachable). */
            if (tc__mutex_after_fork(c->mu))
                for (int i = 0; i < c->nidle; i++)
                    drop_inherited(c->idle[i]);
            c->nidle = 0;
            free(c->mu);
            c->mu = mu;
            atomic_store(&c->gen, gen);
        }
    }
    tc__tag_unlock(&c->fixing);
    return rc;
}

static CURL *take(ddb_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(c->mu);
    if (c->nidle > 0)
        h = c->idle[--c->nidle];
    pthread_mutex_unlock(c->mu);
    return h != NULL ? h : curl_easy_init();
}

static void give_back(ddb_client *c, CURL *h, int broken)
{
    if (!broken) {
        pthread_mutex_lock(c->mu);
        if (c->nidle < DDB_POOL) {
            c->idle[c->nidle++] = h;
            h = NULL;
        }
        pthread_mutex_unlock(c->mu);
    }
    if (h != NULL)
        curl_easy_cleanup(h);
}

typedef struct answer {
    tc__strbuf b;
    int too_big;
} answer;

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    answer *a = ctx;
    size_t len = size * n;
    if (a->b.len + len > MAX_ANSWER) {
        a->too_big = 1;
        return 0; /* stops the transfer */
    }
    tc__strbuf_add(&a->b, p, len);
    return a->b.failed ? 0 : len;
}

static int retryable_type(const char *t)
{
    return strcmp(t, "ProvisionedThroughputExceededException") == 0 ||
           strcmp(t, "ThrottlingException") == 0 || strcmp(t, "RequestLimitExceeded") == 0 ||
           strcmp(t, "InternalServerError") == 0 || strcmp(t, "ServiceUnavailable") == 0;
}

static int retryable_curl(CURLcode e)
{
    return e == CURLE_COULDNT_CONNECT || e == CURLE_SEND_ERROR || e == CURLE_RECV_ERROR ||
           e == CURLE_GOT_NOTHING || e == CURLE_OPERATION_TIMEDOUT || e == CURLE_PARTIAL_FILE;
}

/* One signed POST: TC_OK with the HTTP status and the answer, or a transport failure. */
static int post_once(ddb_client *c, const char *operation, const char *body, size_t body_len,
                     int64_t timeout_ms, long *status, answer *a, CURLcode *cerr)
{
    char amz_date[17], target[128], auth[TC__SIGV4_AUTH_MAX];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(amz_date, sizeof amz_date, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(target, sizeof target, "%s%s", c->prefix, operation);
    tc__sigv4_pair h[5] = {{"Host", c->host},
                           {"X-Amz-Date", amz_date},
                           {"X-Amz-Target", target},
                           {"Content-Type", "application/x-amz-json-1.0"},
                           {"X-Amz-Security-Token", c->session_token}};
    size_t nh = c->session_token != NULL && c->session_token[0] ? 5 : 4;
    tc__sigv4_key key = {c->access_key_id, c->secret_access_key, c->region, "dynamodb"};
    tc__sigv4_req req = {"POST", "/", NULL, 0, h, nh, body, body_len};
    if (tc__sigv4_authorization(auth, sizeof auth, &key, amz_date, &req) != 0)
        return tc__err(c->owner, TC_ESTORE, "dynamodb: cannot sign the request (a credential "
                                            "or header with a control character?)");
    /* Every field is built from checked values: the signer refused control characters. */
    struct curl_slist *list = NULL, *l;
    char line[8192];
    for (size_t i = 1; i <= nh + 1; i++) {
        /* The signed fields but Host (curl sends it from the URL), then the signature, then an
         * empty Expect (no 100-continue round trip for a body over 1 kB). */
        int n = i < nh    ? snprintf(line, sizeof line, "%s: %s", h[i].name, h[i].value)
                : i == nh ? snprintf(line, sizeof line, "Authorization: %s", auth)
                          : snprintf(line, sizeof line, "Expect:");
        if (n < 0 || (size_t)n >= sizeof line) {
            curl_slist_free_all(list);
            return tc__err(c->owner, TC_ESTORE, "dynamodb: a header field is too long");
        }
        if ((l = curl_slist_append(list, line)) == NULL)
            goto nomem;
        list = l;
    }

    CURL *e = take(c);
    if (e == NULL)
        goto nomem;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 1));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 1));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    *cerr = curl_easy_perform(e);
    *status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    give_back(c, e, *cerr != CURLE_OK);
    curl_slist_free_all(list);
    return TC_OK;
nomem:
    curl_slist_free_all(list);
    return tc__err(c->owner, TC_ENOMEM, "dynamodb: out of memory");
}

/* The short form of an error's __type ("com.amazonaws...#ThrottlingException" -> after '#'),
 * and its message (DynamoDB writes "message" or "Message"). */
static void error_of(json_t *j, char type[DDB_TYPE_MAX], const char **msg)
{
    const char *t = json_string_value(json_object_get(j, "__type"));
    const char *hash = t != NULL ? strrchr(t, '#') : NULL;
    snprintf(type, DDB_TYPE_MAX, "%s", hash != NULL ? hash + 1 : t != NULL ? t : "");
    *msg = json_string_value(json_object_get(j, "message"));
    if (*msg == NULL)
        *msg = json_string_value(json_object_get(j, "Message"));
    if (*msg == NULL)
        *msg = "";
}

static void pause_backoff(int attempt, int64_t left_ms, uint64_t *rng)
{
    int64_t cap = BACKOFF_MIN_MS;
    for (int i = 0; i < attempt && cap < BACKOFF_MAX_MS; i++)
        cap *= 2;
    if (cap > BACKOFF_MAX_MS)
        cap = BACKOFF_MAX_MS;
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    int64_t ms = 1 + (int64_t)(*rng % (uint64_t)cap); /* full jitter */
    if (ms > left_ms)
        ms = left_ms;
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int tc__ddb_call(ddb_client *c, const char *operation, json_t *body, json_t **out,
                 char type[DDB_TYPE_MAX])
{
    char tbuf[DDB_TYPE_MAX];
    if (type == NULL)
        type = tbuf;
    type[0] = '\0';
    *out = NULL;
    unsigned gen = tc__fork_generation();
    if (atomic_load(&c->gen) != gen) {
        int rc = fork_fixup(c, gen);
        if (rc != TC_OK)
            return rc;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    if (text == NULL)
        return tc__err(c->owner, TC_ENOMEM, "dynamodb %s: out of memory", operation);
    size_t text_len = strlen(text);
    int64_t deadline = tc__now_ms() + c->timeout_ms;
    uint64_t rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&rng ^ 0x9e3779b97f4a7c15ULL;
    int rc = TC_ESTORE;
    for (int attempt = 0;; attempt++) {
        answer a = {{0}, 0};
        long status = 0;
        CURLcode cerr = CURLE_OK;
        int64_t left = deadline - tc__now_ms();
        rc = post_once(c, operation, text, text_len, left, &status, &a, &cerr);
        if (rc != TC_OK) {
            free(a.b.p);
            break;
        }
        int again = 0;
        if (cerr != CURLE_OK) {
            again = retryable_curl(cerr) && !a.too_big;
            rc = tc__err(c->owner, TC_ESTORE, "dynamodb %s: %s%s", operation,
                         a.too_big ? "answer larger than 64 MB" : curl_easy_strerror(cerr),
                         again ? "" : " (not retried)");
        } else if (a.b.failed) {
            rc = tc__err(c->owner, TC_ENOMEM, "dynamodb %s: out of memory", operation);
        } else {
            json_error_t jerr;
            json_t *j = a.b.p != NULL ? json_loadb(a.b.p, a.b.len, 0, &jerr) : NULL;
            if (status == 200 && json_is_object(j)) {
                *out = j;
                rc = TC_OK;
            } else if (!json_is_object(j)) {
                json_decref(j);
                again = status >= 500;
                rc = tc__err(c->owner, TC_ESTORE,
                             "dynamodb %s: HTTP %ld with an answer that is not a JSON object",
                             operation, status);
            } else {
                const char *msg;
                error_of(j, type, &msg);
                again = status >= 500 || retryable_type(type);
                if (strcmp(type, "ConditionalCheckFailedException") == 0)
                    rc = TC_ESTATE;
                else
                    rc = tc__err(c->owner, TC_ESTORE, "dynamodb %s: HTTP %ld %s: %.300s",
                                 operation, status, type[0] ? type : "(no type)", msg);
                json_decref(j);
            }
        }
        free(a.b.p);
        if (rc == TC_OK || !again)
            break;
        left = deadline - tc__now_ms();
        if (left <= 0)
            break; /* the last failure's message stands */
        pause_backoff(attempt, left, &rng);
    }
    free(text);
    return rc;
}
