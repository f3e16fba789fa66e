/* walk.c - list (and hash) the files of a version folder the way the model-signing
 * tool serializes it: every regular file below the folder by its '/'-separated
 * relative path, the tool's top-level ignore paths left out, symlinks never followed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "repo_int.h"
#include "core/util.h"

const char *const repo_ignore_paths[5] = {ENG_REPO_SIG_FILE, ".git", ".github", ".gitignore",
                                          ".gitattributes"};

int repo_ignored(const char *name)
{
    for (size_t i = 0; i < sizeof repo_ignore_paths / sizeof repo_ignore_paths[0]; i++)
        if (strcmp(name, repo_ignore_paths[i]) == 0)
            return 1;
    return 0;
}

int repo_path_cmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (;; x++, y++) {
        unsigned cx = *x == '/' ? 1 : (*x ? *x + 1u : 0), cy = *y == '/' ? 1 : (*y ? *y + 1u : 0);
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (!cx)
            return 0;
    }
}

static int ent_cmp(const void *a, const void *b)
{
    return repo_path_cmp(((const repo_ent *)a)->rel, ((const repo_ent *)b)->rel);
}

void repo_ents_free(repo_ent *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].rel);
    free(e);
}

typedef struct walker {
    const char *root;
    int flags;
    repo_ent *ents;
    size_t n, cap;
    unsigned char *buf; /* read buffer for hashing */
    eng_error *err;
} walker;

enum { HASH_BUF = 1 << 20 };

static int hash_fd(walker *w, int fd, const char *rel, unsigned char digest[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return eng_fail(w->err, ENG_ENOMEM, "%s: cannot start SHA-256", w->root);
    }
    for (;;) {
        ssize_t r = read(fd, w->buf, HASH_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            EVP_MD_CTX_free(ctx);
            return eng_fail(w->err, ENG_EIO, "%s/%s: read: %s", w->root, rel, strerror(e));
        }
        if (r == 0)
            break;
        EVP_DigestUpdate(ctx, w->buf, (size_t)r);
    }
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    EVP_MD_CTX_free(ctx);
    return 0;
}

static int add_ent(walker *w, const char *rel, const struct stat *st, repo_ent **slot)
{
    if (w->n >= REPO_FILES_MAX)
        return eng_fail(w->err, ENG_ETOOLONG, "%s: more than %d files", w->root, REPO_FILES_MAX);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        repo_ent *e = realloc(w->ents, cap * sizeof *e);
        if (!e)
            return eng_fail(w->err, ENG_ENOMEM, "%s: out of memory listing files", w->root);
        w->ents = e;
        w->cap = cap;
    }
    repo_ent *e = &w->ents[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->rel = strdup(rel)))
        return eng_fail(w->err, ENG_ENOMEM, "%s: out of memory listing files", w->root);
    e->st = *st;
    w->n++;
    *slot = e;
    return 0;
}

/* Walk the open directory dfd (owned: closed here) whose relative path is prefix. */
static int walk_dir(walker *w, int dfd, const char *prefix, int depth)
{
    int rc = 0;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return eng_fail(w->err, ENG_EIO, "%s/%s: %s", w->root, prefix, strerror(errno));
    }
    struct dirent *de;
    char rel[REPO_RELPATH_MAX];
    for (;;) {
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno)
                rc = eng_fail(w->err, ENG_EIO, "%s/%s: %s", w->root, prefix, strerror(errno));
            break;
        }
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (depth == 0 && repo_ignored(name))
            continue;
        int k = snprintf(rel, sizeof rel, "%s%s%s", prefix, *prefix ? "/" : "", name);
        if (k < 0 || (size_t)k >= sizeof rel) {
            rc = eng_fail(w->err, ENG_ETOOLONG, "%s/%s: path too long", w->root, prefix);
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = eng_fail(w->err, ENG_EIO, "%s/%s: %s", w->root, rel, strerror(errno));
            break;
        }
        repo_ent *e;
        if (S_ISDIR(st.st_mode)) {
            if (depth + 1 >= REPO_DEPTH_MAX) {
                rc = eng_fail(w->err, ENG_ETOOLONG, "%s/%s: folders nested deeper than %d",
                              w->root, rel, REPO_DEPTH_MAX);
                break;
            }
            if ((w->flags & REPO_WALK_DIRS) && (rc = add_ent(w, rel, &st, &e)))
                break;
            int sub = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = eng_fail(w->err, ENG_EIO, "%s/%s: %s", w->root, rel, strerror(errno));
                break;
            }
            if ((rc = walk_dir(w, sub, rel, depth + 1)))
                break;
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            if (w->flags & REPO_WALK_STRICT) {
                rc = eng_fail(w->err, ENG_EFORMAT, "%s/%s: %s, not a regular file (refused)",
                              w->root, rel, S_ISLNK(st.st_mode) ? "a symlink" : "a special file");
                break;
            }
            if ((w->flags & REPO_WALK_DIRS) && (rc = add_ent(w, rel, &st, &e)))
                break;
            continue;
        }
        if ((rc = add_ent(w, rel, &st, &e)))
            break;
        if (w->flags & REPO_WALK_HASH) {
            int fd = openat(dirfd(d), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
            if (fd < 0) {
                rc = eng_fail(w->err, ENG_EIO, "%s/%s: %s", w->root, rel, strerror(errno));
                break;
            }
            struct stat fst;
            if (fstat(fd, &fst) != 0 || !S_ISREG(fst.st_mode)) {
                close(fd);
                rc = eng_fail(w->err, ENG_EFORMAT, "%s/%s: changed while being read", w->root,
                              rel);
                break;
            }
            rc = hash_fd(w, fd, rel, e->digest);
            close(fd);
            if (rc)
                break;
        }
    }
    closedir(d);
    return rc;
}

int repo_walk(const char *dir, int flags, repo_ent **out, size_t *n, eng_error *err)
{
    walker w = {.root = dir, .flags = flags, .err = err};
    *out = NULL;
    *n = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat st;
        if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
            return eng_fail(err, ENG_EFORMAT, "%s: a symlink, not a folder (refused)", dir);
        return eng_fail(err, ENG_EIO, "%s: %s", dir, strerror(e));
    }
    if ((flags & REPO_WALK_HASH) && !(w.buf = malloc(HASH_BUF))) {
        close(fd);
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory", dir);
    }
    int rc = walk_dir(&w, fd, "", 0);
    free(w.buf);
    if (rc) {
        repo_ents_free(w.ents, w.n);
        return rc;
    }
    if (w.n)
        qsort(w.ents, w.n, sizeof *w.ents, ent_cmp);
    *out = w.ents;
    *n = w.n;
    return 0;
}
