/*
 * pg_harness.c - a private PostgreSQL server on a free loopback port, in a temp dir, as
 * harness.c does for redis-server.
 *
 * initdb -A trust -U postgres --no-sync, then the postmaster itself (not pg_ctl, so that its
 * pid is ours to signal and reap). Tests run with fsync=off and -F: a test server needs no
 * crash safety, and a commit then costs no disk flush. Benchmarks that compare commit costs
 * ask for a durable server instead (tct_pg_start_opts).
 *
 * initdb and postgres refuse to run as root, and CI runs as root: then the dir is given to the
 * `postgres` system user and the children switch to it (setgid, setgroups, setuid) before exec.
 *
 * A server must not outlive the test program: an atexit handler stops the servers this
 * process started (not those of a parent: the handler is inherited across fork, so each entry
 * records its owner), and the postmaster gets SIGKILL if the process that started it dies
 * (PR_SET_PDEATHSIG, set after the uid switch, which would clear it). Its backends notice
 * the postmaster's death and exit.
 */
#include "pg_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "tc_test.h"

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000
/* What stops a server left running at exit: immediate shutdown (backends exit too). */
#define EXIT_SIGNAL SIGQUIT

/* ---- binaries ----------------------------------------------------------------------------- */

static char bindir[PATH_MAX];

const char *tct_pg_bindir(void)
{
    if (bindir[0] != '\0')
        return bindir;
    const char *env = getenv("TCT_PG_BINDIR");
    if (env != NULL && env[0] != '\0') {
        snprintf(bindir, sizeof bindir, "%s", env);
        return bindir;
    }
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) == 0) {
        /* The newest major version: compare the numbers, "9.6" < "15". */
        long best = -1;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
            if (v > best) {
                best = v;
                snprintf(bindir, sizeof bindir, "%s", g.gl_pathv[i]);
            }
        }
        char *slash = strrchr(bindir, '/');
        if (slash != NULL)
            *slash = '\0';
    }
    globfree(&g);
    return bindir;
}

static int exe_path(char *out, size_t size, const char *name)
{
    int n = snprintf(out, size, "%s/%s", tct_pg_bindir(), name);
    return n > 0 && (size_t)n < size && access(out, X_OK) == 0 ? 0 : -1;
}

int tct_pg_available(void)
{
    char a[PATH_MAX], b[PATH_MAX];
    return exe_path(a, sizeof a, "initdb") == 0 && exe_path(b, sizeof b, "postgres") == 0;
}

/* ---- running the binaries ----------------------------------------------------------------- */

/* Who the children run as: the postgres user when we are root, else ourselves. */
typedef struct run_as {
    int switch_user;
    uid_t uid;
    gid_t gid;
} run_as;

static int who(run_as *ra)
{
    memset(ra, 0, sizeof *ra);
    if (getuid() != 0)
        return 0;
    struct passwd *pw = getpwnam("postgres");
    if (pw == NULL) {
        fprintf(stderr, "tct_pg: running as root, and there is no `postgres` user to run "
                        "initdb and postgres as (they refuse root)\n");
        return -1;
    }
    ra->switch_user = 1;
    ra->uid = pw->pw_uid;
    ra->gid = pw->pw_gid;
    return 0;
}

/* Forks and execs argv as ra, stdout and stderr appended to logfile. Everything is prepared
 * before fork: the child only makes system calls. pdeath: the child dies with us. */
static pid_t spawn(const run_as *ra, const char *const *argv, const char *logfile, int pdeath)
{
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536)
        max_fd = 65536;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (ra->switch_user &&
        (setgid(ra->gid) != 0 || setgroups(0, NULL) != 0 || setuid(ra->uid) != 0))
        _exit(125);
#ifdef __linux__
    if (pdeath) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
    }
#endif
    (void)parent;
    int null = open("/dev/null", O_RDONLY);
    int log = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (null >= 0)
        dup2(null, 0);
    if (log >= 0) {
        dup2(log, 1);
        dup2(log, 2);
    }
    /* Not the test's sockets: the server must not hold copies of client connections. */
    for (long fd = 3; fd < max_fd; fd++)
        close((int)fd);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

static void print_log_tail(const char *logfile)
{
    FILE *f = fopen(logfile, "r");
    if (f == NULL)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "---- %s (end) ----\n%s\n----\n", logfile, buf);
}

static int initdb(const tct_pg *p, const run_as *ra)
{
    char exe[PATH_MAX], data[300], logfile[300];
    if (exe_path(exe, sizeof exe, "initdb") != 0)
        return -1;
    snprintf(data, sizeof data, "%s/data", p->dir);
    snprintf(logfile, sizeof logfile, "%s/initdb.log", p->dir);
    const char *argv[] = {exe, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
                          "-E", "UTF8", "--locale=C", NULL};
    pid_t pid = spawn(ra, argv, logfile, 1);
    if (pid < 0)
        return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "tct_pg: initdb failed (status %d)\n", status);
        print_log_tail(logfile);
        return -1;
    }
    return 0;
}

/* Starts the postmaster on p->port and waits until it accepts connections. 0 on success; -1
 * if it exited (the port was taken, say) or did not come up in time (then it is killed). */
static int postmaster(tct_pg *p, const run_as *ra, int quiet)
{
    char exe[PATH_MAX], data[300], logfile[300], port_s[16];
    if (exe_path(exe, sizeof exe, "postgres") != 0)
        return -1;
    snprintf(data, sizeof data, "%s/data", p->dir);
    snprintf(logfile, sizeof logfile, "%s/server.log", p->dir);
    snprintf(port_s, sizeof port_s, "%d", p->port);
    const char *argv[24];
    int n = 0;
    argv[n++] = exe;
    argv[n++] = "-D";
    argv[n++] = data;
    argv[n++] = "-p";
    argv[n++] = port_s;
    argv[n++] = "-k"; /* the unix socket in our own dir, not /var/run/postgresql */
    argv[n++] = p->dir;
    argv[n++] = "-c";
    argv[n++] = "listen_addresses=127.0.0.1";
    if (!p->durable) {
        /* Tests only: no fsync at all (-F is fsync=off too; both said for clarity). */
        argv[n++] = "-F";
        argv[n++] = "-c";
        argv[n++] = "fsync=off";
    }
    argv[n] = NULL;
    pid_t pid = spawn(ra, argv, logfile, 1);
    if (pid < 0)
        return -1;
    p->pid = pid;
    char ping[300];
    snprintf(ping, sizeof ping, "host=127.0.0.1 port=%d dbname=postgres user=postgres "
             "connect_timeout=2", p->port);
    long long deadline = tct_mono_ms() + START_TIMEOUT_MS;
    while (tct_mono_ms() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            p->pid = 0; /* exited: most likely the port was taken */
            if (!quiet)
                print_log_tail(logfile);
            return -1;
        }
        if (PQping(ping) == PQPING_OK)
            return 0;
        tct_sleep_ms(20);
    }
    fprintf(stderr, "tct_pg: postgres did not accept connections within %d s\n",
            START_TIMEOUT_MS / 1000);
    print_log_tail(logfile);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    p->pid = 0;
    return -1;
}

int tct_pg_start(tct_pg *p)
{
    return tct_pg_start_opts(p, 0);
}

int tct_pg_start_opts(tct_pg *p, int durable)
{
    memset(p, 0, sizeof *p);
    p->durable = durable;
    if (!tct_pg_available()) {
        fprintf(stderr, "tct_pg_start: the PostgreSQL server binaries (initdb, postgres) are not "
                        "installed: looked in %s (set TCT_PG_BINDIR, or install the postgresql "
                        "package: apt-get install postgresql, or `make deps`)\n",
                tct_pg_bindir()[0] != '\0' ? tct_pg_bindir() : "/usr/lib/postgresql/*/bin");
        return -1;
    }
    run_as ra;
    if (who(&ra) != 0)
        return -1;
    if (tct_tmpdir(p->dir, sizeof p->dir) != 0)
        return -1;
    /* The unix socket path must fit in sun_path (107 bytes): dir/.s.PGSQL.NNNNN. */
    if (ra.switch_user && chown(p->dir, ra.uid, ra.gid) != 0) {
        fprintf(stderr, "tct_pg_start: chown %s: %s\n", p->dir, strerror(errno));
        goto fail;
    }
    if (initdb(p, &ra) != 0)
        goto fail;
    for (int attempt = 0; attempt < 5; attempt++) {
        p->port = tct_free_port();
        if (p->port > 0 && postmaster(p, &ra, attempt < 4) == 0) {
            snprintf(p->conninfo, sizeof p->conninfo,
                     "host=127.0.0.1 port=%d dbname=postgres user=postgres", p->port);
            tct_track_server(p->pid, p->dir, EXIT_SIGNAL);
            return 0;
        }
    }
    fprintf(stderr, "tct_pg_start: postgres did not start (see above)\n");
fail:
    tct_rmrf(p->dir);
    p->dir[0] = '\0';
    p->port = 0;
    return -1;
}

/* Fast shutdown (SIGINT): the postmaster tells every backend to end, which sends its client
 * a FATAL admin_shutdown, then exits. */
static void shutdown_server(tct_pg *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGINT);
    long long deadline = tct_mono_ms() + STOP_TIMEOUT_MS;
    int reaped = 0;
    while (!reaped && tct_mono_ms() < deadline) {
        pid_t w = waitpid(p->pid, NULL, WNOHANG);
        if (w == p->pid || (w < 0 && errno == ECHILD))
            reaped = 1;
        else
            tct_sleep_ms(10);
    }
    if (!reaped) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    p->pid = 0;
}

int tct_pg_restart(tct_pg *p)
{
    run_as ra;
    if (p->port <= 0 || p->dir[0] == '\0' || who(&ra) != 0)
        return -1;
    shutdown_server(p);
    tct_track_server(p->pid, p->dir, EXIT_SIGNAL);
    /* The postmaster sets SO_REUSEADDR; retry for a while in case the port is busy. */
    long long deadline = tct_mono_ms() + START_TIMEOUT_MS;
    do {
        if (postmaster(p, &ra, 1) == 0) {
            tct_track_server(p->pid, p->dir, EXIT_SIGNAL);
            return 0;
        }
        tct_sleep_ms(100);
    } while (tct_mono_ms() < deadline);
    fprintf(stderr, "tct_pg_restart: port %d did not come back\n", p->port);
    return -1;
}

void tct_pg_stop(tct_pg *p)
{
    shutdown_server(p);
    if (p->dir[0] != '\0') {
        tct_untrack_server(p->dir);
        tct_rmrf(p->dir);
        p->dir[0] = '\0';
    }
    p->port = 0;
}
