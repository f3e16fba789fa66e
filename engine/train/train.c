/* train.c - fine-tuning a BERT-family sequence classifier: training-mode forward
 * pass that keeps its activations, the backward pass, AdamW with warmup/decay
 * schedules and clipping, and saving as a Hugging Face folder.
 *
 * Everything runs through the backend interface (backend.h). Parameters are the
 * eng_bert weight block; gradients and the two Adam moments are blocks of the same
 * layout, so a parameter's gradient is at the same offset in the gradient block.
 * The computation mirrors transformers' BertForSequenceClassification /
 * DistilBertForSequenceClassification in training mode, dropout sites included:
 *   BERT:  emb LN -> drop; per layer: attn(drop probs) -> dense -> drop -> LN(+x);
 *          FFN -> dense -> drop -> LN(+x); pooler tanh([CLS]) -> drop -> classifier
 *   DistilBERT: the same without dropout after the attention output projection,
 *          and pre_classifier ReLU instead of the tanh pooler.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/arena.h"
#include "backend/backend.h"
#include "models/bert.h"
#include "core/model_config.h"
#include "nlpd_engine.h"
#include "core/safetensors.h"
#include "train/train.h"
#include "core/util.h"

struct eng_trainer {
    eng_model_config cfg; /* the classifier's config (task classify) */
    eng_tokenizer *tok;
    eng_bert bert;
    eng_backend *be;
    eng_arena arena;
    float *grad, *m, *v;  /* gradient and Adam moments, layout of bert.block */
    float *scratch;       /* backend memory: loss, grad norm */
    eng_param *params;
    int nparams;
    eng_train_opts o;
    char **labels;        /* copies of o.labels */
    char *base_dir;
    cJSON *base_config;   /* the base's config.json, the template of the saved one */
    float p_hidden, p_attn, p_cls; /* dropout rates in training mode */
    int max_seq_len;
    long step;            /* optimizer steps done */
    uint64_t micro;       /* micro-batches run (dropout seeds) */
};

/* ----------------------------------------------------------------- random */

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Standard normal numbers from a splitmix64 stream (Box-Muller). */
static void fill_normal(float *x, size_t n, float std, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(mix64(s++) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
        double u2 = (double)(mix64(s++) >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(2 * M_PI * u2)) * std;
        if (i + 1 < n)
            x[i + 1] = (float)(r * sin(2 * M_PI * u2)) * std;
    }
}

/* ---------------------------------------------------------- parameter table */

typedef struct table {
    eng_param *p;
    int n, cap, fail;
    const float *block;
} table;

static void tab_add(table *t, const float *ptr, int64_t rows, int64_t cols, int decay,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void tab_add(table *t, const float *ptr, int64_t rows, int64_t cols, int decay,
                    const char *fmt, ...)
{
    if (t->fail)
        return;
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 128;
        eng_param *p = realloc(t->p, (size_t)cap * sizeof *p);
        if (!p) {
            t->fail = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    eng_param *e = &t->p[t->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->off = (size_t)(ptr - t->block);
    e->ndim = cols ? 2 : 1;
    e->shape[0] = rows;
    e->shape[1] = cols;
    e->numel = (size_t)(rows * (cols ? cols : 1));
    e->decay = decay;
}

static void tab_linear(table *t, const float *w, const float *b, int64_t out, int64_t in,
                       const char *base)
{
    tab_add(t, w, out, in, 1, "%s.weight", base);
    tab_add(t, b, out, 0, 0, "%s.bias", base);
}

static void tab_ln(table *t, const float *g, const float *b, int64_t h, const char *base)
{
    tab_add(t, g, h, 0, 0, "%s.weight", base);
    tab_add(t, b, h, 0, 0, "%s.bias", base);
}

int eng_bert_param_table(const eng_bert *b, eng_param **out, int *n, eng_error *err)
{
    const eng_model_config *c = b->cfg;
    int bert = c->family == ENG_FAMILY_BERT;
    int64_t H = c->hidden, I = c->intermediate;
    const char *pre = bert ? "bert" : "distilbert";
    table t = {.block = b->block};
    char base[192];
    tab_add(&t, b->word, c->vocab, H, 1, "%s.embeddings.word_embeddings.weight", pre);
    tab_add(&t, b->pos, c->max_positions, H, 1, "%s.embeddings.position_embeddings.weight", pre);
    if (b->type)
        tab_add(&t, b->type, c->type_vocab, H, 1, "%s.embeddings.token_type_embeddings.weight",
                pre);
    snprintf(base, sizeof base, "%s.embeddings.LayerNorm", pre);
    tab_ln(&t, b->emb_ln_g, b->emb_ln_b, H, base);
    static const char *const bn[] = {"attention.self.query", "attention.self.key",
                                     "attention.self.value", "attention.output.dense",
                                     "attention.output.LayerNorm", "intermediate.dense",
                                     "output.dense", "output.LayerNorm"};
    static const char *const dn[] = {"attention.q_lin", "attention.k_lin", "attention.v_lin",
                                     "attention.out_lin", "sa_layer_norm", "ffn.lin1",
                                     "ffn.lin2", "output_layer_norm"};
    const char *const *nm = bert ? bn : dn;
    for (int l = 0; l < c->layers; l++) {
        const eng_bert_layer *L = &b->layers[l];
        char lp[96];
        snprintf(lp, sizeof lp, bert ? "%s.encoder.layer.%d" : "%s.transformer.layer.%d", pre, l);
        for (int q = 0; q < 3; q++) {
            snprintf(base, sizeof base, "%s.%s", lp, nm[q]);
            tab_linear(&t, L->qkv.w + (size_t)q * H * H, L->qkv.b + (size_t)q * H, H, H, base);
        }
        snprintf(base, sizeof base, "%s.%s", lp, nm[3]);
        tab_linear(&t, L->ao.w, L->ao.b, H, H, base);
        snprintf(base, sizeof base, "%s.%s", lp, nm[4]);
        tab_ln(&t, L->ln1_g, L->ln1_b, H, base);
        snprintf(base, sizeof base, "%s.%s", lp, nm[5]);
        tab_linear(&t, L->in.w, L->in.b, I, H, base);
        snprintf(base, sizeof base, "%s.%s", lp, nm[6]);
        tab_linear(&t, L->out.w, L->out.b, H, I, base);
        snprintf(base, sizeof base, "%s.%s", lp, nm[7]);
        tab_ln(&t, L->ln2_g, L->ln2_b, H, base);
    }
    if (c->task == ENG_TASK_CLASSIFY) {
        if (bert) {
            snprintf(base, sizeof base, "%s.pooler.dense", pre);
            tab_linear(&t, b->pool.w, b->pool.b, H, H, base);
        } else {
            tab_linear(&t, b->pre.w, b->pre.b, H, H, "pre_classifier");
        }
        tab_linear(&t, b->cls.w, b->cls.b, c->num_labels, H, "classifier");
    }
    if (t.fail) {
        free(t.p);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    *out = t.p;
    *n = t.n;
    return ENG_OK;
}

/* ---------------------------------------------------------------- options */

void eng_train_opts_default(eng_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->lr = 5e-5f;
    o->weight_decay = 0.01f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->adam_eps = 1e-8f;
    o->max_grad_norm = 1.0f;
    o->schedule = ENG_LR_LINEAR;
    o->dropout = -1.0f;
    o->seed = 42;
}

static double num_or(const cJSON *root, const char *key, double dflt)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsNumber(j) ? j->valuedouble : dflt;
}

/* Dropout rates as transformers reads them from the config. */
static void read_dropout(eng_trainer *t)
{
    const cJSON *r = t->base_config;
    if (t->cfg.family == ENG_FAMILY_BERT) {
        t->p_hidden = (float)num_or(r, "hidden_dropout_prob", 0.1);
        t->p_attn = (float)num_or(r, "attention_probs_dropout_prob", 0.1);
        t->p_cls = (float)num_or(r, "classifier_dropout", t->p_hidden); /* null: hidden */
    } else {
        t->p_hidden = (float)num_or(r, "dropout", 0.1);
        t->p_attn = (float)num_or(r, "attention_dropout", 0.1);
        t->p_cls = (float)num_or(r, "seq_classif_dropout", 0.2);
    }
    if (t->o.dropout >= 0)
        t->p_hidden = t->p_attn = t->p_cls = t->o.dropout;
}

/* ------------------------------------------------------------------ loading */

/* A new F32 tensor for the head, owned by the caller's list. */
typedef struct new_tensor {
    char name[96];
    float *data;
} new_tensor;

static int add_init(eng_st_tensor *list, int *n, new_tensor *own, int *n_own, const char *name,
                    int64_t rows, int64_t cols, float std, uint64_t seed)
{
    size_t numel = (size_t)(rows * (cols ? cols : 1));
    new_tensor *nt = &own[*n_own];
    snprintf(nt->name, sizeof nt->name, "%s", name);
    if (!(nt->data = calloc(numel, sizeof(float))))
        return ENG_ENOMEM;
    (*n_own)++;
    if (std > 0)
        fill_normal(nt->data, numel, std, seed);
    eng_st_tensor *e = &list[(*n)++];
    memset(e, 0, sizeof *e);
    e->name = nt->name;
    e->dtype = ENG_ST_F32;
    snprintf(e->dtype_name, sizeof e->dtype_name, "F32");
    e->ndim = cols ? 2 : 1;
    e->shape[0] = rows;
    e->shape[1] = cols;
    e->numel = (int64_t)numel;
    e->data = nt->data;
    e->nbytes = numel * sizeof(float);
    return ENG_OK;
}

static int same_labels(const eng_model_config *base, const eng_train_opts *o)
{
    if (base->task != ENG_TASK_CLASSIFY || base->num_labels != o->num_labels ||
        base->multi_label != o->multi_label)
        return 0;
    for (int i = 0; i < o->num_labels; i++)
        if (strcmp(base->labels[i], o->labels[i]) != 0)
            return 0;
    return 1;
}

/* Loads the weights: the base's tensors, with new head tensors put first (the
 * lookup takes the first match) where the base has none or a different head. */
static int load_weights(eng_trainer *t, const eng_model_config *base, const char *dir,
                        eng_error *err)
{
    char path[4096];
    eng_safetensors *st = NULL;
    new_tensor own[6];
    int n_own = 0, rc;
    if (eng_path_join(path, sizeof path, dir, "model.safetensors"))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
    if ((rc = eng_st_open(path, &st, err)))
        return rc;
    eng_safetensors aug = *st;
    aug.by_name = NULL; /* built by hand below: eng_st_find scans it, first match wins */
    aug.tensors = calloc((size_t)st->count + 6, sizeof *aug.tensors);
    if (!aug.tensors) {
        eng_st_close(st);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    aug.count = 0;
    int64_t H = t->cfg.hidden, L = t->cfg.num_labels;
    float std = t->o.init_std > 0 ? t->o.init_std
                                  : (float)num_or(t->base_config, "initializer_range", 0.02);
    uint64_t seed = mix64(t->o.seed ^ 0x6865616400000000ULL); /* "head" */
    int bert = t->cfg.family == ENG_FAMILY_BERT;
    char pre[16] = "";
    if (bert && eng_st_find(st, "bert.embeddings.word_embeddings.weight"))
        snprintf(pre, sizeof pre, "bert.");
    char pw[64], pb[64];
    snprintf(pw, sizeof pw, "%s%s.weight", pre, bert ? "pooler.dense" : "pre_classifier");
    snprintf(pb, sizeof pb, "%s%s.bias", pre, bert ? "pooler.dense" : "pre_classifier");
    rc = ENG_OK;
    if (!eng_st_find(st, pw) || !eng_st_find(st, pb)) {
        if ((rc = add_init(aug.tensors, &aug.count, own, &n_own, pw, H, H, std, seed + 1)) ||
            (rc = add_init(aug.tensors, &aug.count, own, &n_own, pb, H, 0, 0, 0)))
            goto done;
    }
    if (!same_labels(base, &t->o)) {
        if ((rc = add_init(aug.tensors, &aug.count, own, &n_own, "classifier.weight", L, H, std,
                           seed + 2)) ||
            (rc = add_init(aug.tensors, &aug.count, own, &n_own, "classifier.bias", L, 0, 0, 0)))
            goto done;
    }
    memcpy(aug.tensors + aug.count, st->tensors, (size_t)st->count * sizeof *st->tensors);
    aug.count += st->count;
    rc = eng_bert_load(&t->bert, &t->cfg, &aug, err);
done:
    if (rc == ENG_ENOMEM)
        eng_fail(err, rc, "out of memory");
    for (int i = 0; i < n_own; i++)
        free(own[i].data);
    free(aug.tensors);
    eng_st_close(st);
    return rc;
}

/* The classifier config: the base's encoder with the requested labels. */
static int make_config(eng_trainer *t, const eng_model_config *base, eng_error *err)
{
    const eng_train_opts *o = &t->o;
    eng_model_config *c = &t->cfg;
    *c = *base;
    c->labels = NULL;
    c->task = ENG_TASK_CLASSIFY;
    snprintf(c->architecture, sizeof c->architecture, "%s",
             base->family == ENG_FAMILY_BERT ? "BertForSequenceClassification"
                                             : "DistilBertForSequenceClassification");
    c->num_labels = o->num_labels;
    c->multi_label = o->multi_label;
    c->labels = calloc((size_t)o->num_labels, sizeof *c->labels);
    t->labels = calloc((size_t)o->num_labels, sizeof *t->labels);
    if (!c->labels || !t->labels)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int i = 0; i < o->num_labels; i++) {
        if (!o->labels[i] || !*o->labels[i])
            return eng_fail(err, ENG_EINVAL, "label %d has no name", i);
        for (int j = 0; j < i; j++)
            if (strcmp(o->labels[i], o->labels[j]) == 0)
                return eng_fail(err, ENG_EINVAL, "label '%s' appears twice", o->labels[i]);
        if (!(c->labels[i] = strdup(o->labels[i])) || !(t->labels[i] = strdup(o->labels[i])))
            return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    t->o.labels = (const char *const *)t->labels;
    return ENG_OK;
}

static int check_opts(const eng_train_opts *o, eng_error *err)
{
    if (o->num_labels < (o->multi_label ? 1 : 2) || !o->labels)
        return eng_fail(err, ENG_EINVAL, "a classifier needs %s labels, got %d",
                        o->multi_label ? "at least 1" : "at least 2", o->num_labels);
    if (!(o->lr > 0) || !(o->weight_decay >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) ||
        !(o->beta2 >= 0 && o->beta2 < 1) || !(o->adam_eps > 0))
        return eng_fail(err, ENG_EINVAL, "invalid optimizer settings (lr %g, weight decay %g, "
                        "betas %g/%g, eps %g)", o->lr, o->weight_decay, o->beta1, o->beta2,
                        o->adam_eps);
    if (o->dropout >= 1)
        return eng_fail(err, ENG_EINVAL, "dropout %g must be below 1", o->dropout);
    if (o->total_steps < 0 || o->warmup_steps < 0)
        return eng_fail(err, ENG_EINVAL, "negative step counts");
    return ENG_OK;
}

int eng_trainer_new(const char *base_dir, const eng_train_opts *opts, eng_trainer **out,
                    eng_error *err)
{
    eng_model_config base;
    int rc;
    *out = NULL;
    if (!base_dir || !opts)
        return eng_fail(err, ENG_EINVAL, "NULL argument");
    if ((rc = check_opts(opts, err)))
        return rc;
    if (opts->backend && strcmp(opts->backend, "cpu") != 0 && strcmp(opts->backend, "auto") != 0)
        return eng_fail(err, ENG_EUNSUPPORTED, "backend '%s' cannot train (this build trains "
                        "on: cpu)", opts->backend);
    eng_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    t->o = *opts;
    t->o.labels = NULL;
    if ((rc = eng_model_config_load(base_dir, &base, err)))
        goto fail_t;
    if (base.task == ENG_TASK_QA) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "%s: %s is a question-answering model; nlpd-train "
                      "fine-tunes sequence classifiers", base_dir, base.architecture);
        goto fail_base;
    }
    t->o.labels = opts->labels;
    if ((rc = make_config(t, &base, err)))
        goto fail_base;
    if (!(t->base_config = eng_read_json(base_dir, "config.json", 0, &rc, err)))
        goto fail_base;
    if (!(t->base_dir = strdup(base_dir))) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto fail_base;
    }
    read_dropout(t);
    if ((rc = eng_tokenizer_load(base_dir, &t->tok, err)))
        goto fail_base;
    if ((rc = load_weights(t, &base, base_dir, err)))
        goto fail_base;
    int tmax = eng_tokenizer_model_max_length(t->tok);
    t->max_seq_len = tmax > 0 && tmax < t->cfg.max_positions ? tmax : t->cfg.max_positions;
    if (!(t->be = eng_backend_cpu_new(opts->threads))) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory creating the cpu backend");
        goto fail_base;
    }
    /* Training updates the host weight block in place: it needs a backend whose weight
     * view is the host block (the CPU's zero-copy view) and the training ops. */
    if (!eng_backend_supports(t->be, ENG_OPS_CORE | ENG_OPS_TRAIN)) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "backend '%s' has no training ops",
                      t->be->ops->name);
        goto fail_base;
    }
    eng_arena_init(&t->arena, t->be);
    size_t bytes = t->bert.block_floats * sizeof(float);
    t->grad = t->be->ops->alloc(t->be, bytes);
    t->m = t->be->ops->alloc(t->be, bytes);
    t->v = t->be->ops->alloc(t->be, bytes);
    t->scratch = t->be->ops->alloc(t->be, 64);
    if (!t->grad || !t->m || !t->v || !t->scratch) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory for %zu MB of optimizer state",
                      3 * bytes >> 20);
        goto fail_base;
    }
    t->be->ops->zero(t->be, t->grad, bytes);
    t->be->ops->zero(t->be, t->m, bytes);
    t->be->ops->zero(t->be, t->v, bytes);
    if ((rc = eng_bert_param_table(&t->bert, &t->params, &t->nparams, err)))
        goto fail_base;
    eng_model_config_free(&base);
    *out = t;
    return ENG_OK;
fail_base:
    eng_model_config_free(&base);
fail_t:
    eng_trainer_free(t);
    return rc;
}

void eng_trainer_free(eng_trainer *t)
{
    if (!t)
        return;
    if (t->be) {
        eng_arena_close(&t->arena);
        eng_backend *be = t->be;
        if (t->grad)
            be->ops->free(be, t->grad);
        if (t->m)
            be->ops->free(be, t->m);
        if (t->v)
            be->ops->free(be, t->v);
        if (t->scratch)
            be->ops->free(be, t->scratch);
        be->ops->destroy(be);
    }
    eng_bert_free(&t->bert);
    eng_tokenizer_free(t->tok);
    for (int i = 0; t->labels && i < t->o.num_labels; i++)
        free(t->labels[i]);
    free(t->labels);
    eng_model_config_free(&t->cfg);
    cJSON_Delete(t->base_config);
    free(t->base_dir);
    free(t->params);
    free(t);
}

const eng_tokenizer *eng_trainer_tokenizer(const eng_trainer *t) { return t->tok; }
int eng_trainer_max_seq_len(const eng_trainer *t) { return t->max_seq_len; }

size_t eng_trainer_num_params(const eng_trainer *t)
{
    size_t n = 0;
    for (int i = 0; i < t->nparams; i++)
        n += t->params[i].numel;
    return n;
}

const eng_param *eng_trainer_params(const eng_trainer *t, int *n)
{
    *n = t->nparams;
    return t->params;
}
float *eng_trainer_weights(eng_trainer *t) { return t->bert.block; }
float *eng_trainer_grads(eng_trainer *t) { return t->grad; }
const eng_bert *eng_trainer_bert(const eng_trainer *t) { return &t->bert; }

/* ---------------------------------------------------------- training pass */

/* Saved activations of one layer. */
typedef struct layer_acts {
    float *x;     /* layer input [T, H] */
    float *qkv;   /* [T, 3H] */
    float *probs; /* attention probabilities, p_off layout */
    float *ctx;   /* attention output before the projection [T, H] */
    float *ao;    /* projection + bias, after dropout [T, H] */
    float *x1;    /* LayerNorm(ao + x) [T, H] */
    float *pre;   /* FFN pre-activation [T, I] */
    float *post;  /* FFN activation [T, I] */
    float *fo;    /* FFN output + bias, after dropout [T, H] */
} layer_acts;

typedef struct acts {
    float *emb;   /* embedding sum [T, H] */
    layer_acts *l;
    float *out;   /* last layer output [T, H] */
    float *cls, *hp, *hq; /* [CLS] rows, head pre-activation, head output after dropout */
    float *logits, *dlogits, *targets;
    int32_t *labels;
    int64_t *p_off;
    float *g1, *g2, *g3, *gc, *gqkv, *gi, *gh1, *gh2; /* gradient buffers */
    size_t bytes; /* measure mode: bytes needed */
} acts;

/* Lays out (ar != NULL) or measures (ar == NULL: a->bytes) the training buffers. */
static void *take(eng_arena *ar, acts *a, size_t bytes)
{
    if (!ar) {
        a->bytes += eng_arena_need(bytes);
        return NULL;
    }
    return eng_arena_alloc(ar, bytes);
}

static void layout(const eng_model_config *c, int n, int T, size_t P, eng_arena *ar, acts *a,
                   layer_acts *ls)
{
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate, L = (size_t)c->num_labels;
    size_t TH = (size_t)T * H * sizeof(float), TI = (size_t)T * I * sizeof(float);
    size_t nH = (size_t)n * H * sizeof(float), nL = (size_t)n * L * sizeof(float);
    a->l = ls;
    a->emb = take(ar, a, TH);
    for (int l = 0; l < c->layers; l++) {
        layer_acts *x = &ls[l];
        x->x = take(ar, a, TH);
        x->qkv = take(ar, a, 3 * TH);
        x->probs = take(ar, a, P * sizeof(float));
        x->ctx = take(ar, a, TH);
        x->ao = take(ar, a, TH);
        x->x1 = take(ar, a, TH);
        x->pre = take(ar, a, TI);
        x->post = take(ar, a, TI);
        x->fo = take(ar, a, TH);
    }
    a->out = take(ar, a, TH);
    a->cls = take(ar, a, nH);
    a->hp = take(ar, a, nH);
    a->hq = take(ar, a, nH);
    a->logits = take(ar, a, nL);
    a->dlogits = take(ar, a, nL);
    a->targets = take(ar, a, nL);
    a->labels = take(ar, a, (size_t)n * sizeof(int32_t));
    a->p_off = take(ar, a, ((size_t)n + 1) * sizeof(int64_t));
    a->g1 = take(ar, a, TH);
    a->g2 = take(ar, a, TH);
    a->g3 = take(ar, a, TH);
    a->gc = take(ar, a, TH);
    a->gqkv = take(ar, a, 3 * TH);
    a->gi = take(ar, a, TI);
    a->gh1 = take(ar, a, nH);
    a->gh2 = take(ar, a, nH);
}

/* Dropout seeds: one per (micro-batch, site). */
enum { SITE_EMB = 0, SITE_HEAD = 1, SITE_LAYER = 2 }; /* layer l: 2 + 3l + {attn, ao, fo} */

static uint64_t site_seed(const eng_trainer *t, int site)
{
    return mix64(mix64(t->o.seed ^ (t->micro * 0x100000001B3ULL)) + (uint64_t)site);
}

#define GP(t, ptr) ((t)->grad + ((ptr) - (t)->bert.block))

/* y[T, out] = x[T, in] W^T + b (nn/linear.h: the trainer's layers are never packed) */
static void linear(eng_backend *be, float *y, const float *x, const eng_linear *l, int T)
{
    eng_nn_linear_forward(l, be, y, x, T, ENG_ACT_NONE);
}

/* Backward of y = x W^T + b: dW += dy^T x, db += sum dy, dx = dy W (+ dx if acc). */
static void linear_back(eng_trainer *t, float *dx, int acc, const float *dy, const float *x,
                        const float *w, const float *b, int T, int out, int in)
{
    eng_backend *be = t->be;
    be->ops->train->gemm_ex(be, 1, 0, out, in, T, 1.0f, dy, out, x, in, 1.0f, GP(t, w), in);
    be->ops->train->sum_rows(be, GP(t, b), dy, T, out);
    if (dx)
        be->ops->core->gemm(be, 0, T, in, out, 1.0f, dy, out, w, in, acc ? 1.0f : 0.0f, dx, in);
}

static void forward_train(eng_trainer *t, const eng_bert_batch *bt, acts *a)
{
    const eng_model_config *c = &t->cfg;
    const eng_bert *b = &t->bert;
    eng_backend *be = t->be;
    const eng_backend_ops *o = be->ops;
    int T = bt->ntok, H = c->hidden, I = c->intermediate, n = bt->n, hd = H / c->heads;
    float scale = 1.0f / sqrtf((float)hd);
    int bert = c->family == ENG_FAMILY_BERT;

    o->core->embed(be, a->emb, b->word, b->pos, b->type, bt->ids, bt->pos, b->type ? bt->types : NULL,
             T, H);
    float *x = a->l[0].x;
    o->core->add_layernorm(be, x, a->emb, NULL, b->emb_ln_g, b->emb_ln_b, T, H, c->ln_eps);
    o->train->dropout(be, x, x, (size_t)T * H, t->p_hidden, site_seed(t, SITE_EMB));
    for (int l = 0; l < c->layers; l++) {
        const eng_bert_layer *L = &b->layers[l];
        layer_acts *s = &a->l[l];
        float *next = l + 1 < c->layers ? a->l[l + 1].x : a->out;
        uint64_t sd = (uint64_t)(SITE_LAYER + 3 * l);
        linear(be, s->qkv, s->x, &L->qkv, T);
        o->train->attention_train(be, s->ctx, H, s->probs, a->p_off, s->qkv, s->qkv + H, s->qkv + 2 * H,
                           3 * H, bt->seq_off, n, c->heads, hd, scale, t->p_attn,
                           site_seed(t, (int)sd));
        linear(be, s->ao, s->ctx, &L->ao, T);
        if (bert)
            o->train->dropout(be, s->ao, s->ao, (size_t)T * H, t->p_hidden, site_seed(t, (int)sd + 1));
        o->core->add_layernorm(be, s->x1, s->ao, s->x, L->ln1_g, L->ln1_b, T, H, c->ln_eps);
        eng_nn_linear_matmul(&L->in, be, s->pre, s->x1, T);
        o->train->bias_act_train(be, s->pre, s->post, L->in.b, T, I, c->act);
        linear(be, s->fo, s->post, &L->out, T);
        o->train->dropout(be, s->fo, s->fo, (size_t)T * H, t->p_hidden, site_seed(t, (int)sd + 2));
        o->core->add_layernorm(be, next, s->fo, s->x1, L->ln2_g, L->ln2_b, T, H, c->ln_eps);
    }
    o->core->gather_rows(be, a->cls, a->out, bt->seq_off, n, 0, H);
    const eng_linear *hl = bert ? &b->pool : &b->pre;
    const float *hb = hl->b;
    eng_nn_linear_matmul(hl, be, a->hp, a->cls, n);
    o->train->bias_act_train(be, a->hp, a->hq, hb, n, H, bert ? ENG_ACT_TANH : ENG_ACT_RELU);
    o->train->dropout(be, a->hq, a->hq, (size_t)n * H, t->p_cls, site_seed(t, SITE_HEAD));
    linear(be, a->logits, a->hq, &b->cls, n);
}

static void backward(eng_trainer *t, const eng_bert_batch *bt, acts *a)
{
    const eng_model_config *c = &t->cfg;
    const eng_bert *b = &t->bert;
    eng_backend *be = t->be;
    const eng_backend_ops *o = be->ops;
    int T = bt->ntok, H = c->hidden, I = c->intermediate, n = bt->n, hd = H / c->heads;
    int Lb = c->num_labels;
    float scale = 1.0f / sqrtf((float)hd);
    int bert = c->family == ENG_FAMILY_BERT;
    size_t TH = (size_t)T * H;

    /* head */
    linear_back(t, a->gh1, 0, a->dlogits, a->hq, b->cls.w, b->cls.b, n, Lb, H);
    o->train->dropout(be, a->gh1, a->gh1, (size_t)n * H, t->p_cls, site_seed(t, SITE_HEAD));
    o->train->act_backward(be, a->gh1, a->gh1, a->hp, n, H, bert ? ENG_ACT_TANH : ENG_ACT_RELU);
    linear_back(t, a->gh2, 0, a->gh1, a->cls, bert ? b->pool.w : b->pre.w,
                bert ? b->pool.b : b->pre.b, n, H, H);
    o->zero(be, a->g1, TH * sizeof(float));
    o->train->scatter_rows(be, a->g1, a->gh2, bt->seq_off, n, 0, H);
    /* layers, last first; g1 holds the gradient of the current layer's output */
    for (int l = c->layers - 1; l >= 0; l--) {
        const eng_bert_layer *L = &b->layers[l];
        layer_acts *s = &a->l[l];
        int sd = SITE_LAYER + 3 * l;
        o->train->layernorm_backward(be, a->g2, GP(t, L->ln2_g), GP(t, L->ln2_b), a->g1, s->fo, s->x1,
                              L->ln2_g, T, H, c->ln_eps);
        o->train->dropout(be, a->g3, a->g2, TH, t->p_hidden, site_seed(t, sd + 2));
        linear_back(t, a->gi, 0, a->g3, s->post, L->out.w, L->out.b, T, H, I);
        o->train->act_backward(be, a->gi, a->gi, s->pre, T, I, c->act);
        linear_back(t, a->g2, 1, a->gi, s->x1, L->in.w, L->in.b, T, I, H); /* g2 = d x1 */
        o->train->layernorm_backward(be, a->g1, GP(t, L->ln1_g), GP(t, L->ln1_b), a->g2, s->ao, s->x,
                              L->ln1_g, T, H, c->ln_eps);
        float *dao = a->g1;
        if (bert) {
            o->train->dropout(be, a->g3, a->g1, TH, t->p_hidden, site_seed(t, sd + 1));
            dao = a->g3;
        }
        linear_back(t, a->gc, 0, dao, s->ctx, L->ao.w, L->ao.b, T, H, H);
        o->train->attention_backward(be, a->gqkv, a->gqkv + H, a->gqkv + 2 * H, 3 * H, a->gc, H,
                              s->probs, a->p_off, s->qkv, s->qkv + H, s->qkv + 2 * H, 3 * H,
                              bt->seq_off, n, c->heads, hd, scale, t->p_attn, site_seed(t, sd));
        linear_back(t, a->g1, 1, a->gqkv, s->x, L->qkv.w, L->qkv.b, T, 3 * H, H); /* g1 = d x */
    }
    /* embeddings */
    o->train->dropout(be, a->g1, a->g1, TH, t->p_hidden, site_seed(t, SITE_EMB));
    o->train->layernorm_backward(be, a->g2, GP(t, b->emb_ln_g), GP(t, b->emb_ln_b), a->g1, a->emb, NULL,
                          b->emb_ln_g, T, H, c->ln_eps);
    o->train->embed_backward(be, GP(t, b->word), GP(t, b->pos), b->type ? GP(t, b->type) : NULL, a->g2,
                      bt->ids, bt->pos, b->type ? bt->types : NULL, T, H);
}

int eng_trainer_backward(eng_trainer *t, const eng_encoding *const *enc, int n,
                         const int32_t *labels, const float *targets, float loss_scale,
                         float *loss, eng_error *err)
{
    if (!t || !enc || n <= 0)
        return eng_fail(err, ENG_EINVAL, "empty batch");
    const eng_model_config *c = &t->cfg;
    if (c->multi_label ? !targets : !labels)
        return eng_fail(err, ENG_EINVAL, "%s training needs %s", c->multi_label ? "multi-label"
                        : "single-label", c->multi_label ? "targets" : "labels");
    int L = c->num_labels;
    for (int i = 0; !c->multi_label && i < n; i++)
        if (labels[i] < 0 || labels[i] >= L)
            return eng_fail(err, ENG_EINVAL, "label id %d of input %d is outside [0, %d)",
                            labels[i], i, L);
    int T = 0;
    size_t P = 0;
    for (int i = 0; i < n; i++) {
        if (!enc[i])
            return eng_fail(err, ENG_EINVAL, "input %d is NULL", i);
        T += enc[i]->n;
        P += (size_t)c->heads * (size_t)enc[i]->n * (size_t)enc[i]->n;
    }
    acts a = {0};
    layer_acts *ls = calloc((size_t)c->layers, sizeof *ls);
    if (!ls)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    layout(c, n, T, P, NULL, &a, ls);
    eng_bert_batch bt;
    int rc = eng_bert_prepare(&t->bert, t->be, &t->arena, enc, n, a.bytes, &bt, err);
    if (rc) {
        free(ls);
        return rc;
    }
    layout(c, n, T, P, &t->arena, &a, ls);
    eng_backend *be = t->be;
    /* Host-side index arrays, uploaded like the batch layout. */
    int64_t *p_off = malloc(((size_t)n + 1) * sizeof *p_off);
    if (!p_off) {
        free(ls);
        eng_bert_batch_close(&bt);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    p_off[0] = 0;
    for (int i = 0; i < n; i++)
        p_off[i + 1] = p_off[i] + (int64_t)c->heads * enc[i]->n * enc[i]->n;
    rc = be->ops->upload(be, a.p_off, p_off, ((size_t)n + 1) * sizeof *p_off);
    if (!rc && labels && !c->multi_label)
        rc = be->ops->upload(be, a.labels, labels, (size_t)n * sizeof(int32_t));
    if (!rc && c->multi_label)
        rc = be->ops->upload(be, a.targets, targets, (size_t)n * L * sizeof(float));
    free(p_off);
    if (rc) {
        free(ls);
        eng_bert_batch_close(&bt);
        return eng_fail(err, ENG_EBACKEND, "%s backend: upload failed", be->ops->name);
    }
    forward_train(t, &bt, &a);
    if (c->multi_label)
        be->ops->train->bce_logits(be, t->scratch, a.dlogits, a.logits, a.targets, n, L, loss_scale);
    else
        be->ops->train->cross_entropy(be, t->scratch, a.dlogits, a.logits, a.labels, n, L, loss_scale);
    backward(t, &bt, &a);
    float host_loss = 0;
    rc = be->ops->download(be, &host_loss, t->scratch, sizeof host_loss);
    if (!rc)
        rc = be->ops->synchronize(be);
    free(ls);
    eng_bert_batch_close(&bt);
    t->micro++;
    if (rc)
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    if (loss)
        *loss = host_loss;
    return ENG_OK;
}

/* --------------------------------------------------------------- optimizer */

float eng_trainer_lr_at(const eng_trainer *t, long k)
{
    const eng_train_opts *o = &t->o;
    long warm = o->warmup_steps, total = o->total_steps;
    double f;
    if (k < warm)
        f = (double)k / (double)(warm > 0 ? warm : 1);
    else if (o->schedule == ENG_LR_CONSTANT || total <= 0)
        f = 1.0;
    else {
        double span = (double)(total - warm > 1 ? total - warm : 1);
        double prog = (double)(k - warm) / span;
        if (o->schedule == ENG_LR_COSINE)
            f = prog >= 1 ? 0.0 : 0.5 * (1.0 + cos(M_PI * prog));
        else
            f = prog >= 1 ? 0.0 : 1.0 - prog;
    }
    return (float)(o->lr * f);
}

int eng_trainer_set_schedule(eng_trainer *t, long total_steps, long warmup_steps,
                             eng_error *err)
{
    if (total_steps < 0 || warmup_steps < 0)
        return eng_fail(err, ENG_EINVAL, "negative step counts");
    t->o.total_steps = total_steps;
    t->o.warmup_steps = warmup_steps;
    return ENG_OK;
}

/* The first parameter the optimizer updates: the head's (the last four of the
 * table: pooler/pre_classifier and classifier) when the encoder is frozen. */
static int first_trained(const eng_trainer *t)
{
    return t->o.head_only && t->nparams >= 4 ? t->nparams - 4 : 0;
}

int eng_trainer_step(eng_trainer *t, eng_step_info *info, eng_error *err)
{
    eng_backend *be = t->be;
    const eng_train_opts *o = &t->o;
    int p0 = first_trained(t);
    float sumsq = 0;
    if (!p0) {
        be->ops->train->sum_squares(be, t->scratch, t->grad, t->bert.block_floats);
        if (be->ops->download(be, &sumsq, t->scratch, sizeof sumsq) || be->ops->synchronize(be))
            return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    }
    for (int i = p0; p0 && i < t->nparams; i++) { /* frozen encoder: the head's gradients */
        float part = 0;
        be->ops->train->sum_squares(be, t->scratch, t->grad + t->params[i].off,
                                    t->params[i].numel);
        if (be->ops->download(be, &part, t->scratch, sizeof part) || be->ops->synchronize(be))
            return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
        sumsq += part;
    }
    float norm = sqrtf(sumsq);
    if (!isfinite(norm))
        return eng_fail(err, ENG_EINVAL, "the gradient is not finite (norm %g) at step %ld: "
                        "lower the learning rate", norm, t->step + 1);
    float gscale = 1.0f;
    if (o->max_grad_norm > 0) {
        float coef = o->max_grad_norm / (norm + 1e-6f); /* as torch clip_grad_norm_ */
        if (coef < 1.0f)
            gscale = coef;
    }
    float lr = eng_trainer_lr_at(t, t->step);
    long k = t->step + 1;
    float bc1 = (float)(1.0 - pow(o->beta1, (double)k));
    float bc2 = (float)(1.0 - pow(o->beta2, (double)k));
    for (int i = p0; i < t->nparams; i++) {
        const eng_param *p = &t->params[i];
        be->ops->train->adamw(be, t->bert.block + p->off, t->grad + p->off, t->m + p->off,
                       t->v + p->off, p->numel, lr, o->beta1, o->beta2, o->adam_eps,
                       p->decay ? o->weight_decay : 0.0f, bc1, bc2, gscale);
    }
    t->step = k;
    if (info) {
        info->step = k;
        info->lr = lr;
        info->grad_norm = norm;
    }
    return ENG_OK;
}

/* ---------------------------------------------------------------- eval */

int eng_trainer_logits(eng_trainer *t, const eng_encoding *const *enc, int n, float *logits,
                       eng_error *err)
{
    if (!t || !enc || !logits)
        return eng_fail(err, ENG_EINVAL, "NULL argument");
    int ntok = 0;
    for (int i = 0; i < n; i++)
        ntok += enc[i] ? enc[i]->n : 0;
    eng_bert_batch bt;
    int rc = eng_bert_prepare(&t->bert, t->be, &t->arena, enc, n,
                              eng_bert_head_bytes(&t->bert, n, ntok), &bt, err);
    if (rc)
        return rc;
    float *hidden = eng_bert_encode(&t->bert, t->be, &t->arena, &bt);
    float *dev = eng_bert_classify(&t->bert, t->be, &t->arena, &bt, hidden);
    eng_backend *be = t->be;
    rc = be->ops->download(be, logits, dev, (size_t)n * t->cfg.num_labels * sizeof(float)) ||
         be->ops->synchronize(be);
    eng_bert_batch_close(&bt);
    if (rc)
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    return ENG_OK;
}

/* ------------------------------------------------------- head-only training */

int eng_trainer_hidden(const eng_trainer *t) { return t->cfg.hidden; }

int eng_trainer_features(eng_trainer *t, const eng_encoding *const *enc, int n, float *feats,
                         eng_error *err)
{
    if (!t || !enc || !feats || n <= 0)
        return eng_fail(err, ENG_EINVAL, "NULL argument or empty batch");
    int H = t->cfg.hidden;
    eng_bert_batch bt;
    int rc = eng_bert_prepare(&t->bert, t->be, &t->arena, enc, n,
                              eng_arena_need(sizeof(float) * (size_t)n * H), &bt, err);
    if (rc)
        return rc;
    float *hidden = eng_bert_encode(&t->bert, t->be, &t->arena, &bt);
    float *cls = eng_arena_alloc(&t->arena, sizeof(float) * (size_t)n * H);
    eng_backend *be = t->be;
    be->ops->core->gather_rows(be, cls, hidden, bt.seq_off, n, 0, H);
    rc = be->ops->download(be, feats, cls, sizeof(float) * (size_t)n * H) ||
         be->ops->synchronize(be);
    eng_bert_batch_close(&bt);
    if (rc)
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    return ENG_OK;
}

/* The head's buffers for n cached feature vectors (arena memory). */
typedef struct head_bufs {
    float *cls, *hp, *hq, *g, *logits, *dlogits, *targets;
    int32_t *labels;
} head_bufs;

static int head_prepare(eng_trainer *t, const float *feats, int n, head_bufs *h, eng_error *err)
{
    size_t nH = sizeof(float) * (size_t)n * t->cfg.hidden;
    size_t nL = sizeof(float) * (size_t)n * t->cfg.num_labels;
    size_t need = 4 * eng_arena_need(nH) + 3 * eng_arena_need(nL) +
                  eng_arena_need(sizeof(int32_t) * (size_t)n);
    if (eng_arena_reserve(&t->arena, need))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    h->cls = eng_arena_alloc(&t->arena, nH);
    h->hp = eng_arena_alloc(&t->arena, nH);
    h->hq = eng_arena_alloc(&t->arena, nH);
    h->g = eng_arena_alloc(&t->arena, nH);
    h->logits = eng_arena_alloc(&t->arena, nL);
    h->dlogits = eng_arena_alloc(&t->arena, nL);
    h->targets = eng_arena_alloc(&t->arena, nL);
    h->labels = eng_arena_alloc(&t->arena, sizeof(int32_t) * (size_t)n);
    if (t->be->ops->upload(t->be, h->cls, feats, nH))
        return eng_fail(err, ENG_EBACKEND, "%s backend: upload failed", t->be->ops->name);
    return ENG_OK;
}

/* Head forward: logits from h->cls; dropout (rate p, the head's site) in training. */
static void head_forward(eng_trainer *t, head_bufs *h, int n, float p)
{
    const eng_bert *b = &t->bert;
    eng_backend *be = t->be;
    int H = t->cfg.hidden, bert = t->cfg.family == ENG_FAMILY_BERT;
    const eng_linear *hl = bert ? &b->pool : &b->pre;
    eng_nn_linear_matmul(hl, be, h->hp, h->cls, n);
    be->ops->train->bias_act_train(be, h->hp, h->hq, hl->b, n, H,
                            bert ? ENG_ACT_TANH : ENG_ACT_RELU);
    if (p > 0)
        be->ops->train->dropout(be, h->hq, h->hq, (size_t)n * H, p, site_seed(t, SITE_HEAD));
    linear(be, h->logits, h->hq, &b->cls, n);
}

int eng_trainer_head_backward(eng_trainer *t, const float *feats, int n, const int32_t *labels,
                              const float *targets, float loss_scale, float *loss,
                              eng_error *err)
{
    if (!t || !feats || n <= 0)
        return eng_fail(err, ENG_EINVAL, "empty batch");
    const eng_model_config *c = &t->cfg;
    if (c->multi_label ? !targets : !labels)
        return eng_fail(err, ENG_EINVAL, "%s training needs %s", c->multi_label ? "multi-label"
                        : "single-label", c->multi_label ? "targets" : "labels");
    int L = c->num_labels, H = c->hidden, bert = c->family == ENG_FAMILY_BERT;
    for (int i = 0; !c->multi_label && i < n; i++)
        if (labels[i] < 0 || labels[i] >= L)
            return eng_fail(err, ENG_EINVAL, "label id %d of input %d is outside [0, %d)",
                            labels[i], i, L);
    head_bufs h;
    int rc = head_prepare(t, feats, n, &h, err);
    if (rc)
        return rc;
    eng_backend *be = t->be;
    if (c->multi_label ? be->ops->upload(be, h.targets, targets, sizeof(float) * (size_t)n * L)
                       : be->ops->upload(be, h.labels, labels, sizeof(int32_t) * (size_t)n))
        return eng_fail(err, ENG_EBACKEND, "%s backend: upload failed", be->ops->name);
    head_forward(t, &h, n, t->p_cls);
    if (c->multi_label)
        be->ops->train->bce_logits(be, t->scratch, h.dlogits, h.logits, h.targets, n, L, loss_scale);
    else
        be->ops->train->cross_entropy(be, t->scratch, h.dlogits, h.logits, h.labels, n, L, loss_scale);
    const eng_bert *b = &t->bert;
    linear_back(t, h.g, 0, h.dlogits, h.hq, b->cls.w, b->cls.b, n, L, H);
    if (t->p_cls > 0)
        be->ops->train->dropout(be, h.g, h.g, (size_t)n * H, t->p_cls, site_seed(t, SITE_HEAD));
    be->ops->train->act_backward(be, h.g, h.g, h.hp, n, H, bert ? ENG_ACT_TANH : ENG_ACT_RELU);
    linear_back(t, NULL, 0, h.g, h.cls, bert ? b->pool.w : b->pre.w, bert ? b->pool.b : b->pre.b,
                n, H, H);
    float host_loss = 0;
    rc = be->ops->download(be, &host_loss, t->scratch, sizeof host_loss);
    if (!rc)
        rc = be->ops->synchronize(be);
    t->micro++;
    if (rc)
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    if (loss)
        *loss = host_loss;
    return ENG_OK;
}

int eng_trainer_head_logits(eng_trainer *t, const float *feats, int n, float *logits,
                            eng_error *err)
{
    if (!t || !feats || !logits || n <= 0)
        return eng_fail(err, ENG_EINVAL, "NULL argument or empty batch");
    head_bufs h;
    int rc = head_prepare(t, feats, n, &h, err);
    if (rc)
        return rc;
    head_forward(t, &h, n, 0);
    eng_backend *be = t->be;
    if (be->ops->download(be, logits, h.logits, sizeof(float) * (size_t)n * t->cfg.num_labels) ||
        be->ops->synchronize(be))
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", be->ops->name);
    return ENG_OK;
}

/* -------------------------------------------------------------------- save */

/* config.json: the base's, turned into the classifier's. */
static char *make_config_json(const eng_trainer *t)
{
    cJSON *c = cJSON_Duplicate(t->base_config, 1);
    if (!c)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(c, "_name_or_path");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "architectures");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "id2label");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "label2id");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "num_labels");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "problem_type");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "torch_dtype");
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON *id2 = cJSON_AddObjectToObject(c, "id2label");
    cJSON *l2i = cJSON_AddObjectToObject(c, "label2id");
    int ok = arch && id2 && l2i;
    if (ok)
        cJSON_AddItemToArray(arch, cJSON_CreateString(t->cfg.architecture));
    for (int i = 0; ok && i < t->cfg.num_labels; i++) {
        char key[24];
        snprintf(key, sizeof key, "%d", i);
        ok = cJSON_AddStringToObject(id2, key, t->cfg.labels[i]) &&
             cJSON_AddNumberToObject(l2i, t->cfg.labels[i], i);
    }
    ok = ok && cJSON_AddStringToObject(c, "problem_type", t->cfg.multi_label
                                                              ? "multi_label_classification"
                                                              : "single_label_classification");
    ok = ok && cJSON_AddStringToObject(c, "torch_dtype", "float32");
    char *s = ok ? cJSON_Print(c) : NULL;
    cJSON_Delete(c);
    return s;
}

int eng_trainer_save(eng_trainer *t, const char *dir, const eng_file_out *extra, int n_extra,
                     int replace, eng_error *err)
{
    static const char *const tok_files[] = {"tokenizer.json", "vocab.txt",
                                            "tokenizer_config.json", "special_tokens_map.json"};
    eng_ckpt *ck = NULL;
    char src[4096];
    int rc = eng_ckpt_begin(dir, &ck, err);
    if (rc)
        return rc;
    char *cfg = make_config_json(t);
    eng_tensor_out *tens = calloc((size_t)t->nparams, sizeof *tens);
    if (!cfg || !tens) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto fail;
    }
    size_t cl = strlen(cfg);
    cfg[cl] = '\n'; /* cJSON_Print's buffer ends in NUL; a trailing newline replaces it */
    if ((rc = eng_ckpt_write(ck, "config.json", cfg, cl + 1, err)))
        goto fail;
    for (int i = 0; i < t->nparams; i++) {
        const eng_param *p = &t->params[i];
        tens[i].name = p->name;
        tens[i].data = t->bert.block + p->off;
        tens[i].ndim = p->ndim;
        tens[i].shape[0] = p->shape[0];
        tens[i].shape[1] = p->shape[1];
    }
    if ((rc = eng_ckpt_write_safetensors(ck, "model.safetensors", tens, t->nparams, err)))
        goto fail;
    for (size_t i = 0; i < sizeof tok_files / sizeof tok_files[0]; i++) {
        if (eng_path_join(src, sizeof src, t->base_dir, tok_files[i])) {
            rc = eng_fail(err, ENG_EINVAL, "%s: path too long", t->base_dir);
            goto fail;
        }
        if (access(src, F_OK) != 0) /* not fopen: a FIFO would block */
            continue; /* optional: the tokenizer loaded from what exists */
        if ((rc = eng_ckpt_copy(ck, src, tok_files[i], err)))
            goto fail;
    }
    for (int i = 0; i < n_extra; i++)
        if ((rc = eng_ckpt_write(ck, extra[i].name, extra[i].data, extra[i].len, err)))
            goto fail;
    free(cfg);
    free(tens);
    return eng_ckpt_commit(ck, replace, err);
fail:
    free(cfg);
    free(tens);
    eng_ckpt_abort(ck);
    return rc;
}
