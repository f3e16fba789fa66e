/* cpu_qgemm_avx2.c - int8 linear kernel for AVX2 (vpmaddubsw on |a| and sign(w, a):
 * |a|, |w| <= 127 keep each pair sum below the int16 limit, so the sums are exact and
 * equal the other levels' bit for bit). bf16 has no AVX2 level: scalar. */
#if defined(__x86_64__)
#if defined(__clang__) /* clang has no GCC target pragma: the same as an attribute */
#pragma clang attribute push(__attribute__((target("avx,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx,avx2,fma")
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

/* 8 columns (n valid) of one row from acc. */
AI void i8_store8(const eng_cpu_qtile *t, __m256i acc, int r, int col, float *c)
{
    int n = t->ncols - col < 8 ? t->ncols - col : 8;
    if (n <= 0)
        return;
    float sw[8] = {0}, bias[8] = {0}, y[8];
    memcpy(sw, t->sw + col, (size_t)n * sizeof(float));
    if (t->bias)
        memcpy(bias, t->bias + col, (size_t)n * sizeof(float));
    __m256 v = _mm256_cvtepi32_ps(acc);
    __m256 s = _mm256_mul_ps(_mm256_set1_ps(t->sa[r]), _mm256_loadu_ps(sw));
    __m256 o = _mm256_mul_ps(v, s);
    if (t->bias)
        o = _mm256_add_ps(o, _mm256_loadu_ps(bias));
    if (n == 8) {
        _mm256_storeu_ps(c + col, o);
    } else {
        _mm256_storeu_ps(y, o);
        memcpy(c + col, y, (size_t)n * sizeof(float));
    }
}

/* MR rows x NH half-panels (8 columns each) starting at half-panel h0. */
AI void i8_mk(const eng_cpu_qtile *t, int i0, int h0, const int MR, const int NH)
{
    __m256i acc[2][4];
    const int8_t *a[2];
    size_t ps = (size_t)t->K * ENG_QP;
    const __m256i ones = _mm256_set1_epi16(1);
    #pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        a[r] = (const int8_t *)t->A + (size_t)(i0 + r) * t->lda;
        #pragma GCC unroll 4
        for (int h = 0; h < NH; h++)
            acc[r][h] = _mm256_setzero_si256();
    }
    const int8_t *wh[4];
    #pragma GCC unroll 4
    for (int h = 0; h < NH; h++)
        wh[h] = (const int8_t *)t->W + (size_t)((h0 + h) / 2) * ps + ((h0 + h) % 2) * 32;
    int K4 = t->K / 4;
    for (int q = 0; q < K4; q++) {
        __m256i b[4];
        #pragma GCC unroll 4
        for (int h = 0; h < NH; h++)
            b[h] = _mm256_load_si256((const __m256i *)(wh[h] + (size_t)q * 64));
        #pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            __m256i av = _mm256_set1_epi32(ld32(a[r] + 4 * q));
            __m256i au = _mm256_abs_epi8(av);
            #pragma GCC unroll 4
            for (int h = 0; h < NH; h++) {
                __m256i p16 = _mm256_maddubs_epi16(au, _mm256_sign_epi8(b[h], av));
                acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(p16, ones));
            }
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
        #pragma GCC unroll 4
        for (int h = 0; h < NH; h++)
            i8_store8(t, acc[r][h], i0 + r, (h0 + h) * 8, t->C + (size_t)(i0 + r) * t->ldc);
}

static void i8_tile(const eng_cpu_qtile *t)
{
    eng_cpu_qtile_rows(t, (t->ncols + 7) / 8, 2, i8_mk); /* blocks: half-panels */
}

static float quant_i8(int8_t *dst, const float *x, int K, int Kp)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8)
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
    float m8[8], amax = 0.0f;
    _mm256_storeu_ps(m8, mx);
    for (int j = 0; j < 8; j++)
        amax = m8[j] > amax ? m8[j] : amax;
    for (; k < K; k++) {
        float v = __builtin_fabsf(x[k]);
        amax = v > amax ? v : amax;
    }
    if (!(amax > 0.0f) || amax > 3.4e38f)
        return eng_cpu_quant_row_i8(dst, x, K, Kp);
    float invs = 127.0f / amax;
    __m256 inv = _mm256_set1_ps(invs);
    for (k = 0; k + 8 <= K; k += 8) {
        __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv));
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        __m128i b = _mm_packs_epi16(w, w);
        _mm_storel_epi64((__m128i *)(dst + k), b);
    }
    for (; k < K; k++) {
        float v = __builtin_nearbyintf(x[k] * invs);
        dst[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    memset(dst + K, 0, (size_t)(Kp - K));
    return amax / 127.0f;
}

const eng_cpu_qkernels eng_cpu_qkernels_avx2 = {
    .i8_name = "avx2",
    .bf16_name = NULL,
    .i8_tile = i8_tile,
    .bf16_tile = NULL,
    .quant_i8 = quant_i8,
    .round_bf16 = eng_cpu_round_row_bf16,
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int eng_cpu_qgemm_avx2_unused; /* not an x86-64 build */
#endif
