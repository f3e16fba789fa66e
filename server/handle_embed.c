/* handle_embed.c - POST /v1/embed: mean-pooled (normalised when the model
 * folder says so) sentence embeddings. */
#include "handlers.h"

static int embed_render(srv_req *r, srv_buf *b, int i, const eng_model_info *info,
                        const eng_tokenizer *tok)
{
    (void)info, (void)tok;
    size_t dim = r->job.out_len / (size_t)r->api.n;
    const float *v = r->job.out + (size_t)i * dim;
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

const srv_infer_ops srv_embed_ops = {
    .kind = SRV_JOB_EMBED,
    .encode = srv_encode_texts,
    .render_one = embed_render,
    .cleanup = srv_free_texts,
};
