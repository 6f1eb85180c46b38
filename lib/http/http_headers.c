/*
 * http_headers.c - header lines in (tc_put_http) and out (tc_get_http); see http_headers.h.
 */
#include "http/http_headers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Indexed by TC__H_*. */
static const char *const field_names[TC__H_COUNT] = {
    "cache-control", "expires", "date", "age", "etag", "last-modified", "surrogate-key",
};

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Splits a "Name: value" line (a trailing CRLF is dropped); 0 if it has no ':' or holds a
 * control byte other than HTAB: a CR or LF inside would come back out of tc_get_http as a
 * header line of its own (response splitting). */
static int split_line(const char *line, const char **name, size_t *name_len, const char **v,
                      size_t *v_len)
{
    const char *colon = strchr(line, ':');
    if (colon == NULL)
        return 0;
    const char *n = line, *n_end = colon;
    while (n < n_end && is_ows(*n))
        n++;
    while (n_end > n && is_ows(n_end[-1]))
        n_end--;
    const char *p = colon + 1, *p_end = colon + strlen(colon);
    while (p < p_end && is_ows(*p))
        p++;
    while (p_end > p && (is_ows(p_end[-1]) || p_end[-1] == '\r' || p_end[-1] == '\n'))
        p_end--;
    for (const char *q = line; q < p_end; q++) {
        unsigned char ch = (unsigned char)*q;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    *name = n;
    *name_len = (size_t)(n_end - n);
    *v = p;
    *v_len = (size_t)(p_end - p);
    return 1;
}

static int tag_too_long(void *ctx, const char *tag, size_t tag_len)
{
    return tag_len > TC_KEY_MAX;
}

/* The fields lie in buf one after the other, each field's lines joined. */
int tc__http_fields(const void *owner, const char *what, const char *const *headers, size_t n,
                    char *buf, const char **val, size_t *len)
{
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name, *v;
        size_t nl, vl;
        if (headers[i] == NULL)
            return tc__err(owner, TC_EINVAL, "%s: headers[%zu] is NULL", what, i);
        if (!split_line(headers[i], &name, &nl, &v, &vl))
            return tc__err(owner, TC_EINVAL,
                           "%s: headers[%zu] has no ':' or holds a control character", what, i);
    }
    for (int f = 0; f < TC__H_COUNT; f++) {
        val[f] = NULL;
        len[f] = 0;
        const char *sep = f == TC__H_TAGS ? " " : ", ";
        for (size_t i = 0; i < n; i++) {
            const char *name, *v;
            size_t nl, vl;
            split_line(headers[i], &name, &nl, &v, &vl);
            if (nl != strlen(field_names[f]) || strncasecmp(name, field_names[f], nl) != 0)
                continue;
            if (val[f] != NULL && (f == TC__H_ETAG || f == TC__H_LM)) {
                /* One value each: the last line wins (a joined list would be no ETag). */
                val[f] = NULL;
                len[f] = 0;
            }
            size_t sl = val[f] != NULL ? strlen(sep) : 0;
            if (used + sl + vl > TC__HTTP_FIELDS_MAX)
                return tc__err(owner, TC_EINVAL, "%s: headers over %d bytes", what,
                               TC__HTTP_FIELDS_MAX);
            if (val[f] == NULL)
                val[f] = buf + used;
            memcpy(buf + used, sep, sl);
            memcpy(buf + used + sl, v, vl);
            used += sl + vl;
            len[f] += sl + vl;
        }
    }
    if (tc__rec_each_tag(val[TC__H_TAGS], len[TC__H_TAGS], tag_too_long, NULL) != 0)
        return tc__err(owner, TC_EINVAL, "%s: a Surrogate-Key tag is over %d bytes", what,
                       TC_KEY_MAX);
    return TC_OK;
}

/* ---- the block tc_get_http returns ---------------------------------------------------------- */

/* "Name: value\r\n" appended to the block. */
static void sb_field(tc__strbuf *b, const char *name, const char *v, size_t n)
{
    if (n == 0)
        return;
    tc__strbuf_add(b, name, strlen(name));
    tc__strbuf_add(b, ": ", 2);
    tc__strbuf_add(b, v, n);
    tc__strbuf_add(b, "\r\n", 2);
}

char *tc__http_block(const tc__rec *rec, int64_t age_s)
{
    tc__strbuf h = {0};
    tc__strbuf_add(&h, "", 0);
    if (rec != NULL) {
        char age[32];
        int n = snprintf(age, sizeof age, "%lld", (long long)age_s);
        sb_field(&h, "Age", age, (size_t)n);
        sb_field(&h, "Cache-Control", rec->cache_control, rec->cache_control_len);
        sb_field(&h, "ETag", rec->etag, rec->etag_len);
        sb_field(&h, "Last-Modified", rec->last_modified, rec->last_modified_len);
    }
    if (h.failed) {
        free(h.p);
        return NULL;
    }
    return h.p;
}
