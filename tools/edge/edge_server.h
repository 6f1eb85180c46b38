/*
 * edge_server.h - tiercache-edge's modules: the header fields and the stored response (response.c),
 * the origin client (origin.c) and the server (server.c, which also holds main).
 *
 * The server caches whole responses in a libtiercache handle opened with store.type "none":
 * the origin is the source of truth, so there is no write-through store. Freshness, Age and
 * the stale windows are the library's (tc_put_http / tc_get_http, lib/http); the request side
 * of RFC 9111 (methods, Authorization, Vary, conditional requests, 304 merges) is here.
 */
#ifndef TC_EDGE_SERVER_H
#define TC_EDGE_SERVER_H

#include <stddef.h>
#include <stdint.h>

/* A list of header fields, names as received; lookups ignore case. */
typedef struct ed_field {
    char *name, *value;
} ed_field;
typedef struct ed_fields {
    ed_field *v;
    size_t n, cap;
} ed_fields;

int ed_fields_add(ed_fields *f, const char *name, size_t name_len, const char *value,
                  size_t value_len);
/* The first field of that name, or NULL. */
const char *ed_fields_get(const ed_fields *f, const char *name);
/* Every field of that name joined with ", " (RFC 9110 5.3), malloc'd; NULL if none. */
char *ed_fields_join(const ed_fields *f, const char *name);
void ed_fields_del(ed_fields *f, const char *name);
void ed_fields_free(ed_fields *f);
/* Drops what a cache never stores or forwards: the hop-by-hop fields (RFC 9110 7.6.1), those
 * that Connection names, and Content-Length (the server frames the body itself). */
void ed_fields_strip_hop(ed_fields *f);
/* RFC 9111 4.3.4: the fields of a 304 replace the stored ones of the same names. */
int ed_fields_merge(ed_fields *stored, const ed_fields *fresh);

/* A response: status, fields, body. */
typedef struct ed_resp {
    int status;
    ed_fields h;
    char *body;
    size_t len;
    int too_big; /* the body passed max_body_bytes: it is served, never stored */
    void *owner; /* when not NULL: body points into it, a value the library returned (tc_free) */
} ed_resp;
void ed_resp_free(ed_resp *r);

/* The stored form: 'E' | status u16 | nfields u16 | (name NUL value NUL)* | body. */
int ed_resp_encode(char **out, size_t *out_len, const ed_resp *r);
/* 0 and *out filled, or -1 for bytes that are not a stored response. The fields are copies;
 * the body points into data, which *out then owns (data is a value from the library, freed
 * with tc_free by ed_resp_free); on -1 data is the caller's still. */
int ed_resp_decode(ed_resp *out, void *data, size_t len);

/* The origin client: one libcurl share of connections and DNS for the process, and a pool of
 * easy handles, each kept with its connections (connection reuse to the origin). */
typedef struct ed_origin_opts {
    long connect_timeout_ms, timeout_ms;
    size_t max_body, max_pass; /* stored up to max_body; refused (502) past max_pass */
} ed_origin_opts;
#define ED_OK 0
#define ED_EDOWN (-1)    /* could not connect, or a broken answer: 502 */
#define ED_ETIMEOUT (-2) /* no answer within timeout_ms: 504 */
#define ED_ETOOBIG (-3)  /* the body passed max_pass: 502 */
int ed_origin_init(void);
void ed_origin_cleanup(void);
/* Sends method url with the request's fields (less hop-by-hop, Host and the conditional
 * ones, which inm / ims replace when not NULL) and body. */
int ed_origin_fetch(ed_resp *out, const ed_origin_opts *o, const char *method, const char *url,
                    const ed_fields *req, const char *inm, const char *ims, const char *body,
                    size_t body_len, char *err, size_t err_len);

#endif
