/*
 * store_none.c - the caches alone (store.type "none"): for data whose source of truth is not
 * the library's to write, such as an HTTP origin in front of which tiercache-edge caches. Puts
 * and deletes commit nothing; they only hand out the version that the caches' race guard
 * orders writes by. A get finds nothing: a value the caches lost is gone.
 *
 * Versions come from the wall clock in microseconds, kept increasing within the process. Two
 * processes (or hosts) that write one key at the same time are ordered by their clocks, so
 * clock skew between hosts can let the older of two near-simultaneous writes stand; for an
 * HTTP cache both are responses of the origin, and the next write or TTL settles it.
 */
#include "store/store.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

typedef struct none_store {
    tc__store base;
} none_store;

static _Atomic int64_t last_version;

static int64_t next_version(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t want = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t cur = atomic_load_explicit(&last_version, memory_order_relaxed);
    for (;;) {
        int64_t v = want > cur ? want : cur + 1;
        if (atomic_compare_exchange_weak_explicit(&last_version, &cur, v, memory_order_relaxed,
                                                  memory_order_relaxed))
            return v;
    }
}

static int none_get(tc__store *s, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    (void)s, (void)key, (void)key_len, (void)fn, (void)ctx;
    return TC_ENOTFOUND;
}

static int none_put(tc__store *s, const char *key, size_t key_len, const void *value, size_t len,
                    int64_t *out_version)
{
    (void)s, (void)key, (void)key_len, (void)value, (void)len;
    *out_version = next_version();
    return TC_OK;
}

static int none_del(tc__store *s, const char *key, size_t key_len, int64_t *out_version)
{
    (void)s, (void)key, (void)key_len;
    *out_version = next_version();
    return TC_OK;
}

static void none_close(tc__store *s)
{
    free(s);
}

/* No feed: nobody else writes a store that holds nothing. */
static const tc__store_ops none_ops = {
    .get = none_get,
    .put = none_put,
    .del = none_del,
    .close = none_close,
};

int tc__store_none_open(tc__store **out, const void *owner)
{
    none_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return tc__err(owner, TC_ENOMEM, "store none: out of memory");
    s->base.ops = &none_ops;
    s->base.owner = owner;
    *out = &s->base;
    return TC_OK;
}
