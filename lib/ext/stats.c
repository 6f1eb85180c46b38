/*
 * stats.c - the handle's counters as a JSON document (jansson).
 */
#include "ext/stats.h"
#include "core/cache.h"
#include "ext/shared.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *tier_json(const tc__tier_stats *t)
{
    return json_pack("{s:I,s:I,s:I,s:I}", "hits", (json_int_t)TC__GET(t->hits), "misses",
                     (json_int_t)TC__GET(t->misses), "sets", (json_int_t)TC__GET(t->sets),
                     "errors", (json_int_t)TC__GET(t->errors));
}

int tc__stats_render(char **out, tc__stats *s, tc__edge *edge, const void *owner)
{
    int64_t entries = 0, bytes = 0, evictions = 0, hits = 0, cold = 0, warm = 0;
    if (edge != NULL)
        tc__edge_counts(edge, &entries, &bytes, &evictions, &hits);
    tc__shared_counts(&cold, &warm);

    json_t *e = tier_json(&s->edge), *r = tier_json(&s->redis), *st = tier_json(&s->store);
    json_t *sh = json_pack("{s:I,s:I}", "cold_starts", (json_int_t)cold, "warm_starts",
                           (json_int_t)warm);
    json_t *root = NULL;
    char *text = NULL;
    if (e && r && st && sh &&
        /* Edge hits are counted by the edge, per thread (tc__edge_counts). */
        json_object_set_new(e, "hits", json_integer(hits)) == 0 &&
        json_object_set_new(e, "evictions", json_integer(evictions)) == 0 &&
        json_object_set_new(e, "entries", json_integer(entries)) == 0 &&
        json_object_set_new(e, "bytes", json_integer(bytes)) == 0 &&
        json_object_set_new(r, "connects", json_integer(TC__GET(s->connects))) == 0 &&
        json_object_set_new(r, "reuses", json_integer(TC__GET(s->reuses))) == 0 &&
        json_object_set_new(r, "batches", json_integer(TC__GET(s->batches))) == 0 &&
        json_object_set_new(r, "batched", json_integer(TC__GET(s->batched))) == 0 &&
        json_object_set_new(st, "leases", json_integer(TC__GET(s->leases))) == 0 &&
        json_object_set_new(st, "lease_waits", json_integer(TC__GET(s->lease_waits))) == 0) {
        /* "O" takes a reference, so ours are dropped below either way. */
        root = json_pack("{s:O,s:O,s:O,s:O}", "edge", e, "redis", r, "store", st, "shared", sh);
        if (root != NULL)
            text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(e);
    json_decref(r);
    json_decref(st);
    json_decref(sh);
    json_decref(root);
    if (text == NULL)
        return tc__err(owner, TC_ENOMEM, "stats: out of memory");
    /* jansson may use its own allocator; hand the caller memory that tc_free can release. */
    char *copy = strdup(text);
    json_free_t free_fn;
    json_get_alloc_funcs(NULL, &free_fn);
    free_fn(text);
    if (copy == NULL)
        return tc__err(owner, TC_ENOMEM, "stats: out of memory");
    *out = copy;
    return TC_OK;
}

int tc_stats_json(char **out, tc_cache *c)
{
    if (out == NULL)
        return tc__err(c, TC_EINVAL, "stats: out is NULL");
    *out = NULL;
    if (c == NULL)
        return tc__err(NULL, TC_EINVAL, "stats: cache is NULL");
    tc__cache_fork_check(c);
    return tc__stats_render(out, tc__cache_stats(c), tc__cache_edge(c), c);
}
