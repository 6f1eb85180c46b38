/*
 * check_pattern.c - the path-pattern grammar and its Redis glob translation.
 */
#include <string.h>

#include "common/pattern.h"
#include "tc_test.h"

static int m(const char *pat, const char *key)
{
    ck_assert_int_eq(tc__pattern_check(NULL, pat, strlen(pat)), TC_OK);
    return tc__pattern_match(pat, strlen(pat), key, strlen(key));
}

START_TEST(test_cloudfront_forms)
{
    ck_assert(m("/images/*", "/images/logo.png"));
    ck_assert(m("/images/*", "/images/a/b/c.png"));   /* '*' crosses '/', as in CloudFront */
    ck_assert(m("/images/*", "/images/"));
    ck_assert(!m("/images/*", "/images"));
    ck_assert(!m("/images/*", "/img/logo.png"));
    ck_assert(m("/*", "/anything/at/all"));
    ck_assert(m("*", "x"));
    ck_assert(m("/index.html", "/index.html"));
    ck_assert(!m("/index.html", "/index.htm"));
    ck_assert(!m("/index.html", "/index.html2"));
    ck_assert(!m("/Images/*", "/images/a"));           /* case-sensitive */
}
END_TEST

START_TEST(test_wildcards_anywhere)
{
    ck_assert(m("/v?/logo", "/v2/logo"));
    ck_assert(!m("/v?/logo", "/v10/logo"));
    ck_assert(m("/*/logo.png", "/static/v3/logo.png"));
    ck_assert(m("*.css", "/a/b/site.css"));
    ck_assert(!m("*.css", "/a/b/site.css.map"));
    ck_assert(m("/a*b*c", "/aXXbYYc"));
    ck_assert(m("/a*b*c", "/abc"));
    ck_assert(!m("/a*b*c", "/aXXcYYb"));
    ck_assert(m("**", ""));
    ck_assert(m("a**b", "ab"));
    ck_assert(m("?*", "z"));
    ck_assert(!m("?*", ""));
    /* Backtracking: the first '*' must not swallow what the rest needs. */
    ck_assert(m("*aab", "aaaab"));
    ck_assert(m("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaab"));
    ck_assert(!m("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaa"));
}
END_TEST

START_TEST(test_escapes)
{
    ck_assert(m("/a\\*b", "/a*b"));
    ck_assert(!m("/a\\*b", "/aXb"));
    ck_assert(m("/q\\?", "/q?"));
    ck_assert(!m("/q\\?", "/qx"));
    ck_assert(m("/back\\\\slash", "/back\\slash"));
    ck_assert(tc__pattern_is_literal("/a\\*b", 5));
    ck_assert(!tc__pattern_is_literal("/a*b", 4));
    ck_assert(!tc__pattern_is_literal("/a?b", 4));
}
END_TEST

START_TEST(test_check)
{
    char big[TC_KEY_MAX + 1];
    memset(big, '*', sizeof big);
    ck_assert_int_eq(tc__pattern_check(NULL, NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc__pattern_check(NULL, "", 0), TC_EINVAL);
    ck_assert_int_eq(tc__pattern_check(NULL, big, sizeof big), TC_EINVAL);
    ck_assert_int_eq(tc__pattern_check(NULL, "a\0*", 3), TC_EINVAL);
    ck_assert_int_eq(tc__pattern_check(NULL, "/abc\\", 5), TC_EINVAL);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "backslash"));
    ck_assert_int_eq(tc__pattern_check(NULL, big, TC_KEY_MAX), TC_OK);
}
END_TEST

START_TEST(test_redis_glob)
{
    char out[64];
    size_t n = tc__pattern_to_redis_glob(out, sizeof out, "tc:", 3, "/images/*", 9);
    ck_assert_str_eq(out, "tc:/images/*");
    ck_assert_uint_eq(n, strlen(out));
    /* Redis glob syntax in the namespace or in literal bytes is escaped, ours is kept. */
    tc__pattern_to_redis_glob(out, sizeof out, "a[1]*:", 6, "/x[y]^?\\*", 9);
    ck_assert_str_eq(out, "a\\[1\\]\\*:/x\\[y\\]\\^?\\*");
    ck_assert_uint_eq(tc__pattern_to_redis_glob(out, 5, "tc:", 3, "/images/*", 9), 0);
}
END_TEST

Suite *pattern_suite(void)
{
    Suite *s = suite_create("pattern");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_cloudfront_forms);
    tcase_add_test(tc, test_wildcards_anywhere);
    tcase_add_test(tc, test_escapes);
    tcase_add_test(tc, test_check);
    tcase_add_test(tc, test_redis_glob);
    suite_add_tcase(s, tc);
    return s;
}
