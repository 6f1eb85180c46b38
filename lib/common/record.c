/*
 * record.c - the caches' record format (see record.h).
 */
#include "common/record.h"

#include <string.h>

#define HTTP_FIXED (1 + 1 + 5 * 8)

static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

size_t tc__rec_size(const tc__rec *r)
{
    if (r->kind != TC__REC_HTTP)
        return add_sat(1, r->value_len);
    size_t n = HTTP_FIXED + 4 * 4;
    n = add_sat(n, r->etag_len);
    n = add_sat(n, r->last_modified_len);
    n = add_sat(n, r->cache_control_len);
    n = add_sat(n, r->tags_len);
    return add_sat(n, r->value_len);
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t len)
{
    /* The caller (tc_put_http) bounds every header to far below 4 GiB. */
    tc__put_be32(p, (uint32_t)len);
    if (len > 0)
        memcpy(p + 4, s, len);
    return p + 4 + len;
}

void tc__rec_encode(void *out, const tc__rec *r)
{
    unsigned char *p = out;
    if (r->kind != TC__REC_HTTP) {
        *p++ = TC__REC_PLAIN;
    } else {
        *p++ = TC__REC_HTTP;
        *p++ = (unsigned char)r->flags;
        tc__put_be64(p, (uint64_t)r->date_ms);
        tc__put_be64(p + 8, (uint64_t)r->fresh_until_ms);
        tc__put_be64(p + 16, (uint64_t)r->lifetime_ms);
        tc__put_be64(p + 24, (uint64_t)r->swr_ms);
        tc__put_be64(p + 32, (uint64_t)r->sie_ms);
        p += 40;
        p = put_str(p, r->etag, r->etag_len);
        p = put_str(p, r->last_modified, r->last_modified_len);
        p = put_str(p, r->cache_control, r->cache_control_len);
        p = put_str(p, r->tags, r->tags_len);
    }
    if (r->value_len > 0)
        memcpy(p, r->value, r->value_len);
}

static int get_str(const unsigned char **p, const unsigned char *end, const char **s,
                   size_t *len)
{
    if (end - *p < 4)
        return TC_EPROTO;
    uint32_t n = tc__get_be32(*p);
    *p += 4;
    if ((uint64_t)(end - *p) < n)
        return TC_EPROTO;
    *s = (const char *)*p;
    *len = n;
    *p += n;
    return TC_OK;
}

int tc__rec_decode(tc__rec *out, const void *data, size_t len)
{
    memset(out, 0, sizeof *out);
    if (data == NULL || len < 1)
        return TC_EPROTO;
    const unsigned char *p = data, *end = p + len;
    if (p[0] == TC__REC_PLAIN) {
        out->kind = TC__REC_PLAIN;
        out->value = p + 1;
        out->value_len = len - 1;
        return TC_OK;
    }
    if (p[0] != TC__REC_HTTP || len < HTTP_FIXED)
        return TC_EPROTO;
    out->kind = TC__REC_HTTP;
    out->flags = p[1];
    out->date_ms = (int64_t)tc__get_be64(p + 2);
    out->fresh_until_ms = (int64_t)tc__get_be64(p + 10);
    out->lifetime_ms = (int64_t)tc__get_be64(p + 18);
    out->swr_ms = (int64_t)tc__get_be64(p + 26);
    out->sie_ms = (int64_t)tc__get_be64(p + 34);
    if (out->lifetime_ms < 0 || out->swr_ms < 0 || out->sie_ms < 0)
        return TC_EPROTO;
    p += HTTP_FIXED;
    if (get_str(&p, end, &out->etag, &out->etag_len) != TC_OK ||
        get_str(&p, end, &out->last_modified, &out->last_modified_len) != TC_OK ||
        get_str(&p, end, &out->cache_control, &out->cache_control_len) != TC_OK ||
        get_str(&p, end, &out->tags, &out->tags_len) != TC_OK)
        return TC_EPROTO;
    out->value = p;
    out->value_len = (size_t)(end - p);
    return TC_OK;
}

int tc__rec_each_tag(const char *tags, size_t tags_len,
                     int (*fn)(void *ctx, const char *tag, size_t tag_len), void *ctx)
{
    size_t i = 0;
    while (i < tags_len) {
        while (i < tags_len && (tags[i] == ' ' || tags[i] == '\t'))
            i++;
        size_t start = i;
        while (i < tags_len && tags[i] != ' ' && tags[i] != '\t')
            i++;
        if (i > start) {
            int rc = fn(ctx, tags + start, i - start);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

int tc__rec_fresh(const tc__rec *r, int64_t now_ms, int *stale)
{
    *stale = TC__STALE_NO;
    if (r->kind != TC__REC_HTTP)
        return 1;
    if (!(r->flags & TC__REC_NO_CACHE) && now_ms < r->fresh_until_ms)
        return 1;
    if (r->flags & (TC__REC_MUST_REVALIDATE | TC__REC_NO_CACHE))
        return 0;
    /* Past fresh_until by how much; saturating, fresh_until may be far in the past. */
    int64_t late = r->fresh_until_ms < 0 && now_ms > INT64_MAX + r->fresh_until_ms
                       ? INT64_MAX
                       : now_ms - r->fresh_until_ms;
    if (late < r->swr_ms)
        *stale = TC__STALE_SWR;
    else if (late < r->sie_ms)
        *stale = TC__STALE_SIE;
    return 0;
}
