/* reload.h - every model follows its source while the daemon serves (DESIGN
 * §4 "Hot swap"): a repository of signed versions (nlpd_repo.h) or a fixed
 * model folder.
 *
 * Detection: inotify on the folder (uv_fs_event), a periodic rescan for file
 * systems that deliver no events (reload.rescan_interval_s), SIGHUP, and the
 * admin API; events within reload.debounce_ms cause one check.
 *
 * A check runs on the reloader's own thread (one thread at nice 10, so loading
 * never competes with serving for the cores): the version to serve is the
 * pinned one (DIR/PIN) or else the newest complete one not rejected; it is
 * verified (model-signing bundle, digests, signature with the configured
 * key), its memory checked, loaded, warmed up through the real request path,
 * checked unchanged, and swapped in. Requests already holding the old version
 * finish on it; it is freed with its last reference. A version that fails any
 * step is rejected with its reason, logged, counted, and not retried until
 * its files change; the current version keeps serving. A fixed folder is
 * reloaded when its content hash changes.
 */
#ifndef NLPD_SRV_RELOAD_H
#define NLPD_SRV_RELOAD_H

#include "buf.h"
#include "server.h"

typedef struct srv_reload srv_reload;

/* Reloader state for every configured model (no thread yet). NULL on OOM. */
srv_reload *srv_reload_new(srv_server *s);
void srv_reload_free(srv_reload *rl); /* after srv_reload_stop and the loop's end */

/* Start-up, blocking, off the loop: check every model once. A fixed folder
 * that cannot be loaded fails start-up (-1); a repository without a valid
 * version leaves its model not ready (logged) and is followed. 0 or -1. */
int srv_reload_initial(srv_reload *rl);

/* Loop thread, after srv_reload_initial: start the reloader thread, the file
 * watches and the rescan timer. 0 or -1 (logged). */
int srv_reload_start(srv_reload *rl);

/* Loop thread: stop watching (closes the handles), end the thread after its
 * current step; queued admin requests are answered 503. Idempotent. */
void srv_reload_stop(srv_reload *rl);

/* Any thread: ask for a check of model index `model` (-1: every model). */
void srv_reload_request(srv_reload *rl, int model);

/* ---- the admin API (handle_versions.c) */

typedef enum srv_reload_op {
    SRV_RELOAD_CHECK = 0, /* POST .../reload */
    SRV_RELOAD_ACTIVATE,  /* POST .../activate {"version"}: pin it, serve it */
    SRV_RELOAD_UNPIN,     /* POST .../unpin: serve the newest again */
} srv_reload_op;

/* Queue op on model m for request r (version: ACTIVATE's, copied). The
 * reloader sets r's response (the versions document, or an error) and calls
 * srv_req_done(r). 0, or -1 with r's error set. */
int srv_reload_admin(srv_reload *rl, srv_req *r, srv_model *m, srv_reload_op op,
                     const char *version);

/* The versions document of model m into b: source, pinned, serving, and each
 * version with its state (serving / available / rejected / incomplete), reason,
 * load and warm-up times and its metadata (scores). Any thread. */
void srv_reload_render_versions(srv_reload *rl, const srv_model *m, srv_buf *b);

#endif
