/* api_compat.h - request parsing for the routes that speak other servers'
 * APIs: OpenAI POST /v1/embeddings and text-embeddings-inference (TEI)
 * POST /embed, /predict, /tokenize.
 *
 * Like api.h: pure functions over (body, length, limits), total on any input,
 * messages that never quote the client's input. They fill the common
 * srv_api_request (texts, n, list, model; srv_api_request_free frees it) and
 * the route's options in srv_compat_opts.
 */
#ifndef NLPD_SRV_API_COMPAT_H
#define NLPD_SRV_API_COMPAT_H

#include "api.h"

typedef enum srv_compat_kind {
    SRV_COMPAT_OPENAI_EMBED = 0, /* {"input", "model", "encoding_format", "dimensions", "user"} */
    SRV_COMPAT_TEI_EMBED,        /* {"inputs", "normalize", "truncate", "truncation_direction"} */
    SRV_COMPAT_TEI_PREDICT,      /* {"inputs", "raw_scores", "truncate", "truncation_direction"} */
    SRV_COMPAT_TEI_TOKENIZE,     /* {"inputs", "add_special_tokens"} */
} srv_compat_kind;

typedef struct srv_compat_opts {
    srv_compat_kind kind;
    int base64;             /* OpenAI: encoding_format "base64" */
    int dimensions;         /* OpenAI: 0 = not given */
    int normalize;          /* TEI /embed: default 1 */
    int truncate;           /* TEI: default 0 (too long -> 413) */
    int raw_scores;         /* TEI /predict: logits instead of probabilities */
    int add_special_tokens; /* TEI /tokenize: default 1 */
    int batch;              /* TEI /predict: inputs was a batch -> answer a list of lists */
    const char **pairs;     /* TEI /predict: n second texts (NULL entries: single text) */
    size_t *pair_lens;
} srv_compat_opts;

/* Parse the body of a compatible route. 0 and *req, *o filled, or -1 and *err
 * filled (req and o are then empty; freeing them is harmless). Statuses as in
 * api.h; OpenAI token-id arrays are refused with 422 unsupported_input. */
int srv_compat_parse(srv_compat_kind kind, const char *body, size_t len,
                     const srv_api_limits *lim, srv_api_request *req, srv_compat_opts *o,
                     srv_api_error *err);
void srv_compat_opts_free(srv_compat_opts *o);

/* Standard base64 (RFC 4648, padded) of n bytes into out[cap]; the length
 * written (NUL-terminated), or 0 when cap < 4 * ceil(n / 3) + 1. */
size_t srv_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap);

#endif
