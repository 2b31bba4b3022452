/* test_ops.c - every entry of one backend's operator table (ops.h) against
 * a reference over sweeps of shapes: the scalar kernel where the entry is
 * one (dm_kernels_scalar, itself checked in test_kernels), a float64
 * computation in this file for the products, convolutions and copies.
 * DM_TEST_BACKEND names the backend (cpu, cuda); a backend this build or
 * machine lacks is skipped visibly (exit 77), unless DM_TEST_REQUIRE_CUDA
 * says the machine must have a GPU.  Data reaches the backend
 * through its own input() and output(), which the first test checks
 * exactly. */
#include "testutil.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends.h"
#include "detect_kernels.h"
#include "kernels.h"
#include "ops.h"

static dm_ops ops;
static double tolerance;

/* Enough scratch for the largest shapes below. */
#define SCRATCH_FLOATS ((size_t)1 << 22)
#define TRANSFER_FLOATS ((size_t)1 << 22)
#define TRANSFERS 8


static float *random_host(size_t n, float lo, float hi)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = test_uniform(lo, hi);
    return p;
}

/* ------------------------------------------------ moving data in and out */

static void pass_begin(void) { ck_assert_msg(ops.begin(ops.ctx) == DM_OK, "%s", dm_last_error()); }
static void pass_end(void) { ck_assert_msg(ops.finish(ops.ctx) == DM_OK, "%s", dm_last_error()); }

/* A view in backend memory holding host's n x h x w x c floats. */
static dm_view upload(const float *host, int n, int h, int w, int c)
{
    dm_view v = dm_view_of(ops.alloc(ops.ctx, (size_t)n * h * w * c), n, h, w, c);
    ck_assert_ptr_nonnull(v.data);
    pass_begin();
    ops.input(ops.ctx, host, DM_LAYOUT_NHWC, v);
    pass_end();
    return v;
}

/* Parameters (weights, biases) are plain arrays in backend memory. */
static float *upload_array(const float *host, size_t floats) { return upload(host, 1, 1, 1, (int)floats).data; }

/* A product weight W [N][K] in backend memory, laid out as the backend
 * reads it (ops.h: packed_weights). */
static float *upload_weight(const float *W, size_t N, size_t K)
{
    if (!ops.packed_weights) return upload_array(W, N * K);
    float *packed = malloc(sizeof(float) * dm_packed_floats(N, K));
    ck_assert_ptr_nonnull(packed);
    dm_pack_panels(W, N, K, packed);
    float *d = upload_array(packed, dm_packed_floats(N, K));
    free(packed);
    return d;
}

static dm_view fresh(int n, int h, int w, int c)
{
    float *zeros = calloc((size_t)n * h * w * c + 1, sizeof(float));
    dm_view v = upload(zeros, n, h, w, c);
    free(zeros);
    return v;
}

/* The view's contents, in a new host buffer. */
static float *download(dm_view v)
{
    float *host = malloc(sizeof(float) * (dm_view_floats(v) + 1));
    ck_assert_ptr_nonnull(host);
    pass_begin();
    ops.output(ops.ctx, v, DM_LAYOUT_NHWC, host);
    pass_end();
    return host;
}

static void drop(dm_view v) { ops.release(ops.ctx, v.data); }

/* got within tolerance of want, relative to max(1, max |want|). */
static void expect_close(const char *what, const float *got, const double *want, size_t n)
{
    double max_err = 0.0, max_ref = 1.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) {
            max_err = e;
            worst = i;
        }
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    }
    ck_assert_msg(max_err <= tolerance * max_ref, "[%s] %s: element %zu is %g, expected %g (error %.3g > %.3g)",
                  ops.name, what, worst, n ? got[worst] : 0.0, n ? want[worst] : 0.0, max_err, tolerance * max_ref);
}

static void expect_close_f(const char *what, const float *got, const float *want, size_t n)
{
    double *w = malloc(sizeof(double) * (n + 1));
    for (size_t i = 0; i < n; i++) w[i] = want[i];
    expect_close(what, got, w, n);
    free(w);
}

static const dm_act acts[] = {DM_ACT_NONE, DM_ACT_GELU, DM_ACT_SILU, DM_ACT_RELU};
#define ACT_COUNT (int)(sizeof acts / sizeof acts[0])
/* Channel counts: 1, around vector widths, odd, wide. */
static const int channel_sweep[] = {1, 3, 8, 17, 48};
#define CHANNELS (int)(sizeof channel_sweep / sizeof channel_sweep[0])
static const int sizes[][2] = {{1, 1}, {2, 5}, {7, 3}, {9, 9}};
#define SIZES (int)(sizeof sizes / sizeof sizes[0])

/* ------------------------------------------------------------- transfers */

START_TEST(input_output_layouts)
{
    test_seed(1);
    for (int si = 0; si < SIZES; si++)
        for (int ci = 0; ci < CHANNELS; ci++) {
            int n = 2, h = sizes[si][0], w = sizes[si][1], c = channel_sweep[ci];
            size_t count = (size_t)n * h * w * c;
            float *nchw = random_host(count, -1, 1), *back = malloc(sizeof(float) * count);
            dm_view v = fresh(n, h, w, c);
            pass_begin();
            ops.input(ops.ctx, nchw, DM_LAYOUT_NCHW, v);
            pass_end();
            float *nhwc = download(v);
            for (int i = 0; i < n; i++)
                for (int ch = 0; ch < c; ch++)
                    for (int p = 0; p < h * w; p++)
                        ck_assert_msg(nhwc[((size_t)i * h * w + p) * c + ch] == nchw[((size_t)i * c + ch) * h * w + p],
                                      "[%s] input NCHW %dx%dx%d", ops.name, h, w, c);
            pass_begin();
            ops.output(ops.ctx, v, DM_LAYOUT_NCHW, back);
            pass_end();
            ck_assert_msg(memcmp(back, nchw, sizeof(float) * count) == 0, "[%s] output NCHW %dx%dx%d", ops.name, h,
                          w, c);
            drop(v);
            free(nchw); free(back); free(nhwc);
        }
}
END_TEST

/* ------------------------------------------------------------------ gemm */

/* The products and convolutions run in each precision the backend has
 * (loop index); in half precision the float64 reference multiplies the
 * inputs as the scalar round_half rounds them, and since those products
 * are exact in float32 the same tolerance holds. */
static const dm_precision precisions[] = {DM_PRECISION_F32, DM_PRECISION_BF16, DM_PRECISION_F16};
#define PRECISIONS 3

/* Switch the backend to precision p, forgetting the weights it prepared
 * (the tests reuse addresses for new weights) by way of another precision,
 * since setting the one it has changes nothing; 0 where it lacks p. */
static int use_precision(dm_precision p)
{
    if (!ops.set_precision) {
        if (p == DM_PRECISION_F32) return 1;
        printf("%s: no %s products, not tested\n", ops.name, dm_precision_name(p));
        return 0;
    }
    ck_assert(ops.set_precision(ops.ctx, p == DM_PRECISION_F32 ? DM_PRECISION_BF16 : DM_PRECISION_F32) == DM_OK);
    ck_assert(ops.set_precision(ops.ctx, p) == DM_OK);
    return 1;
}

/* x rounded as the precision's products see it, in place. */
static void round_as(dm_precision p, float *x, size_t n)
{
    if (p != DM_PRECISION_F32) dm_kernels_scalar.round_half(x, x, n, p);
}

START_TEST(gemm_matches_float64)
{
    dm_precision p = precisions[_i];
    if (!use_precision(p)) return; /* before anything is allocated */
    test_seed(2);
    /* 1100 rows: several of the half precision's bands */
    static const size_t Ms[] = {1, 7, 300, 1100}, Ns[] = {1, 5, 33}, Ks[] = {1, 3, 80};
    for (int mi = 0; mi < 4; mi++)
        for (int ni = 0; ni < 3; ni++)
            for (int ki = 0; ki < 3; ki++)
                for (int variant = 0; variant < 4; variant++) {
                    size_t M = Ms[mi], N = Ns[ni], K = Ks[ki], lda = K + (variant & 1) * 2;
                    float beta = (variant & 2) ? 1.0f : 0.0f;
                    int with_bias = variant != 0;
                    dm_act act = acts[(mi + ni + ki + variant) % ACT_COUNT];
                    float *A = random_host(M * lda, -1, 1), *W = random_host(N * K, -1, 1);
                    float *bias = random_host(N, -1, 1), *C0 = random_host(M * N, -1, 1);
                    double *want = malloc(sizeof(double) * M * N);
                    float *rA = malloc(sizeof(float) * M * lda), *rW = malloc(sizeof(float) * N * K);
                    memcpy(rA, A, sizeof(float) * M * lda);
                    memcpy(rW, W, sizeof(float) * N * K);
                    round_as(p, rA, M * lda);
                    round_as(p, rW, N * K);
                    for (size_t i = 0; i < M; i++)
                        for (size_t j = 0; j < N; j++) {
                            double s = beta * (double)C0[i * N + j] + (with_bias ? bias[j] : 0.0);
                            for (size_t k = 0; k < K; k++) s += (double)rA[i * lda + k] * rW[j * K + k];
                            want[i * N + j] = test_activate(s, act);
                        }
                    float *dA = upload_array(A, M * lda), *dW = upload_weight(W, N, K);
                    float *dbias = upload_array(bias, N);
                    dm_view C = upload(C0, 1, 1, (int)M, (int)N);
                    ck_assert(use_precision(p)); /* again: the weights' addresses are reused */
                    pass_begin();
                    ops.gemm(ops.ctx, M, N, K, dA, lda, dW, beta, with_bias ? dbias : NULL, act, C.data);
                    pass_end();
                    float *got = download(C);
                    char what[96];
                    snprintf(what, sizeof what, "%s gemm %zux%zux%zu lda=%zu beta=%g bias=%d act=%d",
                             dm_precision_name(p), M, N, K, lda, beta, with_bias, act);
                    expect_close(what, got, want, M * N);
                    ops.release(ops.ctx, dA); ops.release(ops.ctx, dW); ops.release(ops.ctx, dbias); drop(C);
                    free(A); free(W); free(rA); free(rW); free(bias); free(C0); free(want); free(got);
                }
}
END_TEST

/* Half precision rounds bands of A's rows into the scratch, which may
 * grow past what reserve() planned; back in float32 the backend holds what
 * it held before (dm_workspace_bytes reports it).  Rows of 20,000 values
 * make a band larger than the planned scratch in either layout. */
START_TEST(scratch_returns_after_half_precision)
{
    if (!ops.set_precision || !ops.held_bytes || ops.set_precision(ops.ctx, DM_PRECISION_BF16) != DM_OK) {
        printf("%s: no bf16 products, not tested\n", ops.name);
        return;
    }
    ck_assert(ops.set_precision(ops.ctx, DM_PRECISION_F32) == DM_OK);
    size_t planned = ops.held_bytes(ops.ctx), M = 512, N = 3, K = 20000;
    /* a band is at least 510 rows (whole register blocks of up to 6 rows) */
    ck_assert_uint_lt(SCRATCH_FLOATS * sizeof(float), 510 * K * sizeof(uint16_t));
    float *A = random_host(M * K, -1, 1), *W = random_host(N * K, -1, 1), *C0 = calloc(M * N, sizeof(float));
    ck_assert_ptr_nonnull(C0);
    float *dA = upload_array(A, M * K), *dW = upload_weight(W, N, K);
    dm_view C = upload(C0, 1, 1, (int)M, (int)N);
    ck_assert(ops.set_precision(ops.ctx, DM_PRECISION_BF16) == DM_OK);
    pass_begin();
    ops.gemm(ops.ctx, M, N, K, dA, K, dW, 0.0f, NULL, DM_ACT_NONE, C.data);
    pass_end();
    ck_assert_uint_gt(ops.held_bytes(ops.ctx), planned);
    ck_assert(ops.set_precision(ops.ctx, DM_PRECISION_F32) == DM_OK);
    ck_assert_uint_eq(ops.held_bytes(ops.ctx), planned);
    ops.release(ops.ctx, dA); ops.release(ops.ctx, dW); drop(C);
    free(A); free(W); free(C0);
}
END_TEST

/* Operands that start one float into their buffers (as a band of a
 * convolution's output does), with a bias and a ReLU: a backend whose
 * library picks its algorithm by the operands' alignment must say so. */
START_TEST(gemm_on_unaligned_operands)
{
    test_seed(12);
    size_t M = 37, N = 19, K = 23;
    float *A = random_host(M * K + 1, -1, 1), *W = random_host(N * K, -1, 1), *bias = random_host(N, -1, 1);
    float *C0 = random_host(M * N + 1, -1, 1);
    double *want = malloc(sizeof(double) * M * N);
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = (double)C0[1 + i * N + j] + bias[j];
            for (size_t k = 0; k < K; k++) s += (double)A[1 + i * K + k] * W[j * K + k];
            want[i * N + j] = test_activate(s, DM_ACT_RELU);
        }
    float *dA = upload_array(A, M * K + 1), *dW = upload_weight(W, N, K), *dbias = upload_array(bias, N);
    dm_view C = upload(C0, 1, 1, 1, (int)(M * N + 1));
    ck_assert(use_precision(DM_PRECISION_F32));
    pass_begin();
    ops.gemm(ops.ctx, M, N, K, dA + 1, K, dW, 1.0f, dbias, DM_ACT_RELU, C.data + 1);
    pass_end();
    float *got = download(C);
    expect_close("gemm on operands one float into their buffers", got + 1, want, M * N);
    ck_assert_msg(got[0] == C0[0], "[%s] gemm wrote before its output", ops.name);
    ops.release(ops.ctx, dA); ops.release(ops.ctx, dW); ops.release(ops.ctx, dbias); drop(C);
    free(A); free(W); free(bias); free(C0); free(want); free(got);
}
END_TEST

/* --------------------------------------------------------------- conv3x3 */

START_TEST(conv3x3_matches_float64)
{
    dm_precision p = precisions[_i];
    if (!use_precision(p)) return; /* before anything is allocated */
    test_seed(3);
    static const int cins[] = {1, 3, 16}, couts[] = {1, 8, 24};
    for (int si = 0; si < SIZES; si++)
        for (int ii = 0; ii < 3; ii++)
            for (int stride = 1; stride <= 2; stride++)
                for (int pad = 0; pad <= 2; pad++) {
                    int n = 2, h = sizes[si][0], w = sizes[si][1], cin = cins[ii], cout = couts[(si + ii) % 3];
                    int oh = dm_conv3x3_out(h, stride, pad), ow = dm_conv3x3_out(w, stride, pad);
                    if (h + 2 * pad < 3 || w + 2 * pad < 3) continue; /* no output */
                    dm_act act = acts[(si + pad) % ACT_COUNT];
                    float *x = random_host((size_t)n * h * w * cin, -1, 1);
                    float *wt = random_host((size_t)cout * 9 * cin, -1, 1), *b = random_host(cout, -1, 1);
                    double *want = malloc(sizeof(double) * n * oh * ow * cout);
                    float *rx = malloc(sizeof(float) * n * h * w * cin), *rwt = malloc(sizeof(float) * cout * 9 * cin);
                    memcpy(rx, x, sizeof(float) * n * h * w * cin);
                    memcpy(rwt, wt, sizeof(float) * cout * 9 * cin);
                    round_as(p, rx, (size_t)n * h * w * cin);
                    round_as(p, rwt, (size_t)cout * 9 * cin);
                    for (int i = 0; i < n; i++)
                        for (int oy = 0; oy < oh; oy++)
                            for (int ox = 0; ox < ow; ox++)
                                for (int o = 0; o < cout; o++) {
                                    double s = b[o];
                                    for (int t = 0; t < 9; t++) {
                                        int iy = oy * stride + t / 3 - pad, ix = ox * stride + t % 3 - pad;
                                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                        for (int ch = 0; ch < cin; ch++)
                                            s += (double)rx[(((size_t)i * h + iy) * w + ix) * cin + ch] *
                                                 rwt[((size_t)o * 9 + t) * cin + ch];
                                    }
                                    want[(((size_t)i * oh + oy) * ow + ox) * cout + o] = test_activate(s, act);
                                }
                    dm_conv3x3 cv = {cin, cout, stride, pad, upload_weight(wt, (size_t)cout, 9 * (size_t)cin),
                                     upload_array(b, cout)};
                    dm_view dx = upload(x, n, h, w, cin), y = fresh(n, oh, ow, cout);
                    ck_assert(use_precision(p)); /* again: the weights' addresses are reused */
                    pass_begin();
                    ops.conv3x3(ops.ctx, &cv, dx, act, y);
                    pass_end();
                    float *got = download(y);
                    char what[96];
                    snprintf(what, sizeof what, "%s conv3x3 %dx%dx%d->%d stride %d pad %d", dm_precision_name(p), h,
                             w, cin, cout, stride, pad);
                    expect_close(what, got, want, (size_t)n * oh * ow * cout);
                    ops.release(ops.ctx, cv.weight); ops.release(ops.ctx, cv.bias); drop(dx); drop(y);
                    free(x); free(wt); free(rx); free(rwt); free(b); free(want); free(got);
                }
}
END_TEST

/* --------------------------------------------- per-pixel kernels' entries */

START_TEST(dwconv3x3_matches_scalar)
{
    test_seed(4);
    for (int si = 0; si < SIZES; si++)
        for (int ci = 0; ci < CHANNELS; ci++)
            for (int ai = 0; ai < ACT_COUNT; ai++) {
                int n = 3, h = sizes[si][0], w = sizes[si][1], c = channel_sweep[ci];
                size_t image = (size_t)h * w * c, count = n * image;
                float *x = random_host(count, -2, 2), *w9 = random_host(9 * (size_t)c, -1, 1);
                float *b = random_host(c, -1, 1), *want = malloc(sizeof(float) * count);
                for (int i = 0; i < n; i++)
                    dm_kernels_scalar.dwconv3x3(x + i * image, want + i * image, h, w, c, w9, ai ? b : NULL, acts[ai],
                                                0, h);
                dm_view dx = upload(x, n, h, w, c), y = fresh(n, h, w, c);
                float *dw9 = upload_array(w9, 9 * (size_t)c), *db = upload_array(b, c);
                pass_begin();
                ops.dwconv3x3(ops.ctx, dx, dw9, ai ? db : NULL, acts[ai], y);
                pass_end();
                float *got = download(y);
                char what[96];
                snprintf(what, sizeof what, "dwconv3x3 %dx%dx%d act=%d", h, w, c, ai);
                expect_close_f(what, got, want, count);
                drop(dx); drop(y); ops.release(ops.ctx, dw9); ops.release(ops.ctx, db);
                free(x); free(w9); free(b); free(want); free(got);
            }
}
END_TEST

START_TEST(layernorm_and_bias_act_match_scalar)
{
    test_seed(5);
    for (int si = 0; si < SIZES; si++)
        for (int ci = 0; ci < CHANNELS; ci++)
            for (int ai = 0; ai < ACT_COUNT; ai++) {
                int n = 2, h = sizes[si][0], w = sizes[si][1], c = channel_sweep[ci];
                size_t rows = (size_t)n * h * w, count = rows * c;
                float *x = random_host(count, -3, 5), *g = random_host(c, 0.5f, 1.5f), *b = random_host(c, -1, 1);
                float *want = malloc(sizeof(float) * count);
                dm_kernels_scalar.layernorm(x, want, rows, c, g, b, acts[ai]);
                dm_view dx = upload(x, n, h, w, c), y = fresh(n, h, w, c);
                float *dg = upload_array(g, c), *db = upload_array(b, c);
                pass_begin();
                ops.layernorm(ops.ctx, dx, dg, db, acts[ai], y);
                ops.layernorm(ops.ctx, dx, dg, db, acts[ai], dx); /* in place */
                pass_end();
                float *got = download(y), *got_in_place = download(dx);
                char what[96];
                snprintf(what, sizeof what, "layernorm %dx%dx%d act=%d", h, w, c, ai);
                expect_close_f(what, got, want, count);
                expect_close_f(what, got_in_place, want, count);
                /* bias_act on top, in place */
                dm_kernels_scalar.bias_act(want, rows, c, b, acts[ai]);
                pass_begin();
                ops.bias_act(ops.ctx, y, db, acts[ai]);
                pass_end();
                free(got);
                got = download(y);
                snprintf(what, sizeof what, "bias_act %dx%dx%d act=%d", h, w, c, ai);
                expect_close_f(what, got, want, count);
                drop(dx); drop(y); ops.release(ops.ctx, dg); ops.release(ops.ctx, db);
                free(x); free(g); free(b); free(want); free(got); free(got_in_place);
            }
}
END_TEST

START_TEST(sample_matches_scalar)
{
    test_seed(6);
    for (int si = 0; si < SIZES; si++)
        for (int groups = 1; groups <= 3; groups++)
            for (int cg = 1; cg <= 17; cg += 8) {
                int n = 2, h = sizes[si][0], w = sizes[si][1], c = cg * groups;
                size_t pixels = (size_t)h * w, count = n * pixels * c, offs = n * pixels * 2 * groups;
                float *v = random_host(count, -2, 2), *off = random_host(offs, -3, 3);
                float *want = malloc(sizeof(float) * count);
                for (int i = 0; i < n; i++)
                    dm_kernels_scalar.sample(v + i * pixels * c, off + i * pixels * 2 * groups, want + i * pixels * c,
                                             h, w, c, groups, 0, pixels);
                dm_view dv = upload(v, n, h, w, c), u = fresh(n, h, w, c);
                float *doff = upload_array(off, offs);
                pass_begin();
                ops.sample(ops.ctx, dv, doff, groups, u);
                pass_end();
                float *got = download(u);
                char what[96];
                snprintf(what, sizeof what, "sample %dx%dx%d groups=%d", h, w, c, groups);
                expect_close_f(what, got, want, count);
                drop(dv); drop(u); ops.release(ops.ctx, doff);
                free(v); free(off); free(want); free(got);
            }
}
END_TEST

START_TEST(scan_matches_scalar)
{
    test_seed(7);
    /* short and long sequences, small batches and large; 96 x 96 of 20
     * channels is cut into chunks on the CPU.  Any thread count gives the
     * same bits. */
    static const int shapes[][4] = {{1, 1, 1, 1},   {1, 7, 9, 8},  {2, 5, 4, 17},
                                    {1, 40, 40, 48}, {9, 6, 6, 33}, {1, 96, 96, 20}};
    for (int si = 0; si < 6; si++) {
        int n = shapes[si][0], h = shapes[si][1], w = shapes[si][2], c = shapes[si][3];
        size_t L = (size_t)h * w, count = n * L * c, stride = 5;
        float *u = random_host(count, -2, 2), *delta = random_host(count, -6, 4);
        float *bc = random_host(n * L * stride, -1.5f, 1.5f), *a = random_host(c, -3, -0.01f);
        float *d = random_host(c, -1, 1), *bias = random_host(c, -2, 1), *want = malloc(sizeof(float) * count);
        float *state = malloc(sizeof(float) * c);
        for (int i = 0; i < n; i++) {
            dm_scan_args args = {u + i * L * c, delta + i * L * c, bc + i * L * stride + 2, stride, a, d, bias, (size_t)c};
            memset(state, 0, sizeof(float) * c);
            dm_kernels_scalar.scan(&args, 0, L, 0, c, state, NULL, want + i * L * c);
        }
        dm_view du = upload(u, n, h, w, c), y = fresh(n, h, w, c);
        dm_scan_inputs in = {du, upload_array(delta, count), upload_array(bc, n * L * stride) + 2, stride,
                             upload_array(a, c), upload_array(d, c), upload_array(bias, c)};
        pass_begin();
        ops.scan(ops.ctx, &in, y);
        pass_end();
        float *got = download(y);
        char what[96];
        snprintf(what, sizeof what, "scan n=%d L=%zu c=%d", n, L, c);
        expect_close_f(what, got, want, count);
        for (int threads = 1; threads <= 3 && ops.set_threads; threads += 2) {
            ck_assert(ops.set_threads(ops.ctx, threads) == DM_OK);
            pass_begin();
            ops.scan(ops.ctx, &in, y);
            pass_end();
            float *again = download(y);
            ck_assert_msg(memcmp(again, got, sizeof(float) * count) == 0, "%s: other bits on %d threads", what, threads);
            free(again);
        }
        if (ops.set_threads) ck_assert(ops.set_threads(ops.ctx, 2) == DM_OK);
        drop(du); drop(y);
        ops.release(ops.ctx, (float *)in.delta); ops.release(ops.ctx, (float *)in.bc - 2);
        ops.release(ops.ctx, (float *)in.a); ops.release(ops.ctx, (float *)in.d);
        ops.release(ops.ctx, (float *)in.dt_bias);
        free(u); free(delta); free(bc); free(a); free(d); free(bias); free(want); free(state); free(got);
    }
}
END_TEST

/* --------------------------------------------- pooling, resizing, joining */

/* The entries that map an image to an image of another size. */
enum { AVG_POOL, MAX_POOL, RESIZE_BILINEAR, RESIZE_NEAREST };

START_TEST(resampling_matches_scalar)
{
    test_seed(8);
    static const int outs[][2] = {{1, 1}, {2, 3}, {5, 4}, {13, 17}};
    for (int kind = AVG_POOL; kind <= RESIZE_NEAREST; kind++)
        for (int si = 0; si < SIZES; si++)
            for (int oi = 0; oi < 4; oi++)
                for (int ci = 0; ci < CHANNELS; ci += 2) {
                    int n = 2, h = sizes[si][0], w = sizes[si][1], c = channel_sweep[ci];
                    int k = 1 + oi % 3, stride = 1 + si % 2, pad = k / 2;
                    int oh = outs[oi][0], ow = outs[oi][1];
                    if (kind == MAX_POOL) {
                        oh = (h + 2 * pad - k) / stride + 1;
                        ow = (w + 2 * pad - k) / stride + 1;
                    }
                    size_t in_image = (size_t)h * w * c, out_image = (size_t)oh * ow * c;
                    float *x = random_host(n * in_image, -2, 2), *want = malloc(sizeof(float) * n * out_image);
                    for (int i = 0; i < n; i++) {
                        const float *xi = x + i * in_image;
                        float *wi = want + i * out_image;
                        size_t pixels = (size_t)oh * ow;
                        if (kind == AVG_POOL) dm_kernels_scalar.avg_pool(xi, h, w, c, wi, oh, ow, 0, pixels);
                        else if (kind == MAX_POOL)
                            dm_kernels_scalar.max_pool(xi, h, w, c, k, stride, pad, wi, oh, ow, 0, pixels);
                        else
                            dm_kernels_scalar.resize(xi, h, w, c, kind == RESIZE_NEAREST ? DM_RESIZE_NEAREST
                                                                                           : DM_RESIZE_BILINEAR,
                                                     wi, oh, ow, 0, pixels);
                    }
                    dm_view dx = upload(x, n, h, w, c), y = fresh(n, oh, ow, c);
                    pass_begin();
                    if (kind == AVG_POOL) ops.avg_pool(ops.ctx, dx, y);
                    else if (kind == MAX_POOL) ops.max_pool(ops.ctx, dx, k, stride, pad, y);
                    else ops.resize(ops.ctx, dx, kind == RESIZE_NEAREST ? DM_RESIZE_NEAREST : DM_RESIZE_BILINEAR, y);
                    pass_end();
                    float *got = download(y);
                    char what[96];
                    snprintf(what, sizeof what, "%s %dx%dx%d -> %dx%d (k %d stride %d)",
                             (const char *[]){"avg_pool", "max_pool", "resize bilinear", "resize nearest"}[kind], h, w,
                             c, oh, ow, k, stride);
                    expect_close_f(what, got, want, n * out_image);
                    drop(dx); drop(y);
                    free(x); free(want); free(got);
                }
}
END_TEST

START_TEST(add_and_concat)
{
    test_seed(9);
    for (int si = 0; si < SIZES; si++)
        for (int ci = 0; ci < CHANNELS; ci++)
            for (int ai = 0; ai < ACT_COUNT; ai++) {
                int n = 2, h = sizes[si][0], w = sizes[si][1], c = channel_sweep[ci], c2 = 1 + ci * 3;
                size_t pixels = (size_t)n * h * w, count = pixels * c;
                float *a = random_host(count, -2, 2), *b = random_host(count, -2, 2), *other = random_host(pixels * c2, -1, 1);
                float *want = malloc(sizeof(float) * count), *joined = malloc(sizeof(float) * pixels * (c + c2));
                dm_kernels_scalar.add(a, b, want, count, acts[ai]);
                dm_view da = upload(a, n, h, w, c), db = upload(b, n, h, w, c), dother = upload(other, n, h, w, c2);
                dm_view y = fresh(n, h, w, c + c2);
                pass_begin();
                ops.add(ops.ctx, da, db, acts[ai], da); /* in place */
                ops.concat(ops.ctx, dother, 0, y);
                ops.concat(ops.ctx, da, c2, y);
                pass_end();
                float *sum = download(da), *got = download(y);
                /* A concatenation copies exactly what it is given: the sum as
                 * this backend computed it (a GPU's activations round apart
                 * from the scalar reference's). */
                for (size_t p = 0; p < pixels; p++) {
                    memcpy(joined + p * (c + c2), other + p * c2, sizeof(float) * c2);
                    memcpy(joined + p * (c + c2) + c2, sum + p * c, sizeof(float) * c);
                }
                char what[96];
                snprintf(what, sizeof what, "add %dx%dx%d act=%d", h, w, c, ai);
                expect_close_f(what, sum, want, count);
                snprintf(what, sizeof what, "concat %dx%d, %d + %d channels", h, w, c2, c);
                ck_assert_msg(memcmp(got, joined, sizeof(float) * pixels * (c + c2)) == 0, "[%s] %s", ops.name, what);
                drop(da); drop(db); drop(dother); drop(y);
                free(a); free(b); free(other); free(want); free(joined); free(sum); free(got);
            }
}
END_TEST

/* RoIAlign over four levels of halving size against the scalar kernel:
 * boxes inside, across and outside the borders, tiny and empty ones. */
START_TEST(roi_align_matches_scalar)
{
    test_seed(10);
    for (int ci = 0; ci < CHANNELS; ci++)
        for (int out = 2; out <= 14; out += 5) {
            int c = channel_sweep[ci], n = 9, h0 = 19, w0 = 23;
            dm_roi_levels levels = {.count = 4};
            float *host[4];
            for (int l = 0; l < 4; l++) {
                int h = (h0 >> l) + 1, w = (w0 >> l) + 1;
                host[l] = random_host((size_t)h * w * c, -2, 2);
                levels.level[l] = upload(host[l], 1, h, w, c);
                levels.scale[l] = 1.0f / (float)(4 << l);
            }
            float *rois = random_host(5 * (size_t)n, -20, 100);
            for (int i = 0; i < n; i++) {
                float *r = rois + 5 * i;
                r[0] = (float)(i % 4);
                if (r[3] < r[1]) { float t = r[1]; r[1] = r[3]; r[3] = t; }
                if (r[4] < r[2]) { float t = r[2]; r[2] = r[4]; r[4] = t; }
            }
            rois[5 * 1 + 3] = rois[5 * 1 + 1]; /* zero width */
            float *want = malloc(sizeof(float) * n * out * out * c);
            for (int i = 0; i < n; i++) {
                const float *r = rois + 5 * i;
                dm_view f = levels.level[(int)r[0]];
                dm_roi_align(host[(int)r[0]], f.h, f.w, c, levels.scale[(int)r[0]], r + 1, out, out,
                             want + (size_t)i * out * out * c);
            }
            dm_view dr = upload(rois, 1, 1, n, 5), y = fresh(n, out, out, c);
            pass_begin();
            ops.roi_align(ops.ctx, &levels, dr.data, n, y);
            pass_end();
            float *got = download(y);
            char what[96];
            snprintf(what, sizeof what, "roi_align %d RoIs -> %dx%dx%d", n, out, out, c);
            expect_close_f(what, got, want, (size_t)n * out * out * c);
            for (int l = 0; l < 4; l++) drop(levels.level[l]), free(host[l]);
            drop(dr); drop(y);
            free(rois); free(want); free(got);
        }
}
END_TEST

static void count_piece(void *arg, size_t i) { atomic_fetch_add(&((atomic_int *)arg)[i], 1); }

/* host_run runs every piece of a loop exactly once, on its threads. */
START_TEST(host_run_runs_each_piece_once)
{
    enum { PIECES = 1000 };
    static atomic_int runs[PIECES];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < PIECES; i++) atomic_store(&runs[i], 0);
        ops.host_run(ops.ctx, PIECES, count_piece, runs);
        for (int i = 0; i < PIECES; i++) ck_assert_msg(atomic_load(&runs[i]) == 1, "[%s] piece %d ran %d times", ops.name, i,
                                                      atomic_load(&runs[i]));
    }
}
END_TEST

/* Every entry of the table is filled. */
START_TEST(table_is_complete)
{
    void (*const entries[])(void) = {
        (void (*)(void))ops.input,    (void (*)(void))ops.output,    (void (*)(void))ops.gemm,
        (void (*)(void))ops.conv3x3,  (void (*)(void))ops.dwconv3x3, (void (*)(void))ops.layernorm,
        (void (*)(void))ops.bias_act, (void (*)(void))ops.sample,    (void (*)(void))ops.scan,
        (void (*)(void))ops.avg_pool, (void (*)(void))ops.max_pool,  (void (*)(void))ops.resize,
        (void (*)(void))ops.add,      (void (*)(void))ops.concat,    (void (*)(void))ops.roi_align,
        (void (*)(void))ops.host_run,
    };
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        ck_assert_msg(entries[i] != NULL, "[%s] operator %zu is missing", ops.name, i);
}
END_TEST

int main(void)
{
    const char *name = getenv("DM_TEST_BACKEND");
    dm_status st;
    if (!name || !strcmp(name, "cpu")) {
        st = dm_cpu_backend_create(2, &ops);
        tolerance = 1e-5; /* SIMD kernels: SLEEF's 1-ulp functions, fused multiply-adds */
    } else if (!strcmp(name, "cuda")) {
        st = dm_cuda_backend_create(NULL, -1, &ops);
        tolerance = 1e-5;
    } else {
        fprintf(stderr, "DM_TEST_BACKEND=%s: no such backend (cpu, cuda)\n", name);
        return 1;
    }
    if (st == DM_ERR_UNSUPPORTED) {
        /* where a GPU must be (scripts/gpu-check.sh), its absence fails */
        const char *require = getenv("DM_TEST_REQUIRE_CUDA");
        int required = name && !strcmp(name, "cuda") && require && *require && strcmp(require, "0") != 0;
        printf("%s: %s backend not available for the operator tests: %s\n", required ? "FAIL" : "SKIP", name,
               dm_last_error());
        return required ? 1 : 77; /* 77: meson's exit code for a skipped test */
    }
    if (st || (st = ops.reserve(ops.ctx, SCRATCH_FLOATS, TRANSFER_FLOATS, TRANSFERS))) {
        fprintf(stderr, "%s backend: %s\n", name ? name : "cpu", dm_last_error());
        return 1;
    }
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create(ops.name);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, table_is_complete);
    tcase_add_test(tc, input_output_layouts);
    tcase_add_loop_test(tc, gemm_matches_float64, 0, PRECISIONS);
    tcase_add_test(tc, gemm_on_unaligned_operands);
    tcase_add_test(tc, scratch_returns_after_half_precision);
    tcase_add_loop_test(tc, conv3x3_matches_float64, 0, PRECISIONS);
    tcase_add_test(tc, dwconv3x3_matches_scalar);
    tcase_add_test(tc, layernorm_and_bias_act_match_scalar);
    tcase_add_test(tc, sample_matches_scalar);
    tcase_add_test(tc, scan_matches_scalar);
    tcase_add_test(tc, resampling_matches_scalar);
    tcase_add_test(tc, add_and_concat);
    tcase_add_test(tc, roi_align_matches_scalar);
    tcase_add_test(tc, host_run_runs_each_piece_once);
    suite_add_tcase(s, tc);
    int rc = test_run_in_process(s);
    ops.destroy(ops.ctx);
    return rc;
}
