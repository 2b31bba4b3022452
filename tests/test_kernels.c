/* test_kernels.c - a test per kernel of simd/kernels.h's list, run under
 * every table this machine runs, the scalar one first.  Kernels with SIMD
 * bodies are checked against the scalar reference over sweeps of sizes: 1,
 * vector tails, odd channel counts and large ones; the others against
 * float64 computations here and values worked by hand from PyTorch's
 * definitions.  The chunked scan is checked against the sequential one
 * for many chunk counts. */
#include "testutil.h"

#include <float.h>
#include <stdalign.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#include "simd_tables.h"

/* The scalar table and every SIMD table this build carries; one the CPU
 * cannot run is reported and left out (the CI machine runs them all). */
#define TABLE_COUNT (int)(dm_simd_table_count + 1)

/* Channel counts: 1, around both vector widths (8, 16), odd, large. */
static const int channel_sweep[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 48, 80, 257};
#define CHANNEL_COUNT (int)(sizeof channel_sweep / sizeof channel_sweep[0])

static const dm_act acts[] = {DM_ACT_NONE, DM_ACT_GELU, DM_ACT_SILU, DM_ACT_RELU};
#define ACT_COUNT (int)(sizeof acts / sizeof acts[0])

/* Room past every output: a kernel must leave it alone. */
#define GUARD 32
#define SENTINEL 12345.0f


static float *random_buffer(size_t n, float lo, float hi)
{
    float *p = malloc(sizeof(float) * (n + GUARD));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = test_uniform(lo, hi);
    for (size_t i = n; i < n + GUARD; i++) p[i] = SENTINEL;
    return p;
}

/* Two output buffers of n (+ guard) floats filled alike with sentinels. */
static void sentinel_pair(size_t n, float **a, float **b)
{
    *a = malloc(sizeof(float) * (n + GUARD));
    *b = malloc(sizeof(float) * (n + GUARD));
    ck_assert(*a && *b);
    for (size_t i = 0; i < n + GUARD; i++) (*a)[i] = (*b)[i] = SENTINEL;
}

/* got matches want to tol relative to max(1, max|want|), guard included
 * (NaN counts as a mismatch). */
static void expect_close(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double max_err = 0.0, max_ref = 1.0;
    size_t worst = 0;
    for (size_t i = 0; i < n + GUARD; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) {
            max_err = e;
            worst = i;
        }
        if (i < n && fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    }
    ck_assert_msg(max_err <= tol * max_ref, "%s: element %zu is %g, expected %g (error %.3g > %.3g)", what, worst,
                  got[worst], want[worst], max_err, tol * max_ref);
}

/* The table of loop index i: the scalar one, then each SIMD table; NULL
 * (reported) when this CPU cannot run it. */
static const dm_kernels *any_table(int i)
{
    if (i == 0) return &dm_kernels_scalar;
    const char *isa = dm_simd_tables[i - 1].table->isa;
    const dm_kernels *k = dm_kernels_by_name(isa);
    if (!k) printf("%s: this CPU cannot run it; not tested\n", isa);
    return k;
}

/* The SIMD table of loop index i, or NULL when it is the scalar reference
 * itself or cannot run. */
static const dm_kernels *simd_table(int i) { return i == 0 ? NULL : any_table(i); }

/* Rounding of SLEEF's 1-ulp functions and of fused multiply-adds. */
#define KERNEL_TOL 1e-5

START_TEST(test_layernorm)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    test_seed(1);
    const size_t rows = 5;
    for (int ci = 0; ci < CHANNEL_COUNT; ci++)
        for (int ai = 0; ai < ACT_COUNT; ai++) {
            size_t c = (size_t)channel_sweep[ci], n = rows * c;
            float *x = random_buffer(n, -3.0f, 5.0f), *g = random_buffer(c, 0.5f, 1.5f);
            float *b = random_buffer(c, -1.0f, 1.0f), *want, *got;
            sentinel_pair(n, &want, &got);
            dm_kernels_scalar.layernorm(x, want, rows, c, g, b, acts[ai]);
            k->layernorm(x, got, rows, c, g, b, acts[ai]);
            char what[96];
            snprintf(what, sizeof what, "[%s] layernorm c=%zu act=%d", k->isa, c, ai);
            expect_close(what, got, want, n, KERNEL_TOL);
            /* in place */
            k->layernorm(x, x, rows, c, g, b, acts[ai]);
            expect_close(what, x, got, n, 0.0);
            free(x); free(g); free(b); free(want); free(got);
        }
}
END_TEST

START_TEST(test_bias_act)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    test_seed(2);
    const size_t rows = 4;
    for (int ci = 0; ci < CHANNEL_COUNT; ci++)
        for (int ai = 0; ai < ACT_COUNT; ai++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                size_t c = (size_t)channel_sweep[ci], n = rows * c;
                /* wide enough for both tails of erf and exp */
                float *want = random_buffer(n, -12.0f, 12.0f), *bias = random_buffer(c, -1.0f, 1.0f);
                float *got = malloc(sizeof(float) * (n + GUARD));
                memcpy(got, want, sizeof(float) * (n + GUARD));
                dm_kernels_scalar.bias_act(want, rows, c, with_bias ? bias : NULL, acts[ai]);
                k->bias_act(got, rows, c, with_bias ? bias : NULL, acts[ai]);
                char what[96];
                snprintf(what, sizeof what, "[%s] bias_act c=%zu act=%d bias=%d", k->isa, c, ai, with_bias);
                expect_close(what, got, want, n, KERNEL_TOL);
                free(want); free(bias); free(got);
            }
}
END_TEST

START_TEST(test_dwconv3x3)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    test_seed(3);
    static const int sizes[][2] = {{1, 1}, {1, 5}, {4, 1}, {2, 2}, {3, 7}, {9, 6}};
    for (int si = 0; si < 6; si++)
        for (int ci = 0; ci < CHANNEL_COUNT; ci++)
            for (int ai = 0; ai < ACT_COUNT; ai++) {
                int h = sizes[si][0], w = sizes[si][1], c = channel_sweep[ci];
                size_t n = (size_t)h * w * c;
                float *x = random_buffer(n, -2.0f, 2.0f), *w9 = random_buffer(9 * (size_t)c, -1.0f, 1.0f);
                float *b = random_buffer((size_t)c, -1.0f, 1.0f), *want, *got;
                /* all rows, then a band of rows (the rest stays untouched) */
                for (int band = 0; band < 2; band++) {
                    int y0 = band && h > 2 ? 1 : 0, y1 = band && h > 2 ? h - 1 : h;
                    sentinel_pair(n, &want, &got);
                    dm_kernels_scalar.dwconv3x3(x, want, h, w, c, w9, ai ? b : NULL, acts[ai], y0, y1);
                    k->dwconv3x3(x, got, h, w, c, w9, ai ? b : NULL, acts[ai], y0, y1);
                    char what[96];
                    snprintf(what, sizeof what, "[%s] dwconv3x3 %dx%dx%d rows %d..%d act=%d", k->isa, h, w, c, y0,
                             y1, ai);
                    expect_close(what, got, want, n, KERNEL_TOL);
                    free(want); free(got);
                }
                free(x); free(w9); free(b);
            }
}
END_TEST

START_TEST(test_sample)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    test_seed(4);
    static const int sizes[][2] = {{1, 1}, {2, 3}, {5, 4}, {7, 7}};
    static const int group_channels[] = {1, 3, 8, 16, 17, 33};
    for (int si = 0; si < 4; si++)
        for (int gi = 0; gi < 6; gi++)
            for (int groups = 1; groups <= 3; groups++) {
                int h = sizes[si][0], w = sizes[si][1], c = group_channels[gi] * groups;
                size_t pixels = (size_t)h * w, n = pixels * c;
                float *v = random_buffer(n, -2.0f, 2.0f);
                /* offsets reach past every border; a few are NaN or exact */
                float *off = random_buffer(pixels * 2 * groups, -3.0f, 3.0f), *want, *got;
                off[0] = NAN;
                if (pixels * 2 * groups > 3) off[3] = 1.0f;
                sentinel_pair(n, &want, &got);
                dm_kernels_scalar.sample(v, off, want, h, w, c, groups, 0, pixels);
                k->sample(v, off, got, h, w, c, groups, 0, pixels);
                char what[96];
                snprintf(what, sizeof what, "[%s] sample %dx%dx%d groups=%d", k->isa, h, w, c, groups);
                expect_close(what, got, want, n, KERNEL_TOL);
                free(v); free(off); free(want); free(got);
            }
}
END_TEST

/* Scan inputs of L steps and C channels with decays spread from fast to
 * slow, as trained A and dt give. */
typedef struct scan_case {
    dm_scan_args args;
    float *u, *delta, *bc, *a, *d, *bias;
} scan_case;

static void scan_case_make(scan_case *s, size_t L, size_t C)
{
    s->u = random_buffer(L * C, -2.0f, 2.0f);
    s->delta = random_buffer(L * C, -6.0f, 4.0f);
    s->bc = random_buffer(3 * L, -1.5f, 1.5f);
    s->a = random_buffer(C, -3.0f, -0.01f);
    s->d = random_buffer(C, -1.0f, 1.0f);
    s->bias = random_buffer(C, -2.0f, 1.0f);
    /* one delta above softplus's threshold of 20 */
    s->delta[0] = 25.0f;
    s->args = (dm_scan_args){s->u, s->delta, s->bc, 3, s->a, s->d, s->bias, C};
}

static void scan_case_free(scan_case *s)
{
    free(s->u); free(s->delta); free(s->bc); free(s->a); free(s->d); free(s->bias);
}

START_TEST(test_scan)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    test_seed(5);
    static const size_t lengths[] = {1, 2, 9, 100};
    for (int li = 0; li < 4; li++)
        for (int ci = 0; ci < CHANNEL_COUNT; ci++) {
            size_t L = lengths[li], C = (size_t)channel_sweep[ci], n = L * C;
            scan_case s;
            scan_case_make(&s, L, C);
            /* all channels from zero; then a channel range and a later
             * step range from a nonzero state */
            size_t ranges[2][4] = {{0, L, 0, C}, {L / 3, L, C / 3, C - C / 4}};
            for (int r = 0; r < 2; r++) {
                size_t t0 = ranges[r][0], t1 = ranges[r][1], c0 = ranges[r][2], c1 = ranges[r][3];
                float *h_want = random_buffer(C, -1.0f, 1.0f), *h_got = malloc(sizeof(float) * (C + GUARD));
                memcpy(h_got, h_want, sizeof(float) * (C + GUARD));
                float *y_want, *y_got, *p_want, *p_got;
                sentinel_pair(n, &y_want, &y_got);
                sentinel_pair(C, &p_want, &p_got);
                dm_kernels_scalar.scan(&s.args, t0, t1, c0, c1, h_want, p_want, y_want);
                k->scan(&s.args, t0, t1, c0, c1, h_got, p_got, y_got);
                char what[96];
                snprintf(what, sizeof what, "[%s] scan L=%zu C=%zu steps %zu..%zu channels %zu..%zu", k->isa, L,
                         C, t0, t1, c0, c1);
                expect_close(what, y_got, y_want, n, KERNEL_TOL);
                expect_close(what, p_got, p_want, C, KERNEL_TOL);
                expect_close(what, h_got, h_want, C, KERNEL_TOL);
                free(h_want); free(h_got); free(y_want); free(y_got); free(p_want); free(p_got);
            }
            scan_case_free(&s);
        }
}
END_TEST

/* ------------------------------------ kernels with a scalar body only */

/* got[i] equals want[i] to KERNEL_TOL of max(1, max |want|). */
static void expect_close_f64(const char *what, const float *got, const double *want, size_t n)
{
    double max_err = 0.0, max_ref = 1.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        if (!(e <= max_err)) max_err = e;
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    }
    ck_assert_msg(max_err <= KERNEL_TOL * max_ref, "%s: error %.3g", what, max_err);
}

/* Worked by hand from PyTorch's adaptive_avg_pool2d: 5 columns into 3 bins
 * are [0, 2), [1, 4), [3, 5); 1 x 1 is the mean. */
START_TEST(test_avg_pool)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    const float row[5] = {1, 2, 3, 4, 5};
    float y[3];
    k->avg_pool(row, 1, 5, 1, y, 1, 3, 0, 3);
    ck_assert_float_eq(y[0], 1.5f);
    ck_assert_float_eq(y[1], 3.0f);
    ck_assert_float_eq(y[2], 4.5f);
    k->avg_pool(row, 1, 5, 1, y, 1, 1, 0, 1);
    ck_assert_float_eq(y[0], 3.0f);
    /* a float64 sum over each bin, two channels apart, output ranges */
    test_seed(8);
    static const int shapes[][4] = {{7, 9, 3, 4}, {6, 6, 6, 6}, {5, 3, 7, 2}, {2, 8, 1, 1}};
    for (int si = 0; si < 4; si++) {
        int h = shapes[si][0], w = shapes[si][1], oh = shapes[si][2], ow = shapes[si][3], c = 3;
        float *x = random_buffer((size_t)h * w * c, -2.0f, 2.0f), *got = malloc(sizeof(float) * oh * ow * c);
        double *want = malloc(sizeof(double) * oh * ow * c);
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int ch = 0; ch < c; ch++) {
                    int y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
                    int x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
                    double sum = 0.0;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++) sum += x[(iy * w + ix) * c + ch];
                    want[(oy * ow + ox) * c + ch] = sum / ((y1 - y0) * (x1 - x0));
                }
        size_t mid = (size_t)oh * ow / 2;
        k->avg_pool(x, h, w, c, got, oh, ow, 0, mid);
        k->avg_pool(x, h, w, c, got, oh, ow, mid, (size_t)oh * ow);
        char what[96];
        snprintf(what, sizeof what, "[%s] avg_pool %dx%d -> %dx%d", k->isa, h, w, oh, ow);
        expect_close_f64(what, got, want, (size_t)oh * ow * c);
        free(x); free(got); free(want);
    }
}
END_TEST

START_TEST(test_max_pool)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    /* 3 x 3 windows at stride 2, padding 1, over 4 x 4 values 0..15:
     * windows centred on (0, 0), (0, 2), (2, 0), (2, 2) */
    float x[16], y[4];
    for (int i = 0; i < 16; i++) x[i] = (float)i;
    k->max_pool(x, 4, 4, 1, 3, 2, 1, y, 2, 2, 0, 4);
    ck_assert_float_eq(y[0], 5.0f);
    ck_assert_float_eq(y[1], 7.0f);
    ck_assert_float_eq(y[2], 13.0f);
    ck_assert_float_eq(y[3], 15.0f);
    /* all negative: the padding never wins */
    for (int i = 0; i < 16; i++) x[i] = -1.0f - (float)i;
    k->max_pool(x, 4, 4, 1, 3, 2, 1, y, 2, 2, 0, 4);
    ck_assert_float_eq(y[0], -1.0f);
    ck_assert_float_eq(y[3], -6.0f);
}
END_TEST

START_TEST(test_resize)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    /* PyTorch, align_corners=False: [0, 1] doubled is [0, .25, .75, 1];
     * [a, b, c, d] halved samples at 0.5 and 2.5 */
    const float two[2] = {0, 1}, four[4] = {1, 3, 5, 9};
    float y[5];
    k->resize(two, 1, 2, 1, DM_RESIZE_BILINEAR, y, 1, 4, 0, 4);
    ck_assert_float_eq(y[0], 0.0f);
    ck_assert_float_eq(y[1], 0.25f);
    ck_assert_float_eq(y[2], 0.75f);
    ck_assert_float_eq(y[3], 1.0f);
    k->resize(four, 1, 4, 1, DM_RESIZE_BILINEAR, y, 1, 2, 0, 2);
    ck_assert_float_eq(y[0], 2.0f);
    ck_assert_float_eq(y[1], 7.0f);
    /* nearest: floor(i * in / out): 4 -> 2 takes 0, 2; 2 -> 5 takes 0, 0, 0, 1, 1 */
    k->resize(four, 1, 4, 1, DM_RESIZE_NEAREST, y, 1, 2, 0, 2);
    ck_assert_float_eq(y[0], 1.0f);
    ck_assert_float_eq(y[1], 5.0f);
    k->resize(two, 1, 2, 1, DM_RESIZE_NEAREST, y, 1, 5, 0, 5);
    for (int i = 0; i < 5; i++) ck_assert_float_eq(y[i], i < 3 ? 0.0f : 1.0f);
    /* in two dimensions: a bilinear function of (y, x) is reproduced
     * inside the clamped border, and a resize to the same size is a copy */
    float plane[6 * 5], up[12 * 10];
    for (int iy = 0; iy < 6; iy++)
        for (int ix = 0; ix < 5; ix++) plane[iy * 5 + ix] = 2.0f * iy - 3.0f * ix;
    k->resize(plane, 6, 5, 1, DM_RESIZE_BILINEAR, up, 12, 10, 0, 120);
    for (int oy = 1; oy < 11; oy++)
        for (int ox = 1; ox < 9; ox++) {
            double sy = (oy + 0.5) / 2 - 0.5, sx = (ox + 0.5) / 2 - 0.5;
            ck_assert_double_eq_tol(up[oy * 10 + ox], 2.0 * sy - 3.0 * sx, 1e-5);
        }
    k->resize(plane, 6, 5, 1, DM_RESIZE_BILINEAR, up, 6, 5, 0, 30);
    ck_assert_mem_eq(up, plane, sizeof plane);
}
END_TEST

START_TEST(test_add)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    test_seed(9);
    for (int ai = 0; ai < 3; ai++) {
        size_t n = 257;
        float *a = random_buffer(n, -6.0f, 6.0f), *b = random_buffer(n, -6.0f, 6.0f), *y = malloc(sizeof(float) * n);
        double *want = malloc(sizeof(double) * n);
        for (size_t i = 0; i < n; i++) {
            double v = (double)a[i] + b[i];
            want[i] = acts[ai] == DM_ACT_GELU ? 0.5 * v * (1.0 + erf(v / sqrt(2.0)))
                      : acts[ai] == DM_ACT_SILU ? v / (1.0 + exp(-v)) : v;
        }
        k->add(a, b, y, n, acts[ai]);
        char what[64];
        snprintf(what, sizeof what, "[%s] add act=%d", k->isa, ai);
        expect_close_f64(what, y, want, n);
        k->add(a, b, a, n, acts[ai]); /* in place */
        ck_assert_mem_eq(a, y, sizeof(float) * n);
        free(a); free(b); free(y); free(want);
    }
}
END_TEST

/* The float's place on the number line, so that adjacent floats differ
 * by one (-0 and +0 coincide). */
static int64_t float_rank(float f)
{
    int32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits < 0 ? -(int64_t)(bits & 0x7fffffff) : bits;
}

/* erf against erff over every 509th float of [0, 4.5] and its negatives,
 * every float near the SIMD form's seams at 1 and 3.92, and the specials:
 * within ERF_ULP units in the last place. */
/* The largest distance in units in the last place between a function
 * kernel and its libm reference over the floats x and -x for x from 0 to
 * top, every `step`-th one, and every one within 3000 of each seam;
 * *worst_x is where it is. */
#define SWEEP_BATCH 4099 /* not a multiple of any vector width: tails too */
static int64_t worst_ulp(void (*kernel)(const float *, float *, size_t), float (*ref)(float), float top, int32_t step,
                         const float *seams, int seam_count, float *worst_x)
{
    float *x = malloc(sizeof(float) * SWEEP_BATCH), *y = malloc(sizeof(float) * SWEEP_BATCH);
    ck_assert(x && y);
    int64_t worst = 0;
    int32_t last = (int32_t)float_rank(top);
    size_t n = 0;
    for (int32_t r = 0; r <= last;) {
        float v;
        memcpy(&v, &r, sizeof v);
        x[n++] = v;
        x[n++] = -v;
        int near_seam = 0;
        for (int i = 0; i < seam_count; i++) near_seam |= llabs(r - float_rank(seams[i])) < 3000;
        r += near_seam ? 1 : step;
        if (n + 2 > SWEEP_BATCH || r > last) {
            kernel(x, y, n);
            for (size_t i = 0; i < n; i++) {
                int64_t d = llabs(float_rank(y[i]) - float_rank(ref(x[i])));
                if (d > worst) worst = d, *worst_x = x[i];
            }
            n = 0;
        }
    }
    free(x);
    free(y);
    return worst;
}

#define ERF_ULP 3
START_TEST(test_erf)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    static const float seams[2] = {1.0f, 3.92f};
    float worst_x = 0.0f, y[4];
    int64_t worst = worst_ulp(k->erf, erff, 4.5f, 509, seams, 2, &worst_x);
    ck_assert_msg(worst <= ERF_ULP, "[%s] erf(%.9g) is %lld ulp from erff", k->isa, worst_x, (long long)worst);
    const float special[4] = {INFINITY, -INFINITY, 100.0f, -0.0f};
    k->erf(special, y, 4);
    ck_assert(y[0] == 1.0f && y[1] == -1.0f && y[2] == 1.0f && y[3] == 0.0f);
    const float nan = NAN;
    k->erf(&nan, y, 1);
    ck_assert(isnan(y[0]));
}
END_TEST

/* round_half against the rounding computed in double arithmetic
 * (testutil.c, which test_convert checks the file conversions by too):
 * every 65521st float bit pattern of
 * both signs, the halfway points, subnormals, overflow and the specials,
 * bit for bit; NaN stays NaN. */
#define ROUND_BATCH (4 * 32768 + 64) /* the sweep (32,735 steps of 4), then the specials */
START_TEST(test_round_half)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    float *x = malloc(sizeof(float) * ROUND_BATCH), *y = malloc(sizeof(float) * ROUND_BATCH);
    ck_assert(x && y);
    size_t n = 0;
    for (uint32_t r = 0; r < 0x7f800000u; r += 65521) {
        uint32_t tie16 = (r & ~0xffffu) | 0x8000u, tie13 = (r & ~0x1fffu) | 0x1000u;
        uint32_t bits[4] = {r, r | 0x80000000u, tie16, tie13};
        for (int i = 0; i < 4; i++) memcpy(&x[n++], &bits[i], sizeof(float));
    }
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, 65504.0f, 65519.99f, 65520.0f, -65520.0f,
                             0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-26f, 0x1.ffep-15f, FLT_MAX, FLT_MIN, 1.0f / 3.0f};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) x[n++] = special[i];
    for (int p = DM_PRECISION_BF16; p <= DM_PRECISION_F16; p++) {
        k->round_half(x, y, n, (dm_precision)p);
        for (size_t i = 0; i < n; i++) {
            float want = (float)(p == DM_PRECISION_F16 ? test_f16_round(x[i]) : test_bf16_round(x[i]));
            ck_assert_msg(memcmp(&y[i], &want, sizeof want) == 0, "[%s] %s(%a) = %a, want %a", k->isa,
                          p == DM_PRECISION_F16 ? "f16" : "bf16", (double)x[i], (double)y[i], (double)want);
        }
        /* in place, with a tail */
        memcpy(y, x, 13 * sizeof *y);
        k->round_half(y, y, 13, (dm_precision)p);
        for (size_t i = 0; i < 13; i++) {
            float want = (float)(p == DM_PRECISION_F16 ? test_f16_round(x[i]) : test_bf16_round(x[i]));
            ck_assert(memcmp(&y[i], &want, sizeof want) == 0);
        }
        const float nan = NAN;
        k->round_half(&nan, y, 1, (dm_precision)p);
        ck_assert_msg(isnan(y[0]), "[%s] NaN did not stay NaN", k->isa);
        /* a signalling NaN with its payload in the low 16 bits comes out
         * quiet, so its high half (a packed bf16) is a NaN too */
        uint32_t bits = 0x7f800001u;
        float snan;
        memcpy(&snan, &bits, sizeof bits);
        k->round_half(&snan, y, 1, (dm_precision)p);
        memcpy(&bits, &y[0], sizeof bits);
        ck_assert_msg((bits & 0x7fc00000u) == 0x7fc00000u, "[%s] NaN 0x7f800001 rounded to %#x, not a quiet NaN",
                      k->isa, (unsigned)bits);
    }
    free(x);
    free(y);
}
END_TEST

/* exp against expf over every 257th float of [-87.3, 88.37], both signs,
 * then the ends of the range and the specials: within EXP_ULP units in
 * the last place inside the range, 0 below it, infinity above. */
#define EXP_ULP 2
START_TEST(test_exp)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    float worst_x = 0.0f, y[8];
    int64_t worst = worst_ulp(k->exp, expf, 87.3f, 257, NULL, 0, &worst_x);
    ck_assert_msg(worst <= EXP_ULP, "[%s] exp(%.9g) is %lld ulp from expf", k->isa, worst_x, (long long)worst);
    const float edge[] = {88.37f, -87.3f, 88.0f, -87.0f, 1e-30f, -1e-30f, 0.0f, -0.0f};
    k->exp(edge, y, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_msg(llabs(float_rank(y[i]) - float_rank(expf(edge[i]))) <= EXP_ULP, "[%s] exp(%g) = %g", k->isa,
                      (double)edge[i], (double)y[i]);
    const float special[5] = {INFINITY, -INFINITY, 100.0f, -100.0f, NAN};
    k->exp(special, y, 5);
    ck_assert(isinf(y[0]) && y[0] > 0 && y[1] == 0.0f && isinf(y[2]) && y[3] < 1e-37f && y[3] >= 0.0f);
    ck_assert(isnan(y[4]));
}
END_TEST

/* softplus as the scan computes it: one step from a zero state with
 * B = C = u = 1, a = d = 0 and no dt bias outputs dt = softplus(delta)
 * exactly, each channel its own delta. */
static const dm_kernels *softplus_table;
static void softplus_via_scan(const float *x, float *y, size_t n)
{
    static float ones[SWEEP_BATCH], zeros[SWEEP_BATCH], state[SWEEP_BATCH];
    static const float bc[2] = {1.0f, 1.0f};
    ck_assert_uint_le(n, SWEEP_BATCH);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f, zeros[i] = 0.0f, state[i] = 0.0f;
    dm_scan_args args = {ones, x, bc, 2, zeros, zeros, zeros, n};
    softplus_table->scan(&args, 0, 1, 0, n, state, NULL, y);
}

/* The scan's softplus against PyTorch's, log1pf(expf(x)) below 20 and x
 * above, over every 509th float of [-87, 87] (below, e^x is subnormal)
 * and both sides of 20: within SOFTPLUS_ULP units in the last place. */
#define SOFTPLUS_ULP 2
/* ReLU keeps NaN, as PyTorch's does (torch.relu(nan) is nan), in every
 * table and in the product's epilogue: a NaN feature stays visible in the
 * heads' outputs instead of becoming a plausible 0. */
START_TEST(test_relu_keeps_nan)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    enum { N = 37 }; /* whole vectors and a tail on every width */
    float x[N], w[1] = {1.0f}, y[N];
    for (int i = 0; i < N; i++) x[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? -(float)i : (float)i;
    memcpy(y, x, sizeof x);
    k->bias_act(y, N, 1, NULL, DM_ACT_RELU);
    for (int i = 0; i < N; i++)
        ck_assert_msg(i % 3 == 0 ? isnan(y[i]) : y[i] == (i % 3 == 1 ? 0.0f : x[i]), "[%s] bias_act relu(%g) = %g",
                      k->isa, x[i], y[i]);
    alignas(64) float panels[DM_PANEL];
    dm_pack_panels(w, 1, 1, panels);
    k->gemm(N, 1, x, 1, panels, 0, 1, 0.0f, NULL, DM_ACT_RELU, y, 1);
    for (int i = 0; i < N; i++)
        ck_assert_msg(i % 3 == 0 ? isnan(y[i]) : y[i] == (i % 3 == 1 ? 0.0f : x[i]), "[%s] gemm relu(%g) = %g",
                      k->isa, x[i], y[i]);
}
END_TEST

START_TEST(test_softplus)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    softplus_table = k;
    static const float seams[1] = {20.0f};
    float worst_x = 0.0f, y[4];
    int64_t worst = worst_ulp(softplus_via_scan, dm_softplus_ref, 87.0f, 509, seams, 1, &worst_x);
    ck_assert_msg(worst <= SOFTPLUS_ULP, "[%s] softplus(%.9g) is %lld ulp from PyTorch's", k->isa, worst_x,
                  (long long)worst);
    /* (not infinity: dt * a would be NaN) */
    const float special[4] = {-INFINITY, -100.0f, NAN, 1e30f};
    softplus_via_scan(special, y, 4);
    ck_assert(y[0] == 0.0f && y[1] >= 0.0f && y[1] < 1e-37f && isnan(y[2]) && y[3] == 1e30f);
}
END_TEST

START_TEST(chunked_scan_matches_sequential)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    test_seed(6);
    dm_pool *pool = dm_pool_create(2);
    ck_assert_ptr_nonnull(pool);
    static const size_t lengths[] = {1, 5, 64, 333};
    static const size_t channels[] = {1, 17, 48};
    for (int li = 0; li < 4; li++)
        for (int ci = 0; ci < 3; ci++) {
            size_t L = lengths[li], C = channels[ci], n = L * C;
            scan_case s;
            scan_case_make(&s, L, C);
            float *h0 = random_buffer(C, -1.0f, 1.0f);
            float *y_want = malloc(sizeof(float) * (n + GUARD)), *h_want = malloc(sizeof(float) * (C + GUARD));
            memcpy(h_want, h0, sizeof(float) * (C + GUARD));
            for (size_t i = 0; i < n + GUARD; i++) y_want[i] = SENTINEL;
            k->scan(&s.args, 0, L, 0, C, h_want, NULL, y_want);
            /* 1, a few, a prime, L itself and counts above L */
            size_t chunk_counts[] = {1, 2, 3, 4, 7, 16, L, L + 1, 2 * L + 5, 64};
            for (int q = 0; q < 10; q++) {
                size_t chunks = chunk_counts[q];
                /* all channels in one piece, then in blocks of 1, 5 and 16:
                 * the blocks must not change a single bit */
                static const size_t blocks[] = {0, 1, 5, 16};
                float *y_all = NULL, *h_all = NULL;
                for (int b = 0; b < 4; b++) {
                    float *y = malloc(sizeof(float) * (n + GUARD)), *h = malloc(sizeof(float) * (C + GUARD));
                    float *states = malloc(sizeof(float) * chunks * C), *decays = malloc(sizeof(float) * chunks * C);
                    memcpy(h, h0, sizeof(float) * (C + GUARD));
                    for (size_t i = 0; i < n + GUARD; i++) y[i] = SENTINEL;
                    dm_scan_chunked(k, &s.args, L, chunks, blocks[b], pool, h, states, decays, y);
                    char what[112];
                    snprintf(what, sizeof what, "[%s] chunked scan L=%zu C=%zu chunks=%zu block=%zu", k->isa, L, C,
                             chunks, blocks[b]);
                    expect_close(what, y, y_want, n, KERNEL_TOL);
                    expect_close(what, h, h_want, C, KERNEL_TOL);
                    if (b == 0) {
                        y_all = y;
                        h_all = h;
                    } else {
                        ck_assert_msg(memcmp(y, y_all, sizeof(float) * (n + GUARD)) == 0, "%s: y differs from one piece's", what);
                        ck_assert_msg(memcmp(h, h_all, sizeof(float) * C) == 0, "%s: h differs from one piece's", what);
                        free(y); free(h);
                    }
                    free(states); free(decays);
                }
                free(y_all); free(h_all);
            }
            free(h0); free(y_want); free(h_want);
            scan_case_free(&s);
        }
    dm_pool_destroy(pool);
}
END_TEST

/* gemm against a float64 product of the unpacked weight, every table the
 * reference included (so its packing and indexing are checked too), over
 * rows around every register block (1 to 29), columns around the panel
 * (1 to 80), k around every k step (1 to 321), a first column past 0,
 * row strides wider than the rows, every activation, beta 0 (C holds NaN,
 * which must not be read), 1 and 0.5, with and without bias.  Outside the
 * columns written, C keeps its sentinels.
 *
 * Bound: float32 sums of K products in any order are off by at most
 * (K + 2) * 2^-24 * sum |terms| (the 2 for beta * C and bias), doubled for
 * the fused and unfused multiply-adds, times the activation's slope (at
 * most 1.13, GELU's); the activation itself adds 2^-20 of its input's and
 * output's size (3-ulp erf, 2-ulp exp, and GELU's 1 + erf cancelling). */
START_TEST(test_gemm)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    test_seed(21);
    static const size_t rows_sweep[] = {1, 2, 5, 6, 7, 13, 14, 15, 29};
    static const size_t n_sweep[] = {1, 15, 16, 17, 31, 32, 33, 80};
    static const size_t k_sweep[] = {1, 3, 16, 127, 128, 129, 159, 160, 161, 257, 300, 321};
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    size_t index = 0;
    double worst = 0.0;
    for (size_t ri = 0; ri < sizeof rows_sweep / sizeof *rows_sweep; ri++)
        for (size_t ni = 0; ni < sizeof n_sweep / sizeof *n_sweep; ni++)
            for (size_t ki = 0; ki < sizeof k_sweep / sizeof *k_sweep; ki++, index++) {
                size_t rows = rows_sweep[ri], N = n_sweep[ni], K = k_sweep[ki];
                size_t lda = K + index % 2 * 3, ldc = N + index % 3 * 5, n0 = N > DM_PANEL && index % 5 == 0 ? DM_PANEL : 0;
                dm_act act = acts[index % ACT_COUNT];
                float beta = betas[index / ACT_COUNT % 3];
                int with_bias = index % 7 != 0;
                float *A = random_buffer(rows * lda, -1.0f, 1.0f), *W = random_buffer(N * K, -1.0f, 1.0f);
                float *bias = random_buffer(N, -1.0f, 1.0f), *packed = malloc(sizeof(float) * dm_packed_floats(N, K));
                size_t c_floats = rows * ldc;
                float *C = random_buffer(c_floats, -2.0f, 2.0f), *c0 = malloc(sizeof(float) * (c_floats + GUARD));
                ck_assert(packed && c0);
                for (size_t r = 0; r < rows; r++)
                    for (size_t n = 0; n < ldc; n++)
                        if (n < n0 || n >= N) C[r * ldc + n] = SENTINEL;
                        else if (beta == 0.0f) C[r * ldc + n] = NAN;
                memcpy(c0, C, sizeof(float) * (c_floats + GUARD));
                dm_pack_panels(W, N, K, packed);
                k->gemm(rows, K, A, lda, packed, n0, N, beta, with_bias ? bias : NULL, act, C, ldc);
                for (size_t i = 0; i < c_floats + GUARD; i++) {
                    size_t r = i / ldc, n = i % ldc;
                    if (r < rows && n >= n0 && n < N) {
                        double z = beta != 0.0f ? (double)beta * c0[i] : 0.0, size = fabs(z);
                        for (size_t kk = 0; kk < K; kk++) {
                            z += (double)A[r * lda + kk] * W[n * K + kk];
                            size += fabs((double)A[r * lda + kk] * W[n * K + kk]);
                        }
                        if (with_bias) z += bias[n], size += fabs(bias[n]);
                        double want = test_activate(z, act);
                        double bound = 1.13 * 2.0 * (double)(K + 2) * 0x1p-24 * size + 0x1p-20 * (fabs(want) + fabs(z));
                        double err = fabs((double)C[i] - want);
                        ck_assert_msg(err <= bound, "[%s] gemm rows=%zu N=%zu K=%zu n0=%zu beta=%g bias=%d act=%d: "
                                      "C[%zu][%zu] = %.9g, want %.9g (bound %.3g)", k->isa, rows, N, K, n0,
                                      (double)beta, with_bias, (int)act, r, n, (double)C[i], want, bound);
                        if (err / bound > worst) worst = err / bound;
                    } else {
                        ck_assert_msg(memcmp(&C[i], &c0[i], sizeof(float)) == 0,
                                      "[%s] gemm rows=%zu N=%zu K=%zu n0=%zu: wrote C element %zu outside its columns",
                                      k->isa, rows, N, K, n0, i);
                    }
                }
                free(A); free(W); free(bias); free(packed); free(C); free(c0);
            }
    printf("[%s] gemm: %zu products within their bounds; largest error %.3g of its bound\n", k->isa, index, worst);
}
END_TEST

/* A forced instruction set the machine lacks is refused by name. */
START_TEST(unknown_isa_is_refused)
{
    ck_assert_ptr_null(dm_kernels_by_name("pdp11"));
    ck_assert_ptr_eq(dm_kernels_by_name("scalar"), &dm_kernels_scalar);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 120);
    /* one test per kernel of the list: a kernel without one does not compile */
#define ADD_KERNEL_TEST(name, params) tcase_add_loop_test(tc, test_##name, 0, TABLE_COUNT);
    DM_KERNEL_LIST(ADD_KERNEL_TEST)
#undef ADD_KERNEL_TEST
    tcase_add_loop_test(tc, test_softplus, 0, TABLE_COUNT);
    tcase_add_loop_test(tc, test_relu_keeps_nan, 0, TABLE_COUNT);
    tcase_add_loop_test(tc, chunked_scan_matches_sequential, 0, TABLE_COUNT);
    tcase_add_test(tc, unknown_isa_is_refused);
    suite_add_tcase(s, tc);
    return test_run(s);
}
