/*
 * cache_control.c - Cache-Control, HTTP-date, Age and freshness for a shared cache.
 *
 * Section numbers are RFC 9111 unless another RFC is named.
 *
 * Where the RFCs leave room, this module takes the reading that can only make a cache serve
 * less, never more: a cache that refuses a response it could have kept costs a round trip to
 * the origin; one that keeps a response it should not have serves private or outdated data.
 * §4.2.1 asks for the same ("the most restrictive directive should be honored"; invalid
 * freshness information means stale).
 *
 * No <ctype.h> and no strcasecmp: both follow the locale, and HTTP names are ASCII.
 */
#include "http/cache_control.h"

#include <stddef.h>

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static int64_t sat_sub(int64_t a, int64_t b)
{
    if (b < 0 && a > INT64_MAX + b)
        return INT64_MAX;
    if (b > 0 && a < INT64_MIN + b)
        return INT64_MIN;
    return a - b;
}

static int64_t sat_ms(int64_t seconds)
{
    if (seconds > INT64_MAX / 1000)
        return INT64_MAX;
    if (seconds < INT64_MIN / 1000)
        return INT64_MIN;
    return seconds * 1000;
}

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* tchar of RFC 9110 §5.6.2 ("!#$%&'*+-.^_`|~", digits, letters) as a bitmap. It is the
 * parser's inner loop: with a switch instead, a typical header took about 1.7 times as long. */
static const uint32_t tchar_map[8] = {0x00000000, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff, 0, 0, 0, 0};

static int is_tchar(unsigned char c)
{
    return (tchar_map[c >> 5] >> (c & 31)) & 1;
}

/* s (n bytes, any case) equals lit (lower case, NUL-terminated, litlen bytes). */
static int ieq(const unsigned char *s, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

static const unsigned char *skip_ows(const unsigned char *p, const unsigned char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

/* ---- delta-seconds (§1.2.2) --------------------------------------------------------------- */

/* Adds one digit to a delta-seconds accumulator; saturates at TC__DELTA_MAX (§1.2.2: a value
 * too large "MUST" be taken as 2^31, and an overflow never as a negative value). */
static int64_t delta_push(int64_t v, unsigned char digit)
{
    v = v * 10 + (digit - '0');
    return v > TC__DELTA_MAX ? TC__DELTA_MAX : v;
}

/* ---- Cache-Control (§5.2) ------------------------------------------------------------------ */

typedef struct cc_arg {
    const unsigned char *s; /* token, or the inside of a quoted-string (escapes left in) */
    size_t n;
    int present; /* "=" was seen */
    int quoted;
    int bad;     /* empty, unterminated or with bytes a quoted-string may not hold */
} cc_arg;

/* Reads a quoted-string (RFC 9110 §5.6.4) starting at the '"' at p; returns the first byte
 * after it. Bytes it may not hold make it bad but do not end it, so that a ',' inside quotes
 * never splits the list; an unterminated one runs to the end of the value. */
static const unsigned char *read_quoted(const unsigned char *p, const unsigned char *end,
                                        cc_arg *arg)
{
    p++;
    arg->s = p;
    arg->quoted = 1;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            arg->n = (size_t)(p - arg->s);
            return p + 1;
        }
        if (c == '\\') {
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (p + 1 == end)
                break;
            c = p[1];
            if (!(c == '\t' || (c >= 0x20 && c != 0x7f)))
                arg->bad = 1;
            p += 2;
            continue;
        }
        /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
        if (!(c == '\t' || (c >= 0x20 && c != 0x7f)))
            arg->bad = 1;
        p++;
    }
    arg->n = (size_t)(end - arg->s);
    arg->bad = 1; /* unterminated */
    return end;
}

/* The argument as delta-seconds: 1*DIGIT, in token form or quoted ("recipients ought to accept
 * both forms", §5.2); quoted-pairs are unescaped. Returns 0 when it is not one. */
static int arg_delta(const cc_arg *arg, int64_t *out)
{
    if (!arg->present || arg->bad || arg->n == 0)
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < arg->n; i++) {
        unsigned char c = arg->s[i];
        if (arg->quoted && c == '\\' && i + 1 < arg->n)
            c = arg->s[++i];
        if (!is_digit(c))
            return 0;
        v = delta_push(v, c);
    }
    *out = v; /* n > 0 and every byte was (or escaped) a digit: at least one digit */
    return 1;
}

/* A delta-seconds directive: the first value stays unless a later one differs, which makes it
 * TC__CC_INVALID. §4.2.1 allows "either the first occurrence should be used or the response
 * should be considered stale"; we take stale when occurrences disagree, because nothing says
 * the first is the one the origin meant, and identical repeats (a proxy adding its own copy)
 * stay harmless. A bad value is INVALID too: "responses that have invalid freshness information
 * (e.g., a max-age directive with non-integer content)" are stale (§4.2.1). */
static void set_delta(tc__cc *cc, int64_t *field, const cc_arg *arg, int bad)
{
    int64_t v;
    if (bad || !arg_delta(arg, &v)) {
        v = TC__CC_INVALID;
        cc->flags |= TC__CC_MALFORMED;
    }
    if (*field == TC__CC_ABSENT) {
        *field = v;
    } else if (*field != v) {
        *field = TC__CC_INVALID;
        cc->flags |= TC__CC_MALFORMED;
    }
}

/* A directive that takes no argument (§5.2: "no argument is defined (nor allowed) unless stated
 * otherwise"). A restrictive one applies whatever its element looks like: honouring a damaged
 * "no-store" costs a miss, ignoring it may leak. A permissive one (public, immutable) applies
 * only when its element is clean. */
static void set_flag(tc__cc *cc, unsigned flag, int restrictive, const cc_arg *arg, int bad)
{
    int clean = !bad && !arg->present;
    if (!clean)
        cc->flags |= TC__CC_MALFORMED;
    if (restrictive || clean)
        cc->flags |= flag;
}

/* A directive whose optional argument is a field-name list (no-cache, private: §5.2.2.4,
 * §5.2.2.7). Always restrictive; the list itself is not kept, only the fact it was there. */
static void set_fields_flag(tc__cc *cc, unsigned flag, unsigned fields_flag, const cc_arg *arg,
                            int bad)
{
    cc->flags |= flag;
    if (arg->present)
        cc->flags |= fields_flag;
    if (bad)
        cc->flags |= TC__CC_MALFORMED;
}

/* The response directives we know, and how each one is set. */
enum { K_DELTA, K_FLAG_RESTRICTIVE, K_FLAG_PERMISSIVE, K_FIELDS };

static const struct directive {
    const char *name; /* lower case */
    unsigned char len;
    unsigned char kind;
    unsigned flag, fields_flag; /* K_FLAG_*, K_FIELDS */
    size_t offset;              /* K_DELTA: the int64_t field of tc__cc */
} directives[] = {
#define D(name, kind, flag, fields_flag, field) \
    {name, sizeof(name) - 1, kind, flag, fields_flag, offsetof(tc__cc, field)}
    /* The ones a typical response carries come first. */
    D("max-age", K_DELTA, 0, 0, max_age),
    D("public", K_FLAG_PERMISSIVE, TC__CC_PUBLIC, 0, flags),
    D("private", K_FIELDS, TC__CC_PRIVATE, TC__CC_PRIVATE_FIELDS, flags),
    D("no-cache", K_FIELDS, TC__CC_NO_CACHE, TC__CC_NO_CACHE_FIELDS, flags),
    D("no-store", K_FLAG_RESTRICTIVE, TC__CC_NO_STORE, 0, flags),
    D("s-maxage", K_DELTA, 0, 0, s_maxage),
    D("must-revalidate", K_FLAG_RESTRICTIVE, TC__CC_MUST_REVALIDATE, 0, flags),
    D("proxy-revalidate", K_FLAG_RESTRICTIVE, TC__CC_PROXY_REVALIDATE, 0, flags),
    D("stale-while-revalidate", K_DELTA, 0, 0, stale_while_revalidate),
    D("stale-if-error", K_DELTA, 0, 0, stale_if_error),
    D("immutable", K_FLAG_PERMISSIVE, TC__CC_IMMUTABLE, 0, flags),
#undef D
};

static void apply(tc__cc *cc, const unsigned char *name, size_t n, const cc_arg *arg, int bad)
{
    for (size_t i = 0; i < sizeof directives / sizeof directives[0]; i++) {
        const struct directive *d = &directives[i];
        if (d->len != n || !ieq(name, n, d->name, n))
            continue;
        switch (d->kind) {
        case K_DELTA:
            set_delta(cc, (int64_t *)(void *)((char *)cc + d->offset), arg, bad);
            break;
        case K_FIELDS:
            set_fields_flag(cc, d->flag, d->fields_flag, arg, bad);
            break;
        default:
            set_flag(cc, d->flag, d->kind == K_FLAG_RESTRICTIVE, arg, bad);
            break;
        }
        return;
    }
    /* "A cache MUST ignore unrecognized cache directives" (§5.2.3). Request-only directives
     * (max-stale, min-fresh, only-if-cached) and must-understand (whose point is to lift
     * no-store for caches that know the status code, which we do not look at) land here. */
    if (bad)
        cc->flags |= TC__CC_MALFORMED;
}

static void cc_init(tc__cc *cc)
{
    cc->max_age = TC__CC_ABSENT;
    cc->s_maxage = TC__CC_ABSENT;
    cc->stale_while_revalidate = TC__CC_ABSENT;
    cc->stale_if_error = TC__CC_ABSENT;
    cc->flags = 0;
}

/*
 * Cache-Control = #cache-directive; cache-directive = token [ "=" ( token / quoted-string ) ].
 *
 * Recovery from damage: an element that does not end at ',' or the end of the value is
 * malformed, and whatever follows it is parsed as the next element, itself marked malformed
 * because it did not start after a ','. So "max-age=60 no-store" gives an INVALID max-age and
 * a no-store: the restrictive directive hiding behind the garbage is still seen, and the
 * delta-seconds next to it is not trusted.
 */
int tc__cc_parse(tc__cc *out, const char *value, size_t len)
{
    if (out == NULL)
        return TC_EINVAL;
    cc_init(out);
    if (value == NULL)
        return len == 0 ? TC_OK : TC_EINVAL;

    const unsigned char *p = (const unsigned char *)value;
    const unsigned char *end = p + len;
    int clean_start = 1; /* the element begins at the start or after a ',' */
    while (p < end) {
        /* OWS and empty list elements (RFC 9110 §5.6.1: recipients ignore them). */
        while (p < end && (is_ows(*p) || *p == ',')) {
            if (*p == ',')
                clean_start = 1;
            p++;
        }
        if (p == end)
            break;

        const unsigned char *name = p;
        while (p < end && is_tchar(*p))
            p++;
        size_t name_len = (size_t)(p - name);
        if (name_len == 0) {
            /* Not a directive ('=', '"', a control byte, NUL, ...): skip to the next
             * separator, stepping over quoted-strings so that their commas do not count. */
            out->flags |= TC__CC_MALFORMED;
            while (p < end && *p != ',' && !is_ows(*p)) {
                if (*p == '"') {
                    cc_arg junk = {0};
                    p = read_quoted(p, end, &junk);
                } else {
                    p++;
                }
            }
            clean_start = 0;
            continue;
        }

        cc_arg arg = {0};
        p = skip_ows(p, end);
        if (p < end && *p == '=') {
            arg.present = 1;
            p = skip_ows(p + 1, end);
            if (p < end && *p == '"') {
                p = read_quoted(p, end, &arg);
            } else {
                arg.s = p;
                while (p < end && is_tchar(*p))
                    p++;
                arg.n = (size_t)(p - arg.s);
                if (arg.n == 0)
                    arg.bad = 1;
            }
            p = skip_ows(p, end);
        }
        int clean_end = p == end || *p == ',';
        apply(out, name, name_len, &arg, !clean_start || !clean_end || arg.bad);
        clean_start = 0; /* set again by the ',' that ends a clean element */
    }
    return TC_OK;
}

/* ---- HTTP-date (RFC 9110 §5.6.7) ---------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil); exact for
 * any year this module can produce. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The year of a day number (the inverse of days_from_civil, year only). */
static int64_t year_from_days(int64_t z)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10); /* months Jan, Feb belong to the next year */
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* 1..12 for a month abbreviation in any case, else 0. */
static int month3(const unsigned char *p)
{
    static const char names[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    unsigned char a = lower(p[0]), b = lower(p[1]), c = lower(p[2]);
    for (int i = 0; i < 12; i++)
        if (a == (unsigned char)names[3 * i] && b == (unsigned char)names[3 * i + 1] &&
            c == (unsigned char)names[3 * i + 2])
            return i + 1;
    return 0;
}

/* A day-name abbreviation in any case. It is not checked against the date: it is redundant,
 * and a cache gains nothing by refusing a date for it. */
static int day3(const unsigned char *p)
{
    static const char names[] = "montuewedthufrisatsun";
    for (int i = 0; i < 7; i++)
        if (ieq(p, 3, names + 3 * i, 3))
            return 1;
    return 0;
}

/* Length of the full day name (day-name-l) at p, in any case, or 0. */
static size_t day_long(const unsigned char *p, size_t n)
{
    static const char *const names[7] = {"monday", "tuesday", "wednesday", "thursday",
                                         "friday", "saturday", "sunday"};
    for (int i = 0; i < 7; i++) {
        size_t k = 0;
        while (names[i][k] != '\0')
            k++;
        if (k <= n && ieq(p, k, names[i], k))
            return k;
    }
    return 0;
}

static int two_digits(const unsigned char *p, int *out)
{
    if (!is_digit(p[0]) || !is_digit(p[1]))
        return 0;
    *out = (p[0] - '0') * 10 + (p[1] - '0');
    return 1;
}

static int four_digits(const unsigned char *p, int *out)
{
    int hi, lo;
    if (!two_digits(p, &hi) || !two_digits(p + 2, &lo))
        return 0;
    *out = hi * 100 + lo;
    return 1;
}

/* "HH:MM:SS" (8 bytes) into seconds of the day; 00:00:00 - 23:59:60 (leap second). */
static int time_of_day(const unsigned char *p, int64_t *out)
{
    int h, m, s;
    if (!two_digits(p, &h) || p[2] != ':' || !two_digits(p + 3, &m) || p[5] != ':' ||
        !two_digits(p + 6, &s))
        return 0;
    if (h > 23 || m > 59 || s > 60)
        return 0;
    *out = (int64_t)h * 3600 + m * 60 + s;
    return 1;
}

static int is_gmt(const unsigned char *p)
{
    return lower(p[0]) == 'g' && lower(p[1]) == 'm' && lower(p[2]) == 't';
}

/* Valid day-of-month, then seconds since the epoch. */
static int finish(int64_t *out, int64_t y, int mon, int d, int64_t tod)
{
    if (mon == 0 || d < 1 || d > days_in_month(y, mon))
        return TC_EINVAL;
    *out = days_from_civil(y, mon, d) * 86400 + tod;
    return TC_OK;
}

/* Range of now used for the two-digit year: years 0000 .. 9999. Outside it the answer does not
 * matter and the arithmetic stays far from overflow. */
#define NOW_MIN INT64_C(-62167219200)
#define NOW_MAX INT64_C(253402300799)
/* "more than 50 years in the future": 50 mean Gregorian years (365.2425 days). */
#define FIFTY_YEARS_S (INT64_C(50) * 31556952)

/* RFC 9110 §5.6.7: a two-digit year that "appears to be more than 50 years in the future" is
 * "the most recent year in the past that had the same last two digits": the latest year ending
 * in yy whose timestamp is at most 50 years after now. */
static int64_t rfc850_year(int yy, int mon, int d, int64_t tod, int64_t now_s)
{
    if (now_s < NOW_MIN)
        now_s = NOW_MIN;
    if (now_s > NOW_MAX)
        now_s = NOW_MAX;
    int64_t now_days = now_s / 86400 - (now_s % 86400 < 0);
    int64_t now_year = year_from_days(now_days);
    int64_t century = now_year / 100 * 100;
    int64_t limit = now_s + FIFTY_YEARS_S;
    int64_t y = century + 100 + yy;
    /* The day is validated later, for the year chosen; days_from_civil is plain arithmetic, so
     * an impossible day here only shifts the comparison by a day or two. At most three turns:
     * the year before now's century always fits. */
    while (days_from_civil(y, mon, d) * 86400 + tod > limit)
        y -= 100;
    return y;
}

int tc__http_date_parse(int64_t *out_unix_s, const char *s, size_t len, int64_t now_unix_s)
{
    if (out_unix_s == NULL || s == NULL)
        return TC_EINVAL;
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + len;
    p = skip_ows(p, end);
    while (end > p && is_ows(end[-1]))
        end--;
    size_t n = (size_t)(end - p);
    if (n < 24 || !is_alpha(p[0]) || !is_alpha(p[1]) || !is_alpha(p[2]))
        return TC_EINVAL;

    int d, mon, y;
    int64_t tod;
    if (p[3] == ',') {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (n != 29 || !day3(p) || p[4] != ' ' || !two_digits(p + 5, &d) || p[7] != ' ' ||
            p[11] != ' ' || !four_digits(p + 12, &y) || p[16] != ' ' ||
            !time_of_day(p + 17, &tod) || p[25] != ' ' || !is_gmt(p + 26))
            return TC_EINVAL;
        mon = month3(p + 8);
        return finish(out_unix_s, y, mon, d, tod);
    }
    if (p[3] == ' ') {
        /* asctime-date: "Sun Nov  6 08:49:37 1994"; date3 = month SP ( 2DIGIT / ( SP DIGIT ) ) */
        if (n != 24 || !day3(p) || p[7] != ' ' || p[10] != ' ' || !time_of_day(p + 11, &tod) ||
            p[19] != ' ' || !four_digits(p + 20, &y))
            return TC_EINVAL;
        if (p[8] == ' ' && is_digit(p[9]))
            d = p[9] - '0';
        else if (!two_digits(p + 8, &d))
            return TC_EINVAL;
        mon = month3(p + 4);
        return finish(out_unix_s, y, mon, d, tod);
    }
    /* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" */
    size_t k = day_long(p, n);
    if (k == 0 || n != k + 24)
        return TC_EINVAL;
    p += k;
    int yy;
    if (p[0] != ',' || p[1] != ' ' || !two_digits(p + 2, &d) || p[4] != '-' || p[8] != '-' ||
        !two_digits(p + 9, &yy) || p[11] != ' ' || !time_of_day(p + 12, &tod) ||
        p[20] != ' ' || !is_gmt(p + 21))
        return TC_EINVAL;
    mon = month3(p + 5);
    if (mon == 0)
        return TC_EINVAL;
    int64_t year = rfc850_year(yy, mon, d, tod, now_unix_s);
    return finish(out_unix_s, year, mon, d, tod);
}

/* ---- Age (§5.1) --------------------------------------------------------------------------- */

/* Age = delta-seconds. "a cache encountering a message with a list-based Age field value SHOULD
 * use the first member ... If the field value (after discarding additional members ...) is
 * invalid (e.g., it contains something other than a non-negative integer), a cache SHOULD ignore
 * the field." Returns 0 when it is to be ignored. */
static int parse_age(const unsigned char *p, size_t len, int64_t *out)
{
    const unsigned char *end = p + len;
    /* Empty list elements are not members (RFC 9110 §5.6.1). */
    while (p < end && (is_ows(*p) || *p == ','))
        p++;
    if (p == end || !is_digit(*p))
        return 0;
    int64_t v = 0;
    while (p < end && is_digit(*p))
        v = delta_push(v, *p++);
    p = skip_ows(p, end);
    if (p < end && *p != ',')
        return 0;
    *out = v;
    return 1;
}

/* ---- freshness (§4.2) --------------------------------------------------------------------- */

int tc__freshness_compute(tc__freshness *out, const char *cache_control, size_t cc_len,
                          const char *expires, size_t expires_len, const char *date,
                          size_t date_len, const char *age, size_t age_len, int64_t request_ms,
                          int64_t response_ms)
{
    if (out == NULL)
        return TC_EINVAL;
    *out = (tc__freshness){0};
    if ((cache_control == NULL && cc_len > 0) || (expires == NULL && expires_len > 0) ||
        (date == NULL && date_len > 0) || (age == NULL && age_len > 0))
        return TC_EINVAL;

    tc__cc cc;
    tc__cc_parse(&cc, cache_control, cc_len);
    unsigned f = cc.flags;
    out->cc_flags = f;

    /* §5.2.2.5 no-store; §5.2.2.7 private. The qualified private="field" would let a shared
     * cache keep the rest of the response "without those header fields"; we cache opaque values
     * and cannot strip a field from them, and the RFC notes that caches commonly treat the
     * qualified form as unqualified: so any private makes the response unstorable here. */
    out->storable = !(f & (TC__CC_NO_STORE | TC__CC_PRIVATE));

    /* date_value, or the time the response was received when Date is absent (§4.2.1, RFC 9110
     * §6.6.1) or unparseable (we treat an invalid Date as absent). */
    int64_t resp_s = response_ms / 1000 - (response_ms % 1000 < 0);
    int64_t date_ms = response_ms;
    int64_t date_s;
    if (date != NULL && tc__http_date_parse(&date_s, date, date_len, resp_s) == TC_OK)
        date_ms = sat_ms(date_s);

    /* §4.2.1 freshness_lifetime, first match: s-maxage (we are a shared cache), max-age,
     * Expires - Date. A present but INVALID directive still matches, with lifetime 0, and so
     * shadows Expires: "invalid freshness information" means stale, not "look elsewhere". */
    int64_t lifetime_ms = 0;
    if (cc.s_maxage != TC__CC_ABSENT) {
        out->explicit_lifetime = 1;
        lifetime_ms = cc.s_maxage == TC__CC_INVALID ? 0 : sat_ms(cc.s_maxage);
    } else if (cc.max_age != TC__CC_ABSENT) {
        out->explicit_lifetime = 1;
        lifetime_ms = cc.max_age == TC__CC_INVALID ? 0 : sat_ms(cc.max_age);
    } else if (expires != NULL) {
        /* §5.3: "A cache recipient MUST interpret invalid date formats, especially the value
         * "0", as representing a time in the past (i.e., "already expired")." */
        out->explicit_lifetime = 1;
        int64_t exp_s;
        if (tc__http_date_parse(&exp_s, expires, expires_len, resp_s) == TC_OK) {
            lifetime_ms = sat_sub(sat_ms(exp_s), date_ms);
            if (lifetime_ms < 0)
                lifetime_ms = 0;
        }
    }
    /* else: no explicit expiration time. §4.2.2 would allow a heuristic; we apply none. */
    out->lifetime_ms = lifetime_ms;

    /* §4.2.3, the conservative form:
     *   apparent_age = max(0, response_time - date_value)
     *   corrected_age_value = age_value + (response_time - request_time)
     *   corrected_initial_age = max(apparent_age, corrected_age_value)
     * A request_time after response_time (a clock step) gives no delay rather than a negative
     * one, which would make the response look younger than the Age header says. */
    int64_t apparent = sat_sub(response_ms, date_ms);
    if (apparent < 0)
        apparent = 0;
    int64_t delay = sat_sub(response_ms, request_ms);
    if (delay < 0)
        delay = 0;
    int64_t age_s = 0;
    if (age != NULL && !parse_age((const unsigned char *)age, age_len, &age_s))
        age_s = 0;
    int64_t corrected = sat_add(sat_ms(age_s), delay);
    out->age_ms = apparent > corrected ? apparent : corrected;

    int64_t ttl = sat_sub(out->lifetime_ms, out->age_ms);
    out->ttl_ms = ttl > 0 ? ttl : 0;

    /* §4.2.4: no stale response when no-cache, must-revalidate, or an applicable s-maxage or
     * proxy-revalidate forbids it; s-maxage "incorporates the semantics of the proxy-revalidate
     * response directive" for a shared cache (§5.2.2.10), INVALID s-maxage included. RFC 5861
     * says stale-if-error applies "regardless of other freshness information", but freshness is
     * not revalidation: §5.2.2.2 says a cache "MUST NOT ignore the must-revalidate directive"
     * even when disconnected, and RFC 9111 (a standard) is later than RFC 5861
     * (informational). So these directives zero both windows. */
    out->no_cache = (f & TC__CC_NO_CACHE) != 0;
    out->must_revalidate = out->no_cache ||
                           (f & (TC__CC_MUST_REVALIDATE | TC__CC_PROXY_REVALIDATE)) != 0 ||
                           cc.s_maxage != TC__CC_ABSENT;
    if (!out->must_revalidate) {
        /* An INVALID window is no window: serving stale needs explicit permission (§4.2.4). */
        if (cc.stale_while_revalidate >= 0)
            out->swr_ms = sat_ms(cc.stale_while_revalidate);
        if (cc.stale_if_error >= 0)
            out->sie_ms = sat_ms(cc.stale_if_error);
    }
    /* RFC 8246: immutable only spares revalidation while fresh; no-cache asks for validation
     * of every reuse, and the more restrictive wins (§4.2.1). */
    out->immutable = (f & TC__CC_IMMUTABLE) != 0 && !out->no_cache;
    return TC_OK;
}
