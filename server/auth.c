/* auth.c - see auth.h. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct srv_auth {
    unsigned char (*hash)[32];
    int n;
};

static void set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int srv_auth_parse(const char *text, size_t len, srv_auth **out, char *err, size_t cap)
{
    srv_auth *a = calloc(1, sizeof *a);
    if (!a)
        goto fail_oom;
    int alloc = 0, line = 0;
    size_t i = 0;
    while (i < len) {
        size_t s = i, e;
        while (i < len && text[i] != '\n')
            i++;
        e = i++;
        line++;
        /* trim, drop comments */
        for (size_t k = s; k < e; k++)
            if (text[k] == '#') {
                e = k;
                break;
            }
        while (s < e && isspace((unsigned char)text[s]))
            s++;
        while (e > s && isspace((unsigned char)text[e - 1]))
            e--;
        if (s == e)
            continue;
        if (e - s != 64) {
            set_err(err, cap, "line %d: expected 64 hex digits (a SHA-256 hash)", line);
            goto fail;
        }
        if (a->n == alloc) {
            int na = alloc ? alloc * 2 : 8;
            void *nh = realloc(a->hash, (size_t)na * sizeof *a->hash);
            if (!nh)
                goto fail_oom;
            a->hash = nh;
            alloc = na;
        }
        for (int b = 0; b < 32; b++) {
            int hi = hexval((unsigned char)text[s + 2 * b]), lo = hexval((unsigned char)text[s + 2 * b + 1]);
            if (hi < 0 || lo < 0) {
                set_err(err, cap, "line %d: not a hex digit", line);
                goto fail;
            }
            a->hash[a->n][b] = (unsigned char)(hi << 4 | lo);
        }
        a->n++;
    }
    if (a->n == 0) {
        set_err(err, cap, "no key hashes found");
        goto fail;
    }
    *out = a;
    return 0;
fail_oom:
    set_err(err, cap, "out of memory");
fail:
    srv_auth_free(a);
    return -1;
}

int srv_auth_load(const char *path, srv_auth **out, char *err, size_t cap)
{
    char buf[1 << 16], msg[200];
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, cap, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, sizeof buf, f);
    int big = n == sizeof buf, bad = ferror(f);
    fclose(f);
    if (big || bad) {
        set_err(err, cap, "%s: %s", path, big ? "larger than 64 KiB" : "read error");
        return -1;
    }
    int rc = srv_auth_parse(buf, n, out, msg, sizeof msg);
    if (rc)
        set_err(err, cap, "%s: %s", path, msg);
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

void srv_auth_free(srv_auth *a)
{
    if (!a)
        return;
    free(a->hash);
    free(a);
}

int srv_auth_count(const srv_auth *a)
{
    return a ? a->n : 0;
}

static int sha256(const char *data, size_t len, unsigned char md[32])
{
    unsigned int mdlen = 0;
    return EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32 ? 0 : -1;
}

int srv_auth_check(const srv_auth *a, const char *key, size_t len)
{
    unsigned char md[32];
    if (!a || !key || sha256(key, len, md))
        return 0;
    /* Compare against every hash without stopping early, so the time taken
     * says nothing about which (or whether a) hash matched. */
    int match = 0;
    for (int i = 0; i < a->n; i++)
        match |= CRYPTO_memcmp(md, a->hash[i], 32) == 0;
    OPENSSL_cleanse(md, sizeof md);
    return match;
}

const char *srv_auth_extract(const char *authorization, const char *x_api_key, size_t *len)
{
    if (authorization) {
        const char *p = authorization;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "Bearer", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
            p += 6;
            while (*p == ' ' || *p == '\t')
                p++;
            size_t l = strlen(p);
            while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
                l--;
            if (l) {
                *len = l;
                return p;
            }
        }
    }
    if (x_api_key && *x_api_key) {
        *len = strlen(x_api_key);
        return x_api_key;
    }
    return NULL;
}

void srv_auth_hash_hex(const char *data, size_t len, char hex[65])
{
    unsigned char md[32];
    if (sha256(data, len, md)) {
        hex[0] = 0;
        return;
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}
