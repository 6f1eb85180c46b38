/*
 * bus.c - the invalidation bus's message format (see bus.h).
 */
#include "common/bus.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

size_t tc__bus_size(size_t arg_len)
{
    return TC__BUS_HEADER + arg_len;
}

void tc__bus_encode(void *out, const tc__bus_msg *m)
{
    unsigned char *p = out;
    p[0] = 'B';
    p[1] = 1;
    p[2] = (unsigned char)m->op;
    memcpy(p + 3, m->sender, TC__BUS_ID_LEN);
    tc__put_be64(p + 3 + TC__BUS_ID_LEN, (uint64_t)m->version);
    if (m->arg_len > 0)
        memcpy(p + TC__BUS_HEADER, m->arg, m->arg_len);
}

int tc__bus_decode(tc__bus_msg *m, const void *data, size_t len)
{
    const unsigned char *p = data;
    memset(m, 0, sizeof *m);
    if (len <= TC__BUS_HEADER || len - TC__BUS_HEADER > TC_KEY_MAX || p[0] != 'B' || p[1] != 1)
        return TC_EPROTO;
    switch (p[2]) {
    case TC__BUS_CHANGED:
    case TC__BUS_DROP:
    case TC__BUS_PATTERN:
    case TC__BUS_TAG:
    case TC__BUS_FLUSH:
        break;
    default:
        return TC_EPROTO;
    }
    m->op = p[2];
    memcpy(m->sender, p + 3, TC__BUS_ID_LEN);
    m->version = (int64_t)tc__get_be64(p + 3 + TC__BUS_ID_LEN);
    m->arg = (const char *)p + TC__BUS_HEADER;
    m->arg_len = len - TC__BUS_HEADER;
    if (memchr(m->arg, '\0', m->arg_len) != NULL)
        return TC_EPROTO;
    return TC_OK;
}

void tc__bus_new_id(unsigned char id[TC__BUS_ID_LEN])
{
    if (getrandom(id, TC__BUS_ID_LEN, GRND_NONBLOCK) == TC__BUS_ID_LEN)
        return;
    /* No entropy yet (early boot): unique enough among the handles of one Redis. */
    static atomic_uint counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t b = (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)id ^
                 atomic_fetch_add(&counter, 1);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}
