/*
 * cart.c - a shopping-cart session in a Redis hash, shared by every web server.
 *
 * The cart of session 42 is the hash "cart:session-42": one field per product (its SKU), the
 * quantity as the value. The shopper adds three products (tc_hset), changes a quantity, removes
 * one (tc_hdel), and a second web server (another handle, as another process would have) lists
 * the same cart (tc_hgetall). Every change renews the session's idle timeout
 * (tc_struct_expire: 30 minutes); when the shopper leaves, the cart expires by itself (here
 * after 1 s, so that you can watch it go).
 *
 * Hashes live in Redis only, so this example needs Redis:
 *   TIERCACHE_CONFIG='{"redis":{"host":"127.0.0.1","port":6379}}' ./cart
 * Without TIERCACHE_CONFIG it says so and exits 0 (`make check` and `make demo` run it with a
 * private Redis). Its keys live under the namespace "example:cart:".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tiercache.h>

#define CART "cart:session-42"
#define SESSION_TTL_MS (30 * 60 * 1000)

static int fail(tc_cache *cache, const char *what, int rc)
{
    fprintf(stderr, "cart: %s: %s (%s)\n", what, tc_strerror(rc), tc_errmsg(cache));
    return 1;
}

/* TIERCACHE_CONFIG as tc_shared reads it (a file path, or inline JSON starting with '{');
 * *out stays NULL when it is unset or empty: no Redis configured. */
static int open_cache(tc_cache **out, const char *ns)
{
    *out = NULL;
    const char *p = getenv("TIERCACHE_CONFIG");
    for (p = p != NULL ? p : ""; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++)
        ;
    if (*p == '\0')
        return 0;
    tc_config *cfg;
    int rc = tc_config_new(&cfg);
    if (rc != TC_OK)
        return fail(NULL, "tc_config_new", rc);
    rc = *p == '{' ? tc_config_load_json(cfg, p, strlen(p)) : tc_config_load_file(cfg, p);
    if (rc == TC_OK) /* an example keeps its Redis keys apart from the deployment's own data */
        rc = tc_config_set_string(cfg, "redis.namespace", ns);
    if (rc != TC_OK) {
        fprintf(stderr, "cart: TIERCACHE_CONFIG: %s: %s\n", tc_strerror(rc),
                tc_config_errmsg(cfg));
        tc_config_free(cfg);
        return 1;
    }
    rc = tc_open(out, cfg);
    tc_config_free(cfg);
    return rc == TC_OK ? 0 : fail(NULL, "tc_open", rc);
}

/* Sets a product's quantity and renews the session. */
static int set_quantity(tc_cache *cache, const char *sku, int quantity)
{
    char q[16];
    snprintf(q, sizeof q, "%d", quantity);
    int rc = tc_hset(cache, CART, strlen(CART), sku, strlen(sku), q, strlen(q));
    if (rc == TC_OK)
        rc = tc_struct_expire(cache, CART, strlen(CART), SESSION_TTL_MS);
    if (rc != TC_OK)
        return fail(cache, "tc_hset", rc);
    printf("  set %-14s quantity %d\n", sku, quantity);
    return 0;
}

/* Prints the cart as a server sees it; returns the number of lines (or -1) and, in *units,
 * the number of items. */
static int list_cart(tc_cache *cache, const char *who, int *units)
{
    tc_items *items;
    int rc = tc_hgetall(&items, cache, CART, strlen(CART));
    if (rc != TC_OK) {
        fail(cache, "tc_hgetall", rc);
        return -1;
    }
    size_t n = tc_items_count(items);
    *units = 0;
    printf("  %s lists %s: %zu line(s)\n", who, CART, n);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *qty = tc_items_value(items, i, &len);
        printf("    %-14s x %.*s\n", tc_items_name(items, i, NULL), (int)len, qty);
        *units += atoi(qty);
    }
    tc_items_free(items);
    return (int)n;
}

int main(void)
{
    tc_cache *web1, *web2;
    if (open_cache(&web1, "example:cart:") != 0)
        return 1;
    if (web1 == NULL) {
        printf("needs Redis: set TIERCACHE_CONFIG, e.g. "
               "TIERCACHE_CONFIG='{\"redis\":{\"host\":\"127.0.0.1\",\"port\":6379}}'\n");
        printf("cart: skipped (needs Redis)\n");
        return 0;
    }
    if (open_cache(&web2, "example:cart:") != 0)
        return 1;
    int rc = tc_struct_del(NULL, web1, CART, strlen(CART)); /* a new session */
    if (rc != TC_OK)
        return fail(web1, "tc_struct_del", rc);

    printf("web server 1: the shopper adds three products\n");
    if (set_quantity(web1, "sku-book-42", 1) != 0 || set_quantity(web1, "sku-mug-7", 2) != 0 ||
        set_quantity(web1, "sku-lamp-3", 1) != 0)
        return 1;
    printf("web server 1: two more books, and the lamp goes\n");
    if (set_quantity(web1, "sku-book-42", 3) != 0)
        return 1;
    int removed;
    const char *lamp = "sku-lamp-3";
    if ((rc = tc_hdel(&removed, web1, CART, strlen(CART), lamp, strlen(lamp))) != TC_OK)
        return fail(web1, "tc_hdel", rc);
    printf("  removed %s (%s)\n", lamp, removed ? "it was there" : "it was not there");

    void *qty;
    size_t len;
    const char *book = "sku-book-42";
    if ((rc = tc_hget(&qty, &len, web2, CART, strlen(CART), book, strlen(book))) != TC_OK)
        return fail(web2, "tc_hget", rc);
    printf("web server 2 (the next request landed here): %s x %s\n", book, (char *)qty);
    int ok = strcmp(qty, "3") == 0 && removed == 1;
    tc_free(qty);
    int units;
    int lines = list_cart(web2, "web server 2", &units);
    if (lines < 0)
        return 1;
    printf("  %d item(s) in all\n", units);
    ok = ok && lines == 2 && units == 5;

    printf("the shopper leaves; the session expires (after 1 s here, 30 min in production)\n");
    if ((rc = tc_struct_expire(web1, CART, strlen(CART), 1000)) != TC_OK)
        return fail(web1, "tc_struct_expire", rc);
    nanosleep(&(struct timespec){1, 300 * 1000000}, NULL);
    if ((lines = list_cart(web1, "web server 1", &units)) < 0)
        return 1;
    ok = ok && lines == 0;
    rc = tc_struct_expire(web1, CART, strlen(CART), 1000);
    printf("  the cart is gone (tc_struct_expire: %s)\n", tc_strerror(rc));
    ok = ok && rc == TC_ENOTFOUND;

    tc_close(web2);
    tc_close(web1);
    if (!ok) {
        fprintf(stderr, "cart: the cart does not hold what the shopper did\n");
        return 1;
    }
    printf("cart: ok\n");
    return 0;
}
