/* handle_versions.c - the admin API of model versions (DESIGN §4 "Hot swap"):
 *   GET  /v1/models/{name}/versions          the versions document (reload.h)
 *   POST /v1/admin/models/{name}/activate    {"version": V}: pin V and serve it (rollback)
 *   POST /v1/admin/models/{name}/unpin       serve the newest valid version again
 *   POST /v1/admin/models/{name}/reload      check the model's source now
 * The POSTs run on the reloader thread and answer once it is done: 200 with
 * the versions document, or an error naming the reason. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "nlpd_repo.h"
#include "reload.h"

static srv_model *model_named(srv_req *r, const char *name)
{
    srv_server *s = r->srv;
    for (int i = 0; name && i < s->n_models; i++)
        if (strcmp(s->models[i].conf->name, name) == 0) {
            r->model = &s->models[i];
            r->model_index = i;
            return &s->models[i];
        }
    srv_req_error(r, 404, "model_not_found", "no model with that name is configured");
    return NULL;
}

void srv_handle_versions(srv_req *r, const char *name)
{
    srv_model *m = model_named(r, name);
    if (!m)
        return;
    srv_buf b;
    srv_buf_init(&b);
    srv_reload_render_versions(r->srv->reload, m, &b);
    srv_buf_puts(&b, "\n");
    size_t len = 0;
    char *body = srv_buf_take(&b, &len);
    if (body)
        srv_req_respond(r, 200, body, len, NULL);
    else
        srv_req_error(r, 500, "internal", "out of memory");
}

/* The request's operation, from its path. */
static srv_reload_op op_of(const srv_req *r)
{
    const char *tail = strrchr(r->route->path, '/');
    return strcmp(tail, "/activate") == 0 ? SRV_RELOAD_ACTIVATE
           : strcmp(tail, "/unpin") == 0  ? SRV_RELOAD_UNPIN
                                          : SRV_RELOAD_CHECK;
}

/* Pool thread: the body ({} or empty; activate: {"version": V}). The version
 * goes to r->task_state (malloc'd). */
static int admin_prepare(srv_req *r)
{
    if (!model_named(r, r->route_arg))
        return -1;
    srv_reload_op op = op_of(r);
    cJSON *doc = r->body_len ? cJSON_ParseWithLength(r->body, r->body_len) : cJSON_CreateObject();
    int rc = -1;
    if (!doc) {
        srv_req_error(r, 400, "malformed_json", "the body is not valid JSON");
        return -1;
    }
    if (!cJSON_IsObject(doc)) {
        srv_req_error(r, 422, "invalid_field", "the body must be a JSON object");
        goto done;
    }
    for (const cJSON *k = doc->child; k; k = k->next)
        if (op != SRV_RELOAD_ACTIVATE || strcmp(k->string, "version") != 0) {
            srv_req_error(r, 422, "invalid_field", "unknown field%s%s", op == SRV_RELOAD_ACTIVATE
                          ? " (the only field is \"version\")" : " (send an empty body or {})",
                          "");
            goto done;
        }
    if (op == SRV_RELOAD_ACTIVATE) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "version");
        if (!cJSON_IsString(v) || !eng_repo_name_valid(v->valuestring)) {
            srv_req_error(r, 422, "invalid_field",
                          "\"version\" must be a version name (letters, digits, '.', '_', '-')");
            goto done;
        }
        if (!(r->task_state = strdup(v->valuestring))) {
            srv_req_error(r, 500, "internal", "out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(doc);
    return rc;
}

static int admin_submit(srv_req *r)
{
    return srv_reload_admin(r->srv->reload, r, r->model, op_of(r), r->task_state);
}

static void admin_cleanup(srv_req *r)
{
    free(r->task_state);
    r->task_state = NULL;
    srv_req_free_parts(r);
}

const srv_handler srv_admin_handler = {
    .prepare = admin_prepare,
    .submit = admin_submit,
    .cleanup = admin_cleanup,
};
