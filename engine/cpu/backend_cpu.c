/* backend_cpu.c - the CPU backend: own vectorised kernels (cpu_kernels_*.c, picked
 * at run time) including a batch-invariant packed GEMM for B^T (every linear layer),
 * OpenBLAS for the B [K, N] GEMMs of training, and a small persistent thread pool
 * (cpu_pool.c) that splits every op by rows, columns or (sequence, head) pairs.
 *
 * GEMM threading: OpenBLAS is set to one thread (process-wide) and each pool
 * thread calls cblas_sgemm on its own block of rows (or of columns when M is
 * small). One pool then owns the cores for every op: no second set of spinning
 * BLAS threads competes with ours between ops. NLPD_CPU_GEMM=blas instead sends
 * every GEMM to OpenBLAS and lets it thread them (a benchmarking knob: OpenBLAS's
 * results depend on M, so batching is then no longer bitwise invisible).
 */
#include "backend/backend.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_pool.h"
#include "cpu/cpu_qlinear.h"
#include "cpu/cpu_seq2seq_ops.h"
#include "cpu/cpu_train_ops.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct cpu_backend {
    eng_backend base; /* first: eng_backend * <-> cpu_backend * */
    const eng_cpu_kernels *k;
    eng_cpu_isa isa;
    eng_cpu_pool *pool;
    int blas_threads; /* 1: pool splits GEMMs; >1: OpenBLAS threads them */
    int blas_gemm;    /* NLPD_CPU_GEMM=blas: B^T GEMMs on OpenBLAS too (not batch-invariant) */
    pthread_mutex_t gemm_mu;
    float *gemm_buf; /* packed GEMM buffers, gemm_buf_per floats per thread */
    size_t gemm_buf_per;
    pthread_mutex_t scratch_mu;
    float *scratch; /* attention scratch, scratch_per floats per thread */
    size_t scratch_per;
    /* The most floats per thread a call asked for since the last trim (cpu_scratch_bytes). */
    size_t gemm_buf_peak, scratch_peak;
} cpu_backend;

static cpu_backend *cb_of(eng_backend *be)
{
    return (cpu_backend *)be;
}

/* ------------------------------------------------------------ ISA choice */

int eng_cpu_isa_supported(eng_cpu_isa isa)
{
    switch (isa) {
    case ENG_CPU_ISA_SCALAR:
        return 1;
#if defined(__x86_64__)
    case ENG_CPU_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ENG_CPU_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

const char *eng_cpu_isa_name(eng_cpu_isa isa)
{
    static const char *const names[ENG_CPU_ISA_COUNT] = {"scalar", "avx2", "avx512"};
    return (int)isa >= 0 && (int)isa < ENG_CPU_ISA_COUNT ? names[isa] : "unknown";
}

const eng_cpu_kernels *eng_cpu_kernels_get(eng_cpu_isa isa)
{
    if (!eng_cpu_isa_supported(isa))
        return NULL;
    switch (isa) {
#if defined(__x86_64__)
    case ENG_CPU_ISA_AVX512: return &eng_cpu_kernels_avx512;
    case ENG_CPU_ISA_AVX2: return &eng_cpu_kernels_avx2;
#endif
    default: return &eng_cpu_kernels_scalar;
    }
}

eng_cpu_isa eng_cpu_isa_default(void)
{
    eng_cpu_isa best = ENG_CPU_ISA_SCALAR;
    for (int i = ENG_CPU_ISA_COUNT - 1; i > 0; i--)
        if (eng_cpu_isa_supported((eng_cpu_isa)i)) {
            best = (eng_cpu_isa)i;
            break;
        }
    const char *want = getenv("NLPD_CPU_ISA");
    if (want && *want)
        for (int i = 0; i < ENG_CPU_ISA_COUNT; i++)
            if (strcmp(want, eng_cpu_isa_name((eng_cpu_isa)i)) == 0 && i <= (int)best &&
                eng_cpu_isa_supported((eng_cpu_isa)i))
                return (eng_cpu_isa)i;
    return best;
}

/* ------------------------------------------------------------ partitioning */

/* Dynamic scheduling: threads pull chunks of [0, extent) from a shared counter,
 * so a thread that the OS delays (2 cores shared with other work) does less
 * instead of holding everyone up. */
#ifndef CHUNKS_PER_THREAD
#define CHUNKS_PER_THREAD 4
#endif
typedef struct chunker {
    atomic_int next;
    int extent, chunk;
} chunker;

static void chunker_init(chunker *c, int extent, int align, int nt)
{
    int per = (extent + CHUNKS_PER_THREAD * nt - 1) / (CHUNKS_PER_THREAD * nt);
    per = (per + align - 1) / align * align;
    atomic_init(&c->next, 0);
    c->extent = extent;
    c->chunk = per > 0 ? per : align;
}

/* Claims the next chunk [*lo, *hi); 0 when none is left. */
static int chunker_next(chunker *c, int *lo, int *hi)
{
    int i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
    long long a = (long long)i * c->chunk;
    if (a >= c->extent)
        return 0;
    *lo = (int)a;
    *hi = a + c->chunk < c->extent ? (int)(a + c->chunk) : c->extent;
    return 1;
}

int eng_cpu_threads_for(const eng_backend *be, double work, double min_ns)
{
    int by_work = (int)(work / min_ns);
    int nt = be->threads < by_work ? be->threads : by_work;
    return nt < 1 ? 1 : nt;
}

/* Threads worth using for `work` units of roughly a nanosecond each (~5 us per
 * thread at least). */
static int threads_for(const cpu_backend *cb, double work)
{
    return eng_cpu_threads_for(&cb->base, work, 5000.0);
}

/* ------------------------------------------------------------------ memory */

static void *cpu_alloc(eng_backend *be, size_t bytes)
{
    (void)be;
    void *p = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

static void cpu_free(eng_backend *be, void *p)
{
    (void)be;
    free(p);
}

static int cpu_upload(eng_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
    return 0;
}

static int cpu_download(eng_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
    return 0;
}

static int cpu_synchronize(eng_backend *be)
{
    (void)be;
    return 0;
}

/* -------------------------------------------------------------------- GEMM */

/* B^T GEMMs (every linear layer) run the packed kernel of cpu_gemm_impl.h for all
 * M: its per-element order depends on K only, so a text's rows come out bitwise the
 * same whatever batch it shares. Work items are (block of B rows, block of A rows)
 * pairs, in that order; a thread packs a block of B (rows of B = columns of C) into
 * its own buffer when its item moves to a new block, so a block (~768 KB) stays in
 * L2 while A's rows stream past it. Threads never split a dot product. */
#define GEMM_PACK_FLOATS (192 * 1024) /* one packed block of B, floats */
#define GEMM_MC 96                     /* rows of A per work item */

typedef struct gemm_job {
    int trans_b, M, N, K, lda, ldb, ldc, by_rows;
    float alpha, beta;
    const float *A, *B;
    float *C;
    chunker ch; /* BLAS: rows (by_rows) or columns; packed: work items */
    /* packed kernel */
    const eng_cpu_kernels *k;
    int nc, mc, mb; /* columns per block of B, rows per item, items per block */
    float *buf;     /* per thread: a packed block of B */
    size_t buf_per;
    const float *pre; /* all of B packed once (pack_weight), or NULL */
    size_t pre_ps;    /* floats per panel of pre */
    const eng_cpu_kernels *kpre; /* kernels of pre's layout when not the backend's */
} gemm_job;

static void sgemm(const gemm_job *g, int m0, int m1, int n0, int n1)
{
    if (m1 <= m0 || n1 <= n0)
        return;
    const float *b = g->trans_b ? g->B + (size_t)n0 * g->ldb : g->B + n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, m1 - m0,
                n1 - n0, g->K, g->alpha, g->A + (size_t)m0 * g->lda, g->lda, b, g->ldb, g->beta,
                g->C + (size_t)m0 * g->ldc + n0, g->ldc);
}

static void gemm_task(void *arg, int tid, int nt)
{
    gemm_job *g = arg;
    int lo, hi;
    (void)tid;
    (void)nt;
    while (chunker_next(&g->ch, &lo, &hi)) {
        if (g->by_rows)
            sgemm(g, lo, hi, 0, g->N);
        else
            sgemm(g, 0, g->M, lo, hi);
    }
}

static void packed_task(void *arg, int tid, int nt)
{
    gemm_job *g = arg;
    /* no buffer with prepacked weights: NULL + 0 is undefined behaviour in C */
    float *bp = g->buf ? g->buf + (size_t)tid * g->buf_per : NULL;
    int packed = -1, lo, hi;
    (void)nt;
    while (chunker_next(&g->ch, &lo, &hi))
        for (int it = lo; it < hi; it++) {
            int jb = it / g->mb, ib = it % g->mb;
            int n0 = jb * g->nc, n1 = n0 + g->nc < g->N ? n0 + g->nc : g->N;
            int m0 = ib * g->mc, m1 = m0 + g->mc < g->M ? m0 + g->mc : g->M;
            if (g->pre) { /* blocks start on panel boundaries (nc: a multiple of gemm_nr) */
                const float *blk = g->pre + (size_t)(n0 / g->k->gemm_nr) * g->pre_ps;
                g->k->gemm_packed(m1 - m0, n1 - n0, g->K, g->alpha,
                                  g->A + (size_t)m0 * g->lda, g->lda, blk, g->beta,
                                  g->C + (size_t)m0 * g->ldc + n0, g->ldc);
                continue;
            }
            if (g->mb == 1) { /* A's rows meet each panel once: pack panels into L1 */
                g->k->gemm_direct(g->M, n0, n1, g->K, g->alpha, g->A, g->lda, g->B, g->ldb,
                                  g->beta, g->C, g->ldc, bp);
                continue;
            }
            if (jb != packed) {
                g->k->gemm_pack_b(bp, g->B, g->ldb, n0, n1, g->K);
                packed = jb;
            }
            g->k->gemm_packed(m1 - m0, n1 - n0, g->K, g->alpha, g->A + (size_t)m0 * g->lda,
                              g->lda, bp, g->beta, g->C + (size_t)m0 * g->ldc + n0, g->ldc);
        }
}

/* Grows the per-thread GEMM buffers to per floats each (cb->gemm_mu held); 0 or -1. */
static int reserve_gemm_buf(cpu_backend *cb, size_t per)
{
    if (per > cb->gemm_buf_peak)
        cb->gemm_buf_peak = per;
    if (per <= cb->gemm_buf_per)
        return 0;
    float *s = NULL;
    if (posix_memalign((void **)&s, 64, per * (size_t)cb->base.threads * sizeof(float)) != 0)
        return -1;
    free(cb->gemm_buf);
    cb->gemm_buf = s;
    cb->gemm_buf_per = per;
    return 0;
}

static void gemm_packed_run(cpu_backend *cb, gemm_job *g)
{
    const eng_cpu_kernels *k = g->kpre ? g->kpre : cb->k;
    int M = g->M, N = g->N, K = g->K, step = k->gemm_nr < 16 ? 16 : k->gemm_nr;
    int nt = threads_for(cb, (double)M * N * K / 60.0);
    /* Blocks of B sized for L2; then small enough that the items keep every thread busy
     * (a few rows of A: the blocks are the only parallelism). */
    int nc = GEMM_PACK_FLOATS / K / step * step;
    nc = nc < step ? step : nc;
    g->mc = M < GEMM_MC ? M : GEMM_MC;
    g->mb = (M + g->mc - 1) / g->mc;
    int want = 4 * nt / g->mb; /* blocks of B wanted */
    if (want > 1) {
        int c = (N + want - 1) / want;
        c = (c + step - 1) / step * step;
        nc = c < nc ? c : nc;
    }
    g->nc = nc < N ? nc : N;
    int items = g->mb * ((N + g->nc - 1) / g->nc);
    nt = nt < items ? nt : items;
    size_t per = eng_cpu_gemm_pack_floats(k->gemm_nr, g->mb == 1 ? k->gemm_nr : g->nc, K);
    per = (per + 15) / 16 * 16; /* keep each thread's buffer 64-byte aligned */
    g->k = k;
    if (g->pre) { /* B is packed already: no buffers, no lock */
        if (nt > 1) {
            chunker_init(&g->ch, items, 1, nt);
            eng_cpu_pool_run(cb->pool, packed_task, g, nt);
        } else {
            atomic_init(&g->ch.next, 0);
            g->ch.extent = items;
            g->ch.chunk = items;
            packed_task(g, 0, 1);
        }
        return;
    }
    /* Concurrent callers of one backend: the second gets a buffer of its own. */
    int locked = pthread_mutex_trylock(&cb->gemm_mu) == 0;
    float *own = NULL;
    if (locked && reserve_gemm_buf(cb, per) == 0) {
        g->buf = cb->gemm_buf;
    } else {
        if (posix_memalign((void **)&own, 64, per * (size_t)nt * sizeof(float)) != 0)
            own = NULL;
        g->buf = own;
    }
    if (g->buf) {
        g->buf_per = per;
        if (nt > 1) {
            chunker_init(&g->ch, items, 1, nt);
            eng_cpu_pool_run(cb->pool, packed_task, g, nt);
        } else {
            atomic_init(&g->ch.next, 0);
            g->ch.extent = items;
            g->ch.chunk = items;
            packed_task(g, 0, 1);
        }
    } else { /* out of memory: OpenBLAS needs none of ours (not batch-invariant) */
        sgemm(g, 0, M, 0, N);
    }
    free(own);
    if (locked)
        pthread_mutex_unlock(&cb->gemm_mu);
}

/* C = beta * C (BLAS semantics: beta == 0 writes zeros without reading C). */
static void scale_c(float *C, int ldc, int M, int N, float beta)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < N; j++)
            c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    }
}

static void cpu_gemm(eng_backend *be, int trans_b, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc)
{
    cpu_backend *cb = cb_of(be);
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(C, ldc, M, N, beta);
        return;
    }
    gemm_job g = {.trans_b = trans_b, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                  .ldc = ldc, .by_rows = 1, .alpha = alpha, .beta = beta, .A = A, .B = B,
                  .C = C};
    if (trans_b && !cb->blas_gemm) {
        gemm_packed_run(cb, &g);
        return;
    }
    /* B [K, N] (training's backward pass only), or NLPD_CPU_GEMM=blas. */
    int nt = cb->blas_threads > 1 ? 1 : threads_for(cb, (double)M * N * K / 60.0);
    if (nt > 1) {
        /* Split rows when each thread gets a decent block, else columns. */
        if (M >= 32 * nt)
            g.by_rows = 1;
        else if (N >= 32 * nt)
            g.by_rows = 0;
        else
            nt = 1;
    }
    if (nt > 1) {
        chunker_init(&g.ch, g.by_rows ? M : N, 16, nt);
        /* Each OpenBLAS call packs all of B: keep its row blocks large. */
        if (g.by_rows && g.ch.chunk < 256)
            g.ch.chunk = (M + nt - 1) / nt < 256 ? (M + nt - 1) / nt : 256;
        eng_cpu_pool_run(cb->pool, gemm_task, &g, nt);
    } else {
        sgemm(&g, 0, M, 0, N);
    }
}

/* Pre-packed weights: B packed once, whole, in the layout gemm_pack_b gives rows 0..N
 * (panels of gemm_nr rows, each eng_cpu_gemm_pack_floats(nr, nr, K) floats), so any
 * block of B that starts on a panel boundary is a plain offset into it; the layout
 * depends on the ISA only, never on threads. gemm_prepacked runs the same work items
 * and the same kernel (gemm_packed) as a per-call packing, hence the same bits. The
 * handle is immutable after packing: workers share it without locks. */
#define GEMM_PREPACKED_BIG ((size_t)4 << 20) /* floats of B: beyond this, see below */

#define CPU_PACKED_MAGIC 0x46504b44u /* "FPKD" */

typedef struct cpu_packed {
    uint32_t magic;           /* first, as in eng_cpu_qpacked */
    const eng_cpu_kernels *k; /* kernels whose layout data is in */
    const float *B;           /* the source, for backends on other kernels */
    int N, K, ldb;
    float *data; /* NULL on the scalar path: its packing is B's rows as they are */
    int own_b;   /* linear_pack: B is the handle's own copy (scalar), else NULL */
} cpu_packed;

static void *cpu_pack_weight(eng_backend *be, const float *B, int N, int K, int ldb)
{
    cpu_backend *cb = cb_of(be);
    if (!B || N <= 0 || K <= 0 || ldb < K)
        return NULL;
    cpu_packed *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    *h = (cpu_packed){.magic = CPU_PACKED_MAGIC, .k = cb->k, .B = B, .N = N, .K = K,
                      .ldb = ldb};
    if (cb->k->gemm_nr > 1) {
        size_t n = eng_cpu_gemm_pack_floats(cb->k->gemm_nr, N, K);
        if (posix_memalign((void **)&h->data, 64, n * sizeof(float)) != 0) {
            free(h);
            return NULL;
        }
        cb->k->gemm_pack_b(h->data, B, ldb, 0, N, K);
    }
    return h;
}

static void cpu_free_packed(eng_backend *be, void *packed)
{
    (void)be;
    cpu_packed *h = packed;
    if (!h)
        return;
    if (h->magic == ENG_CPU_QPACKED_MAGIC) {
        eng_cpu_qfree(packed);
        return;
    }
    if (h->own_b)
        free((float *)h->B);
    free(h->data);
    free(h);
}

static void cpu_gemm_prepacked(eng_backend *be, int M, int N, int K, float alpha,
                               const float *A, int lda, const void *packed, float beta,
                               float *C, int ldc)
{
    cpu_backend *cb = cb_of(be);
    const cpu_packed *h = packed;
    if (!h || h->N != N || h->K != K)
        abort(); /* programmer error: a handle of another shape */
    /* Another ISA's layout, the BLAS knob, or the trivial cases: gemm itself. So too a B
     * far beyond the caches met by several row items (the 54776 x 512 lm head of a
     * beam search): a streaming copy into a thread's L2-resident buffer then beats
     * reading the packing on demand (ops_cpu: ~4% at M >= 128); same values either way. */
    if (!h->data || h->k != cb->k || cb->blas_gemm || M <= 0 || alpha == 0.0f ||
        (M > GEMM_MC && (size_t)N * K > GEMM_PREPACKED_BIG)) {
        cpu_gemm(be, 1, M, N, K, alpha, A, lda, h->B, h->ldb, beta, C, ldc);
        return;
    }
    gemm_job g = {.trans_b = 1, .M = M, .N = N, .K = K, .lda = lda, .ldb = h->ldb,
                  .ldc = ldc, .by_rows = 1, .alpha = alpha, .beta = beta, .A = A, .B = h->B,
                  .C = C, .pre = h->data,
                  .pre_ps = eng_cpu_gemm_pack_floats(h->k->gemm_nr, h->k->gemm_nr, K)};
    gemm_packed_run(cb, &g);
}

/* ------------------------------------------------------ linear layers */

static void cpu_bias_act(eng_backend *be, float *x, const float *bias, int rows, int cols,
                         eng_act act);

/* fp32: the pack_weight layout made self-contained (the source may go: gemm runs on the
 * packing's own kernels, any backend); scalar kernels keep an own copy of W's rows. */
static void *cpu_linear_pack(eng_backend *be, const float *W, int N, int K, int ldw, int fmt)
{
    if (fmt != ENG_WFMT_F32)
        return eng_cpu_qpack(W, N, K, ldw, fmt);
    cpu_packed *h = cpu_pack_weight(be, W, N, K, ldw);
    if (!h || h->data) {
        if (h)
            h->B = NULL;
        return h;
    }
    float *copy = malloc((size_t)N * K * sizeof(float));
    if (!copy) {
        free(h);
        return NULL;
    }
    for (int n = 0; n < N; n++)
        memcpy(copy + (size_t)n * K, W + (size_t)n * ldw, (size_t)K * sizeof(float));
    h->B = copy;
    h->ldb = K;
    h->own_b = 1;
    return h;
}

static int cpu_linear_forward(eng_backend *be, const void *hv, float *y, const float *x, int M,
                              const float *bias, eng_act act)
{
    const cpu_packed *h = hv;
    if (h->magic == ENG_CPU_QPACKED_MAGIC) {
        if (eng_cpu_qforward(be, hv, y, x, M, bias, act))
            return ENG_ENOMEM;
        return ENG_OK;
    }
    if (M <= 0)
        return ENG_OK;
    if (h->B) { /* scalar own copy, or a pack_weight handle */
        cpu_gemm(be, 1, M, h->N, h->K, 1.0f, x, h->K, h->B, h->ldb, 0.0f, y, h->N);
    } else {
        gemm_job g = {.trans_b = 1, .M = M, .N = h->N, .K = h->K, .lda = h->K, .ldb = h->K,
                      .ldc = h->N, .by_rows = 1, .alpha = 1.0f, .beta = 0.0f, .A = x,
                      .C = y, .pre = h->data, .kpre = h->k,
                      .pre_ps = eng_cpu_gemm_pack_floats(h->k->gemm_nr, h->k->gemm_nr, h->K)};
        gemm_packed_run(cb_of(be), &g);
    }
    cpu_bias_act(be, y, bias, M, h->N, act);
    return ENG_OK;
}

static void cpu_linear_unpack(const void *hv, float *dst)
{
    const cpu_packed *h = hv;
    if (h->magic == ENG_CPU_QPACKED_MAGIC) {
        eng_cpu_qunpack(hv, dst);
        return;
    }
    if (h->B) {
        for (int n = 0; n < h->N; n++)
            memcpy(dst + (size_t)n * h->K, h->B + (size_t)n * h->ldb, (size_t)h->K * sizeof(float));
        return;
    }
    /* gemm_pack_b's layout: panels of nr columns [K4][4][nr], column jj of a panel at
     * (jj % 4) * nr + (jj / 4) * 4 within each k-group (cpu_gemm_impl.h) */
    int nr = h->k->gemm_nr, K4 = (h->K + 3) / 4;
    for (int n = 0; n < h->N; n++) {
        int jj = n % nr;
        const float *d = h->data + (size_t)(n / nr) * nr * K4 * 4 + (size_t)(jj % 4) * nr +
                         (size_t)(jj / 4) * 4;
        for (int k = 0; k < h->K; k++)
            dst[(size_t)n * h->K + k] = d[(size_t)(k / 4) * 4 * nr + k % 4];
    }
}

static size_t cpu_linear_info(eng_backend *be, const void *hv, const char **kernel)
{
    const cpu_packed *h = hv;
    if (h->magic == ENG_CPU_QPACKED_MAGIC) {
        const eng_cpu_qpacked *q = hv;
        if (kernel) {
            const eng_cpu_qkernels *qk =
                eng_cpu_qkernels_for(be ? cb_of(be)->isa : eng_cpu_isa_default(), q->fmt);
            *kernel = q->fmt == ENG_WFMT_INT8 ? qk->i8_name : qk->bf16_name;
        }
        return q->bytes;
    }
    if (kernel)
        *kernel = h->k->name;
    size_t b = sizeof *h;
    if (h->data)
        b += eng_cpu_gemm_pack_floats(h->k->gemm_nr, h->N, h->K) * sizeof(float);
    if (h->own_b)
        b += (size_t)h->N * h->K * sizeof(float);
    return b;
}

static void cpu_linear_free(void *h)
{
    cpu_free_packed(NULL, h);
}

/* ------------------------------------------------------ row-parallel ops */

typedef struct rows_job {
    const cpu_backend *cb;
    int op, rows, cols;
    eng_act act;
    float eps;
    float *out, *x;
    const float *res, *gamma, *beta, *bias;
    /* embed */
    const float *word, *pos, *type;
    const int32_t *ids, *pos_ids, *type_ids;
    chunker ch;
} rows_job;

enum { OP_BIAS_ACT, OP_LAYERNORM, OP_EMBED };

static void rows_chunk(const rows_job *j, int lo, int hi)
{
    const eng_cpu_kernels *k = j->cb->k;
    size_t o = (size_t)lo * j->cols;
    switch (j->op) {
    case OP_BIAS_ACT:
        k->bias_act(j->x + o, j->bias, hi - lo, j->cols, j->act);
        break;
    case OP_LAYERNORM:
        k->add_layernorm(j->out + o, j->x + o, j->res ? j->res + o : NULL, j->gamma, j->beta,
                         hi - lo, j->cols, j->eps);
        break;
    case OP_EMBED:
        for (int t = lo; t < hi; t++) {
            size_t d = (size_t)j->cols;
            k->add3(j->out + (size_t)t * d, j->word + (size_t)j->ids[t] * d,
                    j->pos + (size_t)j->pos_ids[t] * d,
                    j->type ? j->type + (size_t)j->type_ids[t] * d : NULL, j->cols);
        }
        break;
    }
}

static void rows_task(void *arg, int tid, int nt)
{
    rows_job *j = arg;
    int lo, hi;
    (void)tid;
    (void)nt;
    while (chunker_next(&j->ch, &lo, &hi))
        rows_chunk(j, lo, hi);
}

static void run_rows(const cpu_backend *cb, rows_job *j, double ns_per_elem)
{
    int nt = threads_for(cb, (double)j->rows * j->cols * ns_per_elem);
    if (nt > j->rows)
        nt = j->rows > 0 ? j->rows : 1;
    if (nt <= 1) {
        rows_chunk(j, 0, j->rows);
        return;
    }
    chunker_init(&j->ch, j->rows, 1, nt);
    eng_cpu_pool_run(cb->pool, rows_task, j, nt);
}

static void cpu_bias_act(eng_backend *be, float *x, const float *bias, int rows, int cols,
                         eng_act act)
{
    if (rows <= 0 || cols <= 0 || (!bias && act == ENG_ACT_NONE))
        return;
    cpu_backend *cb = cb_of(be);
    rows_job j = {.cb = cb, .op = OP_BIAS_ACT, .rows = rows, .cols = cols, .act = act,
                  .x = x, .bias = bias};
    run_rows(cb, &j, act == ENG_ACT_RELU || act == ENG_ACT_NONE ? 0.1 : 0.5);
}

static void cpu_add_layernorm(eng_backend *be, float *out, const float *x, const float *res,
                              const float *gamma, const float *beta, int rows, int cols,
                              float eps)
{
    if (rows <= 0 || cols <= 0)
        return;
    cpu_backend *cb = cb_of(be);
    rows_job j = {.cb = cb, .op = OP_LAYERNORM, .rows = rows, .cols = cols, .eps = eps,
                  .out = out, .x = (float *)x, .res = res, .gamma = gamma, .beta = beta};
    run_rows(cb, &j, 0.25);
}

static void cpu_embed(eng_backend *be, float *out, const float *word, const float *pos,
                      const float *type, const int32_t *ids, const int32_t *pos_ids,
                      const int32_t *type_ids, int ntok, int dim)
{
    if (ntok <= 0 || dim <= 0)
        return;
    cpu_backend *cb = cb_of(be);
    rows_job j = {.cb = cb, .op = OP_EMBED, .rows = ntok, .cols = dim, .out = out,
                  .word = word, .pos = pos, .type = type_ids ? type : NULL, .ids = ids,
                  .pos_ids = pos_ids, .type_ids = type_ids};
    run_rows(cb, &j, 0.3);
}

/* --------------------------------------------------------------- attention */

typedef struct attn_job {
    const cpu_backend *cb;
    eng_cpu_attn a;
    int nseq;
    chunker ch;
} attn_job;

/* Threads claim chunks of consecutive (sequence, head) items, so a thread knows
 * its next item and prefetches that item's rows while computing the current. */
static void attn_task(void *arg, int tid, int nt)
{
    attn_job *j = arg;
    float *scratch = j->cb->scratch + (size_t)tid * j->cb->scratch_per;
    int H = j->a.heads, lo, hi;
    (void)nt;
    while (chunker_next(&j->ch, &lo, &hi)) {
        j->cb->k->attn_prefetch(&j->a, lo / H, lo % H, 0, 1);
        for (int it = lo; it < hi; it++) {
            int nx = it + 1 < hi ? it + 1 : -1;
            j->cb->k->attn_head(&j->a, it / H, it % H, scratch, nx < 0 ? -1 : nx / H, nx % H);
        }
    }
}

/* Grows the per-thread scratch to per floats each; 0 or -1. */
static int reserve_scratch(cpu_backend *cb, size_t per)
{
    if (per > cb->scratch_peak)
        cb->scratch_peak = per;
    if (per <= cb->scratch_per)
        return 0;
    per = per + per / 2;
    float *s = NULL;
    size_t bytes = per * (size_t)cb->base.threads * sizeof(float);
    if (posix_memalign((void **)&s, 64, bytes) != 0)
        return -1;
    free(cb->scratch);
    cb->scratch = s;
    cb->scratch_per = per;
    return 0;
}

static void cpu_attention(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                          const float *k, int k_ld, const float *v, int v_ld,
                          const int32_t *q_off, const int32_t *kv_off, int nseq, int heads,
                          int head_dim, float scale, int causal)
{
    if (nseq <= 0 || heads <= 0 || head_dim <= 0)
        return;
    cpu_backend *cb = cb_of(be);
    int max_nk = 0;
    double work = 0;
    for (int s = 0; s < nseq; s++) {
        int nk = kv_off[s + 1] - kv_off[s], nq = q_off[s + 1] - q_off[s];
        max_nk = nk > max_nk ? nk : max_nk;
        work += (double)nq * nk * head_dim * heads * 4 / 80.0 + (double)nk * head_dim * heads;
    }
    attn_job j = {.cb = cb,
                  .a = {out, q, k, v, q_off, kv_off, out_ld, q_ld, k_ld, v_ld, heads, head_dim,
                        causal, scale},
                  .nseq = nseq};
    pthread_mutex_lock(&cb->scratch_mu);
    if (reserve_scratch(cb, eng_cpu_attn_scratch(head_dim, max_nk)) != 0) {
        /* Out of memory: one head at a time in a scratch of its own. */
        float *s = malloc(eng_cpu_attn_scratch(head_dim, max_nk) * sizeof(float));
        for (int i = 0; s && i < nseq * heads; i++)
            cb->k->attn_head(&j.a, i / heads, i % heads, s, -1, 0);
        free(s);
    } else {
        int nt = threads_for(cb, work);
        if (nt > nseq * heads)
            nt = nseq * heads;
        chunker_init(&j.ch, nseq * heads, 1, nt);
        eng_cpu_pool_run(cb->pool, attn_task, &j, nt);
    }
    pthread_mutex_unlock(&cb->scratch_mu);
}

/* -------------------------------------------------------- pooling, gather */

static void cpu_mean_pool(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                          int nseq, int dim, int normalize)
{
    (void)be;
    for (int s = 0; s < nseq; s++) {
        float *o = out + (size_t)s * dim;
        int r0 = seq_off[s], n = seq_off[s + 1] - r0;
        /* torch: sum / clamp(count, min=1e-9); the sum in double, by column blocks */
        float cnt = n > 0 ? (float)n : 1e-9f;
        for (int c0 = 0; c0 < dim; c0 += 64) {
            double acc[64] = {0};
            int w = dim - c0 < 64 ? dim - c0 : 64;
            for (int r = 0; r < n; r++) {
                const float *xr = x + (size_t)(r0 + r) * dim + c0;
                for (int c = 0; c < w; c++)
                    acc[c] += xr[c];
            }
            for (int c = 0; c < w; c++)
                o[c0 + c] = (float)acc[c] / cnt;
        }
        if (normalize) {
            double ss = 0;
            for (int c = 0; c < dim; c++)
                ss += (double)o[c] * o[c];
            float norm = (float)sqrt(ss);
            norm = norm > 1e-12f ? norm : 1e-12f;
            for (int c = 0; c < dim; c++)
                o[c] /= norm;
        }
    }
}

static void cpu_gather_rows(eng_backend *be, float *out, const float *x,
                            const int32_t *seq_off, int nseq, int row, int dim)
{
    (void)be;
    for (int s = 0; s < nseq; s++)
        memcpy(out + (size_t)s * dim, x + (size_t)(seq_off[s] + row) * dim,
               (size_t)dim * sizeof(float));
}

/* ------------------------------------------------------------- lifecycle */

static void cpu_destroy(eng_backend *be)
{
    cpu_backend *cb = cb_of(be);
    if (!cb)
        return;
    eng_cpu_pool_free(cb->pool);
    pthread_mutex_destroy(&cb->scratch_mu);
    pthread_mutex_destroy(&cb->gemm_mu);
    free(cb->scratch);
    free(cb->gemm_buf);
    free(cb);
}

/* The GEMM buffers and attention scratch held between calls, and in *peak what calls
 * needed since the last trim. */
static size_t cpu_scratch_bytes(eng_backend *be, size_t *peak)
{
    cpu_backend *cb = cb_of(be);
    size_t t = (size_t)cb->base.threads * sizeof(float);
    pthread_mutex_lock(&cb->gemm_mu);
    pthread_mutex_lock(&cb->scratch_mu);
    size_t held = (cb->gemm_buf_per + cb->scratch_per) * t;
    if (peak)
        *peak = (cb->gemm_buf_peak + cb->scratch_peak) * t;
    pthread_mutex_unlock(&cb->scratch_mu);
    pthread_mutex_unlock(&cb->gemm_mu);
    return held;
}

/* Frees the attention scratch, then the GEMM buffers, until at most keep bytes are
 * held (they grow back on demand: no partial shrink is worth a copy). */
static void cpu_scratch_trim(eng_backend *be, size_t keep)
{
    cpu_backend *cb = cb_of(be);
    size_t t = (size_t)cb->base.threads * sizeof(float);
    pthread_mutex_lock(&cb->gemm_mu);
    pthread_mutex_lock(&cb->scratch_mu);
    if ((cb->gemm_buf_per + cb->scratch_per) * t > keep) {
        free(cb->scratch);
        cb->scratch = NULL;
        cb->scratch_per = 0;
    }
    if (cb->gemm_buf_per * t > keep) {
        free(cb->gemm_buf);
        cb->gemm_buf = NULL;
        cb->gemm_buf_per = 0;
    }
    cb->gemm_buf_peak = cb->scratch_peak = 0;
    pthread_mutex_unlock(&cb->scratch_mu);
    pthread_mutex_unlock(&cb->gemm_mu);
}

/* Weights stay where the model loaded them: the CPU reads host memory. */
static void *cpu_weights_upload(eng_backend *be, const void *host, size_t bytes)
{
    (void)be;
    (void)bytes;
    return (void *)host;
}

static void cpu_weights_free(int device, void *view)
{
    (void)device;
    (void)view;
}

static const eng_backend_core_ops cpu_core = {
    .gemm = cpu_gemm,
    .bias_act = cpu_bias_act,
    .add_layernorm = cpu_add_layernorm,
    .embed = cpu_embed,
    .attention = cpu_attention,
    .mean_pool = cpu_mean_pool,
    .gather_rows = cpu_gather_rows,
    .pack_weight = cpu_pack_weight,
    .gemm_prepacked = cpu_gemm_prepacked,
    .free_packed = cpu_free_packed,
    .linear_pack = cpu_linear_pack,
    .linear_forward = cpu_linear_forward,
    .linear_unpack = cpu_linear_unpack,
    .linear_info = cpu_linear_info,
    .linear_free = cpu_linear_free,
};

static const eng_backend_gen_ops cpu_gen = {
    .embed_scaled = eng_cpu_embed_scaled,
    .attention_kv = eng_cpu_attention_kv,
    .copy_rows = eng_cpu_copy_rows,
    .log_softmax = eng_cpu_log_softmax,
    .topk = eng_cpu_topk,
    .bias_silu = eng_cpu_bias_silu,
};

static const eng_backend_train_ops cpu_train = {
    .gemm_ex = eng_cpu_gemm_ex,
    .bias_act_train = eng_cpu_bias_act_train,
    .act_backward = eng_cpu_act_backward,
    .layernorm_backward = eng_cpu_layernorm_backward,
    .embed_backward = eng_cpu_embed_backward,
    .attention_train = eng_cpu_attention_train,
    .attention_backward = eng_cpu_attention_backward,
    .dropout = eng_cpu_dropout,
    .sum_rows = eng_cpu_sum_rows,
    .scatter_rows = eng_cpu_scatter_rows,
    .axpy = eng_cpu_axpy,
    .cross_entropy = eng_cpu_cross_entropy,
    .bce_logits = eng_cpu_bce_logits,
    .sum_squares = eng_cpu_sum_squares,
    .adamw = eng_cpu_adamw,
};

static const eng_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .synchronize = cpu_synchronize,
    .zero = eng_cpu_zero,
    .weights_upload = cpu_weights_upload,
    .weights_free = cpu_weights_free,
    .scratch_bytes = cpu_scratch_bytes,
    .scratch_trim = cpu_scratch_trim,
    .core = &cpu_core,
    .gen = &cpu_gen,
    .train = &cpu_train,
};

eng_backend *eng_backend_cpu_new_isa(int threads, eng_cpu_isa isa)
{
    const eng_cpu_kernels *k = eng_cpu_kernels_get(isa);
    if (!k)
        return NULL;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return NULL;
    cb->base.ops = &cpu_ops;
    cb->base.threads = threads;
    cb->k = k;
    cb->isa = isa;
    const char *gm = getenv("NLPD_CPU_GEMM");
    cb->blas_gemm = gm && strcmp(gm, "blas") == 0;
    cb->blas_threads = cb->blas_gemm ? threads : 1;
    cb->pool = eng_cpu_pool_new(threads);
    if (!cb->pool) {
        free(cb);
        return NULL;
    }
    pthread_mutex_init(&cb->scratch_mu, NULL);
    pthread_mutex_init(&cb->gemm_mu, NULL);
    /* Process-wide: the last backend created decides OpenBLAS's threading. */
    openblas_set_num_threads(cb->blas_threads);
    return &cb->base;
}

eng_backend *eng_backend_cpu_new(int threads)
{
    return eng_backend_cpu_new_isa(threads, eng_cpu_isa_default());
}

eng_cpu_isa eng_backend_cpu_isa(const eng_backend *be)
{
    return ((const cpu_backend *)be)->isa;
}

const eng_cpu_kernels *eng_backend_cpu_kernels(const eng_backend *be)
{
    return ((const cpu_backend *)be)->k;
}

void eng_backend_cpu_run(eng_backend *be, eng_cpu_task_fn fn, void *arg, int nt)
{
    eng_cpu_pool_run(cb_of(be)->pool, fn, arg, nt);
}
