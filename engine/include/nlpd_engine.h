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
    ENG_ECANCELLED = -9,   /* stopped by the caller (a should_stop callback) */
};

/* Static description of an error code ("invalid UTF-8", ...). Never NULL. */
const char *eng_strerror(int err);

/* Detailed reason for the last failure of a call; msg is always NUL-terminated. */
typedef struct eng_error {
    int code;
    char msg[512];
} eng_error;

/* Helpers for code built on the engine (trainer, tools) that reports errors the
 * engine's way. eng_fail records a failure in err (may be NULL) and returns code,
 * for `return eng_fail(...)`. */
int eng_fail(eng_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Read a whole regular file of at most 128 MiB into a NUL-terminated malloc'd buffer
 * (*len may be NULL). ENG_EIO with a message naming the file when it cannot be read or
 * is not a regular file (a FIFO is refused without blocking), ENG_EFORMAT when larger. */
int eng_read_file(const char *path, char **out, size_t *len, eng_error *err);

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
    ENG_TASK_TRANSLATE = 3, /* MarianMTModel: encoder-decoder, eng_translate */
} eng_task;

const char *eng_task_name(eng_task t); /* "embed", "classify", "qa", "translate" */

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
    const char *precision;    /* linear layers: "fp32" | "bf16" | "int8" | "fp16" (eng_model_opts) */
    const char *kernel;       /* the kernel they run on: "avx512" (fp32), "avx512_vnni",
                               * "avx2", "avx512_bf16", "scalar", "gemm" (unpacked), or on
                               * CUDA "cublas" (fp32), "cublas_fp16", "cublas_bf16" */
    size_t weight_bytes;      /* host memory of the weights (block + packings) */
} eng_model_info;

typedef struct eng_model eng_model;

/* Load a Hugging Face model folder (config.json + model.safetensors + tokenizer).
 * Weights are converted to one immutable fp32 block. Refcount starts at 1. */
int eng_model_load(const char *dir, eng_model **out, eng_error *err);

/* Load options. backend: the backend the model's contexts will run on (NULL: "cpu"; as
 * eng_ctx_opts.backend), which decides what precision means:
 *  - on the CPU, precision is the linear layers' weight format, NULL or "fp32" (packed
 *    fp32: bitwise the reference results), "bf16" (weights bf16, fp32 accumulation) or
 *    "int8" (weights per output channel, activations per row, int32 sums). The packed
 *    layers' fp32 originals are released (one copy of the weights); other backends get
 *    them rebuilt from the packing.
 *  - on CUDA, "fp32" (cuBLAS fp32), "fp16" or "bf16": the linear layers' weights are
 *    converted on the device once per model version and device (only the other weights
 *    go up in fp32: embeddings, norms, biases, heads) and run as cublasGemmEx with 16-bit
 *    inputs and fp32 accumulation; activations are converted per call. BERT family: the
 *    encoder's and the [CLS] heads' square layers; Marian: every attention (self and
 *    cross) and FFN projection and the lm head (a 16-bit copy beside the fp32 embedding
 *    it is tied to, which lookups read; the KV cache stays fp32). No CPU packing is made
 *    (the host keeps the fp32 block).
 * int8 on CUDA and fp16 on the CPU are refused (ENG_EUNSUPPORTED, naming both). Layer
 * norms, softmax, attention and the residual stream stay fp32 everywhere. */
typedef struct eng_model_opts {
    const char *precision;
    const char *backend;
} eng_model_opts;

/* eng_model_load with options (o may be NULL); ENG_EINVAL for an unknown precision,
 * ENG_EUNSUPPORTED for one the backend cannot run (eng_precision_check). */
int eng_model_load_opts(const char *dir, const eng_model_opts *o, eng_model **out,
                        eng_error *err);

/* 1 if s names a precision ("fp32", "bf16", "int8", "fp16"). */
int eng_precision_valid(const char *s);

/* ENG_OK if backend (NULL: cpu) runs precision (NULL: fp32), else ENG_EINVAL (unknown
 * precision or backend) or ENG_EUNSUPPORTED with the reason (int8 is CPU only, fp16 CUDA
 * only). Whether the device is present is eng_backend_check's business. */
int eng_precision_check(const char *precision, const char *backend, eng_error *err);
eng_model *eng_model_ref(eng_model *m);   /* thread-safe */
void eng_model_unref(eng_model *m);       /* frees on last reference */
const eng_model_info *eng_model_get_info(const eng_model *m);
/* Device memory the version's weights hold, in bytes, summed over the devices it has
 * run on so far (a backend with its own memory: CUDA; the CPU shares the host block and
 * counts 0). Weights go to a device on the first run there. fp32 on CUDA: the whole fp32
 * block; fp16 / bf16: the block without the linear layers' fp32 weights (embeddings,
 * norms, biases, classifier heads) plus their 16-bit copies. Thread-safe. */
size_t eng_model_device_bytes(eng_model *m);
const eng_tokenizer *eng_model_tokenizer(const eng_model *m);

/* ---------------------------------------------------------------- contexts */

/* A compute context: a backend instance plus an activation arena. One per
 * worker thread; not thread-safe. threads: CPU threads this context may use
 * (<= 0: number of online cores). backend: "cpu" (default when NULL), "cuda" (device
 * 0), "cuda:N", or "auto" (a GPU when there is one, else the CPU). A backend this
 * build lacks is ENG_EUNSUPPORTED; a missing device ENG_EUNSUPPORTED naming it. */
typedef struct eng_ctx_opts {
    const char *backend;
    int threads;
} eng_ctx_opts;

typedef struct eng_ctx eng_ctx;

int eng_ctx_new(const eng_ctx_opts *opts, eng_ctx **out, eng_error *err);
void eng_ctx_free(eng_ctx *ctx);

/* The backend kinds of this build that have a device here ("cpu" first, "cuda" on a
 * GPU machine with a CUDA build); up to cap names into names; returns how many. */
int eng_backend_kinds(const char **names, int cap);

/* 1 if spec is a well-formed backend name of this build ("cpu", "cuda", "cuda:N",
 * "auto"), whether or not the device is present here; else 0. */
int eng_backend_name_valid(const char *spec);

/* ENG_OK if a context on spec (NULL: cpu) could start here: the kind is in this build and
 * its device is present ("auto" always can). Else ENG_EINVAL (malformed) or
 * ENG_EUNSUPPORTED with err naming the backend, the device and how many there are (for
 * start-up checks: no device is touched beyond counting them). */
int eng_backend_check(const char *spec, eng_error *err);

/* NULL while ctx's backend works, else why it stopped (a device fault: the context then
 * fails every run with ENG_EBACKEND and should be replaced). */
const char *eng_ctx_fault(const eng_ctx *ctx);
/* 1 when that fault is sticky: it broke the device for the whole process (a CUDA error
 * such as an illegal address, a launch failure or an uncorrectable ECC error poisons the
 * process's CUDA context), so a new context cannot help; the process must be restarted.
 * 0 when there is no fault or a new context may work. */
int eng_ctx_fault_sticky(const eng_ctx *ctx);
const char *eng_ctx_backend_name(const eng_ctx *ctx); /* the kind: "cpu", "cuda" */
int eng_ctx_device(const eng_ctx *ctx);               /* the device index within the kind */

/* Activation memory a context keeps between runs (its arena plus the backend's
 * scratch): it grows to the largest batch run and stays there until trimmed. */
typedef struct eng_ctx_stats {
    size_t reserved_bytes; /* held now */
    size_t peak_bytes;     /* the most a run needed since creation or the last trim */
} eng_ctx_stats;

void eng_ctx_get_stats(eng_ctx *ctx, eng_ctx_stats *out);

/* Gives back held activation memory so that at most keep_bytes stay reserved (the
 * next run grows it again as it needs), and resets peak_bytes (SIZE_MAX: only that).
 * Between runs only. Outputs do not change. */
void eng_ctx_trim(eng_ctx *ctx, size_t keep_bytes);

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
    /* Cost bounds (DESIGN §6), checked by eng_qa_windows_make before any window is
     * built, and by eng_qa_decode; beyond them: ENG_ETOOLONG with the reason. */
    int max_context_tokens; /* tokens of one context (0: ENG_QA_MAX_CONTEXT_TOKENS) */
    int max_windows;       /* windows per item (0: ceil(max_context_tokens / (max_seq_len / 2)),
                              at most ENG_QA_MAX_WINDOWS). Besides, an item gets at most
                              1 + ceil(context tokens / fair step) windows, the fair step
                              being (max_seq_len - 3 - doc_stride) / 2: a long question
                              cannot shrink the stride to a few tokens */
    long max_tokens;       /* tokens over the item's windows (0: max_windows * max_seq_len);
                              a caller bounding a whole request passes what is left of it */
    long max_decode_work;  /* windows x window tokens x min(max_answer_len, window) x top_k,
                              the span search's worst case (0: ENG_QA_MAX_DECODE_WORK) */
} eng_qa_opts;

#define ENG_QA_MAX_CONTEXT_TOKENS 16384 /* the server's max_text_bytes: <= 1 token a byte */
#define ENG_QA_MAX_WINDOWS 256
#define ENG_QA_MAX_DECODE_WORK (1L << 26)

void eng_qa_opts_default(eng_qa_opts *o);

/* Defaults for model info: max_seq_len capped by the model's, doc_stride at most half
 * a window, the cost bounds as above. */
void eng_qa_opts_for_model(const eng_model_info *info, eng_qa_opts *o);

/* The windows of one (question, context) pair: [CLS] q [SEP] ctx-chunk [SEP],
 * consecutive chunks overlapping by doc_stride tokens (the question is never
 * truncated, as in transformers' pipeline with a fast tokenizer). ENG_ETOOLONG
 * (with the numbers in err) when the pair needs more windows, tokens or decoding
 * work than o allows, before any window is built; ENG_EINVAL for bad options. */
typedef struct eng_qa_windows {
    eng_encoding *win;
    int n;
    long tokens; /* over the windows; on ENG_ETOOLONG > 0 only when o->max_tokens refused
                    them: the tokens they would have needed */
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
 * ENG_ETOOLONG when the span search would exceed o->max_decode_work; ENG_ENOMEM.
 * tok: the tokenizer that made the windows (answers are widened to whole words). */
int eng_qa_decode(const eng_tokenizer *tok, const eng_qa_windows *w, const float *start,
                  const float *end, const eng_qa_opts *o, eng_qa_answer *out, int *n_out);

/* Convenience: windows + logits + decode for one pair. */
int eng_qa(eng_ctx *ctx, eng_model *m, const char *question, const char *context,
           const eng_qa_opts *o, eng_qa_answer *out, int *n_out, eng_error *err);

/* ------------------------------------------------------ model publishing
 * Writing a model folder so that readers never see it half-written (DESIGN §5):
 * files go into a temporary sibling directory ("<parent>/.<name>.tmp-<pid>-XXXXXX"),
 * each is fsynced, then the directory is fsynced and renamed into place and the
 * parent fsynced. Temporary directories left by dead processes are removed by the
 * next eng_ckpt_begin for the same target. Shared by nlpd-train and the server. */

typedef struct eng_ckpt eng_ckpt;

/* Start writing the folder `dir` (its parent must exist). */
int eng_ckpt_begin(const char *dir, eng_ckpt **out, eng_error *err);
/* The temporary directory files go into (valid until commit/abort). */
const char *eng_ckpt_tmp_path(const eng_ckpt *c);
/* Write a file (name relative to the folder; "a/b" creates "a/"). */
int eng_ckpt_write(eng_ckpt *c, const char *name, const void *data, size_t len, eng_error *err);
/* Copy src_path into the folder as name. */
int eng_ckpt_copy(eng_ckpt *c, const char *src_path, const char *name, eng_error *err);

typedef struct eng_tensor_out {
    const char *name;
    const float *data; /* row-major fp32, numel = product of shape */
    int ndim;
    int64_t shape[4];
} eng_tensor_out;

/* Write an F32 safetensors file of n tensors, with "__metadata__": {"format": "pt"}. */
int eng_ckpt_write_safetensors(eng_ckpt *c, const char *name, const eng_tensor_out *t, int n,
                               eng_error *err);
/* fsync and rename into place (never over a folder that appeared meanwhile). If dir
 * exists: replace != 0 swaps it out atomically (renameat2 RENAME_EXCHANGE) and deletes
 * the old folder, else ENG_EINVAL. Frees c in every case. A failure before the folder
 * is complete removes the temporary directory; a failure at the last step (dir
 * appeared, no RENAME_EXCHANGE) leaves dir alone and keeps the finished folder as
 * "<dir>.unpublished-<pid>", which err names. */
int eng_ckpt_commit(eng_ckpt *c, int replace, eng_error *err);
/* Remove the temporary directory and free c (NULL is a no-op). */
void eng_ckpt_abort(eng_ckpt *c);

/* --------------------------------------------------------------- training
 * Fine-tuning a BERT-family sequence classifier (DESIGN §5): the encoder of a
 * base folder (any BERT/DistilBERT *Model, *ForSequenceClassification or a
 * sentence-transformers folder) plus a classification head (pooler/pre_classifier
 * and classifier as in transformers; created with the usual N(0, 0.02) init when
 * the base has none or its labels differ). Training runs on one context's backend;
 * an eng_trainer is not thread-safe. */

typedef enum eng_lr_schedule {
    ENG_LR_LINEAR = 0, /* linear warmup from 0, then linear decay to 0 at total_steps */
    ENG_LR_COSINE,     /* linear warmup, then half a cosine to 0 at total_steps */
    ENG_LR_CONSTANT,   /* linear warmup, then constant */
} eng_lr_schedule;

typedef struct eng_train_opts {
    int num_labels;             /* classes (>= 2, or >= 1 with multi_label) */
    const char *const *labels;  /* num_labels names, id order (copied) */
    int multi_label;            /* sigmoid + BCE per label instead of softmax + CE */
    float lr;                   /* peak learning rate (default 5e-5) */
    float weight_decay;         /* AdamW decoupled decay; never on biases/LayerNorm (0.01) */
    float beta1, beta2, adam_eps; /* (0.9, 0.999, 1e-8) */
    float max_grad_norm;        /* clip the global gradient norm; <= 0 off (1.0) */
    long total_steps;           /* optimizer steps planned (the schedule's length) */
    long warmup_steps;          /* steps of linear warmup (0) */
    eng_lr_schedule schedule;   /* (linear) */
    float dropout;              /* < 0: the base config's dropout rates (-1); else all rates */
    uint64_t seed;              /* head initialisation and dropout masks (42) */
    float init_std;             /* std of new head weights; <= 0: config initializer_range */
    int threads;                /* CPU threads (<= 0: online cores) */
    const char *backend;        /* "cpu" (NULL: cpu) */
    int head_only;              /* freeze the encoder: eng_trainer_step updates only the
                                   head (BERT pooler + classifier; DistilBERT pre_classifier
                                   + classifier); train it with eng_trainer_head_backward */
} eng_train_opts;

void eng_train_opts_default(eng_train_opts *o);

typedef struct eng_trainer eng_trainer;

int eng_trainer_new(const char *base_dir, const eng_train_opts *o, eng_trainer **out,
                    eng_error *err);
void eng_trainer_free(eng_trainer *t);
const eng_tokenizer *eng_trainer_tokenizer(const eng_trainer *t);
/* Longest input the model accepts, in tokens (position embeddings, tokenizer limit). */
int eng_trainer_max_seq_len(const eng_trainer *t);
/* Parameters in the model (for logs). */
size_t eng_trainer_num_params(const eng_trainer *t);

/* One micro-batch in training mode (dropout on): forward, loss, backward. Gradients
 * of loss_scale * mean loss are ADDED to the accumulated ones (loss_scale = 1 /
 * accumulation steps). labels[n]: class ids (single-label); targets[n * num_labels]
 * in [0, 1] (multi-label; labels NULL). *loss: the batch's mean loss (unscaled). */
int eng_trainer_backward(eng_trainer *t, const eng_encoding *const *enc, int n,
                         const int32_t *labels, const float *targets, float loss_scale,
                         float *loss, eng_error *err);

/* Set the schedule's length after creation (e.g. once the data is counted). */
int eng_trainer_set_schedule(eng_trainer *t, long total_steps, long warmup_steps,
                             eng_error *err);

typedef struct eng_step_info {
    long step;       /* optimizer steps done, this one included */
    float lr;        /* learning rate this step used */
    float grad_norm; /* global gradient norm before clipping */
} eng_step_info;

/* Optimizer step on the accumulated gradients: clip, AdamW at the scheduled rate,
 * then zero the gradients. info may be NULL. */
int eng_trainer_step(eng_trainer *t, eng_step_info *info, eng_error *err);

/* Eval-mode logits[n * num_labels] (dropout off), computed as eng_run_classify does. */
int eng_trainer_logits(eng_trainer *t, const eng_encoding *const *enc, int n, float *logits,
                       eng_error *err);

/* Head-only training on a frozen encoder: the encoder runs once per input (the
 * inference forward, dropout off) and the caller caches the head's input, the last
 * hidden state at [CLS] (what BERT's pooler and DistilBERT's pre_classifier read);
 * epochs then run over the cached vectors. feats[n * hidden]. */
int eng_trainer_features(eng_trainer *t, const eng_encoding *const *enc, int n, float *feats,
                         eng_error *err);
/* The hidden size (the length of one feature vector). */
int eng_trainer_hidden(const eng_trainer *t);
/* eng_trainer_backward for the head only, from cached features (dropout of the head
 * on): gradients of the head's parameters only. */
int eng_trainer_head_backward(eng_trainer *t, const float *feats, int n, const int32_t *labels,
                              const float *targets, float loss_scale, float *loss,
                              eng_error *err);
/* Eval-mode logits[n * num_labels] of the head on cached features; equal to
 * eng_trainer_logits on the inputs the features came from. */
int eng_trainer_head_logits(eng_trainer *t, const float *feats, int n, float *logits,
                            eng_error *err);

/* An extra file for eng_trainer_save (metrics, training record). */
typedef struct eng_file_out {
    const char *name;
    const void *data;
    size_t len;
} eng_file_out;

/* Publish the model as a Hugging Face *ForSequenceClassification folder at dir
 * (config.json with id2label/label2id, model.safetensors, the base's tokenizer
 * files, then extra[n_extra]) with eng_ckpt: complete or absent, never partial.
 * replace: an existing dir is swapped out (else ENG_EINVAL). */
int eng_trainer_save(eng_trainer *t, const char *dir, const eng_file_out *extra, int n_extra,
                     int replace, eng_error *err);

/* ------------------------------------------------------------ translation
 * MarianMTModel folders (OPUS-MT: config.json, model.safetensors, source.spm,
 * target.spm, vocab.json, generation_config.json) load with eng_model_load as
 * task ENG_TASK_TRANSLATE (eng_model_tokenizer() is NULL for them: their
 * SentencePiece tokenizer is used through the functions below). Token ids and
 * texts equal transformers' MarianTokenizer and model.generate() (greedy and
 * beam search) on the same weights. */

typedef struct eng_translate_opts {
    int beam_size;      /* num_beams; 0: generation_config.json's (1 = greedy) */
    int max_length;     /* target length limit counting the decoder start token, as
                           transformers' max_length; 0: generation_config.json's */
    int max_new_tokens; /* > 0: max_length = max_new_tokens + 1 (overrides max_length) */
    int max_input_tokens; /* source truncation, </s> included; 0: the model's maximum */
    float length_penalty; /* NAN: generation_config.json's */
    const char *target_lang_token; /* e.g. ">>por<<" for multi-target models: prepended to
                                      every source text; NULL: none */
    /* Optional: called between decode steps; nonzero stops the search, which
     * then fails with ENG_ECANCELLED (e.g. the caller's deadline passed). */
    int (*should_stop)(void *arg);
    void *stop_arg;
} eng_translate_opts;

void eng_translate_opts_default(eng_translate_opts *o);

/* Static facts of a translation model for routing and validation. */
typedef struct eng_translator_info {
    const char *source_lang, *target_lang; /* tokenizer_config.json ("" when absent) */
    const char *const *lang_tokens; /* the vocabulary's ">>xx<<" target tokens */
    int n_lang_tokens;
    int num_beams, max_length;      /* generation_config.json defaults */
    float length_penalty;
    int max_input_tokens;           /* longest source, </s> included */
} eng_translator_info;

/* 0, or ENG_EINVAL when m is not a translation model. */
int eng_translator_get_info(const eng_model *m, eng_translator_info *out);

/* Source text -> ids + </s> (MarianTokenizer), truncated to max_len tokens (<= 0:
 * the model's maximum); out->truncated = tokens dropped. Offsets are not tracked.
 * Thread-safe. Suits the batcher: tokenise on the request thread, run later. */
int eng_translate_encode(const eng_model *m, const char *text, size_t len, int max_len,
                         eng_encoding *out, eng_error *err);

/* Target ids -> text: decode(ids, skip_special_tokens=True). *text is malloc'd. */
int eng_translate_decode(const eng_model *m, const int32_t *ids, int n, char **text,
                         eng_error *err);

/* One translation. */
typedef struct eng_translation {
    char *text;      /* malloc'd detokenised target text */
    int32_t *ids;    /* malloc'd generated ids, decoder start excluded, final </s> included
                        when generated */
    int n_ids;
    float score;     /* beam search: sum of log-probabilities / length ^ length_penalty
                        (transformers' sequences_scores); greedy: 0 */
    int src_tokens;  /* source tokens fed to the encoder (</s> included) */
    int truncated;   /* source tokens dropped by truncation: report a warning */
} eng_translation;

void eng_translation_free(eng_translation *t); /* frees text and ids, keeps t reusable */

/* Generate for n tokenised sources (from eng_translate_encode) in one batch:
 * out[i].ids / n_ids / score (text left NULL, src_tokens / truncated copied from
 * the encodings). Sentences leave the batch as they finish; a sentence's result
 * does not depend on the rest of the batch. */
int eng_translate_ids(eng_ctx *ctx, eng_model *m, const eng_encoding *const *src, int n,
                      const eng_translate_opts *o, eng_translation *out, eng_error *err);

/* Convenience: encode, generate and decode n texts (NUL-terminated). */
int eng_translate(eng_ctx *ctx, eng_model *m, const char *const *texts, int n,
                  const eng_translate_opts *o, eng_translation *out, eng_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NLPD_ENGINE_H */
