/*
 * clock.c - the edge clock: a process-wide copy of the coarse monotonic clock for the edge's
 * TTL checks (see below), shared by every edge of the process.
 */
#include "edge/clock.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

/* The cached clock ticks this often (ms). The coarse clock it copies advances every 1-4 ms
 * (the kernel's tick), so ticking faster would publish the same value twice. */
#define EDGE_CLOCK_TICK_MS 2
/* Ticks after which the ticker parks until the next read finds the clock unpublished (about a
 * second): readers never write anything to keep it going. */
#define EDGE_CLOCK_IDLE_TICKS 500

/* TTLs are checked against a process-wide copy of the coarse monotonic clock that a ticker
 * thread refreshes every EDGE_CLOCK_TICK_MS, so a hit costs one load of a line that changes once
 * per tick, instead of a vDSO clock call (4.5-8 ns here, a sixth to a quarter of a hit). Sets
 * use the same clock, so a TTL is exact on it; against real time an entry may live up to a tick
 * plus the coarse clock's resolution (4 ms at HZ=250) plus the ticker's scheduling delay longer
 * or shorter than asked.
 *
 * The ticker starts on the first clock read while an edge exists, stops when the last edge is
 * freed, and parks EDGE_CLOCK_IDLE_TICKS after it was last woken, so an idle process is not woken
 * 500 times a second. While it is not publishing, `now` is 0 and readers read the clock
 * themselves, the first of them waking it: under load that is one wake-up a second, and the
 * hit path needs no store to say "still wanted" (such a store measured 15-20 ns a hit at a
 * million keys, where hits are bound by memory). In a fork()ed child the ticker is gone: the child
 * handler marks it so, and the child's first read starts its own. */
struct edge_clock_state tc__edge_clock;

static pthread_mutex_t clock_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t clock_cond; /* on CLOCK_MONOTONIC, set up once by clock_init */
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;
static size_t clock_users;   /* live edges */
static int clock_running;    /* the ticker thread exists and has not been joined */
static int clock_stop;       /* asks the ticker to exit */
static int clock_started;    /* the ticker reached clock_main: its start-up is over */
static int clock_direct;     /* no ticker can be had here: every read goes to the clock */
static pthread_t clock_thread;

static void clock_timedwait_ms(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
    }
    pthread_cond_timedwait(&clock_cond, &clock_lock, &ts);
}

static void *clock_main(void *arg)
{
    (void)arg;
    int idle = 0;
    pthread_mutex_lock(&clock_lock);
    clock_started = 1;
    pthread_cond_broadcast(&clock_cond); /* clock_start waits for this */
    while (!clock_stop) {
        atomic_store(&tc__edge_clock.now, tc__now_ms());
        if (++idle < EDGE_CLOCK_IDLE_TICKS) {
            clock_timedwait_ms(EDGE_CLOCK_TICK_MS);
            continue;
        }
        /* Park. wake_pending is cleared before now: a reader that sees now == 0 then sets it
         * after the clearing, and its signal (under clock_lock) cannot be lost. */
        atomic_store(&tc__edge_clock.wake_pending, 0);
        atomic_store(&tc__edge_clock.now, 0);
        while (!clock_stop && !atomic_load(&tc__edge_clock.wake_pending))
            pthread_cond_wait(&clock_cond, &clock_lock);
        idle = 0;
    }
    atomic_store(&tc__edge_clock.now, 0);
    pthread_mutex_unlock(&clock_lock);
    return NULL;
}

/* Under clock_lock. The ticker takes no signals: they belong to the application's threads.
 *
 * It returns once the ticker runs clock_main, so that a thread's start-up (which allocates in
 * the C library and in sanitizer runtimes) never overlaps a fork() the caller makes next: an
 * allocator that does not lock itself around fork(), as GCC 12's AddressSanitizer does not,
 * would leave the child a lock that nobody can release. The wait releases clock_lock, which
 * clock_main takes; callers hold no shard mutex (see the lock order at fork()). */
static void clock_start(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    clock_stop = 0;
    clock_started = 0;
    if (pthread_create(&clock_thread, NULL, clock_main, NULL) == 0) {
        clock_running = 1;
        while (!clock_started)
            pthread_cond_wait(&clock_cond, &clock_lock);
    } else {
        clock_direct = 1; /* correct, only slower: every read asks the clock */
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The slow path of edge_now: the ticker is parked, absent or not yet started. Kept out of line:
 * the hit path should carry one load and one branch for the clock. */
EDGE_COLD int64_t tc__edge_clock_slow(void)
{
    int64_t t = tc__now_ms();
    if (atomic_exchange(&tc__edge_clock.wake_pending, 1) == 0) {
        pthread_mutex_lock(&clock_lock);
        if (clock_users > 0 && !clock_direct) {
            if (!clock_running)
                clock_start();
            else
                pthread_cond_signal(&clock_cond);
        }
        pthread_mutex_unlock(&clock_lock);
    }
    return t;
}


void tc__edge_clock_after_fork_child(void)
{
    /* The ticker did not survive the fork; its condition variable may hold its wait state. */
    clock_running = 0;
    clock_stop = 0;
    atomic_store(&tc__edge_clock.now, 0);
    atomic_store(&tc__edge_clock.wake_pending, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&clock_cond, &ca);
    pthread_condattr_destroy(&ca);
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer cannot follow threads started after a multi-threaded fork (it aborts the
     * child); under it, children read the clock directly. */
    clock_direct = 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    clock_direct = 1;
#endif
#endif
    pthread_mutex_unlock(&clock_lock);
}

static void clock_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&clock_cond, &ca);
    pthread_condattr_destroy(&ca);
}

void tc__edge_clock_acquire(void)
{
    pthread_once(&clock_once, clock_init);
    pthread_mutex_lock(&clock_lock);
    clock_users++;
    pthread_mutex_unlock(&clock_lock);
}

/* The last edge stops the ticker, so that no thread of ours outlives the library's use (an
 * unloaded libtiercache.so must not leave a thread running its code). */
void tc__edge_clock_release(void)
{
    pthread_mutex_lock(&clock_lock);
    int join = --clock_users == 0 && clock_running;
    if (join) {
        clock_stop = 1;
        pthread_cond_signal(&clock_cond);
    }
    pthread_mutex_unlock(&clock_lock);
    if (!join)
        return;
    pthread_join(clock_thread, NULL);
    pthread_mutex_lock(&clock_lock);
    clock_running = 0;
    clock_stop = 0;
    /* A reader that raised wake_pending while the ticker was stopping found it running and only
     * signalled; clearing it lets the next reader start a new one. */
    atomic_store(&tc__edge_clock.wake_pending, 0);
    pthread_mutex_unlock(&clock_lock);
}

void tc__edge_clock_before_fork(void)
{
    pthread_mutex_lock(&clock_lock);
}

void tc__edge_clock_after_fork_parent(void)
{
    pthread_mutex_unlock(&clock_lock);
}
