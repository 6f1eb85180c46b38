/*
 * cluster_map.c - the slot map from CLUSTER SLOTS (cluster_map.h).
 */
#include "redis/cluster_map.h"

#include <stdlib.h>
#include <string.h>

#define HOST_MAX 255
#define UNASSIGNED UINT16_MAX

typedef struct master {
    char host[HOST_MAX + 1];
    int port;
} master;

struct tc__cmap {
    size_t n;
    master *masters; /* distinct host:port pairs, in order of first appearance */
    uint16_t owner[TC__REDIS_SLOTS];
};

static int bad(const void *owner, size_t i, const char *what)
{
    return tc__err(owner, TC_EPROTO, "redis cluster: CLUSTER SLOTS reply, range %zu: %s", i,
                   what);
}

/* The index of host:port among the masters, added if new; -1 out of memory. */
static int master_index(tc__cmap *m, const char *host, size_t host_len, int port)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->masters[i].port == port && strlen(m->masters[i].host) == host_len &&
            memcmp(m->masters[i].host, host, host_len) == 0)
            return (int)i;
    master *grown = realloc(m->masters, (m->n + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    m->masters = grown;
    memcpy(grown[m->n].host, host, host_len);
    grown[m->n].host[host_len] = '\0';
    grown[m->n].port = port;
    return (int)m->n++;
}

/* One range: [start, end, [host, port, id...], replicas...]. */
static int add_range(tc__cmap *m, const redisReply *r, size_t i, const void *owner)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return bad(owner, i, "not an array of start, end and a master");
    const redisReply *s = r->element[0], *e = r->element[1], *node = r->element[2];
    if (s->type != REDIS_REPLY_INTEGER || e->type != REDIS_REPLY_INTEGER)
        return bad(owner, i, "start or end is not an integer");
    if (s->integer < 0 || e->integer >= TC__REDIS_SLOTS || s->integer > e->integer)
        return bad(owner, i, "start and end are not slots 0 .. 16383 in order");
    if (node->type != REDIS_REPLY_ARRAY || node->elements < 2 ||
        node->element[0]->type != REDIS_REPLY_STRING ||
        node->element[1]->type != REDIS_REPLY_INTEGER)
        return bad(owner, i, "the master is not [host, port, ...]");
    const redisReply *host = node->element[0];
    if (host->len == 0 || host->len > HOST_MAX || memchr(host->str, '\0', host->len) != NULL)
        return bad(owner, i, "the master's host is empty, too long or holds a NUL");
    long long port = node->element[1]->integer;
    if (port < 1 || port > 65535)
        return bad(owner, i, "the master's port is out of 1 .. 65535");
    int idx = master_index(m, host->str, host->len, (int)port);
    if (idx < 0)
        return tc__err(owner, TC_ENOMEM, "redis cluster: out of memory");
    for (long long slot = s->integer; slot <= e->integer; slot++) {
        if (m->owner[slot] != UNASSIGNED)
            return bad(owner, i, "overlaps an earlier range");
        m->owner[slot] = (uint16_t)idx;
    }
    return TC_OK;
}

int tc__cmap_from_slots(tc__cmap **out, const redisReply *rep, const void *owner)
{
    *out = NULL;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        return tc__err(owner, TC_EPROTO, "redis cluster: CLUSTER SLOTS reply is not an array");
    tc__cmap *m = calloc(1, sizeof *m);
    if (m == NULL)
        return tc__err(owner, TC_ENOMEM, "redis cluster: out of memory");
    for (size_t s = 0; s < TC__REDIS_SLOTS; s++)
        m->owner[s] = UNASSIGNED;
    for (size_t i = 0; i < rep->elements; i++) {
        int rc = add_range(m, rep->element[i], i, owner);
        if (rc != TC_OK) {
            tc__cmap_free(m);
            return rc;
        }
    }
    *out = m;
    return TC_OK;
}

void tc__cmap_free(tc__cmap *m)
{
    if (m == NULL)
        return;
    free(m->masters);
    free(m);
}

size_t tc__cmap_masters(const tc__cmap *m)
{
    return m->n;
}

int tc__cmap_master_of(const tc__cmap *m, unsigned slot)
{
    if (slot >= TC__REDIS_SLOTS || m->owner[slot] == UNASSIGNED)
        return -1;
    return m->owner[slot];
}

const char *tc__cmap_address(const tc__cmap *m, size_t i, int *port)
{
    *port = m->masters[i].port;
    return m->masters[i].host;
}
