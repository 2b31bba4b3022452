/* bench_sgemm.c - OpenBLAS's sgemm alone, with its own threads, on the
 * shapes of a variant's matrix products (one image): the yardstick that
 * the products' speed in a forward pass (`damamba bench --ops`) is
 * measured against; and next to it, on one thread, the library's own gemm
 * kernel (the active instruction set's) on weights packed beforehand as
 * the CPU backend packs them, its native bf16 kernel where the CPU has
 * one, and, in a build with oneDNN, oneDNN's matmul in float32 and bf16
 * (weights reordered once into the layout it picks, as a model would hold
 * them).  The bf16 columns include rounding A to bf16 on every call, as
 * the backend does.
 *
 * usage: bench_sgemm [VARIANT [SIZE [THREADS [REPEATS [cold]]]]]
 * Defaults T, 224, 2 threads, 20 repeats.  Each product is timed as the
 * CPU backend calls it, C[M][N] = A[M][K] W[N][K]^T, best of the repeats;
 * with `cold`, every call finds its operands out of the caches (a buffer
 * larger than them is written first, outside the time), as a forward pass
 * finds its weights, which it reads once;
 * the last lines are the time each would take for all of one pass's
 * products, and its GFLOP/s.  "-": not in this build or not on this CPU. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "damamba.h"
#include "half_gemm.h"
#include "kernels.h"
#ifdef HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

/* The ways a product is timed, in the table's order. */
enum { SGEMM, KERNEL, ONEDNN_F32, KERNEL_BF16, ONEDNN_BF16, WAYS };
static const char *const way_names[WAYS] = {"sgemm", "kernel", "oneDNN", "kernel bf16", "oneDNN bf16"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *checked_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_sgemm: out of memory\n");
        exit(1);
    }
    return p;
}

/* One product's operands: A [M][K] and W [N][K] in float32, C [M][N]. */
typedef struct operands {
    int M, N, K;
    const float *a, *w;
    float *c;
} operands;

/* Largest difference of C from want, each relative to the sum of its
 * terms' magnitudes (scale = |A| |W|^T), which bounds rounding errors
 * whatever the cancellation. */
static double relative_difference(const float *c, const float *want, const float *scale, size_t count)
{
    double worst = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)c[i] - want[i]) / fmax(scale[i], 1e-30);
        if (!(d <= worst)) worst = d; /* NaN too */
    }
    return worst;
}

#ifdef HAVE_ONEDNN
/* oneDNN's matmul for one product, src and weights of type dt (bf16: A
 * reordered from float32 on every call, inside the timing), dst float32. */
typedef struct onednn_product {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t matmul, to_src; /* to_src: A from float32, or NULL */
    dnnl_memory_t user_a, src, weights, dst;
} onednn_product;

static void onednn_release(onednn_product *p)
{
    if (p->matmul) dnnl_primitive_destroy(p->matmul);
    if (p->to_src) dnnl_primitive_destroy(p->to_src);
    if (p->user_a) dnnl_memory_destroy(p->user_a);
    if (p->src) dnnl_memory_destroy(p->src);
    if (p->weights) dnnl_memory_destroy(p->weights);
    if (p->dst) dnnl_memory_destroy(p->dst);
    if (p->stream) dnnl_stream_destroy(p->stream);
    if (p->engine) dnnl_engine_destroy(p->engine);
    memset(p, 0, sizeof *p);
}

/* A reorder of memory `from` into `to`, run once; 0 when it ran. */
static int onednn_reorder(onednn_product *p, dnnl_memory_t from, dnnl_memory_t to, dnnl_primitive_t *keep)
{
    const dnnl_memory_desc_t *from_md, *to_md;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t reorder;
    if (dnnl_memory_get_memory_desc(from, &from_md) || dnnl_memory_get_memory_desc(to, &to_md) ||
        dnnl_reorder_primitive_desc_create(&pd, from_md, p->engine, to_md, p->engine, NULL))
        return -1;
    dnnl_status_t st = dnnl_primitive_create(&reorder, pd);
    dnnl_primitive_desc_destroy(pd);
    if (st) return -1;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    st = dnnl_primitive_execute(reorder, p->stream, 2, args);
    if (!st) st = dnnl_stream_wait(p->stream);
    if (keep && !st) *keep = reorder;
    else dnnl_primitive_destroy(reorder);
    return st ? -1 : 0;
}

/* Sets p up for o's product in type dt; 0 on success, -1 where oneDNN has
 * no implementation for this CPU. */
static int onednn_prepare(onednn_product *p, const operands *o, dnnl_data_type_t dt)
{
    memset(p, 0, sizeof *p);
    dnnl_memory_desc_t user_a_md, user_w_md, src_md, weights_md, dst_md;
    dnnl_dims_t a_dims = {o->M, o->K}, w_dims = {o->K, o->N}, c_dims = {o->M, o->N};
    dnnl_memory_t user_w = NULL;
    dnnl_primitive_desc_t pd = NULL;
    const dnnl_memory_desc_t *chosen;
    int ok = !dnnl_engine_create(&p->engine, dnnl_cpu, 0) &&
             !dnnl_stream_create(&p->stream, p->engine, dnnl_stream_default_flags) &&
             !dnnl_memory_desc_init_by_tag(&user_a_md, 2, a_dims, dnnl_f32, dnnl_ab) &&
             !dnnl_memory_desc_init_by_tag(&user_w_md, 2, w_dims, dnnl_f32, dnnl_ba) && /* W [N][K] is K x N, "ba" */
             !dnnl_memory_desc_init_by_tag(&src_md, 2, a_dims, dt, dnnl_ab) &&
             !dnnl_memory_desc_init_by_tag(&weights_md, 2, w_dims, dt, dnnl_format_tag_any) &&
             !dnnl_memory_desc_init_by_tag(&dst_md, 2, c_dims, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t desc;
    ok = ok && !dnnl_matmul_desc_init(&desc, &src_md, &weights_md, NULL, &dst_md) &&
         !dnnl_primitive_desc_create(&pd, &desc, NULL, p->engine, NULL) &&
         (chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)) != NULL &&
         !dnnl_primitive_create(&p->matmul, pd) &&
         !dnnl_memory_create(&user_w, &user_w_md, p->engine, (void *)o->w) &&
         !dnnl_memory_create(&p->weights, chosen, p->engine, DNNL_MEMORY_ALLOCATE) &&
         !onednn_reorder(p, user_w, p->weights, NULL) &&
         !dnnl_memory_create(&p->user_a, &user_a_md, p->engine, (void *)o->a) &&
         !dnnl_memory_create(&p->dst, &dst_md, p->engine, o->c);
    if (ok && dt == dnnl_f32) {
        ok = !dnnl_memory_create(&p->src, &src_md, p->engine, (void *)o->a);
    } else if (ok) {
        /* the reorder to bf16 is kept: it runs again on every call */
        ok = !dnnl_memory_create(&p->src, &src_md, p->engine, DNNL_MEMORY_ALLOCATE) &&
             !onednn_reorder(p, p->user_a, p->src, &p->to_src);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (user_w) dnnl_memory_destroy(user_w);
    if (!ok) onednn_release(p);
    return ok ? 0 : -1;
}

static void onednn_run(onednn_product *p)
{
    if (p->to_src) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, p->user_a}, {DNNL_ARG_TO, p->src}};
        dnnl_primitive_execute(p->to_src, p->stream, 2, args);
    }
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->weights}, {DNNL_ARG_DST, p->dst}};
    dnnl_primitive_execute(p->matmul, p->stream, 3, args);
    dnnl_stream_wait(p->stream);
}
#endif

/* Evicts the caches' contents by reading a buffer of twice the last
 * level's size as the C library reports it, within 64 and 256 MiB.  Read,
 * not written: the lines it leaves are clean, so the timed call does not
 * pay for writing them back.  NULL on success, else what failed. */
static const char *evict_caches(void)
{
    static unsigned char *junk;
    static size_t bytes;
    if (!junk) {
        long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
        size_t least = (size_t)64 << 20, most = (size_t)256 << 20;
        bytes = l3 > 0 ? 2 * (size_t)l3 : least;
        bytes = bytes < least ? least : bytes > most ? most : bytes;
        if (!(junk = malloc(bytes))) return "out of memory for the cache-evicting buffer";
        memset(junk, 1, bytes); /* pages of their own, not the shared zero page */
    }
    unsigned sum = 0;
    for (size_t i = 0; i < bytes; i += 64) sum += junk[i];
    volatile unsigned sink = sum;
    (void)sink;
    return NULL;
}

static int cold; /* operands out of the caches at every call */

/* Best seconds of one M x N x K product over `repeats` calls in each way
 * into seconds[] (0: not available).  Every way's C is checked against
 * sgemm's: a way that disagrees (beyond bf16's rounding) stops the run. */
static void time_product(int M, int N, int K, int repeats, double seconds[WAYS])
{
    float *a = checked_malloc(sizeof(float) * M * K), *w = checked_malloc(sizeof(float) * N * K);
    float *c = checked_malloc(sizeof(float) * M * N), *want = checked_malloc(sizeof(float) * M * N);
    float *scale = checked_malloc(sizeof(float) * M * N);
    float *packed = checked_malloc(sizeof(float) * dm_packed_floats(N, K));
    const dm_kernels *k = dm_kernels_active();
    const dm_half_gemm *bf16 = dm_half_gemm_native(DM_PRECISION_BF16);
    if (!k) {
        fprintf(stderr, "bench_sgemm: DAMAMBA_ISA names no usable kernels\n");
        exit(1);
    }
    for (int i = 0; i < M * K; i++) a[i] = (float)(i % 17) / 17.0f - 0.5f;
    for (int i = 0; i < N * K; i++) w[i] = (float)(i % 13) / 13.0f - 0.5f;
    dm_pack_panels(w, N, K, packed);
    void *bf16_weight = bf16 ? checked_malloc(bf16->weight_bytes(N, K)) : NULL;
    void *bf16_rows = bf16 ? checked_malloc(M * bf16->row_bytes(K)) : NULL;
    if (bf16) bf16->pack_weight(packed, N, K, bf16_weight);
    operands o = {M, N, K, a, w, c};
#ifdef HAVE_ONEDNN
    onednn_product dnn[2];
    int have_dnn[2] = {!onednn_prepare(&dnn[0], &o, dnnl_f32), !onednn_prepare(&dnn[1], &o, dnnl_bf16)};
#else
    (void)o;
#endif
    /* scale = |A| |W|^T, on copies of the operands' magnitudes */
    float *abs_a = checked_malloc(sizeof(float) * M * K), *abs_w = checked_malloc(sizeof(float) * N * K);
    for (int i = 0; i < M * K; i++) abs_a[i] = fabsf(a[i]);
    for (int i = 0; i < N * K; i++) abs_w[i] = fabsf(w[i]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, abs_a, K, abs_w, K, 0.0f, scale, N);
    free(abs_a), free(abs_w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, w, K, 0.0f, want, N);
    for (int way = 0; way < WAYS; way++) {
        seconds[way] = 0;
        for (int r = -1; r < repeats; r++) { /* the first call warms the caches */
            const char *failed = cold ? evict_caches() : NULL;
            if (failed) {
                fprintf(stderr, "bench_sgemm: %s\n", failed);
                exit(1);
            }
            double t0 = now_s();
            switch (way) {
            case SGEMM:
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, w, K, 0.0f, c, N);
                break;
            case KERNEL: k->gemm(M, K, a, K, packed, 0, N, 0.0f, NULL, DM_ACT_NONE, c, N); break;
            case KERNEL_BF16:
                if (!bf16) goto next;
                bf16->pack_rows(a, K, M, K, bf16_rows);
                bf16->gemm(M, K, bf16_rows, bf16_weight, N, 0, N, 0.0f, NULL, DM_ACT_NONE, c, N);
                break;
#ifdef HAVE_ONEDNN
            case ONEDNN_F32:
            case ONEDNN_BF16:
                if (!have_dnn[way == ONEDNN_BF16]) goto next;
                onednn_run(&dnn[way == ONEDNN_BF16]);
                break;
#endif
            default: goto next;
            }
            double t = now_s() - t0;
            if (r >= 0 && (seconds[way] == 0 || t < seconds[way])) seconds[way] = t;
        }
        /* bf16 rounds each operand within 2^-8 of itself, so each term
         * moves by at most about 2^-7 of its magnitude */
        double bound = way == KERNEL_BF16 || way == ONEDNN_BF16 ? 0x1p-7 : 1e-5;
        double diff = relative_difference(c, want, scale, (size_t)M * N);
        if (!(diff <= bound)) {
            fprintf(stderr, "bench_sgemm: %s's %d x %d x %d product is %.3g from sgemm's (bound %.3g)\n",
                    way_names[way], M, N, K, diff, bound);
            exit(1);
        }
    next:;
    }
#ifdef HAVE_ONEDNN
    for (int i = 0; i < 2; i++)
        if (have_dnn[i]) onednn_release(&dnn[i]);
#endif
    free(a), free(w), free(c), free(want), free(scale), free(packed), free(bf16_weight), free(bf16_rows);
}

typedef struct product_shape {
    const char *name;
    int m, n, k, calls;
} product_shape;

static void print_row(const char *stage, const char *name, int M, int N, int K, int calls, const double t[WAYS])
{
    double flops = 2.0 * M * N * K;
    printf("%-6s %-8s %5d %5d %5d %5d", stage, name, M, N, K, calls);
    for (int way = 0; way < WAYS; way++) {
        if (t[way] > 0) printf(" %8.1f %6.1f", t[way] * 1e6, flops / t[way] / 1e9);
        else printf(" %8s %6s", "-", "-");
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    char variant = argc > 1 ? argv[1][0] : 'T';
    int size = argc > 2 ? atoi(argv[2]) : 224, threads = argc > 3 ? atoi(argv[3]) : 2;
    int repeats = argc > 4 ? atoi(argv[4]) : 20;
    cold = argc > 5 && strcmp(argv[5], "cold") == 0;
    dm_model *m;
    if (size < 32 || threads < 1 || repeats < 1 || (argc > 5 && !cold) || argc > 6 ||
        dm_model_synthetic(variant, 3, 1000, 1, &m) != DM_OK) {
        fprintf(stderr, "usage: bench_sgemm [F|T|S|B [SIZE >= 32 [THREADS >= 1 [REPEATS >= 1 [cold]]]]]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    omp_set_num_threads(1); /* oneDNN's threads */
    const dm_config *cfg = dm_model_config(m);
    const dm_half_gemm *bf16 = dm_half_gemm_native(DM_PRECISION_BF16);
    printf("DAMamba-%c's products at %d x %d, batch 1: sgemm is OpenBLAS on %d thread%s; on 1 thread, kernel is the "
           "%s gemm kernel, kernel bf16 %s", variant, size, size, threads, threads == 1 ? "" : "s",
           dm_kernels_active() ? dm_kernels_active()->isa : "-", bf16 ? bf16->name : "(none on this CPU)");
#ifdef HAVE_ONEDNN
    printf(", oneDNN %d.%d.%d's matmul\n", dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch);
#else
    printf("; oneDNN not in this build\n");
#endif
    printf("each way: microseconds per call, then GFLOP/s; operands %s at each call\n",
           cold ? "out of the caches" : "in the caches, as the call before left them");
    printf("%-6s %-8s %5s %5s %5s %5s", "stage", "product", "M", "N", "K", "calls");
    for (int way = 0; way < WAYS; way++) printf(" %15s", way_names[way]);
    printf("\n");
    double pass[WAYS] = {0}, pass_flops = 0;
    int missing[WAYS] = {0};
    for (int s = 0; s <= DM_NUM_STAGES; s++) {
        /* a block's products (in_proj and out_proj share a shape); after
         * the stages, the classifier */
        product_shape products[6] = {{"fc", 1, cfg->num_classes, cfg->dims[3], 1}};
        size_t count = 1;
        if (s < DM_NUM_STAGES) {
            int c, h, w;
            dm_stage_shape(m, size, size, s, &c, &h, &w);
            int P = h * w, F = cfg->mlp_hidden[s], G = cfg->groups[s], R = cfg->dt_rank[s];
            product_shape block[6] = {{"in/out", P, c, c, 2}, {"offsets", P, 2 * G, c, 1},
                                      {"x_proj", P, R + 2, c, 1}, {"dt_proj", P, c, R, 1},
                                      {"fc1", P, F, c, 1},        {"fc2", P, c, F, 1}};
            memcpy(products, block, sizeof block);
            count = 6;
        }
        char stage[8];
        snprintf(stage, sizeof stage, s < DM_NUM_STAGES ? "%d" : "head", s);
        for (size_t i = 0; i < count; i++) {
            int calls = products[i].calls * (s < DM_NUM_STAGES ? cfg->depths[s] : 1);
            double t[WAYS];
            time_product(products[i].m, products[i].n, products[i].k, repeats, t);
            print_row(stage, products[i].name, products[i].m, products[i].n, products[i].k, calls, t);
            for (int way = 0; way < WAYS; way++) {
                pass[way] += calls * t[way];
                missing[way] |= t[way] == 0;
            }
            pass_flops += calls * 2.0 * products[i].m * products[i].n * products[i].k;
        }
    }
    printf("all products of a pass:\n");
    for (int way = 0; way < WAYS; way++)
        if (!missing[way])
            printf("  %-12s %8.2f ms %7.1f GFLOP/s\n", way_names[way], pass[way] * 1e3, pass_flops / pass[way] / 1e9);
    dm_model_free(m);
    return 0;
}
