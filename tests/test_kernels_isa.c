/* test_kernels_isa.c - the SIMD kernel table named by DAMAMBA_ISA against the
 * scalar reference, over sweeps of sizes: one element, every vector tail,
 * odd channel counts, large images, sub-ranges of rows, pixels, steps and
 * channels.  Output buffers start with the same random fill and carry guard
 * floats past their end, so a kernel that writes outside its range fails
 * as surely as one that computes a wrong value. */
#include "testutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "simd_tables.h"

/* Both sides compute in float32 with the same formulas; they differ only
 * in summation order, fused multiply-adds and ulp-level differences of the
 * vector math functions. */
#define SWEEP_TOL 1e-5
#define GUARD 8

static const dm_kernels *simd;

static const size_t channel_sweep[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 96, 1027};
#define N_CHANNELS (sizeof channel_sweep / sizeof channel_sweep[0])
static const char *const act_name[] = {"none", "gelu", "silu"};

static uint64_t rng_state = 0x5eed;

static float uniform(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

static float *random_floats(size_t n, float lo, float hi)
{
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = uniform(lo, hi);
    return p;
}

/* One output buffer twice: `want` for the reference, `got` for the table
 * under test; n floats plus GUARD, filled alike. */
typedef struct out_pair {
    float *want, *got;
    size_t n;
} out_pair;

static out_pair out_pair_new(size_t n)
{
    out_pair p = {random_floats(n + GUARD, -1.0f, 1.0f), malloc(sizeof(float) * (n + GUARD)), n};
    memcpy(p.got, p.want, sizeof(float) * (n + GUARD));
    return p;
}

/* Compare every float, guards included, then free both.  The rest of the
 * arguments print the case's label. */
__attribute__((format(printf, 2, 3))) static void out_pair_check(out_pair *p, const char *fmt, ...)
{
    char label[128], full[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "[%s] %s", simd->isa, label);
    double err = test_rel_err(full, p->got, p->want, p->n + GUARD);
    free(p->want);
    free(p->got);
    ck_assert_msg(err <= SWEEP_TOL, "%s: relative error %.3e", full, err);
}

START_TEST(sweep_layernorm)
{
    for (size_t i = 0; i < N_CHANNELS; i++)
        for (int act = DM_ACT_NONE; act <= DM_ACT_SILU; act++) {
            size_t c = channel_sweep[i], rows = 3;
            float *x = random_floats(rows * c, 1.0f, 5.0f); /* a mean far from 0 */
            float *gamma = random_floats(c, 0.5f, 1.5f), *beta = random_floats(c, -0.5f, 0.5f);
            out_pair y = out_pair_new(rows * c);
            dm_kernels_scalar.layernorm(x, y.want, rows, c, gamma, beta, (dm_act)act);
            simd->layernorm(x, y.got, rows, c, gamma, beta, (dm_act)act);
            out_pair_check(&y, "layernorm c=%zu act=%s", c, act_name[act]);

            /* In place: x == y. */
            out_pair inplace = out_pair_new(rows * c);
            memcpy(inplace.want, x, sizeof(float) * rows * c);
            memcpy(inplace.got, x, sizeof(float) * rows * c);
            dm_kernels_scalar.layernorm(inplace.want, inplace.want, rows, c, gamma, beta, (dm_act)act);
            simd->layernorm(inplace.got, inplace.got, rows, c, gamma, beta, (dm_act)act);
            out_pair_check(&inplace, "layernorm in place c=%zu act=%s", c, act_name[act]);
            free(x); free(gamma); free(beta);
        }
}
END_TEST

START_TEST(sweep_bias_act)
{
    static const size_t rows_sweep[] = {1, 3, 64};
    for (size_t r = 0; r < 3; r++)
        for (size_t i = 0; i < N_CHANNELS; i++)
            for (int act = DM_ACT_NONE; act <= DM_ACT_SILU; act++) {
                size_t rows = rows_sweep[r], c = channel_sweep[i];
                int with_bias = (r + i + (size_t)act) % 2;
                float *bias = random_floats(c, -1.0f, 1.0f);
                out_pair y = out_pair_new(rows * c);
                for (size_t j = 0; j < rows * c; j++) y.want[j] = y.got[j] = uniform(-8.0f, 8.0f);
                dm_kernels_scalar.bias_act(y.want, rows, c, with_bias ? bias : NULL, (dm_act)act);
                simd->bias_act(y.got, rows, c, with_bias ? bias : NULL, (dm_act)act);
                out_pair_check(&y, "bias_act rows=%zu c=%zu act=%s bias=%d", rows, c, act_name[act], with_bias);
                free(bias);
            }
}
END_TEST

START_TEST(sweep_dwconv3x3)
{
    static const int shapes[][3] = {
        {1, 1, 1}, {1, 5, 3}, {3, 2, 4}, {4, 7, 5}, {2, 3, 8}, {5, 4, 13}, {3, 3, 32}, {4, 5, 67}, {28, 28, 96},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int act = DM_ACT_NONE; act <= DM_ACT_SILU; act++)
            for (int part = 0; part < 2; part++) {
                int h = shapes[s][0], w = shapes[s][1], c = shapes[s][2];
                /* All rows, or a band that leaves the first and last out. */
                int y0 = part ? h / 3 : 0, y1 = part ? h - h / 4 : h;
                size_t n = (size_t)h * w * c;
                float *x = random_floats(n, -1.0f, 1.0f), *w9 = random_floats(9 * (size_t)c, -0.5f, 0.5f);
                float *bias = (s + (size_t)act) % 2 ? random_floats((size_t)c, -1.0f, 1.0f) : NULL;
                out_pair y = out_pair_new(n);
                dm_kernels_scalar.dwconv3x3(x, y.want, h, w, c, w9, bias, (dm_act)act, y0, y1);
                simd->dwconv3x3(x, y.got, h, w, c, w9, bias, (dm_act)act, y0, y1);
                out_pair_check(&y, "dwconv3x3 %dx%dx%d rows %d-%d act=%s bias=%d", h, w, c, y0, y1,
                               act_name[act], bias != NULL);
                free(x); free(w9); free(bias);
            }
}
END_TEST

START_TEST(sweep_sample)
{
    static const int images[][2] = {{1, 1}, {3, 4}, {7, 5}, {14, 14}};
    static const int group_sweep[] = {1, 2, 3, 6};
    static const int group_channels[] = {1, 3, 4, 5, 16, 17};
    for (size_t im = 0; im < 4; im++)
        for (size_t g = 0; g < 4; g++)
            for (size_t k = 0; k < 6; k++)
                for (int part = 0; part < 2; part++) {
                    int h = images[im][0], w = images[im][1], groups = group_sweep[g];
                    int c = groups * group_channels[k];
                    size_t pixels = (size_t)h * w;
                    /* All pixels, or all but the first and last. */
                    size_t p0 = part && pixels > 2 ? 1 : 0, p1 = part && pixels > 2 ? pixels - 1 : pixels;
                    float *v = random_floats(pixels * c, -2.0f, 2.0f);
                    /* Offsets reach past every border; a few exact edge cases. */
                    float *off = random_floats(pixels * 2 * groups, -2.5f, 2.5f);
                    off[0] = NAN;
                    if (pixels * 2 * groups > 5) {
                        off[2] = -1.0f;
                        off[3] = 1.0f;
                        off[5] = (float)h;
                    }
                    out_pair u = out_pair_new(pixels * c);
                    dm_kernels_scalar.sample(v, off, u.want, h, w, c, groups, p0, p1);
                    simd->sample(v, off, u.got, h, w, c, groups, p0, p1);
                    out_pair_check(&u, "sample %dx%dx%d groups=%d pixels %zu-%zu", h, w, c, groups, p0, p1);
                    free(v); free(off);
                }
}
END_TEST

START_TEST(sweep_scan)
{
    static const size_t scan_channels[] = {1, 3, 4, 5, 8, 17, 64, 131};
    static const size_t steps[] = {1, 7, 50};
    for (size_t ci = 0; ci < 8; ci++)
        for (size_t li = 0; li < 3; li++)
            for (int outputs = 0; outputs < 3; outputs++) { /* y; decay; both */
                size_t C = scan_channels[ci], L = steps[li], stride = 3;
                /* Alternate whole ranges with unaligned sub-ranges. */
                int part = (ci + li + (size_t)outputs) % 2;
                size_t c0 = part && C > 2 ? 1 : 0, c1 = part && C > 2 ? C - 1 : C;
                size_t t0 = part ? L / 3 : 0, t1 = L;
                float *u = random_floats(L * C, -1.0f, 1.0f), *delta = random_floats(L * C, -4.0f, 4.0f);
                /* Both sides of softplus's threshold of 20, and far below. */
                for (size_t j = 0; j < L * C; j += 7) delta[j] = 25.0f;
                for (size_t j = 3; j < L * C; j += 11) delta[j] = -30.0f;
                float *bc = random_floats(L * stride, -1.0f, 1.0f), *a = random_floats(C, -2.0f, 1.0f);
                for (size_t c = 0; c < C; c++) a[c] = -expf(a[c]);
                float *d = random_floats(C, -1.0f, 1.0f), *bias = random_floats(C, -1.0f, 1.0f);
                dm_scan_args args = {u, delta, bc, stride, a, d, bias, C};
                out_pair hs = out_pair_new(C), decay = out_pair_new(C), y = out_pair_new(L * C);
                int with_y = outputs != 1, with_decay = outputs != 0;
                dm_kernels_scalar.scan(&args, t0, t1, c0, c1, hs.want, with_decay ? decay.want : NULL,
                                       with_y ? y.want : NULL);
                simd->scan(&args, t0, t1, c0, c1, hs.got, with_decay ? decay.got : NULL, with_y ? y.got : NULL);
                const char *label = "scan C=%zu ch %zu-%zu steps %zu-%zu %s";
                out_pair_check(&hs, label, C, c0, c1, t0, t1, "state");
                out_pair_check(&decay, label, C, c0, c1, t0, t1, "decay");
                out_pair_check(&y, label, C, c0, c1, t0, t1, "y");
                free(u); free(delta); free(bc); free(a); free(d); free(bias);
            }
}
END_TEST

/* The table under test, or the exit code that says why there is none:
 * a table this build lacks fails; one this CPU cannot run is skipped (77). */
static int choose_table(void)
{
    const char *isa = getenv("DAMAMBA_ISA");
    if (!isa || !*isa || strcmp(isa, "scalar") == 0) {
        fprintf(stderr, "set DAMAMBA_ISA to the SIMD table to compare with the scalar reference\n");
        return EXIT_FAILURE;
    }
    for (size_t i = 0; i < dm_simd_table_count; i++)
        if (strcmp(dm_simd_tables[i].table->isa, isa) == 0) {
            simd = dm_kernels_by_name(isa);
            if (simd) return EXIT_SUCCESS;
            printf("%s: this CPU cannot run it\n", isa);
            return 77;
        }
    fprintf(stderr, "%s: no such kernel table in this build\n", isa);
    return EXIT_FAILURE;
}

int main(void)
{
    int status = choose_table();
    if (!simd) return status;
    Suite *s = suite_create("kernels_isa");
    TCase *tc = tcase_create("sweeps");
    tcase_add_test(tc, sweep_layernorm);
    tcase_add_test(tc, sweep_bias_act);
    tcase_add_test(tc, sweep_dwconv3x3);
    tcase_add_test(tc, sweep_sample);
    tcase_add_test(tc, sweep_scan);
    suite_add_tcase(s, tc);
    return test_run(s);
}
