/* endpoint.h - the routes nlpd serves, as metric labels and handler keys. */
#ifndef NLPD_SRV_ENDPOINT_H
#define NLPD_SRV_ENDPOINT_H

typedef enum srv_endpoint {
    SRV_EP_EMBED = 0,
    SRV_EP_SENTIMENT,
    SRV_EP_CLASSIFY,
    SRV_EP_QA,
    SRV_EP_TRANSLATE,
    SRV_EP_FEEDBACK,
    SRV_EP_MODELS,   /* GET /v1/models and /v1/models/{name} */
    SRV_EP_HEALTHZ,
    SRV_EP_READYZ,
    SRV_EP_METRICS,
    SRV_EP_ADMIN,    /* GET .../versions, POST /v1/admin/... */
    SRV_EP_OPENAI_EMBEDDINGS, /* OpenAI POST /v1/embeddings */
    SRV_EP_TEI_EMBED,         /* text-embeddings-inference POST /embed */
    SRV_EP_TEI_PREDICT,       /* TEI POST /predict */
    SRV_EP_TEI_TOKENIZE,      /* TEI POST /tokenize */
    SRV_EP_OPENAPI,           /* GET /openapi.json */
    SRV_EP_OTHER,    /* no such route */
    SRV_EP_COUNT
} srv_endpoint;

/* Label value: "embed", "sentiment", ..., "other". */
static inline const char *srv_endpoint_name(srv_endpoint e)
{
    static const char *const names[SRV_EP_COUNT] = {
        "embed", "sentiment", "classify", "qa", "translate", "feedback",
        "models", "healthz", "readyz", "metrics", "admin", "embeddings", "tei_embed",
        "tei_predict", "tei_tokenize", "openapi", "other"};
    return (unsigned)e < SRV_EP_COUNT ? names[e] : "other";
}

#endif
