/* cpu_qlinear.h - bf16 / int8 linear weights of the CPU backend (internal; the format
 * is described in cpu_qgemm.h). */
#ifndef NLPD_CPU_QLINEAR_H
#define NLPD_CPU_QLINEAR_H

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_qgemm.h"

#define ENG_CPU_QPACKED_MAGIC 0x51504b44u /* "QPKD" */

typedef struct eng_cpu_qpacked {
    uint32_t magic; /* first: tells it from the fp32 packing */
    int fmt;        /* ENG_WFMT_INT8 | ENG_WFMT_BF16 */
    int N, K, Kp, np;
    void *data;       /* np panels */
    float *sw;        /* int8: per-column scales, np * 16 */
    int32_t *colsum;  /* int8: per-column sums of q(W), np * 16 */
    size_t bytes;
} eng_cpu_qpacked;

/* The kernel level a backend on isa runs format fmt with (never NULL). */
const eng_cpu_qkernels *eng_cpu_qkernels_for(eng_cpu_isa isa, int fmt);
/* W [N, K] (row stride ldw) in format fmt; W may be freed afterwards. NULL on failure. */
eng_cpu_qpacked *eng_cpu_qpack(const float *W, int N, int K, int ldw, int fmt);
void eng_cpu_qfree(eng_cpu_qpacked *h);
/* The weights as the packing holds them, dequantized: dst [N, K] fp32. */
void eng_cpu_qunpack(const eng_cpu_qpacked *h, float *dst);
/* y[M, N] = act(x[M, K] W^T + bias) on be's pool; -1 when out of memory. */
int eng_cpu_qforward(eng_backend *be, const eng_cpu_qpacked *h, float *y, const float *x, int M,
                     const float *bias, eng_act act);

#endif
