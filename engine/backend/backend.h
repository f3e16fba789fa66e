/* backend.h - the compute backend interface (DESIGN §3).
 *
 * Models are written once against this vtable; the CPU backend (cpu/backend_cpu.c)
 * is the reference implementation, other backends (cuda/) register theirs in
 * backend/registry.c. All activations are row-major fp32. Activations are "packed":
 * the tokens of all sequences of a batch are concatenated (no padding), and
 * seq_off[nseq + 1] gives each sequence's first row (seq_off[0] = 0,
 * seq_off[nseq] = ntok).
 *
 * Backend memory is explicit: every pointer an op takes (activations, weights, index
 * arrays such as ids and offsets) is backend memory from alloc / weights_upload, and
 * the engine never dereferences it: host data goes in with upload and comes back with
 * download (+ synchronize). Pointer arithmetic inside one allocation is allowed.
 *
 * The ops come in three tables: core (encoder inference), gen (sequence-to-sequence
 * decoding) and train (backward passes, optimizer). A NULL table or a NULL entry
 * means "not supported": callers check (eng_backend_supports) and refuse cleanly.
 */
#ifndef NLPD_BACKEND_H
#define NLPD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_engine.h" /* eng_error */

#ifdef __cplusplus
extern "C" { /* the CUDA backend (cuda/, C++) implements this interface */
#endif

typedef enum eng_act {
    ENG_ACT_NONE = 0,
    ENG_ACT_GELU,      /* exact: 0.5 x (1 + erf(x / sqrt 2)) - HF "gelu" */
    ENG_ACT_GELU_TANH, /* tanh approximation - HF "gelu_new", "gelu_pytorch_tanh" */
    ENG_ACT_RELU,
    ENG_ACT_TANH,
} eng_act;

typedef struct eng_backend eng_backend;

/* Weight formats of a linear layer (nn/linear.h): fp32, bf16 (fp32 accumulation), int8
 * (per-output-channel symmetric weights, per-row dynamic activations, int32 sums), fp16
 * (IEEE half, fp32 accumulation). The CPU packs fp32, bf16 and int8; CUDA fp16 and bf16
 * (cuBLAS GemmEx with 16-bit inputs and CUBLAS_COMPUTE_32F). */
typedef enum eng_wfmt {
    ENG_WFMT_F32 = 0,
    ENG_WFMT_BF16 = 1,
    ENG_WFMT_INT8 = 2,
    ENG_WFMT_F16 = 3,
} eng_wfmt;

/* Encoder inference: BERT-family forward passes and heads. */
typedef struct eng_backend_core_ops {
    /* C[M,N] = alpha * A[M,K] . op(B) + beta * C.
     * trans_b: B is [N,K] (the nn.Linear weight layout), else B is [K,N]. */
    void (*gemm)(eng_backend *be, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta,
                 float *C, int ldc);

    /* x[r, :] = act(x[r, :] + bias) for each of rows rows; bias may be NULL. */
    void (*bias_act)(eng_backend *be, float *x, const float *bias, int rows, int cols,
                     eng_act act);

    /* out[r] = LayerNorm(x[r] + res[r]) * gamma + beta. res may be NULL;
     * out may alias x or res. Statistics in float with the biased variance, as torch. */
    void (*add_layernorm)(eng_backend *be, float *out, const float *x, const float *res,
                          const float *gamma, const float *beta, int rows, int cols,
                          float eps);

    /* out[t] = word[ids[t]] + pos[pos_ids[t]] + type[type_ids[t]].
     * type/type_ids may be NULL (DistilBERT). Ids are assumed in range (the
     * model checks them before upload). */
    void (*embed)(eng_backend *be, float *out, const float *word, const float *pos,
                  const float *type, const int32_t *ids, const int32_t *pos_ids,
                  const int32_t *type_ids, int ntok, int dim);

    /* Multi-head scaled dot-product attention over packed sequences.
     * For each sequence s and head h: out_s,h = softmax(scale * Q K^T [+ causal mask]) V,
     * where Q rows are q_off[s]..q_off[s+1] of q (row stride q_ld, head h at
     * column h*head_dim), K/V rows kv_off[s]..kv_off[s+1] of k/v likewise.
     * out row stride out_ld. causal: query i sees keys j <= i + (nk - nq). */
    void (*attention)(eng_backend *be, float *out, int out_ld,
                      const float *q, int q_ld, const float *k, int k_ld,
                      const float *v, int v_ld, const int32_t *q_off,
                      const int32_t *kv_off, int nseq, int heads, int head_dim,
                      float scale, int causal);

    /* out[s, :] = mean of x rows seq_off[s]..seq_off[s+1]; normalize: then L2-normalise
     * (x / max(||x||, 1e-12), as torch.nn.functional.normalize). */
    void (*mean_pool)(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                      int nseq, int dim, int normalize);

    /* out[s, :] = x[seq_off[s] + row, :] (e.g. the [CLS] row when row = 0). */
    void (*gather_rows)(eng_backend *be, float *out, const float *x, const int32_t *seq_off,
                        int nseq, int row, int dim);

    /* ---- pre-packed weights (inference only: the weights must not change while packed)
     * pack_weight: an opaque read-only handle for B [N, K] (row stride ldb), the nn.Linear
     * layout, or NULL (unsupported, out of memory, or nothing to gain): callers then use
     * gemm(trans_b = 1). B must outlive the handle unchanged (a backend may fall back to
     * it). The layout does not depend on the thread count; a handle may be used
     * concurrently by any backend of the same kind (not only the one that packed it).
     * gemm_prepacked: exactly gemm(be, 1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc),
     * bitwise, N and K those of the packing. free_packed: frees a handle (NULL: no-op);
     * be may be any backend of the same kind or NULL. */
    void *(*pack_weight)(eng_backend *be, const float *B, int N, int K, int ldb);
    void (*gemm_prepacked)(eng_backend *be, int M, int N, int K, float alpha, const float *A,
                           int lda, const void *packed, float beta, float *C, int ldc);
    void (*free_packed)(eng_backend *be, void *packed);

    /* ---- linear layers in a backend-owned weight format (nn/linear.c; optional)
     * linear_pack: a self-contained handle for W [N, K] (row stride ldw; backend memory of
     * be) in format fmt (eng_wfmt): W may be freed afterwards; NULL when unsupported or out
     * of memory. The handle is immutable and usable by any backend of the same kind (on a
     * device backend: on the same device), concurrently.
     * linear_forward: y[M, N] = act(x[M, K] . W^T + bias) (bias may be NULL); fp32 is
     * bitwise gemm + bias_act. Returns 0, or ENG_ENOMEM.
     * linear_unpack: the weights as the handle holds them (dequantized), fp32 [N, K], into
     * host memory. linear_info: bytes the handle holds; *kernel (if not NULL) names the
     * kernel level be runs it on (be may be NULL: the default level).
     * linear_free: frees a handle (NULL: no-op). */
    void *(*linear_pack)(eng_backend *be, const float *W, int N, int K, int ldw, int fmt);
    int (*linear_forward)(eng_backend *be, const void *h, float *y, const float *x, int M,
                          const float *bias, eng_act act);
    void (*linear_unpack)(const void *h, float *dst);
    size_t (*linear_info)(eng_backend *be, const void *h, const char **kernel);
    void (*linear_free)(void *h);
} eng_backend_core_ops;

/* Sequence-to-sequence decoding (Marian; beam search). */
typedef struct eng_backend_gen_ops {
    /* out[t] = scale * table[ids[t]] + pos[pos_ids[t]] (the product rounded first, as
     * torch's embed(ids) * embed_scale + positions). */
    void (*embed_scaled)(eng_backend *be, float *out, const float *table, float scale,
                         const float *pos, const int32_t *ids, const int32_t *pos_ids,
                         int ntok, int dim);

    /* attention whose keys/values need not be packed: sequence s's queries are rows
     * q_off[s]..q_off[s+1] of q, its keys/values rows kv_start[s]..kv_start[s] + kv_len[s]
     * of k/v (a KV-cache slot, an encoder output shared by the beams of a sentence).
     * Otherwise as `attention` (causal: query i of nq sees keys j <= i + kv_len - nq). */
    void (*attention_kv)(eng_backend *be, float *out, int out_ld, const float *q, int q_ld,
                         const float *k, int k_ld, const float *v, int v_ld,
                         const int32_t *q_off, const int32_t *kv_start, const int32_t *kv_len,
                         int nseq, int heads, int head_dim, float scale, int causal);

    /* dst[dst_rows[i] * dst_ld + j] = src[src_rows[i] * src_ld + j] for i < n, j < cols
     * (dst_rows / src_rows NULL: i). Rows written must not overlap rows read. */
    void (*copy_rows)(eng_backend *be, float *dst, int64_t dst_ld, const int32_t *dst_rows,
                      const float *src, int64_t src_ld, const int32_t *src_rows, int n,
                      int64_t cols);

    /* x[r, 0:cols] = log_softmax(x[r, 0:cols]) in place, row stride ld (x - max -
     * log(sum(exp(x - max))), as torch); -inf entries stay -inf. */
    void (*log_softmax)(eng_backend *be, float *x, int rows, int cols, int ld);

    /* For each group g of rows_per_group consecutive rows of x (cols each, stride ld):
     * the k largest values x[r, c] + row_add[r] (a float sum; row_add may be NULL) over
     * the whole group, descending, equal values by lower flat index r_local * cols + c.
     * vals[g * k + j] and idx[g * k + j] (= r_local * cols + c); k <= rows_per_group * cols. */
    void (*topk)(eng_backend *be, const float *x, int groups, int rows_per_group, int cols,
                 int ld, const float *row_add, int k, float *vals, int32_t *idx);

    /* x[r, :] = silu(x[r, :] + bias) = y * sigmoid(y) (HF "swish"/"silu"); bias may be NULL. */
    void (*bias_silu)(eng_backend *be, float *x, const float *bias, int rows, int cols);

} eng_backend_gen_ops;

/* Training (engine/train/train.c): forward helpers, backward passes, optimizer. */
typedef struct eng_backend_train_ops {
    /*     * "d" arrays are gradients; parameter gradients are ACCUMULATED (+=) so that
     * micro-batches add up; activation gradients are written unless stated.
     * Dropout masks are a pure function of (seed, element index) so that the
     * backward pass regenerates them instead of storing them. */

    /* C[M,N] = alpha * op(A) . op(B) + beta * C. trans_a: A is stored [K,M];
     * trans_b: B is stored [N,K]. Leading dimensions are those of the stored arrays. */
    void (*gemm_ex)(eng_backend *be, int trans_a, int trans_b, int M, int N, int K,
                    float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                    float *C, int ldc);

    /* pre[r, :] += bias (bias may be NULL); post[r, :] = act(pre[r, :]). */
    void (*bias_act_train)(eng_backend *be, float *pre, float *post, const float *bias,
                           int rows, int cols, eng_act act);

    /* dx = dy * act'(pre) elementwise (pre: the activation's input); dx may alias dy. */
    void (*act_backward)(eng_backend *be, float *dx, const float *dy, const float *pre,
                         int rows, int cols, eng_act act);

    /* Backward of out = LayerNorm(x + res) * gamma + beta (res may be NULL):
     * dx = d(x + res) (written), dgamma/dbeta accumulated. Statistics are recomputed. */
    void (*layernorm_backward)(eng_backend *be, float *dx, float *dgamma, float *dbeta,
                               const float *dout, const float *x, const float *res,
                               const float *gamma, int rows, int cols, float eps);

    /* Backward of embed: dword[ids[t]] += dout[t], dpos[pos_ids[t]] += dout[t],
     * dtype[type_ids[t]] += dout[t] (dtype/type_ids may be NULL). */
    void (*embed_backward)(eng_backend *be, float *dword, float *dpos, float *dtype,
                           const float *dout, const int32_t *ids, const int32_t *pos_ids,
                           const int32_t *type_ids, int ntok, int dim);

    /* Self-attention over packed sequences (seq_off, as `attention` with q_off = kv_off,
     * no causal mask) that also stores the softmax probabilities for the backward pass:
     * probs + p_off[s] holds sequence s as [heads][n_s][n_s] (p_off[nseq] = total).
     * dropout_p > 0 drops attention probabilities (scaled by 1/(1-p)) with masks from seed. */
    void (*attention_train)(eng_backend *be, float *out, int out_ld, float *probs,
                            const int64_t *p_off, const float *q, const float *k,
                            const float *v, int qkv_ld, const int32_t *seq_off, int nseq,
                            int heads, int head_dim, float scale, float dropout_p,
                            uint64_t seed);

    /* Backward of attention_train: dq/dk/dv (row stride dqkv_ld, written) from dout. */
    void (*attention_backward)(eng_backend *be, float *dq, float *dk, float *dv, int dqkv_ld,
                               const float *dout, int dout_ld, const float *probs,
                               const int64_t *p_off, const float *q, const float *k,
                               const float *v, int qkv_ld, const int32_t *seq_off, int nseq,
                               int heads, int head_dim, float scale, float dropout_p,
                               uint64_t seed);

    /* y[i] = x[i] * keep(seed, i) / (1 - p) for n elements; y may alias x. Applying it
     * to a gradient with the same seed is the backward pass. p <= 0 copies. */
    void (*dropout)(eng_backend *be, float *y, const float *x, size_t n, float p,
                    uint64_t seed);

    /* db[c] += sum over rows of dy[r, c] (bias gradients). */
    void (*sum_rows)(eng_backend *be, float *db, const float *dy, int rows, int cols);

    /* dx[seq_off[s] + row, :] += dsrc[s, :] (backward of gather_rows). */
    void (*scatter_rows)(eng_backend *be, float *dx, const float *dsrc, const int32_t *seq_off,
                         int nseq, int row, int dim);

    /* y[i] += alpha * x[i]. */
    void (*axpy)(eng_backend *be, float *y, float alpha, const float *x, size_t n);


    /* Softmax cross-entropy over logits[n, L] with class labels[n]: loss[0] = mean loss,
     * dlogits = scale * d(mean loss)/dlogits (written). */
    void (*cross_entropy)(eng_backend *be, float *loss, float *dlogits, const float *logits,
                          const int32_t *labels, int n, int L, float scale);

    /* Sigmoid binary cross-entropy (BCEWithLogits) over logits[n, L] and targets[n, L] in
     * [0, 1]: loss[0] = mean over n * L, dlogits = scale * d(mean)/dlogits (written). */
    void (*bce_logits)(eng_backend *be, float *loss, float *dlogits, const float *logits,
                       const float *targets, int n, int L, float scale);

    /* out[0] = sum of x[i]^2 over n elements (accumulated in double, stored as float). */
    void (*sum_squares)(eng_backend *be, float *out, const float *x, size_t n);

    /* AdamW step over n parameters (torch.optim.AdamW semantics): g' = g * gscale;
     * p -= lr * wd * p; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
     * p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), bc_i = 1 - b_i^step.
     * Then g is zeroed for the next accumulation. */
    void (*adamw)(eng_backend *be, float *p, float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                  float gscale);

} eng_backend_train_ops;

typedef struct eng_backend_ops {
    const char *name; /* the registry name: "cpu", "cuda" */
    void (*destroy)(eng_backend *be);

    /* Memory (every backend has these). alloc returns 64-byte aligned backend memory
     * or NULL; upload/download copy between host and backend memory (they may be
     * asynchronous: synchronize before reading a download or reusing its source). */
    void *(*alloc)(eng_backend *be, size_t bytes);
    void (*free)(eng_backend *be, void *p);
    int (*upload)(eng_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(eng_backend *be, void *host_dst, const void *src, size_t bytes);
    int (*synchronize)(eng_backend *be); /* 0, or ENG_EBACKEND after a device fault */

    /* Zero `bytes` bytes of backend memory. */
    void (*zero)(eng_backend *be, void *p, size_t bytes);

    /* Weights: a read-only backend copy ("view") of a host block of bytes, made once
     * per model version, or NULL (out of memory / device fault). A backend that shares
     * host memory returns host itself (zero-copy: the CPU). weights_free releases a
     * view on `device` (a zero-copy one: no-op); it needs no backend object, as a model
     * version may outlive the contexts that used it. */
    void *(*weights_upload)(eng_backend *be, const void *host, size_t bytes);
    void (*weights_free)(int device, void *view);

    /* NULL while the backend works, else why it stopped (a device fault: every later
     * call fails with ENG_EBACKEND). NULL entry: the backend cannot fail that way. */
    const char *(*health)(const eng_backend *be);
    /* 1 when that fault is sticky: it broke the device for the whole process (a CUDA
     * error such as an illegal address poisons every context), so no new backend
     * instance can help; only a new process. NULL entry: faults are never sticky. */
    int (*fault_sticky)(const eng_backend *be);

    /* Scratch the backend keeps between calls (NULL entries: it keeps none).
     * scratch_bytes: bytes held now, and in *peak (may be NULL) the most the calls
     * since the last trim needed. scratch_trim: free scratch until at most keep bytes
     * are held (it grows back on demand) and reset the peak. */
    size_t (*scratch_bytes)(eng_backend *be, size_t *peak);
    void (*scratch_trim)(eng_backend *be, size_t keep);

    const eng_backend_core_ops *core;   /* NULL: no inference */
    const eng_backend_gen_ops *gen;     /* NULL: no sequence-to-sequence decoding */
    const eng_backend_train_ops *train; /* NULL: no training */
} eng_backend_ops;

struct eng_backend {
    const eng_backend_ops *ops;
    int threads;
    int device; /* device index within the backend kind (cpu: 0) */
};

/* The CPU backend: an own packed SGEMM for B^T products (each output element's
 * summation order depends only on K, so batching never changes a result),
 * OpenBLAS for the other GEMM forms, own vectorised kernels, `threads` worker
 * threads (<= 0: online cores). Returns NULL on allocation failure. */
eng_backend *eng_backend_cpu_new(int threads);

/* ---------------------------------------------------------------- registry */

typedef enum eng_op_part {
    ENG_OPS_CORE = 1,
    ENG_OPS_GEN = 2,
    ENG_OPS_TRAIN = 4,
} eng_op_part;

/* 1 when be has every op of the parts (a mask of eng_op_part), else 0. */
int eng_backend_supports(const eng_backend *be, int parts);

/* One kind of backend. A new backend is added by registering one of these
 * (backend/registry.c) and passing test_backend_ops. */
typedef struct eng_backend_reg {
    const char *name; /* "cpu", "cuda": the spelling of config files */
    /* Devices present (>= 0); the CPU has one. */
    int (*device_count)(void);
    /* A backend on device `device` with `threads` host threads (<= 0: default), or an
     * ENG_E* code with the reason in err (no such device, device fault, memory). */
    int (*create)(int device, int threads, eng_backend **out, eng_error *err);
} eng_backend_reg;

/* The registered kinds: cpu first, then (when built with it) cuda. */
int eng_backend_reg_count(void);
const eng_backend_reg *eng_backend_reg_get(int i);
const eng_backend_reg *eng_backend_reg_find(const char *name);

/* Adds a kind at run time (test-only backends such as the emulated CUDA backend):
 * before any backend is created, from one thread. ENG_EINVAL when the table is full,
 * the entry incomplete or the name taken. */
int eng_backend_register(const eng_backend_reg *r);

/* A backend from a spec: "cpu", "cuda" (device 0), "cuda:N", or "auto" (the first
 * non-CPU kind that has a device, else the CPU). ENG_EUNSUPPORTED naming the kinds
 * this build has when the kind is unknown; ENG_EINVAL for a malformed spec. */
int eng_backend_new(const char *spec, int threads, eng_backend **out, eng_error *err);

/* The kind a spec names ("cpu" for NULL; "auto": the kind eng_backend_new would pick
 * here), or NULL when malformed or not in this build. */
const eng_backend_reg *eng_backend_spec_reg(const char *spec);

/* 1 if spec is well formed and names a kind of this build (the device may be absent). */
int eng_backend_spec_valid(const char *spec);

#ifdef __cplusplus
}
#endif

#endif /* NLPD_BACKEND_H */
