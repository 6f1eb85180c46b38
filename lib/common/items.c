/*
 * items.c - tc_items: lists of (name, value, score) the library returns (items.h).
 */
#include "common/items.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_VALUE SIZE_MAX /* value_off of an item without a value */

typedef struct item {
    size_t name_off, name_len;
    size_t value_off, value_len; /* value_off NO_VALUE: none */
    double score;
} item;

struct tc_items {
    item *v;
    size_t count, cap;
    char *buf; /* names and values, each followed by a NUL byte */
    size_t used, size;
};

int tc__items_new(tc_items **out, size_t capacity)
{
    if (out == NULL)
        return TC_EINVAL;
    *out = NULL;
    tc_items *it = calloc(1, sizeof *it);
    if (it == NULL)
        return TC_ENOMEM;
    if (capacity > 0) {
        it->v = capacity <= SIZE_MAX / sizeof *it->v ? malloc(capacity * sizeof *it->v) : NULL;
        if (it->v == NULL) {
            free(it);
            return TC_ENOMEM;
        }
        it->cap = capacity;
    }
    *out = it;
    return TC_OK;
}

/* Makes room for extra more bytes in the buffer. */
static int reserve_bytes(tc_items *it, size_t extra)
{
    if (extra <= it->size - it->used)
        return TC_OK;
    if (extra > SIZE_MAX - it->used)
        return TC_ENOMEM;
    size_t need = it->used + extra;
    size_t size = it->size > 0 ? it->size : 256;
    while (size < need)
        size = size <= SIZE_MAX / 2 ? size * 2 : need;
    char *b = realloc(it->buf, size);
    if (b == NULL)
        return TC_ENOMEM;
    it->buf = b;
    it->size = size;
    return TC_OK;
}

/* Copies len bytes and a NUL into the buffer (room reserved); returns their offset. */
static size_t append(tc_items *it, const void *p, size_t len)
{
    size_t off = it->used;
    if (len > 0)
        memcpy(it->buf + off, p, len);
    it->buf[off + len] = '\0';
    it->used += len + 1;
    return off;
}

int tc__items_add(tc_items *items, const char *name, size_t name_len, const void *value,
                  size_t value_len, double score)
{
    if (items == NULL || (name == NULL && name_len > 0) || (value == NULL && value_len > 0))
        return TC_EINVAL;
    if (items->count == items->cap) {
        size_t cap = items->cap > 0 ? items->cap * 2 : 8;
        if (items->cap > SIZE_MAX / 2 / sizeof *items->v)
            return TC_ENOMEM;
        item *v = realloc(items->v, cap * sizeof *v);
        if (v == NULL)
            return TC_ENOMEM;
        items->v = v;
        items->cap = cap;
    }
    /* Both copies at once, so a failure leaves the list as it was. */
    if (name_len > SIZE_MAX - 2 || value_len > SIZE_MAX - 2 - name_len)
        return TC_ENOMEM;
    if (reserve_bytes(items, name_len + 1 + (value != NULL ? value_len + 1 : 0)) != TC_OK)
        return TC_ENOMEM;
    item *e = &items->v[items->count];
    e->name_len = name_len;
    e->name_off = append(items, name, name_len);
    e->value_len = value != NULL ? value_len : 0;
    e->value_off = value != NULL ? append(items, value, value_len) : NO_VALUE;
    e->score = score;
    items->count++;
    return TC_OK;
}

int tc__items_set_value(tc_items *items, size_t i, const void *value, size_t value_len)
{
    if (items == NULL || i >= items->count || (value == NULL && value_len > 0))
        return TC_EINVAL;
    item *e = &items->v[i];
    if (value == NULL) {
        e->value_off = NO_VALUE;
        e->value_len = 0;
        return TC_OK;
    }
    if (value_len == SIZE_MAX || reserve_bytes(items, value_len + 1) != TC_OK)
        return TC_ENOMEM;
    e->value_off = append(items, value, value_len);
    e->value_len = value_len;
    return TC_OK;
}

int tc__items_set_score(tc_items *items, size_t i, double score)
{
    if (items == NULL || i >= items->count)
        return TC_EINVAL;
    items->v[i].score = score;
    return TC_OK;
}

/* ---- the public accessors ----------------------------------------------------------------- */

size_t tc_items_count(const tc_items *items)
{
    return items != NULL ? items->count : 0;
}

const char *tc_items_name(const tc_items *items, size_t i, size_t *out_len)
{
    if (items == NULL || i >= items->count) {
        if (out_len != NULL)
            *out_len = 0;
        return NULL;
    }
    if (out_len != NULL)
        *out_len = items->v[i].name_len;
    return items->buf + items->v[i].name_off;
}

const void *tc_items_value(const tc_items *items, size_t i, size_t *out_len)
{
    if (items == NULL || i >= items->count || items->v[i].value_off == NO_VALUE) {
        if (out_len != NULL)
            *out_len = 0;
        return NULL;
    }
    if (out_len != NULL)
        *out_len = items->v[i].value_len;
    return items->buf + items->v[i].value_off;
}

double tc_items_score(const tc_items *items, size_t i)
{
    if (items == NULL || i >= items->count)
        return 0;
    return items->v[i].score;
}

void tc_items_free(tc_items *items)
{
    if (items == NULL)
        return;
    free(items->v);
    free(items->buf);
    free(items);
}
