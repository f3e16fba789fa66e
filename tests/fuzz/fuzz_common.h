/* fuzz_common.h - shared by the libFuzzer targets in tests/fuzz (not fuzz_request.c,
 * which predates it): contract checks that abort with a message, paths, a
 * scratch folder, and the linear-cost check on the tokenizers' work counter. */
#ifndef NLPD_FUZZ_COMMON_H
#define NLPD_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s: contract violated: %s\n  ", __FILE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* The repository root (NLPD_ROOT, default ".") and the shared folder
 * (NLPD_SHARED, default ROOT/../shared). */
static inline const char *fz_root(void)
{
    const char *r = getenv("NLPD_ROOT");
    return r && *r ? r : ".";
}

static inline const char *fz_shared(void)
{
    static char buf[4096];
    const char *s = getenv("NLPD_SHARED");
    if (s && *s)
        return s;
    snprintf(buf, sizeof buf, "%s/../shared", fz_root());
    return buf;
}

/* A private scratch folder for this process (removed at exit by run.sh's
 * temporary parent when TMPDIR points there). */
static inline const char *fz_scratch(void)
{
    static char dir[256];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/nlpd_fuzz_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

/* Write data to path (replacing it). */
static inline void fz_write(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w, n -= (size_t)w;
    }
    close(fd);
}

/* Symlink target as dir/name (replacing it). */
static inline void fz_link(const char *target, const char *dir, const char *name)
{
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    unlink(dst);
    if (symlink(target, dst) != 0) {
        perror(dst);
        abort();
    }
}

/* The engine's tokenizer work counter (engine/util.h): steps per input byte
 * must stay under a constant, whatever the input; super-linear work is a bug
 * found here deterministically, not only as a slow unit. */
extern _Thread_local unsigned long long eng_tok_steps;
#define FZ_MAX_STEPS_PER_BYTE 2048ULL
#define FZ_STEPS_OK(steps, len) ((steps) <= FZ_MAX_STEPS_PER_BYTE * ((unsigned long long)(len) + 1) + 65536ULL)

#endif
