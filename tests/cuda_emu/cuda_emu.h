/* cuda_emu.h - TEST CODE ONLY: a small emulation of the CUDA execution model and of
 * the CUDA runtime / cuBLAS calls the backend in cuda/ makes, so that the backend's
 * own sources (kernels included) compile with the host C++ compiler and run on the
 * CPU in tests (cuda/cu_common.cuh includes this when NLPD_CUDA_EMU is defined).
 * Never linked into nlpd, nlpd-cli or nlpd-train.
 *
 * Execution model: a launch runs its blocks one after another; the threads of a block
 * are coroutines (ucontext) on one OS thread, switched at __syncthreads and warp
 * shuffles (which are block-wide rendezvous here: every thread of the block must reach
 * them, as in our kernels; a divergent barrier fails loudly). __shared__ is static
 * storage (one block at a time, one launch at a time process-wide), dynamic shared
 * memory a per-launch buffer filled with NaN bytes. Atomics are plain read-modify-
 * writes (threads never run at once). Flat launches (CU_LAUNCH_FLAT) run the threads
 * as a loop and fail a kernel that reaches a barrier or shuffle.
 *
 * Asynchronous copies: a cudaMemcpyAsync from device memory into pinned host memory
 * (cudaMallocHost) reads the device side at once (in stream order, as kernels run at
 * once) but writes the host side only when the stream is synchronised, so that code
 * reading a download before cudaStreamSynchronize sees stale bytes, as it could on a
 * GPU. Into pageable memory it is synchronous (as CUDA does it), and counted.
 *
 * Memory: cudaMalloc'd memory is host memory, but every allocation is recorded:
 * copies and cuBLAS calls check that the device side of each access lies inside one
 * allocation (and that a host side does not), so a host pointer passed as device
 * memory, or an access past an allocation, fails the call (and the test).
 *
 * cuBLAS: cublasGemmEx and cublasGemmStridedBatchedEx with fp32 compute for fp32 inputs,
 * or fp16 / bf16 inputs (read as their 16-bit values, widened to float), fp32 output,
 * on CBLAS in column-major mode with the same transposes, leading dimensions, strides
 * and batch counts; argument checks as cuBLAS documents them. */
#ifndef NLPD_CUDA_EMU_H
#define NLPD_CUDA_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <functional>

/* CUDA C keywords on the host */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

namespace cuemu {

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};

typedef struct stream_s *cudaStream_t;

/* Runs body for every thread of every block of grid x block (see above). */
void launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, int sync,
            const std::function<void()> &body);
void *dyn_shared(void);
void barrier(void);                 /* __syncthreads */
float shfl_xor(float v, int lane_mask);
float shfl_down(float v, int delta);
int shfl_xor_i(int v, int lane_mask);
[[noreturn]] void fatal(const char *fmt, ...);

/* Fault injection for tests: the n-th CUDA runtime call from now fails (0: off; -1:
 * every call fails until fail_after(0), a device that stays broken) with an error that is
 * not sticky ("unknown error (injected)"; cuBLAS: CUBLAS_STATUS_EXECUTION_FAILED).
 * fail_sticky_after: the n-th call fails with the sticky error `code` (cudaErrorIllegal-
 * Address ...), and so does every later runtime call, cudaSetDevice, cudaGetLastError and
 * cudaPeekAtLastError included (the process's CUDA context is poisoned), until
 * fail_after(0). */
void fail_after(int n);
void fail_sticky_after(int n, int code);
/* Kernel launches and cuBLAS calls so far (for tests that check work went through). */
long long launches(void);
long long blas_calls(void);
/* Bytes of device memory allocated now (cudaMalloc'd, not yet freed). */
size_t device_bytes(void);
/* Bytes of pinned host memory allocated now (cudaMallocHost). */
size_t pinned_bytes(void);
/* cudaMemcpyAsync calls whose host side was pageable memory (not cudaMallocHost'd):
 * real CUDA runs those synchronously, so the backend stages through pinned memory. */
long long pageable_async_copies(void);

namespace api {

/* plain globals: one launch runs at a time (a process-wide lock) */
extern uint3 threadIdx, blockIdx, blockDim, gridDim;
using ::cuemu::cudaStream_t;
using ::cuemu::dim3;

inline void __syncthreads(void) { barrier(); }
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask)
{
    (void)mask;
    return shfl_xor(v, lane_mask);
}
inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask)
{
    (void)mask;
    return shfl_xor_i(v, lane_mask);
}
inline float __shfl_down_sync(unsigned mask, float v, int delta)
{
    (void)mask;
    return shfl_down(v, delta);
}
inline float atomicAdd(float *p, float v)
{
    float old = *p;
    *p = old + v;
    return old;
}
inline int atomicAdd(int *p, int v)
{
    int old = *p;
    *p = old + v;
    return old;
}
/* Round-to-nearest intrinsics: no contraction into FMA on either side. */
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __expf(float x) { return expf(x); }

/* ---- runtime API subset */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorECCUncorrectable = 214,
    cudaErrorNvlinkUncorrectable = 220,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchTimeout = 702,
    cudaErrorAssert = 710,
    cudaErrorHardwareStackError = 714,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorInvalidAddressSpace = 717,
    cudaErrorInvalidPc = 718,
    cudaErrorLaunchFailure = 719,
    cudaErrorUnknown = 999,
} cudaError_t;
typedef enum cudaMemcpyKind {
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
} cudaMemcpyKind;

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);

/* ---- cuBLAS subset */
typedef struct blas_s *cublasHandle_t;
typedef enum cublasStatus {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum cublasOperation { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum cudaDataType { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType;
typedef enum cublasComputeType { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum cublasGemmAlgo { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType at,
                                          int lda, long long sa, const void *B, cudaDataType bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo);

} /* namespace api */
} /* namespace cuemu */

#endif
