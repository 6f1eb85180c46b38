/*
 * redis_structs.c - leaderboards (sorted sets) and hashes in the handle's Redis (tiercache.h,
 * "Redis structures"). No edge, no store: Redis is where they live, so each call is one command
 * (tc_zrank: one MULTI ... EXEC pipeline) on the calling thread's connection of the Redis tier,
 * through tc__redis_run, with the tier's reconnect, breaker and journal.
 *
 * Key layout. A structure lives at namespace + "\0" + "s:" + name. The NUL right after the
 * namespace keeps structures apart from cached values (a data key never contains a NUL, so a
 * structure and a value may share a name) and from tag sets (namespace + "\0tag:"); the tier's
 * SCANs skip every key holding a NUL, so a pattern invalidation or the journal's namespace
 * clearing never touches a structure.
 *
 * Retries. Commands whose effect does not depend on how often they run (ZADD, HSET, PEXPIRE and
 * the reads) are idempotent and retried after a dropped connection. ZINCRBY is not, and the
 * removals (ZREM, HDEL, DEL) report whether something was there, which a resend would get
 * wrong: those go with idempotent = 0 and are never sent twice (see tc__redis_run).
 *
 * Scores travel as text: "%.17g" round-trips every double, and Redis answers with text (RESP2
 * bulk strings, "inf"/"-inf" included) that strtod reads back.
 */
#include "core/cache.h"
#include "core/config.h"
#include "common/items.h"
#include "redis/redis_tier.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#define STRUCT_INFIX "\0s:"
#define STRUCT_INFIX_LEN (sizeof STRUCT_INFIX - 1)
#define SCORE_SIZE 32 /* "%.17g" of any double: at most 24 bytes and a NUL */

/* ---- arguments ---------------------------------------------------------------------------- */

/* The handle's Redis tier, or the reason there is none. */
static int get_tier(tc__redis **out, tc_cache *cache)
{
    *out = NULL;
    if (cache == NULL)
        return tc__err(NULL, TC_EINVAL, "cache is NULL");
    *out = tc__cache_redis(cache);
    if (*out == NULL)
        return tc__err(cache, TC_EREDIS, "redis structures need Redis, and none is configured "
                       "(redis.host and redis.unix_socket are empty)");
    return TC_OK;
}

/* A name, member or field: the key rules (1..TC_KEY_MAX bytes, no NUL), with a message that
 * says which argument was wrong. */
static int check_name(tc_cache *cache, const char *what, const char *p, size_t len)
{
    int rc = tc__check_key(cache, p, len);
    if (rc == TC_OK)
        return TC_OK;
    char why[200];
    snprintf(why, sizeof why, "%s", tc_errmsg(NULL)); /* tc__err overwrites the message */
    if (strncmp(why, "key ", 4) == 0)
        return tc__err(cache, rc, "%s %s", what, why + 4);
    return tc__err(cache, rc, "%s: %s", what, why);
}

/* A structure's Redis key. */
typedef struct skey {
    char *p;
    size_t len;
    char buf[1024];
} skey;

static int skey_make(skey *k, tc_cache *cache, const tc__redis *r, const char *name,
                     size_t name_len)
{
    size_t ns_len;
    const char *ns = tc__redis_namespace(r, &ns_len);
    k->len = ns_len + STRUCT_INFIX_LEN + name_len;
    k->p = k->len <= sizeof k->buf ? k->buf : malloc(k->len);
    if (k->p == NULL)
        return tc__err(cache, TC_ENOMEM, "redis: out of memory");
    memcpy(k->p, ns, ns_len);
    memcpy(k->p + ns_len, STRUCT_INFIX, STRUCT_INFIX_LEN);
    memcpy(k->p + ns_len + STRUCT_INFIX_LEN, name, name_len);
    return TC_OK;
}

static void skey_free(skey *k)
{
    if (k->p != k->buf)
        free(k->p);
}

/* The common start of every call: the tier, the structure's name and its key. */
static int prologue(tc__redis **r, skey *k, tc_cache *cache, const char *name, size_t name_len)
{
    k->p = NULL;
    int rc = get_tier(r, cache);
    if (rc == TC_OK)
        rc = check_name(cache, "name", name, name_len);
    if (rc == TC_OK)
        rc = skey_make(k, cache, *r, name, name_len);
    if (rc != TC_OK)
        k->p = NULL;
    return rc;
}

static void epilogue(skey *k)
{
    if (k->p != NULL)
        skey_free(k);
}

/* The end of a call that returns a list: the key goes; the list is the caller's on TC_OK and is
 * freed otherwise. */
static int hand_over(tc_items **out, tc_items *items, skey *k, int rc)
{
    epilogue(k);
    if (rc != TC_OK) {
        tc_items_free(items);
        return rc;
    }
    *out = items;
    return TC_OK;
}

static int format_score(tc_cache *cache, char *buf, double score, const char *what)
{
    if (!isfinite(score))
        return tc__err(cache, TC_EINVAL, "%s is not a finite number", what);
    snprintf(buf, SCORE_SIZE, "%.17g", score);
    return TC_OK;
}

/* ---- replies ------------------------------------------------------------------------------ */

/* An error reply: a name holding another type is TC_EPROTO (it is not what the call expects),
 * any other error is Redis failing (TC_EREDIS). Anything else is TC_OK. */
static int reply_failed(tc_cache *cache, const redisReply *rep, const char *what)
{
    if (rep->type != REDIS_REPLY_ERROR)
        return TC_OK;
    size_t len = rep->str != NULL ? rep->len : 0;
    if (len >= 9 && memcmp(rep->str, "WRONGTYPE", 9) == 0)
        return tc__err(cache, TC_EPROTO, "redis: %s: the name holds another type of structure",
                       what);
    return tc__err(cache, TC_EREDIS, "redis: %s failed: %.*s", what, (int)(len > 200 ? 200 : len),
                   len > 0 ? rep->str : "");
}

static int unexpected(tc_cache *cache, const redisReply *rep, const char *what)
{
    return tc__err(cache, TC_EPROTO, "redis: %s: unexpected reply (type %d)", what, rep->type);
}

/* Runs one command and screens error replies; on TC_OK, *out is a reply that is not an error
 * (free it with freeReplyObject). */
static int command(redisReply **out, tc_cache *cache, tc__redis *r, const char *what,
                   int idempotent, int argc, const char **argv, const size_t *lens)
{
    redisReply *rep = NULL;
    int rc = tc__redis_run(r, what, idempotent, argc, argv, lens, &rep);
    if (rc == TC_OK && rep == NULL)
        rc = tc__err(cache, TC_EPROTO, "redis: %s: no reply", what);
    if (rc == TC_OK)
        rc = reply_failed(cache, rep, what);
    if (rc != TC_OK && rep != NULL) {
        freeReplyObject(rep);
        rep = NULL;
    }
    *out = rep;
    return rc;
}

/* A command whose reply is an integer. */
static int command_int(long long *out, tc_cache *cache, tc__redis *r, const char *what,
                       int idempotent, int argc, const char **argv, const size_t *lens)
{
    *out = 0;
    redisReply *rep;
    int rc = command(&rep, cache, r, what, idempotent, argc, argv, lens);
    if (rc != TC_OK)
        return rc;
    if (rep->type == REDIS_REPLY_INTEGER)
        *out = rep->integer;
    else
        rc = unexpected(cache, rep, what);
    freeReplyObject(rep);
    return rc;
}

/* A score as Redis sends it: a bulk string (RESP2), or a double (RESP3, hiredis 1.x). */
static int parse_score(double *out, tc_cache *cache, const redisReply *rep, const char *what)
{
    *out = 0;
    int is_text = rep->type == REDIS_REPLY_STRING;
#ifdef REDIS_REPLY_DOUBLE
    is_text = is_text || rep->type == REDIS_REPLY_DOUBLE;
#endif
    char buf[64];
    if (!is_text || rep->str == NULL || rep->len == 0 || rep->len >= sizeof buf)
        return tc__err(cache, TC_EPROTO, "redis: %s: a score that is not a number", what);
    memcpy(buf, rep->str, rep->len);
    buf[rep->len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    /* ERANGE on underflow is fine (a denormal or 0), overflow cannot come from Redis's own
     * formatting of a double; NaN is never a Redis score. */
    if (end != buf + rep->len || isnan(v))
        return tc__err(cache, TC_EPROTO, "redis: %s: a score that is not a number: %s", what,
                       buf);
    *out = v;
    return TC_OK;
}

/* ---- leaderboards ------------------------------------------------------------------------- */

int tc_zadd(tc_cache *cache, const char *set, size_t set_len, const char *member,
            size_t member_len, double score)
{
    tc__redis *r;
    skey k;
    char sc[SCORE_SIZE];
    int rc = prologue(&r, &k, cache, set, set_len);
    if (rc == TC_OK)
        rc = check_name(cache, "member", member, member_len);
    if (rc == TC_OK)
        rc = format_score(cache, sc, score, "score");
    if (rc == TC_OK) {
        const char *argv[4] = {"ZADD", k.p, sc, member};
        size_t lens[4] = {4, k.len, strlen(sc), member_len};
        long long added;
        rc = command_int(&added, cache, r, "ZADD", 1, 4, argv, lens);
        if (rc == TC_OK && added != 0 && added != 1)
            rc = tc__err(cache, TC_EPROTO, "redis: ZADD: unexpected reply %lld", added);
    }
    epilogue(&k);
    return rc;
}

int tc_zincrby(double *out_score, tc_cache *cache, const char *set, size_t set_len,
               const char *member, size_t member_len, double delta)
{
    if (out_score != NULL)
        *out_score = 0;
    tc__redis *r;
    skey k;
    char sc[SCORE_SIZE];
    int rc = prologue(&r, &k, cache, set, set_len);
    if (rc == TC_OK)
        rc = check_name(cache, "member", member, member_len);
    if (rc == TC_OK)
        rc = format_score(cache, sc, delta, "delta");
    if (rc == TC_OK) {
        const char *argv[4] = {"ZINCRBY", k.p, sc, member};
        size_t lens[4] = {7, k.len, strlen(sc), member_len};
        redisReply *rep;
        /* Not idempotent: never sent twice. */
        rc = command(&rep, cache, r, "ZINCRBY", 0, 4, argv, lens);
        if (rc == TC_OK) {
            double v;
            rc = parse_score(&v, cache, rep, "ZINCRBY");
            if (rc == TC_OK && out_score != NULL)
                *out_score = v;
            freeReplyObject(rep);
        }
    }
    epilogue(&k);
    return rc;
}

/* Adds one (member, score) pair of a ZREVRANGE ... WITHSCORES reply to the list. */
static int add_scored(tc_items *items, tc_cache *cache, const redisReply *m, const redisReply *s)
{
    if (m == NULL || s == NULL || m->type != REDIS_REPLY_STRING || (m->str == NULL && m->len > 0))
        return tc__err(cache, TC_EPROTO, "redis: ZREVRANGE: a member that is not a string");
    double score;
    int rc = parse_score(&score, cache, s, "ZREVRANGE");
    if (rc != TC_OK)
        return rc;
    if (tc__items_add(items, m->str, m->len, NULL, 0, score) != TC_OK)
        return tc__err(cache, TC_ENOMEM, "out of memory");
    return TC_OK;
}

int tc_ztop(tc_items **out, tc_cache *cache, const char *set, size_t set_len, size_t n)
{
    if (out == NULL)
        return tc__err(cache, TC_EINVAL, "out is NULL");
    *out = NULL;
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, set, set_len);
    if (rc == TC_OK && n > TC_GET_MANY_MAX)
        rc = tc__err(cache, TC_EINVAL, "n is %zu, more than TC_GET_MANY_MAX (%d)", n,
                     TC_GET_MANY_MAX);
    tc_items *items = NULL;
    if (rc == TC_OK && tc__items_new(&items, n) != TC_OK)
        rc = tc__err(cache, TC_ENOMEM, "out of memory");
    if (rc == TC_OK && n > 0) {
        char stop[24];
        snprintf(stop, sizeof stop, "%zu", n - 1);
        const char *argv[5] = {"ZREVRANGE", k.p, "0", stop, "WITHSCORES"};
        size_t lens[5] = {9, k.len, 1, strlen(stop), 10};
        redisReply *rep;
        rc = command(&rep, cache, r, "ZREVRANGE", 1, 5, argv, lens);
        if (rc == TC_OK) {
            if (rep->type != REDIS_REPLY_ARRAY) {
                rc = unexpected(cache, rep, "ZREVRANGE");
            } else if (rep->elements > 0 && rep->element[0] != NULL &&
                       rep->element[0]->type == REDIS_REPLY_ARRAY) {
                /* RESP3: [[member, score], ...] */
                if (rep->elements > n)
                    rc = unexpected(cache, rep, "ZREVRANGE");
                for (size_t i = 0; rc == TC_OK && i < rep->elements; i++) {
                    const redisReply *p = rep->element[i];
                    if (p == NULL || p->type != REDIS_REPLY_ARRAY || p->elements != 2)
                        rc = unexpected(cache, rep, "ZREVRANGE");
                    else
                        rc = add_scored(items, cache, p->element[0], p->element[1]);
                }
            } else {
                /* RESP2: member, score, member, score, ... */
                if (rep->elements % 2 != 0 || rep->elements / 2 > n)
                    rc = unexpected(cache, rep, "ZREVRANGE");
                for (size_t i = 0; rc == TC_OK && i < rep->elements; i += 2)
                    rc = add_scored(items, cache, rep->element[i], rep->element[i + 1]);
            }
            freeReplyObject(rep);
        }
    }
    return hand_over(out, items, &k, rc);
}

/* The rank for "highest first" and the score, read together: MULTI, ZREVRANK, ZSCORE, EXEC in
 * one pipeline, so both come from the same moment. */
static int zrank_tx(int64_t *out_rank, double *out_score, tc_cache *cache, tc__redis *r,
                    const skey *k, const char *member, size_t member_len)
{
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t multi_len[1] = {5}, exec_len[1] = {4};
    const char *rank[3] = {"ZREVRANK", k->p, member}, *score[3] = {"ZSCORE", k->p, member};
    size_t rank_len[3] = {8, k->len, member_len}, score_len[3] = {6, k->len, member_len};
    tc__redis_cmd cmds[4] = {
        {1, multi, multi_len}, {3, rank, rank_len}, {3, score, score_len}, {1, exec, exec_len}};
    redisReply *reps[4];
    int rc = tc__redis_pipeline(r, "ZREVRANK", 4, cmds, reps);
    if (rc != TC_OK)
        return rc;
    for (int i = 0; rc == TC_OK && i < 4; i++)
        rc = reply_failed(cache, reps[i], i == 0 ? "MULTI" : i == 3 ? "EXEC" : "ZREVRANK");
    const redisReply *tx = reps[3];
    if (rc == TC_OK && (tx->type != REDIS_REPLY_ARRAY || tx->elements != 2 ||
                        tx->element[0] == NULL || tx->element[1] == NULL))
        rc = unexpected(cache, tx, "EXEC");
    if (rc == TC_OK) {
        const redisReply *rk = tx->element[0], *sc = tx->element[1];
        rc = reply_failed(cache, rk, "ZREVRANK");
        if (rc == TC_OK)
            rc = reply_failed(cache, sc, "ZSCORE");
        if (rc == TC_OK && rk->type == REDIS_REPLY_NIL)
            rc = TC_ENOTFOUND;
        else if (rc == TC_OK && (rk->type != REDIS_REPLY_INTEGER || rk->integer < 0))
            rc = unexpected(cache, rk, "ZREVRANK");
        double v = 0;
        if (rc == TC_OK)
            rc = parse_score(&v, cache, sc, "ZSCORE");
        if (rc == TC_OK) {
            *out_rank = rk->integer;
            *out_score = v;
        }
    }
    for (int i = 0; i < 4; i++)
        freeReplyObject(reps[i]);
    return rc;
}

int tc_zrank(int64_t *out_rank, double *out_score, tc_cache *cache, const char *set,
             size_t set_len, const char *member, size_t member_len)
{
    if (out_rank != NULL)
        *out_rank = 0;
    if (out_score != NULL)
        *out_score = 0;
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, set, set_len);
    if (rc == TC_OK)
        rc = check_name(cache, "member", member, member_len);
    int64_t rank = 0;
    double score = 0;
    if (rc == TC_OK && out_rank != NULL) {
        rc = zrank_tx(&rank, &score, cache, r, &k, member, member_len);
    } else if (rc == TC_OK) {
        /* No rank wanted: the score alone says whether the member is there. */
        const char *argv[3] = {"ZSCORE", k.p, member};
        size_t lens[3] = {6, k.len, member_len};
        redisReply *rep;
        rc = command(&rep, cache, r, "ZSCORE", 1, 3, argv, lens);
        if (rc == TC_OK) {
            rc = rep->type == REDIS_REPLY_NIL ? TC_ENOTFOUND
                                              : parse_score(&score, cache, rep, "ZSCORE");
            freeReplyObject(rep);
        }
    }
    epilogue(&k);
    if (rc != TC_OK)
        return rc;
    if (out_rank != NULL)
        *out_rank = rank;
    if (out_score != NULL)
        *out_score = score;
    return TC_OK;
}

/* ZREM, HDEL: a removal whose reply (0 or 1) is reported; never sent twice. */
static int remove_one(int *out_removed, tc_cache *cache, const char *cmd, const char *what,
                      const char *name, size_t name_len, const char *item, size_t item_len)
{
    if (out_removed != NULL)
        *out_removed = 0;
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, name, name_len);
    if (rc == TC_OK)
        rc = check_name(cache, what, item, item_len);
    if (rc == TC_OK) {
        const char *argv[3] = {cmd, k.p, item};
        size_t lens[3] = {strlen(cmd), k.len, item_len};
        long long n;
        rc = command_int(&n, cache, r, cmd, 0, 3, argv, lens);
        if (rc == TC_OK && n != 0 && n != 1)
            rc = tc__err(cache, TC_EPROTO, "redis: %s: unexpected reply %lld", cmd, n);
        if (rc == TC_OK && out_removed != NULL)
            *out_removed = (int)n;
    }
    epilogue(&k);
    return rc;
}

int tc_zrem(int *out_removed, tc_cache *cache, const char *set, size_t set_len,
            const char *member, size_t member_len)
{
    return remove_one(out_removed, cache, "ZREM", "member", set, set_len, member, member_len);
}

/* ---- hashes ------------------------------------------------------------------------------- */

int tc_hset(tc_cache *cache, const char *hash, size_t hash_len, const char *field,
            size_t field_len, const void *value, size_t value_len)
{
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, hash, hash_len);
    if (rc == TC_OK)
        rc = check_name(cache, "field", field, field_len);
    if (rc == TC_OK && value == NULL && value_len > 0)
        rc = tc__err(cache, TC_EINVAL, "value is NULL");
    if (rc == TC_OK) {
        int64_t max = tc__cache_config(cache)->max_value_bytes;
        if ((uint64_t)value_len > (uint64_t)max)
            rc = tc__err(cache, TC_ETOOBIG, "value of %zu bytes exceeds max_value_bytes (%lld)",
                         value_len, (long long)max);
    }
    if (rc == TC_OK) {
        const char *argv[4] = {"HSET", k.p, field, value != NULL ? value : ""};
        size_t lens[4] = {4, k.len, field_len, value_len};
        long long added;
        rc = command_int(&added, cache, r, "HSET", 1, 4, argv, lens);
        if (rc == TC_OK && added != 0 && added != 1)
            rc = tc__err(cache, TC_EPROTO, "redis: HSET: unexpected reply %lld", added);
    }
    epilogue(&k);
    return rc;
}

int tc_hget(void **out, size_t *out_len, tc_cache *cache, const char *hash, size_t hash_len,
            const char *field, size_t field_len)
{
    if (out == NULL || out_len == NULL) {
        if (out != NULL)
            *out = NULL;
        if (out_len != NULL)
            *out_len = 0;
        return tc__err(cache, TC_EINVAL, "out or out_len is NULL");
    }
    *out = NULL;
    *out_len = 0;
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, hash, hash_len);
    if (rc == TC_OK)
        rc = check_name(cache, "field", field, field_len);
    if (rc == TC_OK) {
        const char *argv[3] = {"HGET", k.p, field};
        size_t lens[3] = {4, k.len, field_len};
        redisReply *rep;
        rc = command(&rep, cache, r, "HGET", 1, 3, argv, lens);
        if (rc == TC_OK) {
            if (rep->type == REDIS_REPLY_NIL) {
                rc = TC_ENOTFOUND;
            } else if (rep->type != REDIS_REPLY_STRING || (rep->str == NULL && rep->len > 0)) {
                rc = unexpected(cache, rep, "HGET");
            } else {
                char *v = rep->len < SIZE_MAX ? malloc(rep->len + 1) : NULL;
                if (v == NULL) {
                    rc = tc__err(cache, TC_ENOMEM, "out of memory");
                } else {
                    if (rep->len > 0)
                        memcpy(v, rep->str, rep->len);
                    v[rep->len] = '\0';
                    *out = v;
                    *out_len = rep->len;
                }
            }
            freeReplyObject(rep);
        }
    }
    epilogue(&k);
    return rc;
}

int tc_hdel(int *out_removed, tc_cache *cache, const char *hash, size_t hash_len,
            const char *field, size_t field_len)
{
    return remove_one(out_removed, cache, "HDEL", "field", hash, hash_len, field, field_len);
}

/* Adds one (field, value) pair of an HGETALL reply to the list. */
static int add_field(tc_items *items, tc_cache *cache, const redisReply *f, const redisReply *v)
{
    if (f == NULL || v == NULL || f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
        (f->str == NULL && f->len > 0) || (v->str == NULL && v->len > 0))
        return tc__err(cache, TC_EPROTO, "redis: HGETALL: a field or value that is not a string");
    if (tc__items_add(items, f->str, f->len, v->str != NULL ? v->str : "", v->len, 0) != TC_OK)
        return tc__err(cache, TC_ENOMEM, "out of memory");
    return TC_OK;
}

int tc_hgetall(tc_items **out, tc_cache *cache, const char *hash, size_t hash_len)
{
    if (out == NULL)
        return tc__err(cache, TC_EINVAL, "out is NULL");
    *out = NULL;
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, hash, hash_len);
    tc_items *items = NULL;
    if (rc == TC_OK) {
        const char *argv[2] = {"HGETALL", k.p};
        size_t lens[2] = {7, k.len};
        redisReply *rep;
        rc = command(&rep, cache, r, "HGETALL", 1, 2, argv, lens);
        if (rc == TC_OK) {
            int flat = rep->type == REDIS_REPLY_ARRAY;
#ifdef REDIS_REPLY_MAP
            flat = flat || rep->type == REDIS_REPLY_MAP; /* RESP3: the same pairs */
#endif
            if (!flat || rep->elements % 2 != 0)
                rc = unexpected(cache, rep, "HGETALL");
            else if (tc__items_new(&items, rep->elements / 2) != TC_OK)
                rc = tc__err(cache, TC_ENOMEM, "out of memory");
            for (size_t i = 0; rc == TC_OK && i < rep->elements; i += 2)
                rc = add_field(items, cache, rep->element[i], rep->element[i + 1]);
            freeReplyObject(rep);
        }
    }
    return hand_over(out, items, &k, rc);
}

/* ---- both --------------------------------------------------------------------------------- */

int tc_struct_expire(tc_cache *cache, const char *name, size_t name_len, int64_t ttl_ms)
{
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, name, name_len);
    /* Redis refuses an expiry past INT64_MAX ms since the epoch. */
    if (rc == TC_OK && (ttl_ms <= 0 || ttl_ms > INT64_MAX - tc__wall_ms()))
        rc = tc__err(cache, TC_EINVAL, "ttl_ms %lld is out of range", (long long)ttl_ms);
    if (rc == TC_OK) {
        char px[24];
        snprintf(px, sizeof px, "%lld", (long long)ttl_ms);
        const char *argv[3] = {"PEXPIRE", k.p, px};
        size_t lens[3] = {7, k.len, strlen(px)};
        long long set;
        /* Idempotent: a resend sets the same TTL again (from a few ms later). */
        rc = command_int(&set, cache, r, "PEXPIRE", 1, 3, argv, lens);
        if (rc == TC_OK && set == 0)
            rc = TC_ENOTFOUND;
        else if (rc == TC_OK && set != 1)
            rc = tc__err(cache, TC_EPROTO, "redis: PEXPIRE: unexpected reply %lld", set);
    }
    epilogue(&k);
    return rc;
}

int tc_struct_del(int *out_removed, tc_cache *cache, const char *name, size_t name_len)
{
    if (out_removed != NULL)
        *out_removed = 0;
    tc__redis *r;
    skey k;
    int rc = prologue(&r, &k, cache, name, name_len);
    if (rc == TC_OK) {
        const char *argv[2] = {"DEL", k.p};
        size_t lens[2] = {3, k.len};
        long long n;
        rc = command_int(&n, cache, r, "DEL", 0, 2, argv, lens);
        if (rc == TC_OK && n != 0 && n != 1)
            rc = tc__err(cache, TC_EPROTO, "redis: DEL: unexpected reply %lld", n);
        if (rc == TC_OK && out_removed != NULL)
            *out_removed = (int)n;
    }
    epilogue(&k);
    return rc;
}
