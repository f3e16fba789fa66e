/* marian.h - Marian (OPUS-MT) encoder-decoder translation models, as
 * transformers' MarianMTModel, written against the backend interface.
 *
 * Architecture (post-norm Transformer): inputs = embed(ids) * embed_scale
 * (sqrt(d_model) when scale_embedding) + sinusoidal positions (sin in the first
 * half of each vector, cos in the second: MarianSinusoidalPositionalEmbedding);
 * each layer: x = LN(x + SelfAttn(x)); decoder: x = LN(x + CrossAttn(x, enc));
 * x = LN(x + fc2(act(fc1(x)))); logits = x . lm_head^T + final_logits_bias.
 * Embeddings are shared by encoder and decoder when share_encoder_decoder_
 * embeddings, and lm_head is the decoder's embedding when tie_word_embeddings.
 * Cross-attention keys/values are computed once per source; the decoder's self-
 * attention keeps a KV cache per hypothesis (slots assigned by beam.c). */
#ifndef NLPD_MARIAN_H
#define NLPD_MARIAN_H

#include <stdint.h>

#include "backend/backend.h"
#include "generate/beam.h"
#include "nn/linear.h"
#include "tokenizers/marian_tok.h"
#include "nlpd_engine.h"

typedef struct eng_marian eng_marian;

/* 1 if dir/config.json names a MarianMTModel (architectures or model_type "marian"). */
int eng_marian_is_folder(const char *dir);

/* Load config.json, generation_config.json (else the generation keys of
 * config.json, as transformers does), the tokenizer and the weights (F32/F16/BF16,
 * converted to one fp32 block). Unsupported options are refused, naming the key. */
int eng_marian_load(const char *dir, eng_marian **out, eng_error *err);
void eng_marian_free(eng_marian *m);

/* Pack every projection and the lm head with be in format fmt (eng_wfmt, nn/linear.h)
 * so that forward passes on backends of be's kind use them; drop: then release the
 * projections' fp32 originals (the lm head stays: it is the embedding or lies before).
 * The weights must not change afterwards; freed by eng_marian_free. ENG_OK or an error
 * (nothing packed). eng_marian_packed_bytes: the packings' memory; eng_marian_kernel:
 * the kernel the default CPU backend runs them on. */
int eng_marian_pack(eng_marian *m, eng_backend *be, int fmt, int drop);
size_t eng_marian_packed_bytes(const eng_marian *m);
const char *eng_marian_kernel(const eng_marian *m);
/* 1 once the projections live only in their packings. */
int eng_marian_dropped(const eng_marian *m);
/* The kind of backend the packings are for (NULL: none); the bytes of the block kept. */
const eng_backend_ops *eng_marian_pack_ops(const eng_marian *m);
size_t eng_marian_kept_bytes(const eng_marian *m);
/* A host copy of the whole block with the packed projections as their packings hold them
 * (malloc'd; NULL when out of memory): for backends of another kind after a drop. */
float *eng_marian_unpacked_block(const eng_marian *m);

/* The linear layers a pack covers (n of them, at most max) into out: every layer's
 * projections, then the lm head (tests). */
int eng_marian_linears(eng_marian *m, eng_linear **out, int max);

/* Fills the model-info fields (architecture, task ENG_TASK_TRANSLATE, sizes). */
void eng_marian_fill_info(const eng_marian *m, eng_model_info *info);
const eng_marian_tok *eng_marian_tokenizer(const eng_marian *m);
/* The folder's generation settings (generation_config.json). */
const eng_search_opts *eng_marian_generation(const eng_marian *m);
/* Longest source accepted, in tokens with </s> (tokenizer and position limits). */
int eng_marian_max_source(const eng_marian *m);
int eng_marian_max_positions(const eng_marian *m);
int eng_marian_d_model(const eng_marian *m);
int eng_marian_vocab(const eng_marian *m); /* target vocabulary (logits per step) */

/* Encoder last hidden states of n sources, packed: out[(sum of src[i]->n) * d_model]. */
int eng_marian_encode(const eng_marian *m, eng_backend *be, const eng_encoding *const *src, int n,
                      float *out, eng_error *err);

/* Teacher forcing: the logits [vocab] at the last position after feeding
 * prefix[0..n_prefix) (prefix[0] = decoder start) with source src, one token at a
 * time through the KV cache. */
int eng_marian_logits(const eng_marian *m, eng_backend *be, const eng_encoding *src,
                      const int32_t *prefix, int n_prefix, float *out, eng_error *err);

/* Translate n sources (ids with </s>) with the search settings o: out[n]. */
int eng_marian_generate(const eng_marian *m, eng_backend *be, const eng_encoding *const *src,
                        int n, const eng_search_opts *o, eng_search_result *out,
                        eng_error *err);

/* The host weight block (and its size in bytes in *bytes when not NULL). */
const float *eng_marian_block(const eng_marian *m, size_t *bytes);

/* A view of host model m for a backend: a copy whose weight pointers point into base,
 * the backend copy of the block (weights_upload); it shares m's tokenizer and settings
 * and must not outlive m. Packings are kept when base is m's block (zero-copy), else
 * dropped. NULL when out of memory. eng_marian_view_free frees only the view. */
eng_marian *eng_marian_view_new(const eng_marian *m, const void *base);
void eng_marian_view_free(eng_marian *v);

/* For a view whose backend copy holds only the block's first eng_marian_kept_bytes (not
 * the projections' fp32 weights): packs every projection and the lm head in format fmt
 * with be (eng_nn_linears_pack), the projections uploaded from host_block (m's complete
 * host block) through one staging buffer and not kept, the lm head from the view's own
 * copy (it lies before the tail: the embedding, or lm_head.weight). ENG_OK, or an error
 * with nothing packed. eng_marian_view_unpack frees them (before eng_marian_view_free). */
int eng_marian_view_pack_host(eng_marian *v, eng_backend *be, int fmt, const float *host_block);
void eng_marian_view_unpack(eng_marian *v);

/* model.c's accessors for translate.c (internal). */
eng_marian *eng_model_marian(const eng_model *m); /* NULL unless a translation model */
/* The translation model's weights on be's kind and device (uploaded on first use and
 * kept with the model version); NULL with err set on failure. */
const eng_marian *eng_model_marian_on(eng_model *m, eng_backend *be, eng_error *err);
eng_backend *eng_ctx_backend(eng_ctx *ctx);

#endif
