/* lang_pairs.h - the language pairs a translation model serves, derived from
 * its folder (tokenizer_config.json's source/target languages, the >>xx<<
 * tokens of its vocabulary) and the config's overrides. Computed per model
 * version, so a hot swap refreshes them. */
#ifndef NLPD_SRV_LANG_PAIRS_H
#define NLPD_SRV_LANG_PAIRS_H

#include "config.h"
#include "nlpd_engine.h"

typedef struct srv_lang_pair {
    char source[32];  /* "" when the model does not say (reachable by name only) */
    char target[32];
    char token[40];   /* ">>xx<<" prepended to each text; "" for none */
} srv_lang_pair;

/* The pairs of translation model em under config c, default first (config
 * source_lang -> target_lang with target_token or the vocabulary's
 * >>target_lang<< token), then source -> xx for each other >>xx<< token; and
 * the model's generation defaults in *ti. *pairs is malloc'd. 0 or -1. */
int srv_lang_pairs_build(const srv_model_conf *c, const eng_model *em, srv_lang_pair **pairs,
                         int *n, eng_translator_info *ti);

/* The pair of pairs[0..n) matching source and target (NULL: any; a side a
 * pair does not declare matches anything), or NULL. */
const srv_lang_pair *srv_lang_pairs_find(const srv_lang_pair *pairs, int n, const char *source,
                                         const char *target);

/* The pair translating exactly source -> target (both declared, compared
 * case-insensitively), or NULL. */
const srv_lang_pair *srv_lang_pairs_find_exact(const srv_lang_pair *pairs, int n,
                                               const char *source, const char *target);

#endif
