/* cpu_train_ops.c - training ops of the CPU backend: backward passes, dropout,
 * losses and AdamW (contracts in backend.h).
 *
 * Threads: the backend's own pool (eng_backend_cpu_run).
 * GEMMs go to OpenBLAS (set to one thread by the backend) on row or column
 * blocks, as backend_cpu.c does; elementwise maths that needs exp/erf/tanh uses
 * the backend's vectorised kernels for the CPU's instruction set.
 */
#include "cpu/cpu_train_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_kernels.h"

/* Hot elementwise loops: compiled for AVX-512 and AVX2 besides the baseline and
 * picked at run time (DESIGN §6), at -O3 so that they vectorise. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
#else
#define HOT
#endif

/* ------------------------------------------------------------- threading */

/* Threads worth using for `work` units of about a nanosecond each (>= 20 us per thread). */
static int threads_for(const eng_backend *be, double work)
{
    return eng_cpu_threads_for(be, work, 20000.0);
}

/* [*lo, *hi) of n items for thread tid of nt, in multiples of align. */
static void split(size_t n, size_t align, int tid, int nt, size_t *lo, size_t *hi)
{
    size_t units = (n + align - 1) / align;
    size_t per = units / (size_t)nt, extra = units % (size_t)nt, t = (size_t)tid;
    size_t u0 = t * per + (t < extra ? t : extra);
    size_t u1 = u0 + per + (t < extra ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

/* -------------------------------------------------------------------- GEMM */

typedef struct gemm_job {
    int ta, tb, M, N, K, lda, ldb, ldc, by_rows;
    float alpha, beta;
    const float *A, *B;
    float *C;
} gemm_job;

static void gemm_block(const gemm_job *g, int m0, int m1, int n0, int n1)
{
    if (m1 <= m0 || n1 <= n0)
        return;
    const float *a = g->ta ? g->A + m0 : g->A + (size_t)m0 * g->lda;
    const float *b = g->tb ? g->B + (size_t)n0 * g->ldb : g->B + n0;
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                g->tb ? CblasTrans : CblasNoTrans, m1 - m0, n1 - n0, g->K, g->alpha, a, g->lda,
                b, g->ldb, g->beta, g->C + (size_t)m0 * g->ldc + n0, g->ldc);
}

static void gemm_task(void *arg, int tid, int nt)
{
    const gemm_job *g = arg;
    size_t lo, hi;
    if (g->by_rows) {
        split((size_t)g->M, 16, tid, nt, &lo, &hi);
        gemm_block(g, (int)lo, (int)hi, 0, g->N);
    } else {
        split((size_t)g->N, 16, tid, nt, &lo, &hi);
        gemm_block(g, 0, g->M, (int)lo, (int)hi);
    }
}

void eng_cpu_gemm_ex(eng_backend *be, int trans_a, int trans_b, int M, int N, int K,
                     float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                     float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0 || alpha == 0.0f) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float *c = C + (size_t)i * ldc + j;
                *c = beta == 0.0f ? 0.0f : beta * *c;
            }
        return;
    }
    gemm_job g = {trans_a, trans_b, M, N, K, lda, ldb, ldc, 1, alpha, beta, A, B, C};
    int nt = threads_for(be, (double)M * N * K / 60.0);
    if (nt > 1) {
        /* Every thread packs the whole of the operand it does not split: split the
         * larger of M and N so that the duplicated packing is the smaller one. */
        if (M >= N && M >= 32 * nt)
            g.by_rows = 1;
        else if (N >= 32 * nt)
            g.by_rows = 0;
        else if (M >= 32 * nt)
            g.by_rows = 1;
        else
            nt = 1;
    }
    eng_backend_cpu_run(be, gemm_task, &g, nt);
}

/* ------------------------------------------------------- rows of elements */

typedef struct rows_job {
    const eng_cpu_kernels *k;
    int op, rows, cols;
    eng_act act;
    float eps;
    float *out, *out2, *dg, *db; /* dg/db: per-thread partial sums, 2 * cols each */
    const float *in, *in2, *in3, *vec;
} rows_job;

enum { R_BIAS_ACT, R_ACT_BWD, R_LN_BWD };

#define CHUNK 512

/* dy * act'(x) for n <= CHUNK elements. */
HOT static void act_bwd_chunk(const eng_cpu_kernels *k, float *dx, const float *dy, const float *x,
                          int n, eng_act act)
{
    float a[CHUNK] = {0}, b[CHUNK] = {0}; /* (initialised: gcc cannot see n > 0) */
    switch (act) {
    case ENG_ACT_GELU:
        /* d/dx x Phi(x) = Phi(x) + x phi(x) */
        for (int i = 0; i < n; i++) {
            a[i] = x[i] * 0.70710678118654752f;
            b[i] = -0.5f * x[i] * x[i];
        }
        k->verf(a, a, n);
        k->vexp(b, b, n);
        for (int i = 0; i < n; i++)
            dx[i] = dy[i] * (0.5f * (1.0f + a[i]) + x[i] * b[i] * 0.39894228040143268f);
        break;
    case ENG_ACT_GELU_TANH: {
        const float c = 0.79788456080286536f, c3 = 0.044715f;
        for (int i = 0; i < n; i++)
            a[i] = c * (x[i] + c3 * x[i] * x[i] * x[i]);
        k->vtanh(a, a, n);
        for (int i = 0; i < n; i++) {
            float t = a[i];
            float d = 0.5f * (1.0f + t) +
                      0.5f * x[i] * (1.0f - t * t) * c * (1.0f + 3.0f * c3 * x[i] * x[i]);
            dx[i] = dy[i] * d;
        }
        break;
    }
    case ENG_ACT_RELU:
        for (int i = 0; i < n; i++)
            dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case ENG_ACT_TANH:
        k->vtanh(a, x, n);
        for (int i = 0; i < n; i++)
            dx[i] = dy[i] * (1.0f - a[i] * a[i]);
        break;
    case ENG_ACT_NONE:
    default:
        if (dx != dy)
            memmove(dx, dy, (size_t)n * sizeof(float));
        break;
    }
}

/* One row of the LayerNorm backward; dg/db accumulate this thread's partial sums. */
HOT static void ln_bwd_row(float *dx, float *dg, float *db, const float *dout, const float *x,
                       const float *res, const float *gamma, int cols, float eps)
{
    double s = 0, ss = 0;
    for (int c = 0; c < cols; c++)
        s += (double)x[c] + (res ? res[c] : 0.0f);
    double mean = s / cols;
    for (int c = 0; c < cols; c++) {
        double d = (double)(x[c] + (res ? res[c] : 0.0f)) - mean;
        ss += d * d;
    }
    float rstd = (float)(1.0 / sqrt(ss / cols + (double)eps));
    float fm = (float)mean;
    double sum_dxh = 0, sum_dxh_xh = 0;
    for (int c = 0; c < cols; c++) {
        float xh = ((x[c] + (res ? res[c] : 0.0f)) - fm) * rstd;
        float dxh = dout[c] * gamma[c];
        dg[c] += dout[c] * xh;
        db[c] += dout[c];
        sum_dxh += dxh;
        sum_dxh_xh += (double)dxh * xh;
    }
    float m1 = (float)(sum_dxh / cols), m2 = (float)(sum_dxh_xh / cols);
    for (int c = 0; c < cols; c++) {
        float xh = ((x[c] + (res ? res[c] : 0.0f)) - fm) * rstd;
        dx[c] = rstd * (dout[c] * gamma[c] - m1 - xh * m2);
    }
}

static void rows_task(void *arg, int tid, int nt)
{
    const rows_job *j = arg;
    size_t lo, hi;
    split((size_t)j->rows, 1, tid, nt, &lo, &hi);
    size_t C = (size_t)j->cols;
    for (size_t r = lo; r < hi; r++) {
        size_t o = r * C;
        switch (j->op) {
        case R_BIAS_ACT: {
            float *pre = j->out + o, *post = j->out2 + o;
            if (j->vec)
                for (size_t c = 0; c < C; c++)
                    pre[c] += j->vec[c];
            memcpy(post, pre, C * sizeof(float));
            if (j->act != ENG_ACT_NONE)
                j->k->bias_act(post, NULL, 1, j->cols, j->act);
            break;
        }
        case R_ACT_BWD:
            for (size_t c = 0; c < C; c += CHUNK) {
                int n = C - c < CHUNK ? (int)(C - c) : CHUNK;
                act_bwd_chunk(j->k, j->out + o + c, j->in + o + c, j->in2 + o + c, n, j->act);
            }
            break;
        case R_LN_BWD:
            ln_bwd_row(j->out + o, j->dg + (size_t)tid * 2 * C, j->dg + (size_t)tid * 2 * C + C,
                       j->in + o, j->in2 + o, j->in3 ? j->in3 + o : NULL, j->vec, j->cols,
                       j->eps);
            break;
        }
    }
}

static int rows_threads(eng_backend *be, int rows, int cols, double ns_per_elem)
{
    int nt = threads_for(be, (double)rows * cols * ns_per_elem);
    return nt > rows ? (rows > 0 ? rows : 1) : nt;
}

void eng_cpu_bias_act_train(eng_backend *be, float *pre, float *post, const float *bias,
                            int rows, int cols, eng_act act)
{
    if (rows <= 0 || cols <= 0)
        return;
    rows_job j = {.k = eng_backend_cpu_kernels(be), .op = R_BIAS_ACT, .rows = rows,
                  .cols = cols, .act = act, .out = pre, .out2 = post, .vec = bias};
    eng_backend_cpu_run(be, rows_task, &j, rows_threads(be, rows, cols, 0.6));
}

void eng_cpu_act_backward(eng_backend *be, float *dx, const float *dy, const float *pre,
                          int rows, int cols, eng_act act)
{
    if (rows <= 0 || cols <= 0)
        return;
    rows_job j = {.k = eng_backend_cpu_kernels(be), .op = R_ACT_BWD, .rows = rows,
                  .cols = cols, .act = act, .out = dx, .in = dy, .in2 = pre};
    eng_backend_cpu_run(be, rows_task, &j, rows_threads(be, rows, cols, 1.0));
}

void eng_cpu_layernorm_backward(eng_backend *be, float *dx, float *dgamma, float *dbeta,
                                const float *dout, const float *x, const float *res,
                                const float *gamma, int rows, int cols, float eps)
{
    if (rows <= 0 || cols <= 0)
        return;
    int nt = rows_threads(be, rows, cols, 1.0);
    size_t C = (size_t)cols;
    float *part = calloc((size_t)nt * 2 * C, sizeof(float));
    if (!part) { /* no scratch: one thread accumulating straight into the gradients */
        for (int r = 0; r < rows; r++) {
            size_t o = (size_t)r * C;
            ln_bwd_row(dx + o, dgamma, dbeta, dout + o, x + o, res ? res + o : NULL, gamma,
                       cols, eps);
        }
        return;
    }
    rows_job j = {.op = R_LN_BWD, .rows = rows, .cols = cols, .eps = eps, .out = dx,
                  .dg = part, .in = dout, .in2 = x, .in3 = res, .vec = gamma};
    eng_backend_cpu_run(be, rows_task, &j, nt);
    for (int t = 0; t < nt; t++)
        for (size_t c = 0; c < C; c++) {
            dgamma[c] += part[(size_t)t * 2 * C + c];
            dbeta[c] += part[(size_t)t * 2 * C + C + c];
        }
    free(part);
}

/* ------------------------------------------------------------- embeddings */

typedef struct embed_job {
    float *dword, *dpos, *dtype;
    const float *dout;
    const int32_t *ids, *pos_ids, *type_ids;
    int ntok, dim;
} embed_job;

/* Threads split the columns: tokens that share an id then never race. */
static void embed_task(void *arg, int tid, int nt)
{
    const embed_job *j = arg;
    size_t lo, hi, D = (size_t)j->dim;
    split(D, 16, tid, nt, &lo, &hi);
    for (int t = 0; t < j->ntok; t++) {
        const float *g = j->dout + (size_t)t * D;
        float *w = j->dword + (size_t)j->ids[t] * D;
        float *p = j->dpos + (size_t)j->pos_ids[t] * D;
        float *ty = j->dtype ? j->dtype + (size_t)j->type_ids[t] * D : NULL;
        for (size_t c = lo; c < hi; c++) {
            w[c] += g[c];
            p[c] += g[c];
        }
        if (ty)
            for (size_t c = lo; c < hi; c++)
                ty[c] += g[c];
    }
}

void eng_cpu_embed_backward(eng_backend *be, float *dword, float *dpos, float *dtype,
                            const float *dout, const int32_t *ids, const int32_t *pos_ids,
                            const int32_t *type_ids, int ntok, int dim)
{
    if (ntok <= 0 || dim <= 0)
        return;
    embed_job j = {dword, dpos, type_ids ? dtype : NULL, dout, ids, pos_ids, type_ids, ntok, dim};
    int nt = threads_for(be, (double)ntok * dim * 0.5);
    if (nt > (dim + 15) / 16)
        nt = (dim + 15) / 16;
    eng_backend_cpu_run(be, embed_task, &j, nt);
}

/* --------------------------------------------------------------- attention */

typedef struct attn_job {
    const eng_cpu_kernels *k;
    float *out, *probs;
    float *dq, *dk, *dv;
    const float *dout, *q, *kk, *v;
    const int64_t *p_off;
    const int32_t *seq_off;
    int out_ld, qkv_ld, dqkv_ld, dout_ld;
    int nseq, heads, hd;
    float scale, p;
    uint64_t seed;
    float *scratch; /* 2 * max_n^2 floats per thread */
    size_t scratch_per;
    atomic_int next;
    void (*item)(struct attn_job *j, int s, int h, float *scratch);
} attn_job;

/* dst = src * keep / (1 - p) over the n x n block whose first element has index base. */
HOT static void drop_block(float *dst, const float *src, size_t count, uint64_t base, float p,
                           uint64_t seed)
{
    float inv = 1.0f / (1.0f - p);
    uint64_t thr = eng_dropout_threshold(p);
    for (size_t i = 0; i < count; i++)
        dst[i] = eng_dropout_keep_t(seed, base + i, thr) ? src[i] * inv : 0.0f;
}

static void softmax_rows(const eng_cpu_kernels *k, float *P, int n)
{
    for (int i = 0; i < n; i++) {
        float *r = P + (size_t)i * n, mx = r[0];
        for (int j = 1; j < n; j++)
            mx = r[j] > mx ? r[j] : mx;
        for (int j = 0; j < n; j++)
            r[j] -= mx;
        k->vexp(r, r, n);
        float sum = 0;
        for (int j = 0; j < n; j++)
            sum += r[j];
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++)
            r[j] *= inv;
    }
}

static void attn_fwd_item(attn_job *j, int s, int h, float *scratch)
{
    int r0 = j->seq_off[s], n = j->seq_off[s + 1] - r0, hd = j->hd;
    if (n <= 0)
        return;
    size_t ld = (size_t)j->qkv_ld;
    const float *Q = j->q + (size_t)r0 * ld + (size_t)h * hd;
    const float *K = j->kk + (size_t)r0 * ld + (size_t)h * hd;
    const float *V = j->v + (size_t)r0 * ld + (size_t)h * hd;
    uint64_t base = (uint64_t)j->p_off[s] + (uint64_t)h * n * n;
    float *P = j->probs + base;
    float *O = j->out + (size_t)r0 * j->out_ld + (size_t)h * hd;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, j->scale, Q, (int)ld, K,
                (int)ld, 0.0f, P, n);
    softmax_rows(j->k, P, n);
    const float *Pd = P;
    if (j->p > 0.0f) {
        drop_block(scratch, P, (size_t)n * n, base, j->p, j->seed);
        Pd = scratch;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, 1.0f, Pd, n, V, (int)ld,
                0.0f, O, j->out_ld);
}

static void attn_bwd_item(attn_job *j, int s, int h, float *scratch)
{
    int r0 = j->seq_off[s], n = j->seq_off[s + 1] - r0, hd = j->hd;
    if (n <= 0)
        return;
    size_t ld = (size_t)j->qkv_ld, dld = (size_t)j->dqkv_ld, col = (size_t)h * hd;
    const float *Q = j->q + (size_t)r0 * ld + col;
    const float *K = j->kk + (size_t)r0 * ld + col;
    const float *V = j->v + (size_t)r0 * ld + col;
    const float *dO = j->dout + (size_t)r0 * j->dout_ld + col;
    float *dQ = j->dq + (size_t)r0 * dld + col;
    float *dK = j->dk + (size_t)r0 * dld + col;
    float *dV = j->dv + (size_t)r0 * dld + col;
    uint64_t base = (uint64_t)j->p_off[s] + (uint64_t)h * n * n;
    const float *P = j->probs + base;
    size_t nn = (size_t)n * n;
    float *Pd = scratch, *dP = scratch + nn;
    const float *Pv = P;
    if (j->p > 0.0f) {
        drop_block(Pd, P, nn, base, j->p, j->seed);
        Pv = Pd;
    }
    /* dV = Pd^T dO; dPd = dO V^T */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, 1.0f, Pv, n, dO, j->dout_ld,
                0.0f, dV, (int)dld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, 1.0f, dO, j->dout_ld, V,
                (int)ld, 0.0f, dP, n);
    if (j->p > 0.0f)
        drop_block(dP, dP, nn, base, j->p, j->seed);
    /* dS = P * (dP - rowsum(dP * P)) */
    for (int i = 0; i < n; i++) {
        const float *pr = P + (size_t)i * n;
        float *dr = dP + (size_t)i * n;
        float dot = 0;
        for (int c = 0; c < n; c++)
            dot += pr[c] * dr[c];
        for (int c = 0; c < n; c++)
            dr[c] = pr[c] * (dr[c] - dot);
    }
    /* dQ = scale dS K; dK = scale dS^T Q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, j->scale, dP, n, K,
                (int)ld, 0.0f, dQ, (int)dld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, j->scale, dP, n, Q, (int)ld,
                0.0f, dK, (int)dld);
}

/* Runs j->item on (sequence, head) items taken in turn until none is left. */
static void attn_task(void *arg, int tid, int nt)
{
    attn_job *j = arg;
    (void)nt;
    float *scratch = j->scratch + (size_t)tid * j->scratch_per;
    for (int total = j->nseq * j->heads;;) {
        int it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= total)
            return;
        j->item(j, it / j->heads, it % j->heads, scratch);
    }
}

/* Runs item over an attention job's (sequence, head) pairs with per-thread scratch of
 * `per_n2` n x n blocks; without scratch memory, items run on this thread with a
 * scratch of their own (a failed allocation then skips nothing but speed). */
static void attn_run(eng_backend *be, attn_job *j,
                     void (*item)(attn_job *j, int s, int h, float *scratch), int per_n2)
{
    j->item = item;
    int max_n = 0;
    double work = 0;
    for (int s = 0; s < j->nseq; s++) {
        int n = j->seq_off[s + 1] - j->seq_off[s];
        max_n = n > max_n ? n : max_n;
        work += (double)n * n * j->hd * j->heads * (per_n2 + 1) / 30.0;
    }
    int nt = threads_for(be, work);
    if (nt > j->nseq * j->heads)
        nt = j->nseq * j->heads;
    j->scratch_per = (size_t)per_n2 * max_n * max_n + 16;
    j->scratch = malloc(j->scratch_per * (size_t)nt * sizeof(float));
    if (!j->scratch) {
        nt = 1;
        j->scratch = malloc(j->scratch_per * sizeof(float));
    }
    atomic_init(&j->next, 0);
    if (j->scratch)
        eng_backend_cpu_run(be, attn_task, j, nt);
    free(j->scratch);
    j->scratch = NULL;
}

void eng_cpu_attention_train(eng_backend *be, float *out, int out_ld, float *probs,
                             const int64_t *p_off, const float *q, const float *k,
                             const float *v, int qkv_ld, const int32_t *seq_off, int nseq,
                             int heads, int head_dim, float scale, float dropout_p,
                             uint64_t seed)
{
    if (nseq <= 0 || heads <= 0 || head_dim <= 0)
        return;
    attn_job j = {.k = eng_backend_cpu_kernels(be), .out = out, .probs = probs, .q = q,
                  .kk = k, .v = v, .p_off = p_off, .seq_off = seq_off, .out_ld = out_ld,
                  .qkv_ld = qkv_ld,
                  .nseq = nseq, .heads = heads, .hd = head_dim, .scale = scale,
                  .p = dropout_p, .seed = seed};
    attn_run(be, &j, attn_fwd_item, 1);
}

void eng_cpu_attention_backward(eng_backend *be, float *dq, float *dk, float *dv, int dqkv_ld,
                                const float *dout, int dout_ld, const float *probs,
                                const int64_t *p_off, const float *q, const float *k,
                                const float *v, int qkv_ld, const int32_t *seq_off, int nseq,
                                int heads, int head_dim, float scale, float dropout_p,
                                uint64_t seed)
{
    if (nseq <= 0 || heads <= 0 || head_dim <= 0)
        return;
    attn_job j = {.k = eng_backend_cpu_kernels(be), .probs = (float *)probs, .dq = dq,
                  .dk = dk, .dv = dv, .dout = dout, .q = q, .kk = k, .v = v, .p_off = p_off,
                  .seq_off = seq_off,
                  .qkv_ld = qkv_ld, .dqkv_ld = dqkv_ld, .dout_ld = dout_ld, .nseq = nseq,
                  .heads = heads, .hd = head_dim, .scale = scale, .p = dropout_p,
                  .seed = seed};
    attn_run(be, &j, attn_bwd_item, 2);
}

/* ------------------------------------------------------ flat vector ops */

typedef struct vec_job {
    int op;
    size_t n;
    float *y, *g, *m, *v;
    const float *x;
    float a, p, lr, b1, b2, eps, wd, bc1, bc2, gscale;
    uint64_t seed;
    double part[64]; /* per-thread partial sums (sum_squares) */
} vec_job;

enum { V_DROPOUT, V_AXPY, V_ZERO, V_SUMSQ, V_ADAMW };

HOT static void adamw_range(float *p, float *g, float *m, float *v, size_t lo, size_t hi,
                            float lr, float b1, float b2, float eps, float wd, float bc1,
                            float bc2, float gscale)
{
    const float decay = 1.0f - lr * wd, step = lr / bc1;
    const float sbc2 = sqrtf(bc2), ob1 = 1.0f - b1, ob2 = 1.0f - b2;
    for (size_t i = lo; i < hi; i++) {
        float gi = g[i] * gscale;
        float mi = m[i] * b1 + gi * ob1;
        float vi = v[i] * b2 + gi * gi * ob2;
        float pi = p[i] * decay;
        p[i] = pi - step * (mi / (sqrtf(vi) / sbc2 + eps));
        m[i] = mi;
        v[i] = vi;
        g[i] = 0.0f;
    }
}

HOT static double sumsq_range(const float *x, size_t lo, size_t hi)
{
    /* 16 independent float lanes (a vector register's worth, so the loop vectorises
     * without reassociation), flushed into a double every 1024 values. */
    double s = 0;
    size_t i = lo;
    while (i < hi) {
        float acc[16] = {0};
        size_t e = hi - i < 1024 ? hi : i + 1024;
        for (; i + 16 <= e; i += 16)
            for (int l = 0; l < 16; l++)
                acc[l] += x[i + l] * x[i + l];
        for (; i < e; i++)
            acc[0] += x[i] * x[i];
        for (int l = 0; l < 16; l++)
            s += acc[l];
    }
    return s;
}

HOT static void axpy_range(float *y, float a, const float *x, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++)
        y[i] += a * x[i];
}

static void vec_task(void *arg, int tid, int nt)
{
    vec_job *j = arg;
    size_t lo, hi;
    split(j->n, 64, tid, nt, &lo, &hi);
    switch (j->op) {
    case V_DROPOUT:
        if (hi > lo)
            drop_block(j->y + lo, j->x + lo, hi - lo, lo, j->p, j->seed);
        break;
    case V_AXPY:
        axpy_range(j->y, j->a, j->x, lo, hi);
        break;
    case V_ZERO:
        if (hi > lo)
            memset((char *)j->y + lo, 0, hi - lo);
        break;
    case V_SUMSQ:
        j->part[tid] = sumsq_range(j->x, lo, hi);
        break;
    case V_ADAMW:
        adamw_range(j->y, j->g, j->m, j->v, lo, hi, j->lr, j->b1, j->b2, j->eps, j->wd, j->bc1,
                    j->bc2, j->gscale);
        break;
    }
}

static void vec_run(eng_backend *be, vec_job *j, double ns_per_elem)
{
    int nt = threads_for(be, (double)j->n * ns_per_elem);
    if (nt > 64)
        nt = 64;
    eng_backend_cpu_run(be, vec_task, j, nt);
}

void eng_cpu_dropout(eng_backend *be, float *y, const float *x, size_t n, float p,
                     uint64_t seed)
{
    if (p <= 0.0f) {
        if (y != x)
            memmove(y, x, n * sizeof(float));
        return;
    }
    vec_job j = {.op = V_DROPOUT, .n = n, .y = y, .x = x, .p = p, .seed = seed};
    vec_run(be, &j, 2.0);
}

void eng_cpu_axpy(eng_backend *be, float *y, float alpha, const float *x, size_t n)
{
    vec_job j = {.op = V_AXPY, .n = n, .y = y, .x = x, .a = alpha};
    vec_run(be, &j, 0.3);
}

void eng_cpu_zero(eng_backend *be, void *p, size_t bytes)
{
    vec_job j = {.op = V_ZERO, .n = bytes, .y = p};
    vec_run(be, &j, 0.05);
}

void eng_cpu_sum_squares(eng_backend *be, float *out, const float *x, size_t n)
{
    vec_job j = {.op = V_SUMSQ, .n = n, .x = x};
    vec_run(be, &j, 0.3);
    double s = 0;
    for (int t = 0; t < 64; t++)
        s += j.part[t];
    out[0] = (float)s;
}

void eng_cpu_adamw(eng_backend *be, float *p, float *g, float *m, float *v, size_t n, float lr,
                   float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                   float gscale)
{
    vec_job j = {.op = V_ADAMW, .n = n, .y = p, .g = g, .m = m, .v = v, .lr = lr, .b1 = beta1,
                 .b2 = beta2, .eps = eps, .wd = wd, .bc1 = bc1, .bc2 = bc2, .gscale = gscale};
    vec_run(be, &j, 1.5);
}

/* ------------------------------------------------------ small serial ops */

typedef struct sum_rows_job {
    float *db;
    const float *dy, *ones;
    int rows, cols;
} sum_rows_job;

/* db[c0:c1] += dy[:, c0:c1]^T . 1 (OpenBLAS gemv) on this thread's columns. */
static void sum_rows_task(void *arg, int tid, int nt)
{
    const sum_rows_job *j = arg;
    size_t lo, hi;
    split((size_t)j->cols, 16, tid, nt, &lo, &hi);
    if (hi > lo)
        cblas_sgemv(CblasRowMajor, CblasTrans, j->rows, (int)(hi - lo), 1.0f, j->dy + lo,
                    j->cols, j->ones, 1, 1.0f, j->db + lo, 1);
}

void eng_cpu_sum_rows(eng_backend *be, float *db, const float *dy, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    float *ones = malloc((size_t)rows * sizeof(float));
    if (!ones) { /* no memory for the ones vector: a plain loop */
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                db[c] += dy[(size_t)r * cols + c];
        return;
    }
    for (int r = 0; r < rows; r++)
        ones[r] = 1.0f;
    sum_rows_job j = {db, dy, ones, rows, cols};
    int nt = threads_for(be, (double)rows * cols * 0.3);
    if (nt > (cols + 15) / 16)
        nt = (cols + 15) / 16;
    eng_backend_cpu_run(be, sum_rows_task, &j, nt);
    free(ones);
}

void eng_cpu_scatter_rows(eng_backend *be, float *dx, const float *dsrc,
                          const int32_t *seq_off, int nseq, int row, int dim)
{
    (void)be;
    for (int s = 0; s < nseq; s++) {
        float *d = dx + (size_t)(seq_off[s] + row) * dim;
        const float *x = dsrc + (size_t)s * dim;
        for (int c = 0; c < dim; c++)
            d[c] += x[c];
    }
}

void eng_cpu_cross_entropy(eng_backend *be, float *loss, float *dlogits, const float *logits,
                           const int32_t *labels, int n, int L, float scale)
{
    (void)be;
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * L;
        float *d = dlogits + (size_t)i * L;
        float mx = z[0];
        for (int c = 1; c < L; c++)
            mx = z[c] > mx ? z[c] : mx;
        double sum = 0;
        for (int c = 0; c < L; c++)
            sum += exp((double)z[c] - mx);
        double lse = mx + log(sum);
        total += lse - z[labels[i]];
        for (int c = 0; c < L; c++)
            d[c] = (float)((exp((double)z[c] - lse) - (c == labels[i])) * scale / n);
    }
    loss[0] = (float)(total / n);
}

void eng_cpu_bce_logits(eng_backend *be, float *loss, float *dlogits, const float *logits,
                        const float *targets, int n, int L, float scale)
{
    (void)be;
    double total = 0;
    size_t cnt = (size_t)n * L;
    for (size_t i = 0; i < cnt; i++) {
        double x = logits[i], t = targets[i];
        total += (x > 0 ? x : 0) - x * t + log1p(exp(-fabs(x)));
        dlogits[i] = (float)((1.0 / (1.0 + exp(-x)) - t) * scale / (double)cnt);
    }
    loss[0] = (float)(total / (double)cnt);
}
