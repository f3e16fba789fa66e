/* feedback_log.c - see feedback_log.h. */
#include "feedback_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

typedef struct mfile {
    char *name;       /* the model's folder under dir */
    int fd;           /* -1: not open */
    off_t off;        /* end of the last complete line */
    int gen;          /* 0: <instance>.jsonl; k: <instance>.<k>.jsonl */
} mfile;

struct srv_fblog {
    char *dir, *instance;
    int n;
    mfile *files;
    srv_metrics *metrics;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_fblog_entry *head, *tail;
    int stopping;
    int running;      /* the writer thread exists and is not joined */
    pthread_t thread;
    atomic_uint_fast64_t fsyncs;
};

static void file_path(const srv_fblog *l, const mfile *f, char *path, size_t cap)
{
    if (f->gen)
        snprintf(path, cap, "%s/%s/%s.%d.jsonl", l->dir, f->name, l->instance, f->gen);
    else
        snprintf(path, cap, "%s/%s/%s.jsonl", l->dir, f->name, l->instance);
}

void srv_fblog_path(srv_fblog *l, int model, char *path, size_t cap)
{
    if (model < 0 || model >= l->n) {
        snprintf(path, cap, "%s", "");
        return;
    }
    pthread_mutex_lock(&l->mu); /* gen changes on the writer thread only after a failure */
    file_path(l, &l->files[model], path, cap);
    pthread_mutex_unlock(&l->mu);
}

/* fsync a folder so that the names created in it are durable. 0 or errno. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int rc = fsync(fd) ? errno : 0;
    close(fd);
    /* Some file systems cannot fsync a folder: that is no reason to refuse. */
    return rc == EINVAL || rc == EROFS ? 0 : rc;
}

/* mkdir -p path (mode 0750 for what it creates), syncing the parent of each
 * folder it creates. 0 or errno. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0)
            continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0750) == 0) {
            char *slash = strrchr(buf, '/');
            int rc = 0;
            if (slash && slash != buf) {
                *slash = 0;
                rc = sync_dir(buf);
                *slash = '/';
            } else if (slash) {
                rc = sync_dir("/");
            } else {
                rc = sync_dir(".");
            }
            if (rc)
                return rc;
        } else if (errno != EEXIST) {
            return errno;
        } else {
            struct stat st;
            if (stat(buf, &st) != 0)
                return errno;
            if (!S_ISDIR(st.st_mode))
                return ENOTDIR;
        }
        buf[i] = c;
    }
    return 0;
}

/* Open f for appending: its folder made, the file created, its name synced,
 * and a file whose last line is torn (a process with our instance name died
 * mid-write: pid and second reused) left for a new generation. 0 or errno. */
static int file_open(srv_fblog *l, mfile *f)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/%s", l->dir, f->name);
    int rc = make_dirs(dir);
    if (rc)
        return rc;
    for (int tries = 0; tries < 1000; tries++) {
        file_path(l, f, path, sizeof path);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0)
            return errno;
        struct stat st;
        if (fstat(fd, &st) != 0) {
            rc = errno;
            close(fd);
            return rc;
        }
        if (st.st_size > 0) {
            char last = 0;
            int rfd = open(path, O_RDONLY | O_CLOEXEC);
            ssize_t got = rfd >= 0 ? pread(rfd, &last, 1, st.st_size - 1) : -1;
            if (rfd >= 0)
                close(rfd);
            if (got != 1 || last != '\n') {
                close(fd);
                pthread_mutex_lock(&l->mu);
                f->gen++;
                pthread_mutex_unlock(&l->mu);
                continue;
            }
        }
        if ((rc = sync_dir(dir))) {
            close(fd);
            return rc;
        }
        f->fd = fd;
        f->off = st.st_size;
        return 0;
    }
    return EEXIST;
}

static void file_close_rotate(srv_fblog *l, mfile *f)
{
    char path[4200];
    file_path(l, f, path, sizeof path);
    close(f->fd);
    f->fd = -1;
    pthread_mutex_lock(&l->mu);
    f->gen++;
    pthread_mutex_unlock(&l->mu);
    srv_log(SRV_LOG_ERROR, NULL,
            "feedback: cannot cut a failed write off %s: later feedback goes to a new file", path);
}

/* Write all of p[0..n). 0 or errno. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Append the entries of one model (in order), sync once, set each err. */
static void write_model(srv_fblog *l, mfile *f, srv_fblog_entry *list)
{
    int err = f->fd < 0 ? file_open(l, f) : 0;
    off_t start = f->off;
    int wrote = 0, rotate = 0;
    for (srv_fblog_entry *e = list; e; e = e->next) {
        if (err) {
            e->err = err;
            continue;
        }
        int we = write_all(f->fd, e->data, e->len);
        if (we == 0) {
            f->off += (off_t)e->len;
            e->err = 0;
            wrote = 1;
            continue;
        }
        /* Cut the partial entry off: the file ends with a complete line again. */
        err = e->err = we;
        if (ftruncate(f->fd, f->off) != 0)
            rotate = 1;
    }
    if (wrote) {
        int se = fdatasync(f->fd) ? errno : 0;
        atomic_fetch_add_explicit(&l->fsyncs, 1, memory_order_relaxed);
        if (l->metrics)
            srv_metrics_feedback_fsync(l->metrics);
        if (se) {
            /* What reached the disk is unknown: acknowledge none of it, and
             * cut it off so that it is not kept either (best effort). */
            for (srv_fblog_entry *e = list; e; e = e->next)
                if (e->err == 0)
                    e->err = se;
            if (ftruncate(f->fd, start) != 0)
                rotate = 1;
            f->off = start;
        }
    }
    if (rotate)
        file_close_rotate(l, f);
}

static void *writer_main(void *arg)
{
    srv_fblog *l = arg;
    srv_fblog_entry **heads = calloc((size_t)l->n, sizeof *heads);
    srv_fblog_entry **tails = calloc((size_t)l->n, sizeof *tails);
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->head && !l->stopping)
            pthread_cond_wait(&l->cv, &l->mu);
        srv_fblog_entry *batch = l->head;
        l->head = l->tail = NULL;
        pthread_mutex_unlock(&l->mu);
        if (!batch)
            break; /* stopping and nothing left */
        /* Group by model, keeping each model's order. */
        srv_fblog_entry *next;
        for (srv_fblog_entry *e = batch; e; e = next) {
            next = e->next;
            e->next = NULL;
            if (!heads || !tails || e->model < 0 || e->model >= l->n) {
                e->err = heads && tails ? EINVAL : ENOMEM;
                e->done(e, e->arg);
                continue;
            }
            if (tails[e->model])
                tails[e->model]->next = e;
            else
                heads[e->model] = e;
            tails[e->model] = e;
        }
        for (int i = 0; heads && tails && i < l->n; i++) {
            if (!heads[i])
                continue;
            write_model(l, &l->files[i], heads[i]);
            for (srv_fblog_entry *e = heads[i]; e; e = next) {
                next = e->next;
                e->done(e, e->arg); /* e may be freed from here on */
            }
            heads[i] = tails[i] = NULL;
        }
    }
    free(heads);
    free(tails);
    return NULL;
}

srv_fblog *srv_fblog_new(const char *dir, const char *instance, int n, const char *const *names,
                         srv_metrics *metrics, char *err, size_t cap)
{
    srv_fblog *l = calloc(1, sizeof *l);
    if (!l)
        goto fail_oom;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->n = n;
    l->metrics = metrics;
    if (!(l->dir = strdup(dir)) || !(l->instance = strdup(instance)) ||
        !(l->files = calloc(n > 0 ? (size_t)n : 1, sizeof *l->files)))
        goto fail_oom;
    for (int i = 0; i < n; i++) {
        l->files[i].fd = -1;
        if (!(l->files[i].name = strdup(names[i])))
            goto fail_oom;
    }
    int rc = make_dirs(dir);
    if (rc)
        srv_log(SRV_LOG_WARN, NULL, "feedback.dir %s: %s (POST /v1/feedback answers 503 until it "
                "can be written)", dir, strerror(rc));
    if (pthread_create(&l->thread, NULL, writer_main, l)) {
        snprintf(err, cap, "feedback: cannot start the writer thread");
        goto fail;
    }
    l->running = 1;
    return l;
fail_oom:
    snprintf(err, cap, "feedback: out of memory");
fail:
    srv_fblog_free(l);
    return NULL;
}

int srv_fblog_submit(srv_fblog *l, srv_fblog_entry *e)
{
    e->next = NULL;
    e->err = 0;
    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

void srv_fblog_stop(srv_fblog *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->running) {
        pthread_join(l->thread, NULL);
        l->running = 0;
    }
}

void srv_fblog_free(srv_fblog *l)
{
    if (!l)
        return;
    srv_fblog_stop(l);
    for (int i = 0; l->files && i < l->n; i++) {
        if (l->files[i].fd >= 0)
            close(l->files[i].fd);
        free(l->files[i].name);
    }
    free(l->files);
    free(l->dir);
    free(l->instance);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

uint64_t srv_fblog_fsyncs(srv_fblog *l)
{
    return atomic_load_explicit(&l->fsyncs, memory_order_relaxed);
}
