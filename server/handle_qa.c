/* handle_qa.c - POST /v1/qa: extractive question answering. Each (question,
 * context) item becomes overlapping windows (eng_qa_windows_make); all
 * windows of a request run as one job; answers are decoded per item from its
 * slice of the packed logits and reported with code-point offsets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

typedef struct qa_state {
    eng_qa_windows *win;    /* per item */
    size_t *tok_off;        /* per item: offset of its first window's logits */
    size_t total_tokens;
    int n_items;
    eng_qa_opts opts;
} qa_state;

static void qa_cleanup(srv_req *r)
{
    qa_state *st = r->task_state;
    if (st) {
        for (int i = 0; st->win && i < st->n_items; i++)
            eng_qa_windows_free(&st->win[i]);
        free(st->win);
        free(st->tok_off);
        free(st);
        r->task_state = NULL;
    }
    free(r->enc); /* shallow copies of the windows' encodings */
    r->enc = NULL;
    r->n_enc = 0;
}

/* The least working memory a window token costs in qa_cost: its activations and
 * logits (each window's attention scores come on top). */
static int64_t qa_token_bytes(const eng_model_info *info)
{
    int64_t hidden = info->hidden > 0 ? info->hidden : 1;
    return hidden * 4 * 16 + 2 * 4;
}

long srv_qa_max_request_tokens(const eng_model_info *info, int max_job_mib)
{
    return (long)(((int64_t)max_job_mib << 20) / qa_token_bytes(info));
}

static int qa_encode(srv_req *r, eng_model *m)
{
    const eng_model_info *info = eng_model_get_info(m);
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    qa_state *st = calloc(1, sizeof *st);
    if (!st)
        goto oom;
    r->task_state = st;
    st->n_items = r->api.n;
    st->win = calloc((size_t)st->n_items, sizeof *st->win);
    st->tok_off = calloc((size_t)st->n_items, sizeof *st->tok_off);
    if (!st->win || !st->tok_off)
        goto oom;
    eng_qa_opts_for_model(info, &st->opts);
    if (r->api.top_k > 0)
        st->opts.top_k = r->api.top_k;
    if (r->api.max_answer_length > 0)
        st->opts.max_answer_len = r->api.max_answer_length;
    st->opts.handle_impossible_answer = r->api.handle_impossible_answer;

    /* The request's windows, all items together, get the tokens that max_job_mib
     * allows: each item's windows are refused before they are built once they would
     * go over what the items before it left (submit's estimate, which adds the
     * attention scores, would refuse them anyway, but only after all were built). */
    const long budget = srv_qa_max_request_tokens(info, r->model->conf->max_job_mib);
    long left = budget;
    int total = 0;
    for (int i = 0; i < st->n_items; i++) {
        const srv_qa_item *it = &r->api.items[i];
        eng_error e = {0};
        st->opts.max_tokens = left > 0 ? left : 1; /* 0 would mean the engine's default */
        if (eng_qa_windows_make(tok, it->question, it->question_len, it->context, it->context_len,
                                &st->opts, &st->win[i], &e)) {
            char what[192];
            int k = snprintf(what, sizeof what, r->api.list ? "items[%d]" : "question/context", i);
            if (e.code == ENG_ETOOLONG && st->win[i].tokens > 0)
                snprintf(what + k, sizeof what - (size_t)k,
                         " (model %s allows a request's windows %ld tokens in all under "
                         "batching.max_job_mib; %ld are left)",
                         r->model->conf->name, budget, left);
            srv_req_engine_error(r, &e, what);
            return -1;
        }
        total += st->win[i].n;
        left -= st->win[i].tokens;
    }
    r->enc = calloc(total ? (size_t)total : 1, sizeof *r->enc);
    if (!r->enc)
        goto oom;
    int k = 0;
    for (int i = 0; i < st->n_items; i++) {
        st->tok_off[i] = st->total_tokens;
        for (int w = 0; w < st->win[i].n; w++) {
            r->enc[k++] = st->win[i].win[w];
            st->total_tokens += (size_t)st->win[i].win[w].n;
        }
    }
    r->n_enc = total;
    return 0;
oom:
    srv_req_error(r, 500, "internal", "out of memory");
    return -1;
}

static void put_answer(srv_buf *b, const srv_qa_item *it, const eng_qa_answer *a)
{
    size_t s = a->start > 0 ? (size_t)a->start : 0, e = a->end > 0 ? (size_t)a->end : 0;
    if (e > it->context_len)
        e = it->context_len;
    if (s > e)
        s = e;
    srv_buf_puts(b, "\"answer\":");
    srv_buf_json_str(b, it->context + s, e - s);
    srv_buf_puts(b, ",\"score\":");
    srv_buf_json_float(b, a->score);
    srv_buf_printf(b, ",\"start\":%zu,\"end\":%zu", srv_utf8_cp_offset(it->context, it->context_len, s),
                   srv_utf8_cp_offset(it->context, it->context_len, e));
}

static int qa_render(srv_req *r, srv_buf *b, int i, const eng_model_info *info,
                     const eng_tokenizer *tok)
{
    (void)info;
    qa_state *st = r->task_state;
    if (!st || r->job.out_len < 2 * st->total_tokens)
        return -1;
    const float *start = r->job.out, *end = start + st->total_tokens;
    eng_qa_answer *ans = calloc((size_t)st->opts.top_k, sizeof *ans);
    int n = 0;
    if (!ans || eng_qa_decode(tok, &st->win[i], start + st->tok_off[i], end + st->tok_off[i],
                              &st->opts, ans, &n)) {
        free(ans);
        return -1;
    }
    const srv_qa_item *it = &r->api.items[i];
    eng_qa_answer none = {0};
    srv_buf_puts(b, "{");
    put_answer(b, it, n > 0 ? &ans[0] : &none);
    srv_buf_puts(b, ",\"answers\":[");
    for (int k = 0; k < n; k++) {
        srv_buf_puts(b, k ? ",{" : "{");
        put_answer(b, it, &ans[k]);
        srv_buf_puts(b, "}");
    }
    srv_buf_puts(b, "]}");
    free(ans);
    return srv_buf_failed(b) ? -1 : 0;
}

/* The job: start logits then end logits, each packed over the job's windows
 * (2 x its tokens). */
static int qa_run(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
                  const eng_encoding *const *enc, int seqs, srv_scratch *sc, eng_error *err)
{
    size_t ntok = 0;
    for (int s = 0; s < seqs; s++)
        ntok += (size_t)enc[s]->n;
    float *all = srv_scratch_get(sc, 2 * ntok * sizeof(float));
    if (!all)
        return srv_jobs_oom(jobs, 0, err);
    /* Windows in chunks, the deadline checked between them: a long request
     * stops once every job in the batch is past its deadline. (Each window
     * is computed independently: chunking does not change results.) */
    enum { CHUNK = 64 };
    size_t done_tok = 0;
    for (int s0 = 0; s0 < seqs; s0 += CHUNK) {
        int cn = seqs - s0 < CHUNK ? seqs - s0 : CHUNK;
        if (s0 > 0 && srv_jobs_late(jobs, n))
            return SRV_EDEADLINE;
        int rc = eng_run_qa_logits(ctx, m, enc + s0, cn, all + done_tok, all + ntok + done_tok,
                                   err);
        if (rc)
            return rc;
        for (int s = s0; s < s0 + cn; s++)
            done_tok += (size_t)enc[s]->n;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        srv_job *j = jobs[i];
        size_t jtok = 0;
        for (int s = 0; s < j->n; s++)
            jtok += (size_t)j->enc[s].n;
        float *out = malloc((jtok ? 2 * jtok : 1) * sizeof *out);
        if (!out)
            return srv_jobs_oom(jobs, i, err);
        memcpy(out, all + off, jtok * sizeof *out);
        memcpy(out + jtok, all + ntok + off, jtok * sizeof *out);
        j->out = out;
        j->out_len = 2 * jtok;
        off += jtok;
    }
    return 0;
}

/* Working memory of the windows as one forward pass: per token a few hidden-
 * sized activations (fp32) and the two logits, per window its attention
 * scores (heads x n x n). Bounded by batching.max_job_mib at submit, so a
 * request whose windows multiply (a long question leaves a short stride) is
 * refused before compute. */
static void qa_cost(const srv_job *j, srv_job_cost *c)
{
    const eng_model_info *info = eng_model_get_info(j->model);
    int64_t heads = info->heads > 0 ? info->heads : 1;
    c->bytes = 0;
    for (int i = 0; i < j->n; i++) {
        int64_t n = j->enc[i].n;
        c->bytes += n * qa_token_bytes(info) + heads * n * n * 4;
    }
}

const srv_job_type srv_job_qa = {.name = "qa", .task = ENG_TASK_QA, .run = qa_run,
                                 .cost = qa_cost};

const srv_infer_ops srv_qa_ops = {
    .job_type = &srv_job_qa,
    .encode = qa_encode,
    .render_one = qa_render,
    .cleanup = qa_cleanup,
};
