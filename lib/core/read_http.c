/*
 * read_http.c - tc_get_http: the read path with the record's state, Age and header block.
 */
#include "core/handle.h"
#include "http/http_headers.h"
#include "http/http_policy.h"

#include <stdlib.h>
#include <string.h>

int tc_get_http(void **out, size_t *out_len, unsigned *out_state, int64_t *out_age_s,
                char **out_headers, tc_cache *c, const char *key, size_t key_len,
                unsigned flags)
{
    if (out_state != NULL)
        *out_state = 0;
    if (out_age_s != NULL)
        *out_age_s = 0;
    if (out_headers != NULL)
        *out_headers = NULL;
    int rc = tc__begin_get(out, out_len, c, "get_http", key, key_len);
    if (rc == TC_OK && (flags & ~(TC_HTTP_ONLY_IF_CACHED | TC_HTTP_SPLIT_STALE)))
        return tc__err(c, TC_EINVAL, "get_http: unknown flags 0x%x", flags);
    if (rc != TC_OK)
        return rc;
    tc__reader r = {.c = c, .flags = flags};
    unsigned source = 0;
    rc = tc__read_through(c, key, key_len, &r, &source);
    int64_t age_s = 0;
    char *headers = NULL;
    tc__rec rec;
    if (rc == TC_OK) {
        int http = r.rec != NULL && tc__rec_decode(&rec, r.rec, r.rec_len) == TC_OK &&
                   rec.kind == TC__REC_HTTP;
        if (http)
            age_s = tc__http_age_s(&rec, tc__wall_ms());
        headers = tc__http_block(http ? &rec : NULL, age_s);
        if (headers == NULL)
            rc = tc__err(c, TC_ENOMEM, "get_http: out of memory for the headers");
    }
    tc__reader_done(&r);
    if (rc != TC_OK) {
        free(r.copy);
        return rc;
    }
    *out = r.copy;
    *out_len = r.len;
    if (out_state != NULL)
        *out_state = r.state;
    if (out_age_s != NULL)
        *out_age_s = age_s;
    if (out_headers != NULL)
        *out_headers = headers;
    else
        free(headers);
    return TC_OK;
}
