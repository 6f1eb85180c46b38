/*
 * custom_store.c - the caches in front of a database of your own.
 *
 * tc_config_set_store takes three callbacks (get, put, del) and a userdata pointer; the library
 * then reads through and writes through them exactly as it does with its built-in SQLite and
 * PostgreSQL stores. Here the "database" is a small in-memory table guarded by a mutex, standing
 * in for a DynamoDB, MySQL or HTTP client. What it must provide:
 *   - versions: every write to a key (deletes included) gives it a larger version, > 0;
 *   - thread safety: the callbacks run on every thread that calls the library;
 *   - put/del return only after the write is durable (the library acknowledges after them).
 *
 * Build: cc custom_store.c $(pkg-config --cflags --libs tiercache) -o custom_store
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tiercache.h>

#define ROWS 128

/* The user's database. */
typedef struct table {
    pthread_mutex_t mu;
    int64_t clock; /* the last version handed out: versions never repeat */
    int reads;     /* how often the caches had to ask */
    struct row {
        char key[TC_KEY_MAX + 1];
        char *value;
        size_t len;
        int64_t version;
    } rows[ROWS];
} table;

static struct row *find(table *t, const char *key, int create)
{
    struct row *free_row = NULL;
    for (int i = 0; i < ROWS; i++) {
        if (t->rows[i].version > 0 && strcmp(t->rows[i].key, key) == 0)
            return &t->rows[i];
        if (free_row == NULL && t->rows[i].version == 0)
            free_row = &t->rows[i];
    }
    return create ? free_row : NULL;
}

static int table_get(void *userdata, const char *key, size_t key_len, tc_store_result *result)
{
    table *t = userdata;
    pthread_mutex_lock(&t->mu);
    t->reads++;
    struct row *r = find(t, key, 0);
    /* tc_store_result_set copies the bytes: the row may change as soon as the lock goes. */
    int rc = r ? tc_store_result_set(result, r->value, r->len, r->version) : TC_ENOTFOUND;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static int table_put(void *userdata, const char *key, size_t key_len, const void *value,
                     size_t len, int64_t *out_version)
{
    table *t = userdata;
    char *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        return TC_ENOMEM;
    memcpy(copy, value, len);
    pthread_mutex_lock(&t->mu);
    struct row *r = find(t, key, 1);
    if (r == NULL) {
        pthread_mutex_unlock(&t->mu);
        free(copy);
        return TC_ESTORE; /* the table is full: a failed write, no cache changes */
    }
    free(r->value);
    memcpy(r->key, key, key_len + 1);
    r->value = copy;
    r->len = len;
    r->version = *out_version = ++t->clock;
    pthread_mutex_unlock(&t->mu);
    return TC_OK;
}

static int table_del(void *userdata, const char *key, size_t key_len, int64_t *out_version)
{
    table *t = userdata;
    pthread_mutex_lock(&t->mu);
    struct row *r = find(t, key, 0);
    if (r != NULL) {
        free(r->value);
        memset(r, 0, sizeof *r);
    }
    *out_version = ++t->clock; /* newer than anything the key had */
    pthread_mutex_unlock(&t->mu);
    return TC_OK;
}

/* Called once, when neither the config nor a handle uses the store any more. */
static void table_free(void *userdata)
{
    table *t = userdata;
    for (int i = 0; i < ROWS; i++)
        free(t->rows[i].value);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static int fail(const char *what, int rc, tc_cache *c)
{
    fprintf(stderr, "custom_store: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(c));
    return 1;
}

int main(void)
{
    table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return 1;
    pthread_mutex_init(&t->mu, NULL);

    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return fail("config", rc, NULL);
    rc = tc_config_set_store(cfg, table_get, table_put, table_del, t, table_free);
    if (rc != TC_OK) {
        table_free(t); /* not taken on failure */
        tc_config_free(cfg);
        return fail("set_store", rc, NULL);
    }
    tc_cache *c;
    rc = tc_open(&c, cfg);
    tc_config_free(cfg); /* the handle keeps the store alive */
    if (rc != TC_OK)
        return fail("open", rc, NULL);

    /* A put is in the table when it returns; reads after it are served by the edge. */
    if ((rc = tc_put(c, "user:42", 7, "{\"name\":\"Ada\"}", 14, 0)) != TC_OK)
        return fail("put", rc, c);
    for (int i = 0; i < 1000; i++) {
        char buf[64];
        size_t len;
        if ((rc = tc_get_into(&len, c, "user:42", 7, buf, sizeof buf)) != TC_OK)
            return fail("get", rc, c);
    }
    void *v;
    size_t len;
    unsigned info;
    int64_t version;
    if ((rc = tc_get_ex(&v, &len, &info, &version, c, "user:42", 7)) != TC_OK)
        return fail("get_ex", rc, c);
    printf("custom_store: user:42 = %.*s (version %lld, from tier %u), table reads: %d\n",
           (int)len, (char *)v, (long long)version, info & 0xff, t->reads);
    tc_free(v);

    /* A delete takes the key out of every tier. */
    if ((rc = tc_del(c, "user:42", 7)) != TC_OK)
        return fail("del", rc, c);
    rc = tc_get(&v, &len, c, "user:42", 7);
    if (rc != TC_ENOTFOUND)
        return fail("get after del", rc, c);
    int ok = t->reads == 1; /* the one read after the delete; the thousand hits never asked */
    tc_close(c);            /* releases the table (table_free) */
    printf("custom_store: %s\n", ok ? "ok" : "unexpected table reads");
    return ok ? 0 : 1;
}
