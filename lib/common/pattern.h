// pattern.h - path patterns for invalidation, as `aws cloudfront create-invalidation --paths`
// takes them, extended (line comments here: the examples contain slash-star):
//
//   *     any run of bytes, '/' included, possibly empty   /images/*  matches /images/a/b.png
//   ?     exactly one byte                                 /v?/logo   matches /v2/logo
//   \c    the byte c itself (\*, \?, \\)                   /a\*b      matches only /a*b
//   any other byte matches itself; matching is case-sensitive, as CloudFront's is.
//
// A pattern is 1..TC_KEY_MAX bytes with no NUL byte and no dangling final backslash.
#ifndef TC_PATTERN_H
#define TC_PATTERN_H

#include "common/internal.h"

/* TC_OK, or TC_EINVAL with a message naming the problem. */
int tc__pattern_check(const void *owner, const char *pat, size_t pat_len);

/* 1 if key matches the (checked) pattern, else 0. Linear in practice: one backtrack point
 * (the last '*'), O(len(pat) * len(key)) at worst. */
int tc__pattern_match(const char *pat, size_t pat_len, const char *key, size_t key_len);

/* 1 if the pattern has no wildcard (it names one key), else 0. */
int tc__pattern_is_literal(const char *pat, size_t pat_len);

/* Writes prefix + pattern as a Redis glob (for SCAN MATCH) into out, NUL-terminated: bytes of
 * the prefix and literal bytes of the pattern that Redis would read as glob syntax (* ? [ ] \ ^)
 * are escaped. Returns the length written, or 0 if it does not fit in size. */
size_t tc__pattern_to_redis_glob(char *out, size_t size, const char *prefix, size_t prefix_len,
                                 const char *pat, size_t pat_len);

#endif
