/* linear.cu - linear layers with 16-bit weights on cuBLAS (backend.h's linear_pack /
 * linear_forward for ENG_WFMT_F16 and ENG_WFMT_BF16): the weights W [N, K] are converted
 * once on the device into IEEE fp16 or bfloat16 (round to nearest even); a forward pass
 * converts the activations x [M, K] to the same type (one small kernel into a per-backend
 * scratch buffer) and runs cublasGemmEx with 16-bit inputs, fp32 output and
 * CUBLAS_COMPUTE_32F (fp32 accumulation), then the bias and activation in fp32.
 * fp32 (and int8) layers are not packed here: those run on plain gemm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_common.cuh"

namespace CU_NS {

/* A packed layer: device memory on `device`, usable by any backend on that device. */
struct cu_linear {
    int device;
    int fmt; /* ENG_WFMT_F16 | ENG_WFMT_BF16 */
    int N, K;
    uint16_t *w; /* [N, K] row-major */
};

__host__ __device__ inline uint32_t cu_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

__host__ __device__ inline float cu_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* fp32 -> IEEE binary16, round to nearest even; overflow to inf, NaN kept quiet. */
__host__ __device__ inline uint16_t cu_f32_to_f16(float f)
{
    uint32_t x = cu_f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf / NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* >= 65520: rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half (or zero) */
        if (ax < 0x33000000u) /* <= 2^-25 rounds to zero */
            return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value = m * 2^(e-150) = (m >> shift) units of 2^-24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (ax - 0x38000000u) >> 13, rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

__host__ __device__ inline float cu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f; /* 2^-24 */
        return sign ? -v : v;
    }
    if (e == 31)
        return cu_bits_f32(sign | 0x7f800000u | (m << 13));
    return cu_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* fp32 -> bfloat16, round to nearest even; NaN kept quiet. */
__host__ __device__ inline uint16_t cu_f32_to_bf16(float f)
{
    uint32_t x = cu_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

__host__ __device__ inline float cu_bf16_to_f32(uint16_t h) { return cu_bits_f32((uint32_t)h << 16); }

/* dst[r, c] = 16-bit(src[r * ld + c]) for rows x cols (dst contiguous). */
__global__ void to16_kernel(uint16_t *dst, const float *src, int rows, int cols, long long ld,
                            int bf16)
{
    long long n = (long long)rows * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = src[(i / cols) * ld + i % cols];
        dst[i] = bf16 ? cu_f32_to_bf16(v) : cu_f32_to_f16(v);
    }
}

static void to16(cu_backend *cb, uint16_t *dst, const float *src, int rows, int cols,
                 long long ld, int bf16)
{
    CU_LAUNCH_FLAT(to16_kernel, cu_blocks((long long)rows * cols, 256), 256, cb->stream, dst,
                   src, rows, cols, ld, bf16);
    cu_check(cb, cudaGetLastError(), "fp32 -> 16-bit conversion");
}

void *cu_linear_pack(eng_backend *be, const float *W, int N, int K, int ldw, int fmt)
{
    cu_backend *cb = cu_of(be);
    if ((fmt != ENG_WFMT_F16 && fmt != ENG_WFMT_BF16) || !W || N <= 0 || K <= 0 || ldw < K ||
        !cb->healthy)
        return nullptr; /* fp32 and int8 run on plain gemm / the CPU */
    cu_linear *h = (cu_linear *)calloc(1, sizeof *h);
    if (!h)
        return nullptr;
    h->device = be->device;
    h->fmt = fmt;
    h->N = N;
    h->K = K;
    h->w = (uint16_t *)be->ops->alloc(be, sizeof(uint16_t) * (size_t)N * K);
    if (!h->w) {
        free(h);
        return nullptr;
    }
    to16(cb, h->w, W, N, K, ldw, fmt == ENG_WFMT_BF16);
    /* other backends (streams) on the device may use the handle at once */
    if (cu_check(cb, cudaStreamSynchronize(cb->stream), "weights conversion")) {
        cudaFree(h->w);
        free(h);
        return nullptr;
    }
    return h;
}

int cu_linear_forward(eng_backend *be, const void *hv, float *y, const float *x, int M,
                      const float *bias, eng_act act)
{
    cu_backend *cb = cu_of(be);
    const cu_linear *h = (const cu_linear *)hv;
    if (!cb->healthy || M <= 0)
        return ENG_OK;
    if (h->device != be->device) { /* a programming error: views are per device */
        cb->healthy = 0;
        snprintf(cb->why, sizeof cb->why, "a linear layer packed on device %d used on device %d",
                 h->device, be->device);
        return ENG_OK;
    }
    size_t need = sizeof(uint16_t) * (size_t)M * h->K;
    if (need > cb->scratch_peak)
        cb->scratch_peak = need;
    if (need > cb->scratch_cap) {
        if (cb->scratch)
            cudaFree(cb->scratch);
        cb->scratch = nullptr;
        cb->scratch_cap = 0;
        void *p = nullptr;
        cudaError_t rc = cudaMalloc(&p, need);
        if (rc != cudaSuccess) {
            /* the layer cannot run: fail the context with the reason (a run then fails
             * with ENG_EBACKEND) rather than return a result computed otherwise */
            char what[96];
            snprintf(what, sizeof what, "cudaMalloc of %zu bytes for 16-bit activations", need);
            cudaGetLastError();
            cu_check(cb, rc, what);
            return ENG_OK;
        }
        cb->scratch = (uint16_t *)p;
        cb->scratch_cap = need;
    }
    int bf16 = h->fmt == ENG_WFMT_BF16;
    to16(cb, cb->scratch, x, M, h->K, h->K, bf16);
    if (!cb->healthy)
        return ENG_OK;
    cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    float one = 1.0f, zero = 0.0f;
    /* row-major y[M,N] = x[M,K] W^T is column-major y^T[N,M] = W^T' x^T (see gemm.cu) */
    cublasStatus_t st = cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, h->N, M, h->K, &one,
                                     h->w, t, h->K, cb->scratch, t, h->K, &zero, y, CUDA_R_32F,
                                     h->N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (cu_check_blas(cb, st, bf16 ? "cublasGemmEx (bf16)" : "cublasGemmEx (fp16)"))
        return ENG_OK;
    cu_bias_act(be, y, bias, M, h->N, act);
    return ENG_OK;
}

/* The weights as held (fp16/bf16 values in fp32), into host memory; NaN if the device
 * cannot be read. */
void cu_linear_unpack(const void *hv, float *dst)
{
    const cu_linear *h = (const cu_linear *)hv;
    size_t n = (size_t)h->N * h->K;
    uint16_t *tmp = (uint16_t *)malloc(sizeof(uint16_t) * n);
    if (!tmp || cudaSetDevice(h->device) != cudaSuccess ||
        cudaMemcpy(tmp, h->w, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost) != cudaSuccess) {
        for (size_t i = 0; i < n; i++)
            dst[i] = NAN;
        free(tmp);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = h->fmt == ENG_WFMT_BF16 ? cu_bf16_to_f32(tmp[i]) : cu_f16_to_f32(tmp[i]);
    free(tmp);
}

size_t cu_linear_info(eng_backend *be, const void *hv, const char **kernel)
{
    (void)be;
    const cu_linear *h = (const cu_linear *)hv;
    if (kernel)
        *kernel = h->fmt == ENG_WFMT_BF16 ? "cublas_bf16" : "cublas_fp16";
    return sizeof(uint16_t) * (size_t)h->N * h->K;
}

void cu_linear_free(void *hv)
{
    cu_linear *h = (cu_linear *)hv;
    if (!h)
        return;
    cudaSetDevice(h->device); /* as cu_free: tried even after a fault */
    cudaFree(h->w);
    free(h);
}

} /* namespace CU_NS */
