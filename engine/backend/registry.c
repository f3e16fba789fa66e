/* registry.c - the kinds of compute backend this build has (cpu, and cuda when built
 * with it), and backends made from a config spec ("cpu", "cuda", "cuda:1", "auto"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/util.h"

static int cpu_device_count(void) { return 1; }

static int cpu_create(int device, int threads, eng_backend **out, eng_error *err)
{
    if (device != 0)
        return eng_fail(err, ENG_EINVAL, "backend cpu has one device (0), not %d", device);
    if (!(*out = eng_backend_cpu_new(threads)))
        return eng_fail(err, ENG_ENOMEM, "out of memory creating the cpu backend");
    return ENG_OK;
}

static const eng_backend_reg cpu_reg = {"cpu", cpu_device_count, cpu_create};

#ifdef NLPD_WITH_CUDA
extern const eng_backend_reg eng_cuda_backend_reg; /* cuda/backend_cuda.cu */
#endif

#define MAX_KINDS 8

static const eng_backend_reg *regs[MAX_KINDS] = {
    &cpu_reg,
#ifdef NLPD_WITH_CUDA
    &eng_cuda_backend_reg,
#endif
};
static int n_regs = 1
#ifdef NLPD_WITH_CUDA
                    + 1
#endif
    ;

int eng_backend_reg_count(void) { return n_regs; }

int eng_backend_register(const eng_backend_reg *r)
{
    if (!r || !r->name || !r->device_count || !r->create || n_regs == MAX_KINDS ||
        eng_backend_reg_find(r->name))
        return ENG_EINVAL;
    regs[n_regs++] = r;
    return ENG_OK;
}

const eng_backend_reg *eng_backend_reg_get(int i)
{
    return i >= 0 && i < eng_backend_reg_count() ? regs[i] : NULL;
}

const eng_backend_reg *eng_backend_reg_find(const char *name)
{
    for (int i = 0; i < eng_backend_reg_count(); i++)
        if (strcmp(regs[i]->name, name) == 0)
            return regs[i];
    return NULL;
}

int eng_backend_supports(const eng_backend *be, int parts)
{
    const eng_backend_ops *o = be->ops;
    if ((parts & ENG_OPS_CORE) &&
        (!o->core || !o->core->gemm || !o->core->bias_act || !o->core->add_layernorm ||
         !o->core->embed || !o->core->attention || !o->core->mean_pool || !o->core->gather_rows))
        return 0;
    if ((parts & ENG_OPS_GEN) &&
        (!o->gen || !o->gen->embed_scaled || !o->gen->attention_kv || !o->gen->copy_rows ||
         !o->gen->log_softmax || !o->gen->topk || !o->gen->bias_silu))
        return 0;
    if ((parts & ENG_OPS_TRAIN) &&
        (!o->train || !o->train->gemm_ex || !o->train->bias_act_train || !o->train->act_backward ||
         !o->train->layernorm_backward || !o->train->embed_backward || !o->train->attention_train ||
         !o->train->attention_backward || !o->train->dropout || !o->train->sum_rows ||
         !o->train->scatter_rows || !o->train->axpy || !o->train->cross_entropy ||
         !o->train->bce_logits || !o->train->sum_squares || !o->train->adamw))
        return 0;
    return 1;
}

/* "kind" or "kind:N" -> kind (in name) and device; -1 if malformed. */
static int parse_spec(const char *spec, char *name, size_t cap, int *device)
{
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (n == 0 || n >= cap)
        return -1;
    memcpy(name, spec, n);
    name[n] = 0;
    *device = 0;
    if (colon) {
        char *end;
        errno = 0;
        long d = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || d < 0 || d > 1024)
            return -1;
        *device = (int)d;
    }
    return 0;
}

int eng_backend_spec_valid(const char *spec)
{
    char name[32];
    int dev;
    if (!spec || parse_spec(spec, name, sizeof name, &dev))
        return 0;
    if (strcmp(name, "auto") == 0)
        return strchr(spec, ':') == NULL;
    return eng_backend_reg_find(name) != NULL;
}

static void kinds(char *buf, size_t cap)
{
    size_t w = 0;
    buf[0] = 0;
    for (int i = 0; i < eng_backend_reg_count() && w < cap; i++)
        w += (size_t)snprintf(buf + w, cap - w, "%s%s", i ? ", " : "", regs[i]->name);
}

/* The registered backend called name with device dev, or why there is none. */
static int find_device(const char *spec, const char *name, int dev, const eng_backend_reg **out,
                       eng_error *err)
{
    const eng_backend_reg *r = *out = eng_backend_reg_find(name);
    if (!r) {
        char have[128];
        kinds(have, sizeof have);
        return eng_fail(err, ENG_EUNSUPPORTED, "backend '%s' is not available (this build has: "
                        "%s)", spec, have);
    }
    int n = r->device_count();
    if (dev >= n)
        return eng_fail(err, ENG_EUNSUPPORTED, "backend '%s': no such device (%d %s device%s "
                        "present%s)", spec, n, r->name, n == 1 ? "" : "s",
                        n == 0 && strcmp(r->name, "cpu") ? ": no GPU or no driver here" : "");
    return ENG_OK;
}

int eng_backend_new(const char *spec, int threads, eng_backend **out, eng_error *err)
{
    char name[32];
    int dev;
    *out = NULL;
    if (!spec)
        spec = "auto";
    if (parse_spec(spec, name, sizeof name, &dev))
        return eng_fail(err, ENG_EINVAL, "backend '%s': expected cpu, cuda, cuda:N or auto",
                        spec);
    if (strcmp(name, "auto") == 0) {
        for (int i = 1; i < eng_backend_reg_count(); i++)
            if (regs[i]->device_count() > 0 && regs[i]->create(0, threads, out, NULL) == ENG_OK)
                return ENG_OK;
        return cpu_create(0, threads, out, err);
    }
    const eng_backend_reg *r;
    int rc = find_device(spec, name, dev, &r, err);
    return rc ? rc : r->create(dev, threads, out, err);
}

const eng_backend_reg *eng_backend_spec_reg(const char *spec)
{
    char name[32];
    int dev;
    if (!spec)
        spec = "cpu";
    if (parse_spec(spec, name, sizeof name, &dev))
        return NULL;
    if (strcmp(name, "auto") == 0) {
        for (int i = 1; i < eng_backend_reg_count(); i++)
            if (regs[i]->device_count() > 0)
                return regs[i];
        return regs[0];
    }
    return eng_backend_reg_find(name);
}

int eng_backend_check(const char *spec, eng_error *err)
{
    char name[32];
    int dev;
    if (!spec)
        return ENG_OK; /* the default: cpu */
    if (parse_spec(spec, name, sizeof name, &dev))
        return eng_fail(err, ENG_EINVAL, "backend '%s': expected cpu, cuda, cuda:N or auto",
                        spec);
    if (strcmp(name, "auto") == 0)
        return strchr(spec, ':') ? eng_fail(err, ENG_EINVAL, "backend '%s': auto takes no "
                                            "device index", spec) : ENG_OK;
    const eng_backend_reg *r;
    return find_device(spec, name, dev, &r, err);
}

int eng_backend_kinds(const char **names, int cap)
{
    int n = 0;
    for (int i = 0; i < eng_backend_reg_count(); i++)
        if (regs[i]->device_count() > 0) {
            if (n < cap)
                names[n] = regs[i]->name;
            n++;
        }
    return n < cap ? n : cap;
}

int eng_backend_name_valid(const char *spec) { return eng_backend_spec_valid(spec); }
