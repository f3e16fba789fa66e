/* test_server_auth.c - API keys (server/auth.h): the hash file format, key
 * checks, header extraction, and that messages never quote a line. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"

static void test_hash_hex(void **state)
{
    (void)state;
    char hex[65];
    srv_auth_hash_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    srv_auth_hash_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_parse_and_check(void **state)
{
    (void)state;
    char h1[65], h2[65], text[512];
    srv_auth_hash_hex("key-one", 7, h1);
    srv_auth_hash_hex("key-two", 7, h2);
    for (char *p = h2; *p; p++) /* upper case is accepted too */
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    snprintf(text, sizeof text, "# nlpd keys\n\n  %s  # ci\r\n%s\n", h1, h2);
    srv_auth *a = NULL;
    char err[256];
    assert_int_equal(srv_auth_parse(text, strlen(text), &a, err, sizeof err), 0);
    assert_int_equal(srv_auth_count(a), 2);
    assert_int_equal(srv_auth_check(a, "key-one", 7), 1);
    assert_int_equal(srv_auth_check(a, "key-two", 7), 1);
    assert_int_equal(srv_auth_check(a, "key-on", 6), 0);
    assert_int_equal(srv_auth_check(a, "key-one ", 8), 0);
    assert_int_equal(srv_auth_check(a, "", 0), 0);
    assert_int_equal(srv_auth_check(a, NULL, 0), 0);
    assert_int_equal(srv_auth_check(NULL, "key-one", 7), 0);
    /* the hash itself is not a key */
    assert_int_equal(srv_auth_check(a, h1, 64), 0);
    srv_auth_free(a);
    srv_auth_free(NULL);
}

static void expect_parse_error(const char *text, const char *want)
{
    srv_auth *a = NULL;
    char err[256] = "";
    assert_int_equal(srv_auth_parse(text, strlen(text), &a, err, sizeof err), -1);
    assert_null(a);
    if (!strstr(err, want))
        fail_msg("key file %s: want an error with \"%s\", got \"%s\"", text, want, err);
    assert_null(strstr(err, "secret")); /* never quotes the line */
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_parse_error("", "no key hashes");
    expect_parse_error("# only a comment\n\n", "no key hashes");
    expect_parse_error("# header\nsecret-plain-key\n", "line 2");
    expect_parse_error("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a\n", "line 1");
    expect_parse_error("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0\n", "line 1");
    expect_parse_error("zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n", "hex");
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/nlpd_test_keys_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char hex[65], line[80];
    srv_auth_hash_hex("s3cr3t", 6, hex);
    int n = snprintf(line, sizeof line, "%s\n", hex);
    assert_int_equal(write(fd, line, (size_t)n), n);
    close(fd);
    srv_auth *a = NULL;
    char err[256];
    assert_int_equal(srv_auth_load(path, &a, err, sizeof err), 0);
    assert_int_equal(srv_auth_check(a, "s3cr3t", 6), 1);
    srv_auth_free(a);
    unlink(path);
    assert_int_equal(srv_auth_load(path, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
}

static void test_extract(void **state)
{
    (void)state;
    size_t len = 0;
    const char *k = srv_auth_extract("Bearer abc123", NULL, &len);
    assert_non_null(k);
    assert_int_equal(len, 6);
    assert_memory_equal(k, "abc123", 6);
    k = srv_auth_extract("  bearer \t tok  ", NULL, &len);
    assert_non_null(k);
    assert_int_equal(len, 3);
    assert_memory_equal(k, "tok", 3);
    k = srv_auth_extract(NULL, "xkey", &len);
    assert_non_null(k);
    assert_int_equal(len, 4);
    /* Bearer wins over X-API-Key; other schemes fall back to X-API-Key */
    k = srv_auth_extract("Bearer one", "two", &len);
    assert_memory_equal(k, "one", 3);
    k = srv_auth_extract("Basic dXNlcjpwdw==", "two", &len);
    assert_memory_equal(k, "two", 3);
    assert_null(srv_auth_extract("Basic dXNlcjpwdw==", NULL, &len));
    assert_null(srv_auth_extract("Bearer", NULL, &len));
    assert_null(srv_auth_extract("Bearer   ", NULL, &len));
    assert_null(srv_auth_extract("Bearerabc", NULL, &len));
    assert_null(srv_auth_extract(NULL, "", &len));
    assert_null(srv_auth_extract(NULL, NULL, &len));
}

TEST_GROUP(server_auth)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_hash_hex), cmocka_unit_test(test_parse_and_check),
        cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_extract),
    };
    TEST_GROUP_RETURN(t);
}
