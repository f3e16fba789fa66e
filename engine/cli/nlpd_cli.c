/* nlpd-cli - run one engine task on a model folder and print JSON.
 * Usage: see usage() below or `nlpd-cli --help`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "nlpd_engine.h"

static void usage(FILE *f)
{
    fputs(
        "usage: nlpd-cli COMMAND MODEL_DIR [options] [TEXT ...]\n"
        "\n"
        "Runs one task of the nlpd engine on a Hugging Face model folder\n"
        "(config.json + model.safetensors + tokenizer files) and prints JSON.\n"
        "\n"
        "commands:\n"
        "  classify MODEL_DIR TEXT...    label, score and every label's score per text\n"
        "                                (softmax; sigmoid for multi-label models)\n"
        "  embed MODEL_DIR TEXT...       sentence embedding per text (mean pooled,\n"
        "                                normalised when the folder says so)\n"
        "  qa MODEL_DIR --question Q --context C\n"
        "                                answer spans with score and character offsets\n"
        "  translate MODEL_DIR TEXT...   translation per text (MarianMTModel folders: greedy or\n"
        "                                beam search as generation_config.json says)\n"
        "  tokenize MODEL_DIR TEXT       token ids, tokens, type ids and character offsets\n"
        "  info MODEL_DIR                architecture, task, sizes and labels\n"
        "\n"
        "options:\n"
        "  --threads N            CPU threads (default: all cores)\n"
        "  --precision P          linear layers in fp32 (default), bf16 or int8 (nlpd-cli runs\n"
        "                         on the CPU; fp16 is CUDA only: nlpd's models[].precision)\n"
        "  --top-k N              classify/qa: results per input (classify default: all\n"
        "                         labels; qa default 1)\n"
        "  --max-length N         truncate inputs to N tokens (default: the model's maximum)\n"
        "  --pair TEXT            tokenize: second segment\n"
        "  --question Q, --context C   qa inputs\n"
        "  --max-answer-length N  qa: longest answer in tokens (default 15)\n"
        "  --max-seq-len N        qa: window length (default 384)\n"
        "  --doc-stride N         qa: window overlap in tokens (default 128)\n"
        "  --beam-size N          translate: beams (1 = greedy; default: generation_config.json)\n"
        "  --max-new-tokens N     translate: longest output in tokens, </s> included\n"
        "  --target-lang TOKEN    translate: target language token prepended to each text,\n"
        "                         e.g. \">>por<<\" for multi-target OPUS-MT models\n"
        "  -h, --help             this text\n"
        "  --version              print the version\n"
        "\n"
        "Exit status: 0 ok, 1 the task failed (message on stderr), 2 bad usage.\n",
        f);
}

typedef struct cli_opts {
    int threads, top_k, max_length, max_answer_len, max_seq_len, doc_stride;
    const char *pair, *question, *context;
    int beam_size, max_new_tokens;
    const char *target_lang;
    const char *precision;
} cli_opts;

static int parse_int(const char *s, const char *name, int lo, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > 1000000) {
        fprintf(stderr, "nlpd-cli: %s must be an integer >= %d\n", name, lo);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Byte offset -> character (code point) offset within text. */
static int char_offset(const char *text, int byte)
{
    int n = 0;
    for (int i = 0; i < byte && text[i]; i++)
        n += ((unsigned char)text[i] & 0xC0) != 0x80;
    return n;
}

static int print_json(cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) {
        fprintf(stderr, "nlpd-cli: out of memory\n");
        return 1;
    }
    puts(s);
    free(s);
    return 0;
}

static int fail(const char *what, const eng_error *err)
{
    fprintf(stderr, "nlpd-cli: %s: %s\n", what, err->msg[0] ? err->msg : eng_strerror(err->code));
    return 1;
}

static int encode_all(const eng_model *m, char **texts, int n, int max_len, eng_encoding *enc,
                      eng_error *err)
{
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    if (max_len <= 0)
        max_len = eng_model_get_info(m)->max_seq_len;
    for (int i = 0; i < n; i++) {
        eng_encoding_init(&enc[i]);
        int rc = eng_tokenizer_encode(tok, texts[i], strlen(texts[i]), NULL, 0, max_len, &enc[i], err);
        if (rc)
            return rc;
    }
    return ENG_OK;
}

static cJSON *label_scores(const eng_model_info *info, const float *p, int top_k)
{
    int L = info->num_labels, *order = malloc(sizeof(int) * (size_t)L);
    cJSON *arr = cJSON_CreateArray();
    for (int j = 0; order && j < L; j++) {
        int k = j;
        while (k > 0 && p[j] > p[order[k - 1]]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = j;
    }
    for (int j = 0; order && j < (top_k > 0 && top_k < L ? top_k : L); j++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "label", info->labels[order[j]]);
        cJSON_AddNumberToObject(o, "score", p[order[j]]);
        cJSON_AddItemToArray(arr, o);
    }
    free(order);
    return arr;
}

static int run_batch(eng_ctx *ctx, eng_model *m, const char *cmd, char **texts, int n,
                     const cli_opts *o)
{
    const eng_model_info *info = eng_model_get_info(m);
    eng_error err = {0};
    int dim = strcmp(cmd, "embed") == 0 ? info->hidden : info->num_labels, rc;
    eng_encoding *enc = calloc((size_t)n, sizeof *enc);
    const eng_encoding **ptrs = calloc((size_t)n, sizeof *ptrs);
    float *out = calloc((size_t)n * (size_t)dim, sizeof(float));
    cJSON *res = NULL;
    if (!enc || !ptrs || !out) {
        fprintf(stderr, "nlpd-cli: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int i = 0; i < n; i++)
        ptrs[i] = &enc[i];
    if (encode_all(m, texts, n, o->max_length, enc, &err)) {
        rc = fail("tokenize", &err);
        goto done;
    }
    rc = strcmp(cmd, "embed") == 0 ? eng_run_embed(ctx, m, ptrs, n, out, &err)
                                   : eng_run_classify(ctx, m, ptrs, n, out, NULL, &err);
    if (rc) {
        rc = fail(cmd, &err);
        goto done;
    }
    res = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const float *v = out + (size_t)i * dim;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "text", texts[i]);
        if (strcmp(cmd, "embed") == 0) {
            cJSON_AddItemToObject(r, "embedding", cJSON_CreateFloatArray(v, dim));
        } else {
            cJSON *scores = label_scores(info, v, info->multi_label ? 0 : o->top_k);
            if (info->multi_label) { /* every label over 0.5 */
                cJSON *labels = cJSON_CreateArray();
                for (int j = 0; j < dim; j++)
                    if (v[j] > 0.5f)
                        cJSON_AddItemToArray(labels, cJSON_CreateString(info->labels[j]));
                cJSON_AddItemToObject(r, "labels", labels);
            } else {
                cJSON *top = cJSON_GetArrayItem(scores, 0);
                cJSON_AddStringToObject(r, "label", cJSON_GetObjectItem(top, "label")->valuestring);
                cJSON_AddNumberToObject(r, "score", cJSON_GetObjectItem(top, "score")->valuedouble);
            }
            cJSON_AddItemToObject(r, "scores", scores);
        }
        cJSON_AddNumberToObject(r, "tokens", enc[i].n);
        if (enc[i].truncated)
            cJSON_AddNumberToObject(r, "truncated_tokens", enc[i].truncated);
        cJSON_AddItemToArray(res, r);
    }
    rc = print_json(res);
done:
    for (int i = 0; enc && i < n; i++)
        eng_encoding_free(&enc[i]);
    free(enc), free(ptrs), free(out);
    return rc;
}

static int run_qa(eng_ctx *ctx, eng_model *m, const cli_opts *o)
{
    if (!o->question || !o->context) {
        fprintf(stderr, "nlpd-cli: qa needs --question and --context\n");
        return 2;
    }
    eng_qa_opts qo;
    eng_qa_opts_default(&qo);
    if (o->top_k > 0)
        qo.top_k = o->top_k;
    if (o->max_answer_len > 0)
        qo.max_answer_len = o->max_answer_len;
    if (o->max_seq_len > 0)
        qo.max_seq_len = o->max_seq_len;
    if (o->doc_stride >= 0)
        qo.doc_stride = o->doc_stride;
    int max_pos = eng_model_get_info(m)->max_seq_len;
    if (qo.max_seq_len > max_pos)
        qo.max_seq_len = max_pos;
    eng_qa_answer *ans = calloc((size_t)qo.top_k, sizeof *ans);
    eng_error err = {0};
    int n = 0;
    if (!ans)
        return 1;
    if (eng_qa(ctx, m, o->question, o->context, &qo, ans, &n, &err)) {
        free(ans);
        return fail("qa", &err);
    }
    cJSON *res = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *a = cJSON_CreateObject();
        char *text = strndup(o->context + ans[i].start, (size_t)(ans[i].end - ans[i].start));
        cJSON_AddStringToObject(a, "answer", text ? text : "");
        cJSON_AddNumberToObject(a, "score", ans[i].score);
        cJSON_AddNumberToObject(a, "start", char_offset(o->context, ans[i].start));
        cJSON_AddNumberToObject(a, "end", char_offset(o->context, ans[i].end));
        cJSON_AddItemToArray(res, a);
        free(text);
    }
    free(ans);
    return print_json(res);
}

static int run_tokenize(eng_model *m, const char *text, const cli_opts *o)
{
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    eng_encoding e;
    eng_error err = {0};
    eng_encoding_init(&e);
    int max_len = o->max_length > 0 ? o->max_length : eng_model_get_info(m)->max_seq_len;
    if (eng_tokenizer_encode(tok, text, strlen(text), o->pair, o->pair ? strlen(o->pair) : 0,
                             max_len, &e, &err))
        return fail("tokenize", &err);
    cJSON *res = cJSON_CreateObject(), *tokens = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    cJSON_AddItemToObject(res, "ids", cJSON_CreateIntArray(e.ids, e.n));
    for (int i = 0; i < e.n; i++) {
        const char *seg = e.seq_ids[i] == 1 ? o->pair : text;
        cJSON_AddItemToArray(tokens, cJSON_CreateString(eng_tokenizer_id_token(tok, e.ids[i])));
        int pair[2] = {char_offset(seg, e.offsets[2 * i]), char_offset(seg, e.offsets[2 * i + 1])};
        cJSON_AddItemToArray(offs, cJSON_CreateIntArray(pair, 2));
    }
    cJSON_AddItemToObject(res, "tokens", tokens);
    cJSON_AddItemToObject(res, "type_ids", cJSON_CreateIntArray(e.type_ids, e.n));
    cJSON_AddItemToObject(res, "offsets", offs);
    if (e.truncated)
        cJSON_AddNumberToObject(res, "truncated_tokens", e.truncated);
    eng_encoding_free(&e);
    return print_json(res);
}

/* translate: {"translation", "tokens", "output_tokens", "score"?, "truncated_tokens"?} per text */
static int run_translate(eng_ctx *ctx, eng_model *m, char **texts, int n, const cli_opts *o)
{
    eng_error err = {0};
    eng_translate_opts to;
    eng_translate_opts_default(&to);
    to.beam_size = o->beam_size;
    to.max_new_tokens = o->max_new_tokens;
    to.max_input_tokens = o->max_length;
    to.target_lang_token = o->target_lang;
    eng_translation *tr = calloc((size_t)n, sizeof *tr);
    if (!tr || eng_translate(ctx, m, (const char *const *)texts, n, &to, tr, &err)) {
        free(tr);
        return fail("translate", tr ? &err : &(eng_error){ENG_ENOMEM, "out of memory"});
    }
    cJSON *res = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "text", texts[i]);
        cJSON_AddStringToObject(r, "translation", tr[i].text);
        cJSON_AddItemToObject(r, "ids", cJSON_CreateIntArray(tr[i].ids, tr[i].n_ids));
        if (tr[i].score != 0.0f)
            cJSON_AddNumberToObject(r, "score", tr[i].score);
        cJSON_AddNumberToObject(r, "tokens", tr[i].src_tokens);
        if (tr[i].truncated)
            cJSON_AddNumberToObject(r, "truncated_tokens", tr[i].truncated);
        cJSON_AddItemToArray(res, r);
        eng_translation_free(&tr[i]);
    }
    free(tr);
    return print_json(res);
}

static int run_info(eng_model *m)
{
    const eng_model_info *i = eng_model_get_info(m);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "architecture", i->architecture);
    cJSON_AddStringToObject(r, "model_type", i->model_type);
    cJSON_AddStringToObject(r, "task", eng_task_name(i->task));
    cJSON_AddNumberToObject(r, "hidden", i->hidden);
    cJSON_AddNumberToObject(r, "layers", i->layers);
    cJSON_AddNumberToObject(r, "heads", i->heads);
    cJSON_AddNumberToObject(r, "vocab", i->vocab);
    cJSON_AddNumberToObject(r, "max_seq_len", i->max_seq_len);
    cJSON_AddStringToObject(r, "file_dtype", i->file_dtype);
    cJSON_AddStringToObject(r, "precision", i->precision);
    cJSON_AddStringToObject(r, "kernel", i->kernel);
    cJSON_AddNumberToObject(r, "weight_bytes", (double)i->weight_bytes);
    if (i->task == ENG_TASK_CLASSIFY) {
        cJSON_AddBoolToObject(r, "multi_label", i->multi_label);
        cJSON_AddItemToObject(r, "labels", cJSON_CreateStringArray(i->labels, i->num_labels));
    }
    if (i->task == ENG_TASK_EMBED)
        cJSON_AddBoolToObject(r, "normalize", i->normalize);
    return print_json(r);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, 0, 'h'},           {"version", no_argument, 0, 'V'},
        {"threads", required_argument, 0, 't'},  {"top-k", required_argument, 0, 'k'},
        {"max-length", required_argument, 0, 'l'}, {"pair", required_argument, 0, 'p'},
        {"question", required_argument, 0, 'q'}, {"context", required_argument, 0, 'c'},
        {"max-answer-length", required_argument, 0, 'a'},
        {"max-seq-len", required_argument, 0, 's'}, {"doc-stride", required_argument, 0, 'd'},
        {"beam-size", required_argument, 0, 'b'}, {"max-new-tokens", required_argument, 0, 'n'},
        {"target-lang", required_argument, 0, 'L'},
        {"precision", required_argument, 0, 'P'},
        {0, 0, 0, 0},
    };
    cli_opts o = {.doc_stride = -1};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); return 0;
        case 'V': printf("nlpd-cli %s\n", ENG_VERSION); return 0;
        case 't': bad = parse_int(optarg, "--threads", 1, &o.threads); break;
        case 'k': bad = parse_int(optarg, "--top-k", 1, &o.top_k); break;
        case 'l': bad = parse_int(optarg, "--max-length", 2, &o.max_length); break;
        case 'p': o.pair = optarg; break;
        case 'q': o.question = optarg; break;
        case 'c': o.context = optarg; break;
        case 'a': bad = parse_int(optarg, "--max-answer-length", 1, &o.max_answer_len); break;
        case 's': bad = parse_int(optarg, "--max-seq-len", 8, &o.max_seq_len); break;
        case 'd': bad = parse_int(optarg, "--doc-stride", 0, &o.doc_stride); break;
        case 'b': bad = parse_int(optarg, "--beam-size", 1, &o.beam_size); break;
        case 'n': bad = parse_int(optarg, "--max-new-tokens", 1, &o.max_new_tokens); break;
        case 'L': o.target_lang = optarg; break;
        case 'P':
            o.precision = optarg;
            if (!eng_precision_valid(optarg)) {
                fprintf(stderr, "nlpd-cli: --precision: expected fp32, bf16 or int8\n");
                bad = 1;
            }
            break;
        default: bad = 1;
        }
        if (bad) {
            fprintf(stderr, "nlpd-cli: see --help\n");
            return 2;
        }
    }
    if (argc - optind < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind], *dir = argv[optind + 1];
    char **texts = argv + optind + 2;
    int ntexts = argc - optind - 2;
    int batch = !strcmp(cmd, "classify") || !strcmp(cmd, "embed") || !strcmp(cmd, "translate");
    if (!batch && strcmp(cmd, "qa") && strcmp(cmd, "tokenize") && strcmp(cmd, "info")) {
        fprintf(stderr, "nlpd-cli: unknown command '%s' (see --help)\n", cmd);
        return 2;
    }
    if ((batch && ntexts < 1) || (!strcmp(cmd, "tokenize") && ntexts != 1)) {
        fprintf(stderr, "nlpd-cli: %s needs %s TEXT argument\n", cmd, batch ? "at least one" : "one");
        return 2;
    }
    eng_error err = {0};
    eng_model *m = NULL;
    eng_ctx *ctx = NULL;
    if (eng_model_load_opts(dir, &(eng_model_opts){.precision = o.precision}, &m, &err))
        return fail("load", &err);
    int rc;
    int translation = eng_model_get_info(m)->task == ENG_TASK_TRANSLATE;
    if (translation != !strcmp(cmd, "translate") && strcmp(cmd, "info")) {
        fprintf(stderr, "nlpd-cli: %s: %s is %s translation model\n", cmd, dir,
                translation ? "a" : "not a");
        rc = 1;
    } else if (!strcmp(cmd, "tokenize") || !strcmp(cmd, "info")) {
        rc = !strcmp(cmd, "info") ? run_info(m) : run_tokenize(m, texts[0], &o);
    } else if (eng_ctx_new(&(eng_ctx_opts){.backend = "cpu", .threads = o.threads}, &ctx, &err)) {
        rc = fail("backend", &err);
    } else {
        rc = !strcmp(cmd, "translate") ? run_translate(ctx, m, texts, ntexts, &o)
             : batch                   ? run_batch(ctx, m, cmd, texts, ntexts, &o)
                                       : run_qa(ctx, m, &o);
    }
    eng_ctx_free(ctx);
    eng_model_unref(m);
    return rc;
}
