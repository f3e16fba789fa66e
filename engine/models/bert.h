/* bert.h - BERT-family encoder (BERT, DistilBERT) and its task heads, written
 * against the backend interface. Activations are packed (see backend.h). */
#ifndef NLPD_BERT_H
#define NLPD_BERT_H

#include "core/arena.h"
#include "backend/backend.h"
#include "core/model_config.h"
#include "core/safetensors.h"

typedef struct eng_bert_layer {
    const float *qkv_w, *qkv_b; /* fused [3H, H], [3H]: query | key | value */
    const float *ao_w, *ao_b;   /* attention output [H, H] */
    const float *ln1_g, *ln1_b;
    const float *in_w, *in_b;   /* [I, H] */
    const float *out_w, *out_b; /* [H, I] */
    const float *ln2_g, *ln2_b;
    /* pre-packed qkv_w, ao_w, in_w, out_w (eng_bert_pack), or NULL: plain gemm */
    void *qkv_p, *ao_p, *in_p, *out_p;
} eng_bert_layer;

typedef struct eng_bert {
    const eng_model_config *cfg;
    float *block;      /* every weight, fp32, one allocation */
    size_t block_floats;
    const float *word, *pos, *type, *emb_ln_g, *emb_ln_b;
    eng_bert_layer *layers;
    const float *pool_w, *pool_b; /* BERT classification pooler (tanh) */
    const float *pre_w, *pre_b;   /* DistilBERT pre_classifier (relu) */
    const float *cls_w, *cls_b;   /* classifier [num_labels, H] */
    const float *qa_w, *qa_b;     /* qa_outputs [2, H] */
    /* Pre-packed weights (inference model versions only: train.c mutates the block),
     * owned by the model and freed with it; usable by backends with these ops. */
    const eng_backend_ops *pack_ops;
    void *pool_p, *pre_p;
    size_t packed_bytes; /* extra memory of the packings, for reports */
} eng_bert;

/* Load the weights the config's architecture needs from st into one fp32 block.
 * Missing, misshapen or non-float tensors are refused, naming the tensor. */
int eng_bert_load(eng_bert *b, const eng_model_config *cfg, const eng_safetensors *st,
                  eng_error *err);
void eng_bert_free(eng_bert *b);

/* A view of host model b for a backend: the same struct with every weight pointer
 * moved into `base`, the backend copy of b->block (weights_upload). When base is
 * b->block (zero-copy) the packings are shared, else dropped. The view owns only its
 * layer array: eng_bert_view_free. ENG_ENOMEM on failure. */
int eng_bert_view(const eng_bert *b, const void *base, eng_bert *out);
void eng_bert_view_free(eng_bert *v);

/* Pre-pack the linear weights with be's pack_weight (when it has one) so that
 * forward passes on backends of the same kind skip per-call packing; a weight the
 * backend declines stays on plain gemm. Results are bitwise those of gemm. The
 * weights must not change afterwards; the packings are freed by eng_bert_free. */
void eng_bert_pack(eng_bert *b, eng_backend *be);

/* A batch laid out for the backend: n sequences, packed. seq_off, ids, pos and types
 * are backend memory (arena); host_seq_off is the host copy of seq_off (malloc'd,
 * eng_bert_batch_close). */
typedef struct eng_bert_batch {
    int n, ntok;
    int32_t *seq_off; /* n + 1 */
    int32_t *ids, *pos, *types;
    int32_t *host_seq_off;
} eng_bert_batch;

/* Validate encodings against the model (lengths, id ranges), reserve the arena
 * for the forward pass plus extra_bytes for the head, and lay out the batch: built
 * on the host and uploaded with be (ENG_EBACKEND if the upload fails). On success
 * the batch holds host memory: eng_bert_batch_close. */
int eng_bert_prepare(const eng_bert *b, eng_backend *be, eng_arena *ar,
                     const eng_encoding *const *enc, int n, size_t extra_bytes,
                     eng_bert_batch *batch, eng_error *err);
void eng_bert_batch_close(eng_bert_batch *batch);

/* Encoder forward: returns the last hidden state [ntok, H] (arena memory). */
float *eng_bert_encode(const eng_bert *b, eng_backend *be, eng_arena *ar,
                       const eng_bert_batch *batch);

/* Heads over the encoder output (results in arena memory). */
float *eng_bert_classify(const eng_bert *b, eng_backend *be, eng_arena *ar,
                         const eng_bert_batch *batch, const float *hidden); /* [n, L] */
float *eng_bert_qa(const eng_bert *b, eng_backend *be, eng_arena *ar,
                   const eng_bert_batch *batch, const float *hidden);       /* [ntok, 2] */
float *eng_bert_pool(const eng_bert *b, eng_backend *be, eng_arena *ar,
                     const eng_bert_batch *batch, const float *hidden, int normalize); /* [n, H] */

/* Arena bytes the heads need for a batch (added to the reservation). */
size_t eng_bert_head_bytes(const eng_bert *b, int n, int ntok);

#endif
