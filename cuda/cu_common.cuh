/* cu_common.cuh - what every file of the CUDA backend includes (DESIGN §2: cuda/ sees
 * only the backend interface and tensor headers).
 *
 * The same sources build two ways:
 *  - with nvcc for a GPU (the engine library, when nvcc is present): the real CUDA
 *    runtime and cuBLAS; everything lives in namespace cu_real;
 *  - with the host C++ compiler and NLPD_CUDA_EMU defined, for tests only: against
 *    tests/cuda_emu/cuda_emu.h, a small emulation of the CUDA execution model (grid,
 *    blocks, threads, shared memory, barriers, warp shuffles, atomics) and of the
 *    cuBLAS calls made here (on CBLAS); everything lives in namespace cu_emu, so that
 *    one test binary can hold both builds.
 * Kernels are launched with CU_LAUNCH (barriers and shuffles allowed) or
 * CU_LAUNCH_FLAT (neither: the emulation then runs the threads as a plain loop and
 * fails a kernel that reaches a barrier). */
#ifndef NLPD_CU_COMMON_CUH
#define NLPD_CU_COMMON_CUH

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

#ifdef NLPD_CUDA_EMU
#include "cuda_emu.h" /* tests/cuda_emu/ */
#define CU_NS cu_emu
#define CU_LAUNCH(kernel, grid, block, shmem, stream, ...)                              \
    ::cuemu::launch(grid, block, shmem, stream, 1, [=]() { kernel(__VA_ARGS__); })
#define CU_LAUNCH_FLAT(kernel, grid, block, stream, ...)                                \
    ::cuemu::launch(grid, block, 0, stream, 0, [=]() { kernel(__VA_ARGS__); })
#define CU_DYN_SHARED(type, name) type *name = (type *)::cuemu::dyn_shared()
using namespace cuemu::api;
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#define CU_NS cu_real
#define CU_LAUNCH(kernel, grid, block, shmem, stream, ...)                              \
    kernel<<<(grid), (block), (shmem), (stream)>>>(__VA_ARGS__)
#define CU_LAUNCH_FLAT(kernel, grid, block, stream, ...)                                \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define CU_DYN_SHARED(type, name) extern __shared__ type name[]
#endif

#define CU_WARP 32

namespace CU_NS {

/* One backend instance: a device, a stream and a cuBLAS handle (one per worker). */
struct cu_backend {
    eng_backend base;
    cudaStream_t stream;
    cublasHandle_t blas;
    int healthy;         /* 0 after any CUDA error: every later call fails */
    int sticky;          /* ... a sticky one: the process's CUDA context is lost */
    char why[256];       /* the first error (or the first sticky one) */
    /* Pinned (page-locked) host staging for every upload and download: an upload is
     * copied into it and sent with cudaMemcpyAsync on the stream; a download lands in it
     * and reaches the caller's memory at the next synchronisation (pin_drain). Regions
     * are handed out in order and reclaimed at each drain; the buffer grows (after a
     * drain) up to CU_PIN_MAX, larger transfers go through it in pieces. */
    char *pinned;
    size_t pinned_cap, pinned_used;
    struct cu_pending *pend; /* downloads waiting for the drain */
    int npend, pend_cap;
    uint16_t *scratch;   /* device: 16-bit activations of linear_forward (linear.cu) */
    size_t scratch_cap;
    float *scores;       /* device: attention scores of one sequence (attention.cu) */
    size_t scores_cap;   /* bytes */
    size_t scratch_peak, scores_peak; /* bytes calls asked for since the last trim */
};

static inline cu_backend *cu_of(eng_backend *be) { return (cu_backend *)be; }

/* Records a CUDA error (marks the device unhealthy); returns 1 if rc is an error. */
int cu_check(cu_backend *cb, cudaError_t rc, const char *what);
int cu_check_blas(cu_backend *cb, cublasStatus_t rc, const char *what);
/* 1 if rc is a sticky error: it poisons the process's CUDA context (every later call
 * fails with it, in every stream and handle); only a new process can use the GPU again. */
int cu_error_sticky(cudaError_t rc);

struct cu_pending {
    void *dst;     /* the caller's host memory */
    size_t off;    /* in the pinned buffer */
    size_t bytes;
};

enum : size_t {
    CU_PIN_INITIAL = 64 * 1024,       /* bytes a backend starts with */
    CU_PIN_MAX = 16 * 1024 * 1024,    /* largest the buffer grows to */
};

/* Copies n int32 from device memory to a host array (synchronous, on the stream);
 * 0, or -1 after an error. For the few launch shapes that depend on offsets. */
int cu_fetch_i32(cu_backend *cb, int32_t *host, const int32_t *dev, int n);

/* Blocks for a grid-stride loop over n items, per per block: enough to fill a large
 * GPU (1024 x 256 threads ~ the resident threads of an H100/H200), no more. */
static inline int cu_blocks(long long n, int per)
{
    long long b = (n + per - 1) / per;
    return (int)(b < 1 ? 1 : b > 1024 ? 1024 : b);
}

/* ---- device helpers shared by the kernels */

__device__ __forceinline__ float cu_warp_sum(float v)
{
    for (int o = CU_WARP / 2; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float cu_warp_max(float v)
{
    for (int o = CU_WARP / 2; o > 0; o /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets it.
 * red: __shared__ float[32] of the caller. */
__device__ __forceinline__ float cu_block_sum(float v, float *red)
{
    int lane = threadIdx.x % CU_WARP, warp = threadIdx.x / CU_WARP;
    int nw = (blockDim.x + CU_WARP - 1) / CU_WARP;
    v = cu_warp_sum(v);
    __syncthreads(); /* red may still be read from a previous reduction */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return cu_warp_sum(v);
}

__device__ __forceinline__ float cu_block_max(float v, float *red)
{
    int lane = threadIdx.x % CU_WARP, warp = threadIdx.x / CU_WARP;
    int nw = (blockDim.x + CU_WARP - 1) / CU_WARP;
    v = cu_warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return cu_warp_max(v);
}

/* ---- the op families (one .cu each) */

/* gemm.cu */
void cu_gemm(eng_backend *be, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);
void cu_gemm_ex(eng_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* elementwise.cu */
void cu_bias_act(eng_backend *be, float *x, const float *bias, int rows, int cols, eng_act act);
void cu_bias_silu(eng_backend *be, float *x, const float *bias, int rows, int cols);
void cu_copy_rows(eng_backend *be, float *dst, int64_t dst_ld, const int32_t *dst_rows,
                  const float *src, int64_t src_ld, const int32_t *src_rows, int n, int64_t cols);
void cu_zero(eng_backend *be, void *p, size_t bytes);
/* norm.cu */
void cu_add_layernorm(eng_backend *be, float *out, const float *x, const float *res,
                      const float *gamma, const float *beta, int rows, int cols, float eps);
/* embedding.cu */
void cu_embed(eng_backend *be, float *out, const float *word, const float *pos,
              const float *type, const int32_t *ids, const int32_t *pos_ids,
              const int32_t *type_ids, int ntok, int dim);
void cu_embed_scaled(eng_backend *be, float *out, const float *table, float scale,
                     const float *pos, const int32_t *ids, const int32_t *pos_ids, int ntok,
                     int dim);
void cu_gather_rows(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                    int nseq, int row, int dim);
void cu_mean_pool(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                  int nseq, int dim, int normalize);
/* attention.cu */
void cu_attention(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                  const float *k, int k_ld, const float *v, int v_ld, const int32_t *q_off,
                  const int32_t *kv_off, int nseq, int heads, int head_dim, float scale,
                  int causal);
void cu_attention_kv(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                     const float *k, int k_ld, const float *v, int v_ld, const int32_t *q_off,
                     const int32_t *kv_start, const int32_t *kv_len, int nseq, int heads,
                     int head_dim, float scale, int causal);
/* linear.cu: 16-bit weights (ENG_WFMT_F16 / ENG_WFMT_BF16) */
void *cu_linear_pack(eng_backend *be, const float *W, int N, int K, int ldw, int fmt);
int cu_linear_forward(eng_backend *be, const void *h, float *y, const float *x, int M,
                      const float *bias, eng_act act);
void cu_linear_unpack(const void *h, float *dst);
size_t cu_linear_info(eng_backend *be, const void *h, const char **kernel);
void cu_linear_free(void *h);
/* softmax.cu */
void cu_log_softmax(eng_backend *be, float *x, int rows, int cols, int ld);
void cu_topk(eng_backend *be, const float *x, int groups, int rows_per_group, int cols, int ld,
             const float *row_add, int k, float *vals, int32_t *idx);

} /* namespace CU_NS */

#endif
