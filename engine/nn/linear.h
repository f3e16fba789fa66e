/* linear.h - nn.Linear on a backend: the one place that knows the linear weight format
 * (fp32 row-major [out, in] in backend memory, the PyTorch layout, optionally pre-packed
 * by a backend kind with pack_weight). Models (bert.c, marian.c) call these. */
#ifndef NLPD_NN_LINEAR_H
#define NLPD_NN_LINEAR_H

#include <stddef.h>

#include "backend/backend.h"

/* y[T, out] = x[T, in] . W^T. wp: W pre-packed by a backend of kind pack_ops (bitwise the
 * same result), used only when be is of that kind; else (or when NULL) plain gemm. */
void eng_nn_matmul(eng_backend *be, const eng_backend_ops *pack_ops, float *y, const float *x,
                   const float *w, const void *wp, int T, int out, int in);

/* eng_nn_matmul, then y = act(y + bias) (bias may be NULL). */
void eng_nn_linear(eng_backend *be, const eng_backend_ops *pack_ops, float *y, const float *x,
                   const float *w, const void *wp, const float *bias, int T, int out, int in,
                   eng_act act);

/* A packing of w [n, k] by be (NULL: declined, or w NULL); adds an estimate of its bytes
 * to *bytes. Freed with be->ops->core->free_packed. */
void *eng_nn_pack(eng_backend *be, const float *w, int n, int k, size_t *bytes);

#endif
