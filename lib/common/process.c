/*
 * process.c - clocks, fork detection, the fork-proof lock, and process names for leases.
 */
#include "common/internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>
#include <time.h>

int64_t tc__now_ms(void)
{
    struct timespec ts;
    /* The coarse clock is read from the vDSO without a syscall and is good to a few ms, which
     * is all a TTL needs. */
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tc__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

atomic_uint tc__fork_gen; /* internal.h: read inline by the hit path's fork check */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
/* In a child: the thread that called fork(), the only one of the parent's threads that lives on
 * in it. Written before the generation moves, in the child's only thread, and read only by
 * repairs, which run after they saw the new generation. */
static pthread_t forker;

static void on_fork_child(void)
{
    forker = pthread_self();
    atomic_fetch_add(&tc__fork_gen, 1);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned tc__fork_generation(void)
{
    pthread_once(&atfork_once, register_atfork);
    return atomic_load_explicit(&tc__fork_gen, memory_order_relaxed);
}

int tc__is_forking_thread(pthread_t t)
{
    return tc__fork_generation() != 0 && pthread_equal(t, forker);
}

int tc__mutex_after_fork(pthread_mutex_t *mu)
{
    /* The forking thread never holds one of these across fork(), and no other thread of the
     * child can have locked it yet (the caller repairs before any other use), so a busy mutex
     * was held by a thread that did not survive the fork. Re-initialising a mutex that is
     * locked is what POSIX leaves undefined for a live owner; here there is none. */
    if (pthread_mutex_trylock(mu) == 0) {
        pthread_mutex_unlock(mu);
        return 1;
    }
    pthread_mutex_init(mu, NULL);
    return 0;
}

/*
 * A spin lock that survives fork: the word holds 0 when free, otherwise 1 + the fork generation
 * of the process whose thread holds it. A pthread mutex would not do: a thread of a parent may
 * hold it at the instant another thread forks, and in the child that thread does not exist, so
 * the mutex would stay locked forever. Generations only grow from parent to child, and a child
 * sees only its ancestors' memory, so a tag other than our own was left by an ancestor's thread
 * and is taken over, while our own tag means a thread of this process holds it and we wait.
 * Used only on rare paths (opening a connection, the first call after a fork).
 */
void tc__tag_lock(atomic_uint *w, unsigned gen)
{
    unsigned tag = gen + 1u;
    for (;;) {
        unsigned cur = atomic_load_explicit(w, memory_order_relaxed);
        if (cur != tag) {
            if (atomic_compare_exchange_weak_explicit(w, &cur, tag, memory_order_acquire,
                                                      memory_order_relaxed))
                return;
        } else {
            sched_yield();
        }
    }
}

void tc__tag_unlock(atomic_uint *w)
{
    atomic_store_explicit(w, 0, memory_order_release);
}

/* ---- process names for leases ------------------------------------------------------------- */

/* The first 8 hex digits of the boot id; 0 on failure. */
static int boot_id(char out[9])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f == NULL)
        return 0;
    int ok = fscanf(f, "%8[0-9a-f]", out) == 1 && strlen(out) == 8;
    fclose(f);
    return ok;
}

/* The state letter and start time (clock ticks since boot) of pid: 1, or 0 if it has no entry,
 * or -1 if that cannot be told (no descriptor left, an entry that does not parse). */
static int proc_stat(long pid, char *state, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT || errno == ESRCH ? 0 : -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed)
        return errno == ESRCH ? 0 : -1; /* the process went while its entry was read */
    buf[n] = '\0';
    /* "pid (comm) S ..."; comm may hold spaces and parentheses: the fields follow the last
     * ')'. After it: the state, then 18 fields, then the start time. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -1;
    p += 2;
    *state = *p;
    for (int field = 0; field < 19 && p != NULL; field++) {
        p = strchr(p, ' ');
        if (p != NULL)
            p++;
    }
    return p != NULL && sscanf(p, "%llu", start) == 1 ? 1 : -1;
}

void tc__process_name(char *out, size_t cap)
{
    char boot[9];
    char state;
    unsigned long long start;
    out[0] = '\0';
    if (boot_id(boot) && proc_stat((long)getpid(), &state, &start) == 1)
        snprintf(out, cap, "%s.%ld.%llu", boot, (long)getpid(), start);
}

int tc__process_gone(const char *name)
{
    char boot[9], their_boot[9];
    long pid;
    unsigned long long their_start, start;
    char state;
    if (sscanf(name, "%8[0-9a-f].%ld.%llu", their_boot, &pid, &their_start) != 3 || pid <= 0 ||
        !boot_id(boot) || strcmp(boot, their_boot) != 0)
        return 0;
    /* Only a process known to be gone frees its lease early: when /proc cannot be read (out
     * of descriptors, say), the lease is waited out as on another host. */
    int known = proc_stat(pid, &state, &start);
    if (known <= 0)
        return known == 0;
    return state == 'Z' || state == 'X' || start != their_start;
}
