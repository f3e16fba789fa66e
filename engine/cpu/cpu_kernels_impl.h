/* cpu_kernels_impl.h - the CPU kernels, written once over cpu_simd.h.
 *
 * Included once by each cpu_kernels_<isa>.c; every function is static and the
 * file ends with that ISA's eng_cpu_kernels table. Numerics follow PyTorch fp32:
 * exact-erf GELU, LayerNorm with the biased variance and eps inside the sqrt,
 * softmax after subtracting the row maximum.
 */
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_simd.h"

/* Tuning per ISA: key vectors per Q.K^T block, column vectors per P.V block. */
#if VW == 16
#define QK_NV 4
#define PV_NV 4
#elif VW == 8
#define QK_NV 2
#define PV_NV 2
#else
#define QK_NV 4
#define PV_NV 4
#endif
#define AR ENG_CPU_ATTN_ROWS
/* Register blocks: loops over rows/vectors must unroll fully to keep acc[][] in registers. */
#define UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------ math */

/* Polynomial coefficients below were fitted by Chebyshev interpolation in long
 * double (and checked in float Horner form against long double references). */

/* Splits x (clamped to [-87.33, 88.3]) as 2^n * e^r with |r| <= ln2/2; returns
 * expm1(r) and sets *s = 2^n. */
static inline V KN(exp_split)(V x, V *s)
{
    x = vmin(vmax(x, vset1(-87.33f)), vset1(88.3f));
    V n = vround(vmul(x, vset1(1.44269504f)));
    /* Cody-Waite: n * 0.693359375 is exact and so is the subtraction. */
    V r = vfnma(n, vset1(0.693359375f), x);
    r = vfnma(n, vset1(-2.12194440e-4f), r);
    V q = vset1(1.989098819e-04f); /* q(r) ~ (e^r - 1 - r) / r^2 */
    q = vfma(q, r, vset1(1.393364742e-03f));
    q = vfma(q, r, vset1(8.333310485e-03f));
    q = vfma(q, r, vset1(4.166646674e-02f));
    q = vfma(q, r, vset1(1.666666716e-01f));
    q = vfma(q, r, vset1(0.5f));
    *s = vpow2i(n);
    return vfma(vmul(r, r), q, r);
}

/* e^x, max relative error ~1 ulp; 0 below -87.33 (no subnormals), inf above 88.72. */
static inline V KN(vexp1)(V x)
{
    V s, e = KN(exp_split)(x, &s);
    V y = vfma(s, e, s);
    y = vsel(vlt(x, vset1(-87.33f)), y, vzero());
    return vsel(vlt(vset1(88.72f), x), y, vset1(INFINITY));
}

/* e^x - 1 for x <= 0, accurate near 0. */
static inline V KN(vexpm1_neg)(V x)
{
    V s, e = KN(exp_split)(x, &s);
    return vfma(s, e, vsub(s, vset1(1.0f)));
}

/* tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x. */
static inline V KN(vtanh1)(V x)
{
    V e = KN(vexpm1_neg)(vmul(vset1(-2.0f), vabs(x)));
    V t = vdiv(vsub(vzero(), e), vadd(vset1(2.0f), e));
    return vcopysign(t, x);
}

/* erf(x): |x| <= 1: x * P(x^2); 1 < |x| < 3.95: 1 - e^(-x^2) * G(|x| - 2.5) with
 * G ~ erfc(z) e^(z^2); beyond, 1 (erfc(3.95) is below half an ulp of 1). */
static inline V KN(verf1)(V x)
{
    V z = vabs(x), u = vmul(z, z);
    V p = vset1(7.875874871e-05f);
    p = vfma(p, u, vset1(-8.016864303e-04f));
    p = vfma(p, u, vset1(5.189087242e-03f));
    p = vfma(p, u, vset1(-2.685421146e-02f));
    p = vfma(p, u, vset1(1.128359437e-01f));
    p = vfma(p, u, vset1(-3.761262596e-01f));
    p = vfma(p, u, vset1(1.128379107e+00f));
    V y = vmul(z, p);
    VM big = vlt(vset1(1.0f), z);
    if (vany(big)) {
        V zc = vmin(z, vset1(3.95f));
        V t = vsub(zc, vset1(2.5f));
        V g = vset1(1.710523065e-06f);
        g = vfma(g, t, vset1(-6.305752322e-06f));
        g = vfma(g, t, vset1(1.419797445e-05f));
        g = vfma(g, t, vset1(-5.393976971e-05f));
        g = vfma(g, t, vset1(2.131645597e-04f));
        g = vfma(g, t, vset1(-7.384839118e-04f));
        g = vfma(g, t, vset1(2.465912839e-03f));
        g = vfma(g, t, vset1(-7.999617606e-03f));
        g = vfma(g, t, vset1(2.493820153e-02f));
        g = vfma(g, t, vset1(-7.434756309e-02f));
        g = vfma(g, t, vset1(2.108063549e-01f));
        V e = KN(vexp1)(vsub(vzero(), vmul(zc, zc)));
        y = vsel(big, y, vfnma(e, g, vset1(1.0f)));
    }
    return vcopysign(y, x);
}

static inline V KN(act1)(V x, eng_act act)
{
    switch (act) {
    case ENG_ACT_GELU: /* 0.5 x (1 + erf(x / sqrt 2)), as torch computes it */
        return vmul(vmul(x, vset1(0.5f)),
                    vadd(vset1(1.0f), KN(verf1)(vmul(x, vset1(0.70710678118654752f)))));
    case ENG_ACT_GELU_TANH: {
        V x3 = vmul(vmul(x, x), x);
        V in = vmul(vset1(0.79788456080286536f), vfma(vset1(0.044715f), x3, x));
        return vmul(vmul(x, vset1(0.5f)), vadd(vset1(1.0f), KN(vtanh1)(in)));
    }
    case ENG_ACT_RELU:
        return vmax(vzero(), x); /* keeps NaN, like torch.relu */
    case ENG_ACT_TANH:
        return KN(vtanh1)(x);
    case ENG_ACT_NONE:
    default:
        return x;
    }
}

/* Applies a V -> V function over an array. */
#define MAP_ARRAY(fn, y, x, n) \
    do { \
        int i_ = 0; \
        for (; i_ + VW <= (n); i_ += VW) \
            vstore((y) + i_, fn(vload((x) + i_))); \
        if (i_ < (n)) \
            vstoren((y) + i_, fn(vloadn((x) + i_, (n) - i_)), (n) - i_); \
    } while (0)

static void KN(vexp)(float *y, const float *x, int n) { MAP_ARRAY(KN(vexp1), y, x, n); }
static void KN(verf)(float *y, const float *x, int n) { MAP_ARRAY(KN(verf1), y, x, n); }
static void KN(vtanh)(float *y, const float *x, int n) { MAP_ARRAY(KN(vtanh1), y, x, n); }

/* ------------------------------------------------------- elementwise ops */

static inline void KN(bias_act_row)(float *x, const float *bias, int cols, eng_act act)
{
    int c = 0;
    for (; c + VW <= cols; c += VW) {
        V v = vload(x + c);
        if (bias)
            v = vadd(v, vload(bias + c));
        vstore(x + c, KN(act1)(v, act));
    }
    if (c < cols) {
        int n = cols - c;
        V v = vloadn(x + c, n);
        if (bias)
            v = vadd(v, vloadn(bias + c, n));
        vstoren(x + c, KN(act1)(v, act), n);
    }
}

static void KN(bias_act)(float *x, const float *bias, int rows, int cols, eng_act act)
{
    /* One specialised loop per activation keeps the switch out of the inner loop. */
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * cols;
        switch (act) {
        case ENG_ACT_GELU: KN(bias_act_row)(xr, bias, cols, ENG_ACT_GELU); break;
        case ENG_ACT_GELU_TANH: KN(bias_act_row)(xr, bias, cols, ENG_ACT_GELU_TANH); break;
        case ENG_ACT_RELU: KN(bias_act_row)(xr, bias, cols, ENG_ACT_RELU); break;
        case ENG_ACT_TANH: KN(bias_act_row)(xr, bias, cols, ENG_ACT_TANH); break;
        default:
            if (bias)
                KN(bias_act_row)(xr, bias, cols, ENG_ACT_NONE);
            break;
        }
    }
}

/* Two-pass LayerNorm of one row. v = x + res is written to out first (out may
 * alias x or res: each element is read before its slot is written). The sums
 * run in float lanes that are flushed into a double every LN_FLUSH steps, so
 * no lane ever adds up more than 2 * LN_FLUSH values in float. */
#define LN_FLUSH 8
static void KN(ln_row)(float *out, const float *x, const float *res, const float *gamma,
                       const float *beta, int cols, float eps)
{
    V s0 = vzero(), s1 = vzero();
    double tot = 0;
    int c = 0;
    for (int it = 1; c + 2 * VW <= cols; c += 2 * VW, it++) {
        V a = vload(x + c), b = vload(x + c + VW);
        if (res) {
            a = vadd(a, vload(res + c));
            b = vadd(b, vload(res + c + VW));
        }
        vstore(out + c, a);
        vstore(out + c + VW, b);
        s0 = vadd(s0, a);
        s1 = vadd(s1, b);
        if (it % LN_FLUSH == 0) {
            tot += vhsum(vadd(s0, s1));
            s0 = s1 = vzero();
        }
    }
    for (; c < cols; c += VW) {
        int n = cols - c < VW ? cols - c : VW;
        V a = vloadn(x + c, n);
        if (res)
            a = vadd(a, vloadn(res + c, n));
        vstoren(out + c, a, n);
        s0 = vadd(s0, a); /* masked lanes are zero */
    }
    tot += vhsum(vadd(s0, s1));
    float mean = (float)(tot / cols);
    V m = vset1(mean);
    s0 = s1 = vzero();
    tot = 0;
    c = 0;
    for (int it = 1; c + 2 * VW <= cols; c += 2 * VW, it++) {
        V a = vsub(vload(out + c), m), b = vsub(vload(out + c + VW), m);
        s0 = vmac(a, a, s0);
        s1 = vmac(b, b, s1);
        if (it % LN_FLUSH == 0) {
            tot += vhsum(vadd(s0, s1));
            s0 = s1 = vzero();
        }
    }
    for (; c < cols; c += VW) {
        int n = cols - c < VW ? cols - c : VW;
        V a = vkeepn(vsub(vloadn(out + c, n), m), n);
        s0 = vmac(a, a, s0);
    }
    tot += vhsum(vadd(s0, s1));
    float var = (float)(tot / cols);
    float rstd = 1.0f / sqrtf(var + eps);
    V rs = vset1(rstd);
    for (c = 0; c + VW <= cols; c += VW) {
        V a = vmul(vsub(vload(out + c), m), rs);
        vstore(out + c, vfma(a, vload(gamma + c), vload(beta + c)));
    }
    if (c < cols) {
        int n = cols - c;
        V a = vmul(vsub(vloadn(out + c, n), m), rs);
        vstoren(out + c, vfma(a, vloadn(gamma + c, n), vloadn(beta + c, n)), n);
    }
}

static void KN(add_layernorm)(float *out, const float *x, const float *res,
                              const float *gamma, const float *beta, int rows, int cols,
                              float eps)
{
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        KN(ln_row)(out + o, x + o, res ? res + o : NULL, gamma, beta, cols, eps);
    }
}

static void KN(add3)(float *out, const float *a, const float *b, const float *c, int n)
{
    int i = 0;
    for (; i + VW <= n; i += VW) {
        V s = vload(a + i);
        if (c)
            s = vadd(s, vload(c + i));
        vstore(out + i, vadd(s, vload(b + i)));
    }
    if (i < n) {
        int m = n - i;
        V s = vloadn(a + i, m);
        if (c)
            s = vadd(s, vloadn(c + i, m));
        vstoren(out + i, vadd(s, vloadn(b + i, m)), m);
    }
}

/* ------------------------------------------------------------- attention */

/* sc[r][j..j+NV*VW) = scale * q_r . K_j for AR rows (rows >= nr repeat the last). */
static inline __attribute__((always_inline)) void
KN(qk_block)(const float *const *qr, const float *kt, int nkp, int hd, int j, int nv,
             float *sc, int nr, float scale)
{
    V acc[AR][QK_NV];
    UNROLL
    for (int r = 0; r < AR; r++)
        UNROLL
        for (int c = 0; c < QK_NV; c++)
            acc[r][c] = vzero();
    for (int d = 0; d < hd; d++) {
        const float *kd = kt + (size_t)d * nkp + j;
        V kv[QK_NV];
        UNROLL
        for (int c = 0; c < QK_NV; c++)
            kv[c] = c < nv ? vload(kd + c * VW) : vzero();
        UNROLL
        for (int r = 0; r < AR; r++) {
            V qv = vset1(qr[r][d]);
            UNROLL
            for (int c = 0; c < QK_NV; c++)
                if (c < nv)
                    acc[r][c] = vmac(qv, kv[c], acc[r][c]);
        }
    }
    V sv = vset1(scale);
    UNROLL
    for (int r = 0; r < nr; r++)
        UNROLL
        for (int c = 0; c < nv; c++)
            vstore(sc + (size_t)r * nkp + j + c * VW, vmul(acc[r][c], sv));
}

static void KN(qk)(const float *const *qr, const float *kt, int nkp, int hd, int lim,
                   float *sc, int nr, float scale)
{
    int nvec = (lim + VW - 1) / VW, j = 0;
    for (; j + QK_NV * VW <= nvec * VW; j += QK_NV * VW)
        KN(qk_block)(qr, kt, nkp, hd, j, QK_NV, sc, nr, scale);
    for (; j < nvec * VW; j += VW)
        KN(qk_block)(qr, kt, nkp, hd, j, 1, sc, nr, scale);
}

/* Softmax numerators of row s[0..lim) in place (zeros up to zero_to); returns
 * 1 / sum, or 0 when the row sees no key. */
static float KN(softmax_row)(float *s, int lim, int zero_to)
{
    if (lim <= 0) {
        memset(s, 0, (size_t)zero_to * sizeof *s);
        return 0.0f;
    }
    V mx = vset1(-INFINITY);
    int j = 0;
    for (; j + VW <= lim; j += VW)
        mx = vmax(mx, vload(s + j));
    float m = vhmax(mx);
    for (; j < lim; j++)
        m = s[j] > m ? s[j] : m;
    V mv = vset1(m), sum = vzero();
    for (j = 0; j + VW <= lim; j += VW) {
        V e = KN(vexp1)(vsub(vload(s + j), mv));
        vstore(s + j, e);
        sum = vadd(sum, e);
    }
    if (j < lim) {
        int n = lim - j;
        V e = KN(vexp1)(vsub(vloadn(s + j, n), mv));
        e = vkeepn(e, n);
        vstoren(s + j, e, n);
        sum = vadd(sum, e);
    }
    for (j = lim; j < zero_to; j++)
        s[j] = 0.0f;
    return 1.0f / vhsum(sum);
}

/* out_r[c0 .. c0 + (nv-1)*VW + last) = inv_r * sum_j P[r][j] V[j] for AR rows. */
static inline __attribute__((always_inline)) void
KN(pv_block)(const float *const *pr, const float *v, int v_ld, int lim, int c0, int nv,
             int last, float *out, int out_ld, int nr, const float *inv)
{
    V acc[AR][PV_NV];
    UNROLL
    for (int r = 0; r < AR; r++)
        UNROLL
        for (int c = 0; c < PV_NV; c++)
            acc[r][c] = vzero();
    for (int j = 0; j < lim; j++) {
        const float *vj = v + (size_t)j * v_ld + c0;
        V vv[PV_NV];
        UNROLL
        for (int c = 0; c < PV_NV; c++)
            vv[c] = c < nv - 1 ? vload(vj + c * VW) : c == nv - 1 ? vloadn(vj + c * VW, last)
                                                                  : vzero();
        UNROLL
        for (int r = 0; r < AR; r++) {
            V p = vset1(pr[r][j]);
            UNROLL
            for (int c = 0; c < PV_NV; c++)
                if (c < nv)
                    acc[r][c] = vmac(p, vv[c], acc[r][c]);
        }
    }
    UNROLL
    for (int r = 0; r < nr; r++) {
        V iv = vset1(inv[r]);
        float *o = out + (size_t)r * out_ld + c0;
        UNROLL
        for (int c = 0; c < nv - 1; c++)
            vstore(o + c * VW, vmul(acc[r][c], iv));
        vstoren(o + (nv - 1) * VW, vmul(acc[r][nv - 1], iv), last);
    }
}

static void KN(pv)(const float *sc, int nkp, const float *v, int v_ld, int lim, int hd,
                   float *out, int out_ld, int nr, const float *inv)
{
    const float *pr[AR]; /* rows >= nr repeat the last one (computed, not stored) */
    for (int r = 0; r < AR; r++)
        pr[r] = sc + (size_t)(r < nr ? r : nr - 1) * nkp;
    for (int c0 = 0; c0 < hd; c0 += PV_NV * VW) {
        int w = hd - c0 < PV_NV * VW ? hd - c0 : PV_NV * VW;
        int nv = (w + VW - 1) / VW, last = w - (nv - 1) * VW;
        switch (nv) { /* constant nv lets the compiler keep acc in registers */
        case PV_NV: KN(pv_block)(pr, v, v_ld, lim, c0, PV_NV, last, out, out_ld, nr, inv); break;
#if PV_NV > 2
        case 3: KN(pv_block)(pr, v, v_ld, lim, c0, 3, last, out, out_ld, nr, inv); break;
#endif
#if PV_NV > 2
        case 2: KN(pv_block)(pr, v, v_ld, lim, c0, 2, last, out, out_ld, nr, inv); break;
#endif
        default: KN(pv_block)(pr, v, v_ld, lim, c0, 1, last, out, out_ld, nr, inv); break;
        }
    }
}

/* Keys of one head transposed to kt[d][j] (row stride nkp, a multiple of
 * ENG_CPU_ATTN_PAD >= VW), zero-padded, by VW x VW register transposes. */
static void KN(transpose_k)(float *kt, int nkp, const float *k, int k_ld, int nk, int hd)
{
    for (int j0 = 0; j0 < nkp; j0 += VW) {
        int nj = nk - j0 < VW ? nk - j0 : VW;
        for (int d0 = 0; d0 < hd; d0 += VW) {
            int nd = hd - d0 < VW ? hd - d0 : VW;
            V r[VW];
            UNROLL
            for (int i = 0; i < VW; i++) {
                const float *src = k + (size_t)(j0 + i) * k_ld + d0;
                r[i] = i >= nj ? vzero() : nd == VW ? vload(src) : vloadn(src, nd);
            }
            vtranspose(r);
            UNROLL
            for (int i = 0; i < VW; i++)
                if (i < nd)
                    vstore(kt + (size_t)(d0 + i) * nkp + j0, r[i]);
        }
    }
}

/* Asks for rows [r0, r1) (of nr) of the Q, K and V of (s, h) to be brought
 * towards L2: the rows of one head are 64-128 bytes every q_ld floats, a
 * pattern the hardware prefetchers do not follow. */
static void KN(attn_prefetch)(const eng_cpu_attn *a, int s, int h, int part, int nparts)
{
    size_t w = (size_t)a->head_dim * sizeof(float);
    for (int t = 0; t < 3; t++) {
        const float *base = t == 0 ? a->q : t == 1 ? a->k : a->v;
        const int32_t *off = t == 0 ? a->q_off : a->kv_off;
        int ld = t == 0 ? a->q_ld : t == 1 ? a->k_ld : a->v_ld;
        int n = off[s + 1] - off[s];
        int r0 = off[s] + (int)((long long)n * part / nparts);
        int r1 = off[s] + (int)((long long)n * (part + 1) / nparts);
        for (int r = r0; r < r1; r++) {
            const char *p = (const char *)(base + (size_t)r * ld + (size_t)h * a->head_dim);
            for (size_t b = 0; b < w; b += 64)
                __builtin_prefetch(p + b, 0, 2);
        }
    }
}

static void KN(attn_head)(const eng_cpu_attn *a, int s, int h, float *scratch, int next_s,
                          int next_h)
{
    int q0 = a->q_off[s], nq = a->q_off[s + 1] - q0;
    int k0 = a->kv_off[s], nk = a->kv_off[s + 1] - k0;
    int hd = a->head_dim;
    if (nq <= 0 || hd <= 0)
        return;
    const float *q = a->q + (size_t)q0 * a->q_ld + (size_t)h * hd;
    const float *k = a->k + (size_t)k0 * a->k_ld + (size_t)h * hd;
    const float *v = a->v + (size_t)k0 * a->v_ld + (size_t)h * hd;
    float *out = a->out + (size_t)q0 * a->out_ld + (size_t)h * hd;
    if (nk <= 0) {
        for (int i = 0; i < nq; i++)
            memset(out + (size_t)i * a->out_ld, 0, (size_t)hd * sizeof(float));
        return;
    }
    int nkp = (nk + ENG_CPU_ATTN_PAD - 1) / ENG_CPU_ATTN_PAD * ENG_CPU_ATTN_PAD;
    float *kt = scratch, *sc = scratch + (size_t)hd * nkp;
    float inv[AR];
    KN(transpose_k)(kt, nkp, k, a->k_ld, nk, hd);
    int shift = nk - nq; /* causal: query i sees keys j <= i + shift */
    int nblocks = (nq + AR - 1) / AR;
    for (int i0 = 0; i0 < nq; i0 += AR) {
        if (next_s >= 0) /* spread over the blocks: a burst would stall on fill buffers */
            KN(attn_prefetch)(a, next_s, next_h, i0 / AR, nblocks);
        int nr = nq - i0 < AR ? nq - i0 : AR;
        int lim = nk;
        if (a->causal) {
            lim = i0 + nr + shift;
            lim = lim < 0 ? 0 : lim > nk ? nk : lim;
        }
        const float *qr[AR];
        for (int r = 0; r < AR; r++)
            qr[r] = q + (size_t)(i0 + (r < nr ? r : nr - 1)) * a->q_ld;
        if (lim > 0)
            KN(qk)(qr, kt, nkp, hd, lim, sc, nr, a->scale);
        for (int r = 0; r < nr; r++) {
            int lr = lim;
            if (a->causal) {
                lr = i0 + r + 1 + shift;
                lr = lr < 0 ? 0 : lr > nk ? nk : lr;
            }
            inv[r] = KN(softmax_row)(sc + (size_t)r * nkp, lr, lim);
        }
        for (int r = nr; r < AR; r++)
            inv[r] = 0.0f;
        /* lim == 0 still runs pv: it writes the zero rows. */
        KN(pv)(sc, nkp, v, a->v_ld, lim, hd, out + (size_t)i0 * a->out_ld, a->out_ld, nr, inv);
    }
}

/* ------------------------------------------------------------------ GEMM */

#include "cpu/cpu_gemm_impl.h"

const eng_cpu_kernels KN(eng_cpu_kernels) = {
    .name = KN_NAME,
    .bias_act = KN(bias_act),
    .add_layernorm = KN(add_layernorm),
    .add3 = KN(add3),
    .attn_head = KN(attn_head),
    .attn_prefetch = KN(attn_prefetch),
    .vexp = KN(vexp),
    .verf = KN(verf),
    .vtanh = KN(vtanh),
    .gemm_nr = VW,
    .gemm_pack_b = KN(gemm_pack_b),
    .gemm_packed = KN(gemm_packed),
    .gemm_direct = KN(gemm_direct),
};
