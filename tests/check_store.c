/*
 * check_store.c - the SQLite store (lib/store/store_sqlite.c): values, versions, plain-SQL writers,
 * files, processes and threads.
 *
 * Fork tests run their checks in the child with plain conditions and report through the exit
 * status (ck_assert in a grandchild of the runner would report to the wrong process), and
 * always leave the child with _exit so that, under CK_FORK=no, the child never returns into
 * the runner.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "tc_test.h"

#define TABLE "kv"

static char dir[256];
static char db_path[300];
static const int owner_tag = 0; /* an address to tag error messages with */
#define OWNER ((const void *)&owner_tag)

static void setup(void)
{
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    snprintf(db_path, sizeof db_path, "%s/store.db", dir);
}

static void teardown(void)
{
    tct_rmrf(dir);
}

/* ---- helpers -------------------------------------------------------------------------------- */

typedef struct got {
    unsigned char *data;
    size_t len;
    int64_t version;
    int64_t ttl;
    int calls;
    int data_was_null;
} got;

static int collect(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl_ms)
{
    got *g = ctx;
    g->calls++;
    g->data_was_null = data == NULL;
    free(g->data);
    g->data = malloc(len > 0 ? len : 1);
    if (g->data == NULL)
        return TC_ENOMEM;
    if (len > 0 && data != NULL)
        memcpy(g->data, data, len);
    g->len = len;
    g->version = version;
    g->ttl = ttl_ms;
    return 0;
}

static void got_free(got *g)
{
    free(g->data);
    memset(g, 0, sizeof *g);
}

static tc__store *xopen(const char *path)
{
    tc__store *s = NULL;
    int rc = tc__store_sqlite_open(&s, path, TABLE, 5000, OWNER);
    ck_assert_msg(rc == TC_OK, "open %s: %d %s", path, rc, tc_errmsg(NULL));
    ck_assert_ptr_nonnull(s);
    return s;
}

static int64_t xput(tc__store *s, const char *key, const void *value, size_t len)
{
    int64_t v = -1;
    int rc = s->ops->put(s, key, strlen(key), value, len, &v);
    ck_assert_msg(rc == TC_OK, "put %s: %d %s", key, rc, tc_errmsg(NULL));
    ck_assert_int_gt(v, 0);
    return v;
}

static int64_t xdel(tc__store *s, const char *key)
{
    int64_t v = -1;
    int rc = s->ops->del(s, key, strlen(key), &v);
    ck_assert_msg(rc == TC_OK, "del %s: %d %s", key, rc, tc_errmsg(NULL));
    ck_assert_int_gt(v, 0);
    return v;
}

/* Gets key into *g; returns the store's result. */
static int xget(tc__store *s, const char *key, got *g)
{
    return s->ops->get(s, key, strlen(key), collect, g);
}

static void expect_value(tc__store *s, const char *key, const void *value, size_t len,
                         int64_t version)
{
    got g = {0};
    int rc = xget(s, key, &g);
    ck_assert_msg(rc == TC_OK, "get %s: %d %s", key, rc, tc_errmsg(NULL));
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.data_was_null, 0);
    ck_assert_uint_eq(g.len, len);
    ck_assert(len == 0 || memcmp(g.data, value, len) == 0);
    ck_assert_int_eq(g.ttl, -1);
    if (version > 0)
        ck_assert_int_eq(g.version, version);
    got_free(&g);
}

/* Runs SQL on a second, plain connection, as the sqlite3 CLI or another program would. */
static void plain_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, err != NULL ? err : "?");
    sqlite3_free(err);
}

static int64_t plain_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static sqlite3 *plain_open(const char *path)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for a child and returns its exit status, or 1000 + signal if it was killed. */
static int wait_child(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 1000 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* One byte over a pipe, to order parent and child. */
static void sig_send(int fd)
{
    while (write(fd, "x", 1) < 0 && errno == EINTR)
        ;
}

static void sig_wait(int fd)
{
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR)
        ;
}

/* In a child: exit with code unless cond holds. */
#define REQUIRE(cond, code)                                                                    \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "child check failed (%d): %s: %s\n", (code), #cond,                \
                    tc_errmsg(NULL));                                                          \
            _exit(code);                                                                       \
        }                                                                                      \
    } while (0)

/* In a child: a deadlock ends as SIGALRM, not as a hung suite. The disposition is reset first
 * because the runner's test process may have its own SIGALRM handling, which the child
 * inherits. */
static void child_watchdog(void)
{
    signal(SIGALRM, SIG_DFL);
    alarm(30);
}

/* In a child: put and return the version, or -1. */
static int64_t child_put(tc__store *s, const char *key, const char *value)
{
    int64_t v = 0;
    if (s->ops->put(s, key, strlen(key), value, strlen(value), &v) != TC_OK)
        return -1;
    return v;
}

static int child_get_is(tc__store *s, const char *key, const char *value)
{
    got g = {0};
    int rc = xget(s, key, &g);
    int ok = rc == TC_OK && g.len == strlen(value) && memcmp(g.data, value, g.len) == 0;
    got_free(&g);
    return ok;
}

/* ---- values --------------------------------------------------------------------------------- */

START_TEST(test_roundtrip_values)
{
    tc__store *s = xopen(db_path);
    static const char nuls[] = "a\0b\0\0c\0";
    int64_t v = xput(s, "nuls", nuls, sizeof nuls); /* 8 bytes, trailing NUL included */
    expect_value(s, "nuls", nuls, sizeof nuls, v);

    v = xput(s, "empty", "", 0);
    expect_value(s, "empty", "", 0, v); /* fn must get a non-NULL pointer for 0 bytes */
    v = xput(s, "empty-null", NULL, 0);
    expect_value(s, "empty-null", "", 0, v);

    v = xput(s, "one", "\0", 1);
    expect_value(s, "one", "\0", 1, v);
    v = xput(s, "one", "z", 1);
    expect_value(s, "one", "z", 1, v);

    size_t big = 1u << 20;
    unsigned char *mib = malloc(big);
    ck_assert_ptr_nonnull(mib);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        mib[i] = (unsigned char)(i % 7 == 0 ? 0 : x); /* plenty of NULs */
    }
    v = xput(s, "mib", mib, big);
    expect_value(s, "mib", mib, big, v);

    /* Text-looking keys are bound with their length: a prefix is another key. */
    v = xput(s, "ab", "2", 1);
    int64_t v1 = xput(s, "a", "1", 1);
    expect_value(s, "ab", "2", 1, v);
    expect_value(s, "a", "1", 1, v1);
    free(mib);
    s->ops->close(s);
}
END_TEST

static int return_seven(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl)
{
    (void)data, (void)len, (void)version, (void)ttl;
    ++*(int *)ctx;
    return 7;
}

START_TEST(test_callback_result_and_reset)
{
    tc__store *s = xopen(db_path);
    xput(s, "k", "v", 1);
    int calls = 0;
    ck_assert_int_eq(s->ops->get(s, "k", 1, return_seven, &calls), 7);
    ck_assert_int_eq(calls, 1);
    /* The statement was reset: no read transaction is left open, so another connection can
     * write and fully checkpoint, and this store still reads and writes. */
    sqlite3 *db = plain_open(db_path);
    plain_sql(db, "UPDATE kv SET value = 'w' WHERE key = 'k'");
    ck_assert_int_eq(plain_int(db, "PRAGMA wal_checkpoint(TRUNCATE)"), 0);
    sqlite3_close(db);
    expect_value(s, "k", "w", 1, 0);
    int64_t v = xput(s, "k", "x", 1);
    expect_value(s, "k", "x", 1, v);
    /* A NULL fn only tests presence. */
    ck_assert_int_eq(s->ops->get(s, "k", 1, NULL, NULL), TC_OK);
    ck_assert_int_eq(s->ops->get(s, "nope", 4, NULL, NULL), TC_ENOTFOUND);
    s->ops->close(s);
}
END_TEST

START_TEST(test_bad_arguments)
{
    tc__store *s = xopen(db_path);
    int64_t v = 99;
    ck_assert_int_eq(s->ops->put(s, "a\0b", 3, "v", 1, &v), TC_EKEY);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(s->ops->put(s, "", 0, "v", 1, &v), TC_EKEY);
    ck_assert_int_eq(s->ops->put(s, NULL, 1, "v", 1, &v), TC_EINVAL);
    ck_assert_int_eq(s->ops->put(s, "k", 1, NULL, 3, &v), TC_EINVAL);
    ck_assert_int_eq(s->ops->put(s, "k", 1, "v", 1, NULL), TC_EINVAL);
    ck_assert_int_eq(s->ops->del(s, "k", 1, NULL), TC_EINVAL);
    char longkey[TC_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey);
    ck_assert_int_eq(s->ops->get(s, longkey, TC_KEY_MAX + 1, collect, NULL), TC_EKEY);
    ck_assert_int_eq(s->ops->put(s, longkey, TC_KEY_MAX, "v", 1, &v), TC_OK);
    ck_assert_int_eq(s->ops->get(s, longkey, TC_KEY_MAX, NULL, NULL), TC_OK);
    const tc__store_ops *ops = s->ops;
    s->ops->close(s);
    ops->close(NULL); /* destructors accept NULL */
}
END_TEST

/* ---- versions ------------------------------------------------------------------------------- */

START_TEST(test_versions_increase)
{
    tc__store *s = xopen(db_path);
    int64_t v1 = xput(s, "k", "1", 1);
    int64_t v2 = xput(s, "k", "2", 1);
    int64_t v3 = xdel(s, "k");
    int64_t v4 = xput(s, "k", "4", 1);
    ck_assert_int_lt(v1, v2);
    ck_assert_int_lt(v2, v3);
    ck_assert_int_lt(v3, v4); /* a re-created key is newer than its tombstone */
    expect_value(s, "k", "4", 1, v4);

    /* Across keys: one sequence for the whole table. */
    int64_t last = v4;
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "key%d", i % 3);
        int64_t v = (i % 4 == 3) ? xdel(s, key) : xput(s, key, key, strlen(key));
        ck_assert_int_gt(v, last);
        last = v;
    }
    s->ops->close(s);
}
END_TEST

START_TEST(test_missing_keys)
{
    tc__store *s = xopen(db_path);
    got g = {0};
    ck_assert_int_eq(xget(s, "nothing", &g), TC_ENOTFOUND);
    ck_assert_int_eq(g.calls, 0);

    int64_t v1 = xput(s, "k", "v", 1);
    int64_t v2 = xdel(s, "never-existed"); /* succeeds, and still takes a version */
    ck_assert_int_gt(v2, v1);
    int64_t v3 = xdel(s, "k");
    ck_assert_int_gt(v3, v2);
    ck_assert_int_eq(xget(s, "k", &g), TC_ENOTFOUND);
    int64_t v4 = xdel(s, "k"); /* again */
    ck_assert_int_gt(v4, v3);
    ck_assert_int_eq(g.calls, 0);
    s->ops->close(s);
}
END_TEST

START_TEST(test_sequence_row_missing)
{
    tc__store *s = xopen(db_path);
    int64_t v = xput(s, "k", "old", 3);
    sqlite3 *db = plain_open(db_path);
    plain_sql(db, "DELETE FROM kv_seq");
    int64_t out = 1;
    ck_assert_int_eq(s->ops->put(s, "k", 1, "new", 3, &out), TC_ESTORE);
    ck_assert_int_eq(out, 0);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "sequence"));
    expect_value(s, "k", "old", 3, v); /* rolled back */
    plain_sql(db, "INSERT INTO kv_seq(id, v) VALUES (1, 1000)");
    ck_assert_int_eq(xput(s, "k", "new", 3), 1001);
    sqlite3_close(db);
    s->ops->close(s);
}
END_TEST

/* ---- plain SQL from other programs ---------------------------------------------------------- */

START_TEST(test_plain_sql_writes_get_versions)
{
    tc__store *s = xopen(db_path);
    int64_t v = xput(s, "lib", "x", 1);
    sqlite3 *db = plain_open(db_path);

    int64_t t0 = wall_ms();
    plain_sql(db, "INSERT INTO kv(key, value) VALUES ('p', X'00FF00')");
    int64_t t1 = wall_ms();
    expect_value(s, "p", "\0\xff\0", 3, v + 1);
    int64_t at = plain_int(db, "SELECT updated_at FROM kv WHERE key = 'p'");
    ck_assert_int_ge(at, t0 - 1);
    ck_assert_int_le(at, t1 + 1);

    plain_sql(db, "UPDATE kv SET value = X'01' WHERE key = 'p'");
    expect_value(s, "p", "\x01", 1, v + 2);

    /* Not a change of value: no new version. */
    plain_sql(db, "UPDATE kv SET updated_at = 5 WHERE key = 'p'");
    expect_value(s, "p", "\x01", 1, v + 2);

    plain_sql(db, "INSERT OR REPLACE INTO kv(key, value) VALUES ('p', 'text')");
    expect_value(s, "p", "text", 4, v + 3);

    /* Exactly one bump per row, also with recursive triggers on (this build's default may
     * differ from upstream's; the triggers must not depend on it). */
    plain_sql(db, "PRAGMA recursive_triggers = ON");
    plain_sql(db, "INSERT INTO kv(key, value) VALUES ('q', 'q')");
    expect_value(s, "q", "q", 1, v + 4);
    plain_sql(db, "UPDATE kv SET value = 'Q' WHERE key = 'q'");
    expect_value(s, "q", "Q", 1, v + 5);
    plain_sql(db, "INSERT INTO kv(key, value) VALUES ('m1', 'a'), ('m2', 'b')");
    expect_value(s, "m1", "a", 1, v + 6);
    expect_value(s, "m2", "b", 1, v + 7);
    ck_assert_int_eq(plain_int(db, "SELECT v FROM kv_seq"), v + 7);

    /* The library continues above them, and a plain re-insert after a library delete is newer
     * than the delete's tombstone. */
    int64_t w = xput(s, "p", "lib", 3);
    ck_assert_int_eq(w, v + 8);
    int64_t d = xdel(s, "p");
    plain_sql(db, "INSERT INTO kv(key, value) VALUES ('p', 'again')");
    got g = {0};
    ck_assert_int_eq(xget(s, "p", &g), TC_OK);
    ck_assert_int_gt(g.version, d);
    got_free(&g);

    /* Versions stay unique across the table. */
    ck_assert_int_eq(plain_int(db, "SELECT COUNT(*) - COUNT(DISTINCT version) FROM kv"), 0);
    sqlite3_close(db);
    s->ops->close(s);
}
END_TEST

START_TEST(test_existing_table_seeds_sequence)
{
    /* A table written by an older program, without the sequence table or triggers. */
    sqlite3 *db = plain_open(db_path);
    plain_sql(db, "CREATE TABLE kv(key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                  "version INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0);"
                  "INSERT INTO kv VALUES ('a', 'A', 50, 0), ('b', 'B', 7, 0);");
    sqlite3_close(db);
    tc__store *s = xopen(db_path);
    expect_value(s, "a", "A", 1, 50);
    ck_assert_int_eq(xput(s, "c", "C", 1), 51);
    s->ops->close(s);
}
END_TEST

/* ---- files ---------------------------------------------------------------------------------- */

START_TEST(test_reopen_keeps_data_and_versions)
{
    tc__store *s = xopen(db_path);
    int64_t va = xput(s, "a", "A", 1);
    int64_t vb = xput(s, "b", "B", 1);
    int64_t vd = xdel(s, "a");
    ck_assert_int_lt(va, vb);
    s->ops->close(s);

    s = xopen(db_path);
    expect_value(s, "b", "B", 1, vb);
    got g = {0};
    ck_assert_int_eq(xget(s, "a", &g), TC_ENOTFOUND);
    ck_assert_int_gt(xput(s, "c", "C", 1), vd);
    s->ops->close(s);

    /* Opening an existing file again is idempotent (schema, triggers, sequence). */
    s = xopen(db_path);
    tc__store *s2 = xopen(db_path);
    s2->ops->close(s2);
    s->ops->close(s);
}
END_TEST

START_TEST(test_two_stores_one_file)
{
    tc__store *s1 = xopen(db_path);
    tc__store *s2 = xopen(db_path);
    int64_t last = 0;
    for (int i = 0; i < 30; i++) {
        tc__store *w = (i % 2) ? s2 : s1;
        tc__store *r = (i % 2) ? s1 : s2;
        char val[16];
        int n = snprintf(val, sizeof val, "v%d", i);
        int64_t v = (i % 5 == 4) ? xdel(w, "shared") : xput(w, "shared", val, (size_t)n);
        ck_assert_int_gt(v, last);
        last = v;
        if (i % 5 == 4) {
            got g = {0};
            ck_assert_int_eq(xget(r, "shared", &g), TC_ENOTFOUND);
        } else {
            expect_value(r, "shared", val, (size_t)n, v); /* each sees the other's commit */
        }
    }
    s1->ops->close(s1);
    s2->ops->close(s2);
}
END_TEST

START_TEST(test_open_errors)
{
    static tc__store dummy;
    tc__store *s = &dummy; /* must be set to NULL on failure */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.db", dir);
    ck_assert_int_eq(tc__store_sqlite_open(&s, bad, TABLE, 1000, OWNER), TC_ESTORE);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "sqlite"));
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), bad));
    ck_assert_ptr_nonnull(strstr(tc_errmsg(NULL), "open"));

    /* A directory is not a database. */
    ck_assert_int_eq(tc__store_sqlite_open(&s, dir, TABLE, 1000, OWNER), TC_ESTORE);
    ck_assert_ptr_null(s);

    /* A file that is not a database. */
    char junk[400];
    snprintf(junk, sizeof junk, "%s/junk.db", dir);
    FILE *f = fopen(junk, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database file. ", f);
    fclose(f);
    ck_assert_int_eq(tc__store_sqlite_open(&s, junk, TABLE, 1000, OWNER), TC_ESTORE);
    ck_assert_ptr_null(s);

    /* Table names: validated again, and only ever used as a quoted identifier. */
    static const char *const bad_tables[] = {"", "1abc", "a-b", "a b", "kv\"; DROP", "k\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad_tables / sizeof bad_tables[0]; i++) {
        ck_assert_int_eq(tc__store_sqlite_open(&s, db_path, bad_tables[i], 1000, OWNER),
                         TC_EINVAL);
        ck_assert_ptr_null(s);
    }
    ck_assert_int_eq(tc__store_sqlite_open(&s, db_path, TABLE, -1, OWNER), TC_EINVAL);
    ck_assert_int_eq(tc__store_sqlite_open(NULL, db_path, TABLE, 1000, OWNER), TC_EINVAL);
    ck_assert_int_eq(tc__store_sqlite_open(&s, NULL, TABLE, 1000, OWNER), TC_EINVAL);

    /* A keyword is a valid name. */
    ck_assert_int_eq(tc__store_sqlite_open(&s, db_path, "order", 1000, OWNER), TC_OK);
    int64_t v = xput(s, "k", "v", 1);
    expect_value(s, "k", "v", 1, v);
    s->ops->close(s);
}
END_TEST

START_TEST(test_memory_database)
{
    tc__store *s = xopen(":memory:");
    int64_t v1 = xput(s, "k", "v", 1);
    expect_value(s, "k", "v", 1, v1);
    ck_assert_int_gt(xdel(s, "k"), v1);
    s->ops->close(s);
}
END_TEST

/* Several processes open one new file at the same instant: schema creation is idempotent and
 * serialised, and all their writes get distinct versions. */
START_TEST(test_concurrent_open_processes)
{
    enum { NPROC = 4, NPUT = 5 };
    int gate[2];
    ck_assert_int_eq(pipe(gate), 0);
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0) {
            close(gate[1]);
            sig_wait(gate[0]); /* EOF when the parent closes its end: all start together */
            tc__store *s = NULL;
            REQUIRE(tc__store_sqlite_open(&s, db_path, TABLE, 10000, OWNER) == TC_OK, 2);
            for (int i = 0; i < NPUT; i++) {
                char key[32];
                snprintf(key, sizeof key, "p%d-%d", p, i);
                REQUIRE(child_put(s, key, key) > 0, 3);
                REQUIRE(child_get_is(s, key, key), 4);
            }
            s->ops->close(s);
            _exit(0);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (int p = 0; p < NPROC; p++)
        ck_assert_int_eq(wait_child(pids[p]), 0);
    sqlite3 *db = plain_open(db_path);
    ck_assert_int_eq(plain_int(db, "SELECT COUNT(DISTINCT version) FROM kv"), NPROC * NPUT);
    ck_assert_int_eq(plain_int(db, "SELECT MAX(version) FROM kv"), NPROC * NPUT);
    sqlite3_close(db);
}
END_TEST

/* ---- fork ----------------------------------------------------------------------------------- */

START_TEST(test_fork_child_uses_inherited_store)
{
    tc__store *s = xopen(db_path);
    int64_t v1 = xput(s, "k", "parent", 6);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        child_watchdog();
        got g = {0};
        REQUIRE(xget(s, "k", &g) == TC_OK && g.version == v1, 2);
        got_free(&g);
        int64_t v2 = child_put(s, "child", "c");
        REQUIRE(v2 > v1, 3);
        REQUIRE(child_get_is(s, "child", "c"), 4);
        int64_t v3 = 0;
        REQUIRE(s->ops->del(s, "k", 1, &v3) == TC_OK && v3 > v2, 5);
        s->ops->close(s);
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
    /* The parent's connection is untouched and sees the child's commits. */
    got g = {0};
    ck_assert_int_eq(xget(s, "k", &g), TC_ENOTFOUND);
    ck_assert_int_eq(xget(s, "child", &g), TC_OK);
    int64_t vc = g.version;
    got_free(&g);
    ck_assert_int_gt(xput(s, "k", "again", 5), vc + 1);
    s->ops->close(s);
}
END_TEST

/* A parent thread holds the store's mutex (it is inside a get callback) when another thread
 * forks: the child must not block on that mutex. */
typedef struct holder {
    tc__store *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside, release;
} holder;

static int hold_in_callback(void *ctx, const void *data, size_t len, int64_t version,
                            int64_t ttl)
{
    (void)data, (void)len, (void)version, (void)ttl;
    holder *h = ctx;
    pthread_mutex_lock(&h->mu);
    h->inside = 1;
    pthread_cond_broadcast(&h->cv);
    while (!h->release)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void *holder_thread(void *arg)
{
    holder *h = arg;
    int rc = h->s->ops->get(h->s, "k", 1, hold_in_callback, h);
    return (void *)(intptr_t)rc;
}

START_TEST(test_fork_while_store_locked)
{
    tc__store *s = xopen(db_path);
    xput(s, "k", "v", 1);
    holder h = {.s = s};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, holder_thread, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (!h.inside)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        child_watchdog();
        REQUIRE(child_put(s, "from-child", "c") > 0, 2);
        REQUIRE(child_get_is(s, "from-child", "c"), 3);
        REQUIRE(child_get_is(s, "k", "v"), 4);
        _exit(0);
    }
    int status = wait_child(pid);

    pthread_mutex_lock(&h.mu);
    h.release = 1;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    void *res;
    pthread_join(t, &res);
    ck_assert_int_eq((int)(intptr_t)res, TC_OK);
    ck_assert_int_eq(status, 0);
    expect_value(s, "from-child", "c", 1, 0);
    xput(s, "k", "w", 1);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    s->ops->close(s);
}
END_TEST

/* The regression behind hold_inherited: the child uses the store, then the parent closes its
 * (last) connection, then the child writes again. Without the child's locks the parent's close
 * deleted the WAL under the child, and the child's acknowledged put was lost. */
static void fork_then_parent_closes(int child_opens_new_store)
{
    tc__store *s = xopen(db_path);
    xput(s, "a", "A", 1);
    int to_child[2], to_parent[2];
    ck_assert_int_eq(pipe(to_child), 0);
    ck_assert_int_eq(pipe(to_parent), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        child_watchdog();
        tc__store *cs = s;
        if (child_opens_new_store)
            REQUIRE(tc__store_sqlite_open(&cs, db_path, TABLE, 5000, OWNER) == TC_OK, 2);
        REQUIRE(child_put(cs, "b", "B") > 0, 3);
        sig_send(to_parent[1]);
        sig_wait(to_child[0]); /* the parent has closed */
        REQUIRE(child_put(cs, "c", "C") > 0, 4);
        REQUIRE(child_get_is(cs, "c", "C"), 5);
        if (child_opens_new_store) {
            cs->ops->close(cs);
            s->ops->close(s); /* the inherited one too, so valgrind sees no leak */
        }
        _exit(0);
    }
    sig_wait(to_parent[0]);
    s->ops->close(s);
    sig_send(to_child[1]);
    ck_assert_int_eq(wait_child(pid), 0);
    for (int i = 0; i < 2; i++) {
        close(to_child[i]);
        close(to_parent[i]);
    }
    /* Everything the child was told is committed is in the file. */
    s = xopen(db_path);
    expect_value(s, "a", "A", 1, 0);
    expect_value(s, "b", "B", 1, 0);
    expect_value(s, "c", "C", 1, 0);
    s->ops->close(s);
    sqlite3 *db = plain_open(db_path);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

START_TEST(test_fork_parent_closes_while_child_writes)
{
    fork_then_parent_closes(0);
}
END_TEST

START_TEST(test_fork_child_opens_new_store_on_parents_file)
{
    fork_then_parent_closes(1);
}
END_TEST

/* The parent closes (and cleans up the WAL) before the child's first call: SQLite's inherited
 * state is stale, and the child must refuse rather than acknowledge writes it would lose. */
START_TEST(test_fork_parent_closed_before_child_used_it)
{
    tc__store *s = xopen(db_path);
    xput(s, "a", "A", 1);
    int to_child[2];
    ck_assert_int_eq(pipe(to_child), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        child_watchdog();
        sig_wait(to_child[0]);
        int64_t v = 0;
        int rc = s->ops->put(s, "b", 1, "B", 1, &v);
        REQUIRE(rc == TC_ESTORE, 2);
        REQUIRE(strstr(tc_errmsg(NULL), "after fork") != NULL, 3);
        REQUIRE(s->ops->get(s, "a", 1, NULL, NULL) == TC_ESTORE, 4); /* and stays refused */
        s->ops->close(s);
        _exit(0);
    }
    s->ops->close(s);
    sig_send(to_child[1]);
    ck_assert_int_eq(wait_child(pid), 0);
    close(to_child[0]);
    close(to_child[1]);
    s = xopen(db_path);
    expect_value(s, "a", "A", 1, 0);
    got g = {0};
    ck_assert_int_eq(xget(s, "b", &g), TC_ENOTFOUND);
    s->ops->close(s);
}
END_TEST

START_TEST(test_fork_child_closes_unused_store)
{
    tc__store *s = xopen(db_path);
    int64_t v = xput(s, "a", "A", 1);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        s->ops->close(s); /* must not close the parent's connection */
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
    expect_value(s, "a", "A", 1, v);
    ck_assert_int_gt(xput(s, "a", "B", 1), v);
    s->ops->close(s);
}
END_TEST

/* ---- threads -------------------------------------------------------------------------------- */

enum { NTHREADS = 4, NITER = 40 };

typedef struct worker {
    tc__store *s;
    int id;
    int64_t versions[2 * NITER];
    int nversions;
    int failures;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    int64_t last = 0;
    for (int i = 0; i < NITER; i++) {
        char key[32], val[64];
        snprintf(key, sizeof key, "t%d-%d", w->id, i % 5);
        int n = snprintf(val, sizeof val, "value %d from %d", i, w->id);
        int64_t v = 0;
        if (w->s->ops->put(w->s, key, strlen(key), val, (size_t)n, &v) != TC_OK || v <= last)
            w->failures++;
        last = v;
        w->versions[w->nversions++] = v;
        got g = {0};
        if (w->s->ops->get(w->s, key, strlen(key), collect, &g) != TC_OK || g.version != v ||
            g.len != (size_t)n || memcmp(g.data, val, g.len) != 0)
            w->failures++;
        got_free(&g);
        if (w->s->ops->put(w->s, "shared", 6, val, (size_t)n, &v) != TC_OK || v <= last)
            w->failures++;
        last = v;
        w->versions[w->nversions++] = v;
        if (w->s->ops->get(w->s, "shared", 6, collect, &g) != TC_OK || g.version < v)
            w->failures++; /* another thread may have written it since, never an older one */
        got_free(&g);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

START_TEST(test_threads)
{
    tc__store *s = xopen(db_path);
    static worker w[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].s = s;
        w[i].id = i;
        ck_assert_int_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    static int64_t all[NTHREADS * 2 * NITER];
    int n = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].failures, 0);
        memcpy(all + n, w[i].versions, sizeof(int64_t) * (size_t)w[i].nversions);
        n += w[i].nversions;
    }
    ck_assert_int_eq(n, NTHREADS * 2 * NITER);
    qsort(all, (size_t)n, sizeof all[0], cmp_i64);
    for (int i = 1; i < n; i++)
        ck_assert_int_lt(all[i - 1], all[i]); /* unique across threads */
    s->ops->close(s);
}
END_TEST

/* ---- allocation failures -------------------------------------------------------------------- */

/* SQLite's allocations fail at the Nth one, N walking upward until a whole open, put, get, del,
 * close sequence runs without reaching N (the jansson test_chaos approach). Every failure must
 * come back as TC_ENOMEM or TC_ESTORE, leak nothing (ASan, valgrind), and leave the file
 * consistent. The store's own few mallocs are not injected. */
static sqlite3_mem_methods real_mem;
static int chaos_at, chaos_count;

static int chaos_fails(void)
{
    return chaos_at > 0 && ++chaos_count == chaos_at;
}

static void *chaos_malloc(int n)
{
    return chaos_fails() ? NULL : real_mem.xMalloc(n);
}

static void *chaos_realloc(void *p, int n)
{
    return chaos_fails() ? NULL : real_mem.xRealloc(p, n);
}

static void chaos_install(int on)
{
    /* Allowed only while SQLite is shut down, which needs every connection closed. */
    ck_assert_int_eq(sqlite3_shutdown(), SQLITE_OK);
    if (on) {
        ck_assert_int_eq(sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_mem), SQLITE_OK);
        sqlite3_mem_methods m = real_mem;
        m.xMalloc = chaos_malloc;
        m.xRealloc = chaos_realloc;
        ck_assert_int_eq(sqlite3_config(SQLITE_CONFIG_MALLOC, &m), SQLITE_OK);
    } else {
        ck_assert_int_eq(sqlite3_config(SQLITE_CONFIG_MALLOC, &real_mem), SQLITE_OK);
    }
    ck_assert_int_eq(sqlite3_initialize(), SQLITE_OK);
}

#define CHAOS_OK(rc) ((rc) == TC_OK || (rc) == TC_ENOMEM || (rc) == TC_ESTORE)

START_TEST(test_sqlite_allocation_failures)
{
    chaos_install(1);
    int64_t newest = 0;
    int n, completed = 0;
    for (n = 1; n < 5000 && !completed; n++) {
        chaos_count = 0;
        chaos_at = n;
        tc__store *s = NULL;
        int rc = tc__store_sqlite_open(&s, db_path, TABLE, 1000, OWNER);
        ck_assert_msg(CHAOS_OK(rc), "open at %d: %d", n, rc);
        if (rc != TC_OK) {
            ck_assert_ptr_null(s);
            continue;
        }
        char val[32];
        int len = snprintf(val, sizeof val, "value %d", n);
        int64_t v = 0;
        rc = s->ops->put(s, "k", 1, val, (size_t)len, &v);
        ck_assert_msg(CHAOS_OK(rc), "put at %d: %d", n, rc);
        int put_ok = rc == TC_OK;
        if (put_ok) {
            ck_assert_int_gt(v, newest);
            newest = v;
        }
        got g = {0};
        rc = xget(s, "k", &g);
        ck_assert_msg(CHAOS_OK(rc) || rc == TC_ENOTFOUND, "get at %d: %d", n, rc);
        if (rc == TC_OK && put_ok)
            ck_assert(g.version == v && g.len == (size_t)len && memcmp(g.data, val, g.len) == 0);
        got_free(&g);
        rc = s->ops->del(s, "gone", 4, &v);
        ck_assert_msg(CHAOS_OK(rc), "del at %d: %d", n, rc);
        if (rc == TC_OK) {
            ck_assert_int_gt(v, newest);
            newest = v;
        }
        completed = chaos_count < chaos_at; /* nothing failed this round */
        s->ops->close(s);
    }
    chaos_at = 0;
    if (getenv("CHAOS_DEBUG"))
        fprintf(stderr, "chaos: first failure-free round at %d\n", n - 1);
    ck_assert_msg(completed, "no failure-free round up to %d allocations", n);
    chaos_install(0);

    /* The file survived every failure: intact, and versions carry on above all acknowledged. */
    tc__store *s = xopen(db_path);
    ck_assert_int_gt(xput(s, "k", "after", 5), newest);
    s->ops->close(s);
    sqlite3 *db = plain_open(db_path);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------------------- */

Suite *store_suite(void)
{
    Suite *s = suite_create("store");

    TCase *tc = tcase_create("values");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_roundtrip_values);
    tcase_add_test(tc, test_callback_result_and_reset);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("versions");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_versions_increase);
    tcase_add_test(tc, test_missing_keys);
    tcase_add_test(tc, test_sequence_row_missing);
    tcase_add_test(tc, test_plain_sql_writes_get_versions);
    tcase_add_test(tc, test_existing_table_seeds_sequence);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_reopen_keeps_data_and_versions);
    tcase_add_test(tc, test_two_stores_one_file);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_memory_database);
    tcase_add_test(tc, test_concurrent_open_processes);
    suite_add_tcase(s, tc);

    tc = tcase_create("fork");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fork_child_uses_inherited_store);
    tcase_add_test(tc, test_fork_while_store_locked);
    tcase_add_test(tc, test_fork_parent_closes_while_child_writes);
    tcase_add_test(tc, test_fork_child_opens_new_store_on_parents_file);
    tcase_add_test(tc, test_fork_parent_closed_before_child_used_it);
    tcase_add_test(tc, test_fork_child_closes_unused_store);
    suite_add_tcase(s, tc);

    tc = tcase_create("chaos");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_sqlite_allocation_failures);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);
    return s;
}
