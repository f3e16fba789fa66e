/* linear.c - nn.Linear on a backend (see linear.h). */
#include "nn/linear.h"

#include <stdlib.h>
#include <string.h>

int eng_nn_linear_forward(const eng_linear *l, eng_backend *be, float *y, const float *x, int T,
                          eng_act act)
{
    if (l->packed && be->ops == l->pack_ops)
        return be->ops->core->linear_forward(be, l->packed, y, x, T, l->b, act);
    if (!l->w)
        abort(); /* programmer error: dropped weights on a backend of another kind */
    be->ops->core->gemm(be, 1, T, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, y, l->out);
    be->ops->core->bias_act(be, y, l->b, T, l->out, act);
    return ENG_OK;
}

void eng_nn_linear_matmul(const eng_linear *l, eng_backend *be, float *y, const float *x, int T)
{
    if (l->packed && be->ops == l->pack_ops) {
        be->ops->core->linear_forward(be, l->packed, y, x, T, NULL, ENG_ACT_NONE);
        return;
    }
    be->ops->core->gemm(be, 1, T, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, y, l->out);
}

int eng_nn_linear_pack(eng_linear *l, eng_backend *be, int fmt, size_t *bytes)
{
    const eng_backend_core_ops *c = be ? be->ops->core : NULL;
    if (l->packed || !l->w)
        return ENG_OK;
    if (!c || !c->linear_pack || !c->linear_forward || !c->linear_free || !c->linear_info)
        return ENG_EUNSUPPORTED;
    void *h = c->linear_pack(be, l->w, l->out, l->in, l->in, fmt);
    if (!h)
        return ENG_ENOMEM;
    l->packed = h;
    l->fmt = fmt;
    l->pack_ops = be->ops;
    if (bytes)
        *bytes += c->linear_info(be, h, NULL);
    return ENG_OK;
}

void eng_nn_linear_unpack_free(eng_linear *l)
{
    if (l->packed && l->pack_ops)
        l->pack_ops->core->linear_free(l->packed);
    l->packed = NULL;
    l->pack_ops = NULL;
    l->fmt = ENG_WFMT_F32;
}

void eng_nn_linear_unpack(const eng_linear *l, float *dst)
{
    if (l->packed) {
        l->pack_ops->core->linear_unpack(l->packed, dst);
        return;
    }
    memcpy(dst, l->w, (size_t)l->out * l->in * sizeof(float));
}

const char *eng_nn_linear_kernel(const eng_linear *l, eng_backend *be)
{
    const char *k = "gemm";
    if (l->packed && (!be || be->ops == l->pack_ops))
        l->pack_ops->core->linear_info(be, l->packed, &k);
    return k;
}

const char *eng_wfmt_name(int fmt)
{
    switch (fmt) {
    case ENG_WFMT_BF16: return "bf16";
    case ENG_WFMT_INT8: return "int8";
    case ENG_WFMT_F16: return "fp16";
    default: return "fp32";
    }
}

int eng_wfmt_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcmp(s, "fp32"))
        return ENG_WFMT_F32;
    if (!strcmp(s, "bf16"))
        return ENG_WFMT_BF16;
    if (!strcmp(s, "int8"))
        return ENG_WFMT_INT8;
    if (!strcmp(s, "fp16"))
        return ENG_WFMT_F16;
    return -1;
}
