/* test_kernels.c - every SIMD kernel table this machine runs against the
 * scalar reference, over sweeps of sizes: 1, vector tails, odd channel
 * counts and large ones; and the chunked scan against the sequential one
 * for many chunk counts, under every table including scalar. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#include "simd_tables.h"

/* Every SIMD table this build carries; one the CPU cannot run is reported
 * and left out (the CI machine runs them all). */
#define SIMD_COUNT (int)dm_simd_table_count

/* Channel counts: 1, around both vector widths (8, 16), odd, large. */
static const int channel_sweep[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 48, 80, 257};
#define CHANNEL_COUNT (int)(sizeof channel_sweep / sizeof channel_sweep[0])

static const dm_act acts[] = {DM_ACT_NONE, DM_ACT_GELU, DM_ACT_SILU, DM_ACT_RELU};
#define ACT_COUNT (int)(sizeof acts / sizeof acts[0])

/* Room past every output: a kernel must leave it alone. */
#define GUARD 32
#define SENTINEL 12345.0f

static uint64_t rng_state;
static float uniform(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)(rng_state >> 40) / 16777216.0f;
}

static float *random_buffer(size_t n, float lo, float hi)
{
    float *p = malloc(sizeof(float) * (n + GUARD));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = uniform(lo, hi);
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

/* The SIMD table of loop index i, or NULL (reported) when it cannot run. */
static const dm_kernels *simd_table(int i)
{
    const char *isa = dm_simd_tables[i].table->isa;
    const dm_kernels *k = dm_kernels_by_name(isa);
    if (!k) printf("%s: this CPU cannot run it; not tested\n", isa);
    return k;
}

/* Rounding of SLEEF's 1-ulp functions and of fused multiply-adds. */
#define KERNEL_TOL 1e-5

START_TEST(layernorm_matches_scalar)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    rng_state = 1;
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

START_TEST(bias_act_matches_scalar)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    rng_state = 2;
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

START_TEST(dwconv3x3_matches_scalar)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    rng_state = 3;
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

START_TEST(sample_matches_scalar)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    rng_state = 4;
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

START_TEST(scan_matches_scalar)
{
    const dm_kernels *k = simd_table(_i);
    if (!k) return;
    rng_state = 5;
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
                sentinel_pair(n, &p_want, &p_got);
                dm_kernels_scalar.scan(&s.args, t0, t1, c0, c1, h_want, p_want, y_want);
                k->scan(&s.args, t0, t1, c0, c1, h_got, p_got, y_got);
                char what[96];
                snprintf(what, sizeof what, "[%s] scan L=%zu C=%zu steps %zu..%zu channels %zu..%zu", k->isa, L,
                         C, t0, t1, c0, c1);
                expect_close(what, y_got, y_want, n, KERNEL_TOL);
                expect_close(what, p_got, p_want, n, KERNEL_TOL);
                expect_close(what, h_got, h_want, C, KERNEL_TOL);
                /* the fix-up, on top of those outputs */
                float *carry = random_buffer(C, -2.0f, 2.0f);
                dm_kernels_scalar.scan_fixup(&s.args, t0, t1, c0, c1, carry, p_want, y_want);
                k->scan_fixup(&s.args, t0, t1, c0, c1, carry, p_want, y_got);
                expect_close(what, y_got, y_want, n, KERNEL_TOL);
                free(h_want); free(h_got); free(y_want); free(y_got); free(p_want); free(p_got); free(carry);
            }
            scan_case_free(&s);
        }
}
END_TEST

/* Every table, scalar first, for the chunked scan. */
static const dm_kernels *any_table(int i) { return i == 0 ? &dm_kernels_scalar : simd_table(i - 1); }

START_TEST(chunked_scan_matches_sequential)
{
    const dm_kernels *k = any_table(_i);
    if (!k) return;
    rng_state = 6;
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
                float *y = malloc(sizeof(float) * (n + GUARD)), *h = malloc(sizeof(float) * (C + GUARD));
                float *states = malloc(sizeof(float) * chunks * C), *decay = malloc(sizeof(float) * n);
                memcpy(h, h0, sizeof(float) * (C + GUARD));
                for (size_t i = 0; i < n + GUARD; i++) y[i] = SENTINEL;
                dm_scan_chunked(k, &s.args, L, chunks, 2, h, states, decay, y);
                char what[96];
                snprintf(what, sizeof what, "[%s] chunked scan L=%zu C=%zu chunks=%zu", k->isa, L, C, chunks);
                expect_close(what, y, y_want, n, KERNEL_TOL);
                expect_close(what, h, h_want, C, KERNEL_TOL);
                free(y); free(h); free(states); free(decay);
            }
            free(h0); free(y_want); free(h_want);
            scan_case_free(&s);
        }
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
    TCase *tc = tcase_create("simd_vs_scalar");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, layernorm_matches_scalar, 0, SIMD_COUNT);
    tcase_add_loop_test(tc, bias_act_matches_scalar, 0, SIMD_COUNT);
    tcase_add_loop_test(tc, dwconv3x3_matches_scalar, 0, SIMD_COUNT);
    tcase_add_loop_test(tc, sample_matches_scalar, 0, SIMD_COUNT);
    tcase_add_loop_test(tc, scan_matches_scalar, 0, SIMD_COUNT);
    tcase_add_loop_test(tc, chunked_scan_matches_sequential, 0, SIMD_COUNT + 1);
    tcase_add_test(tc, unknown_isa_is_refused);
    suite_add_tcase(s, tc);
    return test_run(s);
}
