/*
 * redis_tier.c - the Redis tier: versioned values and tombstones in a small binary envelope,
 * one retry after a dropped connection, and a journal of invalidations that could not be
 * delivered while Redis was unreachable.
 *
 * Every command is sent argv-style with explicit lengths (tc__resp_command, redis_conn.h, which
 * writes RESP as redisCommandArgv does, with less work): keys and values are binary and never
 * pass through a format string.
 *
 * The journal. A put is committed to the store before the tier is updated; if the update then
 * fails (Redis down, timeout, error reply), Redis may still hold the previous version and would
 * shadow the committed one once it is reachable again. So every key whose set, tombstone or
 * del failed is remembered (deduplicated, up to PEND_MAX keys) and, before any command is run
 * on a connection, the remembered keys are DELeted; reads are not served until that succeeded.
 * A key leaves the journal only after a DEL sent after its last failure succeeded (each entry
 * carries the sequence number of its last failure). If the journal overflows (or cannot
 * allocate), it falls back to deleting every key under the namespace with SCAN + DEL before
 * serving: slow, but never wrong. With an empty namespace that is every key of the database.
 *
 * Connections, the breaker and fork safety are in redis_conn.c. The journal is protected by
 * the connection object's mutex. A child inherits the journal and applies it too; if a parent
 * thread was changing the journal at the instant of fork() (rare: only while writes fail or
 * the journal is being emptied), the child cannot trust it and falls back to clearing the
 * namespace (journal_torn).
 */
#include "redis/redis_tier.h"
#include "common/pattern.h"
#include "redis/redis_conn.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ---- the stored envelope ------------------------------------------------------------------
 *   byte 0      'T'
 *   byte 1      format version (1)
 *   byte 2      kind: 'V' value, 'X' tombstone
 *   bytes 3-10  the store's version, int64 big-endian
 *   bytes 11-18 absolute expiry, unix ms, int64 big-endian
 *   bytes 19-   the payload (none for a tombstone)
 * Fixed-width big-endian, so a server-side script can compare two versions as byte strings. */
#define ENV_MAGIC 'T'
#define ENV_FORMAT 1
#define ENV_VALUE 'V'
#define ENV_TOMBSTONE 'X'
#define ENV_HEADER 19

#define PEND_MAX 10000
#define PEND_BUCKETS 16384 /* a power of two, about 1.6 x PEND_MAX */
#define SETTLE_BATCH 256   /* keys per settle script call */
#define SCAN_COUNT "1000"
#define TAG_SCAN_COUNT "256" /* members per SSCAN: about one script batch */
#define CURSOR_SIZE 24       /* a SCAN cursor: up to 20 digits and a NUL */

typedef struct pend_entry {
    struct pend_entry *next;
    uint64_t hash, seq; /* seq: the journal's sequence number at the key's last failure */
    int64_t version;    /* the newest version a failed write carried, -1 if none (invalidate) */
    size_t len;
    char key[];         /* ns + key */
} pend_entry;

struct tc__redis {
    tc__rconns *conns;
    char *ns, *scan_pattern;
    size_t ns_len, scan_pattern_len;
    size_t max_value_bytes;
    int64_t tombstone_ttl_ms;
    const void *owner;
    /* Only connects and reuses are counted here (redis_conn.c): the orchestration counts the
     * tier's hits, misses, sets and errors from the codes these functions return. */
    tc__stats *stats;
    tc__stats own_stats; /* used when the caller passes no stats */

    /* The journal, under tc__rconns_lock(conns). */
    pend_entry **pend_buckets; /* NULL while empty */
    size_t pend_count;
    uint64_t pend_seq;
    int pend_overflow;
    uint64_t pend_overflow_seq;
    atomic_int pend_active; /* pend_count > 0 || pend_overflow, for a lock-free fast path */
    atomic_int pend_busy;   /* the journal is being changed (see journal_torn) */
};

/* The one place that writes the layout; the guarded-write script reads the version from it at
 * the same offsets. *out is malloc'd. */
static int envelope_build(char **out, size_t *out_len, char kind, int64_t version,
                          int64_t expiry_ms, const void *payload, size_t len)
{
    *out = NULL;
    *out_len = 0;
    if (len > SIZE_MAX - ENV_HEADER)
        return TC_ENOMEM;
    unsigned char *b = malloc(ENV_HEADER + len);
    if (b == NULL)
        return TC_ENOMEM;
    b[0] = ENV_MAGIC;
    b[1] = ENV_FORMAT;
    b[2] = (unsigned char)kind;
    tc__put_be64(b + 3, (uint64_t)version);
    tc__put_be64(b + 11, (uint64_t)expiry_ms);
    if (len > 0)
        memcpy(b + ENV_HEADER, payload, len);
    *out = (char *)b;
    *out_len = ENV_HEADER + len;
    return TC_OK;
}

/* ---- keys -------------------------------------------------------------------------------- */

typedef struct nskey {
    char *p;
    size_t len;
    char buf[640];
} nskey;

static int nskey_make(nskey *k, const tc__redis *r, const char *key, size_t key_len)
{
    k->len = r->ns_len + key_len;
    k->p = k->len <= sizeof k->buf ? k->buf : malloc(k->len);
    if (k->p == NULL)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    memcpy(k->p, r->ns, r->ns_len);
    memcpy(k->p + r->ns_len, key, key_len);
    return TC_OK;
}

static void nskey_free(nskey *k)
{
    if (k->p != k->buf)
        free(k->p);
}

/* A tag's set: namespace, NUL, "tag:", tag. No data key has a NUL (tc__check_key), so a set
 * never collides with one, and a SCAN can tell the two apart (is_tag_set). */
#define TAG_INFIX "\0tag:"
#define TAG_INFIX_LEN (sizeof TAG_INFIX - 1)

static int check_tag(const tc__redis *r, const char *tag, size_t tag_len)
{
    if (tag == NULL)
        return tc__err(r->owner, TC_EINVAL, "redis: tag is NULL");
    if (tag_len == 0 || tag_len > TC_KEY_MAX)
        return tc__err(r->owner, TC_EINVAL, "redis: tag is %zu bytes (1 .. %d)", tag_len,
                       TC_KEY_MAX);
    if (memchr(tag, '\0', tag_len) != NULL)
        return tc__err(r->owner, TC_EINVAL, "redis: tag contains a NUL byte");
    return TC_OK;
}

static size_t tagkey_len(const tc__redis *r, size_t tag_len)
{
    return r->ns_len + TAG_INFIX_LEN + tag_len;
}

/* Writes the (checked) tag's set name at out, which has tagkey_len bytes. */
static void tagkey_write(char *out, const tc__redis *r, const char *tag, size_t tag_len)
{
    memcpy(out, r->ns, r->ns_len);
    memcpy(out + r->ns_len, TAG_INFIX, TAG_INFIX_LEN);
    memcpy(out + r->ns_len + TAG_INFIX_LEN, tag, tag_len);
}

/* namespace + infix + name; infix starts with a NUL, so the key is never a data key. */
static int infixkey_make(nskey *k, const tc__redis *r, const char *infix, size_t infix_len,
                         const char *name, size_t name_len)
{
    k->len = r->ns_len + infix_len + name_len;
    k->p = k->len <= sizeof k->buf ? k->buf : malloc(k->len);
    if (k->p == NULL)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    memcpy(k->p, r->ns, r->ns_len);
    memcpy(k->p + r->ns_len, infix, infix_len);
    memcpy(k->p + r->ns_len + infix_len, name, name_len);
    return TC_OK;
}

static int tagkey_make(nskey *k, const tc__redis *r, const char *tag, size_t tag_len)
{
    return infixkey_make(k, r, TAG_INFIX, TAG_INFIX_LEN, tag, tag_len);
}

/* A key's miss lease: namespace, NUL, "l:", key (skipped by SCANs like tag sets). */
#define LEASE_INFIX "\0l:"
#define LEASE_INFIX_LEN (sizeof LEASE_INFIX - 1)

/* For a key found by SCAN under the namespace: 1 if it cannot be a data key of ours (it has a
 * NUL: a tag set). Settling a set would count and delete it; a DEL would lose the tag's
 * members. Any NUL, not only the one right after the namespace: a namespace that is a prefix of
 * another (the empty one is a prefix of all) must not take the other's sets for values. */
static int is_tag_set(const char *key, size_t len)
{
    return len > 0 && memchr(key, '\0', len) != NULL;
}

/* ---- the journal ------------------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211u;
    }
    return h;
}

/* Marks, under the lock, the journal as being changed; see reg_begin in redis_conn.c. */
static void journal_begin(tc__redis *r)
{
    (void)atomic_exchange(&r->pend_busy, 1);
}

static void journal_end(tc__redis *r)
{
    atomic_store(&r->pend_busy, 0);
}

/* Remembers that key (without the namespace) may hold a value older than the store's version
 * (the version of the failed write, or -1 for an invalidation). Never fails: when it cannot
 * remember the key it remembers to clear the whole namespace. */
static void pend_add(tc__redis *r, const char *key, size_t key_len, int64_t version)
{
    uint64_t h = fnv1a(fnv1a(14695981039346656037u, r->ns, r->ns_len), key, key_len);
    size_t len = r->ns_len + key_len;
    tc__rconns_lock(r->conns);
    journal_begin(r);
    uint64_t seq = ++r->pend_seq;
    if (r->pend_buckets == NULL)
        r->pend_buckets = calloc(PEND_BUCKETS, sizeof *r->pend_buckets);
    if (r->pend_buckets == NULL)
        goto overflow;
    pend_entry **bucket = &r->pend_buckets[h & (PEND_BUCKETS - 1)];
    for (pend_entry *e = *bucket; e != NULL; e = e->next) {
        if (e->hash == h && e->len == len && memcmp(e->key, r->ns, r->ns_len) == 0 &&
            memcmp(e->key + r->ns_len, key, key_len) == 0) {
            e->seq = seq;
            if (version > e->version)
                e->version = version;
            goto done;
        }
    }
    if (r->pend_count >= PEND_MAX)
        goto overflow;
    pend_entry *e = malloc(sizeof *e + len);
    if (e == NULL)
        goto overflow;
    e->hash = h;
    e->seq = seq;
    e->version = version;
    e->len = len;
    memcpy(e->key, r->ns, r->ns_len);
    memcpy(e->key + r->ns_len, key, key_len);
    e->next = *bucket;
    *bucket = e;
    r->pend_count++;
    goto done;
overflow:
    r->pend_overflow = 1;
    r->pend_overflow_seq = seq;
done:
    atomic_store(&r->pend_active, 1);
    journal_end(r);
    tc__rconns_unlock(r->conns);
}

/* redis_conn.c's on_torn, in a child after fork(), with the mutex held: a parent thread held
 * the lock at the instant of fork. If it was changing the journal, the entries may be
 * half-linked: forget them (their memory stays allocated in this process) and clear the whole
 * namespace instead. Otherwise the journal is intact. */
static void journal_torn(void *arg)
{
    tc__redis *r = arg;
    if (!atomic_load(&r->pend_busy))
        return;
    atomic_store(&r->pend_busy, 0);
    r->pend_buckets = NULL;
    r->pend_count = 0;
    r->pend_overflow = 1;
    r->pend_overflow_seq = ++r->pend_seq;
    atomic_store(&r->pend_active, 1);
}

/* Forgets what was remembered up to sequence number upto (it has been deleted from Redis). */
static void pend_clear(tc__redis *r, uint64_t upto)
{
    tc__rconns_lock(r->conns);
    journal_begin(r);
    if (r->pend_buckets != NULL) {
        for (size_t i = 0; i < PEND_BUCKETS; i++) {
            pend_entry **pp = &r->pend_buckets[i];
            while (*pp != NULL) {
                pend_entry *e = *pp;
                if (e->seq <= upto) {
                    *pp = e->next;
                    free(e);
                    r->pend_count--;
                } else {
                    pp = &e->next;
                }
            }
        }
        if (r->pend_count == 0) {
            free(r->pend_buckets);
            r->pend_buckets = NULL;
        }
    }
    if (r->pend_overflow && r->pend_overflow_seq <= upto)
        r->pend_overflow = 0;
    atomic_store(&r->pend_active, r->pend_count > 0 || r->pend_overflow);
    journal_end(r);
    tc__rconns_unlock(r->conns);
}

/* ---- replies and connection errors ------------------------------------------------------- */

static int retryable(int err)
{
    if (err == REDIS_ERR_IO || err == REDIS_ERR_EOF)
        return 1;
#ifdef REDIS_ERR_TIMEOUT /* hiredis >= 1.1 defines it, for ETIMEDOUT; a Linux SO_RCVTIMEO
                          * timeout (EAGAIN) is still REDIS_ERR_IO in 1.x, as in 0.14 */
    if (err == REDIS_ERR_TIMEOUT)
        return 1;
#endif
    return 0;
}

/* A NULL reply: the context's error says why. */
static int ctx_error(const tc__redis *r, const redisContext *c, const char *what)
{
    int code = TC_EREDIS;
    if (c->err == REDIS_ERR_OOM)
        code = TC_ENOMEM;
    else if (c->err == REDIS_ERR_PROTOCOL)
        code = TC_EPROTO;
    return tc__err(r->owner, code, "redis %s: %s: %s", tc__rconns_where(r->conns), what,
                   c->err != 0 ? c->errstr : "no reply");
}

static const char *type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING: return "string";
    case REDIS_REPLY_ARRAY: return "array";
    case REDIS_REPLY_INTEGER: return "integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "status";
    case REDIS_REPLY_ERROR: return "error";
    default: return "unknown";
    }
}

/* A reply of the wrong type: an error reply is Redis failing (TC_EREDIS), anything else is a
 * reply that makes no sense (TC_EPROTO). */
static int reply_error(const tc__redis *r, const redisReply *rep, const char *what,
                       const char *expected)
{
    if (rep->type == REDIS_REPLY_ERROR)
        return tc__err(r->owner, TC_EREDIS, "redis %s: %s failed: %.*s",
                       tc__rconns_where(r->conns), what, (int)(rep->len > 200 ? 200 : rep->len),
                       rep->str != NULL ? rep->str : "");
    return tc__err(r->owner, TC_EPROTO, "redis %s: %s: expected %s reply, got %s",
                   tc__rconns_where(r->conns), what, expected, type_name(rep->type));
}

/* ---- server-side scripts ------------------------------------------------------------------ */

/* Every write goes through the guard script, so that Redis never goes back in time: a late
 * read-through fill of v1 landing after a put of v2 (or after the tombstone of a delete) is
 * refused there, atomically, instead of overwriting the newer state (invariant 2). */
static const char guard_script[] =
    "-- KEYS[1] the key, ARGV[1] the envelope, ARGV[2] PX ms, ARGV[3] (optional) '1' to keep an\n"
    "-- equal version too, ARGV[4] and ARGV[5] (optional) a channel and a message to PUBLISH\n"
    "-- after the write (a write's bus message: one round trip for both, in this order). Writes\n"
    "-- unless the key holds a newer version (value or tombstone) in our format; anything else\n"
    "-- there (another type, a foreign value) is overwritten. Returns 1 if written, else 0; the\n"
    "-- message goes either way. Versions are compared byte by byte (big-endian bytes 4..11):\n"
    "-- Lua's string < uses strcoll, which depends on the server's locale.\n"
    "local function allowed()\n"
    "  local cur = false\n"
    "  if redis.call('TYPE', KEYS[1]).ok == 'string' then cur = redis.call('GET', KEYS[1]) end\n"
    "  if cur and #cur >= 19 and string.sub(cur, 1, 2) == string.sub(ARGV[1], 1, 2) then\n"
    "    for i = 4, 11 do\n"
    "      local a, b = string.byte(cur, i), string.byte(ARGV[1], i)\n"
    "      if a ~= b then return a < b end\n"
    "    end\n"
    "    return ARGV[3] ~= '1'\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local n = 0\n"
    "if allowed() then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  n = 1\n"
    "end\n"
    "if ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5]) end\n"
    "return n\n";
/* Invalidations, and the journal's replay, go through the settle script: it takes values out
 * of service but leaves a tombstone carrying their version (see its comment). The rule lives
 * once, in this Lua function, which the tag-drop script shares. */
#define SETTLE_LUA_FN                                                                         \
    "local function newer(a, b)\n"                                                            \
    "  for i = 1, 8 do\n"                                                                     \
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"                                 \
    "    if x ~= y then return x > y end\n"                                                   \
    "  end\n"                                                                                 \
    "  return false\n"                                                                        \
    "end\n"                                                                                   \
    "-- Settles key k, not below version want ('' if none is known); ARGV[1..3] as for the\n" \
    "-- settle script. Returns 1 if a value was taken out, else 0.\n"                         \
    "local function settle(k, want)\n"                                                        \
    "  local t = redis.call('TYPE', k).ok\n"                                                  \
    "  local kind, ver = nil, nil\n"                                                          \
    "  if t == 'string' then\n"                                                               \
    "    local h = redis.call('GETRANGE', k, 0, 10)\n"                                        \
    "    if #h == 11 and string.sub(h, 1, 2) == ARGV[1] then\n"                               \
    "      kind, ver = string.sub(h, 3, 3), string.sub(h, 4, 11)\n"                           \
    "    end\n"                                                                               \
    "  end\n"                                                                                 \
    "  local target = ver\n"                                                                  \
    "  if want ~= '' and (target == nil or newer(want, target)) then target = want end\n"     \
    "  if kind == 'X' and target == ver then\n"                                               \
    "    -- already a tombstone at least that new\n"                                          \
    "  elseif target ~= nil then\n"                                                           \
    "    redis.call('SET', k, ARGV[1] .. 'X' .. target .. ARGV[3], 'PX', ARGV[2])\n"          \
    "  elseif t ~= 'none' then\n"                                                             \
    "    redis.call('DEL', k)\n"                                                              \
    "  end\n"                                                                                 \
    "  if t ~= 'none' and kind ~= 'X' then return 1 end\n"                                    \
    "  return 0\n"                                                                            \
    "end\n"
static const char settle_script[] =
    "-- Takes KEYS out of service without forgetting their versions. ARGV[1]: the envelope's first\n"
    "-- two bytes; ARGV[2]: PX ms for tombstones; ARGV[3]: their expiry (8 bytes); ARGV[3 + i]: a\n"
    "-- version (8 bytes, big-endian) that KEYS[i] must not go below, or '' if none is known.\n"
    "-- A value of ours becomes a tombstone of max(its version, the given one), so a late fill of an\n"
    "-- older version is still refused; a tombstone stays (raised to the given version); anything\n"
    "-- else is deleted, or replaced by a tombstone when a version is given. Returns how many\n"
    "-- values were taken out. Versions are compared byte by byte: Lua's string < uses strcoll.\n"
    SETTLE_LUA_FN
    "local n = 0\n"
    "for i, k in ipairs(KEYS) do n = n + settle(k, ARGV[3 + i]) end\n"
    "return n\n";
/* Tagging is one script so that a set's TTL can be raised but never lowered in one round trip
 * on any server version (PEXPIRE ... GT needs Redis 7). */
static const char tag_script[] =
    "-- KEYS: tag sets; ARGV[1]: a member (a key without the namespace); ARGV[2]: PX ms.\n"
    "-- Adds the member to every set and makes the set live at least ARGV[2] ms from now: a\n"
    "-- longer TTL is kept, and so is none (such a set outlives any TTL). Anything but a set\n"
    "-- under a set's name (only a foreign writer can put it there) is replaced. Returns the\n"
    "-- number of sets.\n"
    "local ttl = tonumber(ARGV[2])\n"
    "for _, k in ipairs(KEYS) do\n"
    "  local t = redis.call('TYPE', k).ok\n"
    "  if t ~= 'set' and t ~= 'none' then redis.call('DEL', k) end\n"
    "  redis.call('SADD', k, ARGV[1])\n"
    "  local left = redis.call('PTTL', k)\n"
    "  if t ~= 'set' or (left >= 0 and left < ttl) then redis.call('PEXPIRE', k, ARGV[2]) end\n"
    "end\n"
    "return #KEYS\n";
/* One batch of a tag invalidation: membership and settling change together, so a key leaves
 * its tag's set only when its value has been taken out. */
static const char tag_drop_script[] =
    "-- KEYS[1]: a tag set; KEYS[i] (i >= 2): the key (namespace + member) of member ARGV[2 + i];\n"
    "-- ARGV[1..3] as for the settle script; ARGV[3 + #KEYS] and after: members that name no key\n"
    "-- of ours (only a foreign writer can add them), just removed. A member still in the set is\n"
    "-- settled, then removed: if the script fails part-way, what is left stays in the set for\n"
    "-- the next try. Returns how many values were taken out.\n"
    SETTLE_LUA_FN
    "local n = 0\n"
    "for i = 2, #KEYS do\n"
    "  if redis.call('SISMEMBER', KEYS[1], ARGV[2 + i]) == 1 then\n"
    "    n = n + settle(KEYS[i], '')\n"
    "    redis.call('SREM', KEYS[1], ARGV[2 + i])\n"
    "  end\n"
    "end\n"
    "for i = 3 + #KEYS, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end\n"
    "return n\n";

/* The miss lease (tc__redis_lease): reading the key and taking the lease are one atomic step,
 * so a process never takes a lease for a key another process filled a moment before. */
static const char lease_script[] =
    "-- KEYS[1] the key, KEYS[2] its lease; ARGV[1] the first three bytes of a live value of\n"
    "-- ours; ARGV[2] a token; ARGV[3] the lease's PX ms; ARGV[4] the caller's clock (unix ms,\n"
    "-- 8 bytes big-endian). Returns the key's value when it holds one that is live by the\n"
    "-- caller's clock (its expiry, bytes 12..19, is later: the caller judges the reply by the\n"
    "-- same clock, so a value the caller would take for expired never stands in for the lease);\n"
    "-- else 1 after taking the lease, or 0 when another holder has it. Byte by byte: Lua's\n"
    "-- string < uses strcoll.\n"
    "local function later(a, b)\n"
    "  for i = 1, 8 do\n"
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"
    "    if x ~= y then return x > y end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "if redis.call('TYPE', KEYS[1]).ok == 'string' then\n"
    "  local v = redis.call('GET', KEYS[1])\n"
    "  if #v >= 19 and string.sub(v, 1, 3) == ARGV[1] and later(string.sub(v, 12, 19), ARGV[4])\n"
    "  then return v end\n"
    "end\n"
    "if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end\n"
    "return 0\n";
static const char unlease_script[] =
    "-- KEYS[1] a lease, ARGV[1] the token that took it: released only by its holder, so a\n"
    "-- holder whose lease expired never releases the next one's.\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* SHA1s for EVALSHA; a test checks them against SCRIPT LOAD. */
static const struct script {
    const char *text;
    size_t len;
    const char *sha;
} scripts[] = {
    [TC__SCRIPT_GUARD] = {guard_script, sizeof guard_script - 1,
                           "96dbfcd990ced1273d0b7e6468d70f703ef1ce0b"},
    [TC__SCRIPT_SETTLE] = {settle_script, sizeof settle_script - 1,
                           "091c6f70559231514de9c39d932bb3d1fc521b98"},
    [TC__SCRIPT_TAG] = {tag_script, sizeof tag_script - 1,
                        "6c9e651a262969742614f4026a80aac00265d269"},
    [TC__SCRIPT_TAG_DROP] = {tag_drop_script, sizeof tag_drop_script - 1,
                             "ef4cd91f7f4e4b3cd93c278fbeefe9c459d471da"},
    [TC__SCRIPT_LEASE] = {lease_script, sizeof lease_script - 1,
                          "dc0fb0540a58aab54bee40823eb0bd26acebf560"},
    [TC__SCRIPT_UNLEASE] = {unlease_script, sizeof unlease_script - 1,
                            "77538aa0a3dc29692e0b9a026543c937d5d6abeb"},
};
_Static_assert(sizeof scripts / sizeof scripts[0] == TC__SCRIPT_COUNT, "one entry per script");

int tc__redis_script(int which, const char **out_text, const char **out_sha)
{
    if (which < 0 || which >= (int)(sizeof scripts / sizeof scripts[0]))
        return TC_EINVAL;
    *out_text = scripts[which].text;
    *out_sha = scripts[which].sha;
    return TC_OK;
}

/* Runs a script on c with EVALSHA, and with EVAL once when the server does not know it (a
 * restart or SCRIPT FLUSH empties its cache; EVAL caches it again). rest is what follows the
 * script in the command: numkeys, keys, args. NULL with c->err set when the connection failed,
 * or with c->err == 0 when out of memory. */
static redisReply *conn_eval(redisContext *c, int which, int nrest, const char **rest,
                             const size_t *rest_lens)
{
    size_t n = (size_t)nrest + 2;
    const char **argv = malloc(n * sizeof *argv);
    size_t *lens = malloc(n * sizeof *lens);
    redisReply *rep = NULL;
    if (argv != NULL && lens != NULL) {
        memcpy(argv + 2, rest, (size_t)nrest * sizeof *argv);
        memcpy(lens + 2, rest_lens, (size_t)nrest * sizeof *lens);
        argv[0] = "EVALSHA";
        lens[0] = 7;
        argv[1] = scripts[which].sha;
        lens[1] = 40;
        rep = tc__resp_command(c, (int)n, argv, lens);
        if (rep != NULL && rep->type == REDIS_REPLY_ERROR && rep->len >= 8 &&
            memcmp(rep->str, "NOSCRIPT", 8) == 0) {
            freeReplyObject(rep);
            argv[0] = "EVAL";
            lens[0] = 4;
            argv[1] = scripts[which].text;
            lens[1] = scripts[which].len;
            rep = tc__resp_command(c, (int)n, argv, lens);
        }
    }
    free(argv);
    free(lens);
    return rep;
}

/* A key (with the namespace) for the settle script, and the version it must not go below. */
typedef struct settle_item {
    const char *key;
    size_t len;
    int64_t version; /* -1: none known */
} settle_item;

/* Runs the settle script on c over n items (n <= SETTLE_BATCH); *removed += values taken out. */
static int conn_settle(tc__redis *r, redisContext *c, const settle_item *items, size_t n,
                       int64_t *removed)
{
    static const char magic[2] = {ENV_MAGIC, ENV_FORMAT};
    size_t nrest = 1 + n + 3 + n;
    const char **rest = malloc(nrest * sizeof *rest);
    size_t *lens = malloc(nrest * sizeof *lens);
    unsigned char *vers = malloc(n * 8 + 8);
    char numkeys[24], px[24];
    redisReply *rep = NULL;
    int rc = TC_OK;
    if (rest == NULL || lens == NULL || vers == NULL) {
        rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        goto done;
    }
    snprintf(numkeys, sizeof numkeys, "%zu", n);
    snprintf(px, sizeof px, "%lld", (long long)r->tombstone_ttl_ms);
    tc__put_be64(vers + n * 8, (uint64_t)(tc__wall_ms() + r->tombstone_ttl_ms));
    rest[0] = numkeys;
    lens[0] = strlen(numkeys);
    for (size_t i = 0; i < n; i++) {
        rest[1 + i] = items[i].key;
        lens[1 + i] = items[i].len;
        rest[1 + n + 3 + i] = (const char *)vers + i * 8;
        lens[1 + n + 3 + i] = items[i].version >= 0 ? 8 : 0;
        if (items[i].version >= 0)
            tc__put_be64(vers + i * 8, (uint64_t)items[i].version);
    }
    rest[1 + n] = magic;
    lens[1 + n] = sizeof magic;
    rest[2 + n] = px;
    lens[2 + n] = strlen(px);
    rest[3 + n] = (const char *)vers + n * 8;
    lens[3 + n] = 8;
    rep = conn_eval(c, TC__SCRIPT_SETTLE, (int)nrest, rest, lens);
    if (rep == NULL)
        rc = c->err ? ctx_error(r, c, "settle") : tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = reply_error(r, rep, "settle", "integer");
    else if (removed != NULL)
        *removed += rep->integer;
done:
    if (rep != NULL)
        freeReplyObject(rep);
    free(rest);
    free(lens);
    free(vers);
    return rc;
}

/* Checks a reply of the SCAN family ([cursor, [string, ...]]), copies its cursor into cursor
 * (CURSOR_SIZE bytes) and points *out_items at the strings. TC_OK, TC_EREDIS (an error reply),
 * TC_EPROTO (anything else that is not such a reply, or WRONGTYPE: a key that is not ours). */
static int scan_reply(const tc__redis *r, const redisReply *rep, const char *what, char *cursor,
                      const redisReply **out_items)
{
    if (rep->type == REDIS_REPLY_ERROR && rep->str != NULL && rep->len >= 9 &&
        memcmp(rep->str, "WRONGTYPE", 9) == 0)
        return tc__err(r->owner, TC_EPROTO, "redis %s: %s: the key holds another type (not "
                       "written by tiercache)", tc__rconns_where(r->conns), what);
    if (rep->type != REDIS_REPLY_ARRAY)
        return reply_error(r, rep, what, "array");
    const redisReply *cur = rep->elements == 2 ? rep->element[0] : NULL;
    const redisReply *items = rep->elements == 2 ? rep->element[1] : NULL;
    int ok = cur != NULL && items != NULL && cur->type == REDIS_REPLY_STRING &&
             cur->str != NULL && cur->len > 0 && cur->len < CURSOR_SIZE &&
             items->type == REDIS_REPLY_ARRAY && items->elements < (size_t)INT32_MAX - 4;
    for (size_t i = 0; ok && i < cur->len; i++)
        ok = cur->str[i] >= '0' && cur->str[i] <= '9';
    for (size_t i = 0; ok && i < items->elements; i++)
        ok = items->element[i] != NULL && items->element[i]->type == REDIS_REPLY_STRING &&
             (items->element[i]->str != NULL || items->element[i]->len == 0);
    if (!ok)
        return tc__err(r->owner, TC_EPROTO, "redis %s: %s: malformed reply",
                       tc__rconns_where(r->conns), what);
    memcpy(cursor, cur->str, cur->len);
    cursor[cur->len] = '\0';
    *out_items = items;
    return TC_OK;
}

/* Drops every key matching a Redis glob: SCAN MATCH, then each batch of keys found with a
 * plain DEL (evict == 0: the journal's overflow, which must leave no value behind) or through
 * the settle script (evict != 0: an invalidation, which leaves tombstones behind). Tag sets
 * are skipped in both cases: they hold no value, and a key they name is handled under its own
 * name. *removed, if not NULL, receives how many values were dropped. */
static int scan_drop(tc__redis *r, redisContext *c, const char *glob, size_t glob_len,
                     int evict, int64_t *removed)
{
    char cursor[CURSOR_SIZE] = "0";
    int64_t total = 0;
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", glob, "COUNT", SCAN_COUNT};
        size_t lens[6] = {4, strlen(cursor), 5, glob_len, 5, strlen(SCAN_COUNT)};
        redisReply *rep = tc__resp_command(c, 6, argv, lens);
        if (rep == NULL)
            return ctx_error(r, c, "SCAN");
        const redisReply *keys = NULL;
        int rc = scan_reply(r, rep, "SCAN", cursor, &keys);
        for (size_t next = 0; rc == TC_OK && next < keys->elements;) {
            const redisReply *batch[SETTLE_BATCH];
            size_t n = 0;
            for (; next < keys->elements && n < SETTLE_BATCH; next++)
                if (!is_tag_set(keys->element[next]->str, keys->element[next]->len))
                    batch[n++] = keys->element[next];
            if (n == 0)
                break;
            if (evict) {
                settle_item items[SETTLE_BATCH];
                for (size_t i = 0; i < n; i++)
                    items[i] = (settle_item){batch[i]->str, batch[i]->len, -1};
                rc = conn_settle(r, c, items, n, &total);
            } else {
                const char *dargv[1 + SETTLE_BATCH];
                size_t dlens[1 + SETTLE_BATCH];
                dargv[0] = "DEL";
                dlens[0] = 3;
                for (size_t i = 0; i < n; i++) {
                    dargv[1 + i] = batch[i]->str;
                    dlens[1 + i] = batch[i]->len;
                }
                redisReply *drep = tc__resp_command(c, (int)n + 1, dargv, dlens);
                if (drep == NULL)
                    rc = ctx_error(r, c, "DEL");
                else if (drep->type != REDIS_REPLY_INTEGER)
                    rc = reply_error(r, drep, "DEL", "integer");
                else
                    total += drep->integer;
                if (drep != NULL)
                    freeReplyObject(drep);
            }
        }
        freeReplyObject(rep);
        if (rc != TC_OK)
            return rc;
    } while (strcmp(cursor, "0") != 0);
    if (removed != NULL)
        *removed = total;
    return TC_OK;
}

/* ---- applying the journal ---------------------------------------------------------------- */

/* Applies the journal on c, if there is one. TC_OK when nothing is pending any more (up to
 * what was pending when it started). On failure the message is set; c->err tells whether the
 * connection broke. */
static int apply_pending(tc__redis *r, redisContext *c)
{
    if (!atomic_load(&r->pend_active))
        return TC_OK;

    /* Copied out under the lock (another thread may clear the entries as soon as it is
     * released); the I/O happens after it. */
    tc__rconns_lock(r->conns);
    uint64_t upto = r->pend_seq;
    int overflow = r->pend_overflow;
    size_t count = overflow ? 0 : r->pend_count, bytes = 0;
    settle_item *items = NULL;
    char *keybuf = NULL;
    int rc = TC_OK;
    if (count > 0) {
        for (size_t i = 0; i < PEND_BUCKETS; i++)
            for (pend_entry *e = r->pend_buckets[i]; e != NULL; e = e->next)
                bytes += e->len;
        items = malloc(count * sizeof *items);
        keybuf = malloc(bytes);
        if (items == NULL || keybuf == NULL) {
            rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        } else {
            size_t k = 0, off = 0;
            for (size_t i = 0; i < PEND_BUCKETS; i++) {
                for (pend_entry *e = r->pend_buckets[i]; e != NULL; e = e->next) {
                    memcpy(keybuf + off, e->key, e->len);
                    items[k++] = (settle_item){keybuf + off, e->len, e->version};
                    off += e->len;
                }
            }
        }
    }
    tc__rconns_unlock(r->conns);

    if (rc == TC_OK && overflow) {
        rc = scan_drop(r, c, r->scan_pattern, r->scan_pattern_len, 0, NULL);
    } else {
        /* A failed write is replayed as a tombstone of its version, not as a DEL: between the
         * failure and now, a read on this handle may have loaded the older row, and its late
         * fill must be refused rather than find the key empty. */
        for (size_t done = 0; rc == TC_OK && done < count; done += SETTLE_BATCH)
            rc = conn_settle(r, c, items + done,
                             count - done < SETTLE_BATCH ? count - done : SETTLE_BATCH, NULL);
    }
    free(items);
    free(keybuf);
    if (rc != TC_OK)
        return rc;
    pend_clear(r, upto);
    return TC_OK;
}

/* ---- running a command ------------------------------------------------------------------- */

/* One piece of work on a connection. It returns TC_OK or an error; *broken says the connection
 * failed (then the error is already recorded): BROKEN when the step may run again on a new
 * connection, BROKEN_SENT when it must not (a command that is not idempotent was written). */
typedef int (*conn_op)(tc__redis *r, redisContext *c, void *ctx, int *broken);
#define BROKEN 1
#define BROKEN_SENT 2

/* Runs op on the calling thread's connection, after the journal was applied on it. If the
 * connection turns out to be closed (server restart, CLIENT KILL, idle timeout), it is replaced
 * and the whole step runs once more, unless op said BROKEN_SENT: every other operation we send
 * is idempotent. */
static int with_conn(tc__redis *r, conn_op op, void *ctx)
{
    for (int attempt = 0;; attempt++) {
        redisContext *c;
        int rc = tc__rconns_acquire(&c, r->conns);
        if (rc != TC_OK)
            return rc;
        tc__sigpipe_guard guard;
        tc__sigpipe_block(&guard);
        int broken = 0, retry = 0;
        rc = apply_pending(r, c);
        if (rc != TC_OK) {
            broken = c->err != 0;
        } else {
            rc = op(r, c, ctx, &broken);
        }
        if (broken)
            retry = broken != BROKEN_SENT && (c->err == 0 || retryable(c->err));
        tc__sigpipe_restore(&guard, broken);
        tc__rconns_release(r->conns, broken); /* c is invalid from here if broken */
        if (rc == TC_OK || !retry || attempt > 0)
            return rc;
    }
}

/* A single command; its reply (of any type: the caller checks it and frees it). */
typedef struct command {
    const char *what;
    int argc;
    const char **argv;
    const size_t *lens;
    redisReply *reply;
} command;

static int op_command(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    command *cmd = ctx;
    cmd->reply = tc__resp_command(c, cmd->argc, cmd->argv, cmd->lens);
    if (cmd->reply != NULL)
        return TC_OK;
    *broken = 1;
    return ctx_error(r, c, cmd->what);
}

/* A script (conn_eval); out of memory is not a broken connection. */
typedef struct script_call {
    int which, nrest;
    const char **rest;
    const size_t *lens;
    redisReply *reply;
} script_call;

static int op_script(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    script_call *sc = ctx;
    sc->reply = conn_eval(c, sc->which, sc->nrest, sc->rest, sc->lens);
    if (sc->reply != NULL)
        return TC_OK;
    if (c->err == 0)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    *broken = 1;
    return ctx_error(r, c, "EVALSHA");
}

static int run(tc__redis *r, const char *what, int argc, const char **argv, const size_t *lens,
               redisReply **out)
{
    command cmd = {what, argc, argv, lens, NULL};
    int rc = with_conn(r, op_command, &cmd);
    *out = cmd.reply;
    return rc;
}

static int run_script(tc__redis *r, int which, int nrest, const char **rest,
                      const size_t *lens, redisReply **out)
{
    script_call sc = {which, nrest, rest, lens, NULL};
    int rc = with_conn(r, op_script, &sc);
    *out = sc.reply;
    return rc;
}

const char *tc__redis_namespace(const tc__redis *r, size_t *len)
{
    *len = r->ns_len;
    return r->ns;
}

/* Whether the server already closed c (idle timeout, CLIENT KILL, restart), seen without
 * sending anything: a peek at the socket. EOF or a socket error means closed; bytes nobody
 * asked for mean the reply stream is out of step (a RESP2 server speaks only when spoken to),
 * which is as unusable. Nothing to read (EAGAIN) is the healthy case. A few microseconds: one
 * system call, no round trip. */
static int conn_closed(const redisContext *c)
{
    char b;
    ssize_t n;
    int saved = errno;
    do {
        n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    int closed = n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    errno = saved;
    return closed;
}

/* A command that must not run twice. The only retry is for a connection found closed before
 * anything was written on it: then the command certainly was not sent, and with_conn replaces
 * the connection and comes back. Once the command has been handed to the socket, a failure
 * (the server closed the connection meanwhile, a timeout) is returned as it is: the server may
 * or may not have executed it, and sending it again could execute it twice. */
static int op_command_once(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    command *cmd = ctx;
    if (conn_closed(c)) {
        *broken = BROKEN;
        return tc__err(r->owner, TC_EREDIS, "redis %s: %s: the server closed the connection",
                       tc__rconns_where(r->conns), cmd->what);
    }
    cmd->reply = tc__resp_command(c, cmd->argc, cmd->argv, cmd->lens);
    if (cmd->reply != NULL)
        return TC_OK;
    *broken = BROKEN_SENT;
    return ctx_error(r, c, cmd->what);
}

int tc__redis_run(tc__redis *r, const char *what, int idempotent, int argc, const char **argv,
                  const size_t *lens, redisReply **out)
{
    if (out == NULL)
        return tc__err(r != NULL ? r->owner : NULL, TC_EINVAL, "redis: out is NULL");
    *out = NULL;
    if (r == NULL || argc < 1 || argv == NULL || lens == NULL)
        return tc__err(r != NULL ? r->owner : NULL, TC_EINVAL, "redis: bad command arguments");
    if (what == NULL)
        what = "command";
    if (idempotent)
        return run(r, what, argc, argv, lens, out);
    command cmd = {what, argc, argv, lens, NULL};
    int rc = with_conn(r, op_command_once, &cmd);
    *out = cmd.reply;
    return rc;
}

/* Pipelining: every command appended to the connection's output buffer, then every reply read,
 * so n commands cost one round trip. */
typedef struct pipe_call {
    const char *what;
    size_t n;
    const tc__redis_cmd *cmds;
    redisReply **replies; /* n entries; all NULL unless the step succeeded */
} pipe_call;

static int op_pipeline(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    pipe_call *pc = ctx;
    int rc = TC_OK;
    for (size_t i = 0; i < pc->n; i++)
        pc->replies[i] = NULL;
    /* The whole pipeline in one buffer (tc__resp_write), handed to hiredis in one append. */
    size_t len = 0;
    for (size_t i = 0; i < pc->n; i++)
        len += tc__resp_size(pc->cmds[i].argc, pc->cmds[i].lens);
    char *buf = malloc(len), *p = buf;
    if (buf == NULL)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory"); /* nothing sent */
    for (size_t i = 0; i < pc->n; i++)
        p = tc__resp_write(p, pc->cmds[i].argc, pc->cmds[i].argv, pc->cmds[i].lens);
    int appended = redisAppendFormattedCommand(c, buf, len);
    free(buf);
    if (appended != REDIS_OK) {
        /* Out of memory in hiredis (it set c->err): nothing was written, but the connection's
         * state is hiredis's to judge, so it goes. */
        *broken = BROKEN;
        return c->err != 0 ? ctx_error(r, c, pc->what)
                           : tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    }
    for (size_t i = 0; i < pc->n; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK || rep == NULL) {
            *broken = BROKEN;
            rc = ctx_error(r, c, pc->what);
            break;
        }
        pc->replies[i] = rep;
    }
    if (rc != TC_OK) {
        for (size_t i = 0; i < pc->n; i++) {
            if (pc->replies[i] != NULL)
                freeReplyObject(pc->replies[i]);
            pc->replies[i] = NULL;
        }
    }
    return rc;
}

int tc__redis_pipeline(tc__redis *r, const char *what, size_t n, const tc__redis_cmd *cmds,
                       redisReply **replies)
{
    if (r == NULL || (n > 0 && (cmds == NULL || replies == NULL)))
        return tc__err(r != NULL ? r->owner : NULL, TC_EINVAL, "redis: bad pipeline arguments");
    for (size_t i = 0; i < n; i++) {
        replies[i] = NULL;
        if (cmds[i].argc < 1 || cmds[i].argv == NULL || cmds[i].lens == NULL)
            return tc__err(r->owner, TC_EINVAL, "redis: bad command %zu in a pipeline", i);
    }
    if (n == 0)
        return TC_OK;
    pipe_call pc = {what != NULL ? what : "pipeline", n, cmds, replies};
    return with_conn(r, op_pipeline, &pc);
}

/* ---- the tier ---------------------------------------------------------------------------- */

int tc__redis_new(tc__redis **out, const tc__redis_opts *opts, const void *owner,
                  tc__stats *stats)
{
    if (out == NULL)
        return tc__err(owner, TC_EINVAL, "redis: out is NULL");
    *out = NULL;
    if (opts == NULL)
        return tc__err(owner, TC_EINVAL, "redis: options are NULL");
    tc__redis *r = calloc(1, sizeof *r);
    if (r == NULL)
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    r->owner = owner;
    r->stats = stats != NULL ? stats : &r->own_stats;
    r->max_value_bytes = opts->max_value_bytes;
    r->tombstone_ttl_ms = opts->tombstone_ttl_ms > 0 ? opts->tombstone_ttl_ms : 10000;
    atomic_init(&r->pend_active, 0);
    atomic_init(&r->pend_busy, 0);

    const char *ns = opts->ns != NULL ? opts->ns : "";
    r->ns_len = strlen(ns);
    r->ns = malloc(r->ns_len + 1);
    /* SCAN MATCH is a glob: escape its metacharacters so a namespace like "app[1]:" matches
     * only itself. Worst case every byte is escaped, plus the trailing '*'. */
    r->scan_pattern = r->ns_len < SIZE_MAX / 2 - 2 ? malloc(2 * r->ns_len + 2) : NULL;
    if (r->ns == NULL || r->scan_pattern == NULL) {
        free(r->ns);
        free(r->scan_pattern);
        free(r);
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    }
    memcpy(r->ns, ns, r->ns_len + 1);
    size_t j = 0;
    for (size_t i = 0; i < r->ns_len; i++) {
        if (strchr("*?[]\\", ns[i]) != NULL)
            r->scan_pattern[j++] = '\\';
        r->scan_pattern[j++] = ns[i];
    }
    r->scan_pattern[j++] = '*';
    r->scan_pattern[j] = '\0';
    r->scan_pattern_len = j;

    tc__rconns_opts co = {
        .host = opts->host,
        .port = opts->port,
        .unix_socket = opts->unix_socket,
        .connect_timeout_ms = opts->connect_timeout_ms,
        .command_timeout_ms = opts->command_timeout_ms,
        .retry_interval_ms = opts->retry_interval_ms,
        .retry_max_ms = opts->retry_max_ms,
        .username = opts->username,
        .password = opts->password,
        .database = opts->database,
        .keepalive = opts->keepalive,
        .on_torn = journal_torn,
        .on_torn_arg = r,
    };
    int rc = tc__rconns_new(&r->conns, &co, owner, r->stats);
    if (rc != TC_OK) {
        free(r->ns);
        free(r->scan_pattern);
        free(r);
        return rc;
    }
    *out = r;
    return TC_OK;
}

/* Like tc_close, it must not run concurrently with any other use of r: no call in progress, and
 * no thread that used r exiting meanwhile (its connection's destructor would race with the
 * teardown; see tc__rconns_free). */
void tc__redis_free(tc__redis *r)
{
    if (r == NULL)
        return;
    tc__rconns_free(r->conns);
    if (r->pend_buckets != NULL) {
        for (size_t i = 0; i < PEND_BUCKETS; i++) {
            pend_entry *e = r->pend_buckets[i];
            while (e != NULL) {
                pend_entry *next = e->next;
                free(e);
                e = next;
            }
        }
        free(r->pend_buckets);
    }
    free(r->ns);
    free(r->scan_pattern);
    free(r);
}

/* Checks a GET reply and hands its payload to fn. */
static int deliver(tc__redis *r, const redisReply *rep, tc__value_fn fn, void *ctx)
{
    const char *where = tc__rconns_where(r->conns);
    if (rep->type == REDIS_REPLY_NIL)
        return TC_ENOTFOUND;
    if (rep->type == REDIS_REPLY_ERROR && rep->str != NULL && rep->len >= 9 &&
        memcmp(rep->str, "WRONGTYPE", 9) == 0)
        return tc__err(r->owner, TC_EPROTO,
                       "redis %s: the key holds a non-string value (not written by tiercache)",
                       where);
    if (rep->type != REDIS_REPLY_STRING || (rep->str == NULL && rep->len > 0))
        return reply_error(r, rep, "GET", "string");
    const unsigned char *p = (const unsigned char *)rep->str;
    size_t n = rep->len;
    const char *bad = NULL;
    if (n < ENV_HEADER)
        bad = "shorter than the 19-byte header";
    else if (p[0] != ENV_MAGIC)
        bad = "no tiercache header (bad magic byte)";
    else if (p[1] != ENV_FORMAT)
        bad = "an unknown format version";
    else if (p[2] != ENV_VALUE && p[2] != ENV_TOMBSTONE)
        bad = "an unknown kind byte";
    else if (tc__get_be64(p + 3) > (uint64_t)INT64_MAX)
        bad = "a negative version";
    else if (n - ENV_HEADER > r->max_value_bytes)
        bad = "a payload larger than max_value_bytes";
    if (bad != NULL)
        return tc__err(r->owner, TC_EPROTO, "redis %s: stored value (%zu bytes) has %s", where,
                       n, bad);
    if (p[2] == ENV_TOMBSTONE)
        return TC_ENOTFOUND;
    int64_t version = (int64_t)tc__get_be64(p + 3);
    int64_t expiry = (int64_t)tc__get_be64(p + 11);
    int64_t now = tc__wall_ms();
    /* Redis's own PX removes the key at about the same time; a clock step or a value written
     * by a host with another clock can leave it a little longer, and then it is a miss. */
    if (expiry <= now)
        return TC_ENOTFOUND;
    if (fn == NULL)
        return TC_OK;
    return fn(ctx, p + ENV_HEADER, n - ENV_HEADER, version, expiry - now);
}

int tc__redis_get(tc__redis *r, const char *key, size_t key_len, tc__value_fn fn, void *ctx)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    nskey k;
    rc = nskey_make(&k, r, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *argv[2] = {"GET", k.p};
    size_t lens[2] = {3, k.len};
    redisReply *rep;
    rc = run(r, "GET", 2, argv, lens, &rep);
    nskey_free(&k);
    if (rc != TC_OK)
        return rc;
    /* The connection is released already: fn may do anything, even fork. */
    rc = deliver(r, rep, fn, ctx);
    freeReplyObject(rep);
    return rc;
}

/* A guarded write of an envelope with PX. Any failure after the key was found valid journals
 * the key; a refusal (a newer version is there) is not a failure. */
/* A message the guard script publishes after its write (tc__redis_set_publish). */
typedef struct publication {
    const char *channel;
    size_t channel_len;
    const void *msg;
    size_t msg_len;
} publication;

static int write_envelope(tc__redis *r, const char *key, size_t key_len, char kind,
                          const void *payload, size_t len, int64_t version, int64_t ttl_ms,
                          int keep_equal, const publication *pub)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *where = tc__rconns_where(r->conns);
    int64_t now = tc__wall_ms();
    char *blob = NULL;
    size_t blob_len = 0;
    nskey k = {0};
    if (payload == NULL && len > 0)
        rc = tc__err(r->owner, TC_EINVAL, "redis: value is NULL");
    else if (ttl_ms <= 0 || ttl_ms > INT64_MAX - now)
        rc = tc__err(r->owner, TC_EINVAL, "redis: ttl_ms %lld is out of range",
                     (long long)ttl_ms);
    else if (version < 0)
        rc = tc__err(r->owner, TC_EINVAL, "redis: version %lld is negative", (long long)version);
    else if (len > r->max_value_bytes)
        rc = tc__err(r->owner, TC_ETOOBIG, "redis: value of %zu bytes exceeds max_value_bytes "
                     "(%zu)", len, r->max_value_bytes);
    else if (envelope_build(&blob, &blob_len, kind, version, now + ttl_ms, payload, len) != 0)
        rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    else
        rc = nskey_make(&k, r, key, key_len);

    if (rc == TC_OK) {
        char px[24];
        snprintf(px, sizeof px, "%lld", (long long)ttl_ms);
        redisReply *rep;
        const char *rest[7] = {"1", k.p, blob, px, keep_equal ? "1" : "0"};
        size_t lens[7] = {1, k.len, blob_len, strlen(px), 1};
        int nrest = keep_equal ? 5 : 4;
        if (pub != NULL) {
            rest[5] = pub->channel, lens[5] = pub->channel_len;
            rest[6] = pub->msg, lens[6] = pub->msg_len;
            nrest = 7;
        }
        rc = run_script(r, TC__SCRIPT_GUARD, nrest, rest, lens, &rep);
        if (rc == TC_OK) {
            if (rep->type != REDIS_REPLY_INTEGER || (rep->integer != 0 && rep->integer != 1))
                rc = rep->type == REDIS_REPLY_INTEGER
                         ? tc__err(r->owner, TC_EPROTO, "redis %s: write: unexpected reply %lld",
                                   where, (long long)rep->integer)
                         : reply_error(r, rep, "write", "integer");
            freeReplyObject(rep);
        }
        nskey_free(&k);
    }
    free(blob);
    if (rc != TC_OK)
        pend_add(r, key, key_len, version);
    return rc;
}

int tc__redis_set_publish(tc__redis *r, const char *key, size_t key_len, const void *value,
                          size_t len, int64_t version, int64_t ttl_ms, const char *channel,
                          size_t channel_len, const void *msg, size_t msg_len)
{
    publication pub = {channel, channel_len, msg, msg_len};
    return write_envelope(r, key, key_len, ENV_VALUE, value, len, version, ttl_ms, 0, &pub);
}

int tc__redis_set(tc__redis *r, const char *key, size_t key_len, const void *value, size_t len,
                  int64_t version, int64_t ttl_ms)
{
    return write_envelope(r, key, key_len, ENV_VALUE, value, len, version, ttl_ms, 0, NULL);
}

int tc__redis_tombstone(tc__redis *r, const char *key, size_t key_len, int64_t version,
                        int64_t ttl_ms)
{
    return write_envelope(r, key, key_len, ENV_TOMBSTONE, NULL, 0, version, ttl_ms, 0, NULL);
}

int tc__redis_retire(tc__redis *r, const char *key, size_t key_len, int64_t version,
                     int64_t ttl_ms)
{
    return write_envelope(r, key, key_len, ENV_TOMBSTONE, NULL, 0, version, ttl_ms, 1, NULL);
}

static int op_settle_one(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    int rc = conn_settle(r, c, ctx, 1, NULL);
    *broken = rc != TC_OK && c->err != 0;
    return rc;
}

int tc__redis_del(tc__redis *r, const char *key, size_t key_len)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    nskey k;
    rc = nskey_make(&k, r, key, key_len);
    if (rc == TC_OK) {
        settle_item item = {k.p, k.len, -1};
        rc = with_conn(r, op_settle_one, &item);
        nskey_free(&k);
    }
    if (rc != TC_OK)
        pend_add(r, key, key_len, -1);
    return rc;
}

/* A pattern invalidation: SCAN with the pattern as a Redis glob under the namespace, and the
 * evict script on every batch found. */
typedef struct pattern_call {
    const char *glob;
    size_t glob_len;
    int64_t removed;
} pattern_call;

static int op_pattern(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    pattern_call *pc = ctx;
    int rc = scan_drop(r, c, pc->glob, pc->glob_len, 1, &pc->removed);
    *broken = rc != TC_OK && c->err != 0;
    return rc;
}

int tc__redis_invalidate_pattern(tc__redis *r, const char *pat, size_t pat_len,
                                 int64_t *out_removed)
{
    *out_removed = 0;
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__pattern_check(r->owner, pat, pat_len);
    if (rc != TC_OK)
        return rc;
    /* Each byte may gain an escape; the namespace is at most a few hundred bytes. */
    size_t size = 2 * (r->ns_len + pat_len) + 1;
    char *glob = malloc(size);
    if (glob == NULL)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    pattern_call pc = {glob, tc__pattern_to_redis_glob(glob, size, r->ns, r->ns_len, pat,
                                                       pat_len), 0};
    rc = with_conn(r, op_pattern, &pc);
    free(glob);
    if (rc == TC_OK)
        *out_removed = pc.removed;
    return rc;
}

/* ---- tags -------------------------------------------------------------------------------- */

int tc__redis_tag(tc__redis *r, const char *key, size_t key_len, const char *const *tags,
                  const size_t *tag_lens, size_t ntags, int64_t ttl_ms)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    if (ttl_ms <= 0 || ttl_ms > INT64_MAX - tc__wall_ms())
        return tc__err(r->owner, TC_EINVAL, "redis: tag ttl_ms %lld is out of range",
                       (long long)ttl_ms);
    if (ntags == 0)
        return TC_OK;
    if (tags == NULL || tag_lens == NULL)
        return tc__err(r->owner, TC_EINVAL, "redis: tags or tag_lens is NULL");
    /* rest: numkeys, the sets, the member, PX; conn_eval adds two and counts in int. */
    if (ntags > (size_t)INT_MAX - 8)
        return tc__err(r->owner, TC_EINVAL, "redis: %zu tags in one call", ntags);
    /* Every tag is checked before anything is sent: a bad one writes nothing. */
    size_t bytes = 0;
    for (size_t i = 0; i < ntags; i++) {
        rc = check_tag(r, tags[i], tag_lens[i]);
        if (rc != TC_OK)
            return rc;
        if (bytes > SIZE_MAX - tagkey_len(r, tag_lens[i]))
            return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        bytes += tagkey_len(r, tag_lens[i]);
    }
    size_t nrest = ntags + 3;
    const char **rest = malloc(nrest * sizeof *rest);
    size_t *lens = malloc(nrest * sizeof *lens);
    char *names = malloc(bytes);
    char numkeys[24], px[24];
    redisReply *rep;
    if (rest == NULL || lens == NULL || names == NULL) {
        rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        goto done;
    }
    snprintf(numkeys, sizeof numkeys, "%zu", ntags);
    snprintf(px, sizeof px, "%lld", (long long)ttl_ms);
    rest[0] = numkeys;
    lens[0] = strlen(numkeys);
    size_t off = 0;
    for (size_t i = 0; i < ntags; i++) {
        tagkey_write(names + off, r, tags[i], tag_lens[i]);
        rest[1 + i] = names + off;
        lens[1 + i] = tagkey_len(r, tag_lens[i]);
        off += lens[1 + i];
    }
    rest[1 + ntags] = key;
    lens[1 + ntags] = key_len;
    rest[2 + ntags] = px;
    lens[2 + ntags] = strlen(px);
    rc = run_script(r, TC__SCRIPT_TAG, (int)nrest, rest, lens, &rep);
    if (rc == TC_OK) {
        if (rep->type != REDIS_REPLY_INTEGER)
            rc = reply_error(r, rep, "tag", "integer");
        else if (rep->integer != (long long)ntags)
            rc = tc__err(r->owner, TC_EPROTO, "redis %s: tag: unexpected reply %lld",
                         tc__rconns_where(r->conns), (long long)rep->integer);
        freeReplyObject(rep);
    }
done:
    free(rest);
    free(lens);
    free(names);
    return rc;
}

/* Runs the tag-drop script on c over the members (at most SETTLE_BATCH) SSCAN found in the
 * set; *removed += values taken out. A member that cannot be a key (empty, too long, with a
 * NUL: a foreign writer's) is only removed from the set: namespace + it could even name a tag
 * set. */
static int conn_drop_tagged(tc__redis *r, redisContext *c, const char *set, size_t set_len,
                            const redisReply *const *members, size_t n, int64_t *removed)
{
    static const char magic[2] = {ENV_MAGIC, ENV_FORMAT};
    /* The members that name keys first, the others after them. */
    const redisReply *order[SETTLE_BATCH];
    size_t nkeys = 0, njunk = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = members[i];
        if (m->len > 0 && m->len <= TC_KEY_MAX && memchr(m->str, '\0', m->len) == NULL) {
            order[nkeys++] = m;
            bytes += r->ns_len + m->len;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = members[i];
        if (!(m->len > 0 && m->len <= TC_KEY_MAX && memchr(m->str, '\0', m->len) == NULL))
            order[nkeys + njunk++] = m;
    }
    /* numkeys, the set, the keys, ARGV[1..3], the members */
    size_t nrest = 2 + nkeys + 3 + n;
    const char **rest = malloc(nrest * sizeof *rest);
    size_t *lens = malloc(nrest * sizeof *lens);
    char *keybuf = malloc(bytes + 1);
    char numkeys[24], px[24];
    unsigned char expiry[8];
    redisReply *rep = NULL;
    int rc = TC_OK;
    if (rest == NULL || lens == NULL || keybuf == NULL) {
        rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        goto done;
    }
    snprintf(numkeys, sizeof numkeys, "%zu", 1 + nkeys);
    snprintf(px, sizeof px, "%lld", (long long)r->tombstone_ttl_ms);
    tc__put_be64(expiry, (uint64_t)(tc__wall_ms() + r->tombstone_ttl_ms));
    rest[0] = numkeys;
    lens[0] = strlen(numkeys);
    rest[1] = set;
    lens[1] = set_len;
    size_t off = 0;
    for (size_t i = 0; i < nkeys; i++) {
        memcpy(keybuf + off, r->ns, r->ns_len);
        memcpy(keybuf + off + r->ns_len, order[i]->str, order[i]->len);
        rest[2 + i] = keybuf + off;
        lens[2 + i] = r->ns_len + order[i]->len;
        off += lens[2 + i];
    }
    rest[2 + nkeys] = magic;
    lens[2 + nkeys] = sizeof magic;
    rest[3 + nkeys] = px;
    lens[3 + nkeys] = strlen(px);
    rest[4 + nkeys] = (const char *)expiry;
    lens[4 + nkeys] = sizeof expiry;
    for (size_t i = 0; i < n; i++) {
        rest[5 + nkeys + i] = order[i]->str;
        lens[5 + nkeys + i] = order[i]->len;
    }
    rep = conn_eval(c, TC__SCRIPT_TAG_DROP, (int)nrest, rest, lens);
    if (rep == NULL)
        rc = c->err ? ctx_error(r, c, "tag invalidation")
                    : tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = reply_error(r, rep, "tag invalidation", "integer");
    else if (rep->integer < 0 || (unsigned long long)rep->integer > nkeys)
        rc = tc__err(r->owner, TC_EPROTO, "redis %s: tag invalidation: unexpected reply %lld",
                     tc__rconns_where(r->conns), (long long)rep->integer);
    else
        *removed += rep->integer;
done:
    if (rep != NULL)
        freeReplyObject(rep);
    free(rest);
    free(lens);
    free(keybuf);
    return rc;
}

typedef struct tag_call {
    const char *set;
    size_t set_len;
    int64_t removed; /* kept across with_conn's retry: what the first try took out is out */
} tag_call;

/* Walks the set with SSCAN; every batch found goes to the tag-drop script, which removes its
 * members, so the walk is a plain cursor over a set that only shrinks behind it (SSCAN returns
 * every member present from start to end at least once; a member returned twice is no longer
 * in the set and the script skips it). */
static int op_invalidate_tag(tc__redis *r, redisContext *c, void *ctx, int *broken)
{
    tag_call *tc = ctx;
    char cursor[CURSOR_SIZE] = "0";
    do {
        const char *argv[5] = {"SSCAN", tc->set, cursor, "COUNT", TAG_SCAN_COUNT};
        size_t lens[5] = {5, tc->set_len, strlen(cursor), 5, strlen(TAG_SCAN_COUNT)};
        redisReply *rep = tc__resp_command(c, 5, argv, lens);
        if (rep == NULL) {
            *broken = 1;
            return ctx_error(r, c, "SSCAN");
        }
        const redisReply *members = NULL;
        int rc = scan_reply(r, rep, "SSCAN", cursor, &members);
        /* COUNT is a hint: a small set (intset, listpack) comes back whole in one reply. */
        for (size_t done = 0; rc == TC_OK && done < members->elements; done += SETTLE_BATCH) {
            size_t n = members->elements - done;
            rc = conn_drop_tagged(r, c, tc->set, tc->set_len,
                                  (const redisReply *const *)members->element + done,
                                  n < SETTLE_BATCH ? n : SETTLE_BATCH, &tc->removed);
        }
        freeReplyObject(rep);
        if (rc != TC_OK) {
            *broken = c->err != 0;
            return rc;
        }
    } while (strcmp(cursor, "0") != 0);
    return TC_OK;
}

int tc__redis_invalidate_tag(tc__redis *r, const char *tag, size_t tag_len,
                             int64_t *out_removed)
{
    if (out_removed == NULL)
        return tc__err(r != NULL ? r->owner : NULL, TC_EINVAL, "redis: out_removed is NULL");
    *out_removed = 0;
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    int rc = check_tag(r, tag, tag_len);
    if (rc != TC_OK)
        return rc;
    nskey k;
    rc = tagkey_make(&k, r, tag, tag_len);
    if (rc != TC_OK)
        return rc;
    tag_call tc = {k.p, k.len, 0};
    rc = with_conn(r, op_invalidate_tag, &tc);
    nskey_free(&k);
    *out_removed = tc.removed;
    return rc;
}

/* ---- batched reads ------------------------------------------------------------------------- */

#define MANY_CHUNK 1000 /* GETs per pipeline: bounds the replies held at once */

/* Hands one hit of tc__redis_get_many to its index-aware callback through deliver. */
typedef struct many_hit {
    tc__many_fn fn;
    void *ctx;
    size_t i;
    int fn_rc;
} many_hit;

static int many_hit_fn(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl_ms)
{
    many_hit *h = ctx;
    h->fn_rc = h->fn(h->ctx, h->i, data, len, version, ttl_ms);
    return h->fn_rc;
}

int tc__redis_get_many(tc__redis *r, size_t n, const char *const *keys, const size_t *key_lens,
                       tc__many_fn fn, void *ctx)
{
    if (r == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: tier is NULL");
    if (n == 0)
        return TC_OK;
    if (keys == NULL || key_lens == NULL)
        return tc__err(r->owner, TC_EINVAL, "redis: keys or key_lens is NULL");
    /* Every key is checked before anything is sent; the largest chunk sizes the buffers. */
    size_t max_bytes = 0;
    for (size_t start = 0; start < n; start += MANY_CHUNK) {
        size_t bytes = 0;
        for (size_t i = start; i < n && i < start + MANY_CHUNK; i++) {
            int rc = tc__check_key(r->owner, keys[i], key_lens[i]);
            if (rc != TC_OK) {
                char why[200];
                snprintf(why, sizeof why, "%s", tc_errmsg(NULL));
                return tc__err(r->owner, rc, "redis: keys[%zu]: %s", i, why);
            }
            bytes += r->ns_len + key_lens[i];
        }
        if (bytes > max_bytes)
            max_bytes = bytes;
    }
    size_t chunk = n < MANY_CHUNK ? n : MANY_CHUNK;
    tc__redis_cmd *cmds = malloc(chunk * sizeof *cmds);
    const char **argv = malloc(2 * chunk * sizeof *argv);
    size_t *lens = malloc(2 * chunk * sizeof *lens);
    redisReply **replies = malloc(chunk * sizeof *replies);
    char *keybuf = malloc(max_bytes);
    int rc = TC_OK;
    if (cmds == NULL || argv == NULL || lens == NULL || replies == NULL || keybuf == NULL) {
        rc = tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        goto done;
    }
    for (size_t start = 0; rc == TC_OK && start < n; start += chunk) {
        size_t m = n - start < chunk ? n - start : chunk, off = 0;
        for (size_t j = 0; j < m; j++) {
            size_t klen = r->ns_len + key_lens[start + j];
            memcpy(keybuf + off, r->ns, r->ns_len);
            memcpy(keybuf + off + r->ns_len, keys[start + j], key_lens[start + j]);
            argv[2 * j] = "GET";
            lens[2 * j] = 3;
            argv[2 * j + 1] = keybuf + off;
            lens[2 * j + 1] = klen;
            cmds[j] = (tc__redis_cmd){2, argv + 2 * j, lens + 2 * j};
            off += klen;
        }
        /* GET is idempotent: with_conn reruns the whole chunk on a new connection after a
         * dropped one; nothing was delivered from it yet. */
        pipe_call pc = {"GET (pipelined)", m, cmds, replies};
        rc = with_conn(r, op_pipeline, &pc);
        if (rc != TC_OK)
            break;
        /* The connection is released: fn may do anything but its replies are ours. */
        for (size_t j = 0; j < m; j++) {
            if (rc == TC_OK) {
                const redisReply *rep = replies[j];
                many_hit h = {fn, ctx, start + j, 0};
                int d = deliver(r, rep, fn != NULL ? many_hit_fn : NULL, &h);
                if (h.fn_rc != 0)
                    rc = h.fn_rc; /* the callback's own failure: stop there */
                else if (d == TC_EPROTO)
                    d = TC_ENOTFOUND; /* not our value (a foreign writer's): a miss, which
                                       * the store answers and whose fill replaces it */
                if (rc == TC_OK && d != TC_OK && d != TC_ENOTFOUND)
                    rc = d; /* an error reply: Redis is failing */
            }
            freeReplyObject(replies[j]);
        }
    }
done:
    free(cmds);
    free(argv);
    free(lens);
    free(replies);
    free(keybuf);
    return rc;
}

/* ---- the miss lease ------------------------------------------------------------------------ */

int tc__redis_lease(tc__redis *r, const char *key, size_t key_len, const char *token,
                    size_t token_len, int64_t lease_ms, tc__value_fn fn, void *ctx)
{
    if (r == NULL || token == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: lease: NULL argument");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    if (lease_ms <= 0)
        return tc__err(r->owner, TC_EINVAL, "redis: lease_ms %lld is out of range",
                       (long long)lease_ms);
    nskey k, l = {0};
    rc = nskey_make(&k, r, key, key_len);
    if (rc != TC_OK)
        return rc;
    rc = infixkey_make(&l, r, LEASE_INFIX, LEASE_INFIX_LEN, key, key_len);
    if (rc == TC_OK) {
        const char live[3] = {ENV_MAGIC, ENV_FORMAT, ENV_VALUE};
        char px[24];
        snprintf(px, sizeof px, "%lld", (long long)lease_ms);
        unsigned char now[8];
        tc__put_be64(now, (uint64_t)tc__wall_ms());
        const char *rest[7] = {"2", k.p, l.p, live, token, px, (const char *)now};
        size_t lens[7] = {1, k.len, l.len, sizeof live, token_len, strlen(px), sizeof now};
        redisReply *rep;
        rc = run_script(r, TC__SCRIPT_LEASE, 7, rest, lens, &rep);
        if (rc == TC_OK) {
            if (rep->type == REDIS_REPLY_INTEGER && (rep->integer == 0 || rep->integer == 1))
                rc = rep->integer == 1 ? TC__LEASE_TAKEN : TC__LEASE_BUSY;
            else if (rep->type == REDIS_REPLY_STRING)
                rc = deliver(r, rep, fn, ctx); /* checked as a GET reply is */
            else
                rc = reply_error(r, rep, "lease", "string or integer");
            freeReplyObject(rep);
        }
        nskey_free(&l);
    }
    nskey_free(&k);
    return rc;
}

int tc__redis_unlease(tc__redis *r, const char *key, size_t key_len, const char *token,
                      size_t token_len)
{
    if (r == NULL || token == NULL)
        return tc__err(NULL, TC_EINVAL, "redis: unlease: NULL argument");
    int rc = tc__check_key(r->owner, key, key_len);
    if (rc != TC_OK)
        return rc;
    nskey l;
    rc = infixkey_make(&l, r, LEASE_INFIX, LEASE_INFIX_LEN, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *rest[3] = {"1", l.p, token};
    size_t lens[3] = {1, l.len, token_len};
    redisReply *rep;
    rc = run_script(r, TC__SCRIPT_UNLEASE, 3, rest, lens, &rep);
    if (rc == TC_OK) {
        if (rep->type != REDIS_REPLY_INTEGER)
            rc = reply_error(r, rep, "unlease", "integer");
        freeReplyObject(rep);
    }
    nskey_free(&l);
    return rc;
}
