/*
 * pubsub.c - STUB, being written: see pubsub.h.
 */
#include "pubsub.h"

#include <stdlib.h>

struct tc__pubsub {
    int unused;
};

int tc__pubsub_new(tc__pubsub **out, const tc__pubsub_opts *opts, const void *owner)
{
    (void)opts, (void)owner;
    *out = calloc(1, sizeof **out);
    return *out ? TC_OK : TC_ENOMEM;
}

void tc__pubsub_free(tc__pubsub *p)
{
    free(p);
}

int tc__pubsub_subscribe(tc__sub **out, tc__pubsub *p, const char *channel, size_t channel_len,
                         tc__message_fn fn, tc__link_fn on_link, void *ctx, int wait)
{
    *out = NULL;
    return TC_EREDIS;
}

void tc__pubsub_unsubscribe(tc__sub *s)
{
}

void tc__pubsub_after_fork(tc__pubsub *p)
{
}

int tc__pubsub_resume(tc__pubsub *p)
{
    return TC_OK;
}
