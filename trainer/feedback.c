/* feedback.c - reading the daemon's feedback logs (feedback.h). */
#include "feedback.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>


static int push(trn_feedback *fb, const char *text, const char *label, int64_t time)
{
    if (fb->n == fb->cap) {
        int cap = fb->cap ? 2 * fb->cap : 256;
        trn_fb_item *p = realloc(fb->it, sizeof *p * (size_t)cap);
        if (!p)
            return -1;
        fb->it = p;
        fb->cap = cap;
    }
    trn_fb_item *e = &fb->it[fb->n];
    e->text = strdup(text);
    e->label = strdup(label);
    if (!e->text || !e->label) {
        free(e->text);
        free(e->label);
        return -1;
    }
    e->time = time;
    e->seq = fb->n ? fb->it[fb->n - 1].seq + 1 : 0;
    fb->n++;
    return 0;
}

void trn_fb_cache_free(trn_fb_cache *c)
{
    free(c->e);
    memset(c, 0, sizeof *c);
}

static trn_fb_seen *cache_find(trn_fb_cache *c, const struct stat *st)
{
    for (int i = 0; i < c->n; i++)
        if (c->e[i].dev == (uint64_t)st->st_dev && c->e[i].ino == (uint64_t)st->st_ino)
            return &c->e[i];
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        trn_fb_seen *p = realloc(c->e, sizeof *p * (size_t)cap);
        if (!p)
            return NULL;
        c->e = p;
        c->cap = cap;
    }
    trn_fb_seen *e = &c->e[c->n++];
    memset(e, 0, sizeof *e);
    e->dev = (uint64_t)st->st_dev;
    e->ino = (uint64_t)st->st_ino;
    e->size = UINT64_MAX; /* never read yet */
    return e;
}

static int read_log(const char *path, int64_t after, trn_fb_cache *cache, FILE *log,
                    trn_feedback *fb, eng_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
    /* The identity before reading: a line appended meanwhile changes it, so the
     * next check reads the log again. */
    struct stat st;
    trn_fb_seen *seen = NULL;
    if (cache && fstat(fileno(f), &st) == 0 && (seen = cache_find(cache, &st))) {
        int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        seen->pass = cache->pass;
        if (seen->size == (uint64_t)st.st_size && seen->mtime_ns == mtime && seen->newest <= after) {
            fclose(f);
            fb->unchanged++;
            return ENG_OK;
        }
        seen->size = (uint64_t)st.st_size;
        seen->mtime_ns = mtime;
        seen->newest = 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = ENG_OK;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[len - 1] != '\n') {
            fb->torn++;
            if (log)
                fprintf(log, "%s:%d: torn last line (no newline: a write cut short), skipped\n",
                        path, lineno);
            break;
        }
        line[len - 1] = 0;
        if (len == 1)
            continue; /* an empty line */
        cJSON *j = cJSON_Parse(line);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "time");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "label");
        if (!cJSON_IsObject(j) || !cJSON_IsNumber(t) || !isfinite(t->valuedouble) ||
            !cJSON_IsString(x) || !*x->valuestring || !cJSON_IsString(l) || !*l->valuestring) {
            fb->bad++;
            if (log)
                fprintf(log, "%s:%d: %s, skipped\n", path, lineno,
                        !j ? "not JSON" : "not a feedback item (time, text and label needed)");
            cJSON_Delete(j);
            continue;
        }
        int64_t ms = (int64_t)t->valuedouble;
        if (seen && ms > seen->newest)
            seen->newest = ms;
        if (ms <= after) {
            fb->older++;
        } else if (push(fb, x->valuestring, l->valuestring, ms)) {
            cJSON_Delete(j);
            rc = eng_fail(err, ENG_ENOMEM, "out of memory");
            break;
        } else if (ms > fb->max_time) {
            fb->max_time = ms;
        }
        cJSON_Delete(j);
    }
    if (!rc && ferror(f))
        rc = eng_fail(err, ENG_EIO, "%s: read error", path);
    if (rc && seen)
        seen->size = UINT64_MAX; /* not read through: read it again next time */
    free(line);
    fclose(f);
    if (!rc)
        fb->files++;
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_dir(const char *dir, int64_t after, trn_fb_cache *cache, FILE *log,
                    trn_feedback *fb, eng_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return eng_fail(err, ENG_EIO, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = ENG_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < 7 || strcmp(e->d_name + l - 6, ".jsonl") != 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **p = realloc(names, sizeof *p * (size_t)cap);
            if (!p) {
                rc = eng_fail(err, ENG_ENOMEM, "out of memory");
                break;
            }
            names = p;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = eng_fail(err, ENG_ENOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (!rc && !n && log)
        fprintf(log, "%s: no *.jsonl feedback logs in this folder (the daemon writes them to "
                "<feedback.dir>/<model>/)\n", dir);
    if (!rc && n)
        qsort(names, (size_t)n, sizeof *names, cmp_name);
    for (int i = 0; !rc && i < n; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
            rc = eng_fail(err, ENG_EINVAL, "%s/%s: path too long", dir, names[i]);
        else
            rc = read_log(path, after, cache, log, fb, err);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int trn_feedback_read(const char *const *paths, int n, int64_t after_ms, trn_fb_cache *cache,
                      FILE *log, trn_feedback *fb, eng_error *err)
{
    if (cache)
        cache->pass++;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0)
            return eng_fail(err, ENG_EIO, "%s: %s", paths[i], strerror(errno));
        int rc = S_ISDIR(st.st_mode) ? read_dir(paths[i], after_ms, cache, log, fb, err)
                                     : read_log(paths[i], after_ms, cache, log, fb, err);
        if (rc)
            return rc;
    }
    if (cache) { /* forget logs that are gone (rotated away, deleted) */
        int k = 0;
        for (int i = 0; i < cache->n; i++)
            if (cache->e[i].pass == cache->pass)
                cache->e[k++] = cache->e[i];
        cache->n = k;
    }
    return ENG_OK;
}

static int cmp_item(const void *a, const void *b)
{
    const trn_fb_item *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    if (c)
        return c;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void trn_feedback_dedupe(trn_feedback *fb)
{
    if (fb->n < 2)
        return;
    qsort(fb->it, (size_t)fb->n, sizeof *fb->it, cmp_item);
    int w = 0;
    for (int i = 0; i < fb->n; i++) {
        if (i + 1 < fb->n && strcmp(fb->it[i].text, fb->it[i + 1].text) == 0) {
            free(fb->it[i].text); /* an older label for the same text */
            free(fb->it[i].label);
            fb->duplicates++;
            continue;
        }
        fb->it[w++] = fb->it[i];
    }
    fb->n = w;
}

int trn_feedback_find(const trn_feedback *fb, const char *text)
{
    int lo = 0, hi = fb->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(fb->it[mid].text, text);
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

void trn_feedback_free(trn_feedback *fb)
{
    for (int i = 0; i < fb->n; i++) {
        free(fb->it[i].text);
        free(fb->it[i].label);
    }
    free(fb->it);
    memset(fb, 0, sizeof *fb);
}
