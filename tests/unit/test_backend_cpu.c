/* test_backend_cpu.c - properties of the CPU backend itself, on every ISA path this
 * CPU supports (scalar, AVX2, AVX-512) with 1 and 2 threads: ISA choice, vector math
 * accuracy, the thread pool, batch invariance of its GEMM and pre-packed weights.
 * The ops themselves are checked on every backend by test_backend_ops.c. */
#include "test_util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_pool.h"

/* ---------------------------------------------------------------- helpers */

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

/* The configurations every op runs on: each supported ISA x {1, 2} threads. */
typedef struct be_cfg {
    eng_cpu_isa isa;
    int threads;
} be_cfg;

static int cfg_list(be_cfg *out)
{
    int n = 0;
    for (int i = 0; i < ENG_CPU_ISA_COUNT; i++) {
        if (!eng_cpu_isa_supported((eng_cpu_isa)i))
            continue;
        for (int t = 1; t <= 2; t++)
            out[n++] = (be_cfg){(eng_cpu_isa)i, t};
    }
    return n;
}

static eng_backend *be_new(be_cfg c)
{
    eng_backend *be = eng_backend_cpu_new_isa(c.threads, c.isa);
    assert_non_null(be);
    assert_int_equal(eng_backend_cpu_isa(be), c.isa);
    return be;
}

#define FOR_EACH_CFG(cfgvar)                                                \
    be_cfg cfgs_[2 * ENG_CPU_ISA_COUNT];                                    \
    int ncfg_ = cfg_list(cfgs_);                                            \
    for (int ci_ = 0; ci_ < ncfg_; ci_++)                                   \
        for (be_cfg cfgvar = cfgs_[ci_], *once_ = &cfgvar; once_; once_ = NULL)

/* ----------------------------------------------------------------- basics */

static void test_basics(void **state)
{
    (void)state;
    eng_backend *be = eng_backend_cpu_new(0);
    assert_non_null(be);
    assert_true(be->threads >= 1);
    assert_string_equal(be->ops->name, "cpu");
    float *p = be->ops->alloc(be, 1000 * sizeof(float));
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    float host[1000], back[1000];
    for (int i = 0; i < 1000; i++)
        host[i] = (float)i * 0.5f;
    assert_int_equal(be->ops->upload(be, p, host, sizeof host), 0);
    assert_int_equal(be->ops->download(be, back, p, sizeof back), 0);
    assert_memory_equal(host, back, sizeof host);
    assert_int_equal(be->ops->synchronize(be), 0);
    be->ops->free(be, p);
    be->ops->free(be, NULL);
    be->ops->destroy(be);

    /* NLPD_CPU_ISA forces a path; unknown names fall back to the best. */
    setenv("NLPD_CPU_ISA", "scalar", 1);
    be = eng_backend_cpu_new(1);
    assert_int_equal(eng_backend_cpu_isa(be), ENG_CPU_ISA_SCALAR);
    be->ops->destroy(be);
    setenv("NLPD_CPU_ISA", "bogus", 1);
    assert_int_equal(eng_cpu_isa_default(), eng_cpu_isa_default());
    unsetenv("NLPD_CPU_ISA");
    eng_cpu_isa best = eng_cpu_isa_default();
    assert_true(eng_cpu_isa_supported(best));
    print_message("cpu backend: best ISA here is %s\n", eng_cpu_isa_name(best));
}

/* -------------------------------------------------------------- vector math */

static double max_rel_err(void (*fn)(float *, const float *, int), double (*ref)(double),
                          const float *x, int n, float *y)
{
    fn(y, x, n);
    double m = 0;
    for (int i = 0; i < n; i++) {
        double r = ref((double)x[i]);
        double e = r == 0 ? fabs((double)y[i]) : fabs(((double)y[i] - r) / r);
        if (!(e <= m))
            m = e;
    }
    return m;
}

static void test_math_accuracy(void **state)
{
    (void)state;
    enum { N = 100003 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int i = 0; i < ENG_CPU_ISA_COUNT; i++) {
        const eng_cpu_kernels *k = eng_cpu_kernels_get((eng_cpu_isa)i);
        if (!k)
            continue;
        for (int j = 0; j < N; j++) /* the range where e^x is a normal float */
            x[j] = -87.0f + 175.0f * (float)j / (N - 1);
        double e_exp = max_rel_err(k->vexp, exp, x, N, y);
        for (int j = 0; j < N; j++)
            x[j] = -6.0f + 12.0f * (float)j / (N - 1);
        x[0] = 1e-20f;
        x[1] = -3e-8f;
        double e_erf = max_rel_err(k->verf, erf, x, N, y);
        double e_tanh = max_rel_err(k->vtanh, tanh, x, N, y);
        for (int j = 0; j < N; j++) /* small arguments: no cancellation allowed */
            x[j] = ldexpf(1.0f + (float)j / N, -(j % 30));
        double e_tanh_small = max_rel_err(k->vtanh, tanh, x, N, y);
        double e_erf_small = max_rel_err(k->verf, erf, x, N, y);
        print_message("%-6s max rel err: exp %.2e erf %.2e/%.2e tanh %.2e/%.2e\n", k->name,
                      e_exp, e_erf, e_erf_small, e_tanh, e_tanh_small);
        assert_true(e_exp < 2e-7);
        assert_true(e_erf < 2e-7 && e_erf_small < 2e-7);
        assert_true(e_tanh < 3e-7 && e_tanh_small < 3e-7);
        /* Edges: underflow to 0, exp(0) = 1, large erf/tanh saturate, NaN propagates. */
        float ex[4] = {-100.0f, 0.0f, 100.0f, NAN}, ey[4];
        k->vexp(ey, ex, 4);
        assert_true(ey[0] == 0.0f && ey[1] == 1.0f && isinf(ey[2]));
        k->verf(ey, ex, 4);
        assert_true(ey[0] == -1.0f && ey[1] == 0.0f && ey[2] == 1.0f && isnan(ey[3]));
        k->vtanh(ey, ex, 4);
        assert_true(ey[0] == -1.0f && ey[1] == 0.0f && ey[2] == 1.0f);
    }
    free(x);
    free(y);
}

/* ------------------------------------------------------------------ GEMM */

/* Batch invariance of B^T GEMMs: row i of C computed alone (M = 1) must equal,
 * bitwise, row i of the same product for any M, row offset, padding and thread
 * count, on every ISA. Rows are taken from the middle of a bigger A so that
 * they land at every position of the row tiles and work items. */
static void invariance_case(int N, int K, const int *ms, int nm, float alpha, float beta)
{
    int maxm = 0;
    for (int i = 0; i < nm; i++)
        maxm = ms[i] > maxm ? ms[i] : maxm;
    int lda = K + 3, ldc = N + 1;
    float *A = randv((size_t)maxm * lda, 1.0f), *B = randv((size_t)N * (K + 1), 1.0f);
    float *C0 = randv((size_t)maxm * ldc, 1.0f);
    float *alone = malloc((size_t)maxm * N * sizeof(float)), *C = malloc((size_t)maxm * ldc * sizeof(float));
    assert_non_null(alone);
    assert_non_null(C);
    eng_cpu_isa isa_prev = ENG_CPU_ISA_COUNT;
    FOR_EACH_CFG(c)
    {
        eng_backend *be = be_new(c);
        if (c.isa != isa_prev) { /* reference rows: one at a time, 1 thread */
            eng_backend *b1 = be_new((be_cfg){c.isa, 1});
            for (int i = 0; i < maxm; i++) {
                float *ci = C + (size_t)i * ldc;
                memcpy(ci, C0 + (size_t)i * ldc, (size_t)N * sizeof(float));
                b1->ops->core->gemm(b1, 1, 1, N, K, alpha, A + (size_t)i * lda, lda, B, K + 1, beta, ci,
                              ldc);
                memcpy(alone + (size_t)i * N, ci, (size_t)N * sizeof(float));
            }
            b1->ops->destroy(b1);
            isa_prev = c.isa;
        }
        for (int mi = 0; mi < nm; mi++) {
            int M = ms[mi], off = M < maxm ? (mi * 7) % (maxm - M + 1) : 0;
            memcpy(C, C0, (size_t)maxm * ldc * sizeof(float));
            be->ops->core->gemm(be, 1, M, N, K, alpha, A + (size_t)off * lda, lda, B, K + 1, beta,
                          C + (size_t)off * ldc, ldc);
            for (int i = off; i < off + M; i++)
                if (memcmp(C + (size_t)i * ldc, alone + (size_t)i * N, (size_t)N * sizeof(float)))
                    fail_msg("gemm row %d of M = %d (N %d, K %d) differs from the row alone "
                             "[%s, %d threads]", i - off, M, N, K, eng_cpu_isa_name(c.isa),
                             c.threads);
        }
        be->ops->destroy(be);
    }
    free(A);
    free(B);
    free(C0);
    free(alone);
    free(C);
}

static void test_gemm_row_invariance(void **state)
{
    (void)state;
    rng_seed(7);
    static const int ms[] = {1, 2, 3, 7, 16, 17, 33, 100, 300};
    static const int nk[][2] = {{1152, 384}, {384, 1536}, {37, 1}, {33, 2}, {17, 129},
                                {1, 384},    {100, 31},   {1536, 384}};
    for (size_t s = 0; s < sizeof nk / sizeof nk[0]; s++)
        invariance_case(nk[s][0], nk[s][1], ms, 9, 1.0f, 0.0f);
    invariance_case(45, 77, ms, 9, -0.75f, 0.5f); /* alpha, beta */
    static const int big[] = {1, 5, 4096}; /* many row items and threads, small K */
    invariance_case(40, 13, big, 3, 1.0f, 0.0f);
}

/* Pre-packed weights: gemm_prepacked must equal gemm(trans_b = 1) bitwise, for any
 * M, strides, alpha/beta and thread count, on every ISA; a handle packed by one
 * backend is used by others (other thread counts, other ISAs: the fallback). */
static void prepacked_case(int N, int K, int pad, float alpha, float beta, int all_m)
{
    static const int ms_all[] = {1, 2, 3, 5, 6, 7, 13, 16, 33, 96, 97, 191, 300};
    static const int ms_few[] = {1, 6, 7, 97, 300};
    const int *ms = all_m ? ms_all : ms_few;
    int nm = all_m ? 13 : 5;
    int maxm = 300, lda = K + pad + 1, ldb = K + pad, ldc = N + 2 * pad + 1;
    float *A = randv((size_t)maxm * lda, 1.0f), *B = randv((size_t)N * ldb, 1.0f);
    float *C0 = randv((size_t)maxm * ldc, 1.0f);
    size_t csz = (size_t)maxm * ldc * sizeof(float);
    float *want = malloc(csz), *got = malloc(csz);
    assert_non_null(want);
    assert_non_null(got);
    be_cfg us[2 * ENG_CPU_ISA_COUNT];
    int nu = cfg_list(us);
    FOR_EACH_CFG(c)
    {
        eng_backend *be = be_new(c);
        void *h = be->ops->core->pack_weight(be, B, N, K, ldb);
        assert_non_null(h);
        /* used by every configuration: its own ISA at every M, others (the fallback
         * to B) at a few */
        for (int ui = 0; ui < nu; ui++) {
            be_cfg u = us[ui];
            eng_backend *bu = be_new(u);
            for (int mi = 0; mi < nm; mi++) {
                int M = ms[mi];
                if (u.isa != c.isa && M != 1 && M != 97)
                    continue;
                memcpy(want, C0, csz);
                memcpy(got, C0, csz);
                bu->ops->core->gemm(bu, 1, M, N, K, alpha, A, lda, B, ldb, beta, want, ldc);
                bu->ops->core->gemm_prepacked(bu, M, N, K, alpha, A, lda, h, beta, got, ldc);
                if (memcmp(want, got, csz))
                    fail_msg("gemm_prepacked M %d N %d K %d differs from gemm [packed %s/%d, "
                             "run %s/%d]", M, N, K, eng_cpu_isa_name(c.isa), c.threads,
                             eng_cpu_isa_name(u.isa), u.threads);
            }
            bu->ops->destroy(bu);
        }
        be->ops->core->free_packed(be, h);
        be->ops->core->free_packed(be, NULL);
        be->ops->destroy(be);
    }
    free(A);
    free(B);
    free(C0);
    free(want);
    free(got);
}

static void test_gemm_prepacked(void **state)
{
    (void)state;
    rng_seed(11);
    prepacked_case(1, 1, 0, 1.0f, 0.0f, 1);
    prepacked_case(37, 13, 3, 1.0f, 0.0f, 1);
    prepacked_case(17, 129, 1, -0.75f, 0.5f, 1);
    prepacked_case(100, 31, 2, 1.0f, 1.0f, 1);
    prepacked_case(45, 77, 0, 0.0f, 0.5f, 0);    /* alpha = 0: C = beta C */
    prepacked_case(1152, 384, 0, 1.0f, 0.0f, 0); /* qkv of MiniLM */
    prepacked_case(384, 1536, 0, 1.0f, 0.0f, 0); /* ffn out: K in chunks */
    prepacked_case(1001, 801, 5, 1.0f, 0.0f, 0); /* odd N, K beyond a chunk */
    prepacked_case(3001, 64, 0, 1.0f, 0.0f, 0);  /* many blocks of B */
    /* the BLAS knob: prepacked handles fall back to gemm, equal still */
    setenv("NLPD_CPU_GEMM", "blas", 1);
    prepacked_case(37, 50, 2, 1.0f, 0.0f, 0);
    unsetenv("NLPD_CPU_GEMM");
}

/* ------------------------------------------------------------------- pool */

static atomic_int pool_hits;

static void pool_count(void *arg, int tid, int nt)
{
    (void)arg;
    assert_true(tid >= 0 && tid < nt);
    atomic_fetch_add(&pool_hits, 1 << (tid * 8));
}

static void test_pool(void **state)
{
    (void)state;
    for (int n = 1; n <= 3; n++) {
        eng_cpu_pool *p = eng_cpu_pool_new(n);
        assert_non_null(p);
        assert_int_equal(eng_cpu_pool_size(p), n);
        atomic_store(&pool_hits, 0);
        for (int i = 0; i < 2000; i++)
            eng_cpu_pool_run(p, pool_count, NULL, n);
        /* Idle gaps long enough for the workers to fall asleep: the wake-up path.
         * (Sleeping is the point here: the pool's idle state is time based.) */
        for (int i = 0; i < 5; i++) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            eng_cpu_pool_run(p, pool_count, NULL, n);
        }
        int want = 0;
        for (int t = 0; t < n; t++)
            want += 2005 << (t * 8);
        assert_int_equal(atomic_load(&pool_hits), want);
        eng_cpu_pool_free(p);
    }
}

TEST_GROUP(backend_cpu)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_basics),        cmocka_unit_test(test_math_accuracy),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_gemm_row_invariance),
        cmocka_unit_test(test_gemm_prepacked),
    };
    TEST_GROUP_RETURN(t);
}
