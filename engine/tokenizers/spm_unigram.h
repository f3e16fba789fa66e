/* spm_unigram.h - SentencePiece unigram segmentation in C, identical to the
 * sentencepiece 0.2 releases (the ones Python users of transformers run).
 *
 * Why: Debian's libsentencepiece (0.1.97) accumulates path scores of its
 * Viterbi search in double, the 0.2 releases in float, so the two break ties
 * between equal-scoring segmentations differently ("777" -> 77|7 vs 7|77 in
 * some contexts). We keep the library for what is identical - model loading
 * and normalisation - and run the 0.2 search ourselves: best path over the
 * normalised text, candidates from each character start in order of
 * increasing piece length, score(piece) + best score so far in float, a new
 * candidate replaces the node only when strictly better; a character no
 * piece covers becomes <unk> with score min(normal scores) - 10. */
#ifndef NLPD_SPM_UNIGRAM_H
#define NLPD_SPM_UNIGRAM_H

#include <stddef.h>

#include "tokenizers/spm_shim.h"

typedef struct eng_unigram eng_unigram;

/* Index the normal pieces of a loaded model. 0 or ENG_ENOMEM. */
int eng_unigram_new(const eng_spm *spm, eng_unigram **out);
void eng_unigram_free(eng_unigram *u);

/* Normalise text with the library, segment it; fn gets each piece (text of
 * the normalised string; an uncovered character is its own piece) in order.
 * 0, fn's non-zero value, ENG_ENOMEM or ENG_EINVAL. */
int eng_unigram_encode(const eng_unigram *u, const char *text, size_t len, eng_spm_piece_fn fn,
                       void *user);

/* The segmentation of already-normalised text (for tests). */
int eng_unigram_segment(const eng_unigram *u, const char *norm, size_t n, eng_spm_piece_fn fn,
                        void *user);

#endif
