/* linear.c - nn.Linear on a backend (see linear.h). */
#include "nn/linear.h"

void eng_nn_matmul(eng_backend *be, const eng_backend_ops *pack_ops, float *y, const float *x,
                   const float *w, const void *wp, int T, int out, int in)
{
    if (wp && be->ops == pack_ops)
        be->ops->core->gemm_prepacked(be, T, out, in, 1.0f, x, in, wp, 0.0f, y, out);
    else
        be->ops->core->gemm(be, 1, T, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
}

void eng_nn_linear(eng_backend *be, const eng_backend_ops *pack_ops, float *y, const float *x,
                   const float *w, const void *wp, const float *bias, int T, int out, int in,
                   eng_act act)
{
    eng_nn_matmul(be, pack_ops, y, x, w, wp, T, out, in);
    be->ops->core->bias_act(be, y, bias, T, out, act);
}

void *eng_nn_pack(eng_backend *be, const float *w, int n, int k, size_t *bytes)
{
    void *h = w ? be->ops->core->pack_weight(be, w, n, k, k) : NULL;
    if (h) /* panels of up to 16 rows, K padded to 4 (the CPU layout; an estimate elsewhere) */
        *bytes += ((size_t)n + 15) / 16 * 16 * (((size_t)k + 3) / 4 * 4) * sizeof(float);
    return h;
}
