/* test_model_load.c - model folders that must be refused with a clear reason
 * (never a crash), and API misuse. Each case copies the bert_cls fixture into
 * a temporary folder and breaks one thing. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "nlpd_engine.h"

static const char *fixture(const char *file)
{
    return tu_path("%s/tests/fixtures/models/bert_cls/%s", tu_root(), file);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    char *d = tu_read_file(from, &len);
    assert_non_null(d);
    write_bytes(to, d, len);
    free(d);
}

/* A fresh copy of the fixture in a temp dir; returns the dir. */
static const char *make_copy(void)
{
    static char dir[256];
    snprintf(dir, sizeof dir, "/tmp/nlpd_test_model_%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        copy_file(fixture(files[i]), tu_path("%s/%s", dir, files[i]));
    return dir;
}

static void remove_copy(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Load must fail with `code` and a message containing every needle. */
static void expect_load_fails(const char *dir, int code, const char *n1, const char *n2)
{
    eng_model *m = (eng_model *)1;
    eng_error err = {0};
    int rc = eng_model_load(dir, &m, &err);
    if (rc != code || (n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
        fail_msg("load %s: rc %d (%s), message '%s'; wanted %d with '%s' and '%s'", dir, rc,
                 eng_strerror(rc), err.msg, code, n1 ? n1 : "", n2 ? n2 : "");
    assert_null(m);
}

/* Edit a JSON file of the folder: set key to a JSON value (NULL deletes it). */
static void edit_json(const char *dir, const char *file, const char *key, const char *json_value)
{
    const char *path = tu_path("%s/%s", dir, file);
    char *text = tu_read_file(path, NULL);
    cJSON *c = cJSON_Parse(text);
    free(text);
    cJSON_DeleteItemFromObject(c, key);
    if (json_value)
        cJSON_AddItemToObject(c, key, cJSON_Parse(json_value));
    char *out = cJSON_Print(c);
    write_bytes(path, out, strlen(out));
    free(out);
    cJSON_Delete(c);
}

static void edit_config(const char *dir, const char *key, const char *json_value)
{
    edit_json(dir, "config.json", key, json_value);
}

/* Rewrite model.safetensors with tensor `name` removed (new_shape NULL) or
 * given a new shape (JSON), data block untouched. */
static void edit_tensor(const char *dir, const char *name, const char *new_shape)
{
    const char *path = tu_path("%s/model.safetensors", dir);
    size_t len;
    unsigned char *d = (unsigned char *)tu_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | d[i];
    cJSON *h = cJSON_ParseWithLength((char *)d + 8, hlen);
    assert_non_null(cJSON_GetObjectItem(h, name));
    if (new_shape)
        cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h, name), "shape", cJSON_Parse(new_shape));
    else
        cJSON_DeleteItemFromObject(h, name);
    char *nh = cJSON_PrintUnformatted(h);
    size_t nlen = strlen(nh);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 8; i++)
        fputc((int)((uint64_t)nlen >> (8 * i)) & 0xff, f);
    assert_int_equal(fwrite(nh, 1, nlen, f), nlen);
    assert_int_equal(fwrite(d + 8 + hlen, 1, len - 8 - hlen, f), len - 8 - hlen);
    assert_int_equal(fclose(f), 0);
    free(nh);
    cJSON_Delete(h);
    free(d);
}

static void test_refused_folders(void **state)
{
    (void)state;
    const char *dir;
    expect_load_fails("/nonexistent/model", ENG_EIO, "/nonexistent/model/config.json", NULL);

    dir = make_copy();
    write_bytes(tu_path("%s/config.json", dir), "{\"architectures\": [", 19);
    expect_load_fails(dir, ENG_EFORMAT, "config.json", NULL);

    dir = make_copy();
    edit_config(dir, "architectures", "[\"GPT2LMHeadModel\"]");
    expect_load_fails(dir, ENG_EUNSUPPORTED, "GPT2LMHeadModel", "config.json");

    dir = make_copy();
    edit_config(dir, "hidden_act", "\"swish\"");
    expect_load_fails(dir, ENG_EUNSUPPORTED, "hidden_act", "swish");

    dir = make_copy();
    edit_config(dir, "position_embedding_type", "\"relative_key\"");
    expect_load_fails(dir, ENG_EUNSUPPORTED, "position_embedding_type", NULL);

    dir = make_copy();
    edit_config(dir, "num_attention_heads", "3");
    expect_load_fails(dir, ENG_EFORMAT, "multiple", NULL);

    dir = make_copy();
    edit_config(dir, "hidden_size", "\"big\"");
    expect_load_fails(dir, ENG_EFORMAT, "hidden_size", NULL);

    dir = make_copy();
    edit_config(dir, "id2label", "{\"7\": \"x\"}");
    edit_config(dir, "num_labels", "3");
    expect_load_fails(dir, ENG_EFORMAT, "id2label", NULL);

    dir = make_copy();
    edit_tensor(dir, "bert.encoder.layer.1.attention.self.key.weight", NULL);
    expect_load_fails(dir, ENG_EFORMAT, "bert.encoder.layer.1.attention.self.key.weight",
                      "missing");

    dir = make_copy();
    edit_tensor(dir, "bert.encoder.layer.0.intermediate.dense.weight", "[32, 64]");
    expect_load_fails(dir, ENG_EFORMAT, "bert.encoder.layer.0.intermediate.dense.weight",
                      "expected [64, 32]");

    dir = make_copy();
    edit_tensor(dir, "classifier.weight", "[4, 32]");
    expect_load_fails(dir, ENG_EFORMAT, "classifier.weight", NULL);

    dir = make_copy();
    { /* truncate the weights file */
        const char *p = tu_path("%s/model.safetensors", dir);
        size_t len;
        char *d = tu_read_file(p, &len);
        write_bytes(p, d, len / 2);
        free(d);
    }
    expect_load_fails(dir, ENG_EFORMAT, "model.safetensors", "truncated");

    dir = make_copy();
    assert_int_equal(unlink(tu_path("%s/model.safetensors", dir)), 0);
    write_bytes(tu_path("%s/pytorch_model.bin", dir), "x", 1);
    expect_load_fails(dir, ENG_EIO, "model.safetensors", "pytorch_model.bin");

    dir = make_copy();
    assert_int_equal(unlink(tu_path("%s/tokenizer.json", dir)), 0);
    assert_int_equal(unlink(tu_path("%s/vocab.txt", dir)), 0);
    expect_load_fails(dir, ENG_EIO, NULL, NULL);
    remove_copy(dir);
}

static void test_sentence_transformers_modules(void **state)
{
    (void)state;
    const char *dir = make_copy();
    edit_config(dir, "architectures", "[\"BertModel\"]");
    const char *mods =
                "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
                "{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"},"
                "{\"idx\":2,\"name\":\"2\",\"path\":\"2_Dense\",\"type\":\"sentence_transformers.models.Dense\"}]";
    write_bytes(tu_path("%s/modules.json", dir), mods, strlen(mods));
    expect_load_fails(dir, ENG_EUNSUPPORTED, "Dense", "modules.json");
    remove_copy(dir);
}

static void test_misuse(void **state)
{
    (void)state;
    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    assert_int_equal(eng_model_load(tu_path("%s/tests/fixtures/models/bert_cls", tu_root()), &m, &err), ENG_OK);
    assert_int_equal(eng_ctx_new(NULL, &ctx, &err), ENG_OK);
    assert_ptr_equal(eng_model_ref(m), m);
    eng_model_unref(m); /* still one reference */

    eng_encoding e;
    eng_encoding_init(&e);
    assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), "hello", 5, NULL, 0, 0, &e, &err), ENG_OK);
    const eng_encoding *p = &e;
    float out[64];
    /* Wrong task. */
    assert_int_equal(eng_run_embed(ctx, m, &p, 1, out, &err), ENG_EINVAL);
    assert_non_null(strstr(err.msg, "embed"));
    /* Empty batch, out-of-range ids and over-long inputs are refused. */
    assert_int_equal(eng_run_classify(ctx, m, &p, 0, out, NULL, &err), ENG_EINVAL);
    e.ids[1] = 999999;
    assert_int_equal(eng_run_classify(ctx, m, &p, 1, out, NULL, &err), ENG_EINVAL);
    eng_encoding_free(&e);
    for (int i = 0; i < 200; i++)
        assert_int_equal(eng_encoding_push(&e, 1000, 0, 0, 0, 0), ENG_OK);
    assert_int_equal(eng_run_classify(ctx, m, &p, 1, out, NULL, &err), ENG_ETOOLONG);
    assert_non_null(strstr(err.msg, "128"));
    eng_encoding_free(&e);

    eng_ctx *bad = (eng_ctx *)1;
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "tpu"}, &bad, &err), ENG_EUNSUPPORTED);
    assert_null(bad);
    eng_ctx_free(ctx);
    eng_model_unref(m);
}

/* dir/name becomes a FIFO (a regular file is replaced). */
static void make_fifo(const char *dir, const char *name)
{
    const char *p = tu_path("%s/%s", dir, name);
    unlink(p);
    assert_int_equal(mkfifo(p, 0600), 0);
}

/* dir/name becomes a sparse file of `bytes` zero bytes. */
static void make_sparse(const char *dir, const char *name, off_t bytes)
{
    const char *p = tu_path("%s/%s", dir, name);
    unlink(p);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), bytes), 0);
    fclose(f);
}

/* A Marian folder in a temp dir: the marian_a fixture, the shared OPUS-MT
 * tokenizer linked (tokenizer_config.json copied, so a case can edit it). */
static const char *make_marian_copy(void)
{
    static char dir[256];
    char tok[4096]; /* not a tu_path slot: the calls below reuse them */
    snprintf(tok, sizeof tok, "%s/tokenizers/opus-mt-tc-big-en-pt", tu_shared());
    tu_require(tu_path("%s/source.spm", tok), "the shared OPUS-MT tokenizer, NLPD_SHARED");
    snprintf(dir, sizeof dir, "/tmp/nlpd_test_model_mt_%d", (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    static const char *const own[] = {"config.json", "generation_config.json", "model.safetensors"};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        copy_file(tu_path("%s/tests/fixtures/marian/marian_a/%s", tu_root(), own[i]),
                  tu_path("%s/%s", dir, own[i]));
    static const char *const shared[] = {"source.spm", "target.spm", "vocab.json",
                                         "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof shared / sizeof *shared; i++) {
        char *abs = realpath(tu_path("%s/%s", tok, shared[i]), NULL);
        assert_non_null(abs);
        assert_int_equal(symlink(abs, tu_path("%s/%s", dir, shared[i])), 0);
        free(abs);
    }
    copy_file(tu_path("%s/tokenizer_config.json", tok), tu_path("%s/tokenizer_config.json", dir));
    return dir;
}

/* Issue 12 item 10: a hostile folder cannot make the loader hang, read or
 * allocate without bound, or compute derived tensors before the file's own
 * tensors are checked. */
static void test_hostile_folders(void **state)
{
    (void)state;
    const char *dir;
    alarm(120); /* a FIFO that blocks fails the run instead of hanging it */
    static const char *const fifos[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                        "model.safetensors"};
    for (size_t i = 0; i < sizeof fifos / sizeof *fifos; i++) {
        dir = make_copy();
        make_fifo(dir, fifos[i]);
        expect_load_fails(dir, ENG_EIO, fifos[i], "not a regular file");
    }
    dir = make_copy();
    assert_int_equal(unlink(tu_path("%s/tokenizer.json", dir)), 0);
    assert_int_equal(unlink(tu_path("%s/vocab.txt", dir)), 0);
    assert_int_equal(symlink("/dev/zero", tu_path("%s/vocab.txt", dir)), 0);
    expect_load_fails(dir, ENG_EIO, "vocab.txt", "not a regular file");
    alarm(0);

    /* Capped reads: a 17 MiB config.json, a 129 MiB tokenizer.json (sparse files). */
    dir = make_copy();
    make_sparse(dir, "config.json", (off_t)17 << 20);
    expect_load_fails(dir, ENG_EFORMAT, "config.json", "limit");
    dir = make_copy();
    make_sparse(dir, "tokenizer.json", (off_t)129 << 20);
    expect_load_fails(dir, ENG_EFORMAT, "tokenizer.json", "limit");

    /* A config asking for ~10^14 floats of weights the file does not have: the
     * tensors are checked first (before, the block was allocated first). */
    dir = make_copy();
    edit_config(dir, "hidden_size", "8192");
    edit_config(dir, "intermediate_size", "1048576");
    edit_config(dir, "num_hidden_layers", "1000");
    expect_load_fails(dir, ENG_EFORMAT, "model.safetensors", "expected");

    /* Marian: sinusoidal positions for max_position_embeddings 2^20 x d_model would be
     * far more than the checkpoint holds: refused before any is computed. */
    dir = make_marian_copy();
    edit_config(dir, "max_position_embeddings", "1048576");
    expect_load_fails(dir, ENG_EFORMAT, "computed tensors", "max_position_embeddings");
    /* ... and a missing tensor is found before the sinusoids are computed. */
    dir = make_marian_copy();
    edit_config(dir, "max_position_embeddings", "1048576");
    edit_tensor(dir, "model.decoder.layers.1.fc2.weight", NULL);
    expect_load_fails(dir, ENG_EFORMAT, "model.decoder.layers.1.fc2.weight", "missing");
    /* Ids the search emits or feeds outside the 54,776-row vocabulary (found by
     * fuzz_model_folder: a forced </s> of 512 in a 161-id model came back as a token). */
    static const char *const bad_ids[][2] = {{"forced_eos_token_id", "54776"},
                                             {"eos_token_id", "[60000]"},
                                             {"decoder_start_token_id", "99999"},
                                             {"bad_words_ids", "[[54776]]"}};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        dir = make_marian_copy();
        edit_json(dir, "generation_config.json", bad_ids[i][0], bad_ids[i][1]);
        expect_load_fails(dir, ENG_EFORMAT, i == 3 ? "bad_words_ids" : bad_ids[i][0],
                          "outside the vocabulary");
    }
    /* One position cannot hold a token and </s> (fuzz_model_folder: a model with
     * max_seq_len 1 was accepted). */
    for (int bert = 0; bert < 2; bert++) {
        dir = bert ? make_copy() : make_marian_copy();
        edit_config(dir, "max_position_embeddings", "1");
        expect_load_fails(dir, ENG_EFORMAT, "max_position_embeddings", "[2,");
    }
    /* An added token of 1,000 bytes (tried at every byte of every text). */
    dir = make_marian_copy();
    {
        const char *p = tu_path("%s/tokenizer_config.json", dir);
        char *text = tu_read_file(p, NULL);
        cJSON *c = cJSON_Parse(text);
        free(text);
        char longtok[1001];
        memset(longtok, 'x', 1000);
        longtok[1000] = 0;
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, cJSON_CreateString(longtok));
        cJSON_DeleteItemFromObject(c, "additional_special_tokens");
        cJSON_AddItemToObject(c, "additional_special_tokens", arr);
        char *out = cJSON_Print(c);
        write_bytes(p, out, strlen(out));
        free(out);
        cJSON_Delete(c);
    }
    expect_load_fails(dir, ENG_EUNSUPPORTED, "longer than", NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    remove_copy(make_copy());
}

TEST_GROUP(model_load)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_refused_folders),
        cmocka_unit_test(test_hostile_folders),
        cmocka_unit_test(test_sentence_transformers_modules),
        cmocka_unit_test(test_misuse),
    };
    TEST_GROUP_RETURN(t);
}
