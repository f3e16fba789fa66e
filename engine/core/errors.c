/* errors.c - error codes, messages and small file helpers. */
#include "core/util.h"

#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *eng_strerror(int err)
{
    switch (err) {
    case ENG_OK: return "ok";
    case ENG_ENOMEM: return "out of memory";
    case ENG_EIO: return "cannot read file";
    case ENG_EFORMAT: return "malformed file";
    case ENG_EUNSUPPORTED: return "unsupported";
    case ENG_EINVAL: return "invalid argument";
    case ENG_EUTF8: return "invalid UTF-8";
    case ENG_ETOOLONG: return "input too long";
    case ENG_EBACKEND: return "compute backend failure";
    case ENG_ECANCELLED: return "cancelled";
    default: return "unknown error";
    }
}

int eng_fail(eng_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int eng_read_file(const char *path, char **out, size_t *len, eng_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return eng_fail(err, ENG_ENOMEM, "%s: out of memory reading file", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return eng_fail(err, ENG_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return ENG_OK;
}

int eng_path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    int w = snprintf(buf, cap, "%s/%s", dir, name);
    return (w < 0 || (size_t)w >= cap) ? ENG_EINVAL : ENG_OK;
}

cJSON *eng_read_json(const char *dir, const char *name, int optional, int *rc, eng_error *err)
{
    char path[4096], *text;
    *rc = ENG_OK;
    if (eng_path_join(path, sizeof path, dir, name)) {
        *rc = eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
        return NULL;
    }
    if (optional && access(path, F_OK) != 0)
        return NULL;
    if ((*rc = eng_read_file(path, &text, NULL, err)))
        return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *rc = eng_fail(err, ENG_EFORMAT, "%s: not a JSON object", path);
        return NULL;
    }
    return j;
}
