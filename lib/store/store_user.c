/*
 * store_user.c - a store made of the caller's callbacks (tc_config_set_store, in config.c,
 * makes the definition with tc__user_store_new).
 *
 * The definition (the callbacks, userdata and its destructor) is shared by the config that
 * received it, every copy of that config and every handle opened from one, so it is counted:
 * userdata is released once, by whichever of them lets go last. A handle may outlive its config
 * (tc_open copies the config), and a config may open several handles.
 *
 * The adapter turns the callbacks' plain int results into the store contract of store.h: only
 * TC_OK, TC_ENOTFOUND, TC_ENOMEM, TC_ESTORE and (a value over max_value_bytes handed to
 * tc_store_result_set) TC_ETOOBIG leave it, so a callback returning, say, TC_EKEY cannot be
 * mistaken for the caller's own bad key. A version <= 0 is refused: version 0 means
 * "no value" to the caches (negative entries) and the race guard needs versions to increase.
 */
#include "store/store.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct tc__user_store {
    atomic_long refs;
    tc_store_get_fn get;
    tc_store_put_fn put;
    tc_store_del_fn del;
    void *userdata;
    tc_store_free_fn free_userdata;
};

/* What a get callback fills through tc_store_result_set. */
struct tc_store_result {
    tc__value_fn fn;
    void *ctx;
    const void *owner; /* the handle, for messages */
    int64_t max_len;
    int set; /* tc_store_result_set was called */
    int rc;  /* fn's result */
};

typedef struct user_store {
    tc__store base;
    struct tc__user_store *def;
    int64_t max_value_bytes;
} user_store;

void tc__user_store_ref(struct tc__user_store *def)
{
    if (def != NULL)
        atomic_fetch_add_explicit(&def->refs, 1, memory_order_relaxed);
}

void tc__user_store_unref(struct tc__user_store *def)
{
    if (def == NULL || atomic_fetch_sub_explicit(&def->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (def->free_userdata != NULL)
        def->free_userdata(def->userdata);
    free(def);
}

int tc__user_store_new(struct tc__user_store **out, tc_store_get_fn get, tc_store_put_fn put,
                       tc_store_del_fn del, void *userdata, tc_store_free_fn free_userdata)
{
    struct tc__user_store *def = malloc(sizeof *def);
    if (def == NULL)
        return TC_ENOMEM;
    atomic_init(&def->refs, 1);
    def->get = get;
    def->put = put;
    def->del = del;
    def->userdata = userdata;
    def->free_userdata = free_userdata;
    *out = def;
    return TC_OK;
}

int tc_store_result_set(tc_store_result *result, const void *value, size_t len, int64_t version)
{
    if (result == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_store_result_set: result is NULL");
    if (value == NULL && len > 0)
        return tc__err(NULL, TC_EINVAL, "tc_store_result_set: value is NULL, len is %zu", len);
    if (version <= 0)
        return tc__err(NULL, TC_EINVAL,
                       "tc_store_result_set: version must be > 0 (got %lld)",
                       (long long)version);
    if (result->set)
        return tc__err(NULL, TC_ESTATE, "tc_store_result_set: called twice for one get");
    result->set = 1;
    if ((uint64_t)len > (uint64_t)result->max_len)
        return result->rc = tc__err(result->owner, TC_ETOOBIG,
                                    "store callback get: a value of %zu bytes exceeds "
                                    "max_value_bytes (%lld)",
                                    len, (long long)result->max_len);
    result->rc = result->fn(result->ctx, len > 0 ? value : "", len, version, -1);
    return result->rc;
}

/* A callback's failure, as the store contract allows it out. */
static int callback_failed(const user_store *s, const char *what, int rc)
{
    if (rc == TC_ENOMEM)
        return tc__err(s->base.owner, TC_ENOMEM, "store callback %s: out of memory", what);
    return tc__err(s->base.owner, TC_ESTORE, "store callback %s failed: %s (%d)", what,
                   tc_strerror(rc), rc);
}

/* The callbacks get a NUL-terminated key (convenient from C and through FFI) in buf, which holds
 * TC_KEY_MAX + 1 bytes; the key is checked again, as the built-in stores do. */
static int key_arg(const user_store *s, char *buf, const char *key, size_t key_len)
{
    int rc = tc__check_key(s->base.owner, key, key_len);
    if (rc == TC_OK) {
        memcpy(buf, key, key_len);
        buf[key_len] = '\0';
    }
    return rc;
}

static int user_get(tc__store *st, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    user_store *s = (user_store *)st;
    char kbuf[TC_KEY_MAX + 1];
    int krc = key_arg(s, kbuf, key, key_len);
    if (krc != TC_OK)
        return krc;
    struct tc_store_result r = {fn, ctx, s->base.owner, s->max_value_bytes, 0, TC_OK};
    int rc = s->def->get(s->def->userdata, kbuf, key_len, &r);
    if (rc == TC_ENOTFOUND)
        return TC_ENOTFOUND;
    if (rc != TC_OK)
        return r.set && rc == r.rc ? rc : callback_failed(s, "get", rc);
    if (!r.set)
        return tc__err(s->base.owner, TC_ESTORE,
                       "store callback get returned TC_OK without tc_store_result_set");
    return r.rc;
}

/* A version the caches can trust: > 0. */
static int check_version(const user_store *s, const char *what, int64_t v)
{
    if (v > 0)
        return TC_OK;
    return tc__err(s->base.owner, TC_ESTORE,
                   "store callback %s returned TC_OK with version %lld (must be > 0)", what,
                   (long long)v);
}

static int user_put(tc__store *st, const char *key, size_t key_len, const void *value, size_t len,
                    int64_t *out_version)
{
    user_store *s = (user_store *)st;
    char kbuf[TC_KEY_MAX + 1];
    int krc = key_arg(s, kbuf, key, key_len);
    if (krc != TC_OK)
        return krc;
    int64_t v = 0;
    int rc = s->def->put(s->def->userdata, kbuf, key_len,
                         len > 0 ? value : "", len, &v);
    if (rc != TC_OK)
        return callback_failed(s, "put", rc);
    *out_version = v;
    return check_version(s, "put", v);
}

static int user_del(tc__store *st, const char *key, size_t key_len, int64_t *out_version)
{
    user_store *s = (user_store *)st;
    char kbuf[TC_KEY_MAX + 1];
    int krc = key_arg(s, kbuf, key, key_len);
    if (krc != TC_OK)
        return krc;
    int64_t v = 0;
    int rc = s->def->del(s->def->userdata, kbuf, key_len, &v);
    if (rc != TC_OK)
        return callback_failed(s, "del", rc);
    *out_version = v;
    return check_version(s, "del", v);
}

static void user_close(tc__store *st)
{
    user_store *s = (user_store *)st;
    tc__user_store_unref(s->def);
    free(s);
}

/* No change feed: a database of the caller's own tells the caches of changes made around the
 * library by calling tc_invalidate itself. */
static const tc__store_ops user_ops = {
    .get = user_get,
    .put = user_put,
    .del = user_del,
    .close = user_close,
};

int tc__store_user_open(tc__store **out, struct tc__user_store *def, int64_t max_value_bytes,
                        const void *owner)
{
    *out = NULL;
    user_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return tc__err(owner, TC_ENOMEM, "store: out of memory");
    s->base.ops = &user_ops;
    s->base.owner = owner;
    tc__user_store_ref(def);
    s->def = def;
    s->max_value_bytes = max_value_bytes;
    *out = &s->base;
    return TC_OK;
}
