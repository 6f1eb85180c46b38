/*
 * shared.c - the process-wide handle, tc_shared(): configured from TIERCACHE_CONFIG on the first
 * call (the cold start), the same handle for every later call and thread (warm starts).
 */
#include "ext/shared.h"
#include "core/cache.h"
#include "core/config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- the process-wide handle ------------------------------------------------------------- */

/* Published with release/acquire so the warm path is one atomic load and no lock; the mutex
 * only serialises the cold start, so exactly one handle is ever built. */
static _Atomic(tc_cache *) shared_handle;
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;
static atomic_llong shared_cold, shared_warm;

/* Held across fork() so the child never inherits the mutex locked by a thread that does not
 * exist there. */
static void shared_prefork(void)
{
    pthread_mutex_lock(&shared_mu);
}
static void shared_postfork(void)
{
    pthread_mutex_unlock(&shared_mu);
}
static void shared_init_once(void)
{
    pthread_atfork(shared_prefork, shared_postfork, shared_postfork);
}

void tc__shared_counts(int64_t *cold, int64_t *warm)
{
    *cold = TC__GET(shared_cold);
    *warm = TC__GET(shared_warm);
}

static int config_from_env(tc_config **out)
{
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return rc;
    const char *env = getenv("TIERCACHE_CONFIG");
    if (env != NULL) {
        const char *p = env;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '{')
            rc = tc_config_load_json(cfg, p, strlen(p));
        else if (*p != '\0')
            rc = tc_config_load_file(cfg, p);
        if (rc != TC_OK) {
            tc__err(NULL, rc, "TIERCACHE_CONFIG: %s", tc_config_errmsg(cfg));
            tc_config_free(cfg);
            return rc;
        }
    }
    *out = cfg;
    return TC_OK;
}

int tc_shared(tc_cache **out)
{
    if (out == NULL)
        return tc__err(NULL, TC_EINVAL, "tc_shared: out is NULL");
    tc_cache *c = atomic_load_explicit(&shared_handle, memory_order_acquire);
    if (c != NULL) {
        TC__INC(shared_warm);
        *out = c;
        return TC_OK;
    }
    /* Register every atfork handler before taking shared_mu: glibc runs the prepare handlers
     * (ours locks shared_mu) under its own atfork lock, so registering one while holding
     * shared_mu would order the two locks both ways. */
    pthread_once(&shared_once, shared_init_once);
    (void)tc__fork_generation();
    pthread_mutex_lock(&shared_mu);
    c = atomic_load_explicit(&shared_handle, memory_order_relaxed);
    int rc = TC_OK;
    if (c != NULL) {
        TC__INC(shared_warm);
    } else {
        tc_config *cfg = NULL;
        rc = config_from_env(&cfg);
        if (rc == TC_OK)
            rc = tc_open(&c, cfg);
        tc_config_free(cfg);
        if (rc == TC_OK) {
            TC__INC(shared_cold);
            atomic_store_explicit(&shared_handle, c, memory_order_release);
        }
    }
    pthread_mutex_unlock(&shared_mu);
    *out = rc == TC_OK ? c : NULL;
    return rc;
}

void tc_shared_reset(void)
{
    pthread_mutex_lock(&shared_mu);
    tc_cache *c = atomic_exchange(&shared_handle, NULL);
    pthread_mutex_unlock(&shared_mu);
    tc_close(c);
}
