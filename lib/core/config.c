/*
 * config.c - the configuration object: defaults, typed setters, the JSON loader.
 *
 * One table describes every option (name, type, where it lives, range), so the JSON loader, the
 * setters and the documentation cannot disagree about what exists. Unknown names are errors:
 * a typo in a config file must not silently fall back to a default.
 */
#include "core/config.h"
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_INT, OPT_BOOL, OPT_STR };

typedef struct opt {
    const char *name;
    enum opt_type type;
    size_t offset;
    int64_t min, max;                          /* ints: value range; strings: length range */
    int (*check)(const char *s, char *why, size_t n); /* strings: extra validation */
} opt;

static int check_table(const char *s, char *why, size_t n);
static int check_store_type(const char *s, char *why, size_t n);
static int check_pipelining(const char *s, char *why, size_t n);

#define F(field) offsetof(struct tc_config, field)
#define DAY_MS (86400LL * 1000)
static const opt options[] = {
    {"default_ttl_ms", OPT_INT, F(default_ttl_ms), 1, 365 * DAY_MS, NULL},
    {"max_value_bytes", OPT_INT, F(max_value_bytes), 1, 512LL << 20, NULL},
    {"tombstone_ttl_ms", OPT_INT, F(tombstone_ttl_ms), 1, DAY_MS, NULL},
    {"ttl_jitter_pct", OPT_INT, F(ttl_jitter_pct), 0, 50, NULL},
    {"negative_ttl_ms", OPT_INT, F(negative_ttl_ms), 0, DAY_MS, NULL},
    {"single_flight", OPT_BOOL, F(single_flight), 0, 1, NULL},
    {"edge.enabled", OPT_BOOL, F(edge_enabled), 0, 1, NULL},
    {"edge.max_entries", OPT_INT, F(edge_max_entries), 1, 1LL << 40, NULL},
    {"edge.max_bytes", OPT_INT, F(edge_max_bytes), 4096, 1LL << 50, NULL},
    {"edge.max_ttl_ms", OPT_INT, F(edge_max_ttl_ms), 1, 365 * DAY_MS, NULL},
    {"redis.host", OPT_STR, F(redis_host), 0, 255, NULL},
    {"redis.port", OPT_INT, F(redis_port), 1, 65535, NULL},
    {"redis.unix_socket", OPT_STR, F(redis_unix_socket), 0, 107, NULL}, /* sun_path */
    /* Not empty: recovering from an outage may clear every key under the namespace, and an
     * empty one would be the whole database, other applications' keys included. */
    {"redis.namespace", OPT_STR, F(redis_namespace), 1, 128, NULL},
    {"redis.connect_timeout_ms", OPT_INT, F(redis_connect_timeout_ms), 1, 60000, NULL},
    {"redis.command_timeout_ms", OPT_INT, F(redis_command_timeout_ms), 1, 60000, NULL},
    {"redis.retry_interval_ms", OPT_INT, F(redis_retry_interval_ms), 0, 600000, NULL},
    {"redis.retry_max_ms", OPT_INT, F(redis_retry_max_ms), 0, 3600000, NULL},
    {"redis.username", OPT_STR, F(redis_username), 0, 255, NULL},
    {"redis.password", OPT_STR, F(redis_password), 0, 1024, NULL},
    {"redis.database", OPT_INT, F(redis_database), 0, 65535, NULL},
    {"redis.keepalive", OPT_BOOL, F(redis_keepalive), 0, 1, NULL},
    {"redis.bus", OPT_BOOL, F(redis_bus), 0, 1, NULL},
    {"redis.tracking", OPT_BOOL, F(redis_tracking), 0, 1, NULL},
    {"redis.bus_channel", OPT_STR, F(redis_bus_channel), 1, 128, NULL},
    {"redis.pipelining", OPT_STR, F(redis_pipelining), 1, 8, check_pipelining},
    {"store.type", OPT_STR, F(store_type), 1, 32, check_store_type},
    {"store.path", OPT_STR, F(store_path), 1, 4096, NULL},
    {"store.table", OPT_STR, F(store_table), 1, 64, check_table},
    {"store.busy_timeout_ms", OPT_INT, F(store_busy_timeout_ms), 0, 600000, NULL},
    {"store.conninfo", OPT_STR, F(store_conninfo), 0, 4096, NULL},
    {"store.pool_size", OPT_INT, F(store_pool_size), 1, 1024, NULL},
    {"store.stale_window_ms", OPT_INT, F(store_stale_window_ms), 0, DAY_MS, NULL},
    {"store.region", OPT_STR, F(store_region), 0, 64, NULL},
    {"store.endpoint", OPT_STR, F(store_endpoint), 0, 1024, NULL},
    {"store.streams_endpoint", OPT_STR, F(store_streams_endpoint), 0, 1024, NULL},
    {"store.access_key_id", OPT_STR, F(store_access_key_id), 0, 256, NULL},
    {"store.secret_access_key", OPT_STR, F(store_secret_access_key), 0, 256, NULL},
    {"store.session_token", OPT_STR, F(store_session_token), 0, 4096, NULL},
    {"store.key_attribute", OPT_STR, F(store_key_attribute), 1, 255, NULL},
    {"store.value_attribute", OPT_STR, F(store_value_attribute), 1, 255, NULL},
    {"store.version_attribute", OPT_STR, F(store_version_attribute), 1, 255, NULL},
    {"store.create_table", OPT_BOOL, F(store_create_table), 0, 1, NULL},
    {"store.timeout_ms", OPT_INT, F(store_timeout_ms), 1, 600000, NULL},
    {"feed.consumer", OPT_STR, F(feed_consumer), 1, 128, NULL},
    {"feed.poll_ms", OPT_INT, F(feed_poll_ms), 1, 600000, NULL},
    {"feed.batch", OPT_INT, F(feed_batch), 1, 100000, NULL},
    {"feed.lease_ms", OPT_INT, F(feed_lease_ms), 100, 3600000, NULL},
    {"feed.retention_ms", OPT_INT, F(feed_retention_ms), 0, 365 * DAY_MS, NULL},
    {"lease_ms", OPT_INT, F(lease_ms), 0, 600000, NULL},
    {"lease_wait_ms", OPT_INT, F(lease_wait_ms), 0, 600000, NULL},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static int check_table(const char *s, char *why, size_t n)
{
    /* The table name is the one thing pasted into SQL, so it is held to an identifier. */
    for (const char *p = s; *p; p++) {
        int ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_' ||
                 (p != s && *p >= '0' && *p <= '9');
        if (!ok) {
            snprintf(why, n, "must match [A-Za-z_][A-Za-z0-9_]*");
            return -1;
        }
    }
    return 0;
}

static int check_pipelining(const char *s, char *why, size_t n)
{
    if (strcmp(s, "auto") == 0 || strcmp(s, "off") == 0)
        return 0;
    snprintf(why, n, "unknown pipelining \"%s\" (known: auto, off)", s);
    return -1;
}

static int check_store_type(const char *s, char *why, size_t n)
{
    if (strcmp(s, "sqlite") == 0 || strcmp(s, "postgres") == 0 || strcmp(s, "none") == 0 ||
        strcmp(s, "dynamodb") == 0)
        return 0;
    /* "callbacks" is set by tc_config_set_store, never by name. */
    snprintf(why, n, "unknown store type \"%s\" (known: sqlite, postgres, dynamodb, none)", s);
    return -1;
}

static const opt *find_option(const char *name)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* True when name is a section ("redis") that holds options ("redis.host"). */
static int is_section(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strncmp(options[i].name, name, n) == 0 && options[i].name[n] == '.')
            return 1;
    return 0;
}

static int cfg_fail(tc_config *cfg, const char *fmt, ...) TC__PRINTF(2, 3);
static int cfg_fail(tc_config *cfg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->errmsg, sizeof cfg->errmsg, fmt, ap);
    va_end(ap);
    tc__err(NULL, TC_ECONFIG, "config: %s", cfg->errmsg);
    return TC_ECONFIG;
}

static char **str_slot(tc_config *cfg, const opt *o)
{
    return (char **)((char *)cfg + o->offset);
}

static int set_int_opt(tc_config *cfg, const opt *o, int64_t v)
{
    if (v < o->min || v > o->max)
        return cfg_fail(cfg, "%s: %lld is out of range [%lld, %lld]", o->name, (long long)v,
                        (long long)o->min, (long long)o->max);
    *(int64_t *)((char *)cfg + o->offset) = v;
    return TC_OK;
}

static int set_str_opt(tc_config *cfg, const opt *o, const char *s, size_t len)
{
    char why[160];
    if (memchr(s, '\0', len) != NULL)
        return cfg_fail(cfg, "%s: contains a NUL byte", o->name);
    if ((int64_t)len < o->min || (int64_t)len > o->max)
        return cfg_fail(cfg, "%s: length %zu is out of range [%lld, %lld]", o->name, len,
                        (long long)o->min, (long long)o->max);
    char *copy = strndup(s, len);
    if (copy == NULL)
        return tc__err(NULL, TC_ENOMEM, "config: out of memory");
    if (o->check != NULL && o->check(copy, why, sizeof why) != 0) {
        free(copy);
        return cfg_fail(cfg, "%s: %s", o->name, why);
    }
    char **slot = str_slot(cfg, o);
    free(*slot);
    *slot = copy;
    return TC_OK;
}

static const char *type_name(enum opt_type t)
{
    return t == OPT_INT ? "an integer" : t == OPT_BOOL ? "a boolean" : "a string";
}

static const opt *lookup(tc_config *cfg, const char *name, enum opt_type want, int *rc)
{
    const opt *o = find_option(name);
    if (o == NULL) {
        *rc = cfg_fail(cfg, "unknown option \"%s\"", name);
        return NULL;
    }
    if (o->type != want) {
        *rc = cfg_fail(cfg, "%s: must be %s", name, type_name(o->type));
        return NULL;
    }
    return o;
}

static const char *const string_defaults[][2] = {
    {"redis.host", ""},          {"redis.unix_socket", ""}, {"redis.namespace", "tc:"},
    {"redis.username", ""},      {"redis.password", ""},    {"redis.bus_channel", "bus"},
    {"redis.pipelining", "auto"},
    {"store.type", "sqlite"},    {"store.path", "tiercache.db"},
    {"store.table", "tiercache"}, {"store.conninfo", ""},      {"feed.consumer", "invalidator"},
    {"store.region", ""},        {"store.endpoint", ""},    {"store.streams_endpoint", ""},
    {"store.access_key_id", ""}, {"store.secret_access_key", ""},
    {"store.session_token", ""}, {"store.key_attribute", "pk"},
    {"store.value_attribute", "val"}, {"store.version_attribute", "ver"},
};

int tc_config_new(tc_config **out)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_new: out is NULL");
    *out = NULL;
    tc_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return tc__err(NULL, TC_ENOMEM, "config: out of memory");
    cfg->default_ttl_ms = 300000;
    cfg->max_value_bytes = 8 << 20;
    cfg->tombstone_ttl_ms = 10000;
    cfg->ttl_jitter_pct = 10;
    cfg->single_flight = 1;
    cfg->edge_enabled = 1;
    cfg->edge_max_entries = 100000;
    cfg->edge_max_bytes = 64 << 20;
    cfg->edge_max_ttl_ms = 60000;
    cfg->redis_port = 6379;
    cfg->redis_connect_timeout_ms = 200;
    cfg->redis_command_timeout_ms = 500;
    cfg->redis_retry_interval_ms = 1000;
    cfg->redis_retry_max_ms = 30000;
    cfg->redis_keepalive = 1;
    cfg->redis_bus = 1;
    cfg->store_busy_timeout_ms = 5000;
    cfg->store_pool_size = 8;
    cfg->store_timeout_ms = 3000;
    cfg->lease_wait_ms = 50;
    cfg->feed_poll_ms = 100;
    cfg->feed_batch = 256;
    cfg->feed_lease_ms = 5000;
    cfg->feed_retention_ms = 3600000;
    for (size_t i = 0; i < sizeof string_defaults / sizeof string_defaults[0]; i++) {
        const char *v = string_defaults[i][1];
        if (set_str_opt(cfg, find_option(string_defaults[i][0]), v, strlen(v)) != TC_OK) {
            tc_config_free(cfg);
            return TC_ENOMEM;
        }
    }
    *out = cfg;
    return TC_OK;
}

void tc_config_free(tc_config *cfg)
{
    if (cfg == NULL)
        return;
    tc__user_store_unref(cfg->user_store);
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].type == OPT_STR)
            free(*str_slot(cfg, &options[i]));
    free(cfg);
}

int tc__config_dup(tc_config **out, const tc_config *src)
{
    *out = NULL;
    tc_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL)
        return tc__err(NULL, TC_ENOMEM, "config: out of memory");
    memcpy(cfg, src, sizeof *cfg);
    tc__user_store_ref(cfg->user_store); /* the copy holds its own reference */
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].type == OPT_STR)
            *str_slot(cfg, &options[i]) = NULL;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].type != OPT_STR)
            continue;
        const char *s = *str_slot((tc_config *)src, &options[i]);
        if ((*str_slot(cfg, &options[i]) = strdup(s)) == NULL) {
            tc_config_free(cfg);
            return tc__err(NULL, TC_ENOMEM, "config: out of memory");
        }
    }
    *out = cfg;
    return TC_OK;
}

int tc_config_set_int(tc_config *cfg, const char *name, int64_t value)
{
    if (cfg == NULL || name == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_set_int: NULL argument");
    int rc = TC_OK;
    const opt *o = lookup(cfg, name, OPT_INT, &rc);
    return o ? set_int_opt(cfg, o, value) : rc;
}

int tc_config_set_bool(tc_config *cfg, const char *name, int value)
{
    if (cfg == NULL || name == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_set_bool: NULL argument");
    int rc = TC_OK;
    const opt *o = lookup(cfg, name, OPT_BOOL, &rc);
    if (o == NULL)
        return rc;
    *(int *)((char *)cfg + o->offset) = value != 0;
    return TC_OK;
}

int tc_config_set_string(tc_config *cfg, const char *name, const char *value)
{
    if (cfg == NULL || name == NULL || value == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_set_string: NULL argument");
    int rc = TC_OK;
    const opt *o = lookup(cfg, name, OPT_STR, &rc);
    return o ? set_str_opt(cfg, o, value, strlen(value)) : rc;
}

const char *tc_config_errmsg(const tc_config *cfg)
{
    return cfg ? cfg->errmsg : "";
}

/* Applies one JSON object whose members are named prefix + member. */
static int apply_object(tc_config *cfg, json_t *obj, const char *prefix)
{
    const char *member;
    json_t *v;
    json_object_foreach(obj, member, v) {
        char name[128];
        if ((size_t)snprintf(name, sizeof name, "%s%s", prefix, member) >= sizeof name)
            return cfg_fail(cfg, "unknown option \"%s%.40s...\"", prefix, member);
        if (json_is_object(v)) {
            /* The section of tiercache-edge, which reads the same file: not the library's. */
            if (prefix[0] == '\0' && strcmp(name, "edge_server") == 0)
                continue;
            if (!is_section(name)) {
                const opt *o = find_option(name);
                if (o != NULL)
                    return cfg_fail(cfg, "%s: must be %s", name, type_name(o->type));
                return cfg_fail(cfg, "unknown section \"%s\"", name);
            }
            char sub[130];
            snprintf(sub, sizeof sub, "%s.", name);
            int rc = apply_object(cfg, v, sub);
            if (rc != TC_OK)
                return rc;
            continue;
        }
        const opt *o = find_option(name);
        if (o == NULL && is_section(name))
            return cfg_fail(cfg, "%s: must be an object", name);
        if (o == NULL)
            return cfg_fail(cfg, "unknown option \"%s\"", name);
        int rc;
        switch (o->type) {
        case OPT_INT:
            if (!json_is_integer(v))
                return cfg_fail(cfg, "%s: must be an integer", name);
            rc = set_int_opt(cfg, o, json_integer_value(v));
            break;
        case OPT_BOOL:
            if (!json_is_boolean(v))
                return cfg_fail(cfg, "%s: must be true or false", name);
            *(int *)((char *)cfg + o->offset) = json_is_true(v);
            rc = TC_OK;
            break;
        default:
            if (!json_is_string(v))
                return cfg_fail(cfg, "%s: must be a string", name);
            rc = set_str_opt(cfg, o, json_string_value(v), json_string_length(v));
            break;
        }
        if (rc != TC_OK)
            return rc;
    }
    return TC_OK;
}

int tc_config_load_json(tc_config *cfg, const char *json, size_t len)
{
    if (cfg == NULL || json == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_load_json: NULL argument");
    json_error_t jerr;
    /* REJECT_DUPLICATES: a key given twice is almost always a mistake in a hand-edited file. */
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL)
        return cfg_fail(cfg, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return cfg_fail(cfg, "the document must be a JSON object");
    }
    /* All-or-nothing: apply to a copy and keep it only if every member was accepted. */
    tc_config *work;
    int rc = tc__config_dup(&work, cfg);
    if (rc == TC_OK) {
        rc = apply_object(work, root, "");
        if (rc == TC_OK) {
            tc_config tmp = *cfg;
            *cfg = *work;
            *work = tmp;
            cfg->errmsg[0] = '\0';
        } else {
            memcpy(cfg->errmsg, work->errmsg, sizeof cfg->errmsg);
        }
        tc_config_free(work);
    }
    json_decref(root);
    return rc;
}

int tc_config_load_file(tc_config *cfg, const char *path)
{
    if (cfg == NULL || path == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_load_file: NULL argument");
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: %s", path, strerror(errno));
        return tc__err(NULL, TC_EIO, "config: %s", cfg->errmsg);
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = TC_OK;
    for (;;) {
        if (len == cap) {
            /* A config file is small; 16 MiB is far past any real one and stops /dev/zero. */
            if (cap >= (16u << 20)) {
                rc = cfg_fail(cfg, "%s: larger than 16 MiB", path);
                break;
            }
            char *nb = realloc(buf, cap ? cap * 2 : 4096);
            if (nb == NULL) {
                rc = tc__err(NULL, TC_ENOMEM, "config: out of memory");
                break;
            }
            buf = nb;
            cap = cap ? cap * 2 : 4096;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: read error", path);
                rc = tc__err(NULL, TC_EIO, "config: %s", cfg->errmsg);
            }
            break;
        }
    }
    fclose(f);
    if (rc == TC_OK) {
        rc = tc_config_load_json(cfg, buf, len);
        if (rc == TC_ECONFIG) {
            /* Name the file too: "x.json: line 3, column 5: ...". */
            char detail[sizeof cfg->errmsg];
            memcpy(detail, cfg->errmsg, sizeof detail);
            if (snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: %s", path, detail) < 0)
                cfg->errmsg[0] = '\0';
            tc__err(NULL, TC_ECONFIG, "config: %s", cfg->errmsg);
        }
    }
    free(buf);
    return rc;
}

/* The store of the caller's callbacks: the definition is made by the store (store_user.c) and
 * counted, so the config, its copies and the handles opened from them share it. */
int tc_config_set_store(tc_config *cfg, tc_store_get_fn get, tc_store_put_fn put,
                        tc_store_del_fn del, void *userdata, tc_store_free_fn free_userdata)
{
    if (cfg == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_config_set_store: cfg is NULL");
    struct tc__user_store *def = NULL;
    if (get == NULL && put == NULL && del == NULL) {
        if (userdata != NULL || free_userdata != NULL)
            return tc__err(NULL, TC_EINVAL,
                           "tc_config_set_store: userdata given without callbacks");
    } else if (get == NULL || put == NULL || del == NULL) {
        return tc__err(NULL, TC_EINVAL,
                       "tc_config_set_store: the get, put and del callbacks are all required");
    } else if (tc__user_store_new(&def, get, put, del, userdata, free_userdata) != TC_OK) {
        return tc__err(NULL, TC_ENOMEM, "tc_config_set_store: out of memory");
    }
    tc__user_store_unref(cfg->user_store);
    cfg->user_store = def;
    return TC_OK;
}
