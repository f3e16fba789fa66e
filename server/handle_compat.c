/* handle_compat.c - the routes that speak other servers' APIs, over the
 * served embed and classification models:
 *   OpenAI POST /v1/embeddings (float or base64 little-endian float32, usage)
 *   text-embeddings-inference POST /embed, /predict, /tokenize (TEI's shapes:
 *   bare JSON arrays).
 * Parsing: api_compat.c; the options travel in r->task_state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_compat.h"
#include "handlers.h"

static srv_compat_opts *opts_of(srv_req *r)
{
    return r->task_state;
}

static srv_compat_kind kind_of(srv_endpoint ep)
{
    switch (ep) {
    case SRV_EP_OPENAI_EMBEDDINGS: return SRV_COMPAT_OPENAI_EMBED;
    case SRV_EP_TEI_EMBED: return SRV_COMPAT_TEI_EMBED;
    case SRV_EP_TEI_PREDICT: return SRV_COMPAT_TEI_PREDICT;
    default: return SRV_COMPAT_TEI_TOKENIZE;
    }
}

static int compat_parse(srv_req *r, srv_api_error *e)
{
    srv_compat_opts *o = calloc(1, sizeof *o);
    if (!o)
        return srv_api_error_set(e, 500, "internal", "out of memory");
    if (srv_compat_parse(kind_of(r->ep), r->body, r->body_len, &r->srv->limits, &r->api, o, e)) {
        free(o);
        return -1;
    }
    r->api.ep = r->ep;
    r->task_state = o;
    return 0;
}

static void compat_cleanup(srv_req *r)
{
    srv_free_texts(r);
    srv_compat_opts_free(r->task_state);
    free(r->task_state);
    r->task_state = NULL;
}

/* The model behind a compatible route: the embed models serve the embedding
 * routes, the sentiment / classify models /predict. */
static srv_model *find_model(srv_req *r, srv_endpoint base)
{
    srv_api_error e;
    srv_model *m = srv_models_find(r->srv, base, r->api.model, &e);
    if (!m)
        srv_req_error(r, e.status, e.code, "%s", e.message);
    return m;
}

static srv_model *embed_resolve(srv_req *r)
{
    return find_model(r, SRV_EP_EMBED);
}

static srv_model *predict_resolve(srv_req *r)
{
    return find_model(r, SRV_EP_CLASSIFY);
}

/* Tokenize every text (and pair) to the model's length; a text that does not
 * fit is refused unless the request allows truncation (TEI "truncate"). */
static int compat_encode(srv_req *r, eng_model *m)
{
    srv_compat_opts *o = opts_of(r);
    const eng_model_info *info = eng_model_get_info(m);
    if (o->kind == SRV_COMPAT_OPENAI_EMBED && o->dimensions && o->dimensions != info->hidden) {
        srv_req_error(r, 422, "invalid_field",
                      "dimensions: model %s gives %d-dimensional embeddings only",
                      r->model->conf->name, info->hidden);
        return -1;
    }
    if (o->kind == SRV_COMPAT_TEI_EMBED && !o->normalize && info->normalize) {
        srv_req_error(r, 422, "invalid_field",
                      "normalize: model %s always gives L2-normalised embeddings (its folder "
                      "ends in a Normalize module)", r->model->conf->name);
        return -1;
    }
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    r->enc = calloc((size_t)r->api.n, sizeof *r->enc);
    if (!r->enc) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    r->n_enc = r->api.n;
    for (int i = 0; i < r->n_enc; i++)
        eng_encoding_init(&r->enc[i]);
    const char *field = o->kind == SRV_COMPAT_OPENAI_EMBED ? "input" : "inputs";
    for (int i = 0; i < r->n_enc; i++) {
        eng_error e = {0};
        const char *pair = o->pairs ? o->pairs[i] : NULL;
        size_t pair_len = o->pair_lens ? o->pair_lens[i] : 0;
        char what[40];
        snprintf(what, sizeof what, r->api.list ? "%s[%d]" : "%s", field, i);
        if (eng_tokenizer_encode(tok, r->api.texts[i], r->api.text_lens[i], pair, pair_len,
                                 info->max_seq_len, &r->enc[i], &e)) {
            srv_req_engine_error(r, &e, what);
            return -1;
        }
        if (r->enc[i].truncated > 0 && !o->truncate) {
            if (o->kind == SRV_COMPAT_OPENAI_EMBED)
                srv_req_error(r, 422, "context_length_exceeded",
                              "%s is %d tokens, model %s takes at most %d", what,
                              r->enc[i].n + r->enc[i].truncated, r->model->conf->name,
                              info->max_seq_len);
            else
                srv_req_error(r, 413, "too_many_tokens",
                              "%s is %d tokens, model %s takes at most %d (send \"truncate\": "
                              "true to cut it)", what, r->enc[i].n + r->enc[i].truncated,
                              r->model->conf->name, info->max_seq_len);
            return -1;
        }
    }
    return 0;
}

static int respond_buf(srv_req *r, srv_buf *b)
{
    if (srv_buf_failed(b)) {
        srv_buf_free(b);
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    size_t len = 0;
    char *body = srv_buf_take(b, &len);
    if (!body) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    srv_req_respond(r, 200, body, len, NULL);
    return 0;
}

/* Row i of the embeddings, L2-normalised into tmp when the request asks for
 * it and the model does not already. */
static const float *embedding_row(srv_req *r, int i, size_t dim, float *tmp)
{
    const float *v = (const float *)r->job.out + (size_t)i * dim;
    srv_compat_opts *o = opts_of(r);
    if (o->kind != SRV_COMPAT_TEI_EMBED || !o->normalize || r->ver->info->normalize)
        return v;
    double ss = 0;
    for (size_t k = 0; k < dim; k++)
        ss += (double)v[k] * v[k];
    double inv = ss > 0 ? 1.0 / sqrt(ss) : 0;
    for (size_t k = 0; k < dim; k++)
        tmp[k] = (float)(v[k] * inv);
    return tmp;
}

static void put_floats(srv_buf *b, const float *v, size_t n)
{
    srv_buf_puts(b, "[");
    for (size_t k = 0; k < n; k++) {
        if (k)
            srv_buf_put(b, ",", 1);
        srv_buf_json_float(b, v[k]);
    }
    srv_buf_puts(b, "]");
}

/* OpenAI: base64 of the little-endian float32 bytes. */
static int put_base64(srv_buf *b, const float *v, size_t n)
{
    unsigned char *bytes = malloc(n * 4 + 1);
    size_t cap = (n * 4 + 2) / 3 * 4 + 1;
    char *s = malloc(cap);
    if (!bytes || !s) {
        free(bytes);
        free(s);
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        bytes[4 * k] = (unsigned char)u;
        bytes[4 * k + 1] = (unsigned char)(u >> 8);
        bytes[4 * k + 2] = (unsigned char)(u >> 16);
        bytes[4 * k + 3] = (unsigned char)(u >> 24);
    }
    size_t len = srv_base64_encode(bytes, n * 4, s, cap);
    srv_buf_put(b, "\"", 1);
    srv_buf_put(b, s, len);
    srv_buf_put(b, "\"", 1);
    free(bytes);
    free(s);
    return 0;
}

static void embed_render(srv_req *r)
{
    srv_compat_opts *o = opts_of(r);
    size_t dim = r->job.out_len / (size_t)r->api.n;
    float *tmp = malloc((dim ? dim : 1) * sizeof *tmp);
    if (!tmp) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    srv_buf b;
    srv_buf_init(&b);
    const char *name = r->model->conf->name;
    if (o->kind == SRV_COMPAT_OPENAI_EMBED)
        srv_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    else
        srv_buf_puts(&b, "[");
    long tokens = 0;
    for (int i = 0; i < r->api.n; i++) {
        const float *v = embedding_row(r, i, dim, tmp);
        tokens += r->enc[i].n;
        if (i)
            srv_buf_puts(&b, ",");
        if (o->kind != SRV_COMPAT_OPENAI_EMBED) {
            put_floats(&b, v, dim);
            continue;
        }
        srv_buf_printf(&b, "{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i);
        if (o->base64) {
            if (put_base64(&b, v, dim)) {
                free(tmp);
                srv_buf_free(&b);
                srv_req_error(r, 500, "internal", "out of memory");
                return;
            }
        } else {
            put_floats(&b, v, dim);
        }
        srv_buf_puts(&b, "}");
    }
    free(tmp);
    if (o->kind == SRV_COMPAT_OPENAI_EMBED) {
        srv_buf_puts(&b, "],\"model\":");
        srv_buf_json_str(&b, name, strlen(name));
        srv_buf_puts(&b, ",\"version\":");
        srv_buf_json_str(&b, r->version, strlen(r->version));
        srv_buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}\n", tokens,
                       tokens);
    } else {
        srv_buf_puts(&b, "]\n");
    }
    respond_buf(r, &b);
}

/* ---------------------------------------------------------------- /predict */

/* The job: per sequence [probabilities | logits], 2 * num_labels floats. */
static int predict_run(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
                       const eng_encoding *const *enc, int seqs, srv_scratch *sc, eng_error *err)
{
    size_t nl = (size_t)eng_model_get_info(m)->num_labels, rows = nl * (size_t)seqs;
    float *all = srv_scratch_get(sc, 4 * rows * sizeof(float));
    if (!all)
        return srv_jobs_oom(jobs, 0, err);
    float *probs = all, *logits = all + rows, *out = all + 2 * rows;
    int rc = eng_run_classify(ctx, m, enc, seqs, probs, logits, err);
    if (rc)
        return rc;
    for (int s = 0; s < seqs; s++) {
        memcpy(out + (size_t)s * 2 * nl, probs + (size_t)s * nl, nl * sizeof *out);
        memcpy(out + (size_t)s * 2 * nl + nl, logits + (size_t)s * nl, nl * sizeof *out);
    }
    return srv_jobs_take_rows(jobs, n, out, 2 * nl, err);
}

const srv_job_type srv_job_predict = {
    .name = "predict", .task = ENG_TASK_CLASSIFY, .run = predict_run};

static void predict_render(srv_req *r)
{
    srv_compat_opts *o = opts_of(r);
    const eng_model_info *info = r->ver->info;
    int nl = (int)(r->job.out_len / (size_t)r->api.n / 2);
    int *idx = malloc((size_t)(nl > 0 ? nl : 1) * sizeof *idx);
    if (nl < 1 || nl > info->num_labels || !idx) {
        free(idx);
        srv_req_error(r, 500, "internal", "cannot render the result");
        return;
    }
    srv_buf b;
    srv_buf_init(&b);
    if (o->batch)
        srv_buf_puts(&b, "[");
    for (int i = 0; i < r->api.n; i++) {
        const float *row = (const float *)r->job.out + (size_t)i * 2 * (size_t)nl;
        const float *p = o->raw_scores ? row + nl : row;
        /* All labels, highest score first (ties: lower index first). */
        for (int k = 0; k < nl; k++)
            idx[k] = k;
        for (int a = 1; a < nl; a++) {
            int v = idx[a], c = a;
            while (c > 0 && p[idx[c - 1]] < p[v]) {
                idx[c] = idx[c - 1];
                c--;
            }
            idx[c] = v;
        }
        srv_buf_puts(&b, i ? ",[" : "[");
        for (int k = 0; k < nl; k++) {
            const char *l = info->labels && info->labels[idx[k]] ? info->labels[idx[k]] : "";
            srv_buf_puts(&b, k ? ",{\"score\":" : "{\"score\":");
            srv_buf_json_float(&b, p[idx[k]]);
            srv_buf_puts(&b, ",\"label\":");
            srv_buf_json_str(&b, l, strlen(l));
            srv_buf_puts(&b, "}");
        }
        srv_buf_puts(&b, "]");
    }
    free(idx);
    srv_buf_puts(&b, o->batch ? "]\n" : "\n");
    respond_buf(r, &b);
}

const srv_infer_ops srv_openai_embed_ops = {
    .job_type = &srv_job_embed,
    .parse = compat_parse,
    .resolve = embed_resolve,
    .encode = compat_encode,
    .cleanup = compat_cleanup,
    .render = embed_render,
};

const srv_infer_ops srv_tei_embed_ops = {
    .job_type = &srv_job_embed,
    .parse = compat_parse,
    .resolve = embed_resolve,
    .encode = compat_encode,
    .cleanup = compat_cleanup,
    .render = embed_render,
};

const srv_infer_ops srv_tei_predict_ops = {
    .job_type = &srv_job_predict,
    .parse = compat_parse,
    .resolve = predict_resolve,
    .encode = compat_encode,
    .cleanup = compat_cleanup,
    .render = predict_render,
};

/* --------------------------------------------------------------- /tokenize */

/* The tokenizer of the first embed model, else of the first sequence
 * classifier (every WordPiece model shares the format). */
static int tokenize_prepare(srv_req *r)
{
    srv_api_error e;
    srv_compat_opts *o = calloc(1, sizeof *o);
    int rc = o ? srv_compat_parse(SRV_COMPAT_TEI_TOKENIZE, r->body, r->body_len,
                                  &r->srv->limits, &r->api, o, &e)
               : srv_api_error_set(&e, 500, "internal", "out of memory");
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    if (rc) {
        free(o);
        srv_req_error(r, e.status, e.code, "%s", e.message);
        return -1;
    }
    r->task_state = o;
    srv_model *m = srv_models_find(r->srv, SRV_EP_EMBED, NULL, &e);
    if (!m)
        m = srv_models_find(r->srv, SRV_EP_CLASSIFY, NULL, &e);
    if (!m) {
        srv_req_error(r, 404, "model_not_found",
                      "no embed or classification model is configured to tokenize with");
        return -1;
    }
    r->model = m;
    r->model_index = m->index;
    if (!(r->ver = srv_model_slot_acquire(m->slot))) {
        r->retry_after = 1;
        srv_req_error(r, 503, "not_ready", "model %s has no version loaded", m->conf->name);
        return -1;
    }
    snprintf(r->version, sizeof r->version, "%s", r->ver->name);
    const eng_tokenizer *tok = eng_model_tokenizer(r->ver->model);
    int max_len = r->ver->info->max_seq_len;
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "[");
    for (int i = 0; i < r->api.n; i++) {
        eng_encoding enc;
        eng_encoding_init(&enc);
        eng_error ee = {0};
        const char *t = r->api.texts[i];
        size_t tl = r->api.text_lens[i];
        char what[32];
        snprintf(what, sizeof what, r->api.list ? "inputs[%d]" : "inputs", i);
        int erc = o->add_special_tokens
                      ? eng_tokenizer_encode(tok, t, tl, NULL, 0, max_len, &enc, &ee)
                      : eng_tokenizer_encode_raw(tok, t, tl, &enc, &ee);
        if (erc || enc.truncated > 0) {
            if (erc)
                srv_req_engine_error(r, &ee, what);
            else
                srv_req_error(r, 413, "too_many_tokens",
                              "%s is %d tokens, model %s takes at most %d", what,
                              enc.n + enc.truncated, m->conf->name, max_len);
            eng_encoding_free(&enc);
            srv_buf_free(&b);
            return -1;
        }
        int32_t cls = eng_tokenizer_cls_id(tok), sep = eng_tokenizer_sep_id(tok),
                pad = eng_tokenizer_pad_id(tok);
        srv_buf_puts(&b, i ? ",[" : "[");
        for (int k = 0; k < enc.n; k++) {
            int32_t id = enc.ids[k];
            int32_t s = enc.offsets[2 * k], en = enc.offsets[2 * k + 1];
            int special = o->add_special_tokens && (id == cls || id == sep || id == pad);
            int span = !special && s >= 0 && en >= s && (size_t)en <= tl;
            srv_buf_printf(&b, "%s{\"id\":%d,\"text\":", k ? "," : "", (int)id);
            if (span) {
                srv_buf_json_str(&b, t + s, (size_t)(en - s));
                srv_buf_printf(&b, ",\"special\":false,\"start\":%d,\"stop\":%d}", (int)s, (int)en);
            } else {
                const char *piece = eng_tokenizer_id_token(tok, id);
                srv_buf_json_str(&b, piece ? piece : "", piece ? strlen(piece) : 0);
                srv_buf_printf(&b, ",\"special\":%s,\"start\":null,\"stop\":null}",
                               special ? "true" : "false");
            }
        }
        srv_buf_puts(&b, "]");
        eng_encoding_free(&enc);
    }
    srv_buf_puts(&b, "]\n");
    return respond_buf(r, &b);
}

static void tokenize_cleanup(srv_req *r)
{
    srv_compat_opts_free(r->task_state);
    free(r->task_state);
    r->task_state = NULL;
    srv_req_free_parts(r);
}

const srv_handler srv_tei_tokenize_handler = {
    .prepare = tokenize_prepare,
    .cleanup = tokenize_cleanup,
};
