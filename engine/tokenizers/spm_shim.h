/* spm_shim.h - a small C interface over Debian's SentencePiece library (C++),
 * implemented in spm_shim.cc, the engine's only C++ file. Only what the Marian
 * tokenizer needs: load a model, text -> pieces, pieces -> text. */
#ifndef NLPD_SPM_SHIM_H
#define NLPD_SPM_SHIM_H

#include <stddef.h>

#include "nlpd_engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eng_spm eng_spm;

/* Load a SentencePiece model file (.spm / .model protobuf). 0 or ENG_EIO /
 * ENG_EFORMAT / ENG_ENOMEM with a message naming the file. */
int eng_spm_load(const char *path, eng_spm **out, eng_error *err);
void eng_spm_free(eng_spm *spm);

/* Called once per piece, in order; piece is NOT NUL-terminated. A non-zero
 * return stops the encoding and is returned by eng_spm_encode. */
typedef int (*eng_spm_piece_fn)(const char *piece, size_t len, void *user);

/* Segment text into pieces as this library's SentencePieceProcessor::Encode
 * (text, &pieces): unknown characters come back as their normalised text.
 * Thread-safe on a shared eng_spm. Returns 0, the callback's non-zero value,
 * ENG_ENOMEM or ENG_EINVAL (the library refused). NOTE: Debian's 0.1.97 breaks
 * ties between equal-scoring segmentations differently from the 0.2 releases
 * transformers users run; spm_unigram.h re-segments the normalised text. */
int eng_spm_encode(const eng_spm *spm, const char *text, size_t len, eng_spm_piece_fn fn,
                   void *user);

/* Detokenise n pieces (pieces[i] of lens[i] bytes) as SentencePieceProcessor::
 * Decode(pieces) (= Python's sp.decode_pieces). *out is malloc'd and
 * NUL-terminated, *out_len its length. 0, ENG_ENOMEM or ENG_EINVAL. */
int eng_spm_decode(const eng_spm *spm, const char *const *pieces, const size_t *lens, int n,
                   char **out, size_t *out_len);

/* Number of pieces in the model's own vocabulary. */
int eng_spm_size(const eng_spm *spm);

/* The normaliser's output for text (NFKC rules, U+2581 for spaces, dummy
 * prefix): the concatenation of the pieces Encode returns, which partition
 * it. *out is malloc'd and NUL-terminated. 0, ENG_ENOMEM or ENG_EINVAL. */
int eng_spm_normalize(const eng_spm *spm, const char *text, size_t len, char **out,
                      size_t *out_len);

/* Piece kinds, as in the model proto (user-defined pieces cannot be told
 * from normal ones through this library version's API: both are NORMAL). */
enum { ENG_SPM_NORMAL = 1, ENG_SPM_UNKNOWN, ENG_SPM_CONTROL, ENG_SPM_UNUSED, ENG_SPM_BYTE };

/* Piece id of the model (0 <= id < eng_spm_size): its text, score and kind. */
void eng_spm_piece(const eng_spm *spm, int id, const char **piece, size_t *len, float *score,
                   int *kind);
int eng_spm_unk_id(const eng_spm *spm);

#ifdef __cplusplus
}
#endif
#endif
