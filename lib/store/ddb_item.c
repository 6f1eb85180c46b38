/*
 * ddb_item.c - what the DynamoDB store and its feed both know of items and tables
 * (ddb_impl.h): a version attribute's number, the version a stream record stands for, an
 * image's key, and creating a table that is missing.
 */
#include "store/ddb_impl.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* A version attribute's value ({"N": "123"}), or 0 when absent or not a plain count. */
int64_t tc__ddb_number(json_t *attr)
{
    const char *n = json_string_value(json_object_get(attr, "N"));
    if (n == NULL || *n == '\0' || strlen(n) > 18)
        return 0;
    int64_t v = 0;
    for (const char *p = n; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return 0;
        v = v * 10 + (*p - '0');
    }
    return v;
}

int64_t tc__ddb_change_version(const ddb_store *s, json_t *new_image, json_t *old_image)
{
    int64_t nv = tc__ddb_number(json_object_get(new_image, s->version_attr));
    int64_t ov = tc__ddb_number(json_object_get(old_image, s->version_attr));
    return nv > ov ? nv : ov + 1;
}

const char *tc__ddb_image_key(const ddb_store *s, json_t *image, size_t *len)
{
    json_t *k = json_object_get(json_object_get(image, s->key_attr), "S");
    if (!json_is_string(k))
        return NULL;
    *len = json_string_length(k);
    return json_string_value(k);
}

/* Waits for the table to be ACTIVE (a new table is CREATING for a few seconds on AWS). */
static int wait_active(ddb_store *s, const char *table, int64_t timeout_ms)
{
    int64_t until = tc__now_ms() + timeout_ms;
    for (;;) {
        json_t *req = json_pack("{s:s}", "TableName", table), *ans;
        int rc = tc__ddb_call(&s->db, "DescribeTable", req, &ans, NULL);
        json_decref(req);
        if (rc != TC_OK)
            return rc;
        const char *st = json_string_value(
            json_object_get(json_object_get(ans, "Table"), "TableStatus"));
        int active = st != NULL && strcmp(st, "ACTIVE") == 0;
        json_decref(ans);
        if (active)
            return TC_OK;
        if (tc__now_ms() > until)
            return tc__err(s->base.owner, TC_ESTORE, "dynamodb: table %s is not ACTIVE", table);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int tc__ddb_ensure_table(ddb_store *s, const char *table, const char *key_attr, int stream)
{
    json_t *req = json_pack("{s:s}", "TableName", table), *ans;
    char type[DDB_TYPE_MAX];
    int rc = tc__ddb_call(&s->db, "DescribeTable", req, &ans, type);
    json_decref(req);
    if (rc == TC_OK) {
        json_decref(ans);
        return TC_OK;
    }
    if (strcmp(type, "ResourceNotFoundException") != 0)
        return rc;
    req = json_pack("{s:s,s:[{s:s,s:s}],s:[{s:s,s:s}],s:s}", "TableName", table,
                    "AttributeDefinitions", "AttributeName", key_attr, "AttributeType", "S",
                    "KeySchema", "AttributeName", key_attr, "KeyType", "HASH", "BillingMode",
                    "PAY_PER_REQUEST");
    if (req != NULL && stream)
        json_object_set_new(req, "StreamSpecification",
                            json_pack("{s:b,s:s}", "StreamEnabled", 1, "StreamViewType",
                                      "NEW_AND_OLD_IMAGES"));
    if (req == NULL)
        return tc__err(s->base.owner, TC_ENOMEM, "dynamodb: out of memory");
    rc = tc__ddb_call(&s->db, "CreateTable", req, &ans, type);
    json_decref(req);
    if (rc == TC_OK)
        json_decref(ans);
    else if (strcmp(type, "ResourceInUseException") != 0) /* another process made it first */
        return rc;
    return wait_active(s, table, 60000);
}

