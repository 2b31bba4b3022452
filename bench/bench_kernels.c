/* bench_kernels.c - single-thread speed of each kernel under each
 * instruction set this machine runs, on DAMamba-T's first-stage shapes
 * (56 x 56 pixels, 80 channels, ConvFFN hidden 320), and of the matrix
 * product of the ConvFFN's first layer: the gemm kernels, OpenBLAS's sgemm
 * and each native half-precision kernel this CPU runs.
 *
 * usage: bench_kernels [REPEATS]
 * Prints the best time per call and the throughput in each kernel's unit. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "half_gemm.h"
#include "kernels.h"
#include "pool.h"

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
    float *x, *y, *hid, *hid2, *w9, *w9f, *bias, *gamma, *off, *delta, *bc, *a, *d, *h, *pooled, *states, *decays;
    dm_pool *pool; /* one thread */
    float *packed; /* hid's first F x C as the ConvFFN's first weight, packed */
} inputs;

static int repeats;

/* The best of the repeats of call(arg), after a call that warms the caches. */
static double best_time(void (*call)(void *), void *arg)
{
    call(arg);
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = now_s();
        call(arg);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* A time and its throughput: work per call in the unit that bounds the
 * kernel, bytes read and written once (GB/s), flops (GFLOP/s), or elements
 * through SLEEF's functions (Gelem/s). */
static void report(const char *label, const char *isa, double best, double work, const char *unit)
{
    printf("%-22s %-11s %10.1f %8.2f %s\n", label, isa, best * 1e6, work / best / 1e9, unit);
}

typedef struct kernel_call {
    void (*call)(const dm_kernels *, inputs *);
    const dm_kernels *k;
    inputs *in;
} kernel_call;

static void run_kernel_call(void *arg)
{
    const kernel_call *c = arg;
    c->call(c->k, c->in);
}

static void measure(const char *label, void (*call)(const dm_kernels *, inputs *), const dm_kernels *k, inputs *in,
                    double work, const char *unit)
{
    kernel_call c = {call, k, in};
    report(label, k->isa, best_time(run_kernel_call, &c), work, unit);
}

static void call_layernorm(const dm_kernels *k, inputs *in) { k->layernorm(in->x, in->y, P, C, in->gamma, in->bias, DM_ACT_NONE); }
static void call_layernorm_gelu(const dm_kernels *k, inputs *in) { k->layernorm(in->x, in->y, P, C, in->gamma, in->bias, DM_ACT_GELU); }
static void bench_layernorm(const dm_kernels *k, inputs *in)
{
    measure("layernorm 80ch", call_layernorm, k, in, 2.0 * P * C * 4, "GB/s");
    measure("layernorm+gelu 80ch", call_layernorm_gelu, k, in, (double)P * C, "Gelem/s");
}

static void call_dwconv(const dm_kernels *k, inputs *in) { k->dwconv3x3(in->hid, in->hid2, H, W, F, in->w9f, in->bias, DM_ACT_NONE, 0, H); }
static void call_dwconv_silu(const dm_kernels *k, inputs *in) { k->dwconv3x3(in->x, in->y, H, W, C, in->w9, in->bias, DM_ACT_SILU, 0, H); }
static void bench_dwconv3x3(const dm_kernels *k, inputs *in)
{
    measure("dwconv3x3 320ch", call_dwconv, k, in, 18.0 * P * F, "GFLOP/s");
    measure("dwconv3x3+silu 80ch", call_dwconv_silu, k, in, 18.0 * P * C, "GFLOP/s");
}

/* bias_act works in place: each call starts from a fresh copy, so values
 * stay in the range a forward pass sees (the copy is in the time). */
static void call_bias_gelu(const dm_kernels *k, inputs *in)
{
    memcpy(in->hid2, in->hid, sizeof(float) * P * F);
    k->bias_act(in->hid2, P, F, in->bias, DM_ACT_GELU);
}
static void bench_bias_act(const dm_kernels *k, inputs *in)
{
    measure("copy+bias+gelu 320ch", call_bias_gelu, k, in, (double)P * F, "Gelem/s");
}

static void call_sample(const dm_kernels *k, inputs *in) { k->sample(in->x, in->off, in->y, H, W, C, G, 0, P); }
static void bench_sample(const dm_kernels *k, inputs *in)
{
    measure("sample 80ch 5 groups", call_sample, k, in, 2.0 * P * C * 4, "GB/s");
}

static void call_scan(const dm_kernels *k, inputs *in)
{
    dm_scan_args args = {in->x, in->delta, in->bc, 2, in->a, in->d, in->bias, C};
    k->scan(&args, 0, P, 0, C, in->h, NULL, in->y);
}
/* The same sequence in 12 chunks on one thread (a narrow image's cut): its
 * cost over the plain scan's is what a chunked scan adds. */
static void call_scan_chunked(const dm_kernels *k, inputs *in)
{
    dm_scan_args args = {in->x, in->delta, in->bc, 2, in->a, in->d, in->bias, C};
    dm_scan_chunked(k, &args, P, 12, 16, in->pool, in->h, in->states, in->decays, in->y);
}
static void bench_scan(const dm_kernels *k, inputs *in)
{
    measure("scan 80ch", call_scan, k, in, (double)P * C, "Gelem/s");
    measure("scan 80ch, 12 chunks", call_scan_chunked, k, in, (double)P * C, "Gelem/s");
}

/* The head operators' shapes: pyramid pooling bins, a 2x upsampling. */
static void call_avg_pool(const dm_kernels *k, inputs *in) { k->avg_pool(in->x, H, W, C, in->pooled, 6, 6, 0, 36); }
static void bench_avg_pool(const dm_kernels *k, inputs *in)
{
    measure("avg_pool 80ch to 6x6", call_avg_pool, k, in, (double)P * C * 4, "GB/s");
}

static void call_max_pool(const dm_kernels *k, inputs *in)
{
    k->max_pool(in->x, H, W, C, 3, 2, 1, in->y, H / 2, W / 2, 0, (size_t)(H / 2) * (W / 2));
}
static void bench_max_pool(const dm_kernels *k, inputs *in)
{
    measure("max_pool 3x3/2 80ch", call_max_pool, k, in, 1.25 * P * C * 4, "GB/s");
}

static void call_resize(const dm_kernels *k, inputs *in)
{
    k->resize(in->x, H / 2, W / 2, C, DM_RESIZE_BILINEAR, in->y, H, W, 0, P);
}
static void bench_resize(const dm_kernels *k, inputs *in)
{
    measure("resize 2x 80ch", call_resize, k, in, 1.25 * P * C * 4, "GB/s");
}

static void call_add(const dm_kernels *k, inputs *in) { k->add(in->x, in->y, in->hid2, (size_t)P * C, DM_ACT_NONE); }
static void bench_add(const dm_kernels *k, inputs *in) { measure("add 80ch", call_add, k, in, 3.0 * P * C * 4, "GB/s"); }

static void call_erf(const dm_kernels *k, inputs *in) { k->erf(in->hid, in->hid2, (size_t)P * F); }
static void bench_erf(const dm_kernels *k, inputs *in) { measure("erf 320ch", call_erf, k, in, (double)P * F, "Gelem/s"); }

static void call_exp(const dm_kernels *k, inputs *in) { k->exp(in->hid, in->hid2, (size_t)P * F); }
static void bench_exp(const dm_kernels *k, inputs *in) { measure("exp 320ch", call_exp, k, in, (double)P * F, "Gelem/s"); }

static void call_round_half(const dm_kernels *k, inputs *in)
{
    k->round_half(in->hid, in->hid2, (size_t)P * F, DM_PRECISION_BF16);
}
static void bench_round_half(const dm_kernels *k, inputs *in)
{
    measure("round bf16 320ch", call_round_half, k, in, (double)P * F, "Gelem/s");
}

/* The ConvFFN's first product with its bias and GELU. */
static void call_gemm(const dm_kernels *k, inputs *in)
{
    k->gemm(P, C, in->x, C, in->packed, 0, F, 0.0f, in->bias, DM_ACT_GELU, in->hid2, F);
}
static void bench_gemm(const dm_kernels *k, inputs *in)
{
    measure("gemm+gelu 3136x320x80", call_gemm, k, in, 2.0 * P * F * C, "GFLOP/s");
}

/* The ConvFFN's first product, P x C by C x F: sgemm, and each native
 * half-precision kernel with its rounding of A included (its weight is
 * laid out once, at load time). */
typedef struct product {
    const dm_half_gemm *g;
    const float *A, *W;
    void *weight, *rows;
    float *out;
} product;

static void call_sgemm(void *arg)
{
    const product *p = arg;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, F, C, 1.0f, p->A, C, p->W, C, 0.0f, p->out, F);
}

static void call_half_gemm(void *arg)
{
    const product *p = arg;
    p->g->pack_rows(p->A, C, P, C, p->rows);
    p->g->gemm(P, C, p->rows, p->weight, F, 0, F, 0.0f, NULL, DM_ACT_NONE, p->out, F);
}

static void bench_products(inputs *in)
{
    openblas_set_num_threads(1);
    product p = {.A = in->x, .W = in->hid, .out = in->hid2};
    const char *label = "gemm 3136x320x80";
    double flops = 2.0 * P * F * C;
    report(label, "sgemm", best_time(call_sgemm, &p), flops, "GFLOP/s");
    for (size_t i = 0; i < dm_half_gemm_count; i++) {
        p.g = dm_half_gemms[i];
        if (!p.g->supported()) continue;
        p.weight = malloc(p.g->weight_bytes(F, C));
        p.rows = malloc(P * p.g->row_bytes(C));
        if (!p.weight || !p.rows) {
            fprintf(stderr, "bench_kernels: out of memory\n");
            exit(1);
        }
        p.g->pack_weight(in->packed, F, C, p.weight);
        report(label, p.g->name, best_time(call_half_gemm, &p), flops, "GFLOP/s");
        free(p.weight);
        free(p.rows);
    }
}

int main(int argc, char **argv)
{
    repeats = argc > 1 ? atoi(argv[1]) : 20;
    if (repeats < 1) repeats = 1;
    inputs in = {
        .x = filled((size_t)P * C, -2, 2, 1), .y = filled((size_t)P * C, 0, 1, 2),
        .hid = filled((size_t)P * F, -2, 2, 3), .hid2 = filled((size_t)P * F, 0, 1, 4),
        .w9 = filled(9 * C, -1, 1, 5), .w9f = filled(9 * F, -1, 1, 6), .bias = filled(F, -1, 1, 7),
        .gamma = filled(C, 0.5f, 1.5f, 8), .off = filled((size_t)P * 2 * G, -2, 2, 9),
        .delta = filled((size_t)P * C, -4, 2, 10), .bc = filled((size_t)P * 2, -1, 1, 11),
        .a = filled(C, -2, -0.1f, 12), .d = filled(C, -1, 1, 13), .h = filled(C, 0, 0, 14),
        .pooled = filled(36 * C, 0, 0, 16), .states = filled(12 * C, 0, 0, 18), .decays = filled(12 * C, 0, 0, 19),
        .pool = dm_pool_create(1),
    };
    in.packed = filled(dm_packed_floats(F, C), 0, 0, 17);
    dm_pack_panels(in.hid, F, C, in.packed);
    static const char *const isas[] = {"scalar", "sse2", "avx2", "avx512", "neon"};
    printf("%-22s %-11s %10s %14s\n", "kernel", "isa", "us/call", "throughput");
    /* every kernel of the list, under every table this machine runs; a
     * kernel without a bench_ function does not compile */
#define BENCH_KERNEL(name, params)                                          \
    for (size_t j = 0; j < sizeof isas / sizeof isas[0]; j++) {            \
        const dm_kernels *k = dm_kernels_by_name(isas[j]);                 \
        if (k) bench_##name(k, &in);                                       \
    }
    DM_KERNEL_LIST(BENCH_KERNEL)
#undef BENCH_KERNEL
    bench_products(&in);
    return 0;
}
