/*
 * cluster_harness.h - a private Redis Cluster for tests and benchmarks: 3 masters and 3
 * replicas, each a redis-server (tct_redis_start_conf with cluster-enabled) on a free loopback
 * port in a temp dir of its own, joined by `redis-cli --cluster create ... --cluster-replicas 1`,
 * up once every node reports cluster_state:ok; stopped and removed afterwards.
 */
#ifndef TC_CLUSTER_HARNESS_H
#define TC_CLUSTER_HARNESS_H

#include "tc_test.h"

#define TCT_CLUSTER_NODES 6

typedef struct tct_cluster {
    tct_redis node[TCT_CLUSTER_NODES]; /* the first three start as masters */
} tct_cluster;

/* 0 once the cluster is up (within 30 s); -1 with a message on stderr, nothing left running. */
int tct_cluster_start(tct_cluster *c);
void tct_cluster_stop(tct_cluster *c);

#endif
