/*
 * check_pubsub.c - publish / subscribe against a private redis-server: delivery, namespaces,
 * unsubscribe semantics, a killed connection, a restarted or absent server, a paused server
 * (PING), fork(), tc_close with live subscriptions. Waits poll with generous deadlines; no
 * assertion depends on timing.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cache.h"
#include "redis/pubsub.h"
#include "redis/redis_tier.h"
#include "tc_test.h"

#define K(s) (s), strlen(s)
#define DEADLINE_MS 15000

/* What a subscription saw. */
typedef struct rec {
    pthread_mutex_t mu;
    char chan[64], msg[64]; /* the last message, under mu */
    size_t chan_len, msg_len;
    atomic_int msgs, ups, downs, last; /* last: the last on_link value, -1 none */
    atomic_int twice;                  /* on_link twice in a row with one value */
    atomic_int in_cb, after_unsub;     /* a callback runs; one ran after unsubscribe returned */
    atomic_int unsubscribed;
    int sleep_ms;                      /* in each message callback */
    int unsub_self;                    /* unsubscribe from inside the first message */
    _Atomic(tc_subscription *) pub_self; /* set after subscribing: atomic for TSan */
} rec;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    atomic_store(&r->last, -1);
}

static void rec_fini(rec *r)
{
    pthread_mutex_destroy(&r->mu);
}

static void on_msg(void *ctx, const char *channel, size_t channel_len, const void *message,
                   size_t message_len)
{
    rec *r = ctx;
    atomic_store(&r->in_cb, 1);
    if (atomic_load(&r->unsubscribed))
        atomic_store(&r->after_unsub, 1);
    pthread_mutex_lock(&r->mu);
    r->chan_len = channel_len < sizeof r->chan ? channel_len : sizeof r->chan;
    memcpy(r->chan, channel, r->chan_len);
    r->msg_len = message_len < sizeof r->msg ? message_len : sizeof r->msg;
    memcpy(r->msg, message, r->msg_len);
    pthread_mutex_unlock(&r->mu);
    if (r->sleep_ms > 0)
        tct_sleep_ms(r->sleep_ms);
    int n = atomic_fetch_add(&r->msgs, 1) + 1;
    if (r->unsub_self && n == 1)
        tc_unsubscribe(atomic_load(&r->pub_self));
    atomic_store(&r->in_cb, 0);
}

static void on_link(void *ctx, int up)
{
    rec *r = ctx;
    if (atomic_exchange(&r->last, up) == up)
        atomic_store(&r->twice, 1);
    atomic_fetch_add(up ? &r->ups : &r->downs, 1);
}

/* Polls until *v >= want; 0 on time out. */
static int wait_for(atomic_int *v, int want)
{
    for (int waited = 0; waited < DEADLINE_MS; waited += 10) {
        if (atomic_load(v) >= want)
            return 1;
        tct_sleep_ms(10);
    }
    return atomic_load(v) >= want;
}

static void expect_msg(rec *r, const char *chan, const void *msg, size_t msg_len)
{
    pthread_mutex_lock(&r->mu);
    ck_assert_uint_eq(r->chan_len, strlen(chan));
    ck_assert_int_eq(memcmp(r->chan, chan, r->chan_len), 0);
    ck_assert_uint_eq(r->msg_len, msg_len);
    ck_assert_int_eq(memcmp(r->msg, msg, msg_len), 0);
    pthread_mutex_unlock(&r->mu);
}

static tc_cache *open_at(const char *name, int port, const char *extra)
{
    return tct_open(tct_dir, name, port, extra);
}

/* A subscriber made directly, with short intervals so that link tests run quickly. */
static tc__pubsub *pubsub_at(int port, const char *ns)
{
    tc__redis_opts o = {
        .host = "127.0.0.1",
        .port = port,
        .connect_timeout_ms = 500,
        .retry_interval_ms = 20,
        .retry_max_ms = 200,
        .ns = ns,
    };
    tc__pubsub *p;
    ck_assert_int_eq(tc__pubsub_new(&p, &o, 200, NULL), TC_OK);
    return p;
}

/* Publishes until Redis counts want receivers (a resubscription in progress), then once. */
static void publish_when(tc_cache *c, const char *chan, const char *msg, int64_t want)
{
    int64_t n = -1;
    for (int waited = 0; waited < DEADLINE_MS; waited += 20) {
        /* PUBSUB NUMSUB would do; publishing nothing is simpler: an empty channel. */
        const char *argv[] = {"PUBSUB", "NUMSUB", NULL, NULL};
        char full[128];
        size_t ns_len;
        const char *ns = tc__redis_namespace(tc__cache_redis(c), &ns_len);
        snprintf(full, sizeof full, "%.*s%s", (int)ns_len, ns, chan);
        argv[2] = full;
        char *rep = tct_redis_cmd(&tct_srv, argv);
        if (rep != NULL) {
            const char *nl = strchr(rep, '\n');
            n = nl != NULL ? atoll(nl + 1) : -1;
        }
        free(rep);
        if (n >= want)
            break;
        tct_sleep_ms(20);
    }
    ck_assert_int_ge(n, want);
    int64_t got = -1;
    int rc = tc_publish(&got, c, K(chan), K(msg));
    ck_assert_msg(rc == TC_OK, "publish: %s (%s)", tc_strerror(rc), tc_errmsg(c));
}

/* ---- arguments ------------------------------------------------------------------------------ */

START_TEST(test_bad_arguments)
{
    tc_cache *c = open_at("a", 0, NULL); /* no Redis */
    rec r;
    rec_init(&r);
    tc_subscription *s = (tc_subscription *)1;
    int64_t n = 7;
    ck_assert_int_eq(tc_publish(&n, c, K("ch"), "m", 1), TC_EREDIS);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), on_msg, &r), TC_EREDIS);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(tc_publish(NULL, NULL, K("ch"), "m", 1), TC_EINVAL);
    ck_assert_int_eq(tc_publish(NULL, c, NULL, 3, "m", 1), TC_EINVAL);
    ck_assert_int_eq(tc_publish(NULL, c, "", 0, "m", 1), TC_EKEY);
    ck_assert_int_eq(tc_publish(NULL, c, "a\0b", 3, "m", 1), TC_EKEY);
    ck_assert_int_eq(tc_subscribe(NULL, c, K("ch"), on_msg, &r), TC_EINVAL);
    ck_assert_int_eq(tc_subscribe(&s, NULL, K("ch"), on_msg, &r), TC_EINVAL);
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), NULL, &r), TC_EINVAL);
    ck_assert_int_eq(tc_subscribe(&s, c, "", 0, on_msg, &r), TC_EKEY);
    tc_unsubscribe(NULL);
    tc__pubsub_unsubscribe(NULL);
    tc__pubsub_free(NULL);
    ck_assert_int_eq(tc__pubsub_resume(NULL), TC_OK);
    tc_close(c);

    c = open_at("b", tct_srv.port, NULL);
    char longch[TC_KEY_MAX + 2];
    memset(longch, 'x', sizeof longch);
    ck_assert_int_eq(tc_publish(NULL, c, longch, TC_KEY_MAX + 1, "m", 1), TC_EKEY);
    ck_assert_int_eq(tc_publish(NULL, c, K("ch"), NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc_publish(NULL, c, K("ch"), NULL, 0), TC_OK); /* an empty message */
    ck_assert_int_eq(tc_subscribe(&s, c, longch, TC_KEY_MAX + 1, on_msg, &r), TC_EKEY);
    ck_assert_int_eq(tc_subscribe(&s, c, "a\0b", 3, on_msg, &r), TC_EKEY);
    tc__pubsub *p = tc__cache_pubsub(c);
    tc__sub *is;
    ck_assert_int_eq(tc__pubsub_subscribe(&is, p, K("ch"), NULL, NULL, &r, 0), TC_EINVAL);
    ck_assert_int_eq(tc__pubsub_subscribe(&is, NULL, K("ch"), on_msg, NULL, &r, 0), TC_EINVAL);
    tc__redis_opts o = {.host = "", .port = 1, .connect_timeout_ms = 1};
    ck_assert_int_eq(tc__pubsub_new(&p, &o, 100, NULL), TC_EINVAL);
    ck_assert_ptr_null(p);
    tc_close(c);
    rec_fini(&r);
}
END_TEST

/* ---- delivery ------------------------------------------------------------------------------- */

START_TEST(test_round_trip_binary)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r;
    rec_init(&r);
    tc_subscription *s;
    int rc = tc_subscribe(&s, c, "ch\xff", 3, on_msg, &r);
    ck_assert_msg(rc == TC_OK, "%s (%s)", tc_strerror(rc), tc_errmsg(c));
    int64_t n = -1;
    ck_assert_int_eq(tc_publish(&n, c, "ch\xff", 3, "a\0b\0", 4), TC_OK);
    ck_assert_int_eq(n, 1);
    ck_assert(wait_for(&r.msgs, 1));
    expect_msg(&r, "ch\xff", "a\0b\0", 4);
    ck_assert_int_eq(tc_publish(&n, c, "ch\xff", 3, "", 0), TC_OK); /* empty payload */
    ck_assert(wait_for(&r.msgs, 2));
    expect_msg(&r, "ch\xff", "", 0);
    ck_assert_int_eq(tc_publish(&n, c, K("other"), "x", 1), TC_OK);
    ck_assert_int_eq(n, 0);
    tc_unsubscribe(s);
    tc_close(c);
    ck_assert_int_eq(atomic_load(&r.msgs), 2);
    rec_fini(&r);
}
END_TEST

START_TEST(test_several_subscriptions)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    tc_cache *c2 = open_at("b", tct_srv.port, NULL);
    rec r1, r2, r3, r4;
    rec_init(&r1), rec_init(&r2), rec_init(&r3), rec_init(&r4);
    tc_subscription *s1, *s2, *s3, *s4;
    ck_assert_int_eq(tc_subscribe(&s1, c, K("one"), on_msg, &r1), TC_OK);
    ck_assert_int_eq(tc_subscribe(&s2, c, K("one"), on_msg, &r2), TC_OK);
    ck_assert_int_eq(tc_subscribe(&s3, c, K("two"), on_msg, &r3), TC_OK);
    ck_assert_int_eq(tc_subscribe(&s4, c2, K("one"), on_msg, &r4), TC_OK);
    int64_t n = -1;
    ck_assert_int_eq(tc_publish(&n, c, K("one"), K("m1")), TC_OK);
    ck_assert_int_eq(n, 2); /* one connection per handle */
    ck_assert(wait_for(&r1.msgs, 1));
    ck_assert(wait_for(&r2.msgs, 1));
    ck_assert(wait_for(&r4.msgs, 1));
    expect_msg(&r2, "one", "m1", 2);
    ck_assert_int_eq(tc_publish(&n, c2, K("two"), K("m2")), TC_OK);
    ck_assert_int_eq(n, 1);
    ck_assert(wait_for(&r3.msgs, 1));
    expect_msg(&r3, "two", "m2", 2);
    /* One of two on a channel leaves: the other still receives. */
    tc_unsubscribe(s1);
    ck_assert_int_eq(tc_publish(&n, c, K("one"), K("m3")), TC_OK);
    ck_assert(wait_for(&r2.msgs, 2));
    ck_assert(wait_for(&r4.msgs, 2));
    tc_unsubscribe(s2);
    tc_unsubscribe(s3);
    tc_unsubscribe(s4);
    ck_assert_int_eq(atomic_load(&r1.msgs), 1);
    ck_assert_int_eq(atomic_load(&r3.msgs), 1);
    tc_close(c);
    tc_close(c2);
    rec_fini(&r1), rec_fini(&r2), rec_fini(&r3), rec_fini(&r4);
}
END_TEST

START_TEST(test_namespaces_isolate)
{
    tc_cache *a = open_at("a", tct_srv.port, "{\"redis.namespace\": \"nsa:\"}");
    tc_cache *b = open_at("b", tct_srv.port, "{\"redis.namespace\": \"nsb:\"}");
    rec ra, rb;
    rec_init(&ra), rec_init(&rb);
    tc_subscription *sa, *sb;
    ck_assert_int_eq(tc_subscribe(&sa, a, K("ch"), on_msg, &ra), TC_OK);
    ck_assert_int_eq(tc_subscribe(&sb, b, K("ch"), on_msg, &rb), TC_OK);
    int64_t n = -1;
    ck_assert_int_eq(tc_publish(&n, a, K("ch"), K("for a")), TC_OK);
    ck_assert_int_eq(n, 1);
    ck_assert(wait_for(&ra.msgs, 1));
    expect_msg(&ra, "ch", "for a", 5);
    ck_assert_int_eq(tc_publish(&n, b, K("ch"), K("for b")), TC_OK);
    ck_assert_int_eq(n, 1);
    ck_assert(wait_for(&rb.msgs, 1));
    expect_msg(&rb, "ch", "for b", 5);
    /* The raw channel is the namespace and the channel. */
    const char *argv[] = {"PUBLISH", "nsa:ch", "raw", NULL};
    char *rep = tct_redis_cmd(&tct_srv, argv);
    ck_assert_str_eq(rep, "1");
    free(rep);
    ck_assert(wait_for(&ra.msgs, 2));
    expect_msg(&ra, "ch", "raw", 3);
    tc_unsubscribe(sa);
    tc_unsubscribe(sb);
    ck_assert_int_eq(atomic_load(&ra.msgs), 2);
    ck_assert_int_eq(atomic_load(&rb.msgs), 1);
    tc_close(a);
    tc_close(b);
    rec_fini(&ra), rec_fini(&rb);
}
END_TEST

/* ---- unsubscribe -------------------------------------------------------------------------- */

START_TEST(test_unsubscribe)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r;
    rec_init(&r);
    tc_subscription *s;
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), on_msg, &r), TC_OK);
    ck_assert_int_eq(tc_publish(NULL, c, K("ch"), K("1")), TC_OK);
    ck_assert(wait_for(&r.msgs, 1));
    tc_unsubscribe(s);
    atomic_store(&r.unsubscribed, 1);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(tc_publish(NULL, c, K("ch"), K("late")), TC_OK);
    /* The server drops the subscription soon after; no callback in between. */
    int64_t n = 1;
    for (int waited = 0; n != 0 && waited < DEADLINE_MS; waited += 10) {
        ck_assert_int_eq(tc_publish(&n, c, K("ch"), K("late")), TC_OK);
        if (n != 0)
            tct_sleep_ms(10);
    }
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(atomic_load(&r.after_unsub), 0);
    ck_assert_int_eq(atomic_load(&r.msgs), 1);
    tc_close(c);
    rec_fini(&r);
}
END_TEST

START_TEST(test_unsubscribe_inside_callback)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r, other;
    rec_init(&r), rec_init(&other);
    r.unsub_self = 1;
    tc_subscription *s, *so;
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), on_msg, &r), TC_OK);
    atomic_store(&r.pub_self, s); /* before any message */
    ck_assert_int_eq(tc_subscribe(&so, c, K("ch"), on_msg, &other), TC_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(tc_publish(NULL, c, K("ch"), K("m")), TC_OK);
    ck_assert(wait_for(&other.msgs, 5));
    ck_assert_int_eq(atomic_load(&r.msgs), 1);
    tc_unsubscribe(so);
    tc_close(c);
    rec_fini(&r), rec_fini(&other);
}
END_TEST

START_TEST(test_unsubscribe_waits_for_callback)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r;
    rec_init(&r);
    r.sleep_ms = 300;
    tc_subscription *s;
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), on_msg, &r), TC_OK);
    ck_assert_int_eq(tc_publish(NULL, c, K("ch"), K("slow")), TC_OK);
    ck_assert(wait_for(&r.in_cb, 1));
    tc_unsubscribe(s);
    ck_assert_int_eq(atomic_load(&r.in_cb), 0); /* it waited for the running callback */
    ck_assert_int_eq(atomic_load(&r.msgs), 1);
    tc_close(c);
    rec_fini(&r);
}
END_TEST

/* Live subscriptions at tc_close: ended, freed (ASan / valgrind), no hang. */
START_TEST(test_close_with_live_subscriptions)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r;
    rec_init(&r);
    tc_subscription *s;
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tc_subscribe(&s, c, K(i % 2 ? "x" : "y"), on_msg, &r), TC_OK);
    tc__sub *is;
    ck_assert_int_eq(tc__pubsub_subscribe(&is, tc__cache_pubsub(c), K("z"), on_msg, on_link, &r,
                                          0), TC_OK);
    ck_assert_int_eq(tc_publish(NULL, c, K("x"), K("m")), TC_OK);
    tc_close(c);
    rec_fini(&r);
}
END_TEST

/* ---- the link ----------------------------------------------------------------------------- */

START_TEST(test_connection_killed)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    tc__pubsub *p = pubsub_at(tct_srv.port, "tc:");
    rec r;
    rec_init(&r);
    tc__sub *s;
    ck_assert_int_eq(tc__pubsub_subscribe(&s, p, K("ch"), on_msg, on_link, &r, 0), TC_OK);
    ck_assert(wait_for(&r.ups, 1));
    ck_assert_int_eq(atomic_load(&r.downs), 0);
    const char *kill[] = {"CLIENT", "KILL", "TYPE", "pubsub", NULL};
    free(tct_redis_cmd(&tct_srv, kill));
    ck_assert(wait_for(&r.downs, 1));
    ck_assert(wait_for(&r.ups, 2));
    publish_when(c, "ch", "after", 1);
    ck_assert(wait_for(&r.msgs, 1));
    expect_msg(&r, "ch", "after", 5);
    ck_assert_int_eq(atomic_load(&r.twice), 0);
    tc__pubsub_unsubscribe(s);
    tc__pubsub_free(p);
    tc_close(c);
    rec_fini(&r);
}
END_TEST

/* A server that stops answering (SIGSTOP) without closing: PING finds it. */
START_TEST(test_paused_server_found_by_ping)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    tc__pubsub *p = pubsub_at(tct_srv.port, "tc:");
    rec r;
    rec_init(&r);
    tc__sub *s;
    ck_assert_int_eq(tc__pubsub_subscribe(&s, p, K("ch"), on_msg, on_link, &r, 1), TC_OK);
    ck_assert_int_eq(atomic_load(&r.ups), 1);
    tct_sleep_ms(700); /* idle for several ping intervals: pongs keep it up */
    ck_assert_int_eq(atomic_load(&r.downs), 0);
    kill(tct_srv.pid, SIGSTOP);
    int found = wait_for(&r.downs, 1);
    kill(tct_srv.pid, SIGCONT);
    ck_assert(found);
    ck_assert(wait_for(&r.ups, 2));
    publish_when(c, "ch", "back", 1);
    ck_assert(wait_for(&r.msgs, 1));
    ck_assert_int_eq(atomic_load(&r.twice), 0);
    tc__pubsub_free(p); /* ends s too */
    tc_close(c);
    rec_fini(&r);
}
END_TEST

START_TEST(test_redis_restarted)
{
    ck_assert_int_eq(tct_redis_start(&tct_srv), 0);
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    tc__pubsub *p = pubsub_at(tct_srv.port, "tc:");
    rec r, rp;
    rec_init(&r), rec_init(&rp);
    tc_subscription *s;
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), on_msg, &r), TC_OK);
    tc__sub *is;
    ck_assert_int_eq(tc__pubsub_subscribe(&is, p, K("ch"), on_msg, on_link, &rp, 1), TC_OK);
    tct_redis_kill(&tct_srv);
    ck_assert(wait_for(&rp.downs, 1));
    ck_assert_int_eq(tct_redis_restart(&tct_srv), 0);
    ck_assert(wait_for(&rp.ups, 2));
    publish_when(c, "ch", "again", 2); /* both handles resubscribed */
    ck_assert(wait_for(&r.msgs, 1));
    ck_assert(wait_for(&rp.msgs, 1));
    expect_msg(&r, "ch", "again", 5);
    ck_assert_int_eq(atomic_load(&rp.twice), 0);
    tc_unsubscribe(s);
    tc__pubsub_unsubscribe(is);
    tc__pubsub_free(p);
    tc_close(c);
    tct_redis_stop(&tct_srv);
    rec_fini(&r), rec_fini(&rp);
}
END_TEST

START_TEST(test_redis_down_at_subscribe)
{
    ck_assert_int_eq(tct_redis_start(&tct_srv), 0);
    tct_redis_kill(&tct_srv); /* keeps the port: nothing listens on it now */
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r;
    rec_init(&r);
    tc_subscription *s = (tc_subscription *)1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(tc_subscribe(&s, c, K("ch"), on_msg, &r), TC_EREDIS);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(tc_errmsg(c), "subscribe"));
    /* Refused at once on loopback; the bound is the connect timeout (200 ms) plus a margin
     * that covers valgrind. */
    ck_assert_int_lt(t1.tv_sec - t0.tv_sec, 10);

    tc__sub *is;
    ck_assert_int_eq(tc__pubsub_subscribe(&is, tc__cache_pubsub(c), K("ch"), on_msg, on_link,
                                          &r, 0), TC_OK);
    ck_assert(wait_for(&r.downs, 1));
    ck_assert_int_eq(atomic_load(&r.ups), 0);
    ck_assert_int_eq(tct_redis_restart(&tct_srv), 0);
    ck_assert(wait_for(&r.ups, 1)); /* retry_max_ms 200: soon */
    publish_when(c, "ch", "up", 1);
    ck_assert(wait_for(&r.msgs, 1));
    ck_assert_int_eq(atomic_load(&r.twice), 0);
    tc_close(c); /* ends is */
    tct_redis_stop(&tct_srv);
    rec_fini(&r);
}
END_TEST

/* ---- fork ---------------------------------------------------------------------------------- */

/* TSan refuses to start a thread in the child of a multi-threaded process (die_after_fork), so
 * under TSan the child only repairs and unsubscribes the inherited subscription (no thread
 * needed); the other builds run the whole child. */

START_TEST(test_fork)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    rec r;
    rec_init(&r);
    tc_subscription *s;
    ck_assert_int_eq(tc_subscribe(&s, c, K("parent"), on_msg, &r), TC_OK);
    ck_assert_int_eq(tc_publish(NULL, c, K("parent"), K("p1")), TC_OK);
    ck_assert(wait_for(&r.msgs, 1));

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(30);
        if (TCT_TSAN) {
            tc__pubsub_after_fork(tc__cache_pubsub(c));
            tc_unsubscribe(s); /* no thread in the child yet: freed at once */
            _exit(0); /* tc_close would resume the handle's other subscriptions (a thread) */
        }
        /* The child's own thread and connection: its subscription and the inherited one. */
        rec rc_;
        rec_init(&rc_);
        tc_subscription *cs;
        int bad = 0;
        if (tc_subscribe(&cs, c, K("child"), on_msg, &rc_) != TC_OK)
            _exit(2);
        int64_t n = -1;
        bad |= tc_publish(&n, c, K("child"), K("c1")) != TC_OK || n != 1;
        bad |= !wait_for(&rc_.msgs, 1);
        /* The inherited subscription is resubscribed by the child's thread. */
        int before = atomic_load(&r.msgs);
        for (int waited = 0; waited < DEADLINE_MS && atomic_load(&r.msgs) == before;
             waited += 50) {
            tc_publish(NULL, c, K("parent"), K("from child"));
            tct_sleep_ms(50);
        }
        bad |= atomic_load(&r.msgs) == before;
        tc_unsubscribe(cs);
        tc_close(c); /* ends the inherited one; valgrind checks the child too */
        rec_fini(&rc_);
        _exit(bad ? 3 : 0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
    /* The parent's connection is untouched by the child. */
    int before = atomic_load(&r.msgs);
    ck_assert_int_eq(tc_publish(NULL, c, K("parent"), K("p2")), TC_OK);
    ck_assert(wait_for(&r.msgs, before + 1));
    expect_msg(&r, "parent", "p2", 2);
    tc_unsubscribe(s);
    tc_close(c);
    rec_fini(&r);
}
END_TEST

/* Several threads subscribe and unsubscribe at once while messages flow (TSan's case). */
typedef struct churn_arg {
    tc_cache *c;
    int id;
    atomic_int *fail;
} churn_arg;

static void *churn(void *arg)
{
    churn_arg *a = arg;
    char ch[16];
    snprintf(ch, sizeof ch, "c%d", a->id % 2);
    for (int i = 0; i < 10; i++) {
        rec r;
        rec_init(&r);
        tc_subscription *s;
        if (tc_subscribe(&s, a->c, K(ch), on_msg, &r) != TC_OK) {
            atomic_store(a->fail, 1);
            rec_fini(&r);
            break;
        }
        tc_publish(NULL, a->c, K(ch), K("m"));
        tc_unsubscribe(s);
        rec_fini(&r); /* no callback can run now */
    }
    return NULL;
}

START_TEST(test_concurrent_churn)
{
    tc_cache *c = open_at("a", tct_srv.port, NULL);
    atomic_int fail = 0;
    pthread_t t[4];
    churn_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (churn_arg){c, i, &fail};
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&fail), 0);
    tc_close(c);
}
END_TEST

/* tc_subscribe from inside a message callback returns at once; the new subscription is
 * confirmed after the callback and receives what is published afterwards. */
static tc_cache *nested_cache;
static atomic_int nested_rc = 1, nested_got;
static tc_subscription *nested_sub;

static void nested_inner(void *ctx, const char *ch, size_t chl, const void *m, size_t ml)
{
    atomic_store(&nested_got, 1);
}

static void nested_outer(void *ctx, const char *ch, size_t chl, const void *m, size_t ml)
{
    if (atomic_load(&nested_rc) != 1)
        return;
    atomic_store(&nested_rc, tc_subscribe(&nested_sub, nested_cache, "inner", 5, nested_inner,
                                          NULL));
}

START_TEST(test_subscribe_from_callback)
{
    nested_cache = tct_open(tct_dir, "a", tct_srv.port, "{\"redis\": {\"bus\": false}}");
    tc_subscription *s;
    ck_assert_int_eq(tc_subscribe(&s, nested_cache, "outer", 5, nested_outer, NULL), TC_OK);
    ck_assert_int_eq(tc_publish(NULL, nested_cache, "outer", 5, "x", 1), TC_OK);
    for (int waited = 0; waited < 10000 && atomic_load(&nested_rc) == 1; waited += 5)
        tct_sleep_ms(5);
    ck_assert_int_eq(atomic_load(&nested_rc), TC_OK);
    for (int waited = 0; waited < 10000 && !atomic_load(&nested_got); waited += 5) {
        tc_publish(NULL, nested_cache, "inner", 5, "y", 1);
        tct_sleep_ms(5);
    }
    ck_assert_int_eq(atomic_load(&nested_got), 1);
    tc_close(nested_cache);
}
END_TEST

Suite *pubsub_suite(void)
{
    Suite *s = suite_create("pubsub");

    TCase *basic = tcase_create("basic");
    tcase_set_timeout(basic, 60);
    tcase_add_unchecked_fixture(basic, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(basic, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(basic, test_bad_arguments);
    tcase_add_test(basic, test_round_trip_binary);
    tcase_add_test(basic, test_several_subscriptions);
    tcase_add_test(basic, test_namespaces_isolate);
    tcase_add_test(basic, test_unsubscribe);
    tcase_add_test(basic, test_unsubscribe_inside_callback);
    tcase_add_test(basic, test_unsubscribe_waits_for_callback);
    tcase_add_test(basic, test_close_with_live_subscriptions);
    tcase_add_test(basic, test_concurrent_churn);
    tcase_add_test(basic, test_fork);
    tcase_add_test(basic, test_subscribe_from_callback);
    suite_add_tcase(s, basic);

    TCase *link = tcase_create("link");
    tcase_set_timeout(link, 60);
    tcase_add_unchecked_fixture(link, tct_srv_up, tct_srv_down);
    tcase_add_checked_fixture(link, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(link, test_connection_killed);
    tcase_add_test(link, test_paused_server_found_by_ping);
    suite_add_tcase(s, link);

    /* Each starts, kills and stops its own server. */
    TCase *faults = tcase_create("faults");
    tcase_set_timeout(faults, 60);
    tcase_add_checked_fixture(faults, tct_dir_setup, tct_dir_teardown);
    tcase_add_test(faults, test_redis_restarted);
    tcase_add_test(faults, test_redis_down_at_subscribe);
    suite_add_tcase(s, faults);
    return s;
}
