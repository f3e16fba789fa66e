/* server.h - the daemon's shared state: configuration, served models,
 * metrics, auth, and the per-request object that travels between the loop
 * thread, libuv's pool and the batcher (DESIGN §1).
 *
 * Threads: the libuv loop thread owns srv_req objects and everything HTTP;
 * pool threads run a request's prepare/render steps while the loop does not
 * touch it (r->busy); batcher workers only run model code and call
 * job.complete. Fields marked "atomic" are read across threads.
 */
#ifndef NLPD_SRV_SERVER_H
#define NLPD_SRV_SERVER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "api.h"
#include "auth.h"
#include "batcher.h"
#include "config.h"
#include "endpoint.h"
#include "metrics.h"
#include "model_slot.h"
#include "nlpd_engine.h"

typedef struct srv_server srv_server;
typedef struct srv_http srv_http;
typedef struct srv_req srv_req;

typedef enum srv_model_status {
    SRV_MODEL_LOADING = 0,
    SRV_MODEL_READY,
    SRV_MODEL_FAILED,
} srv_model_status;

/* A language pair a translate model serves (models.c). */
typedef struct srv_lang_pair {
    char source[32];  /* "" when the model does not say (reachable by name only) */
    char target[32];
    char token[40];   /* ">>xx<<" prepended to each text; "" for none */
} srv_lang_pair;

/* One configured model. Written by the loading thread until status turns
 * READY (release); readers check status first (acquire). */
typedef struct srv_model {
    int index;
    const srv_model_conf *conf;
    srv_server *srv;
    atomic_int status;          /* srv_model_status */
    srv_model_slot *slot;
    srv_batcher *batcher;
    eng_model *model;           /* a reference kept for static info (labels, ...) */
    const eng_model_info *info; /* of `model` */
    char version[64];           /* version being served */
    char device[16];
    int64_t load_ns;
    /* translate: the pairs served, the default first (config source_lang /
     * target_lang + target_token, then one per >>xx<< token of the vocabulary);
     * and the model's generation defaults. */
    srv_lang_pair *pairs;
    int n_pairs;
    eng_translator_info tr_info;
} srv_model;

struct srv_server {
    srv_config *cfg;
    srv_api_limits limits;
    srv_auth *auth;             /* NULL: no authentication */
    srv_metrics *metrics;
    srv_model *models;
    int n_models;
    uv_loop_t *loop;
    srv_http *http;
    atomic_int ready;           /* every model loaded and warm, not draining */
    atomic_int draining;
    int in_flight;              /* requests received, not yet finished (loop thread) */
    int exit_code;
};

/* Request phases (loop thread). */
typedef enum srv_req_phase {
    SRV_REQ_NEW = 0,
    SRV_REQ_BODY,      /* receiving the body of an inference request */
    SRV_REQ_WORKING,   /* suspended: in the pool or in the batcher */
    SRV_REQ_READY,     /* response ready, connection resumed */
    SRV_REQ_CLOSE,     /* client gone: close without answering */
    SRV_REQ_SENT,      /* response queued to MHD */
} srv_req_phase;

struct srv_infer_ops;

struct srv_req {
    srv_server *srv;
    void *conn;                 /* struct MHD_Connection * */
    int fd;                     /* the connection's socket (client-gone probe) */
    char rid[72];               /* X-Request-Id */
    char method[12];
    char path[128];
    srv_endpoint ep;
    int64_t t_start;            /* CLOCK_MONOTONIC ns at arrival */
    srv_req_phase phase;

    /* body */
    char *body;
    size_t body_len, body_cap;
    int body_too_large;

    /* inference (owned by the pool step / batcher while busy) */
    const struct srv_infer_ops *ops;
    srv_api_request api;
    srv_model *model;
    int model_index;            /* for metrics: -1 until resolved */
    srv_job job;
    eng_encoding *enc;          /* job.enc */
    int n_enc;
    void *task_state;           /* per-endpoint data (QA windows, ...) */

    /* response */
    int status;
    char *resp;                 /* malloc'd body (JSON or text) */
    size_t resp_len;
    const char *resp_type;      /* Content-Type; NULL: application/json */
    srv_api_error err;          /* when status >= 400 and resp == NULL */
    const char *allow;          /* 405: Allow header */
    int retry_after;            /* 429/503: seconds, 0 = none */
    char version[64];           /* version that answered, for errors after compute */

    /* ownership across threads */
    int busy;                   /* in the pool or the batcher: do not free */
    int orphan;                 /* connection finished while busy: free when idle */
    uv_work_t work;
    srv_req *next_done;
    srv_req *live_prev, *live_next; /* every request not yet freed (loop thread) */
};

/* QA windowing options for a model (handle_qa.c): the pipeline's defaults,
 * windows capped by its max_seq_len, stride at most half a window. */
void srv_qa_opts_for_model(const eng_model_info *info, eng_qa_opts *o);

/* Set an error response (status, code, formatted message). */
void srv_req_error(srv_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Take over a malloc'd body as the response (type NULL: application/json). */
void srv_req_respond(srv_req *r, int status, char *body, size_t len, const char *type);

/* ---- routes.c: what the loop does with a request's headers. */

typedef enum srv_route_action {
    SRV_ROUTE_RESPOND = 0,   /* r has its response */
    SRV_ROUTE_BODY,          /* an inference request: read the body, then srv_infer_* */
} srv_route_action;

/* Route a new request; runs on the loop thread with the headers available
 * through get_header (name -> value or NULL). content_length: -1 unknown. */
srv_route_action srv_route(srv_req *r, const char *url, const char *method,
                           const char *(*get_header)(void *conn, const char *name),
                           long long content_length);

/* ---- handle_infer.c: the inference pipeline of one request. */

/* Pool thread: parse, validate, resolve the model, tokenize into r->job.
 * 0, or -1 with r's error response set. */
int srv_infer_prepare(srv_req *r);
/* Loop thread: fill the job's callbacks and submit it. 0, or -1 with r's
 * error response set (429 queue_full, 503 draining). */
int srv_infer_submit(srv_req *r, void (*complete)(srv_job *, void *),
                     int (*client_gone)(void *));
/* Loop thread, job finished: map a non-OK status to r's error response and
 * return -1, or 0 when OK (render next). Records queue/inference metrics. */
int srv_infer_finished(srv_req *r);
/* Pool thread: render the JSON response from the job's output. */
void srv_infer_render(srv_req *r);
/* Any thread but concurrent with nothing: free the request's inference state. */
void srv_infer_cleanup(srv_req *r);

/* ---- handle_admin.c: GET endpoints (loop thread). */
void srv_handle_healthz(srv_req *r);
void srv_handle_readyz(srv_req *r);
void srv_handle_metrics(srv_req *r);
void srv_handle_models(srv_req *r, const char *name /* NULL: list */);

/* ---- models.c */

/* Check every model folder exists and has config.json and
 * model.safetensors; allocate s->models. 0, or -1 with a message naming the
 * model and the missing path in err. */
int srv_models_init(srv_server *s, char *err, size_t cap);
/* Load, version, start the batcher and warm up each model (blocking; run off
 * the loop thread). 0, or -1 (reason logged; the model is marked FAILED). */
int srv_models_load(srv_server *s);
/* Stop every batcher: drain what is queued until deadline_ns when drain. */
void srv_models_stop(srv_server *s, int drain, int64_t deadline_ns);
void srv_models_free(srv_server *s);
/* The model that serves ep: by name (NULL: the first configured for ep).
 * NULL with err set (404 model_not_found). */
srv_model *srv_models_find(srv_server *s, srv_endpoint ep, const char *name, srv_api_error *err);
/* /v1/translate: the model and language pair for a request. By name: the
 * given source / target must be among its pairs (a side the model does not
 * declare is not checked); without a target, its default pair. Without a
 * name: the first model in config order serving source -> target (codes
 * compared case-insensitively). NULL with err set (404 model_not_found). */
srv_model *srv_models_find_translate(srv_server *s, const char *name, const char *source,
                                     const char *target, const srv_lang_pair **pair,
                                     srv_api_error *err);
/* 1 when a model of task t serves endpoint ep. */
int srv_task_serves(srv_task t, srv_endpoint ep);

#endif
