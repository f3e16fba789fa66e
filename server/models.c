/* models.c - the configured models: folder checks, loading a version
 * (checked, derived state, warmed up through the real request path), content
 * versions, one model slot + batcher each, lookup by endpoint. */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"
#include "reload.h"
#include "server.h"

int srv_task_serves(srv_task t, srv_endpoint ep)
{
    switch (ep) {
    case SRV_EP_EMBED: return t == SRV_TASK_EMBED;
    case SRV_EP_SENTIMENT: return t == SRV_TASK_SENTIMENT;
    /* A sentiment model is a sequence classifier too. */
    case SRV_EP_CLASSIFY: return t == SRV_TASK_CLASSIFY || t == SRV_TASK_SENTIMENT;
    case SRV_EP_QA: return t == SRV_TASK_QA;
    case SRV_EP_TRANSLATE: return t == SRV_TASK_TRANSLATE;
    default: return 0;
    }
}

static int file_exists(const char *dir, const char *name, char *path, size_t cap)
{
    struct stat st;
    snprintf(path, cap, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int srv_models_init(srv_server *s, char *err, size_t cap)
{
    const srv_config *c = s->cfg;
    s->models = calloc((size_t)c->n_models, sizeof *s->models);
    if (!s->models) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    s->n_models = c->n_models;
    for (int i = 0; i < c->n_models; i++) {
        srv_model *m = &s->models[i];
        const srv_model_conf *mc = &c->models[i];
        m->index = i;
        m->conf = mc;
        m->srv = s;
        atomic_init(&m->status, SRV_MODEL_LOADING);
        snprintf(m->device, sizeof m->device, "%s", mc->backend);
        /* The device and the precision on it, before anything is loaded (--check-config
         * too): a model asking for a GPU that is not here stops start-up, naming both. */
        eng_error be = {0};
        if (eng_backend_check(mc->backend, &be) ||
            eng_precision_check(mc->precision, mc->backend, &be)) {
            snprintf(err, cap, "models[%d] (%s): %s", i, mc->name, be.msg);
            return -1;
        }
        struct stat st;
        char path[4200];
        if (mc->repository) {
            /* A repository may start empty (a trainer publishes into it): create it. */
            if (mkdir(mc->repository, 0755) != 0 && errno != EEXIST) {
                snprintf(err, cap, "models[%d] (%s): cannot create the repository %s: %s", i,
                         mc->name, mc->repository, strerror(errno));
                return -1;
            }
            if (stat(mc->repository, &st) != 0 || !S_ISDIR(st.st_mode)) {
                snprintf(err, cap, "models[%d] (%s): repository %s is not a folder", i, mc->name,
                         mc->repository);
                return -1;
            }
            continue;
        }
        if (stat(mc->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, cap, "models[%d] (%s): model folder %s %s%s", i, mc->name, mc->path,
                     errno == ENOENT ? "does not exist" : "is not a readable folder",
                     strcmp(mc->path, "models/all-MiniLM-L6-v2") == 0
                         ? " (run `make models` to fetch it)" : "");
            return -1;
        }
        static const char *const need[] = {"config.json", "model.safetensors"};
        for (int k = 0; k < 2; k++)
            if (!file_exists(mc->path, need[k], path, sizeof path)) {
                snprintf(err, cap, "models[%d] (%s): %s is missing", i, mc->name, path);
                return -1;
            }
    }
    return 0;
}

/* First 12 hex digits of SHA-256 over config.json then model.safetensors. */
int srv_models_content_version(const char *dir, char *out, size_t cap)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;
    char path[4200];
    unsigned char *buf = malloc(1 << 20);
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto done;
    static const char *const files[] = {"config.json", "model.safetensors"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        FILE *f = fopen(path, "rb");
        if (!f)
            goto done;
        size_t n;
        while ((n = fread(buf, 1, 1 << 20, f)) > 0)
            EVP_DigestUpdate(ctx, buf, n);
        int bad = ferror(f);
        fclose(f);
        if (bad)
            goto done;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
        goto done;
    for (int i = 0; i < 6 && (size_t)(2 * i + 2) < cap; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    rc = 0;
done:
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}

static void on_batch(void *arg, int sequences, int tokens, int64_t compute_ns)
{
    (void)compute_ns;
    srv_model *m = arg;
    srv_metrics_batch(m->srv->metrics, m->index, sequences, tokens);
}

static int expected_task(srv_task t)
{
    switch (t) {
    case SRV_TASK_EMBED: return ENG_TASK_EMBED;
    case SRV_TASK_QA: return ENG_TASK_QA;
    case SRV_TASK_TRANSLATE: return ENG_TASK_TRANSLATE;
    default: return ENG_TASK_CLASSIFY;
    }
}

srv_model *srv_models_find_translate(srv_server *s, const char *name, const char *source,
                                     const char *target, srv_version **ver,
                                     const srv_lang_pair **pair, srv_api_error *err)
{
    static const srv_lang_pair none = {{0}, {0}, {0}};
    *pair = NULL;
    *ver = NULL;
    if (name) {
        srv_model *m = srv_models_find(s, SRV_EP_TRANSLATE, name, err);
        if (!m)
            return NULL;
        srv_version *v = atomic_load_explicit(&m->status, memory_order_acquire) == SRV_MODEL_READY
                             ? srv_model_slot_acquire(m->slot) : NULL;
        if (!v) {
            srv_api_error_set(err, 503, "not_ready", "model %s is not loaded", m->conf->name);
            return NULL;
        }
        /* A model that declares no language at all translates whatever it is sent. */
        *pair = v->n_pairs ? srv_lang_pairs_find(v->pairs, v->n_pairs, source, target) : &none;
        if (*pair) {
            *ver = v;
            return m;
        }
        srv_version_unref(v);
        srv_api_error_set(err, 404, "model_not_found", "model %s does not translate %s -> %s",
                          m->conf->name, source ? source : "*", target ? target : "*");
        return NULL;
    }
    for (int i = 0; source && target && i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        if (m->conf->task != SRV_TASK_TRANSLATE ||
            atomic_load_explicit(&m->status, memory_order_acquire) != SRV_MODEL_READY)
            continue;
        srv_version *v = srv_model_slot_acquire(m->slot);
        if (v && (*pair = srv_lang_pairs_find_exact(v->pairs, v->n_pairs, source, target))) {
            *ver = v;
            return m;
        }
        srv_version_unref(v);
    }
    srv_api_error_set(err, 404, "model_not_found", "no translation model for %s -> %s",
                      source ? source : "*", target ? target : "*");
    return NULL;
}

srv_version *srv_models_load_version(srv_model *m, const char *dir, const char *name, char *why,
                                     size_t cap)
{
    const srv_model_conf *c = m->conf;
    int64_t t0 = srv_now_ns();
    eng_error e = {0};
    eng_model *em = NULL;
    eng_model_opts mo = {.precision = c->precision, .backend = c->backend};
    if (eng_model_load_opts(dir, &mo, &em, &e)) {
        snprintf(why, cap, "cannot load %s: %s", dir, e.msg);
        return NULL;
    }
    const eng_model_info *info = eng_model_get_info(em);
    if ((int)info->task != expected_task(c->task)) {
        snprintf(why, cap, "task \"%s\" needs a %s model, but %s holds %s (%s)",
                 srv_task_name(c->task), eng_task_name((eng_task)expected_task(c->task)), dir,
                 info->architecture ? info->architecture : "?", eng_task_name(info->task));
        eng_model_unref(em);
        return NULL;
    }
    srv_version *v = srv_version_new(em, name);
    if (!v) {
        snprintf(why, cap, "out of memory");
        eng_model_unref(em);
        return NULL;
    }
    if (c->task == SRV_TASK_TRANSLATE &&
        srv_lang_pairs_build(c, em, &v->pairs, &v->n_pairs, &v->tr_info)) {
        snprintf(why, cap, "cannot read its translation settings");
        goto fail;
    }
    int64_t t1 = srv_now_ns();
    if (srv_infer_warmup(m, v, why, cap))
        goto fail;
    v->load_ns = t1 - t0;
    v->warm_ns = srv_now_ns() - t1;
    return v;
fail:
    srv_version_unref(v);
    return NULL;
}

/* Log what a new current version serves and publish it to the metrics. */
static void announce(srv_model *m, const srv_version *v)
{
    const srv_model_conf *c = m->conf;
    const eng_model_info *info = v->info;
    srv_metrics_model_info(m->srv->metrics, m->index, v->name, srv_task_name(c->task),
                           info->architecture, m->device);
    srv_log(SRV_LOG_INFO, NULL,
            "model %s: %s version %s (%s, %d layers, hidden %d, max_seq_len %d) loaded in "
            "%.0f ms and warm in %.0f ms; %d worker(s) x %d thread(s)",
            c->name, srv_task_name(c->task), v->name, info->architecture, info->layers,
            info->hidden, info->max_seq_len, (double)v->load_ns / 1e6, (double)v->warm_ns / 1e6,
            c->workers, c->threads);
    for (int k = 0; k < v->n_pairs; k++)
        srv_log(SRV_LOG_INFO, NULL, "model %s: translates %s -> %s%s%s", c->name,
                *v->pairs[k].source ? v->pairs[k].source : "?", v->pairs[k].target,
                *v->pairs[k].token ? " with " : "", v->pairs[k].token);
}

/* A worker of m hit a sticky device fault (worker thread): the server decides. */
static void on_sticky_fault(void *arg)
{
    srv_model *m = arg;
    if (m->srv && m->srv->on_sticky_fault)
        m->srv->on_sticky_fault(m->srv);
}

static int start_batcher(srv_model *m)
{
    const srv_model_conf *c = m->conf;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_batch_tokens = c->max_batch_tokens;
    o.max_batch_size = c->max_batch_size;
    o.max_delay_us = c->max_delay_us;
    o.queue_capacity = c->queue_capacity;
    o.max_job_bytes = (int64_t)c->max_job_mib << 20;
    o.max_batch_bytes = (int64_t)c->max_batch_mib << 20;
    o.workers = c->workers;
    o.threads_per_worker = c->threads;
    o.backend = c->backend;
    o.recover_attempts = c->recover_attempts;
    o.recover_backoff_ms = c->recover_backoff_ms;
    o.on_sticky_fault = on_sticky_fault;
    o.on_sticky_fault_arg = m;
    o.on_batch = on_batch;
    o.on_batch_arg = m;
    o.arriving = m->srv && !c->always_delay ? &m->srv->arriving : NULL;
    eng_error e = {0};
    if (!(m->slot = srv_model_slot_new(c->name))) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: out of memory", c->name);
        return -1;
    }
    if (srv_batcher_new(&o, &m->batcher, &e)) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: cannot start its batcher: %s", c->name, e.msg);
        return -1;
    }
    return 0;
}

void srv_models_serve(srv_model *m, srv_version *v)
{
    announce(m, v);
    srv_model_slot_swap(m->slot, v);
    atomic_store_explicit(&m->status, SRV_MODEL_READY, memory_order_release);
}

int srv_models_load(srv_server *s)
{
    for (int i = 0; i < s->n_models; i++)
        if (start_batcher(&s->models[i])) {
            atomic_store_explicit(&s->models[i].status, SRV_MODEL_FAILED, memory_order_release);
            return -1;
        }
    return srv_reload_initial(s->reload);
}

void srv_models_stop(srv_server *s, int drain, int64_t deadline_ns)
{
    for (int i = 0; i < s->n_models; i++)
        if (s->models[i].batcher)
            srv_batcher_stop(s->models[i].batcher, drain, deadline_ns);
}

void srv_models_free(srv_server *s)
{
    for (int i = 0; s->models && i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        srv_batcher_free(m->batcher);
        srv_model_slot_free(m->slot);
    }
    free(s->models);
    s->models = NULL;
    s->n_models = 0;
}

srv_model *srv_models_find(srv_server *s, srv_endpoint ep, const char *name, srv_api_error *err)
{
    /* Default model: the first whose task is the endpoint's own (a classify
     * model before a sentiment model for /v1/classify), else any that serves it. */
    for (int i = 0; !name && i < s->n_models; i++)
        if (srv_task_serves(s->models[i].conf->task, ep) &&
            strcmp(srv_task_name(s->models[i].conf->task), srv_endpoint_name(ep)) == 0)
            return &s->models[i];
    for (int i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        if (name ? strcmp(m->conf->name, name) != 0 : !srv_task_serves(m->conf->task, ep))
            continue;
        if (!srv_task_serves(m->conf->task, ep)) {
            srv_api_error_set(err, 404, "model_not_found", "model %s serves /v1/%s, not /v1/%s",
                              m->conf->name, srv_task_name(m->conf->task), srv_endpoint_name(ep));
            return NULL;
        }
        return m;
    }
    if (name)
        srv_api_error_set(err, 404, "model_not_found", "no model with that name is configured");
    else if (ep == SRV_EP_TRANSLATE)
        srv_api_error_set(err, 404, "model_not_found", "no translation model is configured");
    else
        srv_api_error_set(err, 404, "model_not_found", "no model serving /v1/%s is configured",
                          srv_endpoint_name(ep));
    return NULL;
}
