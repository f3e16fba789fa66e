/* handle_openapi.c - GET /openapi.json: the OpenAPI 3.1 document of every
 * route (server/openapi.json, built into the binary; tests check that it and
 * the route table agree: nlpd --print-routes). Loop thread. */
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

/* server/openapi.json, NUL-terminated (the Makefile makes this object depend on it). */
__asm__(".section .rodata\n"
        ".balign 16\n"
        ".globl srv_openapi_json\n"
        "srv_openapi_json:\n"
        ".incbin \"server/openapi.json\"\n"
        ".byte 0\n"
        ".previous\n");
extern const char srv_openapi_json[];

void srv_handle_openapi(srv_req *r, const char *arg)
{
    (void)arg;
    size_t len = strlen(srv_openapi_json);
    char *body = malloc(len + 1);
    if (!body) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    memcpy(body, srv_openapi_json, len + 1);
    srv_req_respond(r, 200, body, len, "application/json");
}
