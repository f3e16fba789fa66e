/* handlers.h - per-endpoint steps of the inference pipeline (handle_*.c),
 * driven by handle_infer.c. encode and render run on libuv pool threads. */
#ifndef NLPD_SRV_HANDLERS_H
#define NLPD_SRV_HANDLERS_H

#include "buf.h"
#include "server.h"

typedef struct srv_infer_ops {
    const srv_job_type *job_type;
    /* Optional (NULL: srv_api_parse for r->ep): parse r->body into r->api
     * (and r->task_state, freed by cleanup). 0, or -1 with e set. */
    int (*parse)(srv_req *r, srv_api_error *e);
    /* Optional (NULL: srv_models_find by r->api.model): pick r's model and,
     * unless r->ver is already set (warm-up), take its current version into
     * r->ver. NULL with r's error response set. */
    srv_model *(*resolve)(srv_req *r);
    /* Tokenize r->api with model m into r->enc / r->n_enc (and r->task_state).
     * 0, or -1 with r's error response set. */
    int (*encode)(srv_req *r, eng_model *m);
    /* Append the JSON object for input i (text or QA item) to b, from
     * r->job.out; info/tok: r's version. 0 or -1.
     * Unused (may be NULL) when render is set. */
    int (*render_one)(srv_req *r, srv_buf *b, int i, const eng_model_info *info,
                      const eng_tokenizer *tok);
    /* Free r->enc and r->task_state (idempotent). */
    void (*cleanup)(srv_req *r);
    /* Optional, loop thread: set kind-specific job fields (after the common
     * ones, before submit). */
    void (*setup_job)(srv_req *r, srv_job *j);
    /* Optional, pool thread: render the whole response (r's response or error)
     * instead of the common {"model", "version", "result(s)"} with render_one. */
    void (*render)(srv_req *r);
    /* Optional, pool thread: r (not a warm-up) was answered 200, r->api still
     * held (the feedback store remembers its texts). */
    void (*rendered)(srv_req *r);
} srv_infer_ops;

extern const srv_infer_ops srv_embed_ops;
extern const srv_infer_ops srv_sentiment_ops;
extern const srv_infer_ops srv_classify_ops;
extern const srv_infer_ops srv_qa_ops;
extern const srv_infer_ops srv_translate_ops;
/* handle_compat.c: OpenAI /v1/embeddings, TEI /embed and /predict. */
extern const srv_infer_ops srv_openai_embed_ops;
extern const srv_infer_ops srv_tei_embed_ops;
extern const srv_infer_ops srv_tei_predict_ops;
/* TEI /tokenize: the tokenizer only (no batch); answers in prepare. */
extern const srv_handler srv_tei_tokenize_handler;
/* GET /openapi.json (handle_openapi.c). */
void srv_handle_openapi(srv_req *r, const char *arg);

/* Shared by the text endpoints: one encoding per text, truncated to the
 * model's max_seq_len (enc[i].truncated > 0 then). */
int srv_encode_texts(srv_req *r, eng_model *m);
void srv_free_texts(srv_req *r);

/* Map an engine error on client input to r's error response. */
void srv_req_engine_error(srv_req *r, const eng_error *e, const char *what);

/* For job types with one row of `per` floats per sequence (classify, embed):
 * give each of jobs[0..n) its rows of all (a batch's output, sequences in job
 * order) as out / out_len. 0 or ENG_ENOMEM (then no job keeps output). */
int srv_jobs_take_rows(srv_job *const *jobs, int n, const float *all, size_t per,
                       eng_error *err);

/* Estimated working memory (bytes) and work (tokens: source tokens + decode
 * steps, max_length) of translating one text of src_tokens with beams x
 * max_length on a model of info's size: per beam and decoder layer, fp32 K and
 * V for max_length target positions and for the source (cross-attention),
 * two vocabulary-sized rows per beam (logits, log-probabilities), and a few
 * encoder activations per source token. An upper bound: the search may stop
 * early at EOS. */
void srv_translate_text_cost(const eng_model_info *info, int beams, int max_length,
                             int src_tokens, srv_job_cost *c);

/* Out of memory in a job type's run after jobs[0..k) got their output: free
 * those, fill err; returns ENG_ENOMEM. */
int srv_jobs_oom(srv_job *const *jobs, int k, eng_error *err);

extern const srv_job_type srv_job_classify, srv_job_embed, srv_job_qa, srv_job_translate;
extern const srv_job_type srv_job_predict;

#endif
