/* lang_pairs.c - see lang_pairs.h. */
#include "lang_pairs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* The code inside a ">>xx<<" token into code[cap]; 0 when it is not one or too long. */
static int token_code(const char *tok, char *code, size_t cap)
{
    size_t n = strlen(tok);
    if (n < 5 || strncmp(tok, ">>", 2) != 0 || strcmp(tok + n - 2, "<<") != 0 || n - 4 >= cap)
        return 0;
    memcpy(code, tok + 2, n - 4);
    code[n - 4] = 0;
    return srv_lang_code_valid(code);
}

static int has_target(const srv_lang_pair *pairs, int n, const char *target)
{
    for (int i = 0; i < n; i++)
        if (strcasecmp(pairs[i].target, target) == 0)
            return 1;
    return 0;
}

int srv_lang_pairs_build(const srv_model_conf *c, const eng_model *em, srv_lang_pair **out,
                         int *nout, eng_translator_info *ti)
{
    *out = NULL;
    *nout = 0;
    if (eng_translator_get_info(em, ti))
        return -1;
    srv_lang_pair *pairs = calloc((size_t)ti->n_lang_tokens + 1, sizeof *pairs);
    if (!pairs)
        return -1;
    int n = 0;
    const char *src = c->source_lang ? c->source_lang : ti->source_lang;
    const char *tgt = c->target_lang ? c->target_lang : ti->target_lang;
    char code[32];
    if (tgt && *tgt) {
        srv_lang_pair *p = &pairs[n++];
        copy_str(p->source, sizeof p->source, src);
        copy_str(p->target, sizeof p->target, tgt);
        if (c->target_token)
            copy_str(p->token, sizeof p->token, c->target_token);
        for (int k = 0; !c->target_token && k < ti->n_lang_tokens; k++)
            if (token_code(ti->lang_tokens[k], code, sizeof code) && strcasecmp(code, tgt) == 0)
                copy_str(p->token, sizeof p->token, ti->lang_tokens[k]);
    }
    for (int k = 0; k < ti->n_lang_tokens; k++) {
        if (!token_code(ti->lang_tokens[k], code, sizeof code) || has_target(pairs, n, code) ||
            strlen(ti->lang_tokens[k]) >= sizeof pairs[0].token)
            continue;
        srv_lang_pair *p = &pairs[n++];
        copy_str(p->source, sizeof p->source, src);
        copy_str(p->target, sizeof p->target, code);
        copy_str(p->token, sizeof p->token, ti->lang_tokens[k]);
    }
    *out = pairs;
    *nout = n;
    return 0;
}

static int lang_eq(const char *want, const char *have)
{
    return !want || !*have || strcasecmp(want, have) == 0;
}

const srv_lang_pair *srv_lang_pairs_find(const srv_lang_pair *pairs, int n, const char *source,
                                         const char *target)
{
    for (int i = 0; i < n; i++)
        if (lang_eq(source, pairs[i].source) && lang_eq(target, pairs[i].target))
            return &pairs[i];
    return NULL;
}

const srv_lang_pair *srv_lang_pairs_find_exact(const srv_lang_pair *pairs, int n,
                                               const char *source, const char *target)
{
    for (int i = 0; source && target && i < n; i++)
        if (*pairs[i].source && strcasecmp(source, pairs[i].source) == 0 &&
            strcasecmp(target, pairs[i].target) == 0)
            return &pairs[i];
    return NULL;
}
