/* metrics.c - see metrics.h. */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define MAX_BUCKETS 20

/* Upper bounds in raw units (ns for durations, counts otherwise); the
 * exposition divides by scale. A final +Inf bucket is implicit. */
typedef struct hist_spec {
    const double *le;
    int n;
    double scale;
} hist_spec;

typedef struct hist {
    atomic_uint_fast64_t bucket[MAX_BUCKETS + 1];
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum; /* raw units */
} hist;

static const double dur_le[] = {5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8,
                                2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10, 3e10};
static const double size_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
static const double tok_le[] = {16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
static const hist_spec DUR = {dur_le, sizeof dur_le / sizeof *dur_le, 1e9};
static const hist_spec SIZE = {size_le, sizeof size_le / sizeof *size_le, 1};
static const hist_spec TOK = {tok_le, sizeof tok_le / sizeof *tok_le, 1};

/* Statuses nlpd answers with, each counted under its own label; anything
 * else is counted as status="other". */
static const int statuses[] = {200, 202, 400, 401, 403, 404, 405, 413, 415, 422,
                               429, 499, 500, 503, 504};
#define N_STATUS ((int)(sizeof statuses / sizeof *statuses) + 1) /* + "other" */

typedef struct model_info {
    char *version, *task, *arch, *device;
    uint64_t reloads_ok, reloads_rejected;
    double load_s, warm_s; /* of the version serving now */
} model_info;

struct srv_metrics {
    int n_models;
    char **names;
    atomic_uint_fast64_t *requests; /* [SRV_EP_COUNT][n_models + 1][N_STATUS] */
    hist req_dur[SRV_EP_COUNT];
    hist *queue_dur, *infer_dur, *batch_size, *batch_tokens; /* [n_models] */
    atomic_uint_fast64_t *fb_items, *fb_errors; /* [n_models] */
    atomic_uint_fast64_t fb_fsyncs;
    pthread_mutex_t info_lock;
    model_info *info;
};

static void hist_observe(hist *h, const hist_spec *s, double v)
{
    int i = 0;
    while (i < s->n && v > s->le[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v > 0 ? (uint64_t)v : 0, memory_order_relaxed);
}

srv_metrics *srv_metrics_new(int n_models, const char *const *names)
{
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->n_models = n_models;
    size_t nm = (size_t)(n_models > 0 ? n_models : 1);
    m->names = calloc(nm, sizeof *m->names);
    m->requests = calloc((size_t)SRV_EP_COUNT * (nm + 1) * N_STATUS, sizeof *m->requests);
    m->queue_dur = calloc(nm, sizeof(hist));
    m->infer_dur = calloc(nm, sizeof(hist));
    m->batch_size = calloc(nm, sizeof(hist));
    m->batch_tokens = calloc(nm, sizeof(hist));
    m->info = calloc(nm, sizeof *m->info);
    m->fb_items = calloc(nm, sizeof *m->fb_items);
    m->fb_errors = calloc(nm, sizeof *m->fb_errors);
    pthread_mutex_init(&m->info_lock, NULL);
    if (!m->names || !m->requests || !m->queue_dur || !m->infer_dur || !m->batch_size ||
        !m->batch_tokens || !m->info || !m->fb_items || !m->fb_errors)
        goto fail;
    for (int i = 0; i < n_models; i++)
        if (!(m->names[i] = strdup(names[i] ? names[i] : "")))
            goto fail;
    return m;
fail:
    srv_metrics_free(m);
    return NULL;
}

void srv_metrics_free(srv_metrics *m)
{
    if (!m)
        return;
    for (int i = 0; m->names && i < m->n_models; i++)
        free(m->names[i]);
    for (int i = 0; m->info && i < m->n_models; i++) {
        free(m->info[i].version);
        free(m->info[i].task);
        free(m->info[i].arch);
        free(m->info[i].device);
    }
    pthread_mutex_destroy(&m->info_lock);
    free(m->names);
    free(m->requests);
    free(m->queue_dur);
    free(m->infer_dur);
    free(m->batch_size);
    free(m->batch_tokens);
    free(m->info);
    free(m->fb_items);
    free(m->fb_errors);
    free(m);
}

static int status_index(int status)
{
    for (int i = 0; i < N_STATUS - 1; i++)
        if (statuses[i] == status)
            return i;
    return N_STATUS - 1;
}

void srv_metrics_request(srv_metrics *m, srv_endpoint ep, int model, int status, int64_t dur_ns)
{
    if ((unsigned)ep >= SRV_EP_COUNT)
        ep = SRV_EP_OTHER;
    if (model < -1 || model >= m->n_models)
        model = -1;
    size_t idx = ((size_t)ep * (size_t)(m->n_models + 1) + (size_t)(model + 1)) * N_STATUS +
                 (size_t)status_index(status);
    atomic_fetch_add_explicit(&m->requests[idx], 1, memory_order_relaxed);
    hist_observe(&m->req_dur[ep], &DUR, (double)dur_ns);
}

void srv_metrics_job(srv_metrics *m, int model, int64_t queue_ns, int64_t infer_ns)
{
    if (model < 0 || model >= m->n_models)
        return;
    hist_observe(&m->queue_dur[model], &DUR, (double)queue_ns);
    hist_observe(&m->infer_dur[model], &DUR, (double)infer_ns);
}

void srv_metrics_batch(srv_metrics *m, int model, int sequences, int tokens)
{
    if (model < 0 || model >= m->n_models)
        return;
    hist_observe(&m->batch_size[model], &SIZE, sequences);
    hist_observe(&m->batch_tokens[model], &TOK, tokens);
}

void srv_metrics_feedback_items(srv_metrics *m, int model, int n)
{
    if (model >= 0 && model < m->n_models && n > 0)
        atomic_fetch_add_explicit(&m->fb_items[model], (uint64_t)n, memory_order_relaxed);
}

void srv_metrics_feedback_error(srv_metrics *m, int model)
{
    if (model >= 0 && model < m->n_models)
        atomic_fetch_add_explicit(&m->fb_errors[model], 1, memory_order_relaxed);
}

void srv_metrics_feedback_fsync(srv_metrics *m)
{
    atomic_fetch_add_explicit(&m->fb_fsyncs, 1, memory_order_relaxed);
}

static void replace(char **dst, const char *s)
{
    char *n = strdup(s ? s : "");
    if (n) {
        free(*dst);
        *dst = n;
    }
}

void srv_metrics_model_info(srv_metrics *m, int model, const char *version, const char *task,
                            const char *architecture, const char *device)
{
    if (model < 0 || model >= m->n_models)
        return;
    pthread_mutex_lock(&m->info_lock);
    replace(&m->info[model].version, version);
    replace(&m->info[model].task, task);
    replace(&m->info[model].arch, architecture);
    replace(&m->info[model].device, device);
    pthread_mutex_unlock(&m->info_lock);
}

void srv_metrics_reload(srv_metrics *m, int model, int ok, int64_t load_ns, int64_t warm_ns)
{
    if (model < 0 || model >= m->n_models)
        return;
    pthread_mutex_lock(&m->info_lock);
    model_info *in = &m->info[model];
    if (ok) {
        in->reloads_ok++;
        in->load_s = (double)load_ns / 1e9;
        in->warm_s = (double)warm_ns / 1e9;
    } else {
        in->reloads_rejected++;
    }
    pthread_mutex_unlock(&m->info_lock);
}

/* A label value with \, " and newline escaped as the format asks. */
static void label(srv_buf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            srv_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            srv_buf_puts(b, "\\n");
        else
            srv_buf_put(b, s, 1);
    }
}

static void hist_render(srv_buf *b, const char *name, const char *lname, const char *lval,
                        const hist *h, const hist_spec *s)
{
    uint64_t cum = 0;
    for (int i = 0; i <= s->n; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        srv_buf_printf(b, "%s_bucket{%s=\"", name, lname);
        label(b, lval);
        if (i < s->n)
            srv_buf_printf(b, "\",le=\"%g\"} %llu\n", s->le[i] / s->scale, (unsigned long long)cum);
        else
            srv_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    srv_buf_printf(b, "%s_sum{%s=\"", name, lname);
    label(b, lval);
    srv_buf_printf(b, "\"} %.9g\n",
                   (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / s->scale);
    srv_buf_printf(b, "%s_count{%s=\"", name, lname);
    label(b, lval);
    /* count >= the buckets read above: observations may land in between. */
    srv_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
}

static void per_model_hist(srv_buf *b, srv_metrics *m, const char *name, const char *help,
                           const hist *h, const hist_spec *s)
{
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < m->n_models; i++)
        hist_render(b, name, "model", m->names[i], &h[i], s);
}

char *srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, size_t *len)
{
    srv_buf b;
    srv_buf_init(&b);

    srv_buf_puts(&b, "# HELP nlpd_requests_total Requests answered, by endpoint, model and "
                     "HTTP status.\n# TYPE nlpd_requests_total counter\n");
    for (int e = 0; e < SRV_EP_COUNT; e++)
        for (int mi = -1; mi < m->n_models; mi++)
            for (int s = 0; s < N_STATUS; s++) {
                size_t idx = ((size_t)e * (size_t)(m->n_models + 1) + (size_t)(mi + 1)) * N_STATUS +
                             (size_t)s;
                uint64_t v = atomic_load_explicit(&m->requests[idx], memory_order_relaxed);
                if (!v)
                    continue;
                srv_buf_printf(&b, "nlpd_requests_total{endpoint=\"%s\",model=\"",
                               srv_endpoint_name((srv_endpoint)e));
                label(&b, mi >= 0 ? m->names[mi] : "");
                if (s < N_STATUS - 1)
                    srv_buf_printf(&b, "\",status=\"%d\"} %llu\n", statuses[s],
                                   (unsigned long long)v);
                else
                    srv_buf_printf(&b, "\",status=\"other\"} %llu\n", (unsigned long long)v);
            }

    srv_buf_puts(&b, "# HELP nlpd_request_duration_seconds Time from request arrival to "
                     "response.\n# TYPE nlpd_request_duration_seconds histogram\n");
    for (int e = 0; e < SRV_EP_COUNT; e++)
        hist_render(&b, "nlpd_request_duration_seconds", "endpoint",
                    srv_endpoint_name((srv_endpoint)e), &m->req_dur[e], &DUR);
    per_model_hist(&b, m, "nlpd_queue_duration_seconds",
                   "Time a request waited in its model's queue.", m->queue_dur, &DUR);
    per_model_hist(&b, m, "nlpd_inference_duration_seconds",
                   "Compute time of the batch that ran a request.", m->infer_dur, &DUR);
    per_model_hist(&b, m, "nlpd_batch_size", "Sequences per batch.", m->batch_size, &SIZE);
    per_model_hist(&b, m, "nlpd_batch_tokens", "Tokens per batch, padding counted.",
                   m->batch_tokens, &TOK);

    srv_buf_puts(&b, "# HELP nlpd_queue_depth Sequences queued per model.\n"
                     "# TYPE nlpd_queue_depth gauge\n");
    for (int i = 0; i < m->n_models; i++) {
        srv_buf_puts(&b, "nlpd_queue_depth{model=\"");
        label(&b, m->names[i]);
        srv_buf_printf(&b, "\"} %d\n", g && g->queue_depth ? g->queue_depth[i] : 0);
    }

    static const char *const fb_help[2] = {
        "Feedback items acknowledged (written and synced to the feedback log).",
        "Feedback requests refused with 503 because the log could not be written."};
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "nlpd_feedback_errors_total" : "nlpd_feedback_items_total";
        srv_buf_printf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, fb_help[k], name);
        for (int i = 0; i < m->n_models; i++) {
            srv_buf_printf(&b, "%s{model=\"", name);
            label(&b, m->names[i]);
            srv_buf_printf(&b, "\"} %llu\n", (unsigned long long)atomic_load_explicit(
                               k ? &m->fb_errors[i] : &m->fb_items[i], memory_order_relaxed));
        }
    }
    srv_buf_printf(&b, "# HELP nlpd_feedback_fsyncs_total fdatasync calls of the feedback log "
                       "writer (one per model file per group of requests).\n"
                       "# TYPE nlpd_feedback_fsyncs_total counter\nnlpd_feedback_fsyncs_total %llu\n",
                   (unsigned long long)atomic_load_explicit(&m->fb_fsyncs, memory_order_relaxed));

    srv_buf_puts(&b, "# HELP nlpd_model_info Served model versions.\n"
                     "# TYPE nlpd_model_info gauge\n");
    pthread_mutex_lock(&m->info_lock);
    for (int i = 0; i < m->n_models; i++) {
        const model_info *in = &m->info[i];
        if (!in->version)
            continue;
        srv_buf_puts(&b, "nlpd_model_info{model=\"");
        label(&b, m->names[i]);
        srv_buf_puts(&b, "\",version=\"");
        label(&b, in->version);
        srv_buf_puts(&b, "\",task=\"");
        label(&b, in->task);
        srv_buf_puts(&b, "\",architecture=\"");
        label(&b, in->arch);
        srv_buf_puts(&b, "\",device=\"");
        label(&b, in->device);
        srv_buf_puts(&b, "\"} 1\n");
    }
    srv_buf_puts(&b, "# HELP nlpd_model_reloads_total New versions swapped in (result=\"success\") "
                     "or rejected (result=\"rejected\"), by model.\n"
                     "# TYPE nlpd_model_reloads_total counter\n");
    for (int i = 0; i < m->n_models; i++)
        for (int ok = 1; ok >= 0; ok--) {
            srv_buf_puts(&b, "nlpd_model_reloads_total{model=\"");
            label(&b, m->names[i]);
            srv_buf_printf(&b, "\",result=\"%s\"} %llu\n", ok ? "success" : "rejected",
                           (unsigned long long)(ok ? m->info[i].reloads_ok
                                                   : m->info[i].reloads_rejected));
        }
    static const char *const gauges[2][2] = {
        {"nlpd_model_load_seconds", "Time to verify and load the version serving now."},
        {"nlpd_model_warmup_seconds", "Time to warm up the version serving now."}};
    for (int k = 0; k < 2; k++) {
        srv_buf_printf(&b, "# HELP %s %s\n# TYPE %s gauge\n", gauges[k][0], gauges[k][1],
                       gauges[k][0]);
        for (int i = 0; i < m->n_models; i++) {
            if (!m->info[i].version)
                continue;
            srv_buf_printf(&b, "%s{model=\"", gauges[k][0]);
            label(&b, m->names[i]);
            srv_buf_printf(&b, "\"} %.6f\n", k ? m->info[i].warm_s : m->info[i].load_s);
        }
    }
    pthread_mutex_unlock(&m->info_lock);

    srv_buf_printf(&b,
                   "# HELP nlpd_ready 1 when every model is loaded and warm and not draining.\n"
                   "# TYPE nlpd_ready gauge\nnlpd_ready %d\n"
                   "# HELP nlpd_draining 1 after SIGTERM/SIGINT.\n"
                   "# TYPE nlpd_draining gauge\nnlpd_draining %d\n"
                   "# HELP nlpd_requests_in_flight Requests received and not yet answered.\n"
                   "# TYPE nlpd_requests_in_flight gauge\nnlpd_requests_in_flight %d\n",
                   g ? g->ready : 0, g ? g->draining : 0, g ? g->in_flight : 0);
    return srv_buf_take(&b, len);
}
