/* repo.c - the repository as a folder of versions: names and their order, the
 * listing with fingerprints, the pin (DIR/PIN), the version a follower picks, and
 * a version's metadata. */
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repo_int.h"
#include "core/util.h"

/* snprintf that may truncate (messages). */
static void fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, cap, f, ap);
    va_end(ap);
}

int eng_repo_name_valid(const char *name)
{
    if (!name || !*name || name[0] == '.')
        return 0;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        if (n >= ENG_REPO_NAME_MAX)
            return 0;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int eng_repo_version_cmp(const char *a, const char *b)
{
    return strverscmp(a, b);
}

static int entry_cmp(const void *a, const void *b)
{
    return strverscmp(((const eng_repo_entry *)a)->name, ((const eng_repo_entry *)b)->name);
}

/* FNV-1a, 64 bits. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_stat(uint64_t h, const struct stat *st)
{
    int64_t v[9] = {(int64_t)st->st_dev, (int64_t)st->st_ino, (int64_t)st->st_mode,
                    (int64_t)st->st_size, (int64_t)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
                    (int64_t)st->st_ctim.tv_sec, st->st_ctim.tv_nsec, (int64_t)st->st_nlink};
    return fnv(h, v, sizeof v);
}

/* Every entry's name and stat data, model.sig included. */
static uint64_t fingerprint(const char *vdir, const struct stat *top)
{
    uint64_t h = fnv_stat(0xcbf29ce484222325ull, top);
    char p[4096];
    struct stat st;
    if (eng_path_join(p, sizeof p, vdir, ENG_REPO_SIG_FILE) == 0 && lstat(p, &st) == 0)
        h = fnv_stat(fnv(h, "S", 1), &st);
    repo_ent *e = NULL;
    size_t n = 0;
    int rc = repo_walk(vdir, REPO_WALK_DIRS, &e, &n, NULL);
    if (rc)
        return fnv(h, &rc, sizeof rc);
    for (size_t i = 0; i < n; i++)
        h = fnv_stat(fnv(h, e[i].rel, strlen(e[i].rel) + 1), &e[i].st);
    repo_ents_free(e, n);
    return h;
}

int eng_repo_list(const char *dir, eng_repo_entry **out, int *n, eng_error *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return eng_fail(err, ENG_EIO, "repository %s: %s", dir, strerror(errno));
    eng_repo_entry *v = NULL;
    int nv = 0, cap = 0, rc = 0;
    struct dirent *de;
    for (;;) {
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno)
                rc = eng_fail(err, ENG_EIO, "repository %s: %s", dir, strerror(errno));
            break;
        }
        if (!eng_repo_name_valid(de->d_name))
            continue;
        struct stat st, sst;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (nv == cap) {
            int ncap = cap ? cap * 2 : 16;
            eng_repo_entry *nvp = realloc(v, (size_t)ncap * sizeof *nvp);
            if (!nvp) {
                rc = eng_fail(err, ENG_ENOMEM, "repository %s: out of memory", dir);
                break;
            }
            v = nvp;
            cap = ncap;
        }
        eng_repo_entry *e = &v[nv];
        memset(e, 0, sizeof *e);
        fmt(e->name, sizeof e->name, "%s", de->d_name);
        char sig[ENG_REPO_NAME_MAX + sizeof ENG_REPO_SIG_FILE + 2];
        fmt(sig, sizeof sig, "%s/%s", de->d_name, ENG_REPO_SIG_FILE);
        e->has_sig = fstatat(dirfd(d), sig, &sst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sst.st_mode);
        char vdir[4096];
        int k = snprintf(vdir, sizeof vdir, "%s/%s", dir, de->d_name);
        if (k < 0 || (size_t)k >= sizeof vdir)
            continue;
        e->fingerprint = fingerprint(vdir, &st);
        nv++;
    }
    closedir(d);
    if (rc) {
        free(v);
        return rc;
    }
    if (nv > 1)
        qsort(v, (size_t)nv, sizeof *v, entry_cmp);
    *out = v;
    *n = nv;
    return 0;
}

int eng_repo_pin_get(const char *dir, char *version, size_t cap, eng_error *err)
{
    char path[4096];
    if (eng_path_join(path, sizeof path, dir, ENG_REPO_PIN_FILE) != 0)
        return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
    char *s = NULL;
    size_t len = 0;
    int missing = 0;
    int rc = repo_read_small(path, REPO_PIN_MAX, 0, &s, &len, &missing, err);
    if (rc)
        return missing ? 0 : rc;
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' ||
                       s[len - 1] == '\t'))
        s[--len] = 0;
    if (!eng_repo_name_valid(s) || strlen(s) != len) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: '%.100s' is not a version name", path, s);
    } else if (len + 1 > cap) {
        rc = eng_fail(err, ENG_EINVAL, "%s: version name longer than the buffer", path);
    } else {
        memcpy(version, s, len + 1);
        rc = 1;
    }
    free(s);
    return rc;
}

int eng_repo_pin_set(const char *dir, const char *version, eng_error *err)
{
    char path[4096];
    if (!version) {
        if (eng_path_join(path, sizeof path, dir, ENG_REPO_PIN_FILE) != 0)
            return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
        if (unlink(path) != 0 && errno != ENOENT)
            return eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
        if (repo_fsync_path(dir, 1) != 0)
            return eng_fail(err, ENG_EIO, "%s: fsync: %s", dir, strerror(errno));
        return 0;
    }
    if (!eng_repo_name_valid(version))
        return eng_fail(err, ENG_EINVAL, "'%.120s' is not a version name", version);
    struct stat st;
    int k = snprintf(path, sizeof path, "%s/%s", dir, version);
    if (k < 0 || (size_t)k >= sizeof path || lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return eng_fail(err, ENG_EINVAL, "repository %s has no version '%s'", dir, version);
    k = snprintf(path, sizeof path, "%s/%s/%s", dir, version, ENG_REPO_SIG_FILE);
    if (k < 0 || (size_t)k >= sizeof path || lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return eng_fail(err, ENG_EINVAL, "%s/%s is not a complete version (no %s)", dir, version,
                        ENG_REPO_SIG_FILE);
    char line[ENG_REPO_NAME_MAX + 2];
    snprintf(line, sizeof line, "%s\n", version);
    return repo_write_atomic(dir, ENG_REPO_PIN_FILE, line, strlen(line), err);
}

int eng_repo_current(const char *dir, const char *public_key_pem, char *version, size_t cap,
                     eng_error *err)
{
    char pin[ENG_REPO_NAME_MAX + 1], why[sizeof err->msg] = "", vdir[4096];
    eng_error e;
    int pinned = eng_repo_pin_get(dir, pin, sizeof pin, &e);
    if (pinned < 0)
        fmt(why, sizeof why, "pin unreadable: %s", e.msg);
    if (pinned == 1) {
        snprintf(vdir, sizeof vdir, "%s/%s", dir, pin);
        if (eng_repo_verify(vdir, public_key_pem, &e) == 0) {
            if (strlen(pin) + 1 > cap)
                return eng_fail(err, ENG_EINVAL, "version name longer than the buffer");
            strcpy(version, pin);
            return 0;
        }
        fmt(why, sizeof why, "pinned %s refused: %s", pin, e.msg);
    }
    eng_repo_entry *v = NULL;
    int n = 0;
    int rc = eng_repo_list(dir, &v, &n, err);
    if (rc)
        return rc;
    int complete = 0;
    for (int i = n - 1; i >= 0; i--) {
        if (!v[i].has_sig || (pinned == 1 && strcmp(v[i].name, pin) == 0))
            continue;
        complete++;
        snprintf(vdir, sizeof vdir, "%s/%s", dir, v[i].name);
        if (eng_repo_verify(vdir, public_key_pem, &e) == 0) {
            rc = strlen(v[i].name) + 1 > cap
                     ? eng_fail(err, ENG_EINVAL, "version name longer than the buffer")
                     : 0;
            if (!rc)
                strcpy(version, v[i].name);
            free(v);
            return rc;
        }
        if (complete == 1) {
            size_t w = strlen(why);
            fmt(why + w, sizeof why - w, "%snewest %s refused: %s", w ? "; " : "", v[i].name,
                     e.msg);
        }
    }
    free(v);
    if (!complete && pinned != 1)
        return eng_fail(err, ENG_EIO, "repository %s has no complete version%s%s", dir,
                        *why ? ": " : "", why);
    return eng_fail(err, ENG_EIO, "repository %s: no version verifies (%s)", dir, why);
}

int eng_repo_read_metadata(const char *version_dir, char **json, eng_error *err)
{
    *json = NULL;
    char path[4096];
    if (eng_path_join(path, sizeof path, version_dir, ENG_REPO_META_FILE) != 0)
        return eng_fail(err, ENG_EINVAL, "%s: path too long", version_dir);
    int missing = 0;
    int rc = repo_read_small(path, REPO_META_MAX, 0, json, NULL, &missing, err);
    return rc && missing ? 0 : rc;
}
