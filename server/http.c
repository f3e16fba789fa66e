/* http.c - see http.h. */
#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

struct srv_http {
    srv_server *srv;
    struct MHD_Daemon *d;
    uv_poll_t poll;
    uv_timer_t timer;       /* MHD's own timeouts */
    uv_timer_t idle_timer;  /* runs the idle callback outside MHD */
    uv_async_t async;       /* batcher -> loop: jobs completed */
    pthread_mutex_t done_lock;
    srv_req *done_head, *done_tail;
    srv_req *live;          /* every request not yet freed */
    int port;
    void (*idle_cb)(void *);
    void *idle_arg;
    uint64_t rid_seed, rid_count;
};

/* ------------------------------------------------------------ requests */

static void req_free(srv_req *r)
{
    srv_http *h = r->srv->http;
    if (r->live_prev)
        r->live_prev->live_next = r->live_next;
    else if (h->live == r)
        h->live = r->live_next;
    if (r->live_next)
        r->live_next->live_prev = r->live_prev;
    if (r->route && r->route->handler)
        r->route->handler->cleanup(r);
    free(r->body);
    free(r->resp);
    free(r);
}

/* splitmix64: ids need to be unique, not secret. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Use the client's X-Request-Id when it is a plain token (so it is safe to
 * log and echo), else make one. */
static void req_set_id(srv_http *h, srv_req *r, const char *given)
{
    size_t n = given ? strlen(given) : 0;
    int ok = n > 0 && n < sizeof r->rid;
    for (size_t i = 0; ok && i < n; i++) {
        char c = given[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             strchr("-_.:/+=@", c) != NULL;
    }
    if (ok)
        memcpy(r->rid, given, n + 1);
    else
        snprintf(r->rid, sizeof r->rid, "%016llx",
                 (unsigned long long)mix(h->rid_seed + ++h->rid_count));
}

static const char *get_header(void *conn, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)conn, MHD_HEADER_KIND, name);
}

static srv_req *req_new(srv_http *h, struct MHD_Connection *c, const char *url, const char *method)
{
    srv_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = h->srv;
    r->conn = c;
    r->t_start = srv_now_ns();
    r->model_index = -1;
    r->ep = SRV_EP_OTHER;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    req_set_id(h, r, get_header(c, "X-Request-Id"));
    r->live_next = h->live;
    if (h->live)
        h->live->live_prev = r;
    h->live = r;
    return r;
}

/* ------------------------------------------------------------ MHD driving */

static void run_mhd(srv_http *h);

static void on_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void run_mhd(srv_http *h)
{
    if (!h->d)
        return;
    MHD_run(h->d);
    MHD_UNSIGNED_LONG_LONG to = 0;
    if (MHD_get_timeout(h->d, &to) == MHD_YES)
        uv_timer_start(&h->timer, on_timer, to, 0);
    else
        uv_timer_stop(&h->timer);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status, (void)events;
    run_mhd(p->data);
}

static enum MHD_Result send_response(srv_http *h, srv_req *r)
{
    char *body = r->resp;
    size_t len = r->resp_len;
    r->resp = NULL;
    if (!body) {
        srv_buf b;
        srv_buf_init(&b);
        srv_buf_puts(&b, "{\"error\":{\"code\":");
        srv_buf_json_str(&b, r->err.code ? r->err.code : "internal",
                         strlen(r->err.code ? r->err.code : "internal"));
        srv_buf_puts(&b, ",\"message\":");
        srv_buf_json_str(&b, r->err.message, strlen(r->err.message));
        srv_buf_puts(&b, "}");
        if (r->model) {
            srv_buf_puts(&b, ",\"model\":");
            srv_buf_json_str(&b, r->model->conf->name, strlen(r->model->conf->name));
            /* The version that answered, else the one serving now. */
            srv_version *cur = r->version[0] ? NULL : srv_model_slot_acquire(r->model->slot);
            const char *v = r->version[0] ? r->version : cur ? cur->name : "";
            if (*v) {
                srv_buf_puts(&b, ",\"version\":");
                srv_buf_json_str(&b, v, strlen(v));
            }
            srv_version_unref(cur);
        }
        srv_buf_puts(&b, "}\n");
        body = srv_buf_take(&b, &len);
        if (!r->status)
            r->status = 500;
    }
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", r->resp_type ? r->resp_type : "application/json");
    MHD_add_response_header(resp, "X-Request-Id", r->rid);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->allow)
        MHD_add_response_header(resp, "Allow", r->allow);
    if (r->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (atomic_load(&h->srv->draining))
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->phase = SRV_REQ_SENT;
    return ret;
}

/* Back on the loop thread with a response (or SRV_REQ_CLOSE): resume the
 * connection; MHD then calls on_access, which queues the response. */
static void req_resume(srv_http *h, srv_req *r)
{
    (void)h;
    r->busy = 0;
    if (r->phase != SRV_REQ_CLOSE)
        r->phase = SRV_REQ_READY;
    MHD_resume_connection(r->conn);
}

/* A request finished its pool step or left the batcher: if its connection
 * went away meanwhile, free it and say so. */
static int reap_orphan(srv_req *r)
{
    /* After srv_http_stop every connection is gone, whether or not MHD
     * reported it (suspended ones may not be). */
    if (!r->orphan && r->srv->http->d)
        return 0;
    req_free(r);
    return 1;
}

static void render_work(uv_work_t *w)
{
    srv_req *r = w->data;
    r->route->handler->render(r);
}

static void after_render(uv_work_t *w, int status)
{
    (void)status;
    srv_req *r = w->data;
    srv_http *h = r->srv->http;
    if (reap_orphan(r))
        return;
    r->route->handler->cleanup(r);
    req_resume(h, r);
    run_mhd(h);
}

void srv_req_done(srv_req *r)
{
    srv_http *h = r->srv->http;
    pthread_mutex_lock(&h->done_lock);
    r->next_done = NULL;
    if (h->done_tail)
        h->done_tail->next_done = r;
    else
        h->done_head = r;
    h->done_tail = r;
    pthread_mutex_unlock(&h->done_lock);
    uv_async_send(&h->async);
}

/* Batcher thread: has the client closed its end? A peer's FIN or RST shows
 * as recv() == 0 or an error other than EAGAIN. Limits: a client that
 * half-closes after sending (shutdown(SHUT_WR)) looks gone; one that pipelines
 * its next request looks present until that request is read. */
int srv_req_client_gone(void *arg)
{
    srv_req *r = arg;
    if (r->fd < 0)
        return 0;
    char c;
    ssize_t n = recv(r->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return 1;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

static srv_req *take_done(srv_http *h)
{
    pthread_mutex_lock(&h->done_lock);
    srv_req *list = h->done_head;
    h->done_head = h->done_tail = NULL;
    pthread_mutex_unlock(&h->done_lock);
    return list;
}

static void on_async(uv_async_t *a)
{
    srv_http *h = a->data;
    srv_req *next;
    for (srv_req *r = take_done(h); r; r = next) {
        next = r->next_done;
        if (reap_orphan(r))
            continue;
        const srv_handler *hd = r->route->handler;
        if ((!hd->finished || hd->finished(r) == 0) && hd->render) {
            r->work.data = r;
            if (uv_queue_work(h->srv->loop, &r->work, render_work, after_render) == 0)
                continue;
            srv_req_error(r, 500, "internal", "cannot schedule the response");
        }
        if (r->status == 499)
            r->phase = SRV_REQ_CLOSE; /* the client went away */
        hd->cleanup(r);
        req_resume(h, r);
    }
    run_mhd(h);
}

static void prepare_work(uv_work_t *w)
{
    srv_req *r = w->data;
    r->route->handler->prepare(r);
}

/* The request leaves the "arriving" count (before it is submitted: a batcher woken by the
 * submit must not wait for it). */
static void req_arrived(srv_req *r)
{
    if (r->arriving) {
        r->arriving = 0;
        atomic_fetch_sub_explicit(&r->srv->arriving, 1, memory_order_release);
    }
}

static void after_prepare(uv_work_t *w, int status)
{
    (void)status;
    srv_req *r = w->data;
    srv_http *h = r->srv->http;
    req_arrived(r);
    if (reap_orphan(r))
        return;
    const srv_handler *hd = r->route->handler;
    if (r->status == 0 && hd->submit && hd->submit(r) == 0)
        return; /* in the batcher (or a reload): srv_req_done brings it back */
    if (r->status == 0) /* a handler without submit answers in prepare */
        srv_req_error(r, 500, "internal", "the request produced no response");
    hd->cleanup(r);
    req_resume(h, r);
    run_mhd(h);
}

static void append_body(srv_req *r, const char *data, size_t n)
{
    size_t limit = r->srv->limits.max_body_bytes;
    if (r->body_too_large)
        return;
    if (r->body_len + n > limit) {
        r->body_too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + n > r->body_cap) {
        size_t nc = r->body_cap ? r->body_cap : 4096;
        while (nc < r->body_len + n)
            nc *= 2;
        if (nc > limit)
            nc = limit;
        char *nb = realloc(r->body, nc);
        if (!nb) {
            r->body_too_large = 1; /* treated as too large: we cannot hold it */
            return;
        }
        r->body = nb;
        r->body_cap = nc;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    srv_http *h = cls;
    srv_req *r = *con_cls;
    if (!r) {
        if (!(r = req_new(h, c, url, method)))
            return MHD_NO;
        *con_cls = r;
        h->srv->in_flight++;
        long long cl = -1;
        const char *cls_h = get_header(c, "Content-Length");
        if (cls_h) {
            char *end;
            errno = 0;
            cl = strtoll(cls_h, &end, 10);
            if (errno || *end || cl < 0)
                cl = -1;
        }
        if (srv_route_request(r, url, method, get_header, cl) == SRV_ROUTE_BODY) {
            r->phase = SRV_REQ_BODY;
            return MHD_YES;
        }
        /* A body we refuse by its declared size is not read: answer now
         * (MHD then closes the connection). Otherwise answer from the last
         * call: MHD keeps a connection alive only for responses queued
         * after the request was read completely. */
        if (r->status == 413)
            return send_response(h, r);
        r->phase = SRV_REQ_READY;
        return MHD_YES;
    }
    switch (r->phase) {
    case SRV_REQ_BODY:
        if (*upload_size) {
            append_body(r, upload, *upload_size);
            *upload_size = 0;
            return MHD_YES;
        }
        if (r->body_too_large) {
            srv_req_error(r, 413, "payload_too_large", "the body is over the limit of %zu bytes",
                          r->srv->limits.max_body_bytes);
            return send_response(h, r);
        }
        r->phase = SRV_REQ_WORKING;
        r->busy = 1;
        r->work.data = r;
        r->arriving = 1;
        atomic_fetch_add_explicit(&h->srv->arriving, 1, memory_order_release);
        MHD_suspend_connection(c);
        if (uv_queue_work(h->srv->loop, &r->work, prepare_work, after_prepare) != 0) {
            req_arrived(r);
            srv_req_error(r, 500, "internal", "cannot schedule the request");
            req_resume(h, r);
        }
        return MHD_YES;
    case SRV_REQ_READY:
        if (*upload_size) { /* a body we do not need (error decided from the headers) */
            *upload_size = 0;
            return MHD_YES;
        }
        return send_response(h, r);
    case SRV_REQ_CLOSE:
        return MHD_NO;
    case SRV_REQ_SENT:
        *upload_size = 0; /* answered early (e.g. 413): drop the rest */
        return MHD_YES;
    default:
        return MHD_YES;
    }
}

static void on_idle_timer(uv_timer_t *t)
{
    srv_http *h = t->data;
    if (h->idle_cb)
        h->idle_cb(h->idle_arg);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    srv_http *h = cls;
    srv_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    /* 499: the client left before it was answered (nginx's convention). */
    int status = r->phase == SRV_REQ_SENT ? r->status : 499;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->phase == SRV_REQ_SENT)
        srv_log(SRV_LOG_DEBUG, r->rid, "response not fully sent (termination code %d)", (int)toe);
    int64_t dur = srv_now_ns() - r->t_start;
    srv_metrics_request(h->srv->metrics, r->ep, r->model_index, status, dur);
    srv_log(status >= 500 && status != 503 ? SRV_LOG_WARN : SRV_LOG_INFO, r->rid,
            "%s %s %d %.3fms%s%s%s%s", r->method, r->path, status, (double)dur / 1e6,
            r->model ? " model=" : "", r->model ? r->model->conf->name : "",
            status >= 400 && r->err.code ? " error=" : "",
            status >= 400 && r->err.code ? r->err.code : "");
    h->srv->in_flight--;
    if (r->busy)
        r->orphan = 1; /* freed when its pool step or job comes back */
    else
        req_free(r);
    if (atomic_load(&h->srv->draining) && h->srv->in_flight == 0 && h->idle_cb)
        uv_timer_start(&h->idle_timer, on_idle_timer, 0, 0);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    srv_log(SRV_LOG_WARN, NULL, "http: %s", msg);
}

srv_http *srv_http_start(srv_server *s, const char *host, int port, char *err, size_t cap)
{
    srv_http *h = calloc(1, sizeof *h);
    struct addrinfo hints = {0}, *ai = NULL;
    if (!h) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    h->srv = s;
    s->http = h;
    pthread_mutex_init(&h->done_lock, NULL);
    h->rid_seed = (uint64_t)srv_now_ns() ^ ((uint64_t)getpid() << 32);

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai || !ai) {
        snprintf(err, cap, "listen: cannot resolve \"%s\": %s", host, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    const srv_config *c = s->cfg;
    h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_access, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)c->connection_timeout_s,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        snprintf(err, cap, "listen: cannot listen on %s:%d (see the message above)", host, port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : port;
    di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        snprintf(err, cap, "listen: libmicrohttpd has no epoll fd");
        goto fail_daemon;
    }
    uv_timer_init(s->loop, &h->timer);
    uv_timer_init(s->loop, &h->idle_timer);
    uv_async_init(s->loop, &h->async, on_async);
    uv_poll_init(s->loop, &h->poll, di->epoll_fd);
    h->timer.data = h->idle_timer.data = h->async.data = h->poll.data = h;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    run_mhd(h);
    return h;
fail_daemon:
    MHD_stop_daemon(h->d);
fail:
    pthread_mutex_destroy(&h->done_lock);
    s->http = NULL;
    free(h);
    return NULL;
}

int srv_http_port(const srv_http *h)
{
    return h->port;
}

void srv_http_on_idle(srv_http *h, void (*cb)(void *), void *arg)
{
    h->idle_cb = cb;
    h->idle_arg = arg;
}

void srv_http_quiesce(srv_http *h)
{
    if (!h->d)
        return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd); /* after quiescing, the listening socket is ours to close */
}

void srv_http_stop(srv_http *h)
{
    if (h->d) {
        /* MHD refuses to stop with suspended connections: resume them to be
         * closed (on_access answers SRV_REQ_CLOSE with MHD_NO); their requests
         * stay busy and become orphans, freed when they come back. */
        int resumed = 0;
        for (srv_req *r = h->live; r; r = r->live_next)
            if (r->phase == SRV_REQ_WORKING) {
                r->phase = SRV_REQ_CLOSE;
                MHD_resume_connection(r->conn);
                resumed++;
            }
        for (int i = 0; resumed && i < 4; i++)
            MHD_run(h->d);
        uv_poll_stop(&h->poll);
        MHD_stop_daemon(h->d);
        h->d = NULL;
    }
    srv_req *next;
    for (srv_req *r = take_done(h); r; r = next) {
        next = r->next_done;
        reap_orphan(r); /* h->d is NULL: always frees */
    }
    uv_close((uv_handle_t *)&h->poll, NULL);
    uv_close((uv_handle_t *)&h->timer, NULL);
    uv_close((uv_handle_t *)&h->idle_timer, NULL);
    uv_close((uv_handle_t *)&h->async, NULL);
}

void srv_http_free(srv_http *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->done_lock);
    free(h);
}
