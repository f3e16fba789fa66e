/* handle_admin.c - GET /healthz, /readyz, /metrics, /v1/models[/{name}].
 * Loop thread; cheap (no model code). */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "server.h"

static void respond_buf(srv_req *r, int status, srv_buf *b, const char *type)
{
    size_t len = 0;
    char *body = srv_buf_take(b, &len);
    if (!body) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    srv_req_respond(r, status, body, len, type);
}

static void put_str(srv_buf *b, const char *s)
{
    srv_buf_json_str(b, s ? s : "", strlen(s ? s : ""));
}

int srv_healthz_render(srv_server *s, srv_buf *b, const char **code)
{
    /* Liveness: only what a restart cures fails it - a sticky device fault (the
     * process's CUDA context is lost; recreating contexts cannot help). */
    srv_batcher_fault_info fi;
    int i = 0;
    for (; i < s->n_models; i++)
        if (s->models[i].batcher && srv_batcher_fault(s->models[i].batcher, &fi) && fi.sticky)
            break;
    *code = NULL;
    if (i == s->n_models) {
        srv_buf_puts(b, "{\"status\":\"ok\"}\n");
        return 200;
    }
    char msg[1024];
    snprintf(msg, sizeof msg, "model %.200s: backend %s:%d (worker %d) failed: %s (%s)",
             s->models[i].conf->name, fi.backend, fi.device, fi.worker, fi.error, fi.recovery);
    srv_buf_puts(b, "{\"status\":\"unhealthy\",\"error\":{\"code\":\"device_fault\","
                    "\"message\":");
    put_str(b, msg);
    srv_buf_puts(b, "},\"sticky\":true,\"restart\":true}\n");
    *code = "device_fault";
    return 503;
}

void srv_handle_healthz(srv_req *r, const char *arg)
{
    (void)arg;
    srv_buf b;
    srv_buf_init(&b);
    const char *code = NULL;
    int status = srv_healthz_render(r->srv, &b, &code);
    if (status != 200)
        r->err.code = code; /* for the access log */
    respond_buf(r, status, &b, NULL);
}

int srv_readyz_render(srv_server *s, srv_buf *b, const char **code)
{
    /* Ready: started, every model has a version (a repository may still be waiting for
     * its first one), and no worker's device has faulted (a CUDA error: that worker
     * recreates its context, and counts as faulted until the new one has run a batch). */
    int ready = atomic_load(&s->ready), draining = atomic_load(&s->draining), faults = 0;
    srv_batcher_fault_info fi[64];
    int fault_of[64];
    for (int i = 0; i < s->n_models; i++) {
        int ms = atomic_load_explicit(&s->models[i].status, memory_order_acquire);
        ready &= ms == SRV_MODEL_READY;
        if (s->models[i].batcher && faults < 64 &&
            srv_batcher_fault(s->models[i].batcher, &fi[faults]))
            fault_of[faults++] = i;
    }
    ready &= faults == 0;
    const char *state = draining ? "draining" : ready ? "ready" : faults ? "unhealthy"
                                                                          : "not_ready";
    srv_buf_printf(b, "{\"status\":\"%s\",", state);
    if (draining) {
        srv_buf_puts(b, "\"error\":{\"code\":\"draining\",\"message\":\"the server is "
                        "shutting down\"},");
    } else if (faults) {
        char msg[1024];
        const srv_batcher_fault_info *f = &fi[0];
        snprintf(msg, sizeof msg, "model %.200s: backend %s:%d (worker %d) failed: %s (%s)",
                 s->models[fault_of[0]].conf->name, f->backend, f->device, f->worker, f->error,
                 f->recovery);
        srv_buf_puts(b, "\"error\":{\"code\":\"device_fault\",\"message\":");
        put_str(b, msg);
        srv_buf_puts(b, "},");
    } else if (!ready) {
        srv_buf_puts(b, "\"error\":{\"code\":\"not_ready\",\"message\":\"a model has no "
                        "version loaded yet\"},");
    }
    srv_buf_puts(b, "\"models\":{");
    for (int i = 0; i < s->n_models; i++) {
        static const char *const st[] = {"loading", "ready", "failed"};
        int ms = atomic_load_explicit(&s->models[i].status, memory_order_acquire), bad = 0;
        for (int k = 0; k < faults; k++)
            bad |= fault_of[k] == i;
        if (i)
            srv_buf_puts(b, ",");
        put_str(b, s->models[i].conf->name);
        srv_buf_printf(b, ":\"%s\"", bad ? "unhealthy" : (unsigned)ms < 3 ? st[ms] : "?");
    }
    srv_buf_puts(b, "}");
    if (faults) {
        srv_buf_puts(b, ",\"faults\":[");
        for (int k = 0; k < faults; k++) {
            srv_buf_puts(b, k ? ",{\"model\":" : "{\"model\":");
            put_str(b, s->models[fault_of[k]].conf->name);
            srv_buf_puts(b, ",\"backend\":");
            put_str(b, fi[k].backend);
            srv_buf_printf(b, ",\"device\":%d,\"worker\":%d,\"error\":", fi[k].device,
                           fi[k].worker);
            put_str(b, fi[k].error);
            srv_buf_printf(b, ",\"attempts\":%d,\"max_attempts\":%d,\"recovering\":%s,"
                           "\"gave_up\":%s,\"sticky\":%s,\"recovery\":", fi[k].attempts,
                           fi[k].max_attempts, fi[k].recovering ? "true" : "false",
                           fi[k].gave_up ? "true" : "false", fi[k].sticky ? "true" : "false");
            put_str(b, fi[k].recovery);
            srv_buf_puts(b, "}");
        }
        srv_buf_puts(b, "]");
    }
    srv_buf_puts(b, "}\n");
    *code = draining ? "draining" : faults ? "device_fault" : ready ? NULL : "not_ready";
    return ready && !draining ? 200 : 503;
}

void srv_handle_readyz(srv_req *r, const char *arg)
{
    (void)arg;
    srv_buf b;
    srv_buf_init(&b);
    const char *code = NULL;
    int status = srv_readyz_render(r->srv, &b, &code);
    if (status != 200) {
        r->retry_after = 1;
        r->err.code = code; /* for the access log */
    }
    respond_buf(r, status, &b, NULL);
}

void srv_handle_metrics(srv_req *r, const char *arg)
{
    (void)arg;
    srv_server *s = r->srv;
    int *depth = calloc((size_t)(s->n_models > 0 ? s->n_models : 1), sizeof *depth);
    for (int i = 0; depth && i < s->n_models; i++)
        if (atomic_load_explicit(&s->models[i].status, memory_order_acquire) == SRV_MODEL_READY)
            depth[i] = srv_batcher_queued_sequences(s->models[i].batcher);
    srv_metrics_gauges g = {
        .ready = atomic_load(&s->ready) && !atomic_load(&s->draining),
        .draining = atomic_load(&s->draining),
        .in_flight = s->in_flight,
        .queue_depth = depth,
    };
    size_t len = 0;
    char *page = srv_metrics_render(s->metrics, &g, &len);
    free(depth);
    if (!page) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    srv_req_respond(r, 200, page, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* translate: the language pairs (default first) and the search settings. */
static void put_translation(srv_buf *b, const srv_model *m, const srv_version *v)
{
    const eng_translator_info *ti = &v->tr_info;
    srv_buf_puts(b, ",\"translation\":{\"pairs\":[");
    for (int k = 0; k < v->n_pairs; k++) {
        const srv_lang_pair *p = &v->pairs[k];
        srv_buf_puts(b, k ? ",{\"source\":" : "{\"source\":");
        put_str(b, p->source);
        srv_buf_puts(b, ",\"target\":");
        put_str(b, p->target);
        if (*p->token) {
            srv_buf_puts(b, ",\"token\":");
            put_str(b, p->token);
        }
        srv_buf_puts(b, "}");
    }
    srv_buf_printf(b,
                   "],\"max_input_tokens\":%d,\"default_beam_size\":%d,"
                   "\"default_max_length\":%d,\"max_beam_size\":%d,\"max_length\":%d}",
                   ti->max_input_tokens,
                   ti->num_beams > 0 && ti->num_beams < m->conf->max_beam_size
                       ? ti->num_beams : m->conf->max_beam_size,
                   ti->max_length > 0 && ti->max_length < m->conf->max_length
                       ? ti->max_length : m->conf->max_length,
                   m->conf->max_beam_size, m->conf->max_length);
}

static void put_model(srv_buf *b, const srv_model *m)
{
    static const char *const st[] = {"loading", "ready", "failed"};
    const srv_model_conf *c = m->conf;
    int ms = atomic_load_explicit(&m->status, memory_order_acquire);
    srv_buf_puts(b, "{\"model\":");
    put_str(b, c->name);
    srv_buf_puts(b, ",\"name\":");
    put_str(b, c->name);
    srv_buf_puts(b, ",\"task\":");
    put_str(b, srv_task_name(c->task));
    srv_buf_printf(b, ",\"status\":\"%s\"", (unsigned)ms < 3 ? st[ms] : "?");
    srv_buf_puts(b, ",\"device\":");
    put_str(b, c->backend);
    srv_version *v = ms == SRV_MODEL_READY ? srv_model_slot_acquire(m->slot) : NULL;
    if (v) {
        const eng_model_info *in = v->info;
        srv_buf_puts(b, ",\"version\":");
        put_str(b, v->name);
        srv_buf_puts(b, ",\"architecture\":");
        put_str(b, in->architecture);
        srv_buf_puts(b, ",\"model_type\":");
        put_str(b, in->model_type);
        srv_buf_printf(b, ",\"hidden_size\":%d,\"layers\":%d,\"max_seq_len\":%d,\"dtype\":",
                       in->hidden, in->layers, in->max_seq_len);
        put_str(b, in->file_dtype);
        srv_buf_printf(b, ",\"precision\":\"%s\",\"kernel\":\"%s\"", in->precision, in->kernel);
        srv_buf_puts(b, ",\"labels\":[");
        for (int k = 0; k < in->num_labels && c->task != SRV_TASK_QA; k++) {
            if (k)
                srv_buf_puts(b, ",");
            put_str(b, in->labels ? in->labels[k] : "");
        }
        srv_buf_printf(b, "],\"multi_label\":%s", in->multi_label ? "true" : "false");
        if (c->task == SRV_TASK_TRANSLATE)
            put_translation(b, m, v);
    } else {
        srv_buf_puts(b, ",\"version\":null");
    }
    srv_model_put_limits(b, m, v);
    srv_version_unref(v);
    srv_buf_printf(b,
                   ",\"timeout_ms\":%d,\"max_timeout_ms\":%d,\"batching\":{"
                   "\"max_batch_tokens\":%d,\"max_batch_size\":%d,\"max_delay_us\":%d,"
                   "\"queue_capacity\":%d,\"workers\":%d,\"threads\":%d}}",
                   c->timeout_ms, c->max_timeout_ms, c->max_batch_tokens, c->max_batch_size,
                   c->max_delay_us, c->queue_capacity, c->workers, c->threads);
}

void srv_handle_models(srv_req *r, const char *name)
{
    srv_server *s = r->srv;
    srv_buf b;
    srv_buf_init(&b);
    if (name) {
        for (int i = 0; i < s->n_models; i++)
            if (strcmp(s->models[i].conf->name, name) == 0) {
                r->model = &s->models[i];
                r->model_index = i;
                put_model(&b, &s->models[i]);
                srv_buf_puts(&b, "\n");
                respond_buf(r, 200, &b, NULL);
                return;
            }
        srv_req_error(r, 404, "model_not_found", "no model with that name is configured");
        return;
    }
    srv_buf_puts(&b, "{\"models\":[");
    for (int i = 0; i < s->n_models; i++) {
        if (i)
            srv_buf_puts(&b, ",");
        put_model(&b, &s->models[i]);
    }
    srv_buf_puts(&b, "]}\n");
    respond_buf(r, 200, &b, NULL);
}
