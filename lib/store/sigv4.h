/*
 * sigv4.h - AWS Signature Version 4 for one HTTP request (the Authorization header's value):
 * the canonical request, the string to sign, the derived key and the signature. Pure: no
 * clock, no network; the caller passes the date, so the AWS test suite's vectors pin it down.
 */
#ifndef TC_SIGV4_H
#define TC_SIGV4_H

#include <stddef.h>

/* One header field or query parameter, as the caller has it (raw, not yet encoded). */
typedef struct tc__sigv4_pair {
    const char *name, *value;
} tc__sigv4_pair;

typedef struct tc__sigv4_req {
    const char *method;           /* "GET", "POST" */
    const char *path;             /* raw path ("/", "/a b"): encoded here, '/' kept */
    const tc__sigv4_pair *query;  /* raw names and values; NULL when nquery is 0 */
    size_t nquery;
    const tc__sigv4_pair *headers; /* every header to sign, host and x-amz-date included */
    size_t nheaders;
    const void *body;
    size_t body_len;
} tc__sigv4_req;

typedef struct tc__sigv4_key {
    const char *access_key_id, *secret_access_key;
    const char *region, *service;
} tc__sigv4_key;

/* Longest Authorization value written (a scope, up to 32 signed header names, a signature). */
#define TC__SIGV4_AUTH_MAX 2048

/* Writes the Authorization header's value for req, signed at amz_date ("20150830T123600Z",
 * which must also be the request's x-amz-date header) into out (cap bytes, NUL-ended).
 * 0, or -1 when an argument is out of range (a header value with a control character, more
 * headers than fit, out too small, no memory); out is then "". */
int tc__sigv4_authorization(char *out, size_t cap, const tc__sigv4_key *key,
                            const char *amz_date, const tc__sigv4_req *req);

/* The lowercase hex SHA-256 of data into hex (65 bytes). */
void tc__sigv4_sha256_hex(char hex[65], const void *data, size_t len);

#endif
