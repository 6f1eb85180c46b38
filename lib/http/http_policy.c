/*
 * http_policy.c - the HTTP record policy (http_policy.h): RFC 9111's arithmetic on a stored
 * response, apart from the tiers that hold it.
 */
#include "http/http_policy.h"
#include "http/cache_control.h"

int64_t tc__http_cache_ttl(const tc__rec *r, int64_t now, int64_t default_ttl_ms)
{
    int64_t fresh = r->fresh_until_ms > now ? r->fresh_until_ms - now : 0;
    int64_t ttl = tc__add_sat64(fresh, r->swr_ms > r->sie_ms ? r->swr_ms : r->sie_ms);
    return ttl > 0 ? ttl : default_ttl_ms;
}

void tc__http_revalidated(tc__rec *out, const tc__rec *old, int64_t old_version,
                          const void *value, size_t len, int64_t version, int64_t now)
{
    *out = *old;
    out->date_ms = now;
    out->fresh_until_ms = tc__add_sat64(now, old->lifetime_ms);
    if (version != old_version) {
        out->etag_len = out->last_modified_len = 0;
    }
    out->value = value;
    out->value_len = len;
}

int tc__http_record(tc__rec *out, const char *const *v, const size_t *l, const void *value,
                    size_t value_len, int64_t now, int64_t default_ttl_ms)
{
    tc__freshness f;
    tc__freshness_compute(&f, v[TC__H_CC], l[TC__H_CC], v[TC__H_EXPIRES], l[TC__H_EXPIRES],
                          v[TC__H_DATE], l[TC__H_DATE], v[TC__H_AGE], l[TC__H_AGE], now, now);
    if (!f.storable)
        return 0;
    *out = (tc__rec){
        .kind = TC__REC_HTTP,
        .flags = (f.must_revalidate ? TC__REC_MUST_REVALIDATE : 0) |
                 (f.no_cache ? TC__REC_NO_CACHE : 0) | (f.immutable ? TC__REC_IMMUTABLE : 0),
        .date_ms = now - f.age_ms,
        .lifetime_ms = f.explicit_lifetime ? f.lifetime_ms : default_ttl_ms,
        .swr_ms = f.swr_ms,
        .sie_ms = f.sie_ms,
        .etag = v[TC__H_ETAG], .etag_len = l[TC__H_ETAG],
        .last_modified = v[TC__H_LM], .last_modified_len = l[TC__H_LM],
        .cache_control = v[TC__H_CC], .cache_control_len = l[TC__H_CC],
        .tags = v[TC__H_TAGS], .tags_len = l[TC__H_TAGS],
        .value = value ? value : "",
        .value_len = value_len,
    };
    out->fresh_until_ms = tc__add_sat64(now, f.explicit_lifetime ? f.ttl_ms : default_ttl_ms);
    return 1;
}

int64_t tc__http_age_s(const tc__rec *rec, int64_t now)
{
    /* Saturating: a damaged record from Redis may hold any date. */
    return rec->date_ms < 0 || now <= rec->date_ms ? 0 : (now - rec->date_ms) / 1000;
}
