/* fuzz_request.c - libFuzzer target for nlpd's request parsing and validation
 * (server/api.h, server/auth.h): the pure functions every HTTP request body and
 * header goes through before anything else sees it.
 *
 * Input layout: byte 0 selects the function and the limits, the rest is the
 * payload. Besides "no crash, no leak, no UB" (ASan/UBSan) the target checks the
 * contracts of the header on every input:
 *   - srv_api_parse: on success n in [1, max_texts], every text/question/context
 *     non-empty, valid UTF-8, NUL-free, within max_text_bytes; top_k/timeout_ms
 *     ranges; on failure a status/code pair from README's table and a
 *     NUL-terminated, valid UTF-8 message;
 *   - srv_api_parse_feedback: on success 1..max_items items, each with exactly one
 *     of text (checked as above) or request_id (1..71 bytes), index only with a
 *     request_id, a non-empty label within SRV_API_MAX_LABEL; errors as above;
 *   - srv_compat_parse (OpenAI /v1/embeddings, TEI /embed, /predict, /tokenize): as
 *     srv_api_parse, plus TEI pairs checked as texts, booleans 0/1, dimensions >= 0;
 *   - srv_utf8_valid against an independent decoder (differential);
 *   - srv_utf8_cp_offset against a reference count;
 *   - srv_api_content_type_ok against a reference matcher;
 *   - srv_auth_extract returns a pointer inside one of the headers;
 *     srv_auth_parse/srv_auth_check never accept a key the file does not hash.
 *
 * Build and run: tests/fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "api_compat.h"
#include "auth.h"

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_request: contract violated: %s\n  ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* ------------------------------------------------------------ references */

/* Independent UTF-8 validator (Unicode Table 3-7, well-formed byte sequences). */
static int ref_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c <= 0x7f) {
            i++;
            continue;
        }
        uint8_t lo = 0x80, hi = 0xbf;
        int need;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c == 0xe0) {
            need = 2, lo = 0xa0;
        } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
            need = 2;
        } else if (c == 0xed) {
            need = 2, hi = 0x9f;
        } else if (c == 0xf0) {
            need = 3, lo = 0x90;
        } else if (c >= 0xf1 && c <= 0xf3) {
            need = 3;
        } else if (c == 0xf4) {
            need = 3, hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i - 1 < (size_t)need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (int k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        i += (size_t)need + 1;
    }
    return 1;
}

static size_t ref_cp_count(const uint8_t *s, size_t n)
{
    size_t cps = 0, i = 0;
    while (i < n) {
        uint8_t c = s[i];
        i += c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        cps++;
    }
    return cps;
}

static int ref_content_type_ok(const char *ct)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    const char *want = "application/json";
    for (; *want; want++, ct++)
        if (*ct == 0 || tolower((unsigned char)*ct) != *want)
            return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == 0 || *ct == ';';
}

/* Status -> the codes README's error table allows for it. */
static int code_allowed(int status, const char *code)
{
    static const struct {
        int status;
        const char *code;
    } table[] = {
        {400, "malformed_json"},    {404, "not_found"},        {404, "model_not_found"},
        {413, "payload_too_large"}, {413, "too_many_texts"},   {413, "text_too_long"},
        {422, "invalid_field"},     {422, "invalid_utf8"},     {413, "too_many_items"},
        {422, "unsupported_input"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].status == status && strcmp(table[i].code, code) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------- targets */

static void check_text(const char *what, int i, const char *s, size_t len,
                       const srv_api_limits *lim)
{
    CHECK(s != NULL, "%s[%d] is NULL", what, i);
    CHECK(len > 0, "%s[%d] is empty but accepted", what, i);
    CHECK(len <= lim->max_text_bytes, "%s[%d] is %zu bytes, limit %zu", what, i, len,
          lim->max_text_bytes);
    CHECK(memchr(s, 0, len) == NULL, "%s[%d] contains NUL within its length", what, i);
    CHECK(s[len] == 0, "%s[%d] is not NUL-terminated at its length", what, i);
    CHECK(srv_utf8_valid(s, len), "%s[%d] accepted but not valid UTF-8", what, i);
    CHECK(ref_utf8_valid((const uint8_t *)s, len), "%s[%d] accepted but not valid UTF-8 (ref)",
          what, i);
}

static void fuzz_parse(srv_endpoint ep, const uint8_t *d, size_t n, const srv_api_limits *lim)
{
    srv_api_request req;
    srv_api_error err;
    memset(&err, 0x5a, sizeof err); /* the function must fill it on failure */
    int rc = srv_api_parse(ep, (const char *)d, n, lim, &req, &err);
    if (rc == 0) {
        CHECK(req.ep == ep, "endpoint %d became %d", ep, req.ep);
        CHECK(req.n >= 1 && req.n <= lim->max_texts, "n = %d (max_texts %d)", req.n,
              lim->max_texts);
        CHECK(n <= lim->max_body_bytes, "body of %zu bytes accepted over the limit %zu", n,
              lim->max_body_bytes);
        CHECK(ref_utf8_valid(d, n), "a body that is not valid UTF-8 was accepted%s", "");
        if (ep == SRV_EP_QA) {
            CHECK(req.items != NULL, "QA request without items%s", "");
            for (int i = 0; i < req.n; i++) {
                check_text("question", i, req.items[i].question, req.items[i].question_len, lim);
                check_text("context", i, req.items[i].context, req.items[i].context_len, lim);
            }
        } else {
            CHECK(req.texts != NULL && req.text_lens != NULL, "request without texts%s", "");
            for (int i = 0; i < req.n; i++)
                check_text("text", i, req.texts[i], req.text_lens[i], lim);
        }
        CHECK(req.list || req.n == 1, "a single input with n = %d", req.n);
        CHECK(req.top_k >= 0, "top_k %d", req.top_k);
        CHECK(req.timeout_ms >= 0, "timeout_ms %d", req.timeout_ms);
        CHECK(req.max_answer_length >= 0, "max_answer_length %d", req.max_answer_length);
        CHECK(req.handle_impossible_answer == 0 || req.handle_impossible_answer == 1,
              "handle_impossible_answer %d", req.handle_impossible_answer);
        CHECK(req.threshold < 0 || (req.threshold >= 0 && req.threshold <= 1),
              "threshold %g", req.threshold);
        if (req.model)
            CHECK(strlen(req.model) > 0, "empty model name accepted%s", "");
    } else {
        CHECK(rc == -1, "srv_api_parse returned %d", rc);
        CHECK(err.code != NULL, "error without a code (status %d)", err.status);
        CHECK(code_allowed(err.status, err.code), "status %d with code \"%s\"", err.status,
              err.code);
        CHECK(memchr(err.message, 0, sizeof err.message) != NULL, "message not terminated%s", "");
        size_t ml = strlen(err.message);
        CHECK(ml > 0, "empty error message for %s", err.code);
        CHECK(srv_utf8_valid(err.message, ml), "error message is not valid UTF-8: %s",
              err.code);
        if (!ref_utf8_valid(d, n))
            CHECK(strcmp(err.code, "invalid_utf8") == 0 || strcmp(err.code, "malformed_json") == 0 ||
                      strcmp(err.code, "payload_too_large") == 0 || strcmp(err.code, "not_found") == 0,
                  "invalid UTF-8 body answered %d %s", err.status, err.code);
    }
    srv_api_request_free(&req);
    srv_api_request_free(&req); /* idempotent */
}

static void fuzz_compat(srv_compat_kind kind, const uint8_t *d, size_t n,
                        const srv_api_limits *lim)
{
    srv_api_request req;
    srv_compat_opts o;
    srv_api_error err;
    memset(&err, 0x5a, sizeof err);
    int rc = srv_compat_parse(kind, (const char *)d, n, lim, &req, &o, &err);
    if (rc == 0) {
        CHECK(req.n >= 1 && req.n <= lim->max_texts, "n = %d (max_texts %d)", req.n,
              lim->max_texts);
        CHECK(ref_utf8_valid(d, n), "a body that is not valid UTF-8 was accepted%s", "");
        CHECK(req.texts != NULL && req.text_lens != NULL, "request without texts%s", "");
        for (int i = 0; i < req.n; i++) {
            check_text("input", i, req.texts[i], req.text_lens[i], lim);
            if (o.pairs && o.pairs[i])
                check_text("pair", i, o.pairs[i], o.pair_lens[i], lim);
        }
        CHECK(req.list || req.n == 1, "a single input with n = %d", req.n);
        CHECK(kind != SRV_COMPAT_OPENAI_EMBED || (req.model && *req.model),
              "OpenAI request without a model%s", "");
        CHECK((o.normalize | o.truncate | o.raw_scores | o.add_special_tokens | o.base64) <= 1,
              "a boolean option outside 0/1%s", "");
        CHECK(o.dimensions >= 0, "dimensions %d", o.dimensions);
    } else {
        CHECK(rc == -1, "srv_compat_parse returned %d", rc);
        CHECK(err.code != NULL && code_allowed(err.status, err.code), "status %d with code %s",
              err.status, err.code ? err.code : "(null)");
        size_t ml = strnlen(err.message, sizeof err.message);
        CHECK(ml > 0 && ml < sizeof err.message, "message empty or not terminated%s", "");
        CHECK(srv_utf8_valid(err.message, ml), "error message is not valid UTF-8: %s", err.code);
    }
    srv_api_request_free(&req);
    srv_compat_opts_free(&o);
    srv_compat_opts_free(&o); /* idempotent */
}

static void fuzz_feedback(const uint8_t *d, size_t n, const srv_api_limits *lim)
{
    srv_api_feedback fb;
    srv_api_error err;
    memset(&err, 0x5a, sizeof err);
    int max_items = lim->max_texts;
    int rc = srv_api_parse_feedback((const char *)d, n, lim, max_items, &fb, &err);
    if (rc == 0) {
        CHECK(fb.model && *fb.model, "feedback without a model accepted%s", "");
        CHECK(fb.n >= 1 && fb.n <= max_items, "n = %d (max_items %d)", fb.n, max_items);
        CHECK(fb.list || fb.n == 1, "a single item with n = %d", fb.n);
        CHECK(ref_utf8_valid(d, n), "a body that is not valid UTF-8 was accepted%s", "");
        for (int i = 0; i < fb.n; i++) {
            const srv_feedback_item *it = &fb.items[i];
            CHECK(!it->text != !it->request_id, "item %d: text and request_id both %s", i,
                  it->text ? "set" : "unset");
            if (it->text) {
                check_text("text", i, it->text, it->text_len, lim);
                CHECK(it->index == -1, "item %d: index %d with a text", i, it->index);
            } else {
                size_t l = strlen(it->request_id);
                CHECK(l >= 1 && l <= SRV_API_MAX_REQUEST_ID, "item %d: request_id of %zu bytes",
                      i, l);
                CHECK(it->index >= -1 && it->index <= 65535, "item %d: index %d", i, it->index);
            }
            CHECK(it->label && it->label_len == strlen(it->label) && it->label_len >= 1 &&
                      it->label_len <= SRV_API_MAX_LABEL,
                  "item %d: label of %zu bytes", i, it->label_len);
        }
    } else {
        CHECK(rc == -1, "srv_api_parse_feedback returned %d", rc);
        CHECK(err.code != NULL, "error without a code (status %d)", err.status);
        CHECK(code_allowed(err.status, err.code), "status %d with code \"%s\"", err.status,
              err.code);
        CHECK(memchr(err.message, 0, sizeof err.message) != NULL, "message not terminated%s", "");
        CHECK(strlen(err.message) > 0, "empty error message for %s", err.code);
        CHECK(srv_utf8_valid(err.message, strlen(err.message)),
              "error message is not valid UTF-8: %s", err.code);
        CHECK(fb.items == NULL && fb.n == 0, "failed parse left %d items", fb.n);
    }
    srv_api_feedback_free(&fb);
    srv_api_feedback_free(&fb); /* idempotent */
}

static void fuzz_utf8(const uint8_t *d, size_t n)
{
    int got = srv_utf8_valid((const char *)d, n);
    int want = ref_utf8_valid(d, n);
    CHECK(got == want, "srv_utf8_valid = %d, reference = %d (len %zu)", got, want, n);
    if (want) {
        size_t total = ref_cp_count(d, n);
        CHECK(srv_utf8_cp_offset((const char *)d, n, n) == total, "cp count of %zu bytes", n);
        CHECK(srv_utf8_cp_offset((const char *)d, n, n + 7) == total, "offset past the end%s", "");
        /* Offsets at code-point boundaries. */
        size_t cps = 0;
        for (size_t i = 0; i < n; cps++) {
            CHECK(srv_utf8_cp_offset((const char *)d, n, i) == cps, "cp offset at byte %zu", i);
            uint8_t c = d[i];
            i += c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        }
    }
}

static void fuzz_content_type(const uint8_t *d, size_t n)
{
    char *ct = malloc(n + 1);
    if (!ct)
        return;
    memcpy(ct, d, n);
    ct[n] = 0;
    int got = srv_api_content_type_ok(ct);
    int want = ref_content_type_ok(ct);
    CHECK(got == want, "content type \"%.80s\": %d, reference %d", ct, got, want);
    CHECK(srv_api_content_type_ok(NULL) == 0, "NULL content type accepted%s", "");
    free(ct);
}

static void fuzz_auth(const uint8_t *d, size_t n)
{
    /* Payload: AUTHORIZATION \n X-API-KEY \n KEY-FILE (each part NUL-terminated copy). */
    char *buf = malloc(n + 1);
    if (!buf)
        return;
    memcpy(buf, d, n);
    buf[n] = 0;
    char *a = buf, *x = NULL, *file = NULL;
    char *nl = memchr(buf, '\n', n);
    if (nl) {
        *nl = 0;
        x = nl + 1;
        char *nl2 = strchr(x, '\n');
        if (nl2) {
            *nl2 = 0;
            file = nl2 + 1;
        }
    }
    size_t klen = 12345;
    const char *key = srv_auth_extract(a, x, &klen);
    if (key) {
        int in_a = key >= a && key + klen <= a + strlen(a);
        int in_x = x && key >= x && key + klen <= x + strlen(x);
        CHECK(in_a || in_x, "extracted key is outside both headers%s", "");
    }
    (void)srv_auth_extract(NULL, NULL, &klen);
    if (file) {
        srv_auth *au = NULL;
        char err[256];
        err[0] = 0;
        size_t flen = strlen(file);
        if (srv_auth_parse(file, flen, &au, err, sizeof err) == 0) {
            CHECK(au != NULL, "parse ok without a table%s", "");
            int cnt = srv_auth_count(au);
            CHECK(cnt >= 0, "count %d", cnt);
            if (key) {
                /* Accepted only when its hash is literally in the file. */
                char hex[65];
                srv_auth_hash_hex(key, klen, hex);
                int ok = srv_auth_check(au, key, klen);
                if (ok) {
                    int found = 0;
                    for (const char *p = file; (p = strcasestr(p, hex)) != NULL; p++)
                        found = 1;
                    CHECK(found, "a key whose hash is not in the file was accepted%s", "");
                }
            }
            srv_auth_free(au);
        } else {
            CHECK(memchr(err, 0, sizeof err) && err[0], "auth parse failed without a message%s",
                  "");
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *d = data + 1;
    size_t n = size - 1;

    /* Limits: the defaults, or small ones that make every limit reachable. */
    srv_api_limits lim;
    if (sel & 0x80) {
        lim.max_body_bytes = 512;
        lim.max_texts = 3;
        lim.max_text_bytes = 16;
    } else {
        lim.max_body_bytes = 1 << 20;
        lim.max_texts = 64;
        lim.max_text_bytes = 16384;
    }
    switch (sel & 0x0f) {
    case 0: fuzz_parse(SRV_EP_EMBED, d, n, &lim); break;
    case 1: fuzz_parse(SRV_EP_SENTIMENT, d, n, &lim); break;
    case 2: fuzz_parse(SRV_EP_CLASSIFY, d, n, &lim); break;
    case 3: fuzz_parse(SRV_EP_QA, d, n, &lim); break;
    case 4: fuzz_parse(SRV_EP_TRANSLATE, d, n, &lim); break;
    case 5: fuzz_parse((srv_endpoint)(sel >> 4 & 7), d, n, &lim); break; /* any route */
    case 6: fuzz_utf8(d, n); break;
    case 7: fuzz_content_type(d, n); break;
    case 8: fuzz_auth(d, n); break;
    case 9: fuzz_feedback(d, n, &lim); break;
    case 10: fuzz_compat((srv_compat_kind)(sel >> 4 & 3), d, n, &lim); break;
    default: fuzz_parse((srv_endpoint)((sel & 0x0f) % 4), d, n, &lim); break;
    }
    return 0;
}
