/* softmax.cu - row log-softmax and grouped top-k for beam search. */
#include <limits.h>

#include "cu_common.cuh"

namespace CU_NS {

/* x - max - log(sum(exp(x - max))) in place; a row of -inf stays -inf. */
__global__ void log_softmax_kernel(float *x, int cols, int ld)
{
    __shared__ float red[32];
    float *row = x + (long long)blockIdx.x * ld;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        mx = fmaxf(mx, row[c]);
    mx = cu_block_max(mx, red);
    if (mx == -INFINITY)
        return; /* uniform over the block */
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        s += expf(row[c] - mx);
    float lse = logf(cu_block_sum(s, red));
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        row[c] = row[c] - mx - lse;
}

/* (v, i) ranks before (bv, bi): larger value, equal values by lower index; bi < 0: none. */
__device__ __forceinline__ int topk_better(float v, int i, float bv, int bi)
{
    return bi < 0 || v > bv || (v == bv && i < bi);
}

enum { TOPK_THREADS = 256, TOPK_LOCAL = 16 };

/* One block per group (rows_per_group rows of cols candidates). Each thread keeps the
 * best TOPK_LOCAL of the candidates it reads, sorted; then k rounds of a block-wide
 * arg-max over the threads' list heads pick the group's best k in order. */
__global__ void topk_kernel(const float *x, int rows_per_group, int cols, int ld,
                            const float *row_add, int k, float *vals, int32_t *idx)
{
    __shared__ float sv[TOPK_THREADS];
    __shared__ int si[TOPK_THREADS];
    float lv[TOPK_LOCAL];
    int li[TOPK_LOCAL], cnt = 0, head = 0;
    int g = blockIdx.x, tid = threadIdx.x, n = rows_per_group * cols;
    for (int f = tid; f < n; f += blockDim.x) {
        long long row = (long long)g * rows_per_group + f / cols;
        int c = f % cols;
        float v = row_add ? x[row * ld + c] + row_add[row] : x[row * ld + c];
        if (cnt == k && !topk_better(v, f, lv[cnt - 1], li[cnt - 1]))
            continue;
        int p = cnt < k ? cnt++ : cnt - 1; /* the last entry drops out when full */
        while (p > 0 && topk_better(v, f, lv[p - 1], li[p - 1])) {
            lv[p] = lv[p - 1];
            li[p] = li[p - 1];
            p--;
        }
        lv[p] = v;
        li[p] = f;
    }
    for (int j = 0; j < k; j++) {
        sv[tid] = head < cnt ? lv[head] : 0.0f;
        si[tid] = head < cnt ? li[head] : -1;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if (tid < w && si[tid + w] >= 0 &&
                topk_better(sv[tid + w], si[tid + w], sv[tid], si[tid])) {
                sv[tid] = sv[tid + w];
                si[tid] = si[tid + w];
            }
            __syncthreads();
        }
        int win = si[0];
        float wv = sv[0];
        if (head < cnt && li[head] == win)
            head++;
        if (tid == 0) {
            vals[(long long)g * k + j] = wv;
            idx[(long long)g * k + j] = win;
        }
        __syncthreads(); /* sv/si are rewritten next round */
    }
}

/* k beyond the local lists: k rounds over all candidates, each taking the best that
 * ranks after the previous pick (the order is total: value, then index). */
__global__ void topk_big_kernel(const float *x, int rows_per_group, int cols, int ld,
                                const float *row_add, int k, float *vals, int32_t *idx)
{
    __shared__ float sv[TOPK_THREADS];
    __shared__ int si[TOPK_THREADS];
    int g = blockIdx.x, tid = threadIdx.x, n = rows_per_group * cols;
    float pv = 0.0f;
    int pi = -1;
    for (int j = 0; j < k; j++) {
        float bv = 0.0f;
        int bi = -1;
        for (int f = tid; f < n; f += blockDim.x) {
            long long row = (long long)g * rows_per_group + f / cols;
            int c = f % cols;
            float v = row_add ? x[row * ld + c] + row_add[row] : x[row * ld + c];
            if (pi >= 0 && !topk_better(pv, pi, v, f))
                continue; /* ranks before (or is) the previous pick */
            if (topk_better(v, f, bv, bi))
                bv = v, bi = f;
        }
        sv[tid] = bv;
        si[tid] = bi;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if (tid < w && si[tid + w] >= 0 &&
                topk_better(sv[tid + w], si[tid + w], sv[tid], si[tid])) {
                sv[tid] = sv[tid + w];
                si[tid] = si[tid + w];
            }
            __syncthreads();
        }
        pv = sv[0];
        pi = si[0];
        if (tid == 0) {
            vals[(long long)g * k + j] = pv;
            idx[(long long)g * k + j] = pi;
        }
        __syncthreads();
    }
}

void cu_log_softmax(eng_backend *be, float *x, int rows, int cols, int ld)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || rows <= 0 || cols <= 0)
        return;
    CU_LAUNCH(log_softmax_kernel, rows, 256, 0, cb->stream, x, cols, ld);
    cu_check(cb, cudaGetLastError(), "log_softmax");
}

void cu_topk(eng_backend *be, const float *x, int groups, int rows_per_group, int cols, int ld,
             const float *row_add, int k, float *vals, int32_t *idx)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || groups <= 0 || k <= 0)
        return;
    if (k > rows_per_group * cols) {
        cu_check(cb, cudaErrorInvalidValue, "topk (k larger than the group)");
        return;
    }
    if (k <= TOPK_LOCAL)
        CU_LAUNCH(topk_kernel, groups, TOPK_THREADS, 0, cb->stream, x, rows_per_group, cols, ld,
                  row_add, k, vals, idx);
    else
        CU_LAUNCH(topk_big_kernel, groups, TOPK_THREADS, 0, cb->stream, x, rows_per_group, cols,
                  ld, row_add, k, vals, idx);
    cu_check(cb, cudaGetLastError(), "topk");
}

} /* namespace CU_NS */
