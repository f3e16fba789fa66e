/* routes.c - routing and the checks that need only the headers: method,
 * API key, readiness, content type and declared length. Loop thread. */
#include <string.h>

#include "log.h"
#include "server.h"

typedef struct route {
    const char *path;
    srv_endpoint ep;
    int post; /* 1: POST with a JSON body; 0: GET/HEAD */
} route;

static const route routes[] = {
    {"/v1/embed", SRV_EP_EMBED, 1},       {"/v1/sentiment", SRV_EP_SENTIMENT, 1},
    {"/v1/classify", SRV_EP_CLASSIFY, 1}, {"/v1/qa", SRV_EP_QA, 1},
    {"/v1/translate", SRV_EP_TRANSLATE, 1}, {"/v1/models", SRV_EP_MODELS, 0},
    {"/healthz", SRV_EP_HEALTHZ, 0},      {"/readyz", SRV_EP_READYZ, 0},
    {"/metrics", SRV_EP_METRICS, 0},
};

static const route *find_route(const char *url, const char **model_name)
{
    *model_name = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (strcmp(url, routes[i].path) == 0)
            return &routes[i];
    static const char prefix[] = "/v1/models/";
    if (strncmp(url, prefix, sizeof prefix - 1) == 0 && url[sizeof prefix - 1] &&
        !strchr(url + sizeof prefix - 1, '/')) {
        *model_name = url + sizeof prefix - 1;
        return &routes[5];
    }
    return NULL;
}

static int authorized(srv_req *r, const char *(*get_header)(void *, const char *))
{
    if (!r->srv->auth)
        return 1;
    size_t len = 0;
    const char *key = srv_auth_extract(get_header(r->conn, "Authorization"),
                                       get_header(r->conn, "X-API-Key"), &len);
    return key && srv_auth_check(r->srv->auth, key, len);
}

srv_route_action srv_route(srv_req *r, const char *url, const char *method,
                           const char *(*get_header)(void *conn, const char *name),
                           long long content_length)
{
    srv_server *s = r->srv;
    const char *model_name;
    const route *rt = find_route(url, &model_name);
    if (!rt) {
        srv_req_error(r, 404, "not_found", "no such route");
        return SRV_ROUTE_RESPOND;
    }
    r->ep = rt->ep;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (rt->post ? strcmp(method, "POST") != 0 : !get) {
        r->allow = rt->post ? "POST" : "GET, HEAD";
        srv_req_error(r, 405, "method_not_allowed", "use %s", r->allow);
        return SRV_ROUTE_RESPOND;
    }
    /* /healthz, /readyz and /metrics stay open; all of /v1 needs a key. */
    if (strncmp(url, "/v1/", 4) == 0 && !authorized(r, get_header)) {
        srv_req_error(r, 401, "unauthorized", "missing or invalid API key");
        return SRV_ROUTE_RESPOND;
    }
    switch (rt->ep) {
    case SRV_EP_HEALTHZ:
        srv_handle_healthz(r);
        return SRV_ROUTE_RESPOND;
    case SRV_EP_READYZ:
        srv_handle_readyz(r);
        return SRV_ROUTE_RESPOND;
    case SRV_EP_METRICS:
        srv_handle_metrics(r);
        return SRV_ROUTE_RESPOND;
    case SRV_EP_MODELS:
        srv_handle_models(r, model_name);
        return SRV_ROUTE_RESPOND;
    default:
        break;
    }
    if (atomic_load(&s->draining)) {
        r->retry_after = 1;
        srv_req_error(r, 503, "draining", "the server is shutting down");
        return SRV_ROUTE_RESPOND;
    }
    if (!atomic_load(&s->ready)) {
        r->retry_after = 1;
        srv_req_error(r, 503, "not_ready", "models are still loading");
        return SRV_ROUTE_RESPOND;
    }
    srv_api_error e;
    if (rt->ep == SRV_EP_TRANSLATE && !srv_models_find(s, rt->ep, NULL, &e)) {
        srv_req_error(r, e.status, e.code, "%s", e.message);
        return SRV_ROUTE_RESPOND;
    }
    if (!srv_api_content_type_ok(get_header(r->conn, "Content-Type"))) {
        srv_req_error(r, 415, "unsupported_media_type", "send Content-Type: application/json");
        return SRV_ROUTE_RESPOND;
    }
    if (content_length > (long long)s->limits.max_body_bytes) {
        srv_req_error(r, 413, "payload_too_large", "the body is %lld bytes, the limit is %zu",
                      content_length, s->limits.max_body_bytes);
        return SRV_ROUTE_RESPOND;
    }
    return SRV_ROUTE_BODY;
}
