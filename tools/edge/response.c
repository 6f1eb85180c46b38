/*
 * response.c - header field lists and the stored form of a response (edge_server.h).
 */
#include "edge_server.h"
#include "tiercache.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int ed_fields_add(ed_fields *f, const char *name, size_t name_len, const char *value,
                  size_t value_len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        ed_field *v = realloc(f->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        f->v = v;
        f->cap = cap;
    }
    char *n = strndup(name, name_len), *val = strndup(value, value_len);
    if (n == NULL || val == NULL) {
        free(n);
        free(val);
        return -1;
    }
    f->v[f->n].name = n;
    f->v[f->n].value = val;
    f->n++;
    return 0;
}

const char *ed_fields_get(const ed_fields *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcasecmp(f->v[i].name, name) == 0)
            return f->v[i].value;
    return NULL;
}

char *ed_fields_join(const ed_fields *f, const char *name)
{
    size_t len = 0;
    int any = 0;
    for (size_t i = 0; i < f->n; i++)
        if (strcasecmp(f->v[i].name, name) == 0) {
            len += strlen(f->v[i].value) + 2;
            any = 1;
        }
    if (!any)
        return NULL;
    char *out = malloc(len + 1), *p = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < f->n; i++)
        if (strcasecmp(f->v[i].name, name) == 0) {
            if (p != out) {
                memcpy(p, ", ", 2);
                p += 2;
            }
            size_t l = strlen(f->v[i].value);
            memcpy(p, f->v[i].value, l);
            p += l;
        }
    *p = '\0';
    return out;
}

void ed_fields_del(ed_fields *f, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (strcasecmp(f->v[i].name, name) == 0) {
            free(f->v[i].name);
            free(f->v[i].value);
        } else {
            f->v[j++] = f->v[i];
        }
    }
    f->n = j;
}

void ed_fields_free(ed_fields *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].name);
        free(f->v[i].value);
    }
    free(f->v);
    memset(f, 0, sizeof *f);
}

void ed_fields_strip_hop(ed_fields *f)
{
    /* The names that Connection lists go too (RFC 9110 7.6.1). */
    char *conn = ed_fields_join(f, "Connection");
    if (conn != NULL) {
        for (char *save = NULL, *tok = strtok_r(conn, ", \t", &save); tok != NULL;
             tok = strtok_r(NULL, ", \t", &save))
            ed_fields_del(f, tok);
        free(conn);
    }
    static const char *const hop[] = {"Connection", "Keep-Alive", "Proxy-Connection", "TE",
                                      "Trailer", "Transfer-Encoding", "Upgrade",
                                      "Proxy-Authenticate", "Proxy-Authorization",
                                      "Content-Length"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        ed_fields_del(f, hop[i]);
}

int ed_fields_merge(ed_fields *stored, const ed_fields *fresh)
{
    for (size_t i = 0; i < fresh->n; i++)
        ed_fields_del(stored, fresh->v[i].name);
    for (size_t i = 0; i < fresh->n; i++)
        if (ed_fields_add(stored, fresh->v[i].name, strlen(fresh->v[i].name),
                          fresh->v[i].value, strlen(fresh->v[i].value)) != 0)
            return -1;
    return 0;
}

void ed_resp_free(ed_resp *r)
{
    ed_fields_free(&r->h);
    if (r->owner != NULL)
        tc_free(r->owner);
    else
        free(r->body);
    memset(r, 0, sizeof *r);
}

int ed_resp_encode(char **out, size_t *out_len, const ed_resp *r)
{
    if (r->h.n > 0xffff || r->status < 100 || r->status > 999)
        return -1;
    size_t len = 5 + r->len;
    for (size_t i = 0; i < r->h.n; i++)
        len += strlen(r->h.v[i].name) + strlen(r->h.v[i].value) + 2;
    unsigned char *p = malloc(len ? len : 1), *w = p;
    if (p == NULL)
        return -1;
    *w++ = 'E';
    *w++ = (unsigned char)(r->status >> 8);
    *w++ = (unsigned char)r->status;
    *w++ = (unsigned char)(r->h.n >> 8);
    *w++ = (unsigned char)r->h.n;
    for (size_t i = 0; i < r->h.n; i++) {
        size_t a = strlen(r->h.v[i].name) + 1, b = strlen(r->h.v[i].value) + 1;
        memcpy(w, r->h.v[i].name, a);
        w += a;
        memcpy(w, r->h.v[i].value, b);
        w += b;
    }
    if (r->len > 0)
        memcpy(w, r->body, r->len);
    *out = (char *)p;
    *out_len = len;
    return 0;
}

int ed_resp_decode(ed_resp *out, void *data, size_t len)
{
    memset(out, 0, sizeof *out);
    const unsigned char *p = data, *end = p + len;
    if (len < 5 || p[0] != 'E')
        return -1;
    out->status = p[1] << 8 | p[2];
    size_t n = (size_t)(p[3] << 8 | p[4]);
    p += 5;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *a = memchr(p, '\0', (size_t)(end - p));
        const unsigned char *b = a ? memchr(a + 1, '\0', (size_t)(end - a - 1)) : NULL;
        if (b == NULL || ed_fields_add(&out->h, (const char *)p, (size_t)(a - p),
                                       (const char *)a + 1, (size_t)(b - a - 1)) != 0) {
            ed_resp_free(out);
            return -1;
        }
        p = b + 1;
    }
    /* No copy of the body: on a hit it goes from the library's value to the socket. */
    out->len = (size_t)(end - p);
    out->body = (char *)p;
    out->owner = data;
    return 0;
}
