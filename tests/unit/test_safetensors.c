/* test_safetensors.c - the safetensors reader on valid and corrupt files. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"

/* Write a file: 8-byte length, header, data. hlen_override != 0 lies about the length. */
static const char *write_st(const char *name, const char *header, const void *data,
                            size_t data_len, uint64_t hlen_override)
{
    const char *path = tu_path("/tmp/nlpd_test_st_%d_%s.safetensors", (int)getpid(), name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len)
        fwrite(data, 1, data_len, f);
    fclose(f);
    return path;
}

static void test_valid_file(void **state)
{
    (void)state;
    float data[6] = {1, 2, 3, 4, 5, 6};
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}";
    const char *p = write_st("valid", h, data, sizeof data, 0);
    eng_safetensors *st;
    eng_error err = {0};
    assert_int_equal(eng_st_open(p, &st, &err), ENG_OK);
    assert_int_equal(st->count, 2);
    const eng_st_tensor *a = eng_st_find(st, "a"), *b = eng_st_find(st, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(eng_st_find(st, "__metadata__"));
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->numel, 4);
    float out[2];
    assert_int_equal(eng_st_to_f32(b, out), ENG_OK);
    assert_true(out[0] == 5 && out[1] == 6);
    eng_st_close(st);
    unlink(p);
}

/* Each corrupt file is refused with ENG_EFORMAT/EIO and a message naming it. */
static void expect_refused(const char *name, const char *header, size_t data_len,
                           uint64_t hlen_override, int want, const char *needle)
{
    static char data[64];
    const char *p = write_st(name, header, data, data_len, hlen_override);
    eng_safetensors *st = (eng_safetensors *)1;
    eng_error err = {0};
    int rc = eng_st_open(p, &st, &err);
    if (rc != want || !strstr(err.msg, p) || (needle && !strstr(err.msg, needle)))
        fail_msg("%s: rc %d (want %d), message '%s' (want the path and '%s')", name, rc, want,
                 err.msg, needle ? needle : "");
    assert_null(st);
    unlink(p);
}

static void test_corrupt_files(void **state)
{
    (void)state;
    const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    expect_refused("truncated_data", ok, 8, 0, ENG_EFORMAT, "truncated");
    expect_refused("header_too_long", ok, 16, 1u << 30, ENG_EFORMAT, "header length");
    expect_refused("not_json", "{\"w\": [", 0, 0, ENG_EFORMAT, "JSON");
    expect_refused("not_object", "[1,2]", 0, 0, ENG_EFORMAT, "object");
    expect_refused("size_mismatch",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,16]}}", 16, 0,
                   ENG_EFORMAT, "'w'");
    expect_refused("bad_offsets",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 16, 0,
                   ENG_EFORMAT, "data_offsets");
    expect_refused("negative_dim",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 16, 0,
                   ENG_EFORMAT, "shape");
    expect_refused("missing_dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 16, 0,
                   ENG_EFORMAT, "dtype");
    expect_refused("duplicate",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   16, 0, ENG_EFORMAT, "twice");
    expect_refused("huge_shape",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                   "\"data_offsets\":[0,4]}}", 16, 0, ENG_EFORMAT, "'w'");
    /* A file shorter than the length prefix itself. */
    const char *p = tu_path("/tmp/nlpd_test_st_%d_tiny", (int)getpid());
    FILE *f = fopen(p, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    eng_safetensors *st;
    eng_error err = {0};
    assert_int_equal(eng_st_open(p, &st, &err), ENG_EFORMAT);
    unlink(p);
    assert_int_equal(eng_st_open("/nonexistent/model.safetensors", &st, &err), ENG_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/model.safetensors"));
}

static void test_half_conversions(void **state)
{
    (void)state;
    /* Every finite f16 value converts exactly: compare with the definition. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float want;
        if (e == 0x1f)
            continue;
        want = e ? ldexpf(1.0f + m / 1024.0f, e - 15) : ldexpf(m / 1024.0f, -14);
        if (h & 0x8000)
            want = -want;
        float got = eng_f16_to_f32((uint16_t)h);
        if (got != want || signbit(got) != signbit(want))
            fail_msg("f16 0x%04x: got %g want %g", h, got, want);
    }
    assert_true(isinf(eng_f16_to_f32(0x7c00)) && isnan(eng_f16_to_f32(0x7e00)));
    assert_true(eng_bf16_to_f32(0x3f80) == 1.0f && eng_bf16_to_f32(0xc040) == -3.0f);
    /* Unknown and integer dtypes are listed but cannot be read as floats. */
    const char *h = "{\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                    "\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[8,10]}}";
    static const char data[10];
    const char *p = write_st("dtypes", h, data, sizeof data, 0);
    eng_safetensors *st;
    eng_error err = {0};
    assert_int_equal(eng_st_open(p, &st, &err), ENG_OK);
    float out[2];
    assert_int_equal(eng_st_to_f32(eng_st_find(st, "i"), out), ENG_EUNSUPPORTED);
    assert_int_equal(eng_st_to_f32(eng_st_find(st, "q"), out), ENG_EUNSUPPORTED);
    eng_st_close(st);
    unlink(p);
}

TEST_GROUP(safetensors)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_half_conversions),
    };
    TEST_GROUP_RETURN(t);
}
