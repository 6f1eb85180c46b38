/*
 * slot.c - Redis Cluster's key slots (slot.h). A table-driven CRC16: one lookup per byte.
 */
#include "redis/slot.h"

#include <pthread.h>
#include <string.h>

/* CRC16/XMODEM by byte, built once at first use: crc_table[b] is the CRC of the byte b shifted
 * into a zero register. Computed rather than written out: 256 numbers nobody reviews are a
 * place for a typo; the tests check the specification's vectors and CLUSTER KEYSLOT itself. */
static uint16_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_build(void)
{
    for (unsigned b = 0; b < 256; b++) {
        uint16_t c = (uint16_t)(b << 8);
        for (int i = 0; i < 8; i++)
            c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
        crc_table[b] = c;
    }
}

uint16_t tc__crc16(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_build);
    const unsigned char *p = data;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[((crc >> 8) ^ p[i]) & 0xff]);
    return crc;
}

unsigned tc__redis_slot(const void *key, size_t len)
{
    const char *k = key;
    const char *open = len > 0 ? memchr(k, '{', len) : NULL;
    if (open != NULL) {
        size_t start = (size_t)(open - k) + 1;
        const char *close = memchr(k + start, '}', len - start);
        if (close != NULL && close > k + start) /* a non-empty tag */
            return tc__crc16(k + start, (size_t)(close - (k + start))) % TC__REDIS_SLOTS;
    }
    return tc__crc16(k, len) % TC__REDIS_SLOTS;
}
