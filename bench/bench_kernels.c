/* bench_kernels.c - single-thread speed of each kernel under each
 * instruction set this machine runs, on DAMamba-T's first-stage shapes
 * (56 x 56 pixels, 80 channels, ConvFFN hidden 320).
 *
 * usage: bench_kernels [REPEATS]
 * Prints the best time per call and the throughput in each kernel's unit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

enum { H = 56, W = 56, C = 80, F = 320, G = C / 16, P = H * W };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *filled(size_t n, float lo, float hi, unsigned seed)
{
    float *p = malloc(sizeof(float) * n);
    if (!p) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f;
    }
    return p;
}

typedef struct inputs {
    float *x, *y, *hid, *hid2, *w9, *w9f, *bias, *gamma, *off, *delta, *bc, *a, *d, *h, *decay;
} inputs;

/* One kernel call on the shapes above, under table k. */
typedef void (*kernel_call)(const dm_kernels *k, inputs *in);

static void call_layernorm(const dm_kernels *k, inputs *in) { k->layernorm(in->x, in->y, P, C, in->gamma, in->bias, DM_ACT_NONE); }
static void call_layernorm_gelu(const dm_kernels *k, inputs *in) { k->layernorm(in->x, in->y, P, C, in->gamma, in->bias, DM_ACT_GELU); }
static void call_dwconv(const dm_kernels *k, inputs *in) { k->dwconv3x3(in->hid, in->hid2, H, W, F, in->w9f, in->bias, DM_ACT_NONE, 0, H); }
static void call_dwconv_silu(const dm_kernels *k, inputs *in) { k->dwconv3x3(in->x, in->y, H, W, C, in->w9, in->bias, DM_ACT_SILU, 0, H); }
/* bias_act works in place: each call starts from a fresh copy, so values
 * stay in the range a forward pass sees (the copy is in the time). */
static void call_bias_gelu(const dm_kernels *k, inputs *in)
{
    memcpy(in->hid2, in->hid, sizeof(float) * P * F);
    k->bias_act(in->hid2, P, F, in->bias, DM_ACT_GELU);
}
static void call_sample(const dm_kernels *k, inputs *in) { k->sample(in->x, in->off, in->y, H, W, C, G, 0, P); }

static void call_scan(const dm_kernels *k, inputs *in)
{
    dm_scan_args args = {in->x, in->delta, in->bc, 2, in->a, in->d, in->bias, C};
    k->scan(&args, 0, P, 0, C, in->h, NULL, in->y);
}

static void call_scan_fixup(const dm_kernels *k, inputs *in)
{
    dm_scan_args args = {in->x, in->delta, in->bc, 2, in->a, in->d, in->bias, C};
    k->scan_fixup(&args, 0, P, 0, C, in->h, in->decay, in->y);
}

/* Each kernel's work per call, in the unit that bounds it: bytes read and
 * written once (GB/s), flops (GFLOP/s), or elements through SLEEF's
 * functions (Gelem/s). */
static const struct {
    const char *name;
    kernel_call call;
    double work;
    const char *unit;
} kernels[] = {
    {"layernorm 80ch", call_layernorm, 2.0 * P * C * 4, "GB/s"},
    {"layernorm+gelu 80ch", call_layernorm_gelu, (double)P * C, "Gelem/s"},
    {"dwconv3x3 320ch", call_dwconv, 18.0 * P * F, "GFLOP/s"},
    {"dwconv3x3+silu 80ch", call_dwconv_silu, 18.0 * P * C, "GFLOP/s"},
    {"copy+bias+gelu 320ch", call_bias_gelu, (double)P * F, "Gelem/s"},
    {"sample 80ch 5 groups", call_sample, 2.0 * P * C * 4, "GB/s"},
    {"scan 80ch", call_scan, (double)P * C, "Gelem/s"},
    {"scan_fixup 80ch", call_scan_fixup, 3.0 * P * C * 4, "GB/s"},
};

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 20;
    if (repeats < 1) repeats = 1;
    inputs in = {
        .x = filled((size_t)P * C, -2, 2, 1), .y = filled((size_t)P * C, 0, 1, 2),
        .hid = filled((size_t)P * F, -2, 2, 3), .hid2 = filled((size_t)P * F, 0, 1, 4),
        .w9 = filled(9 * C, -1, 1, 5), .w9f = filled(9 * F, -1, 1, 6), .bias = filled(F, -1, 1, 7),
        .gamma = filled(C, 0.5f, 1.5f, 8), .off = filled((size_t)P * 2 * G, -2, 2, 9),
        .delta = filled((size_t)P * C, -4, 2, 10), .bc = filled((size_t)P * 2, -1, 1, 11),
        .a = filled(C, -2, -0.1f, 12), .d = filled(C, -1, 1, 13), .h = filled(C, 0, 0, 14),
        .decay = filled((size_t)P * C, 0, 1, 15),
    };
    static const char *const isas[] = {"scalar", "avx2", "avx512", "neon"};
    printf("%-22s %-8s %10s %14s\n", "kernel", "isa", "us/call", "throughput");
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        for (size_t j = 0; j < sizeof isas / sizeof isas[0]; j++) {
            const dm_kernels *k = dm_kernels_by_name(isas[j]);
            if (!k) continue;
            kernels[i].call(k, &in); /* warm the caches */
            double best = 1e30;
            for (int r = 0; r < repeats; r++) {
                double t0 = now_s();
                kernels[i].call(k, &in);
                double t = now_s() - t0;
                if (t < best) best = t;
            }
            printf("%-22s %-8s %10.1f %8.2f %s\n", kernels[i].name, isas[j], best * 1e6,
                   kernels[i].work / best / 1e9, kernels[i].unit);
        }
    return 0;
}
