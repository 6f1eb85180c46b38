/*
 * coherence.c - the coherence test: a real multi-process run against a private redis-server
 * and a store (SQLite file or private PostgreSQL), checked afterwards from what every process
 * recorded.
 *
 *   coherence [--store sqlite|postgres|dynamodb] [--seconds N]
 *
 * On DynamoDB (DynamoDB Local, tests/ddb_harness.c) the "sql writer" is a second DynamoDB
 * client (libcurl's own SigV4 signer): UpdateItem with versions made as the library makes them
 * (the clock, else one more) and plain DeleteItem; the change log is the table's stream, read
 * whole at the end, and the final rows a Scan.
 *
 * Processes (each opens its own handle after fork, all from one config file in a temp dir):
 *   3 readers     tc_get_ex of a random key among NKEYS, 0-3 ms apart; each read is recorded
 *                 with its key, the version returned (0: not found) and its start and end
 *                 (CLOCK_MONOTONIC, one clock for every process on the host).
 *   lib writer    tc_put of a unique value on keys RARE..NKEYS-1, then tc_get_ex on its own
 *                 handle for the version (read-your-writes; when another writer got in between,
 *                 the value differs and the write is kept with an unknown version); tc_del now
 *                 and then, only on the keys LIB_ONLY..NKEYS-1 that no one else writes, so the
 *                 delete's version is the newest the change log holds for the key.
 *   sql writer    plain SQL on its own connection: an upsert of a unique value, or a DELETE,
 *                 each in a transaction that also reads the version it produced (the row's, or
 *                 for a DELETE the one the log trigger drew), so versions are exact. Mostly on
 *                 keys RARE..LIB_ONLY-1 (shared with the lib writer), and about once a second
 *                 on one of the keys 0..RARE-1 that only it writes: those keys go seconds
 *                 without a newer write, so an invalidation the invalidator lost (say across
 *                 its restart) leaves Redis stale long enough for check 2 to see it, where on a
 *                 busy key the next write would hide it.
 *   invalidator   the real program, build/bin/tiercache-invalidator -c config.json; killed
 *                 with SIGKILL at 35% of the run and started again at once (it finds the
 *                 holder's process gone, takes the lease over without waiting it out, and
 *                 resumes from the checkpoint).
 *   Redis         killed and restarted on its port at 20% of the run (first, so that a copy the
 *                 invalidator missed later is not washed out by the restart's empty Redis), and
 *                 stopped with SIGSTOP for STALL_MS at 55%, longer than the command timeout.
 * COHERENCE_SABOTAGE=1 does not start the killed invalidator again: the run must then fail (the
 * check of the checks). COHERENCE_KEEP=1 keeps the temp dir (records, invalidator.log).
 * A write is recorded with its key, version (a delete's: the fresh version it drew), value,
 * call start and acknowledgement time (when the call returned OK). At the end the parent sends
 * SIGTERM; each child finishes its current call, writes its records and exits.
 *
 * Checks (any failure prints the records involved and exits 1):
 *  1. No acknowledged write lost. Per key, let S be the latest call start among its
 *     acknowledged writes: a write acknowledged before S surely committed before the one that
 *     started at S, so the final row (read from the database) must be one of the writes that
 *     ended at or after S (a put: same value, and same version when known; a delete: no row);
 *     writes whose call failed count as candidates too, since they may have committed. Every
 *     acknowledged version is in the change log or <= the key's final version, and the log's
 *     versions of a key increase with its seq.
 *  2. No stale read past the window. A read r (start s_r, end e_r, version v_r, 0 = not found)
 *     is stale with respect to a write w of its key (version v_w, acknowledged at t_w) when
 *     s_r > t_w and
 *        w is a put:    v_r < v_w, except a not-found explained by a delete of the key with a
 *                       version above v_w whose call started before e_r (it may have
 *                       committed before the read looked);
 *        w is a delete: v_r > 0 and v_r < v_w (a value older than the delete).
 *     A read that started before t_w may return the old version: it does not count. No read
 *     may be stale with respect to a write acknowledged more than BOUND_MS before it started.
 *     Writes of unknown version are not checked (their readers are checked against the others).
 *  3. The window: stale(w) = (latest start of a read stale with respect to w) - t_w, 0 if none;
 *     p50, p99 and max over every checked write are printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ddb_harness.h"
#include "pg_harness.h"
#include "tc_test.h"

#include <jansson.h>

#define NKEYS 40
#define RARE 10     /* keys 0..RARE-1: plain SQL only, written about once a second in all */
#define LIB_ONLY 30 /* keys LIB_ONLY.. are written by the lib writer only (tc_del there) */
#define NREADERS 3
#define LEASE_MS 10000 /* longer than the bound: only the takeover of a dead holder meets it */
#define POLL_MS 20
#define EDGE_TTL_MS 2000
#define REDIS_TTL_MS 30000

/*
 * BOUND_MS: how long after its acknowledgement a write may still be missed by a read. The
 * slowest legitimate paths are the faults:
 *   - the invalidator killed with -9: the new one, started at once, finds the holder's process
 *     gone and takes the lease over (feed_takeover; the lease itself, feed.lease_ms = 10 s,
 *     would outlast the bound), then resumes from the checkpoint: tens of ms;
 *   - Redis killed and restarted: the edges' bus links drop (the edge is out of service and
 *     emptied before it serves again), applying fails and is retried after feed.poll_ms, plus
 *     the handles' reconnect backoff (redis.retry_interval_ms 100, at most 500 ms);
 *   - Redis stopped (SIGSTOP) for STALL_MS, longer than redis.command_timeout_ms (500): the
 *     bus PINGs every 250 ms, so each edge is out of service within ~500 ms of the stall's
 *     start; calls time out instead of waiting; writes whose messages could not go out are
 *     journalled and published when Redis answers again. A write acknowledged while Redis
 *     is away cannot reach it before it is back: its bound runs from Redis's return
 *     (bound_start).
 * 1 s leaves room for a loaded CI machine, while a copy the invalidator lost stays in Redis
 * default_ttl_ms = 30 s (longer than the run): a lost invalidation on a rarely written key
 * shows up as a stale read past the bound (COHERENCE_SABOTAGE=1 shows it does).
 */
#define BOUND_MS 1000
/* The Redis stall's length, and how long after a fault's end a write still counts as made
 * during the fault (for the window's figures, which are reported for steady state and faults
 * apart). */
#define STALL_MS 1500
#define FAULT_TAIL_MS 1000

/* The faults' spans (now_ns), for the window's figures. */
static int64_t fault_from[4], fault_to[4];
static int nfaults;

static void fault_span(int64_t from, int64_t to)
{
    if (nfaults < 4) {
        fault_from[nfaults] = from;
        fault_to[nfaults++] = to + (int64_t)FAULT_TAIL_MS * 1000000;
    }
}

static double pct_ms(const int64_t *sorted, size_t n, int p)
{
    if (n == 0)
        return 0;
    size_t i = n * (size_t)p / 100;
    return sorted[i < n ? i : n - 1] / 1e6;
}

/* When Redis was away (stopped, or killed until restarted): a write acknowledged then cannot
 * reach Redis before it is back, so its bound runs from Redis's return (CI saw a delete made
 * 0.96 s before the end of the stall read stale in Redis 0.3 s after it, until the invalidator's
 * backoff let it apply the change). */
static int64_t away_from[4], away_to[4];
static int naway;

static void redis_away(int64_t from, int64_t to)
{
    if (naway < 4) {
        away_from[naway] = from;
        away_to[naway++] = to;
    }
}

/* Where a write's bound starts: its acknowledgement, or Redis's return if it was away then. */
static int64_t bound_start(int64_t end_ns)
{
    for (int i = 0; i < naway; i++)
        if (end_ns >= away_from[i] && end_ns <= away_to[i])
            return away_to[i];
    return end_ns;
}

static int in_fault(int64_t t)
{
    for (int i = 0; i < nfaults; i++)
        if (t >= fault_from[i] && t <= fault_to[i])
            return 1;
    return 0;
}

enum { R_READ = 1, W_PUT = 2, W_DEL = 3 };
#define F_ERROR 1u    /* the call failed (a read: skipped; a write: may or may not be in) */
#define F_NOVER 2u    /* a write whose version is unknown */

typedef struct rec {
    int32_t kind, key, proc;
    uint32_t flags;
    int64_t version;
    int64_t start_ns, end_ns;
    uint64_t value; /* writes: the unique value's id */
} rec;

static const char *store_kind = "sqlite";
static char dir[256];
static char cfg_path[512], db_path[512];
static tct_redis redis;
static tct_pg pg;
static int use_pg;
static tct_ddb ddb;
static int use_ddb; /* DynamoDB Local: the "sql writer" is a second DynamoDB client */
static char self_dir[PATH_MAX];

/* ---- children ------------------------------------------------------------------------------- */

static pid_t kids[16];
static int nkids;
static pid_t inval_pid;

static void kill_kids(void)
{
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
            kids[i] = 0;
        }
    if (inval_pid > 0) {
        kill(inval_pid, SIGKILL);
        waitpid(inval_pid, NULL, 0);
        inval_pid = 0;
    }
}

static int keep_dir;
static void cleanup(void)
{
    kill_kids();
    if (use_pg)
        tct_pg_stop(&pg);
    if (use_ddb)
        tct_ddb_stop(&ddb);
    tct_redis_stop(&redis);
    if (dir[0] != '\0' && !keep_dir)
        tct_rmrf(dir);
}

static volatile sig_atomic_t stop_flag;
static void on_term(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_flag)
        ;
}

static void key_name(char *out, size_t n, int k)
{
    snprintf(out, n, "coh:%02d", k);
}

static void value_text(char *out, size_t n, uint64_t id)
{
    snprintf(out, n, "val-%016llx", (unsigned long long)id);
}

static int value_parse(const char *s, size_t len, uint64_t *id)
{
    char buf[64];
    if (len >= sizeof buf || len < 5 || memcmp(s, "val-", 4) != 0)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    *id = strtoull(buf + 4, &end, 16);
    return *end == '\0' ? 0 : -1;
}

/* Records, buffered in memory and written to the process's file at the end. */
typedef struct recbuf {
    rec *v;
    size_t n, cap;
} recbuf;

static void rb_add(recbuf *b, const rec *r)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 4096;
        b->v = realloc(b->v, b->cap * sizeof *b->v);
        if (b->v == NULL)
            _exit(3);
    }
    b->v[b->n++] = *r;
}

static void rb_save(const recbuf *b, int proc)
{
    char path[600], tmp[620];
    snprintf(path, sizeof path, "%s/rec.%d", dir, proc);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL || (b->n > 0 && fwrite(b->v, sizeof *b->v, b->n, f) != b->n) || fclose(f) != 0)
        _exit(4);
    if (rename(tmp, path) != 0)
        _exit(4);
}

/* ---- plain SQL (the sql writer, the lib writer's delete versions, the final check) ---------- */

typedef struct sqlc {
    sqlite3 *db;
    PGconn *pg;
    int ddb;
} sqlc;

/* ---- DynamoDB as another program writes it (tct_ddb_call: libcurl's own signer) ---------- */

/* One call; the answer parsed, or NULL (an error answer, or none). */
static json_t *ddb_json(const char *operation, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    long status = 0;
    char *ans = text != NULL ? tct_ddb_call(&ddb, operation, text, &status) : NULL;
    free(text);
    json_t *j = ans != NULL && status == 200 ? json_loads(ans, 0, NULL) : NULL;
    free(ans);
    return j;
}

static int64_t ddb_num(json_t *attr)
{
    const char *n = json_string_value(json_object_get(attr, "N"));
    return n != NULL ? strtoll(n, NULL, 10) : 0;
}

/* The version a stream record or a deletion stands for, as the store computes it. */
static int64_t ddb_change_version(json_t *new_image, json_t *old_image)
{
    int64_t nv = ddb_num(json_object_get(new_image, "ver"));
    int64_t ov = ddb_num(json_object_get(old_image, "ver"));
    return nv > ov ? nv : ov + 1;
}

/* Versions the way the library makes them (the clock, else one more), so that they rise. */
static int ddb_upsert(const char *key, const char *value, int64_t *version)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char t[24];
        snprintf(t, sizeof t, "%lld", (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
        json_t *req = json_pack(
            "{s:s,s:{s:{s:s}},s:s,s:{s:{s:s},s:{s:s}},s:s}", "TableName", "tiercache", "Key",
            "pk", "S", key, "UpdateExpression",
            attempt == 0 ? "SET val = :v, ver = :t REMOVE tc_deleted"
                         : "SET val = :v REMOVE tc_deleted ADD ver :t",
            "ExpressionAttributeValues", ":v", "S", value, ":t", "N", attempt == 0 ? t : "1",
            "ReturnValues", "UPDATED_NEW");
        if (attempt == 0)
            json_object_set_new(req, "ConditionExpression",
                                json_string("attribute_not_exists(ver) OR ver < :t"));
        json_t *ans = ddb_json("UpdateItem", req);
        if (ans != NULL) {
            *version = ddb_num(json_object_get(json_object_get(ans, "Attributes"), "ver"));
            json_decref(ans);
            return *version > 0 ? 0 : -1;
        }
    }
    return -1;
}

/* A plain DeleteItem; *version: what the stream's REMOVE stands for (0: no item). */
static int ddb_delete(const char *key, int64_t *version)
{
    json_t *ans = ddb_json("DeleteItem",
                           json_pack("{s:s,s:{s:{s:s}},s:s}", "TableName", "tiercache", "Key",
                                     "pk", "S", key, "ReturnValues", "ALL_OLD"));
    if (ans == NULL)
        return -1;
    json_t *old = json_object_get(ans, "Attributes");
    *version = json_is_object(old) ? ddb_change_version(NULL, old) : 0;
    json_decref(ans);
    return 0;
}

/* The item's version (a tombstone's too), 0 when there is none. */
static int ddb_item_version(const char *key, int64_t *out)
{
    json_t *ans = ddb_json("GetItem", json_pack("{s:s,s:{s:{s:s}},s:b}", "TableName",
                                                "tiercache", "Key", "pk", "S", key,
                                                "ConsistentRead", 1));
    if (ans == NULL)
        return -1;
    *out = ddb_num(json_object_get(json_object_get(ans, "Item"), "ver"));
    json_decref(ans);
    return 0;
}

static int key_index(const char *s);
static void log_add(int k, int64_t v);

static int sql_open(sqlc *c)
{
    memset(c, 0, sizeof *c);
    if (use_ddb) {
        c->ddb = 1;
        return 0;
    }
    if (use_pg) {
        c->pg = PQconnectdb(pg.conninfo);
        if (PQstatus(c->pg) != CONNECTION_OK) {
            fprintf(stderr, "coherence: libpq: %s", PQerrorMessage(c->pg));
            return -1;
        }
        return 0;
    }
    if (sqlite3_open(db_path, &c->db) != SQLITE_OK) {
        fprintf(stderr, "coherence: sqlite3_open: %s\n", sqlite3_errmsg(c->db));
        return -1;
    }
    sqlite3_busy_timeout(c->db, 30000);
    return 0;
}

static void sql_close(sqlc *c)
{
    if (c->pg != NULL)
        PQfinish(c->pg);
    if (c->db != NULL)
        sqlite3_close(c->db);
}

static int lite_exec(sqlite3 *db, const char *s)
{
    return sqlite3_exec(db, s, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* One int64 from a one-row query with up to two text parameters; 0 rows: *out = 0. */
static int lite_int(sqlite3 *db, const char *q, const char *p1, const char *p2, int64_t *out)
{
    sqlite3_stmt *st;
    *out = 0;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (p1 != NULL)
        sqlite3_bind_text(st, 1, p1, -1, SQLITE_TRANSIENT);
    if (p2 != NULL)
        sqlite3_bind_text(st, 2, p2, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

static PGresult *pq(PGconn *c, const char *q, int n, const char *p1, const char *p2)
{
    const char *params[2] = {p1, p2};
    return PQexecParams(c, q, n, NULL, params, NULL, NULL, 0);
}

static int pq_ok(PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* The newest version the change log holds for key (0: none). */
static int sql_last_logged(sqlc *c, const char *key, int64_t *out)
{
    static const char q[] =
        "SELECT version FROM tiercache_log WHERE key = $1 ORDER BY seq DESC LIMIT 1";
    *out = 0;
    if (c->ddb)
        return ddb_item_version(key, out); /* a tombstone keeps its delete's version */
    if (c->db != NULL)
        return lite_int(c->db, "SELECT version FROM tiercache_log WHERE key = ?1 "
                               "ORDER BY seq DESC LIMIT 1", key, NULL, out);
    PGresult *r = pq(c->pg, q, 1, key, NULL);
    int ok = pq_ok(r);
    if (ok && PQntuples(r) == 1)
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return ok ? 0 : -1;
}

/* Upserts value in plain SQL; *version gets the version the row now has. */
static int sql_upsert(sqlc *c, const char *key, const char *value, int64_t *version)
{
    *version = 0;
    if (c->ddb)
        return ddb_upsert(key, value, version);
    if (c->db != NULL) {
        if (lite_exec(c->db, "BEGIN IMMEDIATE") != 0)
            return -1;
        sqlite3_stmt *st;
        int ok = sqlite3_prepare_v2(c->db,
                                    "INSERT INTO tiercache(key, value) VALUES (?1, ?2) "
                                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                    -1, &st, NULL) == SQLITE_OK;
        if (ok) {
            sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
            sqlite3_bind_blob(st, 2, value, (int)strlen(value), SQLITE_TRANSIENT);
            ok = sqlite3_step(st) == SQLITE_DONE;
            sqlite3_finalize(st);
        }
        ok = ok && lite_int(c->db, "SELECT version FROM tiercache WHERE key = ?1", key, NULL,
                            version) == 0;
        if (!ok || lite_exec(c->db, "COMMIT") != 0) {
            lite_exec(c->db, "ROLLBACK");
            return -1;
        }
        return 0;
    }
    /* The BEFORE triggers give the row its version, so RETURNING sees it. */
    PGresult *r = pq(c->pg,
                     "INSERT INTO tiercache(key, value) VALUES ($1, convert_to($2, 'UTF8')) "
                     "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value RETURNING version",
                     2, key, value);
    int ok = pq_ok(r) && PQntuples(r) == 1;
    if (ok)
        *version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return ok ? 0 : -1;
}

/* Deletes in plain SQL; *version gets the delete's version (the one its log row drew), 0 when
 * there was no row (nothing happened). */
static int sql_delete(sqlc *c, const char *key, int64_t *version)
{
    *version = 0;
    if (c->ddb)
        return ddb_delete(key, version);
    if (c->db != NULL) {
        if (lite_exec(c->db, "BEGIN IMMEDIATE") != 0)
            return -1;
        sqlite3_stmt *st;
        int ok = sqlite3_prepare_v2(c->db, "DELETE FROM tiercache WHERE key = ?1", -1, &st,
                                    NULL) == SQLITE_OK;
        int n = 0;
        if (ok) {
            sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
            ok = sqlite3_step(st) == SQLITE_DONE;
            sqlite3_finalize(st);
            n = sqlite3_changes(c->db);
        }
        if (ok && n > 0)
            ok = sql_last_logged(c, key, version) == 0 && *version > 0;
        if (!ok || lite_exec(c->db, "COMMIT") != 0) {
            lite_exec(c->db, "ROLLBACK");
            return -1;
        }
        return 0;
    }
    /* The log trigger has run by the end of the DELETE (it was once deferred to the commit,
     * hence SET CONSTRAINTS ALL IMMEDIATE, now a no-op), so the version it drew can be read
     * back before COMMIT. */
    PGresult *r = pq(c->pg, "BEGIN", 0, NULL, NULL);
    int ok = pq_ok(r);
    PQclear(r);
    if (!ok)
        return -1;
    r = pq(c->pg, "DELETE FROM tiercache WHERE key = $1", 1, key, NULL);
    ok = pq_ok(r);
    int n = ok ? atoi(PQcmdTuples(r)) : 0;
    PQclear(r);
    if (ok && n > 0) {
        r = pq(c->pg, "SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, NULL);
        ok = pq_ok(r);
        PQclear(r);
        ok = ok && sql_last_logged(c, key, version) == 0 && *version > 0;
    }
    r = pq(c->pg, ok ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
    ok = ok && pq_ok(r);
    PQclear(r);
    return ok ? 0 : -1;
}

/* ---- the processes ---------------------------------------------------------------------------- */

static tc_cache *child_open(void)
{
    tc_config *cfg;
    tc_cache *c = NULL;
    if (tc_config_new(&cfg) != TC_OK || tc_config_load_file(cfg, cfg_path) != TC_OK ||
        tc_open(&c, cfg) != TC_OK) {
        fprintf(stderr, "coherence: child open: %s\n", tc_errmsg(NULL));
        _exit(5);
    }
    tc_config_free(cfg);
    return c;
}

static void reader_main(int proc)
{
    tc_cache *c = child_open();
    recbuf b = {0};
    unsigned seed = (unsigned)(getpid() * 2654435761u);
    while (!stop_flag) {
        int k = (int)(rand_r(&seed) % NKEYS);
        char key[32];
        key_name(key, sizeof key, k);
        rec r = {R_READ, k, proc, 0, 0, 0, 0, 0};
        void *v = NULL;
        size_t len = 0;
        unsigned info = 0;
        int64_t ver = 0;
        r.start_ns = now_ns();
        int rc = tc_get_ex(&v, &len, &info, &ver, c, key, strlen(key));
        r.end_ns = now_ns();
        if (rc == TC_OK)
            r.version = ver;
        else if (rc != TC_ENOTFOUND)
            r.flags |= F_ERROR;
        if (rc == TC_OK && value_parse(v, len, &r.value) != 0)
            r.flags |= F_ERROR;
        tc_free(v);
        rb_add(&b, &r);
        sleep_us((long)(rand_r(&seed) % 3001));
    }
    tc_close(c);
    rb_save(&b, proc);
    _exit(0);
}

static void lib_writer_main(int proc)
{
    tc_cache *c = child_open();
    sqlc db;
    if (sql_open(&db) != 0)
        _exit(5);
    recbuf b = {0};
    unsigned seed = (unsigned)(getpid() * 2246822519u);
    uint64_t n = 0;
    while (!stop_flag) {
        int k = RARE + (int)(rand_r(&seed) % (NKEYS - RARE));
        char key[32], val[64];
        key_name(key, sizeof key, k);
        rec r = {W_PUT, k, proc, 0, 0, 0, 0, 0};
        if (k >= LIB_ONLY && rand_r(&seed) % 5 == 0) {
            r.kind = W_DEL;
            r.start_ns = now_ns();
            int rc = tc_del(c, key, strlen(key));
            r.end_ns = now_ns();
            if (rc != TC_OK)
                r.flags |= F_ERROR | F_NOVER;
            /* No one else writes this key: the log's newest change of it is this delete. */
            else if (sql_last_logged(&db, key, &r.version) != 0 || r.version == 0)
                r.flags |= F_NOVER;
        } else {
            r.value = ((uint64_t)proc << 48) | ++n;
            value_text(val, sizeof val, r.value);
            r.start_ns = now_ns();
            int rc = tc_put(c, key, strlen(key), val, strlen(val), 0);
            r.end_ns = now_ns();
            if (rc != TC_OK) {
                r.flags |= F_ERROR | F_NOVER;
            } else {
                void *v = NULL;
                size_t len = 0;
                int64_t ver = 0;
                uint64_t got = 0;
                /* Read-your-writes: this handle serves its own write (or a newer one). */
                if (tc_get_ex(&v, &len, NULL, &ver, c, key, strlen(key)) == TC_OK &&
                    value_parse(v, len, &got) == 0 && got == r.value)
                    r.version = ver;
                else
                    r.flags |= F_NOVER; /* another writer got in between */
                tc_free(v);
            }
        }
        rb_add(&b, &r);
        sleep_us(1000 + (long)(rand_r(&seed) % 9001));
    }
    sql_close(&db);
    tc_close(c);
    rb_save(&b, proc);
    _exit(0);
}

static void sql_writer_main(int proc)
{
    sqlc db;
    if (sql_open(&db) != 0)
        _exit(5);
    recbuf b = {0};
    unsigned seed = (unsigned)(getpid() * 3266489917u);
    uint64_t n = 0;
    while (!stop_flag) {
        /* ~150 statements a second: 1 in 100 on a rare key. */
        int k = rand_r(&seed) % 100 == 0 ? (int)(rand_r(&seed) % RARE)
                                         : RARE + (int)(rand_r(&seed) % (LIB_ONLY - RARE));
        char key[32], val[64];
        key_name(key, sizeof key, k);
        rec r = {W_PUT, k, proc, 0, 0, 0, 0, 0};
        int rc;
        r.start_ns = now_ns();
        if (rand_r(&seed) % 5 == 0) {
            r.kind = W_DEL;
            rc = sql_delete(&db, key, &r.version);
        } else {
            r.value = ((uint64_t)proc << 48) | ++n;
            value_text(val, sizeof val, r.value);
            rc = sql_upsert(&db, key, val, &r.version);
        }
        r.end_ns = now_ns();
        if (rc != 0)
            r.flags |= F_ERROR | F_NOVER;
        if (rc != 0 || r.version != 0) /* a DELETE of no row changed nothing */
            rb_add(&b, &r);
        sleep_us(1000 + (long)(rand_r(&seed) % 9001));
    }
    sql_close(&db);
    rb_save(&b, proc);
    _exit(0);
}

static pid_t spawn_child(void (*fn)(int), int proc)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("coherence: fork");
        exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fn(proc);
        _exit(0);
    }
    kids[nkids++] = pid;
    return pid;
}

static int inval_runs;
static pid_t start_invalidator(void)
{
    char exe[PATH_MAX + 64], log[600];
    snprintf(exe, sizeof exe, "%s/../bin/tiercache-invalidator", self_dir);
    snprintf(log, sizeof log, "%s/invalidator.log", dir);
    inval_runs++;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("coherence: fork");
        exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(exe, "tiercache-invalidator", "-c", cfg_path, (char *)NULL);
        fprintf(stderr, "coherence: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Waits for pid up to ms; 1 if it exited, 0 if still running. */
static int wait_for(pid_t pid, int ms, int *status)
{
    for (int i = 0; i < ms; i += 10) {
        pid_t p = waitpid(pid, status, WNOHANG);
        if (p == pid)
            return 1;
        sleep_us(10000);
    }
    return 0;
}

static void print_file_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[1024];
    fprintf(stderr, "---- %s ----\n", path);
    while (fgets(line, sizeof line, f) != NULL)
        fputs(line, stderr);
    fclose(f);
}

/* ---- the checks ---------------------------------------------------------------------------- */

static rec *all;
static size_t nall;

static void load_records(int nprocs)
{
    for (int p = 0; p < nprocs; p++) {
        char path[600];
        snprintf(path, sizeof path, "%s/rec.%d", dir, p);
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            fprintf(stderr, "coherence: no records from process %d\n", p);
            exit(1);
        }
        rec r;
        while (fread(&r, sizeof r, 1, f) == 1) {
            if ((nall & 4095) == 0) {
                all = realloc(all, (nall + 4096) * sizeof *all);
                if (all == NULL)
                    exit(3);
            }
            all[nall++] = r;
        }
        fclose(f);
    }
}

static int64_t t0_ns;
static void print_rec(const char *tag, const rec *r)
{
    static const char *kinds[] = {"?", "read", "put", "del"};
    fprintf(stderr, "  %-6s %-4s key=coh:%02d proc=%d version=%lld%s%s value=%llx "
                    "start=%.3f end=%.3f\n",
            tag, kinds[r->kind & 3], r->key, r->proc, (long long)r->version,
            r->flags & F_NOVER ? " (unknown)" : "", r->flags & F_ERROR ? " FAILED" : "",
            (unsigned long long)r->value, (r->start_ns - t0_ns) / 1e9, (r->end_ns - t0_ns) / 1e9);
}

typedef struct final_row {
    int present;
    int64_t version;
    uint64_t value;
} final_row;

static final_row finals[NKEYS];
/* The change log: key index, version, in seq order. */
typedef struct logrow {
    int key;
    int64_t version;
} logrow;
static logrow *logv;
static size_t nlog;

static int key_index(const char *s)
{
    int k;
    if (s == NULL || sscanf(s, "coh:%d", &k) != 1 || k < 0 || k >= NKEYS)
        return -1;
    return k;
}

static void log_add(int k, int64_t v)
{
    if ((nlog & 4095) == 0) {
        logv = realloc(logv, (nlog + 4096) * sizeof *logv);
        if (logv == NULL)
            exit(3);
    }
    logv[nlog].key = k;
    logv[nlog].version = v;
    nlog++;
}

/* A short base64 value (the library's B attribute) as text ("" if it does not decode). */
static const char *b64_text(const char *b, char *out, size_t cap)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *b && *b != '='; b++) {
        const char *p = strchr(a, *b);
        if (p == NULL || n + 1 >= cap) {
            n = 0;
            break;
        }
        acc = acc << 6 | (uint32_t)(p - a);
        if ((bits += 6) >= 8) {
            bits -= 8;
            out[n++] = (char)(acc >> bits);
        }
    }
    out[n] = '\0';
    return out;
}

/* The final items (a Scan) and the whole stream as the change log. */
static int ddb_read_database(void)
{
    json_t *start = NULL;
    do { /* the items, page by page */
        json_t *req = json_pack("{s:s,s:b}", "TableName", "tiercache", "ConsistentRead", 1);
        if (start != NULL)
            json_object_set_new(req, "ExclusiveStartKey", start);
        json_t *ans = ddb_json("Scan", req), *it;
        if (ans == NULL)
            return -1;
        size_t i;
        json_array_foreach(json_object_get(ans, "Items"), i, it)
        {
            int k = key_index(json_string_value(json_object_get(json_object_get(it, "pk"), "S")));
            json_t *val = json_object_get(it, "val");
            const char *v = json_string_value(json_object_get(val, "S"));
            const char *b = json_string_value(json_object_get(val, "B"));
            if (k < 0 || (v == NULL && b == NULL))
                continue; /* a tombstone: absent */
            char text[128];
            if (v == NULL && b != NULL) /* the library's: base64 */
                v = b64_text(b, text, sizeof text);
            finals[k].present = 1;
            finals[k].version = ddb_num(json_object_get(it, "ver"));
            if (value_parse(v, strlen(v), &finals[k].value) != 0)
                finals[k].value = 0;
        }
        start = json_incref(json_object_get(ans, "LastEvaluatedKey"));
        json_decref(ans);
    } while (start != NULL);
    /* The stream, every shard from its start (parents before children: DescribeStream lists
     * them in that order), as the change log. */
    json_t *t = ddb_json("DescribeTable", json_pack("{s:s}", "TableName", "tiercache"));
    const char *arn = json_string_value(
        json_object_get(json_object_get(t, "Table"), "LatestStreamArn"));
    json_t *d = arn != NULL ? ddb_json("Streams.DescribeStream",
                                       json_pack("{s:s}", "StreamArn", arn))
                            : NULL;
    json_t *sh;
    size_t i;
    int rc = d != NULL ? 0 : -1;
    json_array_foreach(json_object_get(json_object_get(d, "StreamDescription"), "Shards"), i, sh)
    {
        json_t *it = ddb_json("Streams.GetShardIterator",
                              json_pack("{s:s,s:O,s:s}", "StreamArn", arn, "ShardId",
                                        json_object_get(sh, "ShardId"), "ShardIteratorType",
                                        "TRIM_HORIZON"));
        char *iter = it != NULL ? strdup(json_string_value(json_object_get(it, "ShardIterator")))
                                : NULL;
        json_decref(it);
        while (iter != NULL) {
            json_t *r = ddb_json("Streams.GetRecords", json_pack("{s:s}", "ShardIterator", iter));
            free(iter);
            iter = NULL;
            if (r == NULL) {
                rc = -1;
                break;
            }
            json_t *recs = json_object_get(r, "Records"), *rec1;
            size_t j;
            json_array_foreach(recs, j, rec1)
            {
                json_t *dd = json_object_get(rec1, "dynamodb");
                int k = key_index(json_string_value(
                    json_object_get(json_object_get(json_object_get(dd, "Keys"), "pk"), "S")));
                if (k >= 0)
                    log_add(k, ddb_change_version(json_object_get(dd, "NewImage"),
                                                  json_object_get(dd, "OldImage")));
            }
            const char *next = json_string_value(json_object_get(r, "NextShardIterator"));
            if (next != NULL && json_array_size(recs) > 0)
                iter = strdup(next);
            json_decref(r);
        }
    }
    json_decref(d);
    json_decref(t);
    return rc;
}

static int read_database(void)
{
    if (use_ddb)
        return ddb_read_database();
    sqlc c;
    if (sql_open(&c) != 0)
        return -1;
    if (c.db != NULL) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(c.db, "SELECT key, value, version FROM tiercache", -1, &st,
                               NULL) != SQLITE_OK)
            return -1;
        while (sqlite3_step(st) == SQLITE_ROW) {
            int k = key_index((const char *)sqlite3_column_text(st, 0));
            if (k < 0)
                continue;
            finals[k].present = 1;
            finals[k].version = sqlite3_column_int64(st, 2);
            if (value_parse(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                            &finals[k].value) != 0)
                finals[k].value = 0;
        }
        sqlite3_finalize(st);
        if (sqlite3_prepare_v2(c.db, "SELECT key, version FROM tiercache_log ORDER BY seq", -1,
                               &st, NULL) != SQLITE_OK)
            return -1;
        while (sqlite3_step(st) == SQLITE_ROW) {
            int k = key_index((const char *)sqlite3_column_text(st, 0));
            if (k >= 0)
                log_add(k, sqlite3_column_int64(st, 1));
        }
        sqlite3_finalize(st);
    } else {
        PGresult *r = pq(c.pg, "SELECT key, convert_from(value, 'UTF8'), version FROM tiercache",
                         0, NULL, NULL);
        if (!pq_ok(r))
            return -1;
        for (int i = 0; i < PQntuples(r); i++) {
            int k = key_index(PQgetvalue(r, i, 0));
            if (k < 0)
                continue;
            finals[k].present = 1;
            finals[k].version = strtoll(PQgetvalue(r, i, 2), NULL, 10);
            const char *v = PQgetvalue(r, i, 1);
            if (value_parse(v, strlen(v), &finals[k].value) != 0)
                finals[k].value = 0;
        }
        PQclear(r);
        r = pq(c.pg, "SELECT key, version FROM tiercache_log ORDER BY seq", 0, NULL, NULL);
        if (!pq_ok(r))
            return -1;
        for (int i = 0; i < PQntuples(r); i++) {
            int k = key_index(PQgetvalue(r, i, 0));
            if (k >= 0)
                log_add(k, strtoll(PQgetvalue(r, i, 1), NULL, 10));
        }
        PQclear(r);
    }
    sql_close(&c);
    return 0;
}

static int cmp_start(const void *a, const void *b)
{
    const rec *x = *(rec *const *)a, *y = *(rec *const *)b;
    return x->start_ns < y->start_ns ? -1 : x->start_ns > y->start_ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int logged(int k, int64_t v)
{
    for (size_t i = 0; i < nlog; i++)
        if (logv[i].key == k && logv[i].version == v)
            return 1;
    return 0;
}

/* Is read r stale with respect to write w (same key, r started after w's ack)? dels: the key's
 * deletes, to excuse a not-found. */
static int is_stale(const rec *r, const rec *w, rec *const *dels, size_t ndels)
{
    if (w->kind == W_DEL)
        return r->version > 0 && r->version < w->version;
    if (r->version >= w->version)
        return 0;
    if (r->version == 0)
        for (size_t i = 0; i < ndels; i++) {
            const rec *d = dels[i];
            if (d->start_ns >= r->end_ns)
                continue;
            if (d->flags & F_NOVER) {
                if (d->start_ns > w->start_ns) /* lib-only keys: one sequential writer */
                    return 0;
            } else if (d->version > w->version) {
                return 0;
            }
        }
    return 1;
}

static int run_checks(void)
{
    int failed = 0;
    size_t nreads = 0, nwrites = 0, nread_err = 0, nwrite_err = 0, nnover = 0, lost = 0;
    size_t stale_past = 0;
    int64_t *windows = malloc((nall + 1) * sizeof *windows);
    int64_t *fwindows = malloc((nall + 1) * sizeof *fwindows);
    size_t nwin = 0, nfwin = 0;
    rec **byk = malloc((nall + 1) * sizeof *byk);
    rec **reads = malloc((nall + 1) * sizeof *reads);
    rec **dels = malloc((nall + 1) * sizeof *dels);
    if (windows == NULL || fwindows == NULL || byk == NULL || reads == NULL || dels == NULL)
        exit(3);
    const int64_t bound_ns = (int64_t)BOUND_MS * 1000000;

    /* Versions only increase in the log, per key. */
    int64_t lastv[NKEYS] = {0};
    for (size_t i = 0; i < nlog; i++) {
        if (logv[i].version <= lastv[logv[i].key]) {
            fprintf(stderr, "FAIL: log of coh:%02d goes from version %lld to %lld; the writes:\n",
                    logv[i].key, (long long)lastv[logv[i].key], (long long)logv[i].version);
            for (size_t j = 0; j < nall; j++)
                if (all[j].kind != R_READ && all[j].key == logv[i].key &&
                    (all[j].version == logv[i].version || all[j].version == lastv[logv[i].key]))
                    print_rec("write", &all[j]);
            failed = 1;
        }
        lastv[logv[i].key] = logv[i].version;
    }

    for (int k = 0; k < NKEYS; k++) {
        size_t nw = 0, nr = 0, nd = 0;
        for (size_t i = 0; i < nall; i++) {
            rec *r = &all[i];
            if (r->key != k)
                continue;
            if (r->kind == R_READ) {
                if (r->flags & F_ERROR)
                    nread_err++;
                else
                    reads[nr++] = r;
                nreads++;
            } else {
                byk[nw++] = r;
                nwrites++;
                if (r->flags & F_ERROR)
                    nwrite_err++;
                else if (r->flags & F_NOVER)
                    nnover++;
                if (r->kind == W_DEL && !(r->flags & F_ERROR))
                    dels[nd++] = r;
            }
        }
        qsort(reads, nr, sizeof *reads, cmp_start);

        /* 1. The final row is one of the writes that may have committed last. */
        int64_t max_start = INT64_MIN;
        for (size_t i = 0; i < nw; i++)
            if (!(byk[i]->flags & F_ERROR) && byk[i]->start_ns > max_start)
                max_start = byk[i]->start_ns;
        int match = 0;
        if (max_start == INT64_MIN)
            match = !finals[k].present; /* never written (or only failed writes) */
        for (size_t i = 0; i < nw && !match; i++) {
            const rec *w = byk[i];
            if (w->end_ns < max_start)
                continue;
            if (w->kind == W_DEL)
                match = !finals[k].present;
            else
                match = finals[k].present && finals[k].value == w->value &&
                        ((w->flags & F_NOVER) || finals[k].version == w->version);
        }
        if (max_start == INT64_MIN && !match)
            for (size_t i = 0; i < nw && !match; i++) /* only failed writes: any may be in */
                match = byk[i]->kind == W_DEL ? !finals[k].present
                                               : finals[k].value == byk[i]->value;
        if (!match) {
            fprintf(stderr, "FAIL (lost write): coh:%02d final row: %s version=%lld value=%llx; "
                            "the writes that may have been last:\n",
                    k, finals[k].present ? "present" : "absent", (long long)finals[k].version,
                    (unsigned long long)finals[k].value);
            for (size_t i = 0; i < nw; i++)
                if (byk[i]->end_ns >= max_start)
                    print_rec("write", byk[i]);
            lost++;
            failed = 1;
        }
        int64_t finalv = finals[k].present ? finals[k].version : lastv[k];
        for (size_t i = 0; i < nw; i++) {
            const rec *w = byk[i];
            if ((w->flags & (F_ERROR | F_NOVER)) || w->version <= finalv || logged(k, w->version))
                continue;
            fprintf(stderr, "FAIL (lost write): an acknowledged version neither in the log nor "
                            "<= the final version %lld:\n", (long long)finalv);
            print_rec("write", w);
            lost++;
            failed = 1;
        }

        /* 2 and 3. Stale reads, per write. */
        for (size_t i = 0; i < nw; i++) {
            const rec *w = byk[i];
            if (w->flags & (F_ERROR | F_NOVER))
                continue;
            int64_t win = 0;
            int printed = 0;
            for (size_t j = 0; j < nr; j++) {
                const rec *r = reads[j];
                if (r->start_ns <= w->end_ns || !is_stale(r, w, dels, nd))
                    continue;
                if (r->start_ns - w->end_ns > win)
                    win = r->start_ns - w->end_ns;
                if (r->start_ns - bound_start(w->end_ns) > bound_ns) {
                    if (!printed) {
                        fprintf(stderr, "FAIL (stale past %d ms): reads of coh:%02d after:\n",
                                BOUND_MS, k);
                        print_rec("write", w);
                    }
                    if (printed++ < 5)
                        print_rec("read", r);
                    stale_past++;
                    failed = 1;
                }
            }
            if (in_fault(w->end_ns))
                fwindows[nfwin++] = win;
            else
                windows[nwin++] = win;
        }
    }
    qsort(windows, nwin, sizeof *windows, cmp_i64);
    qsort(fwindows, nfwin, sizeof *fwindows, cmp_i64);
    double p50 = pct_ms(windows, nwin, 50), p99 = pct_ms(windows, nwin, 99);
    double mx = nwin ? windows[nwin - 1] / 1e6 : 0, fmx = nfwin ? fwindows[nfwin - 1] / 1e6 : 0;
    printf("coherence %s: writes=%zu reads=%zu lost=%zu stale_past_window=%zu window_ms "
           "steady p50=%.1f p99=%.1f max=%.1f (%zu writes), faults p50=%.1f p99=%.1f max=%.1f "
           "(%zu writes) (bound %d ms)\n",
           store_kind, nwrites, nreads, lost, stale_past, p50, p99, mx, nwin,
           pct_ms(fwindows, nfwin, 50), pct_ms(fwindows, nfwin, 99), fmx, nfwin, BOUND_MS);
    free(fwindows);
    printf("# %s: %zu failed reads, %zu failed writes, %zu writes of unknown version, "
           "%zu log rows, invalidator started %d times\n",
           store_kind, nread_err, nwrite_err, nnover, nlog, inval_runs);
    if (nreads < 100 || nwrites < 50) {
        fprintf(stderr, "FAIL: too little traffic to judge\n");
        failed = 1;
    }
    free(windows);
    free(byk);
    free(reads);
    free(dels);
    return failed;
}

/* ---- main -------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: coherence [--store sqlite|postgres|dynamodb] [--seconds N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int seconds = 12;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_kind = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else
            usage();
    }
    if (seconds < 3 || (strcmp(store_kind, "sqlite") != 0 && strcmp(store_kind, "postgres") != 0 &&
                        strcmp(store_kind, "dynamodb") != 0))
        usage();
    use_pg = strcmp(store_kind, "postgres") == 0;
    use_ddb = strcmp(store_kind, "dynamodb") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(self_dir, sizeof self_dir, "%s", self);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    atexit(cleanup);

    if (use_pg && !tct_pg_available()) {
        printf("coherence postgres: skipped (no PostgreSQL server binaries)\n");
        return 77;
    }
    if (tct_tmpdir(dir, sizeof dir) != 0 || tct_redis_start(&redis) != 0) {
        fprintf(stderr, "coherence: cannot set up a temp dir and redis-server\n");
        return 1;
    }
    if (use_pg && tct_pg_start(&pg) != 0) {
        fprintf(stderr, "coherence: cannot start PostgreSQL\n");
        return 1;
    }
    if (use_ddb && tct_ddb_start(&ddb) != 0) {
        fprintf(stderr, "coherence: cannot start DynamoDB Local\n");
        return 1;
    }
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    snprintf(db_path, sizeof db_path, "%s/store.db", dir);
    FILE *f = fopen(cfg_path, "w");
    if (f == NULL)
        return 1;
    fprintf(f,
            "{\"redis\": {\"host\": \"127.0.0.1\", \"port\": %d, \"retry_interval_ms\": 100,\n"
            "           \"retry_max_ms\": 500},\n"
            " \"store\": {\"type\": \"%s\", \"path\": \"%s\", \"conninfo\": \"%s\"%s%s%s},\n"
            " \"edge\": {\"max_ttl_ms\": %d}, \"default_ttl_ms\": %d, \"ttl_jitter_pct\": 0,\n"
            " \"feed\": {\"poll_ms\": %d, \"lease_ms\": %d}}\n",
            redis.port, store_kind, db_path, use_pg ? pg.conninfo : "",
            use_ddb ? ", \"create_table\": true, \"endpoint\": \"" : "",
            use_ddb ? ddb.endpoint : "",
            use_ddb ? "\", \"access_key_id\": \"" TCT_DDB_KEY "\", \"secret_access_key\": \""
                      TCT_DDB_SECRET "\", \"region\": \"" TCT_DDB_REGION "\""
                    : "",
            EDGE_TTL_MS,
            REDIS_TTL_MS, POLL_MS, LEASE_MS);
    fclose(f);

    /* The schema, and whether the store has a change feed at all. */
    {
        tc_config *cfg;
        tc_cache *c = NULL;
        tc_invalidator *inv = NULL;
        if (tc_config_new(&cfg) != TC_OK || tc_config_load_file(cfg, cfg_path) != TC_OK ||
            tc_open(&c, cfg) != TC_OK) {
            fprintf(stderr, "coherence: open: %s %s\n", tc_config_errmsg(cfg), tc_errmsg(NULL));
            return 1;
        }
        tc_config_free(cfg);
        int rc = tc_invalidator_new(&inv, c);
        tc_invalidator_free(inv);
        if (rc == TC_EINVAL) {
            printf("coherence %s: skipped (%s)\n", store_kind, tc_errmsg(c));
            tc_close(c);
            return 77;
        }
        tc_close(c);
    }

    t0_ns = now_ns();
    inval_pid = start_invalidator();
    sleep_us(300000);
    int proc = 0;
    for (int i = 0; i < NREADERS; i++)
        spawn_child(reader_main, proc++);
    spawn_child(lib_writer_main, proc++);
    spawn_child(sql_writer_main, proc++);
    int nprocs = proc;

    int64_t start = now_ns(), total = (int64_t)seconds * 1000000000;
    int killed_inval = 0, restarted_redis = 0, stalled_redis = 0, status = 0;
    /* COHERENCE_SABOTAGE=1: the killed invalidator is not started again, so plain-SQL writes
     * stay stale in Redis: the run must then fail (a check of the checks). */
    const char *sab = getenv("COHERENCE_SABOTAGE");
    int sabotage = sab != NULL && *sab != '\0' && strcmp(sab, "0") != 0;
    while (!stop_flag && now_ns() - start < total) {
        int64_t el = now_ns() - start;
        if (!killed_inval && el > total * 35 / 100) {
            int64_t f0 = now_ns();
            kill(inval_pid, SIGKILL);
            waitpid(inval_pid, NULL, 0);
            inval_pid = sabotage ? 0 : start_invalidator();
            killed_inval = 1;
            fault_span(f0, now_ns());
            printf("# %.1f s: invalidator killed (SIGKILL) and started again\n", el / 1e9);
        }
        if (!stalled_redis && el > total * 55 / 100) {
            int64_t f0 = now_ns();
            kill(redis.pid, SIGSTOP);
            sleep_us((int64_t)STALL_MS * 1000);
            kill(redis.pid, SIGCONT);
            stalled_redis = 1;
            redis_away(f0, now_ns());
            fault_span(f0, now_ns());
            printf("# %.1f s: redis-server stopped (SIGSTOP) for %d ms\n", el / 1e9, STALL_MS);
        }
        if (!restarted_redis && el > total / 5) {
            int64_t f0 = now_ns();
            tct_redis_kill(&redis);
            if (tct_redis_restart(&redis) != 0) {
                fprintf(stderr, "coherence: redis did not come back\n");
                return 1;
            }
            restarted_redis = 1;
            redis_away(f0, now_ns());
            fault_span(f0, now_ns());
            printf("# %.1f s: redis-server killed and restarted\n", (now_ns() - start) / 1e9);
        }
        sleep_us(20000);
    }
    if (stop_flag) {
        fprintf(stderr, "coherence: interrupted\n");
        return 1;
    }
    /* Stop the readers and writers: each finishes its call, saves its records and exits. */
    int bad = 0;
    for (int i = 0; i < nkids; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < nkids; i++) {
        if (!wait_for(kids[i], 30000, &status)) {
            fprintf(stderr, "coherence: process %d did not stop\n", i);
            bad = 1;
            continue;
        }
        kids[i] = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "coherence: process %d ended with status %#x\n", i, status);
            bad = 1;
        }
    }
    if (inval_pid > 0) {
        kill(inval_pid, SIGTERM);
        if (wait_for(inval_pid, 10000, &status))
            inval_pid = 0;
    }
    if (bad) {
        print_file_tail(strcat(strcpy(self, dir), "/invalidator.log"));
        return 1;
    }
    load_records(nprocs);
    if (read_database() != 0) {
        fprintf(stderr, "coherence: cannot read the database\n");
        return 1;
    }
    int failed = run_checks();
    if (failed) {
        char log[600];
        snprintf(log, sizeof log, "%s/invalidator.log", dir);
        print_file_tail(log);
    }
    if (failed || getenv("COHERENCE_KEEP") != NULL) {
        if (getenv("COHERENCE_KEEP") != NULL) {
            keep_dir = 1;
            fprintf(stderr, "coherence: records kept in %s\n", dir);
        }
    }
    if (failed) {
        fprintf(stderr, "coherence %s: FAILED\n", store_kind);
        return 1;
    }
    return 0;
}
