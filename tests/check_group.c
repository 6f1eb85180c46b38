/*
 * check_group.c - the SQLite store's group commit (lib/store/store_sqlite.c on
 * lib/common/batcher.c): writers interleaved on one store, a write refused in the middle of a
 * batch, the whole transaction failing, and fork while batches commit.
 *
 * Each thread writes its own keys and checks every version it is given against the row in the
 * file afterwards: a put acknowledged but not committed, or committed with another version,
 * shows as a mismatch.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_harness.h"
#include "store/sqlite_impl.h"
#include "tc_test.h"

#define TABLE "kv"
#define ROUNDS 100
#define MAXT 16

static char dir[256];
static char db_path[300];

static void setup(void)
{
    ck_assert_int_eq(tct_tmpdir(dir, sizeof dir), 0);
    snprintf(db_path, sizeof db_path, "%s/group.db", dir);
}

static void teardown(void)
{
    tct_rmrf(dir);
}

static tc__store *open_store(int64_t busy_ms)
{
    tc__store *s = NULL;
    int rc = tc__store_sqlite_open(&s, db_path, TABLE, busy_ms, NULL);
    ck_assert_msg(rc == TC_OK, "open: %d %s", rc, tc_errmsg(NULL));
    return s;
}

static sqlite3 *plain_open(void)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void plain_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err);
}

/* The version the file holds for key, or -1. */
static int64_t row_version(sqlite3 *db, const char *key)
{
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT version FROM " TABLE " WHERE key = ?", -1,
                                        &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

typedef struct writer {
    tc__store *s;
    int id, rounds;
    atomic_int *stop; /* NULL: rounds writes */
    int64_t version[ROUNDS]; /* of each key slot's last acknowledged write, 0 for none */
    long ok, failed, poison_ok, poison_failed;
    int poison_every; /* 0: none; else every n-th write is of the refused key */
    char last_msg[320];
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    /* With stop, at least one round: a thread that starts late (valgrind) still writes while
     * the condition the test made holds. */
    for (int i = 0; w->stop != NULL ? i == 0 || !atomic_load(w->stop) : i < w->rounds; i++) {
        char key[32], val[48];
        int poison = w->poison_every > 0 && i % w->poison_every == 0;
        if (poison)
            snprintf(key, sizeof key, "poison");
        else
            snprintf(key, sizeof key, "w%d:%d", w->id, i % ROUNDS);
        int vlen = snprintf(val, sizeof val, "writer %d round %d", w->id, i);
        int64_t v = 0;
        tct_fork_quiet_enter();
        int rc = w->s->ops->put(w->s, key, strlen(key), val, (size_t)vlen, &v);
        tct_fork_quiet_leave();
        if (rc != TC_OK)
            snprintf(w->last_msg, sizeof w->last_msg, "%s", tc_errmsg(NULL));
        if (poison) {
            w->poison_ok += rc == TC_OK;
            w->poison_failed += rc != TC_OK;
            continue;
        }
        if (rc == TC_OK) /* the slot's newest acknowledged version is the file's */
            w->version[i % ROUNDS] = v;
        w->ok += rc == TC_OK;
        w->failed += rc != TC_OK;
    }
    return NULL;
}

static void run(writer *w, int n, pthread_t *th)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, write_loop, &w[i]), 0);
}

static void join(pthread_t *th, int n)
{
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* Every acknowledged write of each writer's first ROUNDS rounds is in the file with the
 * version it was given. */
static void expect_committed(writer *w, int n)
{
    sqlite3 *db = plain_open();
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < ROUNDS; i++) {
            if (w[t].version[i] == 0)
                continue;
            char key[32];
            snprintf(key, sizeof key, "w%d:%d", w[t].id, i);
            ck_assert_int_eq(row_version(db, key), w[t].version[i]);
        }
    }
    sqlite3_close(db);
}

/* 16 threads x 100 puts on one store: all acknowledged, all committed with the versions given,
 * versions unique, and fewer transactions than puts (they shared commits). */
START_TEST(test_interleaved_writers)
{
    tc__store *s = open_store(5000);
    sqlite_store *ss = (sqlite_store *)s;
    unsigned long before = atomic_load(&ss->writes);
    static writer w[MAXT];
    pthread_t th[MAXT];
    for (int i = 0; i < MAXT; i++)
        w[i] = (writer){.s = s, .id = i, .rounds = ROUNDS};
    run(w, MAXT, th);
    join(th, MAXT);
    long ok = 0;
    for (int i = 0; i < MAXT; i++)
        ok += w[i].ok;
    ck_assert_int_eq(ok, MAXT * ROUNDS);
    unsigned long commits = atomic_load(&ss->writes) - before;
    ck_assert_uint_lt(commits, (unsigned long)(MAXT * ROUNDS));
    expect_committed(w, MAXT);
    /* Unique versions: every put bumped the sequence once. */
    sqlite3 *db = plain_open();
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT COUNT(DISTINCT version), COUNT(*) FROM " TABLE,
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1));
    sqlite3_finalize(st);
    sqlite3_close(db);
    s->ops->close(s);
}
END_TEST

/* A row SQLite refuses (a trigger aborts writes of "poison") in the middle of batches: each
 * poison put fails with the database's reason, and every other put of those batches is
 * acknowledged and committed. */
START_TEST(test_refused_write_mid_batch)
{
    tc__store *s = open_store(5000);
    sqlite3 *db = plain_open();
    plain_sql(db, "CREATE TRIGGER refuse BEFORE INSERT ON " TABLE " WHEN NEW.key = 'poison'"
                  " BEGIN SELECT RAISE(ABORT, 'poison refused'); END");
    sqlite3_close(db);
    static writer w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        w[i] = (writer){.s = s, .id = i, .rounds = ROUNDS, .poison_every = 7};
    run(w, 8, th);
    join(th, 8);
    long failed = 0, poison_ok = 0, poison_failed = 0;
    for (int i = 0; i < 8; i++) {
        failed += w[i].failed;
        poison_ok += w[i].poison_ok;
        poison_failed += w[i].poison_failed;
    }
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(poison_ok, 0);
    ck_assert_int_gt(poison_failed, 0);
    int seen = 0;
    for (int i = 0; i < 8; i++)
        seen |= strstr(w[i].last_msg, "poison refused") != NULL;
    ck_assert_msg(seen, "no write told why: %s", w[0].last_msg);
    expect_committed(w, 8);
    s->ops->close(s);
}
END_TEST

/* The whole transaction fails (another connection holds the database past busy_timeout): the
 * writes of those batches fail with a clear error, none of them is in the file, and writes
 * succeed again once the lock is gone. */
START_TEST(test_whole_batch_fails)
{
    tc__store *s = open_store(30);
    int64_t v;
    ck_assert_int_eq(s->ops->put(s, "warm", 4, "x", 1, &v), TC_OK);
    sqlite3 *db = plain_open();
    plain_sql(db, "BEGIN EXCLUSIVE");
    atomic_int stop = 0;
    static writer w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        w[i] = (writer){.s = s, .id = i, .rounds = ROUNDS, .stop = &stop};
    run(w, 8, th);
    tct_sleep_ms(300);
    atomic_store(&stop, 1);
    join(th, 8);
    plain_sql(db, "COMMIT");
    long ok = 0, failed = 0;
    for (int i = 0; i < 8; i++) {
        ok += w[i].ok;
        failed += w[i].failed;
    }
    ck_assert_int_eq(ok, 0);
    ck_assert_int_gt(failed, 0);
    ck_assert_ptr_nonnull(strstr(w[0].last_msg, "locked"));
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM " TABLE, -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int64(st, 0), 1); /* "warm" alone */
    sqlite3_finalize(st);
    sqlite3_close(db);
    writer again = {.s = s, .id = 50, .rounds = 5};
    write_loop(&again);
    ck_assert_int_eq(again.ok, 5);
    s->ops->close(s);
}
END_TEST

/* A reader that holds the store (its get callback runs under the store's lock) until told. */
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
    return (void *)(intptr_t)h->s->ops->get(h->s, "warm", 4, hold_in_callback, h);
}

/* fork() while a group commit is under way in the parent: one writer leads and waits for the
 * store (a reader holds it), the others are queued behind it. The child's writes commit on its
 * own connection through a pipeline of its own (the parent's queue is not the child's to
 * answer), and once the reader lets go every write of the parent's is acknowledged and in the
 * file. (A fork while another thread is inside SQLite itself can leave SQLite's own global
 * mutexes held in the child: docs/architecture.md.) */
START_TEST(test_fork_mid_batch)
{
    tc__store *s = open_store(5000);
    int64_t v;
    ck_assert_int_eq(s->ops->put(s, "warm", 4, "x", 1, &v), TC_OK);
    holder h = {.s = s};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t ht;
    ck_assert_int_eq(pthread_create(&ht, NULL, holder_thread, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (!h.inside)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    static writer w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        w[i] = (writer){.s = s, .id = i, .rounds = 20};
    run(w, 4, th);
    tct_sleep_ms(100); /* a leader waiting for the store, the rest queued */

    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* Check handles SIGALRM: it would kill the test */
        alarm(20);                /* a deadlock: no report, the test fails */
        writer c = {.s = s, .id = 100, .rounds = 10};
        write_loop(&c);
        unsigned char bad = c.ok != 10;
        ssize_t wr = write(fds[1], &bad, 1);
        if (wr == 1) /* leave by exec: the parent threads' memory is lost by design */
            execl("/bin/true", "true", (char *)NULL);
        _exit(1);
    }
    close(fds[1]);
    unsigned char bad = 0xff;
    ssize_t got = read(fds[0], &bad, 1);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    pthread_mutex_lock(&h.mu);
    h.release = 1;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    void *res;
    pthread_join(ht, &res);
    join(th, 4);
    ck_assert_msg(got == 1 && bad == 0, "child: read %zd, result %d", got, bad);
    ck_assert_int_eq((int)(intptr_t)res, TC_OK);
    long ok = 0;
    for (int i = 0; i < 4; i++)
        ok += w[i].ok;
    ck_assert_int_eq(ok, 4 * 20);
    expect_committed(w, 4);
    sqlite3 *db = plain_open();
    ck_assert_int_gt(row_version(db, "w100:9"), 0);
    sqlite3_close(db);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    s->ops->close(s);
}
END_TEST

/* ---- PostgreSQL: the same writers, the batch one pipelined transaction ------------------- */

static tct_pg pg;

static void pg_up(void)
{
    ck_assert_msg(tct_pg_available(), "PostgreSQL server binaries not found (make deps)");
    ck_assert_msg(tct_pg_start(&pg) == 0, "cannot start a private PostgreSQL server");
}

static void pg_down(void)
{
    tct_pg_stop(&pg);
}

static PGconn *pg_sql(void)
{
    PGconn *c = PQconnectdb(pg.conninfo);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    return c;
}

static void pg_exec(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
}

static void pg_expect_committed(PGconn *c, const char *table, writer *w, int n)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT version FROM %s WHERE key = $1", table);
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < ROUNDS; i++) {
            if (w[t].version[i] == 0)
                continue;
            char key[32];
            snprintf(key, sizeof key, "w%d:%d", w[t].id, i);
            const char *vals[1] = {key};
            PGresult *res = PQexecParams(c, sql, 1, NULL, vals, NULL, NULL, 0);
            ck_assert_int_eq(PQntuples(res), 1);
            ck_assert_int_eq(atoll(PQgetvalue(res, 0, 0)), w[t].version[i]);
            PQclear(res);
        }
    }
}

/* 16 threads on a pool of 4: every put acknowledged is committed with its version. */
START_TEST(test_pg_interleaved_writers)
{
    tc__store *s = NULL;
    ck_assert_int_eq(tc__store_pg_open(&s, pg.conninfo, "g_inter", 4, NULL), TC_OK);
    static writer w[MAXT];
    pthread_t th[MAXT];
    for (int i = 0; i < MAXT; i++)
        w[i] = (writer){.s = s, .id = i, .rounds = 40};
    run(w, MAXT, th);
    join(th, MAXT);
    long ok = 0;
    for (int i = 0; i < MAXT; i++)
        ok += w[i].ok;
    ck_assert_int_eq(ok, MAXT * 40);
    PGconn *c = pg_sql();
    pg_expect_committed(c, "g_inter", w, MAXT);
    PGresult *res = PQexec(c, "SELECT COUNT(DISTINCT version) = COUNT(*) FROM g_inter");
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    PQfinish(c);
    s->ops->close(s);
}
END_TEST

/* A write PostgreSQL refuses in the middle of batches (a trigger raises for "poison"): it
 * fails with the server's reason, every other write of those transactions commits. */
START_TEST(test_pg_refused_write_mid_batch)
{
    tc__store *s = NULL;
    ck_assert_int_eq(tc__store_pg_open(&s, pg.conninfo, "g_poison", 4, NULL), TC_OK);
    PGconn *c = pg_sql();
    pg_exec(c, "CREATE FUNCTION g_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.key = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF;"
               " RETURN NEW; END $$");
    pg_exec(c, "CREATE TRIGGER g_refuse BEFORE INSERT OR UPDATE ON g_poison"
               " FOR EACH ROW EXECUTE FUNCTION g_refuse()");
    static writer w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        w[i] = (writer){.s = s, .id = i, .rounds = 40, .poison_every = 5};
    run(w, 8, th);
    join(th, 8);
    long failed = 0, poison_ok = 0, poison_failed = 0;
    int seen = 0;
    for (int i = 0; i < 8; i++) {
        failed += w[i].failed;
        poison_ok += w[i].poison_ok;
        poison_failed += w[i].poison_failed;
        seen |= strstr(w[i].last_msg, "poison refused") != NULL;
    }
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(poison_ok, 0);
    ck_assert_int_gt(poison_failed, 0);
    ck_assert_msg(seen, "no write told why: %s", w[0].last_msg);
    pg_expect_committed(c, "g_poison", w, 8);
    PQfinish(c);
    s->ops->close(s);
}
END_TEST

Suite *group_suite(void)
{
    Suite *s = suite_create("group");
    TCase *tc = tcase_create("group");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_interleaved_writers);
    tcase_add_test(tc, test_refused_write_mid_batch);
    tcase_add_test(tc, test_whole_batch_fails);
    tcase_add_test(tc, test_fork_mid_batch);
    suite_add_tcase(s, tc);
    TCase *tp = tcase_create("group-pg");
    tcase_add_unchecked_fixture(tp, pg_up, pg_down);
    tcase_set_timeout(tp, 120);
    tcase_add_test(tp, test_pg_interleaved_writers);
    tcase_add_test(tp, test_pg_refused_write_mid_batch);
    suite_add_tcase(s, tp);
    return s;
}
