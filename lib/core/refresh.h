/*
 * refresh.h - background refreshes for stale-while-revalidate: at most one per key at a time,
 * run by one thread per cache, started on the first refresh.
 */
#ifndef TC_REFRESH_H
#define TC_REFRESH_H

#include "common/internal.h"

typedef struct tc__refresher tc__refresher;

/* Runs on the refresher's thread; job is the bytes given to submit (a copy). Returns 1 if it
 * refreshed (asked the origin), 0 if there was nothing left to do. */
typedef int (*tc__refresh_fn)(void *owner, const char *key, size_t key_len, const void *job,
                              size_t job_len);

/* max_pending >= 1 bounds the queue (a refresh that finds it full is dropped: the stale copy
 * is still served, and a later stale hit asks again). No thread is started yet. */
int tc__refresher_new(tc__refresher **out, tc__refresh_fn fn, void *owner, size_t max_pending);
/* Stops the thread (the refresh it is running finishes), drops what is pending, frees. */
void tc__refresher_free(tc__refresher *r);
/* Queues fn(owner, key, job) unless a refresh of the key is queued or running. Returns 1 if
 * queued, 0 if one is already in flight or the queue is full, TC_ENOMEM. Thread-safe. */
int tc__refresher_submit(tc__refresher *r, const char *key, size_t key_len, const void *job,
                         size_t job_len);
/* In a fork()ed child, before any other use: the thread did not survive (unless it is the one
 * that forked, from a refresh: then it goes on), and its lock may have been held at the fork.
 * Frees what was running and pending; the child's first refresh starts its own thread, so a
 * key whose refresh the parent was running can be refreshed in the child at once. */
void tc__refresher_after_fork(tc__refresher *r);
/* Waits until nothing is queued or running (tests). */
void tc__refresher_drain(tc__refresher *r);
/* Refreshes done so far: calls of fn that returned 1 (tests and stats). */
int64_t tc__refresher_done(tc__refresher *r);

#endif
