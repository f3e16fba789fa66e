/* translate.c - the public translation API (nlpd_engine.h) over marian.c,
 * marian_tok.c and beam.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/marian.h"
#include "nlpd_engine.h"
#include "core/util.h"

void eng_translate_opts_default(eng_translate_opts *o)
{
    memset(o, 0, sizeof *o);
    o->length_penalty = NAN;
}

static const eng_marian *marian_of(const eng_model *m, eng_error *err)
{
    const eng_marian *mm = m ? eng_model_marian(m) : NULL;
    if (!mm)
        eng_fail(err, ENG_EINVAL, "translation needs a MarianMTModel; %s is not one",
                 m ? eng_model_get_info(m)->architecture : "NULL");
    return mm;
}

int eng_translator_get_info(const eng_model *m, eng_translator_info *out)
{
    const eng_marian *mm = marian_of(m, NULL);
    if (!mm)
        return ENG_EINVAL;
    const eng_marian_tok *t = eng_marian_tokenizer(mm);
    const eng_search_opts *g = eng_marian_generation(mm);
    out->source_lang = eng_marian_tok_source_lang(t);
    out->target_lang = eng_marian_tok_target_lang(t);
    out->n_lang_tokens = eng_marian_tok_lang_codes(t, &out->lang_tokens);
    out->num_beams = g->num_beams;
    out->max_length = g->max_length;
    out->length_penalty = g->length_penalty;
    out->max_input_tokens = eng_marian_max_source(mm);
    return ENG_OK;
}

int eng_translate_encode(const eng_model *m, const char *text, size_t len, int max_len,
                         eng_encoding *out, eng_error *err)
{
    const eng_marian *mm = marian_of(m, err);
    if (!mm)
        return ENG_EINVAL;
    int lim = eng_marian_max_source(mm);
    if (max_len <= 0 || max_len > lim)
        max_len = lim;
    return eng_marian_tok_encode(eng_marian_tokenizer(mm), 0, text, len, max_len, out, err);
}

int eng_translate_decode(const eng_model *m, const int32_t *ids, int n, char **text,
                         eng_error *err)
{
    const eng_marian *mm = marian_of(m, err);
    if (!mm)
        return ENG_EINVAL;
    return eng_marian_tok_decode(eng_marian_tokenizer(mm), ids, n, text, NULL, err);
}

void eng_translation_free(eng_translation *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->ids);
    t->text = NULL;
    t->ids = NULL;
    t->n_ids = 0;
}

/* The folder's generation settings with the request's overrides. */
static int search_opts(const eng_marian *mm, const eng_translate_opts *o, eng_search_opts *s,
                       eng_error *err)
{
    *s = *eng_marian_generation(mm);
    s->should_stop = NULL;
    s->stop_arg = NULL;
    if (!o)
        return ENG_OK;
    s->should_stop = o->should_stop;
    s->stop_arg = o->stop_arg;
    if (o->beam_size < 0 || o->beam_size > 64)
        return eng_fail(err, ENG_EINVAL, "beam_size must be in [1, 64]");
    if (o->beam_size > 0)
        s->num_beams = o->beam_size;
    if (o->max_new_tokens > 0)
        s->max_length = o->max_new_tokens + 1;
    else if (o->max_length > 0)
        s->max_length = o->max_length;
    if (o->max_length < 0 || o->max_new_tokens < 0 || s->max_length < 2)
        return eng_fail(err, ENG_EINVAL, "max_length must be >= 2 (max_new_tokens >= 1)");
    if (s->max_length > eng_marian_max_positions(mm))
        s->max_length = eng_marian_max_positions(mm);
    if (!isnan(o->length_penalty))
        s->length_penalty = o->length_penalty;
    return ENG_OK;
}

int eng_translate_ids(eng_ctx *ctx, eng_model *m, const eng_encoding *const *src, int n,
                      const eng_translate_opts *o, eng_translation *out, eng_error *err)
{
    const eng_marian *mm = marian_of(m, err);
    eng_search_opts s;
    int rc;
    if (!mm)
        return ENG_EINVAL;
    if (!ctx || !src || !out || n < 0)
        return eng_fail(err, ENG_EINVAL, "NULL argument");
    if ((rc = search_opts(mm, o, &s, err)))
        return rc;
    memset(out, 0, sizeof *out * (size_t)n);
    if (n == 0)
        return ENG_OK;
    eng_search_result *res = calloc((size_t)n, sizeof *res);
    if (!res)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    eng_backend *be = eng_ctx_backend(ctx);
    if (!eng_backend_supports(be, ENG_OPS_CORE | ENG_OPS_GEN)) {
        free(res);
        return eng_fail(err, ENG_EUNSUPPORTED, "backend '%s' cannot translate (no "
                        "sequence-to-sequence ops)", be->ops->name);
    }
    const eng_marian *on = eng_model_marian_on(m, be, err); /* the weights on be */
    rc = on ? eng_marian_generate(on, be, src, n, &s, res, err) : err ? err->code : ENG_EBACKEND;
    for (int i = 0; !rc && i < n; i++) {
        out[i].ids = res[i].ids; /* ownership moves */
        res[i].ids = NULL;
        out[i].n_ids = res[i].n;
        out[i].score = res[i].score;
        out[i].src_tokens = src[i]->n;
        out[i].truncated = src[i]->truncated;
    }
    eng_search_result_free(res, n);
    free(res);
    return rc;
}

int eng_translate(eng_ctx *ctx, eng_model *m, const char *const *texts, int n,
                  const eng_translate_opts *o, eng_translation *out, eng_error *err)
{
    const eng_marian *mm = marian_of(m, err);
    if (!mm)
        return ENG_EINVAL;
    if (!texts || !out || n < 0)
        return eng_fail(err, ENG_EINVAL, "NULL argument");
    int rc = ENG_OK;
    memset(out, 0, sizeof *out * (size_t)n);
    eng_encoding *enc = calloc((size_t)(n ? n : 1), sizeof *enc);
    const eng_encoding **ptr = calloc((size_t)(n ? n : 1), sizeof *ptr);
    char *buf = NULL;
    if (!enc || !ptr) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    const char *lang = o ? o->target_lang_token : NULL;
    for (int i = 0; i < n && !rc; i++) {
        eng_encoding_init(&enc[i]);
        ptr[i] = &enc[i];
        const char *t = texts[i] ? texts[i] : "";
        size_t len = strlen(t);
        if (lang && *lang) { /* as a user writing ">>por<< text" */
            free(buf);
            size_t ll = strlen(lang);
            if (!(buf = malloc(ll + len + 2))) {
                rc = eng_fail(err, ENG_ENOMEM, "out of memory");
                break;
            }
            memcpy(buf, lang, ll);
            buf[ll] = ' ';
            memcpy(buf + ll + 1, t, len + 1);
            t = buf;
            len += ll + 1;
        }
        rc = eng_translate_encode(m, t, len, o ? o->max_input_tokens : 0, &enc[i], err);
    }
    if (!rc)
        rc = eng_translate_ids(ctx, m, ptr, n, o, out, err);
    for (int i = 0; !rc && i < n; i++)
        rc = eng_translate_decode(m, out[i].ids, out[i].n_ids, &out[i].text, err);
    if (rc)
        for (int i = 0; i < n; i++)
            eng_translation_free(&out[i]);
done:
    for (int i = 0; enc && ptr && i < n; i++)
        if (ptr[i])
            eng_encoding_free(&enc[i]);
    free(enc);
    free(ptr);
    free(buf);
    return rc;
}
