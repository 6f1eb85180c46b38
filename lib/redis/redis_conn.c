/*
 * redis_conn.c - per-thread Redis connections, the connect breaker, fork safety.
 *
 * Lifecycle. Each tc__rconns owns a pthread key. A thread's first acquire allocates a slot
 * (the thread's connection, possibly not open), stores it under the key and links it into the
 * object's registry. The slot lives until the thread exits (the key's destructor unlinks and
 * frees it) or the object is freed (which frees every registered slot, then deletes the key).
 * The redisContext inside a slot is opened lazily and replaced whenever it is unusable:
 * after an error hiredis reported on it (c->err), after tc__rconns_release(cs, 1), or when it
 * was opened in another fork generation.
 *
 * Fork. A child must never write to a socket it inherited: the parent is using it and the
 * replies would go to whichever process reads first. Every connection records
 * tc__fork_generation() when opened, and so does the object. Every entry point first compares
 * the object's generation with the process's (check_fork); the first call in a child repairs
 * the object before anything else touches it:
 *  - the mutex may have been held, at the instant of fork(), by a parent thread that does not
 *    exist in the child, and would then stay locked forever. pthread_mutex_trylock tells (the
 *    forking thread never holds it across fork): if it is busy, the mutex is re-initialised,
 *    and what it protected may be half-changed. If that thread was relinking the registry
 *    (reg_busy), the registry is abandoned (its memory leaks in the child, in this rare case);
 *    the owner is told through on_torn and checks its own data the same way (the tier, if
 *    its journal was being changed, stops trusting it and clears its whole namespace);
 *  - every inherited connection is closed: redisFree only close()s the child's copy of the
 *    descriptor and sends nothing, so the parent's connection is untouched. A connection that
 *    another thread was using at the instant of fork (busy) may have its buffers caught
 *    half-reallocated, so only its descriptor is closed and its memory is left alone.
 * Holding the mutexes across fork() with a pthread_atfork prepare handler would keep the data
 * consistent instead, but it orders our locks after every lock that other prepare handlers
 * take, and a caller that holds such a lock while it calls us (tc_shared does, building the
 * shared handle) would deadlock against a concurrent fork(). The lazy repair takes no lock at
 * fork time at all.
 * The mutex is only ever held for short sections without I/O.
 *
 * Connecting. A connection is usable only after every step succeeded: the TCP or unix-socket
 * connect, the command timeout, TCP keepalive (when asked for), AUTH (when a password is set)
 * and SELECT (when database > 0). A step that fails is a failed connect: the connection is
 * closed, the breaker counts it, and the message names the step and the server's error text,
 * never the password.
 *
 * Breaker. A failed connect stores "skip until now + interval" (monotonic) in an atomic shared
 * by all threads; until then acquire fails at once instead of waiting for another connect
 * timeout. The interval is retry_interval_ms after one failure and doubles with each further
 * failed connect in a row, up to retry_max_ms (no growth when that is <= retry_interval_ms);
 * a successful connect clears the breaker and the count. So a dead Redis costs one connect
 * attempt per interval and thread that needs one, not one per call; threads whose attempts
 * fail together count as one failure (trip_breaker). A thread whose connection is already open
 * keeps using it: it is not the connect that failed for it.
 *
 * NOAUTH. A server that lost our authentication (restarted with a password, or one that needs
 * a password we were not given) answers every command with a NOAUTH error on a connection that
 * is otherwise fine. Each connection's reply reader is wrapped (reader_hook) to notice such a
 * reply; the connection is then closed on release like a broken one (the next use reconnects
 * and authenticates again), and the breaker counts a failed connect. Until a connect proves
 * otherwise, connects without a password send a PING and count a NOAUTH answer as a failure,
 * so a tier without the password backs off instead of reconnecting on every call.
 */
#include "redis/redis_conn.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct slot {
    struct slot *prev, *next; /* the object's registry, under cs->mu */
    unsigned epoch;           /* the registry it was linked into (see fork_repair) */
    tc__rconns *cs;
    redisContext *ctx;        /* NULL: not open. Set and cleared under cs->mu */
    unsigned gen;             /* tc__fork_generation() when ctx was opened */
    atomic_int busy;          /* between acquire and release: hiredis may be mid-update */
    int noauth;               /* ctx received a NOAUTH error (set by reader_hook, this thread) */
    unsigned track_gen;       /* cs->track_gen that ctx's CLIENT TRACKING was set for */
    int tracking;             /* CLIENT TRACKING is on on ctx */
} slot;

struct tc__rconns {
    pthread_mutex_t mu;
    pthread_key_t key;
    slot *slots;                     /* under mu */
    atomic_uint epoch;               /* changed only by fork_repair, which holds mu */
    atomic_uint gen;                 /* the fork generation the state belongs to */
    atomic_uint repairing;           /* generation + 1 of a repair in progress, or 0 */
    /* CLIENT TRACKING's target (tc__rconns_set_tracking): the subscriber connection's client
     * id (0: none), and a generation that moves with it. */
    atomic_llong track_id;
    atomic_uint track_gen;
    const char *track_prefix; /* the namespace, the tier's (it outlives this object) */
    size_t track_prefix_len;
    atomic_int reg_busy;             /* the registry is being relinked (see fork_repair) */
    char last_err[320];              /* the last connect failure, under mu */
    char *host, *unix_socket, *where;
    char *username, *password;       /* NULL: none. password is wiped before it is freed */
    int port, database, keepalive;
    struct timeval connect_tv, command_tv;
    int64_t retry_interval_ms, retry_max_ms;
    atomic_llong skip_until;         /* tc__now_ms() before which connects are skipped; 0: none */
    atomic_int fails;                /* failed connects in a row (the backoff's exponent) */
    atomic_int probe_auth;           /* a NOAUTH was seen: PING after connects without AUTH */
    const void *owner;
    tc__stats *stats;
    void (*on_torn)(void *);
    void *on_torn_arg;
    /* The one connection no thread owns (tc__rconns_acquire_shared): used by whichever thread
     * leads the auto-pipeline at the moment, which serializes its users. In the registry like
     * the threads' slots, so that fork_repair closes it in a child. */
    slot *shared;
};

/* ---- fork -------------------------------------------------------------------------------- */

static void fork_repair(tc__rconns *cs, unsigned g)
{
    /* One thread repairs, others wait for it. Right after fork() only the forking thread
     * exists, but threads the child starts may race here. A repair-in-progress mark left by a
     * thread of an ancestor process (a lower generation) is stale: take it over. */
    unsigned want = g + 1;
    for (;;) {
        unsigned cur = atomic_load(&cs->repairing);
        if (cur == want) {
            if (atomic_load(&cs->gen) == g)
                return;
            sched_yield();
            continue;
        }
        if (atomic_compare_exchange_weak(&cs->repairing, &cur, want))
            break;
    }
    if (atomic_load(&cs->gen) != g) {
        if (pthread_mutex_trylock(&cs->mu) != 0) {
            /* Held by a thread that did not survive fork(). Re-initialising a locked mutex is
             * what glibc does to its own locks in a child; nobody here can be waiting on it. */
            pthread_mutex_init(&cs->mu, NULL);
            pthread_mutex_lock(&cs->mu);
            if (atomic_load(&cs->reg_busy)) {
                /* It was relinking the registry: abandon it (its memory stays allocated). */
                cs->slots = NULL;
                atomic_fetch_add(&cs->epoch, 1);
                atomic_store(&cs->reg_busy, 0);
            }
            if (cs->on_torn != NULL)
                cs->on_torn(cs->on_torn_arg);
        }
        for (slot *s = cs->slots; s != NULL; s = s->next) {
            if (s->ctx == NULL || s->gen == g)
                continue;
            if (atomic_load(&s->busy)) {
                if (s->ctx->fd >= 0)
                    close(s->ctx->fd);
            } else {
                redisFree(s->ctx);
            }
            s->ctx = NULL;
            atomic_store(&s->busy, 0);
        }
        pthread_mutex_unlock(&cs->mu);
        atomic_store(&cs->gen, g);
    }
    atomic_store(&cs->repairing, 0);
}

/* At the top of every entry point: an atomic load when nothing forked. */
static void check_fork(tc__rconns *cs)
{
    unsigned g = tc__fork_generation();
    if (atomic_load_explicit(&cs->gen, memory_order_acquire) != g)
        fork_repair(cs, g);
}

/* ---- slots ------------------------------------------------------------------------------- */

/* Marks, under mu, the registry as being changed, so that a child whose fork caught the mutex
 * held knows whether the list can be trusted (the holder may have been doing something else).
 * The seq_cst exchange (acquire and release, a full barrier on x86) keeps the list's stores
 * after the mark, the seq_cst store that clears it keeps them before. (Not a bare
 * atomic_thread_fence: TSan does not model those.) */
static void reg_begin(tc__rconns *cs)
{
    (void)atomic_exchange(&cs->reg_busy, 1);
}

static void reg_end(tc__rconns *cs)
{
    atomic_store(&cs->reg_busy, 0);
}

/* Under the lock so that fork_repair sees either the whole context or none. */
static void slot_close(tc__rconns *cs, slot *s)
{
    pthread_mutex_lock(&cs->mu);
    redisContext *c = s->ctx;
    s->ctx = NULL;
    pthread_mutex_unlock(&cs->mu);
    if (c != NULL)
        redisFree(c);
}

static void slot_link(tc__rconns *cs, slot *s)
{
    pthread_mutex_lock(&cs->mu);
    reg_begin(cs);
    s->prev = NULL;
    s->next = cs->slots;
    if (cs->slots != NULL)
        cs->slots->prev = s;
    cs->slots = s;
    s->epoch = atomic_load(&cs->epoch);
    reg_end(cs);
    pthread_mutex_unlock(&cs->mu);
}

/* The key's destructor: runs on a thread's exit, on that thread. */
static void slot_destroy(void *p)
{
    slot *s = p;
    tc__rconns *cs = s->cs;
    check_fork(cs);
    pthread_mutex_lock(&cs->mu);
    if (s->epoch == atomic_load(&cs->epoch)) { /* else: in an abandoned registry */
        reg_begin(cs);
        if (s->prev != NULL)
            s->prev->next = s->next;
        else
            cs->slots = s->next;
        if (s->next != NULL)
            s->next->prev = s->prev;
        reg_end(cs);
    }
    redisContext *c = s->ctx;
    s->ctx = NULL;
    pthread_mutex_unlock(&cs->mu);
    if (c != NULL)
        redisFree(c);
    free(s);
}

/* ---- the object -------------------------------------------------------------------------- */

/* NULL for NULL or "" (both mean "not set"); *oom on a failed copy. */
static char *dup_opt(const char *s, int *oom)
{
    if (s == NULL || s[0] == '\0')
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

/* Frees a secret after overwriting it: the heap block would otherwise keep the password until
 * it is reused, for a core dump or a heap read to find. The volatile pointer keeps the compiler
 * from removing the stores as dead (explicit_bzero needs glibc 2.25). */
void tc__free_secret(char *s)
{
    if (s == NULL)
        return;
    volatile char *v = s;
    while (*v != '\0')
        *v++ = '\0';
    free(s);
}

static void free_strings(tc__rconns *cs)
{
    free(cs->host);
    free(cs->unix_socket);
    free(cs->where);
    free(cs->username);
    tc__free_secret(cs->password);
}

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

/* The options' checks, each with a message naming the option. */
static int check_opts(const tc__rconns_opts *opts, const void *owner)
{
    int use_unix = opts->unix_socket != NULL && opts->unix_socket[0] != '\0';
    if (!use_unix && (opts->host == NULL || opts->host[0] == '\0'))
        return tc__err(owner, TC_EINVAL, "redis: neither a host nor a unix socket is set");
    if (!use_unix && (opts->port < 1 || opts->port > 65535))
        return tc__err(owner, TC_EINVAL, "redis: port %d is out of range (1 .. 65535)",
                       opts->port);
    if (opts->connect_timeout_ms < 1 || opts->command_timeout_ms < 1)
        return tc__err(owner, TC_EINVAL, "redis: timeouts must be at least 1 ms");
    if (opts->retry_interval_ms < 0)
        return tc__err(owner, TC_EINVAL, "redis: retry_interval_ms is negative");
    if (opts->retry_max_ms < 0)
        return tc__err(owner, TC_EINVAL, "redis: retry_max_ms is negative");
    if (opts->database < 0)
        return tc__err(owner, TC_EINVAL, "redis: database %d is negative", opts->database);
    /* AUTH username password needs both; a user name alone would silently run as default. */
    if (opts->username != NULL && opts->username[0] != '\0' &&
        (opts->password == NULL || opts->password[0] == '\0'))
        return tc__err(owner, TC_EINVAL, "redis: a username is set but no password");
    return TC_OK;
}

int tc__rconns_new(tc__rconns **out, const tc__rconns_opts *opts, const void *owner,
                   tc__stats *stats)
{
    if (out == NULL)
        return tc__err(owner, TC_EINVAL, "redis: out is NULL");
    *out = NULL;
    if (opts == NULL || stats == NULL)
        return tc__err(owner, TC_EINVAL, "redis: options or stats are NULL");
    int rc = check_opts(opts, owner);
    if (rc != TC_OK)
        return rc;
    int use_unix = opts->unix_socket != NULL && opts->unix_socket[0] != '\0';
    tc__rconns *cs = calloc(1, sizeof *cs);
    if (cs == NULL)
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    /* Also registers process.c's atfork handler now, before any connection exists. */
    atomic_init(&cs->gen, tc__fork_generation());
    atomic_init(&cs->epoch, 0);
    atomic_init(&cs->repairing, 0);
    atomic_init(&cs->reg_busy, 0);
    cs->on_torn = opts->on_torn;
    cs->on_torn_arg = opts->on_torn_arg;
    cs->owner = owner;
    cs->stats = stats;
    cs->port = opts->port;
    cs->connect_tv = ms_to_tv(opts->connect_timeout_ms);
    cs->command_tv = ms_to_tv(opts->command_timeout_ms);
    cs->retry_interval_ms = opts->retry_interval_ms;
    cs->retry_max_ms = opts->retry_max_ms;
    cs->database = opts->database;
    cs->keepalive = opts->keepalive != 0;
    atomic_init(&cs->skip_until, 0);
    atomic_init(&cs->track_id, 0);
    atomic_init(&cs->track_gen, 0);
    atomic_init(&cs->fails, 0);
    atomic_init(&cs->probe_auth, 0);
    int oom = 0;
    cs->username = dup_opt(opts->username, &oom);
    cs->password = dup_opt(opts->password, &oom);
    if (use_unix) {
        cs->unix_socket = strdup(opts->unix_socket);
        cs->where = strdup(opts->unix_socket);
    } else {
        cs->host = strdup(opts->host);
        size_t n = strlen(opts->host) + 16;
        cs->where = malloc(n);
        if (cs->where != NULL)
            snprintf(cs->where, n, "%s:%d", opts->host, opts->port);
    }
    if (oom || (use_unix ? cs->unix_socket : cs->host) == NULL || cs->where == NULL) {
        free_strings(cs);
        free(cs);
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    }
    int err = pthread_mutex_init(&cs->mu, NULL);
    if (err == 0) {
        err = pthread_key_create(&cs->key, slot_destroy);
        if (err != 0)
            pthread_mutex_destroy(&cs->mu);
    }
    if (err != 0) {
        free_strings(cs);
        free(cs);
        return tc__err(owner, TC_ENOMEM, "redis: cannot create a lock or thread key: %s",
                       strerror(err));
    }
    cs->shared = calloc(1, sizeof *cs->shared);
    if (cs->shared == NULL) {
        tc__rconns_free(cs);
        return tc__err(owner, TC_ENOMEM, "redis: out of memory");
    }
    cs->shared->cs = cs;
    slot_link(cs, cs->shared);
    *out = cs;
    return TC_OK;
}

void tc__rconns_free(tc__rconns *cs)
{
    if (cs == NULL)
        return;
    check_fork(cs); /* in a child: a mutex that may be stuck, inherited sockets closed */

    /* After this no exiting thread calls slot_destroy for our key (POSIX: deleting a key runs
     * no destructors, and later exits do not see it), so the registry below is ours alone.
     * Live threads still hold a stale value under the deleted key; glibc never hands it out
     * again (a new key with the same index starts out NULL for every thread). */
    pthread_key_delete(cs->key);
    slot *s = cs->slots;
    int shared_seen = 0;
    while (s != NULL) {
        slot *next = s->next;
        shared_seen |= s == cs->shared;
        if (s->ctx != NULL)
            redisFree(s->ctx);
        free(s);
        s = next;
    }
    if (!shared_seen && cs->shared != NULL) { /* out of an abandoned registry */
        if (cs->shared->ctx != NULL)
            redisFree(cs->shared->ctx);
        free(cs->shared);
    }
    pthread_mutex_destroy(&cs->mu);
    free_strings(cs);
    free(cs);
}

const char *tc__rconns_where(const tc__rconns *cs)
{
    return cs->where;
}

void tc__rconns_lock(tc__rconns *cs)
{
    check_fork(cs);
    pthread_mutex_lock(&cs->mu);
}

void tc__rconns_unlock(tc__rconns *cs)
{
    pthread_mutex_unlock(&cs->mu);
}

/* ---- connecting -------------------------------------------------------------------------- */

/* How long connects are skipped after fails failed connects in a row (fails >= 1):
 * retry_interval_ms, doubled per further failure, capped at retry_max_ms. */
static int64_t backoff_ms(const tc__rconns *cs, int fails)
{
    int64_t iv = cs->retry_interval_ms;
    int64_t cap = cs->retry_max_ms > iv ? cs->retry_max_ms : iv;
    for (int i = 1; i < fails && iv < cap; i++)
        iv = iv > cap / 2 ? cap : iv * 2;
    return iv;
}

/* Records a failed connect; returns how long connects are now skipped (0: never skipped).
 * seen is the skip time the attempt started from. Threads whose attempts started from the same
 * one (they all found it passed, or unset) fail as one: the first re-arms the breaker and counts
 * the failure, the others find it re-armed and leave it, so N threads failing together do not
 * multiply the interval by 2^N. A thread that finds it cleared by a connect that worked in the
 * meantime leaves it cleared. */
static int64_t trip_breaker(tc__rconns *cs, const char *why, int64_t seen)
{
    pthread_mutex_lock(&cs->mu);
    snprintf(cs->last_err, sizeof cs->last_err, "%s", why);
    pthread_mutex_unlock(&cs->mu);
    if (cs->retry_interval_ms <= 0)
        return 0;
    /* Saturates far above the point where the interval stops growing (2^62 ms). */
    int fails = atomic_load(&cs->fails) + 1;
    if (fails > 64)
        fails = 64;
    int64_t iv = backoff_ms(cs, fails);
    long long expected = seen; /* skip_until is an atomic_llong */
    if (atomic_compare_exchange_strong(&cs->skip_until, &expected, tc__now_ms() + iv)) {
        atomic_store(&cs->fails, fails);
        return iv;
    }
    /* Another thread re-armed (or cleared) it since: report what stands. */
    int64_t left = expected != 0 ? expected - tc__now_ms() : 0;
    return left > 0 ? left : 0;
}

void tc__rconns_timed_out(tc__rconns *cs, const char *why)
{
    trip_breaker(cs, why, atomic_load(&cs->skip_until));
}

int tc__redis_ctx_code(const redisContext *c)
{
    return c->err == REDIS_ERR_OOM        ? TC_ENOMEM
           : c->err == REDIS_ERR_PROTOCOL ? TC_EPROTO
                                          : TC_EREDIS;
}

int tc__redis_ctx_timed_out(const redisContext *c)
{
#ifdef REDIS_ERR_TIMEOUT
    if (c->err == REDIS_ERR_TIMEOUT)
        return 1;
#endif
    /* hiredis keeps errno only as text (strerror of the failed read or write). */
    return c->err == REDIS_ERR_IO &&
           (strcmp(c->errstr, strerror(EAGAIN)) == 0 ||
            strcmp(c->errstr, strerror(ETIMEDOUT)) == 0);
}

/* NOAUTH replies, seen where they are parsed. hiredis builds every reply through the reader's
 * function table; each connection gets a copy of hiredis's default table whose createString
 * also flags, in the connection's slot (the reader's privdata, handed to every read task), an
 * error reply that starts with NOAUTH. The table is copied from a reader hiredis creates with
 * its defaults, so it has whatever members the linked hiredis version defines. */
static redisReplyObjectFunctions hook_fns;
static const redisReplyObjectFunctions *default_fns; /* NULL: the hook is not available */
static void *(*default_create_string)(const redisReadTask *, char *, size_t);
static pthread_once_t hook_once = PTHREAD_ONCE_INIT;

static void *hooked_create_string(const redisReadTask *task, char *str, size_t len)
{
    if (task->type == REDIS_REPLY_ERROR && task->privdata != NULL && len >= 6 &&
        memcmp(str, "NOAUTH", 6) == 0)
        ((slot *)task->privdata)->noauth = 1;
    return default_create_string(task, str, len);
}

static void hook_init(void)
{
    redisReader *rd = redisReaderCreate();
    if (rd == NULL)
        return; /* out of memory: connections go unhooked (NOAUTH is then a plain error) */
    if (rd->fn != NULL && rd->fn->createString != NULL) {
        hook_fns = *rd->fn;
        default_create_string = hook_fns.createString;
        hook_fns.createString = hooked_create_string;
        default_fns = rd->fn; /* hiredis's static table: outlives the reader */
    }
    redisReaderFree(rd);
}

static void reader_hook(redisContext *c, slot *s)
{
    pthread_once(&hook_once, hook_init);
    /* Only a reader that uses the defaults: someone else's table is not ours to wrap. */
    if (default_fns != NULL && c->reader != NULL && c->reader->fn == default_fns &&
        c->reader->privdata == NULL) {
        c->reader->fn = &hook_fns;
        c->reader->privdata = s;
    }
}

/* Appends src[0 .. len) to out (size n, NUL-terminated) with every occurrence of secret
 * replaced: a server may echo what it was sent, and the password must never reach a message. */
void tc__append_redacted(char *out, size_t n, const char *src, size_t len, const char *secret)
{
    size_t o = strlen(out), sl = secret != NULL ? strlen(secret) : 0;
    for (size_t i = 0; i < len && o + 1 < n;) {
        if (sl > 0 && len - i >= sl && memcmp(src + i, secret, sl) == 0) {
            o += (size_t)snprintf(out + o, n - o, "%s", "(password)");
            if (o >= n)
                o = n - 1;
            i += sl;
            continue;
        }
        out[o++] = src[i] == '\r' || src[i] == '\n' ? ' ' : src[i];
        out[o] = '\0';
        i++;
    }
}

/* Sends one setup command (AUTH, SELECT, PING) and wants expect as its status reply. 0 on
 * success; otherwise -1 with why = "<label> failed: <reason>". what the server says is
 * passed through, redacted; the command itself (which may hold the password) is never shown. */
static int setup_cmd(tc__rconns *cs, redisContext *c, const char *label, int argc,
                     const char **argv, const char *expect, char *why, size_t n)
{
    size_t lens[3];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);
    if (rep == NULL) {
        snprintf(why, n, "%s failed: %s", label, c->err != 0 ? c->errstr : "no reply");
        return -1;
    }
    int ok = rep->type == REDIS_REPLY_STATUS && rep->str != NULL && strcmp(rep->str, expect) == 0;
    if (!ok) {
        snprintf(why, n, "%s failed: ", label);
        if (rep->type == REDIS_REPLY_ERROR && rep->str != NULL)
            tc__append_redacted(why, n, rep->str, rep->len > 200 ? 200 : rep->len, cs->password);
        else
            tc__append_redacted(why, n, "unexpected reply", 16, NULL);
    }
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

/* Everything between the socket's connect and the connection's first use. 0 on success;
 * otherwise -1 and why says which step failed (c->err may be set, or a reply was an error). */
static int setup_ctx(tc__rconns *cs, slot *s, redisContext *c, char *why, size_t n)
{
    if (c->err != 0) {
        snprintf(why, n, "connect failed: %s", c->errstr);
        return -1;
    }
    /* hiredis 0.14 also applies the connect timeout to commands; replace it. */
    if (redisSetTimeout(c, cs->command_tv) != REDIS_OK) {
        snprintf(why, n, "setting the command timeout failed%s%s", c->err != 0 ? ": " : "",
                 c->err != 0 ? c->errstr : "");
        return -1;
    }
    /* Finds a peer that vanished without a FIN (host down, NAT dropped the flow). */
    if (cs->keepalive && cs->unix_socket == NULL && redisEnableKeepAlive(c) != REDIS_OK) {
        snprintf(why, n, "enabling TCP keepalive failed%s%s", c->err != 0 ? ": " : "",
                 c->err != 0 ? c->errstr : "");
        return -1;
    }
    reader_hook(c, s);
    if (cs->password != NULL) {
        /* argv-style: the password goes out as one bulk string, whatever bytes it holds. */
        const char *argv[3] = {"AUTH", cs->username != NULL ? cs->username : cs->password,
                               cs->password};
        char label[300];
        if (cs->username != NULL)
            snprintf(label, sizeof label, "AUTH as user \"%.200s\"", cs->username);
        else
            snprintf(label, sizeof label, "AUTH");
        if (setup_cmd(cs, c, label, cs->username != NULL ? 3 : 2, argv, "OK", why, n) != 0)
            return -1;
    } else if (atomic_load(&cs->probe_auth)) {
        /* A connection of ours was told NOAUTH: find out now whether this one would be too,
         * so that it counts as a failed connect (and backs off) instead of a working one. */
        const char *argv[1] = {"PING"};
        if (setup_cmd(cs, c, "PING (the server wanted authentication, no password is set)", 1,
                      argv, "PONG", why, n) != 0)
            return -1;
    }
    if (cs->database > 0) {
        char db[16], label[32];
        snprintf(db, sizeof db, "%d", cs->database);
        snprintf(label, sizeof label, "SELECT %d", cs->database);
        const char *argv[2] = {"SELECT", db};
        if (setup_cmd(cs, c, label, 2, argv, "OK", why, n) != 0)
            return -1;
    }
    return 0;
}

/* seen: the breaker's skip time when the attempt began (see trip_breaker). */
static int open_ctx(tc__rconns *cs, slot *s, int64_t seen)
{
    tc__sigpipe_refresh();
    redisContext *c = cs->unix_socket != NULL
                          ? redisConnectUnixWithTimeout(cs->unix_socket, cs->connect_tv)
                          : redisConnectWithTimeout(cs->host, cs->port, cs->connect_tv);
    if (c == NULL)
        return tc__err(cs->owner, TC_ENOMEM, "redis %s: out of memory opening a connection",
                       cs->where);
    char why[sizeof cs->last_err];
    why[0] = '\0';
    s->noauth = 0;
    if (setup_ctx(cs, s, c, why, sizeof why) != 0) {
        int oom = c->err == REDIS_ERR_OOM;
        redisFree(c);
        s->noauth = 0;
        if (oom)
            return tc__err(cs->owner, TC_ENOMEM, "redis %s: %s", cs->where, why);
        int64_t skip = trip_breaker(cs, why, seen);
        if (skip > 0)
            return tc__err(cs->owner, TC_EREDIS, "redis %s: %s (skipping Redis for %lld ms)",
                           cs->where, why, (long long)skip);
        return tc__err(cs->owner, TC_EREDIS, "redis %s: %s", cs->where, why);
    }
    pthread_mutex_lock(&cs->mu);
    s->ctx = c;
    s->gen = tc__fork_generation();
    s->track_gen = 0; /* a new connection: CLIENT TRACKING is off on it */
    s->tracking = 0;
    pthread_mutex_unlock(&cs->mu);
    atomic_store(&cs->fails, 0);
    atomic_store(&cs->skip_until, 0);
    atomic_store(&cs->probe_auth, 0);
    TC__INC(cs->stats->connects);
    return TC_OK;
}

void tc__rconns_set_tracking(tc__rconns *cs, long long client_id, const char *prefix,
                             size_t prefix_len)
{
    cs->track_prefix = prefix; /* the same every time: written before the id is published */
    cs->track_prefix_len = prefix_len;
    atomic_store(&cs->track_id, client_id);
    atomic_fetch_add(&cs->track_gen, 1);
}

/* One tracking command on s's connection; an error reply is not a failure (see track_check),
 * a NULL reply (the connection broke) is. */
static int track_cmd(slot *s, int argc, const char **argv, const size_t *lens)
{
    redisReply *rep = tc__resp_command(s->ctx, argc, argv, lens);
    if (rep == NULL)
        return -1;
    int ok = rep->type == REDIS_REPLY_STATUS;
    freeReplyObject(rep);
    return ok;
}

/* Before a connection's next command after the tracking target changed: CLIENT TRACKING on,
 * redirected to the subscriber connection, in BCAST mode for the namespace, so that Redis tells
 * it of every change of a key under the namespace, whoever made it. BCAST rather than the
 * default mode, which tracks only keys a connection read and forgets a key once it changes:
 * the handle's own fill after a store read (a write) would then untrack the very key it put in
 * the edge. NOLOOP: not for this connection's own writes. A new target needs tracking off
 * first (a prefix cannot be registered twice). A refusal (a server before Redis 6, or a target
 * that went away a moment ago: its link is down, so the edge is out of service until the next
 * target) leaves the connection as it is; a broken connection is an error, the caller's
 * command not sent. */
static int track_check(redisContext **out, tc__rconns *cs, slot *s)
{
    unsigned gen = atomic_load(&cs->track_gen);
    if (s->track_gen == gen)
        return TC_OK;
    long long id = atomic_load(&cs->track_id);
    s->track_gen = gen;
    if (id == 0)
        return TC_OK;
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", id);
    const char *off[3] = {"CLIENT", "TRACKING", "off"};
    size_t off_lens[3] = {6, 8, 3};
    const char *on[9] = {"CLIENT", "TRACKING", "on", "REDIRECT", ids, "BCAST", "PREFIX",
                         cs->track_prefix, "NOLOOP"};
    size_t on_lens[9] = {6, 8, 2, 8, strlen(ids), 5, 6, cs->track_prefix_len, 6};
    int rc = s->tracking ? track_cmd(s, 3, off, off_lens) : 1;
    if (rc >= 0) {
        s->tracking = 0;
        rc = track_cmd(s, 9, on, on_lens);
        s->tracking = rc > 0;
    }
    if (rc < 0) {
        atomic_store(&s->busy, 0);
        slot_close(cs, s);
        *out = NULL;
        return tc__err(cs->owner, TC_EREDIS, "redis %s: CLIENT TRACKING failed", cs->where);
    }
    return TC_OK;
}

/* A usable connection in s, reused or opened (both kinds of slot). */
static int acquire_slot(redisContext **out, tc__rconns *cs, slot *s)
{
    if (s->epoch != atomic_load(&cs->epoch))
        slot_link(cs, s); /* its registry was abandoned in a fork repair */
    if (s->ctx != NULL && s->gen != tc__fork_generation())
        slot_close(cs, s); /* the parent's socket: close our copy, never write to it */
    if (s->ctx != NULL && (s->ctx->err != 0 || s->noauth))
        slot_close(cs, s);
    if (s->ctx != NULL) {
        TC__INC(cs->stats->reuses);
        atomic_store(&s->busy, 1);
        *out = s->ctx;
        return track_check(out, cs, s);
    }

    int64_t until = atomic_load(&cs->skip_until);
    if (cs->retry_interval_ms > 0 && until != 0) {
        int64_t now = tc__now_ms();
        if (now < until) {
            char why[sizeof cs->last_err];
            pthread_mutex_lock(&cs->mu);
            memcpy(why, cs->last_err, sizeof why);
            pthread_mutex_unlock(&cs->mu);
            return tc__err(cs->owner, TC_EREDIS,
                           "redis %s: skipped until retry in %lld ms (last connect: %s)",
                           cs->where, (long long)(until - now), why);
        }
    }
    int rc = open_ctx(cs, s, until);
    if (rc != TC_OK)
        return rc;
    atomic_store(&s->busy, 1);
    *out = s->ctx;
    return track_check(out, cs, s);
}

int tc__rconns_acquire(redisContext **out, tc__rconns *cs)
{
    *out = NULL;
    check_fork(cs);
    slot *s = pthread_getspecific(cs->key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL)
            return tc__err(cs->owner, TC_ENOMEM, "redis %s: out of memory", cs->where);
        s->cs = cs;
        if (pthread_setspecific(cs->key, s) != 0) {
            free(s);
            return tc__err(cs->owner, TC_ENOMEM, "redis %s: out of memory", cs->where);
        }
        slot_link(cs, s);
    }
    return acquire_slot(out, cs, s);
}

int tc__rconns_acquire_shared(redisContext **out, tc__rconns *cs)
{
    *out = NULL;
    check_fork(cs);
    return acquire_slot(out, cs, cs->shared);
}

static void release_slot(tc__rconns *cs, slot *s, int close_it)
{
    atomic_store(&s->busy, 0);
    if (s->noauth) {
        /* The server no longer accepts this connection's commands: reconnect (and AUTH) on
         * the next use; connects without a password check first (see setup_ctx). */
        atomic_store(&cs->probe_auth, 1);
        close_it = 1;
    }
    if (close_it)
        slot_close(cs, s);
}

void tc__rconns_release(tc__rconns *cs, int close_it)
{
    slot *s = pthread_getspecific(cs->key);
    if (s != NULL)
        release_slot(cs, s, close_it);
}

void tc__rconns_release_shared(tc__rconns *cs, int close_it)
{
    release_slot(cs, cs->shared, close_it);
}

/* ---- SIGPIPE ----------------------------------------------------------------------------- */

/* Whether SIGPIPE was ignored (SIG_IGN) when a connection was last opened, as most servers
 * set it: then a write to a dead socket cannot kill the process and the guard below costs two
 * system calls per command for nothing (about a tenth of a loopback GET here). Read at every
 * connect (a syscall per connect, not per command). An application that stops ignoring
 * SIGPIPE later is covered from its next connect on. */
static atomic_int sigpipe_ignored;

void tc__sigpipe_refresh(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0)
        atomic_store_explicit(&sigpipe_ignored, sa.sa_handler == SIG_IGN, memory_order_relaxed);
}

void tc__sigpipe_block(tc__sigpipe_guard *g)
{
    if (atomic_load_explicit(&sigpipe_ignored, memory_order_relaxed)) {
        g->blocked = 0;
        return;
    }
    sigset_t set;
    int saved = errno;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    g->was_pending = 0;
    g->blocked = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0;
    if (g->blocked && sigismember(&g->old, SIGPIPE)) {
        /* Already blocked by the application: a SIGPIPE pending now is its own, keep it. */
        sigset_t pend;
        if (sigpending(&pend) == 0)
            g->was_pending = sigismember(&pend, SIGPIPE);
    }
    errno = saved;
}

void tc__sigpipe_restore(tc__sigpipe_guard *g, int io_failed)
{
    if (!g->blocked)
        return;
    int saved = errno;
    if (io_failed && !g->was_pending) {
        sigset_t pend;
        if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE)) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGPIPE);
            struct timespec zero = {0, 0};
            while (sigtimedwait(&set, NULL, &zero) == -1 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    errno = saved;
}

/* ---- commands in RESP ---------------------------------------------------------------------- */

static size_t dec_digits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static char *put_dec(char *p, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

size_t tc__resp_size(int argc, const size_t *lens)
{
    size_t n = 1 + dec_digits((size_t)argc) + 2; /* *<argc>\r\n */
    for (int i = 0; i < argc; i++)
        n += 1 + dec_digits(lens[i]) + 2 + lens[i] + 2; /* $<len>\r\n<bytes>\r\n */
    return n;
}

char *tc__resp_write(char *out, int argc, const char *const *argv, const size_t *lens)
{
    char *p = out;
    *p++ = '*';
    p = put_dec(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        *p++ = '$';
        p = put_dec(p, lens[i]);
        *p++ = '\r';
        *p++ = '\n';
        if (lens[i] > 0)
            memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    return p;
}

redisReply *tc__resp_command(redisContext *c, int argc, const char *const *argv,
                             const size_t *lens)
{
    char stack[1024];
    size_t len = tc__resp_size(argc, lens);
    char *buf = len <= sizeof stack ? stack : malloc(len);
    if (buf == NULL) /* hiredis then fails the same way and sets c->err */
        return redisCommandArgv(c, argc, (const char **)argv, lens);
    tc__resp_write(buf, argc, argv, lens);
    int rc = redisAppendFormattedCommand(c, buf, len);
    if (buf != stack)
        free(buf);
    void *reply = NULL;
    if (rc != REDIS_OK || redisGetReply(c, &reply) != REDIS_OK)
        return NULL;
    return reply;
}
