/* util.h - small internal helpers shared by engine modules (eng_fail and
 * eng_read_file are public: nlpd_engine.h). */
#ifndef NLPD_UTIL_H
#define NLPD_UTIL_H

#include <stddef.h>

#include "nlpd_engine.h"

/* Caps on the files a model folder may hand us (a hostile folder must not make
 * us read without bound): JSON configs, and tokenizer files (tokenizer.json,
 * vocab.txt, vocab.json, *.spm). */
#define ENG_MAX_CONFIG_BYTES ((size_t)16 << 20)
#define ENG_MAX_TOKENIZER_BYTES ((size_t)128 << 20)
#define ENG_MAX_FILE_BYTES ENG_MAX_TOKENIZER_BYTES /* eng_read_file's default */

/* Read a whole regular file of at most max_bytes into a NUL-terminated buffer.
 * ENG_EIO naming the file when it cannot be opened or read or is not a regular
 * file (a FIFO or device is refused without blocking); ENG_EFORMAT when it is
 * larger than max_bytes; ENG_ENOMEM. (eng_read_file: ENG_MAX_FILE_BYTES.) */
int eng_read_file_max(const char *path, size_t max_bytes, char **out, size_t *len,
                      eng_error *err);

/* Join dir and name into buf; ENG_EINVAL if it does not fit. */
int eng_path_join(char *buf, size_t cap, const char *dir, const char *name);

/* Read dir/name (at most ENG_MAX_CONFIG_BYTES) as a JSON object (free with cJSON_Delete).
 * On failure NULL with *rc ENG_EINVAL (path too long), ENG_EIO or ENG_EFORMAT (not a
 * JSON object, or too large). With
 * optional set, a missing file gives NULL with *rc ENG_OK. */
struct cJSON *eng_read_json(const char *dir, const char *name, int optional, int *rc,
                            eng_error *err);

/* Work counter for tests: the tokenizers' inner loops add the steps they take
 * (bytes scanned, lookups tried), so a unit test can check by counting, not by
 * timing, that their cost stays linear in the input. Thread-local; only ever
 * incremented by the engine. */
#ifdef __cplusplus
extern thread_local unsigned long long eng_tok_steps;
#else
extern _Thread_local unsigned long long eng_tok_steps;
#endif
#define ENG_TOK_STEP(n) (eng_tok_steps += (unsigned long long)(n))

/* Test seam in checkpoint.c: the renameat2 eng_ckpt_commit calls. */
extern int (*eng_ckpt_renameat2)(int olddirfd, const char *oldpath, int newdirfd,
                                 const char *newpath, unsigned int flags);

#endif
