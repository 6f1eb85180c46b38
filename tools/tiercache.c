/*
 * tiercache.c - the command-line tool: reads, writes and invalidates through the same tiers a
 * service uses, prints the counters, and runs the invalidator daemon. Run as
 * tiercache-invalidator (a link to it), it is the invalidator.
 *
 * Exit codes (stable, for scripts):
 *   0  done                        3  bad configuration
 *   1  key not found (get)         4  the store, Redis or the system failed
 *   2  bad usage                   5  another invalidator holds the feed (invalidator --once)
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tiercache.h>

enum { EX_OK, EX_NOTFOUND, EX_USAGE, EX_CONFIG, EX_FAIL, EX_STANDBY };

static const char *prog = "tiercache";

static const char usage_text[] =
    "usage: tiercache [-c FILE] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  get KEY                 print KEY's value (bytes as stored) on stdout\n"
    "  put [--ttl MS] KEY [VALUE]\n"
    "                          write KEY through to the store and the caches; the value is\n"
    "                          VALUE, or standard input when VALUE is absent or \"-\"\n"
    "  del KEY                 delete KEY from the store and every tier\n"
    "  invalidate PATH|#TAG... take entries out of the caches, as create-invalidation does:\n"
    "                          a path pattern (\"/images/*\", \"*\" and \"?\" anywhere) or a\n"
    "                          surrogate-key tag after \"#\"; prints how many were removed\n"
    "  stats                   print the handle's counters as JSON\n"
    "  invalidator [--once]    apply the database's change feed to Redis and every edge tier\n"
    "                          until SIGINT/SIGTERM (--once: one pass over the backlog)\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE       the configuration (JSON); default: $TIERCACHE_CONFIG (a file\n"
    "                          path, or inline JSON starting with '{'), else the defaults\n"
    "  -h, --help              this text; COMMAND --help tells about one command\n"
    "  -V, --version           the library's version\n"
    "\n"
    "Exit status: 0 done, 1 key not found, 2 bad usage, 3 bad configuration, 4 the store,\n"
    "Redis or the system failed, 5 another invalidator holds the feed (invalidator --once).\n";

static const struct {
    const char *name, *help;
} commands[] = {
    {"get", "usage: tiercache get KEY\n"
            "Prints KEY's value on stdout, exactly its bytes (no newline is added).\n"
            "Exit status 1 when the key does not exist.\n"},
    {"put", "usage: tiercache put [--ttl MS] KEY [VALUE]\n"
            "Writes KEY = VALUE (or standard input, when VALUE is absent or \"-\") through to the\n"
            "store; when it returns, the store committed and the caches hold the new value.\n"
            "--ttl MS: the caches keep it MS milliseconds (default: default_ttl_ms).\n"},
    {"del", "usage: tiercache del KEY\n"
            "Deletes KEY from the store, then from every tier (versioned tombstones).\n"},
    {"invalidate",
     "usage: tiercache invalidate PATH|#TAG...\n"
     "Takes entries out of the caches (the store keeps them): each argument is a path pattern\n"
     "(\"/images/*\"; \"*\" matches any run of bytes, \"?\" one byte, \"\\\" escapes) or, after\n"
     "\"#\", a surrogate-key tag. Prints one line per argument: the argument and the number\n"
     "of entries removed from this handle's edge and from Redis.\n"},
    {"stats", "usage: tiercache stats\n"
              "Prints the handle's counters (edge, redis, store) as one JSON object.\n"},
    {"invalidator",
     "usage: tiercache invalidator [--once]   (or: tiercache-invalidator [--once])\n"
     "Reads the store's change feed (every insert, update and delete, plain SQL included) after\n"
     "its checkpoint and takes the changed keys' older copies out of Redis and, over the bus,\n"
     "out of every process's edge tier. One invalidator per feed.consumer is active; others\n"
     "wait as standbys and take over when its lease expires. Logs what it does on stderr;\n"
     "on a terminal, shows its progress while it catches up on a backlog.\n"
     "--once: apply the backlog and exit (status 5 if another invalidator holds the feed).\n"},
};

static int help_for(const char *cmd)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, cmd) == 0) {
            fputs(commands[i].help, stdout);
            return EX_OK;
        }
    fputs(usage_text, stdout);
    return EX_OK;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    fprintf(stderr, "%s: ", prog);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(%s --help for usage)\n", prog);
    return EX_USAGE;
}

/* A library failure: its code's exit status, with the detail. */
static int failed(const char *what, int rc, tc_cache *c)
{
    const char *detail = tc_errmsg(c);
    fprintf(stderr, "%s: %s: %s%s%s\n", prog, what, tc_strerror(rc), *detail ? ": " : "", detail);
    if (rc == TC_ENOTFOUND)
        return EX_NOTFOUND;
    if (rc == TC_ECONFIG || rc == TC_EIO)
        return EX_CONFIG;
    if (rc == TC_EINVAL || rc == TC_EKEY || rc == TC_ETOOBIG)
        return EX_USAGE;
    return EX_FAIL;
}

static int open_cache(tc_cache **out, const char *config_path)
{
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return failed("config", rc, NULL);
    const char *env = getenv("TIERCACHE_CONFIG");
    if (config_path != NULL) {
        rc = tc_config_load_file(cfg, config_path);
    } else if (env != NULL && *env != '\0') {
        const char *p = env + strspn(env, " \t\r\n");
        rc = *p == '{' ? tc_config_load_json(cfg, p, strlen(p)) : tc_config_load_file(cfg, env);
    }
    if (rc != TC_OK) {
        fprintf(stderr, "%s: config: %s: %s\n", prog, tc_strerror(rc), tc_config_errmsg(cfg));
        tc_config_free(cfg);
        return rc == TC_EIO || rc == TC_ECONFIG ? EX_CONFIG : EX_FAIL;
    }
    rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc == TC_OK ? EX_OK : failed("open", rc, NULL);
}

static int cmd_get(tc_cache *c, int argc, char **argv)
{
    if (argc != 2)
        return usage_error("get takes one KEY");
    void *v;
    size_t len;
    int rc = tc_get(&v, &len, c, argv[1], strlen(argv[1]));
    if (rc == TC_ENOTFOUND) {
        fprintf(stderr, "%s: %s: not found\n", prog, argv[1]);
        return EX_NOTFOUND;
    }
    if (rc != TC_OK)
        return failed("get", rc, c);
    int ok = fwrite(v, 1, len, stdout) == len && fflush(stdout) == 0;
    tc_free(v);
    if (!ok)
        fprintf(stderr, "%s: get: writing stdout: %s\n", prog, strerror(errno));
    return ok ? EX_OK : EX_FAIL;
}

/* All of standard input, in *out (malloc'd). */
static int read_stdin(char **out, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len, stdin);
        len += n;
        if (n == 0)
            break;
        if (len == cap) {
            char *bigger = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    if (buf == NULL || ferror(stdin)) {
        free(buf);
        return TC_EIO;
    }
    *out = buf;
    *out_len = len;
    return TC_OK;
}

static int cmd_put(tc_cache *c, int argc, char **argv)
{
    int64_t ttl = 0;
    int i = 1;
    if (i < argc && strcmp(argv[i], "--ttl") == 0) {
        char *end;
        errno = 0;
        long long t = i + 1 < argc ? strtoll(argv[i + 1], &end, 10) : -1;
        if (i + 1 >= argc || errno != 0 || *end != '\0' || t < 0)
            return usage_error("--ttl takes a number of milliseconds");
        ttl = t;
        i += 2;
    }
    if (argc - i < 1 || argc - i > 2)
        return usage_error("put takes KEY and an optional VALUE");
    const char *key = argv[i];
    char *value = NULL;
    size_t len;
    int from_stdin = argc - i == 1 || strcmp(argv[i + 1], "-") == 0;
    if (from_stdin) {
        if (read_stdin(&value, &len) != TC_OK) {
            fprintf(stderr, "%s: put: reading stdin failed (or out of memory)\n", prog);
            return EX_FAIL;
        }
    } else {
        len = strlen(argv[i + 1]);
    }
    int rc = tc_put(c, key, strlen(key), from_stdin ? value : argv[i + 1], len, ttl);
    free(value);
    return rc == TC_OK ? EX_OK : failed("put", rc, c);
}

static int cmd_del(tc_cache *c, int argc, char **argv)
{
    if (argc != 2)
        return usage_error("del takes one KEY");
    int rc = tc_del(c, argv[1], strlen(argv[1]));
    return rc == TC_OK ? EX_OK : failed("del", rc, c);
}

static int cmd_invalidate(tc_cache *c, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("invalidate takes at least one PATH or #TAG");
    for (int i = 1; i < argc; i++) {
        int64_t removed = 0;
        const char *a = argv[i];
        int rc = a[0] == '#' ? tc_invalidate_tag(&removed, c, a + 1, strlen(a + 1))
                             : tc_invalidate_pattern(&removed, c, a, strlen(a));
        if (rc != TC_OK)
            return failed(a, rc, c);
        printf("%s\t%lld\n", a, (long long)removed);
    }
    return fflush(stdout) == 0 ? EX_OK : EX_FAIL;
}

static int cmd_stats(tc_cache *c, int argc, char **argv)
{
    if (argc != 1)
        return usage_error("stats takes no argument");
    char *json;
    int rc = tc_stats_json(&json, c);
    if (rc != TC_OK)
        return failed("stats", rc, c);
    printf("%s\n", json);
    tc_free(json);
    return EX_OK;
}

/* ---- the invalidator daemon ----------------------------------------------------------------- */

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void stamp(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    strftime(buf, n, "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm));
}

/* One log line on stderr: a UTC timestamp, the program, the message. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char ts[32];
    stamp(ts, sizeof ts);
    fprintf(stderr, "%s %s: ", ts, prog);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int once_option; /* --once given before the command (tiercache-invalidator --once) */

static int cmd_invalidator(tc_cache *c, int argc, char **argv)
{
    int once = once_option;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0)
            once = 1;
        else
            return usage_error("invalidator: unknown argument %s", argv[i]);
    }
    tc_invalidator *inv;
    int rc = tc_invalidator_new(&inv, c);
    if (rc != TC_OK)
        return failed("invalidator", rc, c);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int tty = isatty(STDERR_FILENO);
    int state = -1; /* 1 active, 0 standby, 2 failing */
    long long total = 0, backlog_done = 0;
    double backlog_t0 = 0;
    int status = EX_OK;
    say("started (pid %lld)", (long long)getpid());
    while (!stopping) {
        int64_t applied = 0, seq = 0;
        rc = tc_invalidator_step(&applied, &seq, inv);
        if (rc == TC_OK) {
            if (state != 1)
                say("active: applying changes after seq %lld", (long long)seq);
            state = 1;
            total += applied;
            if (applied > 0) {
                if (backlog_t0 == 0)
                    backlog_t0 = mono_s();
                backlog_done += applied;
                if (tty) {
                    double dt = mono_s() - backlog_t0;
                    fprintf(stderr,
                            "\r%s: catching up: %lld changes applied (%.0f/s), at seq %lld ",
                            prog, backlog_done, dt > 0 ? backlog_done / dt : 0.0,
                            (long long)seq);
                }
            } else {
                if (backlog_done > 0) {
                    if (tty)
                        fputc('\n', stderr);
                    say("applied %lld changes, checkpoint at seq %lld", backlog_done,
                        (long long)seq);
                    backlog_done = 0;
                    backlog_t0 = 0;
                }
                if (once)
                    break;
                tc_invalidator_wait(inv); /* the next change, or feed.poll_ms */
            }
        } else if (rc == TC_ESTATE) {
            if (state != 0)
                say("standby: another invalidator holds the feed");
            state = 0;
            if (once) {
                status = EX_STANDBY;
                break;
            }
            tc_invalidator_wait(inv); /* try for the lease again after feed.poll_ms */
        } else {
            if (state != 2) {
                const char *d = tc_errmsg(c);
                say("failing, will retry: %s%s%s", tc_strerror(rc), *d ? ": " : "", d);
            }
            state = 2;
            if (once) {
                status = EX_FAIL;
                break;
            }
            tc_invalidator_wait(inv);
        }
    }
    tc_invalidator_free(inv);
    say("stopped after %lld changes", total);
    return status;
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    int as_invalidator = strcmp(base, "tiercache-invalidator") == 0;
    if (as_invalidator)
        prog = "tiercache-invalidator";

    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"once", no_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL;
    int o;
    /* "+": options end at the command, whose own arguments (--ttl, --once) are its own. */
    while ((o = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            config = optarg;
            break;
        case 'h':
            return help_for(as_invalidator ? "invalidator" : "");
        case 'V':
            printf("%s (libtiercache %s)\n", prog, tc_version_string());
            return EX_OK;
        case 'o':
            if (!as_invalidator)
                return usage_error("--once belongs to the invalidator command");
            once_option = 1;
            break;
        default:
            return usage_error("bad option");
        }
    }
    char **args = argv + optind;
    int nargs = argc - optind;
    const char *cmd = as_invalidator ? "invalidator" : nargs > 0 ? args[0] : NULL;
    if (as_invalidator) {
        args--; /* args[0] stands for the command: the arguments proper start at args[1] */
        nargs++;
    }
    if (cmd == NULL)
        return usage_error("no command given");
    for (int i = 1; i < nargs; i++)
        if (strcmp(args[i], "--help") == 0 || strcmp(args[i], "-h") == 0)
            return help_for(cmd);

    static const struct {
        const char *name;
        int (*fn)(tc_cache *, int, char **);
    } table[] = {{"get", cmd_get},     {"put", cmd_put},     {"del", cmd_del},
                 {"invalidate", cmd_invalidate}, {"stats", cmd_stats},
                 {"invalidator", cmd_invalidator}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(table[i].name, cmd) != 0)
            continue;
        tc_cache *c;
        int st = open_cache(&c, config);
        if (st != EX_OK)
            return st;
        st = table[i].fn(c, nargs, args);
        tc_close(c);
        return st;
    }
    return usage_error("unknown command %s", cmd);
}
