/* test_server_api.c - request parsing and validation (server/api.h): every
 * error path with its status and code, UTF-8 handling, limits, field types,
 * and totality on arbitrary bytes. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"

#include <math.h>
#include <stdint.h>
#include <time.h>

static const srv_api_limits LIM = {.max_body_bytes = 4096, .max_texts = 4, .max_text_bytes = 32};

/* Parse s (NUL-terminated) for ep; return rc and fill req/err. */
static int parse(srv_endpoint ep, const char *s, srv_api_request *req, srv_api_error *err)
{
    return srv_api_parse(ep, s, strlen(s), &LIM, req, err);
}

/* Expect failure with status and code. */
static void expect_err(srv_endpoint ep, const char *body, int status, const char *code)
{
    srv_api_request req;
    srv_api_error err = {0};
    int rc = parse(ep, body, &req, &err);
    if (rc != -1 || err.status != status || !err.code || strcmp(err.code, code) != 0)
        fail_msg("body %s: want %d %s, got rc %d %d %s (%s)", body, status, code, rc, err.status,
                 err.code ? err.code : "(null)", err.message);
    assert_true(strlen(err.message) > 0);
    srv_api_request_free(&req);
}

static void test_embed_text(void **state)
{
    (void)state;
    srv_api_request r;
    srv_api_error e;
    assert_int_equal(parse(SRV_EP_EMBED, "{\"text\": \"héllo\"}", &r, &e), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.list, 0);
    assert_string_equal(r.texts[0], "héllo");
    assert_int_equal(r.text_lens[0], 6);
    assert_null(r.model);
    assert_int_equal(r.timeout_ms, 0);
    srv_api_request_free(&r);

    assert_int_equal(parse(SRV_EP_SENTIMENT,
                           " {\"texts\": [\"a\", \"b c\"], \"model\": \"m1\", \"timeout_ms\": 250}\n",
                           &r, &e), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.list, 1);
    assert_string_equal(r.texts[1], "b c");
    assert_string_equal(r.model, "m1");
    assert_int_equal(r.timeout_ms, 250);
    srv_api_request_free(&r);
    srv_api_request_free(&r); /* idempotent */
}

static void test_classify_options(void **state)
{
    (void)state;
    srv_api_request r;
    srv_api_error e;
    assert_int_equal(parse(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"top_k\":3,\"threshold\":0.25}", &r, &e), 0);
    assert_int_equal(r.top_k, 3);
    assert_true(r.threshold > 0.249 && r.threshold < 0.251);
    srv_api_request_free(&r);
    assert_int_equal(parse(SRV_EP_CLASSIFY, "{\"text\":\"x\"}", &r, &e), 0);
    assert_int_equal(r.top_k, 0);
    assert_true(r.threshold < 0);
    srv_api_request_free(&r);

    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"top_k\":0}", 422, "invalid_field");
    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"top_k\":1.5}", 422, "invalid_field");
    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"top_k\":\"2\"}", 422, "invalid_field");
    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"top_k\":1e400}", 422, "invalid_field");
    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"threshold\":1.5}", 422, "invalid_field");
    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"threshold\":null}", 422, "invalid_field");
    /* classify-only fields are refused elsewhere */
    expect_err(SRV_EP_EMBED, "{\"text\":\"x\",\"top_k\":1}", 422, "invalid_field");
    expect_err(SRV_EP_SENTIMENT, "{\"text\":\"x\",\"threshold\":0.5}", 422, "invalid_field");
}

static void test_qa(void **state)
{
    (void)state;
    srv_api_request r;
    srv_api_error e;
    assert_int_equal(parse(SRV_EP_QA,
                           "{\"question\":\"Where?\",\"context\":\"In Montréal.\",\"top_k\":2,"
                           "\"max_answer_length\":7,\"handle_impossible_answer\":true}",
                           &r, &e), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.list, 0);
    assert_string_equal(r.items[0].question, "Where?");
    assert_int_equal(r.items[0].context_len, strlen("In Montréal."));
    assert_int_equal(r.top_k, 2);
    assert_int_equal(r.max_answer_length, 7);
    assert_int_equal(r.handle_impossible_answer, 1);
    srv_api_request_free(&r);

    assert_int_equal(parse(SRV_EP_QA,
                           "{\"items\":[{\"question\":\"q1\",\"context\":\"c1\"},"
                           "{\"context\":\"c2\",\"question\":\"q2\"}]}", &r, &e), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.list, 1);
    assert_string_equal(r.items[1].question, "q2");
    assert_string_equal(r.items[1].context, "c2");
    srv_api_request_free(&r);

    expect_err(SRV_EP_QA, "{\"question\":\"q\"}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"context\":\"c\"}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"question\":\"\",\"context\":\"c\"}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"question\":\"q\",\"context\":7}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":[],\"top_k\":1}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":{}}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":[1]}", 422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":[{\"question\":\"q\",\"context\":\"c\",\"x\":1}]}", 422,
               "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":[{\"question\":\"q\",\"question\":\"q\"}]}", 422,
               "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":[{\"question\":\"q\",\"context\":\"c\"}],\"question\":\"q\"}",
               422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"items\":[{\"question\":\"q\",\"context\":\"c\"},{\"question\":\"q\","
               "\"context\":\"c\"},{\"question\":\"q\",\"context\":\"c\"},{\"question\":\"q\","
               "\"context\":\"c\"},{\"question\":\"q\",\"context\":\"c\"}]}", 413, "too_many_texts");
    expect_err(SRV_EP_QA, "{\"question\":\"q\",\"context\":\"0123456789012345678901234567890123\"}",
               413, "text_too_long");
    expect_err(SRV_EP_QA, "{\"question\":\"q\",\"context\":\"c\",\"handle_impossible_answer\":1}",
               422, "invalid_field");
    expect_err(SRV_EP_QA, "{\"question\":\"q\",\"context\":\"c\",\"max_answer_length\":0}", 422,
               "invalid_field");
    expect_err(SRV_EP_QA, "{\"text\":\"q\"}", 422, "invalid_field");
}

static void test_translate(void **state)
{
    (void)state;
    srv_api_request r;
    srv_api_error e;
    assert_int_equal(parse(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":\"en\",\"target\":\"de\"}",
                           &r, &e), 0);
    assert_string_equal(r.source, "en");
    assert_string_equal(r.target, "de");
    assert_int_equal(r.beam_size, 0);
    assert_int_equal(r.max_length, 0);
    srv_api_request_free(&r);
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":1}", 422, "invalid_field");
    expect_err(SRV_EP_MODELS, "{\"text\":\"x\"}", 404, "not_found");

    /* by model name: no pair needed; options in range */
    assert_int_equal(parse(SRV_EP_TRANSLATE,
                           "{\"texts\":[\"a\",\"b\"],\"model\":\"mt\",\"beam_size\":4,"
                           "\"max_length\":64,\"target\":\"pt_BR\"}", &r, &e), 0);
    assert_int_equal(r.list, 1);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.model, "mt");
    assert_null(r.source);
    assert_string_equal(r.target, "pt_BR");
    assert_int_equal(r.beam_size, 4);
    assert_int_equal(r.max_length, 64);
    srv_api_request_free(&r);
    assert_int_equal(parse(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"model\":\"mt\",\"beam_size\":64,"
                           "\"max_length\":2}", &r, &e), 0);
    srv_api_request_free(&r);

    /* without a model both languages are required */
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\"}", 422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":\"en\"}", 422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"target\":\"pt\"}", 422, "invalid_field");
    /* language codes: strings of letters, digits, '_', '-' */
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":\"\",\"target\":\"pt\"}", 422,
               "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":\"en\",\"target\":\"p t\"}", 422,
               "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":\"en\",\"target\":\">>por<<\"}",
               422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"source\":[\"en\"],\"target\":\"pt\"}", 422,
               "invalid_field");
    expect_err(SRV_EP_TRANSLATE,
               "{\"text\":\"x\",\"source\":\"abcdefghijklmnopqrstuvwxyz0123456\",\"target\":\"pt\"}",
               422, "invalid_field");
    /* beam_size and max_length: integers in range */
    const char *bad_opts[] = {"\"beam_size\":0", "\"beam_size\":65", "\"beam_size\":2.5",
                              "\"beam_size\":\"4\"", "\"beam_size\":null", "\"max_length\":1",
                              "\"max_length\":4097", "\"max_length\":true", "\"max_length\":-3"};
    for (size_t i = 0; i < sizeof bad_opts / sizeof *bad_opts; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"text\":\"x\",\"model\":\"mt\",%s}", bad_opts[i]);
        expect_err(SRV_EP_TRANSLATE, body, 422, "invalid_field");
    }
    /* texts: types, empty, count, size, UTF-8; fields of other endpoints */
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"\",\"model\":\"mt\"}", 422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"texts\":[],\"model\":\"mt\"}", 422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"texts\":[\"a\",7],\"model\":\"mt\"}", 422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":[\"a\"],\"model\":\"mt\"}", 422, "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"a\",\"texts\":[\"b\"],\"model\":\"mt\"}", 422,
               "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"texts\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"model\":\"mt\"}",
               413, "too_many_texts");
    expect_err(SRV_EP_TRANSLATE,
               "{\"text\":\"0123456789012345678901234567890123456789\",\"model\":\"mt\"}", 413,
               "text_too_long");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"\xc3\x28\",\"model\":\"mt\"}", 422, "invalid_utf8");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"model\":\"mt\",\"top_k\":1}", 422,
               "invalid_field");
    expect_err(SRV_EP_TRANSLATE, "{\"text\":\"x\",\"model\":\"mt\",\"beam\":1}", 422,
               "invalid_field");
    /* translate-only fields are refused elsewhere */
    expect_err(SRV_EP_EMBED, "{\"text\":\"x\",\"beam_size\":1}", 422, "invalid_field");
    expect_err(SRV_EP_CLASSIFY, "{\"text\":\"x\",\"max_length\":8}", 422, "invalid_field");

    assert_true(srv_lang_code_valid("en"));
    assert_true(srv_lang_code_valid("zh-Hant"));
    assert_false(srv_lang_code_valid(""));
    assert_false(srv_lang_code_valid(NULL));
    assert_false(srv_lang_code_valid("e\""));
}

static void test_body_errors(void **state)
{
    (void)state;
    srv_api_request r;
    srv_api_error e;
    expect_err(SRV_EP_EMBED, "", 400, "malformed_json");
    expect_err(SRV_EP_EMBED, "{\"text\":", 400, "malformed_json");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\"} x", 400, "malformed_json");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\"}{}", 400, "malformed_json");
    expect_err(SRV_EP_EMBED, "[\"a\"]", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "\"a\"", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "null", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"texts\":[\"b\"]}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"text\":\"b\"}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"bogus\":1}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"model\":\"\"}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"model\":3}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"timeout_ms\":0}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\",\"timeout_ms\":-5}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":\"\"}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":null}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"text\":[\"a\"]}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"texts\":\"a\"}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"texts\":[]}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"texts\":[\"a\",\"\"]}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"texts\":[\"a\",1]}", 422, "invalid_field");
    expect_err(SRV_EP_EMBED, "{\"texts\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 413, "too_many_texts");
    expect_err(SRV_EP_EMBED, "{\"text\":\"0123456789012345678901234567890123\"}", 413,
               "text_too_long");
    /* NUL escapes would silently cut the string: refused. An escaped
     * backslash followed by u0000 is just text. */
    expect_err(SRV_EP_EMBED, "{\"text\":\"a\\u0000b\"}", 422, "invalid_field");
    assert_int_equal(parse(SRV_EP_EMBED, "{\"text\":\"a\\\\u0000b\"}", &r, &e), 0);
    assert_string_equal(r.texts[0], "a\\u0000b");
    srv_api_request_free(&r);
    /* A raw NUL inside a string is refused like the escaped form (the text is
     * not cut there); other raw control characters are malformed JSON. Keys
     * and option strings are checked as well as texts. */
    static const struct { const char *b; size_t n; int status; const char *code; } raw[] = {
        {"{\"text\":\"good\0 awful\"}", 22, 422, "invalid_field"},
        {"{\"text\":\"good\"\0}", 16, 400, "malformed_json"},
        {"{\"text\":\"a\",\"model\":\"m\0x\"}", 26, 422, "invalid_field"},
        {"{\"te\0xt\":\"a\"}", 13, 422, "invalid_field"},
        {"{\"text\":\"a\nb\"}", 14, 400, "malformed_json"},
        {"{\"text\":\"a\x1f\"}", 13, 400, "malformed_json"},
        /* A backslash does not escape a raw control byte (found by fuzz_request). */
        {"{\"text\":\"a\\\0q\"}", 15, 422, "invalid_field"},
        {"{\"text\":\"a\\\nq\"}", 15, 400, "malformed_json"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof *raw; i++) {
        srv_api_error re = {0};
        int rc = srv_api_parse(SRV_EP_EMBED, raw[i].b, raw[i].n, &LIM, &r, &re);
        if (rc != -1 || re.status != raw[i].status || strcmp(re.code, raw[i].code) != 0)
            fail_msg("raw case %zu: want %d %s, got rc %d %d %s", i, raw[i].status, raw[i].code,
                     rc, re.status, re.code ? re.code : "(null)");
        srv_api_request_free(&r);
    }
    /* Whitespace between tokens is not inside a string. */
    assert_int_equal(parse(SRV_EP_EMBED, "{\n\t\"text\":\r\n\"a\"}", &r, &e), 0);
    assert_int_equal(r.text_lens[0], 1);
    srv_api_request_free(&r);
    /* Lone surrogates cannot be decoded: malformed JSON. */
    expect_err(SRV_EP_EMBED, "{\"text\":\"\\udc00\"}", 400, "malformed_json");
    /* A proper pair is fine. */
    assert_int_equal(parse(SRV_EP_EMBED, "{\"text\":\"\\ud83d\\ude00\"}", &r, &e), 0);
    assert_string_equal(r.texts[0], "\xf0\x9f\x98\x80");
    srv_api_request_free(&r);
}

static void test_body_size_and_utf8(void **state)
{
    (void)state;
    srv_api_request r;
    srv_api_error e;
    char *big = malloc(LIM.max_body_bytes + 2);
    memset(big, ' ', LIM.max_body_bytes + 1);
    big[0] = '{';
    memcpy(big + 1, "\"text\":\"a\"}", 11);
    assert_int_equal(srv_api_parse(SRV_EP_EMBED, big, LIM.max_body_bytes, &LIM, &r, &e), 0);
    srv_api_request_free(&r);
    assert_int_equal(srv_api_parse(SRV_EP_EMBED, big, LIM.max_body_bytes + 1, &LIM, &r, &e), -1);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.code, "payload_too_large");
    free(big);

    assert_int_equal(srv_api_parse(SRV_EP_EMBED, NULL, 0, &LIM, &r, &e), -1);
    assert_int_equal(e.status, 400);

    static const char *const bad[] = {
        "{\"text\":\"\xff\"}",             /* invalid byte */
        "{\"text\":\"\xc3\"}",             /* truncated sequence */
        "{\"text\":\"\xc0\xaf\"}",         /* overlong */
        "{\"text\":\"\xed\xa0\x80\"}",     /* UTF-8 encoded surrogate */
        "{\"text\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"te\x80xt\":\"a\"}",            /* in a key */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_err(SRV_EP_EMBED, bad[i], 422, "invalid_utf8");
    /* A body that is not even JSON but has invalid UTF-8 is still invalid_utf8. */
    expect_err(SRV_EP_EMBED, "\xfe\xff", 422, "invalid_utf8");
}

static void test_utf8_helpers(void **state)
{
    (void)state;
    assert_true(srv_utf8_valid("", 0));
    assert_true(srv_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    assert_false(srv_utf8_valid("\xe2\x82", 2));
    assert_false(srv_utf8_valid("\xe0\x80\x80", 3)); /* overlong 3-byte */
    assert_false(srv_utf8_valid("\xf8\x88\x80\x80\x80", 5));
    assert_true(srv_utf8_valid("a\0b", 3)); /* NUL is valid UTF-8 */

    const char *s = "Montréal café"; /* é is 2 bytes */
    size_t n = strlen(s);
    assert_int_equal(srv_utf8_cp_offset(s, n, 0), 0);
    assert_int_equal(srv_utf8_cp_offset(s, n, 5), 5);
    assert_int_equal(srv_utf8_cp_offset(s, n, 7), 6);  /* after é */
    assert_int_equal(srv_utf8_cp_offset(s, n, n), 13);
    assert_int_equal(srv_utf8_cp_offset(s, n, n + 10), 13); /* clamped */

    assert_true(srv_api_content_type_ok("application/json"));
    assert_true(srv_api_content_type_ok("Application/JSON; charset=utf-8"));
    assert_true(srv_api_content_type_ok("  application/json ;x=y"));
    assert_false(srv_api_content_type_ok(NULL));
    assert_false(srv_api_content_type_ok(""));
    assert_false(srv_api_content_type_ok("text/plain"));
    assert_false(srv_api_content_type_ok("application/jsonx"));
    assert_false(srv_api_content_type_ok("application/x-www-form-urlencoded"));
}

/* Arbitrary bytes and mutated valid bodies never crash and always produce
 * either a request or a well-formed error. */
static void test_totality(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "{\"texts\":[\"a\",\"b\"],\"model\":\"m\"}",
        "{\"items\":[{\"question\":\"q\",\"context\":\"c\"}],\"top_k\":2}",
        "{\"text\":\"\\u00e9\\ud83d\\ude00\",\"timeout_ms\":5}",
    };
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char buf[256];
    for (int it = 0; it < 20000; it++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const char *seed = seeds[x % 3];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int muts = 1 + (int)((x >> 8) % 4);
        for (int m = 0; m < muts; m++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t pos = n ? (size_t)(x >> 16) % n : 0;
            switch ((x >> 40) % 3) {
            case 0: if (n) buf[pos] = (char)(x >> 48); break;
            case 1: n = pos; break;                       /* truncate */
            default: if (n < sizeof buf - 1) buf[n++] = (char)(x >> 24); /* append */
            }
        }
        for (int ep = SRV_EP_EMBED; ep <= SRV_EP_TRANSLATE; ep++) {
            srv_api_request r;
            srv_api_error e = {0};
            if (srv_api_parse((srv_endpoint)ep, buf, n, &LIM, &r, &e) == 0) {
                assert_true(r.n >= 1 && r.n <= LIM.max_texts);
            } else {
                assert_true(e.status == 400 || e.status == 413 || e.status == 422);
                assert_non_null(e.code);
            }
            srv_api_request_free(&r);
        }
    }
}

/* srv_fmt_float: strtof of every output gives back the same float32, bit for bit, over
 * edge cases, every power of two, powers of ten and their neighbours, small integers
 * and fractions, and millions of random bit patterns; a JSON number's syntax; faster
 * than "%.9g" (timed, printed). */
static int fmt_check(float f, long *bad)
{
    char out[40];
    size_t n = srv_fmt_float(out, f);
    uint32_t a, b;
    float g = strtof(out, NULL);
    memcpy(&a, &f, 4);
    memcpy(&b, &g, 4);
    int ok = n == strlen(out) && n > 0 && n < 32 && a == b;
    for (size_t i = 0; ok && i < n; i++)
        ok = strchr("-0123456789.e", out[i]) != NULL || (out[i] == '+' && i && out[i - 1] == 'e');
    ok = ok && out[0] != '.' && out[n - 1] != '.' && !(out[0] == '0' && out[1] >= '0' && out[1] <= '9');
    if (!ok && (*bad)++ < 10)
        printf("  float %.9g (0x%08x): wrote '%s', read back %.9g\n", (double)f, a, out, (double)g);
    return ok;
}

static void test_float_render(void **state)
{
    (void)state;
    long bad = 0, count = 0;
    const float edge[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 0.5f, 1e-45f, -1e-45f, 1.17549435e-38f,
                          1.17549421e-38f, 3.40282347e38f, -3.40282347e38f, 1e-15f, 1e-16f,
                          9.99999944e-16f, 1e21f, 1e28f, 1e29f, 123456789.0f, 16777216.0f,
                          16777217.0f, 0.3f, 2.0f / 3.0f, 1e-7f, 9.9999999e-7f, 1e-6f, 1e-5f};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++, count++)
        fmt_check(edge[i], &bad);
    for (int e = -149; e <= 127; e++)
        for (int d = -2; d <= 2; d++, count++) {
            float f = ldexpf(1.0f, e);
            for (int k = 0; k < (d < 0 ? -d : d); k++)
                f = nextafterf(f, d < 0 ? 0.0f : INFINITY);
            if (isfinite(f))
                fmt_check(f, &bad), fmt_check(-f, &bad);
        }
    for (int e = -45; e <= 38; e++) {
        float f = strtof(tu_path("1e%d", e), NULL);
        for (int d = -3; d <= 3; d++, count++) {
            float g = f;
            for (int k = 0; k < (d < 0 ? -d : d); k++)
                g = nextafterf(g, d < 0 ? 0.0f : INFINITY);
            if (isfinite(g))
                fmt_check(g, &bad);
        }
    }
    for (int i = 0; i <= 200000; i++, count += 2) {
        fmt_check((float)i, &bad);
        fmt_check((float)i / 1000.0f, &bad);
    }
    uint64_t x = 0x243f6a8885a308d3ull;
    for (int i = 0; i < 4000000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t u = (uint32_t)(x >> 32);
        float f;
        if (i & 1) /* values of the size embeddings and scores have */
            u = (u & 0x807fffffu) | ((uint32_t)(100 + (x & 31)) << 23);
        memcpy(&f, &u, 4);
        if (!isfinite(f))
            continue;
        count++;
        fmt_check(f, &bad);
    }
    printf("  float rendering: %ld values, %ld not read back exactly\n", count, bad);
    assert_int_equal(bad, 0);
    /* speed, on embedding-like values */
    enum { N = 200000 };
    float *v = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        v[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * 0.4f;
    }
    char out[40];
    size_t sum = 0, sum9 = 0;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        sum += srv_fmt_float(out, v[i]);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int i = 0; i < N; i++)
        sum9 += (size_t)snprintf(out, sizeof out, "%.9g", (double)v[i]);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    double a = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    double b = (t2.tv_sec - t1.tv_sec) * 1e9 + (t2.tv_nsec - t1.tv_nsec);
    printf("  float rendering: %.0f ns/value, %.1f bytes (%%.9g: %.0f ns, %.1f bytes)\n", a / N,
           (double)sum / N, b / N, (double)sum9 / N);
    free(v);
}

TEST_GROUP(server_api)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_embed_text),      cmocka_unit_test(test_classify_options),
        cmocka_unit_test(test_qa),              cmocka_unit_test(test_translate),
        cmocka_unit_test(test_body_errors),     cmocka_unit_test(test_body_size_and_utf8),
        cmocka_unit_test(test_utf8_helpers),    cmocka_unit_test(test_totality),
        cmocka_unit_test(test_float_render),
    };
    TEST_GROUP_RETURN(t);
}
