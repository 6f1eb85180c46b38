/*
 * check_cluster.c - Redis Cluster support, first part: the key slot (lib/redis/slot.c)
 * against the specification's vectors and against a real cluster's CLUSTER KEYSLOT (3 masters,
 * 3 replicas, tests/cluster_harness.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_harness.h"
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

Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *unit = tcase_create("slot");
    tcase_add_test(unit, test_crc16_and_slot_vectors);
    suite_add_tcase(s, unit);
    TCase *live = tcase_create("cluster");
    tcase_add_unchecked_fixture(live, cluster_up, cluster_down);
    tcase_set_timeout(live, 120);
    tcase_add_test(live, test_cluster_is_up);
    tcase_add_test(live, test_slots_match_cluster_keyslot);
    suite_add_tcase(s, live);
    return s;
}
