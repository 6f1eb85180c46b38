/*
 * http_policy.h - the HTTP record policy of RFC 9111 as a shared cache applies it to a stored
 * response: how long the caches keep it, what a revalidation keeps of it, its Age, and the
 * record built from a response's header fields (http_headers.h collects them, cache_control.h
 * parses their freshness). Pure functions: no tier, no handle.
 */
#ifndef TC_HTTP_POLICY_H
#define TC_HTTP_POLICY_H

#include "common/record.h"
#include "http/http_headers.h"

/* How long the caches keep an HTTP record (ms): while fresh, then through its stale windows.
 * One that is stale at once and may not be served stale is kept default_ttl_ms anyway: its
 * headers are what the next revalidation keeps. */
int64_t tc__http_cache_ttl(const tc__rec *r, int64_t now, int64_t default_ttl_ms);
/* A stale record revalidated against the store's value: the same headers (ETag and
 * Last-Modified only if the store still has the version they described), fresh again for the
 * same lifetime from now. out's value is value (not copied). */
void tc__http_revalidated(tc__rec *out, const tc__rec *old, int64_t old_version,
                          const void *value, size_t len, int64_t version, int64_t now);
/* The record of a response whose header fields tc__http_fields collected (v, l), with value as
 * its body (not copied; nor are the fields), received at now: 1 with *out filled, or 0 if a
 * shared cache may not store it. A response without explicit freshness lives default_ttl_ms. */
int tc__http_record(tc__rec *out, const char *const *v, const size_t *l, const void *value,
                    size_t value_len, int64_t now, int64_t default_ttl_ms);
/* A stored record's Age at now, in whole seconds (RFC 9111 4.2.3, from the date it was
 * received less the Age it came with); 0 for a date in the future, or a damaged one. */
int64_t tc__http_age_s(const tc__rec *rec, int64_t now);

#endif
