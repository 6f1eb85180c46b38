/*
 * http_headers.h - HTTP header lines in and out of the library: the fields tc_put_http reads
 * from a response's header lines, and the header block tc_get_http hands back. What the fields
 * mean (freshness, RFC 9111) is cache_control.h's; how a record keeps them is record.h's.
 * Pure functions; thread-safe.
 */
#ifndef TC_HTTP_HEADERS_H
#define TC_HTTP_HEADERS_H

#include "common/internal.h"
#include "common/record.h"

/* The fields tc_put_http reads, by index. */
enum { TC__H_CC, TC__H_EXPIRES, TC__H_DATE, TC__H_AGE, TC__H_ETAG, TC__H_LM, TC__H_TAGS,
       TC__H_COUNT };

/* The most bytes the fields may take together (the size of tc__http_fields's buffer). */
#define TC__HTTP_FIELDS_MAX (64 * 1024)

/* Gathers the fields from n header lines ("Name: value", a trailing CRLF allowed; names in any
 * case) into buf (TC__HTTP_FIELDS_MAX bytes): val[f] and len[f] (TC__H_COUNT of each) point
 * into buf, NULL and 0 for a field no line has. A field given on several lines is one list
 * (joined with ", "; Surrogate-Key tags with " "), except ETag and Last-Modified, where the last
 * line wins. TC_OK; TC_EINVAL with a message (owner's, each beginning with what) for a NULL
 * line, a line without ':' or holding a control character other than HTAB (it would come back
 * out of tc_get_http as a line of its own: response splitting), fields over
 * TC__HTTP_FIELDS_MAX bytes, or a Surrogate-Key tag over TC_KEY_MAX bytes. */
int tc__http_fields(const void *owner, const char *what, const char *const *headers, size_t n,
                    char *buf, const char **val, size_t *len);

/* The header block of a record: "Age: <age_s>\r\n", then Cache-Control, ETag and Last-Modified
 * for those the record has, each "Name: value\r\n"; "" for rec NULL (a plain value). Allocated
 * (free()), NULL when out of memory. */
char *tc__http_block(const tc__rec *rec, int64_t age_s);

#endif
