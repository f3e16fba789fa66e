/* checkpoint.c - publishing model folders atomically (nlpd_engine.h, "model
 * publishing"): write into a temporary sibling directory, fsync every file and the
 * directory, rename into place, fsync the parent. Used by nlpd-train; the server
 * can use it for anything it publishes into the model repository. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* renameat2 */
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "nlpd_engine.h"
#include "core/util.h"

struct eng_ckpt {
    char final[PATH_MAX];
    char tmp[PATH_MAX];
    char parent[PATH_MAX];
};

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* rm -rf path (no error if absent). */
static int rm_tree(const char *path)
{
    if (access(path, F_OK) != 0)
        return 0;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void split_path(const char *path, char *parent, size_t cap, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(parent, cap, ".");
        *base = path;
    } else if (slash == path) {
        snprintf(parent, cap, "/");
        *base = slash + 1;
    } else {
        snprintf(parent, cap, "%.*s", (int)(slash - path), path);
        *base = slash + 1;
    }
}

/* Removes ".<base>.tmp-<pid>-*" directories of processes that no longer exist. */
static void clean_stale(const char *parent, const char *base)
{
    DIR *d = opendir(parent);
    if (!d)
        return;
    char prefix[NAME_MAX + 16];
    snprintf(prefix, sizeof prefix, ".%s.tmp-", base);
    size_t pl = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl) != 0)
            continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (pid <= 0 || *end != '-' || (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", parent, e->d_name) < (int)sizeof path)
            rm_tree(path);
    }
    closedir(d);
}

/* ------------------------------------------------------------------- API */

int eng_ckpt_begin(const char *dir, eng_ckpt **out, eng_error *err)
{
    *out = NULL;
    if (!dir || !*dir)
        return eng_fail(err, ENG_EINVAL, "no output directory given");
    eng_ckpt *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (len >= sizeof c->final - 64) {
        free(c);
        return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
    }
    memcpy(c->final, dir, len);
    c->final[len] = 0;
    const char *base;
    split_path(c->final, c->parent, sizeof c->parent, &base);
    struct stat st;
    if (stat(c->parent, &st) != 0 || !S_ISDIR(st.st_mode)) {
        int rc = eng_fail(err, ENG_EIO, "%s: the parent directory %s does not exist", c->final,
                          c->parent);
        free(c);
        return rc;
    }
    clean_stale(c->parent, base);
    int w = snprintf(c->tmp, sizeof c->tmp, "%s/.%s.tmp-%ld-XXXXXX", c->parent, base,
                     (long)getpid());
    if (w < 0 || (size_t)w >= sizeof c->tmp || !mkdtemp(c->tmp)) {
        int rc = eng_fail(err, ENG_EIO, "%s: cannot create a temporary directory: %s", c->tmp,
                          strerror(errno));
        free(c);
        return rc;
    }
    chmod(c->tmp, 0755); /* mkdtemp makes it 0700; the published folder is readable */
    *out = c;
    return ENG_OK;
}

const char *eng_ckpt_tmp_path(const eng_ckpt *c) { return c->tmp; }

/* Opens <tmp>/<name> for writing, creating parent folders inside the temp dir. */
static int open_out(eng_ckpt *c, const char *name, char *path, size_t cap, eng_error *err)
{
    if (!name || !*name || name[0] == '/' || strstr(name, ".."))
        return eng_fail(err, ENG_EINVAL, "invalid file name '%s'", name ? name : "");
    if (snprintf(path, cap, "%s/%s", c->tmp, name) >= (int)cap)
        return eng_fail(err, ENG_EINVAL, "%s: path too long", name);
    for (char *s = path + strlen(c->tmp) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        int bad = mkdir(path, 0755) != 0 && errno != EEXIST;
        *s = '/';
        if (bad)
            return eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
    return fd;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int finish_file(int fd, const char *path, eng_error *err)
{
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return eng_fail(err, ENG_EIO, "%s: fsync: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return eng_fail(err, ENG_EIO, "%s: close: %s", path, strerror(errno));
    return ENG_OK;
}

int eng_ckpt_write(eng_ckpt *c, const char *name, const void *data, size_t len, eng_error *err)
{
    char path[PATH_MAX];
    int fd = open_out(c, name, path, sizeof path, err);
    if (fd < 0)
        return fd;
    if (write_all(fd, data, len) != 0) {
        int e = errno;
        close(fd);
        return eng_fail(err, ENG_EIO, "%s: write: %s", path, strerror(e));
    }
    return finish_file(fd, path, err);
}

int eng_ckpt_copy(eng_ckpt *c, const char *src_path, const char *name, eng_error *err)
{
    char path[PATH_MAX], buf[1 << 16];
    int in = open(src_path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return eng_fail(err, ENG_EIO, "%s: %s", src_path, strerror(errno));
    int fd = open_out(c, name, path, sizeof path, err);
    if (fd < 0) {
        close(in);
        return fd;
    }
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (r > 0 && write_all(fd, buf, (size_t)r) != 0)) {
            int e = errno;
            close(in);
            close(fd);
            return eng_fail(err, ENG_EIO, "copying %s to %s: %s", src_path, path, strerror(e));
        }
        if (r == 0)
            break;
    }
    close(in);
    return finish_file(fd, path, err);
}

int eng_ckpt_write_safetensors(eng_ckpt *c, const char *name, const eng_tensor_out *t, int n,
                               eng_error *err)
{
    char path[PATH_MAX];
    int rc = ENG_OK;
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    int ok = h && meta && cJSON_AddStringToObject(meta, "format", "pt");
    size_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        if (t[i].ndim < 1 || t[i].ndim > 4 || !t[i].name || !t[i].data) {
            cJSON_Delete(h);
            return eng_fail(err, ENG_EINVAL, "tensor %d ('%s') is malformed", i,
                            t[i].name ? t[i].name : "");
        }
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= (size_t)t[i].shape[d];
        cJSON *e = cJSON_AddObjectToObject(h, t[i].name);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", "F32");
        for (int d = 0; ok && d < t[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        if (ok) {
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + numel * 4)));
        }
        off += numel * 4;
    }
    char *js = ok ? cJSON_PrintUnformatted(h) : NULL;
    cJSON_Delete(h);
    if (!js)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8; /* data block 8-byte aligned */
    unsigned char hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (unsigned char)((uint64_t)padded >> (8 * i)); /* little-endian u64 */
    int fd = open_out(c, name, path, sizeof path, err);
    if (fd < 0) {
        free(js);
        return fd;
    }
    int bad = write_all(fd, hdr, 8) || write_all(fd, js, jl) ||
              write_all(fd, "        ", padded - jl);
    /* The host is little-endian x86-64/aarch64: floats go out as they are in memory. */
    for (int i = 0; !bad && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= (size_t)t[i].shape[d];
        bad = write_all(fd, t[i].data, numel * sizeof(float));
    }
    free(js);
    if (bad) {
        int e = errno;
        close(fd);
        return eng_fail(err, ENG_EIO, "%s: write: %s", path, strerror(e));
    }
    rc = finish_file(fd, path, err);
    return rc;
}

static int fsync_tree_dirs(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? fsync_path(path, 1) : 0;
}

/* Test seam: renameat2 (a test swaps it for one that fails like a file system
 * without RENAME_EXCHANGE / RENAME_NOREPLACE). */
int (*eng_ckpt_renameat2)(int, const char *, int, const char *, unsigned) = renameat2;

/* rename(from, to) that never replaces an existing `to`: RENAME_NOREPLACE, or, on a
 * file system without it, a check then rename (which can only replace an empty
 * directory created in between). -1 with errno (EEXIST when `to` exists). */
static int rename_noreplace(const char *from, const char *to)
{
    if (eng_ckpt_renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    struct stat st;
    if (lstat(to, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* The finished folder could not be put in place: move it to a visible sibling
 * "<final>.unpublished-<pid>[-k]" that nothing cleans up, so that the work is not
 * lost. kept[cap] says where it is (the temporary path when even that fails). */
static void keep_finished(eng_ckpt *c, char *kept, size_t cap)
{
    for (int k = 0; k < 100; k++) {
        int w = k ? snprintf(kept, cap, "%s.unpublished-%ld-%d", c->final, (long)getpid(), k)
                  : snprintf(kept, cap, "%s.unpublished-%ld", c->final, (long)getpid());
        if (w < 0 || (size_t)w >= cap)
            break;
        if (rename_noreplace(c->tmp, kept) == 0) {
            fsync_path(c->parent, 1);
            return;
        }
        if (errno != EEXIST && errno != ENOTEMPTY)
            break;
    }
    snprintf(kept, cap, "%s (a temporary name: the next publish of %s removes it once this "
             "process has exited)", c->tmp, c->final);
}

int eng_ckpt_commit(eng_ckpt *c, int replace, eng_error *err)
{
    int rc = ENG_OK;
    char kept[2 * PATH_MAX + 160];
    if (nftw(c->tmp, fsync_tree_dirs, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        rc = eng_fail(err, ENG_EIO, "%s: fsync: %s", c->tmp, strerror(errno));
        goto fail;
    }
    /* From here on the folder is complete: a failure keeps it (keep_finished). */
    struct stat st;
    if (lstat(c->final, &st) == 0) {
        if (!replace) {
            keep_finished(c, kept, sizeof kept);
            rc = eng_fail(err, ENG_EINVAL, "%s already exists (replace it with --force); the "
                          "finished model is kept at %s", c->final, kept);
            free(c);
            return rc;
        }
        /* Swap atomically, then delete what was there. */
        if (eng_ckpt_renameat2(AT_FDCWD, c->tmp, AT_FDCWD, c->final, RENAME_EXCHANGE) != 0) {
            int e = errno;
            keep_finished(c, kept, sizeof kept);
            rc = eng_fail(err, ENG_EIO, "%s: cannot replace it atomically (%s%s); it was left "
                          "as it was and the finished model is kept at %s", c->final,
                          strerror(e), e == EINVAL || e == ENOSYS
                              ? ": the file system lacks RENAME_EXCHANGE" : "", kept);
            free(c);
            return rc;
        }
        fsync_path(c->parent, 1);
        rm_tree(c->tmp); /* now the old folder */
    } else if (rename_noreplace(c->tmp, c->final) != 0) {
        int e = errno;
        keep_finished(c, kept, sizeof kept);
        rc = eng_fail(err, e == EEXIST || e == ENOTEMPTY ? ENG_EINVAL : ENG_EIO,
                      "%s: %s; the finished model is kept at %s", c->final,
                      e == EEXIST || e == ENOTEMPTY ? "appeared while the model was written "
                      "(it was left as it is)" : strerror(e), kept);
        free(c);
        return rc;
    }
    if (fsync_path(c->parent, 1) != 0) {
        rc = eng_fail(err, ENG_EIO, "%s: fsync: %s", c->parent, strerror(errno));
        free(c); /* the folder is in place; only its durability is in doubt */
        return rc;
    }
    free(c);
    return ENG_OK;
fail:
    eng_ckpt_abort(c);
    return rc;
}

void eng_ckpt_abort(eng_ckpt *c)
{
    if (!c)
        return;
    rm_tree(c->tmp);
    free(c);
}
