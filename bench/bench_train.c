/* bench_train.c - time nlpd's fine-tuning step (forward + backward + AdamW) on
 * fixed batches of token ids. Driven by bench/train, which writes the batches,
 * builds this program against build/libnlpd_engine.a and runs PyTorch on the same
 * batches. Uses only the public engine header.
 *
 *   bench-train --model DIR --batches FILE [--threads N] [--steps N] [--warmup N]
 *               [--labels N] [--lr X]
 *
 * batches file (little-endian): "NLPDTRB1", int32 nseq, int32 batch; per sequence
 * int32 len, int32 ids[len] ([CLS] ... [SEP], type ids 0); then int32 labels[nseq].
 * Step i trains on sequences [i*batch, (i+1)*batch) modulo the batches in the file.
 * Protocol (bench/train does the same for PyTorch): `warmup` steps, then `steps`
 * timed steps; reports batch / median step time and the steps' losses as JSON.
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

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int read_i32(FILE *f, int32_t *v)
{
    return fread(v, 4, 1, f) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *batches = NULL;
    int threads = 0, steps = 10, warmup = 2, nlabels = 2;
    double lr = 5e-5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--batches")) batches = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--labels")) nlabels = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lr")) lr = atof(argv[i + 1]);
        else {
            fprintf(stderr, "bench-train: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!model || !batches || steps < 1 || nlabels < 2) {
        fprintf(stderr, "usage: bench-train --model DIR --batches FILE [--threads N] "
                        "[--steps N] [--warmup N] [--labels N] [--lr X]\n");
        return 2;
    }
    FILE *f = fopen(batches, "rb");
    char magic[8];
    int32_t nseq, batch;
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "NLPDTRB1", 8) || read_i32(f, &nseq) ||
        read_i32(f, &batch) || nseq < batch || batch < 1) {
        fprintf(stderr, "bench-train: %s: not a batches file\n", batches);
        return 1;
    }
    eng_encoding *enc = calloc((size_t)nseq, sizeof *enc);
    const eng_encoding **ptr = calloc((size_t)nseq, sizeof *ptr);
    int32_t *labels = calloc((size_t)nseq, sizeof *labels);
    for (int s = 0; s < nseq; s++) {
        int32_t len, id;
        eng_encoding_init(&enc[s]);
        if (read_i32(f, &len) || len < 1) {
            fprintf(stderr, "bench-train: truncated batches file\n");
            return 1;
        }
        for (int t = 0; t < len; t++) {
            if (read_i32(f, &id) || eng_encoding_push(&enc[s], id, 0, 0, 0, 0)) {
                fprintf(stderr, "bench-train: truncated batches file\n");
                return 1;
            }
        }
        ptr[s] = &enc[s];
    }
    if (fread(labels, 4, (size_t)nseq, f) != (size_t)nseq) {
        fprintf(stderr, "bench-train: truncated batches file\n");
        return 1;
    }
    fclose(f);

    const char *names[256];
    char buf[256][16];
    for (int i = 0; i < nlabels && i < 256; i++) {
        snprintf(buf[i], sizeof buf[i], "L%d", i);
        names[i] = buf[i];
    }
    eng_train_opts o;
    eng_train_opts_default(&o);
    o.num_labels = nlabels;
    o.labels = names;
    o.lr = (float)lr;
    o.threads = threads;
    o.total_steps = warmup + steps;
    o.warmup_steps = 1;
    eng_trainer *t;
    eng_error err;
    if (eng_trainer_new(model, &o, &t, &err)) {
        fprintf(stderr, "bench-train: %s\n", err.msg);
        return 1;
    }
    int nb = nseq / batch;
    double *times = calloc((size_t)steps, sizeof *times);
    float *losses = calloc((size_t)(warmup + steps), sizeof *losses);
    for (int i = 0; i < warmup + steps; i++) {
        int b = i % nb;
        double t0 = now_s();
        if (eng_trainer_backward(t, ptr + (size_t)b * batch, batch, labels + (size_t)b * batch,
                                 NULL, 1.0f, &losses[i], &err) ||
            eng_trainer_step(t, NULL, &err)) {
            fprintf(stderr, "bench-train: %s\n", err.msg);
            return 1;
        }
        if (i >= warmup)
            times[i - warmup] = now_s() - t0;
    }
    double total = 0;
    for (int i = 0; i < steps; i++)
        total += times[i];
    qsort(times, (size_t)steps, sizeof *times, cmp_d);
    double med = times[steps / 2];
    printf("{\"engine\": \"nlpd\", \"batch\": %d, \"steps\": %d, \"median_step_s\": %.6f, "
           "\"examples_per_s\": %.3f, \"mean_examples_per_s\": %.3f, \"losses\": [", batch, steps,
           med, batch / med, batch * steps / total);
    for (int i = 0; i < warmup + steps; i++)
        printf("%s%.6f", i ? ", " : "", losses[i]);
    printf("]}\n");
    eng_trainer_free(t);
    for (int s = 0; s < nseq; s++)
        eng_encoding_free(&enc[s]);
    free(enc);
    free(ptr);
    free(labels);
    free(times);
    free(losses);
    return 0;
}
