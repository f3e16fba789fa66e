/* linear.h - nn.Linear on a backend: THE place that owns a linear layer's weight format.
 *
 * A layer holds its fp32 weight W [out, in] (the PyTorch layout, in the model's weight
 * block or a backend view of it), its bias, and optionally a packing made by one kind of
 * backend (linear_pack) in a format (eng_wfmt: fp32 packed panels, bf16, int8 with
 * per-output-channel scales). Once packed, the fp32 original may be dropped (w = NULL,
 * off still giving its place in the block): the packing is then the only copy, and
 * eng_nn_linear_unpack rebuilds the fp32 values (dequantized) for other backends.
 * Models (bert.c, marian.c) and the trainer's forward call eng_nn_linear_forward. */
#ifndef NLPD_NN_LINEAR_H
#define NLPD_NN_LINEAR_H

#include <stddef.h>

#include "backend/backend.h"

typedef struct eng_linear {
    const float *w;  /* fp32 [out, in], or NULL once dropped (packed is the copy) */
    const float *b;  /* bias [out], or NULL */
    int out, in;
    size_t off;      /* w's offset in floats in the model's weight block */
    int fmt;         /* eng_wfmt of packed */
    void *packed;    /* packing by a backend of kind pack_ops, or NULL */
    const eng_backend_ops *pack_ops;
} eng_linear;

/* y[T, out] = act(x[T, in] W^T + b): the packing when be is of its kind, else gemm on
 * w (which must then be present). 0, or ENG_ENOMEM. */
int eng_nn_linear_forward(const eng_linear *l, eng_backend *be, float *y, const float *x, int T,
                          eng_act act);

/* y[T, out] = x[T, in] W^T without the bias (the trainer's pre-activation). */
void eng_nn_linear_matmul(const eng_linear *l, eng_backend *be, float *y, const float *x, int T);

/* Packs l in format fmt with be (no-op when packed already or be lacks linear_pack);
 * adds the packing's bytes to *bytes. ENG_OK, or ENG_EUNSUPPORTED when be cannot. */
int eng_nn_linear_pack(eng_linear *l, eng_backend *be, int fmt, size_t *bytes);

/* Frees the packing (the fp32 weight must still be there, or the layer is unusable). */
void eng_nn_linear_unpack_free(eng_linear *l);

/* Packs the n layers ls of a model's view on a backend of its own memory (BERT and
 * Marian alike) in format fmt with be, adding the packings' bytes to *bytes. A layer whose
 * weight lies in the block's tail (off >= tail_off) while host_block is given (the model's
 * complete host block: the view's copy then stops at tail_off) is uploaded from there into
 * one staging buffer on be, packed from it (linear_pack waits for its conversion), and
 * left without fp32 weights (w = NULL): no fp32 device copy of those layers is kept. The
 * others are packed from their own weights. ENG_OK, or an error with nothing packed. */
int eng_nn_linears_pack(eng_linear *const *ls, int n, eng_backend *be, int fmt,
                        const float *host_block, size_t tail_off, size_t *bytes);

/* Frees the packings of the n layers ls (eng_nn_linear_unpack_free on each). */
void eng_nn_linears_unpack_free(eng_linear *const *ls, int n);

/* The weights as the packing holds them, fp32 [out, in], into host memory dst. */
void eng_nn_linear_unpack(const eng_linear *l, float *dst);

/* The kernel be (NULL: the default) runs l on: "avx512_vnni", "avx512_bf16", "avx512",
 * ... or "gemm" when unpacked. */
const char *eng_nn_linear_kernel(const eng_linear *l, eng_backend *be);

/* "fp32" | "bf16" | "int8" | "fp16"; and back (-1: unknown). */
const char *eng_wfmt_name(int fmt);
int eng_wfmt_parse(const char *s);

#endif
