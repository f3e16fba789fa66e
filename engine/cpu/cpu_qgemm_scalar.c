/* cpu_qgemm_scalar.c - reduced-precision linear kernels for the baseline ISA, and the
 * row quantization every level shares (see cpu_qgemm.h). The reference the vector
 * levels are tested against: int8 bitwise, bf16 within fp32 summation-order error. */
#include "cpu/cpu_qgemm.h"

#include <math.h>
#include <string.h>

uint16_t eng_cpu_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float eng_cpu_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float eng_cpu_quant_row_i8(int8_t *dst, const float *x, int K, int Kp)
{
    float amax = 0.0f;
    for (int k = 0; k < K; k++) {
        float a = fabsf(x[k]);
        amax = a > amax ? a : amax;
    }
    if (!(amax > 0.0f) || !isfinite(amax)) {
        memset(dst, 0, (size_t)Kp);
        return 0.0f;
    }
    float inv = 127.0f / amax;
    for (int k = 0; k < K; k++) {
        float v = nearbyintf(x[k] * inv);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        dst[k] = (int8_t)v;
    }
    memset(dst + K, 0, (size_t)(Kp - K));
    return amax / 127.0f;
}

void eng_cpu_round_row_bf16(uint16_t *dst, const float *x, int K, int Kp)
{
    for (int k = 0; k < K; k++)
        dst[k] = eng_cpu_f32_to_bf16(x[k]);
    for (int k = K; k < Kp; k++)
        dst[k] = 0;
}

static void i8_tile(const eng_cpu_qtile *t)
{
    const int8_t *W = t->W;
    size_t ps = (size_t)t->K * ENG_QP; /* bytes per panel */
    for (int i = 0; i < t->M; i++) {
        const int8_t *a = (const int8_t *)t->A + (size_t)i * t->lda;
        float *c = t->C + (size_t)i * t->ldc;
        for (int j = 0; j < t->ncols; j++) {
            const int8_t *w = W + (size_t)(j / ENG_QP) * ps + (size_t)(j % ENG_QP) * 4;
            int32_t acc = 0;
            for (int q = 0; q < t->K / 4; q++, w += 4 * ENG_QP)
                for (int e = 0; e < 4; e++)
                    acc += (int32_t)a[4 * q + e] * w[e];
            float s = t->sa[i] * t->sw[j];
            float y = (float)acc * s;
            c[j] = t->bias ? y + t->bias[j] : y;
        }
    }
}

static void bf16_tile(const eng_cpu_qtile *t)
{
    const uint16_t *W = t->W;
    size_t ps = (size_t)t->K * ENG_QP; /* elements per panel */
    for (int i = 0; i < t->M; i++) {
        const uint16_t *a = (const uint16_t *)t->A + (size_t)i * t->lda;
        float *c = t->C + (size_t)i * t->ldc;
        for (int j = 0; j < t->ncols; j++) {
            const uint16_t *w = W + (size_t)(j / ENG_QP) * ps + (size_t)(j % ENG_QP) * 2;
            float acc = 0.0f;
            for (int q = 0; q < t->K / 2; q++, w += 2 * ENG_QP)
                acc += eng_cpu_bf16_to_f32(a[2 * q]) * eng_cpu_bf16_to_f32(w[0]) +
                       eng_cpu_bf16_to_f32(a[2 * q + 1]) * eng_cpu_bf16_to_f32(w[1]);
            c[j] = t->bias ? acc + t->bias[j] : acc;
        }
    }
}

const eng_cpu_qkernels eng_cpu_qkernels_scalar = {
    .i8_name = "scalar",
    .bf16_name = "scalar",
    .i8_tile = i8_tile,
    .bf16_tile = bf16_tile,
    .quant_i8 = eng_cpu_quant_row_i8,
    .round_bf16 = eng_cpu_round_row_bf16,
};
