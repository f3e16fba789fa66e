/* fsutil.c - small file-system helpers of the repository: bounded reads that never
 * follow a symlink, atomic small writes (temp + fsync + rename + fsync dir), rm -rf,
 * hex. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repo_int.h"
#include "core/util.h"

int repo_read_small(const char *path, size_t max, int follow, char **out, size_t *len,
                    int *missing, eng_error *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    if (missing)
        *missing = 0;
    int fd = open(path, O_RDONLY | (follow ? 0 : O_NOFOLLOW) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        if (missing && e == ENOENT)
            *missing = 1;
        return eng_fail(err, e == ELOOP ? ENG_EFORMAT : ENG_EIO, "%s: %s", path,
                        e == ELOOP ? "a symlink (refused)" : strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return eng_fail(err, ENG_EFORMAT, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        return eng_fail(err, ENG_ETOOLONG, "%s: %lld bytes, more than the %zu allowed", path,
                        (long long)st.st_size, max);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    size_t n = 0;
    /* Read up to max + 1 bytes: a file that grew meanwhile is still refused. */
    for (;;) {
        if (n == (size_t)st.st_size) {
            char extra;
            ssize_t r = read(fd, &extra, 1);
            if (r == 0)
                break;
            if (r < 0 && errno == EINTR)
                continue;
            free(buf);
            close(fd);
            return eng_fail(err, r < 0 ? ENG_EIO : ENG_EFORMAT, "%s: %s", path,
                            r < 0 ? strerror(errno) : "changed while being read");
        }
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return eng_fail(err, r < 0 ? ENG_EIO : ENG_EFORMAT, "%s: %s", path,
                            r < 0 ? strerror(e) : "changed while being read");
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

int repo_fsync_path(const char *path, int is_dir)
{
    int fd = open(path, (is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int repo_write_atomic(const char *dir, const char *name, const void *data, size_t len,
                      eng_error *err)
{
    char tmp[4096], dst[4096];
    int a = snprintf(tmp, sizeof tmp, "%s/.%s.tmp-XXXXXX", dir, name);
    int b = snprintf(dst, sizeof dst, "%s/%s", dir, name);
    if (a < 0 || (size_t)a >= sizeof tmp || b < 0 || (size_t)b >= sizeof dst)
        return eng_fail(err, ENG_EINVAL, "%s/%s: path too long", dir, name);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return eng_fail(err, ENG_EIO, "%s: cannot create a file: %s", dir, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail_write;
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0)
        goto fail_write;
    if (close(fd) != 0) {
        fd = -1;
        goto fail_write;
    }
    if (rename(tmp, dst) != 0) {
        int e = errno;
        unlink(tmp);
        return eng_fail(err, ENG_EIO, "%s: rename: %s", dst, strerror(e));
    }
    if (repo_fsync_path(dir, 1) != 0)
        return eng_fail(err, ENG_EIO, "%s: fsync: %s", dir, strerror(errno));
    return 0;

fail_write:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return eng_fail(err, ENG_EIO, "%s: write: %s", dst, strerror(e ? e : EIO));
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

int repo_rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void repo_hex(const unsigned char *in, size_t n, char *out)
{
    static const char h[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = h[in[i] >> 4];
        out[2 * i + 1] = h[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int nib(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int repo_unhex32(const char *s, unsigned char out[32])
{
    for (int i = 0; i < 32; i++) {
        if (!s[2 * i] || !s[2 * i + 1])
            return -1;
        int a = nib(s[2 * i]), b = nib(s[2 * i + 1]);
        if (a < 0 || b < 0)
            return -1;
        out[i] = (unsigned char)(a << 4 | b);
    }
    return s[64] ? -1 : 0;
}
