/* handle_feedback.c - POST /v1/feedback; see feedback.h. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "feedback.h"
#include "feedback_log.h"
#include "log.h"
#include "recent.h"

struct srv_feedback {
    srv_fblog *log;
    srv_recent *recent;   /* NULL: request ids are not remembered */
    int max_items;
    int recent_age_s;
    char instance[192];
};

/* A request's state between its steps (r->task_state). */
typedef struct fb_state {
    srv_fblog_entry entry;  /* queued to the writer between submit and srv_req_done */
    srv_api_feedback api;
    char *lines;
    size_t len;
    int n;
} fb_state;

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int srv_feedback_enabled(const srv_server *s)
{
    return s->feedback != NULL;
}

/* ------------------------------------------------------------ lifecycle */

int srv_feedback_init(srv_server *s, char *err, size_t cap)
{
    const srv_config *c = s->cfg;
    s->feedback = NULL;
    if (!c->feedback_dir)
        return 0;
    srv_feedback *fb = calloc(1, sizeof *fb);
    const char **names = calloc((size_t)(s->n_models > 0 ? s->n_models : 1), sizeof *names);
    if (!fb || !names) {
        snprintf(err, cap, "feedback: out of memory");
        goto fail;
    }
    for (int i = 0; i < s->n_models; i++) {
        names[i] = s->models[i].conf->name;
        if (strcmp(names[i], ".") == 0 || strcmp(names[i], "..") == 0) {
            snprintf(err, cap, "models[%d].name: \"%s\" cannot name a folder under feedback.dir",
                     i, names[i]);
            goto fail;
        }
    }
    /* <hostname>-<pid>-<start unix s>, the host name reduced to file-name characters. */
    char host[128] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            *p = '_';
    snprintf(fb->instance, sizeof fb->instance, "%s-%ld-%lld", host, (long)getpid(),
             (long long)time(NULL));
    fb->max_items = c->feedback_max_items;
    fb->recent_age_s = c->recent_max_age_s;
    if (c->recent_enabled &&
        !(fb->recent = srv_recent_new(c->recent_max_requests, (size_t)c->recent_max_bytes,
                                      (int64_t)c->recent_max_age_s * 1000))) {
        snprintf(err, cap, "feedback.recent: out of memory");
        goto fail;
    }
    /* A log over RLIMIT_FSIZE must fail the write with EFBIG (a 503), not
     * kill the daemon with SIGXFSZ. */
    signal(SIGXFSZ, SIG_IGN);
    if (!(fb->log = srv_fblog_new(c->feedback_dir, fb->instance, s->n_models, names, s->metrics,
                                  err, cap)))
        goto fail;
    free(names);
    s->feedback = fb;
    srv_log(SRV_LOG_INFO, NULL, "feedback: appending to %s/<model>/%s.jsonl%s", c->feedback_dir,
            fb->instance, fb->recent ? "; remembering recent requests by id" : "");
    return 0;
fail:
    if (fb)
        srv_recent_free(fb->recent);
    free(fb);
    free(names);
    return -1;
}

void srv_feedback_stop(srv_server *s)
{
    if (s->feedback)
        srv_fblog_stop(s->feedback->log);
}

void srv_feedback_free(srv_server *s)
{
    srv_feedback *fb = s->feedback;
    if (!fb)
        return;
    srv_fblog_free(fb->log);
    srv_recent_free(fb->recent);
    free(fb);
    s->feedback = NULL;
}

void srv_feedback_remember(srv_req *r)
{
    srv_feedback *fb = r->srv->feedback;
    if (!fb || !fb->recent || r->warmup || r->status != 200 || r->api.n < 1 || !r->api.texts)
        return;
    if (srv_recent_put(fb->recent, r->rid, r->model_index, r->api.n, r->api.texts,
                       r->api.text_lens, srv_now_ns() / 1000000) < 0)
        srv_log(SRV_LOG_WARN, r->rid, "feedback: cannot remember the request (out of memory)");
}

/* ------------------------------------------------------------ the steps */

static srv_model *find_model(srv_server *s, const char *name)
{
    for (int i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].conf->name, name) == 0)
            return &s->models[i];
    return NULL;
}

/* 422 unknown_label naming the valid labels (as many as fit). */
static void unknown_label(srv_req *r, const char *where, const eng_model_info *info)
{
    char list[128];
    size_t used = 0;
    int shown = 0;
    list[0] = 0;
    for (int k = 0; k < info->num_labels; k++) {
        const char *l = info->labels && info->labels[k] ? info->labels[k] : "";
        int w = snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "", l);
        if (w < 0 || used + (size_t)w >= sizeof list - 24) {
            list[used] = 0;
            break;
        }
        used += (size_t)w;
        shown++;
    }
    if (shown < info->num_labels)
        snprintf(list + used, sizeof list - used, "%s... (%d labels)", shown ? ", " : "",
                 info->num_labels);
    srv_req_error(r, 422, "unknown_label", "%slabel is not a label of model %s; valid labels: %s",
                  where, r->model->conf->name, list);
}

/* The text item it names: its own, or the remembered text of its request id
 * (*owned then holds it). 0, or -1 with r's error set. */
static int item_text(srv_req *r, const srv_feedback_item *it, const char *where,
                     const char **text, size_t *len, char **owned)
{
    srv_feedback *fb = r->srv->feedback;
    *owned = NULL;
    if (it->text) {
        *text = it->text;
        *len = it->text_len;
        return 0;
    }
    if (!fb->recent) {
        srv_req_error(r, 404, "request_not_found",
                      "%srequest_id: this server does not remember requests "
                      "(feedback.recent.enabled is off); send the text instead", where);
        return -1;
    }
    int model = -1, n_texts = 0;
    int rc = srv_recent_get(fb->recent, it->request_id, it->index < 0 ? 0 : it->index,
                            srv_now_ns() / 1000000, owned, len, &model, &n_texts);
    if (rc == -1) {
        srv_req_error(r, 404, "request_not_found",
                      "%srequest_id is unknown or expired (successful sentiment and classify "
                      "requests are remembered for %d s)", where, fb->recent_age_s);
        return -1;
    }
    if (rc == -3) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    if (model != r->model_index) {
        free(*owned);
        *owned = NULL;
        srv_req_error(r, 422, "invalid_field", "%srequest_id was answered by model %s, not %s",
                      where, model >= 0 && model < r->srv->n_models
                                 ? r->srv->models[model].conf->name : "?",
                      r->model->conf->name);
        return -1;
    }
    if (rc == -2 || (it->index < 0 && n_texts > 1)) {
        free(*owned);
        *owned = NULL;
        if (rc == -2)
            srv_req_error(r, 422, "invalid_field",
                          "%sindex must be below %d: that request had %d text%s", where, n_texts,
                          n_texts, n_texts == 1 ? "" : "s");
        else
            srv_req_error(r, 422, "invalid_field",
                          "%sindex is required: that request had %d texts (index 0 to %d)", where,
                          n_texts, n_texts - 1);
        return -1;
    }
    *text = *owned;
    return 0;
}

static void put_line(srv_buf *b, int64_t t, const srv_req *r, const char *text, size_t len,
                     const char *label, const char *request_id)
{
    const char *name = r->model->conf->name;
    srv_buf_printf(b, "{\"time\": %lld, \"model\": ", (long long)t);
    srv_buf_json_str(b, name, strlen(name));
    srv_buf_puts(b, ", \"version\": ");
    srv_buf_json_str(b, r->version, strlen(r->version));
    srv_buf_puts(b, ", \"text\": ");
    srv_buf_json_str(b, text, len);
    srv_buf_puts(b, ", \"label\": ");
    srv_buf_json_str(b, label, strlen(label));
    if (request_id) {
        srv_buf_puts(b, ", \"request_id\": ");
        srv_buf_json_str(b, request_id, strlen(request_id));
    }
    srv_buf_puts(b, "}\n");
}

static int fb_prepare(srv_req *r)
{
    srv_server *s = r->srv;
    srv_feedback *fb = s->feedback;
    fb_state *st = calloc(1, sizeof *st);
    srv_api_error e;
    srv_buf b;
    srv_buf_init(&b);
    if (!st) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto fail;
    }
    r->task_state = st;
    int rc = srv_api_parse_feedback(r->body, r->body_len, &s->limits, fb->max_items, &st->api, &e);
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    if (rc) {
        srv_req_error(r, e.status, e.code, "%s", e.message);
        goto fail;
    }
    srv_model *m = find_model(s, st->api.model);
    if (!m) {
        srv_req_error(r, 404, "model_not_found", "no model with that name is configured");
        goto fail;
    }
    r->model = m;
    r->model_index = m->index;
    if (m->conf->task != SRV_TASK_SENTIMENT && m->conf->task != SRV_TASK_CLASSIFY) {
        srv_req_error(r, 422, "feedback_unsupported",
                      "model %s serves /v1/%s: only sentiment and classify models take feedback",
                      m->conf->name, srv_task_name(m->conf->task));
        goto fail;
    }
    if (atomic_load_explicit(&m->status, memory_order_acquire) != SRV_MODEL_READY ||
        !(r->ver = srv_model_slot_acquire(m->slot))) {
        r->retry_after = 1;
        srv_req_error(r, 503, "not_ready", "model %s has no version loaded", m->conf->name);
        goto fail;
    }
    snprintf(r->version, sizeof r->version, "%s", r->ver->name);
    const eng_model_info *info = r->ver->info;
    if (info->multi_label || info->num_labels < 1) {
        srv_req_error(r, 422, "feedback_unsupported",
                      "model %s is a multi-label classifier: feedback takes one label per text, "
                      "for single-label models", m->conf->name);
        goto fail;
    }
    int64_t now = unix_ms();
    for (int i = 0; i < st->api.n; i++) {
        const srv_feedback_item *it = &st->api.items[i];
        char where[32] = "";
        if (st->api.list)
            snprintf(where, sizeof where, "items[%d].", i);
        int k = 0;
        while (k < info->num_labels &&
               !(info->labels && info->labels[k] && strcmp(info->labels[k], it->label) == 0))
            k++;
        if (k == info->num_labels) {
            unknown_label(r, where, info);
            goto fail;
        }
        const char *text;
        size_t len;
        char *owned;
        if (item_text(r, it, where, &text, &len, &owned))
            goto fail;
        put_line(&b, now, r, text, len, info->labels[k], it->request_id);
        free(owned);
    }
    st->n = st->api.n;
    if (!(st->lines = srv_buf_take(&b, &st->len))) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto fail;
    }
    return 0;
fail:
    srv_buf_free(&b);
    return -1;
}

/* Writer thread: r's lines are synced (or failed); r may be freed after this. */
static void fb_written(srv_fblog_entry *e, void *arg)
{
    (void)e;
    srv_req_done(arg);
}

static int fb_submit(srv_req *r)
{
    fb_state *st = r->task_state;
    st->entry.model = r->model_index;
    st->entry.data = st->lines;
    st->entry.len = st->len;
    st->entry.done = fb_written;
    st->entry.arg = r;
    if (srv_fblog_submit(r->srv->feedback->log, &st->entry) == 0)
        return 0;
    r->retry_after = 1;
    srv_req_error(r, 503, "draining", "the server is shutting down");
    return -1;
}

static int fb_finished(srv_req *r)
{
    fb_state *st = r->task_state;
    srv_model *m = r->model;
    if (st->entry.err) {
        char path[4200];
        srv_fblog_path(r->srv->feedback->log, m->index, path, sizeof path);
        srv_metrics_feedback_error(r->srv->metrics, m->index);
        srv_log(SRV_LOG_ERROR, r->rid, "feedback: cannot write %d item(s) to %s: %s", st->n, path,
                strerror(st->entry.err));
        srv_req_error(r, 503, "feedback_unavailable",
                      "the feedback log of model %s cannot be written: %s; nothing was recorded",
                      m->conf->name, strerror(st->entry.err));
        return -1;
    }
    srv_metrics_feedback_items(r->srv->metrics, m->index, st->n);
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_printf(&b, "{\"accepted\":%d,\"model\":", st->n);
    srv_buf_json_str(&b, m->conf->name, strlen(m->conf->name));
    srv_buf_puts(&b, ",\"version\":");
    srv_buf_json_str(&b, r->version, strlen(r->version));
    srv_buf_puts(&b, "}\n");
    size_t len = 0;
    char *body = srv_buf_take(&b, &len);
    if (!body) {
        srv_req_error(r, 500, "internal", "out of memory (the items were recorded)");
        return -1;
    }
    srv_req_respond(r, 202, body, len, NULL);
    return 0;
}

static void fb_cleanup(srv_req *r)
{
    fb_state *st = r->task_state;
    if (st) {
        srv_api_feedback_free(&st->api);
        free(st->lines);
        free(st);
        r->task_state = NULL;
    }
    srv_req_free_parts(r);
}

const srv_handler srv_feedback_handler = {
    .prepare = fb_prepare,
    .submit = fb_submit,
    .finished = fb_finished,
    .cleanup = fb_cleanup,
};
