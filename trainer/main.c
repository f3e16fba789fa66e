/* nlpd-train - fine-tune a BERT-family encoder into a sequence classifier and
 * publish it as a Hugging Face model folder (DESIGN §5). Usage: usage() below. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune.h"
#include "nlpd_engine.h"
#include "repo_cmd.h"

static void usage(FILE *f)
{
    fputs(
        "usage: nlpd-train --base MODEL_DIR --train FILE [--dev FILE] --out DIR [options]\n"
        "       nlpd-train publish SRC_DIR --repository DIR [--key PRIVATE.pem] [--metadata FILE]\n"
        "       nlpd-train verify VERSION_DIR [--public-key KEY.pub]\n"
        "       nlpd-train pin --repository DIR [VERSION | --unpin]\n"
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
        "\n"
        "output:\n"
        "  --out DIR               the model folder to publish\n"
        "  --force                 replace DIR if it exists (atomically)\n"
        "  --progress MODE         auto|bar|lines|none: a progress bar on a terminal, plain\n"
        "                          log lines otherwise (default auto)\n"
        "  -h, --help              this text\n"
        "  --version               print the version\n"
        "\n"
        "Exit status: 0 published, 1 the run failed or was interrupted (nothing published),\n"
        "2 bad usage.\n",
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

int main(int argc, char **argv)
{
    trn_cmd_fn sub = trn_repo_cmd(argc, argv); /* model repository subcommands */
    if (sub)
        return sub(argc - 1, argv + 1);
    trn_opts o;
    trn_opts_default(&o);
    double v;
    int c;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (c) {
        case O_BASE: o.base = optarg; break;
        case O_TRAIN: o.train = optarg; break;
        case O_DEV: o.dev = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_EPOCHS:
            if (num(optarg, "--epochs", 1, 1000, &v)) return 2;
            o.epochs = (int)v;
            break;
        case O_LR:
            if (num(optarg, "--lr", 1e-9, 1, &v)) return 2;
            o.lr = (float)v;
            break;
        case O_BATCH:
            if (num(optarg, "--batch-size", 1, 4096, &v)) return 2;
            o.batch_size = (int)v;
            break;
        case O_ACCUM:
            if (num(optarg, "--grad-accum", 1, 1024, &v)) return 2;
            o.accum = (int)v;
            break;
        case O_MAXLEN:
            if (num(optarg, "--max-length", 3, 8192, &v)) return 2;
            o.max_length = (int)v;
            break;
        case O_SEED:
            if (num(optarg, "--seed", 0, 9007199254740991.0, &v)) return 2;
            o.seed = (uint64_t)v;
            break;
        case O_WARMUP_RATIO:
            if (num(optarg, "--warmup-ratio", 0, 1, &v)) return 2;
            o.warmup_ratio = (float)v;
            break;
        case O_WARMUP_STEPS:
            if (num(optarg, "--warmup-steps", 0, 1e9, &v)) return 2;
            o.warmup_steps = (long)v;
            break;
        case O_SCHEDULE:
            if (strcmp(optarg, "linear") == 0) o.schedule = ENG_LR_LINEAR;
            else if (strcmp(optarg, "cosine") == 0) o.schedule = ENG_LR_COSINE;
            else if (strcmp(optarg, "constant") == 0) o.schedule = ENG_LR_CONSTANT;
            else {
                fprintf(stderr, "nlpd-train: --schedule is linear, cosine or constant\n");
                return 2;
            }
            break;
        case O_WD:
            if (num(optarg, "--weight-decay", 0, 10, &v)) return 2;
            o.weight_decay = (float)v;
            break;
        case O_CLIP:
            if (num(optarg, "--max-grad-norm", 0, 1e9, &v)) return 2;
            o.max_grad_norm = (float)v;
            break;
        case O_DROPOUT:
            if (num(optarg, "--dropout", 0, 0.95, &v)) return 2;
            o.dropout = (float)v;
            break;
        case O_MAX_STEPS:
            if (num(optarg, "--max-steps", 1, 1e12, &v)) return 2;
            o.max_steps = (long)v;
            break;
        case O_THREADS:
            if (num(optarg, "--threads", 0, 1024, &v)) return 2;
            o.threads = (int)v;
            break;
        case O_EVAL_BATCH:
            if (num(optarg, "--eval-batch-size", 1, 4096, &v)) return 2;
            o.eval_batch = (int)v;
            break;
        case O_NO_EVAL_EPOCH: o.eval_each_epoch = 0; break;
        case O_DEV_SPLIT:
            if (num(optarg, "--dev-split", 0.0001, 0.9, &v)) return 2;
            o.dev_split = v;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "jsonl") == 0) o.data.format = TRN_FMT_JSONL;
            else if (strcmp(optarg, "csv") == 0) o.data.format = TRN_FMT_CSV;
            else if (strcmp(optarg, "tsv") == 0) o.data.format = TRN_FMT_TSV;
            else {
                fprintf(stderr, "nlpd-train: --format is jsonl, csv or tsv\n");
                return 2;
            }
            break;
        case O_TEXT_COL: o.data.text_col = optarg; break;
        case O_PAIR_COL: o.data.pair_col = optarg; break;
        case O_LABEL_COL: o.data.label_col = optarg; break;
        case O_LABELS: o.labels = optarg; break;
        case O_LABEL_MAP: o.data.label_map = optarg; break;
        case O_MULTI: o.data.multi_label = 1; break;
        case O_BAD:
            if (strcmp(optarg, "fail") == 0) o.data.bad_rows = TRN_BAD_FAIL;
            else if (strcmp(optarg, "skip") == 0) o.data.bad_rows = TRN_BAD_SKIP;
            else {
                fprintf(stderr, "nlpd-train: --on-bad-row is fail or skip\n");
                return 2;
            }
            break;
        case O_FORCE: o.force = 1; break;
        case O_PROGRESS:
            if (strcmp(optarg, "auto") == 0) o.progress = TRN_PROGRESS_AUTO;
            else if (strcmp(optarg, "bar") == 0) o.progress = TRN_PROGRESS_BAR;
            else if (strcmp(optarg, "lines") == 0) o.progress = TRN_PROGRESS_LINES;
            else if (strcmp(optarg, "none") == 0) o.progress = TRN_PROGRESS_NONE;
            else {
                fprintf(stderr, "nlpd-train: --progress is auto, bar, lines or none\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        case O_VERSION: printf("nlpd-train %s\n", ENG_VERSION); return 0;
        default:
            fprintf(stderr, "nlpd-train: see --help\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "nlpd-train: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!o.base || !o.train || !o.out) {
        fprintf(stderr, "nlpd-train: --base, --train and --out are required (see --help)\n");
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
    if (rc) {
        fprintf(stderr, "nlpd-train: %s\n", err.msg);
        return 1;
    }
    printf("{\"out\": \"%s\", \"dev_accuracy\": %.4f, \"dev_macro_f1\": %.4f, "
           "\"train_seconds\": %.1f, \"train_examples_per_second\": %.2f}\n",
           o.out, r.accuracy, r.macro_f1, r.train_seconds, r.examples_per_second);
    return 0;
}
