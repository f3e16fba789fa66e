/* bert.h - BERT-family encoder (BERT, DistilBERT) and its task heads, written
 * against the backend interface. Activations are packed (see backend.h). */
#ifndef NLPD_BERT_H
#define NLPD_BERT_H

#include "core/arena.h"
#include "backend/backend.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "nn/linear.h"

typedef struct eng_bert_layer {
    eng_linear qkv;             /* fused [3H, H], [3H]: query | key | value */
    eng_linear ao;              /* attention output [H, H] */
    const float *ln1_g, *ln1_b;
    eng_linear in;              /* [I, H] */
    eng_linear out;             /* [H, I] */
    const float *ln2_g, *ln2_b;
} eng_bert_layer;

typedef struct eng_bert {
    const eng_model_config *cfg;
    float *block;      /* every weight, fp32, one mapping (the packable linear weights last) */
    size_t block_floats; /* floats of the block as laid out (all of it, dropped or not) */
    size_t block_mapped; /* bytes mapped at block */
    size_t tail_off;   /* floats: the packable linear weights start here (page-aligned) */
    int dropped;       /* the tail was released: those layers live only in their packings */
    const float *word, *pos, *type, *emb_ln_g, *emb_ln_b;
    eng_bert_layer *layers;
    eng_linear pool;   /* BERT classification pooler (tanh) */
    eng_linear pre;    /* DistilBERT pre_classifier (relu) */
    eng_linear cls;    /* classifier [num_labels, H] */
    eng_linear qa;     /* qa_outputs [2, H] */
    /* Packings (inference model versions only: train.c mutates the block) are owned by
     * the layers and freed with the model; usable by backends of pack_ops' kind. */
    const eng_backend_ops *pack_ops;
    int fmt;             /* eng_wfmt of the packings */
    size_t packed_bytes; /* memory of the packings, for reports */
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

/* Pack the encoder's and the [CLS] heads' square linear layers with be in format fmt
 * (eng_wfmt; fp32 packings give bitwise gemm's results) so that forward passes on
 * backends of be's kind use them. drop: then release the fp32 originals (the packings
 * become the only copy; eng_bert_unpacked_block rebuilds a full block for other
 * backends). The weights must not change afterwards; freed by eng_bert_free.
 * ENG_OK, or an error (nothing packed, nothing dropped). */
int eng_bert_pack(eng_bert *b, eng_backend *be, int fmt, int drop);

/* Packs the linear layers of a view (eng_bert_view on a backend of its own memory) in
 * format fmt with be, the view's weights (backend memory) as the source; they stay in
 * the view. ENG_OK, or an error with nothing packed. eng_bert_view_unpack frees them
 * (before eng_bert_view_free). */
int eng_bert_view_pack(eng_bert *v, eng_backend *be, int fmt);
void eng_bert_view_unpack(eng_bert *v);

/* The same for a view whose backend copy holds only the block's first tail_off floats
 * (everything but the packable linear weights): each layer's fp32 weights are uploaded
 * from host_block (the model's complete host block) into one staging buffer, packed
 * from there, and not kept (w = NULL; the view's dropped = 1). Device memory then holds
 * the head of the block and the packings, not the fp32 linear weights. */
int eng_bert_view_pack_host(eng_bert *v, eng_backend *be, int fmt, const float *host_block);

/* model.c's accessors (internal; tests): the host model, and its view on be's kind and
 * device (uploaded on first use), NULL unless a BERT-family model / with err set. */
const eng_bert *eng_model_bert(const eng_model *m);
const eng_bert *eng_model_bert_on(eng_model *m, eng_backend *be, eng_error *err);

/* The layers a pack covers (n of them) into out[max]. */
int eng_bert_linears(eng_bert *b, eng_linear **out, int max);

/* A host copy of the whole block with every packed layer's weights as its packing holds
 * them (malloc'd, block_floats floats; NULL when out of memory): for backends of another
 * kind after a drop. */
float *eng_bert_unpacked_block(const eng_bert *b);

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
