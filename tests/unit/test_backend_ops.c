/* test_backend_ops.c - every op of the backend interface (backend.h), one table of
 * cases run on every backend there is: the CPU on each ISA this machine supports
 * (scalar, AVX2, AVX-512) with 1 and 2 threads, every other registered kind with a
 * device (cuda on a GPU machine; the test-only emulated CUDA backend, "cuda-emu",
 * registered by the test binary). Each case goes through the backend's memory:
 * upload, compute, download. Every result is checked against a reference (double
 * precision, finite differences or exact formulas, as each op needs) and against
 * the scalar CPU backend's result (1 thread, the first backend of the list) at the
 * tolerance of its dtype. An op a backend lacks (NULL) is reported as "not
 * supported" and counted as such, never as a pass; the CPU must support every op.
 * CPU-internal properties (ISA choice, vector math, pool, GEMM row invariance,
 * pre-packed weights) are in test_backend_cpu.c. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/arena.h"
#include "cpu/cpu_kernels.h"
#include "models/bert.h"
#include "models/marian.h" /* eng_ctx_backend */
#include "nlpd_engine.h"

/* ------------------------------------------------------------- backends */

typedef struct tbe {
    char label[48];
    eng_backend *be;
    int ref;            /* the scalar CPU, 1 thread: the reference of the others */
    int cpu;
    unsigned unsupported_seen; /* test-local: "not supported" printed once */
} tbe;

typedef struct tset {
    tbe b[24];
    int n;
} tset;

/* Prints that t lacks op (once per backend and test); the summary lists them all. */
static void note_unsupported(tbe *t, const char *op)
{
    if (t->unsupported_seen)
        return;
    t->unsupported_seen = 1;
    print_message("  [%s] %s: not supported\n", t->label, op);
}

static void set_open(tset *s)
{
    memset(s, 0, sizeof *s);
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        if (!eng_cpu_isa_supported((eng_cpu_isa)isa))
            continue;
        for (int th = 1; th <= 2; th++) {
            tbe *t = &s->b[s->n++];
            t->be = eng_backend_cpu_new_isa(th, (eng_cpu_isa)isa);
            assert_non_null(t->be);
            assert_int_equal(eng_backend_cpu_isa(t->be), isa);
            t->cpu = 1;
            t->ref = isa == ENG_CPU_ISA_SCALAR && th == 1;
            snprintf(t->label, sizeof t->label, "cpu/%s/%dt", eng_cpu_isa_name((eng_cpu_isa)isa),
                     th);
            /* the CPU is the reference: it has every op */
            assert_true(eng_backend_supports(t->be, ENG_OPS_CORE | ENG_OPS_GEN | ENG_OPS_TRAIN));
        }
    }
    assert_true(s->b[0].ref);
    for (int k = 0; k < eng_backend_reg_count(); k++) {
        const eng_backend_reg *r = eng_backend_reg_get(k);
        if (!strcmp(r->name, "cpu"))
            continue;
        int nd = r->device_count();
        for (int d = 0; d < nd && s->n < 24; d++) {
            tbe *t = &s->b[s->n];
            eng_error err = {0};
            if (r->create(d, 1, &t->be, &err)) {
                print_message("  backend %s:%d could not start: %s\n", r->name, d, err.msg);
                fail();
            }
            snprintf(t->label, sizeof t->label, "%s:%d", r->name, d);
            s->n++;
        }
    }
}

static void set_close(tset *s)
{
    for (int i = 0; i < s->n; i++)
        s->b[i].be->ops->destroy(s->b[i].be);
    s->n = 0;
}

#define FOR_EACH_BE(set, t) for (tbe *t = (set).b; t < (set).b + (set).n; t++)

/* Skips the current backend (continue) when it lacks the op. */
#define NEED(t, part, op)                                                   \
    if (!(t)->be->ops->part || !(t)->be->ops->part->op) {                   \
        note_unsupported((t), #op);                                         \
        continue;                                                           \
    }

/* ---------------------------------------------------------- memory moves */

static void *dput(eng_backend *be, const void *host, size_t bytes)
{
    if (!host)
        return NULL;
    void *d = be->ops->alloc(be, bytes ? bytes : 64);
    assert_non_null(d);
    if (bytes)
        assert_int_equal(be->ops->upload(be, d, host, bytes), 0);
    return d;
}

static void *dnew(eng_backend *be, size_t bytes)
{
    void *d = be->ops->alloc(be, bytes ? bytes : 64);
    assert_non_null(d);
    return d;
}

static void dget(eng_backend *be, void *host, const void *dev, size_t bytes)
{
    if (bytes)
        assert_int_equal(be->ops->download(be, host, dev, bytes), 0);
    assert_int_equal(be->ops->synchronize(be), 0);
}

static void dfree(eng_backend *be, void *d)
{
    if (d)
        be->ops->free(be, d);
}

/* ----------------------------------------------------- dtype tolerances */

/* Agreement with the scalar CPU: |got - ref| <= rtol * |ref| + atol. Activations are
 * fp32 (and int32 indices, exact); fp16/bf16 rows are for weights in those types. */
typedef enum { DT_F32, DT_F16, DT_BF16, DT_I32 } tdtype;
static const struct {
    const char *name;
    double rtol, atol;
} dtol[] = {
    [DT_F32] = {"f32", 1e-4, 1e-5},
    [DT_F16] = {"f16", 2e-3, 1e-3},
    [DT_BF16] = {"bf16", 1.6e-2, 1e-2},
    [DT_I32] = {"i32", 0, 0},
};

/* got (from t) against ref (the scalar CPU's result); a no-op on the reference. */
static void vs_ref(const tbe *t, const char *op, const void *got, const void *ref, size_t n,
                   tdtype dt)
{
    if (t->ref)
        return;
    for (size_t i = 0; i < n; i++) {
        if (dt == DT_I32) {
            int32_t a = ((const int32_t *)got)[i], b = ((const int32_t *)ref)[i];
            if (a != b)
                fail_msg("%s [%s] element %zu: %d, scalar cpu %d", op, t->label, i, a, b);
            continue;
        }
        double a = ((const float *)got)[i], b = ((const float *)ref)[i];
        if ((isnan(a) && isnan(b)) || a == b)
            continue;
        if (!(fabs(a - b) <= dtol[dt].rtol * fabs(b) + dtol[dt].atol))
            fail_msg("%s [%s] element %zu: %.9g, scalar cpu %.9g (%s tolerance)", op, t->label,
                     i, a, b, dtol[dt].name);
    }
}

/* ---------------------------------------------------------------- inputs */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9e3779b97f4a7c15ull + 1;
}

/* Uniform in [-1, 1). */
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *randv(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

static float *zerov(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

/* Fails with a message naming the element when |got - want| > tol. */
static void check_close(const char *what, const tbe *t, size_t i, double got, double want,
                        double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%s [%s] element %zu: got %.9g want %.9g (tol %.3g)", what, t->label, i, got,
                 want, tol);
}

/* ================================================================= memory */

static void test_memory(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    float host[1000], back[1000];
    for (int i = 0; i < 1000; i++)
        host[i] = (float)i * 0.5f;
    FOR_EACH_BE(s, t)
    {
        eng_backend *be = t->be;
        assert_non_null(be->ops->name);
        assert_true(be->threads >= 1);
        float *p = be->ops->alloc(be, sizeof host);
        assert_non_null(p);
        if (t->cpu)
            assert_int_equal((uintptr_t)p % 64, 0);
        assert_int_equal(be->ops->upload(be, p, host, sizeof host), 0);
        memset(back, 0, sizeof back);
        dget(be, back, p, sizeof back);
        assert_memory_equal(host, back, sizeof host);
        be->ops->zero(be, p + 10, 100 * sizeof(float));
        dget(be, back, p, sizeof back);
        for (int i = 0; i < 1000; i++)
            assert_true(back[i] == (i >= 10 && i < 110 ? 0.0f : host[i]));
        be->ops->free(be, p);
        be->ops->free(be, NULL);
        /* the weight view: a read-only copy (the CPU's is the host block itself) */
        void *w = be->ops->weights_upload(be, host, sizeof host);
        assert_non_null(w);
        if (t->cpu)
            assert_ptr_equal(w, host);
        memset(back, 0, sizeof back);
        dget(be, back, w, sizeof back);
        assert_memory_equal(host, back, sizeof host);
        be->ops->weights_free(be->device, w);
    }
    set_close(&s);
}

size_t tu_cuda_emu_pinned_bytes(void) __attribute__((weak));      /* tests/cuda_emu/ */
long long tu_cuda_emu_pageable_copies(void) __attribute__((weak)); /* tests/cuda_emu/ */

static int is_emu(const tbe *t) { return !strncmp(t->label, "cuda-emu", 8); }

/* Uploads and downloads queued without a synchronisation between them, one larger than
 * a backend's first staging buffer and one larger than its largest (CUDA: 64 KiB and
 * 16 MiB of pinned memory), a download queued before an upload to the same memory:
 * after synchronize every result is right. On the emulated CUDA backend no copy touches
 * pageable memory asynchronously, the pinned buffer grew but stays bounded, and a
 * download is not in the caller's memory before synchronize (as on a GPU). */
static void test_transfers(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    size_t na = 1000, nb = 300 * 1024 / 4, nc = 17u * 1024 * 1024 / 4 + 3;
    float *a = randv(na, 1), *a2 = randv(na, 1), *b = randv(nb, 1), *c = randv(nc, 1);
    float *ha = malloc(na * 4), *ha2 = malloc(na * 4), *hb = malloc(nb * 4), *hc = malloc(nc * 4);
    FOR_EACH_BE(s, t)
    {
        eng_backend *be = t->be;
        int emu = is_emu(t) && tu_cuda_emu_pageable_copies && tu_cuda_emu_pinned_bytes;
        long long pg0 = emu ? tu_cuda_emu_pageable_copies() : 0;
        float *da = be->ops->alloc(be, na * 4), *db = be->ops->alloc(be, nb * 4),
              *dc = be->ops->alloc(be, nc * 4);
        assert_true(da && db && dc);
        memset(ha, 0, na * 4), memset(ha2, 0, na * 4), memset(hb, 0, nb * 4);
        memset(hc, 0, nc * 4);
        assert_int_equal(be->ops->upload(be, da, a, na * 4), 0);
        assert_int_equal(be->ops->upload(be, db, b, nb * 4), 0);
        assert_int_equal(be->ops->download(be, ha, da, na * 4), 0);
        assert_int_equal(be->ops->upload(be, da, a2, na * 4), 0); /* after the download */
        assert_int_equal(be->ops->download(be, hb, db, nb * 4), 0);
        assert_int_equal(be->ops->download(be, ha2, da, na * 4), 0);
        if (emu) /* not delivered before synchronize */
            assert_true(hb[0] == 0.0f && ha2[0] == 0.0f);
        assert_int_equal(be->ops->synchronize(be), 0);
        assert_memory_equal(ha, a, na * 4);
        assert_memory_equal(ha2, a2, na * 4);
        assert_memory_equal(hb, b, nb * 4);
        assert_int_equal(be->ops->upload(be, dc, c, nc * 4), 0);
        assert_int_equal(be->ops->download(be, hc, dc, nc * 4), 0);
        assert_int_equal(be->ops->synchronize(be), 0);
        assert_memory_equal(hc, c, nc * 4);
        if (emu) {
            size_t pin = tu_cuda_emu_pinned_bytes();
            assert_int_equal(tu_cuda_emu_pageable_copies() - pg0, 0);
            assert_true(pin >= nb * 4 && pin <= 16u * 1024 * 1024);
            print_message("  [%s] staged through %zu bytes of pinned memory, no pageable "
                          "async copy\n", t->label, pin);
        }
        be->ops->free(be, da), be->ops->free(be, db), be->ops->free(be, dc);
    }
    free(a), free(a2), free(b), free(c), free(ha), free(ha2), free(hb), free(hc);
    set_close(&s);
}

/* =================================================================== GEMM */

static void gemm_case(tset *s, int trans_b, int M, int N, int K, int pad, float alpha,
                      float beta)
{
    int lda = K + pad, ldb = (trans_b ? K : N) + pad, ldc = N + pad;
    size_t bsz = (size_t)(trans_b ? N : K) * ldb, csz = (size_t)M * ldc;
    float *A = randv((size_t)M * lda, 1.0f), *B = randv(bsz, 1.0f);
    float *C0 = randv(csz, 1.0f), *C = zerov(csz), *R = zerov(csz);
    if (beta == 0.0f) /* BLAS semantics: C is not read when beta == 0 */
        for (size_t i = 0; i < csz; i++)
            C0[i] = NAN;
    FOR_EACH_BE(*s, t)
    {
        NEED(t, core, gemm);
        eng_backend *be = t->be;
        float *dA = dput(be, A, (size_t)M * lda * sizeof(float)), *dB = dput(be, B, bsz * sizeof(float));
        float *dC = dput(be, C0, csz * sizeof(float));
        be->ops->core->gemm(be, trans_b, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
        dget(be, C, dC, csz * sizeof(float));
        for (int i = 0; i < M; i++)
            for (int j = 0; j < ldc; j++) {
                size_t ix = (size_t)i * ldc + j;
                if (j >= N) { /* padding untouched */
                    assert_memory_equal(&C[ix], &C0[ix], sizeof(float));
                    continue;
                }
                double acc = 0, mag = 0;
                for (int kk = 0; kk < K; kk++) {
                    double b = trans_b ? B[(size_t)j * ldb + kk] : B[(size_t)kk * ldb + j];
                    acc += (double)A[(size_t)i * lda + kk] * b;
                    mag += fabs((double)A[(size_t)i * lda + kk] * b);
                }
                double want = alpha * acc + (beta != 0.0f ? beta * (double)C0[ix] : 0.0);
                double tol = 1e-5 * (fabs(alpha) * mag + fabs(beta) * 1.0) + 1e-7;
                check_close("gemm", t, ix, C[ix], want, tol);
            }
        if (t->ref)
            memcpy(R, C, csz * sizeof(float));
        vs_ref(t, "gemm", C, R, csz, DT_F32);
        dfree(be, dA), dfree(be, dB), dfree(be, dC);
    }
    free(A), free(B), free(C0), free(C), free(R);
}

static void test_gemm(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(1);
    for (int tb = 0; tb <= 1; tb++) {
        gemm_case(&s, tb, 1, 1, 1, 0, 1.0f, 0.0f);
        gemm_case(&s, tb, 7, 13, 5, 3, 0.7f, 0.3f);
        gemm_case(&s, tb, 33, 17, 65, 1, 1.0f, 1.0f);
        gemm_case(&s, tb, 20, 37, 50, 2, 1.5f, 0.0f);
        gemm_case(&s, tb, 100, 1152, 384, 0, 1.0f, 0.0f); /* block-packed B (many row items) */
        gemm_case(&s, tb, 200, 96, 129, 5, 1.0f, 0.0f);  /* split by rows */
        gemm_case(&s, tb, 3, 1001, 801, 2, -0.5f, 2.0f); /* split by columns */
        gemm_case(&s, tb, 5, 9, 0, 1, 1.0f, 0.5f);       /* K = 0: C = beta C */
    }
    set_close(&s);
    /* The CPU's benchmarking route: every GEMM on OpenBLAS, with its own threads (read
     * when a CPU backend is created). */
    setenv("NLPD_CPU_GEMM", "blas", 1);
    set_open(&s);
    gemm_case(&s, 1, 20, 37, 50, 2, 1.5f, 0.0f);
    gemm_case(&s, 1, 200, 96, 129, 5, 1.0f, 0.25f);
    set_close(&s);
    unsetenv("NLPD_CPU_GEMM");
}

/* gemm_ex: C = alpha op(A) op(B) + beta C, every transpose combination. */
static void test_gemm_ex(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(21);
    const int M = 37, N = 29, K = 41;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *A = randv((size_t)M * K, 1), *B = randv((size_t)K * N, 1);
            float *C0 = randv((size_t)M * N, 1), *want = zerov((size_t)M * N);
            float *C = zerov((size_t)M * N), *R = zerov((size_t)M * N);
            int lda = ta ? M : K, ldb = tb ? K : N;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                               (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                    want[(size_t)i * N + j] = (float)(0.5 * acc + 2.0 * C0[(size_t)i * N + j]);
                }
            FOR_EACH_BE(s, t)
            {
                NEED(t, train, gemm_ex);
                eng_backend *be = t->be;
                size_t b = (size_t)M * N * sizeof(float);
                float *dA = dput(be, A, (size_t)M * K * sizeof(float));
                float *dB = dput(be, B, (size_t)K * N * sizeof(float)), *dC = dput(be, C0, b);
                be->ops->train->gemm_ex(be, ta, tb, M, N, K, 0.5f, dA, lda, dB, ldb, 2.0f, dC, N);
                dget(be, C, dC, b);
                float d = tu_max_abs_diff(C, want, (size_t)M * N);
                if (!(d <= 1e-4f))
                    fail_msg("gemm_ex(trans_a %d, trans_b %d) [%s] differs by %g", ta, tb,
                             t->label, d);
                if (t->ref)
                    memcpy(R, C, b);
                vs_ref(t, "gemm_ex", C, R, (size_t)M * N, DT_F32);
                dfree(be, dA), dfree(be, dB), dfree(be, dC);
            }
            free(A), free(B), free(C0), free(want), free(C), free(R);
        }
    set_close(&s);
}

/* ============================================ linear layers, 16-bit weights */

static double act_ref(double x, eng_act act);

/* v rounded to nearest even with `bits` significant bits (fp16: 11, bf16: 8), the
 * exponent no lower than min_exp (fp16 subnormals: values are multiples of 2^-24). */
static double round_sig(double v, int bits, int min_exp)
{
    if (v == 0)
        return 0;
    int e;
    frexp(v, &e); /* v = m 2^e, m in [0.5, 1) */
    if (e < min_exp)
        e = min_exp;
    return ldexp(nearbyint(ldexp(v, bits - e)), e - bits);
}

static double round16(double v, int fmt)
{
    return fmt == ENG_WFMT_F16 ? round_sig(v, 11, -13) : round_sig(v, 8, -125);
}

/* linear_pack / linear_forward in fp16 and bf16 (backends that pack them: cuda on cuBLAS
 * GemmEx with 16-bit inputs; the CPU packs bf16). Every backend is checked against the
 * scalar CPU's fp32 gemm + bias_act at the dtype's tolerance; a device backend (whose
 * activations are converted too) also against the exact products of the 16-bit values
 * (fp32 accumulation: 1e-5 of the row's magnitude), and its weights read back must be
 * exactly the rounded ones, so a wrong type, rounding or layout fails. */
static void linear16_case(tset *s, int fmt, int M, int N, int K, int pad, eng_act act,
                          double *worst)
{
    int ldw = K + pad;
    float *W = randv((size_t)N * ldw, 0.25f), *x = randv((size_t)M * K, 0.25f);
    float *b = randv((size_t)N, 0.25f), *R = zerov((size_t)M * N), *y = zerov((size_t)M * N);
    float *un = zerov((size_t)N * K);
    tdtype dt = fmt == ENG_WFMT_F16 ? DT_F16 : DT_BF16;
    const char *op = fmt == ENG_WFMT_F16 ? "linear_forward(fp16)" : "linear_forward(bf16)";
    { /* the reference: the scalar CPU, fp32 */
        eng_backend *rb = s->b[0].be;
        assert_true(s->b[0].ref);
        rb->ops->core->gemm(rb, 1, M, N, K, 1.0f, x, K, W, ldw, 0.0f, R, N);
        rb->ops->core->bias_act(rb, R, b, M, N, act);
    }
    FOR_EACH_BE(*s, t)
    {
        NEED(t, core, linear_pack);
        eng_backend *be = t->be;
        const eng_backend_core_ops *c = be->ops->core;
        float *dW = dput(be, W, (size_t)N * ldw * sizeof(float));
        void *h = c->linear_pack(be, dW, N, K, ldw, fmt);
        if (!h) {
            dfree(be, dW);
            note_unsupported(t, op);
            continue;
        }
        dfree(be, dW); /* the handle is self-contained */
        float *dx = dput(be, x, (size_t)M * K * sizeof(float)), *db = dput(be, b, N * sizeof(float));
        float *dy = dnew(be, (size_t)M * N * sizeof(float));
        assert_int_equal(c->linear_forward(be, h, dy, dx, M, db, act), 0);
        dget(be, y, dy, (size_t)M * N * sizeof(float));
        assert_null(be->ops->health ? be->ops->health(be) : NULL);
        vs_ref(t, op, y, R, (size_t)M * N, dt);
        if (!t->cpu) {
            const char *kname = NULL;
            assert_int_equal(c->linear_info(be, h, &kname), (size_t)N * K * 2);
            assert_string_equal(kname, fmt == ENG_WFMT_F16 ? "cublas_fp16" : "cublas_bf16");
            c->linear_unpack(h, un);
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++)
                    if (un[(size_t)n * K + k] != (float)round16(W[(size_t)n * ldw + k], fmt))
                        fail_msg("%s [%s]: weight (%d, %d) reads back %.9g, want %.9g", op,
                                 t->label, n, k, un[(size_t)n * K + k],
                                 round16(W[(size_t)n * ldw + k], fmt));
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double acc = 0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        double p = round16(x[(size_t)i * K + k], fmt) *
                                   round16(W[(size_t)j * ldw + k], fmt);
                        acc += p;
                        mag += fabs(p);
                    }
                    double want = act_ref(acc + b[j], act);
                    size_t ix = (size_t)i * N + j;
                    check_close(op, t, ix, y[ix], want, 1e-5 * (mag + fabs(b[j])) + 1e-7);
                    double d = fabs(y[ix] - R[ix]);
                    *worst = d > *worst ? d : *worst;
                }
        }
        c->linear_free(h);
        dfree(be, dx), dfree(be, db), dfree(be, dy);
    }
    free(W), free(x), free(b), free(R), free(y), free(un);
}

static void test_linear16(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(16);
    for (int fmt = ENG_WFMT_BF16; fmt <= ENG_WFMT_F16; fmt += ENG_WFMT_F16 - ENG_WFMT_BF16) {
        double worst = 0; /* largest |16-bit - fp32| on a device backend */
        linear16_case(&s, fmt, 1, 1, 1, 0, ENG_ACT_NONE, &worst);
        linear16_case(&s, fmt, 7, 13, 5, 3, ENG_ACT_NONE, &worst);
        linear16_case(&s, fmt, 33, 96, 65, 1, ENG_ACT_GELU, &worst);
        linear16_case(&s, fmt, 20, 384, 384, 0, ENG_ACT_TANH, &worst);
        linear16_case(&s, fmt, 5, 1536, 384, 0, ENG_ACT_GELU, &worst);
        print_message("  %s: largest |diff| vs fp32 on a device backend: %.3g\n",
                      fmt == ENG_WFMT_F16 ? "fp16" : "bf16", worst);
    }
    set_close(&s);
}

/* ======================================================== elementwise ops */

static double act_ref(double x, eng_act act)
{
    switch (act) {
    case ENG_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case ENG_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case ENG_ACT_RELU: return x > 0 ? x : 0;
    case ENG_ACT_TANH: return tanh(x);
    default: return x;
    }
}

static void bias_act_case(tset *s, int rows, int cols, int with_bias, eng_act act)
{
    size_t n = (size_t)rows * cols;
    float *x0 = randv(n, 6.0f), *bias = with_bias ? randv((size_t)cols, 1.0f) : NULL;
    float *x = zerov(n), *R = zerov(n);
    FOR_EACH_BE(*s, t)
    {
        NEED(t, core, bias_act);
        eng_backend *be = t->be;
        float *dx = dput(be, x0, n * sizeof(float));
        float *db = dput(be, bias, (size_t)cols * sizeof(float));
        be->ops->core->bias_act(be, dx, db, rows, cols, act);
        dget(be, x, dx, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            float in = bias ? x0[i] + bias[i % cols] : x0[i]; /* the add is in float */
            double want = act_ref(in, act);
            /* 1e-5 relative; the absolute part covers torch's own 1 + erf
             * cancellation for very negative GELU inputs. */
            check_close("bias_act", t, i, x[i], want, 1e-5 * fabs(want) + 1e-6);
        }
        if (t->ref)
            memcpy(R, x, n * sizeof(float));
        vs_ref(t, "bias_act", x, R, n, DT_F32);
        dfree(be, dx), dfree(be, db);
    }
    free(x0), free(bias), free(x), free(R);
}

static void test_bias_act(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(2);
    static const int shapes[][2] = {{1, 1}, {3, 5}, {2, 16}, {4, 17}, {5, 37}, {3, 384}};
    for (int a = ENG_ACT_NONE; a <= ENG_ACT_TANH; a++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (int b = 0; b <= 1; b++)
                bias_act_case(&s, shapes[k][0], shapes[k][1], b, (eng_act)a);
    bias_act_case(&s, 200, 1537, 1, ENG_ACT_GELU); /* big enough to be threaded */
    bias_act_case(&s, 300, 1536, 1, ENG_ACT_RELU);
    set_close(&s);
}

static void test_bias_silu(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(26);
    enum { R = 5, C = 37 };
    float x0[R * C], b[C], ref[R * C], x[R * C], rr[R * C];
    for (int i = 0; i < C; i++)
        b[i] = frand();
    for (int i = 0; i < R * C; i++) {
        x0[i] = frand() * 12;
        double y = (double)x0[i] + b[i % C];
        ref[i] = (float)(y / (1 + exp(-y)));
    }
    x0[0] = 100.0f, ref[0] = 100.0f + b[0];
    x0[1] = -100.0f, ref[1] = 0.0f;
    FOR_EACH_BE(s, t)
    {
        NEED(t, gen, bias_silu);
        eng_backend *be = t->be;
        float *dx = dput(be, x0, sizeof x0), *db = dput(be, b, sizeof b);
        be->ops->gen->bias_silu(be, dx, db, R, C);
        dget(be, x, dx, sizeof x);
        for (int i = 0; i < R * C; i++)
            if (!(fabsf(x[i] - ref[i]) <= 2e-6f * (1 + fabsf(ref[i]))))
                fail_msg("bias_silu [%s] element %d: %.9g want %.9g", t->label, i, x[i], ref[i]);
        if (t->ref)
            memcpy(rr, x, sizeof x);
        vs_ref(t, "bias_silu", x, rr, R * C, DT_F32);
        dfree(be, dx), dfree(be, db);
    }
    set_close(&s);
}

/* ========================================================== add_layernorm */

enum { LN_NO_RES, LN_RES, LN_ALIAS_X, LN_ALIAS_RES };

static void ln_case(tset *s, int rows, int cols, int mode, float eps)
{
    size_t n = (size_t)rows * cols;
    float *x0 = randv(n, 2.0f), *r0 = randv(n, 2.0f);
    float *g = randv((size_t)cols, 1.0f), *b = randv((size_t)cols, 1.0f);
    float *out = zerov(n), *R = zerov(n);
    /* Row 0 has a mean far from 0 (std ~1): a one-pass E[x^2] - E[x]^2 in float
     * would be off by ~1e-3 there; the two-pass variance is not. */
    for (int i = 0; i < cols; i++)
        x0[i] += 100.0f;
    FOR_EACH_BE(*s, t)
    {
        NEED(t, core, add_layernorm);
        eng_backend *be = t->be;
        size_t bytes = n * sizeof(float);
        float *dx = dput(be, x0, bytes), *dr = dput(be, r0, bytes), *dout = dnew(be, bytes);
        float *dg = dput(be, g, (size_t)cols * sizeof(float));
        float *db = dput(be, b, (size_t)cols * sizeof(float));
        float *o = mode == LN_ALIAS_X ? dx : mode == LN_ALIAS_RES ? dr : dout;
        be->ops->core->add_layernorm(be, o, dx, mode == LN_NO_RES ? NULL : dr, dg, db, rows, cols,
                                     eps);
        dget(be, out, o, bytes);
        for (int i = 0; i < rows; i++) {
            double mean = 0, var = 0;
            float v[cols];
            for (int j = 0; j < cols; j++) {
                size_t ix = (size_t)i * cols + j;
                v[j] = mode == LN_NO_RES ? x0[ix] : x0[ix] + r0[ix];
                mean += v[j];
            }
            mean /= cols;
            for (int j = 0; j < cols; j++)
                var += (v[j] - mean) * (v[j] - mean);
            var /= cols;
            for (int j = 0; j < cols; j++) {
                double want = (v[j] - mean) / sqrt(var + eps) * g[j] + b[j];
                size_t ix = (size_t)i * cols + j;
                check_close("add_layernorm", t, ix, out[ix], want, 1e-5 * (fabs(want) + 1));
            }
        }
        if (t->ref)
            memcpy(R, out, bytes);
        vs_ref(t, "add_layernorm", out, R, n, DT_F32);
        dfree(be, dx), dfree(be, dr), dfree(be, dout), dfree(be, dg), dfree(be, db);
    }
    free(x0), free(r0), free(g), free(b), free(out), free(R);
}

static void test_add_layernorm(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(3);
    static const int shapes[][2] = {{1, 1}, {2, 7}, {3, 16}, {2, 33}, {5, 384}, {2, 1000}};
    for (int m = LN_NO_RES; m <= LN_ALIAS_RES; m++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            ln_case(&s, shapes[k][0], shapes[k][1], m, 1e-12f);
    ln_case(&s, 300, 768, LN_RES, 1e-5f); /* threaded */
    ln_case(&s, 64, 384, LN_ALIAS_X, 1e-5f);

    /* A constant row has zero variance: the output is beta. */
    float x[8] = {3, 3, 3, 3, 3, 3, 3, 3}, g[8], b[8], o[8];
    for (int i = 0; i < 8; i++) {
        g[i] = 1.0f + (float)i;
        b[i] = (float)i * 0.25f;
    }
    FOR_EACH_BE(s, t)
    {
        NEED(t, core, add_layernorm);
        eng_backend *be = t->be;
        float *dx = dput(be, x, sizeof x), *dg = dput(be, g, sizeof g), *db = dput(be, b, sizeof b);
        float *dout = dnew(be, sizeof o);
        be->ops->core->add_layernorm(be, dout, dx, NULL, dg, db, 1, 8, 1e-12f);
        dget(be, o, dout, sizeof o);
        for (int i = 0; i < 8; i++)
            assert_true(fabsf(o[i] - b[i]) < 1e-6f);
        dfree(be, dx), dfree(be, dg), dfree(be, db), dfree(be, dout);
    }
    set_close(&s);
}

/* ================================================================= embed */

static void embed_case(tset *s, int ntok, int dim, int with_type)
{
    int vocab = 50, npos = 40, ntype = 2;
    float *w = randv((size_t)vocab * dim, 1.0f), *p = randv((size_t)npos * dim, 1.0f);
    float *ty = randv((size_t)ntype * dim, 1.0f);
    int32_t *ids = malloc(ntok * sizeof *ids), *pids = malloc(ntok * sizeof *pids);
    int32_t *tids = malloc(ntok * sizeof *tids);
    float *out = zerov((size_t)ntok * dim), *R = zerov((size_t)ntok * dim);
    for (int i = 0; i < ntok; i++) {
        ids[i] = (int32_t)((i * 7 + 3) % vocab);
        pids[i] = i % npos;
        tids[i] = (i / 3) % ntype;
    }
    FOR_EACH_BE(*s, t)
    {
        NEED(t, core, embed);
        eng_backend *be = t->be;
        size_t ib = (size_t)ntok * sizeof(int32_t), ob = (size_t)ntok * dim * sizeof(float);
        float *dw = dput(be, w, (size_t)vocab * dim * sizeof(float));
        float *dp = dput(be, p, (size_t)npos * dim * sizeof(float));
        float *dt = with_type ? dput(be, ty, (size_t)ntype * dim * sizeof(float)) : NULL;
        int32_t *di = dput(be, ids, ib), *dpi = dput(be, pids, ib);
        int32_t *dti = with_type ? dput(be, tids, ib) : NULL;
        float *dout = dnew(be, ob);
        be->ops->core->embed(be, dout, dw, dp, dt, di, dpi, dti, ntok, dim);
        dget(be, out, dout, ob);
        for (int i = 0; i < ntok; i++)
            for (int d = 0; d < dim; d++) {
                double a = w[(size_t)ids[i] * dim + d], b = p[(size_t)pids[i] * dim + d];
                double tv = with_type ? ty[(size_t)tids[i] * dim + d] : 0.0;
                double want = a + b + tv;
                check_close("embed", t, (size_t)i * dim + d, out[(size_t)i * dim + d], want,
                            1e-6 * (fabs(a) + fabs(b) + fabs(tv)));
            }
        if (t->ref)
            memcpy(R, out, ob);
        vs_ref(t, "embed", out, R, (size_t)ntok * dim, DT_F32);
        dfree(be, dw), dfree(be, dp), dfree(be, dt), dfree(be, di), dfree(be, dpi);
        dfree(be, dti), dfree(be, dout);
    }
    free(w), free(p), free(ty), free(ids), free(pids), free(tids), free(out), free(R);
}

static void test_embed(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(4);
    embed_case(&s, 1, 7, 1);
    embed_case(&s, 13, 7, 0);
    embed_case(&s, 40, 384, 1);
    embed_case(&s, 300, 384, 0); /* threaded */
    embed_case(&s, 300, 384, 1);
    set_close(&s);
}

static void test_embed_scaled(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(22);
    enum { V = 7, P = 5, D = 9, T = 6 };
    float table[V * D], pos[P * D], out[T * D];
    int32_t ids[T] = {3, 0, 6, 3, 1, 5}, pids[T] = {0, 1, 2, 4, 3, 0};
    for (int i = 0; i < V * D; i++)
        table[i] = frand() * 3;
    for (int i = 0; i < P * D; i++)
        pos[i] = frand();
    FOR_EACH_BE(s, t)
    {
        NEED(t, gen, embed_scaled);
        eng_backend *be = t->be;
        float *dtab = dput(be, table, sizeof table), *dpos = dput(be, pos, sizeof pos);
        int32_t *di = dput(be, ids, sizeof ids), *dp = dput(be, pids, sizeof pids);
        float *dout = dnew(be, sizeof out);
        be->ops->gen->embed_scaled(be, dout, dtab, 2.8284271f, dpos, di, dp, T, D);
        dget(be, out, dout, sizeof out);
        for (int tk = 0; tk < T; tk++)
            for (int c = 0; c < D; c++) {
                float e = table[ids[tk] * D + c] * 2.8284271f;
                assert_true(out[tk * D + c] == e + pos[pids[tk] * D + c]); /* bitwise */
            }
        dfree(be, dtab), dfree(be, dpos), dfree(be, di), dfree(be, dp), dfree(be, dout);
    }
    set_close(&s);
}

/* ============================================================= attention */

typedef struct attn_case {
    int nseq;
    const int *nq, *nk;
    int heads, hd, causal;
} attn_case;

/* The double reference of one query row; out stays zero when it sees no key. */
static void attn_ref_row(const float *q, const float *k, int k_ld, const float *v, int v_ld,
                         int lim, int hd, double scale, double *out)
{
    double *sc = malloc((size_t)(lim > 0 ? lim : 1) * sizeof *sc), m = -INFINITY, sum = 0;
    for (int j = 0; j < lim; j++) {
        double d = 0;
        for (int e = 0; e < hd; e++)
            d += (double)q[e] * k[(size_t)j * k_ld + e];
        sc[j] = d * scale;
        m = sc[j] > m ? sc[j] : m;
    }
    for (int j = 0; j < lim; j++)
        sum += (sc[j] = exp(sc[j] - m));
    for (int e = 0; e < hd; e++) {
        double o = 0;
        for (int j = 0; j < lim; j++)
            o += sc[j] * v[(size_t)j * v_ld + e];
        out[e] = lim > 0 ? o / sum : 0.0;
    }
    free(sc);
}

long long tu_cuda_emu_blas_calls(void) __attribute__((weak)); /* tests/cuda_emu/ */
static long long attn_emu_blas = -1; /* cuBLAS calls of attn_run's last cuda-emu run */

static void attn_run(tset *s, const attn_case *ac)
{
    int H = ac->heads, hd = ac->hd, w = H * hd;
    int32_t *qo = malloc((ac->nseq + 1) * sizeof *qo), *ko = malloc((ac->nseq + 1) * sizeof *ko);
    qo[0] = ko[0] = 0;
    for (int i = 0; i < ac->nseq; i++) {
        qo[i + 1] = qo[i] + ac->nq[i];
        ko[i + 1] = ko[i] + ac->nk[i];
    }
    int nq = qo[ac->nseq], nk = ko[ac->nseq];
    /* Q in its own buffer with a padded stride; K and V interleaved as a fused KV
     * projection would leave them; out with padding columns that must survive. */
    int q_ld = w + 3, kv_ld = 2 * w + 1, o_ld = w + 5;
    size_t qn = (size_t)(nq ? nq : 1) * q_ld, kvn = (size_t)(nk ? nk : 1) * kv_ld;
    size_t on = (size_t)(nq ? nq : 1) * o_ld;
    float *q = randv(qn, 2.0f), *kv = randv(kvn, 2.0f);
    const float *k = kv, *v = kv + w;
    double scale = 1.0 / sqrt((double)hd);
    double *ref = calloc((size_t)(nq ? nq : 1) * w, sizeof *ref);
    for (int sq = 0; sq < ac->nseq; sq++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < ac->nq[sq]; i++) {
                int lim = ac->nk[sq];
                if (ac->causal) {
                    lim = i + 1 + ac->nk[sq] - ac->nq[sq];
                    lim = lim < 0 ? 0 : lim > ac->nk[sq] ? ac->nk[sq] : lim;
                }
                attn_ref_row(q + (size_t)(qo[sq] + i) * q_ld + h * hd,
                             k + (size_t)ko[sq] * kv_ld + h * hd, kv_ld,
                             v + (size_t)ko[sq] * kv_ld + h * hd, kv_ld, lim, hd, scale,
                             ref + (size_t)(qo[sq] + i) * w + h * hd);
            }
    float *out0 = malloc(on * sizeof *out0), *out = zerov(on), *R = zerov(on);
    for (size_t i = 0; i < on; i++)
        out0[i] = 12345.0f;
    FOR_EACH_BE(*s, t)
    {
        NEED(t, core, attention);
        eng_backend *be = t->be;
        float *dq = dput(be, q, qn * sizeof(float)), *dkv = dput(be, kv, kvn * sizeof(float));
        float *dout = dput(be, out0, on * sizeof(float));
        int32_t *dqo = dput(be, qo, (size_t)(ac->nseq + 1) * sizeof(int32_t));
        int32_t *dko = dput(be, ko, (size_t)(ac->nseq + 1) * sizeof(int32_t));
        int emu = !strncmp(t->label, "cuda-emu", 8) && tu_cuda_emu_blas_calls;
        long long b0 = emu ? tu_cuda_emu_blas_calls() : 0;
        be->ops->core->attention(be, dout, o_ld, dq, q_ld, dkv, kv_ld, dkv + w, kv_ld, dqo, dko,
                                 ac->nseq, H, hd, (float)scale, ac->causal);
        if (emu)
            attn_emu_blas = tu_cuda_emu_blas_calls() - b0;
        dget(be, out, dout, on * sizeof(float));
        for (int i = 0; i < nq; i++)
            for (int e = 0; e < o_ld; e++) {
                float got = out[(size_t)i * o_ld + e];
                if (e >= w) {
                    assert_true(got == 12345.0f);
                    continue;
                }
                /* Outputs are convex combinations of V entries (|v| <= 2); float
                 * rounding of the hd-term scores and of exp/sum stays near 1e-6. */
                check_close("attention", t, (size_t)i * w + e, got, ref[(size_t)i * w + e],
                            1e-5);
            }
        if (t->ref)
            memcpy(R, out, on * sizeof(float));
        vs_ref(t, "attention", out, R, on, DT_F32);
        dfree(be, dq), dfree(be, dkv), dfree(be, dout), dfree(be, dqo), dfree(be, dko);
    }
    free(q), free(kv), free(ref), free(qo), free(ko), free(out0), free(out), free(R);
}

static void test_attention(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(5);
    static const int lens[] = {1, 3, 17, 64, 130};
    static const int cross_q[] = {2, 1, 20, 7, 130};
    static const int shapes[][2] = {{1, 4}, {4, 16}, {12, 32}, {2, 64}, {3, 33}, {1, 128}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int causal = 0; causal <= 1; causal++) {
            attn_case self = {5, lens, lens, shapes[k][0], shapes[k][1], causal};
            attn_run(&s, &self);
            /* nq != nk: cross attention, or causal with a KV cache (nq <= nk);
             * causal queries with nq > nk that see no key give zeros. */
            attn_case cross = {5, cross_q, lens, shapes[k][0], shapes[k][1], causal};
            attn_run(&s, &cross);
        }
    static const int one[] = {1}, kv17[] = {17}, zero[] = {0};
    attn_case step = {1, one, kv17, 8, 64, 1}; /* a decoder step */
    attn_run(&s, &step);
    attn_case empty = {1, zero, kv17, 2, 8, 0};
    attn_run(&s, &empty);
    attn_case nokeys = {1, kv17, zero, 2, 8, 0}; /* no keys: zeros */
    attn_run(&s, &nokeys);
    set_close(&s);
}

/* Self-attention of several heads over sequences of different lengths (an empty one
 * among them), causal or not, against the double reference on every backend; on the
 * emulated CUDA backend it runs as two cublasGemmStridedBatchedEx per sequence that has
 * queries (the heads batched), and a sequence with queries but no keys falls back to
 * the warp kernel (zeros). */
static void test_attention_batched(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(11);
    int have_emu = 0;
    FOR_EACH_BE(s, t)
    have_emu |= !strncmp(t->label, "cuda-emu", 8);
    static const int lens[] = {5, 1, 0, 40, 23, 64};
    static const int qs[] = {5, 1, 0, 12, 23, 70};
    for (int causal = 0; causal <= 1; causal++) {
        attn_case self = {6, lens, lens, 6, 16, causal};
        attn_emu_blas = -1;
        attn_run(&s, &self);
        if (have_emu)
            assert_int_equal(attn_emu_blas, 2 * 5); /* 5 sequences with queries */
        attn_case cross = {6, qs, lens, 3, 24, causal}; /* nq != nk */
        attn_emu_blas = -1;
        attn_run(&s, &cross);
        if (have_emu)
            assert_int_equal(attn_emu_blas, 2 * 5);
    }
    static const int q2[] = {3, 4}, k2[] = {7, 0};
    attn_case keyless = {2, q2, k2, 4, 8, 0};
    attn_emu_blas = -1;
    attn_run(&s, &keyless);
    if (have_emu)
        assert_int_equal(attn_emu_blas, 0);
    else
        print_message("  no cuda-emu backend: the strided-batched path not checked\n");
    set_close(&s);
}

/* Naive attention in double for sequence s, head h (attention_kv's reference). */
static void ref_attention(float *out, int out_ld, const float *q, int q_ld, const float *k,
                          int k_ld, const float *v, int v_ld, int q0, int nq, int k0, int nk,
                          int h, int hd, float scale, int causal)
{
    for (int i = 0; i < nq; i++) {
        int n = causal ? i + nk - nq + 1 : nk;
        double p[256], mx = -1e300, sum = 0;
        for (int j = 0; j < n; j++) {
            double d = 0;
            for (int c = 0; c < hd; c++)
                d += (double)q[(q0 + i) * q_ld + h * hd + c] * k[(k0 + j) * k_ld + h * hd + c];
            p[j] = d * scale;
            mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j < n; j++)
            sum += (p[j] = exp(p[j] - mx));
        for (int c = 0; c < hd; c++) {
            double acc = 0;
            for (int j = 0; j < n; j++)
                acc += p[j] / sum * v[(k0 + j) * v_ld + h * hd + c];
            out[(q0 + i) * out_ld + h * hd + c] = (float)acc;
        }
    }
}

static void test_attention_kv(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(23);
    enum { H = 3, HD = 12, D = H * HD, NS = 4, ROWS = 64 };
    /* q has 1, 1, 3, 2 rows; keys live anywhere in a 64-row cache */
    int32_t q_off[NS + 1] = {0, 1, 2, 5, 7}, kv_start[NS] = {40, 3, 17, 0},
            kv_len[NS] = {9, 1, 20, 5};
    float *q = randv(7 * D, 2), *k = randv(ROWS * 2 * D, 2);
    float *out = zerov(7 * D), *ref = zerov(7 * D), *R = zerov(7 * D);
    for (int causal = 0; causal < 2; causal++) {
        for (int sq = 0; sq < NS; sq++)
            for (int h = 0; h < H; h++)
                ref_attention(ref, D, q, D, k, 2 * D, k + D, 2 * D, q_off[sq],
                              q_off[sq + 1] - q_off[sq], kv_start[sq], kv_len[sq], h, HD, 0.29f,
                              causal);
        FOR_EACH_BE(s, t)
        {
            NEED(t, gen, attention_kv);
            eng_backend *be = t->be;
            float *dq = dput(be, q, sizeof(float) * 7 * D);
            float *dk = dput(be, k, sizeof(float) * ROWS * 2 * D), *dout = dnew(be, sizeof(float) * 7 * D);
            int32_t *dqo = dput(be, q_off, sizeof q_off), *dks = dput(be, kv_start, sizeof kv_start);
            int32_t *dkl = dput(be, kv_len, sizeof kv_len);
            /* k and v interleaved in one buffer (row stride 2D), as the cross K/V */
            be->ops->gen->attention_kv(be, dout, D, dq, D, dk, 2 * D, dk + D, 2 * D, dqo, dks, dkl,
                                       NS, H, HD, 0.29f, causal);
            dget(be, out, dout, sizeof(float) * 7 * D);
            float d = tu_max_abs_diff(out, ref, 7 * D);
            print_message("  attention_kv [%s] causal=%d: max |diff| %.3g\n", t->label, causal, d);
            assert_true(d < 2e-6f);
            if (t->ref)
                memcpy(R, out, sizeof(float) * 7 * D);
            vs_ref(t, "attention_kv", out, R, 7 * D, DT_F32);
            dfree(be, dq), dfree(be, dk), dfree(be, dout), dfree(be, dqo), dfree(be, dks);
            dfree(be, dkl);
        }
    }
    free(q), free(k), free(out), free(ref), free(R);
    set_close(&s);
}

/* ===================================================== mean_pool, gather */

static void test_mean_pool(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(6);
    static const int lens[] = {1, 3, 0, 17, 130};
    int nseq = 5;
    int32_t off[6] = {0};
    for (int i = 0; i < nseq; i++)
        off[i + 1] = off[i] + lens[i];
    for (int dim = 37; dim <= 384; dim += 347) {
        size_t xn = (size_t)off[nseq] * dim, on = (size_t)nseq * dim;
        float *x = randv(xn, 1.0f), *out = zerov(on), *R = zerov(on);
        for (int d = 0; d < dim; d++) /* sequence 0 is all zeros: normalise keeps 0 */
            x[d] = 0.0f;
        for (int norm = 0; norm <= 1; norm++) {
            FOR_EACH_BE(s, t)
            {
                NEED(t, core, mean_pool);
                eng_backend *be = t->be;
                float *dx = dput(be, x, xn * sizeof(float)), *dout = dnew(be, on * sizeof(float));
                int32_t *doff = dput(be, off, sizeof off);
                be->ops->core->mean_pool(be, dout, dx, doff, nseq, dim, norm);
                dget(be, out, dout, on * sizeof(float));
                for (int sq = 0; sq < nseq; sq++) {
                    double m[384], ss = 0;
                    for (int d = 0; d < dim; d++) {
                        m[d] = 0;
                        for (int r = off[sq]; r < off[sq + 1]; r++)
                            m[d] += x[(size_t)r * dim + d];
                        m[d] /= lens[sq] > 0 ? lens[sq] : 1;
                        ss += m[d] * m[d];
                    }
                    double nrm = norm ? fmax(sqrt(ss), 1e-12) : 1.0;
                    for (int d = 0; d < dim; d++) {
                        double want = m[d] / nrm;
                        check_close("mean_pool", t, (size_t)sq * dim + d,
                                    out[(size_t)sq * dim + d], want, 1e-6 * fabs(want) + 1e-7);
                    }
                }
                if (t->ref)
                    memcpy(R, out, on * sizeof(float));
                vs_ref(t, "mean_pool", out, R, on, DT_F32);
                dfree(be, dx), dfree(be, dout), dfree(be, doff);
            }
        }
        free(x), free(out), free(R);
    }
    set_close(&s);
}

static void test_gather_scatter_rows(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(7);
    int32_t off[4] = {0, 3, 7, 10};
    int dim = 19;
    float *x = randv(10 * (size_t)dim, 1.0f), out[3 * 19];
    FOR_EACH_BE(s, t)
    {
        NEED(t, core, gather_rows);
        eng_backend *be = t->be;
        float *dx = dput(be, x, 10 * (size_t)dim * sizeof(float)), *dout = dnew(be, sizeof out);
        int32_t *doff = dput(be, off, sizeof off);
        for (int row = 0; row < 3; row++) {
            be->ops->core->gather_rows(be, dout, dx, doff, 3, row, dim);
            dget(be, out, dout, sizeof out);
            for (int sq = 0; sq < 3; sq++)
                assert_memory_equal(out + sq * dim, x + (size_t)(off[sq] + row) * dim,
                                    dim * sizeof(float));
        }
        dfree(be, dx), dfree(be, dout), dfree(be, doff);
    }
    /* scatter_rows: dx[seq_off[s] + row] += dsrc[s], accumulating */
    const int R = 13, C = 70;
    int32_t off2[4] = {0, 4, 5, 13};
    float *src = randv((size_t)3 * C, 1), *dxh = zerov((size_t)R * C);
    FOR_EACH_BE(s, t)
    {
        NEED(t, train, scatter_rows);
        eng_backend *be = t->be;
        float *zero = zerov((size_t)R * C);
        float *ddx = dput(be, zero, (size_t)R * C * sizeof(float));
        float *dsrc = dput(be, src, (size_t)3 * C * sizeof(float));
        int32_t *doff = dput(be, off2, sizeof off2);
        be->ops->train->scatter_rows(be, ddx, dsrc, doff, 3, 0, C);
        be->ops->train->scatter_rows(be, ddx, dsrc, doff, 3, 0, C); /* accumulates */
        dget(be, dxh, ddx, (size_t)R * C * sizeof(float));
        for (int sq = 0; sq < 3; sq++)
            for (int c = 0; c < C; c++)
                assert_true(dxh[(size_t)off2[sq] * C + c] == 2 * src[(size_t)sq * C + c]);
        dfree(be, ddx), dfree(be, dsrc), dfree(be, doff);
        free(zero);
    }
    free(x), free(src), free(dxh);
    set_close(&s);
}

/* ================================================= sequence-to-sequence */

static void test_copy_rows(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    float src[6 * 10], dst0[6 * 12], dst[6 * 12];
    for (int i = 0; i < 60; i++)
        src[i] = (float)i;
    for (int i = 0; i < 72; i++)
        dst0[i] = -1;
    int32_t d_rows[3] = {5, 0, 2}, s_rows[3] = {1, 4, 4};
    FOR_EACH_BE(s, t)
    {
        NEED(t, gen, copy_rows);
        eng_backend *be = t->be;
        float *dsrc = dput(be, src, sizeof src), *ddst = dput(be, dst0, sizeof dst0);
        int32_t *ddr = dput(be, d_rows, sizeof d_rows), *dsr = dput(be, s_rows, sizeof s_rows);
        be->ops->gen->copy_rows(be, ddst, 12, ddr, dsrc, 10, dsr, 3, 7);
        dget(be, dst, ddst, sizeof dst);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 12; j++)
                assert_true(dst[d_rows[i] * 12 + j] == (j < 7 ? src[s_rows[i] * 10 + j] : -1));
        assert_true(dst[1 * 12] == -1 && dst[3 * 12] == -1);
        /* NULL index arrays: row i to row i */
        be->ops->gen->copy_rows(be, ddst, 12, NULL, dsrc, 10, NULL, 2, 10);
        dget(be, dst, ddst, sizeof dst);
        assert_true(dst[12 + 9] == src[19] && dst[0] == 0);
        dfree(be, dsrc), dfree(be, ddst), dfree(be, ddr), dfree(be, dsr);
    }
    set_close(&s);
}

static void test_log_softmax(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(24);
    enum { R = 3, C = 3000, LD = 3008 };
    float *x0 = randv((size_t)R * LD, 20), *x = zerov((size_t)R * LD), *RR = zerov((size_t)R * LD);
    for (int c = 0; c < C; c += 3)
        x0[LD + c] = -INFINITY; /* masked entries in row 1 */
    for (int c = 0; c < C; c++)
        x0[2 * LD + c] = -INFINITY; /* row 2 entirely masked */
    FOR_EACH_BE(s, t)
    {
        NEED(t, gen, log_softmax);
        eng_backend *be = t->be;
        float *dx = dput(be, x0, sizeof(float) * R * LD);
        be->ops->gen->log_softmax(be, dx, R, C, LD);
        dget(be, x, dx, sizeof(float) * R * LD);
        for (int r = 0; r < 2; r++) {
            double mx = -1e300, sum = 0;
            for (int c = 0; c < C; c++)
                mx = x0[r * LD + c] > mx ? x0[r * LD + c] : mx;
            for (int c = 0; c < C; c++)
                sum += exp(x0[r * LD + c] - mx);
            for (int c = 0; c < C; c++) {
                double want = x0[r * LD + c] - mx - log(sum);
                float got = x[r * LD + c];
                if (isinf(want))
                    assert_true(isinf(got) && got < 0);
                else if (!(fabs(got - want) < 2e-5))
                    fail_msg("log_softmax [%s] row %d col %d: %.9g want %.9g", t->label, r, c,
                             got, want);
            }
            assert_true(x[r * LD + C] == x0[r * LD + C]); /* padding untouched */
        }
        for (int c = 0; c < C; c++)
            assert_true(isinf(x[2 * LD + c]) && x[2 * LD + c] < 0);
        if (t->ref)
            memcpy(RR, x, sizeof(float) * R * LD);
        vs_ref(t, "log_softmax", x, RR, (size_t)R * LD, DT_F32);
        dfree(be, dx);
    }
    free(x0), free(x), free(RR);
    set_close(&s);
}

static void test_topk(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(25);
    enum { G = 3, RPG = 4, C = 50, K = 8 };
    float *x = malloc(sizeof(float) * G * RPG * C), add[G * RPG];
    for (int i = 0; i < G * RPG * C; i++)
        x[i] = (float)(int)(frand() * 6); /* many ties */
    for (int r = 0; r < G * RPG; r++)
        add[r] = r % 2 ? 0.5f : 0.0f;
    float vals[G * K];
    int32_t idx[G * K];
    FOR_EACH_BE(s, t)
    {
        NEED(t, gen, topk);
        eng_backend *be = t->be;
        float *dx = dput(be, x, sizeof(float) * G * RPG * C), *dadd = dput(be, add, sizeof add);
        float *dv = dnew(be, sizeof vals);
        int32_t *di = dnew(be, sizeof idx);
        be->ops->gen->topk(be, dx, G, RPG, C, C, dadd, K, dv, di);
        dget(be, vals, dv, sizeof vals);
        dget(be, idx, di, sizeof idx);
        for (int g = 0; g < G; g++) {
            /* reference: selection by (value desc, index asc) */
            int taken[RPG * C] = {0};
            for (int j = 0; j < K; j++) {
                int best = -1;
                float bv = 0;
                for (int f = 0; f < RPG * C; f++) {
                    float v = x[(g * RPG + f / C) * C + f % C] + add[g * RPG + f / C];
                    if (!taken[f] && (best < 0 || v > bv))
                        best = f, bv = v;
                }
                taken[best] = 1;
                assert_int_equal(idx[g * K + j], best);
                assert_true(vals[g * K + j] == bv);
            }
        }
        /* k = 1 per row, no row_add: argmax, first index of the maximum */
        float row[6] = {1, 5, 2, 5, -INFINITY, 0};
        float *drow = dput(be, row, sizeof row);
        be->ops->gen->topk(be, drow, 1, 1, 6, 6, NULL, 1, dv, di);
        dget(be, idx, di, sizeof(int32_t));
        assert_int_equal(idx[0], 1);
        dfree(be, dx), dfree(be, dadd), dfree(be, dv), dfree(be, di), dfree(be, drow);
    }
    free(x);
    set_close(&s);
}

/* ================================================================ training */

/* Finite differences in fp32: step 1e-2 (rounding of the loss, ~1e-7 relative,
 * stays below 1e-4 of it) and a tolerance of 1e-2 of the largest gradient. */
#define FD_H 1e-2f
#define FD_TOL 1e-2

static double dot(const float *w, const float *x, size_t n)
{
    double acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += (double)w[i] * x[i];
    return acc;
}

/* A forward function of the variable array (host memory), returning sum w * out. */
typedef double (*loss_fn)(void *ctx);

/* Compares grad[i] with a central difference of f at up to `samples` indices of x. */
static void fd_check(const tbe *t, const char *what, loss_fn f, void *ctx, float *x,
                     const float *grad, size_t n, int samples)
{
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        gmax = fabs(grad[i]) > gmax ? fabs(grad[i]) : gmax;
    size_t stride = n / (size_t)samples > 1 ? n / (size_t)samples : 1;
    for (size_t i = 0; i < n; i += stride) {
        float keep = x[i];
        x[i] = keep + FD_H;
        double lp = f(ctx);
        x[i] = keep - FD_H;
        double lm = f(ctx);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * FD_H), d = fabs(fd - grad[i]);
        worst = d > worst ? d : worst;
        if (!(d <= FD_TOL * (gmax > 1 ? gmax : 1)))
            fail_msg("%s [%s]: d/dx[%zu] analytic %.6g, finite difference %.6g (max |grad| "
                     "%.4g)", what, t->label, i, grad[i], fd, gmax);
    }
    print_message("    %-34s [%s] max |analytic - FD| %.2e (max |grad| %.3g)\n", what, t->label,
                  worst, gmax);
}

/* ---- activations */

typedef struct act_ctx {
    eng_backend *be;
    float *pre, *post, *w;
    int rows, cols;
    eng_act act;
} act_ctx;

static double act_loss(void *v)
{
    act_ctx *c = v;
    size_t n = (size_t)c->rows * c->cols, b = n * sizeof(float);
    float *dpre = dput(c->be, c->pre, b), *dpost = dnew(c->be, b);
    c->be->ops->train->bias_act_train(c->be, dpre, dpost, NULL, c->rows, c->cols, c->act);
    dget(c->be, c->post, dpost, b);
    dfree(c->be, dpre), dfree(c->be, dpost);
    return dot(c->w, c->post, n);
}

static void test_act_backward(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    static const struct {
        eng_act act;
        const char *name;
    } acts[] = {{ENG_ACT_GELU, "act_backward gelu"}, {ENG_ACT_GELU_TANH, "act_backward gelu_tanh"},
                {ENG_ACT_TANH, "act_backward tanh"}, {ENG_ACT_RELU, "act_backward relu"},
                {ENG_ACT_NONE, "act_backward none"}};
    const int R = 5, C = 700; /* more than one internal chunk of 512 */
    size_t n = (size_t)R * C, b = n * sizeof(float);
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        rng_seed(30 + a);
        float *pre = randv(n, 3), *w = randv(n, 1), *bias = randv((size_t)C, 1);
        if (acts[a].act == ENG_ACT_RELU) /* keep away from the kink */
            for (size_t i = 0; i < n; i++)
                if (fabsf(pre[i]) < 0.05f)
                    pre[i] = 0.5f;
        float *dx = zerov(n), *dy = zerov(n), *post = zerov(n), *p2 = zerov(n), *ref = zerov(n);
        float *R0 = zerov(n);
        FOR_EACH_BE(s, t)
        {
            NEED(t, train, act_backward);
            NEED(t, train, bias_act_train);
            eng_backend *be = t->be;
            float *dpre = dput(be, pre, b), *dw = dput(be, w, b), *ddx = dnew(be, b);
            be->ops->train->act_backward(be, ddx, dw, dpre, R, C, acts[a].act);
            dget(be, dx, ddx, b);
            act_ctx c = {be, pre, post, w, R, C, acts[a].act};
            fd_check(t, acts[a].name, act_loss, &c, pre, dx, n, 200);
            /* In place (dx aliasing dy) gives the same. */
            float *ddy = dput(be, w, b);
            be->ops->train->act_backward(be, ddy, ddy, dpre, R, C, acts[a].act);
            dget(be, dy, ddy, b);
            assert_true(tu_max_abs_diff(dy, dx, n) == 0.0f);
            if (t->ref)
                memcpy(R0, dx, b);
            vs_ref(t, acts[a].name, dx, R0, n, DT_F32);
            /* bias_act_train: pre gets the bias, post = act(pre), as bias_act computes it. */
            float *dp2 = dput(be, pre, b), *dref = dput(be, pre, b), *dpost = dnew(be, b);
            float *dbias = dput(be, bias, (size_t)C * sizeof(float));
            be->ops->train->bias_act_train(be, dp2, dpost, dbias, R, C, acts[a].act);
            if (be->ops->core && be->ops->core->bias_act) {
                be->ops->core->bias_act(be, dref, dbias, R, C, acts[a].act);
                dget(be, post, dpost, b);
                dget(be, ref, dref, b);
                assert_true(tu_max_abs_diff(post, ref, n) == 0.0f);
            }
            dget(be, p2, dp2, b);
            for (int i = 0; i < R * C; i++)
                assert_true(p2[i] == pre[i] + bias[i % C]);
            dfree(be, dpre), dfree(be, dw), dfree(be, ddx), dfree(be, ddy), dfree(be, dp2);
            dfree(be, dref), dfree(be, dpost), dfree(be, dbias);
        }
        free(pre), free(w), free(bias), free(dx), free(dy), free(post), free(p2), free(ref);
        free(R0);
    }
    set_close(&s);
}

/* ---- layernorm backward */

typedef struct ln_ctx {
    eng_backend *be;
    float *x, *res, *g, *b, *out, *w;
    int rows, cols;
} ln_ctx;

static double ln_loss(void *v)
{
    ln_ctx *c = v;
    size_t n = (size_t)c->rows * c->cols, nb = n * sizeof(float), cb = (size_t)c->cols * sizeof(float);
    eng_backend *be = c->be;
    float *dx = dput(be, c->x, nb), *dr = dput(be, c->res, nb), *dg = dput(be, c->g, cb);
    float *db = dput(be, c->b, cb), *dout = dnew(be, nb);
    be->ops->core->add_layernorm(be, dout, dx, dr, dg, db, c->rows, c->cols, 1e-5f);
    dget(be, c->out, dout, nb);
    dfree(be, dx), dfree(be, dr), dfree(be, dg), dfree(be, db), dfree(be, dout);
    return dot(c->w, c->out, n);
}

static void test_layernorm_backward(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    const int R = 7, C = 48;
    size_t n = (size_t)R * C, nb = n * sizeof(float), cb = (size_t)C * sizeof(float);
    for (int with_res = 0; with_res < 2; with_res++) {
        rng_seed(40 + with_res);
        float *x = randv(n, 2), *res = with_res ? randv(n, 1) : NULL, *g = randv((size_t)C, 1);
        float *b = randv((size_t)C, 1), *out = zerov(n), *w = randv(n, 1);
        float *dx = zerov(n), *dg = zerov((size_t)C), *db = zerov((size_t)C), *R0 = zerov(n);
        float *ones = malloc(cb);
        for (int i = 0; i < C; i++)
            ones[i] = 1.0f;
        FOR_EACH_BE(s, t)
        {
            NEED(t, train, layernorm_backward);
            NEED(t, core, add_layernorm);
            eng_backend *be = t->be;
            float *ddx = dnew(be, nb), *ddg = dput(be, ones, cb), *ddb = dput(be, ones, cb);
            float *dw = dput(be, w, nb), *dxx = dput(be, x, nb), *dres = dput(be, res, nb);
            float *dgg = dput(be, g, cb);
            /* dgamma/dbeta accumulate: start from 1 and subtract it again. */
            be->ops->train->layernorm_backward(be, ddx, ddg, ddb, dw, dxx, dres, dgg, R, C, 1e-5f);
            dget(be, dx, ddx, nb);
            dget(be, dg, ddg, cb);
            dget(be, db, ddb, cb);
            for (int i = 0; i < C; i++)
                dg[i] -= 1.0f, db[i] -= 1.0f;
            ln_ctx c = {be, x, res, g, b, out, w, R, C};
            fd_check(t, with_res ? "layernorm_backward dx (+res)" : "layernorm_backward dx",
                     ln_loss, &c, x, dx, n, 120);
            if (with_res)
                fd_check(t, "layernorm_backward dres", ln_loss, &c, res, dx, n, 60);
            fd_check(t, "layernorm_backward dgamma", ln_loss, &c, g, dg, (size_t)C, 48);
            fd_check(t, "layernorm_backward dbeta", ln_loss, &c, b, db, (size_t)C, 48);
            if (t->ref)
                memcpy(R0, dx, nb);
            vs_ref(t, "layernorm_backward", dx, R0, n, DT_F32);
            dfree(be, ddx), dfree(be, ddg), dfree(be, ddb), dfree(be, dw), dfree(be, dxx);
            dfree(be, dres), dfree(be, dgg);
        }
        free(x), free(res), free(g), free(b), free(out), free(w), free(dx), free(dg), free(db);
        free(R0), free(ones);
    }
    set_close(&s);
}

/* ---- embeddings backward */

static void test_embed_backward(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(50);
    const int V = 11, P = 9, Ty = 2, D = 40, T = 23;
    int32_t ids[23], pos[23], types[23];
    for (int tk = 0; tk < T; tk++) {
        ids[tk] = (tk * 7) % 5; /* repeated ids: gradients must add up */
        pos[tk] = tk % P;
        types[tk] = tk % Ty;
    }
    float *dout = randv((size_t)T * D, 1);
    float *dw = zerov((size_t)V * D), *dp = zerov((size_t)P * D), *dt = zerov((size_t)Ty * D);
    float *ww = zerov((size_t)V * D), *wp = zerov((size_t)P * D), *wt = zerov((size_t)Ty * D);
    for (int tk = 0; tk < T; tk++)
        for (int d = 0; d < D; d++) {
            float g = dout[(size_t)tk * D + d];
            ww[(size_t)ids[tk] * D + d] += g;
            wp[(size_t)pos[tk] * D + d] += g;
            wt[(size_t)types[tk] * D + d] += g;
        }
    FOR_EACH_BE(s, t)
    {
        NEED(t, train, embed_backward);
        eng_backend *be = t->be;
        float *z = zerov((size_t)V * D);
        float *ddw = dput(be, z, (size_t)V * D * sizeof(float));
        float *ddp = dput(be, z, (size_t)P * D * sizeof(float));
        float *ddt = dput(be, z, (size_t)Ty * D * sizeof(float));
        float *ddo = dput(be, dout, (size_t)T * D * sizeof(float));
        int32_t *di = dput(be, ids, sizeof ids), *dpi = dput(be, pos, sizeof pos);
        int32_t *dti = dput(be, types, sizeof types);
        be->ops->train->embed_backward(be, ddw, ddp, ddt, ddo, di, dpi, dti, T, D);
        dget(be, dw, ddw, (size_t)V * D * sizeof(float));
        dget(be, dp, ddp, (size_t)P * D * sizeof(float));
        dget(be, dt, ddt, (size_t)Ty * D * sizeof(float));
        assert_true(tu_max_abs_diff(dw, ww, (size_t)V * D) <= 1e-5f);
        assert_true(tu_max_abs_diff(dp, wp, (size_t)P * D) <= 1e-5f);
        assert_true(tu_max_abs_diff(dt, wt, (size_t)Ty * D) <= 1e-5f);
        dfree(be, ddw), dfree(be, ddp), dfree(be, ddt), dfree(be, ddo), dfree(be, di);
        dfree(be, dpi), dfree(be, dti);
        free(z);
    }
    free(dout), free(dw), free(dp), free(dt), free(ww), free(wp), free(wt);
    set_close(&s);
}

/* ---- attention backward */

typedef struct attn_ctx {
    eng_backend *be;
    float *qkv, *out, *probs, *w;
    int64_t p_off[4];
    int32_t seq_off[4];
    int nseq, heads, hd, T;
    float p;
    uint64_t seed;
} attn_ctx;

/* attention_train on the backend; out and probs come back to the host. */
static double attn_loss(void *v)
{
    attn_ctx *c = v;
    eng_backend *be = c->be;
    int H = c->heads * c->hd;
    size_t qb = (size_t)c->T * 3 * H * sizeof(float), ob = (size_t)c->T * H * sizeof(float);
    size_t pb = (size_t)c->p_off[c->nseq] * sizeof(float);
    float *dqkv = dput(be, c->qkv, qb), *dout = dnew(be, ob), *dprobs = dnew(be, pb);
    int64_t *dpo = dput(be, c->p_off, sizeof c->p_off);
    int32_t *dso = dput(be, c->seq_off, sizeof c->seq_off);
    be->ops->train->attention_train(be, dout, H, dprobs, dpo, dqkv, dqkv + H, dqkv + 2 * H,
                                    3 * H, dso, c->nseq, c->heads, c->hd, 0.35f, c->p, c->seed);
    dget(be, c->out, dout, ob);
    dget(be, c->probs, dprobs, pb);
    dfree(be, dqkv), dfree(be, dout), dfree(be, dprobs), dfree(be, dpo), dfree(be, dso);
    return dot(c->w, c->out, (size_t)c->T * H);
}

static void test_attention_backward(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    for (int drop = 0; drop < 2; drop++) {
        rng_seed(60 + drop);
        attn_ctx c = {.nseq = 3, .heads = 2, .hd = 8, .p = drop ? 0.3f : 0.0f, .seed = 99};
        int lens[3] = {5, 1, 9};
        c.seq_off[0] = 0;
        c.p_off[0] = 0;
        for (int i = 0; i < 3; i++) {
            c.seq_off[i + 1] = c.seq_off[i] + lens[i];
            c.p_off[i + 1] = c.p_off[i] + (int64_t)c.heads * lens[i] * lens[i];
        }
        c.T = c.seq_off[3];
        int H = c.heads * c.hd;
        size_t qn = (size_t)c.T * 3 * H, on = (size_t)c.T * H;
        c.qkv = randv(qn, 1.5f);
        c.out = zerov(on);
        c.probs = zerov((size_t)c.p_off[3]);
        c.w = randv(on, 1);
        float *dqkv = zerov(qn), *ref = zerov(on), *R0 = zerov(qn);
        FOR_EACH_BE(s, t)
        {
            NEED(t, train, attention_train);
            NEED(t, train, attention_backward);
            eng_backend *be = t->be;
            c.be = be;
            attn_loss(&c);
            if (!drop && be->ops->core && be->ops->core->attention) {
                /* same result as the inference op */
                float *dq = dput(be, c.qkv, qn * sizeof(float)), *dr = dnew(be, on * sizeof(float));
                int32_t *dso = dput(be, c.seq_off, sizeof c.seq_off);
                be->ops->core->attention(be, dr, H, dq, 3 * H, dq + H, 3 * H, dq + 2 * H, 3 * H,
                                         dso, dso, c.nseq, c.heads, c.hd, 0.35f, 0);
                dget(be, ref, dr, on * sizeof(float));
                float d = tu_max_abs_diff(ref, c.out, on);
                if (!(d <= 1e-5f))
                    fail_msg("attention_train [%s] differs from attention by %g", t->label, d);
                dfree(be, dq), dfree(be, dr), dfree(be, dso);
            }
            float *z = zerov(qn);
            float *dd = dput(be, z, qn * sizeof(float)), *dw = dput(be, c.w, on * sizeof(float));
            float *dpr = dput(be, c.probs, (size_t)c.p_off[3] * sizeof(float));
            float *dq = dput(be, c.qkv, qn * sizeof(float));
            int64_t *dpo = dput(be, c.p_off, sizeof c.p_off);
            int32_t *dso = dput(be, c.seq_off, sizeof c.seq_off);
            be->ops->train->attention_backward(be, dd, dd + H, dd + 2 * H, 3 * H, dw, H, dpr, dpo,
                                               dq, dq + H, dq + 2 * H, 3 * H, dso, c.nseq,
                                               c.heads, c.hd, 0.35f, c.p, c.seed);
            dget(be, dqkv, dd, qn * sizeof(float));
            fd_check(t, drop ? "attention_backward dq dk dv (dropout)" : "attention_backward dq dk dv",
                     attn_loss, &c, c.qkv, dqkv, qn, 400);
            if (t->ref)
                memcpy(R0, dqkv, qn * sizeof(float));
            vs_ref(t, "attention_backward", dqkv, R0, qn, DT_F32);
            dfree(be, dd), dfree(be, dw), dfree(be, dpr), dfree(be, dq), dfree(be, dpo);
            dfree(be, dso);
            free(z);
        }
        free(c.qkv), free(c.out), free(c.probs), free(c.w), free(dqkv), free(ref), free(R0);
    }
    set_close(&s);
}

/* ---- dropout */

static void test_dropout(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(70);
    size_t n = 200000, b = n * sizeof(float);
    float *x = randv(n, 1), *y = zerov(n), *y2 = zerov(n), *R0 = zerov(n);
    FOR_EACH_BE(s, t)
    {
        NEED(t, train, dropout);
        eng_backend *be = t->be;
        float *dx = dput(be, x, b), *dy = dnew(be, b), *dy2 = dnew(be, b);
        be->ops->train->dropout(be, dy, dx, n, 0.25f, 7);
        be->ops->train->dropout(be, dy2, dx, n, 0.25f, 7);
        dget(be, y, dy, b);
        dget(be, y2, dy2, b);
        assert_true(memcmp(y, y2, b) == 0); /* a function of (seed, index) */
        size_t dropped = 0;
        for (size_t i = 0; i < n; i++) {
            if (y[i] == 0.0f && x[i] != 0.0f)
                dropped++;
            else
                assert_true(fabsf(y[i] - x[i] / 0.75f) <= 1e-6f);
        }
        double rate = (double)dropped / n;
        if (!(fabs(rate - 0.25) < 0.01))
            fail_msg("dropout [%s] rate %.4f, expected 0.25", t->label, rate);
        be->ops->train->dropout(be, dy2, dx, n, 0.25f, 8);
        dget(be, y2, dy2, b);
        assert_true(memcmp(y, y2, b) != 0); /* another seed, another mask */
        be->ops->train->dropout(be, dy2, dx, n, 0.0f, 7); /* p = 0 copies */
        dget(be, y2, dy2, b);
        assert_true(memcmp(x, y2, b) == 0);
        assert_int_equal(be->ops->upload(be, dy2, x, b), 0);
        be->ops->train->dropout(be, dy2, dy2, n, 0.25f, 7); /* in place */
        dget(be, y2, dy2, b);
        assert_true(memcmp(y, y2, b) == 0);
        /* the masks are part of the contract (the backward regenerates them): the same
         * on every backend */
        if (t->ref)
            memcpy(R0, y, b);
        vs_ref(t, "dropout", y, R0, n, DT_F32);
        dfree(be, dx), dfree(be, dy), dfree(be, dy2);
    }
    free(x), free(y), free(y2), free(R0);
    set_close(&s);
}

/* ---- losses */

typedef struct loss_ctx {
    eng_backend *be;
    float *logits, *d, *targets;
    int32_t *labels;
    int n, L;
    int bce;
} loss_ctx;

/* The loss (and its gradient into c->d) on the backend. */
static double loss_run(loss_ctx *c, float scale)
{
    eng_backend *be = c->be;
    size_t nb = (size_t)c->n * c->L * sizeof(float);
    float *dl = dput(be, c->logits, nb), *dd = dnew(be, nb), *dloss = dnew(be, 64);
    float loss;
    if (c->bce) {
        float *dt = dput(be, c->targets, nb);
        be->ops->train->bce_logits(be, dloss, dd, dl, dt, c->n, c->L, scale);
        dfree(be, dt);
    } else {
        int32_t *dlab = dput(be, c->labels, (size_t)c->n * sizeof(int32_t));
        be->ops->train->cross_entropy(be, dloss, dd, dl, dlab, c->n, c->L, scale);
        dfree(be, dlab);
    }
    dget(be, &loss, dloss, sizeof loss);
    dget(be, c->d, dd, nb);
    dfree(be, dl), dfree(be, dd), dfree(be, dloss);
    return loss;
}

static double loss_f(void *v)
{
    loss_ctx *c = v;
    float *keep = c->d;
    float scratch[64];
    c->d = scratch; /* the gradient of a perturbed input is not wanted */
    double l = loss_run(c, 1.0f);
    c->d = keep;
    return l;
}

static void test_losses(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(80);
    int32_t labels[6] = {0, 3, 2, 2, 1, 4};
    float *logits = randv(30, 4), *targets = zerov(30), *grad = zerov(30), *R0 = zerov(30);
    for (int i = 0; i < 30; i++)
        targets[i] = (float)(i % 3 == 0);
    /* the mean of -log softmax[label], computed directly */
    double want = 0;
    for (int i = 0; i < 6; i++) {
        double se = 0;
        for (int j = 0; j < 5; j++)
            se += exp(logits[i * 5 + j]);
        want += log(se) - logits[i * 5 + labels[i]];
    }
    FOR_EACH_BE(s, t)
    {
        NEED(t, train, cross_entropy);
        NEED(t, train, bce_logits);
        loss_ctx c = {t->be, logits, grad, targets, labels, 6, 5, 0};
        double loss = loss_run(&c, 1.0f);
        assert_true(fabs(loss - want / 6) <= 1e-5 * fabs(want / 6));
        fd_check(t, "cross_entropy dlogits", loss_f, &c, logits, grad, 30, 30);
        if (t->ref)
            memcpy(R0, grad, sizeof(float) * 30);
        vs_ref(t, "cross_entropy", grad, R0, 30, DT_F32);
        float g2[30];
        c.d = g2;
        loss_run(&c, 0.25f); /* scale */
        for (int i = 0; i < 30; i++)
            assert_true(fabsf(g2[i] - 0.25f * grad[i]) <= 1e-7f);
        c.d = grad;
        c.bce = 1;
        loss_run(&c, 1.0f);
        fd_check(t, "bce_logits dlogits", loss_f, &c, logits, grad, 30, 30);
    }
    free(logits), free(targets), free(grad), free(R0);
    set_close(&s);
}

/* ---- small linear ops */

static void test_small_ops(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(90);
    const int R = 13, C = 70;
    float *dy = randv((size_t)R * C, 1), *db0 = randv((size_t)C, 1), *db = zerov((size_t)C);
    float *y0 = randv(1000, 1), *x = randv(1000, 1), *y = zerov(1000);
    double ss = 0;
    for (int i = 0; i < 1000; i++)
        ss += (double)x[i] * x[i];
    FOR_EACH_BE(s, t)
    {
        NEED(t, train, sum_rows);
        NEED(t, train, axpy);
        NEED(t, train, sum_squares);
        eng_backend *be = t->be;
        float *ddy = dput(be, dy, (size_t)R * C * sizeof(float));
        float *ddb = dput(be, db0, (size_t)C * sizeof(float));
        be->ops->train->sum_rows(be, ddb, ddy, R, C);
        dget(be, db, ddb, (size_t)C * sizeof(float));
        for (int c = 0; c < C; c++) {
            double acc = db0[c];
            for (int r = 0; r < R; r++)
                acc += dy[(size_t)r * C + c];
            assert_true(fabs(db[c] - acc) <= 1e-5);
        }
        float *dyy = dput(be, y0, 1000 * sizeof(float)), *dx = dput(be, x, 1000 * sizeof(float));
        be->ops->train->axpy(be, dyy, -0.5f, dx, 1000);
        dget(be, y, dyy, 1000 * sizeof(float));
        for (int i = 0; i < 1000; i++)
            assert_true(fabsf(y[i] - (y0[i] - 0.5f * x[i])) <= 1e-6f);
        float got, *dgot = dnew(be, 64);
        be->ops->train->sum_squares(be, dgot, dx, 1000);
        dget(be, &got, dgot, sizeof got);
        assert_true(fabs(got - ss) <= 1e-5 * ss);
        be->ops->zero(be, dyy, 1000 * sizeof(float));
        dget(be, y, dyy, 1000 * sizeof(float));
        for (int i = 0; i < 1000; i++)
            assert_true(y[i] == 0.0f);
        dfree(be, ddy), dfree(be, ddb), dfree(be, dyy), dfree(be, dx), dfree(be, dgot);
    }
    free(dy), free(db0), free(db), free(y0), free(x), free(y);
    set_close(&s);
}

/* ---- AdamW */

static void test_adamw(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    rng_seed(100);
    const size_t n = 5000, b = n * sizeof(float);
    float *p0 = randv(n, 1), *g0 = randv(n, 0.1f), *m0 = randv(n, 0.01f), *v0 = zerov(n);
    for (size_t i = 0; i < n; i++)
        v0[i] = fabsf(frand()) * 1e-3f;
    double *pp = malloc(n * sizeof(double));
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01, gs = 0.5;
    const int step = 3;
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (size_t i = 0; i < n; i++) {
        double gi = g0[i] * gs, mi = b1 * m0[i] + (1 - b1) * gi, vi = b2 * v0[i] + (1 - b2) * gi * gi;
        pp[i] = p0[i] * (1 - lr * wd) - lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + eps);
    }
    float *p = zerov(n), *g = zerov(n), *R0 = zerov(n);
    FOR_EACH_BE(s, t)
    {
        NEED(t, train, adamw);
        eng_backend *be = t->be;
        float *dp = dput(be, p0, b), *dg = dput(be, g0, b), *dm = dput(be, m0, b);
        float *dv = dput(be, v0, b);
        be->ops->train->adamw(be, dp, dg, dm, dv, n, (float)lr, (float)b1, (float)b2, (float)eps,
                              (float)wd, (float)bc1, (float)bc2, (float)gs);
        dget(be, p, dp, b);
        dget(be, g, dg, b);
        for (size_t i = 0; i < n; i++) {
            if (!(fabs(p[i] - pp[i]) <= 1e-6))
                fail_msg("adamw [%s] p[%zu] = %.9g, expected %.9g", t->label, i, p[i], pp[i]);
            assert_true(g[i] == 0.0f); /* gradients are reset for the next accumulation */
        }
        if (t->ref)
            memcpy(R0, p, b);
        vs_ref(t, "adamw", p, R0, n, DT_F32);
        dfree(be, dp), dfree(be, dg), dfree(be, dm), dfree(be, dv);
    }
    free(p0), free(g0), free(m0), free(v0), free(pp), free(p), free(g), free(R0);
    set_close(&s);
}

/* ============================================================== summary */

/* ================================================================ faults */

void tu_cuda_emu_fail_after(int n) __attribute__((weak)); /* tests/cuda_emu/ */

/* A device error marks the backend unhealthy: calls fail with ENG_EBACKEND, the reason
 * is kept, nothing aborts; a new backend instance works again. (The emulated CUDA
 * backend, whose runtime calls can be made to fail, is linked into this binary.) */
static void test_device_fault(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_fail_after);
    const eng_backend_reg *r = eng_backend_reg_find("cuda-emu");
    assert_non_null(r);
    eng_backend *be = NULL;
    eng_error err = {0};
    assert_int_equal(r->create(0, 1, &be, &err), ENG_OK);
    assert_null(be->ops->health(be));
    float host[256] = {0}, *d = be->ops->alloc(be, sizeof host);
    assert_non_null(d);
    tu_cuda_emu_fail_after(1);
    assert_int_equal(be->ops->upload(be, d, host, sizeof host), ENG_EBACKEND);
    tu_cuda_emu_fail_after(0);
    const char *why = be->ops->health(be);
    assert_non_null(why);
    print_message("  unhealthy after an injected fault: %s\n", why);
    /* every later call fails or does nothing; none crashes */
    assert_null(be->ops->alloc(be, 64));
    be->ops->core->gemm(be, 1, 2, 2, 2, 1.0f, d, 2, d, 2, 0.0f, d + 8, 2);
    assert_int_equal(be->ops->download(be, host, d, sizeof host), ENG_EBACKEND);
    assert_int_equal(be->ops->synchronize(be), ENG_EBACKEND);
    be->ops->free(be, d);
    be->ops->destroy(be);

    /* through the public API: a run fails with ENG_EBACKEND, the context says why */
    eng_model *m;
    eng_ctx *ctx;
    if (eng_model_load(tu_path("%s/tests/fixtures/models/bert_base", tu_root()), &m, &err))
        fail_msg("load: %s", err.msg);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &ctx, &err), ENG_OK);
    eng_encoding e;
    eng_encoding_init(&e);
    assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), "hello world", 11, NULL, 0,
                                          32, &e, &err), ENG_OK);
    const eng_encoding *ep = &e;
    size_t H = (size_t)eng_model_get_info(m)->hidden;
    float *out = malloc(sizeof(float) * (size_t)e.n * H), *ok = malloc(sizeof(float) * (size_t)e.n * H);
    assert_int_equal(eng_run_hidden(ctx, m, &ep, 1, ok, &err), ENG_OK);
    assert_null(eng_ctx_fault(ctx));
    tu_cuda_emu_fail_after(3);
    assert_int_equal(eng_run_hidden(ctx, m, &ep, 1, out, &err), ENG_EBACKEND);
    tu_cuda_emu_fail_after(0);
    assert_non_null(eng_ctx_fault(ctx));
    print_message("  run after a fault: %s (context: %s)\n", err.msg, eng_ctx_fault(ctx));
    assert_int_equal(eng_run_hidden(ctx, m, &ep, 1, out, &err), ENG_EBACKEND);
    eng_ctx_free(ctx);
    /* a fresh context on the same model version works and agrees */
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &ctx, &err), ENG_OK);
    assert_int_equal(eng_run_hidden(ctx, m, &ep, 1, out, &err), ENG_OK);
    assert_true(tu_max_abs_diff(out, ok, (size_t)e.n * H) == 0.0f);
    eng_ctx_free(ctx);
    free(out), free(ok);
    eng_encoding_free(&e);
    eng_model_unref(m);
}

void tu_cuda_emu_fail_sticky_after(int n, int code) __attribute__((weak)); /* tests/cuda_emu/ */

/* A fault through an upload with the n-th call failing: 1 if the backend calls it sticky
 * (and *why), after checking that it is unhealthy either way. */
static int upload_fault_sticky(const eng_backend_reg *r, int code, char *why, size_t cap)
{
    eng_backend *be = NULL;
    eng_error err = {0};
    assert_int_equal(r->create(0, 1, &be, &err), ENG_OK);
    float host[64] = {0}, *d = be->ops->alloc(be, sizeof host);
    assert_non_null(d);
    assert_int_equal(be->ops->fault_sticky(be), 0);
    if (code)
        tu_cuda_emu_fail_sticky_after(1, code);
    else
        tu_cuda_emu_fail_after(1);
    assert_int_equal(be->ops->upload(be, d, host, sizeof host), ENG_EBACKEND);
    assert_non_null(be->ops->health(be));
    snprintf(why, cap, "%s", be->ops->health(be));
    int sticky = be->ops->fault_sticky(be);
    tu_cuda_emu_fail_after(0);
    be->ops->free(be, d);
    be->ops->destroy(be);
    return sticky;
}

/* Sticky CUDA errors (illegal address, launch failure, uncorrectable ECC ...: the process's
 * CUDA context is lost) are told from the others, whether a runtime call or cuBLAS
 * reports them; after one, no new backend instance can be made (recreating a context does
 * not help), and the public API says so (eng_ctx_fault_sticky). */
static void test_device_fault_sticky(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_fail_sticky_after);
    const eng_backend_reg *r = eng_backend_reg_find("cuda-emu");
    assert_non_null(r);
    char why[256];
    /* the runtime's "process must be terminated and relaunched" errors, ECC, NVLink */
    static const int sticky[] = {214, 220, 226, 700, 702, 710, 714, 715, 716, 717, 718, 719,
                                 721, 810, 911};
    for (size_t i = 0; i < sizeof sticky / sizeof *sticky; i++) {
        if (!upload_fault_sticky(r, sticky[i], why, sizeof why))
            fail_msg("CUDA error %d not taken as sticky (%s)", sticky[i], why);
        if (sticky[i] == 700)
            print_message("  sticky: %s\n", why);
    }
    /* others: invalid value, out of memory, too many resources, unknown, injected */
    static const int other[] = {1, 2, 701, 999, 0};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++)
        if (upload_fault_sticky(r, other[i], why, sizeof why))
            fail_msg("CUDA error %d taken as sticky (%s)", other[i], why);
    print_message("  not sticky: %s\n", why);

    /* cuBLAS reports a faulted kernel as a status: the runtime's last error tells */
    for (int st = 0; st < 2; st++) {
        eng_backend *be = NULL;
        eng_error err = {0};
        assert_int_equal(r->create(0, 1, &be, &err), ENG_OK);
        float *d = be->ops->alloc(be, 64 * sizeof(float));
        assert_non_null(d);
        if (st)
            tu_cuda_emu_fail_sticky_after(1, 700); /* the GEMM is the next counted call */
        else
            tu_cuda_emu_fail_after(1);
        be->ops->core->gemm(be, 1, 2, 2, 2, 1.0f, d, 2, d, 2, 0.0f, d + 8, 2);
        assert_non_null(be->ops->health(be));
        assert_int_equal(be->ops->fault_sticky(be), st);
        assert_non_null(strstr(be->ops->health(be), "cuBLAS status"));
        if (st) {
            assert_non_null(strstr(be->ops->health(be), "illegal memory access"));
            /* a new instance cannot be made while the process's context is lost */
            eng_backend *b2 = NULL;
            assert_int_not_equal(r->create(0, 1, &b2, &err), ENG_OK);
            assert_null(b2);
            assert_non_null(strstr(err.msg, "illegal memory access"));
            print_message("  %s; a new backend: %s\n", be->ops->health(be), err.msg);
        }
        tu_cuda_emu_fail_after(0);
        be->ops->free(be, d);
        be->ops->destroy(be);
    }

    /* through the public API */
    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    if (eng_model_load(tu_path("%s/tests/fixtures/models/bert_base", tu_root()), &m, &err))
        fail_msg("load: %s", err.msg);
    eng_encoding e;
    eng_encoding_init(&e);
    assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), "hello world", 11, NULL, 0,
                                          32, &e, &err), ENG_OK);
    const eng_encoding *ep = &e;
    float *out = malloc(sizeof(float) * (size_t)e.n * eng_model_get_info(m)->hidden);
    for (int st = 0; st < 2; st++) {
        assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &ctx, &err), ENG_OK);
        assert_int_equal(eng_run_hidden(ctx, m, &ep, 1, out, &err), ENG_OK);
        assert_int_equal(eng_ctx_fault_sticky(ctx), 0);
        if (st)
            tu_cuda_emu_fail_sticky_after(3, 700);
        else
            tu_cuda_emu_fail_after(3);
        assert_int_equal(eng_run_hidden(ctx, m, &ep, 1, out, &err), ENG_EBACKEND);
        assert_non_null(eng_ctx_fault(ctx));
        assert_int_equal(eng_ctx_fault_sticky(ctx), st);
        eng_ctx *c2 = NULL;
        assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &c2, &err),
                         st ? ENG_EBACKEND : ENG_OK);
        eng_ctx_free(c2);
        tu_cuda_emu_fail_after(0);
        eng_ctx_free(ctx);
    }
    free(out);
    eng_encoding_free(&e);
    eng_model_unref(m);
    /* a CPU context never has a sticky fault */
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cpu", .threads = 1}, &ctx, &err), 0);
    assert_int_equal(eng_ctx_fault_sticky(ctx), 0);
    eng_ctx_free(ctx);
}

/* ====================================================== models in fp16/bf16 */

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / (sqrt(aa) * sqrt(bb) + 1e-30);
}

static const char *const sents16[] = {
    "The movie was wonderful and the actors were great.",
    "I did not like the food at all.",
    "hello world",
    "A quick brown fox jumps over the lazy dog near the river bank.",
    "Où est la gare ? Café naïf, 東京.",
};
#define NSENT16 ((int)(sizeof sents16 / sizeof *sents16))

/* A model on the emulated CUDA backend in fp16 / bf16 (precision with backend "cuda-emu")
 * against the same folder in fp32 on the CPU: embeddings cosine >= min_cos per sentence,
 * classifier argmax equal, QA logits within qa_tol. Returns the worst cosine. */
static double model16(const char *dir, const char *prec, double min_cos, double qa_tol)
{
    eng_error err = {0};
    eng_model *m32, *m16;
    eng_ctx *cpu, *gpu;
    if (eng_model_load(dir, &m32, &err))
        fail_msg("load %s: %s", dir, err.msg);
    eng_model_opts o = {.precision = prec, .backend = "cuda-emu"};
    if (eng_model_load_opts(dir, &o, &m16, &err))
        fail_msg("load %s in %s on cuda-emu: %s", dir, prec, err.msg);
    const eng_model_info *info = eng_model_get_info(m16);
    assert_string_equal(info->precision, prec);
    assert_string_equal(info->kernel, !strcmp(prec, "fp16") ? "cublas_fp16" : "cublas_bf16");
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cpu", .threads = 1}, &cpu, &err), 0);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &gpu, &err), 0);
    eng_encoding enc[NSENT16];
    const eng_encoding *ep[NSENT16];
    int ntok = 0;
    for (int i = 0; i < NSENT16; i++) {
        eng_encoding_init(&enc[i]);
        ep[i] = &enc[i];
        if (info->task == ENG_TASK_QA)
            assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m32), "Where is it?", 12,
                                                  sents16[i], strlen(sents16[i]), 64, &enc[i],
                                                  &err), 0);
        else
            assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m32), sents16[i],
                                                  strlen(sents16[i]), NULL, 0, 64, &enc[i],
                                                  &err), 0);
        ntok += enc[i].n;
    }
    int H = info->hidden, L = info->num_labels;
    double worst = 1, worst_abs = 0, qa_mag = 0;
    if (info->task == ENG_TASK_EMBED) {
        float *a = malloc(sizeof(float) * NSENT16 * H), *b = malloc(sizeof(float) * NSENT16 * H);
        assert_int_equal(eng_run_embed(cpu, m32, ep, NSENT16, a, &err), 0);
        if (eng_run_embed(gpu, m16, ep, NSENT16, b, &err))
            fail_msg("embed on cuda-emu: %s", err.msg);
        for (int i = 0; i < NSENT16; i++) {
            double c = cosine(a + (size_t)i * H, b + (size_t)i * H, H);
            worst = c < worst ? c : worst;
        }
        worst_abs = tu_max_abs_diff(a, b, (size_t)NSENT16 * H);
        free(a), free(b);
    } else if (info->task == ENG_TASK_CLASSIFY) {
        float *a = malloc(sizeof(float) * NSENT16 * L), *b = malloc(sizeof(float) * NSENT16 * L);
        assert_int_equal(eng_run_classify(cpu, m32, ep, NSENT16, a, NULL, &err), 0);
        if (eng_run_classify(gpu, m16, ep, NSENT16, b, NULL, &err))
            fail_msg("classify on cuda-emu: %s", err.msg);
        for (int i = 0; i < NSENT16; i++) {
            int ia = 0, ib = 0;
            for (int j = 1; j < L; j++) {
                ia = a[i * L + j] > a[i * L + ia] ? j : ia;
                ib = b[i * L + j] > b[i * L + ib] ? j : ib;
            }
            if (ia != ib)
                fail_msg("%s %s: sentence %d: label %d, fp32 cpu %d", dir, prec, i, ib, ia);
        }
        worst_abs = tu_max_abs_diff(a, b, (size_t)NSENT16 * L);
        free(a), free(b);
    } else {
        float *a = malloc(sizeof(float) * 2 * ntok), *b = malloc(sizeof(float) * 2 * ntok);
        assert_int_equal(eng_run_qa_logits(cpu, m32, ep, NSENT16, a, a + ntok, &err), 0);
        if (eng_run_qa_logits(gpu, m16, ep, NSENT16, b, b + ntok, &err))
            fail_msg("qa on cuda-emu: %s", err.msg);
        worst_abs = tu_max_abs_diff(a, b, (size_t)2 * ntok);
        for (int i = 0; i < 2 * ntok; i++)
            qa_mag = fabs(a[i]) > qa_mag ? fabs(a[i]) : qa_mag;
        free(a), free(b);
    }
    /* 16-bit weights were used: not the fp32 result, and within the tolerance */
    assert_true(worst_abs > 0);
    if (info->task == ENG_TASK_QA && !(worst_abs <= qa_tol * qa_mag))
        fail_msg("%s %s: QA logits differ by %g (> %g of the largest, %g)", dir, prec,
                 worst_abs, qa_tol, qa_mag);
    if (!(worst >= min_cos))
        fail_msg("%s %s: cosine %.6f < %.4f", dir, prec, worst, min_cos);
    if (info->task == ENG_TASK_EMBED)
        print_message("  %s %s on cuda-emu vs fp32 cpu: worst cosine 1 - %.2e, max |diff| "
                      "%.3g\n", strrchr(dir, '/') + 1, prec, 1 - worst, worst_abs);
    else if (info->task == ENG_TASK_CLASSIFY)
        print_message("  %s %s on cuda-emu vs fp32 cpu: same labels, max |prob diff| %.3g\n",
                      strrchr(dir, '/') + 1, prec, worst_abs);
    else
        print_message("  %s %s on cuda-emu vs fp32 cpu: max |logit diff| %.3g (largest logit "
                      "%.3g)\n", strrchr(dir, '/') + 1, prec, worst_abs, qa_mag);
    for (int i = 0; i < NSENT16; i++)
        eng_encoding_free(&enc[i]);
    eng_ctx_free(cpu), eng_ctx_free(gpu);
    eng_model_unref(m32), eng_model_unref(m16);
    return worst;
}

static void test_model_16bit(void **state)
{
    (void)state;
    static const char *const prec[] = {"fp16", "bf16"};
    for (int p = 0; p < 2; p++) {
        int f16 = p == 0;
        model16(tu_path("%s/tests/fixtures/models/bert_st", tu_root()), prec[p], 0.999, 0);
        model16(tu_path("%s/tests/fixtures/models/bert_cls", tu_root()), prec[p], 1, 0);
        model16(tu_path("%s/tests/fixtures/models/distilbert_cls", tu_root()), prec[p], 1, 0);
        model16(tu_path("%s/tests/fixtures/models/bert_qa", tu_root()), prec[p], 1,
                f16 ? 0.005 : 0.03);
        const char *mini = tu_path("%s/models/all-MiniLM-L6-v2", tu_root());
        if (access(tu_path("%s/model.safetensors", mini), R_OK) == 0)
            model16(mini, prec[p], f16 ? 0.9995 : 0.999, 0);
        else
            print_message("  models/all-MiniLM-L6-v2 absent: MiniLM not compared\n");
    }

    /* what a backend cannot run is refused at load, naming it */
    eng_error err = {0};
    eng_model *m = NULL;
    const char *dir = tu_path("%s/tests/fixtures/models/bert_st", tu_root());
    assert_int_equal(eng_model_load_opts(dir, &(eng_model_opts){.precision = "fp16"}, &m, &err),
                     ENG_EUNSUPPORTED);
    assert_null(m);
    assert_non_null(strstr(err.msg, "fp16 runs on CUDA only"));
    print_message("  fp16 on the cpu: %s\n", err.msg);
    assert_int_equal(eng_model_load_opts(dir, &(eng_model_opts){.precision = "int8",
                                                                .backend = "cuda-emu"},
                                         &m, &err), ENG_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "int8 runs on the CPU only"));
    print_message("  int8 on cuda-emu: %s\n", err.msg);
    assert_int_equal(eng_precision_check("bf16", "cuda-emu", &err), ENG_OK);
    assert_int_equal(eng_precision_check("fp16", "cpu", &err), ENG_EUNSUPPORTED);
    assert_int_equal(eng_precision_check("fp8", "cpu", &err), ENG_EINVAL);
    /* devices: present, absent, and kinds this build lacks */
    assert_int_equal(eng_backend_check("cuda-emu:0", &err), ENG_OK);
    assert_int_equal(eng_backend_check("cuda-emu:3", &err), ENG_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "'cuda-emu:3': no such device (1 cuda-emu device present)"));
    assert_int_equal(eng_backend_check("frob", &err), ENG_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "not available (this build has: cpu"));
    assert_int_equal(eng_backend_check("cuda:x", &err), ENG_EINVAL);
    assert_int_equal(eng_backend_check(NULL, &err), ENG_OK);
}

size_t tu_cuda_emu_device_bytes(void) __attribute__((weak)); /* tests/cuda_emu/ */

/* Device memory of a model in fp32 and fp16 on the emulated CUDA backend: fp16 uploads
 * the block without the linear layers' fp32 weights plus their 16-bit copies (exact
 * figures from the layout), the emulation's allocations agree, and the outputs are
 * bitwise those of the previous path (the whole fp32 block uploaded, the layers packed
 * from it on the device). Returns the fp32 / fp16 device bytes in d[2]. */
static void device_memory_case(const char *dir, size_t d[2])
{
    eng_error err = {0};
    eng_model *m32, *m16;
    eng_ctx *gpu;
    if (eng_model_load_opts(dir, &(eng_model_opts){.precision = "fp32", .backend = "cuda-emu"},
                            &m32, &err) ||
        eng_model_load_opts(dir, &(eng_model_opts){.precision = "fp16", .backend = "cuda-emu"},
                            &m16, &err))
        fail_msg("load %s: %s", dir, err.msg);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &gpu, &err), 0);
    eng_backend *be = eng_ctx_backend(gpu);
    assert_true(eng_model_device_bytes(m32) == 0); /* nothing on a device before a run */
    eng_encoding enc[2];
    const eng_encoding *ep[2] = {&enc[0], &enc[1]};
    int ntok = 0;
    for (int i = 0; i < 2; i++) {
        eng_encoding_init(&enc[i]);
        assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m16), sents16[i],
                                              strlen(sents16[i]), NULL, 0, 32, &enc[i], &err), 0);
        ntok += enc[i].n;
    }
    size_t H = (size_t)eng_model_get_info(m16)->hidden, nout = (size_t)ntok * H;
    float *o32 = malloc(sizeof(float) * nout), *o16 = malloc(sizeof(float) * nout),
          *old = malloc(sizeof(float) * nout);
    size_t e0 = tu_cuda_emu_device_bytes();
    if (eng_run_hidden(gpu, m32, ep, 2, o32, &err) || eng_run_hidden(gpu, m16, ep, 2, o16, &err))
        fail_msg("run on cuda-emu: %s", err.msg);
    d[0] = eng_model_device_bytes(m32);
    d[1] = eng_model_device_bytes(m16);

    /* the figures the layout gives */
    const eng_bert *hb = eng_model_bert(m16);
    assert_non_null(hb);
    assert_false(hb->dropped); /* the host keeps the whole fp32 block */
    eng_linear *ls[256];
    int n = eng_bert_linears((eng_bert *)hb, ls, 256);
    assert_true(n > 0 && n < 256);
    size_t lin = 0;
    for (int i = 0; i < n; i++)
        lin += (size_t)ls[i]->out * ls[i]->in;
    assert_true(d[0] == hb->block_floats * sizeof(float));
    assert_true(d[1] == hb->tail_off * sizeof(float) + lin * 2);
    assert_true(d[1] < d[0]);
    /* the arena may have grown during the runs; the views are what the models hold */
    assert_true(tu_cuda_emu_device_bytes() - e0 >= d[0] + d[1]);

    /* the previous fp16 path: the whole block up, the layers packed from it */
    void *base = be->ops->weights_upload(be, hb->block, hb->block_floats * sizeof(float));
    assert_non_null(base);
    eng_bert ov;
    assert_int_equal(eng_bert_view(hb, base, &ov), ENG_OK);
    assert_int_equal(eng_bert_view_pack(&ov, be, ENG_WFMT_F16), ENG_OK);
    eng_arena ar;
    eng_arena_init(&ar, be);
    eng_bert_batch bt;
    if (eng_bert_prepare(&ov, be, &ar, ep, 2, 0, &bt, &err))
        fail_msg("prepare: %s", err.msg);
    float *hid = eng_bert_encode(&ov, be, &ar, &bt);
    assert_int_equal(be->ops->download(be, old, hid, sizeof(float) * nout), 0);
    assert_int_equal(be->ops->synchronize(be), 0);
    eng_bert_batch_close(&bt);
    eng_arena_close(&ar);
    assert_true(tu_max_abs_diff(o16, old, nout) == 0.0f);
    assert_true(tu_max_abs_diff(o16, o32, nout) > 0.0f); /* 16-bit weights were used */
    /* and the same 16-bit weights, held without an fp32 copy */
    const eng_bert *nv = eng_model_bert_on(m16, be, &err);
    assert_non_null(nv);
    eng_linear *nls[256], *ols[256];
    assert_int_equal(eng_bert_linears((eng_bert *)nv, nls, 256), n);
    assert_int_equal(eng_bert_linears(&ov, ols, 256), n);
    for (int i = 0; i < n; i++) {
        assert_null(nls[i]->w);
        assert_non_null(nls[i]->packed);
        size_t k = (size_t)nls[i]->out * nls[i]->in;
        float *a = malloc(sizeof(float) * k), *b = malloc(sizeof(float) * k);
        eng_nn_linear_unpack(nls[i], a);
        eng_nn_linear_unpack(ols[i], b);
        assert_memory_equal(a, b, sizeof(float) * k);
        free(a), free(b);
    }
    eng_bert_view_unpack(&ov);
    eng_bert_view_free(&ov);
    be->ops->weights_free(be->device, base);

    /* freeing a version gives back exactly what it reported */
    size_t e1 = tu_cuda_emu_device_bytes();
    eng_model_unref(m16);
    assert_true(e1 - tu_cuda_emu_device_bytes() == d[1]);
    e1 = tu_cuda_emu_device_bytes();
    eng_model_unref(m32);
    assert_true(e1 - tu_cuda_emu_device_bytes() == d[0]);
    print_message("  %s: device memory fp32 %zu bytes, fp16 %zu (%.1f%%; linear weights %zu "
                  "-> %zu)\n", strrchr(dir, '/') + 1, d[0], d[1], 100.0 * d[1] / d[0],
                  lin * 4, lin * 2);
    for (int i = 0; i < 2; i++)
        eng_encoding_free(&enc[i]);
    free(o32), free(o16), free(old);
    eng_ctx_free(gpu);
}

static void test_model_device_memory(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_device_bytes);
    size_t d[2];
    device_memory_case(tu_path("%s/tests/fixtures/models/bert_st", tu_root()), d);
    device_memory_case(tu_path("%s/tests/fixtures/models/bert_cls", tu_root()), d);
    const char *mini = tu_path("%s/models/all-MiniLM-L6-v2", tu_root());
    if (access(tu_path("%s/model.safetensors", mini), R_OK) == 0) {
        device_memory_case(mini, d);
        /* MiniLM: the linear weights are ~47% of it (the word embeddings most of the rest) */
        assert_true(d[1] < d[0] * 8 / 10);
    } else {
        print_message("  models/all-MiniLM-L6-v2 absent: not measured\n");
    }
}

/* A batch whose inputs and results are larger than the CUDA backend's first pinned
 * staging buffer (64 KiB): the results equal the CPU's within float tolerance and a
 * second run's bitwise, and no copy went through pageable memory asynchronously. */
static void test_model_pinned(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_pinned_bytes);
    eng_error err = {0};
    eng_model *m;
    eng_ctx *cpu, *gpu;
    if (eng_model_load(tu_path("%s/tests/fixtures/models/bert_st", tu_root()), &m, &err))
        fail_msg("load: %s", err.msg);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cpu", .threads = 1}, &cpu, &err), 0);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &gpu, &err), 0);
    enum { N = 14 };
    eng_encoding enc[N];
    const eng_encoding *ep[N];
    char text[2048];
    int ntok = 0;
    for (int i = 0; i < N; i++) {
        size_t w = 0;
        for (int r = 0; r <= 6 + i % 3; r++)
            w += (size_t)snprintf(text + w, sizeof text - w, "%s ", sents16[(i + r) % NSENT16]);
        eng_encoding_init(&enc[i]);
        ep[i] = &enc[i];
        assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), text, w, NULL, 0, 0,
                                              &enc[i], &err), 0);
        ntok += enc[i].n;
    }
    size_t H = (size_t)eng_model_get_info(m)->hidden, n = (size_t)ntok * H;
    assert_true(n * sizeof(float) > 64 * 1024);
    float *ref = malloc(n * 4), *o1 = malloc(n * 4), *o2 = malloc(n * 4);
    assert_int_equal(eng_run_hidden(cpu, m, ep, N, ref, &err), 0);
    long long pg0 = tu_cuda_emu_pageable_copies();
    if (eng_run_hidden(gpu, m, ep, N, o1, &err) || eng_run_hidden(gpu, m, ep, N, o2, &err))
        fail_msg("cuda-emu: %s", err.msg);
    assert_int_equal(tu_cuda_emu_pageable_copies() - pg0, 0);
    assert_true(tu_cuda_emu_pinned_bytes() >= n * 4);
    assert_memory_equal(o1, o2, n * 4);
    float d = tu_max_abs_diff(o1, ref, n);
    assert_true(d < 1e-4f);
    print_message("  %d tokens, %zu bytes of results through pinned memory (%zu held): max "
                  "|diff| vs cpu %.3g\n", ntok, n * 4, tu_cuda_emu_pinned_bytes(), d);
    for (int i = 0; i < N; i++)
        eng_encoding_free(&enc[i]);
    free(ref), free(o1), free(o2);
    eng_ctx_free(cpu), eng_ctx_free(gpu);
    eng_model_unref(m);
}

/* The CUDA backend's device scratch (16-bit activations, attention scores) counts in the
 * context's stats and is given back by eng_ctx_trim; the next run is unchanged. */
static void test_cuda_scratch_trim(void **state)
{
    (void)state;
    eng_error err = {0};
    eng_model *m;
    eng_ctx *gpu;
    if (eng_model_load_opts(tu_path("%s/tests/fixtures/models/bert_st", tu_root()),
                            &(eng_model_opts){.precision = "fp16", .backend = "cuda-emu"}, &m,
                            &err))
        fail_msg("load: %s", err.msg);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &gpu, &err), 0);
    eng_encoding enc[3];
    const eng_encoding *ep[3];
    for (int i = 0; i < 3; i++) {
        eng_encoding_init(&enc[i]);
        ep[i] = &enc[i];
        assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), sents16[i],
                                              strlen(sents16[i]), NULL, 0, 0, &enc[i], &err), 0);
    }
    size_t H = (size_t)eng_model_get_info(m)->hidden;
    float a[3 * 64], b[3 * 64];
    assert_true(H <= 64);
    assert_int_equal(eng_run_embed(gpu, m, ep, 3, a, &err), 0);
    eng_backend *be = eng_ctx_backend(gpu);
    size_t peak = 0, held = be->ops->scratch_bytes(be, &peak);
    assert_true(held > 0 && peak > 0 && peak <= held);
    eng_ctx_stats st;
    eng_ctx_get_stats(gpu, &st);
    assert_true(st.reserved_bytes >= held);
    size_t d0 = tu_cuda_emu_device_bytes();
    eng_ctx_trim(gpu, 0);
    assert_int_equal(be->ops->scratch_bytes(be, &peak), 0);
    assert_int_equal(peak, 0);
    assert_true(d0 - tu_cuda_emu_device_bytes() >= held);
    print_message("  cuda-emu scratch %zu bytes given back (context held %zu)\n", held,
                  st.reserved_bytes);
    assert_int_equal(eng_run_embed(gpu, m, ep, 3, b, &err), 0);
    assert_memory_equal(a, b, sizeof(float) * 3 * H);
    for (int i = 0; i < 3; i++)
        eng_encoding_free(&enc[i]);
    eng_ctx_free(gpu);
    eng_model_unref(m);
}

/* Every op of the interface, by part, for the summary. */
#define OPS_CORE(X) X(gemm) X(bias_act) X(add_layernorm) X(embed) X(attention) X(mean_pool) \
    X(gather_rows)
#define OPS_GEN(X) X(embed_scaled) X(attention_kv) X(copy_rows) X(log_softmax) X(topk) X(bias_silu)
#define OPS_TRAIN(X) X(gemm_ex) X(bias_act_train) X(act_backward) X(layernorm_backward) \
    X(embed_backward) X(attention_train) X(attention_backward) X(dropout) X(sum_rows) \
    X(scatter_rows) X(axpy) X(cross_entropy) X(bce_logits) X(sum_squares) X(adamw)

/* Appends the NULL ops of be to buf; returns their number. */
static int missing_ops(const eng_backend *be, char *buf, size_t cap)
{
    const eng_backend_ops *o = be->ops;
    int n = 0;
    size_t w = 0;
    buf[0] = 0;
#define MISS(part, op)                                                                  \
    if (!o->part || !o->part->op) {                                                     \
        n++;                                                                            \
        if (w < cap)                                                                    \
            w += (size_t)snprintf(buf + w, cap - w, "%s%s", n > 1 ? ", " : "", #op);    \
    }
#define MISS_CORE(op) MISS(core, op)
#define MISS_GEN(op) MISS(gen, op)
#define MISS_TRAIN(op) MISS(train, op)
    OPS_CORE(MISS_CORE)
    OPS_GEN(MISS_GEN)
    OPS_TRAIN(MISS_TRAIN)
    return n;
}

/* Last: which backend lacks which op (a "not supported" is never a pass), and which
 * registered kinds had no device here. */
static void test_summary(void **state)
{
    (void)state;
    tset s;
    set_open(&s);
    char buf[1024];
    FOR_EACH_BE(s, t)
    {
        int n = missing_ops(t->be, buf, sizeof buf);
        if (n)
            print_message("backend_ops: %-16s %d op(s) not supported: %s\n", t->label, n, buf);
        else
            print_message("backend_ops: %-16s every op supported and checked\n", t->label);
        assert_false(t->cpu && n); /* the CPU reference has every op */
    }
    for (int k = 0; k < eng_backend_reg_count(); k++) {
        const eng_backend_reg *r = eng_backend_reg_get(k);
        if (strcmp(r->name, "cpu") && r->device_count() == 0)
            print_message("backend_ops: %-16s no device here: not run\n", r->name);
    }
    set_close(&s);
}

TEST_GROUP(backend_ops)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_transfers),
        /* core */
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_bias_act),
        cmocka_unit_test(test_add_layernorm),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_batched),
        cmocka_unit_test(test_mean_pool),
        cmocka_unit_test(test_gather_scatter_rows),
        cmocka_unit_test(test_linear16),
        /* gen */
        cmocka_unit_test(test_embed_scaled),
        cmocka_unit_test(test_attention_kv),
        cmocka_unit_test(test_copy_rows),
        cmocka_unit_test(test_log_softmax),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_bias_silu),
        /* train */
        cmocka_unit_test(test_gemm_ex),
        cmocka_unit_test(test_act_backward),
        cmocka_unit_test(test_layernorm_backward),
        cmocka_unit_test(test_embed_backward),
        cmocka_unit_test(test_attention_backward),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_small_ops),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_device_fault),
        cmocka_unit_test(test_device_fault_sticky),
        cmocka_unit_test(test_model_16bit),
        cmocka_unit_test(test_model_device_memory),
        cmocka_unit_test(test_model_pinned),
        cmocka_unit_test(test_cuda_scratch_trim),
        cmocka_unit_test(test_summary),
    };
    TEST_GROUP_RETURN(t);
}
