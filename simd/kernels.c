/* kernels.c - the kernel table for one instruction set, written once
 * against vec.h and compiled per instruction set (see meson.build).
 *
 * Vectors run across channels, which are contiguous (channels-last).  Each
 * kernel's body takes the lane count n, called with the constant VL for
 * full vectors and with the remainder for the tail. */
#include "vec.h"
#include "vec_math.h"

#include "kernels.h"

#include <math.h>
#include <string.h>

static inline size_t lanes_left(size_t total, size_t j) { return total - j < VL ? total - j : VL; }

/* ------------------------------------------------------------- layernorm */

static inline void ln_apply(const float *x, float *y, const float *g, const float *b, vf mean, vf inv, dm_act act,
                            size_t n)
{
    vf v = vmul(vsub(vload_n(x, n), mean), inv);
    vstore_n(y, vact(vfma(v, vload_n(g, n), vload_n(b, n)), act), n);
}

/* Each sum runs as two, over alternate vectors: half the chain of
 * dependent adds, which bounds a row's time. */
static void layernorm_simd(const float *x, float *y, size_t rows, size_t c, const float *gamma, const float *beta,
                           dm_act act)
{
    size_t tail = c % VL, body = c - tail, pairs = body - body % (2 * VL);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        vf s0 = vset1(0.0f), s1 = vset1(0.0f);
        for (size_t j = 0; j < pairs; j += 2 * VL) {
            s0 = vadd(s0, vload(xr + j));
            s1 = vadd(s1, vload(xr + j + VL));
        }
        if (pairs < body) s0 = vadd(s0, vload(xr + pairs));
        if (tail) s1 = vadd(s1, vload_n(xr + body, tail));
        float mean = vsum(vadd(s0, s1)) / (float)c;
        vf vm = vset1(mean), q0 = vset1(0.0f), q1 = vset1(0.0f);
        for (size_t j = 0; j < pairs; j += 2 * VL) {
            vf d0 = vsub(vload(xr + j), vm), d1 = vsub(vload(xr + j + VL), vm);
            q0 = vfma(d0, d0, q0);
            q1 = vfma(d1, d1, q1);
        }
        if (pairs < body) {
            vf d = vsub(vload(xr + pairs), vm);
            q0 = vfma(d, d, q0);
        }
        if (tail) {
            vf d = vkeep_n(vsub(vload_n(xr + body, tail), vm), tail);
            q1 = vfma(d, d, q1);
        }
        vf inv = vset1(1.0f / sqrtf(vsum(vadd(q0, q1)) / (float)c + DM_LN_EPS));
        for (size_t j = 0; j < body; j += VL) ln_apply(xr + j, yr + j, gamma + j, beta + j, vm, inv, act, VL);
        if (tail) ln_apply(xr + body, yr + body, gamma + body, beta + body, vm, inv, act, tail);
    }
}

/* ------------------------------------------------------------- dwconv3x3 */

/* Output row oy, channels [j, j + vecs * VL) (vecs 1 or 2), or [j, j + n)
 * of a last partial vector.  The row is swept by input column: each
 * column's three pixels are loaded once and added to the three outputs
 * they reach (as right, centre and left tap), whose sums stay in registers:
 * 3 loads to 9 multiply-adds per vector.  Two vectors side by side give
 * six independent chains of sums instead of three, and read whole cache
 * lines. */
static inline __attribute__((always_inline)) void dw_row(const float *x, float *y, int h, int w, size_t c,
                                                         const float *w9, const float *bias, dm_act act, int oy,
                                                         size_t j, size_t vecs, size_t n)
{
    /* A row outside the image reads the centre row with zero weights. */
    const float *row[3];
    vf k[2][9], b[2], left[2], centre[2];
    for (int ky = 0; ky < 3; ky++) {
        int iy = oy + ky - 1, inside = iy >= 0 && iy < h;
        row[ky] = x + (size_t)(inside ? iy : oy) * w * c + j;
        for (size_t v = 0; v < vecs; v++)
            for (int kx = 0; kx < 3; kx++)
                k[v][3 * ky + kx] = inside ? vload_n(w9 + (size_t)(3 * ky + kx) * c + j + v * VL, n) : vset1(0.0f);
    }
    for (size_t v = 0; v < vecs; v++) {
        b[v] = bias ? vload_n(bias + j + v * VL, n) : vset1(0.0f);
        left[v] = centre[v] = b[v];
    }
    float *out = y + (size_t)oy * w * c + j;
    /* before column ix: left = output ix - 1, centre = output ix */
    for (int ix = 0; ix < w; ix++) {
        size_t at = (size_t)ix * c;
        vf right[2];
        for (size_t v = 0; v < vecs; v++) right[v] = b[v];
        for (int ky = 0; ky < 3; ky++)
            for (size_t v = 0; v < vecs; v++) {
                vf in = vload_n(row[ky] + at + v * VL, n);
                left[v] = vfma(in, k[v][3 * ky + 2], left[v]);
                centre[v] = vfma(in, k[v][3 * ky + 1], centre[v]);
                right[v] = vfma(in, k[v][3 * ky], right[v]);
            }
        for (size_t v = 0; v < vecs; v++) {
            if (ix > 0) vstore_n(out + at - c + v * VL, vact(left[v], act), n);
            left[v] = centre[v];
            centre[v] = right[v];
        }
    }
    for (size_t v = 0; v < vecs; v++) vstore_n(out + (size_t)(w - 1) * c + v * VL, vact(left[v], act), n);
}

/* Row by row, so the three input rows stay in cache across the channel
 * blocks. */
static void dwconv3x3_simd(const float *x, float *y, int h, int w, int c, const float *w9, const float *bias,
                           dm_act act, int y0, int y1)
{
    size_t C = (size_t)c;
    for (int oy = y0; oy < y1; oy++) {
        size_t j = 0;
        for (; C - j >= 2 * VL; j += 2 * VL) dw_row(x, y, h, w, C, w9, bias, act, oy, j, 2, VL);
        if (C - j >= VL) dw_row(x, y, h, w, C, w9, bias, act, oy, j, 1, VL), j += VL;
        if (j < C) dw_row(x, y, h, w, C, w9, bias, act, oy, j, 1, C - j);
    }
}

/* -------------------------------------------------------------- bias_act */

static void bias_act_simd(float *y, size_t rows, size_t c, const float *bias, dm_act act)
{
    vbias_act_rows(y, rows, c, c, bias, act);
}

/* ---------------------------------------------------------------- sample */

static void sample_simd(const float *v, const float *off, float *u, int h, int w, int c, int groups, size_t p0,
                        size_t p1)
{
    size_t cg = (size_t)(c / groups);
    for (size_t p = p0; p < p1; p++) {
        int py = (int)(p / (size_t)w), px = (int)(p % (size_t)w);
        for (int g = 0; g < groups; g++) {
            float *out = u + p * c + (size_t)g * cg;
            const float *src[4];
            float wt[4];
            int corners = dm_bilinear_corners(v, h, w, c, (size_t)g * cg, (float)px + off[p * 2 * groups + 2 * g],
                                              (float)py + off[p * 2 * groups + 2 * g + 1], src, wt);
            for (size_t j = 0; j < cg; j += VL) {
                size_t n = lanes_left(cg, j);
                vf acc = vset1(0.0f);
                for (int k = 0; k < corners; k++) acc = vfma(vset1(wt[k]), vload_n(src[k] + j, n), acc);
                vstore_n(out + j, acc, n);
            }
        }
    }
}

/* ------------------------------------------------------------------ scan */

/* Steps whose dt a scan block computes before running the recurrence over
 * them.  softplus calls SLEEF's log1p, and a call inside the recurrence's
 * loop made every step spill the state and the constants around it. */
#define SCAN_STEPS 64
/* How far ahead of its reads of delta the dt loop asks for delta's rows;
 * it asks for the rows of u and y the recurrence comes to next as it goes.
 * A block walks its channels down every row, one cache line a row, and
 * where threads split the channels, the rows were mostly written by
 * another core: its cache answers slowly, and the hardware's prefetching
 * did not cover that. */
#define SCAN_PREFETCH_ROWS 16

/* Channels [c, c + n): the state stays in a register along the steps. */
static inline void scan_block(const dm_scan_args *a, size_t t0, size_t t1, size_t c, float *h, float *decay,
                              float *y, size_t n)
{
    size_t C = a->channels;
    vf hv = vload_n(h + c, n), av = vload_n(a->a + c, n), dv = vload_n(a->d + c, n);
    vf bias = vload_n(a->dt_bias + c, n), log_decay = vset1(0.0f), dts[SCAN_STEPS];
    for (size_t s0 = t0; s0 < t1; s0 += SCAN_STEPS) {
        size_t s1 = t1 - s0 < SCAN_STEPS ? t1 : s0 + SCAN_STEPS;
        for (size_t t = s0; t < s1; t++) {
            if (t + SCAN_PREFETCH_ROWS < t1) __builtin_prefetch(a->delta + (t + SCAN_PREFETCH_ROWS) * C + c);
            __builtin_prefetch(a->u + t * C + c);
            if (y) __builtin_prefetch(y + t * C + c, 1);
            dts[t - s0] = vsoftplus(vadd(vload_n(a->delta + t * C + c, n), bias));
        }
        for (size_t t = s0; t < s1; t++) {
            const float *bc = a->bc + t * a->bc_stride;
            size_t at = t * C + c;
            vf dt = dts[t - s0];
            vf dta = vmul(dt, av), da = vexp(dta);
            vf uv = vload_n(a->u + at, n);
            hv = vfma(da, hv, vmul(vmul(dt, vset1(bc[0])), uv));
            if (decay) log_decay = vadd(log_decay, dta);
            if (y) vstore_n(y + at, vfma(hv, vset1(bc[1]), vmul(uv, dv)), n);
        }
    }
    vstore_n(h + c, hv, n);
    if (decay) vstore_n(decay + c, vexp(log_decay), n);
}

static void scan_simd(const dm_scan_args *a, size_t t0, size_t t1, size_t c0, size_t c1, float *h, float *decay,
                      float *y)
{
    for (size_t c = c0; c < c1; c += VL) {
        if (c1 - c >= VL) scan_block(a, t0, t1, c, h, decay, y, VL);
        else scan_block(a, t0, t1, c, h, decay, y, c1 - c);
    }
}

/* ------------------------------------------------------------------- erf */

static void erf_simd(const float *x, float *y, size_t count)
{
    for (size_t i = 0; i < count; i += VL) {
        size_t n = lanes_left(count, i);
        vstore_n(y + i, verf(vload_n(x + i, n)), n);
    }
}

/* ------------------------------------------------------------------- exp */

static void exp_simd(const float *x, float *y, size_t count)
{
    for (size_t i = 0; i < count; i += VL) {
        size_t n = lanes_left(count, i);
        vstore_n(y + i, vexp(vload_n(x + i, n)), n);
    }
}

/* ------------------------------------------------------------ round_half */

static void round_half_simd(const float *x, float *y, size_t count, dm_precision precision)
{
    for (size_t i = 0; i < count; i += VL) {
        size_t n = lanes_left(count, i);
        vf v = vload_n(x + i, n);
        vstore_n(y + i, precision == DM_PRECISION_F16 ? vround_f16(v) : vround_bf16(v), n);
    }
}

/* ------------------------------------------------------------------ gemm */

/* The register block: BLOCK_ROWS rows of C by BLOCK_VECS vectors, as many
 * rows as the registers hold besides one vector of W per column vector and
 * one broadcast of A (AVX2 6 x 16, AVX-512 14 x 32, NEON 6 x 16, SSE2
 * 2 x 16 floats).
 * Each k then costs BLOCK_VECS loads and BLOCK_ROWS broadcasts for
 * BLOCK_ROWS * BLOCK_VECS multiply-adds. */
#define PANEL_VECS (DM_PANEL / VL > 0 ? DM_PANEL / VL : 1)
#define BLOCK_VECS (PANEL_VECS > 1 ? PANEL_VECS : 2)
#define BLOCK_ROWS ((VREGS - BLOCK_VECS - 1) / BLOCK_VECS)
#define BLOCK_COLS (BLOCK_VECS * VL)
/* k per pass over a block's columns: their weights and the block's rows of
 * A (BLOCK_COLS + BLOCK_ROWS values a k) stay within 30 KiB of the
 * first-level cache (32 KiB on most cores, 48 on recent Intel ones) while
 * the rows pass under them; at most 256.  AVX-512 takes 160 (28.75 KiB),
 * the others 256. */
#define K_STEP_FIT (30 * 1024 / 4 / (BLOCK_COLS + BLOCK_ROWS) / 16 * 16)
#define K_STEP (K_STEP_FIT < 256 ? K_STEP_FIT : 256)

_Static_assert(DM_PANEL % VL == 0 || VL % DM_PANEL == 0, "panels are whole vectors");
_Static_assert((BLOCK_ROWS == 2 || BLOCK_ROWS == 6 || BLOCK_ROWS == 14) && BLOCK_VECS <= 4,
               "gemm_block_rows has a case for each row count up to BLOCK_ROWS, and up to 4 vectors");

/* rows x vecs of C at c (cols columns of it) over k in [0, ks): w holds the
 * block's panels (panel_stride floats apart) from the step's first k, a
 * the rows' values from it.  The step's sums start from 0 and are added to
 * beta * C (the first step of a product; later ones pass beta 1), which
 * keeps the rounding error of a long sum near that of one step's; the
 * last step applies bias and act.  Each k also asks the cache for the line
 * of that k in the panel at `next` (the next block's weights, or w itself
 * when there is nothing to fetch). */
static inline __attribute__((always_inline)) void gemm_block(size_t rows, size_t vecs, size_t ks, const float *a,
                                                             size_t lda, const float *w, size_t panel_stride,
                                                             float beta, const float *bias, dm_act act, float *c,
                                                             size_t ldc, size_t cols, const float *next)
{
    vf acc[BLOCK_ROWS][BLOCK_VECS];
    size_t lanes[BLOCK_VECS];
    for (size_t j = 0; j < vecs; j++) lanes[j] = cols > j * VL ? lanes_left(cols, j * VL) : 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < vecs; j++) acc[r][j] = vset1(0.0f);
    const float *wj[BLOCK_VECS];
    for (size_t j = 0; j < vecs; j++) wj[j] = w + j * VL / DM_PANEL * panel_stride + j * VL % DM_PANEL;
    for (size_t k = 0; k < ks; k++) {
        vf b[BLOCK_VECS];
        for (size_t j = 0; j < vecs; j++) b[j] = vload(wj[j] + k * DM_PANEL);
        __builtin_prefetch(next + k * DM_PANEL);
        for (size_t r = 0; r < rows; r++) {
            vf ar = vset1(a[r * lda + k]);
            for (size_t j = 0; j < vecs; j++) acc[r][j] = vfma(ar, b[j], acc[r][j]);
        }
    }
    for (size_t j = 0; j < vecs; j++) {
        if (!lanes[j]) continue;
        vf bj = bias ? vload_n(bias + j * VL, lanes[j]) : vset1(0.0f);
        for (size_t r = 0; r < rows; r++) vstore_product(c + r * ldc + j * VL, acc[r][j], beta, bj, act, lanes[j]);
    }
}

/* The block for a run-time row and vector count (vecs below BLOCK_VECS:
 * the last columns of a product), each its own copy so the accumulators
 * stay in registers. */
static void gemm_block_rows(size_t rows, size_t vecs, size_t ks, const float *a, size_t lda, const float *w,
                            size_t panel_stride, float beta, const float *bias, dm_act act, float *c, size_t ldc,
                            size_t cols, const float *next)
{
#define GEMM_VECS(n, v)                                                                  \
    case v: gemm_block(n, v, ks, a, lda, w, panel_stride, beta, bias, act, c, ldc, cols, next); return;
#if BLOCK_VECS > 2
#define GEMM_MORE_VECS(n) GEMM_VECS(n, 3) GEMM_VECS(n, 4)
#else
#define GEMM_MORE_VECS(n)
#endif
#define GEMM_CASE(n)                                                                     \
    case n:                                                                              \
        switch (vecs) { GEMM_VECS(n, 1) GEMM_VECS(n, 2) GEMM_MORE_VECS(n) }               \
        return;
    switch (rows) {
        GEMM_CASE(1) GEMM_CASE(2)
#if BLOCK_ROWS > 2
        GEMM_CASE(3) GEMM_CASE(4) GEMM_CASE(5) GEMM_CASE(6)
#endif
#if BLOCK_ROWS > 6
        GEMM_CASE(7) GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10) GEMM_CASE(11) GEMM_CASE(12) GEMM_CASE(13) GEMM_CASE(14)
#endif
    }
#undef GEMM_CASE
#undef GEMM_MORE_VECS
#undef GEMM_VECS
}

/* k steps outside; within a step, bands of rows whose values (128 KiB)
 * stay in the second-level cache while every block of columns passes over
 * them, each block's weights in the first-level cache while its rows pass
 * under it. */
static void gemm_simd(size_t rows, size_t K, const float *A, size_t lda, const float *w, size_t n0, size_t n1,
                      float beta, const float *bias, dm_act act, float *C, size_t ldc)
{
    size_t panel_stride = K * DM_PANEL;
    for (size_t k0 = 0; k0 == 0 || k0 < K; k0 += K_STEP) {
        size_t ks = K - k0 < K_STEP ? K - k0 : K_STEP;
        size_t band = ks ? 32768 / ks / BLOCK_ROWS * BLOCK_ROWS : rows;
        if (band < BLOCK_ROWS) band = BLOCK_ROWS;
        int last = k0 + ks >= K;
        for (size_t m0 = 0; m0 < rows; m0 += band) {
            size_t m1 = rows - m0 < band ? rows : m0 + band;
            for (size_t n = n0; n < n1; n += BLOCK_COLS) {
                size_t cols = n1 - n < BLOCK_COLS ? n1 - n : BLOCK_COLS;
                size_t vecs = (cols + VL - 1) / VL;
                const float *wn = w + n / DM_PANEL * panel_stride + k0 * DM_PANEL;
                /* The first band's last row blocks fetch the next block's
                 * panels, one each: the weights come from beyond the
                 * second-level cache once, then stay there for the other
                 * bands. */
                size_t next_panels = m0 == 0 && n + BLOCK_COLS < n1 ? (n1 - n - BLOCK_COLS + DM_PANEL - 1) / DM_PANEL : 0;
                if (next_panels > BLOCK_COLS / DM_PANEL) next_panels = BLOCK_COLS / DM_PANEL;
                for (size_t r = m0; r < m1; r += BLOCK_ROWS) {
                    size_t left = (m1 - r - 1) / BLOCK_ROWS;
                    const float *next = left < next_panels ? wn + (BLOCK_COLS / DM_PANEL + left) * panel_stride : wn;
                    gemm_block_rows(m1 - r < BLOCK_ROWS ? m1 - r : BLOCK_ROWS, vecs, ks, A + r * lda + k0, lda, wn, panel_stride, k0 == 0 ? beta : 1.0f,
                                    last && bias ? bias + n : NULL, last ? act : DM_ACT_NONE, C + r * ldc + n, ldc,
                                    cols, next);
                }
            }
        }
    }
}

const dm_kernels VEC_TABLE = {
    .isa = VEC_ISA,
    .gemm_rows = BLOCK_ROWS,
    .layernorm = layernorm_simd,
    .dwconv3x3 = dwconv3x3_simd,
    .bias_act = bias_act_simd,
    .sample = sample_simd,
    .scan = scan_simd,
    .erf = erf_simd,
    .exp = exp_simd,
    .round_half = round_half_simd,
    .gemm = gemm_simd,
};
