/*
 * process.c - clocks and fork detection.
 */
#include "internal.h"

#include <pthread.h>
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

static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned tc__fork_generation(void)
{
    pthread_once(&atfork_once, register_atfork);
    return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}
