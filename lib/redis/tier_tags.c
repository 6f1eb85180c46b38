/*
 * tier_tags.c - invalidation in Redis by path pattern (SCAN with the pattern as a glob) and by
 * tag (a set per tag, kept by the guarded write's companion script), and the tag index itself.
 */
#include "redis/tier_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/pattern.h"

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
    int rc = tc__rt_scan_drop(r, c, pc->glob, pc->glob_len, 1, &pc->removed);
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
    rc = tc__rt_with_conn(r, op_pattern, &pc);
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
        rc = tc__rt_check_tag(r, tags[i], tag_lens[i]);
        if (rc != TC_OK)
            return rc;
        if (bytes > SIZE_MAX - tc__rt_tagkey_len(r, tag_lens[i]))
            return tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
        bytes += tc__rt_tagkey_len(r, tag_lens[i]);
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
        tc__rt_tagkey_write(names + off, r, tags[i], tag_lens[i]);
        rest[1 + i] = names + off;
        lens[1 + i] = tc__rt_tagkey_len(r, tag_lens[i]);
        off += lens[1 + i];
    }
    rest[1 + ntags] = key;
    lens[1 + ntags] = key_len;
    rest[2 + ntags] = px;
    lens[2 + ntags] = strlen(px);
    rc = tc__rt_run_script(r, TC__SCRIPT_TAG, (int)nrest, rest, lens, &rep);
    if (rc == TC_OK) {
        if (rep->type != REDIS_REPLY_INTEGER)
            rc = tc__rt_reply_error(r, rep, "tag", "integer");
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
    rep = tc__rt_conn_eval(c, TC__SCRIPT_TAG_DROP, (int)nrest, rest, lens);
    if (rep == NULL)
        rc = c->err ? tc__rt_ctx_error(r, c, "tag invalidation")
                    : tc__err(r->owner, TC_ENOMEM, "redis: out of memory");
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = tc__rt_reply_error(r, rep, "tag invalidation", "integer");
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
            return tc__rt_ctx_error(r, c, "SSCAN");
        }
        const redisReply *members = NULL;
        int rc = tc__rt_scan_reply(r, rep, "SSCAN", cursor, &members);
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
    int rc = tc__rt_check_tag(r, tag, tag_len);
    if (rc != TC_OK)
        return rc;
    nskey k;
    rc = tc__rt_tagkey_make(&k, r, tag, tag_len);
    if (rc != TC_OK)
        return rc;
    tag_call tc = {k.p, k.len, 0};
    rc = tc__rt_with_conn(r, op_invalidate_tag, &tc);
    tc__rt_nskey_free(&k);
    *out_removed = tc.removed;
    return rc;
}
