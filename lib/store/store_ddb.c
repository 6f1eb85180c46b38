/*
 * store_ddb.c - the DynamoDB store (store.type "dynamodb"; store.h): one item per key,
 *
 *   { <key attribute>: {"S": key}, <value attribute>: {"B": value}, <version attribute>: {"N"} }
 *
 * and a deleted key is an item without the value (a tombstone that keeps the version), so
 * that the version only goes up: a key deleted and written again never returns to a version
 * the caches already saw.
 *
 * Versions. A write sets the version to the wall clock in microseconds, on the condition that
 * the item's version is lower; when it is not (a clock behind, a write in the same
 * microsecond, or a writer outside the library that adds one to the version), the write adds
 * one to the item's version instead. Either way one conditional round trip in the common case,
 * and per key every write gets a version above every earlier one, which is what the caches'
 * race guard needs. Writers outside the library should add one to the version too ("ADD ver
 * :one"); one that leaves it alone is still seen through the stream (ddb_feed.c), whose change
 * then retires one past the version, so no cache keeps the old value (the new one is cached
 * once the retirement's tombstone has passed).
 */
#include "store/ddb_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOMB_ATTR "tc_deleted"

/* ---- base64 (DynamoDB's B type) ------------------------------------------------------------ */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const unsigned char *p, size_t n, size_t *out_len)
{
    size_t len = 4 * ((n + 2) / 3);
    char *o = malloc(len + 1), *q = o;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *q++ = b64[v >> 18];
        *q++ = b64[(v >> 12) & 63];
        *q++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *q++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *q = '\0';
    *out_len = len;
    return o;
}

static int b64_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Decodes into a new buffer; -1 for text that is not base64. */
static int b64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len)
{
    if (n % 4 != 0)
        return -1;
    unsigned char *o = malloc(n / 4 * 3 + 1);
    if (o == NULL)
        return -2;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad > 0 || (v[j] = b64_val((unsigned char)s[i + j])) < 0) {
                free(o);
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        o[k++] = (unsigned char)(w >> 16);
        if (pad < 2)
            o[k++] = (unsigned char)(w >> 8);
        if (pad < 1)
            o[k++] = (unsigned char)w;
    }
    *out = o;
    *out_len = k;
    return 0;
}

/* ---- items ------------------------------------------------------------------------------- */

/* {"<key attribute>": {"S": key}}; NULL for a key that is not UTF-8 (DynamoDB's strings are). */
static json_t *key_object(const ddb_store *s, const char *key, size_t key_len)
{
    json_t *str = json_stringn(key, key_len);
    if (str == NULL)
        return NULL;
    return json_pack("{s:{s:o}}", s->key_attr, "S", str);
}

static int key_error(const ddb_store *s, const char *op)
{
    return tc__err(s->base.owner, TC_EKEY, "dynamodb %s: the key is not UTF-8 (a DynamoDB "
                                           "string key must be)", op);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static json_t *number(int64_t v)
{
    char n[24];
    snprintf(n, sizeof n, "%lld", (long long)v);
    return json_pack("{s:s}", "N", n);
}

/* ---- the operations ---------------------------------------------------------------------- */

/* Hands an item's value to fn (a tc__value_fn); TC_ENOTFOUND for a tombstone. */
static int deliver_item(ddb_store *s, json_t *item, tc__value_fn fn, void *ctx)
{
    const tc__store *st = &s->base;
    json_t *val = json_object_get(item, s->value_attr);
    if (val == NULL)
        return TC_ENOTFOUND;
    int rc;
    int64_t version = tc__ddb_number(json_object_get(item, s->version_attr));
    json_t *b = json_object_get(val, "B"), *str = json_object_get(val, "S");
    if (json_is_string(b)) {
        unsigned char *bytes;
        size_t n;
        int d = b64_decode(json_string_value(b), json_string_length(b), &bytes, &n);
        if (d == 0) {
            rc = (int64_t)n > s->max_value_bytes
                     ? tc__err(st->owner, TC_ESTORE, "dynamodb get: value of %zu bytes is over "
                                                     "max_value_bytes", n)
                     : fn(ctx, bytes, n, version, -1);
            free(bytes);
        } else {
            rc = d == -2 ? tc__err(st->owner, TC_ENOMEM, "dynamodb get: out of memory")
                         : tc__err(st->owner, TC_ESTORE, "dynamodb get: the value attribute "
                                                         "is not valid base64");
        }
    } else if (json_is_string(str)) {
        /* A writer outside the library may store text: its bytes are the value. */
        size_t n = json_string_length(str);
        rc = (int64_t)n > s->max_value_bytes
                 ? tc__err(st->owner, TC_ESTORE, "dynamodb get: value of %zu bytes is over "
                                                 "max_value_bytes", n)
                 : fn(ctx, json_string_value(str), n, version, -1);
    } else {
        rc = tc__err(st->owner, TC_ESTORE, "dynamodb get: attribute \"%s\" is neither B nor S",
                     s->value_attr);
    }
    return rc;
}

static int ddb_get(tc__store *st, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    ddb_store *s = (ddb_store *)st;
    json_t *k = key_object(s, key, key_len);
    if (k == NULL)
        return key_error(s, "get");
    json_t *req = json_pack("{s:s,s:o,s:b}", "TableName", s->table, "Key", k, "ConsistentRead", 1);
    if (req == NULL)
        return tc__err(st->owner, TC_ENOMEM, "dynamodb get: out of memory");
    json_t *ans;
    int rc = tc__ddb_call(&s->db, "GetItem", req, &ans, NULL);
    json_decref(req);
    if (rc == TC_ESTATE)
        rc = tc__err(st->owner, TC_ESTORE, "dynamodb get: unexpected condition failure");
    if (rc != TC_OK)
        return rc;
    json_t *item = json_object_get(ans, "Item");
    json_t *val = json_object_get(item, s->value_attr);
    if (!json_is_object(item) || val == NULL) {
        json_decref(ans);
        return TC_ENOTFOUND; /* no item, or a tombstone */
    }
    rc = deliver_item(s, item, fn, ctx);
    json_decref(ans);
    return rc;
}

/* ---- get many: BatchGetItem ---------------------------------------------------------------- */

#define BATCH_MAX 100 /* keys per BatchGetItem, DynamoDB's limit */

typedef struct many_ctx {
    int (*fn)(void *ctx, size_t i, const void *value, size_t len, int64_t version);
    void *ctx;
    size_t i;
} many_ctx;

static int many_value(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    many_ctx *m = ctx;
    (void)ttl;
    return m->fn(m->ctx, m->i, data, len, version);
}

/* The positions from..to-1 (at most BATCH_MAX), whose distinct keys are idx: one request, its
 * unprocessed keys asked again, with backoff, until the store's timeout. */
static int batch_chunk(ddb_store *s, const char *const *keys, const size_t *lens, size_t from,
                       size_t to, const size_t *idx, size_t nidx,
                       int (*fn)(void *, size_t, const void *, size_t, int64_t), void *ctx)
{
    json_t *want = json_array();
    for (size_t j = 0; want != NULL && j < nidx; j++) {
        json_t *k = key_object(s, keys[idx[j]], lens[idx[j]]);
        if (k == NULL) {
            json_decref(want);
            return key_error(s, "get_many");
        }
        json_array_append_new(want, k);
    }
    if (want == NULL)
        return tc__err(s->base.owner, TC_ENOMEM, "dynamodb get_many: out of memory");
    int rc = TC_OK;
    int64_t until = tc__now_ms() + s->db.timeout_ms, pause = 25;
    while (rc == TC_OK && json_array_size(want) > 0) {
        json_t *req = json_pack("{s:{s:{s:O,s:b}}}", "RequestItems", s->table, "Keys", want,
                                "ConsistentRead", 1),
               *ans;
        json_decref(want);
        want = NULL;
        if (req == NULL)
            return tc__err(s->base.owner, TC_ENOMEM, "dynamodb get_many: out of memory");
        rc = tc__ddb_call(&s->db, "BatchGetItem", req, &ans, NULL);
        json_decref(req);
        if (rc != TC_OK)
            break;
        json_t *items = json_object_get(json_object_get(ans, "Responses"), s->table), *item;
        size_t j;
        json_array_foreach(items, j, item)
        {
            size_t klen;
            const char *key = tc__ddb_image_key(s, item, &klen);
            /* Every position that asked for this key gets it (a key may repeat). */
            for (size_t i = from; key != NULL && i < to && rc == TC_OK; i++) {
                if (lens[i] != klen || memcmp(keys[i], key, klen) != 0)
                    continue;
                many_ctx m = {fn, ctx, i};
                rc = deliver_item(s, item, many_value, &m);
                if (rc == TC_ENOTFOUND)
                    rc = TC_OK;
            }
        }
        json_t *left = json_object_get(
            json_object_get(json_object_get(ans, "UnprocessedKeys"), s->table), "Keys");
        if (rc == TC_OK && json_array_size(left) > 0) {
            want = json_incref(left);
            if (tc__now_ms() + pause > until)
                rc = tc__err(s->base.owner, TC_ESTORE,
                             "dynamodb get_many: keys left unprocessed until the timeout");
            struct timespec ts = {0, (long)pause * 1000000L};
            nanosleep(&ts, NULL);
            pause = pause * 2 > 1000 ? 1000 : pause * 2;
        }
        json_decref(ans);
    }
    json_decref(want);
    return rc;
}

static int ddb_get_many(tc__store *st, size_t n, const char *const *keys, const size_t *lens,
                        int (*fn)(void *, size_t, const void *, size_t, int64_t), void *ctx)
{
    ddb_store *s = (ddb_store *)st;
    int rc = TC_OK;
    /* BATCH_MAX positions a request, each key once in it (DynamoDB refuses a batch that
     * repeats one): a key repeated across requests is simply asked twice. */
    for (size_t from = 0; from < n && rc == TC_OK; from += BATCH_MAX) {
        size_t to = n - from > BATCH_MAX ? from + BATCH_MAX : n;
        size_t idx[BATCH_MAX], nidx = 0;
        for (size_t i = from; i < to; i++) {
            int seen = 0;
            for (size_t j = 0; j < nidx && !seen; j++)
                seen = lens[idx[j]] == lens[i] && memcmp(keys[idx[j]], keys[i], lens[i]) == 0;
            if (!seen)
                idx[nidx++] = i;
        }
        rc = batch_chunk(s, keys, lens, from, to, idx, nidx, fn, ctx);
    }
    return rc;
}

static void wake_feed(ddb_store *s)
{
    pthread_mutex_lock(&s->wmu);
    atomic_fetch_add(&s->writes, 1);
    pthread_cond_broadcast(&s->wcv);
    pthread_mutex_unlock(&s->wmu);
}

/* One write: value (NULL: a deletion) with a new version, as the top of the file says. */
static int write_item(ddb_store *s, const char *op, const char *key, size_t key_len,
                      const void *value, size_t len, int64_t *out_version)
{
    json_t *bytes = NULL;
    if (value != NULL) {
        size_t n;
        char *enc = b64_encode(value, len, &n);
        if (enc == NULL || (bytes = json_pack("{s:s%}", "B", enc, n)) == NULL) {
            free(enc);
            return tc__err(s->base.owner, TC_ENOMEM, "dynamodb %s: out of memory", op);
        }
        free(enc);
    }
    int rc = TC_ESTATE;
    for (int attempt = 0; attempt < 2 && rc == TC_ESTATE; attempt++) {
        json_t *k = key_object(s, key, key_len);
        if (k == NULL) {
            json_decref(bytes);
            return key_error(s, op);
        }
        /* The first try sets the clock's version if it is newer; the second adds one. */
        static const char *const exprs[2][2] = {
            {"SET #v = :t, #x = :yes REMOVE #d", "SET #x = :yes REMOVE #d ADD #v :one"},
            {"SET #v = :t, #d = :val REMOVE #x", "SET #d = :val REMOVE #x ADD #v :one"}};
        const char *expr = exprs[value != NULL][attempt];
        json_t *names = json_pack("{s:s,s:s,s:s}", "#v", s->version_attr, "#d", s->value_attr,
                                  "#x", TOMB_ATTR);
        json_t *vals = attempt == 0 ? json_pack("{s:o}", ":t", number(now_us()))
                                    : json_pack("{s:o}", ":one", number(1));
        if (vals != NULL && value != NULL)
            json_object_set(vals, ":val", bytes);
        if (vals != NULL && value == NULL)
            json_object_set_new(vals, ":yes", json_pack("{s:b}", "BOOL", 1));
        json_t *req = json_pack("{s:s,s:o,s:s,s:o,s:o,s:s}", "TableName", s->table, "Key", k,
                                "UpdateExpression", expr, "ExpressionAttributeNames", names,
                                "ExpressionAttributeValues", vals, "ReturnValues",
                                "UPDATED_NEW");
        if (req != NULL && attempt == 0)
            json_object_set_new(req, "ConditionExpression",
                                json_string("attribute_not_exists(#v) OR #v < :t"));
        if (req == NULL) {
            json_decref(bytes);
            return tc__err(s->base.owner, TC_ENOMEM, "dynamodb %s: out of memory", op);
        }
        json_t *ans;
        rc = tc__ddb_call(&s->db, "UpdateItem", req, &ans, NULL);
        json_decref(req);
        if (rc == TC_OK) {
            int64_t v = tc__ddb_number(json_object_get(json_object_get(ans, "Attributes"),
                                                  s->version_attr));
            json_decref(ans);
            if (v <= 0)
                rc = tc__err(s->base.owner, TC_ESTORE,
                             "dynamodb %s: the answer has no version (attribute \"%s\")", op,
                             s->version_attr);
            *out_version = v;
        }
    }
    json_decref(bytes);
    if (rc == TC_ESTATE) /* the unconditional second try cannot fail its condition */
        rc = tc__err(s->base.owner, TC_ESTORE, "dynamodb %s: condition failed twice", op);
    if (rc == TC_OK)
        wake_feed(s);
    return rc;
}

static int ddb_put(tc__store *st, const char *key, size_t key_len, const void *value, size_t len,
                   int64_t *out_version)
{
    return write_item((ddb_store *)st, "put", key, key_len, value != NULL ? value : "", len,
                      out_version);
}

static int ddb_del(tc__store *st, const char *key, size_t key_len, int64_t *out_version)
{
    return write_item((ddb_store *)st, "del", key, key_len, NULL, 0, out_version);
}

static void ddb_close(tc__store *st);

static const tc__store_ops ddb_ops = {
    .get = ddb_get,
    .put = ddb_put,
    .del = ddb_del,
    .close = ddb_close,
    .get_many = ddb_get_many,
    .feed_read = tc__ddb_feed_read,
    .feed_claim = tc__ddb_feed_claim,
    .feed_commit = tc__ddb_feed_commit,
    .feed_release = tc__ddb_feed_release,
    .feed_takeover = tc__ddb_feed_takeover,
    .feed_trim = tc__ddb_feed_trim,
    .feed_wait = tc__ddb_feed_wait,
};

static void ddb_close(tc__store *st)
{
    ddb_store *s = (ddb_store *)st;
    tc__ddb_feed_free(s);
    tc__ddb_client_free(&s->db);
    tc__ddb_client_free(&s->streams);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->wcv);
    free(s->table), free(s->feed_table);
    free(s->key_attr), free(s->value_attr), free(s->version_attr);
    free(s->region), free(s->access_key_id), free(s->secret_access_key), free(s->session_token);
    free(s);
}

/* ---- opening ------------------------------------------------------------------------------ */

static const char *first(const char *a, const char *b)
{
    return a != NULL && a[0] ? a : b;
}

int tc__store_ddb_open(tc__store **out, const tc__ddb_options *o, const void *owner)
{
    *out = NULL;
    ddb_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return tc__err(owner, TC_ENOMEM, "dynamodb: out of memory");
    s->base.owner = owner;
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->wcv, NULL);
    /* Credentials as the AWS SDKs look for them: the environment first, then the config. */
    const char *ak = first(getenv("AWS_ACCESS_KEY_ID"), o->access_key_id);
    const char *sk = first(getenv("AWS_SECRET_ACCESS_KEY"), o->secret_access_key);
    const char *tok = getenv("AWS_ACCESS_KEY_ID") != NULL && getenv("AWS_ACCESS_KEY_ID")[0]
                          ? getenv("AWS_SESSION_TOKEN")
                          : o->session_token;
    const char *region = first(o->region, first(getenv("AWS_REGION"),
                                                first(getenv("AWS_DEFAULT_REGION"), "us-east-1")));
    size_t tlen = strlen(o->table);
    s->table = strdup(o->table);
    s->feed_table = malloc(tlen + 9);
    if (s->feed_table != NULL)
        memcpy(s->feed_table, o->table, tlen), memcpy(s->feed_table + tlen, "_tc_feed", 9);
    s->key_attr = strdup(o->key_attribute);
    s->value_attr = strdup(o->value_attribute);
    s->version_attr = strdup(o->version_attribute);
    s->region = strdup(region);
    s->access_key_id = strdup(ak != NULL ? ak : "");
    s->secret_access_key = strdup(sk != NULL ? sk : "");
    s->session_token = strdup(tok != NULL ? tok : "");
    s->max_value_bytes = o->max_value_bytes;
    s->create_table = o->create_table;
    int rc = TC_OK;
    if (s->table == NULL || s->feed_table == NULL || s->key_attr == NULL ||
        s->value_attr == NULL || s->version_attr == NULL || s->region == NULL ||
        s->access_key_id == NULL || s->secret_access_key == NULL || s->session_token == NULL)
        rc = tc__err(owner, TC_ENOMEM, "dynamodb: out of memory");
    else if (s->access_key_id[0] == '\0' || s->secret_access_key[0] == '\0')
        rc = tc__err(owner, TC_ECONFIG,
                     "dynamodb: no credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                     "store.access_key_id and store.secret_access_key)");
    else if (strcmp(s->key_attr, s->value_attr) == 0 ||
             strcmp(s->key_attr, s->version_attr) == 0 ||
             strcmp(s->value_attr, s->version_attr) == 0 || strcmp(s->value_attr, TOMB_ATTR) == 0)
        rc = tc__err(owner, TC_ECONFIG, "dynamodb: the key, value and version attributes must "
                                        "be three different names (and not " TOMB_ATTR ")");
    if (rc == TC_OK)
        rc = tc__ddb_client_init(&s->db, o->endpoint, 0, s);
    if (rc == TC_OK)
        rc = tc__ddb_client_init(&s->streams, first(o->streams_endpoint, o->endpoint), 1, s);
    s->db.timeout_ms = s->streams.timeout_ms = o->timeout_ms;
    s->base.ops = &ddb_ops;
    if (rc == TC_OK && o->create_table)
        rc = tc__ddb_ensure_table(s, s->table, s->key_attr, 1);
    if (rc != TC_OK) {
        ddb_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return TC_OK;
}
