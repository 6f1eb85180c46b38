/*
 * refresh.c - the stale-while-revalidate refresher (see refresh.h).
 *
 * One thread per cache, not one per refresh: a burst of stale hits on many keys must not start
 * a burst of threads, and a refresh is a store read plus two cache fills, short enough to run
 * one after another. "At most once per key" is checked against the queue and the running job
 * by a linear scan: the queue is small (a refresh that finds it full is dropped), and a scan of
 * a few dozen short keys costs less than keeping a second index consistent.
 */
#include "core/refresh.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef struct job {
    struct job *next;
    size_t key_len, job_len;
    char data[]; /* key, then job bytes */
} job;

struct tc__refresher {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work queued, stop asked, or idle reached */
    tc__refresh_fn fn;
    void *owner;
    size_t max_pending, pending;
    job *head, *tail;
    job *running;           /* the job the thread runs now, NULL when none */
    pthread_t thread;
    int started, stop;
    atomic_llong done;
};

int tc__refresher_new(tc__refresher **out, tc__refresh_fn fn, void *owner, size_t max_pending)
{
    *out = NULL;
    tc__refresher *r = calloc(1, sizeof *r);
    if (r == NULL)
        return TC_ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->fn = fn;
    r->owner = owner;
    r->max_pending = max_pending > 0 ? max_pending : 1;
    *out = r;
    return TC_OK;
}

static void *refresher_main(void *arg)
{
    tc__refresher *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stop && r->head == NULL)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop)
            break;
        job *j = r->head;
        r->head = j->next;
        if (r->head == NULL)
            r->tail = NULL;
        r->pending--;
        r->running = j;
        pthread_mutex_unlock(&r->mu);
        if (r->fn(r->owner, j->data, j->key_len, j->data + j->key_len, j->job_len) == 1)
            atomic_fetch_add(&r->done, 1);
        pthread_mutex_lock(&r->mu);
        r->running = NULL;
        free(j);
        pthread_cond_broadcast(&r->cv); /* drain waits for this */
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void free_jobs(job *j)
{
    while (j != NULL) {
        job *next = j->next;
        free(j);
        j = next;
    }
}

void tc__refresher_free(tc__refresher *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    int join = r->started;
    pthread_mutex_unlock(&r->mu);
    if (join)
        pthread_join(r->thread, NULL);
    free_jobs(r->head);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int in_flight(const job *j, const char *key, size_t key_len)
{
    return j != NULL && j->key_len == key_len && memcmp(j->data, key, key_len) == 0;
}

int tc__refresher_submit(tc__refresher *r, const char *key, size_t key_len, const void *jb,
                         size_t job_len)
{
    pthread_mutex_lock(&r->mu);
    int queued = 0;
    if (r->stop || r->pending >= r->max_pending || in_flight(r->running, key, key_len))
        goto out;
    for (const job *j = r->head; j != NULL; j = j->next)
        if (in_flight(j, key, key_len))
            goto out;
    if (!r->started) {
        /* The thread takes no signals: they belong to the application's threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&r->thread, NULL, refresher_main, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0)
            goto out; /* no refresh: the stale copy is served until it expires */
        r->started = 1;
    }
    job *j = malloc(sizeof *j + key_len + job_len);
    if (j == NULL) {
        queued = TC_ENOMEM;
        goto out;
    }
    j->next = NULL;
    j->key_len = key_len;
    j->job_len = job_len;
    memcpy(j->data, key, key_len);
    if (job_len > 0)
        memcpy(j->data + key_len, jb, job_len);
    if (r->tail != NULL)
        r->tail->next = j;
    else
        r->head = j;
    r->tail = j;
    r->pending++;
    pthread_cond_broadcast(&r->cv); /* the thread, not only a drain that waits on cv too */
    queued = 1;
out:
    pthread_mutex_unlock(&r->mu);
    return queued;
}

void tc__refresher_after_fork(tc__refresher *r)
{
    if (r == NULL)
        return;
    pthread_cond_init(&r->cv, NULL); /* its waiters were parent threads */
    int whole = tc__mutex_after_fork(&r->mu);
    if (r->started && tc__is_forking_thread(r->thread)) {
        /* A refresh forked (from a store callback): the thread lives on in the child and goes
         * on with its queue, unless a parent thread was changing the queue at the fork. */
        if (!whole) {
            r->head = r->tail = NULL; /* half-linked: dropped, not walked */
            r->pending = 0;
        }
        return;
    }
    /* The thread did not survive: what it ran and what was queued is the child's to free (a
     * queue a parent thread was linking at the fork is dropped without a walk), and the child
     * starts a thread of its own on its first refresh. */
    if (whole)
        free_jobs(r->head);
    free(r->running);
    r->head = r->tail = r->running = NULL;
    r->pending = 0;
    r->started = 0;
}

void tc__refresher_drain(tc__refresher *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->started && !r->stop && (r->head != NULL || r->running != NULL))
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

int64_t tc__refresher_done(tc__refresher *r)
{
    return r == NULL ? 0 : atomic_load(&r->done);
}
