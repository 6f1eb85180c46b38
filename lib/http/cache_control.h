/*
 * cache_control.h - HTTP response caching headers (Cache-Control, Expires, Date, Age) turned into
 * freshness information for a SHARED cache, per RFC 9111 with RFC 9110 dates, RFC 5861
 * stale-while-revalidate / stale-if-error and RFC 8246 immutable.
 *
 * Every function here is pure: no allocation, no locale, no clock (the caller passes the times),
 * no global state. They are thread-safe. Inputs are pointer plus length, never read past len,
 * and may hold any bytes, NUL included. Nothing is kept after a call returns.
 *
 * What this module does NOT do (the caller's part):
 *  - heuristic freshness (RFC 9111 §4.2.2): a response without s-maxage, max-age or Expires gets
 *    lifetime 0 and explicit_lifetime 0; a caller that wants a default TTL decides it itself;
 *  - the status code, method and Authorization rules of §3 and §3.5 (storable only says what the
 *    caching headers allow), Vary, request directives, and RFC 8246's "authenticated context"
 *    condition for immutable;
 *  - joining repeated field lines: pass several Cache-Control lines joined with ", "
 *    (RFC 9110 §5.3). Several Expires or Date lines joined that way fail to parse as a date,
 *    which gives what §4.2.1 asks for duplicates (Expires: expired; Date: ignored).
 */
#ifndef TC_CACHE_CONTROL_H
#define TC_CACHE_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "tiercache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Values of a delta-seconds directive in tc__cc besides 0 .. TC__DELTA_MAX. */
#define TC__CC_ABSENT  (-1) /* the directive did not appear */
#define TC__CC_INVALID (-2) /* it appeared with a missing or non-numeric value, or twice with
                             * different values: the response is to be taken as stale
                             * (RFC 9111 §4.2.1) */
/* delta-seconds larger than this saturate to it (RFC 9111 §1.2.2: 2^31, "infinity"). */
#define TC__DELTA_MAX INT64_C(2147483648)

/* tc__cc.flags */
#define TC__CC_NO_STORE         (1u << 0)
#define TC__CC_NO_CACHE         (1u << 1) /* qualified or not */
#define TC__CC_NO_CACHE_FIELDS  (1u << 2) /* no-cache="field,..." (qualified form) */
#define TC__CC_PRIVATE          (1u << 3) /* qualified or not */
#define TC__CC_PRIVATE_FIELDS   (1u << 4) /* private="field,..." (qualified form) */
#define TC__CC_PUBLIC           (1u << 5)
#define TC__CC_MUST_REVALIDATE  (1u << 6)
#define TC__CC_PROXY_REVALIDATE (1u << 7)
#define TC__CC_IMMUTABLE        (1u << 8)
/* Something was not understood: bad syntax, an argument where none is allowed, a bad or
 * conflicting value. Informational (logs, counters): the parse already took the restrictive
 * reading of whatever it touched. */
#define TC__CC_MALFORMED        (1u << 15)

/* A parsed Cache-Control field value. */
typedef struct tc__cc {
    /* Seconds 0 .. TC__DELTA_MAX, or TC__CC_ABSENT, or TC__CC_INVALID. */
    int64_t max_age, s_maxage, stale_while_revalidate, stale_if_error;
    unsigned flags; /* TC__CC_* */
} tc__cc;

/**
 * Parses a Cache-Control field value (a response's directives). Tolerant: content never makes
 * it fail. Names are case-insensitive; OWS is accepted around ',' and '='; arguments may be
 * tokens or quoted-strings; empty list elements are skipped; unknown directives are ignored.
 * Where the value is damaged the reading is the restrictive one: a restrictive directive
 * (no-store, no-cache, private, must-revalidate, proxy-revalidate) applies even when its element
 * is malformed, a permissive one (public, immutable) only when well-formed, and a delta-seconds
 * directive that is malformed, repeated with another value, or next to garbage becomes
 * TC__CC_INVALID.
 * @param out    receives the result (all ABSENT and no flags for an empty value).
 * @param value  len bytes; may be NULL only when len is 0.
 * @return TC_OK, or TC_EINVAL for a NULL out or a NULL value with len > 0 (then *out, if not
 *         NULL, is as for an empty value).
 */
int tc__cc_parse(tc__cc *out, const char *value, size_t len);

/**
 * Parses an HTTP-date in any of the three formats of RFC 9110 §5.6.7:
 *   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
 *   rfc850-date  "Sunday, 06-Nov-94 08:49:37 GMT"  (obsolete)
 *   asctime      "Sun Nov  6 08:49:37 1994"        (obsolete)
 * Day and month names and "GMT" match case-insensitively and any other zone is invalid
 * (RFC 9111 §4.2); leading and trailing SP/HTAB are skipped; second 60 (a leap second) is
 * accepted and counts as the next second; the day must exist in its month; the day name is
 * checked for spelling, not against the date. Any other deviation is invalid.
 * @param out_unix_s  receives seconds since 1970-01-01T00:00:00Z (negative before it);
 *                    untouched on failure.
 * @param now_unix_s  the caller's clock, used only for the two-digit year of rfc850-date: the
 *                    latest year with those digits that is not more than 50 years after now.
 * @return TC_OK, or TC_EINVAL for an invalid date or a NULL argument.
 */
int tc__http_date_parse(int64_t *out_unix_s, const char *s, size_t len, int64_t now_unix_s);

/* What a shared cache may do with a response, as of the moment it was received. */
typedef struct tc__freshness {
    /* Cache-Control lets a shared cache store it: no no-store, no private (qualified or not). */
    int storable;
    /* The lifetime came from s-maxage, max-age or Expires (valid or not). 0: the response has
     * no explicit freshness; it gets lifetime 0 here since no heuristic is applied. */
    int explicit_lifetime;
    /* Freshness lifetime (§4.2.1): s-maxage, else max-age, else Expires - Date; 0 when absent,
     * invalid or in the past. */
    int64_t lifetime_ms;
    /* corrected_initial_age (§4.2.3): max(apparent_age, Age + response_delay). */
    int64_t age_ms;
    /* How long it stays fresh from response_ms: max(0, lifetime_ms - age_ms). 0 is stale. */
    int64_t ttl_ms;
    /* After ttl_ms runs out, how long it may still be served while a revalidation runs
     * (stale-while-revalidate), or when the origin fails (stale-if-error). 0 when absent,
     * invalid, or when a directive forbids serving stale (§4.2.4): must_revalidate below. */
    int64_t swr_ms, sie_ms;
    /* no-cache (qualified or not): even a fresh copy must be validated before each reuse. */
    int no_cache;
    /* A stale copy must not be served without successful validation: must-revalidate,
     * proxy-revalidate, s-maxage (§5.2.2.10) or no-cache. swr_ms and sie_ms are then 0. */
    int must_revalidate;
    /* immutable (RFC 8246): no revalidation while fresh. Cleared by no-cache. */
    int immutable;
    /* The parsed Cache-Control flags, TC__CC_MALFORMED included (for logs and counters). */
    unsigned cc_flags;
} tc__freshness;

/**
 * Computes freshness for a shared cache from a response's headers.
 * A header whose pointer is NULL is absent (its length must then be 0). A present Expires that
 * is not a valid HTTP-date (empty, "0", "-1", ...) means already expired (§5.3). A Date that is
 * absent or invalid is replaced by response_ms (RFC 9110 §6.6.1). An Age that is not a
 * non-negative integer (after taking the first member of a list, §5.1) is ignored.
 * @param request_ms   wall-clock time the request was sent (unix ms): response_delay is
 *                     response_ms - request_ms, taken as 0 when negative. Pass response_ms
 *                     when unknown.
 * @param response_ms  wall-clock time the response was received (unix ms).
 * @return TC_OK, or TC_EINVAL (NULL out, or NULL header with a non-zero length); on TC_EINVAL
 *         *out (if not NULL) is all zero, i.e. not storable.
 * All arithmetic saturates; no input overflows.
 */
int tc__freshness_compute(tc__freshness *out, const char *cache_control, size_t cc_len,
                          const char *expires, size_t expires_len, const char *date,
                          size_t date_len, const char *age, size_t age_len, int64_t request_ms,
                          int64_t response_ms);

#ifdef __cplusplus
}
#endif

#endif
