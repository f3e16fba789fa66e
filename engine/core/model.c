/* model.c - model versions (config + tokenizer + weights, refcounted), compute
 * contexts, and the public run API. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/arena.h"
#include "backend/backend.h"
#include "models/bert.h"
#include "models/marian.h"
#include "core/model_config.h"
#include "nlpd_engine.h"
#include "core/safetensors.h"
#include "core/util.h"
#include "nn/linear.h"

/* The weights of a model version on one backend kind and device: uploaded once
 * (weights_upload: zero-copy on the CPU), freed with the version. */
typedef struct model_view {
    const eng_backend_ops *ops;
    int device;
    void *base;          /* the backend copy of the host weight block */
    eng_bert bert;       /* BERT family: host struct with pointers into base */
    eng_marian *marian;  /* Marian: likewise */
    int own_packs;       /* the linear layers packed for this view (fp16/bf16 on CUDA) */
    size_t dev_bytes;    /* backend memory the view holds (0: zero-copy) */
} model_view;

#define MAX_VIEWS 8

struct eng_model {
    atomic_int refs;
    pthread_mutex_t view_mu;
    model_view views[MAX_VIEWS];
    int n_views;
    eng_model_config cfg;
    eng_model_info info;
    eng_tokenizer *tok;
    eng_bert bert;
    int cls_pooling; /* sentence-transformers CLS pooling instead of mean */
    eng_marian *marian; /* MarianMTModel folders (translate.c); the rest unused then */
    int dev_fmt;        /* eng_wfmt of the linear layers on a device backend's views */
};

struct eng_ctx {
    eng_backend *be;
    eng_arena arena;
};

const char *eng_task_name(eng_task t)
{
    switch (t) {
    case ENG_TASK_EMBED: return "embed";
    case ENG_TASK_CLASSIFY: return "classify";
    case ENG_TASK_QA: return "qa";
    case ENG_TASK_TRANSLATE: return "translate";
    }
    return "unknown";
}

/* ------------------------------------------------- sentence-transformers */

static cJSON *read_json(const char *dir, const char *name, int *rc, eng_error *err)
{
    char path[4096];
    char *text;
    *rc = ENG_OK;
    if (eng_path_join(path, sizeof path, dir, name) || access(path, F_OK) != 0)
        return NULL;
    if ((*rc = eng_read_file_max(path, ENG_MAX_CONFIG_BYTES, &text, NULL, err)))
        return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j)
        *rc = eng_fail(err, ENG_EFORMAT, "%s: not valid JSON", path);
    return j;
}

static int flag(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static int load_pooling(eng_model *m, const char *dir, const char *sub, eng_error *err)
{
    char name[512];
    int rc;
    snprintf(name, sizeof name, "%s/config.json", sub);
    cJSON *pc = read_json(dir, name, &rc, err);
    if (rc)
        return rc;
    if (!pc) /* sentence-transformers' default: mean pooling */
        return ENG_OK;
    if (flag(pc, "pooling_mode_cls_token") + flag(pc, "pooling_mode_mean_tokens") +
            flag(pc, "pooling_mode_max_tokens") + flag(pc, "pooling_mode_mean_sqrt_len_tokens") +
            flag(pc, "pooling_mode_weightedmean_tokens") + flag(pc, "pooling_mode_lasttoken") != 1 ||
        !(flag(pc, "pooling_mode_mean_tokens") || flag(pc, "pooling_mode_cls_token")))
        rc = eng_fail(err, ENG_EUNSUPPORTED, "%s/%s: only a single mean or CLS pooling mode is "
                      "supported", dir, name);
    m->cls_pooling = flag(pc, "pooling_mode_cls_token");
    cJSON_Delete(pc);
    return rc;
}

/* modules.json + 1_Pooling + Normalize + sentence_bert_config.json. */
static int load_sentence_transformers(eng_model *m, const char *dir, eng_error *err)
{
    int rc;
    cJSON *mods = read_json(dir, "modules.json", &rc, err);
    if (rc || !mods)
        return rc;
    if (!cJSON_IsArray(mods)) {
        cJSON_Delete(mods);
        return eng_fail(err, ENG_EFORMAT, "%s/modules.json: not a list of modules", dir);
    }
    const cJSON *mod;
    cJSON_ArrayForEach(mod, mods) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(mod, "type");
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(mod, "path");
        const char *t = cJSON_IsString(type) ? type->valuestring : "";
        if (strstr(t, ".Transformer"))
            continue;
        if (strstr(t, ".Pooling")) {
            if ((rc = load_pooling(m, dir, cJSON_IsString(path) ? path->valuestring : "", err)))
                break;
        } else if (strstr(t, ".Normalize")) {
            m->info.normalize = 1;
        } else {
            rc = eng_fail(err, ENG_EUNSUPPORTED, "%s/modules.json: module type '%s' is not "
                          "supported (Transformer, Pooling, Normalize)", dir, t);
            break;
        }
    }
    cJSON_Delete(mods);
    if (rc)
        return rc;
    cJSON *sb = read_json(dir, "sentence_bert_config.json", &rc, err);
    const cJSON *msl = cJSON_GetObjectItemCaseSensitive(sb, "max_seq_length");
    if (cJSON_IsNumber(msl) && msl->valueint > 0 && msl->valueint < m->info.max_seq_len)
        m->info.max_seq_len = msl->valueint;
    cJSON_Delete(sb);
    return rc;
}

/* ------------------------------------------------------------ load/free */

static void fill_info(eng_model *m, const char *dtype)
{
    const eng_model_config *c = &m->cfg;
    eng_model_info *i = &m->info;
    i->architecture = c->architecture;
    i->model_type = c->model_type;
    i->task = c->task;
    i->hidden = c->hidden;
    i->layers = c->layers;
    i->heads = c->heads;
    i->intermediate = c->intermediate;
    i->vocab = c->vocab;
    i->max_positions = c->max_positions;
    i->num_labels = c->task == ENG_TASK_EMBED ? 0 : c->num_labels;
    i->multi_label = c->multi_label;
    i->labels = (const char *const *)c->labels;
    i->file_dtype = dtype;
    int tmax = eng_tokenizer_model_max_length(m->tok);
    i->max_seq_len = tmax > 0 && tmax < c->max_positions ? tmax : c->max_positions;
}

static const char *dominant_dtype(const eng_safetensors *st)
{
    for (int i = 0; i < st->count; i++) {
        switch (st->tensors[i].dtype) {
        case ENG_ST_F16: return "F16";
        case ENG_ST_BF16: return "BF16";
        case ENG_ST_F32: return "F32";
        default: break;
        }
    }
    return "F32";
}

/* Packs the inference weights in format fmt for the CPU backend of eng_ctx_new (same
 * kernels: the layout depends on the ISA only, not on threads) and releases the fp32
 * originals of the packed layers as it goes. A one-thread backend does the packing; the
 * handles outlive it. fp32 is skipped under NLPD_CPU_GEMM=blas, which never uses
 * packings. A packing that fails (out of memory) fails the load. */
static int pack_weights(eng_model *m, int fmt, int on_cpu, eng_error *err)
{
    const char *gm = getenv("NLPD_CPU_GEMM");
    int rc = ENG_OK;
    m->info.precision = eng_wfmt_name(fmt);
    m->info.kernel = "gemm";
    if (!on_cpu) { /* a device backend: its views convert the layers (model_view_get) */
        m->dev_fmt = fmt;
        m->info.kernel = fmt == ENG_WFMT_F16    ? "cublas_fp16"
                         : fmt == ENG_WFMT_BF16 ? "cublas_bf16" : "cublas";
        goto sizes;
    }
    if (fmt == ENG_WFMT_F32 && gm && strcmp(gm, "blas") == 0)
        goto sizes;
    eng_backend *be = eng_backend_cpu_new(1);
    if (!be)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    if (m->marian)
        rc = eng_marian_pack(m->marian, be, fmt, 1);
    else
        rc = eng_bert_pack(&m->bert, be, fmt, 1);
    be->ops->destroy(be);
    if (rc) {
        return eng_fail(err, rc, "packing the weights in %s: %s", eng_wfmt_name(fmt),
                        eng_strerror(rc));
    } else if (m->marian) {
        m->info.kernel = eng_marian_kernel(m->marian);
    } else if (m->bert.cfg->layers > 0) {
        m->info.kernel = eng_nn_linear_kernel(&m->bert.layers[0].qkv, NULL);
    }
sizes:
    if (m->marian) {
        size_t b = 0;
        eng_marian_block(m->marian, &b);
        m->info.weight_bytes = (eng_marian_dropped(m->marian) ? 0 : b) +
                               eng_marian_packed_bytes(m->marian);
        if (eng_marian_dropped(m->marian))
            m->info.weight_bytes += eng_marian_kept_bytes(m->marian);
    } else {
        m->info.weight_bytes = (m->bert.dropped ? m->bert.tail_off : m->bert.block_floats) *
                               sizeof(float) + m->bert.packed_bytes;
    }
    return rc;
}

int eng_precision_valid(const char *s)
{
    return eng_wfmt_parse(s) >= 0;
}

/* *on_cpu: backend is the CPU (else a device backend: CUDA). */
static int precision_check(const char *precision, const char *backend, int *fmt, int *on_cpu,
                           eng_error *err)
{
    *fmt = precision ? eng_wfmt_parse(precision) : ENG_WFMT_F32;
    if (*fmt < 0)
        return eng_fail(err, ENG_EINVAL, "precision '%s': expected fp32, bf16, int8 or fp16",
                        precision);
    const eng_backend_reg *r = eng_backend_spec_reg(backend);
    if (!r)
        return eng_fail(err, ENG_EINVAL, "backend '%s' is not a backend of this build",
                        backend);
    *on_cpu = strcmp(r->name, "cpu") == 0;
    if (*on_cpu && *fmt == ENG_WFMT_F16)
        return eng_fail(err, ENG_EUNSUPPORTED, "precision fp16 runs on CUDA only; backend '%s' "
                        "is the CPU (it runs fp32, bf16 or int8)", backend ? backend : "cpu");
    if (!*on_cpu && *fmt == ENG_WFMT_INT8)
        return eng_fail(err, ENG_EUNSUPPORTED, "precision int8 runs on the CPU only; backend "
                        "'%s' runs fp32, fp16 or bf16", backend);
    return ENG_OK;
}

int eng_precision_check(const char *precision, const char *backend, eng_error *err)
{
    int fmt, on_cpu;
    return precision_check(precision, backend, &fmt, &on_cpu, err);
}

int eng_model_load(const char *dir, eng_model **out, eng_error *err)
{
    return eng_model_load_opts(dir, NULL, out, err);
}

int eng_model_load_opts(const char *dir, const eng_model_opts *o, eng_model **out,
                        eng_error *err)
{
    char path[4096];
    int fmt, on_cpu, rc;
    *out = NULL;
    if ((rc = precision_check(o ? o->precision : NULL, o ? o->backend : NULL, &fmt, &on_cpu,
                              err)))
        return rc;
    eng_safetensors *st = NULL;
    eng_model *m = calloc(1, sizeof *m);
    if (!m)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->view_mu, NULL);
    if (eng_marian_is_folder(dir)) {
        if ((rc = eng_marian_load(dir, &m->marian, err)))
            goto fail_model;
        eng_marian_fill_info(m->marian, &m->info);
        m->cfg.task = ENG_TASK_TRANSLATE; /* the BERT entry points refuse it */
        snprintf(m->cfg.architecture, sizeof m->cfg.architecture, "MarianMTModel");
        if ((rc = pack_weights(m, fmt, on_cpu, err)))
            goto fail_model;
        *out = m;
        return ENG_OK;
    }
    if ((rc = eng_model_config_load(dir, &m->cfg, err)))
        goto fail_model;
    if ((rc = eng_tokenizer_load(dir, &m->tok, err)))
        goto fail_config;
    if (eng_path_join(path, sizeof path, dir, "model.safetensors")) {
        rc = eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
        goto fail_tok;
    }
    if (access(path, F_OK) != 0) {
        char bin[4096];
        int has_bin = !eng_path_join(bin, sizeof bin, dir, "pytorch_model.bin") &&
                      access(bin, F_OK) == 0;
        rc = eng_fail(err, ENG_EIO, "%s: missing%s", path,
                      has_bin ? " (the folder has only pytorch_model.bin: convert it to "
                                "safetensors, e.g. with scripts/fetch_models.sh's converter)"
                              : "");
        goto fail_tok;
    }
    if ((rc = eng_st_open(path, &st, err)))
        goto fail_tok;
    if ((rc = eng_bert_load(&m->bert, &m->cfg, st, err)))
        goto fail_st;
    fill_info(m, dominant_dtype(st));
    eng_st_close(st); /* weights were copied into the model's block */
    st = NULL;
    if (m->cfg.task == ENG_TASK_EMBED && (rc = load_sentence_transformers(m, dir, err)))
        goto fail_bert;
    if ((rc = pack_weights(m, fmt, on_cpu, err)))
        goto fail_bert;
    *out = m;
    return ENG_OK;
fail_bert:
    eng_bert_free(&m->bert);
fail_st:
    eng_st_close(st);
fail_tok:
    eng_tokenizer_free(m->tok);
fail_config:
    eng_model_config_free(&m->cfg);
fail_model:
    eng_marian_free(m->marian);
    pthread_mutex_destroy(&m->view_mu);
    free(m);
    return rc;
}

eng_model *eng_model_ref(eng_model *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void eng_model_unref(eng_model *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int i = 0; i < m->n_views; i++) {
        model_view *v = &m->views[i];
        if (v->own_packs && v->marian)
            eng_marian_view_unpack(v->marian);
        else if (v->own_packs)
            eng_bert_view_unpack(&v->bert);
        eng_bert_view_free(&v->bert);
        eng_marian_view_free(v->marian);
        v->ops->weights_free(v->device, v->base);
    }
    pthread_mutex_destroy(&m->view_mu);
    eng_marian_free(m->marian);
    eng_bert_free(&m->bert);
    eng_tokenizer_free(m->tok);
    eng_model_config_free(&m->cfg);
    free(m);
}

/* The linear layers of view v (its backend copy holds the block up to the tail) in
 * m->dev_fmt, converted on be from the host block: one path for both architectures. */
static int view_pack(eng_model *m, model_view *v, eng_backend *be)
{
    if (m->marian)
        return eng_marian_view_pack_host(v->marian, be, m->dev_fmt,
                                         eng_marian_block(m->marian, NULL));
    return eng_bert_view_pack_host(&v->bert, be, m->dev_fmt, m->bert.block);
}

/* The model's weights on be's kind and device, uploaded on first use. */
static int model_view_get(eng_model *m, eng_backend *be, const model_view **out, eng_error *err)
{
    int rc = ENG_OK;
    pthread_mutex_lock(&m->view_mu);
    for (int i = 0; i < m->n_views; i++)
        if (m->views[i].ops == be->ops && m->views[i].device == be->device) {
            *out = &m->views[i];
            goto done;
        }
    if (m->n_views == MAX_VIEWS) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "a model runs on at most %d devices", MAX_VIEWS);
        goto done;
    }
    model_view *v = &m->views[m->n_views];
    memset(v, 0, sizeof *v);
    const void *host = m->marian ? eng_marian_block(m->marian, NULL) : m->bert.block;
    size_t bytes = 0;
    if (m->marian)
        eng_marian_block(m->marian, &bytes);
    else
        bytes = m->bert.block_floats * sizeof(float);
    /* Packed layers whose originals were released: another kind of backend gets them
     * rebuilt from the packings (a temporary host copy, in the same layout). */
    float *rebuilt = NULL;
    int dropped = m->marian ? eng_marian_dropped(m->marian) : m->bert.dropped;
    int pack_kind = m->marian ? 0 : m->bert.pack_ops == be->ops;
    if (m->marian) {
        eng_backend_ops const *po = eng_marian_pack_ops(m->marian);
        pack_kind = po == be->ops;
    }
    if (dropped && !pack_kind) {
        rebuilt = m->marian ? eng_marian_unpacked_block(m->marian)
                            : eng_bert_unpacked_block(&m->bert);
        if (!rebuilt) {
            rc = eng_fail(err, ENG_ENOMEM, "out of memory");
            goto done;
        }
        host = rebuilt;
    }
    /* fp16 / bf16 on a device backend: the linear layers' fp32 weights (the block's
     * tail) are not uploaded; view_pack converts them from the host */
    int head_only = m->dev_fmt != ENG_WFMT_F32 && !rebuilt;
    size_t up = !head_only ? bytes
                : m->marian ? eng_marian_kept_bytes(m->marian) : m->bert.tail_off * sizeof(float);
    v->base = be->ops->weights_upload(be, host, up);
    int zero_copy = v->base == host;
    if (rebuilt && v->base == (void *)rebuilt) { /* a zero-copy backend of another kind */
        be->ops->weights_free(be->device, v->base);
        v->base = NULL;
        free(rebuilt);
        rc = eng_fail(err, ENG_EUNSUPPORTED, "%s backend: the model's weights are packed for "
                      "another backend", be->ops->name);
        goto done;
    }
    if (rebuilt) {
        be->ops->synchronize(be);
        free(rebuilt);
    }
    if (!v->base) {
        rc = eng_fail(err, ENG_EBACKEND, "%s backend (device %d): could not upload %zu MB of "
                      "weights", be->ops->name, be->device, up >> 20);
        goto done;
    }
    v->ops = be->ops;
    v->device = be->device;
    if (m->marian)
        rc = (v->marian = eng_marian_view_new(m->marian, v->base)) ? ENG_OK : ENG_ENOMEM;
    else
        rc = eng_bert_view(&m->bert, v->base, &v->bert);
    if (rc) {
        be->ops->weights_free(be->device, v->base);
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    /* fp16 / bf16 on a device backend: the linear layers converted there, once */
    if (head_only && !zero_copy) {
        if ((rc = view_pack(m, v, be))) {
            const char *why = be->ops->health ? be->ops->health(be) : NULL;
            eng_bert_view_free(&v->bert);
            eng_marian_view_free(v->marian);
            be->ops->weights_free(be->device, v->base);
            rc = eng_fail(err, rc == ENG_EUNSUPPORTED ? rc : ENG_EBACKEND, "%s backend (device "
                          "%d): could not convert the weights to %s%s%s", be->ops->name,
                          be->device, eng_wfmt_name(m->dev_fmt), why ? ": " : " (out of "
                          "device memory?)", why ? why : "");
            goto done;
        }
        v->own_packs = 1;
    }
    v->dev_bytes = zero_copy ? 0 : up + (m->marian ? eng_marian_packed_bytes(v->marian)
                                                   : v->bert.packed_bytes);
    m->n_views++;
    *out = v;
done:
    pthread_mutex_unlock(&m->view_mu);
    return rc;
}

const eng_model_info *eng_model_get_info(const eng_model *m) { return &m->info; }

size_t eng_model_device_bytes(eng_model *m)
{
    size_t n = 0;
    pthread_mutex_lock(&m->view_mu);
    for (int i = 0; i < m->n_views; i++)
        n += m->views[i].dev_bytes;
    pthread_mutex_unlock(&m->view_mu);
    return n;
}

const eng_bert *eng_model_bert(const eng_model *m) { return m->marian ? NULL : &m->bert; }

const eng_bert *eng_model_bert_on(eng_model *m, eng_backend *be, eng_error *err)
{
    const model_view *v;
    if (m->marian) {
        eng_fail(err, ENG_EINVAL, "not a BERT-family model");
        return NULL;
    }
    return model_view_get(m, be, &v, err) ? NULL : &v->bert;
}
eng_marian *eng_model_marian(const eng_model *m) { return m->marian; }

const eng_marian *eng_model_marian_on(eng_model *m, eng_backend *be, eng_error *err)
{
    const model_view *v;
    if (!m->marian) {
        eng_fail(err, ENG_EINVAL, "not a translation model");
        return NULL;
    }
    return model_view_get(m, be, &v, err) ? NULL : v->marian;
}
const eng_tokenizer *eng_model_tokenizer(const eng_model *m) { return m->tok; }

/* --------------------------------------------------------------- contexts */

int eng_ctx_new(const eng_ctx_opts *opts, eng_ctx **out, eng_error *err)
{
    const char *name = opts && opts->backend ? opts->backend : "cpu";
    int threads = opts ? opts->threads : 0;
    *out = NULL;
    eng_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int rc = eng_backend_new(name, threads, &c->be, err);
    if (rc) {
        free(c);
        return rc;
    }
    eng_arena_init(&c->arena, c->be);
    *out = c;
    return ENG_OK;
}

void eng_ctx_free(eng_ctx *c)
{
    if (!c)
        return;
    eng_arena_close(&c->arena);
    c->be->ops->destroy(c->be);
    free(c);
}

const char *eng_ctx_backend_name(const eng_ctx *c) { return c->be->ops->name; }
int eng_ctx_device(const eng_ctx *c) { return c->be->device; }

const char *eng_ctx_fault(const eng_ctx *c)
{
    return c->be->ops->health ? c->be->ops->health(c->be) : NULL;
}

int eng_ctx_fault_sticky(const eng_ctx *c)
{
    return eng_ctx_fault(c) && c->be->ops->fault_sticky && c->be->ops->fault_sticky(c->be);
}
eng_backend *eng_ctx_backend(eng_ctx *c) { return c->be; }

void eng_ctx_get_stats(eng_ctx *c, eng_ctx_stats *out)
{
    size_t be_peak = 0;
    size_t be_held = c->be->ops->scratch_bytes ? c->be->ops->scratch_bytes(c->be, &be_peak) : 0;
    out->reserved_bytes = c->arena.cap + be_held;
    out->peak_bytes = c->arena.peak + be_peak;
}

void eng_ctx_trim(eng_ctx *c, size_t keep_bytes)
{
    /* The backend's scratch (small, sized by sequence length) first; the arena (sized
     * by the whole batch) gets what it leaves of the bound. */
    size_t held = 0;
    if (c->be->ops->scratch_trim) {
        c->be->ops->scratch_trim(c->be, keep_bytes);
        held = c->be->ops->scratch_bytes(c->be, NULL);
    }
    eng_arena_trim(&c->arena, keep_bytes - held);
}

/* -------------------------------------------------------------------- run */

static int check_task(const eng_model *m, eng_task want, const char *what, eng_error *err)
{
    if (m->cfg.task == want)
        return ENG_OK;
    return eng_fail(err, ENG_EINVAL, "%s needs a model of task '%s'; %s has task '%s'", what,
                    eng_task_name(want), m->cfg.architecture, eng_task_name(m->cfg.task));
}

/* Encoder forward for a batch; *hidden is the packed last hidden state. *bert: the
 * model's weights on the context's backend. On success bt holds host memory
 * (eng_bert_batch_close). */
static int forward(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                   eng_bert_batch *bt, const eng_bert **bert, float **hidden, eng_error *err)
{
    const model_view *v;
    if (!ctx || !m || !enc)
        return eng_fail(err, ENG_EINVAL, "NULL argument");
    if (m->marian)
        return eng_fail(err, ENG_EINVAL, "MarianMTModel is a translation model (eng_translate)");
    if (!eng_backend_supports(ctx->be, ENG_OPS_CORE))
        return eng_fail(err, ENG_EUNSUPPORTED, "backend '%s' cannot run encoders",
                        ctx->be->ops->name);
    int rc = model_view_get(m, ctx->be, &v, err);
    if (rc)
        return rc;
    *bert = &v->bert;
    int ntok = 0;
    for (int i = 0; i < n; i++)
        ntok += enc[i] ? enc[i]->n : 0;
    rc = eng_bert_prepare(*bert, ctx->be, &ctx->arena, enc, n,
                          eng_bert_head_bytes(*bert, n, ntok), bt, err);
    if (rc)
        return rc;
    *hidden = eng_bert_encode(*bert, ctx->be, &ctx->arena, bt);
    return ENG_OK;
}

static int fetch(eng_ctx *ctx, float *dst, const float *src, size_t count, eng_error *err)
{
    eng_backend *be = ctx->be;
    if (be->ops->download(be, dst, src, count * sizeof(float)) || be->ops->synchronize(be))
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    return ENG_OK;
}

int eng_run_classify(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                     float *probs, float *logits, eng_error *err)
{
    eng_bert_batch bt;
    const eng_bert *b;
    float *hidden;
    int rc = check_task(m, ENG_TASK_CLASSIFY, "classify", err);
    if (rc || (rc = forward(ctx, m, enc, n, &bt, &b, &hidden, err)))
        return rc;
    int L = m->cfg.num_labels;
    float *dev = eng_bert_classify(b, ctx->be, &ctx->arena, &bt, hidden);
    float *raw = logits ? logits : probs;
    rc = fetch(ctx, raw, dev, (size_t)n * L, err);
    eng_bert_batch_close(&bt);
    if (rc)
        return rc;
    for (int i = 0; i < n && probs; i++) {
        const float *z = raw + (size_t)i * L;
        float *p = probs + (size_t)i * L;
        if (m->cfg.multi_label) {
            for (int j = 0; j < L; j++)
                p[j] = 1.0f / (1.0f + expf(-z[j]));
            continue;
        }
        float mx = z[0], sum = 0;
        for (int j = 1; j < L; j++)
            mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < L; j++)
            sum += (p[j] = expf(z[j] - mx));
        for (int j = 0; j < L; j++)
            p[j] /= sum;
    }
    return ENG_OK;
}

int eng_run_hidden(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                   float *out, eng_error *err)
{
    eng_bert_batch bt;
    const eng_bert *b;
    float *hidden;
    int rc = forward(ctx, m, enc, n, &bt, &b, &hidden, err);
    if (rc)
        return rc;
    rc = fetch(ctx, out, hidden, (size_t)bt.ntok * m->cfg.hidden, err);
    eng_bert_batch_close(&bt);
    return rc;
}

int eng_run_embed(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                  float *out, eng_error *err)
{
    eng_bert_batch bt;
    const eng_bert *b;
    float *hidden;
    int rc = check_task(m, ENG_TASK_EMBED, "embed", err);
    if (rc || (rc = forward(ctx, m, enc, n, &bt, &b, &hidden, err)))
        return rc;
    int H = m->cfg.hidden;
    if (m->cls_pooling) {
        float *cls = eng_arena_alloc(&ctx->arena, sizeof(float) * (size_t)n * H);
        ctx->be->ops->core->gather_rows(ctx->be, cls, hidden, bt.seq_off, n, 0, H);
        rc = fetch(ctx, out, cls, (size_t)n * H, err);
        eng_bert_batch_close(&bt);
        if (rc)
            return rc;
        for (int i = 0; i < n && m->info.normalize; i++) {
            float *v = out + (size_t)i * H, ss = 0;
            for (int j = 0; j < H; j++)
                ss += v[j] * v[j];
            float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
            for (int j = 0; j < H; j++)
                v[j] *= inv;
        }
        return ENG_OK;
    }
    float *pooled = eng_bert_pool(b, ctx->be, &ctx->arena, &bt, hidden, m->info.normalize);
    rc = fetch(ctx, out, pooled, (size_t)n * H, err);
    eng_bert_batch_close(&bt);
    return rc;
}

int eng_run_qa_logits(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                      float *start, float *end, eng_error *err)
{
    eng_bert_batch bt;
    const eng_bert *b;
    float *hidden;
    int rc = check_task(m, ENG_TASK_QA, "qa", err);
    if (rc || (rc = forward(ctx, m, enc, n, &bt, &b, &hidden, err)))
        return rc;
    float *dev = eng_bert_qa(b, ctx->be, &ctx->arena, &bt, hidden);
    float *both = malloc(sizeof(float) * (size_t)bt.ntok * 2);
    if (!both) {
        eng_bert_batch_close(&bt);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    rc = fetch(ctx, both, dev, (size_t)bt.ntok * 2, err);
    for (int t = 0; !rc && t < bt.ntok; t++) {
        start[t] = both[2 * t];
        end[t] = both[2 * t + 1];
    }
    free(both);
    eng_bert_batch_close(&bt);
    return rc;
}
