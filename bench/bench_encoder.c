/* bench_encoder.c - time the nlpd encoder forward (eng_run_hidden) on fixed token ids.
 *
 * Driven by bench/encoder, which writes the ids file, builds this program against
 * build/libnlpd_engine.a and compares its dumped last hidden state with PyTorch.
 * Uses only the public engine header.
 *
 *   bench-encoder --model DIR --ids FILE [--threads N] [--backend NAME]
 *                 [--seconds S] [--repeats R] [--warmup-seconds W] [--dump FILE]
 *
 * ids file (little-endian): "NLPDIDS1", int32 n, int32 len, int32 ids[n * len];
 * every row is one complete sequence ([CLS] ... [SEP], no padding, type ids 0).
 *
 * Protocol (the same as bench/encoder uses for the peers): the first forward is
 * dumped (--dump) and counts as warmup; warmup continues for at least 2 forwards
 * and W seconds; the per-forward time t is the median of the warmup forwards after
 * the first; then R repeats of k = max(1, round(S / (R * t))) forwards each are
 * timed, and the median over repeats of n * k / elapsed is reported.
 * For each repeat it also reports the cores other processes used meanwhile (machine
 * busy time from /proc/stat minus this process's CPU time, over wall time; -1 when
 * /proc/stat cannot be read), so bench/encoder can tell quiet repeats from noisy ones.
 * Prints one JSON object on stdout; diagnostics go to stderr. Exit 0 on success.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "nlpd_engine.h"

#define MAX_REPEATS 100
#define MAX_WARMUP 1000

typedef struct opts {
    const char *model;
    const char *ids;
    const char *backend;
    const char *dump;
    const char *precision;
    int threads;
    double seconds;
    int repeats;
    double warmup_seconds;
} opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Machine-wide busy CPU seconds (all but idle and iowait) and this process's CPU
 * seconds. Returns -1 when /proc/stat cannot be read. */
static int cpu_sample(double *busy, double *own)
{
    unsigned long long v[8] = {0};
    struct rusage ru;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f = fopen("/proc/stat", "r");
    int got;
    if (!f)
        return -1;
    got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got < 5 || hz <= 0 || getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
    *own = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n), n <= MAX_WARMUP; 0 when n <= 0. */
static double median(const double *v, int n)
{
    double tmp[MAX_WARMUP];
    if (n <= 0)
        return 0.0;
    if (n > MAX_WARMUP)
        n = MAX_WARMUP;
    memcpy(tmp, v, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return (n % 2) ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-encoder --model DIR --ids FILE [--threads N] [--backend NAME]\n"
               "                     [--seconds S] [--repeats R] [--warmup-seconds W] [--dump FILE]\n"
               "                     [--precision fp32|bf16|int8|fp16]\n");
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->seconds = 3.0;
    o->repeats = 5;
    o->warmup_seconds = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench-encoder: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--ids"))
            o->ids = v;
        else if (!strcmp(a, "--backend"))
            o->backend = v;
        else if (!strcmp(a, "--dump"))
            o->dump = v;
        else if (!strcmp(a, "--precision"))
            o->precision = v;
        else if (!strcmp(a, "--threads"))
            o->threads = atoi(v);
        else if (!strcmp(a, "--seconds"))
            o->seconds = atof(v);
        else if (!strcmp(a, "--repeats"))
            o->repeats = atoi(v);
        else if (!strcmp(a, "--warmup-seconds"))
            o->warmup_seconds = atof(v);
        else {
            fprintf(stderr, "bench-encoder: unknown option %s\n", a);
            return -1;
        }
    }
    if (!o->model || !o->ids) {
        fprintf(stderr, "bench-encoder: --model and --ids are required\n");
        return -1;
    }
    if (o->repeats < 1 || o->repeats > MAX_REPEATS || !(o->seconds > 0.0) ||
        o->warmup_seconds < 0.0) {
        fprintf(stderr, "bench-encoder: need 1 <= repeats <= %d, seconds > 0, warmup >= 0\n",
                MAX_REPEATS);
        return -1;
    }
    return 0;
}

/* Reads the ids file; *ids is malloc'd n * len int32. */
static int read_ids(const char *path, int32_t **ids, int *n, int *len)
{
    FILE *f = fopen(path, "rb");
    char magic[8];
    int32_t hdr[2];
    if (!f) {
        fprintf(stderr, "bench-encoder: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "NLPDIDS1", 8) ||
        fread(hdr, sizeof hdr[0], 2, f) != 2 || hdr[0] <= 0 || hdr[1] <= 0 ||
        (int64_t)hdr[0] * hdr[1] > (1 << 26)) {
        fprintf(stderr, "bench-encoder: %s: not an ids file (bad header)\n", path);
        fclose(f);
        return -1;
    }
    size_t count = (size_t)hdr[0] * (size_t)hdr[1];
    int32_t *buf = malloc(count * sizeof *buf);
    if (!buf || fread(buf, sizeof *buf, count, f) != count) {
        fprintf(stderr, "bench-encoder: %s: truncated\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *ids = buf;
    *n = hdr[0];
    *len = hdr[1];
    return 0;
}

static void print_error(const char *what, int rc, const eng_error *err)
{
    fprintf(stderr, "bench-encoder: %s failed: %s (%d)%s%s\n", what, eng_strerror(rc), rc,
            err->msg[0] ? ": " : "", err->msg);
}

/* Fills enc[0..n) (already initialised) from the id rows: position 0 and len-1
 * are the special tokens ([CLS], [SEP]), type ids 0, no offsets. */
static int build_encodings(const eng_model *model, const int32_t *ids, int n, int len,
                           eng_encoding *enc, const eng_encoding **encp)
{
    const eng_model_info *info = eng_model_get_info(model);
    const eng_tokenizer *tok = eng_model_tokenizer(model);
    int32_t cls = tok ? eng_tokenizer_cls_id(tok) : -1;
    int32_t sep = tok ? eng_tokenizer_sep_id(tok) : -1;

    if (len > info->max_positions) {
        fprintf(stderr, "bench-encoder: sequence length %d > model maximum %d\n", len,
                info->max_positions);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const int32_t *row = ids + (size_t)i * len;
        if (eng_encoding_reserve(&enc[i], len) != 0) {
            fprintf(stderr, "bench-encoder: out of memory\n");
            return -1;
        }
        if (tok && (row[0] != cls || row[len - 1] != sep))
            fprintf(stderr, "bench-encoder: warning: row %d is not [CLS] ... [SEP] (%d..%d)\n",
                    i, row[0], row[len - 1]);
        for (int j = 0; j < len; j++) {
            int special = (j == 0 || j == len - 1);
            if (row[j] < 0 || (info->vocab > 0 && row[j] >= info->vocab)) {
                fprintf(stderr, "bench-encoder: row %d token %d: id %d out of vocabulary\n", i,
                        j, row[j]);
                return -1;
            }
            if (eng_encoding_push(&enc[i], row[j], 0, special ? -1 : 0, 0, 0) != 0) {
                fprintf(stderr, "bench-encoder: out of memory\n");
                return -1;
            }
        }
        encp[i] = &enc[i];
    }
    return 0;
}

/* Warmup (dumping the first output), calibration and timed repeats; prints the
 * JSON result line. out holds n * len * hidden floats. */
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

static int run_bench(const opts *o, eng_ctx *ctx, eng_model *model,
                     const eng_encoding *const *encp, int n, int len, float *out,
                     double load_s)
{
    const int hidden = eng_model_get_info(model)->hidden;
    const size_t cnt = (size_t)n * (size_t)len * (size_t)hidden;
    double warm[MAX_WARMUP], rates[MAX_REPEATS], other[MAX_REPEATS];
    double wstart, t_est, timed_s = 0.0, med;
    int nwarm = 0, rc;
    long k, nonfinite = 0;
    eng_error err;

    memset(&err, 0, sizeof err);
    wstart = now_s();
    for (;;) {
        double s = now_s();
        rc = eng_run_hidden(ctx, model, encp, n, out, &err);
        double e = now_s();
        if (rc != 0) {
            print_error("eng_run_hidden", rc, &err);
            return -1;
        }
        if (nwarm == 0) {
            for (size_t i = 0; i < cnt; i++)
                nonfinite += !isfinite(out[i]);
            if (o->dump) {
                FILE *f = fopen(o->dump, "wb");
                int bad = !f || fwrite(out, sizeof *out, cnt, f) != cnt;
                if ((f && fclose(f) != 0) || bad) {
                    fprintf(stderr, "bench-encoder: cannot write %s\n", o->dump);
                    return -1;
                }
            }
        }
        warm[nwarm++] = e - s;
        if (nwarm >= MAX_WARMUP || (nwarm >= 2 && e - wstart >= o->warmup_seconds))
            break;
    }

    t_est = median(warm + 1, nwarm - 1);
    if (t_est <= 0.0)
        t_est = 1e-6;
    k = lround(o->seconds / (o->repeats * t_est));
    if (k < 1)
        k = 1;

    for (int r = 0; r < o->repeats; r++) {
        double b0 = 0, u0 = 0, b1 = 0, u1 = 0;
        int have = cpu_sample(&b0, &u0) == 0;
        double s = now_s(), el;
        for (long it = 0; it < k; it++) {
            rc = eng_run_hidden(ctx, model, encp, n, out, &err);
            if (rc != 0) {
                print_error("eng_run_hidden", rc, &err);
                return -1;
            }
        }
        el = now_s() - s;
        have = have && cpu_sample(&b1, &u1) == 0;
        timed_s += el;
        rates[r] = (double)n * (double)k / el;
        other[r] = have ? ((b1 - b0) - (u1 - u0)) / el : -1.0;
        if (have && other[r] < 0.0)
            other[r] = 0.0;
    }
    med = median(rates, o->repeats);

    printf("{\"engine\": \"nlpd\", \"version\": \"%s\", \"backend\": \"%s\", "
           "\"threads\": %d, \"batch\": %d, \"seq_len\": %d, \"hidden\": %d, "
           "\"load_s\": %.4f, \"warmup_iters\": %d, \"iter_s_est\": %.6f, "
           "\"iters_per_repeat\": %ld, \"timed_s\": %.4f, \"nonfinite\": %ld, "
           "\"repeat_seq_per_s\": [",
           ENG_VERSION, eng_ctx_backend_name(ctx), o->threads, n, len, hidden, load_s, nwarm,
           t_est, k, timed_s, nonfinite);
    for (int r = 0; r < o->repeats; r++)
        printf("%s%.4f", r ? ", " : "", rates[r]);
    printf("], \"repeat_other_load_cores\": [");
    for (int r = 0; r < o->repeats; r++)
        printf("%s%.3f", r ? ", " : "", other[r]);
    const eng_model_info *mi = eng_model_get_info(model);
    printf("], \"median_seq_per_s\": %.4f, \"precision\": \"%s\", \"kernel\": \"%s\", "
           "\"weight_bytes\": %zu, \"peak_rss_mb\": %.1f, \"rss_mb\": %.1f}\n", med, mi->precision, mi->kernel,
           mi->weight_bytes, proc_status_mb("VmHWM:"), proc_status_mb("VmRSS:"));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    int32_t *ids = NULL;
    int n = 0, len = 0, rc, status = 1;
    eng_model *model = NULL;
    eng_ctx *ctx = NULL;
    eng_encoding *enc = NULL;
    const eng_encoding **encp = NULL;
    float *out = NULL;
    eng_ctx_opts copts;
    eng_error err;
    double t0, load_s;

    memset(&err, 0, sizeof err);
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (read_ids(o.ids, &ids, &n, &len) != 0)
        return 1;

    t0 = now_s();
    rc = eng_model_load_opts(o.model, &(eng_model_opts){.precision = o.precision,
                                                        .backend = o.backend},
                             &model, &err);
    load_s = now_s() - t0;
    if (rc != 0) {
        print_error("eng_model_load", rc, &err);
        goto done;
    }
    copts.backend = o.backend;
    copts.threads = o.threads;
    rc = eng_ctx_new(&copts, &ctx, &err);
    if (rc != 0) {
        print_error("eng_ctx_new", rc, &err);
        goto done;
    }

    enc = calloc((size_t)n, sizeof *enc);
    encp = calloc((size_t)n, sizeof *encp);
    out = malloc((size_t)n * (size_t)len * (size_t)eng_model_get_info(model)->hidden *
                 sizeof *out);
    if (!enc || !encp || !out) {
        fprintf(stderr, "bench-encoder: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n; i++)
        eng_encoding_init(&enc[i]);
    if (build_encodings(model, ids, n, len, enc, encp) != 0)
        goto done;
    if (run_bench(&o, ctx, model, encp, n, len, out, load_s) != 0)
        goto done;
    status = 0;

done:
    if (enc)
        for (int i = 0; i < n; i++)
            eng_encoding_free(&enc[i]);
    free(enc);
    free(encp);
    free(out);
    if (ctx)
        eng_ctx_free(ctx);
    if (model)
        eng_model_unref(model);
    free(ids);
    return status;
}
