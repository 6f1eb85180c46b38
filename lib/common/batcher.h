/*
 * batcher.h - leader-follower batching without a lock, for calls that go faster together: the
 * auto-pipeline's commands on one Redis connection (redis/autopipe.c), the group commit's puts
 * in one store transaction (store/group.c).
 *
 * A caller pushes its call onto a lock-free queue, then takes the lead (one compare-and-swap)
 * or sleeps on its call's state word (a futex). The leader runs rounds of the owner's work,
 * each given the queue as it is then; the owner answers calls with tc__batcher_done. A caller
 * alone leads a batch of one at once: no thread of its own, no timer. A leader whose own call is
 * answered runs at most TC__BATCHER_ROUNDS rounds more, then hands the lead to a caller still
 * waiting (one the owner names, else the newest queued): its call cannot be answered and gone
 * meanwhile, since only a leader answers and the token is given before the lead is released.
 * With nothing left, the lead is released and the queue looked at once more: a caller that
 * lost the race for the lead pushed before it tried (sequentially consistent on both sides),
 * so no call is left queued with nobody leading.
 *
 * Why no mutex: where a context switch is the dominant cost (a paravirtualized machine), a
 * caller woken with its answer that must then take a lock the leader holds sleeps twice; a
 * caller woken here reads its answer and returns.
 */
#ifndef TC_BATCHER_H
#define TC_BATCHER_H

#include "common/internal.h"

/* The head of an owner's call struct (the owner's call begins with it). */
typedef struct tc__bcall {
    atomic_int state; /* batcher.c's */
    struct tc__bcall *next; /* the queue's, then the owner's batch list, oldest first */
} tc__bcall;

typedef struct tc__batcher {
    _Atomic(tc__bcall *) queue; /* pushed, not taken yet: newest first */
    atomic_int leading;
    atomic_uint gen, tag; /* the fork generation of the state, and its repair's lock */
} tc__batcher;

typedef struct tc__batcher_ops {
    /* One round of the leader's work: taken is the queue taken whole, oldest first (NULL when
     * empty). Returns 1 if it did something (or holds calls not answered yet), 0 when there
     * was nothing to do. Runs on the leader's thread; what only the leader touches passes
     * with the lead (the CAS and the release order it). */
    int (*round)(void *ctx, tc__bcall *taken);
    /* May be NULL: a call the owner holds unanswered (in flight), the preferred heir. */
    tc__bcall *(*heir)(void *ctx);
    /* May be NULL: in a fork()ed child, the first call empties the queue (the parent's callers
     * are not the child's to answer) and calls this, once, to drop what the parent's leader
     * held. */
    void (*after_fork)(void *ctx);
} tc__batcher_ops;

#define TC__BATCHER_ROUNDS 4

void tc__batcher_init(tc__batcher *b);
/* Queues me and returns once the owner answered it (tc__batcher_done), having led rounds if
 * the lead came to this thread. Thread-safe and fork-safe (see after_fork). */
void tc__batcher_call(tc__batcher *b, tc__bcall *me, const tc__batcher_ops *ops, void *ctx);
/* The owner answers c: its caller returns. Whatever the caller reads of its call must be
 * written before. c may be gone as soon as this returns; read c->next first. */
void tc__batcher_done(tc__bcall *c);

#endif
