/* cpu_qgemm_avx512.c - int8 (AVX-512 VNNI vpdpbusd) and bf16 (AVX-512 BF16 vdpbf16ps)
 * linear kernels, chosen at run time on CPUs that have them (see cpu_qgemm.h). */
#if defined(__x86_64__)
#if defined(__clang__) /* clang has no GCC target pragma: the same as an attribute */
#pragma clang attribute push(__attribute__((target("avx,avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16"))), apply_to = function)
#else
#pragma GCC target("avx,avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16")
#endif
#include <immintrin.h>
#include <string.h>

#include "cpu/cpu_qgemm.h"

#define AI __attribute__((always_inline)) static inline

static inline int32_t ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Writes 16 columns (n valid) of one row: y = (float)acc * (sa * sw) + bias. */
AI void i8_store(const eng_cpu_qtile *t, __m512i acc, int r, int col, float *c)
{
    int n = t->ncols - col < 16 ? t->ncols - col : 16;
    __mmask16 m = (__mmask16)((1u << n) - 1u);
    __m512i cs = _mm512_maskz_loadu_epi32(m, t->colsum + col);
    __m512 sw = _mm512_maskz_loadu_ps(m, t->sw + col);
    __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_slli_epi32(cs, 7)));
    __m512 y = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(t->sa[r]), sw));
    if (t->bias)
        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, t->bias + col));
    _mm512_mask_storeu_ps(c + col, m, y);
}

/* MR rows x NP panels of C: acc += (a + 128) . w per 4 k (vpdpbusd), the offset taken
 * out again with colsum at the end. */
AI void i8_mk(const eng_cpu_qtile *t, int i0, int p0, const int MR, const int NP)
{
    __m512i acc[4][4];
    const int8_t *a[4];
    size_t ps = (size_t)t->K * ENG_QP;
    const int8_t *w = (const int8_t *)t->W + (size_t)p0 * ps;
    #pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int8_t *)t->A + (size_t)(i0 + r) * t->lda;
        #pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            acc[r][p] = _mm512_setzero_si512();
    }
    int K4 = t->K / 4;
    for (int q = 0; q < K4; q++) {
        __m512i b[4];
        #pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            b[p] = _mm512_load_si512((const void *)(w + p * ps + (size_t)q * 64));
        #pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            __m512i av = _mm512_set1_epi32(ld32(a[r] + 4 * q) ^ (int32_t)0x80808080u);
            #pragma GCC unroll 4
            for (int p = 0; p < NP; p++)
                acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], av, b[p]);
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
        #pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            if ((p0 + p) * 16 < t->ncols)
                i8_store(t, acc[r][p], i0 + r, (p0 + p) * 16, t->C + (size_t)(i0 + r) * t->ldc);
}

static void i8_tile(const eng_cpu_qtile *t) { eng_cpu_qtile_rows(t, t->np, 4, i8_mk); }

AI void bf16_mk(const eng_cpu_qtile *t, int i0, int p0, const int MR, const int NP)
{
    __m512 acc[4][4];
    const uint16_t *a[4];
    size_t ps = (size_t)t->K * ENG_QP;
    const uint16_t *w = (const uint16_t *)t->W + (size_t)p0 * ps;
    #pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const uint16_t *)t->A + (size_t)(i0 + r) * t->lda;
        #pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            acc[r][p] = _mm512_setzero_ps();
    }
    int K2 = t->K / 2;
    for (int q = 0; q < K2; q++) {
        __m512i b[4];
        #pragma GCC unroll 4
        for (int p = 0; p < NP; p++)
            b[p] = _mm512_load_si512((const void *)(w + p * ps + (size_t)q * 32));
        #pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            __m512i av = _mm512_set1_epi32(ld32(a[r] + 2 * q));
            #pragma GCC unroll 4
            for (int p = 0; p < NP; p++)
                acc[r][p] = _mm512_dpbf16_ps(acc[r][p], (__m512bh)av, (__m512bh)b[p]);
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
        #pragma GCC unroll 4
        for (int p = 0; p < NP; p++) {
            int col = (p0 + p) * 16;
            if (col >= t->ncols)
                continue;
            int n = t->ncols - col < 16 ? t->ncols - col : 16;
            __mmask16 m = (__mmask16)((1u << n) - 1u);
            __m512 y = acc[r][p];
            if (t->bias)
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, t->bias + col));
            _mm512_mask_storeu_ps(t->C + (size_t)(i0 + r) * t->ldc + col, m, y);
        }
}

static void bf16_tile(const eng_cpu_qtile *t) { eng_cpu_qtile_rows(t, t->np, 4, bf16_mk); }

static float quant_i8(int8_t *dst, const float *x, int K, int Kp)
{
    __m512 mx = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16)
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    if (k < K)
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(
                                   (__mmask16)((1u << (K - k)) - 1u), x + k)));
    float amax = _mm512_reduce_max_ps(mx);
    if (!(amax > 0.0f) || amax > 3.4e38f) /* zero, NaN or inf: the scalar path decides */
        return eng_cpu_quant_row_i8(dst, x, K, Kp);
    __m512 inv = _mm512_set1_ps(127.0f / amax);
    for (k = 0; k + 16 <= K; k += 16) {
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), inv));
        _mm_storeu_si128((__m128i *)(dst + k), _mm512_cvtsepi32_epi8(q));
    }
    for (; k < K; k++) {
        float v = __builtin_nearbyintf(x[k] * (127.0f / amax));
        dst[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    memset(dst + K, 0, (size_t)(Kp - K));
    return amax / 127.0f;
}

static void round_bf16(uint16_t *dst, const float *x, int K, int Kp)
{
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
        _mm512_storeu_si512((void *)(dst + k), (__m512i)h);
    }
    for (; k < K; k++)
        dst[k] = eng_cpu_f32_to_bf16(x[k]);
    for (; k < Kp; k++)
        dst[k] = 0;
}

const eng_cpu_qkernels eng_cpu_qkernels_avx512 = {
    .i8_name = "avx512_vnni",
    .bf16_name = "avx512_bf16",
    .i8_tile = i8_tile,
    .bf16_tile = bf16_tile,
    .quant_i8 = quant_i8,
    .round_bf16 = round_bf16,
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int eng_cpu_qgemm_avx512_unused; /* not an x86-64 build */
#endif
