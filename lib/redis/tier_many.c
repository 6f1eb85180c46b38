/*
 * tier_many.c - reads beyond one key's GET: many keys in one pipelined round trip, and the miss
 * lease (read the key and take its lease in one script call).
 */
#include "redis/tier_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        rc = tc__rt_with_conn(r, tc__rt_op_pipeline, &pc);
        if (rc != TC_OK)
            break;
        /* The connection is released: fn may do anything but its replies are ours. */
        for (size_t j = 0; j < m; j++) {
            if (rc == TC_OK) {
                const redisReply *rep = replies[j];
                many_hit h = {fn, ctx, start + j, 0};
                int d = tc__rt_deliver(r, rep, fn != NULL ? many_hit_fn : NULL, &h);
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
    rc = tc__rt_nskey_make(&k, r, key, key_len);
    if (rc != TC_OK)
        return rc;
    rc = tc__rt_infixkey_make(&l, r, LEASE_INFIX, LEASE_INFIX_LEN, key, key_len);
    if (rc == TC_OK) {
        const char live[3] = {ENV_MAGIC, ENV_FORMAT, ENV_VALUE};
        char px[24];
        snprintf(px, sizeof px, "%lld", (long long)lease_ms);
        unsigned char now[8];
        tc__put_be64(now, (uint64_t)tc__wall_ms());
        const char *rest[7] = {"2", k.p, l.p, live, token, px, (const char *)now};
        size_t lens[7] = {1, k.len, l.len, sizeof live, token_len, strlen(px), sizeof now};
        redisReply *rep;
        rc = tc__rt_run_script(r, TC__SCRIPT_LEASE, 7, rest, lens, &rep);
        if (rc == TC_OK) {
            if (rep->type == REDIS_REPLY_INTEGER && (rep->integer == 0 || rep->integer == 1))
                rc = rep->integer == 1 ? TC__LEASE_TAKEN : TC__LEASE_BUSY;
            else if (rep->type == REDIS_REPLY_STRING)
                rc = tc__rt_deliver(r, rep, fn, ctx); /* checked as a GET reply is */
            else
                rc = tc__rt_reply_error(r, rep, "lease", "string or integer");
            freeReplyObject(rep);
        }
        tc__rt_nskey_free(&l);
    }
    tc__rt_nskey_free(&k);
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
    rc = tc__rt_infixkey_make(&l, r, LEASE_INFIX, LEASE_INFIX_LEN, key, key_len);
    if (rc != TC_OK)
        return rc;
    const char *rest[3] = {"1", l.p, token};
    size_t lens[3] = {1, l.len, token_len};
    redisReply *rep;
    rc = tc__rt_run_script(r, TC__SCRIPT_UNLEASE, 3, rest, lens, &rep);
    if (rc == TC_OK) {
        if (rep->type != REDIS_REPLY_INTEGER)
            rc = tc__rt_reply_error(r, rep, "unlease", "integer");
        freeReplyObject(rep);
    }
    tc__rt_nskey_free(&l);
    return rc;
}
