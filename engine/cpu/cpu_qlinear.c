/* cpu_qlinear.c - the CPU backend's bf16 / int8 linear layers (see cpu_qgemm.h):
 * packing at load, and the forward pass split across the backend's pool. */
#include "cpu/cpu_qgemm.h"
#include "cpu/cpu_qlinear.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define QMB 128 /* rows of A per work item */
#define QNB 8  /* panels of W per work item */

const eng_cpu_qkernels *eng_cpu_qkernels_for(eng_cpu_isa isa, int fmt)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (fmt == ENG_WFMT_INT8) {
        if (isa >= ENG_CPU_ISA_AVX512 && __builtin_cpu_supports("avx512vnni"))
            return &eng_cpu_qkernels_avx512;
        if (isa >= ENG_CPU_ISA_AVX2)
            return &eng_cpu_qkernels_avx2;
    } else if (fmt == ENG_WFMT_BF16) {
        if (isa >= ENG_CPU_ISA_AVX512 && __builtin_cpu_supports("avx512vnni") &&
            __builtin_cpu_supports("avx512bf16"))
            return &eng_cpu_qkernels_avx512;
    }
#else
    (void)isa;
    (void)fmt;
#endif
    return &eng_cpu_qkernels_scalar;
}

static size_t kpad(int fmt, int K)
{
    return fmt == ENG_WFMT_INT8 ? ((size_t)K + 3) / 4 * 4 : ((size_t)K + 1) / 2 * 2;
}

eng_cpu_qpacked *eng_cpu_qpack(const float *W, int N, int K, int ldw, int fmt)
{
    if (!W || N <= 0 || K <= 0 || ldw < K || (fmt != ENG_WFMT_INT8 && fmt != ENG_WFMT_BF16))
        return NULL;
    eng_cpu_qpacked *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->magic = ENG_CPU_QPACKED_MAGIC;
    h->fmt = fmt;
    h->N = N;
    h->K = K;
    h->Kp = (int)kpad(fmt, K);
    h->np = (N + ENG_QP - 1) / ENG_QP;
    size_t cols = (size_t)h->np * ENG_QP, esz = fmt == ENG_WFMT_INT8 ? 1 : 2;
    size_t bytes = cols * (size_t)h->Kp * esz;
    if (posix_memalign(&h->data, 64, bytes) != 0)
        goto fail;
    memset(h->data, 0, bytes);
    h->bytes = bytes + sizeof *h;
    if (fmt == ENG_WFMT_INT8) {
        h->sw = calloc(cols, sizeof *h->sw);
        h->colsum = calloc(cols, sizeof *h->colsum);
        if (!h->sw || !h->colsum)
            goto fail;
        h->bytes += cols * (sizeof *h->sw + sizeof *h->colsum);
        int8_t *d = h->data;
        for (int n = 0; n < N; n++) {
            const float *w = W + (size_t)n * ldw;
            float amax = 0.0f;
            for (int k = 0; k < K; k++)
                amax = fabsf(w[k]) > amax ? fabsf(w[k]) : amax;
            float s = amax > 0.0f && isfinite(amax) ? amax / 127.0f : 0.0f;
            float inv = s > 0.0f ? 127.0f / amax : 0.0f;
            int8_t *col = d + (size_t)(n / ENG_QP) * h->Kp * ENG_QP + (size_t)(n % ENG_QP) * 4;
            int32_t sum = 0;
            for (int k = 0; k < K; k++) {
                float v = nearbyintf(w[k] * inv);
                v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
                col[(size_t)(k / 4) * 4 * ENG_QP + k % 4] = (int8_t)v;
                sum += (int32_t)v;
            }
            h->sw[n] = s;
            h->colsum[n] = sum;
        }
    } else {
        uint16_t *d = h->data;
        for (int n = 0; n < N; n++) {
            const float *w = W + (size_t)n * ldw;
            uint16_t *col = d + (size_t)(n / ENG_QP) * h->Kp * ENG_QP + (size_t)(n % ENG_QP) * 2;
            for (int k = 0; k < K; k++)
                col[(size_t)(k / 2) * 2 * ENG_QP + k % 2] = eng_cpu_f32_to_bf16(w[k]);
        }
    }
    return h;
fail:
    eng_cpu_qfree(h);
    return NULL;
}

void eng_cpu_qfree(eng_cpu_qpacked *h)
{
    if (!h)
        return;
    free(h->data);
    free(h->sw);
    free(h->colsum);
    free(h);
}

void eng_cpu_qunpack(const eng_cpu_qpacked *h, float *dst)
{
    for (int n = 0; n < h->N; n++) {
        float *o = dst + (size_t)n * h->K;
        size_t base = (size_t)(n / ENG_QP) * h->Kp * ENG_QP;
        if (h->fmt == ENG_WFMT_INT8) {
            const int8_t *col = (const int8_t *)h->data + base + (size_t)(n % ENG_QP) * 4;
            for (int k = 0; k < h->K; k++)
                o[k] = (float)col[(size_t)(k / 4) * 4 * ENG_QP + k % 4] * h->sw[n];
        } else {
            const uint16_t *col = (const uint16_t *)h->data + base + (size_t)(n % ENG_QP) * 2;
            for (int k = 0; k < h->K; k++)
                o[k] = eng_cpu_bf16_to_f32(col[(size_t)(k / 2) * 2 * ENG_QP + k % 2]);
        }
    }
}

typedef struct qjob {
    const eng_cpu_qpacked *h;
    const eng_cpu_qkernels *qk;
    const eng_cpu_kernels *k;
    const float *x;
    float *y;
    const float *bias;
    eng_act act;
    int M, phase, nmb, items;
    void *aq;
    float *sa;
    size_t esz;
    atomic_int next;
} qjob;

static void qjob_quant(qjob *j, int lo, int hi)
{
    const eng_cpu_qpacked *h = j->h;
    for (int i = lo; i < hi; i++) {
        const float *x = j->x + (size_t)i * h->K;
        if (h->fmt == ENG_WFMT_INT8)
            j->sa[i] = j->qk->quant_i8((int8_t *)j->aq + (size_t)i * h->Kp, x, h->K, h->Kp);
        else
            j->qk->round_bf16((uint16_t *)j->aq + (size_t)i * h->Kp, x, h->K, h->Kp);
    }
}

static void qjob_item(qjob *j, int it)
{
    const eng_cpu_qpacked *h = j->h;
    int jb = it / j->nmb, ib = it % j->nmb; /* column blocks outer: a block of W stays hot */
    int p0 = jb * QNB, p1 = p0 + QNB < h->np ? p0 + QNB : h->np;
    int m0 = ib * QMB, m1 = m0 + QMB < j->M ? m0 + QMB : j->M;
    int c0 = p0 * ENG_QP, c1 = p1 * ENG_QP < h->N ? p1 * ENG_QP : h->N;
    eng_cpu_qtile t = {
        .M = m1 - m0, .np = p1 - p0, .ncols = c1 - c0, .K = h->Kp,
        .A = (const char *)j->aq + (size_t)m0 * h->Kp * j->esz, .lda = (size_t)h->Kp,
        .sa = j->sa ? j->sa + m0 : NULL,
        .W = (const char *)h->data + (size_t)p0 * h->Kp * ENG_QP * j->esz,
        .sw = h->sw ? h->sw + c0 : NULL, .colsum = h->colsum ? h->colsum + c0 : NULL,
        .bias = j->bias ? j->bias + c0 : NULL,
        .C = j->y + (size_t)m0 * h->N + c0, .ldc = (size_t)h->N,
    };
    if (h->fmt == ENG_WFMT_INT8)
        j->qk->i8_tile(&t);
    else
        j->qk->bf16_tile(&t);
    if (j->act != ENG_ACT_NONE)
        for (int i = m0; i < m1; i++)
            j->k->bias_act(j->y + (size_t)i * h->N + c0, NULL, 1, c1 - c0, j->act);
}

static void qjob_task(void *arg, int tid, int nt)
{
    qjob *j = arg;
    (void)tid;
    (void)nt;
    if (j->phase == 0) {
        for (;;) {
            int lo = atomic_fetch_add_explicit(&j->next, 16, memory_order_relaxed);
            if (lo >= j->M)
                break;
            qjob_quant(j, lo, lo + 16 < j->M ? lo + 16 : j->M);
        }
        return;
    }
    for (;;) {
        int it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= j->items)
            break;
        qjob_item(j, it);
    }
}

int eng_cpu_qforward(eng_backend *be, const eng_cpu_qpacked *h, float *y, const float *x, int M,
                     const float *bias, eng_act act)
{
    if (M <= 0)
        return 0;
    qjob j = {.h = h, .x = x, .y = y, .bias = bias, .act = act, .M = M,
              .k = eng_backend_cpu_kernels(be),
              .qk = eng_cpu_qkernels_for(eng_backend_cpu_isa(be), h->fmt),
              .esz = h->fmt == ENG_WFMT_INT8 ? 1 : 2};
    j.aq = malloc((size_t)M * h->Kp * j.esz + 64);
    if (h->fmt == ENG_WFMT_INT8)
        j.sa = malloc((size_t)M * sizeof(float));
    if (!j.aq || (h->fmt == ENG_WFMT_INT8 && !j.sa)) {
        free(j.aq);
        free(j.sa);
        return -1;
    }
    j.nmb = (M + QMB - 1) / QMB;
    j.items = j.nmb * ((h->np + QNB - 1) / QNB);
    double work = (double)M * h->N * h->K / (h->fmt == ENG_WFMT_INT8 ? 200.0 : 120.0);
    int nt = eng_cpu_threads_for(be, work, 5000.0);
    int ntq = eng_cpu_threads_for(be, (double)M * h->K * 0.3, 5000.0);
    atomic_init(&j.next, 0);
    if (ntq > 1)
        eng_backend_cpu_run(be, qjob_task, &j, ntq);
    else
        qjob_quant(&j, 0, M);
    j.phase = 1;
    atomic_store(&j.next, 0);
    if (nt > j.items)
        nt = j.items;
    if (nt > 1)
        eng_backend_cpu_run(be, qjob_task, &j, nt);
    else
        for (int it = 0; it < j.items; it++)
            qjob_item(&j, it);
    free(j.aq);
    free(j.sa);
    return 0;
}
