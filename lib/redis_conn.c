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
 * Breaker. A failed connect stores "skip until now + retry_interval_ms" (monotonic) in an
 * atomic shared by all threads; until then acquire fails at once instead of waiting for another
 * connect timeout. A thread whose connection is already open keeps using it: it is not the
 * connect that failed for it. A successful connect clears the breaker.
 */
#include "redis_conn.h"

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
} slot;

struct tc__rconns {
    pthread_mutex_t mu;
    pthread_key_t key;
    slot *slots;                     /* under mu */
    atomic_uint epoch;               /* changed only by fork_repair, which holds mu */
    atomic_uint gen;                 /* the fork generation the state belongs to */
    atomic_uint repairing;           /* generation + 1 of a repair in progress, or 0 */
    atomic_int reg_busy;             /* the registry is being relinked (see fork_repair) */
    char last_err[192];              /* the last connect failure, under mu */
    char *host, *unix_socket, *where;
    int port;
    struct timeval connect_tv, command_tv;
    int64_t retry_interval_ms;
    atomic_llong skip_until;         /* tc__now_ms() before which connects are skipped; 0: none */
    const void *owner;
    tc__stats *stats;
    void (*on_torn)(void *);
    void *on_torn_arg;
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

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

int tc__rconns_new(tc__rconns **out, const tc__rconns_opts *opts, const void *owner,
                   tc__stats *stats)
{
    if (out == NULL)
        return tc__err(owner, TC_EINVAL, "redis: out is NULL");
    *out = NULL;
    if (opts == NULL || stats == NULL)
        return tc__err(owner, TC_EINVAL, "redis: options or stats are NULL");
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
    atomic_init(&cs->skip_until, 0);
    if (use_unix) {
        cs->unix_socket = dup_str(opts->unix_socket);
        cs->where = dup_str(opts->unix_socket);
    } else {
        cs->host = dup_str(opts->host);
        size_t n = strlen(opts->host) + 16;
        cs->where = malloc(n);
        if (cs->where != NULL)
            snprintf(cs->where, n, "%s:%d", opts->host, opts->port);
    }
    if ((use_unix ? cs->unix_socket : cs->host) == NULL || cs->where == NULL) {
        free(cs->host);
        free(cs->unix_socket);
        free(cs->where);
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
        free(cs->host);
        free(cs->unix_socket);
        free(cs->where);
        free(cs);
        return tc__err(owner, TC_ENOMEM, "redis: cannot create a lock or thread key: %s",
                       strerror(err));
    }
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
    while (s != NULL) {
        slot *next = s->next;
        if (s->ctx != NULL)
            redisFree(s->ctx);
        free(s);
        s = next;
    }
    pthread_mutex_destroy(&cs->mu);
    free(cs->host);
    free(cs->unix_socket);
    free(cs->where);
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

static void trip_breaker(tc__rconns *cs, const char *why)
{
    pthread_mutex_lock(&cs->mu);
    snprintf(cs->last_err, sizeof cs->last_err, "%s", why);
    pthread_mutex_unlock(&cs->mu);
    if (cs->retry_interval_ms > 0)
        atomic_store(&cs->skip_until, tc__now_ms() + cs->retry_interval_ms);
}

static int open_ctx(tc__rconns *cs, slot *s)
{
    redisContext *c = cs->unix_socket != NULL
                          ? redisConnectUnixWithTimeout(cs->unix_socket, cs->connect_tv)
                          : redisConnectWithTimeout(cs->host, cs->port, cs->connect_tv);
    if (c == NULL)
        return tc__err(cs->owner, TC_ENOMEM, "redis %s: out of memory opening a connection",
                       cs->where);
    const char *step = "connect failed";
    if (c->err == 0) {
        /* hiredis 0.14 also applies the connect timeout to commands; replace it. */
        step = "setting the command timeout failed";
        if (redisSetTimeout(c, cs->command_tv) != REDIS_OK && c->err == 0) {
            redisFree(c);
            trip_breaker(cs, step);
            return tc__err(cs->owner, TC_EREDIS, "redis %s: %s", cs->where, step);
        }
    }
    if (c->err == 0 && cs->unix_socket == NULL) {
        /* Finds a peer that vanished without a FIN (host down, NAT dropped the flow). */
        step = "enabling TCP keepalive failed";
        if (redisEnableKeepAlive(c) != REDIS_OK && c->err == 0) {
            redisFree(c);
            trip_breaker(cs, step);
            return tc__err(cs->owner, TC_EREDIS, "redis %s: %s", cs->where, step);
        }
    }
    if (c->err != 0) {
        char why[sizeof c->errstr + 64];
        snprintf(why, sizeof why, "%s: %s", step, c->errstr);
        int oom = c->err == REDIS_ERR_OOM;
        redisFree(c);
        if (oom)
            return tc__err(cs->owner, TC_ENOMEM, "redis %s: %s", cs->where, why);
        trip_breaker(cs, why);
        if (cs->retry_interval_ms > 0)
            return tc__err(cs->owner, TC_EREDIS, "redis %s: %s (skipping Redis for %lld ms)",
                           cs->where, why, (long long)cs->retry_interval_ms);
        return tc__err(cs->owner, TC_EREDIS, "redis %s: %s", cs->where, why);
    }
    pthread_mutex_lock(&cs->mu);
    s->ctx = c;
    s->gen = tc__fork_generation();
    pthread_mutex_unlock(&cs->mu);
    atomic_store(&cs->skip_until, 0);
    TC__INC(cs->stats->connects);
    return TC_OK;
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
    } else if (s->epoch != atomic_load(&cs->epoch)) {
        slot_link(cs, s); /* its registry was abandoned in a fork repair */
    }
    if (s->ctx != NULL && s->gen != tc__fork_generation())
        slot_close(cs, s); /* the parent's socket: close our copy, never write to it */
    if (s->ctx != NULL && s->ctx->err != 0)
        slot_close(cs, s);
    if (s->ctx != NULL) {
        TC__INC(cs->stats->reuses);
        atomic_store(&s->busy, 1);
        *out = s->ctx;
        return TC_OK;
    }

    if (cs->retry_interval_ms > 0) {
        int64_t until = atomic_load(&cs->skip_until);
        int64_t now = tc__now_ms();
        if (until != 0 && now < until) {
            char why[sizeof cs->last_err];
            pthread_mutex_lock(&cs->mu);
            memcpy(why, cs->last_err, sizeof why);
            pthread_mutex_unlock(&cs->mu);
            return tc__err(cs->owner, TC_EREDIS,
                           "redis %s: skipped until retry in %lld ms (last connect: %s)",
                           cs->where, (long long)(until - now), why);
        }
    }
    int rc = open_ctx(cs, s);
    if (rc != TC_OK)
        return rc;
    atomic_store(&s->busy, 1);
    *out = s->ctx;
    return TC_OK;
}

void tc__rconns_release(tc__rconns *cs, int close_it)
{
    slot *s = pthread_getspecific(cs->key);
    if (s == NULL)
        return;
    atomic_store(&s->busy, 0);
    if (close_it)
        slot_close(cs, s);
}

/* ---- SIGPIPE ----------------------------------------------------------------------------- */

void tc__sigpipe_block(tc__sigpipe_guard *g)
{
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
