/* api.h - request parsing and validation for the /v1 endpoints.
 *
 * Pure functions over (body, length, limits): no I/O, no globals, total on any
 * input (a fuzz target calls them). They implement README's "HTTP API":
 * errors carry the HTTP status, the error code and a message that never
 * quotes the client's input.
 */
#ifndef NLPD_SRV_API_H
#define NLPD_SRV_API_H

#include <stddef.h>

#include "endpoint.h"

typedef struct srv_api_limits {
    size_t max_body_bytes;
    int max_texts;          /* texts or QA items per request */
    size_t max_text_bytes;  /* one text, question or context */
} srv_api_limits;

/* Absolute bounds of the translate options (the model's config narrows them). */
#define SRV_API_MAX_BEAM 64
#define SRV_API_MAX_LENGTH 4096

typedef struct srv_api_error {
    int status;             /* HTTP status */
    const char *code;       /* "invalid_field", ... (static) */
    char message[256];
} srv_api_error;

/* Fill e; code must be a static string. Returns -1 (handy for `return`). */
int srv_api_error_set(srv_api_error *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct srv_qa_item {
    const char *question;
    size_t question_len;
    const char *context;
    size_t context_len;
} srv_qa_item;

/* A validated request. Strings point into the parsed document, which the
 * request owns until srv_api_request_free. */
typedef struct srv_api_request {
    srv_endpoint ep;
    const char *model;            /* NULL: the endpoint's default model */
    int list;                     /* 1: "texts" / "items" given -> answer "results" */
    int n;                        /* texts or QA items (>= 1) */
    const char **texts;           /* n texts (not QA), non-empty valid UTF-8 */
    size_t *text_lens;
    srv_qa_item *items;           /* n items (QA) */
    int top_k;                    /* 0: endpoint default */
    double threshold;             /* classify multi-label; < 0: default 0.5 */
    int max_answer_length;        /* QA, tokens; 0: default 15 */
    int handle_impossible_answer; /* QA: 0/1 */
    int timeout_ms;               /* 0: the model's timeout_ms */
    const char *source, *target;  /* translate: language codes ([A-Za-z0-9_-], 1-31 chars);
                                     both required when model is NULL */
    int beam_size;                /* translate: 1..SRV_API_MAX_BEAM; 0: the model's default */
    int max_length;               /* translate: 2..SRV_API_MAX_LENGTH (transformers' max_length:
                                     output tokens + the decoder start); 0: the model's */
    void *doc_;                   /* private: the parsed document */
} srv_api_request;

/* Parse and validate the body of a POST to endpoint ep (embed, sentiment,
 * classify, qa or translate). 0 and *req filled, or -1 and *err filled (req
 * is then empty; freeing it is harmless). Statuses: 400 malformed_json,
 * 413 payload_too_large / too_many_texts / text_too_long, 422 invalid_field /
 * invalid_utf8. body need not be NUL-terminated and may be NULL when len is 0. */
/* The checks every JSON endpoint shares: size limit, UTF-8, no NUL (raw, escaped or
 * as \u0000) or raw control character in strings, one JSON object and nothing after
 * it. 0 with *doc (free with cJSON_Delete), or -1 with err set. */
struct cJSON;
int srv_api_parse_body(const char *body, size_t len, const srv_api_limits *lim,
                       struct cJSON **doc, srv_api_error *err);

/* The members of a parsed object matched to a table of names: f[i] is the member
 * called names[i] or NULL. A name whose bit is not in `allowed`, an unknown name or
 * a duplicate is a 422 naming it (and `route`, e.g. "/v1/embed"). 0, or -1 with err. */
int srv_api_fields(const struct cJSON *doc, const char *const *names, int count,
                   unsigned allowed, const char *route, const struct cJSON **f,
                   srv_api_error *err);

int srv_api_parse(srv_endpoint ep, const char *body, size_t len, const srv_api_limits *lim,
                  srv_api_request *req, srv_api_error *err);
void srv_api_request_free(srv_api_request *req);

/* POST /v1/feedback (README "Feedback"): {"model", "items": [ITEM, ...]} or
 * {"model", ITEM's fields}, where ITEM is {"text", "label"} or
 * {"request_id", "index"?, "label"}. */
#define SRV_API_MAX_REQUEST_ID 71 /* bytes: an X-Request-Id nlpd keeps (http.c) */
#define SRV_API_MAX_LABEL 256     /* bytes */

typedef struct srv_feedback_item {
    const char *text;             /* NULL when request_id is given */
    size_t text_len;
    const char *request_id;       /* NULL when text is given */
    int index;                    /* which text of request_id; -1: not given */
    const char *label;            /* non-empty; checked against the model by the handler */
    size_t label_len;
} srv_feedback_item;

typedef struct srv_api_feedback {
    const char *model;            /* required */
    int list;                     /* 1: "items" given */
    int n;                        /* items (>= 1) */
    srv_feedback_item *items;
    void *doc_;                   /* private: the parsed document */
} srv_api_feedback;

/* Parse and validate a feedback body: at most max_items items, texts within
 * lim. 0 and *fb filled, or -1 and *err filled (fb empty). Statuses as for
 * srv_api_parse, plus 413 too_many_items. Labels are not checked here. */
int srv_api_parse_feedback(const char *body, size_t len, const srv_api_limits *lim,
                           int max_items, srv_api_feedback *fb, srv_api_error *err);
void srv_api_feedback_free(srv_api_feedback *fb);

/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int srv_utf8_valid(const char *s, size_t n);

/* Code points in s[0..byte_off) (byte_off clamped to n): code-point offsets
 * reported to clients from byte offsets. */
size_t srv_utf8_cp_offset(const char *s, size_t n, size_t byte_off);

/* 1 when s is a language code as clients and the config write them ("en",
 * "pt_BR", "zh-Hant"): 1-31 letters, digits, '_' or '-' (safe to quote in
 * messages). NULL -> 0. */
int srv_lang_code_valid(const char *s);

/* 1 when a Content-Type header value is application/json (parameters such
 * as "; charset=utf-8" allowed, case-insensitive). NULL -> 0. */
int srv_api_content_type_ok(const char *ct);

#endif
