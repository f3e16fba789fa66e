/* feedback.h - POST /v1/feedback (DESIGN §4 "Feedback", README "Feedback"):
 * labelled items for sentiment and classify models, appended durably to the
 * feedback log (feedback_log.h), optionally naming a recent answer by its
 * request id (recent.h).
 *
 * Steps (srv_handler): prepare (pool) parses the body, checks every label
 * against the labels of the model's current version, resolves request ids
 * and renders the log lines; submit (loop) queues them to the log's writer;
 * the writer syncs and calls srv_req_done; finished (loop) answers 202 with
 * the count, or 503 feedback_unavailable with the errno text.
 */
#ifndef NLPD_SRV_FEEDBACK_H
#define NLPD_SRV_FEEDBACK_H

#include "server.h"

typedef struct srv_feedback srv_feedback;

/* Set up s->feedback from s->cfg (after srv_models_init and the metrics):
 * the log writer when feedback.dir is set, the recent-request store when
 * feedback.recent.enabled. Nothing to do (0, s->feedback NULL) without
 * feedback.dir. 0, or -1 with err set. */
int srv_feedback_init(srv_server *s, char *err, size_t cap);
/* Loop thread, before srv_http_stop: write and answer what is queued, then
 * refuse new feedback (503 draining). NULL-safe. */
void srv_feedback_stop(srv_server *s);
void srv_feedback_free(srv_server *s);

extern const srv_handler srv_feedback_handler;

/* Pool thread, after a sentiment/classify request r rendered 200: remember
 * its texts by r->rid when the recent store is enabled. */
void srv_feedback_remember(srv_req *r);

/* 1 when s answers POST /v1/feedback (feedback.dir set). */
int srv_feedback_enabled(const srv_server *s);

#endif
