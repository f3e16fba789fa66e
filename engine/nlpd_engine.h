/* nlpd_engine.h - the public API of the nlpd inference engine.
 *
 * This is the only engine header that server/, trainer/ and tools may include.
 * Conventions (DESIGN §6): functions that can fail return 0 or a negative
 * ENG_E* code and fill an optional eng_error with a human-readable reason;
 * objects come in _new/_free (or _load/_unref) pairs.
 */
#ifndef NLPD_ENGINE_H
#define NLPD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ENG_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */

enum {
    ENG_OK = 0,
    ENG_ENOMEM = -1,       /* allocation failed */
    ENG_EIO = -2,          /* file missing or unreadable */
    ENG_EFORMAT = -3,      /* malformed file: bad header, truncated, misshapen tensor */
    ENG_EUNSUPPORTED = -4, /* valid but unsupported: architecture, dtype, option */
    ENG_EINVAL = -5,       /* invalid argument */
    ENG_EUTF8 = -6,        /* input text is not valid UTF-8 */
    ENG_ETOOLONG = -7,     /* input exceeds a limit */
    ENG_EBACKEND = -8,     /* the compute backend failed */
};

/* Static description of an error code ("invalid UTF-8", ...). Never NULL. */
const char *eng_strerror(int err);

/* Detailed reason for the last failure of a call; msg is always NUL-terminated. */
typedef struct eng_error {
    int code;
    char msg[512];
} eng_error;

/* ------------------------------------------------------------- tokenizer */

typedef struct eng_tokenizer eng_tokenizer;

/* One tokenized input. offsets are BYTE offsets into the original UTF-8 text
 * of the segment the token came from ([start, end)); special tokens have
 * start == end == 0. type_ids is the segment (0 first text, 1 pair text).
 * seq_ids is 0/1 for tokens of the first/second text and -1 for specials. */
typedef struct eng_encoding {
    int32_t *ids;
    int32_t *type_ids;
    int32_t *seq_ids;
    int32_t *offsets; /* 2 * n: start, end */
    int n;            /* number of tokens */
    int cap;          /* allocated capacity (tokens) */
    int truncated;    /* tokens dropped by max_len truncation */
} eng_encoding;

void eng_encoding_init(eng_encoding *e);
void eng_encoding_free(eng_encoding *e); /* frees buffers, leaves e initialised */
int eng_encoding_reserve(eng_encoding *e, int cap);
int eng_encoding_push(eng_encoding *e, int32_t id, int32_t type_id, int32_t seq_id,
                      int32_t start, int32_t end);

/* Load a WordPiece tokenizer from a model folder: tokenizer.json if present,
 * else vocab.txt + tokenizer_config.json. */
int eng_tokenizer_load(const char *model_dir, eng_tokenizer **out, eng_error *err);
void eng_tokenizer_free(eng_tokenizer *tok);

/* Word pieces of one text, no special tokens, no truncation (type 0, seq 0). */
int eng_tokenizer_encode_raw(const eng_tokenizer *tok, const char *text, size_t len,
                             eng_encoding *out, eng_error *err);

/* [CLS] text [SEP] (pair [SEP]) with token types, truncated to max_len tokens
 * with Hugging Face's "longest_first" strategy. pair may be NULL.
 * max_len <= 0 means the model maximum. Resets out before filling it. */
int eng_tokenizer_encode(const eng_tokenizer *tok, const char *text, size_t len,
                         const char *pair, size_t pair_len, int max_len,
                         eng_encoding *out, eng_error *err);

int eng_tokenizer_vocab_size(const eng_tokenizer *tok);
int eng_tokenizer_model_max_length(const eng_tokenizer *tok); /* 512 if unset */
int32_t eng_tokenizer_token_id(const eng_tokenizer *tok, const char *token); /* -1 if absent */
const char *eng_tokenizer_id_token(const eng_tokenizer *tok, int32_t id);   /* NULL if out of range */
int32_t eng_tokenizer_cls_id(const eng_tokenizer *tok);
int32_t eng_tokenizer_sep_id(const eng_tokenizer *tok);
int32_t eng_tokenizer_pad_id(const eng_tokenizer *tok);

/* ------------------------------------------------------------------ models */

typedef enum eng_task {
    ENG_TASK_EMBED = 0,    /* encoder only: mean-pooled sentence embeddings */
    ENG_TASK_CLASSIFY = 1, /* *ForSequenceClassification */
    ENG_TASK_QA = 2,       /* *ForQuestionAnswering */
} eng_task;

const char *eng_task_name(eng_task t); /* "embed", "classify", "qa" */

typedef struct eng_model_info {
    const char *architecture; /* as in config.json, e.g. "BertForSequenceClassification" */
    const char *model_type;   /* "bert" | "distilbert" */
    eng_task task;
    int hidden;
    int layers;
    int heads;
    int intermediate;
    int vocab;
    int max_positions;
    int max_seq_len;          /* longest input accepted, in tokens (with specials) */
    int num_labels;           /* classify: labels; qa: 2; embed: 0 */
    int multi_label;          /* problem_type == multi_label_classification */
    const char *const *labels;/* num_labels names (id2label, "LABEL_i" when absent) */
    int normalize;            /* embed: L2-normalise pooled vectors */
    const char *file_dtype;   /* dtype of model.safetensors: "F32" | "F16" | "BF16" */
} eng_model_info;

typedef struct eng_model eng_model;

/* Load a Hugging Face model folder (config.json + model.safetensors + tokenizer).
 * Weights are converted to one immutable fp32 block. Refcount starts at 1. */
int eng_model_load(const char *dir, eng_model **out, eng_error *err);
eng_model *eng_model_ref(eng_model *m);   /* thread-safe */
void eng_model_unref(eng_model *m);       /* frees on last reference */
const eng_model_info *eng_model_get_info(const eng_model *m);
const eng_tokenizer *eng_model_tokenizer(const eng_model *m);

/* ---------------------------------------------------------------- contexts */

/* A compute context: a backend instance plus an activation arena. One per
 * worker thread; not thread-safe. threads: CPU threads this context may use
 * (<= 0: number of online cores). backend: "cpu" (default when NULL). */
typedef struct eng_ctx_opts {
    const char *backend;
    int threads;
} eng_ctx_opts;

typedef struct eng_ctx eng_ctx;

int eng_ctx_new(const eng_ctx_opts *opts, eng_ctx **out, eng_error *err);
void eng_ctx_free(eng_ctx *ctx);
const char *eng_ctx_backend_name(const eng_ctx *ctx);

/* ---------------------------------------------------------------- running
 * All run functions take n encodings made by eng_tokenizer_encode (with special
 * tokens); lengths may differ (no padding is computed). Results for one input
 * do not depend on the other inputs of the batch. */

/* Classification: probs[n * num_labels] (softmax, or sigmoid for multi-label);
 * logits (optional, may be NULL) the raw scores. */
int eng_run_classify(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                     float *probs, float *logits, eng_error *err);

/* Sentence embeddings: out[n * hidden], mean-pooled over tokens, L2-normalised
 * when the model folder says so (sentence-transformers Normalize module). */
int eng_run_embed(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                  float *out, eng_error *err);

/* Last hidden state, packed: out[(sum of enc[i]->n) * hidden], inputs in order. */
int eng_run_hidden(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                   float *out, eng_error *err);

/* QA logits, packed like eng_run_hidden: start/end[(sum of enc[i]->n)]. */
int eng_run_qa_logits(eng_ctx *ctx, eng_model *m, const eng_encoding *const *enc, int n,
                      float *start, float *end, eng_error *err);

/* ------------------------------------------------------------ QA helpers */

typedef struct eng_qa_opts {
    int max_seq_len;       /* window length in tokens (default 384) */
    int doc_stride;        /* overlap between windows in tokens (default 128) */
    int max_answer_len;    /* longest answer in tokens (default 15) */
    int top_k;             /* answers returned (default 1) */
    int handle_impossible_answer; /* also rank the empty answer (start = end = 0) (default 0) */
    int align_to_words;    /* widen answers to whole words (default 1) */
} eng_qa_opts;

void eng_qa_opts_default(eng_qa_opts *o);

/* The windows of one (question, context) pair: [CLS] q [SEP] ctx-chunk [SEP],
 * consecutive chunks overlapping by doc_stride tokens (the question is never
 * truncated, as in transformers' pipeline with a fast tokenizer). */
typedef struct eng_qa_windows {
    eng_encoding *win;
    int n;
} eng_qa_windows;

int eng_qa_windows_make(const eng_tokenizer *tok, const char *question, size_t qlen,
                        const char *context, size_t clen, const eng_qa_opts *o,
                        eng_qa_windows *out, eng_error *err);
void eng_qa_windows_free(eng_qa_windows *w);

typedef struct eng_qa_answer {
    float score;     /* probability of the span, as the transformers pipeline reports it */
    int start, end;  /* byte offsets into the context, [start, end) */
} eng_qa_answer;

/* Best spans from the logits of all windows (start/end packed per window, in
 * window order). Writes up to o->top_k answers sorted by score; *n_out their count.
 * tok: the tokenizer that made the windows (answers are widened to whole words). */
int eng_qa_decode(const eng_tokenizer *tok, const eng_qa_windows *w, const float *start,
                  const float *end, const eng_qa_opts *o, eng_qa_answer *out, int *n_out);

/* Convenience: windows + logits + decode for one pair. */
int eng_qa(eng_ctx *ctx, eng_model *m, const char *question, const char *context,
           const eng_qa_opts *o, eng_qa_answer *out, int *n_out, eng_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NLPD_ENGINE_H */
