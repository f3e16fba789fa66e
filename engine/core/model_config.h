/* model_config.h - the parts of a Hugging Face config.json that nlpd uses,
 * normalised across BERT and DistilBERT naming. */
#ifndef NLPD_MODEL_CONFIG_H
#define NLPD_MODEL_CONFIG_H

#include "backend/backend.h"
#include "nlpd_engine.h"

typedef enum eng_family { ENG_FAMILY_BERT, ENG_FAMILY_DISTILBERT } eng_family;

typedef struct eng_model_config {
    char architecture[96];
    char model_type[32];
    eng_family family;
    eng_task task;
    int hidden, layers, heads, intermediate;
    int vocab, max_positions, type_vocab; /* type_vocab 0 for DistilBERT */
    float ln_eps;
    eng_act act;
    int num_labels;
    int multi_label;
    char **labels; /* num_labels strings */
} eng_model_config;

/* Parse <dir>/config.json. Unknown architectures and unsupported options are
 * refused with a message naming the file and the key. */
int eng_model_config_load(const char *dir, eng_model_config *cfg, eng_error *err);
void eng_model_config_free(eng_model_config *cfg);

#endif
