/* test_half_gemm.c - every native half-precision kernel this build carries
 * (simd/half_gemm.h) that this CPU runs, against the reference
 * dm_half_gemm_ref over sweeps of shapes: row counts, column counts around
 * the 16-column panel, K odd, even and around the kernels' k steps;
 * column tiles as the CPU backend cuts them and ones ending mid-panel;
 * beta 0 over a C of NaN and beta 1; with and without bias, through every
 * activation; rows packed in pieces; the floats
 * around every tile, and past C, left alone.  A kernel this CPU cannot
 * run is reported as not tested (the emulated aarch64 run has them all). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "half_gemm.h"
#include "kernels.h"

/* Floats past C that a kernel must leave alone. */
#define GUARD 40
/* Bytes past packed buffers, checked likewise. */
#define GUARD_BYTES 64
#define FILL_BYTE 0xFF

static const size_t row_sweep[] = {1, 2, 5, 20, 33};
static const size_t col_sweep[] = {1, 15, 16, 17, 33, 80};
static const size_t k_sweep[] = {1, 2, 3, 8, 17, 80, 81, 320};
#define COUNT(a) (sizeof a / sizeof a[0])

/* The kernel of loop index i, or NULL (reported) when the CPU lacks it. */
static const dm_half_gemm *kernel(int i)
{
    const dm_half_gemm *g = dm_half_gemms[i];
    if (!g->supported()) {
        printf("%s: not tested: this CPU lacks %s\n", g->name, g->name);
        return NULL;
    }
    return g;
}

static float *random_floats(size_t n)
{
    float *p = malloc(sizeof(float) * n);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = test_uniform(-2.0f, 2.0f);
    return p;
}

static void *filled_bytes(size_t n)
{
    unsigned char *p = malloc(n + GUARD_BYTES);
    ck_assert_ptr_nonnull(p);
    memset(p, FILL_BYTE, n + GUARD_BYTES);
    return p;
}

static void expect_guard_bytes(const char *what, const void *buffer, size_t n)
{
    const unsigned char *p = (const unsigned char *)buffer + n;
    for (size_t i = 0; i < GUARD_BYTES; i++) ck_assert_msg(p[i] == FILL_BYTE, "%s: wrote past its %zu bytes", what, n);
}

static const dm_act acts[] = {DM_ACT_NONE, DM_ACT_GELU, DM_ACT_SILU, DM_ACT_RELU};

/* One product's operands, packed by kernel g, its epilogue (bias NULL:
 * none), and the reference's C. */
typedef struct product {
    size_t M, N, K, lda, ldc, c_floats;
    float *A, *W, *bias, *c0, *want, *bound;
    dm_act act;
    void *weight, *rows;
} product;

/* Each element's allowed error: the reference and the kernel both sum the
 * K exact products (and beta 1's C) in float32, in different orders, each
 * sum rounded within an ulp (bfdot's round-to-odd included), and bfdot
 * rounds each pair's sum once more, so both lie within (1.5 K + 1) ulp of
 * the sum of the magnitudes S from the exact value: (K + 1) * 2^-22 * S
 * covers the two (S takes in the bias too, added with one more rounding).
 * The activation multiplies that by its slope (at most 1.13, GELU's) and
 * adds 2^-20 of its input's and output's size, as in test_kernels' gemm. */
static void make_bounds(product *p, dm_precision precision, float beta, const double *z_of)
{
    float *ar = malloc(sizeof(float) * p->M * p->lda), *wr = malloc(sizeof(float) * p->N * p->K);
    ck_assert(ar && wr);
    dm_kernels_scalar.round_half(p->A, ar, p->M * p->lda, precision);
    dm_kernels_scalar.round_half(p->W, wr, p->N * p->K, precision);
    for (size_t r = 0; r < p->M; r++)
        for (size_t n = 0; n < p->N; n++) {
            double s = beta != 0.0f ? fabs(p->c0[r * p->ldc + n]) : 0.0;
            for (size_t k = 0; k < p->K; k++) s += fabs((double)ar[r * p->lda + k] * wr[n * p->K + k]);
            if (p->bias) s += fabs(p->bias[n]);
            double z = z_of[r * p->ldc + n], want = p->want[r * p->ldc + n];
            double slope = p->act == DM_ACT_NONE ? 1.0 : 1.13, act_error = p->act == DM_ACT_NONE ? 0.0 : 0x1p-20;
            p->bound[r * p->ldc + n] = (float)(slope * (double)(p->K + 2) * 0x1p-22 * s + act_error * (fabs(want) + fabs(z)));
        }
    free(ar);
    free(wr);
}

/* g's layout of W [N][K], from float32 panels as the model holds them. */
static void pack_weight(const dm_half_gemm *g, const float *W, size_t N, size_t K, void *weight)
{
    float *panels = malloc(sizeof(float) * dm_packed_floats(N, K));
    ck_assert_ptr_nonnull(panels);
    dm_pack_panels(W, N, K, panels);
    g->pack_weight(panels, N, K, weight);
    free(panels);
}

static void product_make(product *p, const dm_half_gemm *g, size_t M, size_t N, size_t K, float beta, int with_bias,
                         dm_act act)
{
    *p = (product){.M = M, .N = N, .K = K, .lda = K + 3, .ldc = N + 5, .act = act};
    p->c_floats = M * p->ldc + GUARD;
    p->A = random_floats(M * p->lda);
    p->W = random_floats(N * K);
    p->bias = with_bias ? random_floats(N) : NULL;
    p->c0 = malloc(sizeof(float) * p->c_floats);
    p->want = malloc(sizeof(float) * p->c_floats);
    p->bound = calloc(p->c_floats, sizeof(float));
    ck_assert(p->c0 && p->want && p->bound);
    for (size_t i = 0; i < p->c_floats; i++) p->c0[i] = beta != 0.0f ? test_uniform(-4.0f, 4.0f) : NAN;
    memcpy(p->want, p->c0, sizeof(float) * p->c_floats);
    dm_half_gemm_ref(g->precision, M, N, K, p->A, p->lda, p->W, beta, p->want, p->ldc);
    /* the epilogue on the reference's sums: z = sum + bias, then act */
    double *z = calloc(p->c_floats, sizeof(double));
    ck_assert_ptr_nonnull(z);
    for (size_t r = 0; r < M; r++)
        for (size_t n = 0; n < N; n++) {
            size_t i = r * p->ldc + n;
            z[i] = (double)p->want[i] + (p->bias ? p->bias[n] : 0.0);
            p->want[i] = (float)test_activate(z[i], act);
        }
    make_bounds(p, g->precision, beta, z);
    free(z);

    /* padding the kernel relies on must be written by its packing, not
     * found there: the buffers start as 0xFF bytes, NaN in both formats */
    size_t weight_bytes = g->weight_bytes(N, K), row_bytes = g->row_bytes(K);
    ck_assert_msg(row_bytes % 64 == 0 && row_bytes >= 2 * K, "%s: row_bytes(%zu) = %zu", g->name, K, row_bytes);
    p->weight = filled_bytes(weight_bytes);
    pack_weight(g, p->W, N, K, p->weight);
    expect_guard_bytes("pack_weight", p->weight, weight_bytes);
    /* in two pieces, as the backend's threads pack a band */
    p->rows = filled_bytes(M * row_bytes);
    g->pack_rows(p->A, p->lda, M / 2, K, p->rows);
    g->pack_rows(p->A + M / 2 * p->lda, p->lda, M - M / 2, K, (char *)p->rows + M / 2 * row_bytes);
    expect_guard_bytes("pack_rows", p->rows, M * row_bytes);
}

static void product_free(product *p)
{
    free(p->A); free(p->W); free(p->bias); free(p->c0); free(p->want); free(p->bound); free(p->weight); free(p->rows);
}

typedef struct tile {
    size_t n0, n1;
} tile;

/* Column tilings of N: 0 the whole; 1 panel by panel; 2 three panels at a
 * time; 3 a single tile from column 16 (or 0) that ends mid-panel, short
 * of N.  Returns the tile count. */
#define PLANS 4
static size_t tiling(size_t N, int plan, tile *tiles)
{
    size_t width = plan == 1 ? 16 : plan == 2 ? 48 : N, count = 0;
    if (plan == 3) {
        if (N < 2) return 0;
        tiles[0] = N > 17 ? (tile){16, N - 1} : (tile){0, N - 1};
        return 1;
    }
    for (size_t n0 = 0; n0 < N; n0 += width) tiles[count++] = (tile){n0, n0 + width < N ? n0 + width : N};
    return count;
}

static int in_tiles(const tile *tiles, size_t count, size_t n)
{
    for (size_t i = 0; i < count; i++)
        if (n >= tiles[i].n0 && n < tiles[i].n1) return 1;
    return 0;
}

/* Run g over the tiles (rows in two calls on odd plans) and check all of
 * C and its guard; returns the largest error as a fraction of its bound. */
static double run_and_check(const dm_half_gemm *g, const product *p, float beta, int plan)
{
    tile tiles[16];
    size_t count = tiling(p->N, plan, tiles), row_bytes = g->row_bytes(p->K);
    size_t split = plan % 2 ? p->M / 2 : 0;
    float *C = malloc(sizeof(float) * p->c_floats);
    ck_assert_ptr_nonnull(C);
    memcpy(C, p->c0, sizeof(float) * p->c_floats);
    for (size_t t = 0; t < count; t++) {
        if (split)
            g->gemm(split, p->K, p->rows, p->weight, p->N, tiles[t].n0, tiles[t].n1, beta, p->bias, p->act, C,
                    p->ldc);
        g->gemm(p->M - split, p->K, (const char *)p->rows + split * row_bytes, p->weight, p->N, tiles[t].n0,
                tiles[t].n1, beta, p->bias, p->act, C + split * p->ldc, p->ldc);
    }
    double worst = 0.0;
    for (size_t i = 0; i < p->c_floats; i++) {
        size_t r = i / p->ldc, n = i % p->ldc;
        if (r < p->M && n < p->N && in_tiles(tiles, count, n)) {
            double err = fabs((double)C[i] - p->want[i]);
            int ok = isnan(p->want[i]) ? isnan(C[i]) : err <= p->bound[i];
            ck_assert_msg(ok,
                          "[%s] M=%zu N=%zu K=%zu beta=%g bias=%d act=%d plan %d: C[%zu][%zu] = %.9g, want %.9g "
                          "(bound %.3g)",
                          g->name, p->M, p->N, p->K, (double)beta, p->bias != NULL, (int)p->act, plan, r, n,
                          (double)C[i], (double)p->want[i], (double)p->bound[i]);
            if (p->bound[i] > 0.0f && err / p->bound[i] > worst) worst = err / p->bound[i];
        } else {
            ck_assert_msg(memcmp(&C[i], &p->c0[i], sizeof(float)) == 0,
                          "[%s] M=%zu N=%zu K=%zu beta=%g plan %d: float %zu (row %zu, column %zu) outside the tiles "
                          "changed to %g",
                          g->name, p->M, p->N, p->K, (double)beta, plan, i, r, n, (double)C[i]);
        }
    }
    free(C);
    return worst;
}

START_TEST(kernel_matches_reference)
{
    const dm_half_gemm *g = kernel(_i);
    if (!g) return;
    test_seed(16);
    double worst = 0.0;
    size_t cases = 0;
    for (size_t mi = 0; mi < COUNT(row_sweep); mi++)
        for (size_t ni = 0; ni < COUNT(col_sweep); ni++)
            for (size_t ki = 0; ki < COUNT(k_sweep); ki++)
                for (int b = 0; b < 2; b++) {
                    /* the epilogue varies from case to case */
                    size_t index = ((mi * COUNT(col_sweep) + ni) * COUNT(k_sweep) + ki) * 2 + b;
                    dm_act act = acts[index % COUNT(acts)];
                    product p;
                    product_make(&p, g, row_sweep[mi], col_sweep[ni], k_sweep[ki], (float)b, index % 3 != 0, act);
                    for (int plan = 0; plan < PLANS; plan++) {
                        double w = run_and_check(g, &p, (float)b, plan);
                        if (w > worst) worst = w;
                        cases++;
                    }
                    product_free(&p);
                }
    printf("%s: %zu products match the reference; largest error %.3g of its bound\n", g->name, cases, worst);
}
END_TEST

/* A NaN in a row of A, a signalling one whose payload lies in its low 16
 * bits, makes that row's sums NaN and leaves the others alone. */
START_TEST(nan_stays_nan)
{
    enum { M = 3, N = 33, K = 17, LDA = 20 };
    const dm_half_gemm *g = kernel(_i);
    if (!g) return;
    test_seed(17);
    float *A = random_floats(M * LDA), *W = random_floats(N * K), C[M * N];
    uint32_t signalling = 0x7f800001u;
    memcpy(&A[1 * LDA + 5], &signalling, sizeof signalling);
    void *weight = filled_bytes(g->weight_bytes(N, K)), *rows = filled_bytes(M * g->row_bytes(K));
    pack_weight(g, W, N, K, weight);
    g->pack_rows(A, LDA, M, K, rows);
    g->gemm(M, K, rows, weight, N, 0, N, 0.0f, NULL, DM_ACT_NONE, C, N);
    for (size_t n = 0; n < N; n++) {
        ck_assert_msg(isnan(C[N + n]), "[%s] column %zu of the NaN row is %g", g->name, n, (double)C[N + n]);
        ck_assert(isfinite(C[n]) && isfinite(C[2 * N + n]));
    }
    free(A); free(W); free(weight); free(rows);
}
END_TEST

/* Whether kernel g runs here under table k. */
static int runs_under(const dm_half_gemm *g, const dm_kernels *k)
{
    return g->supported() && strncmp(g->name, k->isa, strlen(k->isa)) == 0 && strcmp(k->isa, "scalar") != 0;
}

/* The backend's choice: for each precision, the first kernel of the list
 * that this CPU runs and that belongs to the active table's instruction
 * set; none under the scalar table. */
START_TEST(native_choice)
{
    const dm_kernels *k = dm_kernels_active();
    ck_assert_ptr_nonnull(k);
    for (size_t i = 0; i < dm_half_gemm_count; i++) {
        const dm_half_gemm *g = dm_half_gemms[i];
        const dm_half_gemm *chosen = dm_half_gemm_native(g->precision), *first = NULL;
        for (size_t j = 0; j < dm_half_gemm_count && !first; j++) {
            const dm_half_gemm *h = dm_half_gemms[j];
            if (h->precision == g->precision && runs_under(h, k)) first = h;
        }
        ck_assert_ptr_eq(chosen, first);
        printf("%s under %s: %s\n", dm_precision_name(g->precision), k->isa, chosen ? chosen->name : "widened");
    }
    if (strcmp(k->isa, "scalar") == 0) {
        ck_assert_ptr_null(dm_half_gemm_native(DM_PRECISION_BF16));
        ck_assert_ptr_null(dm_half_gemm_native(DM_PRECISION_F16));
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("half_gemm");
    TCase *tc = tcase_create("half_gemm");
    tcase_set_timeout(tc, 300);
    if (dm_half_gemm_count == 0) printf("this build carries no native half-precision kernel\n");
    tcase_add_loop_test(tc, kernel_matches_reference, 0, (int)dm_half_gemm_count);
    tcase_add_loop_test(tc, nan_stays_nan, 0, (int)dm_half_gemm_count);
    tcase_add_test(tc, native_choice);
    suite_add_tcase(s, tc);
    return test_run(s);
}
