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
#include <stdio.h>
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

/* One configured model: a name, its batcher, and the slot holding the
 * version it serves (model_slot.h). status turns READY (release) once a first
 * version serves; readers check status first (acquire). */
typedef struct srv_model {
    int index;
    const srv_model_conf *conf;
    srv_server *srv;
    atomic_int status;          /* srv_model_status */
    srv_model_slot *slot;
    srv_batcher *batcher;
    char device[16];
    atomic_int in_flight;       /* requests admitted for this model (srv_model_admit) */
} srv_model;

struct srv_reload;

struct srv_server {
    srv_config *cfg;
    srv_api_limits limits;
    srv_auth *auth;             /* NULL: no authentication */
    srv_auth *admin_auth;       /* NULL: no admin keys (auth.admin_key_file) */
    struct srv_reload *reload;  /* following model sources (reload.h) */
    srv_metrics *metrics;
    struct srv_feedback *feedback; /* NULL: feedback.dir unset (feedback.h) */
    srv_model *models;
    int n_models;
    uv_loop_t *loop;
    srv_http *http;
    atomic_int ready;           /* every model loaded and warm, not draining */
    atomic_int arriving;        /* requests read but not yet submitted (being parsed):
                                 * batchers wait for batch-mates only while > 0 */
    atomic_int draining;
    int in_flight;              /* requests received, not yet finished (loop thread) */
    int infer_in_flight;        /* inference requests admitted, not yet freed (loop thread) */
    int exit_code;
    /* Optional: called (on a worker thread) when a worker hits a sticky device fault;
     * main.c then drains and exits with status 3, for the supervisor to restart nlpd. */
    void (*on_sticky_fault)(srv_server *s);
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
struct srv_route;

struct srv_req {
    srv_server *srv;
    void *conn;                 /* struct MHD_Connection * */
    int fd;                     /* the connection's socket (client-gone probe) */
    char rid[72];               /* X-Request-Id */
    char method[12];
    char path[128];
    const struct srv_route *route; /* NULL: no such route */
    char route_arg[128];        /* the route's {name}, "" when none */
    srv_endpoint ep;
    int64_t t_start;            /* CLOCK_MONOTONIC ns at arrival */
    srv_req_phase phase;
    int admitted;               /* counted in srv->infer_in_flight */
    srv_model *held_model;      /* counted in held_model->in_flight */

    /* body */
    char *body;
    size_t body_len, body_cap;
    int body_too_large;

    /* inference (owned by the pool step / batcher while busy) */
    const struct srv_infer_ops *ops;
    srv_api_request api;
    srv_model *model;
    srv_version *ver;           /* the version serving this request (a reference) */
    int model_index;            /* for metrics: -1 until resolved */
    int warmup;                 /* a warm-up request (no client, no metrics) */
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
    char version[128];          /* version that answered, for errors after compute */

    /* ownership across threads */
    int busy;                   /* in the pool or the batcher: do not free */
    int arriving;               /* counted in srv->arriving (read, not yet submitted) */
    int orphan;                 /* connection finished while busy: free when idle */
    uv_work_t work;
    srv_req *next_done;
    srv_req *live_prev, *live_next; /* every request not yet freed (loop thread) */
};

/* The most window tokens one QA request may have in all, over its items
 * (handle_qa.c): what batching.max_job_mib allows at the least cost per token. */
long srv_qa_max_request_tokens(const eng_model_info *info, int max_job_mib);

/* Set an error response (status, code, formatted message). */
void srv_req_error(srv_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Take over a malloc'd body as the response (type NULL: application/json). */
void srv_req_respond(srv_req *r, int status, char *body, size_t len, const char *type);

/* Free what every handler may leave in r: the parsed request, the body and
 * the version reference (idempotent; handlers' cleanup steps call it). */
void srv_req_free_parts(srv_req *r);

/* Any thread: r's asynchronous step (a batch, a model reload) has finished;
 * the loop resumes it with its handler's finished() (http.c). */
void srv_req_done(srv_req *r);
/* Any thread: has r's client closed its connection? (http.c) */
int srv_req_client_gone(void *r);

/* ---- routes.c: one row per endpoint. */

typedef enum srv_access {
    SRV_ACCESS_OPEN = 0, /* no key needed (/healthz, /readyz, /metrics) */
    SRV_ACCESS_DATA,     /* a data-plane API key (when keys are configured) */
    SRV_ACCESS_ADMIN,    /* an admin key (admin.api_key_file) */
} srv_access;

/* The steps of a request with a body, after the headers passed routing.
 * prepare and render run on libuv pool threads, the others on the loop. */
typedef struct srv_handler {
    /* Parse and validate the body, do the request's synchronous work: 0 to go
     * on to submit, or -1 with r's response (or error) set. */
    int (*prepare)(srv_req *r);
    /* Optional: start asynchronous work that ends with srv_req_done(r):
     * 0, or -1 with r's error response set. */
    int (*submit)(srv_req *r);
    /* Optional, after submit's work ended: 0 to render, -1 with r's error set. */
    int (*finished)(srv_req *r);
    /* Optional: set r's response after finished. */
    void (*render)(srv_req *r);
    /* Free what prepare/submit left in r (idempotent). */
    void (*cleanup)(srv_req *r);
} srv_handler;

typedef struct srv_route {
    const char *method;           /* "GET" (HEAD answered too) or "POST" */
    const char *path;             /* a "{name}" segment matches one path segment */
    srv_endpoint ep;              /* metrics label */
    srv_access access;
    /* GET: answer from the headers on the loop thread (arg: the {name}). */
    void (*respond)(srv_req *r, const char *arg);
    /* POST: the steps after the body is read. */
    const srv_handler *handler;
    /* Inference routes: the task's steps, and the request a new model version
     * is warmed up with through the real path (JSON body). */
    const struct srv_infer_ops *task;
    const char *warmup_body;
} srv_route;

/* Print every route as "METHOD PATH" lines (nlpd --print-routes). */
void srv_routes_print(FILE *f);

/* The inference route whose task a model of task t serves first (its
 * warm-up), or NULL. */
const srv_route *srv_route_for_task(srv_task t);

typedef enum srv_route_action {
    SRV_ROUTE_RESPOND = 0,   /* r has its response */
    SRV_ROUTE_BODY,          /* read the body, then run r->route->handler */
} srv_route_action;

/* Route a new request; runs on the loop thread with the headers available
 * through get_header (name -> value or NULL). content_length: -1 unknown. */
srv_route_action srv_route_request(srv_req *r, const char *url, const char *method,
                           const char *(*get_header)(void *conn, const char *name),
                           long long content_length);

/* Count a request against m's batching.max_in_flight: 0, or -1 when m is
 * full (not counted). Any thread. */
int srv_model_admit(srv_model *m);
/* Loop thread, when r is freed: give back what admission counted. */
void srv_req_release(srv_req *r);
/* 429 queue_full with Retry-After for a model at its in-flight bound. */
void srv_req_model_full(srv_req *r, const srv_model *m);

struct srv_buf;
/* Append ,"limits":{...} for model m (v: its current version, or NULL): what
 * a request may ask of it, so clients can size requests (handle_infer.c). */
void srv_model_put_limits(struct srv_buf *b, const srv_model *m, const srv_version *v);

/* ---- handle_infer.c: the inference pipeline (parse + tokenize on the pool,
 * the batcher, render on the pool), shared by every inference route. */
extern const srv_handler srv_infer_handler;

/* Run one warm-up request for version v of model m through the real path
 * (parse, tokenize, batcher, render), blocking; off the loop thread.
 * 0, or -1 with the reason in why[cap]. */
int srv_infer_warmup(srv_model *m, srv_version *v, char *why, size_t cap);

/* ---- handle_admin.c: GET endpoints (loop thread). */
void srv_handle_healthz(srv_req *r, const char *arg);
void srv_handle_readyz(srv_req *r, const char *arg);
/* /readyz's body into b; returns the status (200, or 503 with *code the reason:
 * "not_ready", "draining", "device_fault"). */
struct srv_buf;
int srv_readyz_render(srv_server *s, struct srv_buf *b, const char **code);
/* /healthz's body into b (liveness): 200 while the process can still serve, 503 with
 * *code "device_fault" once a worker hit a sticky device fault (the process's CUDA
 * context is lost: only a restart helps). */
int srv_healthz_render(srv_server *s, struct srv_buf *b, const char **code);
void srv_handle_metrics(srv_req *r, const char *arg);
void srv_handle_models(srv_req *r, const char *name /* NULL: list */);

/* ---- handle_versions.c: the admin API of model versions. */
void srv_handle_versions(srv_req *r, const char *name);
extern const srv_handler srv_admin_handler;

/* ---- models.c */

/* Check every model folder exists and has config.json and
 * model.safetensors; allocate s->models. 0, or -1 with a message naming the
 * model and the missing path in err. */
int srv_models_init(srv_server *s, char *err, size_t cap);
/* Start each model's batcher and load its first version (blocking; off the
 * loop thread; reload.h srv_reload_initial). 0, or -1 (reason logged). */
/* ...or SRV_MODELS_LOAD_STOPPED when s->draining was set (a signal) before
 * a model's first version was loaded: loading stopped there. */
enum { SRV_MODELS_LOAD_STOPPED = 1 };
int srv_models_load(srv_server *s);
/* Load the model folder dir as version `name` of m: checked to serve m's
 * task, derived state (translation pairs) built, warmed up through m's
 * batcher. NULL with the reason in why[cap]. Any thread but the loop. */
srv_version *srv_models_load_version(srv_model *m, const char *dir, const char *name, char *why,
                                     size_t cap);
/* Make v (the caller's reference) m's current version: logged, published to
 * the metrics, swapped in atomically; m turns READY. */
void srv_models_serve(srv_model *m, srv_version *v);
/* A folder's content version: the first 12 hex digits of SHA-256 over
 * config.json then model.safetensors. 0 or -1. */
int srv_models_content_version(const char *dir, char *out, size_t cap);
/* Stop every batcher: drain what is queued until deadline_ns when drain. */
void srv_models_stop(srv_server *s, int drain, int64_t deadline_ns);
void srv_models_free(srv_server *s);
/* The model that serves ep: by name (NULL: the first configured for ep).
 * NULL with err set (404 model_not_found). */
srv_model *srv_models_find(srv_server *s, srv_endpoint ep, const char *name, srv_api_error *err);
/* /v1/translate: the model, its current version (*ver, a reference) and the
 * language pair for a request. By name: the given source / target must be
 * among its pairs (a side the model does not declare is not checked); without
 * a target, its default pair. Without a name: the first model in config order
 * serving source -> target (codes compared case-insensitively). NULL with err
 * set (404 model_not_found, 503 not_ready). */
srv_model *srv_models_find_translate(srv_server *s, const char *name, const char *source,
                                     const char *target, srv_version **ver,
                                     const srv_lang_pair **pair, srv_api_error *err);
/* 1 when a model of task t serves endpoint ep. */
int srv_task_serves(srv_task t, srv_endpoint ep);

#endif
