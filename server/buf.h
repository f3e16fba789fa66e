/* buf.h - a growable byte buffer with JSON writing helpers, used to build
 * responses and the metrics page. After an allocation failure the buffer is
 * marked failed and further appends are no-ops; check srv_buf_failed() once. */
#ifndef NLPD_SRV_BUF_H
#define NLPD_SRV_BUF_H

#include <stddef.h>

typedef struct srv_buf {
    char *p;     /* NUL-terminated while not failed */
    size_t len;
    size_t cap;
    int failed;
} srv_buf;

void srv_buf_init(srv_buf *b);
void srv_buf_free(srv_buf *b);
int srv_buf_failed(const srv_buf *b);
/* Hand the contents over (caller frees); b is left empty. NULL if failed. */
char *srv_buf_take(srv_buf *b, size_t *len);

void srv_buf_put(srv_buf *b, const char *s, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes included) of s[0..n), escaping as RFC 8259 asks. */
void srv_buf_json_str(srv_buf *b, const char *s, size_t n);
/* A JSON number with float precision: v as float32, written as the shortest decimal that
 * reads back (strtof) as the same float; NaN and infinities become null. */
void srv_buf_json_float(srv_buf *b, double v);
/* That number into out (at least 32 bytes, NUL-terminated); returns its length. */
size_t srv_fmt_float(char *out, float f);

#endif
