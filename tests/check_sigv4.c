/*
 * check_sigv4.c - the SigV4 signer against AWS's published Signature Version 4 test suite
 * (credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service "service"). DynamoDB Local
 * does not check signatures, so these vectors are what shows the signer right.
 */
#include <stdio.h>
#include <string.h>

#include "store/sigv4.h"
#include "tc_test.h"

#define DATE "20150830T123600Z"
#define HOST {"Host", "example.amazonaws.com"}
#define XDATE {"X-Amz-Date", DATE}
#define CRED "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "

static const tc__sigv4_key key = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                  "us-east-1", "service"};

typedef struct vector {
    const char *name, *method, *path;
    tc__sigv4_pair query[2];
    size_t nquery;
    tc__sigv4_pair headers[5];
    size_t nheaders;
    const char *body;
    const char *signed_headers, *signature;
} vector;

static const vector vectors[] = {
    {"get-vanilla", "GET", "/", {{0}}, 0, {HOST, XDATE}, 2, "", "host;x-amz-date",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"post-vanilla", "POST", "/", {{0}}, 0, {HOST, XDATE}, 2, "", "host;x-amz-date",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
    {"get-vanilla-query-order-key-case", "GET", "/", {{"Param2", "value2"}, {"Param1", "value1"}},
     2, {HOST, XDATE}, 2, "", "host;x-amz-date",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
    {"get-vanilla-query-unreserved", "GET", "/",
     {{"-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
       "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}},
     1, {HOST, XDATE}, 2, "", "host;x-amz-date",
     "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
    {"get-vanilla-utf8-query", "GET", "/", {{"\xe1\x88\xb4", "bar"}}, 1, {HOST, XDATE}, 2, "",
     "host;x-amz-date", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
    {"get-unreserved", "GET",
     "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", {{0}}, 0,
     {HOST, XDATE}, 2, "", "host;x-amz-date",
     "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
    {"get-utf8", "GET", "/\xe1\x88\xb4", {{0}}, 0, {HOST, XDATE}, 2, "", "host;x-amz-date",
     "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
    /* One name three times: the values joined in the order given. */
    {"get-header-key-duplicate", "GET", "/", {{0}}, 0,
     {HOST, {"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}, XDATE},
     5, "", "host;my-header1;x-amz-date",
     "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
    {"get-header-value-trim", "GET", "/", {{0}}, 0,
     {HOST, {"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}, XDATE}, 4, "",
     "host;my-header1;my-header2;x-amz-date",
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
    {"post-header-key-sort", "POST", "/", {{0}}, 0, {HOST, {"My-Header1", "value1"}, XDATE}, 3,
     "", "host;my-header1;x-amz-date",
     "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
    {"post-header-value-case", "POST", "/", {{0}}, 0, {HOST, {"My-Header1", "VALUE1"}, XDATE},
     3, "", "host;my-header1;x-amz-date",
     "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
    {"post-vanilla-query", "POST", "/", {{"Param1", "value1"}}, 1, {HOST, XDATE}, 2, "",
     "host;x-amz-date", "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
    {"post-vanilla-query-nonunreserved", "POST", "/",
     {{"@#$%^", ""}, {"+", "/,?><`\";:\\|][{}"}}, 2, {HOST, XDATE}, 2, "", "host;x-amz-date",
     "66c82657c86e26fb25238d0e69f011edc4c6df5ae71119d7cb98ed9b87393c1e"},
    {"post-x-www-form-urlencoded", "POST", "/", {{0}}, 0,
     {{"Content-Type", "application/x-www-form-urlencoded"}, HOST, XDATE}, 3, "Param1=value1",
     "content-type;host;x-amz-date",
     "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
    {"post-sts-header-before", "POST", "/", {{0}}, 0,
     {HOST, XDATE,
      {"X-Amz-Security-Token",
       "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfp"
       "SPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPk"
       "yQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqB"
       "Az+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="}},
     3, "", "host;x-amz-date;x-amz-security-token",
     "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
};

START_TEST(test_suite_vectors)
{
    const vector *v = &vectors[_i];
    tc__sigv4_req req = {v->method, v->path,      v->nquery ? v->query : NULL, v->nquery,
                         v->headers, v->nheaders, v->body, strlen(v->body)};
    char auth[TC__SIGV4_AUTH_MAX], want[TC__SIGV4_AUTH_MAX];
    ck_assert_msg(tc__sigv4_authorization(auth, sizeof auth, &key, DATE, &req) == 0, "%s",
                  v->name);
    snprintf(want, sizeof want, CRED "SignedHeaders=%s, Signature=%s", v->signed_headers,
             v->signature);
    ck_assert_msg(strcmp(auth, want) == 0, "%s:\n got %s\nwant %s", v->name, auth, want);
}
END_TEST

/* get-header-value-order: four values of one name stay in the caller's order. */
START_TEST(test_value_order)
{
    tc__sigv4_pair h[] = {HOST, {"My-Header1", "value4"}, {"My-Header1", "value1"},
                          {"My-Header1", "value3"}, {"My-Header1", "value2"}, XDATE};
    tc__sigv4_req req = {"GET", "/", NULL, 0, h, 6, "", 0};
    char auth[TC__SIGV4_AUTH_MAX];
    ck_assert_int_eq(tc__sigv4_authorization(auth, sizeof auth, &key, DATE, &req), 0);
    ck_assert_str_eq(auth, CRED "SignedHeaders=host;my-header1;x-amz-date, Signature="
                            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01");
}
END_TEST

START_TEST(test_refuses_bad_input)
{
    char auth[TC__SIGV4_AUTH_MAX];
    tc__sigv4_pair h[] = {HOST, {"X-Bad", "a\nb"}, XDATE};
    tc__sigv4_req req = {"GET", "/", NULL, 0, h, 3, "", 0};
    ck_assert_int_eq(tc__sigv4_authorization(auth, sizeof auth, &key, DATE, &req), -1);
    ck_assert_str_eq(auth, "");
    req.nheaders = 1;
    ck_assert_int_eq(tc__sigv4_authorization(auth, 16, &key, DATE, &req), -1); /* too small */
    ck_assert_str_eq(auth, "");
    ck_assert_int_eq(tc__sigv4_authorization(auth, sizeof auth, &key, "2015", &req), -1);
    char hex[65];
    tc__sigv4_sha256_hex(hex, "", 0);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

Suite *sigv4_suite(void)
{
    Suite *s = suite_create("sigv4");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_suite_vectors, 0, (int)(sizeof vectors / sizeof vectors[0]));
    tcase_add_test(tc, test_value_order);
    tcase_add_test(tc, test_refuses_bad_input);
    suite_add_tcase(s, tc);
    return s;
}
