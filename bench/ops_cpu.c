/* ops_cpu.c - microbenchmark of the CPU backend's ops at all-MiniLM-L6-v2 shapes
 * (hidden 384, intermediate 1536, 12 heads x 32) for batch 32 x seq 128 (4096
 * tokens) and batch 1 x seq 16, to see where an encoder layer's time goes.
 *
 * Build (from the repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -march=x86-64-v2 -Iengine -Iengine/include \
 *       $(pkg-config --cflags openblas) bench/ops_cpu.c engine/cpu/*.c \
 *       $(pkg-config --libs openblas) -lpthread -lm -o build/ops_cpu
 * (engine/cpu/*.c: the pool, the kernels of each ISA, the training and seq2seq ops.)
 * A white-box benchmark: unlike the rest of bench/ it includes engine-internal headers.
 * Run:  build/ops_cpu [threads] [reps]      (threads <= 0: online cores)
 * Env:  NLPD_CPU_ISA=scalar|avx2|avx512 forces a kernel path;
 *       NLPD_CPU_GEMM=blas runs every GEMM on OpenBLAS with its own threads instead of
 *       the packed kernel on the pool (for comparison only: not batch-invariant).
 *       OPS_ONLY=substring times only the ops whose name contains it (for perf).
 * Each figure is the best of `reps` timed runs after one warm-up run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "cpu/cpu_kernels.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *buf(eng_backend *be, size_t n)
{
    float *p = be->ops->alloc(be, n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    return p;
}

typedef struct ctx {
    eng_backend *be;
    int ntok, nseq, seq, hid, inter, heads, hd;
    float *x, *res, *qkv, *ctxo, *h1, *wqkv, *wo, *w1, *w2, *bias, *gamma, *beta, *pool;
    float *word, *pos, *type;
    int32_t *ids, *pos_ids, *type_ids, *off;
} ctx;

enum { OP_QKV, OP_ATTN_OUT, OP_FFN1, OP_FFN2, OP_BIAS_NONE, OP_GELU, OP_LN, OP_ATTN,
       OP_EMBED, OP_POOL, OP_COUNT };

static void run_op(ctx *c, int op)
{
    eng_backend *be = c->be;
    const eng_backend_ops *o = be->ops;
    int T = c->ntok, H = c->hid, I = c->inter;
    switch (op) {
    case OP_QKV: o->core->gemm(be, 1, T, 3 * H, H, 1.0f, c->x, H, c->wqkv, H, 0.0f, c->qkv, 3 * H); break;
    case OP_ATTN_OUT: o->core->gemm(be, 1, T, H, H, 1.0f, c->ctxo, H, c->wo, H, 0.0f, c->res, H); break;
    case OP_FFN1: o->core->gemm(be, 1, T, I, H, 1.0f, c->x, H, c->w1, H, 0.0f, c->h1, I); break;
    case OP_FFN2: o->core->gemm(be, 1, T, H, I, 1.0f, c->h1, I, c->w2, I, 0.0f, c->res, H); break;
    case OP_BIAS_NONE: o->core->bias_act(be, c->qkv, c->bias, T, 3 * H, ENG_ACT_NONE); break;
    case OP_GELU: o->core->bias_act(be, c->h1, c->bias, T, I, ENG_ACT_GELU); break;
    case OP_LN: o->core->add_layernorm(be, c->x, c->x, c->res, c->gamma, c->beta, T, H, 1e-12f); break;
    case OP_ATTN:
        o->core->attention(be, c->ctxo, H, c->qkv, 3 * H, c->qkv + H, 3 * H, c->qkv + 2 * H, 3 * H,
                     c->off, c->off, c->nseq, c->heads, c->hd, 0.1767767f, 0);
        break;
    case OP_EMBED:
        o->core->embed(be, c->x, c->word, c->pos, c->type, c->ids, c->pos_ids, c->type_ids, T, H);
        break;
    case OP_POOL: o->core->mean_pool(be, c->pool, c->x, c->off, c->nseq, H, 1); break;
    }
}

/* Work of one op: flops (GEMM, attention) or bytes moved (the rest). */
static double op_work(const ctx *c, int op, int *is_flops)
{
    double T = c->ntok, H = c->hid, I = c->inter;
    *is_flops = 1;
    switch (op) {
    case OP_QKV: return 2 * T * 3 * H * H;
    case OP_ATTN_OUT: return 2 * T * H * H;
    case OP_FFN1: case OP_FFN2: return 2 * T * I * H;
    case OP_ATTN: return 4.0 * c->nseq * (double)c->seq * c->seq * c->hd * c->heads;
    default: break;
    }
    *is_flops = 0;
    switch (op) {
    case OP_BIAS_NONE: return 2 * T * 3 * H * 4;
    case OP_GELU: return 2 * T * I * 4;
    case OP_LN: return 3 * T * H * 4;
    case OP_EMBED: return 4 * T * H * 4;
    case OP_POOL: return T * H * 4;
    default: return 1;
    }
}

static const char *const op_names[OP_COUNT] = {
    "gemm qkv [T,384]x[1152,384]^T", "gemm attn-out [T,384]x[384,384]^T",
    "gemm ffn1 [T,384]x[1536,384]^T", "gemm ffn2 [T,1536]x[384,1536]^T",
    "bias_act none [T,1152]", "bias_act gelu [T,1536]", "add_layernorm [T,384]",
    "attention 12 heads x 32", "embed [T,384]", "mean_pool+normalize [T,384]"};

/* Per encoder layer: qkv, bias, attention, attn-out, bias(+none), LN, ffn1, gelu, ffn2, LN. */
static const int layer_ops[] = {OP_QKV, OP_BIAS_NONE, OP_ATTN, OP_ATTN_OUT, OP_LN,
                                OP_FFN1, OP_GELU, OP_FFN2, OP_LN};

static void bench_shape(eng_backend *be, int nseq, int seq, int reps)
{
    ctx c = {.be = be, .ntok = nseq * seq, .nseq = nseq, .seq = seq, .hid = 384,
             .inter = 1536, .heads = 12, .hd = 32};
    size_t T = (size_t)c.ntok, H = 384, I = 1536;
    c.x = buf(be, T * H);
    c.res = buf(be, T * H);
    c.qkv = buf(be, T * 3 * H);
    c.ctxo = buf(be, T * H);
    c.h1 = buf(be, T * I);
    c.wqkv = buf(be, 3 * H * H);
    c.wo = buf(be, H * H);
    c.w1 = buf(be, I * H);
    c.w2 = buf(be, H * I);
    c.bias = buf(be, I * 3);
    c.gamma = buf(be, H);
    c.beta = buf(be, H);
    c.pool = buf(be, (size_t)nseq * H);
    c.word = buf(be, 30522 * H);
    c.pos = buf(be, 512 * H);
    c.type = buf(be, 2 * H);
    c.ids = malloc(T * sizeof(int32_t));
    c.pos_ids = malloc(T * sizeof(int32_t));
    c.type_ids = malloc(T * sizeof(int32_t));
    c.off = malloc(((size_t)nseq + 1) * sizeof(int32_t));
    for (size_t t = 0; t < T; t++) {
        c.ids[t] = (int32_t)((t * 7919) % 30522);
        c.pos_ids[t] = (int32_t)(t % (size_t)seq);
        c.type_ids[t] = 0;
    }
    for (int s = 0; s <= nseq; s++)
        c.off[s] = s * seq;

    printf("\n== batch %d x seq %d (%zu tokens), %d threads, ISA %s ==\n", nseq, seq, T,
           be->threads, eng_cpu_isa_name(eng_backend_cpu_isa(be)));
    double best[OP_COUNT];
    const char *only = getenv("OPS_ONLY");
    for (int op = 0; op < OP_COUNT; op++) {
        best[op] = 0;
        if (only && !strstr(op_names[op], only))
            continue;
        run_op(&c, op); /* warm-up */
        best[op] = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            run_op(&c, op);
            double dt = now_s() - t0;
            best[op] = dt < best[op] ? dt : best[op];
        }
        int fl;
        double w = op_work(&c, op, &fl);
        printf("  %-36s %9.1f us  %8.1f %s\n", op_names[op], best[op] * 1e6,
               w / best[op] * 1e-9, fl ? "GFLOP/s" : "GB/s");
    }
    double layer = 0, layer_flops = 0;
    for (size_t i = 0; i < sizeof layer_ops / sizeof layer_ops[0]; i++) {
        int fl;
        double w = op_work(&c, layer_ops[i], &fl);
        layer += best[layer_ops[i]];
        layer_flops += fl ? w : 0;
    }
    layer += best[OP_BIAS_NONE] / 3; /* the attention-output bias of 384 columns */
    printf("  one encoder layer (sum of ops)        %9.1f us  %8.1f GFLOP/s; 6 layers + "
           "embed/LN/pool ~ %.2f ms\n",
           layer * 1e6, layer_flops / layer * 1e-9,
           (6 * layer + best[OP_EMBED] + best[OP_LN] + best[OP_POOL]) * 1e3);
    float *bufs[] = {c.x, c.res, c.qkv, c.ctxo, c.h1, c.wqkv, c.wo, c.w1, c.w2, c.bias,
                     c.gamma, c.beta, c.pool, c.word, c.pos, c.type};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        be->ops->free(be, bufs[i]);
    free(c.ids);
    free(c.pos_ids);
    free(c.type_ids);
    free(c.off);
}

/* GEMM y = x W^T for few rows (the same packed kernel as for many: up to 6 rows it
 * reads W in place, then packs one panel at a time), and the same from W pre-packed
 * once (pack_weight / gemm_prepacked: the same bits, no per-call packing):
 * qkv-, ffn2- and Marian-lm-head-shaped, best of reps. */
static void bench_small_m(eng_backend *be, int reps)
{
    static const int ms[] = {1, 4, 16, 32, 64, 128, 256, 512};
    static const int shapes[][2] = {{1152, 384}, {384, 1536}, {54776, 512}};
    float *x = buf(be, 512 * 1536), *w = buf(be, (size_t)54776 * 512), *y = buf(be, 512 * 54776);
    printf("\n== GEMM y[M,N] = x[M,K] W[N,K]^T for small M, %d threads: gemm | prepacked ==\n",
           be->threads);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        void *wp = be->ops->core->pack_weight ? be->ops->core->pack_weight(be, w, N, K, K) : NULL;
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
            int M = ms[i], r_reps = N > 10000 ? reps / 4 + 1 : reps;
            double bt[2] = {1e30, 1e30};
            for (int r = 0; r <= r_reps; r++)
                for (int v = 0; v < (wp ? 2 : 1); v++) { /* interleaved */
                    double t0 = now_s();
                    if (v)
                        be->ops->core->gemm_prepacked(be, M, N, K, 1.0f, x, K, wp, 0.0f, y, N);
                    else
                        be->ops->core->gemm(be, 1, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
                    double dt = now_s() - t0;
                    bt[v] = r > 0 && dt < bt[v] ? dt : bt[v];
                }
            printf("  M %4d N %5d K %4d  %9.1f us %6.1f GFLOP/s | %9.1f us %6.1f GFLOP/s\n", M,
                   N, K, bt[0] * 1e6, 2.0 * M * N * K / bt[0] * 1e-9, bt[1] * 1e6,
                   wp ? 2.0 * M * N * K / bt[1] * 1e-9 : 0.0);
        }
        if (wp)
            be->ops->core->free_packed(be, wp);
    }
    be->ops->free(be, x);
    be->ops->free(be, w);
    be->ops->free(be, y);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    eng_backend *be = eng_backend_cpu_new(threads);
    if (!be) {
        fprintf(stderr, "cannot create the CPU backend\n");
        return 1;
    }
    bench_shape(be, 32, 128, reps);
    bench_shape(be, 1, 16, reps * 20);
    if (!getenv("OPS_ONLY"))
        bench_small_m(be, reps * 20);
    be->ops->destroy(be);
    return 0;
}
