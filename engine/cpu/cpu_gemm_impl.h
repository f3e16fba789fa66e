/* cpu_gemm_impl.h - the packed SGEMM C = alpha A B^T + beta C (B [N, K], the
 * nn.Linear layout), written once over cpu_simd.h; included by cpu_kernels_impl.h.
 *
 * Batch invariance: the value of c[i][j] is a fixed function of row i of A, row j
 * of B and K. Vector paths: four fused multiply-add chains p_m over k = m, m + 4,
 * m + 8, ... (K zero-padded to a multiple of 4), from 0 in k order, then
 * (p0 + p2) + (p1 + p3), then alpha/beta. Scalar path: one unfused chain over
 * k = 0..K-1. Rows never interact, and tails in M and N run the same chains (B is
 * zero-padded in the packing, stores are masked), so the result does not depend
 * on M, on the row's tile, on the thread split or on the block sizes.
 *
 * Why four chains: a vector lane pair (row of A, row of B) needs 4 consecutive k
 * of each, which both packings copy in 16-byte pieces (no transposes: packing
 * stays cheap enough to do per call, even for a few rows of A), and A's pieces
 * are one broadcast load. A vector holds VW/4 columns x 4 phases; the microkernel
 * keeps GP_MR rows x 4 such vectors (VW columns) in registers and reduces them to
 * one vector of C per row at the end (vred4x4).
 *
 * Packed B: panels of VW columns (rows of B), each [K4][4][VW] with K4 = K/4
 * rounded up; vector g of k-group q holds in its 128-bit lane L the four k of
 * column 4L + g, so that vred4x4 yields the panel's columns in order.
 */

#if VW == 16
#define GP_MR 6 /* 24 accumulators + 4 of B + 1 of A of 32 registers */
#elif VW == 8
#define GP_MR 3 /* 12 + 4 of 16 */
#else
#define GP_MR 4
#endif

#if VW >= 8

/* Packs column jj of a panel (row s of B) for k-groups q0..K4 into the panel d. */
static void KN(gemm_pack_col)(float *d, const float *s, int jj, int q0, int K)
{
    int K4 = (K + 3) / 4, kf = K / 4, kt = K - 4 * kf;
    float *dj = d + (jj % 4) * VW + (jj / 4) * 4;
    for (int q = q0; q < K4; q++) {
        float t[4] = {0, 0, 0, 0};
        if (s)
            memcpy(t, s + 4 * q, (size_t)(q < kf ? 4 : kt) * sizeof(float));
        memcpy(dj + (size_t)q * 4 * VW, t, sizeof t);
    }
}

/* Packs rows n0..n1 of B (row stride ldb, K columns) into panels (see above). Full
 * panels move 4 k-groups of 4 (or 2) rows at a time with 128-bit lane shuffles. */
static void KN(gemm_pack_b)(float *dst, const float *B, int ldb, int n0, int n1, int K)
{
    int K4 = (K + 3) / 4;
    for (int p0 = n0; p0 < n1; p0 += VW) {
        float *d = dst + (size_t)(p0 - n0) * K4 * 4;
        const float *row[VW];
        for (int jj = 0; jj < VW; jj++)
            row[jj] = p0 + jj < n1 ? B + (size_t)(p0 + jj) * ldb : NULL;
        int q = 0;
        if (p0 + VW <= n1) {
            for (; 4 * (q + 4) <= K; q += 4) {
                float *dq = d + (size_t)q * 4 * VW;
                for (int g = 0; g < 4; g++) {
#if VW == 16
                    /* x_L: k-groups q..q+3 of column 4L + g; out m: group q + m of all four */
                    V x0 = vload(row[g] + 4 * q), x1 = vload(row[4 + g] + 4 * q);
                    V x2 = vload(row[8 + g] + 4 * q), x3 = vload(row[12 + g] + 4 * q);
                    V t0 = _mm512_shuffle_f32x4(x0, x1, 0x44), t1 = _mm512_shuffle_f32x4(x0, x1, 0xee);
                    V t2 = _mm512_shuffle_f32x4(x2, x3, 0x44), t3 = _mm512_shuffle_f32x4(x2, x3, 0xee);
                    vstore(dq + (0 * 4 + g) * VW, _mm512_shuffle_f32x4(t0, t2, 0x88));
                    vstore(dq + (1 * 4 + g) * VW, _mm512_shuffle_f32x4(t0, t2, 0xdd));
                    vstore(dq + (2 * 4 + g) * VW, _mm512_shuffle_f32x4(t1, t3, 0x88));
                    vstore(dq + (3 * 4 + g) * VW, _mm512_shuffle_f32x4(t1, t3, 0xdd));
#else
                    for (int h = 0; h < 4; h += 2) { /* k-groups q + h, q + h + 1 */
                        V x0 = vload(row[g] + 4 * (q + h)), x1 = vload(row[4 + g] + 4 * (q + h));
                        vstore(dq + (h * 4 + g) * VW, _mm256_permute2f128_ps(x0, x1, 0x20));
                        vstore(dq + ((h + 1) * 4 + g) * VW, _mm256_permute2f128_ps(x0, x1, 0x31));
                    }
#endif
                }
            }
        }
        if (q < K4)
            for (int jj = 0; jj < VW; jj++)
                KN(gemm_pack_col)(d, row[jj], jj, q, K);
    }
}

/* k-groups per chunk of a panel (8 KB per 128 k): a chunk stays in L1 while the
 * row tiles pass; between chunks a tile's accumulators wait in memory (stored and
 * reloaded exactly, so chunking changes no bit). */
#define GP_KC4 128
#define GP_SAVE_TILES ((96 + GP_MR - 1) / GP_MR)

/* Vector g of k-group q of a panel straight from B's rows r[] (as the packing lays
 * it out: 128-bit lane L holds k 4q..4q+3 of row 4L + g). */
static inline __attribute__((always_inline)) V KN(gemm_bvec)(const float *const *r, int g, int q)
{
#if VW == 16
    __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(r[g] + 4 * q));
    v = _mm512_insertf32x4(v, _mm_loadu_ps(r[4 + g] + 4 * q), 1);
    v = _mm512_insertf32x4(v, _mm_loadu_ps(r[8 + g] + 4 * q), 2);
    return _mm512_insertf32x4(v, _mm_loadu_ps(r[12 + g] + 4 * q), 3);
#else
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(r[g] + 4 * q)),
                                _mm_loadu_ps(r[4 + g] + 4 * q), 1);
#endif
}

/* mr rows (pointers a[]) x k-groups q0..q1 of one panel bp, or (br != NULL) of the
 * panel's rows of B br[] read in place, with their zero-padded last k-group in tail. Accumulators start at 0
 * (q0 == 0) or from save; then go to save (q1 < K4) or, reduced, to C: row i,
 * ncols valid columns at c. */
static inline __attribute__((always_inline)) void
KN(gemm_tile)(const int mr, const float *const *a, const float *bp, const float *const *br,
              const float *const *tail, int K, int q0, int q1, V *save, float alpha, float beta,
              float *c, int ldc, int ncols)
{
    V acc[GP_MR][4];
    int kf = K / 4, K4 = (K + 3) / 4;
    UNROLL
    for (int i = 0; i < mr; i++)
        UNROLL
        for (int g = 0; g < 4; g++)
            acc[i][g] = q0 == 0 ? vzero() : save[i * 4 + g];
    int qe = q1 < kf ? q1 : kf;
    const float *b = bp + (size_t)q0 * 4 * VW;
    for (int q = q0; q < qe; q++, b += 4 * VW) {
        V b0, b1, b2, b3;
        if (br) {
            b0 = KN(gemm_bvec)(br, 0, q), b1 = KN(gemm_bvec)(br, 1, q);
            b2 = KN(gemm_bvec)(br, 2, q), b3 = KN(gemm_bvec)(br, 3, q);
        } else {
            b0 = vload(b), b1 = vload(b + VW), b2 = vload(b + 2 * VW), b3 = vload(b + 3 * VW);
        }
        UNROLL
        for (int i = 0; i < mr; i++) {
            V x = vbcast4(a[i] + 4 * q);
            acc[i][0] = vfma(x, b0, acc[i][0]);
            acc[i][1] = vfma(x, b1, acc[i][1]);
            acc[i][2] = vfma(x, b2, acc[i][2]);
            acc[i][3] = vfma(x, b3, acc[i][3]);
        }
    }
    if (q1 > kf) { /* the same chains: A's missing k read as zero, B's packed as zero */
        int kt = K - 4 * kf;
        V b0, b1, b2, b3;
        if (br) {
            b0 = KN(gemm_bvec)(tail, 0, 0), b1 = KN(gemm_bvec)(tail, 1, 0);
            b2 = KN(gemm_bvec)(tail, 2, 0), b3 = KN(gemm_bvec)(tail, 3, 0);
        } else {
            b0 = vload(b), b1 = vload(b + VW), b2 = vload(b + 2 * VW), b3 = vload(b + 3 * VW);
        }
        UNROLL
        for (int i = 0; i < mr; i++) {
            V x = vbcast4n(a[i] + 4 * kf, kt);
            acc[i][0] = vfma(x, b0, acc[i][0]);
            acc[i][1] = vfma(x, b1, acc[i][1]);
            acc[i][2] = vfma(x, b2, acc[i][2]);
            acc[i][3] = vfma(x, b3, acc[i][3]);
        }
    }
    if (q1 < K4) {
        UNROLL
        for (int i = 0; i < mr; i++)
            UNROLL
            for (int g = 0; g < 4; g++)
                save[i * 4 + g] = acc[i][g];
        return;
    }
    const V va = vset1(alpha), vb = vset1(beta);
    UNROLL
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        V r = vmul(va, vred4x4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
        if (ncols >= VW) {
            vstore(ci, beta == 0.0f ? r : vadd(r, vmul(vb, vload(ci))));
        } else {
            if (beta != 0.0f)
                r = vadd(r, vmul(vb, vloadn(ci, ncols)));
            vstoren(ci, r, ncols);
        }
    }
}

/* C[0:M, 0:nc] (nc <= VW valid columns) from one panel bp: all rows of A in tiles of
 * at most GP_MR rows of balanced sizes (any split gives the same values). */
static void KN(gemm_panel)(int M, int nc, int K, float alpha, const float *A, int lda,
                           const float *bp, float beta, float *C, int ldc)
{
    int nt = (M + GP_MR - 1) / GP_MR, K4 = (K + 3) / 4;
    int chunks = (K4 + GP_KC4 - 1) / GP_KC4;
    /* every tile's accumulators between chunks: on the stack for the callers' row
     * blocks (<= 96 rows), else on the heap */
    V save_stack[GP_SAVE_TILES * GP_MR * 4], *save = save_stack, *save_heap = NULL;
    if (chunks > 1 && nt > GP_SAVE_TILES) {
        save_heap = aligned_alloc(64, sizeof(V) * GP_MR * 4 * (size_t)nt);
        if (!save_heap)
            chunks = 1; /* out of memory: one chunk, the same values */
        save = save_heap;
    }
    for (int ch = 0; ch < chunks; ch++) {
        int q0 = chunks == 1 ? 0 : ch * GP_KC4, q1 = chunks == 1 ? K4 : q0 + GP_KC4 < K4 ? q0 + GP_KC4 : K4;
        for (int t = 0; t < nt; t++) {
            int i0 = (int)((long long)t * M / nt), i1 = (int)((long long)(t + 1) * M / nt);
            const float *a[GP_MR];
            for (int i = 0; i < GP_MR; i++)
                a[i] = A + (size_t)(i0 + (i < i1 - i0 ? i : 0)) * lda;
            float *c = C + (size_t)i0 * ldc;
            V *sv = save + (size_t)t * GP_MR * 4;
            switch (i1 - i0) {
#define GP_CASE(m) \
    case m: KN(gemm_tile)(m, a, bp, NULL, NULL, K, q0, q1, sv, alpha, beta, c, ldc, nc); break;
                GP_CASE(1)
                GP_CASE(2)
                GP_CASE(3)
#if GP_MR > 3
                GP_CASE(4)
                GP_CASE(5)
                GP_CASE(6)
#endif
#undef GP_CASE
            default: break;
            }
        }
    }
    free(save_heap);
}

/* C[0:M, 0:n] = alpha A Bp^T + beta C, Bp from gemm_pack_b (n columns): each panel
 * (VW x K, in L1 or L2) meets all rows of A. */
static void KN(gemm_packed)(int M, int n, int K, float alpha, const float *A, int lda,
                            const float *Bp, float beta, float *C, int ldc)
{
    size_t ps = eng_cpu_gemm_pack_floats(VW, VW, K);
    for (int j0 = 0; j0 < n; j0 += VW)
        KN(gemm_panel)(M, n - j0 < VW ? n - j0 : VW, K, alpha, A, lda, Bp + (size_t)(j0 / VW) * ps,
                       beta, C + j0, ldc);
}

/* C[0:M, n0:n1] from B itself, packing one panel at a time into pbuf (a panel's
 * floats): for few rows of A, where a packed panel is used once, from L1. With a
 * single row tile (M <= GP_MR: decoding steps) full panels are not packed at all:
 * the tile assembles the same vectors from B's rows. */
static void KN(gemm_direct)(int M, int n0, int n1, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc, float *pbuf)
{
    int kf = K / 4, K4 = (K + 3) / 4;
    for (int j0 = n0; j0 < n1; j0 += VW) {
        int j1 = n1 - j0 < VW ? n1 : j0 + VW;
        if (M > GP_MR || j1 - j0 < VW) {
            KN(gemm_pack_b)(pbuf, B, ldb, j0, j1, K);
            KN(gemm_panel)(M, j1 - j0, K, alpha, A, lda, pbuf, beta, C + j0, ldc);
            continue;
        }
        const float *br[VW], *tp[VW], *a[GP_MR];
        float tail[VW][4];
        for (int j = 0; j < VW; j++) {
            br[j] = B + (size_t)(j0 + j) * ldb;
            tp[j] = tail[j];
            for (int k = 0; k < 4; k++)
                tail[j][k] = 4 * kf + k < K ? br[j][4 * kf + k] : 0.0f;
        }
        for (int i = 0; i < GP_MR; i++)
            a[i] = A + (size_t)(i < M ? i : 0) * lda;
        switch (M) {
#define GP_CASE(m) \
    case m: \
        KN(gemm_tile)(m, a, NULL, br, tp, K, 0, K4, NULL, alpha, beta, C + j0, ldc, VW); \
        break;
            GP_CASE(1)
            GP_CASE(2)
            GP_CASE(3)
#if GP_MR > 3
            GP_CASE(4)
            GP_CASE(5)
            GP_CASE(6)
#endif
#undef GP_CASE
        default: break;
        }
    }
}

#else /* scalar: one unfused chain per element, k = 0..K-1 */

static void KN(gemm_pack_b)(float *dst, const float *B, int ldb, int n0, int n1, int K)
{
    for (int j = n0; j < n1; j++)
        memcpy(dst + (size_t)(j - n0) * K, B + (size_t)j * ldb, (size_t)K * sizeof(float));
}

/* C[0:M, 0:n] from B rows of stride ldb (packed or not: the same values). */
static void KN(gemm_rows_b)(int M, int n, int K, float alpha, const float *A, int lda,
                            const float *Bp, int ldb, float beta, float *C, int ldc)
{
    for (int i0 = 0; i0 < M; i0 += GP_MR)
        for (int j0 = 0; j0 < n; j0 += GP_MR) {
            int mr = M - i0 < GP_MR ? M - i0 : GP_MR, nr = n - j0 < GP_MR ? n - j0 : GP_MR;
            float acc[GP_MR][GP_MR] = {{0}};
            for (int k = 0; k < K; k++)
                for (int i = 0; i < mr; i++) {
                    float x = A[(size_t)(i0 + i) * lda + k];
                    for (int j = 0; j < nr; j++)
                        acc[i][j] = x * Bp[(size_t)(j0 + j) * ldb + k] + acc[i][j];
                }
            for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++) {
                    float *cij = C + (size_t)(i0 + i) * ldc + j0 + j;
                    float r = alpha * acc[i][j];
                    *cij = beta == 0.0f ? r : r + beta * *cij;
                }
        }
}

static void KN(gemm_packed)(int M, int n, int K, float alpha, const float *A, int lda,
                            const float *Bp, float beta, float *C, int ldc)
{
    KN(gemm_rows_b)(M, n, K, alpha, A, lda, Bp, K, beta, C, ldc);
}

static void KN(gemm_direct)(int M, int n0, int n1, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc, float *pbuf)
{
    (void)pbuf; /* the scalar packing is B's rows as they are */
    KN(gemm_rows_b)(M, n1 - n0, K, alpha, A, lda, B + (size_t)n0 * ldb, ldb, beta, C + n0, ldc);
}

#endif
