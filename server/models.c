/* models.c - the configured models: folder checks, loading, content
 * versions, one model slot + batcher each, warm-up, lookup by endpoint. */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"
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
        struct stat st;
        char path[4200];
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
static int content_version(const char *dir, char *out, size_t cap)
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

typedef struct warm {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} warm;

static void warm_complete(srv_job *job, void *arg)
{
    (void)job;
    warm *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One dummy batch through the batcher: touches every weight page and the
 * worker's arena before the first client request. */
static int warm_up(srv_model *m, const char **why)
{
    eng_model *em = m->model;
    const eng_tokenizer *tok = eng_model_tokenizer(em);
    eng_error e = {0};
    eng_qa_windows qw = {0};
    eng_encoding enc;
    eng_encoding_init(&enc);
    srv_job job = {0};
    int rc = -1;
    if (m->conf->task == SRV_TASK_QA) {
        eng_qa_opts o;
        srv_qa_opts_for_model(m->info, &o);
        if (eng_qa_windows_make(tok, "Is it warm?", 11, "It is warm.", 11, &o, &qw, &e) || qw.n < 1) {
            *why = "cannot tokenize the warm-up input";
            goto done;
        }
        job.kind = SRV_JOB_QA;
        job.enc = qw.win;
        job.n = qw.n;
    } else if (m->conf->task == SRV_TASK_TRANSLATE) {
        /* A short greedy search: every encoder and decoder weight, the KV cache. */
        if (eng_translate_encode(em, "warm up", 7, 0, &enc, &e)) {
            *why = "cannot tokenize the warm-up input";
            goto done;
        }
        job.kind = SRV_JOB_TRANSLATE;
        eng_translate_opts_default(&job.translate);
        job.translate.beam_size = 1;
        job.translate.max_length = 4;
        job.enc = &enc;
        job.n = 1;
    } else {
        if (eng_tokenizer_encode(tok, "warm up", 7, NULL, 0, m->info->max_seq_len, &enc, &e)) {
            *why = "cannot tokenize the warm-up input";
            goto done;
        }
        job.kind = m->conf->task == SRV_TASK_EMBED ? SRV_JOB_EMBED : SRV_JOB_CLASSIFY;
        job.enc = &enc;
        job.n = 1;
    }
    warm w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    job.complete = warm_complete;
    job.arg = &w;
    if (srv_batcher_submit(m->batcher, &job) == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        if (job.status == SRV_JOB_OK)
            rc = 0;
        else
            *why = job.error[0] ? job.error : "the warm-up batch failed";
    } else {
        *why = "the batcher refused the warm-up batch";
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (rc == 0 || job.status != SRV_JOB_PENDING)
        srv_job_free_output(&job);
done:
    eng_encoding_free(&enc);
    eng_qa_windows_free(&qw);
    return rc;
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

/* ------------------------------------------------------------ translation */

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* The code inside a ">>xx<<" token into code[cap]; 0 when it is not one or too long. */
static int token_code(const char *tok, char *code, size_t cap)
{
    size_t n = strlen(tok);
    if (n < 5 || strncmp(tok, ">>", 2) != 0 || strcmp(tok + n - 2, "<<") != 0 || n - 4 >= cap)
        return 0;
    memcpy(code, tok + 2, n - 4);
    code[n - 4] = 0;
    return srv_lang_code_valid(code);
}

static int has_target(const srv_model *m, const char *target)
{
    for (int i = 0; i < m->n_pairs; i++)
        if (strcasecmp(m->pairs[i].target, target) == 0)
            return 1;
    return 0;
}

/* m->pairs from the config's overrides and the model's tokenizer: the default
 * pair (source_lang -> target_lang, with target_token or the vocabulary's
 * >>target_lang<< token), then source_lang -> xx for each other >>xx<< token. */
static int build_pairs(srv_model *m, const eng_model *em)
{
    const srv_model_conf *c = m->conf;
    eng_translator_info *ti = &m->tr_info;
    if (eng_translator_get_info(em, ti))
        return -1;
    m->pairs = calloc((size_t)ti->n_lang_tokens + 1, sizeof *m->pairs);
    if (!m->pairs)
        return -1;
    const char *src = c->source_lang ? c->source_lang : ti->source_lang;
    const char *tgt = c->target_lang ? c->target_lang : ti->target_lang;
    char code[32];
    if (tgt && *tgt) {
        srv_lang_pair *p = &m->pairs[m->n_pairs++];
        copy_str(p->source, sizeof p->source, src);
        copy_str(p->target, sizeof p->target, tgt);
        if (c->target_token)
            copy_str(p->token, sizeof p->token, c->target_token);
        for (int k = 0; !c->target_token && k < ti->n_lang_tokens; k++)
            if (token_code(ti->lang_tokens[k], code, sizeof code) && strcasecmp(code, tgt) == 0)
                copy_str(p->token, sizeof p->token, ti->lang_tokens[k]);
    }
    for (int k = 0; k < ti->n_lang_tokens; k++) {
        if (!token_code(ti->lang_tokens[k], code, sizeof code) || has_target(m, code) ||
            strlen(ti->lang_tokens[k]) >= sizeof m->pairs[0].token)
            continue;
        srv_lang_pair *p = &m->pairs[m->n_pairs++];
        copy_str(p->source, sizeof p->source, src);
        copy_str(p->target, sizeof p->target, code);
        copy_str(p->token, sizeof p->token, ti->lang_tokens[k]);
    }
    return 0;
}

static int lang_eq(const char *want, const char *have)
{
    return !want || !*have || strcasecmp(want, have) == 0;
}

srv_model *srv_models_find_translate(srv_server *s, const char *name, const char *source,
                                     const char *target, const srv_lang_pair **pair,
                                     srv_api_error *err)
{
    static const srv_lang_pair none = {{0}, {0}, {0}};
    *pair = NULL;
    if (name) {
        srv_model *m = srv_models_find(s, SRV_EP_TRANSLATE, name, err);
        if (!m)
            return NULL;
        if (atomic_load_explicit(&m->status, memory_order_acquire) != SRV_MODEL_READY) {
            srv_api_error_set(err, 503, "not_ready", "model %s is not loaded", m->conf->name);
            return NULL;
        }
        if (m->n_pairs == 0) { /* the model declares no language at all */
            *pair = &none;
            return m;
        }
        for (int i = 0; i < m->n_pairs; i++)
            if (lang_eq(source, m->pairs[i].source) && lang_eq(target, m->pairs[i].target)) {
                *pair = &m->pairs[i];
                return m;
            }
        srv_api_error_set(err, 404, "model_not_found", "model %s does not translate %s -> %s",
                          m->conf->name, source ? source : "*", target ? target : "*");
        return NULL;
    }
    for (int i = 0; source && target && i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        if (m->conf->task != SRV_TASK_TRANSLATE ||
            atomic_load_explicit(&m->status, memory_order_acquire) != SRV_MODEL_READY)
            continue;
        for (int k = 0; k < m->n_pairs; k++)
            if (*m->pairs[k].source && strcasecmp(source, m->pairs[k].source) == 0 &&
                strcasecmp(target, m->pairs[k].target) == 0) {
                *pair = &m->pairs[k];
                return m;
            }
    }
    srv_api_error_set(err, 404, "model_not_found", "no translation model for %s -> %s",
                      source ? source : "*", target ? target : "*");
    return NULL;
}

static int load_one(srv_server *s, srv_model *m)
{
    const srv_model_conf *c = m->conf;
    int64_t t0 = srv_now_ns();
    eng_error e = {0};
    eng_model *em = NULL;
    if (eng_model_load(c->path, &em, &e)) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: cannot load %s: %s", c->name, c->path, e.msg);
        return -1;
    }
    const eng_model_info *info = eng_model_get_info(em);
    if ((int)info->task != expected_task(c->task)) {
        srv_log(SRV_LOG_ERROR, NULL,
                "model %s: task \"%s\" needs a %s model, but %s holds %s (%s)", c->name,
                srv_task_name(c->task), eng_task_name((eng_task)expected_task(c->task)), c->path,
                info->architecture ? info->architecture : "?", eng_task_name(info->task));
        eng_model_unref(em);
        return -1;
    }
    if (c->version)
        snprintf(m->version, sizeof m->version, "%s", c->version);
    else if (content_version(c->path, m->version, sizeof m->version)) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: cannot hash %s to derive its version", c->name,
                c->path);
        eng_model_unref(em);
        return -1;
    }
    if (c->task == SRV_TASK_TRANSLATE && build_pairs(m, em)) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: cannot read its translation settings", c->name);
        eng_model_unref(em);
        return -1;
    }
    m->model = eng_model_ref(em);
    m->info = info;
    m->slot = srv_model_slot_new(c->name, em, m->version); /* takes em's reference */
    if (!m->slot) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: out of memory", c->name);
        eng_model_unref(em);
        return -1;
    }
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_batch_tokens = c->max_batch_tokens;
    o.max_batch_size = c->max_batch_size;
    o.max_delay_us = c->max_delay_us;
    o.queue_capacity = c->queue_capacity;
    o.workers = c->workers;
    o.threads_per_worker = c->threads;
    o.backend = c->backend;
    o.on_batch = on_batch;
    o.on_batch_arg = m;
    if (srv_batcher_new(m->slot, &o, &m->batcher, &e)) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: cannot start its batcher: %s", c->name, e.msg);
        return -1;
    }
    const char *why = NULL;
    if (warm_up(m, &why)) {
        srv_log(SRV_LOG_ERROR, NULL, "model %s: warm-up failed: %s", c->name, why);
        return -1;
    }
    m->load_ns = srv_now_ns() - t0;
    srv_metrics_model_info(s->metrics, m->index, m->version, srv_task_name(c->task),
                           info->architecture, m->device);
    atomic_store_explicit(&m->status, SRV_MODEL_READY, memory_order_release);
    srv_log(SRV_LOG_INFO, NULL,
            "model %s: %s version %s (%s, %d layers, hidden %d, max_seq_len %d) loaded and "
            "warm in %.0f ms; %d worker(s) x %d thread(s)",
            c->name, srv_task_name(c->task), m->version, info->architecture, info->layers,
            info->hidden, info->max_seq_len, (double)m->load_ns / 1e6, c->workers, c->threads);
    for (int k = 0; k < m->n_pairs; k++)
        srv_log(SRV_LOG_INFO, NULL, "model %s: translates %s -> %s%s%s", c->name,
                *m->pairs[k].source ? m->pairs[k].source : "?", m->pairs[k].target,
                *m->pairs[k].token ? " with " : "", m->pairs[k].token);
    return 0;
}

int srv_models_load(srv_server *s)
{
    for (int i = 0; i < s->n_models; i++)
        if (load_one(s, &s->models[i])) {
            atomic_store_explicit(&s->models[i].status, SRV_MODEL_FAILED, memory_order_release);
            return -1;
        }
    return 0;
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
        if (m->model)
            eng_model_unref(m->model);
        free(m->pairs);
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
