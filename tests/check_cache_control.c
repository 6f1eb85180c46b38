/*
 * check_cache_control.c - Cache-Control parsing, HTTP-dates, Age, and shared-cache freshness
 * (lib/http/cache_control.c). Section numbers are RFC 9111 unless another RFC is named.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/cache_control.h"
#include "tc_test.h"

/* 2023-11-14T22:13:20Z, the clock of most tests. */
#define NOW_S  INT64_C(1700000000)
#define NOW_MS (NOW_S * 1000)
/* Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example. */
#define EX_S INT64_C(784111777)

/* ---- helpers ------------------------------------------------------------------------------ */

/* Parses exactly n bytes from a heap copy of that size, so ASan catches any read past len. */
static tc__cc parse_n(const char *s, size_t n)
{
    tc__cc cc;
    char *copy = malloc(n > 0 ? n : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, n);
    ck_assert_int_eq(tc__cc_parse(&cc, copy, n), TC_OK);
    free(copy);
    return cc;
}
/* Literals keep their embedded NULs: the length comes from sizeof. */
#define PARSE(lit) parse_n(lit, sizeof(lit) - 1)

static int date_n(int64_t *out, const char *s, size_t n, int64_t now_s)
{
    char *copy = malloc(n > 0 ? n : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, n);
    int rc = tc__http_date_parse(out, copy, n, now_s);
    free(copy);
    return rc;
}

static void date_ok_at(const char *s, size_t n, int64_t now_s, int64_t expect)
{
    int64_t t = 12345;
    ck_assert_msg(date_n(&t, s, n, now_s) == TC_OK, "date '%.*s' rejected", (int)n, s);
    ck_assert_msg(t == expect, "date '%.*s': %lld, expected %lld", (int)n, s, (long long)t,
                  (long long)expect);
}

static void date_bad_n(const char *s, size_t n)
{
    int64_t t = 12345;
    ck_assert_msg(date_n(&t, s, n, NOW_S) == TC_EINVAL, "date '%.*s' accepted", (int)n, s);
    ck_assert_msg(t == 12345, "output changed on failure");
}
#define DATE_OK(lit, expect)        date_ok_at(lit, sizeof(lit) - 1, NOW_S, expect)
#define DATE_OK_AT(lit, now, expect) date_ok_at(lit, sizeof(lit) - 1, now, expect)
#define DATE_BAD(lit)               date_bad_n(lit, sizeof(lit) - 1)

/* Freshness from NUL-terminated headers (NULL: absent). */
static tc__freshness fresh_at(const char *cc, const char *expires, const char *date,
                              const char *age, int64_t request_ms, int64_t response_ms)
{
    tc__freshness f;
    ck_assert_int_eq(tc__freshness_compute(&f, cc, cc ? strlen(cc) : 0, expires,
                                           expires ? strlen(expires) : 0, date,
                                           date ? strlen(date) : 0, age, age ? strlen(age) : 0,
                                           request_ms, response_ms),
                     TC_OK);
    ck_assert_int_ge(f.lifetime_ms, 0);
    ck_assert_int_ge(f.age_ms, 0);
    ck_assert_int_ge(f.ttl_ms, 0);
    ck_assert_int_ge(f.swr_ms, 0);
    ck_assert_int_ge(f.sie_ms, 0);
    return f;
}

static tc__freshness fresh(const char *cc, const char *expires, const char *date, const char *age)
{
    return fresh_at(cc, expires, date, age, NOW_MS, NOW_MS);
}

/* The Date of NOW_S and a few offsets from it, as IMF-fixdates. */
#define D_NOW      "Tue, 14 Nov 2023 22:13:20 GMT"
#define D_NOW_M100 "Tue, 14 Nov 2023 22:11:40 GMT" /* NOW - 100 s */
#define D_NOW_P100 "Tue, 14 Nov 2023 22:15:00 GMT" /* NOW + 100 s */
#define D_NOW_P1H  "Tue, 14 Nov 2023 23:13:20 GMT" /* NOW + 3600 s */
#define D_NOW_P2H  "Wed, 15 Nov 2023 00:13:20 GMT" /* NOW + 7200 s */
#define D_NOW_M1H  "Tue, 14 Nov 2023 21:13:20 GMT" /* NOW - 3600 s */

/* ---- Cache-Control: directives ------------------------------------------------------------- */

static void assert_empty(tc__cc cc, unsigned flags)
{
    ck_assert_int_eq(cc.max_age, TC__CC_ABSENT);
    ck_assert_int_eq(cc.s_maxage, TC__CC_ABSENT);
    ck_assert_int_eq(cc.stale_while_revalidate, TC__CC_ABSENT);
    ck_assert_int_eq(cc.stale_if_error, TC__CC_ABSENT);
    ck_assert_uint_eq(cc.flags, flags);
}

START_TEST(test_cc_empty)
{
    tc__cc cc;
    ck_assert_int_eq(tc__cc_parse(&cc, NULL, 0), TC_OK);
    assert_empty(cc, 0);
    assert_empty(PARSE(""), 0);
    assert_empty(PARSE("   \t "), 0);
    /* Empty list elements are ignored, not malformed (RFC 9110 §5.6.1). */
    assert_empty(PARSE(","), 0);
    assert_empty(PARSE(" , ,\t,, ,"), 0);
}
END_TEST

START_TEST(test_cc_null_args)
{
    tc__cc cc;
    cc.flags = 77;
    ck_assert_int_eq(tc__cc_parse(NULL, "max-age=5", 9), TC_EINVAL);
    ck_assert_int_eq(tc__cc_parse(&cc, NULL, 5), TC_EINVAL);
    assert_empty(cc, 0);
}
END_TEST

START_TEST(test_cc_each_flag)
{
    static const struct {
        const char *text;
        unsigned flags;
    } cases[] = {
        {"no-store", TC__CC_NO_STORE},
        {"no-cache", TC__CC_NO_CACHE},
        {"private", TC__CC_PRIVATE},
        {"public", TC__CC_PUBLIC},
        {"must-revalidate", TC__CC_MUST_REVALIDATE},
        {"proxy-revalidate", TC__CC_PROXY_REVALIDATE},
        {"immutable", TC__CC_IMMUTABLE},
        {"no-cache=\"Set-Cookie\"", TC__CC_NO_CACHE | TC__CC_NO_CACHE_FIELDS},
        {"private=\"Authorization\"", TC__CC_PRIVATE | TC__CC_PRIVATE_FIELDS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_empty(parse_n(cases[i].text, strlen(cases[i].text)), cases[i].flags);
}
END_TEST

START_TEST(test_cc_delta_values)
{
    tc__cc cc = PARSE("max-age=3600");
    ck_assert_int_eq(cc.max_age, 3600);
    ck_assert_uint_eq(cc.flags, 0);
    ck_assert_int_eq(PARSE("max-age=0").max_age, 0);
    ck_assert_int_eq(PARSE("max-age=0060").max_age, 60);
    cc = PARSE("s-maxage=7, stale-while-revalidate=8, stale-if-error=9");
    ck_assert_int_eq(cc.max_age, TC__CC_ABSENT);
    ck_assert_int_eq(cc.s_maxage, 7);
    ck_assert_int_eq(cc.stale_while_revalidate, 8);
    ck_assert_int_eq(cc.stale_if_error, 9);
    ck_assert_uint_eq(cc.flags, 0);
}
END_TEST

START_TEST(test_cc_case_insensitive)
{
    tc__cc cc = PARSE("MAX-AGE=5, No-Store, PuBlIc, S-MAXAGE=7, Must-Revalidate, "
                      "PROXY-REVALIDATE, Immutable, Stale-While-Revalidate=3, STALE-IF-ERROR=4, "
                      "NO-CACHE, PRIVATE");
    ck_assert_int_eq(cc.max_age, 5);
    ck_assert_int_eq(cc.s_maxage, 7);
    ck_assert_int_eq(cc.stale_while_revalidate, 3);
    ck_assert_int_eq(cc.stale_if_error, 4);
    ck_assert_uint_eq(cc.flags, TC__CC_NO_STORE | TC__CC_PUBLIC | TC__CC_MUST_REVALIDATE |
                                    TC__CC_PROXY_REVALIDATE | TC__CC_IMMUTABLE |
                                    TC__CC_NO_CACHE | TC__CC_PRIVATE);
    /* A byte that would fold to '-' under a careless "| 0x20" ('\r' | 0x20 == '-') is not a
     * hyphen: it is not a tchar and ends the name. */
    assert_empty(PARSE("max\rage=5"), TC__CC_MALFORMED);
    assert_empty(PARSE("no\rstore"), TC__CC_MALFORMED);
    /* Near misses are other (unknown) directives. */
    assert_empty(PARSE("max-ages=5, maxage=5, no-stores, nostore, publics"), 0);
}
END_TEST

START_TEST(test_cc_whitespace)
{
    tc__cc cc = PARSE("  max-age = 60 ,\tpublic\t,s-maxage\t=\t5  ");
    ck_assert_int_eq(cc.max_age, 60);
    ck_assert_int_eq(cc.s_maxage, 5);
    ck_assert_uint_eq(cc.flags, TC__CC_PUBLIC);
    cc = PARSE("max-age=60,public");
    ck_assert_int_eq(cc.max_age, 60);
    ck_assert_uint_eq(cc.flags, TC__CC_PUBLIC);
}
END_TEST

START_TEST(test_cc_quoted)
{
    /* §5.2: "recipients ought to accept both forms". */
    tc__cc cc = PARSE("max-age=\"60\"");
    ck_assert_int_eq(cc.max_age, 60);
    ck_assert_uint_eq(cc.flags, 0);
    ck_assert_int_eq(PARSE("s-maxage = \"0\"").s_maxage, 0);
    ck_assert_int_eq(PARSE("max-age=\"6\\0\"").max_age, 60); /* quoted-pairs unescape */
    ck_assert_int_eq(PARSE("max-age=\"\"").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=\"6 0\"").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=\"-1\"").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=\" 60\"").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=\"60\"x").max_age, TC__CC_INVALID);
    ck_assert(PARSE("max-age=\"60\"x").flags & TC__CC_MALFORMED);
}
END_TEST

START_TEST(test_cc_repeated_identical)
{
    /* Identical repeats (a proxy adding its own copy) are harmless. */
    tc__cc cc = PARSE("max-age=60, max-age=60");
    ck_assert_int_eq(cc.max_age, 60);
    ck_assert_uint_eq(cc.flags, 0);
    cc = PARSE("max-age=60, max-age=\"60\", MAX-AGE=060");
    ck_assert_int_eq(cc.max_age, 60);
    ck_assert_uint_eq(cc.flags, 0);
    cc = PARSE("no-store, no-store, public, public");
    ck_assert_uint_eq(cc.flags, TC__CC_NO_STORE | TC__CC_PUBLIC);
    /* Two values past 2^31 are both "infinity" (§1.2.2): the same value. */
    ck_assert_int_eq(PARSE("max-age=99999999999, max-age=2147483648").max_age, TC__DELTA_MAX);
}
END_TEST

START_TEST(test_cc_repeated_conflicting)
{
    /* §4.2.1: "either the first occurrence should be used or the response should be considered
     * stale"; we take stale. */
    tc__cc cc = PARSE("max-age=60, max-age=120");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert(cc.flags & TC__CC_MALFORMED);
    /* Once invalid, a later matching value does not bring it back. */
    ck_assert_int_eq(PARSE("max-age=60, max-age=120, max-age=60").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=60, max-age=x").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=x, max-age=60").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("s-maxage=1, s-maxage=2").s_maxage, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("stale-while-revalidate=1, stale-while-revalidate=2")
                         .stale_while_revalidate,
                     TC__CC_INVALID);
    ck_assert_int_eq(PARSE("stale-if-error=1, stale-if-error=2").stale_if_error,
                     TC__CC_INVALID);
    /* A conflict in one directive leaves the others alone. */
    cc = PARSE("max-age=1, s-maxage=5, max-age=2");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert_int_eq(cc.s_maxage, 5);
}
END_TEST

START_TEST(test_cc_invalid_delta)
{
    static const char *const bad[] = {
        "max-age",       "max-age=",      "max-age =",    "max-age=-1",   "max-age=abc",
        "max-age=1.5",   "max-age=+5",    "max-age=0x10", "max-age=60abc", "max-age=1e3",
        "max-age=60;",   "max-age=6 0",   "max-age==60",  "max-age=\"60",  "max-age=60\"",
        "max-age=٣",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tc__cc cc = parse_n(bad[i], strlen(bad[i]));
        ck_assert_msg(cc.max_age == TC__CC_INVALID, "'%s' gave max-age %lld", bad[i],
                      (long long)cc.max_age);
        ck_assert_msg(cc.flags & TC__CC_MALFORMED, "'%s' not malformed", bad[i]);
    }
}
END_TEST

START_TEST(test_cc_huge_numbers)
{
    ck_assert_int_eq(PARSE("max-age=2147483647").max_age, 2147483647);
    ck_assert_int_eq(PARSE("max-age=2147483648").max_age, TC__DELTA_MAX);
    ck_assert_int_eq(PARSE("max-age=2147483649").max_age, TC__DELTA_MAX);
    ck_assert_int_eq(PARSE("max-age=18446744073709551617").max_age, TC__DELTA_MAX);
    ck_assert_int_eq(PARSE("s-maxage=\"99999999999999999999999999999999\"").s_maxage,
                     TC__DELTA_MAX);
    /* Leading zeros are not magnitude. */
    ck_assert_int_eq(PARSE("max-age=000000000000000000000000000000000000001").max_age, 1);

    char buf[1100];
    memcpy(buf, "max-age=", 8);
    memset(buf + 8, '9', 1000);
    tc__cc cc = parse_n(buf, 1008);
    ck_assert_int_eq(cc.max_age, TC__DELTA_MAX);
    ck_assert_uint_eq(cc.flags, 0);
}
END_TEST

START_TEST(test_cc_unknown_ignored)
{
    /* §5.2.3: unrecognized directives are ignored, with their arguments, whose quoted commas
     * do not split the list. */
    tc__cc cc = PARSE("foo, bar=baz, x-y=\"a, b, max-age=5, no-store\", max-age=10");
    ck_assert_int_eq(cc.max_age, 10);
    ck_assert_uint_eq(cc.flags, 0);
    /* Request directives and must-understand mean nothing to us here. */
    assert_empty(PARSE("max-stale=5, min-fresh=3, only-if-cached, must-understand, "
                       "no-transform"),
                 0);
    cc = PARSE("must-understand, no-store");
    ck_assert_uint_eq(cc.flags, TC__CC_NO_STORE);
}
END_TEST

START_TEST(test_cc_trailing_garbage)
{
    /* A directive hidden behind garbage is still seen; a value next to garbage is not
     * trusted. */
    tc__cc cc = PARSE("max-age=60 no-store");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert_uint_eq(cc.flags, TC__CC_NO_STORE | TC__CC_MALFORMED);
    cc = PARSE("no-store max-age=60");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert_uint_eq(cc.flags, TC__CC_NO_STORE | TC__CC_MALFORMED);
    /* Permissive directives need a clean element. */
    cc = PARSE("public max-age=60");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert_uint_eq(cc.flags, TC__CC_MALFORMED);
    assert_empty(PARSE("public junk"), TC__CC_MALFORMED);
    assert_empty(PARSE("immutable=1"), TC__CC_MALFORMED);
    assert_empty(PARSE("public=\"yes\""), TC__CC_MALFORMED);
    /* Restrictive ones apply anyway. */
    assert_empty(PARSE("no-store=1"), TC__CC_NO_STORE | TC__CC_MALFORMED);
    assert_empty(PARSE("no-store junk"), TC__CC_NO_STORE | TC__CC_MALFORMED);
    assert_empty(PARSE("must-revalidate=\"x\""), TC__CC_MUST_REVALIDATE | TC__CC_MALFORMED);
    assert_empty(PARSE("proxy-revalidate;"), TC__CC_PROXY_REVALIDATE | TC__CC_MALFORMED);
    assert_empty(PARSE("private=@"), TC__CC_PRIVATE | TC__CC_PRIVATE_FIELDS | TC__CC_MALFORMED);
    /* After the garbage's element ends at a ',', the next element is clean again. */
    cc = PARSE("max-age=60 @@@, s-maxage=5");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert_int_eq(cc.s_maxage, 5);
    cc = PARSE("public;, max-age=5");
    ck_assert_int_eq(cc.max_age, 5);
    ck_assert_uint_eq(cc.flags, TC__CC_MALFORMED);
    /* Trailing OWS and commas are not garbage. */
    cc = PARSE("max-age=5 , ,  ");
    ck_assert_int_eq(cc.max_age, 5);
    ck_assert_uint_eq(cc.flags, 0);
}
END_TEST

START_TEST(test_cc_junk_elements)
{
    tc__cc cc = PARSE("=5, max-age=5");
    ck_assert_int_eq(cc.max_age, 5);
    ck_assert_uint_eq(cc.flags, TC__CC_MALFORMED);
    cc = PARSE("\"quoted, with comma\", max-age=5");
    ck_assert_int_eq(cc.max_age, 5);
    ck_assert_uint_eq(cc.flags, TC__CC_MALFORMED);
    /* Junk that ends at whitespace taints the next element. */
    cc = PARSE("\"a, b\" max-age=5");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    assert_empty(PARSE("@@@ \x01\x02 \xff\xfe ;;; === \"\""), TC__CC_MALFORMED);
    assert_empty(PARSE("\""), TC__CC_MALFORMED);
    assert_empty(PARSE("=\"\\"), TC__CC_MALFORMED);
}
END_TEST

START_TEST(test_cc_embedded_nul)
{
    tc__cc cc = PARSE("max-age=60\0, no-store");
    ck_assert_int_eq(cc.max_age, TC__CC_INVALID);
    ck_assert_uint_eq(cc.flags, TC__CC_NO_STORE | TC__CC_MALFORMED);
    /* A NUL is not part of a name. */
    assert_empty(PARSE("no-\0store"), TC__CC_MALFORMED);
    assert_empty(PARSE("\0\0\0"), TC__CC_MALFORMED);
    assert_empty(PARSE("public\0"), TC__CC_MALFORMED);
    ck_assert_int_eq(PARSE("max-age=\"6\0\"").max_age, TC__CC_INVALID);
    /* NUL before the value: the parser does not stop at it. */
    cc = PARSE("\0, max-age=7");
    ck_assert_int_eq(cc.max_age, 7);
}
END_TEST

START_TEST(test_cc_unterminated_quote)
{
    /* The unterminated string swallows the rest: restrictive no-cache still applies. */
    tc__cc cc = PARSE("no-cache=\"Set-Cookie, max-age=60");
    ck_assert_int_eq(cc.max_age, TC__CC_ABSENT);
    ck_assert_uint_eq(cc.flags, TC__CC_NO_CACHE | TC__CC_NO_CACHE_FIELDS | TC__CC_MALFORMED);
    ck_assert_int_eq(PARSE("max-age=\"60").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=\"60\\\"").max_age, TC__CC_INVALID);
    ck_assert_int_eq(PARSE("max-age=\"6\\").max_age, TC__CC_INVALID);
}
END_TEST

START_TEST(test_cc_qualified_forms)
{
    tc__cc cc = PARSE("no-cache=\"Set-Cookie, X-Foo\", max-age=60");
    ck_assert_int_eq(cc.max_age, 60);
    ck_assert_uint_eq(cc.flags, TC__CC_NO_CACHE | TC__CC_NO_CACHE_FIELDS);
    assert_empty(PARSE("no-cache=Set-Cookie"), TC__CC_NO_CACHE | TC__CC_NO_CACHE_FIELDS);
    assert_empty(PARSE("private=\"\""), TC__CC_PRIVATE | TC__CC_PRIVATE_FIELDS);
    assert_empty(PARSE("private=\"X-A\\\"B\""), TC__CC_PRIVATE | TC__CC_PRIVATE_FIELDS);
    /* Unqualified and qualified together: both flags. */
    assert_empty(PARSE("private, private=\"X\""), TC__CC_PRIVATE | TC__CC_PRIVATE_FIELDS);
}
END_TEST

START_TEST(test_cc_never_reads_past_len)
{
    /* The length ends the value, not a NUL: "max-age=600" cut after 9 bytes is max-age=6. */
    ck_assert_int_eq(parse_n("max-age=600", 9).max_age, 6);
    ck_assert_int_eq(parse_n("max-age=600", 8).max_age, TC__CC_INVALID);
    ck_assert_int_eq(parse_n("max-age=\"600\"", 12).max_age, TC__CC_INVALID);
    assert_empty(parse_n("no-store", 7), 0); /* "no-stor" is unknown */
    assert_empty(parse_n("no-store", 0), 0);
}
END_TEST

START_TEST(test_cc_long_input)
{
    size_t n = 1 << 16;
    char *buf = malloc(n + 16);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < n; i += 2)
        memcpy(buf + i, ", ", 2);
    memcpy(buf + n, "max-age=1", 9);
    tc__cc cc = parse_n(buf, n + 9);
    ck_assert_int_eq(cc.max_age, 1);
    ck_assert_uint_eq(cc.flags, 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = '"';
    cc = parse_n(buf, n);
    ck_assert_uint_eq(cc.flags, TC__CC_MALFORMED);
    free(buf);
}
END_TEST

/* ---- HTTP-date ----------------------------------------------------------------------------- */

START_TEST(test_date_imf_fixdate)
{
    DATE_OK("Sun, 06 Nov 1994 08:49:37 GMT", EX_S);
    /* §4.2: a cache recipient SHOULD match case-insensitively. */
    DATE_OK("sun, 06 nov 1994 08:49:37 gmt", EX_S);
    DATE_OK("SUN, 06 NOV 1994 08:49:37 GMT", EX_S);
    /* OWS around the field value. */
    DATE_OK(" \tSun, 06 Nov 1994 08:49:37 GMT\t ", EX_S);
    DATE_OK("Thu, 01 Jan 1970 00:00:00 GMT", 0);
    DATE_OK("Wed, 31 Dec 1969 23:59:59 GMT", -1);
    DATE_OK("Fri, 31 Dec 1999 23:59:59 GMT", INT64_C(946684799));
    DATE_OK("Tue, 19 Jan 2038 03:14:07 GMT", INT64_C(2147483647));
    DATE_OK("Tue, 19 Jan 2038 03:14:08 GMT", INT64_C(2147483648));
    DATE_OK("Fri, 31 Dec 9999 23:59:59 GMT", INT64_C(253402300799));
    DATE_OK("Sat, 01 Jan 0000 00:00:00 GMT", INT64_C(-62167219200));
    DATE_OK("Mon, 01 Mar 1900 00:00:00 GMT", INT64_C(-2203891200));
    DATE_OK("Mon, 01 Mar 2100 00:00:00 GMT", INT64_C(4107542400));
    /* Every month name. */
    static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const int64_t starts[12] = {1704067200, 1706745600, 1709251200, 1711929600,
                                       1714521600, 1717200000, 1719792000, 1722470400,
                                       1725148800, 1727740800, 1730419200, 1733011200};
    for (int m = 0; m < 12; m++) {
        char buf[40];
        memcpy(buf, "Mon, 01 Xxx 2024 00:00:00 GMT", 30);
        memcpy(buf + 8, months[m], 3);
        date_ok_at(buf, 29, NOW_S, starts[m]);
    }
}
END_TEST

START_TEST(test_date_weekday_not_checked)
{
    /* The day name must be one, but is not checked against the date (it is redundant). */
    DATE_OK("Mon, 06 Nov 1994 08:49:37 GMT", EX_S);
    DATE_OK("Monday, 06-Nov-94 08:49:37 GMT", EX_S);
    DATE_OK("Fri Nov  6 08:49:37 1994", EX_S);
    DATE_BAD("Xyz, 06 Nov 1994 08:49:37 GMT");
    DATE_BAD("Sundae, 06-Nov-94 08:49:37 GMT");
}
END_TEST

START_TEST(test_date_rfc850)
{
    DATE_OK("Sunday, 06-Nov-94 08:49:37 GMT", EX_S);
    DATE_OK("sunday, 06-nov-94 08:49:37 gmt", EX_S);
    DATE_OK("Wednesday, 09-Nov-94 08:49:37 GMT", EX_S + 3 * 86400);
    /* RFC 9110 §5.6.7: more than 50 years in the future means the previous century. */
    int64_t at_2044 = INT64_C(2335219200), at_2045 = INT64_C(2366841600);
    DATE_OK_AT("Sunday, 06-Nov-94 08:49:37 GMT", at_2044, EX_S);
    DATE_OK_AT("Sunday, 06-Nov-94 08:49:37 GMT", at_2045, INT64_C(3939871777)); /* 2094 */
    /* From 2023, "70" is 2070 (47 years ahead) ... */
    DATE_OK("Wednesday, 01-Jan-70 00:00:00 GMT", INT64_C(3155760000));
    /* ... and "76" would be 2076, 53 years ahead, so 1976. */
    DATE_OK("Friday, 31-Dec-76 00:00:00 GMT", INT64_C(220838400));
    /* From 1950, "94" is 1994 (44 years ahead), "00" 2000 (50 years ahead, not more). */
    DATE_OK_AT("Sunday, 06-Nov-94 08:49:37 GMT", INT64_C(-631152000), EX_S);
    DATE_OK_AT("Saturday, 01-Jan-00 00:00:00 GMT", INT64_C(-631152000), INT64_C(946684800));
    DATE_OK_AT("Saturday, 02-Jan-00 00:00:00 GMT", INT64_C(-631152000),
               INT64_C(-2208902400)); /* 1900-01-02: more than 50 years after 1950-01-01 */
    /* Any clock, however absurd, gives an answer without overflow. */
    int64_t t;
    ck_assert_int_eq(tc__http_date_parse(&t, "Sunday, 06-Nov-94 08:49:37 GMT", 30, INT64_MAX),
                     TC_OK);
    ck_assert_int_eq(tc__http_date_parse(&t, "Sunday, 06-Nov-94 08:49:37 GMT", 30, INT64_MIN),
                     TC_OK);
    /* Not the grammar: short day name, 4-digit year, spaces for dashes, other zone. */
    DATE_BAD("Sun, 06-Nov-94 08:49:37 GMT");
    DATE_BAD("Sunday, 06-Nov-1994 08:49:37 GMT");
    DATE_BAD("Sunday, 06 Nov 94 08:49:37 GMT");
    DATE_BAD("Sunday, 06-Nov-94 08:49:37 UTC");
    DATE_BAD("Sunday,06-Nov-94 08:49:37 GMT");
    DATE_BAD("Sunday, 6-Nov-94 08:49:37 GMT");
    DATE_BAD("Sunday, 29-Feb-01 08:49:37 GMT");
}
END_TEST

START_TEST(test_date_asctime)
{
    DATE_OK("Sun Nov  6 08:49:37 1994", EX_S);
    DATE_OK("Sun Nov 06 08:49:37 1994", EX_S);
    DATE_OK("sun nov  6 08:49:37 1994", EX_S);
    DATE_OK("Thu Jan  1 00:00:00 1970", 0);
    DATE_OK("Thu Feb 29 23:59:59 2024", INT64_C(1709251199));
    DATE_BAD("Sun Nov 6 08:49:37 1994");
    DATE_BAD("Sun Nov  6 08:49:37 1994 GMT");
    DATE_BAD("Sun Nov  6 08:49:37 94");
    DATE_BAD("Sun Nov 6  08:49:37 1994");
    DATE_BAD("Sun Nov  0 08:49:37 1994");
    DATE_BAD("Sun Nov   08:49:37 1994");
}
END_TEST

START_TEST(test_date_leap_years)
{
    DATE_OK("Tue, 29 Feb 2000 12:00:00 GMT", INT64_C(951825600));
    DATE_OK("Thu, 29 Feb 2024 23:59:59 GMT", INT64_C(1709251199));
    DATE_OK("Tue, 29 Feb 1600 00:00:00 GMT", INT64_C(-11670998400));
    DATE_BAD("Thu, 29 Feb 1900 00:00:00 GMT");
    DATE_BAD("Mon, 29 Feb 2100 00:00:00 GMT");
    DATE_BAD("Wed, 29 Feb 2023 00:00:00 GMT");
    DATE_BAD("Tue, 30 Feb 2024 00:00:00 GMT");
    DATE_BAD("Tue, 31 Apr 2024 00:00:00 GMT");
    DATE_BAD("Tue, 31 Jun 2024 00:00:00 GMT");
    DATE_BAD("Tue, 31 Sep 2024 00:00:00 GMT");
    DATE_BAD("Tue, 31 Nov 2024 00:00:00 GMT");
    DATE_OK("Tue, 31 Dec 2024 00:00:00 GMT", INT64_C(1735603200));
    DATE_BAD("Tue, 00 Jan 2024 00:00:00 GMT");
    DATE_BAD("Tue, 32 Jan 2024 00:00:00 GMT");
}
END_TEST

START_TEST(test_date_time_bounds)
{
    /* RFC 9110 §5.6.7: 00:00:00 - 23:59:60 (leap second), which counts as the next second. */
    DATE_OK("Sat, 31 Dec 2016 23:59:60 GMT", INT64_C(1483228800));
    DATE_OK("Sun, 06 Nov 1994 00:00:00 GMT", EX_S - 8 * 3600 - 49 * 60 - 37);
    DATE_OK("Sun, 06 Nov 1994 23:59:59 GMT", EX_S + 15 * 3600 + 10 * 60 + 22);
    DATE_BAD("Sun, 06 Nov 1994 24:00:00 GMT");
    DATE_BAD("Sun, 06 Nov 1994 23:60:00 GMT");
    DATE_BAD("Sun, 06 Nov 1994 23:59:61 GMT");
    DATE_BAD("Sun, 06 Nov 1994 8:49:37 GMT");
    DATE_BAD("Sun, 06 Nov 1994 08-49-37 GMT");
}
END_TEST

START_TEST(test_date_invalid)
{
    int64_t t = 5;
    ck_assert_int_eq(tc__http_date_parse(NULL, "x", 1, NOW_S), TC_EINVAL);
    ck_assert_int_eq(tc__http_date_parse(&t, NULL, 0, NOW_S), TC_EINVAL);
    ck_assert_int_eq(t, 5);
    DATE_BAD("");
    DATE_BAD("0");
    DATE_BAD("-1");
    DATE_BAD("   ");
    DATE_BAD("784111777");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37 UTC");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37 +0000");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37 EST");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37");
    DATE_BAD("Sun,  06 Nov 1994 08:49:37 GMT");
    DATE_BAD("Sun, 06  Nov 1994 08:49:37 GMT");
    DATE_BAD("Sun 06 Nov 1994 08:49:37 GMT");
    DATE_BAD("Sun, 06 Foo 1994 08:49:37 GMT");
    DATE_BAD("Sun, 6 Nov 1994 08:49:37 GMT");
    DATE_BAD("Sun, 06 Nov 94 08:49:37 GMT");
    DATE_BAD("Sun, 06 Nov 19944 08:49:37 GMT");
    DATE_BAD("Sun, 06 Nov +994 08:49:37 GMT");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMTX");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMT\0");
    DATE_BAD("Sun, 06 Nov 1994\0" "08:49:37 GMT");
    DATE_BAD("\0Sun, 06 Nov 1994 08:49:37 GMT");
    DATE_BAD("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT");
    DATE_BAD("2024-01-01T00:00:00Z");
    DATE_BAD("\xff\xff\xff, 06 Nov 1994 08:49:37 GMT");
    /* Cut short by len. */
    date_bad_n("Sun, 06 Nov 1994 08:49:37 GMT", 28);
    date_bad_n("Sun, 06 Nov 1994 08:49:37 GMT", 3);
}
END_TEST

/* ---- freshness ----------------------------------------------------------------------------- */

START_TEST(test_fresh_einval)
{
    tc__freshness f;
    ck_assert_int_eq(tc__freshness_compute(NULL, NULL, 0, NULL, 0, NULL, 0, NULL, 0, 0, 0),
                     TC_EINVAL);
    memset(&f, 0x55, sizeof f);
    ck_assert_int_eq(tc__freshness_compute(&f, NULL, 3, NULL, 0, NULL, 0, NULL, 0, 0, 0),
                     TC_EINVAL);
    ck_assert_int_eq(f.storable, 0);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(tc__freshness_compute(&f, NULL, 0, NULL, 1, NULL, 0, NULL, 0, 0, 0),
                     TC_EINVAL);
    ck_assert_int_eq(tc__freshness_compute(&f, NULL, 0, NULL, 0, NULL, 1, NULL, 0, 0, 0),
                     TC_EINVAL);
    ck_assert_int_eq(tc__freshness_compute(&f, NULL, 0, NULL, 0, NULL, 0, NULL, 1, 0, 0),
                     TC_EINVAL);
}
END_TEST

START_TEST(test_fresh_no_information)
{
    /* No explicit freshness and no heuristic (§4.2.2 is not implemented): stale at once. */
    tc__freshness f = fresh(NULL, NULL, NULL, NULL);
    ck_assert_int_eq(f.storable, 1);
    ck_assert_int_eq(f.explicit_lifetime, 0);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(f.age_ms, 0);
    ck_assert_int_eq(f.ttl_ms, 0);
    ck_assert_int_eq(f.must_revalidate, 0);
    f = fresh("public", NULL, D_NOW, NULL);
    ck_assert_int_eq(f.explicit_lifetime, 0);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_uint_eq(f.cc_flags, TC__CC_PUBLIC);
}
END_TEST

START_TEST(test_fresh_precedence)
{
    /* §4.2.1 for a shared cache: s-maxage, then max-age, then Expires - Date. */
    tc__freshness f = fresh("max-age=60, s-maxage=30", D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 30000);
    ck_assert_int_eq(f.ttl_ms, 30000);
    f = fresh("s-maxage=30, max-age=60", D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 30000);
    f = fresh("max-age=60", D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 60000);
    ck_assert_int_eq(f.explicit_lifetime, 1);
    f = fresh(NULL, D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 3600000);
    f = fresh("public", D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 3600000);
    /* s-maxage=0 wins over a long max-age. */
    f = fresh("max-age=3600, s-maxage=0", NULL, NULL, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(f.explicit_lifetime, 1);
}
END_TEST

START_TEST(test_fresh_expires_minus_date)
{
    /* Expires is taken against the origin's Date, not our clock (§4.2.1): a Date 1 h behind
     * ours and Expires 2 h after it give 2 h of lifetime, of which the apparent age uses 1 h. */
    tc__freshness f = fresh(NULL, D_NOW_P1H, D_NOW_M1H, NULL);
    ck_assert_int_eq(f.lifetime_ms, 7200000);
    ck_assert_int_eq(f.age_ms, 3600000);
    ck_assert_int_eq(f.ttl_ms, 3600000);
    /* Without Date, the time of receipt stands in (RFC 9110 §6.6.1). */
    f = fresh(NULL, D_NOW_P2H, NULL, NULL);
    ck_assert_int_eq(f.lifetime_ms, 7200000);
    ck_assert_int_eq(f.age_ms, 0);
    /* An invalid Date is treated as absent. */
    f = fresh(NULL, D_NOW_P2H, "yesterday", NULL);
    ck_assert_int_eq(f.lifetime_ms, 7200000);
    ck_assert_int_eq(f.age_ms, 0);
    /* The obsolete formats count the same. */
    f = fresh(NULL, "Wednesday, 15-Nov-23 00:13:20 GMT", "Tue Nov 14 22:13:20 2023", NULL);
    ck_assert_int_eq(f.lifetime_ms, 7200000);
    /* Expires before Date: 0, not negative. */
    f = fresh(NULL, D_NOW_M1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(f.explicit_lifetime, 1);
}
END_TEST

START_TEST(test_fresh_expires_invalid)
{
    /* §5.3: invalid dates, "especially the value "0"", are already expired. */
    static const char *const bad[] = {"0", "-1", "", "never", "Sun, 06 Nov 1994 08:49:37 UTC",
                                      D_NOW_P1H ", " D_NOW_P2H};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tc__freshness f = fresh(NULL, bad[i], D_NOW, NULL);
        ck_assert_msg(f.lifetime_ms == 0 && f.explicit_lifetime == 1, "Expires '%s'", bad[i]);
        ck_assert_int_eq(f.storable, 1);
    }
    /* max-age makes Expires irrelevant, valid or not (§5.3). */
    tc__freshness f = fresh("max-age=60", "0", D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 60000);
}
END_TEST

START_TEST(test_fresh_invalid_directive_is_stale)
{
    /* §4.2.1: invalid freshness information means stale; it does not fall through to
     * Expires. */
    tc__freshness f = fresh("max-age=abc", D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(f.explicit_lifetime, 1);
    ck_assert(f.cc_flags & TC__CC_MALFORMED);
    f = fresh("max-age=60, max-age=120", D_NOW_P1H, D_NOW, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    f = fresh("max-age=-1", NULL, NULL, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    /* An invalid s-maxage shadows a valid max-age, and still forbids serving stale. */
    f = fresh("s-maxage=x, max-age=60, stale-while-revalidate=30", NULL, NULL, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(f.must_revalidate, 1);
    ck_assert_int_eq(f.swr_ms, 0);
    /* An invalid max-age shadowed by a valid s-maxage does not matter. */
    f = fresh("s-maxage=10, max-age=x", NULL, NULL, NULL);
    ck_assert_int_eq(f.lifetime_ms, 10000);
}
END_TEST

START_TEST(test_fresh_storable)
{
    ck_assert_int_eq(fresh("max-age=60", NULL, NULL, NULL).storable, 1);
    ck_assert_int_eq(fresh("public, max-age=60", NULL, NULL, NULL).storable, 1);
    ck_assert_int_eq(fresh("no-store", NULL, NULL, NULL).storable, 0);
    ck_assert_int_eq(fresh("public, no-store, max-age=60", NULL, NULL, NULL).storable, 0);
    ck_assert_int_eq(fresh("private", NULL, NULL, NULL).storable, 0);
    ck_assert_int_eq(fresh("private, s-maxage=60", NULL, NULL, NULL).storable, 0);
    /* Qualified private: we cannot strip fields from an opaque value, so not stored. */
    ck_assert_int_eq(fresh("private=\"Set-Cookie\", max-age=60", NULL, NULL, NULL).storable, 0);
    ck_assert_int_eq(fresh("NO-STORE", NULL, NULL, NULL).storable, 0);
    ck_assert_int_eq(fresh("max-age=60 no-store", NULL, NULL, NULL).storable, 0);
    /* no-cache is storable but always validated. */
    tc__freshness f = fresh("no-cache, max-age=60", NULL, NULL, NULL);
    ck_assert_int_eq(f.storable, 1);
    ck_assert_int_eq(f.no_cache, 1);
    ck_assert_int_eq(f.must_revalidate, 1);
    ck_assert_int_eq(f.lifetime_ms, 60000);
    /* Qualified no-cache is handled as unqualified (§5.2.2.4 note). */
    f = fresh("no-cache=\"Set-Cookie\", max-age=60", NULL, NULL, NULL);
    ck_assert_int_eq(f.no_cache, 1);
    ck_assert_int_eq(f.must_revalidate, 1);
}
END_TEST

START_TEST(test_age_header)
{
    tc__freshness f = fresh("max-age=100", NULL, D_NOW, "30");
    ck_assert_int_eq(f.age_ms, 30000);
    ck_assert_int_eq(f.ttl_ms, 70000);
    /* §5.1: a list uses its first member. */
    ck_assert_int_eq(fresh("max-age=100", NULL, NULL, "30, 40").age_ms, 30000);
    ck_assert_int_eq(fresh("max-age=100", NULL, NULL, ", 30").age_ms, 30000);
    ck_assert_int_eq(fresh("max-age=100", NULL, NULL, " 7 ").age_ms, 7000);
    /* Anything but a non-negative integer is ignored. */
    static const char *const bad[] = {"-5", "abc", "", "1.5", "+3", "3s", "3 4", "\"3\"",
                                      "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(fresh("max-age=100", NULL, NULL, bad[i]).age_ms == 0, "Age '%s'", bad[i]);
    tc__freshness g;
    ck_assert_int_eq(tc__freshness_compute(&g, "max-age=100", 11, NULL, 0, NULL, 0, "3\0", 2,
                                           NOW_MS, NOW_MS),
                     TC_OK);
    ck_assert_int_eq(g.age_ms, 0);
    /* An Age beyond the lifetime leaves it stale on arrival. */
    f = fresh("max-age=100", NULL, NULL, "200");
    ck_assert_int_eq(f.ttl_ms, 0);
    /* Huge: saturates at 2^31 s (§1.2.2). */
    f = fresh("max-age=2147483648", NULL, NULL, "999999999999999999999999");
    ck_assert_int_eq(f.age_ms, TC__DELTA_MAX * 1000);
    ck_assert_int_eq(f.lifetime_ms, TC__DELTA_MAX * 1000);
    ck_assert_int_eq(f.ttl_ms, 0);
}
END_TEST

START_TEST(test_age_corrections)
{
    /* §4.2.3: apparent_age = max(0, response_time - date_value). */
    tc__freshness f = fresh("max-age=600", NULL, D_NOW_M100, NULL);
    ck_assert_int_eq(f.age_ms, 100000);
    ck_assert_int_eq(f.ttl_ms, 500000);
    /* A Date ahead of our clock gives no negative age. */
    f = fresh("max-age=600", NULL, D_NOW_P100, NULL);
    ck_assert_int_eq(f.age_ms, 0);
    ck_assert_int_eq(f.ttl_ms, 600000);
    /* corrected_age_value = Age + response_delay; the larger estimate wins. */
    f = fresh_at("max-age=600", NULL, D_NOW_M100, "10", NOW_MS - 2000, NOW_MS);
    ck_assert_int_eq(f.age_ms, 100000);
    f = fresh_at("max-age=600", NULL, D_NOW_M100, "150", NOW_MS - 2000, NOW_MS);
    ck_assert_int_eq(f.age_ms, 152000);
    ck_assert_int_eq(f.ttl_ms, 448000);
    f = fresh_at("max-age=600", NULL, NULL, NULL, NOW_MS - 1500, NOW_MS);
    ck_assert_int_eq(f.age_ms, 1500);
    /* A request time after the response (a clock step) adds nothing. */
    f = fresh_at("max-age=600", NULL, NULL, "10", NOW_MS + 5000, NOW_MS);
    ck_assert_int_eq(f.age_ms, 10000);
    /* Milliseconds of the receipt time count against the Date's whole seconds. */
    f = fresh_at("max-age=600", NULL, D_NOW, NULL, NOW_MS + 250, NOW_MS + 250);
    ck_assert_int_eq(f.age_ms, 250);
}
END_TEST

START_TEST(test_stale_windows)
{
    tc__freshness f =
        fresh("max-age=60, stale-while-revalidate=30, stale-if-error=86400", NULL, NULL, NULL);
    ck_assert_int_eq(f.swr_ms, 30000);
    ck_assert_int_eq(f.sie_ms, 86400000);
    ck_assert_int_eq(f.must_revalidate, 0);
    /* Without a lifetime, the windows still apply (the response is stale at once). */
    f = fresh("stale-while-revalidate=30", NULL, NULL, NULL);
    ck_assert_int_eq(f.lifetime_ms, 0);
    ck_assert_int_eq(f.swr_ms, 30000);
    /* §4.2.4: directives that forbid serving stale zero both windows. */
    static const char *const forbid[] = {
        "max-age=60, stale-while-revalidate=30, stale-if-error=60, must-revalidate",
        "max-age=60, stale-while-revalidate=30, stale-if-error=60, proxy-revalidate",
        "s-maxage=60, stale-while-revalidate=30, stale-if-error=60",
        "max-age=60, stale-while-revalidate=30, stale-if-error=60, no-cache",
        "max-age=60, stale-while-revalidate=30, stale-if-error=60, no-cache=\"X\"",
        "max-age=60, stale-while-revalidate=30, stale-if-error=60, must-revalidate=1",
        "max-age=60, stale-while-revalidate=30, stale-if-error=60, s-maxage",
    };
    for (size_t i = 0; i < sizeof forbid / sizeof forbid[0]; i++) {
        f = fresh(forbid[i], NULL, NULL, NULL);
        ck_assert_msg(f.must_revalidate == 1 && f.swr_ms == 0 && f.sie_ms == 0, "'%s'",
                      forbid[i]);
    }
    /* Invalid or conflicting windows are no windows. */
    f = fresh("max-age=60, stale-while-revalidate=x, stale-if-error=1, stale-if-error=2", NULL,
              NULL, NULL);
    ck_assert_int_eq(f.swr_ms, 0);
    ck_assert_int_eq(f.sie_ms, 0);
    ck_assert_int_eq(f.lifetime_ms, 60000);
    /* Quoted and huge windows. */
    f = fresh("stale-if-error=\"99999999999\"", NULL, NULL, NULL);
    ck_assert_int_eq(f.sie_ms, TC__DELTA_MAX * 1000);
}
END_TEST

START_TEST(test_immutable)
{
    tc__freshness f = fresh("public, max-age=31536000, immutable", NULL, NULL, NULL);
    ck_assert_int_eq(f.immutable, 1);
    ck_assert_int_eq(f.lifetime_ms, INT64_C(31536000000));
    ck_assert_int_eq(fresh("immutable, no-cache", NULL, NULL, NULL).immutable, 0);
    ck_assert_int_eq(fresh("immutable=1", NULL, NULL, NULL).immutable, 0);
    ck_assert_int_eq(fresh("max-age=60", NULL, NULL, NULL).immutable, 0);
}
END_TEST

START_TEST(test_typical_header)
{
    tc__freshness f = fresh_at("public, max-age=3600, stale-while-revalidate=60", NULL,
                               D_NOW_M100, "20", NOW_MS - 80, NOW_MS);
    ck_assert_int_eq(f.storable, 1);
    ck_assert_int_eq(f.lifetime_ms, 3600000);
    ck_assert_int_eq(f.age_ms, 100000);
    ck_assert_int_eq(f.ttl_ms, 3500000);
    ck_assert_int_eq(f.swr_ms, 60000);
    ck_assert_int_eq(f.sie_ms, 0);
    ck_assert_int_eq(f.no_cache, 0);
    ck_assert_int_eq(f.must_revalidate, 0);
    ck_assert_int_eq(f.immutable, 0);
    ck_assert_uint_eq(f.cc_flags, TC__CC_PUBLIC);
}
END_TEST

START_TEST(test_saturation)
{
    /* Extreme clocks and dates: no overflow (UBSan watches), no negative output. */
    static const int64_t clocks[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1,
                                     INT64_MAX};
    for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
        for (size_t j = 0; j < sizeof clocks / sizeof clocks[0]; j++) {
            fresh_at("max-age=2147483648, stale-while-revalidate=2147483648", NULL,
                     "Sat, 01 Jan 0000 00:00:00 GMT", "99999999999999", clocks[i], clocks[j]);
            fresh_at(NULL, "Fri, 31 Dec 9999 23:59:59 GMT", "Sat, 01 Jan 0000 00:00:00 GMT",
                     NULL, clocks[i], clocks[j]);
            fresh_at(NULL, "Sunday, 06-Nov-94 08:49:37 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                     "1", clocks[i], clocks[j]);
        }
    }
    tc__freshness f = fresh_at(NULL, "Fri, 31 Dec 9999 23:59:59 GMT",
                               "Sat, 01 Jan 0000 00:00:00 GMT", NULL, NOW_MS, NOW_MS);
    ck_assert_int_eq(f.lifetime_ms, (INT64_C(253402300799) + INT64_C(62167219200)) * 1000);
    f = fresh_at("max-age=1", NULL, NULL, NULL, INT64_MIN, INT64_MAX);
    ck_assert_int_eq(f.age_ms, INT64_MAX);
    ck_assert_int_eq(f.ttl_ms, 0);
}
END_TEST

Suite *cache_control_suite(void)
{
    Suite *s = suite_create("cache_control");

    TCase *tc = tcase_create("directives");
    tcase_add_test(tc, test_cc_empty);
    tcase_add_test(tc, test_cc_null_args);
    tcase_add_test(tc, test_cc_each_flag);
    tcase_add_test(tc, test_cc_delta_values);
    tcase_add_test(tc, test_cc_case_insensitive);
    tcase_add_test(tc, test_cc_whitespace);
    tcase_add_test(tc, test_cc_quoted);
    tcase_add_test(tc, test_cc_repeated_identical);
    tcase_add_test(tc, test_cc_repeated_conflicting);
    tcase_add_test(tc, test_cc_invalid_delta);
    tcase_add_test(tc, test_cc_huge_numbers);
    tcase_add_test(tc, test_cc_unknown_ignored);
    tcase_add_test(tc, test_cc_trailing_garbage);
    tcase_add_test(tc, test_cc_junk_elements);
    tcase_add_test(tc, test_cc_embedded_nul);
    tcase_add_test(tc, test_cc_unterminated_quote);
    tcase_add_test(tc, test_cc_qualified_forms);
    tcase_add_test(tc, test_cc_never_reads_past_len);
    tcase_add_test(tc, test_cc_long_input);
    suite_add_tcase(s, tc);

    tc = tcase_create("dates");
    tcase_add_test(tc, test_date_imf_fixdate);
    tcase_add_test(tc, test_date_weekday_not_checked);
    tcase_add_test(tc, test_date_rfc850);
    tcase_add_test(tc, test_date_asctime);
    tcase_add_test(tc, test_date_leap_years);
    tcase_add_test(tc, test_date_time_bounds);
    tcase_add_test(tc, test_date_invalid);
    suite_add_tcase(s, tc);

    tc = tcase_create("freshness");
    tcase_add_test(tc, test_fresh_einval);
    tcase_add_test(tc, test_fresh_no_information);
    tcase_add_test(tc, test_fresh_precedence);
    tcase_add_test(tc, test_fresh_expires_minus_date);
    tcase_add_test(tc, test_fresh_expires_invalid);
    tcase_add_test(tc, test_fresh_invalid_directive_is_stale);
    tcase_add_test(tc, test_fresh_storable);
    tcase_add_test(tc, test_age_header);
    tcase_add_test(tc, test_age_corrections);
    tcase_add_test(tc, test_stale_windows);
    tcase_add_test(tc, test_immutable);
    tcase_add_test(tc, test_typical_header);
    tcase_add_test(tc, test_saturation);
    suite_add_tcase(s, tc);
    return s;
}
