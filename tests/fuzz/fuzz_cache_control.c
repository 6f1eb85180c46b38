/*
 * fuzz_cache_control.c - libFuzzer target for lib/http/cache_control.c.
 *
 * The input is read three ways:
 *  - whole, as a Cache-Control value and as an HTTP-date;
 *  - split at '\n' into up to four header values, in this order: Cache-Control, Expires, Date,
 *    Age (a missing line is an absent header), handed to tc__freshness_compute at an ordinary
 *    clock and at extreme ones.
 * So corpus files are readable text: "public, max-age=60\n<Expires>\n<Date>\n<Age>".
 *
 * Besides the sanitizers, it checks invariants and abort()s when one breaks, so the replay
 * driver (tests/fuzz/replay.c) fails too without any sanitizer:
 *  - delta-seconds fields are ABSENT, INVALID or 0 .. 2^31;
 *  - freshness outputs are never negative, ttl = max(0, lifetime - age), storable follows
 *    no-store/private, no stale window survives must_revalidate;
 *  - a parsed date formatted back as an IMF-fixdate parses to the same second.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ilib \
 *            tests/fuzz/fuzz_cache_control.c lib/http/cache_control.c lib/common/error.c lib/common/process.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/cache_control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* 2023-11-14T22:13:20Z */
#define NOW_S INT64_C(1700000000)

static void check_delta(int64_t v)
{
    CHECK(v == TC__CC_ABSENT || v == TC__CC_INVALID || (v >= 0 && v <= TC__DELTA_MAX));
}

static void check_cc(const char *s, size_t n)
{
    tc__cc cc;
    CHECK(tc__cc_parse(&cc, s, n) == TC_OK);
    check_delta(cc.max_age);
    check_delta(cc.s_maxage);
    check_delta(cc.stale_while_revalidate);
    check_delta(cc.stale_if_error);
    /* A FIELDS flag never comes without its directive. */
    CHECK(!(cc.flags & TC__CC_NO_CACHE_FIELDS) || (cc.flags & TC__CC_NO_CACHE));
    CHECK(!(cc.flags & TC__CC_PRIVATE_FIELDS) || (cc.flags & TC__CC_PRIVATE));
    /* Parsing is deterministic. */
    tc__cc again;
    CHECK(tc__cc_parse(&again, s, n) == TC_OK);
    CHECK(cc.max_age == again.max_age && cc.s_maxage == again.s_maxage &&
          cc.stale_while_revalidate == again.stale_while_revalidate &&
          cc.stale_if_error == again.stale_if_error && cc.flags == again.flags);
}

/* Writes t (year 0000 .. 9999) as an IMF-fixdate, 29 bytes and a NUL. */
static void format_imf(char out[64], int64_t t)
{
    static const char *const wd[7] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
    static const char *const mo[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int64_t days = t / 86400 - (t % 86400 < 0);
    int64_t sod = t - days * 86400;
    /* H. Hinnant's civil_from_days. */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    int y = (int)(yoe + era * 400 + (m <= 2));
    int w = (int)(((days % 7) + 7) % 7);
    snprintf(out, 64, "%s, %02u %s %04u %02u:%02u:%02u GMT", wd[w], (unsigned)d % 100,
             mo[m - 1], (unsigned)y % 10000, (unsigned)(sod / 3600) % 100,
             (unsigned)(sod / 60 % 60), (unsigned)(sod % 60));
}

static void check_date(const char *s, size_t n, int64_t now_s)
{
    int64_t t;
    if (tc__http_date_parse(&t, s, n, now_s) != TC_OK)
        return;
    /* Round trip, for the years an IMF-fixdate can hold (rfc850 may land outside them). */
    if (t >= INT64_C(-62167219200) && t <= INT64_C(253402300799)) {
        char buf[64];
        int64_t back;
        format_imf(buf, t);
        CHECK(tc__http_date_parse(&back, buf, 29, now_s) == TC_OK);
        CHECK(back == t);
    }
}

static void check_freshness(const char *const hdr[4], const size_t len[4], int64_t request_ms,
                            int64_t response_ms)
{
    tc__freshness f;
    CHECK(tc__freshness_compute(&f, hdr[0], len[0], hdr[1], len[1], hdr[2], len[2], hdr[3],
                                len[3], request_ms, response_ms) == TC_OK);
    CHECK(f.lifetime_ms >= 0 && f.age_ms >= 0 && f.ttl_ms >= 0);
    CHECK(f.swr_ms >= 0 && f.sie_ms >= 0);
    CHECK(f.ttl_ms == (f.lifetime_ms > f.age_ms ? f.lifetime_ms - f.age_ms : 0));
    CHECK(f.storable == !(f.cc_flags & (TC__CC_NO_STORE | TC__CC_PRIVATE)));
    CHECK(!f.must_revalidate || (f.swr_ms == 0 && f.sie_ms == 0));
    CHECK(!f.no_cache || (f.must_revalidate && !f.immutable));
    CHECK(f.explicit_lifetime || f.lifetime_ms == 0);
    /* No directive value can give more than 2^31 s of freshness or of a stale window. */
    CHECK(f.swr_ms <= TC__DELTA_MAX * 1000 && f.sie_ms <= TC__DELTA_MAX * 1000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    /* A zero-size input may come with a NULL pointer; the API wants a non-NULL one for
     * a present header. */
    if (s == NULL)
        s = "";

    check_cc(s, size);
    check_date(s, size, NOW_S);
    check_date(s, size, INT64_MIN);
    check_date(s, size, INT64_MAX);

    const char *hdr[4] = {NULL, NULL, NULL, NULL};
    size_t len[4] = {0, 0, 0, 0};
    size_t start = 0;
    for (int i = 0; i < 4 && start <= size; i++) {
        const char *nl = memchr(s + start, '\n', size - start);
        size_t end = nl != NULL ? (size_t)(nl - s) : size;
        hdr[i] = s + start;
        len[i] = end - start;
        if (i == 2)
            check_date(hdr[i], len[i], NOW_S);
        start = end + 1;
        if (nl == NULL)
            break;
    }

    static const int64_t clocks[][2] = {
        {NOW_S * 1000 - 250, NOW_S * 1000},
        {NOW_S * 1000, NOW_S * 1000},
        {INT64_MIN, INT64_MAX},
        {INT64_MAX, INT64_MIN},
        {0, -1},
    };
    for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++)
        check_freshness(hdr, len, clocks[i][0], clocks[i][1]);
    return 0;
}
