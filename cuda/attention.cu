/* attention.cu - multi-head scaled dot-product attention over packed variable-length
 * batches: one warp per (query row, head). The warp's lanes take the keys in turn for
 * the scores (kept in shared memory), reduce max and sum with shuffles, then take the
 * output dimensions in turn. Keys/values are either packed like the queries (kv_off)
 * or anywhere in a cache (kv_start, kv_len: decoder self-attention, cross-attention).
 * The launch needs the number of query rows and the longest key run: the offsets are
 * fetched to the host (a small synchronous copy per call). */
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
    int rows = h[nseq], max_nk = 0;
    for (int s = 0; s < nseq; s++) {
        int nk = kv_off ? hk[s + 1] - hk[s] : hk[s];
        max_nk = nk > max_nk ? nk : max_nk;
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
