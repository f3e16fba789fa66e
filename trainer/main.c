/* nlpd-train - fine-tune a BERT-family encoder into a sequence classifier and
 * publish it as a Hugging Face model folder or a repository version (DESIGN §5);
 * `nlpd-train watch` is the sidecar (watch.c). Usage: usage() below. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "finetune.h"
#include "nlpd_engine.h"
#include "repo_cmd.h"
#include "watch.h"

static void usage(FILE *f)
{
    fputs(
        "usage: nlpd-train --base MODEL_DIR --train FILE [--dev FILE] --out DIR [options]\n"
        "       nlpd-train --from-repository DIR [--train FILE] [--dev FILE] [--feedback PATH...]\n"
        "                  --repository DIR [--key PRIVATE.pem] [--public-key PUBLIC.pem] [options]\n"
        "       nlpd-train watch --repository DIR --feedback DIR [--min-new N] [--interval S]\n"
        "                  [training options]   (the sidecar; see nlpd-train watch --help)\n"
        "       nlpd-train publish SRC_DIR --repository DIR [--key PRIVATE.pem] [--metadata FILE]\n"
        "       nlpd-train verify VERSION_DIR [--public-key KEY.pub]\n"
        "       nlpd-train pin --repository DIR [VERSION | --unpin]\n"
        "       nlpd-train prune --repository DIR --keep N [--public-key KEY.pub]\n"
        "\n"
        "Fine-tunes a BERT-family encoder (a Hugging Face BERT/DistilBERT folder, or a\n"
        "sentence-transformers folder such as all-MiniLM-L6-v2) with a classification head\n"
        "on labelled texts, evaluates it on a dev set and writes a complete\n"
        "BertForSequenceClassification folder (config.json with id2label/label2id,\n"
        "model.safetensors, tokenizer files, eval_results.json, nlpd_train.json) to DIR.\n"
        "DIR appears complete or not at all (temporary folder, fsync, rename).\n"
        "\n"
        "data:\n"
        "  --train FILE            training data: .jsonl ({\"text\": ..., \"label\": ...} per line),\n"
        "                          .csv (RFC 4180) or .tsv, with a header naming the columns\n"
        "  --dev FILE              dev data (same formats); without it a seeded, label-\n"
        "                          stratified --dev-split of the training file is held out\n"
        "  --dev-split F           fraction held out when there is no --dev (default 0.1)\n"
        "  --format F              jsonl|csv|tsv (default: from the file extension)\n"
        "  --text-column NAME      default: text, sentence, sentence1, utterance, query, content\n"
        "  --pair-column NAME      optional second segment (default: sentence2 with sentence1)\n"
        "  --label-column NAME     default: label, labels, category, intent, class, target\n"
        "  --labels LIST           label names in id order: a,b,c or @FILE (JSON list or one\n"
        "                          per line); rows with other labels are bad rows.\n"
        "                          Default: every label of the training file, sorted\n"
        "  --label-map MAP         rename labels as read: from=to,... (e.g. pos=positive,\n"
        "                          neg=negative or 0=negative,1=positive)\n"
        "  --multi-label           several labels per text (JSON list, or a|b in CSV/TSV):\n"
        "                          sigmoid outputs, binary cross-entropy\n"
        "  --on-bad-row fail|skip  a bad row (missing field, empty text, unknown label,\n"
        "                          malformed line, invalid UTF-8) stops the run (fail, the\n"
        "                          default) or is left out (skip); both report FILE:LINE\n"
        "\n"
        "feedback (the daemon's POST /v1/feedback logs):\n"
        "  --feedback PATH...      feedback logs (.jsonl) or folders of them (repeatable); torn\n"
        "                          or unparsable lines are skipped and counted; for a text given\n"
        "                          several times the newest label wins; unknown labels are\n"
        "                          skipped and counted; base training rows with the same text\n"
        "                          are replaced by the feedback's label\n"
        "  --feedback-holdout F    seeded fraction of the feedback held aside for the gate\n"
        "                          (default 0.2; at least 1 item once there are 2)\n"
        "  --base-ratio R          each epoch sees every feedback item plus R times as many\n"
        "                          base training items, sampled afresh per epoch (default 1;\n"
        "                          -1: all base items)\n"
        "\n"
        "repository (versioned, signed model folders; see the README):\n"
        "  --from-repository DIR   start from the version DIR serves (its labels, in order)\n"
        "  --public-key FILE       verify versions with this ECDSA P-256 public key (PEM)\n"
        "  --repository DIR        publish into DIR as a new signed version, if the gate passes:\n"
        "                          not worse on dev than the served version by more than\n"
        "                          --max-dev-drop points and strictly better on the held-aside\n"
        "                          feedback (without feedback: strictly better on dev)\n"
        "  --key FILE              sign with this ECDSA P-256 private key (PEM; default: a\n"
        "                          digest-only bundle)\n"
        "  --max-dev-drop P        accuracy points the dev score may fall (default 0.5)\n"
        "  --keep N                after publishing, prune DIR to N valid versions (never the\n"
        "                          pinned or served one; see nlpd-train prune --help).\n"
        "                          Default 0: keep every version (watch: 5)\n"
        "\n"
        "training:\n"
        "  --epochs N              passes over the training data (default 3)\n"
        "  --lr X                  peak learning rate (default 5e-5)\n"
        "  --batch-size N          examples per micro-batch (default 32)\n"
        "  --grad-accum N          micro-batches per optimizer step (default 1)\n"
        "  --max-length N          tokens per input, [CLS]/[SEP] included (default 128)\n"
        "  --seed N                head initialisation, shuffling, dropout, dev split (default 42)\n"
        "  --warmup-ratio F        linear warmup over this fraction of the steps (default 0.1)\n"
        "  --warmup-steps N        ... or over N steps\n"
        "  --schedule S            linear|cosine|constant decay after warmup (default linear)\n"
        "  --weight-decay X        AdamW weight decay, not on biases/LayerNorm (default 0.01)\n"
        "  --max-grad-norm X       clip the global gradient norm (default 1.0; 0 = off)\n"
        "  --dropout X             every dropout rate (default: the base config's)\n"
        "  --max-steps N           stop after N optimizer steps\n"
        "  --threads N             CPU threads (default: all cores)\n"
        "  --eval-batch-size N     examples per evaluation batch (default 64)\n"
        "  --no-eval-each-epoch    evaluate the dev set only at the end\n"
        "  --head-only             train only the classification head (BERT pooler +\n"
        "                          classifier; DistilBERT pre_classifier + classifier) on a\n"
        "                          frozen encoder: the inputs are encoded once, then the epochs\n"
        "                          run over the cached [CLS] vectors (seconds, not minutes)\n"
        "\n"
        "output:\n"
        "  --out DIR               the model folder to write (with --repository: also kept\n"
        "                          when the gate refuses)\n"
        "  --force                 replace DIR if it exists (atomically)\n"
        "  --progress MODE         auto|bar|lines|none: a progress bar on a terminal, plain\n"
        "                          log lines otherwise (default auto)\n"
        "  -h, --help              this text\n"
        "  --version               print the version\n"
        "\n"
        "The last line on stdout is a JSON object: {\"result\": \"saved\"|\"published\"|\"refused\"|\n"
        "\"failed\", ...} with the scores, the version and the gate's reason.\n"
        "Exit status: 0 saved/published, 1 the run failed or was interrupted (nothing\n"
        "published), 2 bad usage, 3 trained but refused by the gate (the served version stays).\n",
        f);
}

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int num(const char *s, const char *name, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "nlpd-train: %s must be a number in [%g, %g], got '%s'\n", name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum {
    O_BASE = 256, O_TRAIN, O_DEV, O_OUT, O_EPOCHS, O_LR, O_BATCH, O_ACCUM, O_MAXLEN, O_SEED,
    O_WARMUP_RATIO, O_WARMUP_STEPS, O_SCHEDULE, O_WD, O_CLIP, O_DROPOUT, O_MAX_STEPS,
    O_THREADS, O_EVAL_BATCH, O_NO_EVAL_EPOCH, O_DEV_SPLIT, O_FORMAT, O_TEXT_COL, O_PAIR_COL,
    O_LABEL_COL, O_LABELS, O_LABEL_MAP, O_MULTI, O_BAD, O_FORCE, O_PROGRESS, O_VERSION,
    O_HEAD_ONLY, O_FEEDBACK, O_FB_HOLDOUT, O_BASE_RATIO, O_FROM_REPO, O_PUBKEY, O_REPO, O_KEY,
    O_MAX_DEV_DROP, O_MIN_NEW, O_INTERVAL, O_VERBOSE, O_KEEP,
};

static const struct option long_opts[] = {
    {"base", required_argument, 0, O_BASE},
    {"train", required_argument, 0, O_TRAIN},
    {"dev", required_argument, 0, O_DEV},
    {"out", required_argument, 0, O_OUT},
    {"epochs", required_argument, 0, O_EPOCHS},
    {"lr", required_argument, 0, O_LR},
    {"batch-size", required_argument, 0, O_BATCH},
    {"grad-accum", required_argument, 0, O_ACCUM},
    {"max-length", required_argument, 0, O_MAXLEN},
    {"seed", required_argument, 0, O_SEED},
    {"warmup-ratio", required_argument, 0, O_WARMUP_RATIO},
    {"warmup-steps", required_argument, 0, O_WARMUP_STEPS},
    {"schedule", required_argument, 0, O_SCHEDULE},
    {"weight-decay", required_argument, 0, O_WD},
    {"max-grad-norm", required_argument, 0, O_CLIP},
    {"dropout", required_argument, 0, O_DROPOUT},
    {"max-steps", required_argument, 0, O_MAX_STEPS},
    {"threads", required_argument, 0, O_THREADS},
    {"eval-batch-size", required_argument, 0, O_EVAL_BATCH},
    {"no-eval-each-epoch", no_argument, 0, O_NO_EVAL_EPOCH},
    {"dev-split", required_argument, 0, O_DEV_SPLIT},
    {"format", required_argument, 0, O_FORMAT},
    {"text-column", required_argument, 0, O_TEXT_COL},
    {"pair-column", required_argument, 0, O_PAIR_COL},
    {"label-column", required_argument, 0, O_LABEL_COL},
    {"labels", required_argument, 0, O_LABELS},
    {"label-map", required_argument, 0, O_LABEL_MAP},
    {"multi-label", no_argument, 0, O_MULTI},
    {"on-bad-row", required_argument, 0, O_BAD},
    {"force", no_argument, 0, O_FORCE},
    {"progress", required_argument, 0, O_PROGRESS},
    {"head-only", no_argument, 0, O_HEAD_ONLY},
    {"feedback", required_argument, 0, O_FEEDBACK},
    {"feedback-holdout", required_argument, 0, O_FB_HOLDOUT},
    {"base-ratio", required_argument, 0, O_BASE_RATIO},
    {"from-repository", required_argument, 0, O_FROM_REPO},
    {"public-key", required_argument, 0, O_PUBKEY},
    {"repository", required_argument, 0, O_REPO},
    {"key", required_argument, 0, O_KEY},
    {"max-dev-drop", required_argument, 0, O_MAX_DEV_DROP},
    {"min-new", required_argument, 0, O_MIN_NEW},
    {"interval", required_argument, 0, O_INTERVAL},
    {"verbose", no_argument, 0, O_VERBOSE},
    {"keep", required_argument, 0, O_KEEP},
    {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, O_VERSION},
    {0, 0, 0, 0},
};

/* The command line as one string, for the run record. */
static char *join_args(int argc, char **argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *s = malloc(len);
    if (!s)
        return NULL;
    s[0] = 0;
    for (int i = 0; i < argc; i++) {
        strcat(s, argv[i]);
        if (i + 1 < argc)
            strcat(s, " ");
    }
    return s;
}

/* Parses the options into o (and w for watch; NULL otherwise). Feedback paths go to
 * fb[*nfb] (room for argc). 0 ok, 1 done (--help, --version), -1 bad usage. */
static int parse_args(int argc, char **argv, trn_opts *o, trn_watch_opts *w, const char **fb,
                      int *nfb, int *lr_set, int *epochs_set)
{
    double v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (c) {
        case O_BASE: o->base = optarg; break;
        case O_TRAIN: o->train = optarg; break;
        case O_DEV: o->dev = optarg; break;
        case O_OUT: o->out = optarg; break;
        case O_EPOCHS:
            *epochs_set = 1;
            if (num(optarg, "--epochs", 1, 1000, &v)) return -1;
            o->epochs = (int)v;
            break;
        case O_LR:
            *lr_set = 1;
            if (num(optarg, "--lr", 1e-9, 1, &v)) return -1;
            o->lr = (float)v;
            break;
        case O_BATCH:
            if (num(optarg, "--batch-size", 1, 4096, &v)) return -1;
            o->batch_size = (int)v;
            break;
        case O_ACCUM:
            if (num(optarg, "--grad-accum", 1, 1024, &v)) return -1;
            o->accum = (int)v;
            break;
        case O_MAXLEN:
            if (num(optarg, "--max-length", 3, 8192, &v)) return -1;
            o->max_length = (int)v;
            break;
        case O_SEED:
            if (num(optarg, "--seed", 0, 9007199254740991.0, &v)) return -1;
            o->seed = (uint64_t)v;
            break;
        case O_WARMUP_RATIO:
            if (num(optarg, "--warmup-ratio", 0, 1, &v)) return -1;
            o->warmup_ratio = (float)v;
            break;
        case O_WARMUP_STEPS:
            if (num(optarg, "--warmup-steps", 0, 1e9, &v)) return -1;
            o->warmup_steps = (long)v;
            break;
        case O_SCHEDULE:
            if (strcmp(optarg, "linear") == 0) o->schedule = ENG_LR_LINEAR;
            else if (strcmp(optarg, "cosine") == 0) o->schedule = ENG_LR_COSINE;
            else if (strcmp(optarg, "constant") == 0) o->schedule = ENG_LR_CONSTANT;
            else {
                fprintf(stderr, "nlpd-train: --schedule is linear, cosine or constant\n");
                return -1;
            }
            break;
        case O_WD:
            if (num(optarg, "--weight-decay", 0, 10, &v)) return -1;
            o->weight_decay = (float)v;
            break;
        case O_CLIP:
            if (num(optarg, "--max-grad-norm", 0, 1e9, &v)) return -1;
            o->max_grad_norm = (float)v;
            break;
        case O_DROPOUT:
            if (num(optarg, "--dropout", 0, 0.95, &v)) return -1;
            o->dropout = (float)v;
            break;
        case O_MAX_STEPS:
            if (num(optarg, "--max-steps", 1, 1e12, &v)) return -1;
            o->max_steps = (long)v;
            break;
        case O_THREADS:
            if (num(optarg, "--threads", 0, 1024, &v)) return -1;
            o->threads = (int)v;
            break;
        case O_EVAL_BATCH:
            if (num(optarg, "--eval-batch-size", 1, 4096, &v)) return -1;
            o->eval_batch = (int)v;
            break;
        case O_NO_EVAL_EPOCH: o->eval_each_epoch = 0; break;
        case O_DEV_SPLIT:
            if (num(optarg, "--dev-split", 0.0001, 0.9, &v)) return -1;
            o->dev_split = v;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "jsonl") == 0) o->data.format = TRN_FMT_JSONL;
            else if (strcmp(optarg, "csv") == 0) o->data.format = TRN_FMT_CSV;
            else if (strcmp(optarg, "tsv") == 0) o->data.format = TRN_FMT_TSV;
            else {
                fprintf(stderr, "nlpd-train: --format is jsonl, csv or tsv\n");
                return -1;
            }
            break;
        case O_TEXT_COL: o->data.text_col = optarg; break;
        case O_PAIR_COL: o->data.pair_col = optarg; break;
        case O_LABEL_COL: o->data.label_col = optarg; break;
        case O_LABELS: o->labels = optarg; break;
        case O_LABEL_MAP: o->data.label_map = optarg; break;
        case O_MULTI: o->data.multi_label = 1; break;
        case O_BAD:
            if (strcmp(optarg, "fail") == 0) o->data.bad_rows = TRN_BAD_FAIL;
            else if (strcmp(optarg, "skip") == 0) o->data.bad_rows = TRN_BAD_SKIP;
            else {
                fprintf(stderr, "nlpd-train: --on-bad-row is fail or skip\n");
                return -1;
            }
            break;
        case O_FORCE: o->force = 1; break;
        case O_PROGRESS:
            if (strcmp(optarg, "auto") == 0) o->progress = TRN_PROGRESS_AUTO;
            else if (strcmp(optarg, "bar") == 0) o->progress = TRN_PROGRESS_BAR;
            else if (strcmp(optarg, "lines") == 0) o->progress = TRN_PROGRESS_LINES;
            else if (strcmp(optarg, "none") == 0) o->progress = TRN_PROGRESS_NONE;
            else {
                fprintf(stderr, "nlpd-train: --progress is auto, bar, lines or none\n");
                return -1;
            }
            break;
        case O_HEAD_ONLY: o->head_only = 1; break;
        case O_FEEDBACK:
            if (!(fb[(*nfb)++] = optarg)) return -1;
            break;
        case O_FB_HOLDOUT:
            if (num(optarg, "--feedback-holdout", 0, 0.9, &v)) return -1;
            o->feedback_holdout = v;
            break;
        case O_BASE_RATIO:
            if (num(optarg, "--base-ratio", -1, 1e6, &v)) return -1;
            o->base_ratio = v;
            break;
        case O_FROM_REPO: o->from_repository = optarg; break;
        case O_PUBKEY: o->public_key = optarg; break;
        case O_REPO: o->repository = optarg; break;
        case O_KEY: o->key = optarg; break;
        case O_MAX_DEV_DROP:
            if (num(optarg, "--max-dev-drop", 0, 100, &v)) return -1;
            o->max_dev_drop = v;
            break;
        case O_KEEP:
            if (num(optarg, "--keep", 0, 1000000, &v) || v != (int)v) return -1;
            o->keep = (int)v;
            break;
        case O_MIN_NEW:
            if (!w) {
                fprintf(stderr, "nlpd-train: --min-new belongs to nlpd-train watch\n");
                return -1;
            }
            if (num(optarg, "--min-new", 1, 1e9, &v)) return -1;
            w->min_new = (int)v;
            break;
        case O_INTERVAL:
            if (!w) {
                fprintf(stderr, "nlpd-train: --interval belongs to nlpd-train watch\n");
                return -1;
            }
            if (num(optarg, "--interval", 0.05, 86400, &v)) return -1;
            w->interval = v;
            break;
        case O_VERBOSE:
            if (!w) {
                fprintf(stderr, "nlpd-train: --verbose belongs to nlpd-train watch\n");
                return -1;
            }
            w->verbose = 1;
            break;
        case 'h': usage(stdout); return 1;
        case O_VERSION: printf("nlpd-train %s\n", ENG_VERSION); return 1;
        default:
            fprintf(stderr, "nlpd-train: see --help\n");
            return -1;
        }
    }
    /* --feedback PATH...: the paths after the first (getopt moves them to the end). */
    for (; optind < argc; optind++) {
        if (!*nfb) {
            fprintf(stderr, "nlpd-train: unexpected argument '%s' (see --help)\n", argv[optind]);
            return -1;
        }
        fb[(*nfb)++] = argv[optind];
    }
    o->feedback = fb;
    o->n_feedback = *nfb;
    /* Head-only trains a small head on fixed vectors: more epochs, a larger step. */
    if (o->head_only && !*lr_set)
        o->lr = 2e-3f;
    if (o->head_only && !*epochs_set)
        o->epochs = 20;
    return 0;
}

/* A JSON string literal for s (escaped), printed to f. */
static void put_str(FILE *f, const char *key, const char *s)
{
    cJSON *j = cJSON_CreateString(s);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    fprintf(f, ", \"%s\": %s", key, t ? t : "null");
    free(t);
    cJSON_Delete(j);
}

/* The last line on stdout: the outcome as one JSON object. */
static void print_result(const char *result, const trn_opts *o, const trn_result *r,
                         const char *error)
{
    printf("{\"result\": \"%s\"", result);
    if (o->out)
        put_str(stdout, "out", o->out);
    if (o->repository)
        put_str(stdout, "repository", o->repository);
    if (r->version[0])
        put_str(stdout, "version", r->version);
    if (r->base_version[0])
        put_str(stdout, "base_version", r->base_version);
    if (error)
        put_str(stdout, "error", error);
    else
        printf(", \"dev_accuracy\": %.4f, \"dev_macro_f1\": %.4f, \"train_seconds\": %.1f, "
               "\"train_examples_per_second\": %.2f", r->accuracy, r->macro_f1, r->train_seconds,
               r->examples_per_second);
    if (r->pruned[0]) {
        /* "v1,v2" -> ["v1", "v2"] (names are [A-Za-z0-9._-]; a cut list ends in "...") */
        printf(", \"pruned\": [\"");
        for (const char *p = r->pruned; *p; p++)
            if (*p == ',')
                printf("\", \"");
            else
                putchar(*p);
        printf("\"]");
    }
    if (r->prune_error[0])
        put_str(stdout, "prune_error", r->prune_error);
    if (r->gated) {
        char old[32];
        snprintf(old, sizeof old, r->has_old ? "%.4f" : "null", r->dev_old);
        printf(", \"gate\": {\"dev\": {\"old\": %s, \"new\": %.4f}", old, r->dev_new);
        if (o->n_feedback) {
            snprintf(old, sizeof old, r->has_old ? "%.4f" : "null", r->fb_old);
            printf(", \"feedback\": {\"old\": %s, \"new\": %.4f, \"n\": %d}", old, r->fb_new,
                   r->feedback_holdout);
        }
        put_str(stdout, "reason", r->reason);
        printf("}");
    }
    printf("}\n");
    fflush(stdout);
}

static void usage_watch(FILE *f)
{
    fputs(
        "usage: nlpd-train watch --repository DIR --feedback PATH... [--min-new N]\n"
        "                        [--interval S] [--head-only] [--threads N] [--train FILE]\n"
        "                        [--dev FILE] [--key PRIVATE.pem] [--public-key PUBLIC.pem]\n"
        "                        [--keep N] [training options]\n"
        "\n"
        "The sidecar: every --interval seconds (default 60) it counts the feedback items\n"
        "newer than the served version's feedback_until (its nlpd-version.json); when there\n"
        "are at least --min-new (default 10), it fine-tunes from the served version on the\n"
        "feedback (and --train, mixed by --base-ratio), evaluates old and new on --dev and\n"
        "the held-aside feedback, and publishes a signed new version only when the gate\n"
        "passes (see nlpd-train --help). A refused run is not retried until --min-new newer\n"
        "items arrive. It runs at low priority (SCHED_BATCH, nice 10) with --threads CPU\n"
        "threads (default 1 here). SIGTERM/SIGINT stop it; a training run in progress is abandoned and\n"
        "nothing is published. One plain line per event goes to stderr (--verbose: also\n"
        "each training run's own lines).\n"
        "After each publish it prunes the repository to --keep N valid versions (default 5;\n"
        "0 keeps every version; the pinned and the served version are never removed; see\n"
        "nlpd-train prune --help).\n"
        "Exit status: 0 stopped cleanly, 1 could not start, 2 bad usage.\n",
        f);
}

int trn_watch_main(int argc, char **argv)
{
    trn_watch_opts w;
    trn_watch_opts_default(&w);
    const char **fb = calloc((size_t)argc + 1, sizeof *fb);
    int nfb = 0, lr_set = 0, epochs_set = 0;
    if (!fb)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage_watch(stdout);
            free(fb);
            return 0;
        }
    int pr = parse_args(argc, argv, &w.train, &w, fb, &nfb, &lr_set, &epochs_set);
    if (pr) {
        free(fb);
        if (pr < 0)
            fprintf(stderr, "nlpd-train watch: see --help\n");
        return pr < 0 ? 2 : 0;
    }
    if (!w.train.repository || !w.train.n_feedback || w.train.out || w.train.base ||
        w.train.from_repository) {
        fprintf(stderr, "nlpd-train watch: --repository and --feedback are required; --out, "
                "--base and --from-repository are not used (see --help)\n");
        free(fb);
        return 2;
    }
    if (w.train.progress == TRN_PROGRESS_AUTO)
        w.train.progress = TRN_PROGRESS_NONE; /* one line per event */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a sleep ends at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    w.train.stop = &stop_flag;
    char *cmd = join_args(argc, argv);
    w.train.command = cmd;
    eng_error err = {0};
    int rc = trn_watch(&w, stderr, &err);
    free(cmd);
    free(fb);
    if (rc) {
        fprintf(stderr, "nlpd-train watch: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    trn_cmd_fn sub = trn_repo_cmd(argc, argv); /* model repository subcommands */
    if (sub)
        return sub(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "watch") == 0)
        return trn_watch_main(argc - 1, argv + 1);
    trn_opts o;
    trn_opts_default(&o);
    const char **fb = calloc((size_t)argc + 1, sizeof *fb);
    int nfb = 0, lr_set = 0, epochs_set = 0;
    if (!fb)
        return 1;
    int pr = parse_args(argc, argv, &o, NULL, fb, &nfb, &lr_set, &epochs_set);
    if (pr) {
        free(fb);
        if (pr < 0)
            fprintf(stderr, "nlpd-train: see --help\n");
        return pr < 0 ? 2 : 0;
    }
    if (!(o.base || o.from_repository) || !(o.train || o.n_feedback) ||
        !(o.out || o.repository)) {
        fprintf(stderr, "nlpd-train: --base, --train and --out are required (see --help; "
                "--from-repository, --feedback and --repository stand in for them)\n");
        free(fb);
        return 2;
    }
    if (o.keep && !o.repository) {
        fprintf(stderr, "nlpd-train: --keep prunes the --repository it publishes into\n");
        free(fb);
        return 2;
    }
    if (o.base && o.from_repository) {
        fprintf(stderr, "nlpd-train: --base and --from-repository exclude each other\n");
        free(fb);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop = &stop_flag;
    char *cmd = join_args(argc, argv);
    o.command = cmd;
    trn_result r;
    eng_error err;
    int rc = trn_finetune(&o, &r, &err);
    free(cmd);
    free(fb);
    if (rc == TRN_REFUSED) {
        fprintf(stderr, "nlpd-train: refused by the gate: %s\n", r.reason);
        print_result("refused", &o, &r, NULL);
        return 3;
    }
    if (rc) {
        fprintf(stderr, "nlpd-train: %s\n", err.msg);
        print_result("failed", &o, &r, err.msg);
        return 1;
    }
    if (r.version[0])
        fprintf(stderr, "nlpd-train: published %s/%s: %s\n", o.repository, r.version, r.reason);
    print_result(r.version[0] ? "published" : "saved", &o, &r, NULL);
    return 0;
}
