/* embedding.cu - embedding gathers (BERT: word + position + type; Marian: scaled word +
 * position), row gathers and mean pooling over packed sequences. */
#include "cu_common.cuh"

namespace CU_NS {

__global__ void embed_kernel(float *out, const float *word, const float *pos, const float *type,
                             const int32_t *ids, const int32_t *pos_ids, const int32_t *type_ids,
                             int ntok, int dim)
{
    long long n = (long long)ntok * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long t = i / dim, d = i % dim;
        float v = word[(long long)ids[t] * dim + d] + pos[(long long)pos_ids[t] * dim + d];
        if (type)
            v += type[(long long)type_ids[t] * dim + d];
        out[i] = v;
    }
}

/* The product rounded first, then the add (no FMA), as torch. */
__global__ void embed_scaled_kernel(float *out, const float *table, float scale,
                                    const float *pos, const int32_t *ids, const int32_t *pos_ids,
                                    int ntok, int dim)
{
    long long n = (long long)ntok * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long t = i / dim, d = i % dim;
        float e = __fmul_rn(table[(long long)ids[t] * dim + d], scale);
        out[i] = __fadd_rn(e, pos[(long long)pos_ids[t] * dim + d]);
    }
}

__global__ void gather_rows_kernel(float *out, const float *x, const int32_t *seq_off, int nseq,
                                   int row, int dim)
{
    long long n = (long long)nseq * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long s = i / dim, d = i % dim;
        out[i] = x[((long long)seq_off[s] + row) * dim + d];
    }
}

/* One block per sequence; an empty sequence gives zeros. */
__global__ void mean_pool_kernel(float *out, const float *x, const int32_t *seq_off, int dim,
                                 int normalize)
{
    __shared__ float red[32];
    int s = blockIdx.x, r0 = seq_off[s], n = seq_off[s + 1] - r0;
    float *o = out + (long long)s * dim, ss = 0.0f;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int r = 0; r < n; r++)
            acc += x[((long long)r0 + r) * dim + d];
        float m = acc / (float)(n > 0 ? n : 1);
        o[d] = m;
        ss += m * m;
    }
    if (!normalize)
        return;
    float inv = 1.0f / fmaxf(sqrtf(cu_block_sum(ss, red)), 1e-12f);
    for (int d = threadIdx.x; d < dim; d += blockDim.x)
        o[d] = o[d] * inv;
}

void cu_embed(eng_backend *be, float *out, const float *word, const float *pos,
              const float *type, const int32_t *ids, const int32_t *pos_ids,
              const int32_t *type_ids, int ntok, int dim)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || ntok <= 0 || dim <= 0)
        return;
    CU_LAUNCH_FLAT(embed_kernel, cu_blocks((long long)ntok * dim, 256), 256, cb->stream, out, word,
                   pos, type_ids ? type : nullptr, ids, pos_ids, type_ids, ntok, dim);
    cu_check(cb, cudaGetLastError(), "embed");
}

void cu_embed_scaled(eng_backend *be, float *out, const float *table, float scale,
                     const float *pos, const int32_t *ids, const int32_t *pos_ids, int ntok,
                     int dim)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || ntok <= 0 || dim <= 0)
        return;
    CU_LAUNCH_FLAT(embed_scaled_kernel, cu_blocks((long long)ntok * dim, 256), 256, cb->stream,
                   out, table, scale, pos, ids, pos_ids, ntok, dim);
    cu_check(cb, cudaGetLastError(), "embed_scaled");
}

void cu_gather_rows(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                    int nseq, int row, int dim)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || nseq <= 0 || dim <= 0)
        return;
    CU_LAUNCH_FLAT(gather_rows_kernel, cu_blocks((long long)nseq * dim, 256), 256, cb->stream, out,
                   x, seq_off, nseq, row, dim);
    cu_check(cb, cudaGetLastError(), "gather_rows");
}

void cu_mean_pool(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                  int nseq, int dim, int normalize)
{
    cu_backend *cb = cu_of(be);
    if (!cb->healthy || nseq <= 0 || dim <= 0)
        return;
    CU_LAUNCH(mean_pool_kernel, nseq, 128, 0, cb->stream, out, x, seq_off, dim, normalize);
    cu_check(cb, cudaGetLastError(), "mean_pool");
}

} /* namespace CU_NS */
