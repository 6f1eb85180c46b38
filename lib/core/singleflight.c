/*
 * singleflight.c - one store read per key at a time (see singleflight.h).
 *
 * The flights in progress are a short list under one mutex: a flight lives only while its
 * leader reads the store (microseconds for SQLite, a round trip for a remote database), so the
 * list holds about as many entries as there are threads missing at the same moment, and a scan
 * of it costs less than keeping a hash table. The last of the leader and its followers to leave
 * frees the flight.
 *
 * Fork. A child has only the thread that called fork(): every flight led by another thread has
 * no leader in the child and its followers are gone too, so the child frees them, and a reader
 * of the key in the child leads a flight of its own at once. A flight led by the forking thread
 * (a fork from inside a store callback) stays, with that thread as its only user: it lands it in
 * the child as in the parent.
 */
#include "core/singleflight.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct tc__flight {
    struct tc__flight *next;
    int landed, rc;
    unsigned users;   /* the leader and the followers still to read the result */
    pthread_t leader; /* the thread that loads the key (fork: who still lands it) */
    void *value;
    size_t len;
    int64_t version;
    size_t key_len;
    char key[];
};

struct tc__flights {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a flight landed */
    tc__flight *head;
};

int tc__flights_new(tc__flights **out)
{
    tc__flights *f = calloc(1, sizeof *f);
    if (f == NULL)
        return TC_ENOMEM;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    *out = f;
    return TC_OK;
}

void tc__flights_free(tc__flights *f)
{
    if (f == NULL)
        return;
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void flight_free(tc__flight *fl)
{
    free(fl->value);
    free(fl);
}

void tc__flights_after_fork(tc__flights *f)
{
    if (f == NULL)
        return;
    pthread_cond_init(&f->cv, NULL); /* its waiters were parent threads */
    /* Even if a parent thread held the lock at the fork, the list can be walked: every change
     * to it is one store of a pointer to a whole flight (a flight is linked once it is filled
     * in, and unlinked before it is freed). The most a change caught half-way leaves is one
     * flight not linked, lost to the child. */
    (void)tc__mutex_after_fork(&f->mu);
    tc__flight **p = &f->head;
    while (*p != NULL) {
        tc__flight *fl = *p;
        if (!fl->landed && tc__is_forking_thread(fl->leader)) {
            fl->users = 1; /* its leader lives on in the child; its followers did not */
            p = &fl->next;
        } else {
            *p = fl->next;
            flight_free(fl);
        }
    }
}

unsigned tc__flights_users(tc__flights *f, const char *key, size_t key_len)
{
    unsigned n = 0;
    pthread_mutex_lock(&f->mu);
    for (const tc__flight *fl = f->head; fl != NULL; fl = fl->next)
        if (!fl->landed && fl->key_len == key_len && memcmp(fl->key, key, key_len) == 0)
            n = fl->users;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Under mu. Unlinks and frees a flight nobody uses any more. */
static void release(tc__flights *f, tc__flight *fl)
{
    if (--fl->users > 0)
        return;
    for (tc__flight **p = &f->head; *p != NULL; p = &(*p)->next) {
        if (*p == fl) {
            *p = fl->next;
            break;
        }
    }
    flight_free(fl);
}

tc__flight *tc__flight_join(tc__flights *f, const char *key, size_t key_len, int *leader)
{
    *leader = 1;
    pthread_mutex_lock(&f->mu);
    for (tc__flight *fl = f->head; fl != NULL; fl = fl->next) {
        /* A landed flight is only waiting for its followers to read it: a new reader loads
         * afresh (the value may have changed since). */
        if (!fl->landed && fl->key_len == key_len && memcmp(fl->key, key, key_len) == 0) {
            fl->users++;
            *leader = 0;
            pthread_mutex_unlock(&f->mu);
            return fl;
        }
    }
    tc__flight *fl = calloc(1, sizeof *fl + key_len);
    if (fl != NULL) {
        fl->users = 1;
        fl->leader = pthread_self();
        fl->key_len = key_len;
        memcpy(fl->key, key, key_len);
        fl->next = f->head;
        f->head = fl;
    }
    pthread_mutex_unlock(&f->mu);
    return fl;
}

void tc__flight_land(tc__flights *f, tc__flight *fl, int rc, const void *value, size_t len,
                     int64_t version)
{
    void *copy = NULL;
    if (rc == TC_OK) {
        copy = malloc(len + 1);
        if (copy == NULL) {
            rc = TC_ENOMEM; /* the followers load for themselves */
        } else {
            if (len > 0)
                memcpy(copy, value, len);
            ((char *)copy)[len] = '\0';
        }
    }
    pthread_mutex_lock(&f->mu);
    fl->landed = 1;
    fl->rc = rc;
    fl->value = copy;
    fl->len = len;
    fl->version = version;
    pthread_cond_broadcast(&f->cv);
    release(f, fl);
    pthread_mutex_unlock(&f->mu);
}

int tc__flight_wait(tc__flights *f, tc__flight *fl, void **value, size_t *len, int64_t *version)
{
    pthread_mutex_lock(&f->mu);
    while (!fl->landed)
        pthread_cond_wait(&f->cv, &f->mu);
    int rc = fl->rc;
    if (rc == TC_OK) {
        void *copy = malloc(fl->len + 1);
        if (copy == NULL) {
            rc = TC_ENOMEM;
        } else {
            memcpy(copy, fl->value, fl->len + 1);
            *value = copy;
            *len = fl->len;
            *version = fl->version;
        }
    }
    release(f, fl);
    pthread_mutex_unlock(&f->mu);
    return rc;
}
