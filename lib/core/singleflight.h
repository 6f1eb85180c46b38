/*
 * singleflight.h - one store read per key at a time in a process: the first reader of a key
 * that missed every cache loads it, the readers of the same key that arrive meanwhile wait for
 * its result instead of reading the store themselves (a stampede of N misses is 1 read).
 */
#ifndef TC_SINGLEFLIGHT_H
#define TC_SINGLEFLIGHT_H

#include "common/internal.h"

typedef struct tc__flights tc__flights;
typedef struct tc__flight tc__flight;

int tc__flights_new(tc__flights **out);
/* No flight may be in progress. NULL is accepted. */
void tc__flights_free(tc__flights *f);
/* In a fork()ed child, before any other use: the flights led by the parent's other threads are
 * freed (their leaders and followers did not survive the fork), so a reader of such a key in the
 * child loads it at once; a flight the forking thread leads stays, for it to land. */
void tc__flights_after_fork(tc__flights *f);
/* Tests: the users (leader and followers) of the key's flight in progress, 0 if none. */
unsigned tc__flights_users(tc__flights *f, const char *key, size_t key_len);

/* Joins the flight of key. Returns the flight; *leader is 1 if the caller must load the key and
 * then call tc__flight_land, 0 if another thread is loading it: tc__flight_wait then gives its
 * result. NULL when out of memory (then load without coalescing). */
tc__flight *tc__flight_join(tc__flights *f, const char *key, size_t key_len, int *leader);
/* The leader's result: rc (TC_OK, TC_ENOTFOUND or an error) and, for TC_OK, the value and its
 * version (copied). Wakes the followers; the leader must not touch the flight afterwards. */
void tc__flight_land(tc__flights *f, tc__flight *fl, int rc, const void *value, size_t len,
                     int64_t version);
/* A follower's wait: returns the leader's rc; for TC_OK, *value receives a malloc'd copy
 * (len + 1 bytes, NUL-terminated; the caller frees it), *len and *version. TC_ENOMEM if the
 * copy cannot be made. The follower must not touch the flight afterwards. */
int tc__flight_wait(tc__flights *f, tc__flight *fl, void **value, size_t *len, int64_t *version);

#endif
