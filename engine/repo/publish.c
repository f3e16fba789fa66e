/* publish.c - eng_repo_publish: copy a Hugging Face folder into DIR/.tmp-XXXXXX,
 * write nlpd-version.json, fsync, sign (model.sig last), then rename the folder to
 * the next free version name (renameat2 RENAME_NOREPLACE; mkdir-as-lock + rename
 * where the file system lacks it) and fsync DIR. Concurrent publishers never take
 * the same name: a rename that finds the name taken retries with the next one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/evp.h>

#include "repo_int.h"
#include "core/util.h"

int repo_publish_no_renameat2; /* tests: force the fallback */

enum { COPY_BUF = 1 << 20, NAME_TRIES = 1000 };

typedef struct copier {
    const char *src;
    unsigned char *buf;
    eng_error *err;
} copier;

static int copy_file(copier *c, int sfd, int dfd, const char *name, const char *rel)
{
    int in = openat(sfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (in < 0)
        return eng_fail(c->err, ENG_EIO, "%s/%s: %s", c->src, rel, strerror(errno));
    int rc = 0;
    struct stat st;
    if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = eng_fail(c->err, ENG_EINVAL, "%s/%s: not a regular file", c->src, rel);
        goto fail_in;
    }
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = eng_fail(c->err, ENG_EIO, "copy of %s/%s: %s", c->src, rel, strerror(errno));
        goto fail_in;
    }
    for (;;) {
        ssize_t r = read(in, c->buf, COPY_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = eng_fail(c->err, ENG_EIO, "%s/%s: read: %s", c->src, rel, strerror(errno));
            goto fail_out;
        }
        if (r == 0)
            break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, c->buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = eng_fail(c->err, ENG_EIO, "copy of %s/%s: write: %s", c->src, rel,
                              strerror(w < 0 ? errno : EIO));
                goto fail_out;
            }
            off += w;
        }
    }
    if (fsync(out) != 0)
        rc = eng_fail(c->err, ENG_EIO, "copy of %s/%s: fsync: %s", c->src, rel, strerror(errno));
fail_out:
    if (close(out) != 0 && !rc)
        rc = eng_fail(c->err, ENG_EIO, "copy of %s/%s: close: %s", c->src, rel, strerror(errno));
fail_in:
    close(in);
    return rc;
}

/* Copy the folder sfd into dfd (both owned: closed here). Symlinks to files are
 * copied as files; symlinked folders and special files are refused. */
static int copy_tree(copier *c, int sfd, int dfd, const char *prefix, int depth)
{
    int rc = 0;
    DIR *d = fdopendir(sfd);
    if (!d) {
        close(sfd);
        close(dfd);
        return eng_fail(c->err, ENG_EIO, "%s/%s: %s", c->src, prefix, strerror(errno));
    }
    struct dirent *de;
    char rel[REPO_RELPATH_MAX];
    for (;;) {
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno)
                rc = eng_fail(c->err, ENG_EIO, "%s/%s: %s", c->src, prefix, strerror(errno));
            break;
        }
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        /* The source's own signature and metadata are replaced, git files left out. */
        if (depth == 0 && (repo_ignored(name) || strcmp(name, ENG_REPO_META_FILE) == 0))
            continue;
        int k = snprintf(rel, sizeof rel, "%s%s%s", prefix, *prefix ? "/" : "", name);
        if (k < 0 || (size_t)k >= sizeof rel) {
            rc = eng_fail(c->err, ENG_ETOOLONG, "%s/%s: path too long", c->src, prefix);
            break;
        }
        struct stat st, lst;
        if (fstatat(dirfd(d), name, &lst, AT_SYMLINK_NOFOLLOW) != 0 ||
            fstatat(dirfd(d), name, &st, 0) != 0) {
            rc = eng_fail(c->err, ENG_EIO, "%s/%s: %s", c->src, rel,
                          errno == ENOENT ? "a dangling symlink" : strerror(errno));
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (S_ISLNK(lst.st_mode)) {
                rc = eng_fail(c->err, ENG_EINVAL, "%s/%s: a symlink to a folder (not copied)",
                              c->src, rel);
                break;
            }
            if (depth + 1 >= REPO_DEPTH_MAX) {
                rc = eng_fail(c->err, ENG_ETOOLONG, "%s/%s: folders nested deeper than %d",
                              c->src, rel, REPO_DEPTH_MAX);
                break;
            }
            if (mkdirat(dfd, name, 0755) != 0) {
                rc = eng_fail(c->err, ENG_EIO, "copy of %s/%s: mkdir: %s", c->src, rel,
                              strerror(errno));
                break;
            }
            int s2 = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int d2 = s2 < 0 ? -1 : openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (s2 < 0 || d2 < 0) {
                rc = eng_fail(c->err, ENG_EIO, "%s/%s: %s", c->src, rel, strerror(errno));
                if (s2 >= 0)
                    close(s2);
                break;
            }
            if ((rc = copy_tree(c, s2, d2, rel, depth + 1)))
                break;
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            rc = eng_fail(c->err, ENG_EINVAL, "%s/%s: not a regular file or folder (refused)",
                          c->src, rel);
            break;
        }
        if ((rc = copy_file(c, dirfd(d), dfd, name, rel)))
            break;
    }
    closedir(d);
    if (!rc && fsync(dfd) != 0)
        rc = eng_fail(c->err, ENG_EIO, "copy of %s/%s: fsync: %s", c->src, prefix,
                      strerror(errno));
    close(dfd);
    return rc;
}

/* nlpd-version.json: the caller's object (or {}) with published_at and source. */
static int metadata_text(const char *src, const char *metadata_json, char **out, eng_error *err)
{
    cJSON *m = metadata_json ? cJSON_Parse(metadata_json) : cJSON_CreateObject();
    if (!m && metadata_json)
        return eng_fail(err, ENG_EINVAL, "the version metadata is not JSON");
    if (!m)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int rc = 0;
    if (!cJSON_IsObject(m)) {
        rc = eng_fail(err, ENG_EINVAL, "the version metadata is not a JSON object");
        goto done;
    }
    if (!cJSON_GetObjectItemCaseSensitive(m, "published_at")) {
        char ts[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (!cJSON_AddStringToObject(m, "published_at", ts))
            goto fail_oom;
    }
    if (!cJSON_GetObjectItemCaseSensitive(m, "source")) {
        char real[PATH_MAX];
        if (!cJSON_AddStringToObject(m, "source", realpath(src, real) ? real : src))
            goto fail_oom;
    }
    if (!(*out = cJSON_Print(m)))
        goto fail_oom;
    goto done;
fail_oom:
    rc = eng_fail(err, ENG_ENOMEM, "out of memory writing the version metadata");
done:
    cJSON_Delete(m);
    return rc;
}

/* One more than the greatest vNNN in dir. */
static long next_number(int dfd)
{
    int fd = dup(dfd);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    rewinddir(d);
    long max = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        if (s[0] != 'v' || !s[1] || strlen(s) > 10)
            continue;
        char *end;
        long v = strtol(s + 1, &end, 10);
        if (*end || s[1] < '0' || s[1] > '9')
            continue;
        if (v > max)
            max = v;
    }
    closedir(d);
    return max + 1;
}

/* Rename tmp to dfd/name unless name exists: 0, -EEXIST (taken), or -errno. */
static int rename_noreplace(const char *tmp, int dfd, const char *name)
{
    if (!repo_publish_no_renameat2) {
        if (renameat2(AT_FDCWD, tmp, dfd, name, RENAME_NOREPLACE) == 0)
            return 0;
        if (errno != EINVAL && errno != ENOSYS)
            return errno == ENOTEMPTY ? -EEXIST : -errno;
    }
    /* No RENAME_NOREPLACE here: publishers agree on .lock-<name> (mkdir is atomic),
     * and plain rename never replaces a non-empty folder. */
    char lock[ENG_REPO_NAME_MAX + 8];
    snprintf(lock, sizeof lock, ".lock-%s", name);
    if (mkdirat(dfd, lock, 0700) != 0)
        return errno == EEXIST ? -EEXIST : -errno;
    struct stat st;
    int rc;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        rc = -EEXIST;
    else
        rc = renameat(AT_FDCWD, tmp, dfd, name) == 0 ? 0 : (errno == ENOTEMPTY ? -EEXIST : -errno);
    unlinkat(dfd, lock, AT_REMOVEDIR);
    return rc;
}

static int mkdir_p(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int eng_repo_publish(const char *src, const char *dir, const char *private_key_pem,
                     const char *metadata_json, char *version, size_t cap, eng_error *err)
{
    if (!src || !dir || !version)
        return eng_fail(err, ENG_EINVAL, "eng_repo_publish: missing argument");
    if (cap < 8)
        return eng_fail(err, ENG_EINVAL, "eng_repo_publish: version buffer too small");
    struct stat st;
    if (stat(src, &st) != 0 || !S_ISDIR(st.st_mode))
        return eng_fail(err, ENG_EINVAL, "%s: %s", src,
                        errno == ENOENT ? "no such folder" : "not a folder");
    EVP_PKEY *key = NULL;
    char hint[65] = "", tmp[PATH_MAX], name[32];
    char *meta = NULL;
    repo_ent *ents = NULL;
    size_t n = 0;
    copier c = {.src = src, .err = err};
    int rc;
    if (private_key_pem && (rc = repo_key_load(private_key_pem, 1, &key, hint, err)))
        return rc;
    if ((rc = metadata_text(src, metadata_json, &meta, err)))
        goto fail_key;
    if (mkdir_p(dir) != 0) {
        rc = eng_fail(err, ENG_EIO, "repository %s: cannot create: %s", dir, strerror(errno));
        goto fail_meta;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        rc = eng_fail(err, ENG_EIO, "repository %s: %s", dir, strerror(errno));
        goto fail_meta;
    }
    int k = snprintf(tmp, sizeof tmp, "%s/.tmp-XXXXXX", dir);
    if (k < 0 || (size_t)k >= sizeof tmp) {
        rc = eng_fail(err, ENG_EINVAL, "repository %s: path too long", dir);
        goto fail_dfd;
    }
    if (!mkdtemp(tmp)) {
        rc = eng_fail(err, ENG_EIO, "repository %s: cannot create a temporary folder: %s", dir,
                      strerror(errno));
        goto fail_dfd;
    }
    if (chmod(tmp, 0755) != 0) {
        rc = eng_fail(err, ENG_EIO, "%s: chmod: %s", tmp, strerror(errno));
        goto fail_tmp;
    }
    if (!(c.buf = malloc(COPY_BUF))) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto fail_tmp;
    }
    int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int tfd = sfd < 0 ? -1 : open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0 || tfd < 0) {
        rc = eng_fail(err, ENG_EIO, "%s: %s", sfd < 0 ? src : tmp, strerror(errno));
        if (sfd >= 0)
            close(sfd);
        goto fail_buf;
    }
    if ((rc = copy_tree(&c, sfd, tfd, "", 0)))
        goto fail_buf;
    if ((rc = repo_write_atomic(tmp, ENG_REPO_META_FILE, meta, strlen(meta), err)))
        goto fail_buf;
    if ((rc = repo_walk(tmp, REPO_WALK_STRICT | REPO_WALK_HASH, &ents, &n, err)))
        goto fail_buf;
    long num = next_number(dfd);
    for (int tries = 0;; tries++) {
        if (num < 1 || num > 999999999 || tries >= NAME_TRIES) {
            rc = eng_fail(err, ENG_EIO, "repository %s: no free version name", dir);
            goto fail_ents;
        }
        snprintf(name, sizeof name, "v%06ld", num);
        if (strlen(name) + 1 > cap) {
            rc = eng_fail(err, ENG_EINVAL, "eng_repo_publish: version buffer too small");
            goto fail_ents;
        }
        /* The statement names the version; model.sig is the last file written. */
        if ((rc = repo_sign_ents(tmp, ents, n, name, key, hint, err)))
            goto fail_ents;
        int r = rename_noreplace(tmp, dfd, name);
        if (r == 0)
            break;
        if (r != -EEXIST) {
            rc = eng_fail(err, ENG_EIO, "repository %s: rename to %s: %s", dir, name,
                          strerror(-r));
            goto fail_ents;
        }
        long again = next_number(dfd);
        num = again > num ? again : num + 1;
    }
    strcpy(version, name);
    if (fsync(dfd) != 0) /* the version is in place; only its durability is in doubt */
        rc = eng_fail(err, ENG_EIO, "repository %s: published %s, but fsync failed: %s", dir,
                      name, strerror(errno));
    repo_ents_free(ents, n);
    free(c.buf);
    close(dfd);
    free(meta);
    repo_key_free(key);
    return rc;

fail_ents:
    repo_ents_free(ents, n);
fail_buf:
    free(c.buf);
fail_tmp:
    repo_rm_tree(tmp);
fail_dfd:
    close(dfd);
fail_meta:
    free(meta);
fail_key:
    repo_key_free(key);
    return rc;
}
