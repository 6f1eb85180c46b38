/*
 * lease.c - the miss lease across processes (lease_ms): the first process to miss a key takes
 * its lease in Redis and reads the store; the others wait briefly for its fill instead of
 * reading the store too. A lease is an optimisation only: any failure reads the store.
 */
#include "core/handle.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Like the flights list, walkable at any instant a fork catches (one pointer store per change),
 * and the leases it links live on their holders' stacks, which the child has copies of. A
 * lease the forking thread holds stays: it releases it in the child as in the parent. */
void tc__leases_after_fork(tc_cache *c)
{
    (void)tc__mutex_after_fork(&c->leases_mu);
    int others = 0;
    for (tc__lease **p = &c->leases; *p != NULL;) {
        if (tc__is_forking_thread((*p)->holder)) {
            p = &(*p)->next;
        } else {
            others = 1;
            *p = (*p)->next;
        }
    }
    if (others)
        atomic_store(&c->lease_skip_until, tc__add_sat64(tc__now_ms(), c->cfg->lease_ms));
}

static void lease_hold(tc_cache *c, tc__lease *ls)
{
    ls->state = TC__LEASE_HELD;
    ls->holder = pthread_self();
    pthread_mutex_lock(&c->leases_mu);
    ls->next = c->leases;
    c->leases = ls;
    pthread_mutex_unlock(&c->leases_mu);
}

/* A token no other holder has: 16 random bytes (a counter and the clock if getrandom fails). */
static void lease_token(char *token)
{
    if (getrandom(token, 16, GRND_NONBLOCK) == 16)
        return;
    static atomic_ullong counter;
    uint64_t a = atomic_fetch_add(&counter, 1) ^ ((uint64_t)getpid() << 32);
    uint64_t b = (uint64_t)tc__wall_ms() ^ (uint64_t)(uintptr_t)token;
    memcpy(token, &a, 8);
    memcpy(token + 8, &b, 8);
}

/* Takes the key's lease, or waits (up to lease_wait_ms, polling with a growing pause) for its
 * holder's fill. The script hands back only a live plain value, a negative record, or a fresh
 * HTTP record (which the read path judges and serves as Redis's). Any Redis failure, an expired
 * wait, or a fill older than what the reader knows of leaves LEASE_NONE: the store is read, as
 * without a lease (slower, never wrong). */
void tc__lease_step(tc_cache *c, const char *key, size_t key_len, int64_t floor, tc__reader *r,
                    tc__lease *ls)
{
    if (tc__now_ms() < atomic_load_explicit(&c->lease_skip_until, memory_order_relaxed))
        return; /* a child whose parent's threads held leases (leases_after_fork) */
    lease_token(ls->token);
    int64_t deadline = tc__add_sat64(tc__wall_ms(), c->cfg->lease_wait_ms);
    unsigned pause_us = 250;
    for (;;) {
        int rc = tc__redis_lease(c->redis, key, key_len, ls->token, sizeof ls->token,
                                 c->cfg->lease_ms, tc__deliver_copy, r);
        if (rc == TC__LEASE_TAKEN) {
            TC__INC(c->stats.leases);
            lease_hold(c, ls);
            return;
        }
        if (rc == TC_OK) {
            const unsigned char *p = r->raw;
            /* A fill older than a tombstone this edge holds, or than the stale copy the
             * reader has, is a late one: not taken. */
            if (r->raw_version >= r->tomb_version && r->raw_version >= floor &&
                r->raw_len >= 1) {
                ls->ttl_ms = r->raw_ttl;
                if (r->raw_len == 1 && p[0] == TC__REC_NEGATIVE) {
                    ls->state = TC__LEASE_PEER_ABSENT;
                    return;
                }
                if (p[0] == TC__REC_PLAIN) {
                    memmove(r->raw, p + 1, r->raw_len); /* with its NUL */
                    r->raw_len--;
                    ls->state = TC__LEASE_PEER_VALUE;
                    return;
                }
                if (p[0] == TC__REC_HTTP) {
                    ls->state = TC__LEASE_PEER_RECORD;
                    return;
                }
            }
            free(r->raw);
            r->raw = NULL;
            return;
        }
        /* TC_ENOTFOUND: a value that expired between the script's look and ours; the next
         * look sees it expired and takes the lease, or finds the next holder's. */
        if ((rc != TC__LEASE_BUSY && rc != TC_ENOTFOUND) || tc__wall_ms() >= deadline)
            return;
        if (rc == TC_ENOTFOUND)
            continue;
        TC__INC(c->stats.lease_waits);
        struct timespec ts = {0, (long)pause_us * 1000};
        nanosleep(&ts, NULL);
        if (pause_us < 4000)
            pause_us *= 2;
    }
}

void tc__lease_release(tc_cache *c, const char *key, size_t key_len, tc__lease *ls)
{
    if (ls->state != TC__LEASE_HELD)
        return;
    pthread_mutex_lock(&c->leases_mu);
    for (tc__lease **p = &c->leases; *p != NULL; p = &(*p)->next) {
        if (*p == ls) {
            *p = ls->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->leases_mu);
    ls->state = TC__LEASE_NONE;
    tc__redis_unlease(c->redis, key, key_len, ls->token, sizeof ls->token);
}
