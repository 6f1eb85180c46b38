/*
 * pubsub_api.c - the public pub/sub calls (tc_publish, tc_subscribe, tc_unsubscribe), on top of
 * the handle: channels live in the handle's namespace, and the subscriber engine they use is
 * redis/subscriber.c's, the same that carries the invalidation bus.
 */
#include "core/cache.h"
#include "redis/pubsub.h"
#include "redis/redis_tier.h"

#include <hiredis.h>
#include <stdlib.h>
#include <string.h>

/* In a fork()ed child, the first call on the handle repairs it whole (core/fork.c: the edge
 * emptied, the refresher forgotten, these subscriptions back); otherwise one atomic load. */
int tc_publish(int64_t *out_receivers, tc_cache *cache, const char *channel,
               size_t channel_len, const void *message, size_t message_len)
{
    if (out_receivers != NULL)
        *out_receivers = 0;
    if (cache == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_publish: cache is NULL");
    if (message == NULL && message_len > 0)
        return tc__err(cache, TC_EINVAL, "tc_publish: message is NULL");
    int rc = tc__check_key(cache, channel, channel_len);
    if (rc != TC_OK)
        return rc;
    tc__redis *r = tc__cache_redis(cache);
    if (r == NULL)
        return tc__err(cache, TC_EREDIS, "tc_publish: no Redis is configured");
    tc__cache_fork_check(cache);
    size_t ns_len;
    const char *ns = tc__redis_namespace(r, &ns_len);
    char *name = malloc(ns_len + channel_len);
    if (name == NULL)
        return tc__err(cache, TC_ENOMEM, "tc_publish: out of memory");
    memcpy(name, ns, ns_len);
    memcpy(name + ns_len, channel, channel_len);
    const char *argv[3] = {"PUBLISH", name, message != NULL ? message : ""};
    size_t lens[3] = {7, ns_len + channel_len, message_len};
    redisReply *reply = NULL;
    rc = tc__redis_run(r, "PUBLISH", 0 /* never sent twice */, 3, argv, lens, &reply);
    free(name);
    if (rc != TC_OK)
        return rc;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            rc = tc__err(cache, TC_EPROTO, "tc_publish: the server replied: %.120s", reply->str);
        else
            rc = tc__err(cache, TC_EPROTO, "tc_publish: the reply is not an integer");
        freeReplyObject(reply);
        return rc;
    }
    if (out_receivers != NULL)
        *out_receivers = (int64_t)reply->integer;
    freeReplyObject(reply);
    return TC_OK;
}

int tc_subscribe(tc_subscription **out, tc_cache *cache, const char *channel,
                 size_t channel_len, tc_message_fn fn, void *ctx)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_subscribe: out is NULL");
    *out = NULL;
    if (cache == NULL || fn == NULL)
        return tc__err(cache, TC_EINVAL, "tc_subscribe: cache or fn is NULL");
    tc__pubsub *p = tc__cache_pubsub(cache);
    if (p == NULL) {
        int rc = tc__check_key(cache, channel, channel_len);
        return rc != TC_OK ? rc : tc__err(cache, TC_EREDIS, "tc_subscribe: no Redis is configured");
    }
    tc__cache_fork_check(cache);
    tc__sub *s;
    int rc = tc__pubsub_subscribe(&s, p, channel, channel_len, fn, NULL, ctx, 1);
    if (rc == TC_OK)
        *out = (tc_subscription *)s;
    return rc;
}

void tc_unsubscribe(tc_subscription *sub)
{
    tc__pubsub_unsubscribe((tc__sub *)sub);
}
