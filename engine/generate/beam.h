/* beam.h - greedy and beam search for encoder-decoder models, with the results
 * of transformers 4.44.2's generate() (tests/reference/BEAM_SEARCH.md describes
 * the algorithm being reproduced).
 *
 * The search owns the bookkeeping (hypotheses, scores, finished lists, which
 * sentences are still decoding) on the host; a decoder supplies logits for the
 * live hypotheses one step at a time and keeps their self-attention KV cache
 * in "slots" that the search assigns (a hypothesis keeps its slot from step to
 * step; when beams fork, the search asks the decoder to copy a slot). Log-
 * softmax, logits processors and top-k run on the backend. Sentences leave the
 * batch as soon as they are finished, so the rest decode faster; the results
 * of a sentence do not depend on the other sentences of the batch. */
#ifndef NLPD_BEAM_H
#define NLPD_BEAM_H

#include <stdint.h>

#include "backend/backend.h"
#include "nlpd_engine.h"

/* Generation settings (generation_config.json + request options). */
typedef struct eng_search_opts {
    int num_beams;        /* 1: greedy */
    int max_length;       /* decoder length limit, the start token included (>= 2) */
    int min_length;       /* </s> is banned while the length is below this (0: off) */
    float length_penalty; /* beam: score = sum logprobs / generated_len ^ length_penalty */
    int early_stopping;   /* 0 false (heuristic), 1 true, 2 "never" */
    int32_t start_id;     /* decoder_start_token_id */
    int32_t eos_id;
    int32_t forced_eos_id; /* forced at the last position; -1 none */
    const int32_t *bad_ids; /* single-token bad_words_ids (never generated) */
    int n_bad;
    int renormalize;      /* renormalize_logits: log-softmax after the processors (beam) */
    int (*should_stop)(void *arg); /* optional, between steps: nonzero -> ENG_ECANCELLED */
    void *stop_arg;
} eng_search_opts;

/* The decoder side of the search. */
typedef struct eng_decoder {
    void *user;
    int vocab;
    /* Logits [nh, vocab] (backend memory, row stride vocab, final bias included) of nh
     * live hypotheses: hypothesis i feeds token tok[i] at position pos, belongs to
     * sentence sent[i] and keeps its KV cache in slot slot[i] (positions 0..pos-1
     * already there; this step appends position pos). All arrays are host memory.
     * NULL on failure (message in err). */
    float *(*step)(void *user, int nh, const int32_t *tok, const int32_t *sent,
                   const int32_t *slot, int pos, eng_error *err);
    /* Copy the first rows cached positions of slot src[i] into slot dst[i], i < n. */
    int (*copy_slots)(void *user, int n, const int32_t *dst, const int32_t *src, int rows,
                      eng_error *err);
} eng_decoder;

/* One sentence's result: generated ids without the start token; the final </s>
 * included when the hypothesis ended with it. score: beam search's sequence score
 * (sum of log-probabilities / length ^ length_penalty), 0 for greedy. */
typedef struct eng_search_result {
    int32_t *ids; /* malloc'd */
    int n;
    float score;
} eng_search_result;

/* Slots a search over nsent sentences uses: nsent * num_beams (slot ids 0..that-1). */
int eng_search_slots(int nsent, const eng_search_opts *o);

/* Run the search for nsent sentences; out[nsent] is filled (free with
 * eng_search_result_free). Returns 0 or a negative ENG_E* (err says why). */
int eng_search(eng_backend *be, const eng_decoder *d, int nsent, const eng_search_opts *o,
               eng_search_result *out, eng_error *err);
void eng_search_result_free(eng_search_result *r, int n);

/* ------------------------------------------------ beam bookkeeping (tests) */

/* transformers' BeamHypotheses: the num_beams best finished hypotheses. */
typedef struct eng_beam_hyp {
    double score;
    int32_t *ids; /* owned */
    int n;
    int eos; /* ended with </s> (appended on output) */
} eng_beam_hyp;

typedef struct eng_beam_list {
    eng_beam_hyp *hyp; /* num_beams entries, insertion order */
    int n, cap;
    double worst;
} eng_beam_list;

int eng_beam_list_init(eng_beam_list *l, int num_beams);
void eng_beam_list_free(eng_beam_list *l);
/* add(hyp, sum_logprobs, generated_len): copies ids. 0 or ENG_ENOMEM. */
int eng_beam_list_add(eng_beam_list *l, const int32_t *ids, int n, int eos, float sum_logprobs,
                      int generated_len, float length_penalty);
/* is_done(best_sum_logprobs, cur_len) with decoder_prompt_len 1. */
int eng_beam_list_is_done(const eng_beam_list *l, float best_sum_logprobs, int cur_len,
                          int early_stopping, float length_penalty, int max_length);
/* The hypothesis finalize() returns: best score, the last added among equals. */
const eng_beam_hyp *eng_beam_list_best(const eng_beam_list *l);

#endif
