/*
 * items.h - the public tc_items list (tiercache.h "Lists of results") and the builder the
 * library fills it with.
 *
 * A list holds an array of item records and one byte buffer; every name and value is copied
 * into that buffer, followed by a NUL byte, and recorded by offset (not pointer), so the buffer
 * can grow while the list is being built. Once it is handed to the caller nothing changes it:
 * it is immutable and may be read from any thread.
 */
#ifndef TC_ITEMS_H
#define TC_ITEMS_H

#include "common/internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A new, empty list with room for capacity items (a hint: 0 is fine, the list grows).
 * TC_OK, TC_EINVAL (out NULL), TC_ENOMEM (*out NULL). No message is recorded: the caller knows
 * its handle and records one. Free with tc_items_free. */
int tc__items_new(tc_items **out, size_t capacity);

/* Appends an item: copies name_len bytes of name (binary-safe; NULL only when name_len is 0)
 * and, unless value is NULL, value_len bytes of value (value NULL means "no value": then
 * value_len must be 0; a present empty value is any non-NULL pointer with value_len 0).
 * TC_OK, TC_EINVAL (a NULL pointer with a non-zero length), TC_ENOMEM (the list is unchanged). */
int tc__items_add(tc_items *items, const char *name, size_t name_len, const void *value,
                  size_t value_len, double score);

/* Gives item i (already added) a value, replacing any it had (the old bytes stay in the buffer
 * until the list is freed: a value is meant to be set once). value NULL removes the value.
 * For lists filled out of order (tc_get_many answers keys as the tiers return them).
 * TC_OK, TC_EINVAL (items NULL, i out of range, NULL value with a non-zero length), TC_ENOMEM
 * (item i is unchanged). */
int tc__items_set_value(tc_items *items, size_t i, const void *value, size_t value_len);

/* Sets item i's score. TC_OK, TC_EINVAL (items NULL or i out of range). */
int tc__items_set_score(tc_items *items, size_t i, double score);

#ifdef __cplusplus
}
#endif

#endif
