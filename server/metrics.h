/* metrics.h - Prometheus metrics (text exposition format 0.0.4).
 *
 * All observe functions are thread-safe and lock-free (relaxed atomics): they
 * are called from the loop thread and from batcher workers. Model info
 * (version labels) is behind a mutex because it changes rarely (hot swap).
 * Metric names:
 *   nlpd_requests_total{endpoint,model,status}           counter
 *   nlpd_request_duration_seconds{endpoint}              histogram (arrival -> response queued)
 *   nlpd_queue_duration_seconds{model}                   histogram (queued -> batch start)
 *   nlpd_inference_duration_seconds{model}               histogram (batch compute)
 *   nlpd_batch_size{model}, nlpd_batch_tokens{model}     histograms (tokens count padding)
 *   nlpd_queue_depth{model}                              gauge (queued sequences)
 *   nlpd_model_info{model,version,task,architecture,device} gauge = 1
 *   nlpd_model_reloads_total{model,result}               counter (success | rejected)
 *   nlpd_model_load_seconds{model}, nlpd_model_warmup_seconds{model} gauges (serving version)
 *   nlpd_ready, nlpd_draining, nlpd_requests_in_flight   gauges
 *   nlpd_feedback_items_total{model}                     counter (items acknowledged: on disk)
 *   nlpd_feedback_errors_total{model}                    counter (requests refused 503: not written)
 *   nlpd_feedback_fsyncs_total                           counter (fdatasync calls of the writer)
 */
#ifndef NLPD_SRV_METRICS_H
#define NLPD_SRV_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"

typedef struct srv_metrics srv_metrics;

/* Metrics for n_models models named names[i] (copied). NULL on OOM. */
srv_metrics *srv_metrics_new(int n_models, const char *const *names);
void srv_metrics_free(srv_metrics *m);

/* One finished request. model: index or -1 (none resolved); status: HTTP
 * status (499 when the client left first). */
void srv_metrics_request(srv_metrics *m, srv_endpoint ep, int model, int status, int64_t dur_ns);
/* One job's time waiting in the queue and its batch's compute time. */
void srv_metrics_job(srv_metrics *m, int model, int64_t queue_ns, int64_t infer_ns);
/* One batch: sequences and tokens with padding. */
void srv_metrics_batch(srv_metrics *m, int model, int sequences, int tokens);
/* POST /v1/feedback: n items of model acknowledged; one request refused
 * because its items could not be written; one fdatasync of the writer. */
void srv_metrics_feedback_items(srv_metrics *m, int model, int n);
void srv_metrics_feedback_error(srv_metrics *m, int model);
void srv_metrics_feedback_fsync(srv_metrics *m);
/* Set (or replace) a model's info labels. Strings are copied; NULL -> "". */
void srv_metrics_model_info(srv_metrics *m, int model, const char *version, const char *task,
                            const char *architecture, const char *device);

/* A reload attempt of a model: ok (a new version serves, with its load and
 * warm-up times) or rejected. */
void srv_metrics_reload(srv_metrics *m, int model, int ok, int64_t load_ns, int64_t warm_ns);

/* Values read at scrape time. queue_depth: n_models entries (may be NULL). */
typedef struct srv_metrics_gauges {
    int ready;
    int draining;
    int in_flight;
    const int *queue_depth;
} srv_metrics_gauges;

/* The whole page, malloc'd (caller frees), *len its length. NULL on OOM. */
char *srv_metrics_render(srv_metrics *m, const srv_metrics_gauges *g, size_t *len);

#endif
