/*
 * slot.h - Redis Cluster's key slots (the cluster specification's key distribution model): a
 * key's slot is CRC16 (XMODEM: polynomial 0x1021, initial 0, no reflection) of the key, or of
 * its hash tag, modulo 16384. The hash tag is what lies between the first '{' and the first '}'
 * after it, when that is not empty; so "{user1000}.following" and "{user1000}.followers" share
 * a slot, and "foo{}{bar}" hashes whole. Pure functions; thread-safe.
 */
#ifndef TC_REDIS_SLOT_H
#define TC_REDIS_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define TC__REDIS_SLOTS 16384

/* CRC16/XMODEM of len bytes (the specification's check value: "123456789" -> 0x31C3). */
uint16_t tc__crc16(const void *data, size_t len);

/* The slot of a key of len bytes (binary-safe), 0 .. TC__REDIS_SLOTS - 1. */
unsigned tc__redis_slot(const void *key, size_t len);

#endif
