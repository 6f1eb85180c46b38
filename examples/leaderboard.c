/*
 * leaderboard.c - a game's live ranking in a Redis sorted set, with a score feed over pub/sub.
 *
 * Twelve players score points. Each score goes into the sorted set "scores" (tc_zincrby), which
 * Redis keeps ordered, and is announced on the channel "scores" (tc_publish): "player7 just
 * scored 25!". A subscriber (tc_subscribe; its callback runs on a thread of the library's) prints
 * the announcements as they arrive, as a live ticker would. At the end the top 10 (tc_ztop) and
 * one player's rank (tc_zrank) are shown and checked against a tally kept here.
 *
 * Sorted sets and pub/sub live in Redis only, so this example needs Redis:
 *   TIERCACHE_CONFIG='{"redis":{"host":"127.0.0.1","port":6379}}' ./leaderboard
 * Without TIERCACHE_CONFIG it says so and exits 0 (`make check` and `make demo` run it with a
 * private Redis). Its keys and channels live under the namespace "example:leaderboard:".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tiercache.h>

#define PLAYERS 12
#define EVENTS 30
#define SET "scores"
#define CHANNEL "scores"

static int fail(tc_cache *cache, const char *what, int rc)
{
    fprintf(stderr, "leaderboard: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(cache));
    return 1;
}

/* TIERCACHE_CONFIG as tc_shared reads it (a file path, or inline JSON starting with '{');
 * *out stays NULL when it is unset or empty: no Redis configured. */
static int open_cache(tc_cache **out, const char *ns)
{
    *out = NULL;
    const char *p = getenv("TIERCACHE_CONFIG");
    for (p = p != NULL ? p : ""; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++)
        ;
    if (*p == '\0')
        return 0;
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return fail(NULL, "tc_config_new", rc);
    rc = *p == '{' ? tc_config_load_json(cfg, p, strlen(p)) : tc_config_load_file(cfg, p);
    if (rc == TC_OK) /* an example keeps its Redis keys apart from the deployment's own data */
        rc = tc_config_set_string(cfg, "redis.namespace", ns);
    if (rc != TC_OK) {
        fprintf(stderr, "leaderboard: TIERCACHE_CONFIG: %s: %s\n", tc_strerror(rc),
                tc_config_errmsg(cfg));
        tc_config_free(cfg);
        return 1;
    }
    rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc == TC_OK ? 0 : fail(NULL, "tc_open", rc);
}

/* The subscriber's side: what arrived, shared with the main thread. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int received;
} ticker = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

/* Runs on the library's subscriber thread, one message at a time. */
static void on_score(void *ctx, const char *channel, size_t channel_len, const void *message,
                     size_t message_len)
{
    printf("  [ticker] %.*s\n", (int)message_len, (const char *)message);
    pthread_mutex_lock(&ticker.mu);
    ticker.received++;
    pthread_cond_signal(&ticker.cond);
    pthread_mutex_unlock(&ticker.mu);
}

/* Waits until n messages arrived or 10 s passed; returns how many arrived. */
static int wait_for_messages(int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&ticker.mu);
    while (ticker.received < n &&
           pthread_cond_timedwait(&ticker.cond, &ticker.mu, &until) == 0)
        ;
    int got = ticker.received;
    pthread_mutex_unlock(&ticker.mu);
    return got;
}

int main(void)
{
    tc_cache *cache;
    if (open_cache(&cache, "example:leaderboard:") != 0)
        return 1;
    if (cache == NULL) {
        printf("needs Redis: set TIERCACHE_CONFIG, e.g. "
               "TIERCACHE_CONFIG='{\"redis\":{\"host\":\"127.0.0.1\",\"port\":6379}}'\n");
        printf("leaderboard: skipped (needs Redis)\n");
        return 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* two threads print: keep their lines whole and in order */
    int rc = tc_struct_del(NULL, cache, SET, strlen(SET)); /* a new game */
    if (rc != TC_OK)
        return fail(cache, "tc_struct_del " SET, rc);
    tc_subscription *sub;
    if ((rc = tc_subscribe(&sub, cache, CHANNEL, strlen(CHANNEL), on_score, NULL)) != TC_OK)
        return fail(cache, "tc_subscribe " CHANNEL, rc);
    printf("the ticker subscribed to \"%s\"; the game starts\n", CHANNEL);

    double tally[PLAYERS] = {0};
    unsigned seed = 42; /* the same game every run */
    for (int e = 0; e < EVENTS; e++) {
        seed = seed * 1103515245u + 12345u;
        int who = (int)((seed >> 16) % PLAYERS);
        double points = (double)(5 * (1 + (seed >> 8) % 10));
        char player[32], msg[96];
        snprintf(player, sizeof player, "player%d", who + 1);
        double total;
        rc = tc_zincrby(&total, cache, SET, strlen(SET), player, strlen(player), points);
        if (rc != TC_OK)
            return fail(cache, "tc_zincrby", rc);
        tally[who] += points;
        snprintf(msg, sizeof msg, "%s just scored %.0f! (%.0f in all)", player, points, total);
        if ((rc = tc_publish(NULL, cache, CHANNEL, strlen(CHANNEL), msg, strlen(msg))) != TC_OK)
            return fail(cache, "tc_publish", rc);
    }
    int got = wait_for_messages(EVENTS);
    printf("%d scores published, %d received by the ticker\n", EVENTS, got);

    tc_items *top;
    if ((rc = tc_ztop(&top, cache, SET, strlen(SET), 10)) != TC_OK)
        return fail(cache, "tc_ztop", rc);
    printf("top 10:\n");
    int ok = got == EVENTS && tc_items_count(top) == 10;
    for (size_t i = 0; i < tc_items_count(top); i++) {
        const char *name = tc_items_name(top, i, NULL);
        double score = tc_items_score(top, i);
        printf("  %2zu. %-9s %4.0f\n", i + 1, name, score);
        int who = atoi(name + strlen("player")) - 1;
        if (who < 0 || who >= PLAYERS || tally[who] != score ||
            (i > 0 && score > tc_items_score(top, i - 1)))
            ok = 0;
    }
    char leader[32];
    snprintf(leader, sizeof leader, "%s", tc_items_count(top) > 0 ? tc_items_name(top, 0, NULL) : "");
    tc_items_free(top);

    int64_t rank;
    double score;
    const char *me = "player7";
    rc = tc_zrank(&rank, &score, cache, SET, strlen(SET), me, strlen(me));
    if (rc == TC_OK)
        printf("%s is number %lld with %.0f points; %s leads\n", me, (long long)rank + 1, score,
               leader);
    else if (rc == TC_ENOTFOUND)
        printf("%s has not scored\n", me);
    else
        return fail(cache, "tc_zrank", rc);
    if ((rc == TC_OK) != (tally[6] > 0) || (rc == TC_OK && score != tally[6]))
        ok = 0;
    if (tc_zrank(&rank, NULL, cache, SET, strlen(SET), leader, strlen(leader)) != TC_OK ||
        rank != 0)
        ok = 0;

    tc_unsubscribe(sub);
    if ((rc = tc_struct_del(NULL, cache, SET, strlen(SET))) != TC_OK)
        return fail(cache, "tc_struct_del " SET, rc);
    tc_close(cache);
    if (!ok) {
        fprintf(stderr, "leaderboard: the ranking or the ticker does not match the game\n");
        return 1;
    }
    printf("leaderboard: ok\n");
    return 0;
}
