/* fuzz_wordpiece.c - libFuzzer target for the WordPiece tokenizer (engine/wordpiece.c)
 * with the real bert-base-uncased files (NLPD_SHARED/tokenizers/bert-base-uncased).
 *
 * Input: byte 0 selects the call (raw / single / pair, and max_len), the rest is the
 * text (for a pair, split at the first 0xff byte, which is never valid UTF-8 and so
 * cannot be part of an accepted text). Contracts on every input:
 *   - ENG_EUTF8 exactly when a text is not valid UTF-8; otherwise success;
 *   - ids within the vocabulary; offsets inside the text, start <= end, and not
 *     decreasing within a sequence; [CLS]/[SEP] where they belong; the length
 *     within max_len when truncating;
 *   - the work counted by eng_tok_steps is linear in the input (FZ_STEPS_OK).
 */
#include "fuzz_common.h"

#include "nlpd_engine.h"
#include "tokenizers/wordpiece.h" /* eng_wp_utf8_invalid_at */

static eng_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tokenizers/bert-base-uncased", fz_shared());
    eng_error err = {0};
    if (eng_tokenizer_load(dir, &tok, &err)) {
        fprintf(stderr, "fuzz_wordpiece: cannot load %s: %s\n", dir, err.msg);
        exit(1);
    }
    return 0;
}

static void check_enc(const eng_encoding *e, size_t la, size_t lb)
{
    int vocab = eng_tokenizer_vocab_size(tok);
    int32_t last[2] = {0, 0};
    for (int i = 0; i < e->n; i++) {
        CHECK(e->ids[i] >= 0 && e->ids[i] < vocab, "id %d at %d (vocab %d)", e->ids[i], i, vocab);
        int s = e->seq_ids[i];
        CHECK(s >= -1 && s <= 1, "seq id %d", s);
        if (s < 0)
            continue;
        int32_t a = e->offsets[2 * i], b = e->offsets[2 * i + 1];
        size_t lim = s ? lb : la;
        CHECK(a >= 0 && a <= b && (size_t)b <= lim, "offsets [%d, %d) of a %zu-byte text", a, b, lim);
        CHECK(a >= last[s], "offsets go back: %d after %d", a, last[s]);
        last[s] = a;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    unsigned long long s0 = eng_tok_steps;
    int rc;
    int max_len = sel >> 2; /* 0: the tokenizer's (512) */
    if ((sel & 3) == 0) {
        rc = eng_tokenizer_encode_raw(tok, text, len, &e, &err);
        int valid = eng_wp_utf8_invalid_at(text, len) < 0;
        CHECK(valid ? rc == 0 : rc == ENG_EUTF8, "encode_raw rc %d (%s) for %s UTF-8", rc,
              err.msg, valid ? "valid" : "invalid");
        if (!rc) {
            check_enc(&e, len, 0);
            for (int i = 0; i < e.n; i++)
                CHECK(e.seq_ids[i] == 0, "raw encoding has seq id %d", e.seq_ids[i]);
        }
    } else {
        const char *pair = NULL;
        size_t la = len, lb = 0;
        if ((sel & 3) == 2) {
            const char *ff = memchr(text, 0xff, len);
            if (ff) {
                la = (size_t)(ff - text);
                pair = ff + 1;
                lb = len - la - 1;
            } else {
                pair = "";
            }
        }
        rc = eng_tokenizer_encode(tok, text, la, pair, lb, max_len, &e, &err);
        int nspecial = pair ? 3 : 2;
        int valid = eng_wp_utf8_invalid_at(text, la) < 0 &&
                    (!pair || eng_wp_utf8_invalid_at(pair, lb) < 0);
        if (max_len > 0 && max_len < nspecial)
            CHECK(rc == ENG_EINVAL, "max_len %d < %d specials accepted (rc %d)", max_len,
                  nspecial, rc);
        else
            CHECK(valid ? rc == 0 : rc == ENG_EUTF8, "encode rc %d (%s) for %s UTF-8", rc,
                  err.msg, valid ? "valid" : "invalid");
        if (!rc) {
            check_enc(&e, la, lb);
            int lim = max_len > 0 ? max_len : eng_tokenizer_model_max_length(tok);
            CHECK(e.n <= lim, "%d tokens over max_len %d", e.n, lim);
            CHECK(e.n >= nspecial && e.ids[0] == eng_tokenizer_cls_id(tok) &&
                      e.ids[e.n - 1] == eng_tokenizer_sep_id(tok),
                  "specials missing (%d tokens)", e.n);
        }
    }
    unsigned long long steps = eng_tok_steps - s0;
    CHECK(FZ_STEPS_OK(steps, len), "%llu tokenizer steps for %zu bytes: not linear", steps, len);
    eng_encoding_free(&e);
    return 0;
}
