/*
 * batcher.c - leader-follower batching without a lock (batcher.h says how and why).
 */
#include "common/batcher.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A call's state: CALL_WAITING, CALL_SLEEPING once its caller is about to sleep on it (so that
 * an answer or a token given before then costs no wake-up system call: the leader's own call,
 * and callers still running, take theirs without one), CALL_LEAD (handed the lead), CALL_DONE. */
enum { CALL_WAITING, CALL_SLEEPING, CALL_LEAD, CALL_DONE };

/* Returns once the state is CALL_LEAD or CALL_DONE. A wake that comes after the caller left (it
 * saw the state before the wake) lands on a stack word the kernel only compares, or on no
 * mapping at all: harmless, as every sleeper here loops on its word. */
static int state_wait(atomic_int *w)
{
    for (;;) {
        int s = atomic_load_explicit(w, memory_order_acquire);
        if (s == CALL_LEAD || s == CALL_DONE)
            return s;
        if (s == CALL_WAITING &&
            !atomic_compare_exchange_strong(w, &s, CALL_SLEEPING))
            continue; /* answered or handed the lead meanwhile */
        (void)syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, CALL_SLEEPING, NULL, NULL, 0);
    }
}

static void state_wake(atomic_int *w)
{
    (void)syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void tc__batcher_init(tc__batcher *b)
{
    atomic_init(&b->queue, NULL);
    atomic_init(&b->leading, 0);
    atomic_init(&b->gen, tc__fork_generation());
    atomic_init(&b->tag, 0);
}

/* In a fork()ed child the queue holds calls of threads that do not exist there, and the lead
 * may be a parent thread's: the first call starts afresh. */
static void check_fork(tc__batcher *b, const tc__batcher_ops *ops, void *ctx)
{
    unsigned g = tc__fork_generation();
    if (atomic_load_explicit(&b->gen, memory_order_acquire) == g)
        return;
    tc__tag_lock(&b->tag, g);
    if (atomic_load_explicit(&b->gen, memory_order_relaxed) != g) {
        atomic_store(&b->queue, NULL);
        atomic_store(&b->leading, 0);
        if (ops->after_fork != NULL)
            ops->after_fork(ctx);
        atomic_store_explicit(&b->gen, g, memory_order_release);
    }
    tc__tag_unlock(&b->tag);
}

void tc__batcher_done(tc__bcall *c)
{
    if (atomic_exchange_explicit(&c->state, CALL_DONE, memory_order_acq_rel) == CALL_SLEEPING)
        state_wake(&c->state);
}

/* The queue taken whole, oldest first. */
static tc__bcall *take_queue(tc__batcher *b)
{
    tc__bcall *lifo = atomic_exchange(&b->queue, NULL), *fifo = NULL;
    while (lifo != NULL) {
        tc__bcall *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    return fifo;
}

static void lead(tc__batcher *b, tc__bcall *me, const tc__batcher_ops *ops, void *ctx)
{
    for (;;) {
        int rounds = 0;
        while (ops->round(ctx, take_queue(b))) {
            if (atomic_load_explicit(&me->state, memory_order_relaxed) == CALL_DONE &&
                ++rounds >= TC__BATCHER_ROUNDS)
                break;
        }
        tc__bcall *heir = ops->heir != NULL ? ops->heir(ctx) : NULL;
        if (heir == NULL)
            heir = atomic_load(&b->queue);
        if (heir != NULL && heir != me) {
            /* The token first, while the heir's call cannot be answered (only a leader answers
             * it, and this thread still leads); a wake after the release might find it gone,
             * harmlessly (state_wait). */
            int s = atomic_load(&heir->state), token = 0;
            while ((s == CALL_WAITING || s == CALL_SLEEPING) &&
                   !(token = atomic_compare_exchange_weak(&heir->state, &s, CALL_LEAD))) {
            }
            atomic_store(&b->leading, 0);
            if (token && s == CALL_SLEEPING)
                state_wake(&heir->state);
            return;
        }
        atomic_store(&b->leading, 0);
        int expect = 0;
        if (atomic_load(&b->queue) == NULL ||
            !atomic_compare_exchange_strong(&b->leading, &expect, 1))
            return;
        /* A caller pushed after the last take and lost the lead to us: serve it. */
    }
}

void tc__batcher_call(tc__batcher *b, tc__bcall *me, const tc__batcher_ops *ops, void *ctx)
{
    check_fork(b, ops, ctx);
    atomic_init(&me->state, CALL_WAITING);
    tc__bcall *top = atomic_load(&b->queue);
    do
        me->next = top;
    while (!atomic_compare_exchange_weak(&b->queue, &top, me));
    for (;;) {
        int expect = 0;
        if (atomic_load_explicit(&me->state, memory_order_acquire) != CALL_DONE &&
            atomic_compare_exchange_strong(&b->leading, &expect, 1))
            lead(b, me, ops, ctx);
        if (state_wait(&me->state) == CALL_DONE)
            break;
        int lead_it = CALL_LEAD;
        /* Handed the lead: take it unless answered meanwhile (or unless a caller that arrived
         * since leads already: it answers this call too). */
        if (!atomic_compare_exchange_strong(&me->state, &lead_it, CALL_WAITING))
            break; /* CALL_DONE */
    }
}
