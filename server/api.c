/* api.c - see api.h. */
#include "api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int srv_api_error_set(srv_api_error *e, int status, const char *code, const char *fmt, ...)
{
    if (e) {
        e->status = status;
        e->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int srv_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            len = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            len = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (n - i < (size_t)len)
            return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

size_t srv_utf8_cp_offset(const char *s, size_t n, size_t byte_off)
{
    size_t cps = 0;
    if (byte_off > n)
        byte_off = n;
    for (size_t i = 0; i < byte_off; i++)
        cps += ((unsigned char)s[i] & 0xc0) != 0x80;
    return cps;
}

int srv_api_content_type_ok(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, "application/json", 16) != 0)
        return 0;
    ct += 16;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == 0 || *ct == ';';
}

/* Check the characters inside JSON strings, which cJSON does not: a NUL,
 * raw or escaped (\u0000), would be decoded and silently cut the C string
 * there; other raw control characters (< 0x20) are malformed JSON (RFC 8259
 * section 7), and so are control characters other than the four whitespace
 * ones between tokens, which cJSON skips as whitespace. Returns 0, 1 (a NUL
 * in a string: 422 invalid_field, as the escaped form), or 2 (a raw control
 * character: 400 malformed_json); *at: its offset. With this check every string
 * cJSON returns holds no NUL, so strlen(valuestring) is its decoded length. */
static int bad_string_chars(const char *s, size_t n, size_t *at)
{
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in_str) {
            /* cJSON skips every byte <= 0x20 as whitespace; JSON allows four. */
            if (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                *at = i;
                return 2;
            }
            in_str = c == '"';
            continue;
        }
        if (c == '"') {
            in_str = 0;
        } else if (c < 0x20) {
            *at = i;
            return c == 0 ? 1 : 2;
        } else if (c == '\\' && i + 1 < n) {
            unsigned char e = (unsigned char)s[i + 1];
            if (e < 0x20) { /* "\<control>" is no escape: the control byte is raw */
                *at = i + 1;
                return e == 0 ? 1 : 2;
            }
            if (e == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0) {
                *at = i;
                return 1;
            }
            i++; /* skip the escaped character */
        }
    }
    return 0;
}

typedef enum { F_TEXT, F_TEXTS, F_MODEL, F_TIMEOUT, F_TOPK, F_THRESHOLD, F_QUESTION,
               F_CONTEXT, F_ITEMS, F_MAXANS, F_IMPOSSIBLE, F_SOURCE, F_TARGET, F_BEAM, F_MAXLEN,
               F_COUNT } field;

static const char *const field_names[F_COUNT] = {
    "text", "texts", "model", "timeout_ms", "top_k", "threshold", "question", "context",
    "items", "max_answer_length", "handle_impossible_answer", "source", "target", "beam_size",
    "max_length"};

/* Fields each endpoint accepts (bit per field). */
static unsigned allowed_fields(srv_endpoint ep)
{
    const unsigned common = 1u << F_MODEL | 1u << F_TIMEOUT;
    const unsigned texts = 1u << F_TEXT | 1u << F_TEXTS;
    switch (ep) {
    case SRV_EP_EMBED:
    case SRV_EP_SENTIMENT:
        return common | texts;
    case SRV_EP_CLASSIFY:
        return common | texts | 1u << F_TOPK | 1u << F_THRESHOLD;
    case SRV_EP_QA:
        return common | 1u << F_QUESTION | 1u << F_CONTEXT | 1u << F_ITEMS | 1u << F_TOPK |
               1u << F_MAXANS | 1u << F_IMPOSSIBLE;
    case SRV_EP_TRANSLATE:
        return common | texts | 1u << F_SOURCE | 1u << F_TARGET | 1u << F_BEAM | 1u << F_MAXLEN;
    default:
        return 0;
    }
}

static int get_int(const cJSON *v, const char *name, long lo, long hi, int *out,
                   srv_api_error *err)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return srv_api_error_set(err, 422, "invalid_field", "%s must be an integer in [%ld, %ld]",
                                 name, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

/* A text field: a non-empty string within the byte limit. */
static int get_text(const cJSON *v, const char *name, const srv_api_limits *lim,
                    const char **out, size_t *len, srv_api_error *err)
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

static int parse_texts(const cJSON *const *f, const srv_api_limits *lim, srv_api_request *r,
                       srv_api_error *err)
{
    if (f[F_TEXT] && f[F_TEXTS])
        return srv_api_error_set(err, 422, "invalid_field", "give either text or texts, not both");
    if (!f[F_TEXT] && !f[F_TEXTS])
        return srv_api_error_set(err, 422, "invalid_field", "missing field: text or texts");
    int n = 1;
    if (f[F_TEXTS]) {
        if (!cJSON_IsArray(f[F_TEXTS]))
            return srv_api_error_set(err, 422, "invalid_field", "texts must be a list of strings");
        n = cJSON_GetArraySize(f[F_TEXTS]);
        if (n == 0)
            return srv_api_error_set(err, 422, "invalid_field", "texts must not be empty");
        if (n > lim->max_texts)
            return srv_api_error_set(err, 413, "too_many_texts", "%d texts, the limit is %d", n,
                                     lim->max_texts);
        r->list = 1;
    }
    r->texts = calloc((size_t)n, sizeof *r->texts);
    r->text_lens = calloc((size_t)n, sizeof *r->text_lens);
    if (!r->texts || !r->text_lens)
        return srv_api_error_set(err, 500, "internal", "out of memory");
    if (!r->list)
        return get_text(f[F_TEXT], "text", lim, &r->texts[0], &r->text_lens[0], err);
    int i = 0;
    for (const cJSON *e = f[F_TEXTS]->child; e && i < n; e = e->next, i++) {
        char name[32];
        snprintf(name, sizeof name, "texts[%d]", i);
        if (get_text(e, name, lim, &r->texts[i], &r->text_lens[i], err))
            return -1;
    }
    r->n = n;
    return 0;
}

static int parse_qa_item(const cJSON *q, const cJSON *c, const char *prefix,
                         const srv_api_limits *lim, srv_qa_item *it, srv_api_error *err)
{
    char qn[48], cn[48];
    snprintf(qn, sizeof qn, "%squestion", prefix);
    snprintf(cn, sizeof cn, "%scontext", prefix);
    if (!q || !c)
        return srv_api_error_set(err, 422, "invalid_field", "missing field: %s",
                                 q ? cn : qn);
    if (get_text(q, qn, lim, &it->question, &it->question_len, err) ||
        get_text(c, cn, lim, &it->context, &it->context_len, err))
        return -1;
    return 0;
}

static int parse_qa(const cJSON *const *f, const srv_api_limits *lim, srv_api_request *r,
                    srv_api_error *err)
{
    if (f[F_ITEMS] && (f[F_QUESTION] || f[F_CONTEXT]))
        return srv_api_error_set(err, 422, "invalid_field",
                                 "give either question and context, or items, not both");
    if (!f[F_ITEMS]) {
        if (!(r->items = calloc(1, sizeof *r->items)))
            return srv_api_error_set(err, 500, "internal", "out of memory");
        r->n = 1;
        return parse_qa_item(f[F_QUESTION], f[F_CONTEXT], "", lim, &r->items[0], err);
    }
    if (!cJSON_IsArray(f[F_ITEMS]))
        return srv_api_error_set(err, 422, "invalid_field",
                                 "items must be a list of {\"question\", \"context\"} objects");
    int n = cJSON_GetArraySize(f[F_ITEMS]);
    if (n == 0)
        return srv_api_error_set(err, 422, "invalid_field", "items must not be empty");
    if (n > lim->max_texts)
        return srv_api_error_set(err, 413, "too_many_texts", "%d items, the limit is %d", n,
                                 lim->max_texts);
    if (!(r->items = calloc((size_t)n, sizeof *r->items)))
        return srv_api_error_set(err, 500, "internal", "out of memory");
    r->list = 1;
    int i = 0;
    for (const cJSON *e = f[F_ITEMS]->child; e && i < n; e = e->next, i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "items[%d].", i);
        if (!cJSON_IsObject(e))
            return srv_api_error_set(err, 422, "invalid_field", "items[%d] must be an object", i);
        const cJSON *q = NULL, *c = NULL;
        for (const cJSON *k = e->child; k; k = k->next) {
            const cJSON **slot = !k->string ? NULL
                                 : strcmp(k->string, "question") == 0 ? &q
                                 : strcmp(k->string, "context") == 0 ? &c : NULL;
            if (!slot)
                return srv_api_error_set(err, 422, "invalid_field",
                                         "items[%d]: unknown field (expected question, context)", i);
            if (*slot)
                return srv_api_error_set(err, 422, "invalid_field", "items[%d]: duplicate field", i);
            *slot = k;
        }
        if (parse_qa_item(q, c, prefix, lim, &r->items[i], err))
            return -1;
    }
    r->n = n;
    return 0;
}

int srv_lang_code_valid(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (n >= 31 || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
                         (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '-'))
            return 0;
    return n > 0;
}

static int parse_options(const cJSON *const *f, srv_api_request *r, srv_api_error *err)
{
    if (f[F_MODEL]) {
        if (!cJSON_IsString(f[F_MODEL]) || !f[F_MODEL]->valuestring || !*f[F_MODEL]->valuestring)
            return srv_api_error_set(err, 422, "invalid_field", "model must be a non-empty string");
        r->model = f[F_MODEL]->valuestring;
    }
    if (f[F_TIMEOUT] && get_int(f[F_TIMEOUT], "timeout_ms", 1, 3600000, &r->timeout_ms, err))
        return -1;
    if (f[F_TOPK] && get_int(f[F_TOPK], "top_k", 1, 1000, &r->top_k, err))
        return -1;
    if (f[F_MAXANS] &&
        get_int(f[F_MAXANS], "max_answer_length", 1, 4096, &r->max_answer_length, err))
        return -1;
    if (f[F_THRESHOLD]) {
        const cJSON *t = f[F_THRESHOLD];
        if (!cJSON_IsNumber(t) || !(t->valuedouble >= 0.0 && t->valuedouble <= 1.0))
            return srv_api_error_set(err, 422, "invalid_field", "threshold must be a number in [0, 1]");
        r->threshold = t->valuedouble;
    }
    if (f[F_IMPOSSIBLE]) {
        if (!cJSON_IsBool(f[F_IMPOSSIBLE]))
            return srv_api_error_set(err, 422, "invalid_field",
                                     "handle_impossible_answer must be true or false");
        r->handle_impossible_answer = cJSON_IsTrue(f[F_IMPOSSIBLE]);
    }
    for (int k = F_SOURCE; k <= F_TARGET; k++)
        if (f[k]) {
            if (!cJSON_IsString(f[k]) || !srv_lang_code_valid(f[k]->valuestring))
                return srv_api_error_set(err, 422, "invalid_field",
                                         "%s must be a language code (1-31 letters, digits, '_' "
                                         "or '-', e.g. \"en\")", field_names[k]);
            *(k == F_SOURCE ? &r->source : &r->target) = f[k]->valuestring;
        }
    if (f[F_BEAM] && get_int(f[F_BEAM], "beam_size", 1, SRV_API_MAX_BEAM, &r->beam_size, err))
        return -1;
    if (f[F_MAXLEN] &&
        get_int(f[F_MAXLEN], "max_length", 2, SRV_API_MAX_LENGTH, &r->max_length, err))
        return -1;
    /* Without a model name the language pair is what selects one. */
    if (r->ep == SRV_EP_TRANSLATE && !r->model && (!r->source || !r->target))
        return srv_api_error_set(err, 422, "invalid_field",
                                 "missing field: %s (source and target are required when no "
                                 "model is given)", r->source ? "target" : "source");
    return 0;
}

/* A short name of letters, digits and '_' (safe to quote in a message). */
static int plain_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= 40 || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
                         (s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
            return 0;
    return n > 0;
}

/* The body as a JSON object (the checks every endpoint shares): *doc, or -1
 * with err set (*doc then NULL). */
int srv_api_parse_body(const char *body, size_t len, const srv_api_limits *lim, cJSON **doc,
                      srv_api_error *err)
{
    *doc = NULL;
    if (len > lim->max_body_bytes)
        return srv_api_error_set(err, 413, "payload_too_large", "body is %zu bytes, the limit is %zu",
                                 len, lim->max_body_bytes);
    if (len == 0 || !body)
        return srv_api_error_set(err, 400, "malformed_json", "empty body: expected a JSON object");
    if (!srv_utf8_valid(body, len))
        return srv_api_error_set(err, 422, "invalid_utf8", "the body is not valid UTF-8");

    size_t bad_at = 0;
    switch (bad_string_chars(body, len, &bad_at)) {
    case 1:
        return srv_api_error_set(err, 422, "invalid_field",
                                 "strings must not contain NUL (raw or \\u0000, byte %zu)", bad_at);
    case 2:
        return srv_api_error_set(err, 400, "malformed_json",
                                 "raw control character 0x%02x at byte %zu "
                                 "(JSON needs it escaped, e.g. \\n)", (unsigned char)body[bad_at], bad_at);
    }
    const char *end = NULL;
    cJSON *d = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!d) {
        size_t off = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return srv_api_error_set(err, 400, "malformed_json", "malformed JSON near byte %zu", off);
    }
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            srv_api_error_set(err, 400, "malformed_json", "unexpected data after the JSON value");
            goto fail;
        }
    if (!cJSON_IsObject(d)) {
        srv_api_error_set(err, 422, "invalid_field", "the body must be a JSON object");
        goto fail;
    }
    *doc = d;
    return 0;
fail:
    cJSON_Delete(d);
    return -1;
}

int srv_api_fields(const cJSON *doc, const char *const *names, int count, unsigned allowed,
                   const char *route, const cJSON **f, srv_api_error *err)
{
    for (int i = 0; i < count; i++)
        f[i] = NULL;
    for (const cJSON *k = doc->child; k; k = k->next) {
        int which = -1, known = -1;
        for (int i = 0; k->string && i < count; i++)
            if (strcmp(k->string, names[i]) == 0)
                known = i, which = allowed & 1u << i ? i : -1;
        if (which < 0) {
            /* Echo the name only when it is short and plain. */
            if (known >= 0)
                return srv_api_error_set(err, 422, "invalid_field", "field %s is not accepted by %s",
                                         names[known], route);
            if (k->string && plain_name(k->string))
                return srv_api_error_set(err, 422, "invalid_field", "unknown field \"%s\" for %s",
                                         k->string, route);
            return srv_api_error_set(err, 422, "invalid_field", "unknown field for %s", route);
        }
        if (f[which])
            return srv_api_error_set(err, 422, "invalid_field", "duplicate field %s", names[which]);
        f[which] = k;
    }
    return 0;
}

int srv_api_parse(srv_endpoint ep, const char *body, size_t len, const srv_api_limits *lim,
                  srv_api_request *r, srv_api_error *err)
{
    memset(r, 0, sizeof *r);
    r->ep = ep;
    r->threshold = -1;
    unsigned allowed = allowed_fields(ep);
    if (!allowed)
        return srv_api_error_set(err, 404, "not_found", "no such endpoint");
    cJSON *doc;
    if (srv_api_parse_body(body, len, lim, &doc, err))
        return -1;
    r->doc_ = doc;

    char route[40];
    snprintf(route, sizeof route, "/v1/%s", srv_endpoint_name(ep));
    const cJSON *f[F_COUNT];
    if (srv_api_fields(doc, field_names, F_COUNT, allowed, route, f, err))
        goto fail;
    if (parse_options(f, r, err))
        goto fail;
    if (ep == SRV_EP_QA ? parse_qa(f, lim, r, err) : parse_texts(f, lim, r, err))
        goto fail;
    if (!r->list)
        r->n = 1;
    return 0;
fail:
    srv_api_request_free(r);
    r->ep = ep;
    return -1;
}

void srv_api_request_free(srv_api_request *r)
{
    if (!r)
        return;
    cJSON_Delete(r->doc_);
    free(r->texts);
    free(r->text_lens);
    free(r->items);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------ /v1/feedback */

/* One feedback item from object o (the top level or an element of items):
 * where names it in messages ("" or "items[3]."). */
static int parse_feedback_item(const cJSON *o, const char *where, int top,
                               const srv_api_limits *lim, srv_feedback_item *it,
                               srv_api_error *err)
{
    static const char *const names[] = {"text", "request_id", "index", "label"};
    const cJSON *f[4] = {0};
    for (const cJSON *k = o->child; k; k = k->next) {
        int which = -1;
        for (int i = 0; k->string && i < 4; i++)
            if (strcmp(k->string, names[i]) == 0)
                which = i;
        if (which < 0) {
            if (top && k->string && (strcmp(k->string, "model") == 0 || strcmp(k->string, "items") == 0))
                continue;
            if (k->string && plain_name(k->string))
                return srv_api_error_set(err, 422, "invalid_field",
                                         "%sunknown field \"%s\" (expected text or request_id, "
                                         "label, index)", where, k->string);
            return srv_api_error_set(err, 422, "invalid_field",
                                     "%sunknown field (expected text or request_id, label, index)",
                                     where);
        }
        if (f[which])
            return srv_api_error_set(err, 422, "invalid_field", "%sduplicate field %s", where,
                                     names[which]);
        f[which] = k;
    }
    char name[48];
    it->index = -1;
    if (f[0] && f[1])
        return srv_api_error_set(err, 422, "invalid_field",
                                 "%sgive either text or request_id, not both", where);
    if (!f[0] && !f[1])
        return srv_api_error_set(err, 422, "invalid_field", "%smissing field: text or request_id",
                                 where);
    if (f[0]) {
        snprintf(name, sizeof name, "%stext", where);
        if (get_text(f[0], name, lim, &it->text, &it->text_len, err))
            return -1;
        if (f[2])
            return srv_api_error_set(err, 422, "invalid_field",
                                     "%sindex goes with request_id, not with text", where);
    } else {
        const cJSON *v = f[1];
        if (!cJSON_IsString(v) || !v->valuestring || !*v->valuestring ||
            strlen(v->valuestring) > SRV_API_MAX_REQUEST_ID)
            return srv_api_error_set(err, 422, "invalid_field",
                                     "%srequest_id must be a non-empty string of at most %d bytes",
                                     where, SRV_API_MAX_REQUEST_ID);
        it->request_id = v->valuestring;
        snprintf(name, sizeof name, "%sindex", where);
        if (f[2] && get_int(f[2], name, 0, 65535, &it->index, err))
            return -1;
    }
    if (!f[3])
        return srv_api_error_set(err, 422, "invalid_field", "%smissing field: label", where);
    const cJSON *l = f[3];
    if (!cJSON_IsString(l) || !l->valuestring || !*l->valuestring ||
        strlen(l->valuestring) > SRV_API_MAX_LABEL)
        return srv_api_error_set(err, 422, "invalid_field",
                                 "%slabel must be a non-empty string of at most %d bytes", where,
                                 SRV_API_MAX_LABEL);
    it->label = l->valuestring;
    it->label_len = strlen(l->valuestring);
    return 0;
}

int srv_api_parse_feedback(const char *body, size_t len, const srv_api_limits *lim,
                           int max_items, srv_api_feedback *fb, srv_api_error *err)
{
    memset(fb, 0, sizeof *fb);
    cJSON *doc;
    if (srv_api_parse_body(body, len, lim, &doc, err))
        return -1;
    fb->doc_ = doc;
    const cJSON *model = NULL, *items = NULL;
    int single = 0;
    for (const cJSON *k = doc->child; k; k = k->next) {
        if (!k->string)
            continue;
        if (strcmp(k->string, "model") == 0 || strcmp(k->string, "items") == 0) {
            const cJSON **slot = k->string[0] == 'm' ? &model : &items;
            if (*slot) {
                srv_api_error_set(err, 422, "invalid_field", "duplicate field %s", k->string);
                goto fail;
            }
            *slot = k;
        } else if (strcmp(k->string, "text") == 0 || strcmp(k->string, "request_id") == 0 ||
                   strcmp(k->string, "index") == 0 || strcmp(k->string, "label") == 0) {
            single = 1; /* a field of the one-item form (checked by parse_feedback_item) */
        }
    }
    if (!model || !cJSON_IsString(model) || !model->valuestring || !*model->valuestring) {
        srv_api_error_set(err, 422, "invalid_field", model ? "model must be a non-empty string"
                                                           : "missing field: model");
        goto fail;
    }
    fb->model = model->valuestring;
    if (items && single) {
        srv_api_error_set(err, 422, "invalid_field",
                          "give either items, or one item's text or request_id and label, not both");
        goto fail;
    }
    for (const cJSON *k = doc->child; items && !single && k; k = k->next)
        if (!k->string || (strcmp(k->string, "model") != 0 && strcmp(k->string, "items") != 0)) {
            if (k->string && plain_name(k->string))
                srv_api_error_set(err, 422, "invalid_field", "unknown field \"%s\" for /v1/feedback",
                                  k->string);
            else
                srv_api_error_set(err, 422, "invalid_field", "unknown field for /v1/feedback");
            goto fail;
        }
    if (!items) {
        if (!(fb->items = calloc(1, sizeof *fb->items))) {
            srv_api_error_set(err, 500, "internal", "out of memory");
            goto fail;
        }
        fb->n = 1;
        if (parse_feedback_item(doc, "", 1, lim, &fb->items[0], err))
            goto fail;
        return 0;
    }
    if (!cJSON_IsArray(items)) {
        srv_api_error_set(err, 422, "invalid_field",
                          "items must be a list of {\"text\", \"label\"} objects");
        goto fail;
    }
    int n = cJSON_GetArraySize(items);
    if (n == 0) {
        srv_api_error_set(err, 422, "invalid_field", "items must not be empty");
        goto fail;
    }
    if (n > max_items) {
        srv_api_error_set(err, 413, "too_many_items", "%d items, the limit is %d", n, max_items);
        goto fail;
    }
    if (!(fb->items = calloc((size_t)n, sizeof *fb->items))) {
        srv_api_error_set(err, 500, "internal", "out of memory");
        goto fail;
    }
    fb->list = 1;
    int i = 0;
    for (const cJSON *e = items->child; e && i < n; e = e->next, i++) {
        char where[32];
        snprintf(where, sizeof where, "items[%d].", i);
        if (!cJSON_IsObject(e)) {
            srv_api_error_set(err, 422, "invalid_field", "items[%d] must be an object", i);
            goto fail;
        }
        if (parse_feedback_item(e, where, 0, lim, &fb->items[i], err))
            goto fail;
    }
    fb->n = n;
    return 0;
fail:
    srv_api_feedback_free(fb);
    return -1;
}

void srv_api_feedback_free(srv_api_feedback *fb)
{
    if (!fb)
        return;
    cJSON_Delete(fb->doc_);
    free(fb->items);
    memset(fb, 0, sizeof *fb);
}
