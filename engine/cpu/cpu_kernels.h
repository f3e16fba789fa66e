/* cpu_kernels.h - internal interface of the CPU backend's kernels (not public).
 *
 * The same kernel source (cpu_kernels_impl.h) is compiled once per instruction
 * set: cpu_kernels_scalar.c (baseline), cpu_kernels_avx2.c (AVX2+FMA) and
 * cpu_kernels_avx512.c (AVX-512 F/BW/DQ/VL). backend_cpu.c picks one table at
 * run time (DESIGN §6: baseline build, faster kernels chosen on the user's CPU).
 * Kernels are single-threaded; backend_cpu.c splits the work across its pool.
 */
#ifndef NLPD_CPU_KERNELS_H
#define NLPD_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "cpu/cpu_pool.h"

typedef enum eng_cpu_isa {
    ENG_CPU_ISA_SCALAR = 0,
    ENG_CPU_ISA_AVX2,
    ENG_CPU_ISA_AVX512,
    ENG_CPU_ISA_COUNT,
} eng_cpu_isa;

/* Query rows per attention block, and the padding of the key dimension. */
#define ENG_CPU_ATTN_ROWS 6
#define ENG_CPU_ATTN_PAD 16

/* One attention call, as passed to the op (see backend.h). */
typedef struct eng_cpu_attn {
    float *out;
    const float *q, *k, *v;
    const int32_t *q_off, *kv_off;
    int out_ld, q_ld, k_ld, v_ld;
    int heads, head_dim, causal;
    float scale;
} eng_cpu_attn;

typedef struct eng_cpu_kernels {
    const char *name;
    /* x[r] = act(x[r] + bias) for rows contiguous rows of cols floats. */
    void (*bias_act)(float *x, const float *bias, int rows, int cols, eng_act act);
    /* out[r] = LN(x[r] + res[r]) * gamma + beta; res may be NULL; out may alias x/res. */
    void (*add_layernorm)(float *out, const float *x, const float *res, const float *gamma,
                          const float *beta, int rows, int cols, float eps);
    /* out = (a + c) + b elementwise over n floats; c may be NULL. */
    void (*add3)(float *out, const float *a, const float *b, const float *c, int n);
    /* Attention of sequence s, head h; scratch holds eng_cpu_attn_scratch() floats.
     * Prefetches the inputs of (next_s, next_h) on the way unless next_s < 0. */
    void (*attn_head)(const eng_cpu_attn *a, int s, int h, float *scratch, int next_s,
                      int next_h);
    /* Prefetches part part of nparts of the inputs of (s, h). */
    void (*attn_prefetch)(const eng_cpu_attn *a, int s, int h, int part, int nparts);
    /* Packed SGEMM C = alpha A B^T + beta C, B [N, K] (cpu_gemm_impl.h): c[i][j] is a
     * fixed function of row i of A, row j of B and K, so a row of C never depends on M,
     * tiles or threads. gemm_pack_b packs rows n0..n1 of B into
     * eng_cpu_gemm_pack_floats(gemm_nr, n1 - n0, K) floats at dst; gemm_packed computes
     * C[0:M, 0:n] from such a packing of n rows of B; gemm_direct computes C[0:M, n0:n1]
     * (the same values) packing one panel at a time into pbuf, of
     * eng_cpu_gemm_pack_floats(gemm_nr, gemm_nr, K) floats (for few rows of A). */
    int gemm_nr;
    void (*gemm_pack_b)(float *dst, const float *B, int ldb, int n0, int n1, int K);
    void (*gemm_packed)(int M, int n, int K, float alpha, const float *A, int lda,
                        const float *Bp, float beta, float *C, int ldc);
    void (*gemm_direct)(int M, int n0, int n1, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc, float *pbuf);
    /* Elementwise math, exposed for the accuracy tests. */
    void (*vexp)(float *y, const float *x, int n);
    void (*verf)(float *y, const float *x, int n);
    void (*vtanh)(float *y, const float *x, int n);
} eng_cpu_kernels;

extern const eng_cpu_kernels eng_cpu_kernels_scalar;
#if defined(__x86_64__)
extern const eng_cpu_kernels eng_cpu_kernels_avx2;
extern const eng_cpu_kernels eng_cpu_kernels_avx512;
#endif

/* Floats of per-thread scratch attn_head needs for keys nk and head_dim hd. */
static inline size_t eng_cpu_attn_scratch(int head_dim, int nk)
{
    size_t nkp = ((size_t)nk + ENG_CPU_ATTN_PAD - 1) / ENG_CPU_ATTN_PAD * ENG_CPU_ATTN_PAD;
    return ((size_t)head_dim + ENG_CPU_ATTN_ROWS) * nkp + 2 * ENG_CPU_ATTN_ROWS;
}

/* Floats of a packing of n rows of B (panels of nr rows, K padded to a multiple of 4). */
static inline size_t eng_cpu_gemm_pack_floats(int nr, int n, int K)
{
    return ((size_t)n + nr - 1) / nr * nr * (((size_t)K + 3) / 4 * 4);
}

/* 1 if this CPU (and OS) can run the kernels of isa. */
int eng_cpu_isa_supported(eng_cpu_isa isa);
/* The best supported ISA, or the one forced by NLPD_CPU_ISA=scalar|avx2|avx512
 * (an unsupported or unknown choice falls back to the best supported). */
eng_cpu_isa eng_cpu_isa_default(void);
/* Kernel table of a supported isa, else NULL. */
const eng_cpu_kernels *eng_cpu_kernels_get(eng_cpu_isa isa);
const char *eng_cpu_isa_name(eng_cpu_isa isa);

/* The CPU backend on a given ISA (for tests and benchmarks); NULL if the ISA is
 * not supported or allocation fails. */
eng_backend *eng_backend_cpu_new_isa(int threads, eng_cpu_isa isa);
/* The ISA a CPU backend runs. */
eng_cpu_isa eng_backend_cpu_isa(const eng_backend *be);
/* The kernel table a CPU backend runs. */
const eng_cpu_kernels *eng_backend_cpu_kernels(const eng_backend *be);
/* Runs fn on nt threads of the CPU backend's pool (inline when nt <= 1); the op
 * files beside backend_cpu.c share it. */
void eng_backend_cpu_run(eng_backend *be, eng_cpu_task_fn fn, void *arg, int nt);
/* Threads worth using for `work` units of about a nanosecond, with at least
 * min_ns of them per thread: in [1, be->threads]. */
int eng_cpu_threads_for(const eng_backend *be, double work, double min_ns);

#endif /* NLPD_CPU_KERNELS_H */
