/* gemm.cu - the GEMMs of the CUDA backend on cuBLAS (cublasGemmEx, fp32 data, fp32
 * accumulation). Row-major C[M,N] = op(A) op(B) is the column-major product
 * C^T[N,M] = op(B)^T op(A)^T, so the operands go in swapped with the same transposes
 * and leading dimensions. */
#include "cu_common.cuh"

namespace CU_NS {

/* C = beta C over M rows of N (stride ldc); beta == 0 writes zeros (C not read). */
__global__ void scale_kernel(float *C, int M, int N, int ldc, float beta)
{
    long long n = (long long)M * N;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float *c = C + (i / N) * ldc + i % N;
        *c = beta == 0.0f ? 0.0f : beta * *c;
    }
}

static void gemm_any(eng_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || M <= 0 || N <= 0)
        return;
    if (K == 0) {
        CU_LAUNCH_FLAT(scale_kernel, cu_blocks((long long)M * N, 256), 256, cb->stream, C, M, N,
                       ldc, beta);
        cu_check(cb, cudaGetLastError(), "gemm (K = 0)");
        return;
    }
    cublasStatus_t st = cublasGemmEx(cb->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                     CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F,
                                     ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cu_check_blas(cb, st, "cublasGemmEx");
}

void cu_gemm(eng_backend *be, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    gemm_any(be, 0, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cu_gemm_ex(eng_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    gemm_any(be, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

} /* namespace CU_NS */
