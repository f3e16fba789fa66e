/* fuzz_model_folder.c - libFuzzer target for loading a model folder (engine/model.c,
 * model_config.c, bert.c, marian.c, wordpiece.c, marian_tok.c): fuzzed config.json
 * and tokenizer file written into a temporary folder next to a fixture's weights,
 * then eng_model_load. The fixtures (tests/fixtures/fuzz, made by
 * tests/reference/make_fuzz_fixtures.py) have small vocabularies and tiny weights:
 * a load costs about a millisecond, so the target can try millions of inputs.
 *
 * Input: byte 0 selects the fixture whose model.safetensors is linked and which
 * tokenizer file the second part becomes; bytes 1-2 (little endian) the length of
 * config.json; the rest is the tokenizer file:
 *   fixture bert_cls | bert_qa | distilbert_cls | bert_st (+ its 1_Pooling) | marian
 *   tokenizer file: tokenizer.json or vocab.txt (BERT); tokenizer_config.json (Marian,
 *   beside the fixture's spm, vocab.json and special_tokens_map.json).
 * Contracts: a refusal is one of the engine's codes with a message and no model;
 * an accepted model has coherent info (task, max_seq_len, labels) and tokenizes
 * a text; classify models classify it (probabilities in [0, 1] summing to 1 for
 * single-label); translation models translate a text (greedy or beam 2, 6 new tokens:
 * ids in the vocabulary). Under ASan/UBSan; -rss_limit_mb catches unbounded allocation. */
#include "fuzz_common.h"

#include <math.h>
#include <sys/stat.h>

#include "nlpd_engine.h"

static const char *const fixtures[] = {"bert_cls", "bert_qa", "distilbert_cls", "bert_st",
                                       "marian"};
#define NFIX (sizeof fixtures / sizeof *fixtures)
static char dirs[NFIX][4096];
static eng_ctx *ctx;

static void link_abs(const char *src, const char *dir, const char *name)
{
    char *abs = realpath(src, NULL);
    if (!abs) {
        fprintf(stderr, "fuzz_model_folder: missing %s\n", src);
        exit(1);
    }
    fz_link(abs, dir, name);
    free(abs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char src[4096];
    for (size_t i = 0; i < NFIX; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/%s", fz_scratch(), fixtures[i]);
        if (mkdir(dirs[i], 0755) != 0) {
            perror(dirs[i]);
            exit(1);
        }
        static const char *const files[] = {"model.safetensors", "source.spm", "target.spm",
                                            "vocab.json", "special_tokens_map.json",
                                            "modules.json", "sentence_bert_config.json",
                                            "1_Pooling"};
        for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
            snprintf(src, sizeof src, "%s/tests/fixtures/fuzz/%s/%s", fz_root(), fixtures[i],
                     files[k]);
            if (k == 0 || access(src, F_OK) == 0) /* the weights are required */
                link_abs(src, dirs[i], files[k]);
        }
    }
    eng_error err = {0};
    if (eng_ctx_new(&(eng_ctx_opts){.threads = 1}, &ctx, &err)) {
        fprintf(stderr, "fuzz_model_folder: eng_ctx_new: %s\n", err.msg);
        exit(1);
    }
    return 0;
}

static void put(const char *dir, const char *name, const uint8_t *d, size_t n)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    fz_write(p, d, n);
}

static void drop(const char *dir, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t fi = (data[0] & 7) % NFIX;
    int marian = strncmp(fixtures[fi], "marian", 6) == 0, use_vocab_txt = (data[0] >> 3) & 1;
    size_t clen = (size_t)data[1] | (size_t)data[2] << 8;
    const uint8_t *cfg = data + 3;
    size_t rest = size - 3;
    if (clen > rest)
        clen = rest;
    const char *dir = dirs[fi];
    put(dir, "config.json", cfg, clen);
    const char *tokname = marian ? "tokenizer_config.json" : use_vocab_txt ? "vocab.txt"
                                                                         : "tokenizer.json";
    drop(dir, "tokenizer.json");
    drop(dir, "vocab.txt");
    put(dir, tokname, cfg + clen, rest - clen);

    eng_model *m = (eng_model *)1;
    eng_error err = {0};
    int rc = eng_model_load(dir, &m, &err);
    if (rc) {
        CHECK(rc <= ENG_ENOMEM && rc >= ENG_EBACKEND, "unknown error code %d", rc);
        CHECK(m == NULL, "failed load left a model%s", "");
        CHECK(err.msg[0], "refusal %d without a message", rc);
        return 0;
    }
    const eng_model_info *in = eng_model_get_info(m);
    CHECK(in && in->max_seq_len >= 2, "max_seq_len %d", in ? in->max_seq_len : -1);
    CHECK(in->hidden > 0 && in->layers > 0, "hidden %d layers %d", in->hidden, in->layers);
    if (in->task == ENG_TASK_CLASSIFY) {
        CHECK(in->num_labels >= 1 && in->labels, "classify with %d labels", in->num_labels);
        for (int i = 0; i < in->num_labels; i++)
            CHECK(in->labels[i] != NULL, "label %d is NULL", i);
    }
    if (in->task == ENG_TASK_TRANSLATE) { /* a short search, greedy or beam 2 */
        eng_translate_opts o;
        eng_translate_opts_default(&o);
        o.beam_size = 1 + (data[0] >> 4 & 1);
        o.max_new_tokens = 6;
        const char *text = "Hello, world! Café";
        eng_translation t = {0};
        rc = eng_translate(ctx, m, &text, 1, &o, &t, &err);
        if (!rc) {
            CHECK(t.n_ids >= 1 && t.n_ids <= 6, "%d ids for max_new_tokens 6", t.n_ids);
            for (int i = 0; i < t.n_ids; i++)
                CHECK(t.ids[i] >= 0 && t.ids[i] < in->vocab, "id %d (vocab %d)", t.ids[i], in->vocab);
            CHECK(t.text != NULL, "no text%s", "");
        } else {
            CHECK(err.msg[0], "translate refused without a message (%d)", rc);
        }
        eng_translation_free(&t);
    } else {
        const eng_tokenizer *tok = eng_model_tokenizer(m);
        eng_encoding e;
        eng_encoding_init(&e);
        rc = eng_tokenizer_encode(tok, "Hello, world! Café", 19, NULL, 0, 16, &e, &err);
        CHECK(rc == 0, "a loaded model cannot tokenize: %s", err.msg);
        if (in->task == ENG_TASK_CLASSIFY && in->num_labels <= 64) {
            const eng_encoding *p = &e;
            float probs[64];
            rc = eng_run_classify(ctx, m, &p, 1, probs, NULL, &err);
            /* ids the fuzzed vocabulary gives may be out of the model's range: refused */
            if (!rc) {
                float sum = 0;
                for (int i = 0; i < in->num_labels; i++) {
                    CHECK(!(probs[i] < 0) && !(probs[i] > 1.0001f) || isnan(probs[i]),
                          "probability %g", probs[i]);
                    sum += probs[i];
                }
                if (!in->multi_label && isfinite(sum))
                    CHECK(fabsf(sum - 1) < 1e-3f, "probabilities sum to %g", sum);
            } else {
                CHECK(err.msg[0], "classify refused without a message (%d)", rc);
            }
        }
        eng_encoding_free(&e);
    }
    eng_model_unref(m);
    return 0;
}
