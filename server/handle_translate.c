/* handle_translate.c - POST /v1/translate over MarianMTModel folders.
 *
 * The model comes from "model" or from the language pair
 * (srv_models_find_translate); an unknown pair is a 404 that lists the pairs
 * served. On a pool thread each text is encoded (the pair's >>xx<< token
 * prepended, as a user would write it; truncated at the model's maximum),
 * then all texts run as one translate job whose search options are
 * resolved here (explicit beam_size and max_length, so equal searches share a
 * batch); rendering, also on a pool thread, detokenises the ids. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

typedef struct tr_state {
    const srv_lang_pair *pair; /* in r->ver (which the request holds) */
    eng_translate_opts opts;
} tr_state;

/* ------------------------------------------------------------------ the job */

static int opts_equal(const eng_translate_opts *a, const eng_translate_opts *b)
{
    int lp_same = isnan(a->length_penalty) ? isnan(b->length_penalty)
                                           : a->length_penalty == b->length_penalty;
    return a->beam_size == b->beam_size && a->max_length == b->max_length &&
           a->max_new_tokens == b->max_new_tokens && a->max_input_tokens == b->max_input_tokens &&
           lp_same;
}

/* One eng_translate_ids call runs one search: only equal options share a batch. */
static int tr_batchable(const srv_job *a, const srv_job *b)
{
    return opts_equal(a->opts, b->opts);
}

typedef struct tr_batch {
    srv_job *const *jobs;
    int n;
} tr_batch;

static int tr_late(void *arg)
{
    const tr_batch *tb = arg;
    return srv_jobs_late(tb->jobs, tb->n);
}

/* The job: n eng_translation results in text order (ids, score; text NULL). */
static int tr_run(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
                  const eng_encoding *const *enc, int seqs, srv_scratch *sc, eng_error *err)
{
    eng_translation *all = srv_scratch_get(sc, (size_t)seqs * sizeof *all);
    if (!all)
        return srv_jobs_oom(jobs, 0, err);
    /* The search stops between decode steps once every job is past its deadline. */
    eng_translate_opts o;
    if (jobs[0]->opts)
        o = *(const eng_translate_opts *)jobs[0]->opts;
    else
        eng_translate_opts_default(&o);
    tr_batch tb = {jobs, n};
    o.should_stop = tr_late;
    o.stop_arg = &tb;
    int rc = eng_translate_ids(ctx, m, enc, seqs, &o, all, err);
    if (rc == ENG_ECANCELLED)
        return SRV_EDEADLINE;
    if (rc)
        return rc;
    /* The results (and their ids) move to the jobs. */
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        srv_job *j = jobs[i];
        eng_translation *out = malloc((size_t)j->n * sizeof *out);
        if (!out) {
            for (size_t k = off; k < (size_t)seqs; k++)
                eng_translation_free(&all[k]);
            return srv_jobs_oom(jobs, i, err);
        }
        memcpy(out, all + off, (size_t)j->n * sizeof *out);
        j->out = out;
        j->out_len = (size_t)j->n;
        off += (size_t)j->n;
    }
    return 0;
}

void srv_translate_text_cost(const eng_model_info *info, int beams, int max_length,
                             int src_tokens, srv_job_cost *c)
{
    int64_t b = beams > 0 ? beams : 1, t = max_length > 0 ? max_length : 1;
    int64_t src = src_tokens > 0 ? src_tokens : 1;
    int64_t layers = info->layers > 0 ? info->layers : 1, hidden = info->hidden > 0 ? info->hidden : 1;
    int64_t vocab = info->vocab > 0 ? info->vocab : 1;
    c->bytes = b * layers * 2 * hidden * (t + src) * 4 + b * vocab * 4 * 2 + src * hidden * 4 * 4;
    c->tokens = src + t; /* decode steps: beams run side by side (their memory is in bytes) */
}

/* The batcher's estimate: the sum over the job's texts at its search options. */
static void tr_cost(const srv_job *j, srv_job_cost *c)
{
    const eng_translate_opts *o = j->opts;
    const eng_model_info *info = eng_model_get_info(j->model);
    c->bytes = c->tokens = 0;
    for (int i = 0; o && i < j->n; i++) {
        srv_job_cost one;
        srv_translate_text_cost(info, o->beam_size, o->max_length, j->enc[i].n, &one);
        c->bytes += one.bytes;
        c->tokens += one.tokens;
    }
}

static void tr_free_out(srv_job *j)
{
    eng_translation *t = j->out;
    for (size_t i = 0; i < j->out_len; i++)
        eng_translation_free(&t[i]);
    free(t);
}

const srv_job_type srv_job_translate = {.name = "translate",
                                        .task = ENG_TASK_TRANSLATE,
                                        .batchable = tr_batchable,
                                        .run = tr_run,
                                        .free_out = tr_free_out,
                                        .cost = tr_cost};

/* ---------------------------------------------------------------- requests */

static void put_pair(srv_buf *b, const srv_lang_pair *p, const char *model)
{
    srv_buf_puts(b, "{\"source\":");
    srv_buf_json_str(b, p->source, strlen(p->source));
    srv_buf_puts(b, ",\"target\":");
    srv_buf_json_str(b, p->target, strlen(p->target));
    srv_buf_puts(b, ",\"model\":");
    srv_buf_json_str(b, model, strlen(model));
    srv_buf_puts(b, "}");
}

/* 404 model_not_found with the pairs served ("supported"; only model's own
 * when the request named a translate model). */
static void not_found(srv_req *r, const srv_api_error *e)
{
    srv_server *s = r->srv;
    const srv_model *only = NULL;
    for (int i = 0; r->api.model && i < s->n_models; i++)
        if (s->models[i].conf->task == SRV_TASK_TRANSLATE &&
            strcmp(s->models[i].conf->name, r->api.model) == 0)
            only = &s->models[i];
    char list[1024] = "";
    size_t used = 0;
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "{\"error\":{\"code\":\"model_not_found\",\"supported\":[");
    int n = 0;
    for (int i = 0; i < s->n_models; i++) {
        const srv_model *m = &s->models[i];
        if ((only && m != only) || m->conf->task != SRV_TASK_TRANSLATE ||
            atomic_load_explicit(&m->status, memory_order_acquire) != SRV_MODEL_READY)
            continue;
        srv_version *v = srv_model_slot_acquire(m->slot);
        for (int k = 0; v && k < v->n_pairs; k++, n++) {
            const srv_lang_pair *p = &v->pairs[k];
            if (n)
                srv_buf_puts(&b, ",");
            put_pair(&b, p, m->conf->name);
            if (used < sizeof list)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s->%s (%s)",
                                         n ? ", " : "", *p->source ? p->source : "?", p->target,
                                         m->conf->name);
        }
        srv_version_unref(v);
    }
    char msg[1400];
    snprintf(msg, sizeof msg, "%s; supported pairs: %s", e->message, n ? list : "none");
    srv_buf_puts(&b, "],\"message\":");
    srv_buf_json_str(&b, msg, strlen(msg));
    srv_buf_puts(&b, "}}\n");
    srv_req_error(r, 404, "model_not_found", "%s", msg); /* code for the log; body below */
    size_t len = 0;
    char *body = srv_buf_take(&b, &len);
    if (body)
        srv_req_respond(r, 404, body, len, NULL);
}

static int min_pos(int a, int b)
{
    return a > 0 && a < b ? a : b;
}

static srv_model *tr_resolve(srv_req *r)
{
    srv_api_error e = {0};
    const srv_lang_pair *pair = NULL;
    srv_model *m;
    if (r->ver) { /* warm-up: the model and its new version are given */
        m = r->model;
        static const srv_lang_pair none = {{0}, {0}, {0}};
        pair = r->ver->n_pairs ? &r->ver->pairs[0] : &none;
    } else {
        m = srv_models_find_translate(r->srv, r->api.model, r->api.source, r->api.target, &r->ver,
                                      &pair, &e);
    }
    if (!m) {
        if (e.status == 404)
            not_found(r, &e);
        else
            srv_req_error(r, e.status, e.code, "%s", e.message);
        return NULL;
    }
    r->model = m; /* errors below name the model */
    r->model_index = m->index;
    const srv_model_conf *c = m->conf;
    if (r->api.beam_size > c->max_beam_size) {
        srv_req_error(r, 422, "invalid_field", "beam_size must be at most %d for model %s",
                      c->max_beam_size, c->name);
        return NULL;
    }
    if (r->api.max_length > c->max_length) {
        srv_req_error(r, 422, "invalid_field", "max_length must be at most %d for model %s",
                      c->max_length, c->name);
        return NULL;
    }
    tr_state *st = calloc(1, sizeof *st);
    if (!st) {
        srv_req_error(r, 500, "internal", "out of memory");
        return NULL;
    }
    r->task_state = st;
    st->pair = pair;
    eng_translate_opts_default(&st->opts);
    /* The model's defaults, capped by the config's maxima like requests are. */
    st->opts.beam_size = r->api.beam_size ? r->api.beam_size
                                          : min_pos(r->ver->tr_info.num_beams, c->max_beam_size);
    st->opts.max_length = r->api.max_length ? r->api.max_length
                                            : min_pos(r->ver->tr_info.max_length, c->max_length);
    /* Refuse before tokenising what the batcher would refuse: the source
     * lengths are bounded by the bytes (plus the >>xx<< token and </s>) and
     * by the model's maximum. */
    if (!r->warmup) {
        int64_t bytes = 0;
        int max_src = r->ver->tr_info.max_input_tokens;
        for (int i = 0; i < r->api.n; i++) {
            size_t len = r->api.text_lens[i] + 3;
            int src = max_src > 0 && len > (size_t)max_src ? max_src : (int)len;
            srv_job_cost one;
            srv_translate_text_cost(r->ver->info, st->opts.beam_size, st->opts.max_length, src,
                                    &one);
            bytes += one.bytes;
        }
        if (bytes > (int64_t)c->max_job_mib << 20) {
            srv_req_error(r, 413, "request_too_large",
                          "%d text(s) x beam_size %d x max_length %d need up to %.0f MiB of "
                          "working memory; model %s allows %d MiB per request "
                          "(batching.max_job_mib): send fewer or shorter texts, or a smaller "
                          "beam_size or max_length", r->api.n, st->opts.beam_size,
                          st->opts.max_length, (double)bytes / 1048576.0, c->name, c->max_job_mib);
            return NULL;
        }
    }
    return m;
}

static int tr_encode(srv_req *r, eng_model *m)
{
    tr_state *st = r->task_state;
    const char *token = st->pair->token;
    size_t tl = strlen(token);
    char *buf = NULL;
    r->enc = calloc((size_t)r->api.n, sizeof *r->enc);
    if (!r->enc)
        goto oom;
    r->n_enc = r->api.n;
    for (int i = 0; i < r->n_enc; i++)
        eng_encoding_init(&r->enc[i]);
    for (int i = 0; i < r->n_enc; i++) {
        const char *t = r->api.texts[i];
        size_t len = r->api.text_lens[i];
        if (tl) { /* ">>xx<< text", as transformers' users write it */
            free(buf);
            if (!(buf = malloc(tl + 1 + len)))
                goto oom;
            memcpy(buf, token, tl);
            buf[tl] = ' ';
            memcpy(buf + tl + 1, t, len);
            t = buf;
            len += tl + 1;
        }
        eng_error e = {0};
        if (eng_translate_encode(m, t, len, 0, &r->enc[i], &e)) {
            char what[32];
            snprintf(what, sizeof what, r->api.list ? "texts[%d]" : "text", i);
            srv_req_engine_error(r, &e, what);
            free(buf);
            return -1;
        }
    }
    free(buf);
    return 0;
oom:
    free(buf);
    srv_req_error(r, 500, "internal", "out of memory");
    return -1;
}

static void tr_setup_job(srv_req *r, srv_job *j)
{
    tr_state *st = r->task_state;
    j->opts = &st->opts;
}

static void put_lang(srv_buf *b, const char *key, const char *pair_code, const char *asked)
{
    const char *v = pair_code && *pair_code ? pair_code : asked;
    if (!v)
        return;
    srv_buf_printf(b, ",\"%s\":", key);
    srv_buf_json_str(b, v, strlen(v));
}

static void tr_render(srv_req *r)
{
    tr_state *st = r->task_state;
    srv_job *j = &r->job;
    eng_model *m = r->ver->model;
    const eng_translation *results = j->out;
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "{\"model\":");
    srv_buf_json_str(&b, r->model->conf->name, strlen(r->model->conf->name));
    srv_buf_puts(&b, ",\"version\":");
    srv_buf_json_str(&b, r->version, strlen(r->version));
    put_lang(&b, "source", st->pair->source, r->api.source);
    put_lang(&b, "target", st->pair->target, r->api.target);
    srv_buf_puts(&b, r->api.list ? ",\"translations\":[" : ",\"translation\":");
    int truncated = 0;
    for (int i = 0; i < r->api.n; i++) {
        const eng_translation *t = &results[i];
        char *text = NULL;
        eng_error e = {0};
        if (eng_translate_decode(m, t->ids, t->n_ids, &text, &e)) {
            srv_buf_free(&b);
            srv_req_engine_error(r, &e, "detokenisation");
            return;
        }
        if (i)
            srv_buf_puts(&b, ",");
        srv_buf_json_str(&b, text, strlen(text));
        free(text);
        truncated += t->truncated > 0;
    }
    if (r->api.list)
        srv_buf_puts(&b, "]");
    /* Over-long inputs were translated from their first tokens: say so. */
    if (truncated) {
        srv_buf_puts(&b, ",\"warnings\":[");
        for (int i = 0, k = 0; i < r->api.n; i++) {
            const eng_translation *t = &results[i];
            if (t->truncated <= 0)
                continue;
            char what[32];
            snprintf(what, sizeof what, r->api.list ? "texts[%d]" : "text", i);
            srv_buf_printf(&b,
                           "%s{\"index\":%d,\"code\":\"truncated\",\"message\":\"%s was "
                           "truncated to its first %d tokens (the model's maximum); %d tokens "
                           "were dropped\"}",
                           k++ ? "," : "", i, what, t->src_tokens, t->truncated);
        }
        srv_buf_puts(&b, "]");
    }
    srv_buf_puts(&b, "}\n");
    size_t len = 0;
    char *body = srv_buf_failed(&b) ? NULL : srv_buf_take(&b, &len);
    if (!body) {
        srv_buf_free(&b);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    srv_req_respond(r, 200, body, len, NULL);
}

static void tr_cleanup(srv_req *r)
{
    srv_free_texts(r);
    free(r->task_state);
    r->task_state = NULL;
}

const srv_infer_ops srv_translate_ops = {
    .job_type = &srv_job_translate,
    .resolve = tr_resolve,
    .encode = tr_encode,
    .cleanup = tr_cleanup,
    .setup_job = tr_setup_job,
    .render = tr_render,
};
