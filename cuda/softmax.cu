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

/* One block per group: k rounds of a block-wide arg-max over the group's candidates
 * (rows_per_group rows of cols), skipping those already taken. */
__global__ void topk_kernel(const float *x, int rows_per_group, int cols, int ld,
                            const float *row_add, int k, float *vals, int32_t *idx)
{
    __shared__ float sv[256];
    __shared__ int si[256];
    CU_DYN_SHARED(int, taken);
    int g = blockIdx.x, tid = threadIdx.x, n = rows_per_group * cols;
    for (int j = 0; j < k; j++) {
        float bv = 0.0f;
        int bi = -1;
        for (int f = tid; f < n; f += blockDim.x) {
            int r = f / cols, c = f % cols, used = 0;
            for (int u = 0; u < j && !used; u++)
                used = taken[u] == f;
            if (used)
                continue;
            long long row = (long long)g * rows_per_group + r;
            float v = row_add ? x[row * ld + c] + row_add[row] : x[row * ld + c];
            if (topk_better(v, f, bv, bi))
                bv = v, bi = f;
        }
        sv[tid] = bv;
        si[tid] = bi;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if (tid < w && si[tid + w] >= 0 && topk_better(sv[tid + w], si[tid + w], sv[tid], si[tid])) {
                sv[tid] = sv[tid + w];
                si[tid] = si[tid + w];
            }
            __syncthreads();
        }
        if (tid == 0) {
            taken[j] = si[0];
            vals[(long long)g * k + j] = sv[0];
            idx[(long long)g * k + j] = si[0];
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
    if (k > rows_per_group * cols || k > 4096) {
        cu_check(cb, cudaErrorInvalidValue, "topk (k too large)");
        return;
    }
    CU_LAUNCH(topk_kernel, groups, 256, sizeof(int) * (size_t)k, cb->stream, x, rows_per_group,
              cols, ld, row_add, k, vals, idx);
    cu_check(cb, cudaGetLastError(), "topk");
}

} /* namespace CU_NS */
