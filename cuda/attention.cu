/* attention.cu - multi-head scaled dot-product attention over packed variable-length
 * batches, two ways:
 *  - encoder self-attention (cu_attention): per sequence, the heads as one
 *    cublasGemmStridedBatchedEx each for S = scale Q K^T and O = P V (fp32 data, fp32
 *    accumulation; head h is columns h*head_dim of the packed rows, so the heads are a
 *    constant stride apart), with a softmax kernel (causal mask included) between them on
 *    a per-backend scores buffer [heads][nq][nk]. Sequences are not batched together
 *    even when their lengths are equal: a sequence's GEMMs then have the same shapes and
 *    batch count whatever else is in the batch, so its result does not depend on the
 *    other inputs (cuBLAS may pick another algorithm for another batch count).
 *  - decoding (cu_attention_kv: one or a few query rows against a KV cache) and the
 *    rare self-attention with a sequence that has queries but no keys: one warp per
 *    (query row, head). The lanes take the keys in turn for the scores (kept in shared
 *    memory), reduce max and sum with shuffles, then take the output dimensions in turn.
 * Either needs the offsets on the host (the launch shapes depend on them): they are
 * fetched with a small synchronous copy per call. */
#include <stdio.h>
#include <stdlib.h>

#include "cu_common.cuh"

namespace CU_NS {

__global__ void attention_kernel(float *out, int out_ld, const float *q, int q_ld, const float *k,
                                 int k_ld, const float *v, int v_ld, const int32_t *q_off,
                                 const int32_t *kv_off, const int32_t *kv_start,
                                 const int32_t *kv_len, int nseq, int head_dim, float scale,
                                 int causal)
{
    CU_DYN_SHARED(float, sc);
    int r = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
    /* the sequence of row r: the last s with q_off[s] <= r (empty sequences skipped) */
    int lo = 0, hi = nseq - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (q_off[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    int s = lo, i = r - q_off[s], nq = q_off[s + 1] - q_off[s];
    int k0 = kv_off ? kv_off[s] : kv_start[s];
    int nk = kv_off ? kv_off[s + 1] - kv_off[s] : kv_len[s];
    int lim = nk;
    if (causal) {
        lim = i + 1 + nk - nq;
        lim = lim < 0 ? 0 : lim > nk ? nk : lim;
    }
    const float *qr = q + (long long)r * q_ld + h * head_dim;
    float mx = -INFINITY;
    for (int j = lane; j < lim; j += CU_WARP) {
        const float *kr = k + ((long long)k0 + j) * k_ld + h * head_dim;
        float d = 0.0f;
        for (int e = 0; e < head_dim; e++)
            d += qr[e] * kr[e];
        sc[j] = d * scale;
        mx = fmaxf(mx, sc[j]);
    }
    mx = cu_warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < lim; j += CU_WARP) {
        float p = expf(sc[j] - mx);
        sc[j] = p;
        sum += p;
    }
    sum = cu_warp_sum(sum);
    __syncthreads(); /* every lane's probabilities are in sc */
    float *orow = out + (long long)r * out_ld + h * head_dim;
    for (int e = lane; e < head_dim; e += CU_WARP) {
        float acc = 0.0f;
        for (int j = 0; j < lim; j++)
            acc += sc[j] * v[((long long)k0 + j) * v_ld + h * head_dim + e];
        orow[e] = lim > 0 ? acc / sum : 0.0f;
    }
}

/* Row t of a [count][nq][nk] block of scores -> softmax over the keys query t % nq
 * sees (all nk, or j <= i + nk - nq when causal), the others 0 (a row seeing no key is
 * all zeros, so its output is 0). One warp per row. */
__global__ void softmax_rows_kernel(float *S, int nq, int nk, int causal)
{
    long long t = blockIdx.x;
    int lane = threadIdx.x, i = (int)(t % nq), lim = nk;
    if (causal) {
        lim = i + 1 + nk - nq;
        lim = lim < 0 ? 0 : lim > nk ? nk : lim;
    }
    float *row = S + t * nk;
    float mx = -INFINITY;
    for (int j = lane; j < lim; j += CU_WARP)
        mx = fmaxf(mx, row[j]);
    mx = cu_warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < lim; j += CU_WARP) {
        float p = expf(row[j] - mx);
        row[j] = p;
        sum += p;
    }
    sum = cu_warp_sum(sum);
    for (int j = lane; j < nk; j += CU_WARP)
        row[j] = j < lim ? row[j] / sum : 0.0f;
}

/* Self-attention on cuBLAS (see the top). h: the host offsets (q_off, then kv_off). */
static void attention_gemm(cu_backend *cb, float *out, int out_ld, const float *q, int q_ld,
                           const float *k, int k_ld, const float *v, int v_ld,
                           const int32_t *hq, const int32_t *hk, int nseq, int heads,
                           int head_dim, float scale, int causal)
{
    size_t need = 0;
    for (int s = 0; s < nseq; s++) {
        size_t b = sizeof(float) * (size_t)heads * (size_t)(hq[s + 1] - hq[s]) *
                   (size_t)(hk[s + 1] - hk[s]);
        need = b > need ? b : need;
    }
    if (need > cb->scores_peak)
        cb->scores_peak = need;
    if (need > cb->scores_cap) {
        if (cb->scores)
            cudaFree(cb->scores);
        cb->scores = nullptr;
        cb->scores_cap = 0;
        void *p = nullptr;
        cudaError_t rc = cudaMalloc(&p, need);
        if (rc != cudaSuccess) {
            /* the batch cannot run: fail it with the reason (out of memory is not sticky:
             * the error is cleared; a sticky one stays and says so) */
            char what[96];
            snprintf(what, sizeof what, "cudaMalloc of %zu bytes for attention scores", need);
            cudaGetLastError();
            cu_check(cb, rc, what);
            return;
        }
        cb->scores = (float *)p;
        cb->scores_cap = need;
    }
    float one = 1.0f, zero = 0.0f;
    for (int s = 0; s < nseq && cb->healthy; s++) {
        int nq = hq[s + 1] - hq[s], nk = hk[s + 1] - hk[s];
        if (nq <= 0)
            continue;
        const float *qs = q + (long long)hq[s] * q_ld, *ks = k + (long long)hk[s] * k_ld,
                    *vs = v + (long long)hk[s] * v_ld;
        float *os = out + (long long)hq[s] * out_ld;
        long long sqk = (long long)nq * nk;
        /* row-major S_h[nq, nk] = scale Q_h K_h^T is column-major S_h^T = K_h' Q_h
         * (gemm.cu's swap): A = K_h (k_ld, transposed), B = Q_h (q_ld) */
        cublasStatus_t st = cublasGemmStridedBatchedEx(
            cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, nk, nq, head_dim, &scale, ks, CUDA_R_32F, k_ld,
            head_dim, qs, CUDA_R_32F, q_ld, head_dim, &zero, cb->scores, CUDA_R_32F, nk, sqk,
            heads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (cu_check_blas(cb, st, "attention scores (cublasGemmStridedBatchedEx)"))
            return;
        CU_LAUNCH(softmax_rows_kernel, (unsigned)((long long)heads * nq), CU_WARP, 0,
                  cb->stream, cb->scores, nq, nk, causal);
        if (cu_check(cb, cudaGetLastError(), "attention softmax"))
            return;
        /* O_h[nq, hd] = P_h[nq, nk] V_h: column-major O_h^T = V_h^T P_h^T */
        st = cublasGemmStridedBatchedEx(cb->blas, CUBLAS_OP_N, CUBLAS_OP_N, head_dim, nq, nk,
                                        &one, vs, CUDA_R_32F, v_ld, head_dim, cb->scores,
                                        CUDA_R_32F, nk, sqk, &zero, os, CUDA_R_32F, out_ld,
                                        head_dim, heads, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
        if (cu_check_blas(cb, st, "attention output (cublasGemmStridedBatchedEx)"))
            return;
    }
}

enum { MAX_SHARED = 48 * 1024 };

static void attention_any(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                          const float *k, int k_ld, const float *v, int v_ld,
                          const int32_t *q_off, const int32_t *kv_off, const int32_t *kv_start,
                          const int32_t *kv_len, int nseq, int heads, int head_dim, float scale,
                          int causal)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || nseq <= 0 || heads <= 0)
        return;
    int32_t *h = (int32_t *)malloc(sizeof(int32_t) * 2 * ((size_t)nseq + 1));
    if (!h) {
        cu_check(cb, cudaErrorMemoryAllocation, "attention (host memory)");
        return;
    }
    int32_t *hk = h + nseq + 1;
    if (cu_fetch_i32(cb, h, q_off, nseq + 1) ||
        cu_fetch_i32(cb, hk, kv_off ? kv_off : kv_len, kv_off ? nseq + 1 : nseq)) {
        free(h);
        return;
    }
    int rows = h[nseq], max_nk = 0, keyless = 0;
    for (int s = 0; s < nseq; s++) {
        int nk = kv_off ? hk[s + 1] - hk[s] : hk[s];
        max_nk = nk > max_nk ? nk : max_nk;
        keyless |= nk == 0 && h[s + 1] > h[s];
    }
    if (rows > 0 && kv_off && !keyless) {
        attention_gemm(cb, out, out_ld, q, q_ld, k, k_ld, v, v_ld, h, hk, nseq, heads,
                       head_dim, scale, causal);
        free(h);
        return;
    }
    free(h);
    if (rows <= 0)
        return;
    size_t shmem = sizeof(float) * (size_t)(max_nk > 0 ? max_nk : 1);
    if (shmem > MAX_SHARED) {
        cu_check(cb, cudaErrorInvalidValue, "attention (more keys than the kernel holds)");
        return;
    }
    dim3 grid((unsigned)rows, (unsigned)heads);
    CU_LAUNCH(attention_kernel, grid, CU_WARP, shmem, cb->stream, out, out_ld, q, q_ld, k, k_ld, v,
              v_ld, q_off, kv_off, kv_start, kv_len, nseq, head_dim, scale, causal);
    cu_check(cb, cudaGetLastError(), "attention");
}

void cu_attention(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                  const float *k, int k_ld, const float *v, int v_ld, const int32_t *q_off,
                  const int32_t *kv_off, int nseq, int heads, int head_dim, float scale,
                  int causal)
{
    attention_any(be, out, out_ld, q, q_ld, k, k_ld, v, v_ld, q_off, kv_off, nullptr, nullptr,
                  nseq, heads, head_dim, scale, causal);
}

void cu_attention_kv(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                     const float *k, int k_ld, const float *v, int v_ld, const int32_t *q_off,
                     const int32_t *kv_start, const int32_t *kv_len, int nseq, int heads,
                     int head_dim, float scale, int causal)
{
    attention_any(be, out, out_ld, q, q_ld, k, k_ld, v, v_ld, q_off, nullptr, kv_start, kv_len,
                  nseq, heads, head_dim, scale, causal);
}

} /* namespace CU_NS */
