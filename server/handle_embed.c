/* handle_embed.c - POST /v1/embed: mean-pooled (normalised when the model
 * folder says so) sentence embeddings. */
#include <stdio.h>

#include "handlers.h"

static int embed_render(srv_req *r, srv_buf *b, int i, const eng_model_info *info,
                        const eng_tokenizer *tok)
{
    (void)info, (void)tok;
    size_t dim = r->job.out_len / (size_t)r->api.n;
    const float *v = (const float *)r->job.out + (size_t)i * dim;
    srv_buf_puts(b, "{\"embedding\":[");
    for (size_t k = 0; k < dim; k++) {
        if (k)
            srv_buf_put(b, ",", 1);
        srv_buf_json_float(b, v[k]);
    }
    srv_buf_puts(b, "]");
    if (r->enc[i].truncated > 0)
        srv_buf_puts(b, ",\"truncated\":true");
    srv_buf_puts(b, "}");
    return srv_buf_failed(b) ? -1 : 0;
}

/* The job: embeddings [n, hidden] per job. */
static int embed_run(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
                     const eng_encoding *const *enc, int seqs, srv_scratch *sc, eng_error *err)
{
    size_t per = (size_t)eng_model_get_info(m)->hidden;
    float *all = srv_scratch_get(sc, per * (size_t)seqs * sizeof(float));
    if (!all)
        return srv_jobs_oom(jobs, 0, err);
    int rc = eng_run_embed(ctx, m, enc, seqs, all, err);
    return rc ? rc : srv_jobs_take_rows(jobs, n, all, per, err);
}

const srv_job_type srv_job_embed = {.name = "embed", .task = ENG_TASK_EMBED, .run = embed_run};

const srv_infer_ops srv_embed_ops = {
    .job_type = &srv_job_embed,
    .encode = srv_encode_texts,
    .render_one = embed_render,
    .cleanup = srv_free_texts,
};
