/* marian.c - MarianMTModel: configuration, weights, encoder, incremental
 * decoder with KV cache (see marian.h). */
#include "models/marian.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"
#include <sys/mman.h>

#include "core/util.h"
#include "core/weight_block.h"
#include "nn/linear.h"

enum { ACT_RELU, ACT_GELU, ACT_GELU_TANH, ACT_SILU };

typedef struct mm_layer {
    eng_linear qkv; /* self-attention q|k|v fused [3D, D], [3D] */
    eng_linear o;
    const float *ln1_g, *ln1_b;
    eng_linear cq;  /* decoder: cross-attention query [D, D] */
    eng_linear ckv; /* decoder: cross-attention k|v fused [2D, D] */
    eng_linear co;
    const float *lnc_g, *lnc_b;
    eng_linear fc1; /* [F, D] */
    eng_linear fc2; /* [D, F] */
    const float *ln2_g, *ln2_b;
} mm_layer;

struct eng_marian {
    /* config.json */
    int d, enc_layers, dec_layers, enc_heads, dec_heads, enc_ffn, dec_ffn;
    int vocab, dec_vocab, max_pos, act;
    int scale_embedding, share, tie;
    int32_t pad_id, eos_id;
    float ln_eps;
    char dtype[8];
    eng_search_opts gen;
    int32_t bad_ids[16];
    eng_marian_tok *tok;
    /* weights: one fp32 mapping (NULL in a view); the projections last, from tail_off
     * (page-aligned), so that they can be released once packed (dropped) */
    float *block;
    size_t block_floats, block_mapped, tail_off;
    int dropped, fmt;
    const float *enc_emb, *dec_emb, *lm, *final_bias, *enc_pos, *dec_pos;
    mm_layer *enc, *dec;
    /* packings (eng_marian_pack): backends of pack_ops' kind use them */
    const eng_backend_ops *pack_ops;
    eng_linear lmh; /* the lm head: w = lm (kept: it may be the embedding), b = final_bias */
    size_t packed_bytes;
};

/* ------------------------------------------------------------- config */

int eng_marian_is_folder(const char *dir)
{
    int rc;
    cJSON *c = eng_read_json(dir, "config.json", 1, &rc, NULL);
    if (!c)
        return 0;
    const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "architectures"), 0);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "model_type");
    int yes = (cJSON_IsString(a) && !strcmp(a->valuestring, "MarianMTModel")) ||
              (!cJSON_IsString(a) && cJSON_IsString(mt) && !strcmp(mt->valuestring, "marian"));
    cJSON_Delete(c);
    return yes;
}

/* Integer key (absent: keep *out); null counts as absent when allow_null. */
static int get_int(const cJSON *o, const char *key, long lo, long hi, int *out, const char *file,
                   eng_error *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j))
        return ENG_OK;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < lo ||
        j->valuedouble > hi)
        return eng_fail(err, ENG_EFORMAT, "%s: '%s' must be an integer in [%ld, %ld]", file, key,
                        lo, hi);
    *out = (int)j->valuedouble;
    return ENG_OK;
}

static int get_bool(const cJSON *o, const char *key, int *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(j))
        *out = cJSON_IsTrue(j);
    return ENG_OK;
}

static int parse_config(eng_marian *m, const cJSON *c, const char *file, eng_error *err)
{
    int rc;
    /* MarianConfig defaults */
    m->vocab = 58101, m->d = 1024, m->max_pos = 1024;
    m->enc_layers = m->dec_layers = 12;
    m->enc_ffn = m->dec_ffn = 4096;
    m->enc_heads = m->dec_heads = 16;
    m->pad_id = 58100, m->eos_id = 0;
    m->share = 1, m->tie = 1;
    m->ln_eps = 1e-5f; /* nn.LayerNorm's default: Marian does not configure it */
    int pad = m->pad_id, eos = m->eos_id, dec_vocab = -1;
    if ((rc = get_int(c, "vocab_size", 1, 1 << 24, &m->vocab, file, err)) ||
        (rc = get_int(c, "decoder_vocab_size", 1, 1 << 24, &dec_vocab, file, err)) ||
        (rc = get_int(c, "d_model", 1, 1 << 16, &m->d, file, err)) ||
        (rc = get_int(c, "max_position_embeddings", 2, 1 << 20, &m->max_pos, file, err)) ||
        (rc = get_int(c, "encoder_layers", 1, 256, &m->enc_layers, file, err)) ||
        (rc = get_int(c, "decoder_layers", 1, 256, &m->dec_layers, file, err)) ||
        (rc = get_int(c, "encoder_ffn_dim", 1, 1 << 20, &m->enc_ffn, file, err)) ||
        (rc = get_int(c, "decoder_ffn_dim", 1, 1 << 20, &m->dec_ffn, file, err)) ||
        (rc = get_int(c, "encoder_attention_heads", 1, 1024, &m->enc_heads, file, err)) ||
        (rc = get_int(c, "decoder_attention_heads", 1, 1024, &m->dec_heads, file, err)) ||
        (rc = get_int(c, "pad_token_id", 0, 1 << 24, &pad, file, err)) ||
        (rc = get_int(c, "eos_token_id", 0, 1 << 24, &eos, file, err)))
        return rc;
    m->pad_id = pad, m->eos_id = eos;
    get_bool(c, "scale_embedding", &m->scale_embedding);
    get_bool(c, "share_encoder_decoder_embeddings", &m->share);
    get_bool(c, "tie_word_embeddings", &m->tie);
    m->dec_vocab = m->share || dec_vocab < 0 ? m->vocab : dec_vocab;
    if (m->d % m->enc_heads || m->d % m->dec_heads)
        return eng_fail(err, ENG_EFORMAT, "%s: d_model %d is not a multiple of the attention "
                        "heads (%d, %d)", file, m->d, m->enc_heads, m->dec_heads);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(c, "activation_function");
    const char *a = cJSON_IsString(act) ? act->valuestring : "gelu";
    if (!strcmp(a, "swish") || !strcmp(a, "silu"))
        m->act = ACT_SILU;
    else if (!strcmp(a, "gelu"))
        m->act = ACT_GELU;
    else if (!strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh"))
        m->act = ACT_GELU_TANH;
    else if (!strcmp(a, "relu"))
        m->act = ACT_RELU;
    else
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: activation_function '%s' is not supported "
                        "(swish, silu, gelu, gelu_new, relu)", file, a);
    int flag = 0;
    if (get_bool(c, "normalize_before", &flag), flag)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: normalize_before (pre-norm) is not a "
                        "Marian option", file);
    return ENG_OK;
}

/* generation_config.json, or the same keys in config.json (GenerationConfig.
 * from_model_config). Options that change the search beyond what is implemented
 * are refused. */
static int parse_generation(eng_marian *m, const cJSON *g, const char *file, eng_error *err)
{
    eng_search_opts *o = &m->gen;
    int rc, max_new = -1, start = m->pad_id, eos = m->eos_id, forced = -1;
    o->num_beams = 1;
    o->max_length = 20; /* GenerationConfig defaults */
    o->length_penalty = 1.0f;
    const cJSON *eos_j = cJSON_GetObjectItemCaseSensitive(g, "eos_token_id");
    if (cJSON_IsArray(eos_j)) {
        if (cJSON_GetArraySize(eos_j) != 1)
            return eng_fail(err, ENG_EUNSUPPORTED, "%s: several eos_token_id values are not "
                            "supported", file);
        eos_j = cJSON_GetArrayItem(eos_j, 0);
    }
    if (cJSON_IsNumber(eos_j))
        eos = eos_j->valueint;
    if ((rc = get_int(g, "num_beams", 1, 64, &o->num_beams, file, err)) ||
        (rc = get_int(g, "max_length", 2, 1 << 20, &o->max_length, file, err)) ||
        (rc = get_int(g, "max_new_tokens", 1, 1 << 20, &max_new, file, err)) ||
        (rc = get_int(g, "min_length", 0, 1 << 20, &o->min_length, file, err)) ||
        (rc = get_int(g, "decoder_start_token_id", 0, 1 << 24, &start, file, err)) ||
        (rc = get_int(g, "forced_eos_token_id", 0, 1 << 24, &forced, file, err)))
        return rc;
    if (max_new > 0)
        o->max_length = max_new + 1;
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(g, "length_penalty");
    if (cJSON_IsNumber(lp))
        o->length_penalty = (float)lp->valuedouble;
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(g, "early_stopping");
    if (cJSON_IsBool(es))
        o->early_stopping = cJSON_IsTrue(es);
    else if (cJSON_IsString(es) && !strcmp(es->valuestring, "never"))
        o->early_stopping = 2;
    else if (es && !cJSON_IsNull(es))
        return eng_fail(err, ENG_EFORMAT, "%s: early_stopping must be true, false or \"never\"",
                        file);
    get_bool(g, "renormalize_logits", &o->renormalize);
    o->start_id = start;
    o->eos_id = eos;
    o->forced_eos_id = forced;
    /* bad_words_ids: single-token entries only (Marian's [[pad]]); </s> is exempt */
    const cJSON *bw = cJSON_GetObjectItemCaseSensitive(g, "bad_words_ids"), *e;
    cJSON_ArrayForEach(e, bw) {
        const cJSON *t = cJSON_GetArrayItem(e, 0);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 1 || !cJSON_IsNumber(t))
            return eng_fail(err, ENG_EUNSUPPORTED, "%s: bad_words_ids with sequences longer than "
                            "one token are not supported", file);
        if (t->valueint == eos)
            continue;
        if (o->n_bad == 16)
            return eng_fail(err, ENG_EUNSUPPORTED, "%s: more than 16 bad_words_ids", file);
        m->bad_ids[o->n_bad++] = t->valueint;
    }
    o->bad_ids = m->bad_ids;
    /* refused: sampling and processors nlpd does not implement */
    int b = 0, n = 0;
    if (get_bool(g, "do_sample", &b), b)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: do_sample is not supported", file);
    static const char *const int_keys[] = {"no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
                                           "min_new_tokens"};
    for (size_t i = 0; i < sizeof int_keys / sizeof *int_keys; i++) {
        n = 0;
        if ((rc = get_int(g, int_keys[i], 0, INT_MAX, &n, file, err)))
            return rc;
        if (n > 0)
            return eng_fail(err, ENG_EUNSUPPORTED, "%s: %s is not supported", file, int_keys[i]);
    }
    n = 1;
    if ((rc = get_int(g, "num_beam_groups", 1, 1024, &n, file, err)))
        return rc;
    if (n > 1)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: num_beam_groups is not supported", file);
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(g, "repetition_penalty");
    if (cJSON_IsNumber(rp) && rp->valuedouble != 1.0)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: repetition_penalty is not supported", file);
    static const char *const null_keys[] = {"forced_bos_token_id", "suppress_tokens",
                                            "begin_suppress_tokens", "forced_decoder_ids",
                                            "exponential_decay_length_penalty", "sequence_bias"};
    for (size_t i = 0; i < sizeof null_keys / sizeof *null_keys; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, null_keys[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
            return eng_fail(err, ENG_EUNSUPPORTED, "%s: %s is not supported", file, null_keys[i]);
    }
    if (o->max_length > m->max_pos)
        o->max_length = m->max_pos; /* positions beyond the table do not exist */
    /* every id the search emits or feeds must be a row of the vocabulary: a forced
     * </s> outside it would be returned as a token that decodes to nothing */
    const struct { const char *key; int id, optional; } ids[] = {
        {"pad_token_id", m->pad_id, 0},     {"eos_token_id", eos, 0},
        {"decoder_start_token_id", start, 0}, {"forced_eos_token_id", forced, 1}};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
        if (!(ids[i].optional && ids[i].id < 0) && (ids[i].id < 0 || ids[i].id >= m->dec_vocab))
            return eng_fail(err, ENG_EFORMAT, "%s: %s %d is outside the vocabulary (%d ids)",
                            file, ids[i].key, ids[i].id, m->dec_vocab);
    for (int i = 0; i < o->n_bad; i++)
        if (m->bad_ids[i] < 0 || m->bad_ids[i] >= m->dec_vocab)
            return eng_fail(err, ENG_EFORMAT, "%s: bad_words_ids entry %d is outside the "
                            "vocabulary (%d ids)", file, m->bad_ids[i], m->dec_vocab);
    return ENG_OK;
}

/* ------------------------------------------------------------- weights */

static void plan_linear(eng_wplan *p, eng_linear *l, int64_t out, int64_t in, const char *base)
{
    l->out = (int)out;
    l->in = (int)in;
    p->tail = 1;
    p->lin = l;
    eng_wplan_add(p, &l->w, 0, 0, out, in, "%s.weight", base);
    eng_wplan_add(p, &l->b, 0, 0, out, 0, "%s.bias", base);
}

static void plan_ln(eng_wplan *p, const float **g, const float **b, int64_t d, const char *base)
{
    eng_wplan_add(p, g, 0, 0, d, 0, "%s.weight", base);
    eng_wplan_add(p, b, 0, 0, d, 0, "%s.bias", base);
}

/* q|k|v (or k|v) projections fused into one matrix and one bias. */
static void plan_fused(eng_wplan *p, eng_linear *l, const char *base, const char *const *parts,
                       int n, int64_t d)
{
    l->out = (int)(n * d);
    l->in = (int)d;
    p->tail = 1;
    p->lin = l;
    for (int i = 0; i < n; i++)
        eng_wplan_add(p, i ? NULL : &l->w, i > 0, 0, d, d, "%s.%s.weight", base, parts[i]);
    for (int i = 0; i < n; i++)
        eng_wplan_add(p, i ? NULL : &l->b, i > 0, 0, d, 0, "%s.%s.bias", base, parts[i]);
}

static void plan_layer(eng_wplan *p, mm_layer *L, const char *pre, int l, int dec, int64_t D,
                       int64_t F)
{
    static const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
    char base[160];
    snprintf(base, sizeof base, "%s.layers.%d.self_attn", pre, l);
    plan_fused(p, &L->qkv, base, qkv, 3, D);
    snprintf(base, sizeof base, "%s.layers.%d.self_attn.out_proj", pre, l);
    plan_linear(p, &L->o, D, D, base);
    snprintf(base, sizeof base, "%s.layers.%d.self_attn_layer_norm", pre, l);
    plan_ln(p, &L->ln1_g, &L->ln1_b, D, base);
    if (dec) {
        snprintf(base, sizeof base, "%s.layers.%d.encoder_attn.q_proj", pre, l);
        plan_linear(p, &L->cq, D, D, base);
        snprintf(base, sizeof base, "%s.layers.%d.encoder_attn", pre, l);
        plan_fused(p, &L->ckv, base, qkv + 1, 2, D);
        snprintf(base, sizeof base, "%s.layers.%d.encoder_attn.out_proj", pre, l);
        plan_linear(p, &L->co, D, D, base);
        snprintf(base, sizeof base, "%s.layers.%d.encoder_attn_layer_norm", pre, l);
        plan_ln(p, &L->lnc_g, &L->lnc_b, D, base);
    }
    snprintf(base, sizeof base, "%s.layers.%d.fc1", pre, l);
    plan_linear(p, &L->fc1, F, D, base);
    snprintf(base, sizeof base, "%s.layers.%d.fc2", pre, l);
    plan_linear(p, &L->fc2, D, F, base);
    snprintf(base, sizeof base, "%s.layers.%d.final_layer_norm", pre, l);
    plan_ln(p, &L->ln2_g, &L->ln2_b, D, base);
}

static const eng_st_tensor *find_any(const eng_safetensors *st, const char *a, const char *b,
                                     const char *c)
{
    const eng_st_tensor *t = eng_st_find(st, a);
    if (!t && b)
        t = eng_st_find(st, b);
    if (!t && c)
        t = eng_st_find(st, c);
    return t;
}

/* MarianSinusoidalPositionalEmbedding._init_weight: angle pos / 10000^(2 (j // 2) / dim)
 * in double; sin of the even j in columns [0, half), cos of the odd j after them. */
static void sinusoid(float *out, int n_pos, int dim)
{
    int sentinel = dim % 2 ? dim / 2 + 1 : dim / 2;
    for (int pos = 0; pos < n_pos; pos++) {
        float *row = out + (size_t)pos * dim;
        for (int j = 0; j < dim; j++) {
            double angle = pos / pow(10000.0, 2.0 * (j / 2) / dim);
            if (j % 2 == 0)
                row[j / 2] = (float)sin(angle);
            else
                row[sentinel + j / 2] = (float)cos(angle);
        }
    }
}

static int load_weights(eng_marian *m, const eng_safetensors *st, eng_error *err)
{
    eng_wplan p = {0};
    int64_t D = m->d;
    int rc = ENG_OK;
    m->enc = calloc((size_t)m->enc_layers, sizeof *m->enc);
    m->dec = calloc((size_t)m->dec_layers, sizeof *m->dec);
    if (!m->enc || !m->dec)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    /* Names as saved by MarianMTModel (model. prefix) or MarianModel (none). */
    const char *pre = eng_st_find(st, "model.encoder.layers.0.fc1.weight") ? "model." : "";
    char enc_pre[32], dec_pre[32], name[160], alt[160];
    snprintf(enc_pre, sizeof enc_pre, "%sencoder", pre);
    snprintf(dec_pre, sizeof dec_pre, "%sdecoder", pre);
    /* embeddings: slots 0..5 filled by hand below */
    const int n_special = 6;
    eng_wplan_add(&p, &m->enc_emb, 0, 0, m->vocab, D, "encoder embeddings");
    if (!m->share)
        eng_wplan_add(&p, &m->dec_emb, 0, 0, m->dec_vocab, D, "decoder embeddings");
    else
        eng_wplan_add(&p, NULL, 0, 1, 0, 0, "(shared)");
    if (!m->tie)
        eng_wplan_add(&p, &m->lm, 0, 0, m->dec_vocab, D, "lm_head.weight");
    else
        eng_wplan_add(&p, NULL, 0, 1, 0, 0, "(tied)");
    eng_wplan_add(&p, &m->final_bias, 0, 1, m->dec_vocab, 0, "final_logits_bias");
    eng_wplan_add(&p, &m->enc_pos, 0, 1, m->max_pos, D, "%s.embed_positions.weight", enc_pre);
    eng_wplan_add(&p, &m->dec_pos, 0, 1, m->max_pos, D, "%s.embed_positions.weight", dec_pre);
    for (int l = 0; l < m->enc_layers; l++)
        plan_layer(&p, &m->enc[l], enc_pre, l, 0, D, m->enc_ffn);
    for (int l = 0; l < m->dec_layers; l++)
        plan_layer(&p, &m->dec[l], dec_pre, l, 1, D, m->dec_ffn);
    if (p.fail) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    /* Pass 1: every tensor present with its shape (and the computed ones bounded)
     * before the block is allocated or a sinusoid computed: a hostile config.json
     * cannot make us allocate or compute more than the file itself holds. */
    size_t file_floats = 0, derived_floats = 0;
    for (int i = 0; i < p.n; i++) {
        eng_wplan_entry *e = &p.e[i];
        const eng_st_tensor *t = NULL;
        e->t = NULL;
        if (i == 0) { /* encoder (or shared) embeddings */
            snprintf(name, sizeof name, "%sshared.weight", pre);
            snprintf(alt, sizeof alt, "%s.embed_tokens.weight", enc_pre);
            t = m->share ? find_any(st, name, alt, NULL) : eng_st_find(st, alt);
            snprintf(e->name, sizeof e->name, "%s", m->share ? name : alt);
        } else if (i == 1 && !m->share) {
            snprintf(alt, sizeof alt, "%s.embed_tokens.weight", dec_pre);
            t = eng_st_find(st, alt);
            snprintf(e->name, sizeof e->name, "%s", alt);
        } else if (i == 2 && !m->tie) {
            t = eng_st_find(st, "lm_head.weight");
        } else if (i < n_special && e->rows == 0) {
            continue; /* shared / tied: set after loading */
        } else {
            t = eng_st_find(st, e->name);
        }
        if (!t && e->optional) {
            derived_floats += (size_t)e->rows * (size_t)(e->cols ? e->cols : 1);
            continue;
        }
        char shape[64];
        if (e->cols)
            snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)e->rows, (long long)e->cols);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)e->rows);
        if (!t) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: tensor '%s' is missing (expected a float tensor "
                          "of shape %s)", st->path, e->name, shape);
            goto done;
        }
        /* final_logits_bias is stored [1, V] */
        int64_t r = t->ndim == 2 && e->cols == 0 && t->shape[0] == 1 ? t->shape[1] : t->shape[0];
        int ok = e->cols ? t->ndim == 2 && t->shape[0] == e->rows && t->shape[1] == e->cols
                         : (t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1)) && r == e->rows;
        if (!ok) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: tensor '%s' has %d dimensions [%lld, ...], "
                          "expected %s", st->path, t->name, t->ndim, (long long)t->shape[0],
                          shape);
            goto done;
        }
        if (t->dtype != ENG_ST_F32 && t->dtype != ENG_ST_F16 && t->dtype != ENG_ST_BF16 &&
            t->dtype != ENG_ST_F64) {
            rc = eng_fail(err, ENG_EUNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32, "
                          "F16 or BF16", st->path, t->name, t->dtype_name);
            goto done;
        }
        e->t = t;
        file_floats += (size_t)t->numel;
    }
    /* Computed tables (sinusoidal positions, zero biases) may not outweigh the
     * checkpoint: max_position_embeddings x d_model is what a config asks for. */
    if (derived_floats > file_floats && derived_floats > ((size_t)1 << 20)) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: the computed tensors (max_position_embeddings %d x "
                      "d_model %d) would be %zu floats, more than the %zu floats of the "
                      "checkpoint itself", st->path, m->max_pos, m->d, derived_floats, file_floats);
        goto done;
    }
    if ((rc = eng_weight_block_map(&p, &m->block, &m->block_floats, &m->tail_off,
                                   &m->block_mapped, err)))
        goto done;
    /* Pass 2: convert and compute. */
    for (int i = 0; i < p.n; i++) {
        eng_wplan_entry *e = &p.e[i];
        if (i < n_special && e->rows == 0)
            continue;
        if (!e->t) { /* optional and absent */
            float *dst = m->block + e->off;
            if (e->dst == &m->final_bias)
                memset(dst, 0, sizeof(float) * (size_t)e->rows);
            else
                sinusoid(dst, (int)e->rows, (int)D);
            *e->dst = dst;
            continue;
        }
        if (eng_st_to_f32(e->t, m->block + e->off) != ENG_OK) {
            rc = eng_fail(err, ENG_EUNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32, "
                          "F16 or BF16", st->path, e->t->name, e->t->dtype_name);
            goto done;
        }
        if (e->dst)
            *e->dst = m->block + e->off;
        if (e->lin)
            e->lin->off = e->off;
    }
    if (m->share)
        m->dec_emb = m->enc_emb;
    if (m->tie)
        m->lm = m->dec_emb;
    m->lmh = (eng_linear){.w = m->lm, .b = m->final_bias, .out = m->dec_vocab, .in = m->d,
                          .off = (size_t)(m->lm - m->block)};
done:
    free(p.e);
    return rc;
}

/* ------------------------------------------------------------- load */

int eng_marian_load(const char *dir, eng_marian **out, eng_error *err)
{
    char path[4096];
    int rc;
    *out = NULL;
    eng_marian *m = calloc(1, sizeof *m);
    if (!m)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    cJSON *cfg = eng_read_json(dir, "config.json", 0, &rc, err), *gen = NULL;
    eng_safetensors *st = NULL;
    if (!cfg)
        goto fail;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = parse_config(m, cfg, path, err)))
        goto fail;
    gen = eng_read_json(dir, "generation_config.json", 1, &rc, err);
    if (rc)
        goto fail;
    snprintf(path, sizeof path, "%s/%s", dir, gen ? "generation_config.json" : "config.json");
    if ((rc = parse_generation(m, gen ? gen : cfg, path, err)))
        goto fail;
    if ((rc = eng_marian_tok_load(dir, &m->tok, err)))
        goto fail;
    int tv = eng_marian_tok_vocab_size(m->tok);
    if (tv > m->vocab || tv > m->dec_vocab) {
        rc = eng_fail(err, ENG_EFORMAT, "%s/vocab.json has %d ids but the model's vocabulary "
                      "has %d", dir, tv, m->vocab < m->dec_vocab ? m->vocab : m->dec_vocab);
        goto fail;
    }
    if (eng_path_join(path, sizeof path, dir, "model.safetensors") || access(path, F_OK)) {
        rc = eng_fail(err, ENG_EIO, "%s/model.safetensors: missing (a folder with only "
                      "pytorch_model.bin must be converted to safetensors first)", dir);
        goto fail;
    }
    if ((rc = eng_st_open(path, &st, err)))
        goto fail;
    snprintf(m->dtype, sizeof m->dtype, "F32");
    for (int i = 0; i < st->count; i++)
        if (st->tensors[i].dtype == ENG_ST_F16 || st->tensors[i].dtype == ENG_ST_BF16) {
            snprintf(m->dtype, sizeof m->dtype, "%s",
                     st->tensors[i].dtype == ENG_ST_F16 ? "F16" : "BF16");
            break;
        }
    if ((rc = load_weights(m, st, err)))
        goto fail;
    eng_st_close(st);
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    *out = m;
    return ENG_OK;
fail:
    eng_st_close(st);
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    eng_marian_free(m);
    return rc;
}

#define MM_MAX_LIN(m) (7 * ((m)->enc_layers + (m)->dec_layers) + 1)

/* The projections of every layer (tail of the block), then the lm head. */
static int marian_linears(eng_marian *m, eng_linear **out)
{
    return eng_marian_linears(m, out, MM_MAX_LIN(m));
}

int eng_marian_linears(eng_marian *m, eng_linear **out, int max)
{
    int n = 0;
    for (int i = 0; i < m->enc_layers + m->dec_layers; i++) {
        mm_layer *L = i < m->enc_layers ? &m->enc[i] : &m->dec[i - m->enc_layers];
        eng_linear *ls[] = {&L->qkv, &L->o, &L->cq, &L->ckv, &L->co, &L->fc1, &L->fc2};
        for (int j = 0; j < 7; j++)
            if ((ls[j]->w || ls[j]->packed) && n < max)
                out[n++] = ls[j];
    }
    if (n < max)
        out[n++] = &m->lmh;
    return n;
}

/* Frees the packings (the handles do not need the backend that made them). */
static void unpack(eng_marian *m)
{
    if (!m->pack_ops || !m->enc || !m->dec)
        return;
    eng_linear **ls = malloc(sizeof *ls * (size_t)MM_MAX_LIN(m));
    if (!ls)
        abort(); /* a few pointers */
    int n = marian_linears(m, ls);
    for (int i = 0; i < n; i++)
        eng_nn_linear_unpack_free(ls[i]);
    free(ls);
    m->pack_ops = NULL;
    m->packed_bytes = 0;
}

int eng_marian_pack(eng_marian *m, eng_backend *be, int fmt, int drop)
{
    if (!m || !be || m->pack_ops || m->dropped)
        return ENG_EINVAL;
    eng_linear **ls = malloc(sizeof *ls * (size_t)MM_MAX_LIN(m));
    if (!ls)
        return ENG_ENOMEM;
    int n = marian_linears(m, ls), rc = ENG_OK;
    size_t bytes = 0, released = m->tail_off * sizeof(float);
    drop = drop && m->tail_off < m->block_floats;
    m->pack_ops = be->ops;
    /* every decoding step multiplies a few rows by all of the lm head: packed per call,
     * it cost a sixth of the translation time. The projections lie in the tail in this
     * order: each original is released as soon as it is packed (the peak holds one layer
     * twice, not the model); the lm head (last) is the embedding or lies before. */
    for (int i = 0; i < n && rc == ENG_OK; i++) {
        rc = eng_nn_linear_pack(ls[i], be, fmt, &bytes);
        if (ls[i] == &m->lmh)
            continue;
        if (rc == ENG_OK && drop)
            eng_weight_block_release(m->block, &released,
                                     ls[i]->off + (size_t)ls[i]->out * ls[i]->in);
    }
    if (drop && released > m->tail_off * sizeof(float)) {
        m->dropped = 1;
        for (int i = 0; i < n; i++)
            if (ls[i] != &m->lmh)
                ls[i]->w = NULL;
    }
    if (rc) {
        free(ls);
        return rc; /* the caller frees the model */
    }
    m->fmt = fmt;
    m->packed_bytes = bytes;
    if (drop) {
        eng_weight_block_release(m->block, &released, m->block_mapped / sizeof(float));
        m->block_mapped = m->tail_off * sizeof(float);
        m->dropped = 1;
        for (int i = 0; i < n; i++)
            if (ls[i] != &m->lmh)
                ls[i]->w = NULL;
    }
    free(ls);
    return ENG_OK;
}

int eng_marian_view_pack_host(eng_marian *v, eng_backend *be, int fmt, const float *host_block)
{
    if (!v || !be || !host_block || v->block || v->pack_ops)
        return ENG_EINVAL; /* a view (no block of its own), not packed yet */
    eng_linear **ls = malloc(sizeof *ls * (size_t)MM_MAX_LIN(v));
    if (!ls)
        return ENG_ENOMEM;
    int n = marian_linears(v, ls);
    size_t bytes = 0;
    int rc = eng_nn_linears_pack(ls, n, be, fmt, host_block, v->tail_off, &bytes);
    free(ls);
    if (rc)
        return rc;
    v->pack_ops = be->ops;
    v->fmt = fmt;
    v->packed_bytes = bytes;
    v->dropped = 1; /* the view holds the block up to tail_off only */
    return ENG_OK;
}

void eng_marian_view_unpack(eng_marian *v)
{
    if (v)
        unpack(v);
}

size_t eng_marian_packed_bytes(const eng_marian *m)
{
    return m ? m->packed_bytes : 0;
}

const char *eng_marian_kernel(const eng_marian *m)
{
    return m && m->enc_layers ? eng_nn_linear_kernel(&m->enc[0].qkv, NULL) : "gemm";
}

float *eng_marian_unpacked_block(const eng_marian *m)
{
    float *h = malloc(m->block_floats * sizeof(float));
    eng_linear **ls = malloc(sizeof *ls * (size_t)MM_MAX_LIN(m));
    if (!h || !ls) {
        free(h);
        free(ls);
        return NULL;
    }
    memcpy(h, m->block, (m->dropped ? m->tail_off : m->block_floats) * sizeof(float));
    int n = marian_linears((eng_marian *)m, ls);
    for (int i = 0; i < n; i++)
        if (ls[i]->packed && ls[i] != &m->lmh)
            eng_nn_linear_unpack(ls[i], h + ls[i]->off);
    free(ls);
    return h;
}

const float *eng_marian_block(const eng_marian *m, size_t *bytes)
{
    if (bytes)
        *bytes = m->block_floats * sizeof(float);
    return m->block;
}

int eng_marian_dropped(const eng_marian *m)
{
    return m->dropped;
}

const eng_backend_ops *eng_marian_pack_ops(const eng_marian *m)
{
    return m->pack_ops;
}

size_t eng_marian_kept_bytes(const eng_marian *m)
{
    return m->tail_off * sizeof(float);
}

#define REBASE(p) ((p) ? (const float *)base + ((p) - m->block) : NULL)

static void view_linear(const eng_marian *m, const void *base, int same, eng_linear *V,
                        const eng_linear *L)
{
    *V = *L;
    V->b = REBASE(L->b);
    if (same)
        return; /* packings shared; w NULL when dropped */
    V->w = L->w || L->packed ? (const float *)base + L->off : NULL;
    V->packed = NULL;
    V->pack_ops = NULL;
    V->fmt = ENG_WFMT_F32;
}

static void view_layer(const eng_marian *m, const void *base, int same, const mm_layer *L,
                       mm_layer *V)
{
    *V = *L;
    view_linear(m, base, same, &V->qkv, &L->qkv);
    view_linear(m, base, same, &V->o, &L->o);
    V->ln1_g = REBASE(L->ln1_g), V->ln1_b = REBASE(L->ln1_b);
    view_linear(m, base, same, &V->cq, &L->cq);
    view_linear(m, base, same, &V->ckv, &L->ckv);
    view_linear(m, base, same, &V->co, &L->co);
    V->lnc_g = REBASE(L->lnc_g), V->lnc_b = REBASE(L->lnc_b);
    view_linear(m, base, same, &V->fc1, &L->fc1);
    view_linear(m, base, same, &V->fc2, &L->fc2);
    V->ln2_g = REBASE(L->ln2_g), V->ln2_b = REBASE(L->ln2_b);
}

eng_marian *eng_marian_view_new(const eng_marian *m, const void *base)
{
    int same = base == (const void *)m->block;
    eng_marian *v = malloc(sizeof *v);
    if (!v)
        return NULL;
    *v = *m;
    v->enc = malloc(sizeof *v->enc * (size_t)(m->enc_layers ? m->enc_layers : 1));
    v->dec = malloc(sizeof *v->dec * (size_t)(m->dec_layers ? m->dec_layers : 1));
    if (!v->enc || !v->dec) {
        free(v->enc);
        free(v->dec);
        free(v);
        return NULL;
    }
    for (int l = 0; l < m->enc_layers; l++)
        view_layer(m, base, same, &m->enc[l], &v->enc[l]);
    for (int l = 0; l < m->dec_layers; l++)
        view_layer(m, base, same, &m->dec[l], &v->dec[l]);
    v->enc_emb = REBASE(m->enc_emb), v->dec_emb = REBASE(m->dec_emb), v->lm = REBASE(m->lm);
    v->final_bias = REBASE(m->final_bias);
    v->enc_pos = REBASE(m->enc_pos), v->dec_pos = REBASE(m->dec_pos);
    view_linear(m, base, same, &v->lmh, &m->lmh);
    v->block = NULL;
    if (!same) {
        v->pack_ops = NULL;
        v->packed_bytes = 0;
        v->dropped = 0;
    }
    return v;
}

#undef REBASE

void eng_marian_view_free(eng_marian *v)
{
    if (!v)
        return;
    free(v->enc);
    free(v->dec);
    free(v);
}

void eng_marian_free(eng_marian *m)
{
    if (!m)
        return;
    unpack(m);
    eng_marian_tok_free(m->tok);
    if (m->block)
        munmap(m->block, m->block_mapped);
    free(m->enc);
    free(m->dec);
    free(m);
}

void eng_marian_fill_info(const eng_marian *m, eng_model_info *i)
{
    i->architecture = "MarianMTModel";
    i->model_type = "marian";
    i->task = ENG_TASK_TRANSLATE;
    i->hidden = m->d;
    i->layers = m->enc_layers;
    i->heads = m->enc_heads;
    i->intermediate = m->enc_ffn;
    i->vocab = m->vocab;
    i->max_positions = m->max_pos;
    i->max_seq_len = eng_marian_max_source(m);
    i->num_labels = 0;
    i->multi_label = 0;
    i->labels = NULL;
    i->normalize = 0;
    i->file_dtype = m->dtype;
}

const eng_marian_tok *eng_marian_tokenizer(const eng_marian *m) { return m->tok; }
const eng_search_opts *eng_marian_generation(const eng_marian *m) { return &m->gen; }
int eng_marian_max_positions(const eng_marian *m) { return m->max_pos; }
int eng_marian_d_model(const eng_marian *m) { return m->d; }
int eng_marian_vocab(const eng_marian *m) { return m->dec_vocab; }

int eng_marian_max_source(const eng_marian *m)
{
    int t = eng_marian_tok_model_max_length(m->tok);
    return t < m->max_pos ? t : m->max_pos;
}

/* ------------------------------------------------------------- compute */

/* Backend allocations of one translation call, freed together. */
typedef struct mm_mem {
    eng_backend *be;
    void *p[256];
    int n, fail;
} mm_mem;

static void *mem_alloc(mm_mem *mm, size_t bytes)
{
    if (mm->n == 256) {
        mm->fail = 1;
        return NULL;
    }
    void *p = mm->be->ops->alloc(mm->be, bytes ? bytes : 64);
    if (!p)
        mm->fail = 1;
    else
        mm->p[mm->n++] = p;
    return p;
}

static void mem_release(mm_mem *mm, void *p)
{
    for (int i = 0; i < mm->n; i++)
        if (mm->p[i] == p) {
            mm->be->ops->free(mm->be, p);
            mm->p[i] = mm->p[--mm->n];
            return;
        }
}

static void mem_free_all(mm_mem *mm)
{
    for (int i = 0; i < mm->n; i++)
        mm->be->ops->free(mm->be, mm->p[i]);
    mm->n = 0;
}

/* y[T, out] = act(x[T, in] W^T + b) (nn/linear.h). */
static void linear(eng_backend *be, float *y, const float *x, const eng_linear *l, int T,
                   eng_act act)
{
    if (eng_nn_linear_forward(l, be, y, x, T, act))
        abort(); /* out of memory for a few MB of quantized rows */
}

/* h = act(x fc1^T + b): fused into the linear layer but for SiLU. */
static void ffn_in(const eng_marian *m, eng_backend *be, float *h, const float *x,
                   const eng_linear *l, int T)
{
    switch (m->act) {
    case ACT_SILU:
        eng_nn_linear_matmul(l, be, h, x, T);
        be->ops->gen->bias_silu(be, h, l->b, T, l->out);
        break;
    case ACT_GELU: linear(be, h, x, l, T, ENG_ACT_GELU); break;
    case ACT_GELU_TANH: linear(be, h, x, l, T, ENG_ACT_GELU_TANH); break;
    default: linear(be, h, x, l, T, ENG_ACT_RELU); break;
    }
}

static float embed_scale(const eng_marian *m)
{
    return m->scale_embedding ? (float)sqrt((double)m->d) : 1.0f; /* math.sqrt, then float */
}

/* One translation call: encoder output, cross K/V, KV cache, step buffers. */
typedef struct mm_run {
    const eng_marian *m;
    eng_backend *be;
    mm_mem mem;
    int nsent, T;
    int32_t *src_off, *src_len; /* host */
    float *enc;                 /* [T, D] */
    float **ckv;                /* per decoder layer [T, 2D]: k | v */
    /* self-attention cache: per layer [slots * cap, D] */
    int slots, cap, max_len;
    float **kc, **vc;
    /* step (max slots rows) */
    float *x, *qkv, *ctx, *tmp, *logits;
    int32_t *d_ids, *d_pos, *d_qoff, *d_kvs, *d_kvl, *d_ss, *d_sl, *d_rows, *d_dst, *d_src;
    int32_t *h_buf; /* host staging, 8 * slots + 8 */
} mm_run;

static int fail_backend(mm_run *r, eng_error *err)
{
    return eng_fail(err, r->mem.fail ? ENG_ENOMEM : ENG_EBACKEND, r->mem.fail
                    ? "out of memory for the translation batch" : "%s backend failed",
                    r->be->ops->name);
}

/* Validate sources and run the encoder over all of them, packed. */
static int run_encoder(mm_run *r, const eng_encoding *const *src, int n, eng_error *err)
{
    const eng_marian *m = r->m;
    eng_backend *be = r->be;
    const eng_backend_ops *o = be->ops;
    int D = m->d, F = m->enc_ffn, hd = D / m->enc_heads;
    long long T = 0;
    r->nsent = n;
    r->src_off = malloc(sizeof(int32_t) * ((size_t)n + 1));
    r->src_len = malloc(sizeof(int32_t) * ((size_t)n + 1));
    if (!r->src_off || !r->src_len)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!src[i] || src[i]->n <= 0)
            return eng_fail(err, ENG_EINVAL, "source %d has no tokens", i);
        if (src[i]->n > m->max_pos)
            return eng_fail(err, ENG_ETOOLONG, "source %d has %d tokens; the model accepts at "
                            "most %d", i, src[i]->n, m->max_pos);
        for (int t = 0; t < src[i]->n; t++)
            if (src[i]->ids[t] < 0 || src[i]->ids[t] >= m->vocab)
                return eng_fail(err, ENG_EINVAL, "source %d: token id %d outside the vocabulary "
                                "(%d)", i, src[i]->ids[t], m->vocab);
        r->src_off[i] = (int32_t)T;
        r->src_len[i] = src[i]->n;
        T += src[i]->n;
    }
    if (T > (1 << 24))
        return eng_fail(err, ENG_ETOOLONG, "batch of %lld source tokens is too large", T);
    r->T = (int)T;
    size_t Tz = (size_t)T;
    int32_t *ids = mem_alloc(&r->mem, sizeof(int32_t) * Tz);
    int32_t *pos = mem_alloc(&r->mem, sizeof(int32_t) * Tz);
    int32_t *off = mem_alloc(&r->mem, sizeof(int32_t) * ((size_t)n + 1));
    r->enc = mem_alloc(&r->mem, sizeof(float) * Tz * D);
    float *qkv = mem_alloc(&r->mem, sizeof(float) * Tz * 3 * D);
    float *ctx = mem_alloc(&r->mem, sizeof(float) * Tz * D);
    float *tmp = mem_alloc(&r->mem, sizeof(float) * Tz * (size_t)(F > 2 * D ? F : 2 * D));
    r->ckv = calloc((size_t)m->dec_layers, sizeof *r->ckv);
    if (r->mem.fail || !r->ckv)
        return fail_backend(r, err);
    for (int l = 0; l < m->dec_layers; l++)
        if (!(r->ckv[l] = mem_alloc(&r->mem, sizeof(float) * Tz * 2 * D)))
            return fail_backend(r, err);
    int32_t *h_ids = malloc(sizeof(int32_t) * Tz * 2), *h_pos = h_ids + Tz;
    if (!h_ids)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        for (int t = 0; t < src[i]->n; t++) {
            h_ids[r->src_off[i] + t] = src[i]->ids[t];
            h_pos[r->src_off[i] + t] = t;
        }
    r->src_off[n] = (int32_t)T;
    o->upload(be, ids, h_ids, sizeof(int32_t) * Tz);
    o->upload(be, pos, h_pos, sizeof(int32_t) * Tz);
    o->upload(be, off, r->src_off, sizeof(int32_t) * ((size_t)n + 1));
    free(h_ids);
    float *x = r->enc;
    o->gen->embed_scaled(be, x, m->enc_emb, embed_scale(m), m->enc_pos, ids, pos, (int)T, D);
    for (int l = 0; l < m->enc_layers; l++) {
        const mm_layer *L = &m->enc[l];
        linear(be, qkv, x, &L->qkv, (int)T, ENG_ACT_NONE);
        o->core->attention(be, ctx, D, qkv, 3 * D, qkv + D, 3 * D, qkv + 2 * D, 3 * D, off, off, n,
                     m->enc_heads, hd, 1.0f / sqrtf((float)hd), 0);
        linear(be, tmp, ctx, &L->o, (int)T, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, tmp, x, L->ln1_g, L->ln1_b, (int)T, D, m->ln_eps);
        ffn_in(m, be, tmp, x, &L->fc1, (int)T);
        linear(be, ctx, tmp, &L->fc2, (int)T, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, ctx, x, L->ln2_g, L->ln2_b, (int)T, D, m->ln_eps);
    }
    /* cross-attention keys and values, once per source */
    for (int l = 0; l < m->dec_layers; l++)
        linear(be, r->ckv[l], x, &m->dec[l].ckv, (int)T, ENG_ACT_NONE);
    mem_release(&r->mem, qkv);
    mem_release(&r->mem, ctx);
    mem_release(&r->mem, tmp);
    mem_release(&r->mem, ids);
    mem_release(&r->mem, pos);
    mem_release(&r->mem, off);
    return o->synchronize(be) ? fail_backend(r, err) : ENG_OK;
}

static int run_decoder_init(mm_run *r, int slots, int max_len, eng_error *err)
{
    const eng_marian *m = r->m;
    int D = m->d, F = m->dec_ffn;
    size_t S = (size_t)slots;
    r->slots = slots;
    r->max_len = max_len;
    r->cap = max_len < 32 ? max_len : 32; /* grows by doubling */
    r->kc = calloc((size_t)m->dec_layers, sizeof *r->kc);
    r->vc = calloc((size_t)m->dec_layers, sizeof *r->vc);
    r->h_buf = malloc(sizeof(int32_t) * (8 * S + 8));
    if (!r->kc || !r->vc || !r->h_buf)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int l = 0; l < m->dec_layers; l++) {
        r->kc[l] = mem_alloc(&r->mem, sizeof(float) * S * r->cap * D);
        r->vc[l] = mem_alloc(&r->mem, sizeof(float) * S * r->cap * D);
    }
    r->x = mem_alloc(&r->mem, sizeof(float) * S * D);
    r->qkv = mem_alloc(&r->mem, sizeof(float) * S * 3 * D);
    r->ctx = mem_alloc(&r->mem, sizeof(float) * S * D);
    r->tmp = mem_alloc(&r->mem, sizeof(float) * S * (size_t)(F > D ? F : D));
    r->logits = mem_alloc(&r->mem, sizeof(float) * S * m->dec_vocab);
    int32_t **idx[] = {&r->d_ids, &r->d_pos, &r->d_kvs, &r->d_kvl, &r->d_ss, &r->d_sl,
                       &r->d_rows, &r->d_dst, &r->d_src};
    for (size_t i = 0; i < sizeof idx / sizeof *idx; i++)
        *idx[i] = mem_alloc(&r->mem, sizeof(int32_t) * S);
    r->d_qoff = mem_alloc(&r->mem, sizeof(int32_t) * (S + 1));
    return r->mem.fail ? fail_backend(r, err) : ENG_OK;
}

/* Double the cache capacity (at most max_len), keeping the first `rows` positions. */
static int grow_cache(mm_run *r, int need, int rows, eng_error *err)
{
    const eng_marian *m = r->m;
    int cap = r->cap;
    while (cap < need)
        cap *= 2;
    cap = cap < r->max_len ? cap : r->max_len;
    if (cap < need)
        cap = need;
    size_t D = (size_t)m->d;
    for (int l = 0; l < m->dec_layers; l++) {
        float **c[2] = {&r->kc[l], &r->vc[l]};
        for (int k = 0; k < 2; k++) {
            float *nc = mem_alloc(&r->mem, sizeof(float) * (size_t)r->slots * cap * D);
            if (!nc)
                return fail_backend(r, err);
            r->be->ops->gen->copy_rows(r->be, nc, (int64_t)cap * D, NULL, *c[k],
                                  (int64_t)r->cap * D, NULL, r->slots, (int64_t)rows * D);
            mem_release(&r->mem, *c[k]);
            *c[k] = nc;
        }
    }
    r->cap = cap;
    return ENG_OK;
}

static float *run_step(void *user, int nh, const int32_t *tok, const int32_t *sent,
                       const int32_t *slot, int pos, eng_error *err)
{
    mm_run *r = user;
    const eng_marian *m = r->m;
    eng_backend *be = r->be;
    const eng_backend_ops *o = be->ops;
    int D = m->d, hd = D / m->dec_heads;
    if (pos >= m->max_pos) {
        eng_fail(err, ENG_ETOOLONG, "decoder position %d beyond max_position_embeddings %d", pos,
                 m->max_pos);
        return NULL;
    }
    if (pos + 1 > r->cap && grow_cache(r, pos + 1, pos, err))
        return NULL;
    for (int i = 0; i < nh; i++)
        if (tok[i] < 0 || tok[i] >= m->dec_vocab) {
            eng_fail(err, ENG_EINVAL, "decoder token %d outside the vocabulary", tok[i]);
            return NULL;
        }
    /* index arrays, staged on the host and uploaded */
    int32_t *h = r->h_buf, S = r->slots;
    int32_t *h_pos = h, *h_kvs = h + S, *h_kvl = h + 2 * S, *h_ss = h + 3 * S, *h_sl = h + 4 * S,
            *h_rows = h + 5 * S, *h_qoff = h + 6 * S;
    for (int i = 0; i < nh; i++) {
        h_pos[i] = pos;
        h_kvs[i] = slot[i] * r->cap;
        h_kvl[i] = pos + 1;
        h_ss[i] = r->src_off[sent[i]];
        h_sl[i] = r->src_len[sent[i]];
        h_rows[i] = slot[i] * r->cap + pos;
        h_qoff[i] = i;
    }
    h_qoff[nh] = nh;
    size_t b = sizeof(int32_t) * (size_t)nh;
    o->upload(be, r->d_ids, tok, b);
    o->upload(be, r->d_pos, h_pos, b);
    o->upload(be, r->d_kvs, h_kvs, b);
    o->upload(be, r->d_kvl, h_kvl, b);
    o->upload(be, r->d_ss, h_ss, b);
    o->upload(be, r->d_sl, h_sl, b);
    o->upload(be, r->d_rows, h_rows, b);
    o->upload(be, r->d_qoff, h_qoff, b + sizeof(int32_t));
    float *x = r->x, *qkv = r->qkv, *ctx = r->ctx, *tmp = r->tmp;
    float scale = 1.0f / sqrtf((float)hd);
    o->gen->embed_scaled(be, x, m->dec_emb, embed_scale(m), m->dec_pos, r->d_ids, r->d_pos, nh, D);
    for (int l = 0; l < m->dec_layers; l++) {
        const mm_layer *L = &m->dec[l];
        linear(be, qkv, x, &L->qkv, nh, ENG_ACT_NONE);
        o->gen->copy_rows(be, r->kc[l], D, r->d_rows, qkv + D, 3 * D, NULL, nh, D);
        o->gen->copy_rows(be, r->vc[l], D, r->d_rows, qkv + 2 * D, 3 * D, NULL, nh, D);
        o->gen->attention_kv(be, ctx, D, qkv, 3 * D, r->kc[l], D, r->vc[l], D, r->d_qoff, r->d_kvs,
                        r->d_kvl, nh, m->dec_heads, hd, scale, 0);
        linear(be, tmp, ctx, &L->o, nh, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, tmp, x, L->ln1_g, L->ln1_b, nh, D, m->ln_eps);
        linear(be, qkv, x, &L->cq, nh, ENG_ACT_NONE);
        o->gen->attention_kv(be, ctx, D, qkv, D, r->ckv[l], 2 * D, r->ckv[l] + D, 2 * D, r->d_qoff,
                        r->d_ss, r->d_sl, nh, m->dec_heads, hd, scale, 0);
        linear(be, tmp, ctx, &L->co, nh, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, tmp, x, L->lnc_g, L->lnc_b, nh, D, m->ln_eps);
        ffn_in(m, be, tmp, x, &L->fc1, nh);
        linear(be, ctx, tmp, &L->fc2, nh, ENG_ACT_NONE);
        o->core->add_layernorm(be, x, ctx, x, L->ln2_g, L->ln2_b, nh, D, m->ln_eps);
    }
    linear(be, r->logits, x, &m->lmh, nh, ENG_ACT_NONE);
    return r->logits;
}

static int run_copy_slots(void *user, int n, const int32_t *dst, const int32_t *src, int rows,
                          eng_error *err)
{
    mm_run *r = user;
    eng_backend *be = r->be;
    size_t D = (size_t)r->m->d;
    (void)err;
    be->ops->upload(be, r->d_dst, dst, sizeof(int32_t) * (size_t)n);
    be->ops->upload(be, r->d_src, src, sizeof(int32_t) * (size_t)n);
    for (int l = 0; l < r->m->dec_layers; l++) {
        be->ops->gen->copy_rows(be, r->kc[l], (int64_t)r->cap * D, r->d_dst, r->kc[l],
                           (int64_t)r->cap * D, r->d_src, n, (int64_t)rows * D);
        be->ops->gen->copy_rows(be, r->vc[l], (int64_t)r->cap * D, r->d_dst, r->vc[l],
                           (int64_t)r->cap * D, r->d_src, n, (int64_t)rows * D);
    }
    return ENG_OK;
}

static void run_close(mm_run *r)
{
    mem_free_all(&r->mem);
    free(r->src_off);
    free(r->src_len);
    free(r->ckv);
    free(r->kc);
    free(r->vc);
    free(r->h_buf);
}

int eng_marian_encode(const eng_marian *m, eng_backend *be, const eng_encoding *const *src, int n,
                      float *out, eng_error *err)
{
    mm_run r = {.m = m, .be = be, .mem = {.be = be}};
    int rc = run_encoder(&r, src, n, err);
    if (!rc && (be->ops->download(be, out, r.enc, sizeof(float) * (size_t)r.T * m->d) ||
                be->ops->synchronize(be)))
        rc = fail_backend(&r, err);
    run_close(&r);
    return rc;
}

int eng_marian_logits(const eng_marian *m, eng_backend *be, const eng_encoding *src,
                      const int32_t *prefix, int n_prefix, float *out, eng_error *err)
{
    mm_run r = {.m = m, .be = be, .mem = {.be = be}};
    int rc;
    if (n_prefix < 1 || n_prefix > m->max_pos)
        return eng_fail(err, ENG_EINVAL, "the decoder prefix must have 1 to %d tokens",
                        m->max_pos);
    if ((rc = run_encoder(&r, &src, 1, err)) || (rc = run_decoder_init(&r, 1, n_prefix, err)))
        goto done;
    int32_t zero = 0;
    float *logits = NULL;
    for (int p = 0; p < n_prefix; p++)
        if (!(logits = run_step(&r, 1, &prefix[p], &zero, &zero, p, err))) {
            rc = err && err->code ? err->code : ENG_EBACKEND;
            goto done;
        }
    if (be->ops->download(be, out, logits, sizeof(float) * (size_t)m->dec_vocab) ||
        be->ops->synchronize(be))
        rc = fail_backend(&r, err);
done:
    run_close(&r);
    return rc;
}

int eng_marian_generate(const eng_marian *m, eng_backend *be, const eng_encoding *const *src,
                        int n, const eng_search_opts *o, eng_search_result *out, eng_error *err)
{
    mm_run r = {.m = m, .be = be, .mem = {.be = be}};
    int rc;
    if (n <= 0)
        return ENG_OK;
    if ((rc = run_encoder(&r, src, n, err)) ||
        (rc = run_decoder_init(&r, eng_search_slots(n, o), o->max_length, err)))
        goto done;
    eng_decoder d = {.user = &r, .vocab = m->dec_vocab, .step = run_step,
                     .copy_slots = run_copy_slots};
    rc = eng_search(be, &d, n, o, out, err);
done:
    run_close(&r);
    return rc;
}
