/* handle_infer.c - the inference pipeline shared by the POST endpoints:
 * parse + validate + tokenize (pool) -> submit (loop) -> batcher -> map the
 * job's status (loop) -> render (pool). */
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "log.h"

static const srv_infer_ops *ops_for(srv_endpoint ep)
{
    switch (ep) {
    case SRV_EP_EMBED: return &srv_embed_ops;
    case SRV_EP_SENTIMENT: return &srv_sentiment_ops;
    case SRV_EP_CLASSIFY: return &srv_classify_ops;
    case SRV_EP_QA: return &srv_qa_ops;
    case SRV_EP_TRANSLATE: return &srv_translate_ops;
    default: return NULL;
    }
}

void srv_req_engine_error(srv_req *r, const eng_error *e, const char *what)
{
    int code = e ? e->code : ENG_EINVAL;
    const char *msg = e && e->msg[0] ? e->msg : eng_strerror(code);
    if (code == ENG_EUTF8)
        srv_req_error(r, 422, "invalid_utf8", "%s: %s", what, msg);
    else if (code == ENG_EINVAL || code == ENG_ETOOLONG)
        srv_req_error(r, 422, "invalid_field", "%s: %s", what, msg);
    else
        srv_req_error(r, 500, "internal", "%s: %s", what, msg);
}

int srv_encode_texts(srv_req *r, eng_model *m)
{
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    int max_len = eng_model_get_info(m)->max_seq_len;
    r->enc = calloc((size_t)r->api.n, sizeof *r->enc);
    if (!r->enc) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    r->n_enc = r->api.n;
    for (int i = 0; i < r->n_enc; i++)
        eng_encoding_init(&r->enc[i]);
    for (int i = 0; i < r->n_enc; i++) {
        eng_error e = {0};
        if (eng_tokenizer_encode(tok, r->api.texts[i], r->api.text_lens[i], NULL, 0, max_len,
                                 &r->enc[i], &e)) {
            char what[32];
            snprintf(what, sizeof what, r->api.list ? "texts[%d]" : "text", i);
            srv_req_engine_error(r, &e, what);
            return -1;
        }
    }
    return 0;
}

void srv_free_texts(srv_req *r)
{
    for (int i = 0; r->enc && i < r->n_enc; i++)
        eng_encoding_free(&r->enc[i]);
    free(r->enc);
    r->enc = NULL;
    r->n_enc = 0;
}

int srv_infer_prepare(srv_req *r)
{
    srv_server *s = r->srv;
    srv_api_error e;
    r->ops = ops_for(r->ep);
    if (!r->ops) {
        srv_req_error(r, 404, "not_found", "no such route");
        return -1;
    }
    int rc = srv_api_parse(r->ep, r->body, r->body_len, &s->limits, &r->api, &e);
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    if (rc) {
        srv_req_error(r, e.status, e.code, "%s", e.message);
        return -1;
    }
    srv_model *m = r->ops->resolve ? r->ops->resolve(r) : srv_models_find(s, r->ep, r->api.model, &e);
    if (!m) {
        if (!r->ops->resolve)
            srv_req_error(r, e.status, e.code, "%s", e.message);
        return -1;
    }
    r->model = m;
    r->model_index = m->index;
    if (r->api.timeout_ms > m->conf->max_timeout_ms) {
        srv_req_error(r, 422, "invalid_field", "timeout_ms must be at most %d for model %s",
                      m->conf->max_timeout_ms, m->conf->name);
        return -1;
    }
    /* Tokenize with the version that is current now (hot swap keeps the
     * tokenizer of a model name stable). */
    eng_model *em = srv_model_slot_acquire(m->slot, r->version, sizeof r->version);
    if (!em) {
        srv_req_error(r, 503, "not_ready", "model %s has no version loaded", m->conf->name);
        return -1;
    }
    rc = r->ops->encode(r, em);
    eng_model_unref(em);
    return rc;
}

int srv_infer_submit(srv_req *r, void (*complete)(srv_job *, void *), int (*client_gone)(void *))
{
    srv_job *j = &r->job;
    memset(j, 0, sizeof *j);
    j->kind = r->ops->kind;
    j->n = r->n_enc;
    j->enc = r->enc;
    int timeout = r->api.timeout_ms ? r->api.timeout_ms : r->model->conf->timeout_ms;
    j->deadline_ns = r->t_start + (int64_t)timeout * 1000000;
    j->client_gone = client_gone;
    j->complete = complete;
    j->arg = r;
    if (r->ops->setup_job)
        r->ops->setup_job(r, j);
    int rc = srv_batcher_submit(r->model->batcher, j);
    if (rc == 0)
        return 0;
    if (rc == SRV_EQUEUE_FULL) {
        r->retry_after = 1;
        srv_req_error(r, 429, "queue_full", "model %s has too many queued requests",
                      r->model->conf->name);
    } else if (rc == SRV_ESTOPPED) {
        r->retry_after = 1;
        srv_req_error(r, 503, "draining", "the server is shutting down");
    } else {
        srv_req_error(r, 500, "internal", "cannot queue the request (%d)", rc);
    }
    return -1;
}

int srv_infer_finished(srv_req *r)
{
    srv_job *j = &r->job;
    if (j->started_ns > 0 && j->finished_ns >= j->started_ns)
        srv_metrics_job(r->srv->metrics, r->model_index, j->started_ns - j->enqueued_ns,
                        j->finished_ns - j->started_ns);
    if (j->version[0])
        snprintf(r->version, sizeof r->version, "%s", j->version);
    switch (j->status) {
    case SRV_JOB_OK:
        if (j->out || j->translations)
            return 0;
        srv_req_error(r, 500, "internal", "the model returned no output");
        return -1;
    case SRV_JOB_EXPIRED:
        srv_req_error(r, 504, "deadline_exceeded", "the request waited longer than its %d ms deadline",
                      r->api.timeout_ms ? r->api.timeout_ms : r->model->conf->timeout_ms);
        return -1;
    case SRV_JOB_CANCELLED:
        srv_req_error(r, 499, "cancelled", "the client went away");
        return -1;
    case SRV_JOB_SHUTDOWN:
        r->retry_after = 1;
        srv_req_error(r, 503, "draining", "the server is shutting down");
        return -1;
    case SRV_JOB_FAILED: {
        eng_error e = {.code = j->error_code};
        snprintf(e.msg, sizeof e.msg, "%s", j->error);
        srv_req_engine_error(r, &e, "inference");
        if (r->status >= 500)
            srv_log(SRV_LOG_ERROR, r->rid, "model %s: inference failed: %s", r->model->conf->name,
                    j->error);
        return -1;
    }
    default:
        srv_req_error(r, 500, "internal", "job ended in state %d", (int)j->status);
        return -1;
    }
}

void srv_infer_render(srv_req *r)
{
    if (r->ops->render) {
        r->ops->render(r);
        return;
    }
    srv_job *j = &r->job;
    eng_model *m = j->model;
    const eng_model_info *info = m ? eng_model_get_info(m) : r->model->info;
    const eng_tokenizer *tok = m ? eng_model_tokenizer(m) : eng_model_tokenizer(r->model->model);
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "{\"model\":");
    srv_buf_json_str(&b, r->model->conf->name, strlen(r->model->conf->name));
    srv_buf_puts(&b, ",\"version\":");
    srv_buf_json_str(&b, r->version, strlen(r->version));
    srv_buf_puts(&b, r->api.list ? ",\"results\":[" : ",\"result\":");
    for (int i = 0; i < r->api.n; i++) {
        if (i)
            srv_buf_puts(&b, ",");
        if (r->ops->render_one(r, &b, i, info, tok)) {
            srv_buf_free(&b);
            if (r->status < 400)
                srv_req_error(r, 500, "internal", "cannot render the result");
            return;
        }
    }
    srv_buf_puts(&b, r->api.list ? "]}\n" : "}\n");
    size_t len = 0;
    char *body = srv_buf_take(&b, &len);
    if (!body) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    srv_req_respond(r, 200, body, len, NULL);
}

void srv_infer_cleanup(srv_req *r)
{
    if (r->ops)
        r->ops->cleanup(r);
    srv_job_free_output(&r->job);
    srv_api_request_free(&r->api);
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
}
