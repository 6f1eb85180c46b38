/*
 * tier_base.c - what every part of the Redis tier stands on: the envelope written, namespaced
 * keys, the journal of keys whose write failed, replies and connection errors, and running a
 * command, a script or a pipeline on the thread's connection with one retry after a drop (the
 * journal applied first). tier.c's head says why the journal exists.
 */
#include "redis/tier_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* The one place that writes the layout; the guarded-write script reads the version from it at
 * the same offsets. *out is malloc'd. */
int tc__rt_envelope_build(char **out, size_t *out_len, char kind, int64_t version,
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

int tc__rt_nskey_make(nskey *k, const tc__redis *r, const char *key, size_t key_len)
{
    k->len = r->ns_len + key_len;
    k->p = k->len <= sizeof k->buf ? k->buf : malloc(k->len);
    if (k->p == NULL)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    memcpy(k->p, r->ns, r->ns_len);
    memcpy(k->p + r->ns_len, key, key_len);
    return TC_OK;
}

void tc__rt_nskey_free(nskey *k)
{
    if (k->p != k->buf)
        free(k->p);
}

int tc__rt_check_tag(const tc__redis *r, const char *tag, size_t tag_len)
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

size_t tc__rt_tagkey_len(const tc__redis *r, size_t tag_len)
{
    return r->ns_len + TAG_INFIX_LEN + tag_len;
}

/* Writes the (checked) tag's set name at out, which has tagkey_len bytes. */
void tc__rt_tagkey_write(char *out, const tc__redis *r, const char *tag, size_t tag_len)
{
    memcpy(out, r->ns, r->ns_len);
    memcpy(out + r->ns_len, TAG_INFIX, TAG_INFIX_LEN);
    memcpy(out + r->ns_len + TAG_INFIX_LEN, tag, tag_len);
}

/* namespace + infix + name; infix starts with a NUL, so the key is never a data key. */
int tc__rt_infixkey_make(nskey *k, const tc__redis *r, const char *infix, size_t infix_len,
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

int tc__rt_tagkey_make(nskey *k, const tc__redis *r, const char *tag, size_t tag_len)
{
    return tc__rt_infixkey_make(k, r, TAG_INFIX, TAG_INFIX_LEN, tag, tag_len);
}

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
void tc__rt_pend_add(tc__redis *r, const char *key, size_t key_len, int64_t version)
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
void tc__rt_journal_torn(void *arg)
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
int tc__rt_ctx_error(const tc__redis *r, const redisContext *c, const char *what)
{
    return tc__err(r->owner, tc__redis_ctx_code(c), "redis %s: %s: %s", tc__rconns_where(r->conns), what,
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
int tc__rt_reply_error(const tc__redis *r, const redisReply *rep, const char *what,
                       const char *expected)
{
    if (rep->type == REDIS_REPLY_ERROR)
        return tc__err(r->owner, TC_EREDIS, "redis %s: %s failed: %.*s",
                       tc__rconns_where(r->conns), what, (int)(rep->len > 200 ? 200 : rep->len),
                       rep->str != NULL ? rep->str : "");
    return tc__err(r->owner, TC_EPROTO, "redis %s: %s: expected %s reply, got %s",
                   tc__rconns_where(r->conns), what, expected, type_name(rep->type));
}

/* Runs the settle script on c over n items (n <= SETTLE_BATCH); *removed += values taken out. */
int tc__rt_conn_settle(tc__redis *r, redisContext *c, const settle_item *items, size_t n,
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
    if (c == NULL) {
        rc = tc__rt_run_script(r, TC__SCRIPT_SETTLE, (int)nrest, rest, lens, &rep);
        if (rc != TC_OK)
            goto done;
    } else {
        rep = tc__rt_conn_eval(c, TC__SCRIPT_SETTLE, (int)nrest, rest, lens);
    }
    if (rep == NULL)
        rc = c->err ? tc__rt_ctx_error(r, c, "settle")
                    : tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = tc__rt_reply_error(r, rep, "settle", "integer");
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
int tc__rt_scan_reply(const tc__redis *r, const redisReply *rep, const char *what, char *cursor,
                      const redisReply **out_items)
{
    if (rep->type == REDIS_REPLY_ERROR && rep->str != NULL && rep->len >= 9 &&
        memcmp(rep->str, "WRONGTYPE", 9) == 0)
        return tc__err(r->owner, TC_EPROTO, "redis %s: %s: the key holds another type (not "
                       "written by tiercache)", tc__rconns_where(r->conns), what);
    if (rep->type != REDIS_REPLY_ARRAY)
        return tc__rt_reply_error(r, rep, what, "array");
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
int tc__rt_scan_drop(tc__redis *r, redisContext *c, const char *glob, size_t glob_len,
                     int evict, int64_t *removed)
{
    char cursor[CURSOR_SIZE] = "0";
    int64_t total = 0;
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", glob, "COUNT", SCAN_COUNT};
        size_t lens[6] = {4, strlen(cursor), 5, glob_len, 5, strlen(SCAN_COUNT)};
        redisReply *rep = tc__resp_command(c, 6, argv, lens);
        if (rep == NULL)
            return tc__rt_ctx_error(r, c, "SCAN");
        const redisReply *keys = NULL;
        int rc = tc__rt_scan_reply(r, rep, "SCAN", cursor, &keys);
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
                rc = tc__rt_conn_settle(r, c, items, n, &total);
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
                    rc = tc__rt_ctx_error(r, c, "DEL");
                else if (drep->type != REDIS_REPLY_INTEGER)
                    rc = tc__rt_reply_error(r, drep, "DEL", "integer");
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
        rc = tc__rt_scan_drop(r, c, r->scan_pattern, r->scan_pattern_len, 0, NULL);
    } else {
        /* A failed write is replayed as a tombstone of its version, not as a DEL: between the
         * failure and now, a read on this handle may have loaded the older row, and its late
         * fill must be refused rather than find the key empty. */
        for (size_t done = 0; rc == TC_OK && done < count; done += SETTLE_BATCH)
            rc = tc__rt_conn_settle(r, c, items + done,
                             count - done < SETTLE_BATCH ? count - done : SETTLE_BATCH, NULL);
    }
    free(items);
    free(keybuf);
    if (rc != TC_OK)
        return rc;
    pend_clear(r, upto);
    return TC_OK;
}

/* Runs op on the calling thread's connection, after the journal was applied on it. If the
 * connection turns out to be closed (server restart, CLIENT KILL, idle timeout), it is replaced
 * and the whole step runs once more, unless op said BROKEN_SENT: every other operation we send
 * is idempotent. */
int tc__rt_with_conn(tc__redis *r, conn_op op, void *ctx)
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
        /* A timeout is not retried: a server that did not answer in command_timeout_ms will
         * not answer a second connection sooner (a stopped server still accepts one), and
         * the breaker makes the next calls skip it for a while. */
        int timed_out = broken && tc__redis_ctx_timed_out(c);
        if (timed_out)
            tc__rconns_timed_out(r->conns, c->errstr);
        if (broken)
            retry = !timed_out && broken != BROKEN_SENT && (c->err == 0 || retryable(c->err));
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
    return tc__rt_ctx_error(r, c, cmd->what);
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
    sc->reply = tc__rt_conn_eval(c, sc->which, sc->nrest, sc->rest, sc->lens);
    if (sc->reply != NULL)
        return TC_OK;
    if (c->err == 0)
        return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    *broken = 1;
    return tc__rt_ctx_error(r, c, "EVALSHA");
}

/* ap_run's answer when the auto-pipeline is not for this call: the caller's own connection
 * (tc__rt_with_conn) sends it. */
#define AP_NOT_TAKEN 2

/* One command through the auto-pipeline, when it is on and no journal waits to be applied
 * first (with_conn applies it): TC_OK with its reply, or an error with its message. A
 * connection the server closed under the command is replaced and the command sent once more,
 * as with_conn does. */
static int ap_run(tc__redis *r, const char *what, int argc, const char *const *argv,
                  const size_t *lens, redisReply **out)
{
    *out = NULL;
    if (r->ap == NULL || atomic_load_explicit(&r->pend_active, memory_order_acquire))
        return AP_NOT_TAKEN;
    int rc = tc__ap_command(r->ap, what, argc, argv, lens, out);
    if (rc == TC__AP_RETRY)
        rc = tc__ap_command(r->ap, what, argc, argv, lens, out);
    return rc == TC__AP_RETRY ? TC_EREDIS : rc; /* the message is set */
}

/* Calls of the handle under way at once from which the auto-pipeline is worth it. Below, each
 * call takes its thread's own connection: with two or three callers, a leader serving the
 * others cannot send its own next command meanwhile, and their own connections keep every
 * command in flight (bench_redis: 2 threads reached 0.54-0.81 of a 2-connection pool through
 * the pipeline). From here on, batching wins (redis-autopipe-get-16, -64). */
#define AP_MIN_CALLS 4

/* Counts a single-command call under way (tc__rt_run, tc__rt_run_script): 1 if it should go
 * through the auto-pipeline. ap_done ends it. */
static int ap_begin(tc__redis *r)
{
    if (r->ap == NULL)
        return 0;
    return atomic_fetch_add_explicit(&r->ap_calls, 1, memory_order_relaxed) + 1 >= AP_MIN_CALLS;
}

static void ap_done(tc__redis *r)
{
    if (r->ap != NULL)
        atomic_fetch_sub_explicit(&r->ap_calls, 1, memory_order_relaxed);
}

int tc__rt_run(tc__redis *r, const char *what, int argc, const char **argv, const size_t *lens,
               redisReply **out)
{
    int rc = ap_begin(r) ? ap_run(r, what, argc, argv, lens, out) : AP_NOT_TAKEN;
    if (rc == AP_NOT_TAKEN) {
        command cmd = {what, argc, argv, lens, NULL};
        rc = tc__rt_with_conn(r, op_command, &cmd);
        *out = cmd.reply;
    }
    ap_done(r);
    return rc;
}

/* A script through the auto-pipeline: EVALSHA, then EVAL if the server lacks it. */
static int ap_script(tc__redis *r, int which, int nrest, const char **rest, const size_t *lens,
                     redisReply **out)
{
    enum { STACK_ARGS = 16 };
    const char *sargv[STACK_ARGS + 2];
    size_t slens[STACK_ARGS + 2];
    if (r->ap == NULL || nrest > STACK_ARGS)
        return AP_NOT_TAKEN;
    memcpy(sargv + 2, rest, (size_t)nrest * sizeof *sargv);
    memcpy(slens + 2, lens, (size_t)nrest * sizeof *slens);
    tc__rt_script_head(which, 0, sargv, slens);
    int rc = ap_run(r, "EVALSHA", nrest + 2, sargv, slens, out);
    if (rc == TC_OK && tc__rt_is_noscript(*out)) {
        freeReplyObject(*out);
        tc__rt_script_head(which, 1, sargv, slens);
        rc = ap_run(r, "EVAL", nrest + 2, sargv, slens, out);
    }
    return rc;
}

int tc__rt_run_script(tc__redis *r, int which, int nrest, const char **rest,
                      const size_t *lens, redisReply **out)
{
    int rc = ap_begin(r) ? ap_script(r, which, nrest, rest, lens, out) : AP_NOT_TAKEN;
    if (rc == AP_NOT_TAKEN) {
        script_call sc = {which, nrest, rest, lens, NULL};
        rc = tc__rt_with_conn(r, op_script, &sc);
        *out = sc.reply;
    }
    ap_done(r);
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
    return tc__rt_ctx_error(r, c, cmd->what);
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
        return tc__rt_run(r, what, argc, argv, lens, out);
    command cmd = {what, argc, argv, lens, NULL};
    int rc = tc__rt_with_conn(r, op_command_once, &cmd);
    *out = cmd.reply;
    return rc;
}


int tc__rt_op_pipeline(tc__redis *r, redisContext *c, void *ctx, int *broken)
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
        return c->err != 0 ? tc__rt_ctx_error(r, c, pc->what)
                           : tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    }
    for (size_t i = 0; i < pc->n; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK || rep == NULL) {
            *broken = BROKEN;
            rc = tc__rt_ctx_error(r, c, pc->what);
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
    return tc__rt_with_conn(r, tc__rt_op_pipeline, &pc);
}

/* Checks a GET reply and hands its payload to fn. */
int tc__rt_deliver(tc__redis *r, const redisReply *rep, tc__value_fn fn, void *ctx)
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
        return tc__rt_reply_error(r, rep, "GET", "string");
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
