/*
 * harness.c - what the suites share: a private redis-server on a free loopback port in a temp
 * dir (as hiredis's test.sh does), and temp dirs.
 *
 * Besides 127.0.0.1:port, every server also listens on the unix socket DIR/redis.sock (when that
 * path fits in sun_path), so a suite can test unix-socket connections on the same server.
 *
 * Extra configuration (requirepass, ACL users, ...) goes into DIR/redis.conf, which the server
 * reads first when it exists (tct_redis_start_conf, tct_redis_write_conf); the command-line
 * options (port, bind, dir, no persistence, socket) come after it and win.
 *
 * A failing test must never leave a redis-server behind:
 *  - Check runs each test in a forked child and exits it on a failed assertion, skipping the
 *    checked teardown: an atexit handler stops every server this process started and still
 *    owns (not those of its parent: the handler is inherited across fork);
 *  - if the process dies outright (a crash, SIGKILL), the server gets SIGKILL from the kernel
 *    (PR_SET_PDEATHSIG), and Check also kills the test child's whole process group;
 *  - servers shared by a TCase are started in an unchecked fixture, in the runner process.
 */
#include "tc_test.h"
#include "common/internal.h" /* tc__strbuf */

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <hiredis/hiredis.h>

#define START_TIMEOUT_MS 5000
#define STOP_TIMEOUT_MS 5000

/* ---- undone in every outcome --------------------------------------------------------------- */

static struct {
    tct_undo_fn fn;
    void *arg;
} deferred[32];
static int ndeferred;

void tct_defer(tct_undo_fn fn, void *arg)
{
    ck_assert_msg(ndeferred < (int)(sizeof deferred / sizeof deferred[0]),
                  "tct_defer: too many undos registered");
    deferred[ndeferred].fn = fn;
    deferred[ndeferred++].arg = arg;
}

void tct_run_deferred(void)
{
    while (ndeferred > 0) {
        ndeferred--;
        deferred[ndeferred].fn(deferred[ndeferred].arg);
    }
}

static void thread_undo(void *arg)
{
    (void)tct_thread_stop(arg);
}

static void *thread_entry(void *arg)
{
    tct_thread *t = arg;
    atomic_store(&t->entered, 1);
    return t->fn(t);
}

/* Returns once the thread runs fn: its start-up allocates in the C library and in the
 * sanitizer's runtime, and GCC 12's AddressSanitizer does not lock its allocator around fork(),
 * so a test that forks right after starting a thread could hand the child an allocator lock
 * that nobody will release (seen: a child hung in calloc under ASan, one run in ten). */
void tct_thread_start(tct_thread *t, void *(*fn)(void *), void *arg)
{
    atomic_init(&t->stop, 0);
    atomic_init(&t->entered, 0);
    t->fn = fn;
    t->arg = arg;
    t->result = NULL;
    t->running = pthread_create(&t->th, NULL, thread_entry, t) == 0;
    ck_assert_msg(t->running, "cannot start a thread");
    tct_defer(thread_undo, t);
    while (!atomic_load(&t->entered))
        tct_sleep_ms(1);
}

void *tct_thread_stop(tct_thread *t)
{
    if (!t->running)
        return NULL;
    atomic_store(&t->stop, 1);
    pthread_join(t->th, &t->result);
    t->running = 0;
    return t->result;
}

void tct_child_alarm(unsigned seconds)
{
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
}

pid_t tct_fork_holding(int (*fn)(void *), void *arg)
{
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tct_child_alarm(30);
        close(ready[0]);
        if (fn(arg) != 0)
            _exit(1);
        ssize_t w = write(ready[1], "x", 1);
        (void)w;
        for (;;)
            pause();
    }
    close(ready[1]);
    char x;
    ssize_t got = read(ready[0], &x, 1);
    close(ready[0]);
    ck_assert_msg(got == 1, "the holding child failed (status %d)", got == 0 ?
                  tct_child_status(pid) : -1);
    return pid;
}

int tct_child_status(pid_t pid)
{
    int status = -1;
    while (waitpid(pid, &status, 0) == -1) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : (status == 0 ? -1 : status);
}

void tct_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

long long tct_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- temp dirs ---------------------------------------------------------------------------- */

int tct_tmpdir(char *out, size_t size)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(out, size, "%s/tct-XXXXXX", base);
    if (n < 0 || (size_t)n >= size)
        return -1;
    if (mkdtemp(out) == NULL) {
        fprintf(stderr, "tct_tmpdir: mkdtemp %s: %s\n", out, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tct_rmrf(const char *path)
{
    if (path == NULL || path[0] == '\0')
        return;
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- servers this process owns (for the atexit cleanup) ---------------------------------- */

#define MAX_TRACKED 32
static struct {
    pid_t owner, server; /* owner 0: free slot */
    int sig;             /* what stops the server at exit */
    char dir[256];
} tracked[MAX_TRACKED];
static int atexit_registered;

static void cleanup_at_exit(void)
{
    pid_t me = getpid();
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i].owner != me)
            continue;
        if (tracked[i].server > 0) {
            kill(tracked[i].server, tracked[i].sig);
            waitpid(tracked[i].server, NULL, 0);
        }
        tct_rmrf(tracked[i].dir);
        tracked[i].owner = 0;
    }
}

void tct_track_server(pid_t server, const char *dir, int sig)
{
    pid_t me = getpid();
    int free_slot = -1;
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i].owner == me && strcmp(tracked[i].dir, dir) == 0) {
            tracked[i].server = server;
            return;
        }
        if (free_slot < 0 && tracked[i].owner != me)
            free_slot = i; /* also reuses the slots of a parent process */
    }
    if (free_slot < 0)
        return;
    if (!atexit_registered) {
        atexit(cleanup_at_exit);
        atexit_registered = 1;
    }
    tracked[free_slot].owner = me;
    tracked[free_slot].server = server;
    tracked[free_slot].sig = sig;
    snprintf(tracked[free_slot].dir, sizeof tracked[free_slot].dir, "%s", dir);
}

void tct_untrack_server(const char *dir)
{
    pid_t me = getpid();
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked[i].owner == me && strcmp(tracked[i].dir, dir) == 0)
            tracked[i].owner = 0;
}

/* ---- starting and stopping --------------------------------------------------------------- */

static int find_redis_server(char *out, size_t size)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s:/usr/bin:/usr/sbin:/usr/local/bin",
             path != NULL ? path : "");
    for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir != NULL;
         dir = strtok_r(NULL, ":", &save)) {
        int n = snprintf(out, size, "%s/redis-server", dir[0] != '\0' ? dir : ".");
        if (n > 0 && (size_t)n < size && access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

/* A port nobody listens on right now: bind port 0 and read what the kernel chose. Someone may
 * take it before redis-server binds it; the caller retries then. */
int tct_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static int ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c != NULL && c->err == 0) {
        redisSetTimeout(c, tv);
        redisReply *rep = redisCommand(c, "PING");
        /* A server that wants AUTH first (requirepass, "user default off") is up too. */
        ok = rep != NULL &&
             ((rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0) ||
              (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOAUTH", 6) == 0));
        if (rep != NULL)
            freeReplyObject(rep);
    }
    redisFree(c);
    return ok;
}

/* Starts redis-server on r->port in r->dir and waits until it answers PING. 0 on success;
 * -1 if it exited (port taken) or did not answer in time (then it is killed). */
static int spawn(tct_redis *r, const char *exe)
{
    char port_s[16], logfile[300], sock[300], conf[300];
    snprintf(port_s, sizeof port_s, "%d", r->port);
    snprintf(logfile, sizeof logfile, "%s/redis.log", r->dir);
    snprintf(conf, sizeof conf, "%s/redis.conf", r->dir);
    int with_conf = access(conf, R_OK) == 0;
    int n = snprintf(sock, sizeof sock, "%s/redis.sock", r->dir);
    int with_unix = n > 0 && (size_t)n < sizeof(((struct sockaddr_un *)0)->sun_path);
    /* Built before fork: the child only execs. The config file must be the first argument. */
    const char *args[32];
    int na = 0;
    args[na++] = "redis-server";
    if (with_conf)
        args[na++] = conf;
    const char *common[] = {"--port", port_s, "--bind", "127.0.0.1", "--dir", r->dir,
                            "--save", "", "--appendonly", "no", "--daemonize", "no",
                            "--logfile", logfile};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        args[na++] = common[i];
    if (with_unix) {
        args[na++] = "--unixsocket";
        args[na++] = sock;
        args[na++] = "--unixsocketperm";
        args[na++] = "700";
    }
    args[na] = NULL;
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536)
        max_fd = 65536;
    pid_t parent = getpid();

    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
#endif
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        /* Not the test's sockets: the server must not hold copies of client connections. */
        for (long fd = 3; fd < max_fd; fd++)
            close((int)fd);
        execv(exe, (char *const *)args);
        _exit(127);
    }
    r->pid = pid;
    long long deadline = tct_mono_ms() + START_TIMEOUT_MS;
    while (tct_mono_ms() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            r->pid = 0; /* exited: most likely the port was taken */
            return -1;
        }
        if (ping(r->port))
            return 0;
        tct_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    r->pid = 0;
    return -1;
}

int tct_redis_write_conf(const tct_redis *r, const char *lines)
{
    char conf[300];
    snprintf(conf, sizeof conf, "%s/redis.conf", r->dir);
    if (lines == NULL || lines[0] == '\0')
        return unlink(conf) == 0 || errno == ENOENT ? 0 : -1;
    FILE *f = fopen(conf, "w");
    if (f == NULL) {
        fprintf(stderr, "tct_redis_write_conf: %s: %s\n", conf, strerror(errno));
        return -1;
    }
    int ok = fputs(lines, f) >= 0 && fputc('\n', f) != EOF;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

int tct_redis_start(tct_redis *r)
{
    return tct_redis_start_conf(r, NULL);
}

int tct_redis_start_conf(tct_redis *r, const char *extra_conf_lines)
{
    char exe[PATH_MAX];
    memset(r, 0, sizeof *r);
    if (find_redis_server(exe, sizeof exe) != 0) {
        fprintf(stderr, "tct_redis_start: redis-server not found in PATH; install the "
                        "redis-server package (Debian/Ubuntu: apt-get install redis-server)\n");
        return -1;
    }
    if (tct_tmpdir(r->dir, sizeof r->dir) != 0)
        return -1;
    if (tct_redis_write_conf(r, extra_conf_lines) != 0) {
        tct_rmrf(r->dir);
        r->dir[0] = '\0';
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = tct_free_port();
        if (r->port > 0 && spawn(r, exe) == 0) {
            tct_track_server(r->pid, r->dir, SIGKILL);
            return 0;
        }
    }
    fprintf(stderr, "tct_redis_start: redis-server did not start (see %s/redis.log)\n", r->dir);
    tct_rmrf(r->dir);
    r->dir[0] = '\0';
    r->port = 0;
    return -1;
}

void tct_redis_kill(tct_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
        tct_track_server(r->pid, r->dir, SIGKILL);
    }
}

int tct_redis_restart(tct_redis *r)
{
    char exe[PATH_MAX];
    if (r->pid > 0 || r->port <= 0 || r->dir[0] == '\0')
        return -1;
    if (find_redis_server(exe, sizeof exe) != 0)
        return -1;
    /* redis sets SO_REUSEADDR, so TIME_WAIT left by the killed server does not block the
     * port; something else grabbing it in between does, for a while: retry for a few seconds. */
    long long deadline = tct_mono_ms() + START_TIMEOUT_MS;
    do {
        if (spawn(r, exe) == 0) {
            tct_track_server(r->pid, r->dir, SIGKILL);
            return 0;
        }
        tct_sleep_ms(50);
    } while (tct_mono_ms() < deadline);
    fprintf(stderr, "tct_redis_restart: port %d did not come back\n", r->port);
    return -1;
}

void tct_redis_stop(tct_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        long long deadline = tct_mono_ms() + STOP_TIMEOUT_MS;
        int reaped = 0;
        while (!reaped && tct_mono_ms() < deadline) {
            pid_t w = waitpid(r->pid, NULL, WNOHANG);
            if (w == r->pid || (w < 0 && errno == ECHILD))
                reaped = 1;
            else
                tct_sleep_ms(10);
        }
        if (!reaped) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, NULL, 0);
        }
        r->pid = 0;
    }
    if (r->dir[0] != '\0') {
        tct_untrack_server(r->dir);
        tct_rmrf(r->dir);
        r->dir[0] = '\0';
    }
}

/* ---- commands ---------------------------------------------------------------------------- */

static void format_reply(tc__strbuf *b, const redisReply *rep)
{
    char num[32];
    switch (rep->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        tc__strbuf_add(b, rep->str != NULL ? rep->str : "", rep->str != NULL ? rep->len : 0);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(num, sizeof num, "%lld", rep->integer);
        tc__strbuf_add(b, num, strlen(num));
        break;
    case REDIS_REPLY_NIL:
        tc__strbuf_add(b, "(nil)", 5);
        break;
    case REDIS_REPLY_ARRAY:
        for (size_t i = 0; i < rep->elements; i++) {
            if (i > 0)
                tc__strbuf_add(b, "\n", 1);
            format_reply(b, rep->element[i]);
        }
        break;
    default: /* RESP3 types of hiredis 1.x; not requested by these tests */
        if (rep->str != NULL)
            tc__strbuf_add(b, rep->str, rep->len);
        else
            tc__strbuf_add(b, "(?)", 3);
        break;
    }
}

char *tct_redis_cmd(const tct_redis *r, const char *const *argv)
{
    return tct_redis_cmd_auth(r, NULL, NULL, argv);
}

/* AUTH (when pass is set), then the command. A failed AUTH returns its error text. */
char *tct_redis_cmd_auth(const tct_redis *r, const char *user, const char *pass,
                         const char *const *argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    if (argc == 0)
        return NULL;
    size_t *lens = malloc((size_t)argc * sizeof *lens);
    if (lens == NULL)
        return NULL;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    struct timeval ctv = {2, 0}, tv = {10, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, ctv);
    char *out = NULL;
    if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
        redisReply *rep = NULL;
        if (pass != NULL) {
            const char *auth[3] = {"AUTH", user != NULL ? user : pass, pass};
            size_t alens[3] = {4, strlen(auth[1]), strlen(pass)};
            rep = redisCommandArgv(c, user != NULL ? 3 : 2, auth, alens);
            if (rep != NULL && rep->type != REDIS_REPLY_ERROR) {
                freeReplyObject(rep);
                rep = redisCommandArgv(c, argc, (const char **)argv, lens);
            }
        } else {
            rep = redisCommandArgv(c, argc, (const char **)argv, lens);
        }
        if (rep != NULL) {
            tc__strbuf b = {0};
            tc__strbuf_add(&b, "", 0);
            format_reply(&b, rep);
            freeReplyObject(rep);
            if (b.failed)
                free(b.p);
            else
                out = b.p;
        }
    }
    redisFree(c);
    free(lens);
    return out;
}

/* ---- fork() under AddressSanitizer -------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define TCT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TCT_ASAN 1
#endif
#endif

#ifdef TCT_ASAN
static pthread_rwlock_t fork_gate;

static void fork_gate_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* A fork must not wait behind a stream of calls that keep the read side taken. */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&fork_gate, &a);
    pthread_rwlockattr_destroy(&a);
}

static void fork_gate_prepare(void)
{
    pthread_rwlock_wrlock(&fork_gate);
}

static void fork_gate_parent(void)
{
    pthread_rwlock_unlock(&fork_gate);
}

static void fork_gate_child(void)
{
    fork_gate_init(); /* the waiting readers are the parent's threads */
}

static void fork_gate_register(void)
{
    fork_gate_init();
    pthread_atfork(fork_gate_prepare, fork_gate_parent, fork_gate_child);
}

/* Registered after the library's handlers (which it registers at load), so that this prepare
 * handler runs first: the library's locks are then taken with no gated call running, which
 * could be waiting for one of them. */
void tct_fork_quiet_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fork_gate_register);
}

void tct_fork_quiet_enter(void)
{
    pthread_rwlock_rdlock(&fork_gate);
}

void tct_fork_quiet_leave(void)
{
    pthread_rwlock_unlock(&fork_gate);
}
#else
void tct_fork_quiet_init(void)
{
}

void tct_fork_quiet_enter(void)
{
}

void tct_fork_quiet_leave(void)
{
}
#endif
