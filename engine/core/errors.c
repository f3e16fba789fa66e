/* errors.c - error codes, messages and small file helpers. */
#include "core/util.h"

#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

_Thread_local unsigned long long eng_tok_steps;

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
    return eng_read_file_max(path, ENG_MAX_FILE_BYTES, out, len, err);
}

int eng_read_file_max(const char *path, size_t max_bytes, char **out, size_t *len,
                      eng_error *err)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files pass. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return eng_fail(err, ENG_EIO, "%s: not a regular file", path);
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return eng_fail(err, ENG_EFORMAT, "%s: %lld bytes, over the %zu-byte limit for this file",
                        path, (long long)sb.st_size, max_bytes);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    /* The size may change under us: read at most max_bytes + 1 to notice. */
    size_t cap = (size_t)sb.st_size + 1;
    char *buf = malloc(cap + 1);
    size_t n = 0;
    int rc = ENG_OK;
    while (buf) {
        if (n == cap) {
            if (cap > max_bytes) {
                rc = eng_fail(err, ENG_EFORMAT, "%s: grew over the %zu-byte limit while read",
                              path, max_bytes);
                break;
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb)
                break;
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = eng_fail(err, ENG_EIO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf)
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory reading file", path);
    if (rc) {
        free(buf);
        return rc;
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
    if ((*rc = eng_read_file_max(path, ENG_MAX_CONFIG_BYTES, &text, NULL, err)))
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
