/* bench_inproc.c - the engine's in-process embedding throughput on real texts,
 * the baseline bench/http compares nlpd's HTTP throughput with.
 *
 * Does per batch what the daemon's batcher does for /v1/embed, minus HTTP and
 * JSON: tokenize B texts ([CLS] text [SEP], truncated to the model's
 * max_seq_len) and run eng_run_embed on them in one call, on one context with
 * --threads threads (the daemon's worker). Texts are taken in file order,
 * cycling. Uses only the public engine header.
 *
 *   bench-inproc --model DIR --texts FILE [--batch B] [--seconds S] [--threads T]
 *                [--warmup-seconds W] [--dump N]
 *
 * Prints one JSON object on stdout: texts/s and batch latency percentiles.
 * --dump N instead prints the embeddings of the first N texts (one JSON array
 * per line) for a correctness cross-check. Exit 0 on success.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nlpd_engine.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static char **read_lines(const char *path, int *n_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    int n = 0, cap = 1024;
    char **v = malloc((size_t)cap * sizeof *v);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (v && (len = getline(&line, &lcap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        if (n == cap) {
            char **nv = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv)
                break;
            v = nv;
        }
        v[n++] = strdup(line);
    }
    free(line);
    fclose(f);
    *n_out = n;
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-inproc --model DIR --texts FILE [--batch B] [--seconds S] "
                    "[--threads T] [--warmup-seconds W] [--dump N]\n");
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *texts_path = NULL, *precision = NULL;
    int batch = 1, threads = 0, dump = 0;
    double seconds = 5.0, warmup = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--texts"))
            texts_path = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--warmup-seconds"))
            warmup = atof(v);
        else if (!strcmp(a, "--dump"))
            dump = atoi(v);
        else if (!strcmp(a, "--precision"))
            precision = v;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!model_dir || !texts_path || batch < 1) {
        usage();
        return 2;
    }
    int n_texts = 0;
    char **texts = read_lines(texts_path, &n_texts);
    if (!texts || n_texts == 0) {
        fprintf(stderr, "bench-inproc: no texts in %s\n", texts_path);
        return 1;
    }
    eng_error err = {0};
    eng_model *m = NULL;
    if (eng_model_load_opts(model_dir, &(eng_model_opts){.precision = precision}, &m, &err)) {
        fprintf(stderr, "bench-inproc: %s\n", err.msg);
        return 1;
    }
    const eng_model_info *info = eng_model_get_info(m);
    if (info->task != ENG_TASK_EMBED) {
        fprintf(stderr, "bench-inproc: %s is not an embedding model\n", model_dir);
        return 1;
    }
    eng_ctx_opts co = {.backend = "cpu", .threads = threads};
    eng_ctx *ctx = NULL;
    if (eng_ctx_new(&co, &ctx, &err)) {
        fprintf(stderr, "bench-inproc: %s\n", err.msg);
        return 1;
    }
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    int dim = info->hidden;
    if (dump > 0) {
        batch = dump;
        if (batch > n_texts)
            batch = n_texts;
    }
    eng_encoding *enc = calloc((size_t)batch, sizeof *enc);
    const eng_encoding **encp = calloc((size_t)batch, sizeof *encp);
    float *out = malloc((size_t)batch * (size_t)dim * sizeof *out);
    int lat_cap = 1 << 16, n_lat = 0;
    double *lat = malloc((size_t)lat_cap * sizeof *lat);
    if (!enc || !encp || !out || !lat) {
        fprintf(stderr, "bench-inproc: out of memory\n");
        return 1;
    }
    for (int i = 0; i < batch; i++) {
        eng_encoding_init(&enc[i]);
        encp[i] = &enc[i];
    }

    long next = 0, done_texts = 0, tokens = 0;
    double t0 = now_s(), t_measure = t0 + warmup, t_end = t_measure + seconds, t_start = 0;
    int measuring = 0;
    for (;;) {
        double tb = now_s();
        if (!measuring && tb >= t_measure) {
            measuring = 1;
            t_start = tb;
            done_texts = tokens = 0;
            n_lat = 0;
        }
        if (measuring && tb >= t_end)
            break;
        for (int i = 0; i < batch; i++) {
            const char *t = texts[next++ % n_texts];
            if (eng_tokenizer_encode(tok, t, strlen(t), NULL, 0, info->max_seq_len, &enc[i],
                                     &err)) {
                fprintf(stderr, "bench-inproc: tokenize: %s\n", err.msg);
                return 1;
            }
            tokens += enc[i].n;
        }
        if (eng_run_embed(ctx, m, encp, batch, out, &err)) {
            fprintf(stderr, "bench-inproc: embed: %s\n", err.msg);
            return 1;
        }
        double te = now_s();
        if (dump > 0) {
            for (int i = 0; i < batch; i++) {
                putchar('[');
                for (int k = 0; k < dim; k++)
                    printf(k ? ",%.9g" : "%.9g", (double)out[(size_t)i * dim + k]);
                puts("]");
            }
            return 0;
        }
        done_texts += batch;
        if (n_lat < lat_cap)
            lat[n_lat++] = (te - tb) * 1e3;
    }
    double el = now_s() - t_start;
    double p50 = pct(lat, n_lat, 50), p99 = pct(lat, n_lat, 99);
    printf("{\"batch\": %d, \"threads\": %d, \"texts\": %ld, \"tokens\": %ld, \"seconds\": %.3f, "
           "\"texts_per_s\": %.2f, \"batch_ms_p50\": %.3f, \"batch_ms_p99\": %.3f}\n",
           batch, threads, done_texts, tokens, el, done_texts / el, p50, p99);

    for (int i = 0; i < batch; i++)
        eng_encoding_free(&enc[i]);
    free(enc);
    free(encp);
    free(out);
    free(lat);
    for (int i = 0; i < n_texts; i++)
        free(texts[i]);
    free(texts);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    return 0;
}
