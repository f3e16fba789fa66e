/* train.h - internals of the trainer (engine/train/train.c) shared with the checkpoint
 * code and the tests: the parameter table of a BERT-family classifier. */
#ifndef NLPD_TRAIN_H
#define NLPD_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "models/bert.h"
#include "nlpd_engine.h"

/* One parameter tensor under its Hugging Face name, as a slice of the weight block
 * (query/key/value are slices of the fused [3H, H] matrix). */
typedef struct eng_param {
    char name[160];  /* e.g. "bert.encoder.layer.0.attention.self.query.weight" */
    size_t off;      /* first float in eng_bert.block (and in the gradient block) */
    size_t numel;
    int ndim;
    int64_t shape[2];
    int decay;       /* AdamW weight decay applies (not biases, not LayerNorm) */
} eng_param;

/* The tensors of a BERT/DistilBERT *ForSequenceClassification in save order, named
 * with the family prefix ("bert." / "distilbert."). *out is malloc'd. */
int eng_bert_param_table(const eng_bert *b, eng_param **out, int *n, eng_error *err);

/* Test access to a trainer's state (host pointers on the CPU backend). */
const eng_param *eng_trainer_params(const eng_trainer *t, int *n);
float *eng_trainer_weights(eng_trainer *t);   /* the parameter block */
float *eng_trainer_grads(eng_trainer *t);     /* gradients, same layout */
const eng_bert *eng_trainer_bert(const eng_trainer *t);
/* Learning rate of optimizer step k (0-based) under the trainer's schedule. */
float eng_trainer_lr_at(const eng_trainer *t, long k);

#endif /* NLPD_TRAIN_H */
