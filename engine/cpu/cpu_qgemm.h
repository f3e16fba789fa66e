/* cpu_qgemm.h - reduced-precision linear kernels of the CPU backend (internal).
 *
 * y[M, N] = act(dequant(A . W^T) + bias) for a weight W [N, K] stored once, at load,
 * in one of two formats (ISA-independent layouts, so that any kernel level reads them):
 *
 *   int8: W quantized per output channel, symmetric: q = round(w / sw[n]),
 *         sw[n] = max|W[n, :]| / 127. Panels of 16 columns, [K4][16][4] bytes (4 k of
 *         one column side by side: the vpdpbusd / vpmaddubsw operand). A is quantized
 *         per row at run time (symmetric, sa[i] = max|A[i, :]| / 127), products are
 *         summed exactly in int32, then y = (float)acc * (sa[i] * sw[n]) + bias[n].
 *         Integer sums are exact, so every kernel level gives the same bits.
 *   bf16: W rounded to bf16 (nearest even). Panels of 16 columns, [K2][16][2] (the
 *         vdpbf16ps operand). A rounded to bf16 per call; fp32 accumulation.
 *
 * Kernel levels: int8 avx512_vnni > avx2 > scalar; bf16 avx512_bf16 > scalar.
 * (AMX tiles are not used: no CPU here to verify them on.)
 */
#ifndef NLPD_CPU_QGEMM_H
#define NLPD_CPU_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#define ENG_QP 16 /* columns per panel */

/* One tile of work: rows [0, M) of the quantized A, panels [0, np) of W (columns
 * [0, ncols) valid, ncols <= 16 * np), into C (row stride ldc), bias added (may be NULL). */
typedef struct eng_cpu_qtile {
    int M, np, ncols, K;      /* K: padded (multiple of 4 for int8, of 2 for bf16) */
    const void *A;            /* int8: int8 rows; bf16: uint16 rows; stride lda elements */
    size_t lda;
    const float *sa;          /* int8: per-row scales of A */
    const void *W;            /* first panel */
    const float *sw;          /* int8: per-column scales (of this tile's first column) */
    const int32_t *colsum;    /* int8: sum over k of q(W)[n, :] (for the u8 offset trick) */
    const float *bias;        /* of this tile's first column, or NULL */
    float *C;
    size_t ldc;
} eng_cpu_qtile;

typedef struct eng_cpu_qkernels {
    const char *i8_name, *bf16_name; /* NULL: this level lacks it */
    void (*i8_tile)(const eng_cpu_qtile *t);
    void (*bf16_tile)(const eng_cpu_qtile *t);
    /* eng_cpu_quant_row_i8 / eng_cpu_round_row_bf16, the same values, vectorised */
    float (*quant_i8)(int8_t *dst, const float *x, int K, int Kp);
    void (*round_bf16)(uint16_t *dst, const float *x, int K, int Kp);
} eng_cpu_qkernels;

/* The row blocks of a tile, for a kernel file's micro-kernel mk(t, row, block, MR, NB):
 * MR = mr rows (then single rows) by NB = 4 column blocks (then single blocks), nb column
 * blocks in all. Always inlined with mk a constant, so that the calls are direct and each
 * (MR, NB) instance of mk is inlined with its constants, as if written out. */
__attribute__((always_inline)) static inline void
eng_cpu_qtile_rows(const eng_cpu_qtile *t, int nb, const int mr,
                   void (*mk)(const eng_cpu_qtile *, int, int, const int, const int))
{
    int i = 0;
    for (; i + mr <= t->M; i += mr) {
        int p = 0;
        for (; p + 4 <= nb; p += 4)
            mk(t, i, p, mr, 4);
        for (; p < nb; p++)
            mk(t, i, p, mr, 1);
    }
    for (; i < t->M; i++) {
        int p = 0;
        for (; p + 4 <= nb; p += 4)
            mk(t, i, p, 1, 4);
        for (; p < nb; p++)
            mk(t, i, p, 1, 1);
    }
}

extern const eng_cpu_qkernels eng_cpu_qkernels_scalar;
#if defined(__x86_64__)
extern const eng_cpu_qkernels eng_cpu_qkernels_avx2;
extern const eng_cpu_qkernels eng_cpu_qkernels_avx512;
#endif

/* Row quantization shared by every level (exact same values): dst[0:Kp] for K
 * inputs (zero-padded to Kp), returns the row scale (0 for an all-zero row). */
float eng_cpu_quant_row_i8(int8_t *dst, const float *x, int K, int Kp);
void eng_cpu_round_row_bf16(uint16_t *dst, const float *x, int K, int Kp);
uint16_t eng_cpu_f32_to_bf16(float f);
float eng_cpu_bf16_to_f32(uint16_t h);

#endif
