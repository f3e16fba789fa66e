/* backend.h - the compute backend interface (DESIGN §3).
 *
 * Models are written once against this vtable; the CPU backend (backend_cpu.c)
 * is the reference implementation, the CUDA backend (cuda/) registers another.
 * All tensors are row-major fp32. Activations are "packed": the tokens of all
 * sequences of a batch are concatenated (no padding), and seq_off[nseq + 1]
 * gives each sequence's first row (seq_off[0] = 0, seq_off[nseq] = ntok).
 * Index arrays (ids, offsets) live in backend memory like everything else.
 */
#ifndef NLPD_BACKEND_H
#define NLPD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum eng_act {
    ENG_ACT_NONE = 0,
    ENG_ACT_GELU,      /* exact: 0.5 x (1 + erf(x / sqrt 2)) - HF "gelu" */
    ENG_ACT_GELU_TANH, /* tanh approximation - HF "gelu_new", "gelu_pytorch_tanh" */
    ENG_ACT_RELU,
    ENG_ACT_TANH,
} eng_act;

typedef struct eng_backend eng_backend;

typedef struct eng_backend_ops {
    const char *name;
    void (*destroy)(eng_backend *be);

    /* Memory. alloc returns 64-byte aligned memory or NULL. */
    void *(*alloc)(eng_backend *be, size_t bytes);
    void (*free)(eng_backend *be, void *p);
    int (*upload)(eng_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(eng_backend *be, void *host_dst, const void *src, size_t bytes);
    int (*synchronize)(eng_backend *be); /* 0, or ENG_EBACKEND after a device fault */

    /* C[M,N] = alpha * A[M,K] . op(B) + beta * C.
     * trans_b: B is [N,K] (the nn.Linear weight layout), else B is [K,N]. */
    void (*gemm)(eng_backend *be, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta,
                 float *C, int ldc);

    /* x[r, :] = act(x[r, :] + bias) for each of rows rows; bias may be NULL. */
    void (*bias_act)(eng_backend *be, float *x, const float *bias, int rows, int cols,
                     eng_act act);

    /* out[r] = LayerNorm(x[r] + res[r]) * gamma + beta. res may be NULL;
     * out may alias x or res. Statistics in float with the biased variance, as torch. */
    void (*add_layernorm)(eng_backend *be, float *out, const float *x, const float *res,
                          const float *gamma, const float *beta, int rows, int cols,
                          float eps);

    /* out[t] = word[ids[t]] + pos[pos_ids[t]] + type[type_ids[t]].
     * type/type_ids may be NULL (DistilBERT). Ids are assumed in range (the
     * model checks them before upload). */
    void (*embed)(eng_backend *be, float *out, const float *word, const float *pos,
                  const float *type, const int32_t *ids, const int32_t *pos_ids,
                  const int32_t *type_ids, int ntok, int dim);

    /* Multi-head scaled dot-product attention over packed sequences.
     * For each sequence s and head h: out_s,h = softmax(scale * Q K^T [+ causal mask]) V,
     * where Q rows are q_off[s]..q_off[s+1] of q (row stride q_ld, head h at
     * column h*head_dim), K/V rows kv_off[s]..kv_off[s+1] of k/v likewise.
     * out row stride out_ld. causal: query i sees keys j <= i + (nk - nq). */
    void (*attention)(eng_backend *be, float *out, int out_ld,
                      const float *q, int q_ld, const float *k, int k_ld,
                      const float *v, int v_ld, const int32_t *q_off,
                      const int32_t *kv_off, int nseq, int heads, int head_dim,
                      float scale, int causal);

    /* out[s, :] = mean of x rows seq_off[s]..seq_off[s+1]; normalize: then L2-normalise
     * (x / max(||x||, 1e-12), as torch.nn.functional.normalize). */
    void (*mean_pool)(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                      int nseq, int dim, int normalize);

    /* out[s, :] = x[seq_off[s] + row, :] (e.g. the [CLS] row when row = 0). */
    void (*gather_rows)(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                        int nseq, int row, int dim);
} eng_backend_ops;

struct eng_backend {
    const eng_backend_ops *ops;
    int threads;
};

/* The CPU backend: OpenBLAS for GEMM, own vectorised kernels, `threads` worker
 * threads (<= 0: online cores). Returns NULL on allocation failure. */
eng_backend *eng_backend_cpu_new(int threads);

#endif /* NLPD_BACKEND_H */
