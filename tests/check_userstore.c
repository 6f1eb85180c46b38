/*
 * check_userstore.c - a store of the caller's own (tc_config_set_store): an in-memory map behind
 * the three callbacks, the way a user puts the caches in front of a database of theirs.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tc_test.h"

#define K(s) (s), strlen(s)
#define SLOTS 64

/* The user's "database": a map with a version counter and a call log. */
typedef struct mapdb {
    pthread_mutex_t mu;
    struct {
        char key[TC_KEY_MAX + 1];
        char value[256];
        size_t len;
        int64_t version;
        int used;
    } row[SLOTS];
    int64_t seq;
    atomic_int gets, puts, dels;
    atomic_int fail;        /* callbacks return this when non-zero */
    atomic_int bad_version; /* put and del report version 0 */
    atomic_int get_delay_ms;
    atomic_int freed;
} mapdb;

static int find_row(mapdb *db, const char *key)
{
    for (int i = 0; i < SLOTS; i++)
        if (db->row[i].used && strcmp(db->row[i].key, key) == 0)
            return i;
    return -1;
}

static int map_get(void *ud, const char *key, size_t key_len, tc_store_result *result)
{
    mapdb *db = ud;
    atomic_fetch_add(&db->gets, 1);
    ck_assert_uint_eq(strlen(key), key_len); /* NUL-terminated, as documented */
    if (atomic_load(&db->get_delay_ms) > 0)
        tct_sleep_ms(atomic_load(&db->get_delay_ms));
    if (atomic_load(&db->fail))
        return atomic_load(&db->fail);
    pthread_mutex_lock(&db->mu);
    int i = find_row(db, key), rc = TC_ENOTFOUND;
    if (i >= 0)
        rc = tc_store_result_set(result, db->row[i].value, db->row[i].len, db->row[i].version);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

static int map_put(void *ud, const char *key, size_t key_len, const void *value, size_t len,
                   int64_t *out_version)
{
    mapdb *db = ud;
    atomic_fetch_add(&db->puts, 1);
    if (atomic_load(&db->fail))
        return atomic_load(&db->fail);
    if (len > sizeof db->row[0].value)
        return TC_ETOOBIG;
    pthread_mutex_lock(&db->mu);
    int i = find_row(db, key);
    for (int j = 0; i < 0 && j < SLOTS; j++)
        if (!db->row[j].used)
            i = j;
    ck_assert_int_ge(i, 0);
    memcpy(db->row[i].key, key, key_len + 1);
    memcpy(db->row[i].value, value, len);
    db->row[i].len = len;
    db->row[i].version = ++db->seq;
    db->row[i].used = 1;
    *out_version = atomic_load(&db->bad_version) ? 0 : db->seq;
    pthread_mutex_unlock(&db->mu);
    return TC_OK;
}

static int map_del(void *ud, const char *key, size_t key_len, int64_t *out_version)
{
    mapdb *db = ud;
    (void)key_len;
    atomic_fetch_add(&db->dels, 1);
    if (atomic_load(&db->fail))
        return atomic_load(&db->fail);
    pthread_mutex_lock(&db->mu);
    int i = find_row(db, key);
    if (i >= 0)
        db->row[i].used = 0;
    *out_version = atomic_load(&db->bad_version) ? 0 : ++db->seq;
    pthread_mutex_unlock(&db->mu);
    return TC_OK;
}

static void map_free(void *ud)
{
    atomic_fetch_add(&((mapdb *)ud)->freed, 1);
}

static mapdb *map_new(void)
{
    mapdb *db = calloc(1, sizeof *db);
    ck_assert_ptr_nonnull(db);
    pthread_mutex_init(&db->mu, NULL);
    return db;
}

static void map_delete(mapdb *db)
{
    pthread_mutex_destroy(&db->mu);
    free(db);
}

/* A handle on db, no Redis; extra JSON applied first (NULL for none). */
static tc_cache *open_on(mapdb *db, const char *extra)
{
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    if (extra != NULL)
        ck_assert_int_eq(tc_config_load_json(cfg, extra, strlen(extra)), TC_OK);
    ck_assert_int_eq(tc_config_set_store(cfg, map_get, map_put, map_del, db, map_free), TC_OK);
    tc_cache *c = NULL;
    int rc = tc_open(&c, cfg);
    ck_assert_msg(rc == TC_OK, "tc_open: %s", tc_errmsg(NULL));
    tc_config_free(cfg);
    return c;
}

START_TEST(test_read_through_and_write_through)
{
    mapdb *db = map_new();
    tc_cache *c = open_on(db, NULL);
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_ENOTFOUND);
    ck_assert_int_eq(atomic_load(&db->gets), 1);

    ck_assert_int_eq(tc_put(c, K("k"), "a\0b", 3, 0), TC_OK);
    ck_assert_int_eq(atomic_load(&db->puts), 1);
    ck_assert_int_eq(db->row[find_row(db, "k")].len, 3); /* committed before put returned */
    int64_t ver = 0;
    unsigned info = 0;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, &ver, c, K("k")), TC_OK);
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(v, "a\0b", 3), 0);
    ck_assert_int_eq(ver, 1);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_EDGE); /* the put filled the edge */
    tc_free(v);
    ck_assert_int_eq(atomic_load(&db->gets), 1);

    /* A row the cache never saw is read through once, then served by the edge. */
    pthread_mutex_lock(&db->mu);
    strcpy(db->row[10].key, "other");
    db->row[10].len = 0;
    db->row[10].version = ++db->seq;
    db->row[10].used = 1;
    pthread_mutex_unlock(&db->mu);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tc_get(&v, &len, c, K("other")), TC_OK);
        ck_assert_uint_eq(len, 0);
        tc_free(v);
    }
    ck_assert_int_eq(atomic_load(&db->gets), 2);

    ck_assert_int_eq(tc_del(c, K("k")), TC_OK);
    ck_assert_int_eq(find_row(db, "k"), -1);
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_ENOTFOUND);
    tc_close(c);
    ck_assert_int_eq(atomic_load(&db->freed), 1);
    map_delete(db);
}
END_TEST

START_TEST(test_failures_map_to_store_errors)
{
    mapdb *db = map_new();
    tc_cache *c = open_on(db, NULL);
    ck_assert_int_eq(tc_put(c, K("k"), "v1", 2, 0), TC_OK);

    /* A failed put changes nothing: the cached v1 stays, the store error is reported. */
    atomic_store(&db->fail, TC_EKEY); /* an odd code from the callback: still a store error */
    ck_assert_int_eq(tc_put(c, K("k"), "v2", 2, 0), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "put"));
    ck_assert_int_eq(tc_del(c, K("k")), TC_ESTORE);
    atomic_store(&db->fail, 0);
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, c, K("k")), TC_OK);
    ck_assert_int_eq(memcmp(v, "v1", 2), 0);
    tc_free(v);

    /* A read failure on a miss is a store error. */
    atomic_store(&db->fail, TC_ESTORE);
    ck_assert_int_eq(tc_get(&v, &len, c, K("absent")), TC_ESTORE);
    atomic_store(&db->fail, 0);

    /* A version the caches cannot trust is refused. */
    atomic_store(&db->bad_version, 1);
    ck_assert_int_eq(tc_put(c, K("k"), "v3", 2, 0), TC_ESTORE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "version"));
    atomic_store(&db->bad_version, 0);
    tc_close(c);
    map_delete(db);
}
END_TEST

/* The get callback misbehaving: no value with TC_OK, two values, a too-large value. */
static int get_no_value(void *ud, const char *key, size_t key_len, tc_store_result *result)
{
    return TC_OK;
}
static int get_twice(void *ud, const char *key, size_t key_len, tc_store_result *result)
{
    ck_assert_int_eq(tc_store_result_set(result, "x", 1, 1), TC_OK);
    ck_assert_int_eq(tc_store_result_set(result, "y", 1, 2), TC_ESTATE);
    ck_assert_int_eq(tc_store_result_set(NULL, "y", 1, 2), TC_EINVAL);
    return TC_OK;
}
static int get_bad(void *ud, const char *key, size_t key_len, tc_store_result *result)
{
    static char big[2048];
    ck_assert_int_eq(tc_store_result_set(result, NULL, 1, 1), TC_EINVAL);
    ck_assert_int_eq(tc_store_result_set(result, "x", 1, 0), TC_EINVAL);
    return tc_store_result_set(result, big, sizeof big, 1);
}

START_TEST(test_misbehaving_get_callbacks)
{
    tc_store_get_fn fns[] = {get_no_value, get_twice, get_bad};
    int want[] = {TC_ESTORE, TC_OK, TC_ETOOBIG};
    for (int i = 0; i < 3; i++) {
        tc_config *cfg;
        ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
        ck_assert_int_eq(tc_config_set_int(cfg, "max_value_bytes", 1024), TC_OK);
        ck_assert_int_eq(tc_config_set_store(cfg, fns[i], map_put, map_del, NULL, NULL), TC_OK);
        tc_cache *c;
        ck_assert_int_eq(tc_open(&c, cfg), TC_OK);
        tc_config_free(cfg);
        void *v = NULL;
        size_t len;
        int rc = tc_get(&v, &len, c, K("k"));
        ck_assert_msg(rc == want[i], "case %d: %s (%s)", i, tc_strerror(rc), tc_errmsg(c));
        tc_free(v);
        tc_close(c);
    }
}
END_TEST

START_TEST(test_set_store_arguments_and_ownership)
{
    mapdb *db = map_new();
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_eq(tc_config_set_store(NULL, map_get, map_put, map_del, db, map_free),
                     TC_EINVAL);
    ck_assert_int_eq(tc_config_set_store(cfg, map_get, NULL, map_del, db, map_free), TC_EINVAL);
    ck_assert_int_eq(tc_config_set_store(cfg, NULL, NULL, NULL, db, NULL), TC_EINVAL);
    ck_assert_int_eq(atomic_load(&db->freed), 0); /* failures never take ownership */

    /* Replaced: the first definition is released at once. */
    ck_assert_int_eq(tc_config_set_store(cfg, map_get, map_put, map_del, db, map_free), TC_OK);
    ck_assert_int_eq(tc_config_set_store(cfg, map_get, map_put, map_del, db, map_free), TC_OK);
    ck_assert_int_eq(atomic_load(&db->freed), 1);

    /* Two handles and the config share it: released once, by the last. */
    tc_cache *a, *b;
    ck_assert_int_eq(tc_open(&a, cfg), TC_OK);
    ck_assert_int_eq(tc_config_load_json(cfg, K("{\"default_ttl_ms\": 1000}")), TC_OK);
    ck_assert_int_eq(tc_open(&b, cfg), TC_OK);
    tc_config_free(cfg);
    ck_assert_int_eq(tc_put(a, K("k"), "v", 1, 0), TC_OK);
    tc_close(a);
    ck_assert_int_eq(atomic_load(&db->freed), 1);
    void *v;
    size_t len;
    ck_assert_int_eq(tc_get(&v, &len, b, K("k")), TC_OK); /* b's edge missed: the map answers */
    tc_free(v);
    tc_close(b);
    ck_assert_int_eq(atomic_load(&db->freed), 2);

    /* Removing the store brings store.type back. */
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_eq(tc_config_set_store(cfg, map_get, map_put, map_del, db, map_free), TC_OK);
    ck_assert_int_eq(tc_config_set_store(cfg, NULL, NULL, NULL, NULL, NULL), TC_OK);
    ck_assert_int_eq(atomic_load(&db->freed), 3);
    tc_config_free(cfg);
    map_delete(db);
}
END_TEST

/* Many threads missing on one key: the callback is asked once (single-flight). */
typedef struct {
    tc_cache *c;
    atomic_int *ok, *go;
} reader_arg;

static void *read_hot(void *p)
{
    reader_arg *a = p;
    while (!atomic_load(a->go)) /* all at once, however slowly the threads start (valgrind) */
        sched_yield();
    void *v;
    size_t len;
    if (tc_get(&v, &len, a->c, K("hot")) == TC_OK && len == 3 && memcmp(v, "hot", 3) == 0)
        atomic_fetch_add(a->ok, 1);
    tc_free(v);
    return NULL;
}

START_TEST(test_concurrent_misses_one_callback)
{
    mapdb *db = map_new();
    tc_cache *c = open_on(db, NULL);
    pthread_mutex_lock(&db->mu);
    strcpy(db->row[0].key, "hot");
    memcpy(db->row[0].value, "hot", 3);
    db->row[0].len = 3;
    db->row[0].version = ++db->seq;
    db->row[0].used = 1;
    pthread_mutex_unlock(&db->mu);
    atomic_store(&db->get_delay_ms, 50);
    atomic_int ok = 0, go = 0;
    reader_arg arg = {c, &ok, &go};
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, read_hot, &arg), 0);
    atomic_store(&go, 1);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&ok), 8);
    ck_assert_int_eq(atomic_load(&db->gets), 1);
    tc_close(c);
    map_delete(db);
}
END_TEST

Suite *userstore_suite(void)
{
    Suite *s = suite_create("userstore");
    TCase *tc = tcase_create("callbacks");
    tcase_add_test(tc, test_read_through_and_write_through);
    tcase_add_test(tc, test_failures_map_to_store_errors);
    tcase_add_test(tc, test_misbehaving_get_callbacks);
    tcase_add_test(tc, test_set_store_arguments_and_ownership);
    tcase_add_test(tc, test_concurrent_misses_one_callback);
    suite_add_tcase(s, tc);
    return s;
}
