/*
 * cache.c - the handle as the layers above and the tests see it (cache.h): its parts, the test
 * hooks, and the version of the library.
 */
#include "core/handle.h"
#include "core/cache.h"

void (*tc__hook_after_commit)(tc_cache *cache, const char *key, size_t key_len);
_Atomic(tc__store_hook) tc__hook_before_store_read;
_Atomic(tc__store_hook) tc__hook_before_flight_join;
_Atomic(tc__bus_hook) tc__hook_bus_applied;

tc__edge *tc__cache_edge(tc_cache *c)
{
    return c->edge;
}

tc__redis *tc__cache_redis(tc_cache *c)
{
    return c->redis;
}

const struct tc_config *tc__cache_config(tc_cache *c)
{
    return c->cfg;
}

struct tc__pubsub *tc__cache_pubsub(tc_cache *c)
{
    return c->pubsub;
}

struct tc__refresher *tc__cache_refresher(tc_cache *c)
{
    return c->refresher;
}

struct tc__flights *tc__cache_flights(tc_cache *c)
{
    return c->flights;
}

tc__stats *tc__cache_stats(tc_cache *c)
{
    return &c->stats;
}

struct tc__store *tc__cache_store(tc_cache *c)
{
    return c->store;
}

int tc_version_number(void)
{
    return TC_VERSION_NUMBER;
}

const char *tc_version_string(void)
{
    return TC_VERSION_STRING;
}
