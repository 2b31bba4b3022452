/* bench_sgemm.c - OpenBLAS's sgemm alone, with its own threads, on the
 * shapes of a variant's matrix products (one image): the yardstick that
 * the products' speed in a forward pass (`damamba bench --ops`) is
 * measured against; and next to it the library's own gemm kernel (the
 * active instruction set's) on one thread, on weights packed beforehand as
 * the CPU backend packs them.
 *
 * usage: bench_sgemm [VARIANT [SIZE [THREADS [REPEATS]]]]
 * Defaults T, 224, 2 threads, 20 repeats.  Each product is timed as the
 * CPU backend calls it, C[M][N] = A[M][K] W[N][K]^T, best of the repeats;
 * the last line is the time each would take for all of one pass's
 * products, and its GFLOP/s. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "damamba.h"
#include "kernels.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Best seconds of one M x N x K product over `repeats` calls by sgemm,
 * and by the gemm kernel into *kernel. */
static double time_product(int M, int N, int K, int repeats, double *kernel)
{
    float *a = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K), *c = malloc(sizeof(float) * M * N);
    float *packed = malloc(sizeof(float) * dm_packed_floats(N, K));
    const dm_kernels *k = dm_kernels_active();
    if (!a || !w || !c || !packed || !k) {
        fprintf(stderr, "bench_sgemm: out of memory, or DAMAMBA_ISA names no usable kernels\n");
        exit(1);
    }
    for (int i = 0; i < M * K; i++) a[i] = (float)(i % 17) / 17.0f - 0.5f;
    for (int i = 0; i < N * K; i++) w[i] = (float)(i % 13) / 13.0f - 0.5f;
    dm_pack_panels(w, N, K, packed);
    double best = 1e30;
    *kernel = 1e30;
    for (int r = -1; r < repeats; r++) { /* the first calls warm the caches */
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, w, K, 0.0f, c, N);
        double t1 = now_s();
        k->gemm(M, K, a, K, packed, 0, N, 0.0f, NULL, DM_ACT_NONE, c, N);
        double t2 = now_s();
        if (r >= 0 && t1 - t0 < best) best = t1 - t0;
        if (r >= 0 && t2 - t1 < *kernel) *kernel = t2 - t1;
    }
    free(a), free(w), free(c), free(packed);
    return best;
}

int main(int argc, char **argv)
{
    char variant = argc > 1 ? argv[1][0] : 'T';
    int size = argc > 2 ? atoi(argv[2]) : 224, threads = argc > 3 ? atoi(argv[3]) : 2;
    int repeats = argc > 4 ? atoi(argv[4]) : 20;
    dm_model *m;
    if (size < 32 || threads < 1 || repeats < 1 || dm_model_synthetic(variant, 3, 1000, 1, &m) != DM_OK) {
        fprintf(stderr, "usage: bench_sgemm [F|T|S|B [SIZE >= 32 [THREADS >= 1 [REPEATS >= 1]]]]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    const dm_config *cfg = dm_model_config(m);
    printf("sgemm alone, OpenBLAS with %d threads, and the %s gemm kernel on 1 thread, DAMamba-%c's products at "
           "%d x %d, batch 1\n", threads, dm_kernels_active() ? dm_kernels_active()->isa : "-", variant, size, size);
    printf("%-6s %-10s %6s %5s %5s %6s %10s %8s %10s %8s\n", "stage", "product", "M", "N", "K", "calls", "us/call",
           "GFLOP/s", "kernel us", "GFLOP/s");
    double pass_seconds = 0, pass_flops = 0, kernel_seconds = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int c, h, w;
        dm_stage_shape(m, size, size, s, &c, &h, &w);
        int P = h * w, F = cfg->mlp_hidden[s], G = cfg->groups[s], R = cfg->dt_rank[s];
        /* a block's products; in_proj and out_proj share a shape */
        struct { const char *name; int n, k, calls; } products[] = {
            {"in/out", c, c, 2}, {"offsets", 2 * G, c, 1}, {"x_proj", R + 2, c, 1},
            {"dt_proj", c, R, 1}, {"fc1", F, c, 1},        {"fc2", c, F, 1}};
        for (size_t i = 0; i < sizeof products / sizeof products[0]; i++) {
            int n = products[i].n, k = products[i].k, calls = products[i].calls * cfg->depths[s];
            double kt, t = time_product(P, n, k, repeats, &kt), flops = 2.0 * P * n * k;
            printf("%-6d %-10s %6d %5d %5d %6d %10.1f %8.1f %10.1f %8.1f\n", s, products[i].name, P, n, k, calls,
                   t * 1e6, flops / t / 1e9, kt * 1e6, flops / kt / 1e9);
            pass_seconds += calls * t;
            kernel_seconds += calls * kt;
            pass_flops += calls * flops;
        }
    }
    double head_kernel, head = time_product(1, cfg->num_classes, cfg->dims[3], repeats, &head_kernel);
    double head_flops = 2.0 * cfg->num_classes * cfg->dims[3];
    printf("%-6s %-10s %6d %5d %5d %6d %10.1f %8.1f %10.1f %8.1f\n", "head", "fc", 1, cfg->num_classes, cfg->dims[3],
           1, head * 1e6, head_flops / head / 1e9, head_kernel * 1e6, head_flops / head_kernel / 1e9);
    pass_seconds += head;
    kernel_seconds += head_kernel;
    pass_flops += head_flops;
    printf("all products of a pass: sgemm %.2f ms, %.1f GFLOP/s; kernel on 1 thread %.2f ms, %.1f GFLOP/s\n",
           pass_seconds * 1e3, pass_flops / pass_seconds / 1e9, kernel_seconds * 1e3,
           pass_flops / kernel_seconds / 1e9);
    dm_model_free(m);
    return 0;
}
