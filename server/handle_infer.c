/* handle_infer.c - the inference pipeline shared by the POST endpoints:
 * parse + validate + tokenize (pool) -> submit (loop) -> batcher -> map the
 * job's status (loop) -> render (pool). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "log.h"

void srv_req_engine_error(srv_req *r, const eng_error *e, const char *what)
{
    int code = e ? e->code : ENG_EINVAL;
    const char *msg = e && e->msg[0] ? e->msg : eng_strerror(code);
    if (code == ENG_EUTF8)
        srv_req_error(r, 422, "invalid_utf8", "%s: %s", what, msg);
    else if (code == ENG_ETOOLONG) /* over a bound of the model or the engine (QA windows) */
        srv_req_error(r, 413, "request_too_large", "%s: %s", what, msg);
    else if (code == ENG_EINVAL)
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

int srv_jobs_oom(srv_job *const *jobs, int k, eng_error *err)
{
    for (int i = 0; i < k; i++)
        srv_job_free_output(jobs[i]);
    snprintf(err->msg, sizeof err->msg, "out of memory for a batch's results");
    return err->code = ENG_ENOMEM;
}

int srv_jobs_take_rows(srv_job *const *jobs, int n, const float *all, size_t per,
                       eng_error *err)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        srv_job *j = jobs[i];
        size_t len = per * (size_t)j->n;
        float *out = malloc((len ? len : 1) * sizeof *out);
        if (!out)
            return srv_jobs_oom(jobs, i, err);
        memcpy(out, all + off, len * sizeof *out);
        j->out = out;
        j->out_len = len;
        off += len;
    }
    return 0;
}

/* Tokenize r->api with r's version; the job will run on that version. */
static int encode(srv_req *r)
{
    snprintf(r->version, sizeof r->version, "%s", r->ver->name);
    return r->ops->encode(r, r->ver->model);
}

static int infer_prepare(srv_req *r)
{
    srv_server *s = r->srv;
    srv_api_error e;
    int rc = r->ops->parse ? r->ops->parse(r, &e)
                           : srv_api_parse(r->ep, r->body, r->body_len, &s->limits, &r->api, &e);
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
    /* Several models serve this endpoint: the body named this one; count it
     * against its bound before tokenising. */
    if (!r->held_model && !r->warmup) {
        if (srv_model_admit(m)) {
            srv_req_model_full(r, m);
            return -1;
        }
        r->held_model = m;
    }
    if (r->api.timeout_ms > m->conf->max_timeout_ms) {
        srv_req_error(r, 422, "invalid_field", "timeout_ms must be at most %d for model %s",
                      m->conf->max_timeout_ms, m->conf->name);
        return -1;
    }
    /* The version current now serves the whole request: tokenizer, batch, render. */
    if (!r->ver && !(r->ver = srv_model_slot_acquire(m->slot))) {
        r->retry_after = 1;
        srv_req_error(r, 503, "not_ready", "model %s has no version loaded", m->conf->name);
        return -1;
    }
    return encode(r);
}

static void on_job_complete(srv_job *job, void *arg)
{
    (void)job;
    srv_req_done(arg);
}

static void warm_complete(srv_job *job, void *arg);

static int infer_submit(srv_req *r)
{
    srv_job *j = &r->job;
    memset(j, 0, sizeof *j);
    j->type = r->ops->job_type;
    j->model = r->ver->model;
    j->n = r->n_enc;
    j->enc = r->enc;
    int timeout = r->api.timeout_ms ? r->api.timeout_ms : r->model->conf->timeout_ms;
    /* A warm-up may meet a cold cache and slow pages: no deadline. */
    j->deadline_ns = r->warmup ? 0 : r->t_start + (int64_t)timeout * 1000000;
    j->client_gone = r->warmup ? NULL : srv_req_client_gone;
    j->complete = r->warmup ? warm_complete : on_job_complete;
    j->arg = r;
    if (r->ops->setup_job)
        r->ops->setup_job(r, j);
    int rc = srv_batcher_submit(r->model->batcher, j);
    if (rc == 0)
        return 0;
    if (rc == SRV_ETOOCOSTLY) {
        srv_req_error(r, 413, "request_too_large",
                      "the request needs an estimated %.0f MiB of working memory; model %s allows "
                      "%d MiB per request (batching.max_job_mib): send %s",
                      (double)j->cost.bytes / 1048576.0, r->model->conf->name,
                      r->model->conf->max_job_mib,
                      r->ep == SRV_EP_TRANSLATE ? "fewer texts, or a smaller beam_size or max_length"
                      : r->ep == SRV_EP_QA     ? "fewer items, or shorter questions or contexts"
                                               : "fewer or shorter texts");
    } else if (rc == SRV_EQUEUE_FULL) {
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

static int infer_finished(srv_req *r)
{
    srv_job *j = &r->job;
    if (!r->warmup && j->started_ns > 0 && j->finished_ns >= j->started_ns)
        srv_metrics_job(r->srv->metrics, r->model_index, j->started_ns - j->enqueued_ns,
                        j->finished_ns - j->started_ns);
    switch (j->status) {
    case SRV_JOB_OK:
        if (j->out)
            return 0;
        srv_req_error(r, 500, "internal", "the model returned no output");
        return -1;
    case SRV_JOB_EXPIRED:
        srv_req_error(r, 504, "deadline_exceeded",
                      "the request could not be answered within its %d ms deadline",
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

static void infer_render_response(srv_req *r);

static void infer_render(srv_req *r)
{
    if (r->ops->render)
        r->ops->render(r);
    else
        infer_render_response(r);
    if (r->ops->rendered && !r->warmup && r->status == 200)
        r->ops->rendered(r);
}

static void infer_render_response(srv_req *r)
{
    const eng_model_info *info = r->ver->info;
    const eng_tokenizer *tok = eng_model_tokenizer(r->ver->model);
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

static void infer_cleanup(srv_req *r)
{
    if (r->ops)
        r->ops->cleanup(r);
    srv_job_free_output(&r->job);
    srv_req_free_parts(r);
}

const srv_handler srv_infer_handler = {
    .prepare = infer_prepare,
    .submit = infer_submit,
    .finished = infer_finished,
    .render = infer_render,
    .cleanup = infer_cleanup,
};

/* ---------------------------------------------------------------- warm-up */

typedef struct warm_req {
    srv_req r;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} warm_req;

/* Batcher thread: the warm-up's job finished. */
static void warm_complete(srv_job *job, void *arg)
{
    (void)job;
    warm_req *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int srv_infer_warmup(srv_model *m, srv_version *v, char *why, size_t cap)
{
    const srv_route *rt = srv_route_for_task(m->conf->task);
    if (!rt) {
        snprintf(why, cap, "no endpoint serves task %s", srv_task_name(m->conf->task));
        return -1;
    }
    warm_req *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    srv_req *r = &w->r;
    r->srv = m->srv;
    r->route = rt;
    r->ep = rt->ep;
    r->ops = rt->task;
    r->warmup = 1;
    r->fd = -1;
    r->model_index = m->index;
    r->t_start = srv_now_ns();
    r->ver = srv_version_ref(v);
    snprintf(r->rid, sizeof r->rid, "warmup-%s", m->conf->name);
    int rc = -1;
    srv_api_error e;
    if (srv_api_parse(r->ep, rt->warmup_body, strlen(rt->warmup_body), &m->srv->limits, &r->api,
                      &e)) {
        snprintf(why, cap, "the warm-up request is invalid: %s", e.message);
        goto done;
    }
    r->api.model = m->conf->name;
    r->model = m;
    if (r->ops->resolve && !r->ops->resolve(r))
        goto failed;
    if (encode(r) || infer_submit(r))
        goto failed;
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    if (infer_finished(r))
        goto failed;
    infer_render(r);
    if (r->status == 200) {
        rc = 0;
        goto done;
    }
failed:
    snprintf(why, cap, "%s", r->err.message[0] ? r->err.message : "the warm-up request failed");
done:
    infer_cleanup(r);
    free(r->resp);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return rc;
}

/* ---------------------------------------------------------------- limits */

void srv_model_put_limits(srv_buf *b, const srv_model *m, const srv_version *v)
{
    const srv_server *s = m->srv;
    const srv_model_conf *c = m->conf;
    srv_buf_printf(b,
                   ",\"limits\":{\"max_body_bytes\":%zu,\"max_texts\":%d,\"max_text_bytes\":%zu,"
                   "\"max_timeout_ms\":%d,\"max_in_flight\":%d,\"max_job_mib\":%d,"
                   "\"max_batch_mib\":%d,\"max_batch_tokens\":%d",
                   s->limits.max_body_bytes, s->limits.max_texts, s->limits.max_text_bytes,
                   c->max_timeout_ms, srv_model_conf_max_in_flight(c), c->max_job_mib,
                   c->max_batch_mib, c->max_batch_tokens);
    if (v)
        srv_buf_printf(b, ",\"max_seq_len\":%d", v->info->max_seq_len);
    if (v && c->task == SRV_TASK_QA) {
        eng_qa_opts qo;
        eng_qa_opts_for_model(v->info, &qo);
        srv_buf_printf(b, ",\"qa_window_tokens\":%d,\"qa_doc_stride\":%d,\"qa_max_tokens\":%ld",
                       qo.max_seq_len, qo.doc_stride,
                       srv_qa_max_request_tokens(v->info, c->max_job_mib));
    }
    if (c->task == SRV_TASK_TRANSLATE) {
        srv_buf_printf(b, ",\"max_beam_size\":%d,\"max_length\":%d", c->max_beam_size,
                       c->max_length);
        if (v) {
            /* The estimate one text costs at the maxima, against max_job_mib. */
            srv_job_cost one;
            int src = v->tr_info.max_input_tokens > 0 ? v->tr_info.max_input_tokens
                                                      : v->info->max_seq_len;
            srv_translate_text_cost(v->info, c->max_beam_size, c->max_length, src, &one);
            srv_buf_printf(b, ",\"max_input_tokens\":%d,\"mib_per_text_at_maxima\":%.1f", src,
                           (double)one.bytes / 1048576.0);
        }
    }
    srv_buf_puts(b, "}");
}
