/*
 * error.c - error codes, their static descriptions, and the per-thread detail message.
 *
 * The detail lives in thread-local storage, tagged with the handle it belongs to: a handle is
 * shared between threads, so one message slot per handle would let one thread read another's
 * failure (the reason libgit2 keeps git_error_last per thread).
 */
#include "common/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local struct {
    const void *owner;
    char msg[512];
} last_error;

const char *tc_strerror(int code)
{
    switch (code) {
    case TC_OK: return "success";
    case TC_ENOTFOUND: return "key not found";
    case TC_EINVAL: return "invalid argument";
    case TC_ENOMEM: return "out of memory";
    case TC_ERANGE: return "buffer too small";
    case TC_EKEY: return "invalid key (empty, too long, or contains a NUL byte)";
    case TC_ETOOBIG: return "value too large";
    case TC_ECONFIG: return "invalid configuration";
    case TC_EREDIS: return "redis unavailable or failed";
    case TC_EPROTO: return "unexpected reply from redis";
    case TC_ESTORE: return "store failed";
    case TC_EIO: return "i/o error";
    case TC_ESTATE: return "invalid state for this call";
    default: return "unknown error code";
    }
}

int tc__err(const void *owner, int code, const char *fmt, ...)
{
    va_list ap;
    last_error.owner = owner;
    va_start(ap, fmt);
    int n = vsnprintf(last_error.msg, sizeof last_error.msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(last_error.msg, sizeof last_error.msg, "%s", tc_strerror(code));
    return code;
}

const char *tc_errmsg(const tc_cache *cache)
{
    if (cache != NULL && last_error.owner != (const void *)cache)
        return "";
    return last_error.msg;
}

int tc__check_key(const void *owner, const char *key, size_t key_len)
{
    if (key == NULL)
        return tc__err(owner, TC_EINVAL, "key is NULL");
    if (key_len == 0)
        return tc__err(owner, TC_EKEY, "key is empty");
    if (key_len > TC_KEY_MAX)
        return tc__err(owner, TC_EKEY, "key is %zu bytes, longer than TC_KEY_MAX (%d)", key_len,
                       TC_KEY_MAX);
    if (memchr(key, '\0', key_len) != NULL)
        return tc__err(owner, TC_EKEY, "key contains a NUL byte");
    return TC_OK;
}

void tc_free(void *ptr)
{
    free(ptr);
}

int tc__valid_identifier(const char *s, size_t max_len)
{
    size_t n = 0;
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    for (; *s != '\0'; s++, n++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return n <= max_len;
}
