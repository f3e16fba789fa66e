/* marian_tok.h - the tokenizer of Marian (OPUS-MT) translation models, with the
 * ids of Hugging Face's MarianTokenizer (transformers 4.44.2, a "slow"
 * tokenizer): SentencePiece pieces (source.spm / target.spm) looked up in
 * vocab.json, </s> appended. Internal to the engine; exposed for tests.
 *
 * Encoding one text (MarianTokenizer.__call__ -> tokenize -> _tokenize):
 *   1. split out added tokens written literally in the text (</s>, <unk>,
 *      <pad>, and any added_tokens_decoder entry), longest match first;
 *   2. in every other chunk: a language code matching the regex >>.+<< at the
 *      chunk's start becomes one token; every match of that regex anywhere in
 *      the chunk is deleted; the rest is segmented by SentencePiece;
 *   3. pieces -> ids through vocab.json (pieces it lacks -> <unk>);
 *   4. truncation to max_len - 1 tokens, then </s>.
 * Decoding (decode(ids, skip_special_tokens=True)): special ids dropped, ids ->
 * pieces (vocab.json inverted), target.spm detokenises, U+2581 -> ' ', Python
 * str.strip(), then the clean_up_tokenization_spaces replacements when the
 * tokenizer_config says so (the default).
 *
 * Immutable after load: any number of threads may encode/decode at once. */
#ifndef NLPD_MARIAN_TOK_H
#define NLPD_MARIAN_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_engine.h"

typedef struct eng_marian_tok eng_marian_tok;

/* Load source.spm, target.spm, vocab.json and (optional) tokenizer_config.json /
 * special_tokens_map.json from a model folder. Refuses separate_vocabs folders
 * (target_vocab.json) and added tokens with single_word set. */
int eng_marian_tok_load(const char *dir, eng_marian_tok **out, eng_error *err);
void eng_marian_tok_free(eng_marian_tok *t);

/* Encode text (UTF-8, len bytes) with the source (target = 0) or target
 * (target = 1) SentencePiece model into out (reset first): ids with </s>;
 * type ids 0; seq ids 0 (-1 for </s>); offsets are not tracked (0, 0).
 * max_len > 0: keep at most max_len tokens including </s>, out->truncated =
 * tokens dropped. ENG_EUTF8 for invalid UTF-8. */
int eng_marian_tok_encode(const eng_marian_tok *t, int target, const char *text, size_t len,
                          int max_len, eng_encoding *out, eng_error *err);

/* Pieces of text before the id lookup (steps 1-2 above; no </s>), for tests:
 * fn is called per piece in order. */
typedef int (*eng_marian_piece_fn)(const char *piece, size_t len, void *user);
int eng_marian_tok_pieces(const eng_marian_tok *t, int target, const char *text, size_t len,
                          eng_marian_piece_fn fn, void *user, eng_error *err);

/* Target ids -> text as decode(ids, skip_special_tokens=True). *out is malloc'd,
 * NUL-terminated; *out_len (optional) its length. */
int eng_marian_tok_decode(const eng_marian_tok *t, const int32_t *ids, int n, char **out,
                          size_t *out_len, eng_error *err);

int eng_marian_tok_vocab_size(const eng_marian_tok *t);       /* ids 0 .. size-1 */
int32_t eng_marian_tok_id(const eng_marian_tok *t, const char *piece); /* -1 if absent */
const char *eng_marian_tok_piece(const eng_marian_tok *t, int32_t id);  /* NULL if none */
int32_t eng_marian_tok_eos_id(const eng_marian_tok *t);
int32_t eng_marian_tok_pad_id(const eng_marian_tok *t);
int32_t eng_marian_tok_unk_id(const eng_marian_tok *t);
int eng_marian_tok_model_max_length(const eng_marian_tok *t); /* 512 if unset */
/* tokenizer_config.json source_lang / target_lang ("" when absent). */
const char *eng_marian_tok_source_lang(const eng_marian_tok *t);
const char *eng_marian_tok_target_lang(const eng_marian_tok *t);
/* Language-code tokens of the vocabulary (">>por<<", ...), in vocab.json order. */
int eng_marian_tok_lang_codes(const eng_marian_tok *t, const char *const **codes);

#endif
