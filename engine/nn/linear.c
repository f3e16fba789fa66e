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

/* A layer uploaded from the host block rather than packed from its own weights. */
static int staged(const eng_linear *l, const float *host_block, size_t tail_off)
{
    return host_block && l->off >= tail_off;
}

int eng_nn_linears_pack(eng_linear *const *ls, int n, eng_backend *be, int fmt,
                        const float *host_block, size_t tail_off, size_t *bytes)
{
    if (!be || n < 0)
        return ENG_EINVAL;
    size_t most = 0, got = 0;
    for (int i = 0; i < n; i++) {
        size_t b = sizeof(float) * (size_t)ls[i]->out * ls[i]->in;
        if (staged(ls[i], host_block, tail_off) && b > most)
            most = b;
    }
    float *stage = most ? be->ops->alloc(be, most) : NULL;
    if (most && !stage)
        return ENG_ENOMEM;
    int rc = ENG_OK;
    for (int i = 0; i < n && rc == ENG_OK; i++) {
        eng_linear *l = ls[i];
        if (!staged(l, host_block, tail_off)) {
            rc = eng_nn_linear_pack(l, be, fmt, &got);
            continue;
        }
        if (be->ops->upload(be, stage, host_block + l->off,
                            sizeof(float) * (size_t)l->out * l->in)) {
            rc = ENG_EBACKEND;
            break;
        }
        l->w = stage;
        rc = eng_nn_linear_pack(l, be, fmt, &got);
        l->w = NULL; /* the packing is the layer's only device copy */
    }
    if (stage) {
        /* the last conversion may still read the buffer */
        if (be->ops->synchronize(be) && rc == ENG_OK)
            rc = ENG_EBACKEND;
        be->ops->free(be, stage);
    }
    if (rc) {
        eng_nn_linears_unpack_free(ls, n);
        return rc;
    }
    if (bytes)
        *bytes += got;
    return ENG_OK;
}

void eng_nn_linears_unpack_free(eng_linear *const *ls, int n)
{
    for (int i = 0; i < n; i++)
        eng_nn_linear_unpack_free(ls[i]);
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
