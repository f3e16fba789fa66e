/* routes.c - the endpoint table and the checks that need only the headers:
 * method, API key, readiness, content type and declared length. Loop thread.
 * Each row names its handler; adding an endpoint is adding a row. */
#include <stdio.h>
#include <string.h>

#include "feedback.h"
#include "handlers.h"
#include "log.h"

/* Inference routes are warmed up with these bodies (srv_infer_warmup). */
static const srv_route routes[] = {
    {"POST", "/v1/embed", SRV_EP_EMBED, SRV_ACCESS_DATA, NULL, &srv_infer_handler,
     &srv_embed_ops, "{\"text\":\"warm up\"}"},
    {"POST", "/v1/sentiment", SRV_EP_SENTIMENT, SRV_ACCESS_DATA, NULL, &srv_infer_handler,
     &srv_sentiment_ops, "{\"text\":\"warm up\"}"},
    {"POST", "/v1/classify", SRV_EP_CLASSIFY, SRV_ACCESS_DATA, NULL, &srv_infer_handler,
     &srv_classify_ops, "{\"text\":\"warm up\"}"},
    {"POST", "/v1/qa", SRV_EP_QA, SRV_ACCESS_DATA, NULL, &srv_infer_handler, &srv_qa_ops,
     "{\"question\":\"Is it warm?\",\"context\":\"It is warm.\"}"},
    /* A short greedy search touches every encoder and decoder weight and the KV cache. */
    {"POST", "/v1/translate", SRV_EP_TRANSLATE, SRV_ACCESS_DATA, NULL, &srv_infer_handler,
     &srv_translate_ops,
     "{\"model\":\"(the model warmed up)\",\"text\":\"warm up\",\"beam_size\":1,\"max_length\":4}"},
    {"POST", "/v1/feedback", SRV_EP_FEEDBACK, SRV_ACCESS_DATA, NULL, &srv_feedback_handler, NULL,
     NULL},
    {"GET", "/v1/models", SRV_EP_MODELS, SRV_ACCESS_DATA, srv_handle_models, NULL, NULL, NULL},
    {"GET", "/v1/models/{name}", SRV_EP_MODELS, SRV_ACCESS_DATA, srv_handle_models, NULL, NULL,
     NULL},
    {"GET", "/v1/models/{name}/versions", SRV_EP_ADMIN, SRV_ACCESS_ADMIN, srv_handle_versions,
     NULL, NULL, NULL},
    {"POST", "/v1/admin/models/{name}/activate", SRV_EP_ADMIN, SRV_ACCESS_ADMIN, NULL,
     &srv_admin_handler, NULL, NULL},
    {"POST", "/v1/admin/models/{name}/unpin", SRV_EP_ADMIN, SRV_ACCESS_ADMIN, NULL,
     &srv_admin_handler, NULL, NULL},
    {"POST", "/v1/admin/models/{name}/reload", SRV_EP_ADMIN, SRV_ACCESS_ADMIN, NULL,
     &srv_admin_handler, NULL, NULL},
    {"GET", "/healthz", SRV_EP_HEALTHZ, SRV_ACCESS_OPEN, srv_handle_healthz, NULL, NULL, NULL},
    {"GET", "/readyz", SRV_EP_READYZ, SRV_ACCESS_OPEN, srv_handle_readyz, NULL, NULL, NULL},
    {"GET", "/metrics", SRV_EP_METRICS, SRV_ACCESS_OPEN, srv_handle_metrics, NULL, NULL, NULL},
    {"GET", "/openapi.json", SRV_EP_OPENAPI, SRV_ACCESS_OPEN, srv_handle_openapi, NULL, NULL,
     NULL},
    /* Compatible routes for existing clients (handle_compat.c); warm-up is the
     * native route's. */
    {"POST", "/v1/embeddings", SRV_EP_OPENAI_EMBEDDINGS, SRV_ACCESS_DATA, NULL,
     &srv_infer_handler, &srv_openai_embed_ops, NULL},
    {"POST", "/embed", SRV_EP_TEI_EMBED, SRV_ACCESS_DATA, NULL, &srv_infer_handler,
     &srv_tei_embed_ops, NULL},
    {"POST", "/predict", SRV_EP_TEI_PREDICT, SRV_ACCESS_DATA, NULL, &srv_infer_handler,
     &srv_tei_predict_ops, NULL},
    {"POST", "/tokenize", SRV_EP_TEI_TOKENIZE, SRV_ACCESS_DATA, NULL,
     &srv_tei_tokenize_handler, NULL, NULL},
};
#define N_ROUTES (sizeof routes / sizeof *routes)

/* Does url match pattern? A "{name}" segment matches one non-empty segment,
 * returned in arg[cap]. */
static int path_match(const char *pattern, const char *url, char *arg, size_t cap)
{
    const char *brace = strstr(pattern, "{name}");
    if (!brace)
        return strcmp(pattern, url) == 0;
    size_t pre = (size_t)(brace - pattern);
    const char *post = brace + 6;
    if (strncmp(url, pattern, pre) != 0)
        return 0;
    const char *seg = url + pre, *end = strchr(seg, '/');
    size_t n = end ? (size_t)(end - seg) : strlen(seg);
    if (n == 0 || n >= cap || strcmp(seg + n, post) != 0)
        return 0;
    memcpy(arg, seg, n);
    arg[n] = 0;
    return 1;
}

void srv_routes_print(FILE *f)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        fprintf(f, "%s %s\n", routes[i].method, routes[i].path);
}

const srv_route *srv_route_for_task(srv_task t)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        if (routes[i].task && routes[i].warmup_body && srv_task_serves(t, routes[i].ep))
            return &routes[i];
    return NULL;
}

/* The one model that can serve ep, or NULL when several (or none) can: then
 * the body decides (srv_model_admit after parsing). */
static srv_model *only_model(srv_server *s, srv_endpoint ep)
{
    srv_model *only = NULL;
    for (int i = 0; i < s->n_models; i++)
        if (srv_task_serves(s->models[i].conf->task, ep)) {
            if (only)
                return NULL;
            only = &s->models[i];
        }
    return only;
}

/* 0 when the request may use the route, else the status refusing it (401
 * no or unknown key, 403 a key of the wrong kind) with r's error set. Admin
 * routes take admin keys only; without admin keys they are open only when no
 * data keys are configured either. */
static int authorize(srv_req *r, srv_access access,
                     const char *(*get_header)(void *, const char *))
{
    const srv_server *s = r->srv;
    if (access == SRV_ACCESS_OPEN)
        return 0;
    const srv_auth *need = access == SRV_ACCESS_ADMIN ? s->admin_auth : s->auth;
    if (!need) {
        if (access == SRV_ACCESS_DATA || !s->auth)
            return 0;
        srv_req_error(r, 403, "forbidden",
                      "the admin API is disabled: configure auth.admin_key_file");
        return 403;
    }
    size_t len = 0;
    const char *key = srv_auth_extract(get_header(r->conn, "Authorization"),
                                       get_header(r->conn, "X-API-Key"), &len);
    if (key && srv_auth_check(need, key, len))
        return 0;
    if (key && access == SRV_ACCESS_ADMIN && s->auth && srv_auth_check(s->auth, key, len)) {
        srv_req_error(r, 403, "forbidden", "this API key may not use the admin API");
        return 403;
    }
    srv_req_error(r, 401, "unauthorized", "missing or invalid %sAPI key",
                  access == SRV_ACCESS_ADMIN ? "admin " : "");
    return 401;
}

srv_route_action srv_route_request(srv_req *r, const char *url, const char *method,
                           const char *(*get_header)(void *conn, const char *name),
                           long long content_length)
{
    srv_server *s = r->srv;
    char arg[128] = "";
    const srv_route *rt = NULL;
    const char *allow = NULL;
    for (size_t i = 0; i < N_ROUTES && !rt; i++) {
        if (!path_match(routes[i].path, url, arg, sizeof arg))
            continue;
        int get = strcmp(routes[i].method, "GET") == 0;
        if (strcmp(method, routes[i].method) == 0 || (get && strcmp(method, "HEAD") == 0))
            rt = &routes[i];
        else
            allow = get ? "GET, HEAD" : routes[i].method;
    }
    if (!rt) {
        if (allow) {
            r->allow = allow;
            srv_req_error(r, 405, "method_not_allowed", "use %s", allow);
        } else {
            srv_req_error(r, 404, "not_found", "no such route");
        }
        return SRV_ROUTE_RESPOND;
    }
    r->route = rt;
    r->ep = rt->ep;
    r->ops = rt->task;
    snprintf(r->route_arg, sizeof r->route_arg, "%s", arg);
    if (authorize(r, rt->access, get_header))
        return SRV_ROUTE_RESPOND;
    if (rt->respond) {
        rt->respond(r, arg[0] ? arg : NULL);
        return SRV_ROUTE_RESPOND;
    }
    if (atomic_load(&s->draining)) {
        r->retry_after = 1;
        srv_req_error(r, 503, "draining", "the server is shutting down");
        return SRV_ROUTE_RESPOND;
    }
    if (rt->task && !atomic_load(&s->ready)) {
        r->retry_after = 1;
        srv_req_error(r, 503, "not_ready", "models are still loading");
        return SRV_ROUTE_RESPOND;
    }
    if (rt->ep == SRV_EP_FEEDBACK && !srv_feedback_enabled(s)) {
        srv_req_error(r, 404, "feedback_not_configured",
                      "this server records no feedback (feedback.dir is not set)");
        return SRV_ROUTE_RESPOND;
    }
    srv_api_error e;
    if (rt->ep == SRV_EP_TRANSLATE && !srv_models_find(s, rt->ep, NULL, &e)) {
        srv_req_error(r, e.status, e.code, "%s", e.message);
        return SRV_ROUTE_RESPOND;
    }
    /* An admin POST may come without a body (and so without a Content-Type). */
    const char *ct = get_header(r->conn, "Content-Type");
    if ((rt->task || ct || content_length > 0) && !srv_api_content_type_ok(ct)) {
        srv_req_error(r, 415, "unsupported_media_type", "send Content-Type: application/json");
        return SRV_ROUTE_RESPOND;
    }
    if (content_length > (long long)s->limits.max_body_bytes) {
        srv_req_error(r, 413, "payload_too_large", "the body is %lld bytes, the limit is %zu",
                      content_length, s->limits.max_body_bytes);
        return SRV_ROUTE_RESPOND;
    }
    if (rt->task) { /* admission, before the body is read */
        if (s->infer_in_flight >= s->cfg->max_in_flight) {
            r->retry_after = 1;
            srv_req_error(r, 429, "queue_full",
                          "the server has %d requests in flight (limits.max_in_flight)",
                          s->infer_in_flight);
            return SRV_ROUTE_RESPOND;
        }
        srv_model *only = only_model(s, rt->ep);
        if (only) {
            if (srv_model_admit(only)) {
                srv_req_model_full(r, only);
                return SRV_ROUTE_RESPOND;
            }
            r->held_model = only;
        }
        s->infer_in_flight++;
        r->admitted = 1;
    }
    return SRV_ROUTE_BODY;
}

int srv_model_admit(srv_model *m)
{
    if (atomic_fetch_add(&m->in_flight, 1) >= srv_model_conf_max_in_flight(m->conf)) {
        atomic_fetch_sub(&m->in_flight, 1);
        return -1;
    }
    return 0;
}

void srv_req_model_full(srv_req *r, const srv_model *m)
{
    r->retry_after = 1;
    srv_req_error(r, 429, "queue_full",
                  "model %s has %d requests in flight (batching.max_in_flight)", m->conf->name,
                  srv_model_conf_max_in_flight(m->conf));
}

void srv_req_release(srv_req *r)
{
    if (r->admitted)
        r->srv->infer_in_flight--;
    if (r->held_model)
        atomic_fetch_sub(&r->held_model->in_flight, 1);
    r->admitted = 0;
    r->held_model = NULL;
}
