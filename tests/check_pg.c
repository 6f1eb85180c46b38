/*
 * check_pg.c - the PostgreSQL store (lib/store/store_pg.c), through the public API with
 * store.type=postgres (no Redis tier) and, where the versions themselves are checked, through
 * the internal store interface.
 *
 * One private server per TCase (tests/pg_harness.c), started in an unchecked fixture, in the
 * runner process, so the tests (forked by Check, or not under CK_FORK=no) share it; each test
 * uses tables of its own. The server binaries must be installed: without them the fixture
 * fails, loudly, instead of skipping.
 *
 * Fork tests check in the child with plain conditions, report through the exit status, and
 * leave with _exit (as check_store.c does).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg_harness.h"
#include "store/store.h"
#include "tc_test.h"

static tct_pg srv;
static const int owner_tag = 0;
#define OWNER ((const void *)&owner_tag)

static void srv_up(void)
{
    ck_assert_msg(tct_pg_available(),
                  "PostgreSQL server binaries not found (looked in %s; TCT_PG_BINDIR overrides): "
                  "install the postgresql package (make deps)",
                  tct_pg_bindir()[0] != '\0' ? tct_pg_bindir() : "/usr/lib/postgresql/*/bin");
    ck_assert_msg(tct_pg_start(&srv) == 0, "cannot start a private PostgreSQL server");
}

static void srv_down(void)
{
    tct_pg_stop(&srv);
}

/* ---- helpers -------------------------------------------------------------------------------- */

/* Opens a cache on table in srv (or on conninfo when not NULL). extra: more JSON members. */
static tc_cache *pg_open(const char *table, int edge, int pool, const char *app)
{
    char conninfo[400], json[1024];
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", srv.conninfo,
             app != NULL ? app : "tct");
    snprintf(json, sizeof json,
             "{\"store\": {\"type\": \"postgres\", \"conninfo\": \"%s\", \"table\": \"%s\","
             " \"pool_size\": %d}, \"edge\": {\"enabled\": %s}}",
             conninfo, table, pool, edge ? "true" : "false");
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_msg(tc_config_load_json(cfg, json, strlen(json)) == TC_OK, "%s",
                  tc_config_errmsg(cfg));
    tc_cache *c = NULL;
    int rc = tc_open(&c, cfg);
    tc_config_free(cfg);
    ck_assert_msg(rc == TC_OK, "tc_open: %s", tc_errmsg(NULL));
    return c;
}

static tc__store *store_open(const char *table)
{
    tc__store *s = NULL;
    int rc = tc__store_pg_open(&s, srv.conninfo, table, 4, OWNER);
    ck_assert_msg(rc == TC_OK, "open: %s", tc_errmsg(OWNER));
    return s;
}

static int64_t sput(tc__store *s, const char *key, const char *val)
{
    int64_t v = 0;
    int rc = s->ops->put(s, key, strlen(key), val, strlen(val), &v);
    ck_assert_msg(rc == TC_OK, "put: %s", tc_errmsg(OWNER));
    return v;
}

static int64_t sdel(tc__store *s, const char *key)
{
    int64_t v = 0;
    int rc = s->ops->del(s, key, strlen(key), &v);
    ck_assert_msg(rc == TC_OK, "del: %s", tc_errmsg(OWNER));
    return v;
}

typedef struct got {
    char buf[64];
    size_t len;
    int64_t version;
} got;

static int collect(void *ctx, const void *data, size_t len, int64_t version, int64_t ttl_ms)
{
    got *g = ctx;
    g->len = len < sizeof g->buf - 1 ? len : sizeof g->buf - 1;
    memcpy(g->buf, data, g->len);
    g->buf[g->len] = '\0';
    g->version = version;
    return ttl_ms == -1 ? TC_OK : TC_EINVAL;
}

static int sget(tc__store *s, const char *key, got *g)
{
    memset(g, 0, sizeof *g);
    return s->ops->get(s, key, strlen(key), collect, g);
}

/* A libpq connection of the test's own: another program writing plain SQL. */
static PGconn *sql_conn(void)
{
    PGconn *pg = PQconnectdb(srv.conninfo);
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "%s", PQerrorMessage(pg));
    return pg;
}

/* Runs sql; returns the first value of the first row as a malloc'd string ("" if none). */
static char *sql1(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(res));
    char *out = strdup(PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return out;
}

static long long sql_ll(PGconn *pg, const char *sql)
{
    char *v = sql1(pg, sql);
    long long n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

static void get_is(tc_cache *c, const char *key, const void *want, size_t want_len)
{
    void *v = NULL;
    size_t len = 0;
    int rc = tc_get(&v, &len, c, key, strlen(key));
    ck_assert_msg(rc == TC_OK, "get %s: %s", key, tc_errmsg(c));
    ck_assert_uint_eq(len, want_len);
    ck_assert(len == 0 || memcmp(v, want, len) == 0);
    tc_free(v);
}

#define REQUIRE(cond, code)                                                                    \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "child check failed (%d): %s: %s\n", (code), #cond,                \
                    tc_errmsg(NULL));                                                          \
            _exit(code);                                                                       \
        }                                                                                      \
    } while (0)

static int wait_child(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- values --------------------------------------------------------------------------------- */

START_TEST(test_round_trip)
{
    tc_cache *c = pg_open("t_round", 0, 2, NULL);
    ck_assert_int_eq(tc_put(c, "k", 1, "hello", 5, 0), TC_OK);
    get_is(c, "k", "hello", 5);
    ck_assert_int_eq(tc_put(c, "k", 1, "world!", 6, 0), TC_OK);
    get_is(c, "k", "world!", 6);
    ck_assert_int_eq(tc_del(c, "k", 1), TC_OK);
    void *v = NULL;
    size_t len = 0;
    ck_assert_int_eq(tc_get(&v, &len, c, "k", 1), TC_ENOTFOUND);
    ck_assert_int_eq(tc_get(&v, &len, c, "never", 5), TC_ENOTFOUND);
    ck_assert_int_eq(tc_del(c, "never", 5), TC_OK); /* absent keys too */
    tc_close(c);
}
END_TEST

START_TEST(test_binary_values)
{
    tc_cache *c = pg_open("t_binary", 0, 2, NULL);
    static const char nul[] = {'a', '\0', 'b', '\0', '\0', (char)0xff, '\\', 'x'};
    ck_assert_int_eq(tc_put(c, "nul", 3, nul, sizeof nul, 0), TC_OK);
    get_is(c, "nul", nul, sizeof nul);
    ck_assert_int_eq(tc_put(c, "empty", 5, NULL, 0, 0), TC_OK);
    get_is(c, "empty", "", 0);
    size_t big_len = 1 << 20;
    unsigned char *big = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 2654435761u >> 24);
    ck_assert_int_eq(tc_put(c, "big", 3, big, big_len, 0), TC_OK);
    get_is(c, "big", big, big_len);
    free(big);
    /* A key in UTF-8, and one that is not valid UTF-8: refused by the server, not mangled. */
    ck_assert_int_eq(tc_put(c, "cl\xc3\xa9", 4, "e", 1, 0), TC_OK);
    get_is(c, "cl\xc3\xa9", "e", 1);
    ck_assert_int_eq(tc_put(c, "bad\xff", 4, "x", 1, 0), TC_ESTORE);
    tc_close(c);
}
END_TEST

/* ---- versions ------------------------------------------------------------------------------- */

START_TEST(test_versions_increase)
{
    tc__store *s = store_open("t_versions");
    int64_t v1 = sput(s, "a", "1");
    int64_t v2 = sput(s, "a", "2");
    int64_t v3 = sput(s, "b", "1");
    ck_assert_int_gt(v1, 0);
    ck_assert_int_gt(v2, v1);
    ck_assert_int_gt(v3, v2);
    got g;
    ck_assert_int_eq(sget(s, "a", &g), TC_OK);
    ck_assert_str_eq(g.buf, "2");
    ck_assert_int_eq(g.version, v2);
    int64_t d = sdel(s, "a");
    ck_assert_int_gt(d, v3);
    ck_assert_int_eq(sget(s, "a", &g), TC_ENOTFOUND);
    int64_t v4 = sput(s, "a", "again");
    ck_assert_int_gt(v4, d); /* above its tombstone */
    int64_t d2 = sdel(s, "absent");
    ck_assert_int_gt(d2, v4);
    /* Arguments the store refuses itself. */
    int64_t v = 0;
    ck_assert_int_eq(s->ops->put(s, "k", 1, NULL, 3, &v), TC_EINVAL);
    ck_assert_int_eq(s->ops->put(s, "k", 1, "x", 1, NULL), TC_EINVAL);
    ck_assert_int_eq(s->ops->del(s, "k\0z", 3, &v), TC_EKEY);
    s->ops->close(s);
}
END_TEST

START_TEST(test_plain_sql_gets_versions)
{
    tc_cache *c = pg_open("t_plain", 0, 2, NULL);
    tc__store *s = store_open("t_plain");
    int64_t v1 = sput(s, "k", "lib");
    PGconn *pg = sql_conn();
    free(sql1(pg, "UPDATE t_plain SET value = 'x' WHERE key = 'k'"));
    got g;
    ck_assert_int_eq(sget(s, "k", &g), TC_OK);
    ck_assert_str_eq(g.buf, "x");
    ck_assert_int_gt(g.version, v1);
    int64_t v2 = g.version;
    ck_assert_int_gt(sql_ll(pg, "SELECT updated_at FROM t_plain WHERE key = 'k'"), 0);
    /* The cache, with the edge off, reads the store and sees the new value. */
    get_is(c, "k", "x", 1);

    free(sql1(pg, "INSERT INTO t_plain (key, value) VALUES ('new', 'ins')"));
    ck_assert_int_eq(sget(s, "new", &g), TC_OK);
    ck_assert_str_eq(g.buf, "ins");
    ck_assert_int_gt(g.version, v2);
    int64_t v3 = g.version;
    get_is(c, "new", "ins", 3);

    /* An upsert from plain SQL, and a library write after it: still increasing. */
    free(sql1(pg, "INSERT INTO t_plain (key, value) VALUES ('new', 'up') ON CONFLICT (key) DO "
                  "UPDATE SET value = EXCLUDED.value"));
    ck_assert_int_eq(sget(s, "new", &g), TC_OK);
    ck_assert_str_eq(g.buf, "up");
    ck_assert_int_gt(g.version, v3);
    ck_assert_int_gt(sput(s, "new", "lib2"), g.version);
    /* The library's own writes take one version each: not bumped again by the trigger. */
    int64_t a = sput(s, "once", "1");
    int64_t b = sput(s, "once", "2");
    ck_assert_int_eq(sql_ll(pg, "SELECT version FROM t_plain WHERE key = 'once'"), b);
    ck_assert_int_gt(b, a);
    /* Versions stay unique across the table. */
    char *uniq = sql1(pg, "SELECT count(DISTINCT version) = count(*) FROM t_plain");
    ck_assert_str_eq(uniq, "t");
    free(uniq);
    PQfinish(pg);
    s->ops->close(s);
    tc_close(c);
}
END_TEST

/* ---- schema --------------------------------------------------------------------------------- */

/* Several processes open one new table at the same instant: none may fail. */
START_TEST(test_concurrent_schema_creation)
{
    enum { N = 6 };
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            close(go[1]);
            char ch;
            while (read(go[0], &ch, 1) < 0 && errno == EINTR)
                ;
            tc__store *s = NULL;
            REQUIRE(tc__store_pg_open(&s, srv.conninfo, "t_race", 2, OWNER) == TC_OK, 2);
            char key[16];
            snprintf(key, sizeof key, "k%d", i);
            int64_t v = 0;
            REQUIRE(s->ops->put(s, key, strlen(key), "v", 1, &v) == TC_OK && v > 0, 3);
            s->ops->close(s);
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]); /* everyone starts now: EOF */
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(wait_child(pids[i]), 0);
    /* And two handles in this process on it. */
    tc_cache *a = pg_open("t_race", 1, 2, NULL), *b = pg_open("t_race", 0, 2, NULL);
    ck_assert_int_eq(tc_put(a, "shared", 6, "x", 1, 0), TC_OK);
    get_is(b, "shared", "x", 1);
    get_is(b, "k3", "v", 1);
    tc_close(a);
    tc_close(b);
}
END_TEST

/* ---- threads -------------------------------------------------------------------------------- */

enum { THREADS = 8, OPS = 200 };

typedef struct worker {
    tc_cache *c;
    int id;
    int errors;
    int last[4]; /* the last value written to each of this thread's 4 keys */
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < OPS; i++) {
        char key[32], val[32];
        int k = i % 4;
        snprintf(key, sizeof key, "w%d-%d", w->id, k);
        if (i % 3 != 2) {
            int n = snprintf(val, sizeof val, "%d", i);
            if (tc_put(w->c, key, strlen(key), val, (size_t)n, 0) != TC_OK)
                w->errors++;
            else
                w->last[k] = i;
        } else {
            void *v = NULL;
            size_t len;
            int rc = tc_get(&v, &len, w->c, key, strlen(key));
            if (rc == TC_OK) {
                /* This thread is the key's only writer: it must read its last write. */
                if (atoi(v) != w->last[k])
                    w->errors++;
                tc_free(v);
            } else if (rc != TC_ENOTFOUND || i >= 4) {
                w->errors++;
            }
        }
    }
    return NULL;
}

START_TEST(test_threads_small_pool)
{
    tc_cache *c = pg_open("t_threads", 0, 2, "tct_threads");
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].c = c;
        w[i].id = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(w[i].errors == 0, "thread %d: %d errors (%s)", i, w[i].errors,
                      tc_errmsg(c));
    }
    PGconn *pg = sql_conn();
    /* The pool never grew past its size. */
    ck_assert_int_le(sql_ll(pg, "SELECT count(*) FROM pg_stat_activity"
                                " WHERE application_name = 'tct_threads'"),
                     2);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < 4; k++) {
            char q[128], want[16];
            snprintf(q, sizeof q, "SELECT convert_from(value, 'UTF8') FROM t_threads"
                                  " WHERE key = 'w%d-%d'", i, k);
            snprintf(want, sizeof want, "%d", w[i].last[k]);
            char *got_v = sql1(pg, q);
            ck_assert_str_eq(got_v, want);
            free(got_v);
        }
    PQfinish(pg);
    tc_close(c);
}
END_TEST

/* ---- dropped connections -------------------------------------------------------------------- */

START_TEST(test_backend_terminated)
{
    tc_cache *c = pg_open("t_term", 0, 2, "tct_term");
    ck_assert_int_eq(tc_put(c, "k", 1, "v1", 2, 0), TC_OK);
    get_is(c, "k", "v1", 2);
    PGconn *pg = sql_conn();
    /* Waits (up to 5 s) until each backend is gone. */
    ck_assert_int_ge(sql_ll(pg, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000)"
                                " FROM pg_stat_activity WHERE application_name = 'tct_term') t"),
                     1);
    get_is(c, "k", "v1", 2); /* reconnects, no error */
    ck_assert_int_eq(sql_ll(pg, "SELECT count(*) FROM pg_stat_activity"
                                " WHERE application_name = 'tct_term'"),
                     1);
    /* A write after its connection was dropped while idle: found dead before use. */
    free(sql1(pg, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                  " WHERE application_name = 'tct_term'"));
    ck_assert_msg(tc_put(c, "k", 1, "v2", 2, 0) == TC_OK, "%s", tc_errmsg(c));
    get_is(c, "k", "v2", 2);
    PQfinish(pg);
    tc_close(c);
}
END_TEST

/* The whole server restarts (its own server: this test stops and starts it). */
START_TEST(test_server_restart)
{
    tct_pg own;
    ck_assert_msg(tct_pg_start(&own) == 0, "cannot start a second PostgreSQL server");
    tc__store *s = NULL;
    ck_assert_int_eq(tc__store_pg_open(&s, own.conninfo, "t_restart", 2, OWNER), TC_OK);
    int64_t v1 = sput(s, "k", "before");
    ck_assert_int_eq(tct_pg_restart(&own), 0);
    got g;
    int rc = sget(s, "k", &g);
    ck_assert_msg(rc == TC_OK, "get after restart: %s", tc_errmsg(OWNER));
    ck_assert_str_eq(g.buf, "before");
    ck_assert_int_eq(g.version, v1);
    ck_assert_int_gt(sput(s, "k", "after"), v1);
    s->ops->close(s);
    tct_pg_stop(&own);
}
END_TEST

/* A connection that breaks in the middle of a call, not while idle (the idle check would
 * find that first): a loopback proxy to the server that, when armed, drops the next client
 * connection that sends anything, without forwarding it. */
enum { PROXY_MAX = 16 };
typedef struct proxy {
    int listen_fd, port, stop_fd[2];
    atomic_int armed, dropped;
    pthread_t th;
} proxy;

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *proxy_run(void *arg)
{
    proxy *px = arg;
    int cli[PROXY_MAX], up[PROXY_MAX], n = 0;
    for (;;) {
        struct pollfd p[2 + 2 * PROXY_MAX];
        p[0] = (struct pollfd){.fd = px->stop_fd[0], .events = POLLIN};
        p[1] = (struct pollfd){.fd = px->listen_fd, .events = POLLIN};
        for (int i = 0; i < n; i++) {
            p[2 + 2 * i] = (struct pollfd){.fd = cli[i], .events = POLLIN};
            p[3 + 2 * i] = (struct pollfd){.fd = up[i], .events = POLLIN};
        }
        if (poll(p, (nfds_t)(2 + 2 * n), -1) < 0)
            continue;
        if (p[0].revents)
            break;
        if ((p[1].revents & POLLIN) && n < PROXY_MAX) {
            int c = accept(px->listen_fd, NULL, NULL), u = connect_server();
            if (c >= 0 && u >= 0) {
                cli[n] = c;
                up[n++] = u;
            } else {
                if (c >= 0)
                    close(c);
                if (u >= 0)
                    close(u);
            }
            continue;
        }
        for (int i = 0; i < n; i++) {
            char buf[65536];
            int drop = 0;
            if (p[2 + 2 * i].revents) {
                ssize_t k = read(cli[i], buf, sizeof buf);
                if (k > 0 && atomic_exchange(&px->armed, 0)) {
                    atomic_fetch_add(&px->dropped, 1);
                    drop = 1;
                } else {
                    drop = k <= 0 || write(up[i], buf, (size_t)k) != k;
                }
            }
            if (!drop && p[3 + 2 * i].revents) {
                ssize_t k = read(up[i], buf, sizeof buf);
                drop = k <= 0 || write(cli[i], buf, (size_t)k) != k;
            }
            if (drop) {
                close(cli[i]);
                close(up[i]);
                cli[i] = cli[n - 1];
                up[i] = up[n - 1];
                n--;
                break; /* the pollfd array no longer matches: poll again */
            }
        }
    }
    for (int i = 0; i < n; i++) {
        close(cli[i]);
        close(up[i]);
    }
    return NULL;
}

static void proxy_start(proxy *px)
{
    memset(px, 0, sizeof *px);
    px->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(px->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(px->listen_fd, 16), 0);
    ck_assert_int_eq(getsockname(px->listen_fd, (struct sockaddr *)&sa, &len), 0);
    px->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pipe(px->stop_fd), 0);
    ck_assert_int_eq(pthread_create(&px->th, NULL, proxy_run, px), 0);
}

static void proxy_stop(proxy *px)
{
    ck_assert_int_eq(write(px->stop_fd[1], "x", 1), 1);
    pthread_join(px->th, NULL);
    close(px->listen_fd);
    close(px->stop_fd[0]);
    close(px->stop_fd[1]);
}

/* A get whose connection breaks mid-call is retried once on a fresh connection; a put is not
 * (its outcome would be unknown), and the next call works again. */
START_TEST(test_broken_mid_call)
{
    proxy px;
    proxy_start(&px);
    char ci[300];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=postgres user=postgres", px.port);
    tc__store *s = NULL;
    ck_assert_msg(tc__store_pg_open(&s, ci, "t_broken", 2, OWNER) == TC_OK, "%s",
                  tc_errmsg(OWNER));
    int64_t v1 = sput(s, "k", "v1");
    atomic_store(&px.armed, 1);
    got g;
    int rc = sget(s, "k", &g);
    ck_assert_msg(rc == TC_OK, "get: %s", tc_errmsg(OWNER));
    ck_assert_int_eq(atomic_load(&px.dropped), 1);
    ck_assert_str_eq(g.buf, "v1");
    ck_assert_int_eq(g.version, v1);
    atomic_store(&px.armed, 1);
    int64_t v = 0;
    ck_assert_int_eq(s->ops->put(s, "k", 1, "v2", 2, &v), TC_ESTORE);
    ck_assert_int_eq(atomic_load(&px.dropped), 2);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(OWNER), "postgres: put:"));
    ck_assert_int_eq(s->ops->del(s, "k", 1, &v), TC_OK);
    ck_assert_int_gt(v, v1);
    s->ops->close(s);
    proxy_stop(&px);
}
END_TEST

/* Library writes of one key commit in the order of their versions, so whichever of a put and
 * a delete racing on a key got the higher version is what the table holds afterwards. */
enum { RACE_KEYS = 200 };
typedef struct racer {
    tc__store *s;
    int is_put;
    int64_t version[RACE_KEYS];
    pthread_barrier_t *bar;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < RACE_KEYS; i++) {
        char key[16];
        snprintf(key, sizeof key, "r%d", i);
        pthread_barrier_wait(r->bar);
        int rc = r->is_put ? r->s->ops->put(r->s, key, strlen(key), "v", 1, &r->version[i])
                           : r->s->ops->del(r->s, key, strlen(key), &r->version[i]);
        if (rc != TC_OK)
            r->version[i] = -1;
    }
    return NULL;
}

START_TEST(test_put_del_race)
{
    tc__store *s = store_open("t_race_pd");
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    racer a = {.s = s, .is_put = 1, .bar = &bar}, b = {.s = s, .is_put = 0, .bar = &bar};
    pthread_t ta, tb;
    ck_assert_int_eq(pthread_create(&ta, NULL, race, &a), 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, race, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&bar);
    for (int i = 0; i < RACE_KEYS; i++) {
        char key[16];
        snprintf(key, sizeof key, "r%d", i);
        ck_assert_int_gt(a.version[i], 0);
        ck_assert_int_gt(b.version[i], 0);
        got g;
        int rc = sget(s, key, &g);
        if (a.version[i] > b.version[i]) {
            ck_assert_msg(rc == TC_OK && g.version == a.version[i],
                          "%s: put %lld after del %lld, but the row is %s", key,
                          (long long)a.version[i], (long long)b.version[i],
                          rc == TC_OK ? "another version" : "gone");
        } else {
            ck_assert_msg(rc == TC_ENOTFOUND, "%s: del %lld after put %lld, but the row is there",
                          key, (long long)b.version[i], (long long)a.version[i]);
        }
    }
    s->ops->close(s);
}
END_TEST

/* ---- fork ----------------------------------------------------------------------------------- */

/* The backends of app, as a list of pids, into out. Its own connection each time, and a
 * static buffer, so that a forked child holds nothing of the parent's on the heap (valgrind
 * would count it as lost in the child) and no connection it could disturb. */
static void backend_pids(char *out, size_t size, const char *app)
{
    char q[200];
    snprintf(q, sizeof q, "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '')"
                          " FROM pg_stat_activity WHERE application_name = '%s'", app);
    PGconn *pg = sql_conn();
    char *v = sql1(pg, q);
    snprintf(out, size, "%s", v);
    free(v);
    PQfinish(pg);
}

/* backend_pids once those of exited children are gone (a backend ends a moment after its
 * client): waits up to 5 s for the list to equal want. */
static void backend_pids_settled(char *out, size_t size, const char *app, const char *want)
{
    backend_pids(out, size, app);
    for (int i = 0; i < 250 && strcmp(out, want) != 0; i++) {
        tct_sleep_ms(20);
        backend_pids(out, size, app);
    }
}

static char pids_before[256], pids_after[256];

START_TEST(test_fork)
{
    tc_cache *c = pg_open("t_fork", 0, 2, "tct_fork");
    ck_assert_int_eq(tc_put(c, "k", 1, "parent", 6, 0), TC_OK);
    get_is(c, "k", "parent", 6);
    backend_pids(pids_before, sizeof pids_before, "tct_fork");
    ck_assert_str_ne(pids_before, "");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(60);
        void *v = NULL;
        size_t len = 0;
        REQUIRE(tc_get(&v, &len, c, "k", 1) == TC_OK && len == 6, 2);
        tc_free(v);
        REQUIRE(tc_put(c, "child", 5, "c", 1, 0) == TC_OK, 3);
        REQUIRE(tc_get(&v, &len, c, "child", 5) == TC_OK && len == 1, 4);
        tc_free(v);
        tc_close(c);
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
    /* The parent's backends are the same ones: the child never spoke on their sockets. */
    backend_pids_settled(pids_after, sizeof pids_after, "tct_fork", pids_before);
    ck_assert_str_eq(pids_after, pids_before);
    get_is(c, "child", "c", 1);
    ck_assert_int_eq(tc_put(c, "k", 1, "again", 5, 0), TC_OK);
    get_is(c, "k", "again", 5);
    tc_close(c);
}
END_TEST

/* A child that closes the handle before any call must not end the parent's connection. */
START_TEST(test_fork_child_closes)
{
    tc_cache *c = pg_open("t_fork2", 0, 2, "tct_fork2");
    ck_assert_int_eq(tc_put(c, "k", 1, "v", 1, 0), TC_OK);
    backend_pids(pids_before, sizeof pids_before, "tct_fork2");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tc_close(c);
        _exit(0);
    }
    ck_assert_int_eq(wait_child(pid), 0);
    backend_pids_settled(pids_after, sizeof pids_after, "tct_fork2", pids_before);
    ck_assert_str_eq(pids_after, pids_before);
    get_is(c, "k", "v", 1);
    tc_close(c);
}
END_TEST

/* ---- errors --------------------------------------------------------------------------------- */

static void open_fails_without_secret(const char *conninfo, int want)
{
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.type", "postgres"), TC_OK);
    ck_assert_int_eq(tc_config_set_string(cfg, "store.conninfo", conninfo), TC_OK);
    tc_cache *c = (tc_cache *)1;
    int rc = tc_open(&c, cfg);
    tc_config_free(cfg);
    ck_assert_int_eq(rc, want);
    ck_assert_ptr_null(c);
    const char *msg = tc_errmsg(NULL);
    ck_assert_msg(strstr(msg, "postgres") != NULL, "message: %s", msg);
    ck_assert_msg(strstr(msg, "sekrit") == NULL, "message shows the password: %s", msg);
}

START_TEST(test_bad_conninfo)
{
    /* Port 1: nobody listens there, so the connection is refused at once. */
    char ci[300];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=1 user=bob password=sekrit dbname=x");
    open_fails_without_secret(ci, TC_ESTORE);
    ck_assert_msg(strstr(tc_errmsg(NULL), "host=127.0.0.1") != NULL, "%s", tc_errmsg(NULL));
    open_fails_without_secret("postgresql://bob:sekrit@127.0.0.1:1/x", TC_ESTORE);
    /* Wrong password on a server that asks for none still connects; a wrong user does not. */
    snprintf(ci, sizeof ci, "%s user=nobody_here password=sekrit", srv.conninfo);
    open_fails_without_secret(ci, TC_ESTORE);
    /* Does not parse: not shown at all. */
    open_fails_without_secret("host=127.0.0.1 password=sekrit sekrit", TC_EINVAL);
    open_fails_without_secret("host=127.0.0.1 password='sekrit", TC_EINVAL);
}
END_TEST

START_TEST(test_bad_table_names)
{
    tc_config *cfg;
    ck_assert_int_eq(tc_config_new(&cfg), TC_OK);
    ck_assert_int_ne(tc_config_set_string(cfg, "store.table", "bad-name"), TC_OK);
    ck_assert_int_ne(tc_config_set_string(cfg, "store.table", "t; DROP TABLE x"), TC_OK);
    ck_assert_int_ne(tc_config_set_string(cfg, "store.table", "1abc"), TC_OK);
    ck_assert_int_ne(tc_config_set_string(cfg, "store.table", "\"q\""), TC_OK);
    tc_config_free(cfg);
    tc__store *s = (tc__store *)1;
    ck_assert_int_eq(tc__store_pg_open(&s, srv.conninfo, "a b", 2, OWNER), TC_EINVAL);
    ck_assert_ptr_null(s);
    /* Longer than 58 bytes: <t>_feed would not fit a PostgreSQL name. */
    char longname[60];
    memset(longname, 'x', 59);
    longname[59] = '\0';
    ck_assert_int_eq(tc__store_pg_open(&s, srv.conninfo, longname, 2, OWNER), TC_EINVAL);
    ck_assert_int_eq(tc__store_pg_open(&s, srv.conninfo, "ok", 0, OWNER), TC_EINVAL);
    /* A keyword and mixed case are fine: always quoted. */
    s = store_open("Order");
    ck_assert_int_gt(sput(s, "k", "v"), 0);
    s->ops->close(s);
    s = store_open("select");
    ck_assert_int_gt(sput(s, "k", "v"), 0);
    s->ops->close(s);
}
END_TEST

/* The edge on: a write is served from the edge, and another handle reads the store. */
START_TEST(test_edge_on)
{
    tc_cache *a = pg_open("t_edge", 1, 2, NULL), *b = pg_open("t_edge", 0, 2, NULL);
    ck_assert_int_eq(tc_put(a, "k", 1, "v1", 2, 0), TC_OK);
    void *v = NULL;
    size_t len;
    unsigned info = 0;
    int64_t ver = 0;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, &ver, a, "k", 1), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_EDGE);
    ck_assert_int_gt(ver, 0);
    tc_free(v);
    int64_t ver_b = 0;
    ck_assert_int_eq(tc_get_ex(&v, &len, &info, &ver_b, b, "k", 1), TC_OK);
    ck_assert_uint_eq(info & 0xff, TC_SOURCE_STORE);
    ck_assert_int_eq(ver_b, ver);
    tc_free(v);
    tc_close(a);
    tc_close(b);
}
END_TEST

/* ---- the change feed ------------------------------------------------------------------------ */

typedef struct change {
    int64_t seq, version;
    char key[32];
} change;

typedef struct changes {
    change c[64];
    int n;
} changes;

static int collect_change(void *ctx, int64_t seq, const char *key, size_t key_len,
                          int64_t version)
{
    changes *cs = ctx;
    if (cs->n >= 64)
        return TC_EINVAL;
    change *c = &cs->c[cs->n++];
    c->seq = seq;
    c->version = version;
    snprintf(c->key, sizeof c->key, "%.*s", (int)key_len, key);
    return TC_OK;
}

static void read_feed(tc__store *s, int64_t after, changes *cs)
{
    memset(cs, 0, sizeof *cs);
    int n = -1;
    int rc = s->ops->feed_read(s, after, 64, collect_change, cs, &n);
    ck_assert_msg(rc == TC_OK, "feed_read: %s", tc_errmsg(OWNER));
    ck_assert_int_eq(n, cs->n);
    for (int i = 1; i < cs->n; i++)
        ck_assert_int_gt(cs->c[i].seq, cs->c[i - 1].seq);
}

static void change_is(const changes *cs, int i, const char *key, int64_t version)
{
    ck_assert_int_lt(i, cs->n);
    ck_assert_str_eq(cs->c[i].key, key);
    if (version > 0)
        ck_assert_int_eq(cs->c[i].version, version);
}

/* Library writes and plain SQL from another connection, in order, with the rows' versions. */
START_TEST(test_feed_logs_every_write)
{
    tc__store *s = store_open("t_feed_log");
    PGconn *pg = sql_conn();
    int64_t v1 = sput(s, "a", "1");
    int64_t v2 = sput(s, "a", "2");
    int64_t d1 = sdel(s, "a");
    free(sql1(pg, "INSERT INTO t_feed_log (key, value) VALUES ('p', 'x')"));
    int64_t pv1 = sql_ll(pg, "SELECT version FROM t_feed_log WHERE key = 'p'");
    free(sql1(pg, "UPDATE t_feed_log SET value = 'y' WHERE key = 'p'"));
    int64_t pv2 = sql_ll(pg, "SELECT version FROM t_feed_log WHERE key = 'p'");
    free(sql1(pg, "UPDATE t_feed_log SET key = 'q' WHERE key = 'p'"));
    int64_t qv = sql_ll(pg, "SELECT version FROM t_feed_log WHERE key = 'q'");
    free(sql1(pg, "DELETE FROM t_feed_log WHERE key = 'q'"));
    /* A transaction of several writes: logged in statement order. */
    free(sql1(pg, "BEGIN"));
    free(sql1(pg, "INSERT INTO t_feed_log (key, value) VALUES ('t1', 'x'), ('t2', 'y')"));
    free(sql1(pg, "DELETE FROM t_feed_log WHERE key = 't1'"));
    free(sql1(pg, "COMMIT"));
    /* A rolled-back one: nothing. */
    free(sql1(pg, "BEGIN"));
    free(sql1(pg, "INSERT INTO t_feed_log (key, value) VALUES ('gone', 'x')"));
    free(sql1(pg, "ROLLBACK"));

    changes cs;
    read_feed(s, 0, &cs);
    ck_assert_int_eq(cs.n, 11);
    change_is(&cs, 0, "a", v1);
    change_is(&cs, 1, "a", v2);
    change_is(&cs, 2, "a", 0);
    ck_assert_int_ge(cs.c[2].version, d1); /* the delete's logged version: newer than v2 */
    ck_assert_int_gt(cs.c[2].version, v2);
    change_is(&cs, 3, "p", pv1);
    ck_assert_int_gt(pv1, cs.c[2].version);
    change_is(&cs, 4, "p", pv2);
    ck_assert_int_gt(pv2, pv1);
    change_is(&cs, 5, "q", qv); /* a key change: the new key, then the old one */
    change_is(&cs, 6, "p", qv);
    ck_assert_int_gt(qv, pv2);
    change_is(&cs, 7, "q", 0);
    ck_assert_int_gt(cs.c[7].version, qv); /* a plain-SQL delete: fresh, newer than the row */
    change_is(&cs, 8, "t1", 0);
    change_is(&cs, 9, "t2", 0);
    change_is(&cs, 10, "t1", 0);
    ck_assert_int_gt(cs.c[10].version, cs.c[8].version);

    /* After a seq, at most max, and fn's error stops the walk. */
    changes tail;
    read_feed(s, cs.c[8].seq, &tail);
    ck_assert_int_eq(tail.n, 2);
    ck_assert_int_eq(tail.c[0].seq, cs.c[9].seq);
    int n = 0;
    ck_assert_int_eq(s->ops->feed_read(s, 0, 3, collect_change, &tail, &n), TC_OK);
    ck_assert_int_eq(n, 3);
    memset(&tail, 0, sizeof tail);
    tail.n = 63; /* room for one more: the second call fails */
    ck_assert_int_eq(s->ops->feed_read(s, 0, 64, collect_change, &tail, &n), TC_EINVAL);
    ck_assert_int_eq(n, 2);
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

/* A library put in a thread of its own, that a plain-SQL transaction will block. */
typedef struct bg_put {
    tc__store *s;
    const char *key, *val;
    int rc;
    int64_t version;
    pthread_t th;
} bg_put;

static void *bg_put_run(void *arg)
{
    bg_put *p = arg;
    p->rc = p->s->ops->put(p->s, p->key, strlen(p->key), p->val, strlen(p->val), &p->version);
    return NULL;
}

static void bg_put_start(bg_put *p, tc__store *s, const char *key, const char *val)
{
    *p = (bg_put){.s = s, .key = key, .val = val, .rc = -1};
    ck_assert_int_eq(pthread_create(&p->th, NULL, bg_put_run, p), 0);
}

static void bg_put_join(bg_put *p)
{
    pthread_join(p->th, NULL);
    ck_assert_msg(p->rc == TC_OK, "put %s: %s", p->key, tc_errmsg(OWNER));
}

/* Waits (10 s at most) until some backend waits for a lock: the put is blocked. */
static void wait_blocked(PGconn *pg)
{
    for (int i = 0; i < 1000; i++) {
        if (sql_ll(pg, "SELECT count(*) FROM pg_locks WHERE NOT granted") > 0)
            return;
        tct_sleep_ms(10);
    }
    ck_abort_msg("the put never waited for a lock");
}

/* The versions the log holds for key, in seq order, into v (at most max); their count. */
static int logged_versions(PGconn *pg, const char *table, const char *key, int64_t *v, int max)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT version FROM \"%s_log\" WHERE key = '%s' ORDER BY seq",
             table, key);
    PGresult *res = PQexec(pg, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    int n = PQntuples(res) < max ? PQntuples(res) : max;
    for (int i = 0; i < n; i++)
        v[i] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
    PQclear(res);
    return n;
}

/* Seqs and versions follow commit order: a library write made while a plain-SQL transaction
 * has written the table waits for that transaction's commit and is logged after it, with a
 * higher version; a consumer that read past one change never finds an older one appear. */
START_TEST(test_feed_commit_order)
{
    tc__store *s = store_open("t_feed_order");
    PGconn *pg = sql_conn();
    free(sql1(pg, "BEGIN"));
    free(sql1(pg, "INSERT INTO t_feed_order (key, value) VALUES ('early', 'x')"));
    bg_put p;
    bg_put_start(&p, s, "late", "y");
    wait_blocked(pg);
    changes cs;
    read_feed(s, 0, &cs); /* reads never wait */
    ck_assert_int_eq(cs.n, 0);
    free(sql1(pg, "COMMIT"));
    bg_put_join(&p);
    read_feed(s, 0, &cs);
    ck_assert_int_eq(cs.n, 2);
    change_is(&cs, 0, "early", 0);
    change_is(&cs, 1, "late", p.version);
    ck_assert_int_gt(p.version, cs.c[0].version);
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

/* The coherence test's race, made deterministic: a tc_put of a key that a plain-SQL DELETE
 * holds in an open transaction, which draws more versions while the put waits (the delete's
 * own was once drawn at commit, by a deferred log trigger; here a write of another key stands
 * for any version drawn late). The put, which committed last, must get the highest version,
 * or the caches' tombstone would hide the row. Before the table lock, the put drew its version
 * before waiting for the row and committed below the delete. */
START_TEST(test_put_after_sql_delete)
{
    tc__store *s = store_open("t_put_sqldel");
    int64_t v0 = sput(s, "k", "old");
    PGconn *pg = sql_conn();
    free(sql1(pg, "BEGIN"));
    free(sql1(pg, "DELETE FROM t_put_sqldel WHERE key = 'k'"));
    bg_put p;
    bg_put_start(&p, s, "k", "new");
    wait_blocked(pg);
    free(sql1(pg, "INSERT INTO t_put_sqldel (key, value) VALUES ('z', 'late')"));
    int64_t vz = sql_ll(pg, "SELECT version FROM t_put_sqldel WHERE key = 'z'");
    free(sql1(pg, "COMMIT"));
    bg_put_join(&p);
    ck_assert_msg(p.version > vz, "put %lld committed after a write %lld", (long long)p.version,
                  (long long)vz);

    int64_t v[8];
    int n = logged_versions(pg, "t_put_sqldel", "k", v, 8);
    ck_assert_int_eq(n, 3); /* the first put, the delete, the second put */
    ck_assert_int_eq(v[0], v0);
    for (int i = 1; i < n; i++)
        ck_assert_msg(v[i] > v[i - 1], "the log's versions of k go backwards: %lld then %lld",
                      (long long)v[i - 1], (long long)v[i]);
    ck_assert_int_eq(v[2], p.version);
    ck_assert_msg(p.version > v[1], "put %lld committed after the delete %lld",
                  (long long)p.version, (long long)v[1]);
    got g;
    ck_assert_int_eq(sget(s, "k", &g), TC_OK);
    ck_assert_str_eq(g.buf, "new");
    ck_assert_int_eq(g.version, p.version);
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

/* The same between plain-SQL writers, whose versions the BEFORE row triggers draw: an INSERT
 * that waits for a DELETE of its key (on the primary key) used to draw its version before
 * waiting, below the one the delete drew at its commit. */
START_TEST(test_sql_versions_follow_commit_order)
{
    tc__store *s = store_open("t_sql_order");
    sput(s, "a", "0");
    PGconn *t1 = sql_conn(), *t2 = sql_conn();
    free(sql1(t1, "BEGIN"));
    free(sql1(t1, "DELETE FROM t_sql_order WHERE key = 'a'"));
    /* t2 sends its INSERT without waiting for the answer: it blocks behind t1. */
    ck_assert_int_eq(PQsendQuery(t2, "INSERT INTO t_sql_order (key, value) VALUES ('a', '2')"
                                     " RETURNING version"),
                     1);
    wait_blocked(t1);
    free(sql1(t1, "COMMIT"));
    PGresult *res = PQgetResult(t2);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    int64_t v2 = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    while ((res = PQgetResult(t2)) != NULL)
        PQclear(res);
    int64_t v[8];
    int n = logged_versions(t1, "t_sql_order", "a", v, 8);
    ck_assert_int_eq(n, 3); /* the put, the delete, the insert */
    ck_assert_int_eq(v[2], v2);
    for (int i = 1; i < n; i++)
        ck_assert_msg(v[i] > v[i - 1], "the log's versions of a go backwards: %lld then %lld",
                      (long long)v[i - 1], (long long)v[i]);
    PQfinish(t1);
    PQfinish(t2);
    s->ops->close(s);
}
END_TEST

/* Within one transaction too: a key deleted and then written again (or written and then
 * deleted) is logged with increasing versions, and the row keeps the newest. */
START_TEST(test_sql_delete_then_insert_in_one_transaction)
{
    tc__store *s = store_open("t_sql_reins");
    sput(s, "a", "0");
    sput(s, "b", "0");
    PGconn *pg = sql_conn();
    free(sql1(pg, "BEGIN"));
    free(sql1(pg, "DELETE FROM t_sql_reins WHERE key = 'a'"));
    free(sql1(pg, "INSERT INTO t_sql_reins (key, value) VALUES ('a', '1')"));
    free(sql1(pg, "INSERT INTO t_sql_reins (key, value) VALUES ('c', '1')"));
    free(sql1(pg, "DELETE FROM t_sql_reins WHERE key = 'c'"));
    free(sql1(pg, "COMMIT"));
    const char *keys[] = {"a", "c"};
    for (int k = 0; k < 2; k++) {
        int64_t v[8];
        int n = logged_versions(pg, "t_sql_reins", keys[k], v, 8);
        ck_assert_int_eq(n, k == 0 ? 3 : 2);
        for (int i = 1; i < n; i++)
            ck_assert_msg(v[i] > v[i - 1], "the log's versions of %s go backwards: %lld then %lld",
                          keys[k], (long long)v[i - 1], (long long)v[i]);
    }
    got g;
    ck_assert_int_eq(sget(s, "a", &g), TC_OK);
    ck_assert_str_eq(g.buf, "1");
    int64_t v[8];
    ck_assert_int_eq(logged_versions(pg, "t_sql_reins", "a", v, 8), 3);
    ck_assert_int_eq(g.version, v[2]);
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

/* A table made by the schema before the table lock (no <t>_lock, no tiercache_lock, deferred
 * log triggers) gets the new objects when opened. */
START_TEST(test_schema_upgrade_adds_lock)
{
    tc__store *s = store_open("t_upgrade");
    sput(s, "k", "v");
    s->ops->close(s);
    PGconn *pg = sql_conn();
    free(sql1(pg, "DROP TRIGGER tiercache_lock ON t_upgrade"));
    free(sql1(pg, "DROP FUNCTION t_upgrade_lock()"));
    const char *const logs[] = {"ins", "upd", "del"}, *const ops[] = {"INSERT", "UPDATE", "DELETE"};
    for (int i = 0; i < 3; i++) { /* the older schema's deferred log triggers */
        char sql[256];
        snprintf(sql, sizeof sql, "DROP TRIGGER tiercache_log_%s ON t_upgrade", logs[i]);
        free(sql1(pg, sql));
        snprintf(sql, sizeof sql,
                 "CREATE CONSTRAINT TRIGGER tiercache_log_%s AFTER %s ON t_upgrade DEFERRABLE"
                 " INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION t_upgrade_chg()",
                 logs[i], ops[i]);
        free(sql1(pg, sql));
    }
    s = store_open("t_upgrade");
    ck_assert_int_eq(sql_ll(pg, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_upgrade'::regclass"
                                " AND tgname LIKE 'tiercache_log_%' AND NOT tgdeferrable"),
                     3);
    ck_assert_int_eq(sql_ll(pg, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_upgrade'::regclass"
                                " AND tgname = 'tiercache_lock'"),
                     1);
    ck_assert_int_eq(sql_ll(pg, "SELECT count(*) FROM pg_proc WHERE proname = 't_upgrade_lock'"),
                     1);
    /* Only the trigger missing: added too. */
    free(sql1(pg, "DROP TRIGGER tiercache_lock ON t_upgrade"));
    s->ops->close(s);
    s = store_open("t_upgrade");
    ck_assert_int_eq(sql_ll(pg, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_upgrade'::regclass"
                                " AND tgname = 'tiercache_lock'"),
                     1);
    got g;
    ck_assert_int_eq(sget(s, "k", &g), TC_OK);
    ck_assert_str_eq(g.buf, "v");
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

START_TEST(test_feed_claim_commit_release)
{
    tc__store *s = store_open("t_feed_claim");
    int64_t seq = -1;
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "A", 60000, &seq), TC_OK);
    ck_assert_int_eq(seq, 0); /* a new consumer */
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "A", 60000, &seq), TC_OK); /* renewed */
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "B", 60000, &seq), TC_ESTATE);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(OWNER), "inv"));
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "B", 5), TC_ESTATE);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "A", 5), TC_OK);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "A", 3), TC_OK); /* never goes back */
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "A", 60000, &seq), TC_OK);
    ck_assert_int_eq(seq, 5);
    /* Another consumer is independent. */
    ck_assert_int_eq(s->ops->feed_claim(s, "other", "B", 60000, &seq), TC_OK);
    ck_assert_int_eq(seq, 0);
    /* A clean stop: B takes over at once, from A's checkpoint. */
    ck_assert_int_eq(s->ops->feed_release(s, "inv", "A"), TC_OK);
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "B", 60000, &seq), TC_OK);
    ck_assert_int_eq(seq, 5);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "A", 9), TC_ESTATE);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "B", 7), TC_OK);
    /* An expired lease is taken over. */
    ck_assert_int_eq(s->ops->feed_claim(s, "short", "A", 100, &seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_claim(s, "short", "B", 100, &seq), TC_ESTATE);
    tct_sleep_ms(250);
    ck_assert_int_eq(s->ops->feed_claim(s, "short", "B", 60000, &seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_commit(s, "short", "A", 1), TC_ESTATE);
    ck_assert_int_eq(s->ops->feed_claim(s, "short", "A", 60000, &seq), TC_ESTATE);
    s->ops->close(s);
}
END_TEST

static int holder_is_a(void *ctx, const char *holder)
{
    ++*(int *)ctx;
    return strcmp(holder, "A") == 0;
}

/* A live lease is taken from a holder the caller finds dead, and only from it: the checkpoint
 * comes along, and the old holder's commit is fenced off afterwards. */
START_TEST(test_feed_takeover)
{
    tc__store *s = store_open("t_feed_takeover");
    int64_t seq = -1;
    int asked = 0;
    ck_assert_int_eq(s->ops->feed_takeover(s, "inv", "B", 60000, holder_is_a, &asked, &seq),
                     TC_ESTATE); /* nobody holds it yet */
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "C", 60000, &seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_takeover(s, "inv", "B", 60000, holder_is_a, &asked, &seq),
                     TC_ESTATE); /* C lives */
    ck_assert_int_eq(asked, 1);
    ck_assert_int_eq(s->ops->feed_release(s, "inv", "C"), TC_OK);
    ck_assert_int_eq(s->ops->feed_claim(s, "inv", "A", 60000, &seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "A", 4), TC_OK);
    ck_assert_int_eq(s->ops->feed_takeover(s, "inv", "B", 60000, holder_is_a, &asked, &seq),
                     TC_OK);
    ck_assert_int_eq(seq, 4);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "A", 9), TC_ESTATE);
    ck_assert_int_eq(s->ops->feed_commit(s, "inv", "B", 6), TC_OK);
    s->ops->close(s);
}
END_TEST

/* In a child of tct_fork_holding: a store of its own takes consumer inv's lease as "A". */
static int hold_the_lock(void *arg)
{
    tc__store *s = NULL;
    int64_t seq;
    return tc__store_pg_open(&s, srv.conninfo, "t_feed_lock", 2, OWNER) != TC_OK ||
           s->ops->feed_claim(s, "inv", "A", 60000, &seq) != TC_OK;
}

/* The lease dies with its holder's session, on any host: a holder killed with -9 while its
 * 60 s lease runs is replaced as soon as the server has ended its session (the advisory lock
 * is gone), although the holders' names say nothing of their processes. */
START_TEST(test_feed_lock_dies_with_its_holder)
{
    tc__store *mine = store_open("t_feed_lock");
    pid_t pid = tct_fork_holding(hold_the_lock, NULL);
    int64_t seq = -1;
    ck_assert_int_eq(mine->ops->feed_claim(mine, "inv", "B", 60000, &seq), TC_ESTATE);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    tct_child_status(pid);
    int taken = 0;
    for (int i = 0; i < 400 && !taken; i++) {
        taken = mine->ops->feed_claim(mine, "inv", "B", 60000, &seq) == TC_OK;
        if (!taken)
            tct_sleep_ms(5);
    }
    ck_assert_msg(taken, "the killed holder's lease was not taken over: %s", tc_errmsg(OWNER));
    ck_assert_int_eq(mine->ops->feed_commit(mine, "inv", "A", 3), TC_ESTATE);
    ck_assert_int_eq(mine->ops->feed_commit(mine, "inv", "B", 3), TC_OK);
    mine->ops->close(mine);
}
END_TEST

START_TEST(test_feed_trim)
{
    tc__store *s = store_open("t_feed_trim");
    PGconn *pg = sql_conn();
    for (int i = 0; i < 6; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        sput(s, key, "v");
    }
    changes cs;
    read_feed(s, 0, &cs);
    ck_assert_int_eq(cs.n, 6);
    int64_t seq;
    ck_assert_int_eq(s->ops->feed_claim(s, "c1", "A", 60000, &seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_claim(s, "c2", "B", 60000, &seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_commit(s, "c1", "A", cs.c[4].seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_commit(s, "c2", "B", cs.c[2].seq), TC_OK);
    int64_t removed = -1;
    /* Everything is younger than an hour: nothing goes. */
    ck_assert_int_eq(s->ops->feed_trim(s, 3600000, &removed), TC_OK);
    ck_assert_int_eq(removed, 0);
    /* Old enough: only what both consumers passed (c2 is behind: up to its checkpoint). */
    tct_sleep_ms(20);
    ck_assert_int_eq(s->ops->feed_trim(s, 0, &removed), TC_OK);
    ck_assert_int_eq(removed, 3);
    read_feed(s, 0, &cs);
    ck_assert_int_eq(cs.n, 3);
    change_is(&cs, 0, "k3", 0);
    /* Rows made old by hand: the checkpoints still hold them. */
    free(sql1(pg, "UPDATE t_feed_trim_log SET at = 0"));
    ck_assert_int_eq(s->ops->feed_trim(s, 3600000, &removed), TC_OK);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(s->ops->feed_commit(s, "c2", "B", cs.c[2].seq), TC_OK);
    ck_assert_int_eq(s->ops->feed_trim(s, 3600000, &removed), TC_OK);
    ck_assert_int_eq(removed, 2); /* up to c1's checkpoint, the 5th change: k3, k4 */
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct sql_later {
    const char *conninfo;
    const char *sql;
    int delay_ms;
} sql_later;

static void *run_sql_later(void *arg)
{
    sql_later *l = arg;
    tct_sleep_ms(l->delay_ms);
    PGconn *pg = PQconnectdb(l->conninfo);
    PQclear(PQexec(pg, l->sql));
    PQfinish(pg);
    return NULL;
}

START_TEST(test_feed_wait)
{
    tc__store *s = store_open("t_feed_wait");
    /* Nothing happens: back after the timeout. */
    int64_t t0 = now_ms();
    ck_assert_int_eq(s->ops->feed_wait(s, 0, 300), TC_OK);
    int64_t took = now_ms() - t0;
    ck_assert_int_ge(took, 250);
    ck_assert_int_lt(took, 5000);
    /* A change already there: at once. */
    sput(s, "k", "v");
    changes cs;
    read_feed(s, 0, &cs);
    ck_assert_int_eq(cs.n, 1);
    t0 = now_ms();
    ck_assert_int_eq(s->ops->feed_wait(s, 0, 10000), TC_OK);
    ck_assert_int_lt(now_ms() - t0, 5000);
    /* A plain-SQL write from another connection while waiting: woken by its NOTIFY. */
    for (int round = 0; round < 2; round++) {
        sql_later l = {srv.conninfo,
                       round == 0 ? "INSERT INTO t_feed_wait (key, value) VALUES ('x', 'y')"
                                  : "DELETE FROM t_feed_wait WHERE key = 'x'",
                       300};
        read_feed(s, 0, &cs);
        int64_t last = cs.c[cs.n - 1].seq;
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, run_sql_later, &l), 0);
        t0 = now_ms();
        ck_assert_int_eq(s->ops->feed_wait(s, last, 10000), TC_OK);
        took = now_ms() - t0;
        pthread_join(t, NULL);
        ck_assert_msg(took < 5000, "feed_wait took %lld ms", (long long)took);
        read_feed(s, last, &cs);
        ck_assert_int_eq(cs.n, 1);
        change_is(&cs, 0, "x", 0);
    }
    /* The listener dropped by the server: the next wait opens another. */
    PGconn *pg = sql_conn();
    free(sql1(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                  " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"));
    read_feed(s, 0, &cs);
    int64_t last = cs.c[cs.n - 1].seq;
    ck_assert_int_eq(s->ops->feed_wait(s, last, 200), TC_OK); /* early or timed out */
    sql_later l = {srv.conninfo, "UPDATE t_feed_wait SET value = 'z'", 300};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_sql_later, &l), 0);
    t0 = now_ms();
    ck_assert_int_eq(s->ops->feed_wait(s, last, 10000), TC_OK);
    took = now_ms() - t0;
    pthread_join(t, NULL);
    ck_assert_msg(took < 5000, "feed_wait took %lld ms", (long long)took);
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

/* A child waits on its own listener, never its parent's. */
START_TEST(test_feed_wait_fork)
{
    tc__store *s = store_open("t_feed_fork");
    ck_assert_int_eq(s->ops->feed_wait(s, 0, 50), TC_OK); /* the parent's listener is up */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int64_t t0 = now_ms();
        REQUIRE(s->ops->feed_wait(s, 0, 10000) == TC_OK, 2);
        REQUIRE(now_ms() - t0 < 5000, 3);
        changes cs = {0};
        int n = 0;
        REQUIRE(s->ops->feed_read(s, 0, 64, collect_change, &cs, &n) == TC_OK && n == 1, 4);
        s->ops->close(s);
        _exit(0);
    }
    tct_sleep_ms(300);
    PGconn *pg = sql_conn();
    free(sql1(pg, "INSERT INTO t_feed_fork (key, value) VALUES ('k', 'v')"));
    ck_assert_int_eq(wait_child(pid), 0);
    /* The parent's listener still works. */
    ck_assert_int_eq(s->ops->feed_wait(s, 0, 10000), TC_OK);
    PQfinish(pg);
    s->ops->close(s);
}
END_TEST

Suite *pg_suite(void)
{
    Suite *s = suite_create("pg");
    TCase *tc = tcase_create("pg");
    tcase_add_unchecked_fixture(tc, srv_up, srv_down);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_binary_values);
    tcase_add_test(tc, test_versions_increase);
    tcase_add_test(tc, test_plain_sql_gets_versions);
    tcase_add_test(tc, test_concurrent_schema_creation);
    tcase_add_test(tc, test_threads_small_pool);
    tcase_add_test(tc, test_backend_terminated);
    tcase_add_test(tc, test_server_restart);
    tcase_add_test(tc, test_broken_mid_call);
    tcase_add_test(tc, test_put_del_race);
    tcase_add_test(tc, test_fork);
    tcase_add_test(tc, test_fork_child_closes);
    tcase_add_test(tc, test_bad_conninfo);
    tcase_add_test(tc, test_bad_table_names);
    tcase_add_test(tc, test_edge_on);
    tcase_add_test(tc, test_feed_logs_every_write);
    tcase_add_test(tc, test_feed_commit_order);
    tcase_add_test(tc, test_put_after_sql_delete);
    tcase_add_test(tc, test_sql_versions_follow_commit_order);
    tcase_add_test(tc, test_sql_delete_then_insert_in_one_transaction);
    tcase_add_test(tc, test_schema_upgrade_adds_lock);
    tcase_add_test(tc, test_feed_claim_commit_release);
    tcase_add_test(tc, test_feed_takeover);
    tcase_add_test(tc, test_feed_lock_dies_with_its_holder);
    tcase_add_test(tc, test_feed_trim);
    tcase_add_test(tc, test_feed_wait);
    tcase_add_test(tc, test_feed_wait_fork);
    suite_add_tcase(s, tc);
    return s;
}
