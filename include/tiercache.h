/*
 * tiercache.h - libtiercache, three cache tiers behind one get/put/del/invalidate API.
 *
 *   edge   in-process memory, nearest the caller
 *   redis  a Redis shared by every process and host (optional)
 *   store  the primary database, written through (SQLite by default)
 *
 * get walks the tiers top-down and fills the tiers it missed on the way back; put commits to
 * the store first and only then updates the caches; del removes from the store and every tier;
 * invalidate removes from the caches only.
 *
 * Conventions (all functions):
 *  - Functions return int: TC_OK (0) on success, a negative TC_E* code otherwise. Codes are
 *    pinned: they are never renumbered, new ones are added at the end.
 *  - tc_strerror(code) gives a static description; tc_errmsg(cache) gives the detail of the
 *    calling thread's last failure.
 *  - Output parameters come first and are named out*. On failure, pointer outputs are set to
 *    NULL and size outputs to 0 unless a function says otherwise.
 *  - Inputs are copied; the library keeps no pointer to caller memory after a call returns.
 *  - Whatever the library allocates for the caller is released with tc_free().
 *  - Keys are byte strings of 1..TC_KEY_MAX bytes that contain no NUL byte. Values are
 *    binary-safe (NUL bytes allowed) of 0..max_value_bytes bytes (see the config).
 *  - Sizes are size_t; times are int64_t milliseconds; versions are int64_t.
 *
 * ABI promise: within one major version (TC_VERSION_MAJOR, also the soname's number) functions
 * are only added, never removed or changed, and error codes are only added.
 */
#ifndef TIERCACHE_H
#define TIERCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ------------------------------------------------------------------------------ */
/* The Makefile reads these three lines; keep their form. */
#define TC_VERSION_MAJOR 0
#define TC_VERSION_MINOR 1
#define TC_VERSION_PATCH 0

#define TC_VERSION_NUMBER (TC_VERSION_MAJOR * 10000 + TC_VERSION_MINOR * 100 + TC_VERSION_PATCH)
#define TC__STR2(x) #x
#define TC__STR(x) TC__STR2(x)
#define TC_VERSION_STRING \
    TC__STR(TC_VERSION_MAJOR) "." TC__STR(TC_VERSION_MINOR) "." TC__STR(TC_VERSION_PATCH)

#if defined(_WIN32)
#define TC_API __declspec(dllexport)
#elif defined(__GNUC__) && __GNUC__ >= 4
#define TC_API __attribute__((visibility("default")))
#else
#define TC_API
#endif

/** TC_VERSION_NUMBER of the library actually linked (may differ from the header's). Thread-safe. */
TC_API int tc_version_number(void);
/** TC_VERSION_STRING of the library actually linked; a static string. Thread-safe. */
TC_API const char *tc_version_string(void);

/* ---- Limits ------------------------------------------------------------------------------- */
/** Longest key in bytes. Redis and SQLite take longer keys; this bound keeps per-entry memory
 *  and log lines predictable. */
#define TC_KEY_MAX 512

/* ---- Error codes (pinned) ------------------------------------------------------------------ */
#define TC_OK         0
#define TC_ENOTFOUND (-1)  /* the key does not exist: a normal outcome, not a failure */
#define TC_EINVAL    (-2)  /* an argument is invalid (NULL pointer, negative TTL, ...) */
#define TC_ENOMEM    (-3)  /* out of memory */
#define TC_ERANGE    (-4)  /* the caller's buffer is too small; *out_len says what is needed */
#define TC_EKEY      (-5)  /* the key is empty, longer than TC_KEY_MAX or contains a NUL byte */
#define TC_ETOOBIG   (-6)  /* the value is larger than max_value_bytes */
#define TC_ECONFIG   (-7)  /* the configuration is malformed, unknown or out of range */
#define TC_EREDIS    (-8)  /* Redis failed or is unreachable */
#define TC_EPROTO    (-9)  /* Redis replied something unexpected */
#define TC_ESTORE    (-10) /* the store (database) failed */
#define TC_EIO       (-11) /* a file could not be read */
#define TC_ESTATE    (-12) /* the call is not valid in the object's current state */

/** A static, never-NULL description of an error code (unknown codes included). Thread-safe. */
TC_API const char *tc_strerror(int code);

/* ---- Memory ------------------------------------------------------------------------------- */
/** Releases memory the library returned (values from tc_get, JSON from tc_stats_json).
 *  NULL is accepted. Thread-safe. */
TC_API void tc_free(void *ptr);

/* ---- Configuration ------------------------------------------------------------------------ */
/**
 * A configuration under construction: created with defaults, changed with the JSON loaders and
 * the typed setters, read by tc_open (which copies it; the config may be freed right after).
 * Not thread-safe: one thread at a time per config object.
 *
 * Options are named by their dotted JSON path. The full list, with types, defaults and ranges:
 *
 *   name                       type    default        meaning
 *   default_ttl_ms             int     300000         TTL of cached entries when put gives 0
 *   max_value_bytes            int     8388608        largest value accepted (1 .. 536870912)
 *   tombstone_ttl_ms           int     10000          life of the marker a del leaves in caches
 *   edge.enabled               bool    true           use the in-process tier
 *   edge.max_entries           int     100000         entry bound (1 .. 2^40)
 *   edge.max_bytes             int     67108864       bound on keys+values+overhead (4096 .. 2^50)
 *   edge.max_ttl_ms            int     60000          cap on an edge entry's TTL; an edge TTL is
 *                                                     never longer than the Redis TTL
 *   redis.host                 string  ""             empty and no unix_socket: no Redis tier
 *   redis.port                 int     6379           1 .. 65535
 *   redis.unix_socket          string  ""             a socket path, used instead of host/port
 *   redis.namespace            string  "tc:"          prefix of every Redis key (1..128 bytes)
 *   redis.connect_timeout_ms   int     200            1 .. 60000
 *   redis.command_timeout_ms   int     500            1 .. 60000
 *   redis.retry_interval_ms    int     1000           after a failed connect, Redis is skipped
 *                                                     (store answers) for this long (0 .. 600000)
 *   redis.retry_max_ms         int     30000          the skip doubles per failure up to this
 *   redis.username             string  ""             ACL user for AUTH (needs redis.password)
 *   redis.password             string  ""             AUTH after each connect; never shown
 *   redis.database             int     0              SELECT after each connect when > 0
 *   redis.keepalive            bool    true           TCP keepalive
 *   redis.bus                  bool    true           publish writes, evict on other handles'
 *   redis.bus_channel          string  "bus"          the bus's channel (under the namespace)
 *   redis.tracking             bool    false          CLIENT TRACKING: Redis-side changes of
 *                                                     keys read from Redis leave the edge
 *   redis.pipelining           string  "auto"         "auto": gets and puts of threads calling
 *                                                     at once (four or more under way) share
 *                                                     one connection and one write; "off": a
 *                                                     connection per thread
 *   store.type                 string  "sqlite"       "sqlite", "postgres", "dynamodb" or
 *                                                     "none" (tc_config_set_store sets a store
 *                                                     of the caller's own)
 *   store.path                 string  "tiercache.db" SQLite file (":memory:" for a private one)
 *   store.table                string  "tiercache"    table name ([A-Za-z_][A-Za-z0-9_]*)
 *   store.busy_timeout_ms      int     5000           SQLite busy timeout (0 .. 600000)
 *   store.conninfo             string  ""             PostgreSQL: libpq conninfo or URI ("":
 *                                                     libpq's defaults); password never shown
 *   store.pool_size            int     8              PostgreSQL: connections kept (1 .. 1024)
 *   store.stale_window_ms      int     0              store down: serve a value at most this
 *                                                     long past its TTL (TC_INFO_STALE); 0: off
 *   store.region               string  ""             DynamoDB: region ("": AWS_REGION, else
 *                                                     AWS_DEFAULT_REGION, else us-east-1)
 *   store.endpoint             string  ""             DynamoDB: http(s)://host[:port] ("": the
 *                                                     region's); store.streams_endpoint: its
 *                                                     Streams' ("": the endpoint's, or region's)
 *   store.access_key_id        string  ""             DynamoDB credentials, used when the
 *   store.secret_access_key    string  ""             environment's AWS_ACCESS_KEY_ID /
 *   store.session_token        string  ""             AWS_SECRET_ACCESS_KEY / ..._SESSION_TOKEN
 *                                                     are not set
 *   store.key_attribute        string  "pk"           DynamoDB: the partition key (a string)
 *   store.value_attribute      string  "val"          DynamoDB: the value (binary; text read too)
 *   store.version_attribute    string  "ver"          DynamoDB: the version (a number)
 *   store.create_table         bool    false          DynamoDB: create the table (with its
 *                                                     stream) and <table>_tc_feed if missing
 *   store.timeout_ms           int     3000           DynamoDB: one call with its retries at most
 *   ttl_jitter_pct             int     10             cache TTLs cut by up to this % at random
 *   negative_ttl_ms            int     0              remember absent keys (edge and Redis)
 *   single_flight              bool    true           one store read per key at a time
 *   lease_ms                   int     0              cross-process miss lease in Redis; 0: off
 *   lease_wait_ms              int     50             wait for another process's lease at most
 *   feed.consumer              string  "invalidator"  the invalidator's checkpoint and lease name
 *   feed.poll_ms               int     100            idle invalidator's fallback look / retry
 *   feed.batch                 int     256            changes applied per step
 *   feed.lease_ms              int     5000           lease; expiry frees it across hosts
 *   feed.retention_ms          int     3600000        applied changes kept in the log this long
 *
 * README.md's configuration reference explains each option at length.
 */
typedef struct tc_config tc_config;

/**
 * Creates a configuration holding the defaults.
 * @param out  receives the new config; NULL on failure.
 * @return TC_OK, TC_EINVAL (out is NULL), TC_ENOMEM.
 * Ownership: the caller frees it with tc_config_free.
 */
TC_API int tc_config_new(tc_config **out);

/** Frees a config. NULL is accepted. */
TC_API void tc_config_free(tc_config *cfg);

/**
 * Applies a JSON document to the config: every option it names is set, others keep their value.
 * All-or-nothing: on any error the config is left unchanged.
 * @param cfg   the config.
 * @param json  the document (need not be NUL-terminated), len bytes.
 * @return TC_OK, TC_EINVAL (NULL argument), TC_ECONFIG (syntax error with line and column, an
 *         unknown key, a wrong type or an out-of-range value; tc_config_errmsg names the key),
 *         TC_ENOMEM.
 */
TC_API int tc_config_load_json(tc_config *cfg, const char *json, size_t len);

/**
 * Like tc_config_load_json, reading the document from a file.
 * @return as tc_config_load_json, plus TC_EIO when the file cannot be read.
 */
TC_API int tc_config_load_file(tc_config *cfg, const char *path);

/**
 * Typed setters by dotted option name (see the table above).
 * @return TC_OK, TC_EINVAL (NULL argument), TC_ECONFIG (unknown option, wrong type for it, or
 *         out of range; the message names the option), TC_ENOMEM.
 */
TC_API int tc_config_set_int(tc_config *cfg, const char *name, int64_t value);
TC_API int tc_config_set_string(tc_config *cfg, const char *name, const char *value);
TC_API int tc_config_set_bool(tc_config *cfg, const char *name, int value);

/** The detail of the config's last failure ("" if none). Owned by the config; valid until the
 *  next call on it. Never NULL (NULL cfg gives ""). */
TC_API const char *tc_config_errmsg(const tc_config *cfg);

/* ---- A store of your own ------------------------------------------------------------------- */
/*
 * The write-through tier's source of truth can be any database the caller can reach: give
 * tc_config_set_store three callbacks and the library puts its caches in front of them (a
 * DynamoDB, MySQL or HTTP client of the caller's own). The same rules hold as for the built-in
 * stores: a put returns only after the put callback said its write committed, and then the caches
 * hold the new value.
 *
 * Versions. Every value a store holds carries a version (an int64_t > 0) that increases with
 * every write to the key, deletes included: a key deleted at version 7 and written again gets a
 * version above 7. The caches use versions to refuse a late fill of an older value (the
 * cache-aside race), so a store whose versions go backwards can make a cache keep an old value
 * until its TTL. A database without versions can use a counter row it increments in the same
 * transaction, or a commit timestamp that never repeats for a key.
 *
 * Threads. The callbacks are called from every thread that calls into the handle and from the
 * library's own background refresh thread, concurrently: they must be thread-safe. A key is read
 * by at most one get callback at a time per handle (single-flight). After fork() the child calls
 * them too: a userdata holding connections must reopen them in the child.
 *
 * Keys handed to the callbacks are NUL-terminated (key_len excludes the NUL) and hold no NUL
 * byte. Values are bytes: they may contain NUL bytes and may be empty.
 */
typedef struct tc_store_result tc_store_result;

/**
 * Reads a key. On success the callback passes the value to tc_store_result_set (once) and
 * returns TC_OK; a key the store lacks gives TC_ENOTFOUND; a failure gives any other code
 * (TC_ESTORE is the usual one; the caller then sees TC_ESTORE unless a stale copy may be served).
 */
typedef int (*tc_store_get_fn)(void *userdata, const char *key, size_t key_len,
                               tc_store_result *result);
/**
 * Writes a key and commits. On success sets *out_version to the version the value now has and
 * returns TC_OK; any other return is a failed write, and no cache changes. value is valid for the
 * call only.
 */
typedef int (*tc_store_put_fn)(void *userdata, const char *key, size_t key_len, const void *value,
                               size_t len, int64_t *out_version);
/**
 * Deletes a key (an absent key included) and commits. On success sets *out_version to a version
 * newer than any the key had and returns TC_OK.
 */
typedef int (*tc_store_del_fn)(void *userdata, const char *key, size_t key_len,
                               int64_t *out_version);
/** Releases userdata, once, when neither a config nor a handle uses the store any longer. */
typedef void (*tc_store_free_fn)(void *userdata);

/**
 * Hands a value to the library from inside a get callback; the bytes are copied, so value may be
 * freed or reused as soon as this returns.
 * @param result   the get callback's result argument.
 * @param value    len bytes (NULL allowed when len is 0).
 * @param version  the value's version, > 0.
 * @return TC_OK, TC_EINVAL (NULL result, NULL value with len > 0, version <= 0), TC_ESTATE
 *         (called twice for one get), TC_ETOOBIG (larger than max_value_bytes), TC_ENOMEM.
 *         The get callback should return what this returned.
 * Thread-safe for distinct results; only valid during the get callback that received result.
 */
TC_API int tc_store_result_set(tc_store_result *result, const void *value, size_t len,
                               int64_t version);

/**
 * Makes the config's store the caller's callbacks, instead of the store.type option. Handles
 * opened from the config (and copies of it) call them. Passing NULL for all five arguments after
 * cfg removes a store set earlier, so that store.type applies again.
 * @param cfg            the config.
 * @param get, put, del  the callbacks; all three are required.
 * @param userdata       handed to every callback; may be NULL.
 * @param free_userdata  called with userdata once the store is no longer used by the config or by
 *                       any handle opened from it (after the last tc_config_free / tc_close that
 *                       held it); may be NULL.
 * @return TC_OK, TC_EINVAL (cfg NULL, or some but not all callbacks NULL), TC_ENOMEM. On failure
 *         free_userdata is not called and the caller still owns userdata.
 * Not thread-safe with other calls on the same config.
 */
TC_API int tc_config_set_store(tc_config *cfg, tc_store_get_fn get, tc_store_put_fn put,
                               tc_store_del_fn del, void *userdata,
                               tc_store_free_fn free_userdata);

/* ---- The cache handle ---------------------------------------------------------------------- */
/**
 * An open cache: the three tiers and their connections.
 * Thread-safe: one handle may be shared by any number of threads. With redis.pipelining "auto"
 * (the default), the gets and puts of threads that call at the same time (four or more calls
 * under way) share one connection and go out together in one write; other calls (fewer under
 * way, pattern and tag invalidation, get_many, and every call with "off") use a connection of
 * the calling thread's, opened lazily and then reused. After fork() the child may keep using
 * the handle: it never touches the parent's sockets or database connection and opens its own.
 * tc_close must not race with other calls on the same handle.
 */
typedef struct tc_cache tc_cache;

/**
 * Opens a cache. The store is opened (and its table created) now; Redis is connected lazily, on
 * each thread's first use, so tc_open succeeds while Redis is down.
 * @param out  receives the handle; NULL on failure.
 * @param cfg  the configuration, or NULL for the defaults. Copied.
 * @return TC_OK, TC_EINVAL, TC_ECONFIG, TC_ESTORE, TC_ENOMEM. On failure, tc_errmsg(NULL) on the
 *         same thread gives the detail.
 */
TC_API int tc_open(tc_cache **out, const tc_config *cfg);

/** Closes a handle and frees everything it owns. NULL is accepted. No other thread may be using
 *  the handle. Do not close the handle tc_shared returned; use tc_shared_reset. */
TC_API void tc_close(tc_cache *cache);

/**
 * The process-wide ("module-scope") handle. The first call in the process (the cold start)
 * builds it from the environment variable TIERCACHE_CONFIG, a file path or inline JSON (a value
 * whose first non-blank character is '{'), or from the defaults when it is unset or empty; every
 * later call (a warm start) returns the same handle. Exactly one handle is built however many
 * threads race on the first call; a failed build is retried by the next call.
 * @param out  receives the handle; NULL on failure. Owned by the library.
 * @return as tc_open, plus TC_EIO for an unreadable config file.
 * Thread-safe, and safe in a child after fork().
 */
TC_API int tc_shared(tc_cache **out);

/**
 * Closes the process-wide handle, so that the next tc_shared builds a new one (tests, a clean
 * shutdown under valgrind). No other thread may be using the shared handle.
 */
TC_API void tc_shared_reset(void);

/**
 * The detail of the calling thread's last failure on this handle, such as
 * "redis 127.0.0.1:6379: Connection refused". "" when the thread's last failure was on another
 * handle or there was none. NULL gives the thread's last failure on any handle, including a
 * failed tc_open. Never NULL; valid until the thread's next call into the library.
 */
TC_API const char *tc_errmsg(const tc_cache *cache);

/* ---- Reads --------------------------------------------------------------------------------- */
/** Where a value came from, the low byte of tc_get_ex's *out_info. */
#define TC_SOURCE_EDGE  1
#define TC_SOURCE_REDIS 2
#define TC_SOURCE_STORE 3
/** A flag of tc_get_ex's *out_info: the value is stale. The store failed and the value is a
 *  copy the caches kept past its TTL, inside store.stale_window_ms (or, for tc_put_http values,
 *  inside stale-while-revalidate or stale-if-error). Always with the last version they knew. */
#define TC_INFO_STALE 0x100u

/**
 * Reads a key: edge, then Redis, then the store; a tier that missed is filled on the way back.
 * A Redis failure is not reported: the store answers instead (Redis down means slower).
 * @param out      receives a copy of the value, allocated by the library, free with tc_free.
 *                 A 0-byte value gives a valid pointer. The copy has a NUL byte after its
 *                 out_len bytes, for convenience with text; the value itself may contain NULs.
 * @param out_len  receives the value's length.
 * @return TC_OK, TC_ENOTFOUND, TC_EINVAL, TC_EKEY, TC_ESTORE, TC_ENOMEM. With the store down,
 *         a value the caches kept less than store.stale_window_ms past its TTL is served
 *         (TC_OK; tc_get_ex marks it TC_INFO_STALE); outside that window the result is TC_ESTORE.
 * Thread-safe.
 */
TC_API int tc_get(void **out, size_t *out_len, tc_cache *cache, const char *key, size_t key_len);

/**
 * Reads a key into the caller's buffer, with no allocation for the caller.
 * @param out_len   receives the value's length, also when the buffer is too small.
 * @param buf       where to copy the value; may be NULL when buf_size is 0.
 * @return as tc_get, plus TC_ERANGE when the value is longer than buf_size: then *out_len is the
 *         size needed and buf is left unchanged.
 * Thread-safe.
 */
TC_API int tc_get_into(size_t *out_len, tc_cache *cache, const char *key, size_t key_len,
                       void *buf, size_t buf_size);

/**
 * tc_get that also says where the value came from and which version it is.
 * @param out_info     if not NULL, receives TC_SOURCE_* in its low byte, and TC_INFO_STALE when
 *                     the value served is stale (0 on failure).
 * @param out_version  if not NULL, receives the store's version of the value (0 on failure).
 * Other parameters, returns and threads as tc_get.
 */
TC_API int tc_get_ex(void **out, size_t *out_len, unsigned *out_info, int64_t *out_version,
                     tc_cache *cache, const char *key, size_t key_len);

/* ---- Writes -------------------------------------------------------------------------------- */
/**
 * Writes through: the store commits the value first (a new version), then Redis and the edge
 * hold it. TC_OK means the store committed. If a cache cannot be updated after the commit, the
 * key is removed from it (or, with Redis unreachable, removed once Redis is back and before this
 * handle reads from it), so no tier of this handle serves the older version.
 * @param value     value_len bytes, binary-safe; may be NULL when value_len is 0.
 * @param ttl_ms    how long caches may keep it; 0 means default_ttl_ms. Negative is TC_EINVAL.
 * @return TC_OK, TC_EINVAL, TC_EKEY, TC_ETOOBIG, TC_ESTORE (nothing was committed and no cache
 *         changed), TC_ENOMEM.
 * Thread-safe. Puts and dels of threads that call at the same time on one handle share one
 * store transaction (group commit, SQLite and PostgreSQL): each returns once that transaction
 * committed, with a version of its own; a call alone is not delayed. If the shared transaction
 * fails, each of its writes is tried again alone, so one write the database refuses fails only
 * that call.
 */
TC_API int tc_put(tc_cache *cache, const char *key, size_t key_len, const void *value,
                  size_t value_len, int64_t ttl_ms);

/**
 * Deletes a key from the store (committed first) and from every tier. Deleting a key that does
 * not exist succeeds.
 * @return TC_OK, TC_EINVAL, TC_EKEY, TC_ESTORE, TC_ENOMEM.
 * Thread-safe.
 */
TC_API int tc_del(tc_cache *cache, const char *key, size_t key_len);

/**
 * Removes a key from the caches only (edge and Redis); the store keeps it, and the next get
 * reads it from there. Succeeds whether or not a cache held the key.
 * @return TC_OK, TC_EINVAL, TC_EKEY, TC_EREDIS or TC_EPROTO (the edge copy is gone but Redis
 *         could not be reached or answered nonsense; the key is removed from Redis before this
 *         handle reads from it again), TC_ENOMEM.
 * Thread-safe.
 */
TC_API int tc_invalidate(tc_cache *cache, const char *key, size_t key_len);

/**
 * Removes from the caches (edge and Redis; the store keeps them) every entry whose key matches a
 * path pattern, as `aws cloudfront create-invalidation --paths` does:
 *   '*'   any run of bytes, '/' included, possibly empty   ("/images/" then '*': all below)
 *   '?'   exactly one byte
 *   '\'   makes the next byte literal ("\*" is a star)
 *   any other byte matches itself (case-sensitive). A pattern without wildcards names one key.
 * The marker a tc_del left (a tombstone) is kept: it goes on refusing late copies of the
 * deleted value. Redis is walked with SCAN (never KEYS), in batches, so the server is never
 * blocked for long; entries written while the walk runs may or may not be removed.
 * @param out_removed  if not NULL, receives the number of edge entries plus Redis keys removed
 *                     (0 on failure).
 * @param pattern      pattern_len bytes, 1..TC_KEY_MAX, no NUL byte, no dangling backslash.
 * @return TC_OK, TC_EINVAL (NULL cache or pattern, bad pattern), TC_EREDIS or TC_EPROTO (the
 *         edge entries are gone but Redis could not be walked: call again).
 * Thread-safe.
 */
TC_API int tc_invalidate_pattern(int64_t *out_removed, tc_cache *cache, const char *pattern,
                                 size_t pattern_len);

/**
 * Removes from the caches (edge and Redis; the store keeps them) every entry put with this tag
 * (tc_put_http's Surrogate-Key header). In Redis each tag is a set of keys, walked in batches.
 * An entry whose newer value no longer carries the tag may be removed too (never the reverse):
 * that costs one more read from the store, never a stale value.
 * @param out_removed  if not NULL, receives the number of edge entries plus Redis values
 *                     removed (0 on failure).
 * @param tag          tag_len bytes, 1..TC_KEY_MAX, no NUL, space or tab.
 * @return TC_OK, TC_EINVAL (NULL cache or tag, bad tag), TC_EREDIS or TC_EPROTO (the edge
 *         entries are gone but Redis failed: call again).
 * Thread-safe.
 */
TC_API int tc_invalidate_tag(int64_t *out_removed, tc_cache *cache, const char *tag,
                             size_t tag_len);

/* ---- HTTP responses ------------------------------------------------------------------------ */
/**
 * Puts a value with the caching headers of the HTTP response it came from, for the caches to
 * follow as a shared cache (a CDN) does (RFC 9111): s-maxage over max-age over Expires - Date,
 * less the response's age (Age, Date); stale-while-revalidate and stale-if-error (RFC 5861);
 * no-cache, must-revalidate, proxy-revalidate and s-maxage forbid serving stale; immutable.
 * A response with neither s-maxage, max-age nor Expires stays fresh for default_ttl_ms (the
 * heuristic freshness of RFC 9111 §4.2.2, decided here by the configuration).
 *
 * Write-through as tc_put: the store commits the value (the body) first. A response that a
 * shared cache may not store (no-store, private) is not stored anywhere: the key is deleted, as
 * by tc_del, so that no older response is served in its place, and *out_stored is 0.
 *
 * The headers live in the caches with the value. A value that both caches lost (evicted,
 * expired, invalidated) comes back from the store as a plain value, without them.
 *
 * @param out_stored  if not NULL, receives 1 when the value was stored, 0 when not.
 * @param headers     n_headers NUL-terminated "Name: value" lines; names are matched
 *                    case-insensitively; used: Cache-Control, Expires, Date, Age, ETag,
 *                    Last-Modified, Surrogate-Key (space-separated tags, see
 *                    tc_invalidate_tag); others are ignored. A repeated field is joined with
 *                    ", " (Surrogate-Key with " "), but for ETag and Last-Modified, where the
 *                    last line wins. A trailing CRLF is dropped. May be NULL when n_headers
 *                    is 0.
 * @return TC_OK, TC_EINVAL (NULL argument, a line without ':', a control character other than
 *         HTAB in a line, the fields used over 64 KiB in all, a tag longer than TC_KEY_MAX),
 *         TC_EKEY, TC_ETOOBIG, TC_ESTORE, TC_ENOMEM.
 * Thread-safe.
 */
TC_API int tc_put_http(unsigned *out_stored, tc_cache *cache, const char *key, size_t key_len,
                       const void *value, size_t value_len, const char *const *headers,
                       size_t n_headers);

/** tc_get_http's *out_state. */
#define TC_HTTP_FRESH 1           /* fresh (or just read from the store) */
#define TC_HTTP_STALE 2           /* stale but usable: inside stale-while-revalidate (a refresh
                                   * was started in the background) or stale-if-error (the store
                                   * failed); with TC_HTTP_ONLY_IF_CACHED, inside either window
                                   * (no refresh started, the store not asked) */
#define TC_HTTP_MUST_REVALIDATE 3 /* only with TC_HTTP_ONLY_IF_CACHED: stale, and not to be used
                                   * before it is revalidated */
#define TC_HTTP_STALE_IF_ERROR 4  /* only with TC_HTTP_ONLY_IF_CACHED | TC_HTTP_SPLIT_STALE:
                                   * stale, past stale-while-revalidate but inside
                                   * stale-if-error (to serve only if the origin fails) */
/** tc_get_http's flags. */
#define TC_HTTP_ONLY_IF_CACHED 1u /* look in the caches only, as the request directive
                                   * only-if-cached asks: never the store, never a refresh;
                                   * TC_ENOTFOUND when no cache holds the key */
#define TC_HTTP_SPLIT_STALE 2u    /* with TC_HTTP_ONLY_IF_CACHED: tell the two stale windows
                                   * apart (TC_HTTP_STALE for stale-while-revalidate,
                                   * TC_HTTP_STALE_IF_ERROR for stale-if-error alone), for a
                                   * caller that revalidates with its own origin */

/**
 * tc_get for values put with tc_put_http (a plain value reads as fresh, age 0, no headers).
 * Without flags, a copy that is stale and may not be served is revalidated against the store
 * (the origin) by this call: if the store still holds the same version, the headers are kept
 * and the copy is fresh again for the same lifetime; a newer version (whose headers the caches
 * lost) comes back as a plain value. Inside stale-while-revalidate the stale copy is returned at once and that
 * refresh runs once, in the background, whatever the number of readers. Inside stale-if-error
 * a store failure returns the stale copy.
 * @param out, out_len  as tc_get.
 * @param out_state     if not NULL, receives TC_HTTP_* (0 on failure).
 * @param out_age_s     if not NULL, receives the copy's age in seconds (RFC 9111 §4.2.3).
 * @param out_headers   if not NULL, receives the headers to send with the copy, each line
 *                      ending in CRLF: Age, and Cache-Control, ETag, Last-Modified as put;
 *                      "" for a plain value. Free with tc_free.
 * @param flags         0, TC_HTTP_ONLY_IF_CACHED, or that with TC_HTTP_SPLIT_STALE.
 * @return as tc_get.
 * Thread-safe.
 */
TC_API int tc_get_http(void **out, size_t *out_len, unsigned *out_state, int64_t *out_age_s,
                       char **out_headers, tc_cache *cache, const char *key, size_t key_len,
                       unsigned flags);

/* ---- Lists of results ------------------------------------------------------------------------ */
/**
 * An opaque list the library returns: the answers of tc_get_many, the members of a leaderboard,
 * the fields of a hash. Each item has a name (a key, member or field), a value (may be absent)
 * and a score. Names and values are binary-safe and followed by a NUL byte for convenience.
 * Free it with tc_items_free. Immutable: any thread may read it.
 */
typedef struct tc_items tc_items;

/** Number of items; 0 for NULL. */
TC_API size_t tc_items_count(const tc_items *items);
/** Item i's name and its length (NULL and 0 when i is out of range). */
TC_API const char *tc_items_name(const tc_items *items, size_t i, size_t *out_len);
/** Item i's value and its length; NULL and 0 when the item has none (a key tc_get_many did not
 *  find) or i is out of range. */
TC_API const void *tc_items_value(const tc_items *items, size_t i, size_t *out_len);
/** Item i's score (leaderboards); 0 for other lists or when i is out of range. */
TC_API double tc_items_score(const tc_items *items, size_t i);
/** Frees the list. NULL is accepted. */
TC_API void tc_items_free(tc_items *items);

/* ---- Batched reads --------------------------------------------------------------------------- */
/**
 * Reads n keys at once: edge hits are answered locally, the other keys are asked of Redis in
 * one pipelined round trip, and what Redis lacks goes on to the store. The result has one item
 * per key, in the order of keys: its name is the key, its value NULL when the key exists
 * nowhere. Tiers are filled on the way back as by tc_get.
 * @param out       receives the list (tc_items_free).
 * @param keys      n keys, key_lens[i] bytes each (the rules of tc_get); a key may repeat.
 * @param n         0..TC_GET_MANY_MAX.
 * @return TC_OK (also when some keys were not found), TC_EINVAL, TC_EKEY (one bad key: nothing
 *         is read; tc_errmsg names its index), TC_ESTORE, TC_ENOMEM.
 * Thread-safe.
 */
#define TC_GET_MANY_MAX 10000
TC_API int tc_get_many(tc_items **out, tc_cache *cache, const char *const *keys,
                       const size_t *key_lens, size_t n);

/* ---- Redis structures: leaderboards and hashes --------------------------------------------- */
/*
 * Sorted sets and hashes in the handle's Redis, under its namespace, on the same per-thread
 * connections as the cache (no edge, no store: Redis is where they live). Their names are
 * apart from cache keys: a structure and a cached value may share a name. Names, members and
 * fields are 1..TC_KEY_MAX bytes, no NUL; hash values are binary-safe, up to max_value_bytes.
 * Without Redis configured they fail with TC_EREDIS. All are thread-safe.
 * Errors common to all: TC_EINVAL (NULL or bad argument), TC_EKEY (bad name, member or field),
 * TC_EREDIS (unreachable), TC_EPROTO (an unexpected reply, e.g. the name holds another type),
 * TC_ENOMEM.
 */

/** Sets member's score in leaderboard set (adding the member if absent). score is finite. */
TC_API int tc_zadd(tc_cache *cache, const char *set, size_t set_len, const char *member,
                   size_t member_len, double score);
/** Adds delta to member's score (from 0 if absent); *out_score (may be NULL) gets the new one. */
TC_API int tc_zincrby(double *out_score, tc_cache *cache, const char *set, size_t set_len,
                      const char *member, size_t member_len, double delta);
/** The n highest scores, highest first (ties by member, as Redis orders them), as items with
 *  names (members) and scores. An absent set gives an empty list. n 0..TC_GET_MANY_MAX. */
TC_API int tc_ztop(tc_items **out, tc_cache *cache, const char *set, size_t set_len, size_t n);
/** member's rank (0 for the highest score) and score; either out may be NULL.
 *  TC_ENOTFOUND when the member (or the set) is absent. */
TC_API int tc_zrank(int64_t *out_rank, double *out_score, tc_cache *cache, const char *set,
                    size_t set_len, const char *member, size_t member_len);
/** Removes member; *out_removed (may be NULL) gets 1 if it was there, else 0. */
TC_API int tc_zrem(int *out_removed, tc_cache *cache, const char *set, size_t set_len,
                   const char *member, size_t member_len);

/** Sets a field of hash to value (binary-safe). */
TC_API int tc_hset(tc_cache *cache, const char *hash, size_t hash_len, const char *field,
                   size_t field_len, const void *value, size_t value_len);
/** A field's value (tc_free; NUL-terminated for convenience). TC_ENOTFOUND when absent. */
TC_API int tc_hget(void **out, size_t *out_len, tc_cache *cache, const char *hash,
                   size_t hash_len, const char *field, size_t field_len);
/** Removes a field; *out_removed (may be NULL) gets 1 if it was there, else 0. */
TC_API int tc_hdel(int *out_removed, tc_cache *cache, const char *hash, size_t hash_len,
                   const char *field, size_t field_len);
/** Every field with its value, as items (names: fields), in Redis's order. An absent hash
 *  gives an empty list. */
TC_API int tc_hgetall(tc_items **out, tc_cache *cache, const char *hash, size_t hash_len);
/** Makes a structure (sorted set or hash) expire after ttl_ms (> 0), as a cart or a session
 *  does. TC_ENOTFOUND when it does not exist. */
TC_API int tc_struct_expire(tc_cache *cache, const char *name, size_t name_len, int64_t ttl_ms);
/** Deletes a structure; *out_removed (may be NULL) gets 1 if it existed. */
TC_API int tc_struct_del(int *out_removed, tc_cache *cache, const char *name, size_t name_len);

/* ---- Publish / subscribe --------------------------------------------------------------------- */
/** A message callback: channel and message are valid during the call only. */
typedef void (*tc_message_fn)(void *ctx, const char *channel, size_t channel_len,
                              const void *message, size_t message_len);
/** A subscription (tc_subscribe); ended by tc_unsubscribe. */
typedef struct tc_subscription tc_subscription;

/**
 * Publishes message (binary-safe) on channel, under the handle's namespace.
 * @param out_receivers  if not NULL, receives how many subscribers Redis delivered it to.
 * @return TC_OK, TC_EINVAL, TC_EKEY (channel: 1..TC_KEY_MAX bytes, no NUL), TC_EREDIS,
 *         TC_EPROTO, TC_ENOMEM. Thread-safe.
 */
TC_API int tc_publish(int64_t *out_receivers, tc_cache *cache, const char *channel,
                      size_t channel_len, const void *message, size_t message_len);

/**
 * Subscribes fn to channel (under the handle's namespace). fn runs on a thread the library
 * owns, one per handle, with a connection of its own, one message after another (never two at
 * once for one handle); it must not call tc_unsubscribe on its own subscription except to end
 * it (that is allowed), nor block for long: it holds up every subscription of the handle. The
 * subscription survives a dropped connection: the thread reconnects (with the handle's
 * backoff) and subscribes again; messages published while it was disconnected are lost, as
 * Redis pub/sub loses them. Returns once Redis confirmed the subscription, so a message
 * published after the call returns is delivered.
 * @param out  receives the subscription; valid until tc_unsubscribe or tc_close of the handle.
 * @return TC_OK, TC_EINVAL, TC_EKEY, TC_EREDIS (no Redis configured, or Redis could not be
 *         reached or did not confirm within a few connect timeouts: nothing subscribed; the
 *         call does not wait out the reconnect backoff), TC_ENOMEM. Thread-safe; may be called
 *         from fn (of any subscription): it then returns at once, and the subscription is
 *         confirmed after fn returns.
 */
TC_API int tc_subscribe(tc_subscription **out, tc_cache *cache, const char *channel,
                        size_t channel_len, tc_message_fn fn, void *ctx);

/**
 * Ends a subscription: when it returns, fn is not running and will not run again for it
 * (called from fn itself, it returns at once and the subscription ends when fn returns).
 * NULL is accepted. tc_close ends the handle's remaining subscriptions (their pointers are then
 * invalid: do not call tc_unsubscribe on them afterwards). Thread-safe; may be called from any
 * subscription's fn.
 */
TC_API void tc_unsubscribe(tc_subscription *sub);

/* ---- The invalidator ------------------------------------------------------------------------ */
/*
 * The built-in stores (SQLite, PostgreSQL) log every insert, update and delete of their table in
 * a change log, written by triggers, so writes made by other programs in plain SQL are in it
 * too. The invalidator reads the log in order after its checkpoint and, for each change, takes
 * the key's older copies out of Redis (a versioned tombstone) and, over the bus, out of every
 * handle's edge; the next read loads the new row. The checkpoint (in the database) moves only
 * after a batch was applied: delivery is at least once, and applying a change twice is
 * harmless. One invalidator per feed.consumer is active at a time, holding a lease in the
 * database (feed.lease_ms); others wait as standbys and take over when it expires, or at once
 * when the holder is gone: on PostgreSQL its session advisory lock ends with its connection (any
 * host); on SQLite its process on the same host is seen gone (killed, crashed). Changes are
 * trimmed from the log feed.retention_ms after every consumer passed them.
 *
 * Run it as a thread of a service (tc_invalidator_start), as the program tiercache-invalidator,
 * or step by step from a loop of one's own (tc_invalidator_step). A store of the caller's own
 * (tc_config_set_store) has no feed: the caller invalidates with tc_invalidate.
 */
typedef struct tc_invalidator tc_invalidator;

/**
 * Creates an invalidator on a handle's store and caches; no I/O yet.
 * @param out    receives it; NULL on failure. Free with tc_invalidator_free.
 * @param cache  the handle whose store's feed it reads and whose tiers and bus it uses; must
 *               stay open until tc_invalidator_free.
 * @return TC_OK, TC_EINVAL (NULL argument, or a store without a change feed), TC_ENOMEM.
 */
TC_API int tc_invalidator_new(tc_invalidator **out, tc_cache *cache);

/**
 * One batch: takes (or renews) the feed's lease, reads up to feed.batch changes after the
 * checkpoint, applies them, and moves the checkpoint past them; now and then trims the log.
 * @param out_applied  if not NULL, receives how many changes were applied (0: caught up).
 * @param out_seq      if not NULL, receives the checkpoint afterwards.
 * @return TC_OK; TC_ESTATE when another invalidator holds the lease (this one is a standby:
 *         call again later); TC_ESTORE, TC_EREDIS, TC_EPROTO when a change could not be read or
 *         applied (the checkpoint stays before it; call again); TC_EINVAL, TC_ENOMEM.
 * Not thread-safe on one invalidator (the thread of tc_invalidator_start calls it).
 */
TC_API int tc_invalidator_step(int64_t *out_applied, int64_t *out_seq, tc_invalidator *inv);

/**
 * Waits for the next change, for a loop of one's own around tc_invalidator_step: returns when
 * one may be there (PostgreSQL's NOTIFY; on SQLite a change of the database's files, by any
 * process on this host, seen through inotify) or after feed.poll_ms; a loop also calls it
 * after TC_ESTATE (standby) or a failure, to try again at that pace.
 * @return TC_OK, TC_EINVAL (NULL), TC_ESTORE (the database unreachable: the wait still lasted
 *         feed.poll_ms).
 */
TC_API int tc_invalidator_wait(tc_invalidator *inv);

/**
 * Runs steps on a thread of the library's until tc_invalidator_free: batches back to back while
 * there is a backlog, then a wait for the next change (woken at once by PostgreSQL's NOTIFY and
 * on SQLite by a commit of any process on this host, else after feed.poll_ms or a quarter of
 * feed.lease_ms, whichever is shorter); a standby tries for the lease every feed.poll_ms; a
 * failure is retried after feed.poll_ms.
 * @return TC_OK, TC_EINVAL (NULL, or already started), TC_ENOMEM (no thread).
 */
TC_API int tc_invalidator_start(tc_invalidator *inv);

/** Stops the thread if started, gives the lease up (a standby takes over at once) and frees.
 *  NULL is accepted. */
TC_API void tc_invalidator_free(tc_invalidator *inv);

/* ---- Stats --------------------------------------------------------------------------------- */
/**
 * The handle's counters as a JSON object (NUL-terminated), e.g.
 *   {"edge":{"hits":..,"misses":..,"sets":..,"errors":..,"evictions":..,"entries":..,"bytes":..},
 *    "redis":{"hits":..,"misses":..,"sets":..,"errors":..,"connects":..,"reuses":..,
 *             "batches":..,"batched":..},
 *    "store":{"hits":..,"misses":..,"sets":..,"errors":..,"leases":..,"lease_waits":..},
 *    "shared":{"cold_starts":..,"warm_starts":..}}
 * connects counts Redis connections opened (cold starts), reuses counts calls (or auto-pipeline
 * batches) that found their connection already open (warm starts); batches counts the writes
 * of the auto-pipeline and batched the commands answered in them (batched / batches: how many
 * calls went out together); shared counts tc_shared calls process-wide.
 * @param out  receives the JSON text; free with tc_free.
 * @return TC_OK, TC_EINVAL, TC_ENOMEM. Thread-safe; counters are read without a global pause,
 *         so they are each exact but not one snapshot.
 */
TC_API int tc_stats_json(char **out, tc_cache *cache);

#ifdef __cplusplus
}
#endif

#endif /* TIERCACHE_H */
