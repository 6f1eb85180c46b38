/*
 * check_cluster.c - Redis Cluster support, first part: the key slot (lib/redis/slot.c)
 * against the specification's vectors and against a real cluster's CLUSTER KEYSLOT (3 masters,
 * 3 replicas, tests/cluster_harness.c), and the slot map (lib/redis/cluster_map.c) from the
 * real cluster's CLUSTER SLOTS and from replies that are not one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cluster_harness.h"
#include "redis/cluster_map.h"
#include "redis/slot.h"
#include "tc_test.h"

#define K(s) (s), strlen(s)

START_TEST(test_crc16_and_slot_vectors)
{
    ck_assert_uint_eq(tc__crc16(K("123456789")), 0x31C3); /* the specification's check */
    ck_assert_uint_eq(tc__crc16("", 0), 0);
    ck_assert_uint_eq(tc__redis_slot("", 0), 0);
    /* Hash tags: the first '{' and the first '}' after it, when not empty. */
    ck_assert_uint_eq(tc__redis_slot(K("{user1000}.following")),
                      tc__redis_slot(K("{user1000}.followers")));
    ck_assert_uint_eq(tc__redis_slot(K("{user1000}.following")), tc__redis_slot(K("user1000")));
    ck_assert_uint_eq(tc__redis_slot(K("foo{}{bar}")), tc__crc16(K("foo{}{bar}")) % 16384);
    ck_assert_uint_eq(tc__redis_slot(K("foo{{bar}}zap")), tc__redis_slot(K("{bar")));
    ck_assert_uint_eq(tc__redis_slot(K("foo{bar}{zap}")), tc__redis_slot(K("bar")));
    ck_assert_uint_eq(tc__redis_slot(K("no{close")), tc__crc16(K("no{close")) % 16384);
    /* Binary-safe: the length counts, not a NUL. */
    ck_assert_uint_ne(tc__redis_slot("a\0b", 3), tc__redis_slot("a", 1));
    for (int i = 0; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof k, "key:%d", i);
        ck_assert_uint_lt(tc__redis_slot(K(k)), TC__REDIS_SLOTS);
    }
}
END_TEST

static tct_cluster cl;
static int cl_ok;

static void cluster_up(void)
{
    cl_ok = tct_cluster_start(&cl) == 0;
}

static void cluster_down(void)
{
    if (cl_ok)
        tct_cluster_stop(&cl);
    cl_ok = 0;
}

/* The cluster is whole: every slot served, six nodes known. */
START_TEST(test_cluster_is_up)
{
    ck_assert_msg(cl_ok, "the cluster could not be started (redis-server, redis-cli)");
    const char *info[] = {"CLUSTER", "INFO", NULL};
    char *out = tct_redis_cmd(&cl.node[0], info);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(strstr(out, "cluster_slots_assigned:16384"));
    ck_assert_ptr_nonnull(strstr(out, "cluster_known_nodes:6"));
    free(out);
}
END_TEST

/* Our slot is the server's for 2,000 keys, hash tags included. */
START_TEST(test_slots_match_cluster_keyslot)
{
    ck_assert_msg(cl_ok, "the cluster could not be started (redis-server, redis-cli)");
    for (int i = 0; i < 2000; i++) {
        char k[64];
        switch (i % 4) {
        case 0: snprintf(k, sizeof k, "tc:key:%d", i); break;
        case 1: snprintf(k, sizeof k, "tc:{user%d}.profile", i); break;
        case 2: snprintf(k, sizeof k, "tc:{}%d{x}", i); break;
        default: snprintf(k, sizeof k, "%d{tag%d}{z}", i, i % 7); break;
        }
        const char *cmd[] = {"CLUSTER", "KEYSLOT", k, NULL};
        char *out = tct_redis_cmd(&cl.node[i % TCT_CLUSTER_NODES], cmd);
        ck_assert_ptr_nonnull(out);
        ck_assert_msg(strtoul(out, NULL, 10) == tc__redis_slot(K(k)), "%s: server %s, ours %u",
                      k, out, tc__redis_slot(K(k)));
        free(out);
    }
}
END_TEST

/* A reply parsed from raw RESP, as hiredis would hand it over. */
static redisReply *resp(const char *raw)
{
    redisReader *rd = redisReaderCreate();
    ck_assert_ptr_nonnull(rd);
    ck_assert_int_eq(redisReaderFeed(rd, raw, strlen(raw)), REDIS_OK);
    void *rep = NULL;
    ck_assert_int_eq(redisReaderGetReply(rd, &rep), REDIS_OK);
    ck_assert_ptr_nonnull(rep);
    redisReaderFree(rd);
    return rep;
}

static int map_rc(const char *raw, const char *msg_part)
{
    redisReply *rep = resp(raw);
    tc__cmap *m = (tc__cmap *)1;
    int rc = tc__cmap_from_slots(&m, rep, NULL);
    if (rc != TC_OK) {
        ck_assert_ptr_null(m);
        if (msg_part != NULL)
            ck_assert_msg(strstr(tc_errmsg(NULL), msg_part) != NULL, "%s", tc_errmsg(NULL));
    }
    tc__cmap_free(rc == TC_OK ? m : NULL);
    freeReplyObject(rep);
    return rc;
}

/* Replies that are not a slot map: each an error with its reason, never a partial map. */
START_TEST(test_map_refuses_bad_replies)
{
    ck_assert_int_eq(map_rc("+OK\r\n", "not an array"), TC_EPROTO);
    ck_assert_int_eq(map_rc("-ERR This instance has cluster support disabled\r\n", NULL),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n:5\r\n", "range 0"), TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*2\r\n:0\r\n:5\r\n", "master"), TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*3\r\n:9\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n", "in order"),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", "16383"),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*3\r\n$1\r\n0\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n",
                            "integer"),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$0\r\n\r\n:1\r\n", "host"),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:70000\r\n", "port"),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n:1\r\n:1\r\n", "master"),
                     TC_EPROTO);
    ck_assert_int_eq(map_rc("*2\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n"
                            "*3\r\n:5\r\n:9\r\n*2\r\n$1\r\ng\r\n:2\r\n",
                            "overlaps"),
                     TC_EPROTO);
    /* An empty map (a cluster not set up yet) is a map: every slot unassigned. */
    redisReply *rep = resp("*0\r\n");
    tc__cmap *m;
    ck_assert_int_eq(tc__cmap_from_slots(&m, rep, NULL), TC_OK);
    ck_assert_uint_eq(tc__cmap_masters(m), 0);
    ck_assert_int_eq(tc__cmap_master_of(m, 0), -1);
    ck_assert_int_eq(tc__cmap_master_of(m, 16383), -1);
    ck_assert_int_eq(tc__cmap_master_of(m, 16384), -1);
    tc__cmap_free(m);
    freeReplyObject(rep);
    /* Two ranges of one master count it once; a gap stays unassigned. */
    rep = resp("*2\r\n*3\r\n:0\r\n:99\r\n*2\r\n$4\r\nhost\r\n:7000\r\n"
               "*3\r\n:200\r\n:16383\r\n*3\r\n$4\r\nhost\r\n:7000\r\n$2\r\nid\r\n");
    ck_assert_int_eq(tc__cmap_from_slots(&m, rep, NULL), TC_OK);
    ck_assert_uint_eq(tc__cmap_masters(m), 1);
    ck_assert_int_eq(tc__cmap_master_of(m, 99), 0);
    ck_assert_int_eq(tc__cmap_master_of(m, 150), -1);
    int port;
    ck_assert_str_eq(tc__cmap_address(m, 0, &port), "host");
    ck_assert_int_eq(port, 7000);
    tc__cmap_free(m);
    freeReplyObject(rep);
}
END_TEST

/* The real cluster's map: three masters cover every slot, and a SET of each of 600 keys sent
 * to the master the map names is taken there (no MOVED). */
START_TEST(test_map_of_the_cluster)
{
    ck_assert_msg(cl_ok, "the cluster could not be started (redis-server, redis-cli)");
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", cl.node[0].port, tv);
    ck_assert(c != NULL && c->err == 0);
    redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
    ck_assert_ptr_nonnull(rep);
    tc__cmap *m;
    ck_assert_msg(tc__cmap_from_slots(&m, rep, NULL) == TC_OK, "%s", tc_errmsg(NULL));
    freeReplyObject(rep);
    redisFree(c);
    ck_assert_uint_eq(tc__cmap_masters(m), 3);
    for (unsigned s = 0; s < TC__REDIS_SLOTS; s++)
        ck_assert_int_ge(tc__cmap_master_of(m, s), 0);
    redisContext *node[3];
    for (size_t i = 0; i < 3; i++) {
        int port;
        const char *host = tc__cmap_address(m, i, &port);
        node[i] = redisConnectWithTimeout(host, port, tv);
        ck_assert(node[i] != NULL && node[i]->err == 0);
    }
    int used[3] = {0};
    for (int i = 0; i < 600; i++) {
        char k[32];
        snprintf(k, sizeof k, "map:key:%d", i);
        int at = tc__cmap_master_of(m, tc__redis_slot(K(k)));
        used[at]++;
        const char *argv[] = {"SET", k, "v"};
        size_t lens[] = {3, strlen(k), 1};
        redisReply *r = redisCommandArgv(node[at], 3, argv, lens);
        ck_assert_ptr_nonnull(r);
        ck_assert_msg(r->type == REDIS_REPLY_STATUS, "%s: %s", k,
                      r->type == REDIS_REPLY_ERROR ? r->str : "not a status");
        freeReplyObject(r);
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(used[i], 0); /* the keys spread over every master */
        redisFree(node[i]);
    }
    tc__cmap_free(m);
}
END_TEST

Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *unit = tcase_create("slot");
    tcase_add_test(unit, test_crc16_and_slot_vectors);
    tcase_add_test(unit, test_map_refuses_bad_replies);
    suite_add_tcase(s, unit);
    TCase *live = tcase_create("cluster");
    tcase_add_unchecked_fixture(live, cluster_up, cluster_down);
    tcase_set_timeout(live, 120);
    tcase_add_test(live, test_cluster_is_up);
    tcase_add_test(live, test_slots_match_cluster_keyslot);
    tcase_add_test(live, test_map_of_the_cluster);
    suite_add_tcase(s, live);
    return s;
}
