/* elementwise.cu - bias + activation, bias + SiLU, row copies. */
#include "cu_common.cuh"

namespace CU_NS {

__device__ __forceinline__ float act_f(float x, int act)
{
    switch (act) {
    case ENG_ACT_GELU: /* 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2) */
        return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    case ENG_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case ENG_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ENG_ACT_TANH: return tanhf(x);
    default: return x;
    }
}

/* Row-wise grid-stride: blocks take rows in turn, threads the columns (coalesced). */
__global__ void bias_act_kernel(float *x, const float *bias, int rows, int cols, int act)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        float *row = x + (long long)r * cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            row[c] = act_f(bias ? row[c] + bias[c] : row[c], act);
    }
}

__global__ void bias_silu_kernel(float *x, const float *bias, int rows, int cols)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        float *row = x + (long long)r * cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float y = bias ? row[c] + bias[c] : row[c];
            row[c] = y / (1.0f + expf(-y));
        }
    }
}

/* Threads for a row-wise kernel over cols columns. */
static int row_threads(int cols)
{
    return cols >= 256 ? 256 : cols >= 64 ? 64 : 32;
}

__global__ void copy_rows_kernel(float *dst, int64_t dst_ld, const int32_t *dst_rows,
                                 const float *src, int64_t src_ld, const int32_t *src_rows, int n,
                                 int64_t cols)
{
    long long total = (long long)n * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i / cols, c = i % cols;
        long long d = dst_rows ? dst_rows[r] : r, s = src_rows ? src_rows[r] : r;
        dst[d * dst_ld + c] = src[s * src_ld + c];
    }
}

void cu_bias_act(eng_backend *be, float *x, const float *bias, int rows, int cols, eng_act act)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || rows <= 0 || cols <= 0)
        return;
    if (act == ENG_ACT_NONE && !bias)
        return;
    CU_LAUNCH_FLAT(bias_act_kernel, rows < 1024 ? rows : 1024, row_threads(cols), cb->stream, x,
                   bias, rows, cols, (int)act);
    cu_check(cb, cudaGetLastError(), "bias_act");
}

void cu_bias_silu(eng_backend *be, float *x, const float *bias, int rows, int cols)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || rows <= 0 || cols <= 0)
        return;
    CU_LAUNCH_FLAT(bias_silu_kernel, rows < 1024 ? rows : 1024, row_threads(cols), cb->stream, x,
                   bias, rows, cols);
    cu_check(cb, cudaGetLastError(), "bias_silu");
}

void cu_copy_rows(eng_backend *be, float *dst, int64_t dst_ld, const int32_t *dst_rows,
                  const float *src, int64_t src_ld, const int32_t *src_rows, int n, int64_t cols)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || n <= 0 || cols <= 0)
        return;
    CU_LAUNCH_FLAT(copy_rows_kernel, cu_blocks((long long)n * cols, 256), 256, cb->stream, dst,
                   dst_ld, dst_rows, src, src_ld, src_rows, n, cols);
    cu_check(cb, cudaGetLastError(), "copy_rows");
}

void cu_zero(eng_backend *be, void *p, size_t bytes)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || !bytes)
        return;
    cu_check(cb, cudaMemsetAsync(p, 0, bytes, cb->stream), "zero");
}

} /* namespace CU_NS */
