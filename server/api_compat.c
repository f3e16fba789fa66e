/* api_compat.c - see api_compat.h. */
#include "api_compat.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The message LangChain users need: its OpenAIEmbeddings sends token ids of
 * OpenAI's tokenizer (tiktoken) unless told not to. */
#define TOKEN_IDS_MSG                                                                       \
    "input holds token ids; nlpd embeds text only (token ids from another tokenizer would " \
    "embed the wrong text). LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False)"

enum { K_INPUT, K_INPUTS, K_MODEL, K_ENCODING, K_DIMENSIONS, K_USER, K_NORMALIZE, K_TRUNCATE,
       K_TRUNC_DIR, K_PROMPT_NAME, K_RAW_SCORES, K_ADD_SPECIAL, K_COUNT };

static const char *const key_names[K_COUNT] = {
    "input", "inputs", "model", "encoding_format", "dimensions", "user", "normalize",
    "truncate", "truncation_direction", "prompt_name", "raw_scores", "add_special_tokens"};

static unsigned allowed_keys(srv_compat_kind k)
{
    const unsigned tei_trunc = 1u << K_TRUNCATE | 1u << K_TRUNC_DIR;
    switch (k) {
    case SRV_COMPAT_OPENAI_EMBED:
        return 1u << K_INPUT | 1u << K_MODEL | 1u << K_ENCODING | 1u << K_DIMENSIONS |
               1u << K_USER;
    case SRV_COMPAT_TEI_EMBED:
        return 1u << K_INPUTS | 1u << K_NORMALIZE | 1u << K_PROMPT_NAME | tei_trunc;
    case SRV_COMPAT_TEI_PREDICT:
        return 1u << K_INPUTS | 1u << K_RAW_SCORES | tei_trunc;
    case SRV_COMPAT_TEI_TOKENIZE:
        return 1u << K_INPUTS | 1u << K_ADD_SPECIAL | 1u << K_PROMPT_NAME;
    }
    return 0;
}

static const char *route_of(srv_compat_kind k)
{
    static const char *const r[] = {"/v1/embeddings", "/embed", "/predict", "/tokenize"};
    return (unsigned)k < 4 ? r[k] : "?";
}

/* Does the JSON text hold a \u0000 escape inside a string? cJSON would cut
 * the string there. */
static int text_of(const cJSON *v, const char *name, const srv_api_limits *lim, const char **out,
                   size_t *len, srv_api_error *err)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return srv_api_error_set(err, 422, "invalid_field", "%s must be a string", name);
    size_t l = strlen(v->valuestring);
    if (l == 0)
        return srv_api_error_set(err, 422, "invalid_field", "%s must not be empty", name);
    if (l > lim->max_text_bytes)
        return srv_api_error_set(err, 413, "text_too_long", "%s is %zu bytes, the limit is %zu",
                                 name, l, lim->max_text_bytes);
    *out = v->valuestring;
    *len = l;
    return 0;
}

static int get_bool(const cJSON *v, const char *name, int *out, srv_api_error *err)
{
    if (cJSON_IsNull(v))
        return 0; /* TEI's nullable options: the default */
    if (!cJSON_IsBool(v))
        return srv_api_error_set(err, 422, "invalid_field", "%s must be true or false", name);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int alloc_texts(srv_api_request *r, int n, srv_api_error *err)
{
    r->texts = calloc((size_t)n, sizeof *r->texts);
    r->text_lens = calloc((size_t)n, sizeof *r->text_lens);
    if (!r->texts || !r->text_lens)
        return srv_api_error_set(err, 500, "internal", "out of memory");
    r->n = n;
    return 0;
}

static int count_ok(int n, const char *name, const srv_api_limits *lim, srv_api_error *err)
{
    if (n == 0)
        return srv_api_error_set(err, 422, "invalid_field", "%s must not be empty", name);
    if (n > lim->max_texts)
        return srv_api_error_set(err, 413, "too_many_texts", "%d texts, the limit is %d", n,
                                 lim->max_texts);
    return 0;
}

static int is_token_ids(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return 1;
    if (!cJSON_IsArray(v) || !v->child)
        return 0;
    for (const cJSON *e = v->child; e; e = e->next)
        if (!cJSON_IsNumber(e))
            return 0;
    return 1;
}

/* A string or a list of strings (OpenAI "input", TEI "inputs"). */
static int parse_text_list(const cJSON *v, const char *name, int openai,
                           const srv_api_limits *lim, srv_api_request *r, srv_api_error *err)
{
    if (cJSON_IsString(v)) {
        if (alloc_texts(r, 1, err))
            return -1;
        return text_of(v, name, lim, &r->texts[0], &r->text_lens[0], err);
    }
    if (!cJSON_IsArray(v))
        return srv_api_error_set(err, 422, "invalid_field", "%s must be a string or a list of strings",
                                 name);
    int n = cJSON_GetArraySize(v);
    if (n > 0 && (is_token_ids(v) || is_token_ids(v->child)))
        return srv_api_error_set(err, 422, openai ? "unsupported_input" : "invalid_field", "%s",
                                 openai ? TOKEN_IDS_MSG
                                        : "inputs holds token ids; nlpd embeds text only: "
                                          "send the text");
    if (count_ok(n, name, lim, err) || alloc_texts(r, n, err))
        return -1;
    r->list = 1;
    int i = 0;
    for (const cJSON *e = v->child; e && i < n; e = e->next, i++) {
        char nm[40];
        snprintf(nm, sizeof nm, "%s[%d]", name, i);
        if (text_of(e, nm, lim, &r->texts[i], &r->text_lens[i], err))
            return -1;
    }
    return 0;
}

/* TEI /predict: "text", ["text", "pair"], or a batch [["text"] | ["text", "pair"], ...]. */
static int parse_predict_inputs(const cJSON *v, const srv_api_limits *lim, srv_api_request *r,
                                srv_compat_opts *o, srv_api_error *err)
{
    const char *shape = "inputs must be a string, a pair [text, text_pair], or a list of "
                        "[text] / [text, text_pair] lists";
    int n = 1;
    const cJSON *first = NULL;
    if (cJSON_IsArray(v)) {
        first = v->child;
        if (first && cJSON_IsArray(first)) {
            n = cJSON_GetArraySize(v);
            if (count_ok(n, "inputs", lim, err))
                return -1;
            o->batch = 1;
            r->list = 1;
        } else if (cJSON_GetArraySize(v) != 2) {
            return srv_api_error_set(err, 422, "invalid_field", "%s", shape);
        }
    } else if (!cJSON_IsString(v)) {
        return srv_api_error_set(err, 422, "invalid_field", "%s", shape);
    }
    if (alloc_texts(r, n, err))
        return -1;
    o->pairs = calloc((size_t)n, sizeof *o->pairs);
    o->pair_lens = calloc((size_t)n, sizeof *o->pair_lens);
    if (!o->pairs || !o->pair_lens)
        return srv_api_error_set(err, 500, "internal", "out of memory");
    if (cJSON_IsString(v))
        return text_of(v, "inputs", lim, &r->texts[0], &r->text_lens[0], err);
    if (!o->batch)
        return text_of(v->child, "inputs[0]", lim, &r->texts[0], &r->text_lens[0], err) ||
               text_of(v->child->next, "inputs[1]", lim, &o->pairs[0], &o->pair_lens[0], err);
    int i = 0;
    for (const cJSON *e = v->child; e && i < n; e = e->next, i++) {
        int k = cJSON_IsArray(e) ? cJSON_GetArraySize(e) : 0;
        if (k != 1 && k != 2)
            return srv_api_error_set(err, 422, "invalid_field", "inputs[%d]: %s", i, shape);
        char nm[40];
        snprintf(nm, sizeof nm, "inputs[%d][0]", i);
        if (text_of(e->child, nm, lim, &r->texts[i], &r->text_lens[i], err))
            return -1;
        snprintf(nm, sizeof nm, "inputs[%d][1]", i);
        if (k == 2 && text_of(e->child->next, nm, lim, &o->pairs[i], &o->pair_lens[i], err))
            return -1;
    }
    return 0;
}

static int parse_fields(srv_compat_kind kind, const cJSON *const *f, const srv_api_limits *lim,
                        srv_api_request *r, srv_compat_opts *o, srv_api_error *err)
{
    if (kind == SRV_COMPAT_OPENAI_EMBED) {
        if (!f[K_MODEL])
            return srv_api_error_set(err, 422, "invalid_field", "missing field: model");
        if (!cJSON_IsString(f[K_MODEL]) || !f[K_MODEL]->valuestring || !*f[K_MODEL]->valuestring)
            return srv_api_error_set(err, 422, "invalid_field", "model must be a non-empty string");
        r->model = f[K_MODEL]->valuestring;
        if (f[K_ENCODING] && !cJSON_IsNull(f[K_ENCODING])) {
            const char *e = cJSON_IsString(f[K_ENCODING]) ? f[K_ENCODING]->valuestring : NULL;
            if (!e || (strcmp(e, "float") != 0 && strcmp(e, "base64") != 0))
                return srv_api_error_set(err, 422, "invalid_field",
                                         "encoding_format must be \"float\" or \"base64\"");
            o->base64 = strcmp(e, "base64") == 0;
        }
        if (f[K_DIMENSIONS] && !cJSON_IsNull(f[K_DIMENSIONS])) {
            const cJSON *d = f[K_DIMENSIONS];
            if (!cJSON_IsNumber(d) || !isfinite(d->valuedouble) ||
                d->valuedouble != floor(d->valuedouble) || d->valuedouble < 1 ||
                d->valuedouble > 1e6)
                return srv_api_error_set(err, 422, "invalid_field",
                                         "dimensions must be a positive integer");
            o->dimensions = (int)d->valuedouble;
        }
        if (f[K_USER] && !cJSON_IsString(f[K_USER]) && !cJSON_IsNull(f[K_USER]))
            return srv_api_error_set(err, 422, "invalid_field", "user must be a string");
        if (!f[K_INPUT])
            return srv_api_error_set(err, 422, "invalid_field", "missing field: input");
        return parse_text_list(f[K_INPUT], "input", 1, lim, r, err);
    }
    if (f[K_NORMALIZE] && get_bool(f[K_NORMALIZE], "normalize", &o->normalize, err))
        return -1;
    if (f[K_TRUNCATE] && get_bool(f[K_TRUNCATE], "truncate", &o->truncate, err))
        return -1;
    if (f[K_RAW_SCORES] && get_bool(f[K_RAW_SCORES], "raw_scores", &o->raw_scores, err))
        return -1;
    if (f[K_ADD_SPECIAL] &&
        get_bool(f[K_ADD_SPECIAL], "add_special_tokens", &o->add_special_tokens, err))
        return -1;
    if (f[K_TRUNC_DIR] && !cJSON_IsNull(f[K_TRUNC_DIR])) {
        const char *d = cJSON_IsString(f[K_TRUNC_DIR]) ? f[K_TRUNC_DIR]->valuestring : NULL;
        if (!d || (strcmp(d, "Right") != 0 && strcmp(d, "right") != 0))
            return srv_api_error_set(err, 422, "invalid_field",
                                     "truncation_direction: only \"Right\" is supported");
    }
    if (f[K_PROMPT_NAME] && !cJSON_IsNull(f[K_PROMPT_NAME]))
        return srv_api_error_set(err, 422, "invalid_field",
                                 "prompt_name is not supported (the model folder has no prompts)");
    if (!f[K_INPUTS])
        return srv_api_error_set(err, 422, "invalid_field", "missing field: inputs");
    if (kind == SRV_COMPAT_TEI_PREDICT)
        return parse_predict_inputs(f[K_INPUTS], lim, r, o, err);
    return parse_text_list(f[K_INPUTS], "inputs", 0, lim, r, err);
}

int srv_compat_parse(srv_compat_kind kind, const char *body, size_t len,
                     const srv_api_limits *lim, srv_api_request *r, srv_compat_opts *o,
                     srv_api_error *err)
{
    memset(r, 0, sizeof *r);
    memset(o, 0, sizeof *o);
    r->ep = SRV_EP_OTHER;
    r->threshold = -1;
    o->kind = kind;
    o->normalize = 1;
    o->add_special_tokens = 1;
    unsigned allowed = allowed_keys(kind);
    if (!allowed)
        return srv_api_error_set(err, 404, "not_found", "no such endpoint");
    cJSON *doc = NULL;
    if (srv_api_parse_body(body, len, lim, &doc, err))
        return -1;
    r->doc_ = doc;
    const cJSON *f[K_COUNT];
    if (srv_api_fields(doc, key_names, K_COUNT, allowed, route_of(kind), f, err))
        goto fail;
    if (parse_fields(kind, f, lim, r, o, err))
        goto fail;
    return 0;
fail:
    srv_api_request_free(r);
    srv_compat_opts_free(o);
    r->ep = SRV_EP_OTHER;
    return -1;
}

void srv_compat_opts_free(srv_compat_opts *o)
{
    if (!o)
        return;
    free(o->pairs);
    free(o->pair_lens);
    o->pairs = NULL;
    o->pair_lens = NULL;
}

size_t srv_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (n + 2) / 3 * 4;
    if (cap < need + 1)
        return 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = 0;
    return o;
}
