/* prune.c - eng_repo_prune: retention for a repository (nlpd_repo.h). Old version
 * folders leave the followers' view by one rename to a hidden name in the same
 * folder (followers ignore dot-names, so a version vanishes whole), then are
 * deleted; a crash between the two leaves only a hidden .pruned-* folder, which the
 * next prune deletes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "repo_int.h"

#define PRUNED_PREFIX ".pruned-"

/* v and 6 or more digits: the names eng_repo_publish gives. Nothing else is
 * ever removed. */
static int version_name(const char *s)
{
    if (s[0] != 'v')
        return 0;
    size_t n = 0;
    for (const char *p = s + 1; *p; p++, n++)
        if (*p < '0' || *p > '9')
            return 0;
    return n >= 6;
}

/* The pid a .pruned-<name>-<pid> leftover carries; 0 when none parses. */
static long leftover_pid(const char *name)
{
    const char *dash = strrchr(name, '-');
    if (!dash || !dash[1])
        return 0;
    char *end;
    long pid = strtol(dash + 1, &end, 10);
    return *end || pid <= 0 ? 0 : pid;
}

/* Delete the .pruned-* folders of earlier prunes. locked: no other prune of dir
 * runs now, so every one is a leftover; else only those of dead processes (or
 * ours). Best effort: returns how many were deleted. */
static int clean_leftovers(int dfd, const char *dir, int locked)
{
    int fd = dup(dfd);
    if (fd < 0)
        return 0;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    rewinddir(d);
    char (*names)[ENG_REPO_NAME_MAX + 64] = NULL;
    int n = 0, cap = 0, done = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, PRUNED_PREFIX, strlen(PRUNED_PREFIX)) != 0 ||
            strlen(de->d_name) >= sizeof *names)
            continue;
        if (!locked) {
            long pid = leftover_pid(de->d_name);
            if (pid && pid != (long)getpid() && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH))
                continue; /* maybe another prune deleting it right now */
        }
        if (n == cap) {
            int ncap = cap ? cap * 2 : 8;
            void *p = realloc(names, (size_t)ncap * sizeof *names);
            if (!p)
                break;
            names = p;
            cap = ncap;
        }
        snprintf(names[n++], sizeof *names, "%s", de->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) < (int)sizeof p && repo_rm_tree(p) == 0)
            done++;
    }
    free(names);
    return done;
}

static int add_removed(eng_repo_prune_report *rep, const char *name)
{
    eng_repo_entry *p = realloc(rep->removed, (size_t)(rep->n_removed + 1) * sizeof *p);
    if (!p)
        return -1;
    rep->removed = p;
    memset(&p[rep->n_removed], 0, sizeof *p);
    snprintf(p[rep->n_removed].name, sizeof p->name, "%s", name);
    rep->n_removed++;
    return 0;
}

void eng_repo_prune_report_free(eng_repo_prune_report *rep)
{
    if (!rep)
        return;
    free(rep->removed);
    rep->removed = NULL;
    rep->n_removed = 0;
}

int eng_repo_prune(const char *dir, int keep, const char *public_key_pem,
                   eng_repo_prune_report *rep, eng_error *err)
{
    eng_repo_prune_report local;
    eng_error e0;
    if (!rep)
        rep = &local;
    if (!err)
        err = &e0;
    memset(rep, 0, sizeof *rep);
    if (keep < 1)
        return eng_fail(err, ENG_EINVAL, "keep must be at least 1 (got %d)", keep);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return eng_fail(err, ENG_EIO, "repository %s: %s", dir, strerror(errno));
    /* One prune at a time per repository (local file systems; where flock is not
     * available, leftovers of live processes are left alone). */
    int locked;
    while (!(locked = flock(dfd, LOCK_EX) == 0) && errno == EINTR)
        ;
    rep->leftovers = clean_leftovers(dfd, dir, locked);

    int rc = 0;
    eng_repo_entry *v = NULL;
    int n = 0;
    char *drop = NULL;
    if ((rc = eng_repo_list(dir, &v, &n, err)))
        goto out;
    int complete = 0, versions = 0;
    for (int i = 0; i < n; i++)
        if (version_name(v[i].name)) {
            versions++;
            complete += v[i].has_sig;
        }
    rep->n_kept = versions;
    if (!complete)
        goto out; /* nothing to serve, nothing to prune */
    char pin[ENG_REPO_NAME_MAX + 1] = "";
    int pinned = eng_repo_pin_get(dir, pin, sizeof pin, err);
    if (pinned < 0) {
        rc = pinned;
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof err->msg - l, " (nothing pruned)");
        goto out;
    }
    if ((rc = eng_repo_current(dir, public_key_pem, rep->current, sizeof rep->current, err))) {
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof err->msg - l, " (nothing pruned)");
        goto out;
    }
    if (!(drop = calloc((size_t)n, 1))) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto out;
    }
    /* Newest first: the current one, then valid ones until keep; invalid ones
     * newer than the current one stay (a follower may still be looking at them). */
    int kept_valid = 1, newest = -1;
    for (int i = 0; i < n; i++)
        if (version_name(v[i].name))
            newest = i;
    for (int i = n - 1; i >= 0; i--) {
        const char *name = v[i].name;
        if (!version_name(name) || strcmp(name, rep->current) == 0 ||
            (pinned == 1 && strcmp(name, pin) == 0))
            continue;
        int newer = eng_repo_version_cmp(name, rep->current) > 0;
        /* The newest folder stays (it is newer than a pinned current one): the next
         * publish takes the number after it, so names are never reused. */
        int last = i == newest;
        if (!newer && kept_valid >= keep && !last) {
            drop[i] = 1; /* old and over the count: valid or not */
            continue;
        }
        char vdir[4096];
        eng_error ve;
        int valid = v[i].has_sig && snprintf(vdir, sizeof vdir, "%s/%s", dir, name) <
                                        (int)sizeof vdir &&
                    eng_repo_verify(vdir, public_key_pem, &ve) == 0;
        if (valid && kept_valid < keep)
            kept_valid++;
        else if (!last && (valid || !newer))
            drop[i] = 1;
    }
    /* Out of the followers' view: one rename each, then fsync(dir). */
    char (*hidden)[ENG_REPO_NAME_MAX + 64] = calloc((size_t)n, sizeof *hidden);
    if (!hidden) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto out;
    }
    int renamed = 0;
    for (int i = 0; i < n; i++) {
        if (!drop[i])
            continue;
        char now[ENG_REPO_NAME_MAX + 1];
        eng_error pe;
        int pr = eng_repo_pin_get(dir, now, sizeof now, &pe);
        if (pr < 0 || (pr == 1 && strcmp(now, v[i].name) == 0)) {
            drop[i] = 0; /* pinned meanwhile (or PIN unreadable now: keep to be safe) */
            continue;
        }
        snprintf(hidden[i], sizeof *hidden, PRUNED_PREFIX "%s-%ld", v[i].name, (long)getpid());
        if (renameat(dfd, v[i].name, dfd, hidden[i]) != 0) {
            rc = eng_fail(err, ENG_EIO, "%s/%s: rename to %s: %s", dir, v[i].name, hidden[i],
                          strerror(errno));
            drop[i] = 0;
            continue;
        }
        renamed++;
    }
    if (renamed && fsync(dfd) != 0 && !rc)
        rc = eng_fail(err, ENG_EIO, "%s: fsync: %s", dir, strerror(errno));
    for (int i = 0; i < n; i++) {
        if (!drop[i])
            continue;
        if (add_removed(rep, v[i].name) != 0 && !rc)
            rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        rep->n_kept--;
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, hidden[i]) < (int)sizeof p &&
            repo_rm_tree(p) != 0 && !rc)
            rc = eng_fail(err, ENG_EIO,
                          "%s: removed from the repository but not deleted (%s); the next prune "
                          "deletes it", p, strerror(errno));
    }
    free(hidden);
out:
    free(drop);
    free(v);
    if (locked)
        flock(dfd, LOCK_UN);
    close(dfd);
    if (rep == &local)
        eng_repo_prune_report_free(rep);
    return rc;
}
