/* http.h - libmicrohttpd driven from the libuv loop (DESIGN §1).
 *
 * MHD runs in external-event mode with its own epoll set: that epoll fd is
 * watched by a uv_poll_t, MHD_run runs on readiness, and a uv_timer is armed
 * from MHD_get_timeout. An inference request's connection is suspended while
 * its work is in the pool or the batcher; a uv_async wakes the loop when a
 * job completes, and the connection is resumed and answered from the next
 * access-handler call (MHD queues responses only from that handler).
 * Everything here runs on the loop thread unless stated otherwise.
 */
#ifndef NLPD_SRV_HTTP_H
#define NLPD_SRV_HTTP_H

#include <stddef.h>

#include "server.h"

/* Listen on host:port (port 0: any free port) and start serving on s->loop.
 * NULL with err set when the address cannot be bound. */
srv_http *srv_http_start(srv_server *s, const char *host, int port, char *err, size_t cap);

/* The bound port (useful with port 0). */
int srv_http_port(const srv_http *h);

/* Called on the loop thread, outside MHD, whenever the last in-flight
 * request finishes while s->draining is set. */
void srv_http_on_idle(srv_http *h, void (*cb)(void *arg), void *arg);

/* Stop accepting connections (close the listening socket); connections
 * already open are served until srv_http_stop. */
void srv_http_quiesce(srv_http *h);

/* Close every connection and the daemon, and close the loop handles.
 * Requests still in the pool or the batcher are freed when they come back. */
void srv_http_stop(srv_http *h);

/* Free after the loop has run to completion following srv_http_stop. */
void srv_http_free(srv_http *h);

#endif
