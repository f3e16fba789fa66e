/* test_server_api_compat.c - parsing of the compatible routes (server/api_compat.h):
 * OpenAI /v1/embeddings and text-embeddings-inference /embed, /predict,
 * /tokenize bodies, their defaults and errors, and base64 (RFC 4648 vectors). */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_compat.h"

static const srv_api_limits LIM = {.max_body_bytes = 4096, .max_texts = 4, .max_text_bytes = 32};

static int parse(srv_compat_kind k, const char *s, srv_api_request *r, srv_compat_opts *o,
                 srv_api_error *e)
{
    return srv_compat_parse(k, s, strlen(s), &LIM, r, o, e);
}

static void expect_err(srv_compat_kind k, const char *body, int status, const char *code)
{
    srv_api_request r;
    srv_compat_opts o;
    srv_api_error e = {0};
    int rc = parse(k, body, &r, &o, &e);
    if (rc != -1 || e.status != status || !e.code || strcmp(e.code, code) != 0)
        fail_msg("body %s: want %d %s, got rc %d %d %s (%s)", body, status, code, rc, e.status,
                 e.code ? e.code : "(null)", e.message);
    assert_true(strlen(e.message) > 0);
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
}

static void test_openai(void **state)
{
    (void)state;
    srv_api_request r;
    srv_compat_opts o;
    srv_api_error e;
    assert_int_equal(parse(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"hi\",\"model\":\"m\"}", &r, &o, &e), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.list, 0);
    assert_string_equal(r.model, "m");
    assert_int_equal(o.base64, 0);
    assert_int_equal(o.dimensions, 0);
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    assert_int_equal(parse(SRV_COMPAT_OPENAI_EMBED,
                           "{\"input\":[\"a\",\"b\"],\"model\":\"m\",\"encoding_format\":\"base64\","
                           "\"dimensions\":384,\"user\":\"u\"}", &r, &o, &e), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.list, 1);
    assert_int_equal(o.base64, 1);
    assert_int_equal(o.dimensions, 384);
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\"}", 422, "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":[[1,2]],\"model\":\"m\"}", 422, "unsupported_input");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":[1,2],\"model\":\"m\"}", 422, "unsupported_input");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":[],\"model\":\"m\"}", 422, "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":[\"a\",1],\"model\":\"m\"}", 422, "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\",\"model\":\"m\",\"encoding_format\":\"x\"}",
               422, "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\",\"model\":\"m\",\"dimensions\":1.5}", 422,
               "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\",\"model\":\"m\",\"inputs\":\"a\"}", 422,
               "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"model\":\"m\"}",
               413, "too_many_texts");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\",\"model\":\"m\"", 400, "malformed_json");
    /* The LangChain hint is in the message. */
    srv_api_error err = {0};
    assert_int_equal(parse(SRV_COMPAT_OPENAI_EMBED, "{\"input\":[[1]],\"model\":\"m\"}", &r, &o, &err), -1);
    assert_non_null(strstr(err.message, "check_embedding_ctx_length=False"));
}

static void test_tei(void **state)
{
    (void)state;
    srv_api_request r;
    srv_compat_opts o;
    srv_api_error e;
    assert_int_equal(parse(SRV_COMPAT_TEI_EMBED, "{\"inputs\":\"hi\"}", &r, &o, &e), 0);
    assert_int_equal(o.normalize, 1);
    assert_int_equal(o.truncate, 0);
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    assert_int_equal(parse(SRV_COMPAT_TEI_EMBED,
                           "{\"inputs\":[\"a\"],\"normalize\":false,\"truncate\":true,"
                           "\"truncation_direction\":\"Right\",\"prompt_name\":null}", &r, &o, &e), 0);
    assert_int_equal(o.normalize, 0);
    assert_int_equal(o.truncate, 1);
    assert_int_equal(r.list, 1);
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    expect_err(SRV_COMPAT_TEI_EMBED, "{\"inputs\":\"a\",\"truncation_direction\":\"Left\"}", 422,
               "invalid_field");
    expect_err(SRV_COMPAT_TEI_EMBED, "{\"inputs\":\"a\",\"prompt_name\":\"q\"}", 422, "invalid_field");
    expect_err(SRV_COMPAT_TEI_EMBED, "{\"inputs\":[1,2]}", 422, "invalid_field");
    expect_err(SRV_COMPAT_TEI_EMBED, "{\"inputs\":\"a\",\"raw_scores\":true}", 422, "invalid_field");

    /* /predict: a text, a pair, a batch of singles and pairs. */
    assert_int_equal(parse(SRV_COMPAT_TEI_PREDICT, "{\"inputs\":[\"a\",\"b\"]}", &r, &o, &e), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(o.batch, 0);
    assert_string_equal(o.pairs[0], "b");
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    assert_int_equal(parse(SRV_COMPAT_TEI_PREDICT, "{\"inputs\":[[\"a\"],[\"b\",\"c\"]],\"raw_scores\":true}",
                           &r, &o, &e), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(o.batch, 1);
    assert_int_equal(o.raw_scores, 1);
    assert_null(o.pairs[0]);
    assert_string_equal(o.pairs[1], "c");
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    expect_err(SRV_COMPAT_TEI_PREDICT, "{\"inputs\":[\"a\"]}", 422, "invalid_field");
    expect_err(SRV_COMPAT_TEI_PREDICT, "{\"inputs\":[[\"a\",\"b\",\"c\"]]}", 422, "invalid_field");
    expect_err(SRV_COMPAT_TEI_PREDICT, "{\"inputs\":[[]]}", 422, "invalid_field");

    assert_int_equal(parse(SRV_COMPAT_TEI_TOKENIZE, "{\"inputs\":\"a\",\"add_special_tokens\":false}",
                           &r, &o, &e), 0);
    assert_int_equal(o.add_special_tokens, 0);
    srv_api_request_free(&r);
    srv_compat_opts_free(&o);
    expect_err(SRV_COMPAT_TEI_TOKENIZE, "{\"inputs\":\"a\",\"normalize\":true}", 422, "invalid_field");
}

/* The body checks are the native API's (srv_api_parse_body): NUL raw, escaped or
 * behind a backslash, and raw control characters, are refused on these routes too. */
static void test_body_checks(void **state)
{
    (void)state;
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\\u0000b\"}", 422, "invalid_field");
    expect_err(SRV_COMPAT_OPENAI_EMBED, "{\"input\":\"a\nb\"}", 400, "malformed_json");
    static const struct { const char *b; size_t n; int status; } raw[] = {
        {"{\"inputs\":\"good\0 awful\"}", 24, 422},
        {"{\"inputs\":\"a\\\0q\"}", 17, 422},
    };
    for (size_t i = 0; i < sizeof raw / sizeof *raw; i++) {
        srv_api_request r;
        srv_compat_opts o;
        srv_api_error e = {0};
        int rc = srv_compat_parse(SRV_COMPAT_TEI_EMBED, raw[i].b, raw[i].n, &LIM, &r, &o, &e);
        if (rc != -1 || e.status != raw[i].status)
            fail_msg("raw case %zu: want %d, got rc %d status %d", i, raw[i].status, rc, e.status);
        srv_api_request_free(&r);
        srv_compat_opts_free(&o);
    }
}

static void test_base64(void **state)
{
    (void)state;
    static const struct { const char *in, *out; } v[] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    char buf[16];
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        size_t n = srv_base64_encode((const unsigned char *)v[i].in, strlen(v[i].in), buf, sizeof buf);
        assert_int_equal(n, strlen(v[i].out));
        assert_string_equal(buf, v[i].out);
    }
    assert_int_equal(srv_base64_encode((const unsigned char *)"foobar", 6, buf, 8), 0); /* no room for NUL */
}

TEST_GROUP(server_api_compat)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_openai),
        cmocka_unit_test(test_tei),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_body_checks),
    };
    TEST_GROUP_RETURN(t);
}
