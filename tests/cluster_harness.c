/*
 * cluster_harness.c - the private Redis Cluster of cluster_harness.h.
 */
#include "cluster_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* cluster-node-timeout short, so that a failover in a test takes about a second. */
static const char node_conf[] = "cluster-enabled yes\n"
                                "cluster-config-file nodes.conf\n"
                                "cluster-node-timeout 1000\n";

/* redis-cli --cluster create over every node, its output in the first node's dir. */
static int create(const tct_cluster *c)
{
    char ports[TCT_CLUSTER_NODES][32], log[300];
    const char *argv[TCT_CLUSTER_NODES + 8];
    int n = 0;
    argv[n++] = "redis-cli";
    argv[n++] = "--cluster";
    argv[n++] = "create";
    for (int i = 0; i < TCT_CLUSTER_NODES; i++) {
        snprintf(ports[i], sizeof ports[i], "127.0.0.1:%d", c->node[i].port);
        argv[n++] = ports[i];
    }
    argv[n++] = "--cluster-replicas";
    argv[n++] = "1";
    argv[n++] = "--cluster-yes";
    argv[n] = NULL;
    snprintf(log, sizeof log, "%s/cluster-create.log", c->node[0].dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        FILE *f = freopen(log, "w", stdout);
        if (f != NULL)
            dup2(fileno(f), 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "tct_cluster_start: redis-cli --cluster create failed (see %s)\n", log);
        return -1;
    }
    return 0;
}

static int node_ok(const tct_redis *r)
{
    const char *info[] = {"CLUSTER", "INFO", NULL};
    char *out = tct_redis_cmd(r, info);
    int ok = out != NULL && strstr(out, "cluster_state:ok") != NULL;
    free(out);
    return ok;
}

int tct_cluster_start(tct_cluster *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < TCT_CLUSTER_NODES; i++) {
        if (tct_redis_start_conf(&c->node[i], node_conf) != 0) {
            tct_cluster_stop(c);
            return -1;
        }
    }
    if (create(c) != 0) {
        tct_cluster_stop(c);
        return -1;
    }
    long long deadline = tct_mono_ms() + 30000;
    for (;;) {
        int all = 1;
        for (int i = 0; i < TCT_CLUSTER_NODES && all; i++)
            all = node_ok(&c->node[i]);
        if (all)
            return 0;
        if (tct_mono_ms() > deadline) {
            fprintf(stderr, "tct_cluster_start: no cluster_state:ok within 30 s\n");
            tct_cluster_stop(c);
            return -1;
        }
        tct_sleep_ms(100);
    }
}

void tct_cluster_stop(tct_cluster *c)
{
    for (int i = 0; i < TCT_CLUSTER_NODES; i++)
        if (c->node[i].dir[0] != '\0')
            tct_redis_stop(&c->node[i]);
}
