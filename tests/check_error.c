/*
 * check_error.c - error codes, messages, versions.
 */
#include <string.h>

#include "common/internal.h"
#include "tc_test.h"

START_TEST(test_codes_pinned)
{
    /* These numbers are ABI: a change here breaks every compiled user. */
    ck_assert_int_eq(TC_OK, 0);
    ck_assert_int_eq(TC_ENOTFOUND, -1);
    ck_assert_int_eq(TC_EINVAL, -2);
    ck_assert_int_eq(TC_ENOMEM, -3);
    ck_assert_int_eq(TC_ERANGE, -4);
    ck_assert_int_eq(TC_EKEY, -5);
    ck_assert_int_eq(TC_ETOOBIG, -6);
    ck_assert_int_eq(TC_ECONFIG, -7);
    ck_assert_int_eq(TC_EREDIS, -8);
    ck_assert_int_eq(TC_EPROTO, -9);
    ck_assert_int_eq(TC_ESTORE, -10);
    ck_assert_int_eq(TC_EIO, -11);
    ck_assert_int_eq(TC_ESTATE, -12);
}
END_TEST

START_TEST(test_strerror_total)
{
    for (int code = -20; code <= 5; code++) {
        const char *s = tc_strerror(code);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_gt((int)strlen(s), 0);
    }
    ck_assert_str_eq(tc_strerror(TC_ENOTFOUND), "key not found");
    ck_assert_str_eq(tc_strerror(12345), "unknown error code");
}
END_TEST

START_TEST(test_errmsg_per_thread_and_handle)
{
    int h1, h2;
    ck_assert_str_eq(tc_errmsg(NULL), "");
    ck_assert_int_eq(tc__err(&h1, TC_EINVAL, "first %d", 1), TC_EINVAL);
    ck_assert_str_eq(tc_errmsg((tc_cache *)&h1), "first 1");
    ck_assert_str_eq(tc_errmsg((tc_cache *)&h2), "");
    ck_assert_str_eq(tc_errmsg(NULL), "first 1");
}
END_TEST

START_TEST(test_check_key)
{
    char big[TC_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    ck_assert_int_eq(tc__check_key(NULL, NULL, 1), TC_EINVAL);
    ck_assert_int_eq(tc__check_key(NULL, "", 0), TC_EKEY);
    ck_assert_int_eq(tc__check_key(NULL, big, TC_KEY_MAX + 1), TC_EKEY);
    ck_assert_int_eq(tc__check_key(NULL, big, TC_KEY_MAX), TC_OK);
    ck_assert_int_eq(tc__check_key(NULL, "a\0b", 3), TC_EKEY);
    ck_assert_int_eq(tc__check_key(NULL, "a", 1), TC_OK);
}
END_TEST

START_TEST(test_version)
{
    ck_assert_int_eq(tc_version_number(), TC_VERSION_NUMBER);
    ck_assert_str_eq(tc_version_string(), TC_VERSION_STRING);
    tc_free(NULL);
}
END_TEST

Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_codes_pinned);
    tcase_add_test(tc, test_strerror_total);
    tcase_add_test(tc, test_errmsg_per_thread_and_handle);
    tcase_add_test(tc, test_check_key);
    tcase_add_test(tc, test_version);
    suite_add_tcase(s, tc);
    return s;
}
