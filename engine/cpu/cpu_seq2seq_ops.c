/* cpu_seq2seq_ops.c - decoding ops of the CPU backend (contracts in backend.h):
 * scaled embeddings, attention over KV-cache slots, row copies, log-softmax,
 * grouped top-k and SiLU.
 *
 * Threads: the backend's own pool (eng_backend_cpu_run). exp() goes through the
 * backend's vectorised kernel for the CPU's instruction set; dot products use GCC vector
 * extensions (SSE at the x86-64-v2 baseline).
 */
#include "cpu/cpu_seq2seq_ops.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_kernels.h"

/* ------------------------------------------------------------- threading */

/* Threads worth using for `work` units of about a nanosecond (>= 20 us each),
 * at most one per item. */
static int threads_for(const eng_backend *be, double work, int items)
{
    int nt = eng_cpu_threads_for(be, work, 20000.0);
    return nt < items ? nt : (items < 1 ? 1 : items);
}

static void split(int n, int tid, int nt, int *lo, int *hi)
{
    int per = n / nt, extra = n % nt;
    *lo = tid * per + (tid < extra ? tid : extra);
    *hi = *lo + per + (tid < extra ? 1 : 0);
}

/* --------------------------------------------------------- vector helpers */

typedef float v4f __attribute__((vector_size(16)));

static float dot(const float *a, const float *b, int n)
{
    v4f s0 = {0, 0, 0, 0}, s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f a0, a1, b0, b1;
        memcpy(&a0, a + i, 16);
        memcpy(&a1, a + i + 4, 16);
        memcpy(&b0, b + i, 16);
        memcpy(&b1, b + i + 4, 16);
        s0 += a0 * b0;
        s1 += a1 * b1;
    }
    s0 += s1;
    float s = (s0[0] + s0[1]) + (s0[2] + s0[3]);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* y += a * x */
static void axpy(float *y, float a, const float *x, int n)
{
    v4f av = {a, a, a, a};
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f xv, yv;
        memcpy(&xv, x + i, 16);
        memcpy(&yv, y + i, 16);
        yv += av * xv;
        memcpy(y + i, &yv, 16);
    }
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* max of x[0, n) (-inf for n == 0); NaN-free inputs assumed (logits) */
static float vmax(const float *x, int n)
{
    float m[8];
    int i = 0;
    for (int j = 0; j < 8; j++)
        m[j] = -INFINITY;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++)
        m[0] = x[i] > m[0] ? x[i] : m[0];
    for (int j = 1; j < 8; j++)
        m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

/* sum of x[0, n) in 8 float lanes */
static float vsum(const float *x, int n)
{
    v4f s0 = {0, 0, 0, 0}, s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f a, b;
        memcpy(&a, x + i, 16);
        memcpy(&b, x + i + 4, 16);
        s0 += a;
        s1 += b;
    }
    s0 += s1;
    float s = (s0[0] + s0[1]) + (s0[2] + s0[3]);
    for (; i < n; i++)
        s += x[i];
    return s;
}

/* --------------------------------------------------------- embed_scaled */

typedef struct emb_job {
    float *out;
    const float *table, *pos;
    const int32_t *ids, *pos_ids;
    float scale;
    int ntok, dim;
} emb_job;

static void emb_task(void *arg, int tid, int nt)
{
    const emb_job *j = arg;
    int lo, hi;
    split(j->ntok, tid, nt, &lo, &hi);
    size_t d = (size_t)j->dim;
    for (int t = lo; t < hi; t++) {
        float *o = j->out + (size_t)t * d;
        const float *w = j->table + (size_t)j->ids[t] * d;
        const float *p = j->pos + (size_t)j->pos_ids[t] * d;
        for (size_t c = 0; c < d; c++) {
            float e = w[c] * j->scale; /* rounded before the add, as torch */
            o[c] = e + p[c];
        }
    }
}

void eng_cpu_embed_scaled(eng_backend *be, float *out, const float *table, float scale,
                          const float *pos, const int32_t *ids, const int32_t *pos_ids,
                          int ntok, int dim)
{
    if (ntok <= 0 || dim <= 0)
        return;
    emb_job j = {out, table, pos, ids, pos_ids, scale, ntok, dim};
    eng_backend_cpu_run(be, emb_task, &j, threads_for(be, (double)ntok * dim * 0.5, ntok));
}

/* ---------------------------------------------------------- attention_kv */

typedef struct akv_job {
    float *out;
    const float *q, *k, *v;
    const int32_t *q_off, *kv_start, *kv_len;
    int out_ld, q_ld, k_ld, v_ld, nseq, heads, hd, causal;
    float scale;
    int max_kv;
    atomic_int next;
    const eng_cpu_kernels *kern;
} akv_job;

/* One (sequence, head): scores in p[], softmax, weighted sum of values. */
static void akv_item(const akv_job *j, int s, int h, float *p)
{
    int q0 = j->q_off[s], nq = j->q_off[s + 1] - q0, nk = j->kv_len[s];
    const float *kb = j->k + (size_t)j->kv_start[s] * j->k_ld + (size_t)h * j->hd;
    const float *vb = j->v + (size_t)j->kv_start[s] * j->v_ld + (size_t)h * j->hd;
    for (int i = 0; i < nq; i++) {
        const float *qr = j->q + (size_t)(q0 + i) * j->q_ld + (size_t)h * j->hd;
        float *o = j->out + (size_t)(q0 + i) * j->out_ld + (size_t)h * j->hd;
        int n = j->causal ? i + nk - nq + 1 : nk;
        n = n < 0 ? 0 : n > nk ? nk : n;
        memset(o, 0, sizeof(float) * (size_t)j->hd);
        if (n == 0)
            continue;
        float mx = -INFINITY;
        for (int t = 0; t < n; t++) {
            p[t] = j->scale * dot(qr, kb + (size_t)t * j->k_ld, j->hd);
            mx = p[t] > mx ? p[t] : mx;
        }
        for (int t = 0; t < n; t++)
            p[t] -= mx;
        j->kern->vexp(p, p, n);
        float sum = 0;
        for (int t = 0; t < n; t++)
            sum += p[t];
        float inv = 1.0f / sum;
        for (int t = 0; t < n; t++)
            axpy(o, p[t] * inv, vb + (size_t)t * j->v_ld, j->hd);
    }
}

static void akv_task(void *arg, int tid, int nt)
{
    akv_job *j = arg;
    (void)tid;
    (void)nt;
    float stack[1024];
    float *p = j->max_kv <= 1024 ? stack : malloc(sizeof(float) * (size_t)j->max_kv);
    if (!p)
        abort(); /* a few KB: treated like a stack overflow */
    int total = j->nseq * j->heads;
    for (;;) {
        int it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= total)
            break;
        akv_item(j, it / j->heads, it % j->heads, p);
    }
    if (p != stack)
        free(p);
}

void eng_cpu_attention_kv(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                          const float *k, int k_ld, const float *v, int v_ld,
                          const int32_t *q_off, const int32_t *kv_start, const int32_t *kv_len,
                          int nseq, int heads, int head_dim, float scale, int causal)
{
    if (nseq <= 0 || heads <= 0 || head_dim <= 0)
        return;
    akv_job j = {out, q, k, v, q_off, kv_start, kv_len, out_ld, q_ld, k_ld, v_ld, nseq,
                 heads, head_dim, causal, scale, 0, 0, eng_backend_cpu_kernels(be)};
    double work = 0;
    for (int s = 0; s < nseq; s++) {
        j.max_kv = kv_len[s] > j.max_kv ? kv_len[s] : j.max_kv;
        work += (double)(q_off[s + 1] - q_off[s]) * kv_len[s] * head_dim * heads * 1.0;
    }
    atomic_init(&j.next, 0);
    eng_backend_cpu_run(be, akv_task, &j, threads_for(be, work, nseq * heads));
}

/* ------------------------------------------------------------- copy_rows */

typedef struct copy_job {
    float *dst;
    const float *src;
    int64_t dst_ld, src_ld, cols;
    const int32_t *dst_rows, *src_rows;
    int n;
} copy_job;

static void copy_task(void *arg, int tid, int nt)
{
    const copy_job *j = arg;
    int lo, hi;
    split(j->n, tid, nt, &lo, &hi);
    for (int i = lo; i < hi; i++) {
        int64_t d = j->dst_rows ? j->dst_rows[i] : i, s = j->src_rows ? j->src_rows[i] : i;
        memcpy(j->dst + d * j->dst_ld, j->src + s * j->src_ld, sizeof(float) * (size_t)j->cols);
    }
}

void eng_cpu_copy_rows(eng_backend *be, float *dst, int64_t dst_ld, const int32_t *dst_rows,
                       const float *src, int64_t src_ld, const int32_t *src_rows, int n,
                       int64_t cols)
{
    if (n <= 0 || cols <= 0)
        return;
    copy_job j = {dst, src, dst_ld, src_ld, cols, dst_rows, src_rows, n};
    eng_backend_cpu_run(be, copy_task, &j, threads_for(be, (double)n * cols * 0.25, n));
}

/* ----------------------------------------------------------- log_softmax */

typedef struct lsm_job {
    float *x;
    int rows, cols, ld;
    const eng_cpu_kernels *kern;
} lsm_job;

static void lsm_task(void *arg, int tid, int nt)
{
    const lsm_job *j = arg;
    int lo, hi;
    split(j->rows, tid, nt, &lo, &hi);
    float buf[2048];
    for (int r = lo; r < hi; r++) {
        float *x = j->x + (size_t)r * j->ld;
        float mx = vmax(x, j->cols);
        if (mx == -INFINITY)
            continue; /* every entry masked: stays -inf */
        double sum = 0;
        v4f mv = {mx, mx, mx, mx};
        for (int c0 = 0; c0 < j->cols; c0 += 2048) {
            int n = j->cols - c0 < 2048 ? j->cols - c0 : 2048, c = 0;
            for (; c + 4 <= n; c += 4) {
                v4f v;
                memcpy(&v, x + c0 + c, 16);
                v -= mv;
                memcpy(buf + c, &v, 16);
            }
            for (; c < n; c++)
                buf[c] = x[c0 + c] - mx;
            j->kern->vexp(buf, buf, n);
            sum += vsum(buf, n);
        }
        float lse = logf((float)sum);
        v4f lv = {lse, lse, lse, lse};
        int c = 0;
        for (; c + 4 <= j->cols; c += 4) { /* (x - max) - lse, as torch */
            v4f v;
            memcpy(&v, x + c, 16);
            v = (v - mv) - lv;
            memcpy(x + c, &v, 16);
        }
        for (; c < j->cols; c++)
            x[c] = (x[c] - mx) - lse;
    }
}

void eng_cpu_log_softmax(eng_backend *be, float *x, int rows, int cols, int ld)
{
    if (rows <= 0 || cols <= 0)
        return;
    lsm_job j = {x, rows, cols, ld, eng_backend_cpu_kernels(be)};
    eng_backend_cpu_run(be, lsm_task, &j, threads_for(be, (double)rows * cols * 1.5, rows));
}

/* ------------------------------------------------------------------ topk */

typedef struct topk_job {
    const float *x, *row_add;
    float *vals;
    int32_t *idx;
    int groups, rpg, cols, ld, k;
} topk_job;

static void topk_task(void *arg, int tid, int nt)
{
    const topk_job *j = arg;
    int lo, hi, k = j->k;
    split(j->groups, tid, nt, &lo, &hi);
    for (int g = lo; g < hi; g++) {
        float *v = j->vals + (size_t)g * k;
        int32_t *ix = j->idx + (size_t)g * k;
        int n = 0; /* kept so far, sorted descending; equal values keep scan order */
        for (int r = 0; r < j->rpg; r++) {
            int row = g * j->rpg + r;
            const float *x = j->x + (size_t)row * j->ld;
            float add = j->row_add ? j->row_add[row] : 0.0f;
            v4f addv = {add, add, add, add};
            for (int c = 0; c < j->cols; c++) {
                if (n == k && (c & 3) == 0 && c + 4 <= j->cols) {
                    /* a block of 4 none of which beats the k-th: skip it */
                    v4f xv, th = {v[k - 1], v[k - 1], v[k - 1], v[k - 1]};
                    memcpy(&xv, x + c, 16);
                    if (j->row_add)
                        xv += addv;
                    __typeof__(xv > th) gt = xv > th;
                    if (!(gt[0] | gt[1] | gt[2] | gt[3])) {
                        c += 3;
                        continue;
                    }
                }
                float s = j->row_add ? x[c] + add : x[c];
                if (n == k && !(s > v[k - 1]))
                    continue; /* also drops NaN */
                int p = n < k ? n++ : k - 1;
                while (p > 0 && s > v[p - 1]) {
                    v[p] = v[p - 1];
                    ix[p] = ix[p - 1];
                    p--;
                }
                v[p] = s;
                ix[p] = r * j->cols + c;
            }
        }
        for (; n < k; n++) { /* fewer candidates than k (only NaN): pad */
            v[n] = -INFINITY;
            ix[n] = 0;
        }
    }
}

void eng_cpu_topk(eng_backend *be, const float *x, int groups, int rows_per_group, int cols,
                  int ld, const float *row_add, int k, float *vals, int32_t *idx)
{
    if (groups <= 0 || k <= 0)
        return;
    topk_job j = {x, row_add, vals, idx, groups, rows_per_group, cols, ld, k};
    eng_backend_cpu_run(be, topk_task, &j,
        threads_for(be, (double)groups * rows_per_group * cols * 0.5, groups));
}

/* ------------------------------------------------------------- bias_silu */

typedef struct silu_job {
    float *x;
    const float *bias;
    int rows, cols;
    const eng_cpu_kernels *kern;
} silu_job;

static void silu_task(void *arg, int tid, int nt)
{
    const silu_job *j = arg;
    int lo, hi;
    split(j->rows, tid, nt, &lo, &hi);
    float buf[1024];
    for (int r = lo; r < hi; r++) {
        float *x = j->x + (size_t)r * j->cols;
        for (int c0 = 0; c0 < j->cols; c0 += 1024) {
            int n = j->cols - c0 < 1024 ? j->cols - c0 : 1024;
            float *y = x + c0;
            if (j->bias)
                for (int c = 0; c < n; c++)
                    y[c] += j->bias[c0 + c];
            for (int c = 0; c < n; c++)
                buf[c] = -y[c];
            j->kern->vexp(buf, buf, n);
            for (int c = 0; c < n; c++) /* torch: x * sigmoid(x), sigmoid = 1 / (1 + e^-x) */
                y[c] = y[c] * (1.0f / (1.0f + buf[c]));
        }
    }
}

void eng_cpu_bias_silu(eng_backend *be, float *x, const float *bias, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    silu_job j = {x, bias, rows, cols, eng_backend_cpu_kernels(be)};
    eng_backend_cpu_run(be, silu_task, &j, threads_for(be, (double)rows * cols * 1.0, rows));
}
