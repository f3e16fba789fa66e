/* cpu_seq2seq_ops.h - the CPU backend's sequence-to-sequence decoding ops
 * (internal; contracts in backend.h). backend_cpu.c puts them into its ops
 * table; they live in cpu_seq2seq_ops.c. */
#ifndef NLPD_CPU_SEQ2SEQ_OPS_H
#define NLPD_CPU_SEQ2SEQ_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

void eng_cpu_embed_scaled(eng_backend *be, float *out, const float *table, float scale,
                          const float *pos, const int32_t *ids, const int32_t *pos_ids,
                          int ntok, int dim);
void eng_cpu_attention_kv(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                          const float *k, int k_ld, const float *v, int v_ld,
                          const int32_t *q_off, const int32_t *kv_start, const int32_t *kv_len,
                          int nseq, int heads, int head_dim, float scale, int causal);
void eng_cpu_copy_rows(eng_backend *be, float *dst, int64_t dst_ld, const int32_t *dst_rows,
                       const float *src, int64_t src_ld, const int32_t *src_rows, int n,
                       int64_t cols);
void eng_cpu_log_softmax(eng_backend *be, float *x, int rows, int cols, int ld);
void eng_cpu_topk(eng_backend *be, const float *x, int groups, int rows_per_group, int cols,
                  int ld, const float *row_add, int k, float *vals, int32_t *idx);
void eng_cpu_bias_silu(eng_backend *be, float *x, const float *bias, int rows, int cols);

#endif /* NLPD_CPU_SEQ2SEQ_OPS_H */
