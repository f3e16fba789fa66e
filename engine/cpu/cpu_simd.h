/* cpu_simd.h - a thin vector abstraction for the CPU kernels (internal).
 *
 * Included by exactly one cpu_kernels_<isa>.c after it defines one of
 * CPU_SIMD_AVX512, CPU_SIMD_AVX2 or CPU_SIMD_SCALAR (and, for the vector ones,
 * switched the target with #pragma GCC target). V is a vector of VW floats,
 * VM a lane mask. vloadn/vstoren touch only the first n (< VW) lanes. vfma is
 * always fused (the math functions rely on it); vmac is a multiply-add that may
 * round twice.
 */
#ifndef NLPD_CPU_SIMD_H
#define NLPD_CPU_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(CPU_SIMD_AVX512)
#include <immintrin.h>
#define VW 16
typedef __m512 V;
typedef __mmask16 VM;
#define tmask(n) ((__mmask16)((1u << (n)) - 1u))
#define vzero() _mm512_setzero_ps()
#define vset1(x) _mm512_set1_ps(x)
#define vload(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps((p), (v))
#define vloadn(p, n) _mm512_maskz_loadu_ps(tmask(n), (p))
#define vstoren(p, v, n) _mm512_mask_storeu_ps((p), tmask(n), (v))
#define vkeepn(v, n) _mm512_maskz_mov_ps(tmask(n), (v)) /* lanes >= n zeroed */
#define vadd(a, b) _mm512_add_ps(a, b)
#define vsub(a, b) _mm512_sub_ps(a, b)
#define vmul(a, b) _mm512_mul_ps(a, b)
#define vdiv(a, b) _mm512_div_ps(a, b)
#define vmax(a, b) _mm512_max_ps(a, b)
#define vmin(a, b) _mm512_min_ps(a, b)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)   /* a*b + c */
#define vfnma(a, b, c) _mm512_fnmadd_ps(a, b, c) /* c - a*b */
#define vmac(a, b, c) vfma(a, b, c) /* a*b + c, fused or not */
#define vround(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vabs(a) _mm512_abs_ps(a)
#define vlt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define vsel(m, a, b) _mm512_mask_blend_ps(m, a, b) /* m ? b : a */
#define vany(m) ((m) != 0)
#define vhsum(a) _mm512_reduce_add_ps(a)
#define vhmax(a) _mm512_reduce_max_ps(a)
/* 2^n for integral n in [-126, 127] held as floats. */
#define vpow2i(n) \
    _mm512_castsi512_ps(_mm512_slli_epi32( \
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23))
/* |mag| with the sign of sgn. */
static inline V vcopysign(V mag, V sgn)
{
    const __m512i m = _mm512_set1_epi32(INT32_MIN);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
        _mm512_castps_si512(mag), _mm512_castps_si512(sgn), m, 0xd8)); /* m ? sgn : mag */
}
/* Transposes the 16 x 16 block held in r[0..15] (r[i] = row i) in place. */
static inline __attribute__((always_inline)) void vtranspose(V *r)
{
    V t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + k], 128-bit lane L: column 4L + k of rows i..i+3 */
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; k++) { /* a 4 x 4 transpose of 128-bit lanes */
        V v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88);
        V v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xdd);
        V v2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
        V v3 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xdd);
        r[k] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + k] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
        r[12 + k] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
    }
}

/* out[0..3] = horizontal sums of a, b, c, d. */
static inline void vhsum4(V a, V b, V c, V d, float *out)
{
    V ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    V cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    V x = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                        _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
    __m256 y = _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1)));
}
/* GEMM helpers (cpu_gemm_impl.h). vbcast4: p[0..3] into every 128-bit lane;
 * vbcast4n: the same with p[n..3] read as zero (n < 4). */
#define vbcast4(p) _mm512_broadcast_f32x4(_mm_loadu_ps(p))
#define vbcast4n(p, n) _mm512_broadcast_f32x4(_mm_maskz_loadu_ps((__mmask8)((1u << (n)) - 1u), (p)))
/* Per 128-bit lane L: [sum of a's lane L, of b's, of c's, of d's], each sum of four
 * as (x0 + x2) + (x1 + x3). */
static inline V vred4x4(V a, V b, V c, V d)
{
    V ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    V cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512d x = _mm512_castps_pd(ab), y = _mm512_castps_pd(cd);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}
#define KN(name) name##_avx512

#elif defined(CPU_SIMD_AVX2)
#include <immintrin.h>
#define VW 8
typedef __m256 V;
typedef __m256 VM;
static const int32_t cpu_avx2_mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                              0,  0,  0,  0,  0,  0,  0,  0};
#define tmask(n) _mm256_loadu_si256((const __m256i *)(cpu_avx2_mask_tab + 8 - (n)))
#define vzero() _mm256_setzero_ps()
#define vset1(x) _mm256_set1_ps(x)
#define vload(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps((p), (v))
#define vloadn(p, n) _mm256_maskload_ps((p), tmask(n))
#define vstoren(p, v, n) _mm256_maskstore_ps((p), tmask(n), (v))
#define vkeepn(v, n) _mm256_and_ps((v), _mm256_castsi256_ps(tmask(n)))
#define vadd(a, b) _mm256_add_ps(a, b)
#define vsub(a, b) _mm256_sub_ps(a, b)
#define vmul(a, b) _mm256_mul_ps(a, b)
#define vdiv(a, b) _mm256_div_ps(a, b)
#define vmax(a, b) _mm256_max_ps(a, b)
#define vmin(a, b) _mm256_min_ps(a, b)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vfnma(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define vmac(a, b, c) vfma(a, b, c)
#define vround(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vabs(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a)
#define vlt(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define vsel(m, a, b) _mm256_blendv_ps(a, b, m)
#define vany(m) (_mm256_movemask_ps(m) != 0)
static inline float vhsum(V a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float vhmax(V a)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define vpow2i(n) \
    _mm256_castsi256_ps(_mm256_slli_epi32( \
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
static inline V vcopysign(V mag, V sgn)
{
    const V m = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(m, mag), _mm256_and_ps(m, sgn));
}
/* Transposes the 8 x 8 block held in r[0..7] in place. */
static inline __attribute__((always_inline)) void vtranspose(V *r)
{
    V t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        __m256d a = _mm256_castps_pd(t[i]), b = _mm256_castps_pd(t[i + 1]);
        __m256d c = _mm256_castps_pd(t[i + 2]), d = _mm256_castps_pd(t[i + 3]);
        u[i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
        u[i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
        u[i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, d));
        u[i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
        r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
}

static inline void vhsum4(V a, V b, V c, V d, float *out)
{
    V ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    V cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    __m256d abd = _mm256_castps_pd(ab), cdd = _mm256_castps_pd(cd);
    V x = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(abd, cdd)),
                        _mm256_castpd_ps(_mm256_unpackhi_pd(abd, cdd)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)));
}
/* GEMM helpers, as for AVX-512 (128-bit lanes). */
#define vbcast4(p) _mm256_broadcast_ps((const __m128 *)(const void *)(p))
static inline V vbcast4n(const float *p, int n)
{
    __m128 x = _mm_maskload_ps(p, _mm_loadu_si128((const __m128i *)(cpu_avx2_mask_tab + 8 - n)));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(x), x, 1);
}
static inline V vred4x4(V a, V b, V c, V d)
{
    V ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    V cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    __m256d x = _mm256_castps_pd(ab), y = _mm256_castps_pd(cd);
    return _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)),
                         _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
}
#define KN(name) name##_avx2

#elif defined(CPU_SIMD_SCALAR)
#define VW 1
typedef float V;
typedef int VM;
#define vzero() 0.0f
#define vset1(x) ((float)(x))
#define vload(p) (*(p))
#define vstore(p, v) (*(p) = (v))
#define vloadn(p, n) ((void)(n), *(p))
#define vstoren(p, v, n) ((void)(n), *(p) = (v))
#define vkeepn(v, n) ((void)(n), (v))
#define vadd(a, b) ((a) + (b))
#define vsub(a, b) ((a) - (b))
#define vmul(a, b) ((a) * (b))
#define vdiv(a, b) ((a) / (b))
/* Same NaN behaviour as the SSE/AVX max/min: the second operand wins. */
#define vmax(a, b) ((a) > (b) ? (a) : (b))
#define vmin(a, b) ((a) < (b) ? (a) : (b))
#define vfma(a, b, c) fmaf(a, b, c)
#define vfnma(a, b, c) fmaf(-(a), b, c)
/* Dot products need no fused multiply-add; a baseline CPU would call libm for fmaf. */
#define vmac(a, b, c) ((a) * (b) + (c))
#define vround(a) rintf(a)
#define vabs(a) fabsf(a)
#define vlt(a, b) ((a) < (b))
#define vsel(m, a, b) ((m) ? (b) : (a))
#define vany(m) (m)
#define vhsum(a) (a)
#define vhmax(a) (a)
static inline V vpow2i(V n)
{
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
#define vcopysign(mag, sgn) copysignf(mag, sgn)
static inline void vtranspose(V *r)
{
    (void)r;
}

static inline void vhsum4(V a, V b, V c, V d, float *out)
{
    out[0] = a;
    out[1] = b;
    out[2] = c;
    out[3] = d;
}
#define KN(name) name##_scalar

#else
#error "define CPU_SIMD_AVX512, CPU_SIMD_AVX2 or CPU_SIMD_SCALAR"
#endif

#endif /* NLPD_CPU_SIMD_H */
