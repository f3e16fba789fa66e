/* handle_classify.c - POST /v1/sentiment and /v1/classify over a
 * *ForSequenceClassification model (softmax, or sigmoid when multi-label). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feedback.h"
#include "handlers.h"

static const char *label_name(const eng_model_info *info, int k)
{
    return info->labels && info->labels[k] ? info->labels[k] : "";
}

static void put_label(srv_buf *b, const eng_model_info *info, int k)
{
    const char *l = label_name(info, k);
    srv_buf_json_str(b, l, strlen(l));
}

/* Row i of the probabilities, and its width. */
static const float *row(const srv_req *r, int i, int *nl)
{
    *nl = (int)(r->job.out_len / (size_t)r->api.n);
    const float *out = r->job.out;
    return out + (size_t)i * (size_t)*nl;
}

static int best_of(const float *p, int n)
{
    int best = 0;
    for (int k = 1; k < n; k++)
        if (p[k] > p[best])
            best = k;
    return best;
}

static void put_truncated(srv_buf *b, const srv_req *r, int i)
{
    if (r->enc[i].truncated > 0)
        srv_buf_puts(b, ",\"truncated\":true");
}

static int sentiment_render(srv_req *r, srv_buf *b, int i, const eng_model_info *info,
                            const eng_tokenizer *tok)
{
    (void)tok;
    int nl;
    const float *p = row(r, i, &nl);
    if (nl < 1 || nl > info->num_labels)
        return -1;
    int best = best_of(p, nl);
    srv_buf_puts(b, "{\"label\":");
    put_label(b, info, best);
    srv_buf_puts(b, ",\"score\":");
    srv_buf_json_float(b, p[best]);
    srv_buf_puts(b, ",\"scores\":{");
    for (int k = 0; k < nl; k++) {
        if (k)
            srv_buf_put(b, ",", 1);
        put_label(b, info, k);
        srv_buf_put(b, ":", 1);
        srv_buf_json_float(b, p[k]);
    }
    srv_buf_puts(b, "}");
    put_truncated(b, r, i);
    srv_buf_puts(b, "}");
    return srv_buf_failed(b) ? -1 : 0;
}


/* Indices sorted by probability, highest first (ties: lower index first).
 * Insertion sort: label counts are small and this keeps it reentrant. */
static void sort_desc(const float *p, int *idx, int n)
{
    for (int k = 0; k < n; k++)
        idx[k] = k;
    for (int a = 1; a < n; a++) {
        int v = idx[a], c = a;
        while (c > 0 && p[idx[c - 1]] < p[v]) {
            idx[c] = idx[c - 1];
            c--;
        }
        idx[c] = v;
    }
}

static int classify_render(srv_req *r, srv_buf *b, int i, const eng_model_info *info,
                           const eng_tokenizer *tok)
{
    (void)tok;
    int nl;
    const float *p = row(r, i, &nl);
    if (nl < 1 || nl > info->num_labels)
        return -1;
    int *idx = malloc((size_t)nl * sizeof *idx);
    if (!idx)
        return -1;
    sort_desc(p, idx, nl);
    int k_max = r->api.top_k > 0 && r->api.top_k < nl ? r->api.top_k : nl;
    double th = r->api.threshold >= 0 ? r->api.threshold : 0.5;
    srv_buf_puts(b, "{\"label\":");
    put_label(b, info, idx[0]);
    srv_buf_puts(b, ",\"score\":");
    srv_buf_json_float(b, p[idx[0]]);
    srv_buf_puts(b, ",\"labels\":[");
    for (int k = 0, shown = 0; k < k_max; k++) {
        /* Multi-label: every label at or over the threshold (then top_k). */
        if (info->multi_label && p[idx[k]] < th)
            break;
        if (shown++)
            srv_buf_put(b, ",", 1);
        srv_buf_puts(b, "{\"label\":");
        put_label(b, info, idx[k]);
        srv_buf_puts(b, ",\"score\":");
        srv_buf_json_float(b, p[idx[k]]);
        srv_buf_puts(b, "}");
    }
    srv_buf_puts(b, "]");
    put_truncated(b, r, i);
    srv_buf_puts(b, "}");
    free(idx);
    return srv_buf_failed(b) ? -1 : 0;
}

/* The job: probabilities [n, num_labels] (softmax or sigmoid) per job. */
static int classify_run(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
                        const eng_encoding *const *enc, int seqs, srv_scratch *sc, eng_error *err)
{
    size_t per = (size_t)eng_model_get_info(m)->num_labels;
    float *all = srv_scratch_get(sc, per * (size_t)seqs * sizeof(float));
    if (!all)
        return srv_jobs_oom(jobs, 0, err);
    int rc = eng_run_classify(ctx, m, enc, seqs, all, NULL, err);
    return rc ? rc : srv_jobs_take_rows(jobs, n, all, per, err);
}

const srv_job_type srv_job_classify = {
    .name = "classify", .task = ENG_TASK_CLASSIFY, .run = classify_run};

const srv_infer_ops srv_sentiment_ops = {
    .job_type = &srv_job_classify,
    .encode = srv_encode_texts,
    .render_one = sentiment_render,
    .cleanup = srv_free_texts,
    .rendered = srv_feedback_remember,
};

const srv_infer_ops srv_classify_ops = {
    .job_type = &srv_job_classify,
    .encode = srv_encode_texts,
    .render_one = classify_render,
    .cleanup = srv_free_texts,
    .rendered = srv_feedback_remember,
};
