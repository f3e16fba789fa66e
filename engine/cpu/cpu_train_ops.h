/* cpu_train_ops.h - the CPU backend's training ops (internal; see backend.h for
 * each op's contract). backend_cpu.c puts these into its ops table; they live in
 * cpu_train_ops.c. */
#ifndef NLPD_CPU_TRAIN_OPS_H
#define NLPD_CPU_TRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

void eng_cpu_gemm_ex(eng_backend *be, int trans_a, int trans_b, int M, int N, int K,
                     float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                     float *C, int ldc);
void eng_cpu_bias_act_train(eng_backend *be, float *pre, float *post, const float *bias,
                            int rows, int cols, eng_act act);
void eng_cpu_act_backward(eng_backend *be, float *dx, const float *dy, const float *pre,
                          int rows, int cols, eng_act act);
void eng_cpu_layernorm_backward(eng_backend *be, float *dx, float *dgamma, float *dbeta,
                                const float *dout, const float *x, const float *res,
                                const float *gamma, int rows, int cols, float eps);
void eng_cpu_embed_backward(eng_backend *be, float *dword, float *dpos, float *dtype,
                            const float *dout, const int32_t *ids, const int32_t *pos_ids,
                            const int32_t *type_ids, int ntok, int dim);
void eng_cpu_attention_train(eng_backend *be, float *out, int out_ld, float *probs,
                             const int64_t *p_off, const float *q, const float *k,
                             const float *v, int qkv_ld, const int32_t *seq_off, int nseq,
                             int heads, int head_dim, float scale, float dropout_p,
                             uint64_t seed);
void eng_cpu_attention_backward(eng_backend *be, float *dq, float *dk, float *dv, int dqkv_ld,
                                const float *dout, int dout_ld, const float *probs,
                                const int64_t *p_off, const float *q, const float *k,
                                const float *v, int qkv_ld, const int32_t *seq_off, int nseq,
                                int heads, int head_dim, float scale, float dropout_p,
                                uint64_t seed);
void eng_cpu_dropout(eng_backend *be, float *y, const float *x, size_t n, float p,
                     uint64_t seed);
void eng_cpu_sum_rows(eng_backend *be, float *db, const float *dy, int rows, int cols);
void eng_cpu_scatter_rows(eng_backend *be, float *dx, const float *dsrc,
                          const int32_t *seq_off, int nseq, int row, int dim);
void eng_cpu_axpy(eng_backend *be, float *y, float alpha, const float *x, size_t n);
void eng_cpu_zero(eng_backend *be, void *p, size_t bytes);
void eng_cpu_cross_entropy(eng_backend *be, float *loss, float *dlogits, const float *logits,
                           const int32_t *labels, int n, int L, float scale);
void eng_cpu_bce_logits(eng_backend *be, float *loss, float *dlogits, const float *logits,
                        const float *targets, int n, int L, float scale);
void eng_cpu_sum_squares(eng_backend *be, float *out, const float *x, size_t n);
void eng_cpu_adamw(eng_backend *be, float *p, float *g, float *m, float *v, size_t n, float lr,
                   float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                   float gscale);

/* The dropout keep test shared by every training op: element i survives a drop
 * probability p under seed when a splitmix64 hash of (seed, i), cut to 24 bits, is
 * >= eng_dropout_threshold(p) = ceil(p * 2^24). */
static inline uint64_t eng_dropout_threshold(float p)
{
    double t = (double)p * 16777216.0;
    uint64_t ti = (uint64_t)t;
    return ti + ((double)ti < t);
}

static inline int eng_dropout_keep_t(uint64_t seed, uint64_t i, uint64_t threshold)
{
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (z >> 40) >= threshold;
}

static inline int eng_dropout_keep(uint64_t seed, uint64_t i, float p)
{
    return eng_dropout_keep_t(seed, i, eng_dropout_threshold(p));
}

#endif /* NLPD_CPU_TRAIN_OPS_H */
