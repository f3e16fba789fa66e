/* log.h - one line per event on stderr, as text or JSON (DESIGN §4).
 * Lines are written with a single write() each, so threads never interleave.
 * Callers must never pass secrets (API keys, HMAC keys) to these functions. */
#ifndef NLPD_SRV_LOG_H
#define NLPD_SRV_LOG_H

typedef enum srv_log_level {
    SRV_LOG_DEBUG = 0,
    SRV_LOG_INFO,
    SRV_LOG_WARN,
    SRV_LOG_ERROR,
} srv_log_level;

/* "debug" | "info" | "warn" | "error" -> level. 0 or -1 when unknown. */
int srv_log_level_parse(const char *s, srv_log_level *out);

/* Minimum level and format (json: 1 = one JSON object per line). Not
 * thread-safe: call before other threads log. Defaults: info, text. */
void srv_log_setup(srv_log_level min, int json);

/* 1 when lines at lvl are written. */
int srv_log_enabled(srv_log_level lvl);

/* Write one line: time, level, request id (may be NULL) and the message.
 * Newlines and control characters in the message are escaped. */
void srv_log(srv_log_level lvl, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
