/* forward.c - the DAMamba forward pass, channels-last, plus the workspace
 * that holds everything it writes.  Reads top to bottom like the model:
 * stem, then per stage an optional downsample, the blocks and the stage
 * norm, then the head. */
#include "model.h"

#include "backend_cuda.h"
#include "error.h"
#include "kernels.h"
#include "workspace.h"
#include "versioned.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- threads */

static int thread_override;

void dm_set_threads(int n) { thread_override = n > 0 ? n : 0; }

int dm_threads(void)
{
    if (thread_override > 0) return thread_override;
    const char *env = getenv("DAMAMBA_THREADS");
    if (!env || !*env) env = getenv("OMP_NUM_THREADS");
    if (env && *env) {
        int n = atoi(env);
        if (n > 0) return n;
    }
    return omp_get_num_procs();
}

/* -------------------------------------------------------------- workspace */

/* Output pixels per im2col band: bounds the column buffer. */
static size_t conv_band(int cin)
{
    size_t band = ((size_t)1 << 20) / (9 * (size_t)cin);
    return band < 256 ? 256 : band;
}

/* A chunked scan splits one image's sequence among at most this many. */
#define SCAN_MAX_CHUNKS 64

struct dm_workspace {
    dm_backend backend;
    int max_batch, max_h, max_w;
    size_t bytes;
    float *x, *t;       /* block input/output and its normalized copy [P][C] */
    float *a, *v, *ob;  /* in_proj output (later y), SiLU(conv) values, offset branch */
    float *u, *delta;   /* sampled features, dt projection [P][C] */
    float *off, *dbl;   /* offsets [P][2G], x_proj output [P][R+2] */
    float *hid, *hid2;  /* ConvFFN hidden [P][F] */
    float *cols;        /* im2col band */
    float *state;       /* scan states [N][C] */
    float *chunk_state; /* entry states of a chunked scan's chunks [SCAN_MAX_CHUNKS][C] */
    float *pooled;      /* [N][C3] */
    void *block;        /* one allocation behind all of the above */
    dm_cuda_workspace *cuda; /* the device side, for DM_BACKEND_CUDA */
};

#define GROW(field, n) do { size_t n_ = (n); if (n_ > sz->field) sz->field = n_; } while (0)

/* Column rows of one conv: a band, or all output pixels when fewer. */
static size_t conv_cols(size_t (*conv_band)(int), size_t pixels, int cin)
{
    size_t band = conv_band(cin);
    return (band < pixels ? band : pixels) * 9 * (size_t)cin;
}

void dm_plan_buffers(const dm_config *c, int n, int h, int w, size_t (*conv_band)(int cin), dm_plan *sz)
{
    memset(sz, 0, sizeof *sz);
    size_t N = (size_t)n;
    int h1 = dm_down2(h), w1 = dm_down2(w), h2 = dm_down2(h1), w2 = dm_down2(w1);
    int half = c->dims[0] / 2;
    sz->input = N * h * w * c->in_chans;
    /* stem: input in t, conv0 -> a, conv1 -> v, conv2 -> a, conv3 -> x */
    GROW(x, N * h * w * c->in_chans);
    GROW(a, N * h1 * w1 * half);
    GROW(v, N * h1 * w1 * half);
    GROW(a, N * h2 * w2 * c->dims[0]);
    GROW(x, N * h2 * w2 * c->dims[0]);
    int cins[4] = {c->in_chans, half, half, c->dims[0]};
    size_t outs[4] = {N * h1 * w1, N * h1 * w1, N * h2 * w2, N * h2 * w2};
    for (int i = 0; i < 4; i++) GROW(cols, conv_cols(conv_band, outs[i], cins[i]));
    int hs = h2, ws = w2;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        if (s > 0) {
            hs = dm_down2(hs);
            ws = dm_down2(ws);
            GROW(cols, conv_cols(conv_band, N * hs * ws, c->dims[s - 1]));
        }
        size_t P = N * hs * ws, C = c->dims[s];
        GROW(x, P * C);
        GROW(a, P * C);
        GROW(v, P * C);
        GROW(ob, P * C);
        GROW(u, P * C);
        GROW(delta, P * C);
        GROW(off, P * 2 * c->groups[s]);
        GROW(dbl, P * (c->dt_rank[s] + 2));
        GROW(hid, P * c->mlp_hidden[s]);
        GROW(state, N * C);
        GROW(chunk_state, SCAN_MAX_CHUNKS * C);
        sz->stage[s] = P * C;
        sz->stage_h[s] = hs;
        sz->stage_w[s] = ws;
    }
    GROW(pooled, N * c->dims[3]);
}

static dm_status workspace_alloc_host(const dm_model *model, dm_workspace *ws)
{
    dm_plan sz;
    dm_plan_buffers(&model->config, ws->max_batch, ws->max_h, ws->max_w, conv_band, &sz);
    /* x and t swap roles, so they share a size; hid2 is another hid. */
    size_t counts[] = {sz.x, sz.x, sz.a, sz.v, sz.ob, sz.u, sz.delta, sz.off, sz.dbl,
                       sz.hid, sz.hid, sz.cols, sz.state, sz.chunk_state, sz.pooled};
    size_t total = 0;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) total += (counts[i] + 15) & ~(size_t)15;
    float *mem = NULL;
    if (posix_memalign((void **)&mem, 64, total * sizeof(float)) != 0)
        return dm_fail(DM_ERR_NOMEM, "out of memory for a %.1f MB workspace", total * 4.0 / 1e6);
    float **slots[] = {&ws->x, &ws->t, &ws->a, &ws->v, &ws->ob, &ws->u, &ws->delta, &ws->off, &ws->dbl,
                       &ws->hid, &ws->hid2, &ws->cols, &ws->state, &ws->chunk_state, &ws->pooled};
    float *p = mem;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        *slots[i] = p;
        p += (counts[i] + 15) & ~(size_t)15;
    }
    ws->block = mem;
    ws->bytes = total * sizeof(float);
    return DM_OK;
}

const char *dm_backend_name(dm_backend backend)
{
    switch (backend) {
    case DM_BACKEND_CPU: return "cpu";
    case DM_BACKEND_CUDA: return "cuda";
    }
    return "unknown";
}

dm_status dm_backend_available(dm_backend backend)
{
    switch (backend) {
    case DM_BACKEND_CPU: return DM_OK;
    case DM_BACKEND_CUDA: return dm_cuda_available();
    }
    return dm_fail(DM_ERR_ARGUMENT, "unknown backend %d", (int)backend);
}

dm_backend dm_workspace_backend(const dm_workspace *ws) { return ws ? ws->backend : DM_BACKEND_CPU; }

/* device < 0: the calling thread's current CUDA device. */
static dm_status workspace_create(const dm_model *model, dm_backend backend, int device, int max_batch, int max_h,
                                  int max_w, dm_workspace **out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_create: out is required");
    *out = NULL;
    if (!model || max_batch < 1 || max_h < 1 || max_w < 1)
        return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_create: need a model and batch, height, width >= 1 (got %d, %d, %d)",
                       max_batch, max_h, max_w);
    if ((double)max_batch * max_h * max_w > (double)(1 << 30))
        return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_create: %d images of %dx%d pixels is too large", max_batch, max_h, max_w);
    dm_status st = dm_backend_available(backend);
    if (st) return st;
    if (backend == DM_BACKEND_CPU && device > 0)
        return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_create: the CPU backend has device 0 only, not %d", device);
    const dm_kernels *k;
    if (backend == DM_BACKEND_CPU && (st = dm_kernels_require(&k))) return st;
    dm_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return dm_fail(DM_ERR_NOMEM, "out of memory for a workspace");
    ws->backend = backend;
    ws->max_batch = max_batch;
    ws->max_h = max_h;
    ws->max_w = max_w;
    if (backend == DM_BACKEND_CUDA) {
        st = dm_cuda_workspace_create(model, device, max_batch, max_h, max_w, &ws->cuda);
        if (!st) ws->bytes = dm_cuda_workspace_bytes(ws->cuda);
    } else {
        st = workspace_alloc_host(model, ws);
    }
    if (st) {
        free(ws);
        return st;
    }
    *out = ws;
    return DM_OK;
}

dm_status dm_workspace_create_on(const dm_model *model, dm_backend backend, int max_batch, int max_h, int max_w,
                                dm_workspace **out)
{
    return workspace_create(model, backend, -1, max_batch, max_h, max_w, out);
}

dm_status dm_workspace_create_on_device(const dm_model *model, dm_backend backend, int device, int max_batch,
                                        int max_h, int max_w, dm_workspace **out)
{
    if (device < 0) {
        if (out) *out = NULL;
        return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_create: device %d is negative", device);
    }
    return workspace_create(model, backend, device, max_batch, max_h, max_w, out);
}

dm_status dm_workspace_create(const dm_model *model, int max_batch, int max_h, int max_w, dm_workspace **out)
{
    return dm_workspace_create_on(model, DM_BACKEND_CPU, max_batch, max_h, max_w, out);
}

void dm_workspace_free(dm_workspace *ws)
{
    if (!ws) return;
    dm_cuda_workspace_free(ws->cuda);
    free(ws->block);
    free(ws);
}

size_t dm_workspace_bytes(const dm_workspace *ws) { return ws ? ws->bytes : 0; }

/* ------------------------------------------------------------- operators */

typedef struct ctx {
    const dm_kernels *k;
    int threads;
    float *offsets; /* where to copy this block's offsets, or NULL */
} ctx;

/* Thread t's share [*a, *b) of total items: contiguous, sizes within one. */
static void share(size_t total, int threads, int t, size_t *a, size_t *b)
{
    *a = total * (size_t)t / (size_t)threads;
    *b = total * (size_t)(t + 1) / (size_t)threads;
}

/* C[M][N] = act(A[M][K] (row stride lda) * B[N][K]^T + beta * C + bias),
 * by a single-threaded OpenBLAS, with the epilogue applied while the rows
 * are still in cache; bias may be NULL. */
static void gemm_rows(const ctx *cx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B,
                      float *C, float beta, const float *bias, dm_act act)
{
    if (M == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)K, beta,
                C, (int)N);
    if (bias || act != DM_ACT_NONE) cx->k->bias_act(C, M, N, bias, act);
}

/* gemm_rows with threads taking bands of rows, so OpenMP's threads and
 * OpenBLAS's never compete for the cores. */
static void gemm_nt(const ctx *cx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B,
                    float *C, float beta, const float *bias, dm_act act)
{
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (int t = 0; t < cx->threads; t++) {
        size_t m0, m1;
        share(M, cx->threads, t, &m0, &m1);
        if (m0 < m1) gemm_rows(cx, m1 - m0, N, K, A + m0 * lda, lda, B, C + m0 * N, beta, bias, act);
    }
}

static void layernorm(const ctx *cx, const float *x, float *y, size_t rows, size_t c, const float *g,
                      const float *b, dm_act act)
{
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (int t = 0; t < cx->threads; t++) {
        size_t r0, r1;
        share(rows, cx->threads, t, &r0, &r1);
        if (r0 < r1) cx->k->layernorm(x + r0 * c, y + r0 * c, r1 - r0, c, g, b, act);
    }
}

/* Depthwise 3x3 over n images; threads share the n * h output rows. */
static void dwconv(const ctx *cx, const float *x, float *y, int n, int h, int w, int c, const float *w9,
                   const float *bias, dm_act act)
{
    size_t image = (size_t)h * w * c;
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (int t = 0; t < cx->threads; t++) {
        size_t r0, r1;
        share((size_t)n * h, cx->threads, t, &r0, &r1);
        while (r0 < r1) { /* one call per image the share touches */
            size_t img = r0 / h, y0 = r0 % h, y1 = y0 + (r1 - r0) < (size_t)h ? y0 + (r1 - r0) : (size_t)h;
            cx->k->dwconv3x3(x + img * image, y + img * image, h, w, c, w9, bias, act, (int)y0, (int)y1);
            r0 += y1 - y0;
        }
    }
}

/* Gather the 3x3 neighbourhoods of output pixels [p0, p1) of a channels-last
 * batch into rows of 9 * cin (tap-major, then channel), zeros outside. */
static void im2col3x3(const float *x, float *cols, int h, int w, int cin, int stride, int oh, int ow,
                      size_t p0, size_t p1)
{
    size_t per_image = (size_t)oh * ow;
    for (size_t p = p0; p < p1; p++) {
        size_t img = p / per_image, q = p % per_image;
        int oy = (int)(q / ow), ox = (int)(q % ow);
        float *row = cols + (p - p0) * 9 * cin;
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++, row += cin) {
                int iy = oy * stride + ky - 1, ix = ox * stride + kx - 1;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) memset(row, 0, sizeof(float) * cin);
                else memcpy(row, x + ((img * h + iy) * w + ix) * cin, sizeof(float) * cin);
            }
    }
}

/* Dense 3x3 convolution (padding 1) as banded im2col + GEMM; y = act(conv).
 * Each thread gathers its share of a band and multiplies it at once. */
static void conv3x3(const ctx *cx, const dm_conv3x3 *cv, const float *x, float *y, float *cols, int n, int h,
                    int w, int *oh_out, int *ow_out, dm_act act)
{
    int oh = cv->stride == 2 ? dm_down2(h) : h, ow = cv->stride == 2 ? dm_down2(w) : w;
    size_t total = (size_t)n * oh * ow, band = conv_band(cv->cin), K = 9 * (size_t)cv->cin;
    for (size_t p0 = 0; p0 < total; p0 += band) {
        size_t p1 = p0 + band < total ? p0 + band : total;
#pragma omp parallel for num_threads(cx->threads) schedule(static)
        for (int t = 0; t < cx->threads; t++) {
            size_t a, b;
            share(p1 - p0, cx->threads, t, &a, &b);
            if (a >= b) continue;
            a += p0;
            b += p0;
            float *rows = cols + (a - p0) * K;
            im2col3x3(x, rows, h, w, cv->cin, cv->stride, oh, ow, a, b);
            gemm_rows(cx, b - a, (size_t)cv->cout, K, rows, K, cv->weight, y + a * cv->cout, 0.0f, cv->bias, act);
        }
    }
    *oh_out = oh;
    *ow_out = ow;
}

/* The sampler over n images; threads share the n * h * w pixels. */
static void sample(const ctx *cx, const float *v, const float *off, float *u, int n, int h, int w, int c,
                   int groups)
{
    size_t pixels = (size_t)h * w;
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (int t = 0; t < cx->threads; t++) {
        size_t q0, q1;
        share((size_t)n * pixels, cx->threads, t, &q0, &q1);
        while (q0 < q1) { /* one call per image the share touches */
            size_t img = q0 / pixels, p0 = q0 % pixels, p1 = p0 + (q1 - q0) < pixels ? p0 + (q1 - q0) : pixels;
            cx->k->sample(v + img * pixels * c, off + img * pixels * 2 * groups, u + img * pixels * c, h, w, c,
                          groups, p0, p1);
            q0 += p1 - p0;
        }
    }
}

/* The selective scan of each image along its row-major pixel sequence.  The
 * channels are independent, so threads take blocks of channels; when there
 * are too few blocks to share (a small batch of narrow images), threads
 * split each image's sequence into chunks instead.  decay is [P][C] scratch
 * for the chunked scan. */
static void scan(const ctx *cx, const dm_block *blk, const float *u, const float *delta, const float *dbl,
                 int rank, float *y, float *state, float *chunk_state, float *decay, int n, size_t L, size_t C)
{
    const size_t cblock = 16;
    size_t per_image = (C + cblock - 1) / cblock;
    memset(state, 0, sizeof(float) * n * C);
    dm_scan_args args = {
        .bc_stride = (size_t)rank + 2, .a = blk->a, .d = blk->d, .dt_bias = blk->dt_bias, .channels = C,
    };
    if (cx->threads > 1 && n * per_image < 2 * (size_t)cx->threads) {
        size_t chunks = (size_t)cx->threads < SCAN_MAX_CHUNKS ? (size_t)cx->threads : SCAN_MAX_CHUNKS;
        for (int img = 0; img < n; img++) {
            args.u = u + img * L * C;
            args.delta = delta + img * L * C;
            args.bc = dbl + img * L * (rank + 2) + rank;
            dm_scan_chunked(cx->k, &args, L, chunks, cx->threads, state + img * C, chunk_state,
                            decay + img * L * C, y + img * L * C);
        }
        return;
    }
#pragma omp parallel for num_threads(cx->threads) schedule(static) firstprivate(args)
    for (long i = 0; i < (long)(n * per_image); i++) {
        size_t img = (size_t)i / per_image, c0 = ((size_t)i % per_image) * cblock;
        size_t c1 = c0 + cblock < C ? c0 + cblock : C;
        args.u = u + img * L * C;
        args.delta = delta + img * L * C;
        args.bc = dbl + img * L * (rank + 2) + rank;
        cx->k->scan(&args, 0, L, c0, c1, state + img * C, NULL, y + img * L * C);
    }
}

/* ------------------------------------------------------------------ model */

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

/* One block: x <- block(x), over n images of h x w. */
static void block_forward(const ctx *cx, const dm_config *cfg, int s, const dm_block *blk, dm_workspace *ws,
                          int n, int h, int w)
{
    size_t P = (size_t)n * h * w, L = (size_t)h * w;
    int C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];

    /* x = pos_embed(x): ResDWC, the identity folded into its kernel */
    dwconv(cx, ws->x, ws->t, n, h, w, C, blk->pos_w9, blk->pos_b, DM_ACT_NONE);
    swap(&ws->x, &ws->t);

    /* x = x + DASSM(norm1(x)) */
    layernorm(cx, ws->x, ws->t, P, C, blk->norm1_g, blk->norm1_b, DM_ACT_NONE);
    gemm_nt(cx, P, C, C, ws->t, C, blk->in_proj, ws->a, 0.0f, NULL, DM_ACT_NONE);
    dwconv(cx, ws->a, ws->v, n, h, w, C, blk->conv_w9, blk->conv_b, DM_ACT_SILU);
    /* offsets: Linear(GELU(LN(dwconv(t)))) -> (dx, dy) per pixel and group */
    dwconv(cx, ws->t, ws->ob, n, h, w, C, blk->off_dw_w9, blk->off_dw_b, DM_ACT_NONE);
    layernorm(cx, ws->ob, ws->ob, P, C, blk->off_ln_g, blk->off_ln_b, DM_ACT_GELU);
    gemm_nt(cx, P, 2 * G, C, ws->ob, C, blk->off_w, ws->off, 0.0f, blk->off_b, DM_ACT_NONE);
    if (cx->offsets) memcpy(cx->offsets, ws->off, sizeof(float) * P * 2 * G);
    /* the Dynamic Adaptive Scan: sample at the moved positions, keep order */
    sample(cx, ws->v, ws->off, ws->u, n, h, w, C, G);
    /* selective scan inputs: dt (R), B, C per pixel; delta = dt_projs @ dt */
    gemm_nt(cx, P, R + 2, C, ws->u, C, blk->x_proj, ws->dbl, 0.0f, NULL, DM_ACT_NONE);
    gemm_nt(cx, P, C, R, ws->dbl, R + 2, blk->dt_proj, ws->delta, 0.0f, NULL, DM_ACT_NONE);
    scan(cx, blk, ws->u, ws->delta, ws->dbl, R, ws->a, ws->state, ws->chunk_state, ws->ob, n, L, C);
    layernorm(cx, ws->a, ws->a, P, C, blk->out_norm_g, blk->out_norm_b, DM_ACT_NONE);
    /* residual add, layer scale folded */
    gemm_nt(cx, P, C, C, ws->a, C, blk->out_proj, ws->x, 1.0f, NULL, DM_ACT_NONE);

    /* x = x + ConvFFN(norm2(x)), norm2 folded into fc1 */
    gemm_nt(cx, P, F, C, ws->x, C, blk->fc1_w, ws->hid, 0.0f, blk->fc1_b, DM_ACT_GELU);
    dwconv(cx, ws->hid, ws->hid2, n, h, w, F, blk->mlp_w9, blk->mlp_b, DM_ACT_NONE);
    gemm_nt(cx, P, C, F, ws->hid2, F, blk->fc2_w, ws->x, 1.0f, blk->fc2_b, DM_ACT_NONE);
}

/* Channels-last [n][h*w][c] -> NCHW [n][c][h*w]. */
static void to_nchw(const ctx *cx, const float *x, float *out, int n, size_t hw, size_t c)
{
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (long i = 0; i < (long)(n * c); i++) {
        size_t img = (size_t)i / c, ch = (size_t)i % c;
        const float *src = x + img * hw * c + ch;
        float *dst = out + ((size_t)img * c + ch) * hw;
        for (size_t p = 0; p < hw; p++) dst[p] = src[p * c];
    }
}

static void to_nhwc(const ctx *cx, const float *in, float *x, int n, size_t hw, size_t c)
{
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (long i = 0; i < (long)(n * hw); i++) {
        size_t img = (size_t)i / hw, p = (size_t)i % hw;
        for (size_t ch = 0; ch < c; ch++) x[(size_t)i * c + ch] = in[(img * c + ch) * hw + p];
    }
}

dm_status dm_forward(const dm_model *model, dm_workspace *ws, const float *input, int n, int h, int w,
                     const dm_outputs *caller_outputs)
{
    if (!model || !ws || !input || !caller_outputs)
        return dm_fail(DM_ERR_ARGUMENT, "dm_forward: model, workspace, input and outputs are required");
    dm_outputs full_outputs;
    dm_status st = dm_struct_import(&full_outputs, sizeof full_outputs, caller_outputs, DM_OUTPUTS_MIN_SIZE,
                                    "dm_outputs");
    if (st != DM_OK) return st;
    const dm_outputs *outputs = &full_outputs;
    if (n < 1 || h < 1 || w < 1)
        return dm_fail(DM_ERR_ARGUMENT, "dm_forward: batch %d of %dx%d images is empty", n, h, w);
    if (n > ws->max_batch || h > ws->max_h || w > ws->max_w)
        return dm_fail(DM_ERR_ARGUMENT,
                       "dm_forward: batch %d of %dx%d images exceeds the workspace (batch %d, %dx%d)", n, h, w,
                       ws->max_batch, ws->max_h, ws->max_w);
    const dm_config *cfg = &model->config;
    if (outputs->logits && cfg->num_classes == 0)
        return dm_fail(DM_ERR_ARGUMENT, "dm_forward: logits requested but the model has no head");
    if (outputs->offsets &&
        (outputs->offsets_stage < 0 || outputs->offsets_stage >= DM_NUM_STAGES || outputs->offsets_block < 0 ||
         outputs->offsets_block >= cfg->depths[outputs->offsets_stage]))
        return dm_fail(DM_ERR_ARGUMENT, "dm_forward: no block %d in stage %d (the model has depths %d, %d, %d, %d)",
                       outputs->offsets_block, outputs->offsets_stage, cfg->depths[0], cfg->depths[1],
                       cfg->depths[2], cfg->depths[3]);
    if (ws->cuda) return dm_cuda_forward(model, ws->cuda, input, n, h, w, outputs);

    ctx cx = {NULL, dm_threads(), NULL};
    st = dm_kernels_require(&cx.k);
    if (st != DM_OK) return st;
    openblas_set_num_threads(1);

    to_nhwc(&cx, input, ws->t, n, (size_t)h * w, (size_t)cfg->in_chans);

    /* stem: conv-BN-GELU x3, conv-BN */
    int oh, ow;
    conv3x3(&cx, &model->stem[0], ws->t, ws->a, ws->cols, n, h, w, &oh, &ow, DM_ACT_GELU);
    conv3x3(&cx, &model->stem[1], ws->a, ws->v, ws->cols, n, oh, ow, &oh, &ow, DM_ACT_GELU);
    conv3x3(&cx, &model->stem[2], ws->v, ws->a, ws->cols, n, oh, ow, &oh, &ow, DM_ACT_GELU);
    conv3x3(&cx, &model->stem[3], ws->a, ws->x, ws->cols, n, oh, ow, &oh, &ow, DM_ACT_NONE);
    h = oh;
    w = ow;

    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_stage *stage = &model->stages[s];
        int C = cfg->dims[s];
        if (s > 0) {
            conv3x3(&cx, &stage->downsample, ws->x, ws->t, ws->cols, n, h, w, &oh, &ow, DM_ACT_NONE);
            swap(&ws->x, &ws->t);
            h = oh;
            w = ow;
        }
        for (int j = 0; j < cfg->depths[s]; j++) {
            int capture = outputs->offsets && outputs->offsets_stage == s && outputs->offsets_block == j;
            cx.offsets = capture ? outputs->offsets : NULL;
            block_forward(&cx, cfg, s, &stage->blocks[j], ws, n, h, w);
        }
        cx.offsets = NULL;
        size_t P = (size_t)n * h * w;
        layernorm(&cx, ws->x, ws->x, P, C, stage->norm_g, stage->norm_b, DM_ACT_NONE);
        if (outputs->stages[s]) to_nchw(&cx, ws->x, outputs->stages[s], n, (size_t)h * w, C);
    }

    if (outputs->logits) {
        size_t C = cfg->dims[3], hw3 = (size_t)h * w;
        for (int img = 0; img < n; img++) {
            float *pool = ws->pooled + img * C;
            memset(pool, 0, sizeof(float) * C);
            for (size_t p = 0; p < hw3; p++)
                for (size_t c = 0; c < C; c++) pool[c] += ws->x[(img * hw3 + p) * C + c];
            for (size_t c = 0; c < C; c++) pool[c] /= (float)hw3;
        }
        gemm_rows(&cx, n, cfg->num_classes, C, ws->pooled, C, model->head_w, outputs->logits, 0.0f, model->head_b,
                  DM_ACT_NONE);
    }
    return DM_OK;
}

dm_status dm_block_run(const dm_model *model, dm_workspace *ws, const float *input, float *output, int n, int h,
                       int w)
{
    if (n > ws->max_batch || 4 * h > ws->max_h || 4 * w > ws->max_w)
        return dm_fail(DM_ERR_ARGUMENT, "dm_block_run: input exceeds the workspace");
    if (ws->cuda) return dm_cuda_block_run(model, ws->cuda, input, output, n, h, w);
    ctx cx = {NULL, dm_threads(), NULL};
    dm_status st = dm_kernels_require(&cx.k);
    if (st != DM_OK) return st;
    openblas_set_num_threads(1);
    size_t hw = (size_t)h * w, C = model->config.dims[0];
    to_nhwc(&cx, input, ws->x, n, hw, C);
    block_forward(&cx, &model->config, 0, &model->stages[0].blocks[0], ws, n, h, w);
    to_nchw(&cx, ws->x, output, n, hw, C);
    return DM_OK;
}

/* ------------------------------------------------------------------ costs */

int64_t dm_model_macs(const dm_model *model, int h, int w)
{
    if (!model || h < 1 || w < 1) return 0;
    const dm_config *c = &model->config;
    int64_t macs = 0;
    for (int i = 0; i < 4; i++) {
        const dm_conv3x3 *cv = &model->stem[i];
        if (cv->stride == 2) { h = dm_down2(h); w = dm_down2(w); }
        macs += (int64_t)h * w * cv->cout * cv->cin * 9;
    }
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        if (s > 0) {
            h = dm_down2(h);
            w = dm_down2(w);
            macs += (int64_t)h * w * c->dims[s] * c->dims[s - 1] * 9;
        }
        int64_t P = (int64_t)h * w, C = c->dims[s], F = c->mlp_hidden[s], G = c->groups[s], R = c->dt_rank[s];
        int64_t block = P * (9 * C              /* pos_embed */
                             + C * C + 9 * C    /* in_proj, conv2d */
                             + 9 * C + 2 * G * C /* offset branch */
                             + 4 * C            /* bilinear sampler */
                             + (R + 2) * C + R * C /* x_proj, dt_projs */
                             + 3 * C            /* scan */
                             + C * C            /* out_proj */
                             + F * C + 9 * F + F * C); /* ConvFFN */
        macs += block * c->depths[s];
    }
    macs += (int64_t)c->num_classes * c->dims[3];
    return macs;
}
