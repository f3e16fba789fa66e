/* fuzz_marian_tok.c - libFuzzer target for the Marian tokenizer (engine/marian_tok.c,
 * spm_unigram.c, the SentencePiece normaliser) with the OPUS-MT en-pt files the tiny
 * Marian fixtures use (NLPD_SHARED/tokenizers/opus-mt-tc-big-en-pt).
 *
 * Input: byte 0 selects source/target model and max_len, the rest is the text.
 * Contracts: ENG_EUTF8 exactly for invalid UTF-8, else success; ids within the
 * vocabulary and ending with </s>; at most max_len ids; the ids decode (target
 * side) without error to valid NUL-free... UTF-8; the work counted by
 * eng_tok_steps is linear in the input (the ">>xx<<" scan was quadratic). */
#include "fuzz_common.h"

#include "tokenizers/marian_tok.h"
#include "nlpd_engine.h"
#include "tokenizers/wordpiece.h" /* eng_wp_utf8_invalid_at */

static eng_marian_tok *mt;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const files[] = {"source.spm", "target.spm", "vocab.json",
                                        "tokenizer_config.json", "special_tokens_map.json"};
    const char *dir = fz_scratch();
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char src[4096];
        snprintf(src, sizeof src, "%s/tokenizers/opus-mt-tc-big-en-pt/%s", fz_shared(), files[i]);
        char *abs = realpath(src, NULL);
        if (!abs) {
            fprintf(stderr, "fuzz_marian_tok: missing %s\n", src);
            exit(1);
        }
        fz_link(abs, dir, files[i]);
        free(abs);
    }
    eng_error err = {0};
    if (eng_marian_tok_load(dir, &mt, &err)) {
        fprintf(stderr, "fuzz_marian_tok: cannot load %s: %s\n", dir, err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int target = data[0] & 1, max_len = data[0] >> 1; /* 0: no limit */
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    unsigned long long s0 = eng_tok_steps;
    int rc = eng_marian_tok_encode(mt, target, text, len, max_len, &e, &err);
    unsigned long long steps = eng_tok_steps - s0;
    int valid = eng_wp_utf8_invalid_at(text, len) < 0;
    CHECK(valid ? rc == 0 : rc == ENG_EUTF8, "encode rc %d (%s) for %s UTF-8", rc, err.msg,
          valid ? "valid" : "invalid");
    CHECK(FZ_STEPS_OK(steps, len), "%llu tokenizer steps for %zu bytes: not linear", steps, len);
    if (!rc) {
        int vocab = eng_marian_tok_vocab_size(mt);
        CHECK(e.n >= 1 && e.ids[e.n - 1] == eng_marian_tok_eos_id(mt), "no </s> at the end%s", "");
        if (max_len > 0)
            CHECK(e.n <= max_len, "%d ids over max_len %d", e.n, max_len);
        for (int i = 0; i < e.n; i++)
            CHECK(e.ids[i] >= 0 && e.ids[i] < vocab, "id %d (vocab %d)", e.ids[i], vocab);
        char *out = NULL;
        size_t olen = 0;
        rc = eng_marian_tok_decode(mt, e.ids, e.n, &out, &olen, &err);
        CHECK(rc == 0, "decode of encoded ids failed: %d %s", rc, err.msg);
        CHECK(out && out[olen] == 0, "decode output not terminated%s", "");
        CHECK(eng_wp_utf8_invalid_at(out, olen) < 0, "decode output is not valid UTF-8%s", "");
        free(out);
    }
    eng_encoding_free(&e);
    return 0;
}
