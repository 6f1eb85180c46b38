/*
 * check_main.c - runs every suite. CK_RUN_SUITE / CK_RUN_CASE select one, CK_FORK=no runs
 * in-process (valgrind).
 */
#include <limits.h>
#include <stdlib.h>

#include "tc_test.h"

const char *tct_self_path = "/proc/self/exe";

int main(int argc, char **argv)
{
    /* The path of this program, for tests that run it again as another process; not
     * /proc/self/exe, which under valgrind is valgrind's own tool. */
    static char self[4096];
    if (argc > 0 && realpath(argv[0], self) != NULL)
        tct_self_path = self;
    const char *peer = getenv("TCT_BUS_PEER");
    if (peer != NULL)
        return tct_bus_peer_main(peer);
    SRunner *sr = srunner_create(error_suite());
    srunner_add_suite(sr, config_suite());
    srunner_add_suite(sr, pattern_suite());
    srunner_add_suite(sr, edge_suite());
    srunner_add_suite(sr, store_suite());
    srunner_add_suite(sr, group_suite());
    srunner_add_suite(sr, redis_suite());
    srunner_add_suite(sr, autopipe_suite());
    srunner_add_suite(sr, cluster_suite());
    srunner_add_suite(sr, cache_suite());
    srunner_add_suite(sr, shared_suite());
    srunner_add_suite(sr, cache_control_suite());
    srunner_add_suite(sr, http_suite());
    srunner_add_suite(sr, structs_suite());
    srunner_add_suite(sr, pubsub_suite());
    srunner_add_suite(sr, bus_suite());
    srunner_add_suite(sr, userstore_suite());
    srunner_add_suite(sr, writethrough_suite());
    srunner_add_suite(sr, feed_suite());
    srunner_add_suite(sr, pg_suite());
    srunner_add_suite(sr, pgwt_suite());
    srunner_add_suite(sr, sigv4_suite());
    srunner_add_suite(sr, ddb_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
