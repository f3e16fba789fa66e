/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static srv_log_level g_min = SRV_LOG_INFO;
static int g_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int srv_log_level_parse(const char *s, srv_log_level *out)
{
    for (int i = 0; s && i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (srv_log_level)i;
            return 0;
        }
    return -1;
}

void srv_log_setup(srv_log_level min, int json)
{
    g_min = min;
    g_json = json;
}

int srv_log_enabled(srv_log_level lvl)
{
    return lvl >= g_min;
}

/* Append s to b[*n..cap), escaping for JSON (json) or just control
 * characters (text), so that one event is always one line. */
static void put_escaped(char *b, size_t *n, size_t cap, const char *s, int json)
{
    for (; *s && *n + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n' || c == '\r' || c == '\t' || c < 0x20 || c == 0x7f ||
            (json && (c == '"' || c == '\\'))) {
            const char *esc = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                              : c == '"' ? "\\\"" : c == '\\' ? "\\\\" : NULL;
            if (esc)
                *n += (size_t)snprintf(b + *n, cap - *n, "%s", esc);
            else
                *n += (size_t)snprintf(b + *n, cap - *n, json ? "\\u%04x" : "\\x%02x", c);
        } else {
            b[(*n)++] = (char)c;
        }
    }
    b[*n] = 0;
}

void srv_log(srv_log_level lvl, const char *rid, const char *fmt, ...)
{
    if (lvl < g_min || lvl > SRV_LOG_ERROR)
        return;
    char msg[2048], line[4600], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t k = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + k, sizeof ts - k, ".%03ldZ", now.tv_nsec / 1000000);

    size_t n = 0, cap = sizeof line - 2;
    if (g_json) {
        n = (size_t)snprintf(line, cap, "{\"ts\":\"%s\",\"level\":\"%s\",", ts, level_names[lvl]);
        if (rid && *rid) {
            n += (size_t)snprintf(line + n, cap - n, "\"request_id\":\"");
            put_escaped(line, &n, cap, rid, 1);
            n += (size_t)snprintf(line + n, cap - n, "\",");
        }
        n += (size_t)snprintf(line + n, cap - n, "\"msg\":\"");
        put_escaped(line, &n, cap, msg, 1);
        n += (size_t)snprintf(line + n, cap - n, "\"}");
    } else {
        n = (size_t)snprintf(line, cap, "%s %-5s ", ts, level_names[lvl]);
        if (rid && *rid) {
            n += (size_t)snprintf(line + n, cap - n, "[");
            put_escaped(line, &n, cap, rid, 0);
            n += (size_t)snprintf(line + n, cap - n, "] ");
        }
        put_escaped(line, &n, cap, msg, 0);
    }
    if (n > cap)
        n = cap;
    line[n++] = '\n';
    /* One write per line: lines from different threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
