/* wordpiece.h - internals of the WordPiece tokenizer exposed for unit tests. */
#ifndef NLPD_WORDPIECE_H
#define NLPD_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_engine.h"

/* Normalisation switches of a BertNormalizer. */
enum {
    ENG_WP_CLEAN = 1,   /* clean_text: drop controls, NUL, U+FFFD; whitespace -> ' ' */
    ENG_WP_CJK = 2,     /* handle_chinese_chars: isolate CJK ideographs */
    ENG_WP_STRIP = 4,   /* strip_accents: NFD, then drop nonspacing marks */
    ENG_WP_LOWER = 8,   /* lowercase (full mapping of one code point) */
    ENG_WP_BERT = 16,   /* (load only) the normalizer is a BertNormalizer */
};

/* Normalise one code point with the given flags into out (cap >= 16 code points).
 * Returns the number written (0 when the character is dropped); *cjk is set to
 * 1 when the character is a CJK ideograph that must stand alone. */
int eng_wp_norm_char(unsigned flags, uint32_t cp, uint32_t *out, int *cjk);

/* Pre-tokenizer classes of a normalised code point (BertPreTokenizer). */
int eng_wp_is_space(uint32_t cp);
int eng_wp_is_punct(uint32_t cp);

/* Byte offset of the first invalid UTF-8 sequence in s[0, len), or -1 when valid.
 * Strict: rejects overlong forms, surrogates, code points above U+10FFFF. */
long eng_wp_utf8_invalid_at(const char *s, size_t len);

#endif
