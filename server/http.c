/* http.c - see http.h. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
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
    /* Every open connection (conn_rec), and connections per client address. */
    struct conn_rec *conns;
    struct client_count *clients[256];
    uv_timer_t arrival_timer; /* limits.request_timeout_ms */
    /* Our own listening socket: a new connection waits at the gate until its
     * first header block has arrived and passed the checks libmicrohttpd
     * would otherwise answer with its own HTML (gate.c below). */
    int listen_fd;
    int mhd_epoll_fd;       /* MHD's epoll set (conn_gate) */
    int n_want_gate;        /* connections with want_gate set */
    uv_poll_t accept_poll;
    int accepting;
    struct gate *gates;
    int n_gates;
    void (*idle_cb)(void *);
    void *idle_arg;
    uint64_t rid_seed, rid_count;
};

/* One open connection (MHD's socket context). Loop thread only. */
typedef struct conn_rec {
    srv_http *h;
    int fd;
    unsigned char addr[16];
    int alen;               /* 4 or 16; 0: unknown address (not counted) */
    int64_t t_begin;        /* the current request began to arrive (connection opened, or the
                               previous response was sent) */
    srv_req *r;             /* the request on it, from its headers to its completion */
    int refused;            /* answered by us on the socket: MHD only closes it */
    struct MHD_Connection *mc;
    uv_poll_t *gate_poll;   /* the next request is at the connection's gate (conn_gate) */
    int want_gate;          /* to be gated once MHD has it in its epoll set again */
    int peeked;             /* bytes of it seen there */
    struct conn_rec *prev, *next;
} conn_rec;

typedef struct client_count {
    unsigned char addr[16];
    int alen, n;
    struct client_count *next;
} client_count;

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
    srv_req_release(r);
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

static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    size_t *n = cls;
    *n += strlen(key) + (value ? strlen(value) : 0) + 4; /* "K: V\r\n" */
    return MHD_YES;
}

/* Bytes of the request line and header block as received (near enough). */
static size_t header_bytes(struct MHD_Connection *c, const char *url, const char *method)
{
    size_t n = strlen(method) + strlen(url) + 12;
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header_size, &n);
    return n;
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

static void run_mhd(srv_http *h);

/* ------------------------------------------------------------ the gate
 *
 * libmicrohttpd 0.9.75 answers some malformed requests itself, with HTML (and,
 * for an over-long Content-Length, its header block written twice): a header
 * block over its memory, an unparsable or overflowing Content-Length. So we
 * accept connections ourselves and keep each at the gate, peeking (never
 * reading) until its first request line and header block are complete; those
 * checks are answered in JSON here, and a good connection is handed to MHD
 * (MHD_add_connection) with every byte still in the socket. SO_RCVLOWAT makes
 * the poll wait for more bytes than were peeked. Later requests on a kept-alive
 * connection pass the same checks at the connection's own gate (conn_gate). */

/* A complete JSON error response written on fd (best effort: the socket is
 * non-blocking and the response small), with Connection: close. */
static void sock_send_error(int fd, int status, const char *reason, const char *code,
                            const char *msg, int retry_after, const char *rid)
{
    srv_buf b;
    srv_buf_init(&b);
    srv_buf_puts(&b, "{\"error\":{\"code\":");
    srv_buf_json_str(&b, code, strlen(code));
    srv_buf_puts(&b, ",\"message\":");
    srv_buf_json_str(&b, msg, strlen(msg));
    srv_buf_puts(&b, "}}\n");
    size_t blen = 0;
    char *body = srv_buf_take(&b, &blen);
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n",
                      status, reason, body ? blen : 0);
    if (retry_after > 0)
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "Retry-After: %d\r\n", retry_after);
    if (rid)
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "X-Request-Id: %s\r\n", rid);
    hl += snprintf(head + hl, sizeof head - (size_t)hl, "\r\n");
    struct iovec iov[2] = {{head, (size_t)hl}, {body, body ? blen : 0}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    free(body);
}

/* Why a request head is refused at a gate. */
typedef struct head_verdict {
    int status;
    const char *reason, *code;
    char msg[256];
} head_verdict;

static int head_refuse(head_verdict *v, int status, const char *reason, const char *code,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int head_refuse(head_verdict *v, int status, const char *reason, const char *code,
                       const char *fmt, ...)
{
    v->status = status;
    v->reason = reason;
    v->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof v->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* Check a complete header block hdr[0..n) (ending in CRLF CRLF): 0 to pass it to
 * MHD, -1 when refused (why in v). later: a later request of a kept-alive
 * connection, whose first bytes MHD may already hold (a client that sent them
 * early): its first line is judged only when it ends in " HTTP/x" (any other may
 * be the rest of a line, and MHD closes the connection on a bad request line
 * without an HTML page). */
static int head_check(srv_http *h, const char *hdr, size_t n, int later, head_verdict *v)
{
    const char *eol = memchr(hdr, '\n', n);
    size_t l = eol ? (size_t)(eol - hdr) : 0;
    if (l && hdr[l - 1] == '\r')
        l--;
    const char *sp1 = l ? memchr(hdr, ' ', l) : NULL, *last = l ? memrchr(hdr, ' ', l) : NULL;
    int version_ok = l >= 9 && (memcmp(hdr + l - 9, " HTTP/1.1", 9) == 0 ||
                                memcmp(hdr + l - 9, " HTTP/1.0", 9) == 0);
    /* later: only a line ending in another HTTP version is surely a bad request line */
    int bad = later ? last && hdr + l - last > 6 && memcmp(last, " HTTP/", 6) == 0 && !version_ok
                    : !sp1 || sp1 == hdr || l < 14 || !version_ok;
    if (bad)
        return head_refuse(v, 400, "Bad Request", "malformed_request",
                           "the request line is not METHOD TARGET HTTP/1.x");
    for (const char *p = eol + 1; p < hdr + n;) {
        const char *e = memchr(p, '\n', (size_t)(hdr + n - p));
        size_t ll = e ? (size_t)(e - p) : (size_t)(hdr + n - p);
        if (ll > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
            const char *v0 = p + 15, *end = p + ll;
            while (v0 < end && (*v0 == ' ' || *v0 == '\t'))
                v0++;
            while (end > v0 && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
                end--;
            unsigned long long x = 0;
            int ok = end > v0, over = 0;
            for (const char *q = v0; ok && q < end; q++) {
                ok = *q >= '0' && *q <= '9';
                if (ok && x > (ULLONG_MAX - 9) / 10)
                    over = 1;
                else if (ok)
                    x = x * 10 + (unsigned)(*q - '0');
            }
            if (!ok)
                return head_refuse(v, 400, "Bad Request", "malformed_request",
                                   "Content-Length is not a decimal number");
            /* Values MHD cannot hold; smaller ones over the limit are answered
             * after routing (401, 404... first) by srv_route_request. */
            if (over || x == ULLONG_MAX)
                return head_refuse(v, 413, "Content Too Large", "payload_too_large",
                                   "the body is declared 2^64 bytes long or more, the limit is %zu",
                                   h->srv->limits.max_body_bytes);
        }
        p = e ? e + 1 : hdr + n;
    }
    return 0;
}

enum { HEAD_PASS, HEAD_WAIT, HEAD_REFUSED, HEAD_GONE };

/* Peek at what has arrived on fd (never reading it): HEAD_PASS once a header block
 * is complete and passes head_check; HEAD_WAIT until then (SO_RCVLOWAT set so that
 * the next poll waits for more than *peeked bytes); HEAD_REFUSED (why in v);
 * HEAD_GONE when the peer closed or the socket failed. */
static int head_peek(srv_http *h, int fd, int later, int *peeked, head_verdict *v)
{
    size_t limit = (size_t)h->srv->cfg->max_header_bytes;
    char *buf = malloc(limit + 1);
    if (!buf)
        return HEAD_GONE;
    ssize_t n = recv(fd, buf, limit + 1, MSG_PEEK | MSG_DONTWAIT);
    int rc;
    if (n <= 0) {
        rc = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ? HEAD_GONE
                                                                                   : HEAD_WAIT;
    } else {
        const char *end = memmem(buf, (size_t)n, "\r\n\r\n", 4);
        if (end) {
            rc = head_check(h, buf, (size_t)(end - buf) + 4, later, v) ? HEAD_REFUSED : HEAD_PASS;
        } else if ((size_t)n > limit) {
            rc = HEAD_REFUSED;
            head_refuse(v, 431, "Request Header Fields Too Large", "headers_too_large",
                        "the request line and headers are over %zu bytes "
                        "(limits.max_header_bytes)", limit);
        } else { /* wait for more than what is there */
            *peeked = (int)n;
            int lowat = (int)n + 1;
            setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
            rc = HEAD_WAIT;
        }
    }
    free(buf);
    if (rc == HEAD_PASS) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
    }
    return rc;
}

typedef struct gate {
    srv_http *h;
    int fd;
    struct sockaddr_storage addr;
    socklen_t alen;
    int64_t t0;
    int peeked;             /* bytes seen so far */
    uv_poll_t poll;
    struct gate *prev, *next;
} gate;

static void gate_free_cb(uv_handle_t *p)
{
    free(p->data);
}

/* Leave the gate: unlink, stop polling; close fd unless handed to MHD. */
static void gate_leave(gate *g, int close_fd)
{
    srv_http *h = g->h;
    if (g->prev)
        g->prev->next = g->next;
    else
        h->gates = g->next;
    if (g->next)
        g->next->prev = g->prev;
    h->n_gates--;
    uv_poll_stop(&g->poll);
    if (close_fd)
        close(g->fd);
    g->poll.data = g;
    uv_close((uv_handle_t *)&g->poll, gate_free_cb);
}

static void gate_refuse(gate *g, const head_verdict *v)
{
    sock_send_error(g->fd, v->status, v->reason, v->code, v->msg, 0, NULL);
    srv_log(SRV_LOG_INFO, NULL, "connection refused at the gate: %d %s", v->status, v->msg);
    shutdown(g->fd, SHUT_WR);
    gate_leave(g, 1);
}

static void on_gate(uv_poll_t *p, int status, int events)
{
    (void)events;
    gate *g = p->data;
    srv_http *h = g->h;
    head_verdict v;
    int rc = status < 0 ? HEAD_GONE : head_peek(h, g->fd, 0, &g->peeked, &v);
    if (rc == HEAD_WAIT)
        return;
    if (rc == HEAD_GONE) {
        gate_leave(g, 1);
        return;
    }
    if (rc == HEAD_REFUSED) {
        gate_refuse(g, &v);
        return;
    }
    int fd = g->fd;
    struct sockaddr_storage addr = g->addr;
    socklen_t alen = g->alen;
    gate_leave(g, 0);
    if (MHD_add_connection(h->d, fd, (const struct sockaddr *)&addr, alen) != MHD_YES)
        srv_log(SRV_LOG_WARN, NULL, "http: libmicrohttpd refused a connection (connection limit?)");
    run_mhd(h);
}

static void on_accept(uv_poll_t *p, int status, int events)
{
    (void)events;
    srv_http *h = p->data;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) {
        gate *g = calloc(1, sizeof *g);
        if (!g)
            return;
        g->alen = sizeof g->addr;
        g->fd = accept4(h->listen_fd, (struct sockaddr *)&g->addr, &g->alen,
                        SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (g->fd < 0) {
            free(g);
            return; /* EAGAIN, or an error (EMFILE...): try again on the next readiness */
        }
        if (h->n_gates >= h->srv->cfg->max_connections) {
            close(g->fd);
            free(g);
            continue;
        }
        g->h = h;
        g->t0 = srv_now_ns();
        if (uv_poll_init(h->srv->loop, &g->poll, g->fd)) {
            close(g->fd);
            free(g);
            continue;
        }
        g->poll.data = g;
        g->next = h->gates;
        if (h->gates)
            h->gates->prev = g;
        h->gates = g;
        h->n_gates++;
        uv_poll_start(&g->poll, UV_READABLE | UV_DISCONNECT, on_gate);
    }
}

/* ------------------------------------------------------------ connections */

static conn_rec *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Answer on the socket ourselves, for refusals MHD cannot queue a response
 * for (no request yet, or a body half read): a complete JSON error response
 * with Connection: close, then the socket is shut down so MHD only closes it
 * (on_access refuses anything more from it). Best effort: the socket is
 * non-blocking and the response small. */
static void conn_refuse(conn_rec *cr, int status, const char *reason, const char *code,
                        const char *msg, int retry_after, const char *rid)
{
    if (cr->refused)
        return;
    cr->refused = 1;
    if (cr->fd >= 0) {
        sock_send_error(cr->fd, status, reason, code, msg, retry_after, rid);
        shutdown(cr->fd, SHUT_RDWR);
    }
}

/* The gate of a kept-alive connection's later requests. Between two requests,
 * MHD's interest in the socket is taken out of its epoll set (the entry stays,
 * so that MHD's own removal still works; MHD 0.9.75 registers a connection as
 * EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET with the connection as data.ptr): MHD
 * reads nothing while we peek at the next header block, as at the first gate.
 * A good one gives MHD its interest back (the MOD reports the waiting bytes as
 * a new edge); a bad one is answered in JSON (conn_refuse) and MHD only closes
 * the connection. MHD may already hold the start of the next request (a
 * pipelining client): that request starting (on_access) opens the gate too,
 * and head_check does not judge a first line that may be a header's tail. */
#define CONN_GATE_MHD_EVENTS (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET)

static void conn_want_gate(conn_rec *cr, int want)
{
    if (cr->want_gate != want)
        cr->h->n_want_gate += want ? 1 : -1;
    cr->want_gate = want;
}

static void conn_gate_free_cb(uv_handle_t *p)
{
    free(p);
}

static int conn_gate_mhd_events(conn_rec *cr, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = cr->mc};
    return epoll_ctl(cr->h->mhd_epoll_fd, EPOLL_CTL_MOD, cr->fd, &ev);
}

/* Open the gate (stop peeking); give MHD back its interest unless it is closing
 * the connection (restore 0). */
static void conn_ungate(conn_rec *cr, int restore)
{
    conn_want_gate(cr, 0);
    if (!cr->gate_poll)
        return;
    uv_poll_stop(cr->gate_poll);
    uv_close((uv_handle_t *)cr->gate_poll, conn_gate_free_cb);
    cr->gate_poll = NULL;
    if (!restore)
        return;
    int one = 1;
    setsockopt(cr->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
    if (conn_gate_mhd_events(cr, CONN_GATE_MHD_EVENTS) != 0)
        srv_log(SRV_LOG_WARN, NULL, "http: cannot give a connection back to libmicrohttpd: %s",
                strerror(errno));
}

static void on_conn_gate(uv_poll_t *p, int status, int events)
{
    (void)events;
    conn_rec *cr = p->data;
    srv_http *h = cr->h;
    head_verdict v;
    int rc = status < 0 ? HEAD_GONE : head_peek(h, cr->fd, 1, &cr->peeked, &v);
    if (rc == HEAD_WAIT)
        return;
    if (rc == HEAD_REFUSED) {
        srv_log(SRV_LOG_INFO, NULL, "connection refused at its gate: %d %s", v.status, v.msg);
        conn_refuse(cr, v.status, v.reason, v.code, v.msg, 0, NULL);
    }
    conn_ungate(cr, 1); /* MHD reads the request, or the end of a refused or gone socket */
    run_mhd(h);
}

/* Keep cr's next request at the gate: 0, or -1 while MHD has not put the socket
 * back in its epoll set (after a suspended request MHD first reads until EAGAIN,
 * then adds it: run_mhd retries then). */
static int conn_gate(conn_rec *cr)
{
    if (cr->refused || cr->fd < 0 || !cr->mc || cr->h->mhd_epoll_fd < 0) {
        conn_want_gate(cr, 0);
        return 0;
    }
    if (cr->gate_poll)
        return 0;
    if (conn_gate_mhd_events(cr, EPOLLET) != 0) {
        /* MHD reads on its next pass: judge what has arrived by then already. */
        head_verdict v;
        int peeked = 0, one = 1;
        int rc = head_peek(cr->h, cr->fd, 1, &peeked, &v);
        if (rc == HEAD_WAIT) /* MHD must still be woken by the next byte */
            setsockopt(cr->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        if (rc != HEAD_REFUSED)
            return -1;
        srv_log(SRV_LOG_INFO, NULL, "connection refused at its gate: %d %s", v.status, v.msg);
        conn_refuse(cr, v.status, v.reason, v.code, v.msg, 0, NULL);
        conn_want_gate(cr, 0);
        return 0;
    }
    uv_poll_t *p = malloc(sizeof *p);
    if (!p || uv_poll_init(cr->h->srv->loop, p, cr->fd)) {
        free(p);
        conn_gate_mhd_events(cr, CONN_GATE_MHD_EVENTS);
        conn_want_gate(cr, 0);
        return 0;
    }
    conn_want_gate(cr, 0);
    p->data = cr;
    cr->gate_poll = p;
    cr->peeked = 0;
    uv_poll_start(p, UV_READABLE | UV_DISCONNECT, on_conn_gate);
    return 0;
}

/* After MHD_run: gate the connections whose requests completed in it. */
static void conn_gate_pending(srv_http *h)
{
    for (conn_rec *cr = h->conns; h->n_want_gate > 0 && cr; cr = cr->next)
        if (cr->want_gate)
            conn_gate(cr);
}

static client_count **client_slot(srv_http *h, const unsigned char *addr, int alen)
{
    unsigned hash = 2166136261u;
    for (int i = 0; i < alen; i++)
        hash = (hash ^ addr[i]) * 16777619u;
    client_count **p = &h->clients[hash % (sizeof h->clients / sizeof *h->clients)];
    while (*p && ((*p)->alen != alen || memcmp((*p)->addr, addr, (size_t)alen) != 0))
        p = &(*p)->next;
    return p;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    srv_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_rec *cr = calloc(1, sizeof *cr);
        if (!cr)
            return; /* untracked: no per-client count, no arrival deadline */
        cr->h = h;
        cr->mc = c;
        cr->t_begin = srv_now_ns();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cr->fd = ci ? ci->connect_fd : -1;
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;
        if (sa && sa->sa_family == AF_INET) {
            memcpy(cr->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
            cr->alen = 4;
        } else if (sa && sa->sa_family == AF_INET6) {
            memcpy(cr->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
            cr->alen = 16;
        }
        cr->next = h->conns;
        if (h->conns)
            h->conns->prev = cr;
        h->conns = cr;
        *socket_context = cr;
        if (cr->alen) {
            client_count **slot = client_slot(h, cr->addr, cr->alen);
            if (!*slot && (*slot = calloc(1, sizeof **slot))) {
                memcpy((*slot)->addr, cr->addr, (size_t)cr->alen);
                (*slot)->alen = cr->alen;
            }
            if (!*slot) {
                cr->alen = 0;
                return;
            }
            int limit = h->srv->cfg->max_conns_per_client;
            if (++(*slot)->n > limit && limit > 0) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "this client has more than %d connections open "
                         "(limits.max_connections_per_client)", limit);
                conn_refuse(cr, 429, "Too Many Requests", "too_many_connections", msg, 1, NULL);
                srv_log(SRV_LOG_INFO, NULL, "connection refused: %s", msg);
            }
        }
        return;
    }
    conn_rec *cr = *socket_context;
    (void)c;
    if (!cr)
        return;
    *socket_context = NULL;
    conn_ungate(cr, 0); /* MHD removes the socket from its set and closes it next */
    if (cr->alen) {
        client_count **slot = client_slot(h, cr->addr, cr->alen);
        if (*slot && --(*slot)->n <= 0) {
            client_count *dead = *slot;
            *slot = dead->next;
            free(dead);
        }
    }
    if (cr->prev)
        cr->prev->next = cr->next;
    else
        h->conns = cr->next;
    if (cr->next)
        cr->next->prev = cr->prev;
    free(cr);
}

/* limits.request_timeout_ms: a request still arriving (no complete header
 * block yet, or its body incomplete) after that long since it began is cut
 * off. A body gets 408 JSON; a connection without a request is closed
 * silently (its client may be an idle keep-alive one, which must not read a
 * stray response as the answer to its next request). */
static void on_arrival_timer(uv_timer_t *t)
{
    srv_http *h = t->data;
    const srv_config *c = h->srv->cfg;
    int64_t limit = (int64_t)c->request_timeout_ms * 1000000;
    int64_t gate_limit = limit > 0 ? limit : (int64_t)c->connection_timeout_s * 1000000000;
    int64_t now = srv_now_ns();
    int cut = 0;
    gate *gnext;
    for (gate *g = h->gates; g; g = gnext) { /* no complete header block in time */
        gnext = g->next;
        if (now - g->t0 > gate_limit)
            gate_leave(g, 1);
    }
    for (conn_rec *cr = h->conns; limit > 0 && cr; cr = cr->next) {
        if (cr->refused || now - cr->t_begin <= limit)
            continue;
        srv_req *r = cr->r;
        if (r && r->phase != SRV_REQ_BODY)
            continue; /* arrived: working or answering */
        if (r) {
            char msg[160];
            snprintf(msg, sizeof msg, "the request did not arrive completely within %d ms "
                     "(limits.request_timeout_ms)", h->srv->cfg->request_timeout_ms);
            srv_req_error(r, 408, "request_timeout", "%s", msg);
            r->phase = SRV_REQ_SENT; /* answered here; logged as 408 */
            conn_refuse(cr, 408, "Request Timeout", "request_timeout", msg, 0, r->rid);
        } else {
            cr->refused = 1;
            if (cr->fd >= 0)
                shutdown(cr->fd, SHUT_RDWR);
            conn_ungate(cr, 1); /* MHD sees the end and closes it */
        }
        cut++;
    }
    if (cut)
        run_mhd(h);
}

/* ------------------------------------------------------------ MHD driving */

static void on_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void run_mhd(srv_http *h)
{
    if (!h->d)
        return;
    MHD_run(h->d);
    conn_gate_pending(h);
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
        /* OpenAI's SDK also reads error.type and error.param. */
        if (r->ep == SRV_EP_OPENAI_EMBEDDINGS)
            srv_buf_printf(&b, ",\"type\":\"%s\",\"param\":null",
                           r->status == 401 ? "authentication_error"
                           : r->status >= 500 || r->status == 0 ? "server_error"
                                                                 : "invalid_request_error");
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
    conn_rec *cr = conn_of(c);
    if (cr && cr->refused)
        return MHD_NO; /* answered on the socket already (conn_refuse) */
    if (!r) {
        if (cr)
            conn_ungate(cr, 1); /* MHD held this request already (a pipelining client) */
        if (!(r = req_new(h, c, url, method)))
            return MHD_NO;
        *con_cls = r;
        if (cr)
            cr->r = r;
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
        size_t hb = header_bytes(c, url, method);
        if (hb > (size_t)h->srv->cfg->max_header_bytes) {
            srv_req_error(r, 431, "headers_too_large",
                          "the request line and headers are %zu bytes, the limit is %d "
                          "(limits.max_header_bytes)", hb, h->srv->cfg->max_header_bytes);
        } else if (srv_route_request(r, url, method, get_header, cl) == SRV_ROUTE_BODY) {
            r->phase = SRV_REQ_BODY;
            return MHD_YES;
        }
        /* A refusal decided from the headers (401, 404, 405, 413, 415, 429,
         * 503...) does not read the body: when one is coming, answer now
         * (MHD then closes the connection). Without a body, answer from the
         * last call: MHD keeps a connection alive only for responses queued
         * after the request was read completely. */
        if (cl > 0 || get_header(c, "Transfer-Encoding"))
            return send_response(h, r);
        r->phase = SRV_REQ_READY;
        return MHD_YES;
    }
    switch (r->phase) {
    case SRV_REQ_BODY:
        if (*upload_size) {
            append_body(r, upload, *upload_size);
            *upload_size = 0;
            if (!r->body_too_large)
                return MHD_YES;
        }
        if (r->body_too_large) {
            /* Stop reading as soon as the body passes the limit (a chunked
             * body declares no length). MHD 0.9.75 cannot queue a response
             * while a body is arriving: answer on the socket ourselves. */
            srv_req_error(r, 413, "payload_too_large", "the body is over the limit of %zu bytes",
                          r->srv->limits.max_body_bytes);
            if (*upload_size == 0 && send_response(h, r) == MHD_YES)
                return MHD_YES;
            r->phase = SRV_REQ_SENT;
            if (!cr)
                return MHD_NO;
            conn_refuse(cr, 413, "Content Too Large", "payload_too_large", r->err.message, 0,
                        r->rid);
            return MHD_YES;
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
    srv_http *h = cls;
    srv_req *r = *con_cls;
    conn_rec *cr = conn_of(c);
    if (cr) { /* the next request on this connection begins to arrive now */
        cr->r = NULL;
        cr->t_begin = srv_now_ns();
        if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
            conn_want_gate(cr, 1); /* gated after this MHD_run (conn_gate_pending) */
    }
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
    h->listen_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (h->listen_fd < 0 ||
        setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(h->listen_fd, ai->ai_addr, ai->ai_addrlen) || listen(h->listen_fd, 1024)) {
        snprintf(err, cap, "listen: cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (h->listen_fd >= 0)
            close(h->listen_fd);
        freeaddrinfo(ai);
        goto fail;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    h->port = port;
    if (getsockname(h->listen_fd, (struct sockaddr *)&bound, &blen) == 0)
        h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_NO_LISTEN_SOCKET;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    const srv_config *c = s->cfg;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)c->connection_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            (size_t)c->max_header_bytes * 2 + 16384,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        snprintf(err, cap, "listen: cannot start libmicrohttpd (see the message above)");
        close(h->listen_fd);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        snprintf(err, cap, "listen: libmicrohttpd has no epoll fd");
        goto fail_daemon;
    }
    uv_timer_init(s->loop, &h->timer);
    uv_timer_init(s->loop, &h->idle_timer);
    uv_timer_init(s->loop, &h->arrival_timer);
    uv_async_init(s->loop, &h->async, on_async);
    h->mhd_epoll_fd = di->epoll_fd;
    uv_poll_init(s->loop, &h->poll, di->epoll_fd);
    h->timer.data = h->idle_timer.data = h->async.data = h->poll.data = h;
    h->arrival_timer.data = h;
    int64_t gate_ms = c->request_timeout_ms > 0 ? c->request_timeout_ms
                                                : (int64_t)c->connection_timeout_s * 1000;
    if (gate_ms > 0) {
        uint64_t period = (uint64_t)gate_ms / 4;
        period = period < 20 ? 20 : period > 1000 ? 1000 : period;
        uv_timer_start(&h->arrival_timer, on_arrival_timer, period, period);
    }
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    uv_poll_init(s->loop, &h->accept_poll, h->listen_fd);
    h->accept_poll.data = h;
    uv_poll_start(&h->accept_poll, UV_READABLE, on_accept);
    h->accepting = 1;
    run_mhd(h);
    return h;
fail_daemon:
    MHD_stop_daemon(h->d);
    close(h->listen_fd);
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
    if (!h->accepting)
        return;
    /* New connections are refused from now on (the listening socket is
     * ours); those at the gate still get their answer (503 draining). */
    uv_poll_stop(&h->accept_poll);
    close(h->listen_fd);
    h->accepting = 0;
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
    while (h->gates)
        gate_leave(h->gates, 1);
    srv_http_quiesce(h);
    uv_close((uv_handle_t *)&h->accept_poll, NULL);
    uv_close((uv_handle_t *)&h->poll, NULL);
    uv_close((uv_handle_t *)&h->timer, NULL);
    uv_close((uv_handle_t *)&h->idle_timer, NULL);
    uv_close((uv_handle_t *)&h->arrival_timer, NULL);
    uv_close((uv_handle_t *)&h->async, NULL);
}

void srv_http_free(srv_http *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->done_lock);
    free(h);
}
