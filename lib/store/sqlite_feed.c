/*
 * sqlite_feed.c - the SQLite store's change feed: the log a trigger fills for every write, read
 * in order after a consumer's checkpoint; the consumer's lease (one invalidator at a time) and
 * its checkpoint, fenced by the lease; waiting for the next commit; trimming the log.
 */
#include "store/sqlite_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

/* ---- waiting for a commit --------------------------------------------------------------------
 *
 * A commit by any process on this host writes the database's files (the WAL in WAL mode, the
 * file itself otherwise), so an inotify watch of their directory wakes the invalidator at once,
 * whoever wrote: plain SQL from another program included. The directory rather than the WAL
 * file, because the WAL is deleted when the last connection closes and made again by the next
 * writer; events are filtered by name. Where inotify cannot be had (another system, the
 * per-user limit on watches reached, an in-memory or URI database), this process's own commits
 * still wake the waiter through the waker's condition, and feed.poll_ms bounds the rest. */

/* Under w->mu: the watch, made on the first wait. */
static void watch_open(const sqlite_store *s, waker *w)
{
    w->watch_tried = 1;
    if (strcmp(s->path, ":memory:") == 0 || strncmp(s->path, "file:", 5) == 0)
        return;
    const char *slash = strrchr(s->path, '/');
    char dir[PATH_MAX];
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == s->path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - s->path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - s->path), s->path);
    else
        return;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return;
    if (inotify_add_watch(fd, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        close(fd);
        return;
    }
    w->watch_fd = fd;
}

/* Reads what the watch has queued; 1 if an event names one of the database's files. */
static int watch_drain(const sqlite_store *s, int fd)
{
    const char *slash = strrchr(s->path, '/');
    const char *base = slash != NULL ? slash + 1 : s->path;
    size_t base_len = strlen(base);
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int hit = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return hit; /* EAGAIN: drained */
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            if (ev->len > 0 && strncmp(ev->name, base, base_len) == 0)
                hit = 1;
            if (ev->mask & IN_Q_OVERFLOW)
                hit = 1; /* events were lost: look */
            p += sizeof *ev + ev->len;
        }
    }
}

static int count_change(void *ctx, int64_t seq, const char *key, size_t key_len,
                        int64_t version)
{
    return TC_OK;
}

/* Whether the log has a change after `after` (a read error counts as one: the caller's read
 * will report it). */
static int has_change(sqlite_store *s, int64_t after)
{
    int n = 0;
    return tc__sqlite_feed_read(&s->base, after, 1, count_change, NULL, &n) != TC_OK || n > 0;
}

/* Waits on the watch up to timeout_ms for a change after `after`. An event is not yet a
 * visible commit: a writer writes its frames to the WAL (the event), syncs them (synchronous
 * = FULL: milliseconds, tens on a slow disk), and only then publishes them in the WAL index, a
 * shared memory map whose writes raise no event. So after an event the log is looked at, and
 * again every 2 ms (1 ms after an event) until the change shows or the wait ends; a
 * further event cuts an interval short. An event with no change behind it (this process's own
 * lease write, a checkpoint) costs a look every 2 ms until the wait ends (an indexed read of
 * one row, some microseconds each). */
static void watch_wait(sqlite_store *s, int fd, int64_t after, int64_t timeout_ms)
{
    int64_t deadline = tc__now_ms() + timeout_ms;
    int64_t gap = -1; /* -1: no event yet, wait for one */
    for (;;) {
        int64_t left = deadline - tc__now_ms();
        if (left <= 0)
            return;
        int64_t wait = gap < 0 || gap > left ? left : gap;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, wait > 1000000 ? 1000000 : (int)wait);
        if (n < 0 && errno != EINTR)
            return;
        int event = n > 0 && watch_drain(s, fd);
        if (gap < 0 && !event)
            continue;
        if (has_change(s, after))
            return;
        gap = event || gap < 0 ? 1 : 2;
    }
}

int tc__sqlite_feed_wait(tc__store *base, int64_t after, int64_t timeout_ms)
{
    sqlite_store *s = (sqlite_store *)base;
    if (atomic_load_explicit(&s->gen, memory_order_acquire) != tc__fork_generation()) {
        int rc = tc__sqlite_fork_fixup(s, tc__fork_generation());
        if (rc != TC_OK)
            return rc;
    }
    waker *w = s->waker;
    if (timeout_ms <= 0)
        return TC_OK;
    if (w == NULL) { /* no waker (out of memory when it was made): a plain poll */
        struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return TC_OK;
    }
    pthread_mutex_lock(&w->mu);
    if (!w->watch_tried)
        watch_open(s, w);
    int fd = w->watch_fd;
    pthread_mutex_unlock(&w->mu);
    if (fd >= 0) {
        /* Events queued since the last wait (the caller's own step wrote the lease) wake it at
         * once; the caller then reads and finds nothing, which is cheap. The watch lives as
         * long as the waker, which outlives every wait (it is freed with the store). */
        watch_wait(s, fd, after, timeout_ms);
        return TC_OK;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    unsigned long seen = atomic_load(&s->writes);
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&s->writes) == seen &&
           pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
    }
    pthread_mutex_unlock(&w->mu);
    return TC_OK;
}

int tc__sqlite_feed_read(tc__store *base, int64_t after, int max, tc__change_fn fn,
                         void *ctx, int *out_n)
{
    sqlite_store *s = (sqlite_store *)base;
    *out_n = 0;
    int rc = tc__sqlite_enter(s);
    if (rc != TC_OK)
        return rc;
    sqlite3_stmt *st = s->st[ST_FEED_READ];
    if (sqlite3_bind_int64(st, 1, after) != SQLITE_OK || sqlite3_bind_int(st, 2, max) != SQLITE_OK)
        rc = tc__sqlite_db_fail(s, s->db, "feed read");
    int src = SQLITE_DONE; /* read only after a step; set for GCC -Og, which cannot tell */
    while (rc == TC_OK && (src = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 1);
        size_t key_len = (size_t)sqlite3_column_bytes(st, 1);
        if (key == NULL)
            continue; /* a NULL key only a foreign writer could log: nothing to invalidate */
        rc = fn(ctx, sqlite3_column_int64(st, 0), key, key_len, sqlite3_column_int64(st, 2));
        (*out_n)++;
    }
    if (rc == TC_OK && src != SQLITE_DONE)
        rc = tc__sqlite_db_fail(s, s->db, "feed read");
    tc__sqlite_done(st);
    tc__sqlite_leave(s);
    return rc;
}

/* Runs one of the feed's bookkeeping statements (consumer ?1, holder ?2, then i3 as ?3 and i4
 * as ?4 where the statement has them). *out_row receives the first column of a returned row,
 * *out_changes the rows changed; either may be NULL. */
static int feed_stmt(sqlite_store *s, int which, const char *what, const char *consumer,
                     const char *holder, int64_t i3, int64_t i4, int64_t *out_row,
                     int *got_row, int *out_changes)
{
    int rc = tc__sqlite_enter(s);
    if (rc != TC_OK)
        return rc;
    sqlite3_stmt *st = s->st[which];
    int n = sqlite3_bind_parameter_count(st);
    if ((consumer != NULL && sqlite3_bind_text(st, 1, consumer, -1, SQLITE_STATIC) != SQLITE_OK) ||
        (holder != NULL && sqlite3_bind_text(st, 2, holder, -1, SQLITE_STATIC) != SQLITE_OK) ||
        (n >= 3 && sqlite3_bind_int64(st, 3, i3) != SQLITE_OK) ||
        (n >= 4 && sqlite3_bind_int64(st, 4, i4) != SQLITE_OK))
        rc = tc__sqlite_db_fail(s, s->db, what);
    if (rc == TC_OK) {
        int src = sqlite3_step(st);
        if (got_row != NULL)
            *got_row = src == SQLITE_ROW;
        if (src == SQLITE_ROW) {
            if (out_row != NULL)
                *out_row = sqlite3_column_int64(st, 0);
            src = sqlite3_step(st); /* RETURNING: the statement ends on the next step */
        }
        if (src != SQLITE_DONE)
            rc = tc__sqlite_db_fail(s, s->db, what);
        else if (out_changes != NULL)
            *out_changes = sqlite3_changes(s->db);
    }
    tc__sqlite_done(st);
    tc__sqlite_leave(s);
    return rc;
}

int tc__sqlite_feed_claim(tc__store *base, const char *consumer, const char *holder,
                          int64_t lease_ms, int64_t *out_seq)
{
    sqlite_store *s = (sqlite_store *)base;
    int64_t now = tc__wall_ms();
    int got = 0;
    int rc = feed_stmt(s, ST_FEED_CLAIM, "feed claim", consumer, holder, now + lease_ms, now,
                       out_seq, &got, NULL);
    if (rc == TC_OK && !got)
        rc = tc__err(s->base.owner, TC_ESTATE,
                     "sqlite %s: feed consumer \"%s\" is held by another invalidator", s->path,
                     consumer);
    return rc;
}

int tc__sqlite_feed_commit(tc__store *base, const char *consumer, const char *holder,
                           int64_t seq)
{
    sqlite_store *s = (sqlite_store *)base;
    int changed = 0;
    int rc = feed_stmt(s, ST_FEED_COMMIT, "feed commit", consumer, holder, seq, 0, NULL, NULL,
                       &changed);
    if (rc == TC_OK && changed == 0)
        rc = tc__err(s->base.owner, TC_ESTATE,
                     "sqlite %s: feed consumer \"%s\": the lease was lost", s->path, consumer);
    return rc;
}

int tc__sqlite_feed_release(tc__store *base, const char *consumer, const char *holder)
{
    return feed_stmt((sqlite_store *)base, ST_FEED_RELEASE, "feed release", consumer, holder, 0,
                     0, NULL, NULL, NULL);
}

/* The holder's name, copied out ("" for none). */
static int feed_holder(sqlite_store *s, const char *consumer, char *out, size_t cap)
{
    out[0] = '\0';
    int rc = tc__sqlite_enter(s);
    if (rc != TC_OK)
        return rc;
    sqlite3_stmt *st = s->st[ST_FEED_HOLDER];
    int src = SQLITE_DONE;
    if (sqlite3_bind_text(st, 1, consumer, -1, SQLITE_STATIC) != SQLITE_OK ||
        ((src = sqlite3_step(st)) != SQLITE_ROW && src != SQLITE_DONE)) {
        rc = tc__sqlite_db_fail(s, s->db, "feed takeover");
    } else if (src == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(st, 0);
        if (h != NULL && strlen(h) < cap)
            memcpy(out, h, strlen(h) + 1);
    }
    tc__sqlite_done(st);
    tc__sqlite_leave(s);
    return rc;
}

int tc__sqlite_feed_takeover(tc__store *base, const char *consumer, const char *holder,
                             int64_t lease_ms, tc__holder_dead_fn dead, void *ctx,
                             int64_t *out_seq)
{
    sqlite_store *s = (sqlite_store *)base;
    char old[128];
    int rc = feed_holder(s, consumer, old, sizeof old);
    if (rc != TC_OK)
        return rc;
    if (old[0] == '\0' || strcmp(old, holder) == 0 || !dead(ctx, old))
        return tc__err(s->base.owner, TC_ESTATE,
                       "sqlite %s: feed consumer \"%s\" is held by a live invalidator", s->path,
                       consumer);
    rc = tc__sqlite_enter(s);
    if (rc != TC_OK)
        return rc;
    sqlite3_stmt *st = s->st[ST_FEED_TAKEOVER];
    int got = 0, src = SQLITE_DONE;
    if (sqlite3_bind_text(st, 1, consumer, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, holder, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 3, tc__wall_ms() + lease_ms) != SQLITE_OK ||
        sqlite3_bind_text(st, 4, old, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = tc__sqlite_db_fail(s, s->db, "feed takeover");
    } else {
        src = sqlite3_step(st);
        if (src == SQLITE_ROW) {
            got = 1;
            if (out_seq != NULL)
                *out_seq = sqlite3_column_int64(st, 0);
            src = sqlite3_step(st);
        }
        if (src != SQLITE_DONE)
            rc = tc__sqlite_db_fail(s, s->db, "feed takeover");
    }
    tc__sqlite_done(st);
    tc__sqlite_leave(s);
    if (rc == TC_OK && !got)
        rc = tc__err(s->base.owner, TC_ESTATE, "sqlite %s: feed consumer \"%s\" changed hands",
                     s->path, consumer);
    return rc;
}

int tc__sqlite_feed_trim(tc__store *base, int64_t retention_ms, int64_t *out_removed)
{
    sqlite_store *s = (sqlite_store *)base;
    int changed = 0;
    int rc = tc__sqlite_enter(s);
    if (rc != TC_OK)
        return rc;
    sqlite3_stmt *st = s->st[ST_FEED_TRIM];
    if (sqlite3_bind_int64(st, 1, tc__wall_ms() - retention_ms) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = tc__sqlite_db_fail(s, s->db, "feed trim");
    else
        changed = sqlite3_changes(s->db);
    tc__sqlite_done(st);
    tc__sqlite_leave(s);
    *out_removed = changed;
    return rc;
}
