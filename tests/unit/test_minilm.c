/* test_minilm.c - parity on the REAL all-MiniLM-L6-v2 encoder (models/, fetched
 * by `make models`): sentence embeddings of all 872 SST-2 dev sentences and the
 * hidden states of four, against transformers (tests/reference/make_minilm_goldens.py).
 * Skipped, saying so, when the model or the shared data is absent. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <openssl/sha.h>

#include "nlpd_engine.h"

#define TOL 1e-4f
#define BATCH 32
#define EMU_SENTENCES 64 /* sentences run on backends other than the CPU */

typedef struct sentences {
    char *buf;
    char **s;
    int n;
} sentences;

/* glue_sst2_dev.tsv as the golden script read it (see sst2_dev_meta.json "parsing"):
 * header dropped, each line's text before its last tab. */
static int read_sentences(const char *path, sentences *out)
{
    size_t len;
    out->buf = tu_read_file(path, &len);
    if (!out->buf)
        return -1;
    out->s = calloc(len / 2 + 1, sizeof *out->s);
    out->n = 0;
    char *line = out->buf, *nl;
    int first = 1;
    while (*line && (nl = strchr(line, '\n'))) {
        *nl = 0;
        char *tab = strrchr(line, '\t');
        if (!first && tab) {
            *tab = 0;
            out->s[out->n++] = line;
        }
        first = 0;
        line = nl + 1;
    }
    return 0;
}

static void hex_sha256(const char *s, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_minilm_sst2_embeddings(void **state)
{
    (void)state;
    const char *model_dir = tu_path("%s/models/all-MiniLM-L6-v2", tu_root());
    const char *tsv = tu_path("%s/data/sst2/glue_sst2_dev.tsv", tu_shared());
    tu_require(tu_path("%s/model.safetensors", model_dir), "make models");
    tu_require(tsv, "the shared data folder, NLPD_SHARED");
    char *meta_text = tu_read_file(tu_path("%s/tests/fixtures/minilm/sst2_dev_meta.json", tu_root()), NULL);
    size_t elen, hlen;
    float *want = (float *)tu_read_file(tu_path("%s/tests/fixtures/minilm/sst2_dev_embeddings.f32", tu_root()), &elen);
    float *want_h = (float *)tu_read_file(tu_path("%s/tests/fixtures/minilm/sst2_dev_hidden4.f32", tu_root()), &hlen);
    assert_non_null(meta_text);
    assert_non_null(want);
    assert_non_null(want_h);
    cJSON *meta = cJSON_Parse(meta_text);
    int count = cJSON_GetObjectItem(meta, "count")->valueint, dim = cJSON_GetObjectItem(meta, "dim")->valueint;
    assert_int_equal(elen, (size_t)count * dim * sizeof(float));

    sentences S = {0};
    assert_int_equal(read_sentences(tsv, &S), 0);
    assert_int_equal(S.n, count);
    const cJSON *hashes = cJSON_GetObjectItem(meta, "sentence_sha256");
    for (int i = 0; i < S.n; i++) {
        char h[65];
        hex_sha256(S.s[i], h);
        if (strcmp(h, cJSON_GetArrayItem(hashes, i)->valuestring) != 0)
            fail_msg("sentence %d read differently from the golden script: '%s'", i, S.s[i]);
    }

    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    if (eng_model_load(model_dir, &m, &err))
        fail_msg("load: %s", err.msg);
    const eng_model_info *info = eng_model_get_info(m);
    assert_int_equal(info->hidden, dim);
    assert_true(info->normalize);
    assert_int_equal(info->max_seq_len, 256);

    eng_encoding enc[BATCH];
    const eng_encoding *ptrs[BATCH];
    float *got = malloc(sizeof(float) * BATCH * dim);
    for (int b = 0; b < BATCH; b++) {
        eng_encoding_init(&enc[b]);
        ptrs[b] = &enc[b];
    }
    /* Every backend there is, one model version (one weight view each): the CPU on the
     * whole dev set; other backends on its first EMU_SENTENCES sentences (the emulated
     * CUDA backend runs kernels thread by thread on the CPU). */
    const char *bes[8];
    int nbe = tu_model_backends(bes, 8);
    for (int bi = 0; bi < nbe; bi++) {
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = bes[bi], .threads = 0}, &ctx, &err),
                     ENG_OK);
    int limit = strcmp(bes[bi], "cpu") == 0 ? S.n : (S.n < EMU_SENTENCES ? S.n : EMU_SENTENCES);
    float worst = 0;
    int worst_i = -1;
    for (int start = 0; start < limit; start += BATCH) {
        int n = limit - start < BATCH ? limit - start : BATCH;
        for (int b = 0; b < n; b++) {
            const char *t = S.s[start + b];
            if (eng_tokenizer_encode(eng_model_tokenizer(m), t, strlen(t), NULL, 0,
                                     info->max_seq_len, &enc[b], &err))
                fail_msg("sentence %d: %s", start + b, err.msg);
            int want_n = cJSON_GetArrayItem(cJSON_GetObjectItem(meta, "n_tokens"), start + b)->valueint;
            if (enc[b].n != want_n)
                fail_msg("sentence %d: %d tokens, transformers %d", start + b, enc[b].n, want_n);
        }
        if (eng_run_embed(ctx, m, ptrs, n, got, &err))
            fail_msg("embed [%s]: %s", bes[bi], err.msg);
        for (int b = 0; b < n; b++) {
            float d = tu_max_abs_diff(got + (size_t)b * dim, want + (size_t)(start + b) * dim, (size_t)dim);
            if (d > worst || d != d) {
                worst = d != d ? 1e30f : d;
                worst_i = start + b;
            }
        }
    }
    printf("MiniLM SST-2 dev on %s: %d embeddings, max |nlpd - transformers| = %.3g (sentence "
           "%d)\n", bes[bi], limit, worst, worst_i);
    if (!(worst <= TOL))
        fail_msg("[%s] embedding of sentence %d differs by %g (tolerance %g)", bes[bi], worst_i,
                 worst, TOL);

    /* Unnormalised last hidden state of the first four sentences, as one batch. */
    for (int b = 0; b < 4; b++)
        eng_tokenizer_encode(eng_model_tokenizer(m), S.s[b], strlen(S.s[b]), NULL, 0,
                             info->max_seq_len, &enc[b], &err);
    size_t ntok = 0;
    for (int b = 0; b < 4; b++)
        ntok += (size_t)enc[b].n;
    assert_int_equal(hlen, ntok * dim * sizeof(float));
    float *h = malloc(hlen);
    assert_int_equal(eng_run_hidden(ctx, m, ptrs, 4, h, &err), ENG_OK);
    float dh = tu_max_abs_diff(h, want_h, ntok * dim);
    printf("MiniLM hidden states (4 sentences) on %s: max diff %.3g\n", bes[bi], dh);
    assert_true(dh <= TOL);
    free(h);
    eng_ctx_free(ctx);
    }

    for (int b = 0; b < BATCH; b++)
        eng_encoding_free(&enc[b]);
    free(got);
    eng_model_unref(m);
    cJSON_Delete(meta);
    free(meta_text);
    free(want);
    free(want_h);
    free(S.s);
    free(S.buf);
}

TEST_GROUP(minilm)
{
    static const struct CMUnitTest t[] = {cmocka_unit_test(test_minilm_sst2_embeddings)};
    TEST_GROUP_RETURN(t);
}
