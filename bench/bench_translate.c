/* bench_translate.c - nlpd's side of bench/translate: translate the sentences of
 * a file (one per line) in consecutive batches and report target tokens per
 * second. Tokenisation happens before the clock starts (the peers get token ids
 * too); the clock covers eng_translate_ids for every batch.
 *
 *   bench_translate MODEL_DIR SENTENCES_FILE BATCH BEAMS MAX_NEW_TOKENS THREADS IDS_OUT
 *                   [PRECISION [BACKEND]]
 *   (PRECISION: fp32 by default, bf16 | int8 on the CPU, fp16 | bf16 on CUDA; BACKEND: cpu
 *   by default; cuda, cuda:N for bench/gpu)
 *
 * Prints one JSON line {"sentences", "target_tokens", "seconds", "tokens_per_s",
 * "batch_seconds": [...]} and writes the generated ids, one sentence per line,
 * to IDS_OUT (for the cross-check against transformers). */
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nlpd_engine.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Resident memory (key "VmRSS:" now, "VmHWM:" its peak), MB; -1 when /proc cannot be
 * read. VmHWM, not getrusage's ru_maxrss: that one keeps the high-water mark of the
 * process before exec (the benchmark's Python parent). */
static double proc_status_mb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double mb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key)))
            mb = atof(line + strlen(key)) / 1024.0;
    if (f)
        fclose(f);
    return mb;
}

int main(int argc, char **argv)
{
    if (argc < 8 || argc > 10) {
        fprintf(stderr, "usage: bench_translate MODEL_DIR FILE BATCH BEAMS MAX_NEW THREADS IDS_OUT "
                "[fp32|bf16|int8|fp16 [BACKEND]]\n");
        return 2;
    }
    int batch = atoi(argv[3]), beams = atoi(argv[4]), max_new = atoi(argv[5]);
    int threads = atoi(argv[6]);
    eng_error err = {0};
    eng_model *m = NULL;
    eng_ctx *ctx = NULL;
    const char *backend = argc > 9 ? argv[9] : "cpu";
    eng_model_opts mo = {.precision = argc > 8 ? argv[8] : NULL, .backend = backend};
    if (eng_model_load_opts(argv[1], &mo, &m, &err) ||
        eng_ctx_new(&(eng_ctx_opts){.backend = backend, .threads = threads}, &ctx, &err)) {
        fprintf(stderr, "bench_translate: %s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    int n = 0, cap = 1024;
    eng_encoding *enc = calloc((size_t)cap, sizeof *enc);
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\n");
        if (n == cap)
            enc = realloc(enc, sizeof *enc * (size_t)(cap *= 2));
        eng_encoding_init(&enc[n]);
        if (eng_translate_encode(m, line, len, 0, &enc[n], &err)) {
            fprintf(stderr, "bench_translate: line %d: %s\n", n + 1, err.msg);
            return 1;
        }
        n++;
    }
    fclose(f);
    const eng_encoding **ptr = malloc(sizeof *ptr * (size_t)n);
    eng_translation *tr = calloc((size_t)n, sizeof *tr);
    for (int i = 0; i < n; i++)
        ptr[i] = &enc[i];
    eng_translate_opts o;
    eng_translate_opts_default(&o);
    o.beam_size = beams;
    o.max_new_tokens = max_new;
    /* warmup: one small batch (page faults, pools) */
    if (eng_translate_ids(ctx, m, ptr, n < 2 ? n : 2, &o, tr, &err)) {
        fprintf(stderr, "bench_translate: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < (n < 2 ? n : 2); i++)
        eng_translation_free(&tr[i]);
    long tokens = 0;
    double total = 0;
    printf("{\"batch_seconds\": [");
    for (int b = 0; b < n; b += batch) {
        int k = n - b < batch ? n - b : batch;
        double t0 = now();
        if (eng_translate_ids(ctx, m, ptr + b, k, &o, tr + b, &err)) {
            fprintf(stderr, "bench_translate: %s\n", err.msg);
            return 1;
        }
        double dt = now() - t0;
        total += dt;
        printf("%s%.4f", b ? ", " : "", dt);
        for (int i = b; i < b + k; i++)
            tokens += tr[i].n_ids;
    }
    const eng_model_info *mi = eng_model_get_info(m);
    printf("], \"sentences\": %d, \"target_tokens\": %ld, \"seconds\": %.4f, \"tokens_per_s\": %.2f, "
           "\"precision\": \"%s\", \"kernel\": \"%s\", \"weight_bytes\": %zu, \"peak_rss_mb\": %.1f, \"rss_mb\": %.1f}\n",
           n, tokens, total, tokens / total, mi->precision, mi->kernel, mi->weight_bytes,
           proc_status_mb("VmHWM:"), proc_status_mb("VmRSS:"));
    FILE *out = fopen(argv[7], "w");
    for (int i = 0; out && i < n; i++) {
        for (int j = 0; j < tr[i].n_ids; j++)
            fprintf(out, "%s%d", j ? " " : "", tr[i].ids[j]);
        fputc('\n', out);
    }
    if (out)
        fclose(out);
    for (int i = 0; i < n; i++) {
        eng_translation_free(&tr[i]);
        eng_encoding_free(&enc[i]);
    }
    free(tr);
    free(ptr);
    free(enc);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    return 0;
}
