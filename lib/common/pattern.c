/*
 * pattern.c - path patterns (see pattern.h for the grammar).
 */
#include "common/pattern.h"

#include <string.h>

int tc__pattern_check(const void *owner, const char *pat, size_t pat_len)
{
    if (pat == NULL)
        return tc__err(owner, TC_EINVAL, "pattern is NULL");
    if (pat_len == 0 || pat_len > TC_KEY_MAX)
        return tc__err(owner, TC_EINVAL, "pattern is %zu bytes (1 .. %d)", pat_len, TC_KEY_MAX);
    if (memchr(pat, '\0', pat_len) != NULL)
        return tc__err(owner, TC_EINVAL, "pattern contains a NUL byte");
    for (size_t i = 0; i < pat_len; i++) {
        if (pat[i] == '\\') {
            if (i + 1 == pat_len)
                return tc__err(owner, TC_EINVAL, "pattern ends with a lone backslash");
            i++;
        }
    }
    return TC_OK;
}

int tc__pattern_is_literal(const char *pat, size_t pat_len)
{
    for (size_t i = 0; i < pat_len; i++) {
        if (pat[i] == '*' || pat[i] == '?')
            return 0;
        if (pat[i] == '\\')
            i++;
    }
    return 1;
}

int tc__pattern_match(const char *pat, size_t pat_len, const char *key, size_t key_len)
{
    /* The classic greedy matcher: on a mismatch, go back to the last '*' and let it swallow one
     * more byte. Earlier stars never need revisiting, since the last one can absorb whatever
     * they would have, so this is O(pat_len * key_len) at worst with no recursion. */
    size_t p = 0, k = 0;
    size_t star_p = SIZE_MAX, star_k = 0;
    while (k < key_len) {
        if (p < pat_len && pat[p] == '*') {
            star_p = ++p;
            star_k = k;
            continue;
        }
        if (p < pat_len) {
            char want = pat[p];
            size_t step = 1;
            int any = 0;
            if (want == '?') {
                any = 1;
            } else if (want == '\\') {
                want = pat[p + 1]; /* checked: never dangling */
                step = 2;
            }
            if (any || want == key[k]) {
                p += step;
                k++;
                continue;
            }
        }
        if (star_p == SIZE_MAX)
            return 0;
        p = star_p;
        k = ++star_k;
    }
    while (p < pat_len && pat[p] == '*')
        p++;
    return p == pat_len;
}

static int redis_special(char c)
{
    return c == '*' || c == '?' || c == '[' || c == ']' || c == '\\' || c == '^';
}

size_t tc__pattern_to_redis_glob(char *out, size_t size, const char *prefix, size_t prefix_len,
                                 const char *pat, size_t pat_len)
{
    size_t n = 0;
#define PUT(c)                                                                                 \
    do {                                                                                       \
        if (n + 1 >= size)                                                                     \
            return 0;                                                                          \
        out[n++] = (c);                                                                        \
    } while (0)
    for (size_t i = 0; i < prefix_len; i++) {
        if (redis_special(prefix[i]))
            PUT('\\');
        PUT(prefix[i]);
    }
    for (size_t i = 0; i < pat_len; i++) {
        char c = pat[i];
        if (c == '*' || c == '?') {
            PUT(c);
            continue;
        }
        if (c == '\\')
            c = pat[++i];
        if (redis_special(c))
            PUT('\\');
        PUT(c);
    }
#undef PUT
    if (size == 0)
        return 0;
    out[n] = '\0';
    return n;
}
