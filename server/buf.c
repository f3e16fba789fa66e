/* buf.c - see buf.h. */
#include "buf.h"

#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_buf_init(srv_buf *b)
{
    memset(b, 0, sizeof *b);
}

void srv_buf_free(srv_buf *b)
{
    free(b->p);
    srv_buf_init(b);
}

int srv_buf_failed(const srv_buf *b)
{
    return b->failed;
}

char *srv_buf_take(srv_buf *b, size_t *len)
{
    if (b->failed || (!b->p && (srv_buf_put(b, "", 0), b->failed))) {
        srv_buf_free(b);
        return NULL;
    }
    char *p = b->p;
    if (len)
        *len = b->len;
    srv_buf_init(b);
    return p;
}

static int reserve(srv_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra + 1)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) {
        b->failed = 1;
        return -1;
    }
    b->p = np;
    b->cap = nc;
    return 0;
}

void srv_buf_put(srv_buf *b, const char *s, size_t n)
{
    if (reserve(b, n))
        return;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void srv_buf_puts(srv_buf *b, const char *s)
{
    srv_buf_put(b, s, strlen(s));
}

void srv_buf_printf(srv_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        srv_buf_put(b, small, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void srv_buf_json_str(srv_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (reserve(b, n + 2))
        return;
    b->p[b->len++] = '"';
    size_t run = 0; /* bytes copied as they are, flushed in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        if (run)
            srv_buf_put(b, s + i - run, run);
        run = 0;
        char esc[7] = {'\\', 0};
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
        }
        srv_buf_puts(b, esc);
    }
    if (run)
        srv_buf_put(b, s + n - run, run);
    srv_buf_put(b, "\"", 1);
}

/* Shortest decimal that reads back as the same float32, without printf: the nearest
 * 9-digit decimal of f, then ones of 8, 7, ... digits rounded from it, as long as the
 * candidate's value (scaled in double: one rounding, relative error <= 2^-53) lies, with
 * that error allowed for, strictly inside f's rounding interval (the midpoints to its
 * neighbours, exact in double), so strtof gives f back. Nine digits always fit (9-digit spacing <= 1e-8
 * relative, the interval's half-width >= 2^-25); values whose scaling would need powers
 * of ten beyond 10^22 (|f| < 1e-15 or >= 1e21: subnormals, extremes) and the never
 * expected miss take "%.9g". */
static const double pow10_tab[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static double scale10(double x, int s) /* x * 10^s, one rounding, |s| <= 22 */
{
    return s >= 0 ? x * pow10_tab[s] : x / pow10_tab[-s];
}

size_t srv_fmt_float(char *out, float f)
{
    char *o = out;
    if (f == 0.0f) {
        if (signbit(f))
            *o++ = '-';
        *o++ = '0';
        *o = 0;
        return (size_t)(o - out);
    }
    float af = fabsf(f);
    double v = af;
    int e10 = (int)floor(log10(v));
    if (e10 < -15 || e10 > 20) /* keeps every power of ten below within the table */
        goto fallback;
    if (e10 >= 0 ? v < pow10_tab[e10] : v * pow10_tab[-e10] < 1.0) /* log10 rounding */
        e10--;
    else if (e10 + 1 >= 0 ? v >= pow10_tab[e10 + 1] : v * pow10_tab[-(e10 + 1)] >= 1.0)
        e10++;
    double lo = ((double)nextafterf(af, 0.0f) + v) * 0.5;
    double hi = ((double)nextafterf(af, INFINITY) + v) * 0.5;
    /* the nearest 9-digit decimal, then shorter ones rounded from it while they still fit
     * (each checked on its own value: a double rounding can cost shortness, never
     * exactness) */
    int s9 = 8 - e10;
    if (s9 > 22 || s9 < -22)
        goto fallback;
    uint64_t m9 = (uint64_t)llround(scale10(v, s9));
    int e9 = e10;
    if (m9 >= 1000000000u) {
        m9 /= 10;
        e9++;
        s9--;
    }
    uint64_t m = 0;
    int p = 0, e = e9;
    for (int q = 9; q >= 1; q--) {
        uint64_t div = (uint64_t)pow10_tab[9 - q];
        uint64_t mq = (m9 + div / 2) / div;
        int eq = e9, sq = s9 - (9 - q);
        if (mq >= (uint64_t)pow10_tab[q]) {
            mq /= 10;
            eq++;
            sq--;
        }
        if (sq > 22 || sq < -22)
            break;
        double c = scale10((double)mq, -sq);
        if (!(c > lo * (1 + 4e-16) && c < hi * (1 - 4e-16)))
            break;
        m = mq, p = q, e = eq;
    }
    if (p) {
        char d[12];
        int nd = 0;
        for (uint64_t t = m; nd < p; t /= 10)
            d[p - 1 - nd++] = (char)('0' + t % 10);
        while (nd > 1 && d[nd - 1] == '0') /* 10^k rounded up: drop the zeros */
            nd--;
        if (signbit(f))
            *o++ = '-';
        if (e >= 0 && e < 21) { /* ddd, ddd.ddd, ddd000 */
            for (int i = 0; i <= e || i < nd; i++) {
                if (i == e + 1)
                    *o++ = '.';
                *o++ = i < nd ? d[i] : '0';
            }
        } else if (e < 0 && e >= -6) { /* 0.000ddd */
            *o++ = '0';
            *o++ = '.';
            for (int i = -1; i > e; i--)
                *o++ = '0';
            memcpy(o, d, (size_t)nd);
            o += nd;
        } else { /* d.ddde-XX */
            *o++ = d[0];
            if (nd > 1) {
                *o++ = '.';
                memcpy(o, d + 1, (size_t)nd - 1);
                o += nd - 1;
            }
            o += sprintf(o, "e%d", e);
        }
        *o = 0;
        return (size_t)(o - out);
    }
fallback:
    return (size_t)sprintf(out, "%.9g", (double)f);
}

void srv_buf_json_float(srv_buf *b, double v)
{
    char tmp[32];
    if (!isfinite(v) || !isfinite((float)v))
        srv_buf_put(b, "null", 4);
    else
        srv_buf_put(b, tmp, srv_fmt_float(tmp, (float)v));
}
