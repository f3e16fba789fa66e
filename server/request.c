/* request.c - setting a request's response (server.h): shared by the
 * handlers and the HTTP transport, which therefore need not include each other. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "server.h"

void srv_req_error(srv_req *r, int status, const char *code, const char *fmt, ...)
{
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    r->resp_type = NULL;
    r->status = status;
    r->err.status = status;
    r->err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err.message, sizeof r->err.message, fmt, ap);
    va_end(ap);
}

void srv_req_respond(srv_req *r, int status, char *body, size_t len, const char *type)
{
    free(r->resp);
    r->status = status;
    r->resp = body;
    r->resp_len = len;
    r->resp_type = type;
}

void srv_req_free_parts(srv_req *r)
{
    srv_api_request_free(&r->api);
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    srv_version_unref(r->ver);
    r->ver = NULL;
}
