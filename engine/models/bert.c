/* bert.c - BERT / DistilBERT weights and forward pass.
 * Both families are post-norm encoders with the same computation; they differ
 * in tensor names, token types and the classification head. */
#include "models/bert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/util.h"
#include "core/weight_block.h"
#include "nn/linear.h"

/* ---------------------------------------------------------------- loading */

/* Layer norm weights: "X.weight"/"X.bias", or "X.gamma"/"X.beta" in old files. */
static void plan_ln(eng_wplan *p, const float **g, const float **b, int64_t h, const char *base)
{
    eng_wplan_add(p, g, 0, 0, h, 0, "%s.weight", base);
    if (p->n)
        p->e[p->n - 1].alt_suffix = "gamma";
    eng_wplan_add(p, b, 0, 0, h, 0, "%s.bias", base);
    if (p->n)
        p->e[p->n - 1].alt_suffix = "beta";
}

/* A linear layer; packable ones go to the tail of the block. */
static void plan_linear(eng_wplan *p, eng_linear *l, int packable, int64_t out, int64_t in,
                        const char *base)
{
    l->out = (int)out;
    l->in = (int)in;
    p->tail = packable;
    p->lin = l;
    eng_wplan_add(p, &l->w, 0, 0, out, in, "%s.weight", base);
    eng_wplan_add(p, &l->b, 0, 0, out, 0, "%s.bias", base);
}

/* Tensor names of one family, relative to the model prefix ("bert." ...). */
typedef struct family_names {
    const char *layer;                 /* printf format of a layer's prefix, %d = index */
    const char *query, *key, *value;   /* within a layer */
    const char *attn_out, *ln1, *ffn_in, *ffn_out, *ln2;
} family_names;

static const family_names bert_names = {
    "encoder.layer.%d", "attention.self.query", "attention.self.key", "attention.self.value",
    "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
    "output.dense", "output.LayerNorm",
};

static const family_names distilbert_names = {
    "transformer.layer.%d", "attention.q_lin", "attention.k_lin", "attention.v_lin",
    "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm",
};

static void plan_encoder(eng_wplan *p, eng_bert *b, const eng_model_config *c, const char *pre,
                         const family_names *fn)
{
    int64_t H = c->hidden, I = c->intermediate;
    char base[128], lp[96];
    eng_wplan_add(p, &b->word, 0, 0, c->vocab, H, "%sembeddings.word_embeddings.weight", pre);
    eng_wplan_add(p, &b->pos, 0, 0, c->max_positions, H,
                  "%sembeddings.position_embeddings.weight", pre);
    if (c->type_vocab)
        eng_wplan_add(p, &b->type, 0, 0, c->type_vocab, H,
                      "%sembeddings.token_type_embeddings.weight", pre);
    snprintf(base, sizeof base, "%sembeddings.LayerNorm", pre);
    plan_ln(p, &b->emb_ln_g, &b->emb_ln_b, H, base);
    for (int l = 0; l < c->layers; l++) {
        eng_bert_layer *L = &b->layers[l];
        int w = snprintf(lp, sizeof lp, "%s", pre);
        snprintf(lp + w, sizeof lp - (size_t)w, fn->layer, l);
        /* query | key | value land next to each other: one fused [3H, H] matrix. */
        L->qkv.out = (int)(3 * H);
        L->qkv.in = (int)H;
        p->tail = 1;
        p->lin = &L->qkv;
        eng_wplan_add(p, &L->qkv.w, 0, 0, H, H, "%s.%s.weight", lp, fn->query);
        eng_wplan_add(p, NULL, 1, 0, H, H, "%s.%s.weight", lp, fn->key);
        eng_wplan_add(p, NULL, 1, 0, H, H, "%s.%s.weight", lp, fn->value);
        eng_wplan_add(p, &L->qkv.b, 0, 0, H, 0, "%s.%s.bias", lp, fn->query);
        eng_wplan_add(p, NULL, 1, 0, H, 0, "%s.%s.bias", lp, fn->key);
        eng_wplan_add(p, NULL, 1, 0, H, 0, "%s.%s.bias", lp, fn->value);
        snprintf(base, sizeof base, "%s.%s", lp, fn->attn_out);
        plan_linear(p, &L->ao, 1, H, H, base);
        snprintf(base, sizeof base, "%s.%s", lp, fn->ln1);
        plan_ln(p, &L->ln1_g, &L->ln1_b, H, base);
        snprintf(base, sizeof base, "%s.%s", lp, fn->ffn_in);
        plan_linear(p, &L->in, 1, I, H, base);
        snprintf(base, sizeof base, "%s.%s", lp, fn->ffn_out);
        plan_linear(p, &L->out, 1, H, I, base);
        snprintf(base, sizeof base, "%s.%s", lp, fn->ln2);
        plan_ln(p, &L->ln2_g, &L->ln2_b, H, base);
    }
}

static const eng_st_tensor *find_tensor(const eng_safetensors *st, const eng_wplan_entry *e)
{
    const eng_st_tensor *t = eng_st_find(st, e->name);
    if (t || !e->alt_suffix)
        return t;
    char alt[200];
    const char *dot = strrchr(e->name, '.');
    snprintf(alt, sizeof alt, "%.*s.%s", (int)(dot - e->name), e->name, e->alt_suffix);
    return eng_st_find(st, alt);
}

static void shape_str(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t w = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && w < cap; i++)
        w += (size_t)snprintf(buf + w, cap - w, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (w < cap)
        snprintf(buf + w, cap - w, "]");
}

/* The tensor of entry e, present with the planned shape; else ENG_EFORMAT. */
static int check_entry(const eng_safetensors *st, const eng_wplan_entry *e,
                       const eng_st_tensor **out, eng_error *err)
{
    int64_t want[2] = {e->rows, e->cols};
    int want_dims = e->cols ? 2 : 1;
    char ws[64], hs[64];
    shape_str(ws, sizeof ws, want, want_dims);
    const eng_st_tensor *t = find_tensor(st, e);
    if (!t)
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s' is missing (expected a float tensor "
                        "of shape %s)", st->path, e->name, ws);
    if (t->ndim != want_dims || t->shape[0] != want[0] || (want_dims == 2 && t->shape[1] != want[1])) {
        shape_str(hs, sizeof hs, t->shape, t->ndim);
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", st->path,
                        t->name, hs, ws);
    }
    *out = t;
    return ENG_OK;
}

static int load_entry(eng_bert *b, const eng_safetensors *st, const eng_wplan_entry *e,
                      eng_error *err)
{
    const eng_st_tensor *t;
    int rc = check_entry(st, e, &t, err);
    if (rc)
        return rc;
    if (eng_st_to_f32(t, b->block + e->off) != ENG_OK)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32, F16 "
                        "or BF16", st->path, t->name, t->dtype_name);
    return ENG_OK;
}

/* Checkpoints of *Model classes store names without the family prefix. */
static const char *detect_prefix(const eng_safetensors *st, const char *family_prefix)
{
    char name[128];
    snprintf(name, sizeof name, "%sembeddings.word_embeddings.weight", family_prefix);
    return eng_st_find(st, name) ? family_prefix : "";
}

int eng_bert_load(eng_bert *b, const eng_model_config *c, const eng_safetensors *st,
                  eng_error *err)
{
    int rc = ENG_OK;
    eng_wplan p = {0};
    memset(b, 0, sizeof *b);
    b->cfg = c;
    b->layers = calloc((size_t)c->layers, sizeof *b->layers);
    if (!b->layers)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int bert = c->family == ENG_FAMILY_BERT;
    const char *pre = detect_prefix(st, bert ? "bert." : "distilbert.");
    plan_encoder(&p, b, c, pre, bert ? &bert_names : &distilbert_names);
    if (c->task == ENG_TASK_CLASSIFY) {
        char pooler[64];
        snprintf(pooler, sizeof pooler, "%spooler.dense", pre);
        if (bert) /* BERT: tanh pooler on [CLS]; DistilBERT: pre_classifier + ReLU */
            plan_linear(&p, &b->pool, 1, c->hidden, c->hidden, pooler);
        else
            plan_linear(&p, &b->pre, 1, c->hidden, c->hidden, "pre_classifier");
        plan_linear(&p, &b->cls, 0, c->num_labels, c->hidden, "classifier");
    }
    else if (c->task == ENG_TASK_QA)
        plan_linear(&p, &b->qa, 0, 2, c->hidden, "qa_outputs");
    if (p.fail) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto fail;
    }
    /* Every tensor present with its shape before the block is allocated: the
     * config alone cannot make us allocate more than the file holds. */
    for (int i = 0; i < p.n; i++) {
        const eng_st_tensor *t;
        if ((rc = check_entry(st, &p.e[i], &t, err)))
            goto fail;
    }
    if ((rc = eng_weight_block_map(&p, &b->block, &b->block_floats, &b->tail_off,
                                   &b->block_mapped, err)))
        goto fail;
    for (int i = 0; i < p.n; i++) {
        if ((rc = load_entry(b, st, &p.e[i], err)))
            goto fail;
        if (p.e[i].dst)
            *p.e[i].dst = b->block + p.e[i].off;
        if (p.e[i].lin)
            p.e[i].lin->off = p.e[i].off;
    }
    free(p.e);
    return ENG_OK;
fail:
    free(p.e);
    eng_bert_free(b);
    return rc;
}

int eng_bert_linears(eng_bert *b, eng_linear **out, int max)
{
    int n = 0;
    for (int l = 0; b->layers && l < b->cfg->layers; l++) {
        eng_bert_layer *L = &b->layers[l];
        eng_linear *ls[] = {&L->qkv, &L->ao, &L->in, &L->out};
        for (int i = 0; i < 4; i++)
            if (n < max)
                out[n++] = ls[i];
    }
    /* the [CLS] heads' square layers; the classifier / QA outputs (a few rows of W)
     * stay plain */
    if ((b->pool.w || b->pool.packed) && n < max) /* w is NULL once released */
        out[n++] = &b->pool;
    if ((b->pre.w || b->pre.packed) && n < max)
        out[n++] = &b->pre;
    return n;
}

#define MAX_LIN(b) (4 * (b)->cfg->layers + 2)

/* Frees the packings (the handles do not need the backend that made them). */
static void unpack(eng_bert *b)
{
    if (!b->layers)
        return;
    eng_linear **ls = malloc((size_t)MAX_LIN(b) * sizeof *ls);
    if (!ls)
        abort(); /* a few pointers; see DESIGN §6 on abort */
    int n = eng_bert_linears(b, ls, MAX_LIN(b));
    for (int i = 0; i < n; i++)
        eng_nn_linear_unpack_free(ls[i]);
    free(ls);
    b->pack_ops = NULL;
    b->packed_bytes = 0;
}

int eng_bert_pack(eng_bert *b, eng_backend *be, int fmt, int drop)
{
    if (!be || b->pack_ops || b->dropped)
        return ENG_EINVAL;
    eng_linear **ls = malloc((size_t)MAX_LIN(b) * sizeof *ls);
    if (!ls)
        return ENG_ENOMEM;
    int n = eng_bert_linears(b, ls, MAX_LIN(b)), rc = ENG_OK;
    size_t bytes = 0, released = b->tail_off * sizeof(float);
    drop = drop && b->tail_off < b->block_floats;
    b->pack_ops = be->ops;
    for (int i = 0; i < n && rc == ENG_OK; i++) {
        rc = eng_nn_linear_pack(ls[i], be, fmt, &bytes);
        /* the layers lie in the tail in this order: release each original as soon as it
         * is packed, so that the peak holds one layer twice, not the model */
        if (rc == ENG_OK && drop)
            eng_weight_block_release(b->block, &released,
                                     ls[i]->off + (size_t)ls[i]->out * ls[i]->in);
    }
    if (drop && released > b->tail_off * sizeof(float)) {
        b->dropped = 1; /* from here on the originals are (partly) gone */
        for (int i = 0; i < n; i++)
            ls[i]->w = NULL;
    }
    if (rc) {
        free(ls);
        return rc; /* the caller frees the model */
    }
    b->fmt = fmt;
    b->packed_bytes = bytes;
    if (drop) {
        eng_weight_block_release(b->block, &released, b->block_mapped / sizeof(float));
        b->block_mapped = b->tail_off * sizeof(float); /* page-aligned (the layout) */
        b->dropped = 1;
        for (int i = 0; i < n; i++)
            ls[i]->w = NULL;
    }
    free(ls);
    return ENG_OK;
}

/* Packs every linear layer of the view for be in fmt: from the layers' own weights
 * (host_block NULL) or, without keeping an fp32 device copy, from host_block
 * (eng_nn_linears_pack). */
static int pack_linears(eng_bert *v, eng_backend *be, int fmt, const float *host_block)
{
    if (!be || v->pack_ops || !v->layers)
        return ENG_EINVAL;
    eng_linear **ls = malloc((size_t)MAX_LIN(v) * sizeof *ls);
    if (!ls)
        return ENG_ENOMEM;
    int n = eng_bert_linears(v, ls, MAX_LIN(v));
    size_t bytes = 0;
    int rc = eng_nn_linears_pack(ls, n, be, fmt, host_block, v->tail_off, &bytes);
    free(ls);
    if (rc)
        return rc;
    v->pack_ops = be->ops;
    v->fmt = fmt;
    v->packed_bytes = bytes;
    if (host_block)
        v->dropped = 1; /* the view holds the block up to tail_off only */
    return ENG_OK;
}

int eng_bert_view_pack(eng_bert *v, eng_backend *be, int fmt)
{
    return pack_linears(v, be, fmt, NULL);
}

void eng_bert_view_unpack(eng_bert *v) { unpack(v); }

int eng_bert_view_pack_host(eng_bert *v, eng_backend *be, int fmt, const float *host_block)
{
    return host_block ? pack_linears(v, be, fmt, host_block) : ENG_EINVAL;
}

float *eng_bert_unpacked_block(const eng_bert *b)
{
    float *h = malloc(b->block_floats * sizeof(float));
    if (!h)
        return NULL;
    eng_bert *mb = (eng_bert *)b; /* eng_bert_linears only reads through it here */
    eng_linear **ls = malloc((size_t)MAX_LIN(b) * sizeof *ls);
    if (!ls) {
        free(h);
        return NULL;
    }
    memcpy(h, b->block, (b->dropped ? b->tail_off : b->block_floats) * sizeof(float));
    int n = eng_bert_linears(mb, ls, MAX_LIN(b));
    for (int i = 0; i < n; i++)
        if (ls[i]->packed)
            eng_nn_linear_unpack(ls[i], h + ls[i]->off);
    free(ls);
    return h;
}

#define REBASE(p) ((p) ? (const float *)base + ((p) - b->block) : NULL)

/* A layer in the view: weights moved to base; packings kept when shared (zero-copy). */
static void rebase_linear(const eng_bert *b, const void *base, int same, eng_linear *V,
                          const eng_linear *L)
{
    *V = *L;
    V->b = REBASE(L->b);
    V->w = L->w || L->packed ? (const float *)base + L->off : NULL;
    if (same) {
        V->w = L->w; /* NULL when dropped: the packing is the copy */
        return;
    }
    V->packed = NULL;
    V->pack_ops = NULL;
    V->fmt = ENG_WFMT_F32;
}

int eng_bert_view(const eng_bert *b, const void *base, eng_bert *out)
{
    const eng_model_config *c = b->cfg;
    int same = base == (const void *)b->block;
    *out = *b;
    out->layers = malloc((size_t)c->layers * sizeof *out->layers);
    if (!out->layers)
        return ENG_ENOMEM;
    for (int l = 0; l < c->layers; l++) {
        const eng_bert_layer *L = &b->layers[l];
        eng_bert_layer *V = &out->layers[l];
        *V = *L;
        rebase_linear(b, base, same, &V->qkv, &L->qkv);
        rebase_linear(b, base, same, &V->ao, &L->ao);
        V->ln1_g = REBASE(L->ln1_g), V->ln1_b = REBASE(L->ln1_b);
        rebase_linear(b, base, same, &V->in, &L->in);
        rebase_linear(b, base, same, &V->out, &L->out);
        V->ln2_g = REBASE(L->ln2_g), V->ln2_b = REBASE(L->ln2_b);
    }
    out->block = NULL; /* not the view's to free */
    out->word = REBASE(b->word), out->pos = REBASE(b->pos), out->type = REBASE(b->type);
    out->emb_ln_g = REBASE(b->emb_ln_g), out->emb_ln_b = REBASE(b->emb_ln_b);
    rebase_linear(b, base, same, &out->pool, &b->pool);
    rebase_linear(b, base, same, &out->pre, &b->pre);
    rebase_linear(b, base, same, &out->cls, &b->cls);
    rebase_linear(b, base, same, &out->qa, &b->qa);
    if (!same) {
        out->pack_ops = NULL;
        out->packed_bytes = 0;
        out->dropped = 0;
    }
    return ENG_OK;
}

#undef REBASE

void eng_bert_view_free(eng_bert *v)
{
    free(v->layers);
    v->layers = NULL;
}

void eng_bert_free(eng_bert *b)
{
    unpack(b);
    if (b->block)
        munmap(b->block, b->block_mapped);
    free(b->layers);
    b->block = NULL;
    b->layers = NULL;
}

/* ---------------------------------------------------------------- forward */

static size_t forward_bytes(const eng_model_config *c, int n, int ntok)
{
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate, T = (size_t)ntok;
    return eng_arena_need(sizeof(int32_t) * ((size_t)n + 1)) +
           3 * eng_arena_need(sizeof(int32_t) * T) + /* ids, pos, types */
           eng_arena_need(sizeof(float) * T * H) +   /* x */
           eng_arena_need(sizeof(float) * T * 3 * H) + /* qkv */
           eng_arena_need(sizeof(float) * T * H) +   /* attention context */
           eng_arena_need(sizeof(float) * T * (I > H ? I : H)); /* ffn / projections */
}

size_t eng_bert_head_bytes(const eng_bert *b, int n, int ntok)
{
    size_t H = (size_t)b->cfg->hidden, L = (size_t)b->cfg->num_labels;
    return 2 * eng_arena_need(sizeof(float) * (size_t)n * H) +
           eng_arena_need(sizeof(float) * (size_t)n * (L ? L : 1)) +
           eng_arena_need(sizeof(float) * (size_t)ntok * 2);
}

int eng_bert_prepare(const eng_bert *b, eng_backend *be, eng_arena *ar,
                     const eng_encoding *const *enc, int n, size_t extra_bytes,
                     eng_bert_batch *bt, eng_error *err)
{
    const eng_model_config *c = b->cfg;
    memset(bt, 0, sizeof *bt);
    if (n <= 0)
        return eng_fail(err, ENG_EINVAL, "empty batch");
    long long ntok = 0;
    for (int i = 0; i < n; i++) {
        if (enc[i]->n <= 0)
            return eng_fail(err, ENG_EINVAL, "input %d has no tokens", i);
        if (enc[i]->n > c->max_positions)
            return eng_fail(err, ENG_ETOOLONG, "input %d has %d tokens; the model accepts at "
                            "most %d", i, enc[i]->n, c->max_positions);
        for (int t = 0; t < enc[i]->n; t++) {
            if (enc[i]->ids[t] < 0 || enc[i]->ids[t] >= c->vocab)
                return eng_fail(err, ENG_EINVAL, "input %d: token id %d outside the vocabulary "
                                "(%d)", i, enc[i]->ids[t], c->vocab);
            /* DistilBERT has no token types: they are ignored, as transformers does. */
            int ty = enc[i]->type_ids && c->type_vocab ? enc[i]->type_ids[t] : 0;
            if (ty < 0 || (c->type_vocab && ty >= c->type_vocab))
                return eng_fail(err, ENG_EINVAL, "input %d: token type %d not supported by "
                                "the model", i, ty);
        }
        ntok += enc[i]->n;
    }
    if (ntok > (1 << 24))
        return eng_fail(err, ENG_ETOOLONG, "batch of %lld tokens is too large", ntok);
    if (eng_arena_reserve(ar, forward_bytes(c, n, (int)ntok) + extra_bytes) != ENG_OK)
        return eng_fail(err, ENG_ENOMEM, "out of memory for a batch of %lld tokens", ntok);
    size_t T = (size_t)ntok;
    /* The layout is built on the host (one buffer: seq_off | ids | pos | types) and
     * uploaded: the engine never writes backend memory directly. */
    int32_t *h = malloc(sizeof(int32_t) * ((size_t)n + 1 + 3 * T));
    if (!h)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int32_t *off = h, *ids = h + n + 1, *pos = ids + T, *types = pos + T;
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        off[i + 1] = off[i] + enc[i]->n;
        for (int t = 0; t < enc[i]->n; t++) {
            ids[off[i] + t] = enc[i]->ids[t];
            pos[off[i] + t] = t;
            types[off[i] + t] = enc[i]->type_ids ? enc[i]->type_ids[t] : 0;
        }
    }
    bt->n = n;
    bt->ntok = (int)ntok;
    bt->seq_off = eng_arena_alloc(ar, sizeof(int32_t) * ((size_t)n + 1));
    bt->ids = eng_arena_alloc(ar, sizeof(int32_t) * T);
    bt->pos = eng_arena_alloc(ar, sizeof(int32_t) * T);
    bt->types = eng_arena_alloc(ar, sizeof(int32_t) * T);
    const eng_backend_ops *o = be->ops;
    if (o->upload(be, bt->seq_off, off, sizeof(int32_t) * ((size_t)n + 1)) ||
        o->upload(be, bt->ids, ids, sizeof(int32_t) * T) ||
        o->upload(be, bt->pos, pos, sizeof(int32_t) * T) ||
        o->upload(be, bt->types, types, sizeof(int32_t) * T)) {
        free(h);
        return eng_fail(err, ENG_EBACKEND, "%s backend: upload failed", o->name);
    }
    bt->host_seq_off = h; /* off is its first n + 1 entries */
    return ENG_OK;
}

void eng_bert_batch_close(eng_bert_batch *bt)
{
    free(bt->host_seq_off);
    bt->host_seq_off = NULL;
}

/* y[T, out] = act(x[T, in] W^T + bias) (nn/linear.h). A failing int8/bf16 scratch
 * allocation leaves y unset: the caller's arena reservation is the only other memory. */
static void linear(eng_backend *be, float *y, const float *x, const eng_linear *l, int T,
                   eng_act act)
{
    if (eng_nn_linear_forward(l, be, y, x, T, act))
        abort(); /* out of memory for a few MB of quantized rows */
}

float *eng_bert_encode(const eng_bert *b, eng_backend *be, eng_arena *ar,
                       const eng_bert_batch *bt)
{
    const eng_model_config *c = b->cfg;
    const eng_backend_ops *o = be->ops;
    int T = bt->ntok, H = c->hidden, I = c->intermediate, hd = H / c->heads;
    float *x = eng_arena_alloc(ar, sizeof(float) * (size_t)T * H);
    float *qkv = eng_arena_alloc(ar, sizeof(float) * (size_t)T * 3 * H);
    float *ctx = eng_arena_alloc(ar, sizeof(float) * (size_t)T * H);
    float *tmp = eng_arena_alloc(ar, sizeof(float) * (size_t)T * (I > H ? I : H));
    float scale = 1.0f / sqrtf((float)hd);

    o->core->embed(be, x, b->word, b->pos, b->type, bt->ids, bt->pos, b->type ? bt->types : NULL, T, H);
    o->core->add_layernorm(be, x, x, NULL, b->emb_ln_g, b->emb_ln_b, T, H, c->ln_eps);
    for (int l = 0; l < c->layers; l++) {
        const eng_bert_layer *L = &b->layers[l];
        linear(be, qkv, x, &L->qkv, T, ENG_ACT_NONE);
        o->core->attention(be, ctx, H, qkv, 3 * H, qkv + H, 3 * H, qkv + 2 * H, 3 * H, bt->seq_off,
                     bt->seq_off, bt->n, c->heads, hd, scale, 0);
        linear(be, tmp, ctx, &L->ao, T, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, tmp, x, L->ln1_g, L->ln1_b, T, H, c->ln_eps);
        linear(be, tmp, x, &L->in, T, c->act);
        linear(be, ctx, tmp, &L->out, T, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, ctx, x, L->ln2_g, L->ln2_b, T, H, c->ln_eps);
    }
    return x;
}

float *eng_bert_classify(const eng_bert *b, eng_backend *be, eng_arena *ar,
                         const eng_bert_batch *bt, const float *hidden)
{
    const eng_model_config *c = b->cfg;
    int n = bt->n, H = c->hidden;
    float *cls = eng_arena_alloc(ar, sizeof(float) * (size_t)n * H);
    float *mid = eng_arena_alloc(ar, sizeof(float) * (size_t)n * H);
    float *logits = eng_arena_alloc(ar, sizeof(float) * (size_t)n * c->num_labels);
    be->ops->core->gather_rows(be, cls, hidden, bt->seq_off, n, 0, H);
    if (c->family == ENG_FAMILY_BERT)
        linear(be, mid, cls, &b->pool, n, ENG_ACT_TANH);
    else
        linear(be, mid, cls, &b->pre, n, ENG_ACT_RELU);
    linear(be, logits, mid, &b->cls, n, ENG_ACT_NONE);
    return logits;
}

float *eng_bert_qa(const eng_bert *b, eng_backend *be, eng_arena *ar, const eng_bert_batch *bt,
                   const float *hidden)
{
    float *out = eng_arena_alloc(ar, sizeof(float) * (size_t)bt->ntok * 2);
    linear(be, out, hidden, &b->qa, bt->ntok, ENG_ACT_NONE);
    return out;
}

float *eng_bert_pool(const eng_bert *b, eng_backend *be, eng_arena *ar, const eng_bert_batch *bt,
                     const float *hidden, int normalize)
{
    float *out = eng_arena_alloc(ar, sizeof(float) * (size_t)bt->n * b->cfg->hidden);
    be->ops->core->mean_pool(be, out, hidden, bt->seq_off, bt->n, b->cfg->hidden, normalize);
    return out;
}
