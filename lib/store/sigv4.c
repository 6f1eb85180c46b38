/*
 * sigv4.c - AWS Signature Version 4 (sigv4.h), after AWS's "Create a signed AWS API request":
 *
 *   canonical request = method \n path \n query \n headers \n signed-header-names \n sha256(body)
 *   string to sign    = "AWS4-HMAC-SHA256" \n date \n scope \n sha256(canonical request)
 *   signature         = hmac(hmac(hmac(hmac("AWS4" secret, day), region), service),
 *                            "aws4_request") applied to the string to sign
 *
 * Header names are lowercased and sorted, values trimmed with inner runs of spaces made one, and
 * a repeated name's values joined by commas in the order given; query names and values are
 * percent-encoded (everything but A-Z a-z 0-9 - _ . ~) and then sorted, so that a request's own
 * order never changes its signature. The strings are built in one growable buffer; a failure
 * anywhere leaves out empty rather than a half-signed header.
 */
#include "store/sigv4.h"

#include "common/internal.h"

#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 32

static const char hexdig[] = "0123456789abcdef";

static void to_hex(char *hex, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = hexdig[b[i] >> 4];
        hex[2 * i + 1] = hexdig[b[i] & 15];
    }
    hex[2 * n] = '\0';
}

void tc__sigv4_sha256_hex(char hex[65], const void *data, size_t len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data != NULL ? data : (const void *)"", len, md);
    to_hex(hex, md, sizeof md);
}

static void hmac(unsigned char out[32], const void *key, size_t key_len, const char *msg,
                 size_t msg_len)
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, msg_len, out, &n);
}

static int unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

/* Appends s percent-encoded (RFC 3986 unreserved kept; '/' too when keep_slash). */
static void add_encoded(tc__strbuf *b, const char *s, int keep_slash)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p) || (keep_slash && *p == '/')) {
            tc__strbuf_add(b, (const char *)p, 1);
        } else {
            char e[3] = {'%', "0123456789ABCDEF"[*p >> 4], "0123456789ABCDEF"[*p & 15]};
            tc__strbuf_add(b, e, 3);
        }
    }
}

/* ---- the query ---------------------------------------------------------------------------- */

typedef struct enc_pair {
    char *name, *value; /* encoded */
} enc_pair;

static int cmp_pair(const void *a, const void *b)
{
    const enc_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->value, y->value);
}

static char *encoded_dup(const char *s)
{
    tc__strbuf b = {0};
    tc__strbuf_add(&b, "", 0);
    add_encoded(&b, s, 0);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static int add_query(tc__strbuf *b, const tc__sigv4_pair *q, size_t n)
{
    if (n == 0)
        return 0;
    enc_pair *e = calloc(n, sizeof *e);
    if (e == NULL)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        e[i].name = encoded_dup(q[i].name);
        e[i].value = encoded_dup(q[i].value != NULL ? q[i].value : "");
        if (e[i].name == NULL || e[i].value == NULL)
            rc = -1;
    }
    if (rc == 0) {
        qsort(e, n, sizeof *e, cmp_pair);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                tc__strbuf_add(b, "&", 1);
            tc__strbuf_add(b, e[i].name, strlen(e[i].name));
            tc__strbuf_add(b, "=", 1);
            tc__strbuf_add(b, e[i].value, strlen(e[i].value));
        }
    }
    for (size_t i = 0; i < n; i++)
        free(e[i].name), free(e[i].value);
    free(e);
    return rc;
}

/* ---- the headers -------------------------------------------------------------------------- */

typedef struct hdr {
    char name[64]; /* lowercased */
    size_t index;  /* the caller's order, so that a repeated name keeps its values' order */
    const char *value;
} hdr;

static int cmp_hdr(const void *a, const void *b)
{
    const hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : (x->index < y->index ? -1 : x->index > y->index);
}

/* Appends the value trimmed, with each run of spaces or tabs inside it made one space. A value
 * with another control character cannot be sent as a field: -1. */
static int add_value(tc__strbuf *b, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    int space = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == ' ' || *p == '\t') {
            space = 1;
            continue;
        }
        if (*p < 0x20 || *p == 0x7f)
            return -1;
        if (space)
            tc__strbuf_add(b, " ", 1);
        space = 0;
        tc__strbuf_add(b, (const char *)p, 1);
    }
    return 0;
}

/* Appends the canonical header block and leaves the signed names in names. */
static int add_headers(tc__strbuf *b, tc__strbuf *names, const tc__sigv4_pair *h, size_t n)
{
    if (n > MAX_HEADERS)
        return -1;
    hdr hs[MAX_HEADERS];
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(h[i].name);
        if (len == 0 || len >= sizeof hs[i].name)
            return -1;
        for (size_t j = 0; j <= len; j++) {
            char ch = h[i].name[j];
            hs[i].name[j] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
        }
        hs[i].index = i;
        hs[i].value = h[i].value != NULL ? h[i].value : "";
    }
    qsort(hs, n, sizeof *hs, cmp_hdr);
    for (size_t i = 0; i < n; i++) {
        int repeat = i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0;
        if (repeat) {
            tc__strbuf_add(b, ",", 1);
        } else {
            if (i > 0) {
                tc__strbuf_add(b, "\n", 1);
                tc__strbuf_add(names, ";", 1);
            }
            tc__strbuf_add(b, hs[i].name, strlen(hs[i].name));
            tc__strbuf_add(b, ":", 1);
            tc__strbuf_add(names, hs[i].name, strlen(hs[i].name));
        }
        if (add_value(b, hs[i].value) != 0)
            return -1;
    }
    tc__strbuf_add(b, "\n", 1);
    return 0;
}

/* ---- the signature ------------------------------------------------------------------------ */

int tc__sigv4_authorization(char *out, size_t cap, const tc__sigv4_key *key,
                            const char *amz_date, const tc__sigv4_req *req)
{
    if (out == NULL || cap == 0)
        return -1;
    out[0] = '\0';
    if (key == NULL || req == NULL || amz_date == NULL || strlen(amz_date) != 16 ||
        key->secret_access_key == NULL || key->access_key_id == NULL)
        return -1;
    char day[9];
    memcpy(day, amz_date, 8);
    day[8] = '\0';

    tc__strbuf creq = {0}, names = {0};
    tc__strbuf_add(&names, "", 0);
    tc__strbuf_add(&creq, req->method, strlen(req->method));
    tc__strbuf_add(&creq, "\n", 1);
    add_encoded(&creq, req->path != NULL && req->path[0] ? req->path : "/", 1);
    tc__strbuf_add(&creq, "\n", 1);
    int rc = add_query(&creq, req->query, req->nquery);
    tc__strbuf_add(&creq, "\n", 1);
    if (rc == 0)
        rc = add_headers(&creq, &names, req->headers, req->nheaders);
    char body_hex[65];
    tc__sigv4_sha256_hex(body_hex, req->body, req->body_len);
    tc__strbuf_add(&creq, "\n", 1);
    if (names.p != NULL)
        tc__strbuf_add(&creq, names.p, names.len);
    tc__strbuf_add(&creq, "\n", 1);
    tc__strbuf_add(&creq, body_hex, 64);
    if (rc != 0 || creq.failed || names.failed) {
        free(creq.p), free(names.p);
        return -1;
    }

    char creq_hex[65], scope[256];
    tc__sigv4_sha256_hex(creq_hex, creq.p, creq.len);
    free(creq.p);
    int sn = snprintf(scope, sizeof scope, "%s/%s/%s/aws4_request", day, key->region,
                      key->service);
    char sts[512];
    int tn = snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amz_date, scope,
                      creq_hex);
    if (sn < 0 || (size_t)sn >= sizeof scope || tn < 0 || (size_t)tn >= sizeof sts) {
        free(names.p);
        return -1;
    }

    /* "AWS4" + secret, then the chain of keys down to this day, region and service. */
    size_t slen = strlen(key->secret_access_key);
    char *k0 = malloc(slen + 5);
    if (k0 == NULL) {
        free(names.p);
        return -1;
    }
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, key->secret_access_key, slen + 1);
    unsigned char k1[32], k2[32], sig[32];
    hmac(k1, k0, slen + 4, day, 8);
    free(k0);
    hmac(k2, k1, 32, key->region, strlen(key->region));
    hmac(k1, k2, 32, key->service, strlen(key->service));
    hmac(k2, k1, 32, "aws4_request", 12);
    hmac(sig, k2, 32, sts, (size_t)tn);
    char sig_hex[65];
    to_hex(sig_hex, sig, 32);

    int n = snprintf(out, cap,
                     "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                     key->access_key_id, scope, names.p, sig_hex);
    free(names.p);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}
