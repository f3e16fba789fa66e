/* reload.c - following model repositories and folders, and swapping versions
 * in while serving (reload.h).
 *
 * Threads: the loop thread owns the uv handles (fs events, timers) and reads
 * the version tables for GET .../versions; the reloader thread does every
 * check (disk, verification, loading, warm-up) one at a time. Each follower's
 * table is guarded by its own mutex, held only to read or update the table,
 * never while loading. The reloader's queue (pending checks, admin requests)
 * has a mutex and condition variable of its own. */
#include "reload.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "nlpd_repo.h"

typedef enum vstate { V_AVAILABLE = 0, V_SERVING, V_REJECTED, V_INCOMPLETE } vstate;
static const char *const vstate_name[] = {"available", "serving", "rejected", "incomplete"};

/* One version a follower knows of. */
typedef struct vrec {
    char name[128];
    uint64_t fingerprint;   /* of its files when last listed */
    vstate state;
    int transient;          /* rejected for a reason outside its files (memory): retry */
    char reason[512];
    int64_t loaded_unix_ms; /* 0: never loaded */
    int64_t load_ns, warm_ns;
    char *metadata;         /* nlpd-version.json, re-printed compact; NULL: none */
} vrec;

/* One model's source and what is known of its versions. */
typedef struct follow {
    srv_reload *rl;
    srv_model *m;
    const char *dir;        /* repository or fixed folder */
    const char *pubkey;     /* repository signing key, or NULL */
    int repo;
    int pending;            /* a check is asked for (under rl->mu) */
    uint64_t folder_stat;   /* fixed folder: sizes and mtimes when last hashed (reloader) */

    pthread_mutex_t mu;     /* guards everything below */
    vrec *v;
    int n, cap;
    char pinned[128];       /* "" when none */
    char serving[128];      /* "" when none yet */
    char error[512];        /* the last check's problem that is not a version's ("" none) */
    long checks;            /* checks run (shows that a burst of events causes one) */

    uv_fs_event_t ev;       /* loop thread */
    uv_timer_t debounce;
    int handles;            /* ev/debounce initialised */
} follow;

typedef struct admin_task {
    struct admin_task *next;
    srv_req *r;
    follow *f;
    srv_reload_op op;
    char version[128];
} admin_task;

struct srv_reload {
    srv_server *s;
    follow *f;              /* [s->n_models] */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    admin_task *head, *tail;
    uv_timer_t rescan;
    int rescan_init;
};

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ the table */

/* Under f->mu. */
static vrec *find_rec(follow *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->v[i].name, name) == 0)
            return &f->v[i];
    return NULL;
}

/* Under f->mu. NULL on OOM. */
static vrec *add_rec(follow *f, const char *name)
{
    if (f->n == f->cap) {
        int nc = f->cap ? 2 * f->cap : 16;
        vrec *nv = realloc(f->v, (size_t)nc * sizeof *nv);
        if (!nv)
            return NULL;
        f->v = nv;
        f->cap = nc;
    }
    vrec *r = &f->v[f->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

/* Under f->mu: drop record i. */
static void drop_rec(follow *f, int i)
{
    free(f->v[i].metadata);
    f->v[i] = f->v[--f->n];
}

static void reject(follow *f, const char *name, int transient, const char *reason)
{
    pthread_mutex_lock(&f->mu);
    vrec *r = find_rec(f, name);
    if (!r)
        r = add_rec(f, name);
    if (r) {
        r->state = V_REJECTED;
        r->transient = transient;
        snprintf(r->reason, sizeof r->reason, "%s", reason);
    }
    pthread_mutex_unlock(&f->mu);
    srv_metrics_reload(f->m->srv->metrics, f->m->index, 0, 0, 0);
    srv_log(SRV_LOG_WARN, NULL, "model %s: version %s rejected: %s", f->m->conf->name, name,
            reason);
}

/* Merge a repository listing into the table: new versions appear, a rejected
 * version whose files changed becomes a candidate again, vanished ones go
 * (the serving one stays: it lives in memory). */
static void merge_listing(follow *f, const eng_repo_entry *e, int n)
{
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < n; i++) {
        vrec *r = find_rec(f, e[i].name);
        if (!r) {
            if (!(r = add_rec(f, e[i].name)))
                break;
            r->fingerprint = e[i].fingerprint;
            r->state = e[i].has_sig ? V_AVAILABLE : V_INCOMPLETE;
            continue;
        }
        int changed = r->fingerprint != e[i].fingerprint;
        r->fingerprint = e[i].fingerprint;
        if (r->state == V_SERVING)
            continue;
        if (r->state == V_REJECTED && !changed && !r->transient)
            continue;
        if (changed || r->state != V_REJECTED || r->transient) {
            r->state = e[i].has_sig ? V_AVAILABLE : V_INCOMPLETE;
            r->reason[0] = 0;
            r->transient = 0;
        }
    }
    for (int i = f->n - 1; i >= 0; i--) {
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = strcmp(f->v[i].name, e[k].name) == 0;
        if (!seen && f->v[i].state != V_SERVING)
            drop_rec(f, i);
    }
    pthread_mutex_unlock(&f->mu);
}

/* ----------------------------------------------------------- the checks */

/* Bytes of the regular files directly in dir and one level down. */
static uint64_t folder_bytes(const char *dir, int depth)
{
    uint64_t total = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (lstat(p, &st) != 0)
            continue;
        if (S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
        else if (S_ISDIR(st.st_mode) && depth > 0)
            total += folder_bytes(p, depth - 1);
    }
    closedir(d);
    return total;
}

/* Bytes this process may still take: MemAvailable, and the cgroup (v2)
 * limit's headroom when there is one. UINT64_MAX when unknown. */
static uint64_t memory_headroom(void)
{
    uint64_t avail = UINT64_MAX;
    FILE *fp = fopen("/proc/meminfo", "r");
    if (fp) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, fp))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
                avail = (uint64_t)kb * 1024;
        fclose(fp);
    }
    char cg[600] = "", path[700];
    if ((fp = fopen("/proc/self/cgroup", "r"))) {
        char line[600];
        while (fgets(line, sizeof line, fp))
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = 0;
                snprintf(cg, sizeof cg, "%s", line + 3);
            }
        fclose(fp);
    }
    unsigned long long max = 0, cur = 0;
    snprintf(path, sizeof path, "/sys/fs/cgroup%.*s/memory.max", 600, cg);
    if ((fp = fopen(path, "r"))) {
        if (fscanf(fp, "%llu", &max) != 1)
            max = 0; /* "max": no limit */
        fclose(fp);
    }
    snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", cg);
    if (max && (fp = fopen(path, "r"))) {
        if (fscanf(fp, "%llu", &cur) == 1) {
            uint64_t room = max > cur ? max - cur : 0;
            avail = room < avail ? room : avail;
        }
        fclose(fp);
    }
    return avail;
}

/* Is there memory to load a version of `bytes` beside the serving one? */
static int memory_ok(const srv_config *c, uint64_t bytes, char *why, size_t cap)
{
    if (!c->memory_factor_pct)
        return 1;
    uint64_t need = bytes / 100 * (uint64_t)c->memory_factor_pct;
    uint64_t room = memory_headroom();
    if (room >= need)
        return 1;
    snprintf(why, cap,
             "not enough memory to load it beside the serving version: needs about %llu MiB "
             "(%d %% of its %llu MiB of files), %llu MiB available",
             (unsigned long long)(need >> 20), c->memory_factor_pct,
             (unsigned long long)(bytes >> 20), (unsigned long long)(room >> 20));
    return 0;
}

/* Its metadata re-printed compact (the file is signed, but may be any JSON). */
static char *read_metadata(const char *vdir)
{
    char *raw = NULL;
    eng_error e = {0};
    if (eng_repo_read_metadata(vdir, &raw, &e) || !raw)
        return NULL;
    cJSON *j = cJSON_Parse(raw);
    free(raw);
    char *out = j && cJSON_IsObject(j) ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return out;
}

/* Make v the serving version of f (reloader thread). */
static void serve(follow *f, srv_version *v)
{
    v->loaded_unix_ms = unix_ms();
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n; i++)
        if (f->v[i].state == V_SERVING)
            f->v[i].state = V_AVAILABLE;
    vrec *r = find_rec(f, v->name);
    if (!r)
        r = add_rec(f, v->name);
    if (r) {
        r->state = V_SERVING;
        r->reason[0] = 0;
        r->loaded_unix_ms = v->loaded_unix_ms;
        r->load_ns = v->load_ns;
        r->warm_ns = v->warm_ns;
        free(r->metadata);
        r->metadata = v->metadata ? strdup(v->metadata) : NULL;
    }
    snprintf(f->serving, sizeof f->serving, "%s", v->name);
    pthread_mutex_unlock(&f->mu);
    srv_metrics_reload(f->m->srv->metrics, f->m->index, 1, v->load_ns, v->warm_ns);
    srv_models_serve(f->m, v);
    /* The old version's large blocks go back to the system once its last
     * request drops it; give back what the allocator still holds meanwhile. */
    malloc_trim(0);
}

/* Verify, check memory, load and warm up version `name` of a repository,
 * then serve it. 0, or -1 (rejected, reason recorded). */
static int try_version(follow *f, const char *name, uint64_t fingerprint)
{
    char vdir[4200], why[600];
    snprintf(vdir, sizeof vdir, "%s/%s", f->dir, name);
    eng_error e = {0};
    int64_t t0 = srv_now_ns();
    if (eng_repo_verify(vdir, f->pubkey, &e)) {
        reject(f, name, 0, e.msg);
        return -1;
    }
    if (!memory_ok(f->m->srv->cfg, folder_bytes(vdir, 1), why, sizeof why)) {
        reject(f, name, 1, why);
        return -1;
    }
    srv_version *v = srv_models_load_version(f->m, vdir, name, why, sizeof why);
    if (!v) {
        reject(f, name, 0, why);
        return -1;
    }
    /* The files must be the ones verified: a change meanwhile rejects the load
     * (it is checked again once the files settle). */
    eng_repo_entry *ents = NULL;
    int n = 0, same = 0;
    if (eng_repo_list(f->dir, &ents, &n, &e) == 0)
        for (int i = 0; i < n; i++)
            if (strcmp(ents[i].name, name) == 0)
                same = ents[i].fingerprint == fingerprint;
    free(ents);
    if (!same) {
        srv_version_unref(v);
        reject(f, name, 1, "its files changed while it was loading");
        return -1;
    }
    v->load_ns = srv_now_ns() - t0 - v->warm_ns; /* verification included */
    v->metadata = read_metadata(vdir);
    serve(f, v);
    return 0;
}

static void set_error(follow *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(follow *f, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&f->mu);
    int changed = strcmp(f->error, msg) != 0;
    snprintf(f->error, sizeof f->error, "%s", msg);
    pthread_mutex_unlock(&f->mu);
    if (changed && *msg)
        srv_log(SRV_LOG_WARN, NULL, "model %s: %s", f->m->conf->name, msg);
}

/* One check of a repository: pick the version to serve and swap it in. */
static void check_repo(follow *f)
{
    eng_repo_entry *ents = NULL;
    int n = 0;
    eng_error e = {0};
    if (eng_repo_list(f->dir, &ents, &n, &e)) {
        set_error(f, "cannot list the repository: %s", e.msg);
        return;
    }
    merge_listing(f, ents, n);
    char pin[128] = "";
    int pinned = eng_repo_pin_get(f->dir, pin, sizeof pin, &e);
    if (pinned < 0) {
        set_error(f, "cannot read the pin: %s", e.msg);
        free(ents);
        return;
    }
    pthread_mutex_lock(&f->mu);
    snprintf(f->pinned, sizeof f->pinned, "%s", pinned == 1 ? pin : "");
    pthread_mutex_unlock(&f->mu);
    set_error(f, "%s", "");

    /* Candidates, newest first (eng_repo_list sorts oldest first). */
    for (int i = n - 1; i >= 0; i--) {
        const eng_repo_entry *c = &ents[i];
        if (pinned == 1 && strcmp(c->name, pin) != 0)
            continue;
        pthread_mutex_lock(&f->mu);
        vrec *r = find_rec(f, c->name);
        vstate st = r ? r->state : V_INCOMPLETE;
        char reason[512];
        snprintf(reason, sizeof reason, "%s", r ? r->reason : "");
        pthread_mutex_unlock(&f->mu);
        if (st == V_SERVING)
            break; /* nothing newer qualifies: keep it */
        if (st == V_INCOMPLETE || st == V_REJECTED) {
            if (pinned == 1)
                set_error(f, "pinned version %s cannot be served: %s", pin,
                          st == V_INCOMPLETE ? "it has no signature file yet" : reason);
            continue;
        }
        if (try_version(f, c->name, c->fingerprint) == 0)
            break;
    }
    if (pinned == 1) {
        int found = 0;
        for (int i = 0; i < n; i++)
            found |= strcmp(ents[i].name, pin) == 0;
        if (!found)
            set_error(f, "pinned version %s does not exist", pin);
    }
    free(ents);
}

/* What stat says of a fixed folder's config.json and model.safetensors:
 * hashing the weights again is needed only when this changes. */
static uint64_t folder_stat(const char *dir)
{
    static const char *const files[] = {"config.json", "model.safetensors"};
    uint64_t h = 1469598103934665603ull;
    for (int k = 0; k < 2; k++) {
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, files[k]);
        uint64_t v[4] = {0};
        if (stat(p, &st) == 0) {
            v[0] = (uint64_t)st.st_size;
            v[1] = (uint64_t)st.st_mtim.tv_sec;
            v[2] = (uint64_t)st.st_mtim.tv_nsec;
            v[3] = (uint64_t)st.st_ino;
        }
        for (int i = 0; i < 4; i++)
            h = (h ^ v[i]) * 1099511628211ull;
    }
    return h;
}

/* One check of a fixed folder: reload it when its content changed. */
static void check_folder(follow *f)
{
    const srv_model_conf *c = f->m->conf;
    char name[128], why[600];
    uint64_t st = folder_stat(f->dir);
    if (st == f->folder_stat)
        return;
    f->folder_stat = st;
    if (c->version)
        snprintf(name, sizeof name, "%s", c->version);
    else if (srv_models_content_version(f->dir, name, sizeof name)) {
        set_error(f, "cannot hash %s to derive its version", f->dir);
        return;
    }
    pthread_mutex_lock(&f->mu);
    int same = strcmp(name, f->serving) == 0;
    vrec *r = find_rec(f, name);
    int rejected = r && r->state == V_REJECTED;
    pthread_mutex_unlock(&f->mu);
    if (same || rejected)
        return;
    int64_t t0 = srv_now_ns();
    srv_version *v = srv_models_load_version(f->m, f->dir, name, why, sizeof why);
    if (!v) {
        reject(f, name, 0, why);
        return;
    }
    v->load_ns = srv_now_ns() - t0 - v->warm_ns;
    serve(f, v);
}

static void check(follow *f)
{
    pthread_mutex_lock(&f->mu);
    f->checks++;
    pthread_mutex_unlock(&f->mu);
    if (f->repo)
        check_repo(f);
    else
        check_folder(f);
}

/* -------------------------------------------------------- admin requests */

static void respond_versions(follow *f, srv_req *r, int status)
{
    srv_buf b;
    srv_buf_init(&b);
    srv_reload_render_versions(f->rl, f->m, &b);
    srv_buf_puts(&b, "\n");
    size_t len = 0;
    char *body = srv_buf_take(&b, &len);
    if (body)
        srv_req_respond(r, status, body, len, NULL);
    else
        srv_req_error(r, 500, "internal", "out of memory");
}

static void run_admin(admin_task *t)
{
    follow *f = t->f;
    srv_req *r = t->r;
    eng_error e = {0};
    if (t->op != SRV_RELOAD_CHECK && !f->repo) {
        srv_req_error(r, 409, "not_a_repository",
                      "model %s is served from a fixed folder, not a repository: there are no "
                      "versions to pin", f->m->conf->name);
        return;
    }
    if (t->op == SRV_RELOAD_CHECK) {
        check(f);
        respond_versions(f, r, 200);
        return;
    }
    if (t->op == SRV_RELOAD_UNPIN) {
        if (eng_repo_pin_set(f->dir, NULL, &e)) {
            srv_req_error(r, 500, "pin_failed", "cannot remove the pin: %s", e.msg);
            return;
        }
        check(f);
        respond_versions(f, r, 200);
        return;
    }
    /* Activate: pin, then serve it; when it cannot be served, the previous
     * pin (or none) is restored and the reason returned. */
    char old[128] = "";
    int had = eng_repo_pin_get(f->dir, old, sizeof old, &e);
    if (had < 0) {
        srv_req_error(r, 500, "pin_failed", "cannot read the pin: %s", e.msg);
        return;
    }
    if (eng_repo_pin_set(f->dir, t->version, &e)) {
        srv_req_error(r, e.code == ENG_EINVAL ? 404 : 500,
                      e.code == ENG_EINVAL ? "version_not_found" : "pin_failed", "%s", e.msg);
        return;
    }
    check(f);
    pthread_mutex_lock(&f->mu);
    int ok = strcmp(f->serving, t->version) == 0;
    vrec *v = find_rec(f, t->version);
    char reason[512];
    snprintf(reason, sizeof reason, "%s",
             v && v->reason[0] ? v->reason
             : v && v->state == V_INCOMPLETE ? "it has no signature file yet"
                                             : "it could not be served");
    pthread_mutex_unlock(&f->mu);
    if (ok) {
        respond_versions(f, r, 200);
        return;
    }
    eng_repo_pin_set(f->dir, had == 1 ? old : NULL, &e);
    check(f);
    srv_req_error(r, 409, "version_rejected", "version %s of model %s cannot be served: %s",
                  t->version, f->m->conf->name, reason);
}

/* ------------------------------------------------------- the reloader */

static void *reloader_main(void *arg)
{
    srv_reload *rl = arg;
    /* Loading competes with nothing: the serving threads keep their cores. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&rl->mu);
    while (!rl->stop) {
        admin_task *t = rl->head;
        if (t) {
            rl->head = t->next;
            if (!rl->head)
                rl->tail = NULL;
            pthread_mutex_unlock(&rl->mu);
            run_admin(t);
            srv_req_done(t->r);
            free(t);
            pthread_mutex_lock(&rl->mu);
            continue;
        }
        follow *f = NULL;
        for (int i = 0; i < rl->s->n_models && !f; i++)
            if (rl->f[i].pending)
                f = &rl->f[i];
        if (!f) {
            pthread_cond_wait(&rl->cv, &rl->mu);
            continue;
        }
        f->pending = 0;
        pthread_mutex_unlock(&rl->mu);
        check(f);
        pthread_mutex_lock(&rl->mu);
    }
    /* Admin requests still queued are answered: the server is stopping. */
    admin_task *rest = rl->head;
    rl->head = rl->tail = NULL;
    pthread_mutex_unlock(&rl->mu);
    while (rest) {
        admin_task *next = rest->next;
        rest->r->retry_after = 1;
        srv_req_error(rest->r, 503, "draining", "the server is shutting down");
        srv_req_done(rest->r);
        free(rest);
        rest = next;
    }
    return NULL;
}

void srv_reload_request(srv_reload *rl, int model)
{
    pthread_mutex_lock(&rl->mu);
    for (int i = 0; i < rl->s->n_models; i++)
        if (model < 0 || i == model)
            rl->f[i].pending = 1;
    pthread_cond_signal(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
}

int srv_reload_admin(srv_reload *rl, srv_req *r, srv_model *m, srv_reload_op op,
                     const char *version)
{
    admin_task *t = calloc(1, sizeof *t);
    if (!t) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    t->r = r;
    t->f = &rl->f[m->index];
    t->op = op;
    snprintf(t->version, sizeof t->version, "%s", version ? version : "");
    pthread_mutex_lock(&rl->mu);
    if (rl->stop || !rl->started) {
        pthread_mutex_unlock(&rl->mu);
        free(t);
        r->retry_after = 1;
        srv_req_error(r, 503, rl->stop ? "draining" : "not_ready",
                      rl->stop ? "the server is shutting down" : "models are still loading");
        return -1;
    }
    if (rl->tail)
        rl->tail->next = t;
    else
        rl->head = t;
    rl->tail = t;
    pthread_cond_signal(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
    return 0;
}

/* ------------------------------------------------------ detection (loop) */

static void on_debounce(uv_timer_t *t)
{
    follow *f = t->data;
    srv_reload_request(f->rl, f->m->index);
}

static void on_fs_event(uv_fs_event_t *h, const char *file, int events, int status)
{
    (void)file, (void)events, (void)status;
    follow *f = h->data;
    /* A burst of events (a publish renames a folder; a copy writes many files)
     * restarts the window: one check when it goes quiet. */
    uv_timer_start(&f->debounce, on_debounce, (uint64_t)f->m->srv->cfg->debounce_ms, 0);
}

static void on_rescan(uv_timer_t *t)
{
    srv_reload_request(t->data, -1);
}

/* ------------------------------------------------------------ lifecycle */

srv_reload *srv_reload_new(srv_server *s)
{
    srv_reload *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->s = s;
    if (!(rl->f = calloc((size_t)(s->n_models > 0 ? s->n_models : 1), sizeof *rl->f))) {
        free(rl);
        return NULL;
    }
    pthread_mutex_init(&rl->mu, NULL);
    pthread_cond_init(&rl->cv, NULL);
    for (int i = 0; i < s->n_models; i++) {
        follow *f = &rl->f[i];
        const srv_model_conf *c = s->models[i].conf;
        f->rl = rl;
        f->m = &s->models[i];
        f->repo = c->repository != NULL;
        f->dir = f->repo ? c->repository : c->path;
        f->pubkey = c->public_key_file ? c->public_key_file : s->cfg->public_key_file;
        if (!f->repo)
            f->pubkey = NULL;
        pthread_mutex_init(&f->mu, NULL);
    }
    return rl;
}

void srv_reload_free(srv_reload *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < rl->s->n_models; i++) {
        follow *f = &rl->f[i];
        for (int k = 0; k < f->n; k++)
            free(f->v[k].metadata);
        free(f->v);
        pthread_mutex_destroy(&f->mu);
    }
    pthread_mutex_destroy(&rl->mu);
    pthread_cond_destroy(&rl->cv);
    free(rl->f);
    free(rl);
}

int srv_reload_initial(srv_reload *rl)
{
    for (int i = 0; i < rl->s->n_models; i++) {
        follow *f = &rl->f[i];
        if (atomic_load(&rl->s->draining)) /* a signal: stop between models */
            return SRV_MODELS_LOAD_STOPPED;
        check(f);
        pthread_mutex_lock(&f->mu);
        int none = !f->serving[0];
        pthread_mutex_unlock(&f->mu);
        if (none && !f->repo) {
            srv_log(SRV_LOG_ERROR, NULL, "model %s: %s could not be loaded (see above)",
                    f->m->conf->name, f->dir);
            return -1;
        }
        if (none)
            srv_log(SRV_LOG_WARN, NULL,
                    "model %s: repository %s has no valid version yet; the model is not ready "
                    "until one is published", f->m->conf->name, f->dir);
    }
    return 0;
}

int srv_reload_start(srv_reload *rl)
{
    srv_server *s = rl->s;
    for (int i = 0; i < s->n_models; i++) {
        follow *f = &rl->f[i];
        if (f->m->conf->version && !f->repo)
            continue; /* a fixed folder with a fixed version name: nothing to follow */
        uv_fs_event_init(s->loop, &f->ev);
        uv_timer_init(s->loop, &f->debounce);
        f->ev.data = f->debounce.data = f;
        f->handles = 1;
        int rc = uv_fs_event_start(&f->ev, on_fs_event, f->dir, 0);
        if (rc)
            srv_log(SRV_LOG_WARN, NULL, "model %s: cannot watch %s (%s): changes are seen by "
                    "the periodic rescan only", f->m->conf->name, f->dir, uv_strerror(rc));
    }
    if (s->cfg->rescan_interval_s > 0) {
        uint64_t ms = (uint64_t)s->cfg->rescan_interval_s * 1000;
        uv_timer_init(s->loop, &rl->rescan);
        rl->rescan.data = rl;
        rl->rescan_init = 1;
        uv_timer_start(&rl->rescan, on_rescan, ms, ms);
    }
    if (pthread_create(&rl->thread, NULL, reloader_main, rl)) {
        srv_log(SRV_LOG_ERROR, NULL, "cannot start the model reloader thread");
        return -1;
    }
    pthread_mutex_lock(&rl->mu);
    rl->started = 1;
    pthread_mutex_unlock(&rl->mu);
    return 0;
}

void srv_reload_stop(srv_reload *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < rl->s->n_models; i++) {
        follow *f = &rl->f[i];
        if (f->handles) {
            uv_fs_event_stop(&f->ev);
            uv_close((uv_handle_t *)&f->ev, NULL);
            uv_close((uv_handle_t *)&f->debounce, NULL);
            f->handles = 0;
        }
    }
    if (rl->rescan_init) {
        uv_close((uv_handle_t *)&rl->rescan, NULL);
        rl->rescan_init = 0;
    }
    pthread_mutex_lock(&rl->mu);
    int started = rl->started;
    rl->stop = 1;
    rl->started = 0;
    pthread_cond_signal(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
    if (started)
        pthread_join(rl->thread, NULL);
}

/* --------------------------------------------------------------- render */

static void put_str(srv_buf *b, const char *s)
{
    srv_buf_json_str(b, s, strlen(s));
}

static void put_time(srv_buf *b, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char s[40];
    gmtime_r(&t, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
    srv_buf_printf(b, "\"%s.%03dZ\"", s, (int)(ms % 1000));
}

void srv_reload_render_versions(srv_reload *rl, const srv_model *m, srv_buf *b)
{
    follow *f = &rl->f[m->index];
    pthread_mutex_lock(&f->mu);
    srv_buf_puts(b, "{\"model\":");
    put_str(b, m->conf->name);
    srv_buf_puts(b, f->repo ? ",\"source\":\"repository\",\"repository\":"
                            : ",\"source\":\"folder\",\"path\":");
    put_str(b, f->dir);
    srv_buf_puts(b, ",\"signed_by\":");
    if (f->pubkey)
        put_str(b, f->pubkey);
    else
        srv_buf_puts(b, "null");
    srv_buf_puts(b, ",\"pinned\":");
    if (f->pinned[0])
        put_str(b, f->pinned);
    else
        srv_buf_puts(b, "null");
    srv_buf_puts(b, ",\"serving\":");
    if (f->serving[0])
        put_str(b, f->serving);
    else
        srv_buf_puts(b, "null");
    if (f->error[0]) {
        srv_buf_puts(b, ",\"error\":");
        put_str(b, f->error);
    }
    srv_buf_printf(b, ",\"checks\":%ld", f->checks);
    srv_buf_puts(b, ",\"versions\":[");
    /* Newest first. */
    int *order = malloc((size_t)(f->n ? f->n : 1) * sizeof *order);
    for (int i = 0; order && i < f->n; i++) {
        int k = i;
        while (k > 0 && eng_repo_version_cmp(f->v[order[k - 1]].name, f->v[i].name) < 0) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (int j = 0; order && j < f->n; j++) {
        const vrec *r = &f->v[order[j]];
        srv_buf_puts(b, j ? ",{\"version\":" : "{\"version\":");
        put_str(b, r->name);
        srv_buf_printf(b, ",\"state\":\"%s\"", vstate_name[r->state]);
        if (r->reason[0]) {
            srv_buf_puts(b, ",\"reason\":");
            put_str(b, r->reason);
        }
        if (r->loaded_unix_ms) {
            srv_buf_puts(b, ",\"loaded_at\":");
            put_time(b, r->loaded_unix_ms);
            srv_buf_printf(b, ",\"load_ms\":%.1f,\"warmup_ms\":%.1f", (double)r->load_ns / 1e6,
                           (double)r->warm_ns / 1e6);
        }
        if (r->metadata) {
            srv_buf_puts(b, ",\"metadata\":");
            srv_buf_puts(b, r->metadata);
        }
        srv_buf_puts(b, "}");
    }
    free(order);
    srv_buf_puts(b, "]}");
    pthread_mutex_unlock(&f->mu);
}
