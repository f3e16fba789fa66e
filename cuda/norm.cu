/* norm.cu - LayerNorm of (x + residual): one block per row, statistics in fp32 with the
 * two-pass (biased) variance, as torch. out may alias x or res: each thread writes only
 * the elements it read, after the row's statistics are complete. */
#include "cu_common.cuh"

namespace CU_NS {

__global__ void add_layernorm_kernel(float *out, const float *x, const float *res,
                                     const float *gamma, const float *beta, int cols, float eps)
{
    __shared__ float red[32];
    long long base = (long long)blockIdx.x * cols;
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        s += res ? x[base + j] + res[base + j] : x[base + j];
    float mean = cu_block_sum(s, red) / (float)cols;
    float q = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float d = (res ? x[base + j] + res[base + j] : x[base + j]) - mean;
        q += d * d;
    }
    float var = cu_block_sum(q, red) / (float)cols;
    float inv = 1.0f / sqrtf(var + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float v = res ? x[base + j] + res[base + j] : x[base + j];
        out[base + j] = (v - mean) * inv * gamma[j] + beta[j];
    }
}

void cu_add_layernorm(eng_backend *be, float *out, const float *x, const float *res,
                      const float *gamma, const float *beta, int rows, int cols, float eps)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || rows <= 0 || cols <= 0)
        return;
    int threads = cols >= 512 ? 256 : cols >= 128 ? 128 : 32;
    CU_LAUNCH(add_layernorm_kernel, rows, threads, 0, cb->stream, out, x, res, gamma, beta, cols,
              eps);
    cu_check(cb, cudaGetLastError(), "add_layernorm");
}

} /* namespace CU_NS */
