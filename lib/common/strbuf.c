/*
 * strbuf.c - the growable string of internal.h (tc__strbuf): header blocks, stats, test output.
 */
#include "common/internal.h"

#include <stdlib.h>
#include <string.h>

/* Grows to twice what is needed, so that n appends of small pieces cost O(n) copies. A size that
 * would overflow is a failed allocation like any other. */
void tc__strbuf_add(tc__strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (n > SIZE_MAX / 2 - b->len - 1) {
        b->failed = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

