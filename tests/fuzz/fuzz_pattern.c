/*
 * fuzz_pattern.c - libFuzzer target for lib/common/pattern.c.
 *
 * The input is split at its first '\n' into a pattern and a key: "/img/a*\n/img/a.png".
 * Without a '\n' the whole input is both. So corpus files are readable text.
 *
 * Besides the sanitizers, it checks invariants and abort()s when one breaks, so the replay
 * driver (tests/fuzz/replay.c) fails too without any sanitizer:
 *  - tc__pattern_check accepts exactly 1..TC_KEY_MAX bytes with no NUL and no dangling final
 *    backslash (TC_EINVAL and a message otherwise);
 *  - tc__pattern_is_literal is 1 exactly when no unescaped '*' or '?' is present;
 *  - tc__pattern_match agrees with a plain dynamic-programming matcher written here;
 *  - a literal pattern matches its unescaped text and no other key; a pattern without special
 *    bytes matches itself; "*" and "**" match every key, and as many '?' as the key has bytes;
 *  - if P matches K, then P + "*" matches K + any suffix and "*" + P matches any prefix + K;
 *    a match needs as many key bytes as P has non-star units (exactly as many without a star);
 *  - tc__pattern_to_redis_glob writes the escaped prefix and pattern, NUL-terminated, within
 *    size (a buffer of exactly length + 1 is enough, one byte less gives 0), with every
 *    literal * ? [ ] \ ^ escaped, and the glob, read as Redis reads one, matches prefix + key
 *    exactly when the pattern matches key.
 * pattern.h documents no size-query form (out NULL, size 0) for tc__pattern_to_redis_glob, so
 * none is called; a worst-case buffer is 2 * (prefix_len + pat_len) + 1 bytes, since every byte
 * or escape pair of either becomes at most two bytes.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ilib \
 *            tests/fuzz/fuzz_pattern.c lib/common/pattern.c lib/common/error.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* The reference matcher works on tokens: a byte 0..255, or one of these. */
#define TOK_STAR (-1)
#define TOK_ANY (-2)

/* Above this many DP cells, the reference matcher is skipped (keeps the fuzzer fast); the
 * glob's check gets fewer, since its tokens are also compared with the pattern's one by one. */
#define DP_MAX (1u << 16)
#define DP_MAX_GLOB (1u << 13)

static void *xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    CHECK(p != NULL);
    return p;
}

/* Tokens of a checked pattern (pattern.h grammar); returns their count. */
static size_t tokenize_pattern(int *tok, const char *pat, size_t pat_len)
{
    size_t n = 0;
    for (size_t i = 0; i < pat_len; i++) {
        unsigned char c = (unsigned char)pat[i];
        if (c == '*')
            tok[n++] = TOK_STAR;
        else if (c == '?')
            tok[n++] = TOK_ANY;
        else if (c == '\\')
            tok[n++] = (unsigned char)pat[++i];
        else
            tok[n++] = c;
    }
    return n;
}

/* Tokens of a glob as Redis's stringmatchlen reads it, for the subset the converter may emit:
 * an unescaped '[' (a class), ']' or '^', or a dangling '\', breaks the converter's promise. */
static size_t tokenize_glob(int *tok, const char *g, size_t g_len)
{
    size_t n = 0;
    for (size_t i = 0; i < g_len; i++) {
        unsigned char c = (unsigned char)g[i];
        CHECK(c != '[' && c != ']' && c != '^');
        if (c == '*') {
            tok[n++] = TOK_STAR;
        } else if (c == '?') {
            tok[n++] = TOK_ANY;
        } else if (c == '\\') {
            CHECK(i + 1 < g_len);
            tok[n++] = (unsigned char)g[++i];
        } else {
            tok[n++] = c;
        }
    }
    return n;
}

/* Whether tokens match the whole key: row by row over the tokens, O(ntok * key_len). */
static int ref_match(const int *tok, size_t ntok, const char *key, size_t key_len)
{
    unsigned char *prev = xmalloc(key_len + 1), *cur = xmalloc(key_len + 1);
    memset(prev, 0, key_len + 1);
    prev[0] = 1;
    for (size_t t = 0; t < ntok; t++) {
        cur[0] = (unsigned char)(prev[0] && tok[t] == TOK_STAR);
        for (size_t j = 1; j <= key_len; j++) {
            if (tok[t] == TOK_STAR)
                cur[j] = (unsigned char)(prev[j] || cur[j - 1]);
            else if (tok[t] == TOK_ANY)
                cur[j] = prev[j - 1];
            else
                cur[j] = (unsigned char)(prev[j - 1] && (unsigned char)key[j - 1] == tok[t]);
        }
        unsigned char *swap = prev;
        prev = cur;
        cur = swap;
    }
    int r = prev[key_len];
    free(prev);
    free(cur);
    return r;
}

static int dp_ok(size_t ntok, size_t key_len, size_t max)
{
    return key_len < max && (ntok + 1) * (key_len + 1) <= max;
}

static int redis_special(unsigned char c)
{
    return c == '*' || c == '?' || c == '[' || c == ']' || c == '\\' || c == '^';
}

static int match(const char *pat, size_t pat_len, const char *key, size_t key_len)
{
    int r = tc__pattern_match(pat, pat_len, key, key_len);
    CHECK(r == 0 || r == 1);
    return r;
}

static void check_glob(const char *pat, size_t pat_len, const int *tok, size_t ntok,
                       const char *prefix, const char *key, size_t key_len, int matched)
{
    size_t prefix_len = strlen(prefix);
    size_t want = 0;
    for (size_t i = 0; i < prefix_len; i++)
        want += redis_special((unsigned char)prefix[i]) ? 2 : 1;
    for (size_t t = 0; t < ntok; t++)
        want += tok[t] < 0 ? 1 : redis_special((unsigned char)tok[t]) ? 2 : 1;

    size_t big = 2 * (prefix_len + pat_len) + 1;
    char *out = xmalloc(big);
    size_t n = tc__pattern_to_redis_glob(out, big, prefix, prefix_len, pat, pat_len);
    CHECK(n == want);
    CHECK(n > 0 && n < big);
    CHECK(out[n] == '\0');

    /* Exactly n + 1 bytes fit; n bytes do not (heap buffers of that size: ASan sees a write
     * past them). */
    char *exact = xmalloc(n + 1);
    CHECK(tc__pattern_to_redis_glob(exact, n + 1, prefix, prefix_len, pat, pat_len) == n);
    CHECK(memcmp(exact, out, n + 1) == 0);
    free(exact);
    char *small = xmalloc(n);
    CHECK(tc__pattern_to_redis_glob(small, n, prefix, prefix_len, pat, pat_len) == 0);
    free(small);
    char none[1];
    CHECK(tc__pattern_to_redis_glob(none, 0, prefix, prefix_len, pat, pat_len) == 0);

    /* The glob, as Redis reads it: the escaped prefix, then the pattern's own tokens. */
    int *gtok = xmalloc(n * sizeof *gtok);
    size_t ng = tokenize_glob(gtok, out, n);
    CHECK(ng == prefix_len + ntok);
    for (size_t i = 0; i < prefix_len; i++)
        CHECK(gtok[i] == (unsigned char)prefix[i]);
    CHECK(memcmp(gtok + prefix_len, tok, ntok * sizeof *tok) == 0);
    size_t full_len = prefix_len + key_len;
    if (dp_ok(ng, full_len, DP_MAX_GLOB)) {
        char *full = xmalloc(full_len);
        memcpy(full, prefix, prefix_len);
        if (key_len > 0)
            memcpy(full + prefix_len, key, key_len);
        CHECK(ref_match(gtok, ng, full, full_len) == matched);
        free(full);
    }
    free(gtok);
    free(out);
}

static void check_checked(const char *pat, size_t pat_len, const char *key, size_t key_len)
{
    int *tok = xmalloc(pat_len * sizeof *tok);
    size_t ntok = tokenize_pattern(tok, pat, pat_len);
    size_t stars = 0, specials = 0;
    for (size_t t = 0; t < ntok; t++)
        stars += tok[t] == TOK_STAR;
    for (size_t i = 0; i < pat_len; i++)
        specials += pat[i] == '*' || pat[i] == '?' || pat[i] == '\\';
    int literal = 1;
    for (size_t t = 0; t < ntok; t++)
        if (tok[t] < 0)
            literal = 0;
    CHECK(tc__pattern_is_literal(pat, pat_len) == literal);

    int m = match(pat, pat_len, key, key_len);
    if (dp_ok(ntok, key_len, DP_MAX))
        CHECK(ref_match(tok, ntok, key, key_len) == m);

    /* A match needs one key byte per non-star token; exactly that many without a star. */
    size_t units = ntok - stars;
    if (m)
        CHECK(key_len >= units && (stars > 0 || key_len == units));

    if (literal) {
        /* Names one key: its unescaped text. */
        char *text = xmalloc(ntok);
        for (size_t t = 0; t < ntok; t++)
            text[t] = (char)tok[t];
        CHECK(match(pat, pat_len, text, ntok) == 1);
        CHECK(m == (key_len == ntok && memcmp(key, text, ntok) == 0));
        free(text);
    }
    if (specials == 0) {
        CHECK(match(pat, pat_len, pat, pat_len) == 1);
        CHECK(m == (key_len == pat_len && memcmp(key, pat, pat_len) == 0));
    }

    /* P + "*" and "*" + P. The escapes of a checked P are paired, so the added star is a
     * wildcard, not an escaped byte. */
    char *star_after = xmalloc(pat_len + 1), *star_before = xmalloc(pat_len + 1);
    memcpy(star_after, pat, pat_len);
    star_after[pat_len] = '*';
    star_before[0] = '*';
    memcpy(star_before + 1, pat, pat_len);
    CHECK(match(star_after, pat_len + 1, key, key_len) >= m);
    CHECK(match(star_before, pat_len + 1, key, key_len) >= m);
    if (m) {
        static const char *const affixes[] = {"x", "/a/b.png", "*?\\", "\n"};
        size_t cap = 2 * key_len + 16;
        char *buf = xmalloc(cap);
        for (size_t i = 0; i < sizeof affixes / sizeof affixes[0]; i++) {
            size_t alen = strlen(affixes[i]);
            memcpy(buf, key, key_len);
            memcpy(buf + key_len, affixes[i], alen);
            CHECK(match(star_after, pat_len + 1, buf, key_len + alen) == 1);
            memcpy(buf, affixes[i], alen);
            memcpy(buf + alen, key, key_len);
            CHECK(match(star_before, pat_len + 1, buf, key_len + alen) == 1);
        }
        /* The key itself as the suffix (and a NUL byte), and as the prefix. */
        memcpy(buf, key, key_len);
        memcpy(buf + key_len, key, key_len);
        buf[2 * key_len] = '\0';
        CHECK(match(star_after, pat_len + 1, buf, 2 * key_len + 1) == 1);
        CHECK(match(star_before, pat_len + 1, buf, 2 * key_len) == 1);
        free(buf);
    }
    free(star_after);
    free(star_before);

    static const char *const prefixes[] = {"", "tc:", "a[1]*?^\\:"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        check_glob(pat, pat_len, tok, ntok, prefixes[i], key, key_len, m);
    free(tok);
}

static void check_any_key(const char *key, size_t key_len)
{
    CHECK(match("*", 1, key, key_len) == 1);
    CHECK(match("**", 2, key, key_len) == 1);
    CHECK(match("?", 1, key, key_len) == (key_len == 1));
    if (key_len <= TC_KEY_MAX) {
        char q[TC_KEY_MAX + 1];
        memset(q, '?', key_len + 1);
        if (key_len > 0)
            CHECK(match(q, key_len, key, key_len) == 1);
        CHECK(match(q, key_len + 1, key, key_len) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    if (s == NULL)
        s = "";
    const char *nl = memchr(s, '\n', size);
    const char *pat = s, *key = s;
    size_t pat_len = size, key_len = size;
    if (nl != NULL) {
        pat_len = (size_t)(nl - s);
        key = nl + 1;
        key_len = size - pat_len - 1;
    }

    int valid = pat_len >= 1 && pat_len <= TC_KEY_MAX && memchr(pat, '\0', pat_len) == NULL;
    if (valid) {
        size_t i = 0;
        while (i < pat_len && valid) {
            if (pat[i] == '\\' && i + 1 == pat_len)
                valid = 0;
            i += pat[i] == '\\' ? 2 : 1;
        }
    }
    int rc = tc__pattern_check(NULL, pat, pat_len);
    CHECK(rc == TC_OK || rc == TC_EINVAL);
    CHECK((rc == TC_OK) == valid);
    if (rc != TC_OK)
        CHECK(tc_errmsg(NULL)[0] != '\0');
    /* Safe on any bytes: it only looks inside pat_len. */
    int lit = tc__pattern_is_literal(pat, pat_len);
    CHECK(lit == 0 || lit == 1);

    check_any_key(key, key_len);
    if (rc == TC_OK)
        check_checked(pat, pat_len, key, key_len);
    return 0;
}
