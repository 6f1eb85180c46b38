/*
 * ddb_feed.c - the DynamoDB store's change feed (store.h's feed_* operations): the table's
 * stream (DynamoDB Streams: DescribeStream, GetShardIterator, GetRecords), so that every
 * INSERT, MODIFY and REMOVE reaches the invalidator, whoever made it.
 *
 * The invalidator counts changes with one increasing sequence; a stream has shards, each with
 * sequence numbers of its own. So the feed numbers the records it reads itself (seq, in this
 * process) and keeps them until they are committed; what is persisted is, per shard, the last
 * committed record's sequence number, or "done" for a shard that ended and was wholly applied.
 * A restart (or another invalidator taking over) reads each shard after its checkpoint, a new
 * shard from its start (TRIM_HORIZON), and a shard split's children only once their parent has
 * ended, so changes to one key are applied in their order. Nothing committed is read twice
 * and nothing uncommitted is skipped; the records read but not committed when a process dies
 * are read again by the next one (at least once, as the SQLite and PostgreSQL feeds).
 *
 * Checkpoints and leases live in the table <table>_tc_feed (partition key "consumer"), one item
 * per consumer: holder, expires (wall-clock ms) and pos (a map shard id -> sequence number).
 * Every change of it is conditional on the holder, so an invalidator whose lease lapsed while
 * it was stalled cannot move the checkpoint of the one that took over.
 */
#include "store/ddb_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DESCRIBE_EVERY_MS 5000 /* new shards appear every few hours: a slow look suffices */
#define MIN_POLL_MS 200        /* Streams allow a few GetRecords a second per shard */

typedef struct shard {
    char *id, *parent;
    char *iter;  /* the iterator for the next GetRecords; NULL: get one from pos */
    char *pos;   /* the last record read's sequence number; NULL: none read yet */
    int ended;   /* GetRecords said the shard is closed and read to its end */
    int done;    /* persisted as done: never read again */
    int seen;    /* in the last DescribeStream */
} shard;

typedef struct pending {
    int64_t seq, version;
    int shard;
    char *seqnum, *key;
    size_t key_len;
} pending;

struct ddb_feed {
    pthread_mutex_t mu;
    unsigned gen;
    int loaded;           /* the lease is held and the checkpoint read (claim, takeover) */
    char consumer[129];
    char holder[256];
    int64_t next_seq;     /* the last seq handed out */
    int64_t committed;    /* the seq up to which pending was committed */
    json_t *pos;          /* the persisted map, as last committed */
    char *stream_arn;
    int64_t described_ms;
    shard *shards;
    int nshards;
    pending *buf;
    int nbuf, capbuf;
    long long fetched_writes; /* the store's write count at the last fetch (feed_wait) */
    int table_ok;             /* <table>_tc_feed was found (or made): not looked for again */
};

static ddb_store *S(tc__store *st)
{
    return (ddb_store *)st;
}

static void clear_state(ddb_feed *f)
{
    for (int i = 0; i < f->nshards; i++)
        free(f->shards[i].id), free(f->shards[i].parent), free(f->shards[i].iter),
            free(f->shards[i].pos);
    free(f->shards);
    f->shards = NULL;
    f->nshards = 0;
    for (int i = 0; i < f->nbuf; i++)
        free(f->buf[i].seqnum), free(f->buf[i].key);
    f->nbuf = 0;
    json_decref(f->pos);
    f->pos = NULL;
    f->loaded = 0;
    f->described_ms = 0;
}

void tc__ddb_feed_free(ddb_store *s)
{
    ddb_feed *f = s->feed;
    if (f == NULL)
        return;
    clear_state(f);
    free(f->buf);
    free(f->stream_arn);
    pthread_mutex_destroy(&f->mu);
    free(f);
    s->feed = NULL;
}

/* The feed's state, locked; made on first use, and given up in a fork()ed child (the lease it
 * shows is the parent's). NULL: out of memory. */
static ddb_feed *lock_feed(ddb_store *s)
{
    unsigned gen = tc__fork_generation();
    if (s->feed == NULL) {
        pthread_mutex_lock(&s->wmu);
        if (s->feed == NULL) {
            ddb_feed *f = calloc(1, sizeof *f);
            if (f != NULL) {
                pthread_mutex_init(&f->mu, NULL);
                f->gen = gen;
            }
            s->feed = f;
        }
        pthread_mutex_unlock(&s->wmu);
        if (s->feed == NULL)
            return NULL;
    }
    ddb_feed *f = s->feed;
    if (f->gen != gen) {
        /* Only the invalidator's thread uses the feed; a child has none of its own yet. */
        if (!tc__mutex_after_fork(&f->mu))
            f->nbuf = f->nshards = 0, f->shards = NULL, f->pos = NULL; /* left, not walked */
        f->loaded = 0;
        f->gen = gen;
    }
    pthread_mutex_lock(&f->mu);
    return f;
}

static int nomem(ddb_store *s)
{
    return tc__err(s->base.owner, TC_ENOMEM, "dynamodb feed: out of memory");
}

/* ---- the checkpoint item ------------------------------------------------------------------- */

static int ensure_feed_table(ddb_store *s)
{
    static const char *const attr = "consumer";
    json_t *req = json_pack("{s:s}", "TableName", s->feed_table), *ans;
    char type[DDB_TYPE_MAX];
    int rc = tc__ddb_call(&s->db, "DescribeTable", req, &ans, type);
    json_decref(req);
    if (rc == TC_OK) {
        json_decref(ans);
        return TC_OK;
    }
    if (strcmp(type, "ResourceNotFoundException") != 0)
        return rc;
    if (!s->create_table)
        return tc__err(s->base.owner, TC_ESTORE,
                       "dynamodb feed: table %s is missing (create it with a string partition "
                       "key \"consumer\", or set store.create_table)", s->feed_table);
    return tc__ddb_ensure_table(s, s->feed_table, attr, 0);
}

/* Loads the checkpoint of a lease just taken (ans is UpdateItem's ALL_NEW). */
static int load(ddb_store *s, ddb_feed *f, const char *consumer, const char *holder, json_t *ans,
                int64_t *out_seq)
{
    clear_state(f);
    json_t *m = json_object_get(json_object_get(json_object_get(ans, "Attributes"), "pos"), "M");
    f->pos = json_is_object(m) ? json_deep_copy(m) : json_object();
    if (f->pos == NULL)
        return nomem(s);
    snprintf(f->consumer, sizeof f->consumer, "%s", consumer);
    snprintf(f->holder, sizeof f->holder, "%s", holder);
    f->committed = f->next_seq;
    f->loaded = 1;
    *out_seq = f->committed;
    return TC_OK;
}

/* UpdateItem on the consumer's item with cond; ALL_NEW into *ans. */
static int update_lease(ddb_store *s, const char *consumer, const char *expr, const char *cond,
                        json_t *vals, json_t **ans)
{
    json_t *req = json_pack("{s:s,s:{s:{s:s}},s:s,s:o,s:s}", "TableName", s->feed_table, "Key",
                            "consumer", "S", consumer, "UpdateExpression", expr,
                            "ExpressionAttributeValues", vals, "ReturnValues", "ALL_NEW");
    if (req == NULL)
        return nomem(s);
    if (cond != NULL)
        json_object_set_new(req, "ConditionExpression", json_string(cond));
    int rc = tc__ddb_call(&s->db, "UpdateItem", req, ans, NULL);
    json_decref(req);
    return rc;
}

static json_t *num(int64_t v)
{
    char n[24];
    snprintf(n, sizeof n, "%lld", (long long)v);
    return json_pack("{s:s}", "N", n);
}

int tc__ddb_feed_claim(tc__store *st, const char *consumer, const char *holder, int64_t lease_ms,
                       int64_t *out_seq)
{
    ddb_store *s = S(st);
    ddb_feed *f = lock_feed(s);
    if (f == NULL)
        return nomem(s);
    int rc = f->table_ok ? TC_OK : ensure_feed_table(s);
    f->table_ok = rc == TC_OK;
    json_t *ans = NULL;
    if (rc == TC_OK) {
        int64_t now = tc__wall_ms();
        json_t *vals = json_pack("{s:{s:s},s:o,s:o}", ":h", "S", holder, ":e",
                                 num(now + lease_ms), ":now", num(now));
        rc = vals == NULL ? nomem(s)
                          : update_lease(s, consumer, "SET holder = :h, expires = :e",
                                         "attribute_not_exists(holder) OR holder = :h OR "
                                         "expires < :now",
                                         vals, &ans);
    }
    if (rc == TC_OK) {
        if (f->loaded && strcmp(f->consumer, consumer) == 0 && strcmp(f->holder, holder) == 0)
            *out_seq = f->committed; /* a renewal: what was read stays */
        else
            rc = load(s, f, consumer, holder, ans, out_seq);
    } else if (rc == TC_ESTATE) {
        f->loaded = 0; /* another holder's live lease */
    }
    json_decref(ans);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int tc__ddb_feed_takeover(tc__store *st, const char *consumer, const char *holder,
                          int64_t lease_ms, tc__holder_dead_fn dead, void *ctx, int64_t *out_seq)
{
    ddb_store *s = S(st);
    json_t *req = json_pack("{s:s,s:{s:{s:s}},s:b}", "TableName", s->feed_table, "Key",
                            "consumer", "S", consumer, "ConsistentRead", 1),
           *ans;
    if (req == NULL)
        return nomem(s);
    int rc = tc__ddb_call(&s->db, "GetItem", req, &ans, NULL);
    json_decref(req);
    if (rc != TC_OK)
        return rc;
    const char *old = json_string_value(
        json_object_get(json_object_get(json_object_get(ans, "Item"), "holder"), "S"));
    char was[256];
    snprintf(was, sizeof was, "%s", old != NULL ? old : "");
    json_decref(ans);
    if (was[0] == '\0' || !dead(ctx, was))
        return TC_ESTATE;
    ddb_feed *f = lock_feed(s);
    if (f == NULL)
        return nomem(s);
    json_t *vals = json_pack("{s:{s:s},s:o,s:{s:s}}", ":h", "S", holder, ":e",
                             num(tc__wall_ms() + lease_ms), ":old", "S", was);
    ans = NULL;
    rc = vals == NULL ? nomem(s)
                      : update_lease(s, consumer, "SET holder = :h, expires = :e",
                                     "holder = :old", vals, &ans);
    if (rc == TC_OK)
        rc = load(s, f, consumer, holder, ans, out_seq);
    json_decref(ans);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int tc__ddb_feed_release(tc__store *st, const char *consumer, const char *holder)
{
    ddb_store *s = S(st);
    ddb_feed *f = lock_feed(s);
    if (f == NULL)
        return nomem(s);
    json_t *vals = json_pack("{s:{s:s}}", ":h", "S", holder), *ans = NULL;
    int rc = vals == NULL ? nomem(s)
                          : update_lease(s, consumer, "REMOVE holder, expires", "holder = :h",
                                         vals, &ans);
    json_decref(ans);
    f->loaded = 0;
    pthread_mutex_unlock(&f->mu);
    return rc == TC_ESTATE ? TC_OK : rc; /* not ours any more: nothing to give up */
}

int tc__ddb_feed_commit(tc__store *st, const char *consumer, const char *holder, int64_t seq)
{
    ddb_store *s = S(st);
    ddb_feed *f = lock_feed(s);
    if (f == NULL)
        return nomem(s);
    int rc = TC_OK;
    if (!f->loaded || strcmp(f->holder, holder) != 0 || strcmp(f->consumer, consumer) != 0) {
        pthread_mutex_unlock(&f->mu);
        return tc__err(st->owner, TC_ESTATE, "dynamodb feed: the lease is not held");
    }
    json_t *pos = json_deep_copy(f->pos);
    int upto = 0; /* pending[0..upto) are committed by this */
    while (upto < f->nbuf && f->buf[upto].seq <= seq)
        upto++;
    for (int i = 0; pos != NULL && i < upto; i++)
        json_object_set_new(pos, f->shards[f->buf[i].shard].id,
                            json_pack("{s:s}", "S", f->buf[i].seqnum));
    /* A shard read to its end with nothing of it left pending is done. */
    for (int i = 0; pos != NULL && i < f->nshards; i++) {
        if (!f->shards[i].ended || f->shards[i].done)
            continue;
        int left = 0;
        for (int j = upto; j < f->nbuf && !left; j++)
            left = f->buf[j].shard == i;
        if (!left)
            json_object_set_new(pos, f->shards[i].id, json_pack("{s:s}", "S", "done"));
    }
    /* Shards the stream no longer lists (trimmed after 24 hours) are forgotten. */
    const char *id;
    json_t *v, *tmp;
    json_object_foreach_safe(pos, tmp, id, v)
    {
        int known = 0;
        for (int i = 0; i < f->nshards && !known; i++)
            known = strcmp(f->shards[i].id, id) == 0;
        if (!known && f->nshards > 0)
            json_object_del(pos, id);
    }
    json_t *vals = pos == NULL ? NULL
                               : json_pack("{s:{s:s},s:{s:O}}", ":h", "S", holder, ":p", "M", pos),
           *ans = NULL;
    rc = vals == NULL ? nomem(s)
                      : update_lease(s, consumer, "SET pos = :p", "holder = :h", vals, &ans);
    json_decref(ans);
    if (rc == TC_OK) {
        json_decref(f->pos);
        f->pos = pos;
        pos = NULL;
        for (int i = 0; i < upto; i++)
            free(f->buf[i].seqnum), free(f->buf[i].key);
        memmove(f->buf, f->buf + upto, (size_t)(f->nbuf - upto) * sizeof *f->buf);
        f->nbuf -= upto;
        if (seq > f->committed)
            f->committed = seq;
        for (int i = 0; i < f->nshards; i++) {
            const char *p = json_string_value(json_object_get(
                json_object_get(f->pos, f->shards[i].id), "S"));
            f->shards[i].done = p != NULL && strcmp(p, "done") == 0;
        }
    } else if (rc == TC_ESTATE) {
        f->loaded = 0;
        rc = tc__err(st->owner, TC_ESTATE, "dynamodb feed: the lease was taken over");
    }
    json_decref(pos);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int tc__ddb_feed_trim(tc__store *st, int64_t retention_ms, int64_t *out_removed)
{
    (void)st, (void)retention_ms;
    *out_removed = 0; /* the stream keeps 24 hours of records itself */
    return TC_OK;
}

/* ---- reading the stream ------------------------------------------------------------------- */

static const char *persisted(ddb_feed *f, const char *id)
{
    return json_string_value(json_object_get(json_object_get(f->pos, id), "S"));
}

static int find_shard(ddb_feed *f, const char *id)
{
    for (int i = 0; i < f->nshards; i++)
        if (strcmp(f->shards[i].id, id) == 0)
            return i;
    return -1;
}

static int stream_arn(ddb_store *s, ddb_feed *f)
{
    if (f->stream_arn != NULL)
        return TC_OK;
    json_t *req = json_pack("{s:s}", "TableName", s->table), *ans;
    int rc = tc__ddb_call(&s->db, "DescribeTable", req, &ans, NULL);
    json_decref(req);
    if (rc != TC_OK)
        return rc;
    const char *arn = json_string_value(
        json_object_get(json_object_get(ans, "Table"), "LatestStreamArn"));
    if (arn != NULL && (f->stream_arn = strdup(arn)) == NULL)
        rc = nomem(s);
    else if (arn == NULL)
        rc = tc__err(s->base.owner, TC_ESTORE,
                     "dynamodb feed: table %s has no stream (enable one with StreamViewType "
                     "NEW_AND_OLD_IMAGES)", s->table);
    json_decref(ans);
    return rc;
}

/* Learns the stream's shards (all pages of DescribeStream). */
static int describe(ddb_store *s, ddb_feed *f)
{
    int rc = stream_arn(s, f);
    for (int i = 0; i < f->nshards; i++)
        f->shards[i].seen = 0;
    const char *start = NULL;
    char last[256] = "";
    while (rc == TC_OK) {
        json_t *req = json_pack("{s:s}", "StreamArn", f->stream_arn), *ans;
        if (req != NULL && start != NULL)
            json_object_set_new(req, "ExclusiveStartShardId", json_string(start));
        rc = req == NULL ? nomem(s) : tc__ddb_call(&s->streams, "DescribeStream", req, &ans, NULL);
        json_decref(req);
        if (rc != TC_OK)
            break;
        json_t *desc = json_object_get(ans, "StreamDescription");
        json_t *list = json_object_get(desc, "Shards"), *sh;
        size_t i;
        json_array_foreach(list, i, sh)
        {
            const char *id = json_string_value(json_object_get(sh, "ShardId"));
            const char *parent = json_string_value(json_object_get(sh, "ParentShardId"));
            if (id == NULL)
                continue;
            int k = find_shard(f, id);
            if (k < 0) {
                shard *grown = realloc(f->shards, (size_t)(f->nshards + 1) * sizeof *grown);
                if (grown == NULL) {
                    rc = nomem(s);
                    break;
                }
                f->shards = grown;
                k = f->nshards++;
                memset(&f->shards[k], 0, sizeof f->shards[k]);
                f->shards[k].id = strdup(id);
                f->shards[k].parent = parent != NULL ? strdup(parent) : NULL;
                const char *p = persisted(f, id);
                f->shards[k].done = p != NULL && strcmp(p, "done") == 0;
                if (p != NULL && !f->shards[k].done)
                    f->shards[k].pos = strdup(p);
                if (f->shards[k].id == NULL) {
                    rc = nomem(s);
                    break;
                }
            }
            f->shards[k].seen = 1;
        }
        const char *more = json_string_value(json_object_get(desc, "LastEvaluatedShardId"));
        if (rc == TC_OK && more != NULL && strcmp(more, last) != 0) {
            snprintf(last, sizeof last, "%s", more);
            start = last;
        } else {
            start = NULL;
        }
        json_decref(ans);
        if (start == NULL)
            break;
    }
    if (rc == TC_OK)
        f->described_ms = tc__now_ms();
    return rc;
}

/* A shard may be read once its parent is read to its end (or gone from the stream). */
static int readable(ddb_feed *f, int i)
{
    shard *sh = &f->shards[i];
    if (sh->done || sh->ended)
        return 0;
    if (sh->parent == NULL)
        return 1;
    int p = find_shard(f, sh->parent);
    return p < 0 || f->shards[p].done || f->shards[p].ended;
}

static int get_iterator(ddb_store *s, ddb_feed *f, shard *sh)
{
    json_t *req = json_pack("{s:s,s:s,s:s}", "StreamArn", f->stream_arn, "ShardId", sh->id,
                            "ShardIteratorType",
                            sh->pos != NULL ? "AFTER_SEQUENCE_NUMBER" : "TRIM_HORIZON"),
           *ans;
    if (req != NULL && sh->pos != NULL)
        json_object_set_new(req, "SequenceNumber", json_string(sh->pos));
    if (req == NULL)
        return nomem(s);
    char type[DDB_TYPE_MAX];
    int rc = tc__ddb_call(&s->streams, "GetShardIterator", req, &ans, type);
    json_decref(req);
    if (rc != TC_OK && strcmp(type, "TrimmedDataAccessException") == 0 && sh->pos != NULL) {
        /* The checkpoint is older than the stream keeps (24 hours): what came between is
         * gone, and the caches rely on their TTLs for it. Read what is left. */
        free(sh->pos);
        sh->pos = NULL;
        return get_iterator(s, f, sh);
    }
    if (rc != TC_OK && strcmp(type, "ResourceNotFoundException") == 0) {
        sh->done = 1; /* the shard was trimmed away */
        return TC_OK;
    }
    if (rc != TC_OK)
        return rc;
    const char *it = json_string_value(json_object_get(ans, "ShardIterator"));
    free(sh->iter);
    sh->iter = it != NULL ? strdup(it) : NULL;
    if (it == NULL)
        sh->ended = 1;
    json_decref(ans);
    return TC_OK;
}

static int add_pending(ddb_store *s, ddb_feed *f, int shard_i, json_t *rec)
{
    json_t *d = json_object_get(rec, "dynamodb");
    const char *seqnum = json_string_value(json_object_get(d, "SequenceNumber"));
    size_t klen;
    json_t *keys = json_object_get(d, "Keys");
    const char *key = tc__ddb_image_key(s, keys, &klen);
    if (seqnum == NULL)
        return TC_OK;
    free(f->shards[shard_i].pos);
    f->shards[shard_i].pos = strdup(seqnum);
    if (key == NULL || klen == 0)
        return TC_OK; /* not a key of the library's shape: nothing cached under it */
    if (f->nbuf == f->capbuf) {
        int cap = f->capbuf ? 2 * f->capbuf : 64;
        pending *grown = realloc(f->buf, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return nomem(s);
        f->buf = grown;
        f->capbuf = cap;
    }
    pending *p = &f->buf[f->nbuf];
    p->seqnum = strdup(seqnum);
    p->key = strndup(key, klen);
    if (p->seqnum == NULL || p->key == NULL) {
        free(p->seqnum), free(p->key);
        return nomem(s);
    }
    p->key_len = klen;
    p->shard = shard_i;
    p->version = tc__ddb_change_version(s, json_object_get(d, "NewImage"),
                                        json_object_get(d, "OldImage"));
    p->seq = ++f->next_seq;
    f->nbuf++;
    return TC_OK;
}

/* One GetRecords on each shard that may be read. */
static int fetch(ddb_store *s, ddb_feed *f, int max)
{
    int rc = TC_OK, any_ended = 0;
    f->fetched_writes = atomic_load(&s->writes);
    if (f->nshards == 0 || tc__now_ms() - f->described_ms > DESCRIBE_EVERY_MS)
        rc = describe(s, f);
    for (int i = 0; rc == TC_OK && i < f->nshards; i++) {
        if (!readable(f, i))
            continue;
        shard *sh = &f->shards[i];
        if (sh->iter == NULL && (rc = get_iterator(s, f, sh)) != TC_OK)
            break;
        if (sh->iter == NULL)
            continue;
        json_t *req = json_pack("{s:s,s:i}", "ShardIterator", sh->iter, "Limit",
                                max < 1000 ? max : 1000),
               *ans;
        char type[DDB_TYPE_MAX];
        rc = req == NULL ? nomem(s) : tc__ddb_call(&s->streams, "GetRecords", req, &ans, type);
        json_decref(req);
        if (rc != TC_OK) {
            free(sh->iter);
            sh->iter = NULL; /* expired or not: the next try gets one from pos */
            if (strcmp(type, "ExpiredIteratorException") == 0) {
                rc = TC_OK;
                continue;
            }
            break;
        }
        json_t *recs = json_object_get(ans, "Records"), *r;
        size_t k;
        json_array_foreach(recs, k, r)
        {
            if ((rc = add_pending(s, f, i, r)) != TC_OK)
                break;
        }
        const char *next = json_string_value(json_object_get(ans, "NextShardIterator"));
        free(sh->iter);
        sh->iter = next != NULL ? strdup(next) : NULL;
        if (next == NULL) {
            sh->ended = 1;
            any_ended = 1;
        }
        json_decref(ans);
    }
    if (rc == TC_OK && any_ended)
        f->described_ms = 0; /* a closed shard's children: look for them next time */
    return rc;
}

int tc__ddb_feed_read(tc__store *st, int64_t after, int max, tc__change_fn fn, void *ctx,
                      int *out_n)
{
    ddb_store *s = S(st);
    *out_n = 0;
    ddb_feed *f = lock_feed(s);
    if (f == NULL)
        return nomem(s);
    int rc = TC_OK;
    if (!f->loaded) {
        pthread_mutex_unlock(&f->mu);
        return tc__err(st->owner, TC_ESTATE, "dynamodb feed: read before a claim");
    }
    int first = 0;
    while (first < f->nbuf && f->buf[first].seq <= after)
        first++;
    if (first == f->nbuf)
        rc = fetch(s, f, max);
    for (int i = first; rc == TC_OK && i < f->nbuf && *out_n < max; i++) {
        pending *p = &f->buf[i];
        rc = fn(ctx, p->seq, p->key, p->key_len, p->version);
        if (rc == TC_OK)
            (*out_n)++;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int tc__ddb_feed_wait(tc__store *st, int64_t after, int64_t timeout_ms)
{
    ddb_store *s = S(st);
    ddb_feed *f = lock_feed(s);
    if (f == NULL)
        return nomem(s);
    /* Ready: records read and not yet handed out, or a write since the last look. */
    int ready = (f->nbuf > 0 && f->buf[f->nbuf - 1].seq > after) ||
                atomic_load(&s->writes) != f->fetched_writes;
    pthread_mutex_unlock(&f->mu);
    if (ready)
        return TC_OK;
    /* A write through this store wakes the wait at once; otherwise the stream is polled no
     * faster than Streams allows per shard. */
    if (timeout_ms < MIN_POLL_MS)
        timeout_ms = MIN_POLL_MS;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(timeout_ms / 1000);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->wmu);
    long long seen = atomic_load(&s->writes);
    while (atomic_load(&s->writes) == seen)
        if (pthread_cond_timedwait(&s->wcv, &s->wmu, &ts) != 0)
            break;
    pthread_mutex_unlock(&s->wmu);
    return TC_OK;
}
