/* backend.cu - the CUDA backend: a workspace that holds a device copy of one
 * model's folded parameters and every buffer a forward pass needs (planned
 * once, with the CPU's plan), and the forward pass itself, which reads like
 * src/forward.c operator for operator.  GEMMs go to cuBLAS in full float32.
 *
 * Two streams: the compute stream runs the model; the copy stream moves the
 * batch in (in chunks, each chunk's stem starting as soon as it has arrived)
 * and each requested stage output out while later stages compute, through
 * pinned host buffers so the copies are truly asynchronous. */
extern "C" {
#include "backend_cuda.h"
#include "workspace.h"
}
#include "kernels.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chunks the batch's copy-in is split into. */
#define INPUT_CHUNKS 4
/* Outputs copied back: four stages, the logits, one block's offsets. */
#define OUTPUTS (DM_NUM_STAGES + 2)
enum { OUTPUT_LOGITS = DM_NUM_STAGES, OUTPUT_OFFSETS };
/* cuBLAS scratch; NVIDIA's recommendation for Hopper. */
static const size_t blas_workspace_bytes = (size_t)32 << 20;

struct dm_cuda_workspace {
    const dm_model *model;   /* the model the parameters came from */
    int device;
    cudaStream_t compute, copy;
    cublasHandle_t blas;
    cudaEvent_t input_ready[INPUT_CHUNKS], output_ready[OUTPUTS], output_copied[OUTPUTS];
    /* The parameters: the host structs' shapes with device pointers. */
    dm_conv3x3 stem[4];
    dm_stage stages[DM_NUM_STAGES];
    float *head_w, *head_b;
    dm_block *blocks;        /* host array behind stages[].blocks */
    void *params;            /* device memory behind every parameter */
    /* Activations, named as the CPU workspace's; carry serves the scan. */
    float *x, *t, *a, *v, *ob, *u, *delta, *off, *dbl, *hid, *hid2, *cols, *carry, *pooled;
    float *input, *outputs[OUTPUTS]; /* NCHW batch in, the outputs out */
    void *blas_scratch;
    void *activations;       /* device memory behind all of the above */
    float *host_input, *host_outputs[OUTPUTS];
    void *pinned;            /* pinned host memory behind the host_ buffers */
    size_t bytes;            /* device bytes */
};

/* A failed runtime call as a status.  The runtime also keeps the failure
 * for cudaGetLastError; it is cleared here, so that it is not blamed on a
 * later call of the library or of the caller (a device fault stays: the
 * runtime keeps reporting those). */
static dm_status cuda_fail(cudaError_t e, const char *what)
{
    (void)cudaGetLastError();
    return dm_fail(e == cudaErrorMemoryAllocation ? DM_ERR_NOMEM : DM_ERR_DEVICE, "CUDA %s failed: %s (%s)", what,
                   cudaGetErrorName(e), cudaGetErrorString(e));
}

/* The same for cuBLAS, whose failed allocations also leave a runtime error. */
static dm_status blas_fail(cublasStatus_t s, const char *what)
{
    (void)cudaGetLastError();
    return dm_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? DM_ERR_NOMEM : DM_ERR_DEVICE, "cuBLAS %s failed: %s", what,
                   cublasGetStatusString(s));
}

#define CUDA_TRY(call)                                                  \
    do {                                                                \
        cudaError_t e_ = (call);                                        \
        if (e_ != cudaSuccess) return cuda_fail(e_, #call);             \
    } while (0)

dm_status dm_cuda_available(void)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return dm_fail(DM_ERR_UNSUPPORTED, "no usable CUDA device: cudaGetDeviceCount returned %s (%s)",
                       cudaGetErrorName(e), cudaGetErrorString(e));
    if (count < 1) return dm_fail(DM_ERR_UNSUPPORTED, "no CUDA device: cudaGetDeviceCount found %d", count);
    return DM_OK;
}

/* ----------------------------------------------------------------- memory */

/* Lays arrays out in one allocation, 256-byte aligned.  A first pass with
 * base == NULL only measures; the second, with base the allocation, hands
 * out addresses in it, and (for parameters) copies each array to the same
 * offset of a host staging block, uploaded in one go. */
typedef struct arena {
    char *base, *staging;
    size_t used;
} arena;

static float *reserve(arena *ar, size_t count)
{
    size_t at = ar->used;
    ar->used += (count * sizeof(float) + 255) & ~(size_t)255;
    return ar->base ? (float *)(ar->base + at) : NULL;
}

static float *place(arena *ar, const float *src, size_t count)
{
    if (!src) return NULL; /* absent in single-block test models */
    size_t at = ar->used;
    float *dst = reserve(ar, count);
    if (ar->staging) memcpy(ar->staging + at, src, count * sizeof(float));
    return dst;
}

/* ------------------------------------------------------------- parameters */

static void place_conv(arena *ar, const dm_conv3x3 *src, dm_conv3x3 *dst)
{
    *dst = *src;
    dst->weight = place(ar, src->weight, (size_t)src->cout * 9 * src->cin);
    dst->bias = place(ar, src->bias, (size_t)src->cout);
}

static void place_block(arena *ar, const dm_config *cfg, int s, const dm_block *b, dm_block *d)
{
    size_t C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];
    d->pos_w9 = place(ar, b->pos_w9, 9 * C);
    d->pos_b = place(ar, b->pos_b, C);
    d->norm1_g = place(ar, b->norm1_g, C);
    d->norm1_b = place(ar, b->norm1_b, C);
    d->in_proj = place(ar, b->in_proj, C * C);
    d->conv_w9 = place(ar, b->conv_w9, 9 * C);
    d->conv_b = place(ar, b->conv_b, C);
    d->off_dw_w9 = place(ar, b->off_dw_w9, 9 * C);
    d->off_dw_b = place(ar, b->off_dw_b, C);
    d->off_ln_g = place(ar, b->off_ln_g, C);
    d->off_ln_b = place(ar, b->off_ln_b, C);
    d->off_w = place(ar, b->off_w, 2 * G * C);
    d->off_b = place(ar, b->off_b, 2 * G);
    d->x_proj = place(ar, b->x_proj, (R + 2) * C);
    d->dt_proj = place(ar, b->dt_proj, C * R);
    d->dt_bias = place(ar, b->dt_bias, C);
    d->a = place(ar, b->a, C);
    d->d = place(ar, b->d, C);
    d->out_norm_g = place(ar, b->out_norm_g, C);
    d->out_norm_b = place(ar, b->out_norm_b, C);
    d->out_proj = place(ar, b->out_proj, C * C);
    d->fc1_w = place(ar, b->fc1_w, F * C);
    d->fc1_b = place(ar, b->fc1_b, F);
    d->mlp_w9 = place(ar, b->mlp_w9, 9 * F);
    d->mlp_b = place(ar, b->mlp_b, F);
    d->fc2_w = place(ar, b->fc2_w, C * F);
    d->fc2_b = place(ar, b->fc2_b, C);
}

static void place_model(arena *ar, const dm_model *m, dm_cuda_workspace *cw)
{
    const dm_config *cfg = &m->config;
    for (int i = 0; i < 4; i++) place_conv(ar, &m->stem[i], &cw->stem[i]);
    dm_block *next = cw->blocks;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_stage *src = &m->stages[s];
        dm_stage *dst = &cw->stages[s];
        place_conv(ar, &src->downsample, &dst->downsample);
        dst->blocks = src->blocks ? next : NULL;
        for (int j = 0; src->blocks && j < cfg->depths[s]; j++) place_block(ar, cfg, s, &src->blocks[j], next++);
        dst->norm_g = place(ar, src->norm_g, (size_t)cfg->dims[s]);
        dst->norm_b = place(ar, src->norm_b, (size_t)cfg->dims[s]);
    }
    cw->head_w = place(ar, m->head_w, (size_t)cfg->num_classes * cfg->dims[3]);
    cw->head_b = place(ar, m->head_b, (size_t)cfg->num_classes);
}

static dm_status upload_params(const dm_model *m, dm_cuda_workspace *cw)
{
    size_t blocks = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) blocks += (size_t)m->config.depths[s];
    if (!(cw->blocks = (dm_block *)calloc(blocks, sizeof(dm_block))))
        return dm_fail(DM_ERR_NOMEM, "out of memory for the CUDA parameter table");
    arena ar = {NULL, NULL, 0};
    place_model(&ar, m, cw);
    size_t bytes = ar.used;
    CUDA_TRY(cudaMalloc(&cw->params, bytes));
    cw->bytes += bytes;
    ar = (arena){(char *)cw->params, (char *)malloc(bytes), 0};
    if (!ar.staging) return dm_fail(DM_ERR_NOMEM, "out of memory staging %.1f MB of parameters", bytes / 1e6);
    place_model(&ar, m, cw);
    /* The forward pass's streams are not ordered after anything else, so
     * the upload completes here, before its first use. */
    cudaError_t e = cudaMemcpyAsync(cw->params, ar.staging, bytes, cudaMemcpyHostToDevice, cw->compute);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cw->compute);
    free(ar.staging);
    if (e != cudaSuccess) return cuda_fail(e, "upload of the parameters");
    return DM_OK;
}

/* ----------------------------------------------------------------- buffers */

/* Output pixels per im2col band: a column block of at most 128 MB. */
static size_t gpu_conv_band(int cin)
{
    size_t band = ((size_t)1 << 25) / (9 * (size_t)cin);
    return band ? band : 1;
}

static dm_status alloc_buffers(const dm_model *m, int n, int h, int w, dm_cuda_workspace *cw)
{
    const dm_config *cfg = &m->config;
    dm_plan pl;
    dm_plan_buffers(cfg, n, h, w, gpu_conv_band, &pl);
    size_t carry = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        size_t need = cu_scan_carry_floats(n, cfg->dims[s], (size_t)pl.stage_h[s] * pl.stage_w[s]);
        if (need > carry) carry = need;
    }
    size_t outputs[OUTPUTS] = {pl.stage[0], pl.stage[1], pl.stage[2], pl.stage[3], (size_t)n * cfg->num_classes,
                               pl.off};

    /* Measure, then lay the same buffers out in the real allocations. */
    arena dev = {NULL, NULL, 0}, pinned = {NULL, NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        dev.used = pinned.used = 0;
        float **slots[] = {&cw->x, &cw->t, &cw->a, &cw->v, &cw->ob, &cw->u, &cw->delta, &cw->off, &cw->dbl,
                           &cw->hid, &cw->hid2, &cw->cols, &cw->carry, &cw->pooled, &cw->input};
        size_t counts[] = {pl.x, pl.x, pl.a, pl.v, pl.ob, pl.u, pl.delta, pl.off, pl.dbl,
                           pl.hid, pl.hid, pl.cols, carry, pl.pooled, pl.input};
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) *slots[i] = reserve(&dev, counts[i]);
        for (int k = 0; k < OUTPUTS; k++) cw->outputs[k] = reserve(&dev, outputs[k]);
        cw->blas_scratch = reserve(&dev, blas_workspace_bytes / sizeof(float));
        cw->host_input = reserve(&pinned, pl.input);
        for (int k = 0; k < OUTPUTS; k++) cw->host_outputs[k] = reserve(&pinned, outputs[k]);
        if (pass == 0) {
            CUDA_TRY(cudaMalloc(&cw->activations, dev.used));
            CUDA_TRY(cudaMallocHost(&cw->pinned, pinned.used));
            cw->bytes += dev.used;
            dev.base = (char *)cw->activations;
            pinned.base = (char *)cw->pinned;
        }
    }
    return DM_OK;
}

/* DM_OK when the current device, device, can run this build's kernels
 * (the gpu_archs build option). */
static dm_status check_kernel_image(int device)
{
    cudaError_t e = cu_check_kernel_image();
    if (e == cudaSuccess) return DM_OK;
    cudaDeviceProp prop;
    if ((e != cudaErrorNoKernelImageForDevice && e != cudaErrorInvalidDeviceFunction) ||
        cudaGetDeviceProperties(&prop, device) != cudaSuccess)
        return cuda_fail(e, "check of the kernels against the device");
    (void)cudaGetLastError();
    return dm_fail(DM_ERR_UNSUPPORTED,
                   "CUDA device %d (%s) has compute capability %d.%d, which this build has no code for: it was built "
                   "for compute capabilities %s (the last also as PTX for newer devices); reconfigure with "
                   "-Dgpu_archs listing %d%d",
                   device, prop.name, prop.major, prop.minor, DM_CUDA_ARCHS, prop.major, prop.minor);
}

/* Make device current for one call of the library; the caller's current
 * device is restored by leave_device. */
static dm_status enter_device(int device, int *caller)
{
    CUDA_TRY(cudaGetDevice(caller));
    CUDA_TRY(cudaSetDevice(device));
    return DM_OK;
}

static void leave_device(int caller)
{
    if (cudaSetDevice(caller) != cudaSuccess) (void)cudaGetLastError();
}

static dm_status create(const dm_model *model, int max_batch, int max_h, int max_w, dm_cuda_workspace *cw)
{
    dm_status st = check_kernel_image(cw->device);
    if (st) return st;
    CUDA_TRY(cudaStreamCreateWithFlags(&cw->compute, cudaStreamNonBlocking));
    CUDA_TRY(cudaStreamCreateWithFlags(&cw->copy, cudaStreamNonBlocking));
    for (int k = 0; k < INPUT_CHUNKS; k++)
        CUDA_TRY(cudaEventCreateWithFlags(&cw->input_ready[k], cudaEventDisableTiming));
    for (int k = 0; k < OUTPUTS; k++) {
        CUDA_TRY(cudaEventCreateWithFlags(&cw->output_ready[k], cudaEventDisableTiming));
        CUDA_TRY(cudaEventCreateWithFlags(&cw->output_copied[k], cudaEventDisableTiming));
    }
    if ((st = upload_params(model, cw)) || (st = alloc_buffers(model, max_batch, max_h, max_w, cw))) return st;
    cublasStatus_t bs = cublasCreate(&cw->blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(cw->blas, cw->compute);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(cw->blas, cw->blas_scratch, blas_workspace_bytes);
    /* Full float32: TF32 tensor cores would round inputs to 10-bit mantissas. */
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(cw->blas, CUBLAS_DEFAULT_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(bs, "setup");
    cw->model = model;
    return DM_OK;
}

dm_status dm_cuda_workspace_create(const dm_model *model, int device, int max_batch, int max_h, int max_w,
                                   dm_cuda_workspace **out)
{
    *out = NULL;
    dm_status st = dm_cuda_available();
    if (st) return st;
    int count = 0, caller;
    CUDA_TRY(cudaGetDeviceCount(&count));
    if (device >= count)
        return dm_fail(DM_ERR_ARGUMENT, "no CUDA device %d: this machine has %d (0 to %d)", device, count, count - 1);
    if (device < 0) CUDA_TRY(cudaGetDevice(&device));
    if ((st = enter_device(device, &caller))) return st;
    dm_cuda_workspace *cw = (dm_cuda_workspace *)calloc(1, sizeof *cw);
    if (!cw) {
        leave_device(caller);
        return dm_fail(DM_ERR_NOMEM, "out of memory for a CUDA workspace");
    }
    cw->device = device;
    if ((st = create(model, max_batch, max_h, max_w, cw))) dm_cuda_workspace_free(cw);
    else *out = cw;
    leave_device(caller);
    return st;
}

void dm_cuda_workspace_free(dm_cuda_workspace *cw)
{
    if (!cw) return;
    int caller, entered = enter_device(cw->device, &caller) == DM_OK;
    if (cw->blas) cublasDestroy(cw->blas);
    /* cudaFree waits for work in flight on these buffers. */
    cudaFree(cw->activations);
    cudaFree(cw->params);
    cudaFreeHost(cw->pinned);
    for (int k = 0; k < INPUT_CHUNKS; k++)
        if (cw->input_ready[k]) cudaEventDestroy(cw->input_ready[k]);
    for (int k = 0; k < OUTPUTS; k++) {
        if (cw->output_ready[k]) cudaEventDestroy(cw->output_ready[k]);
        if (cw->output_copied[k]) cudaEventDestroy(cw->output_copied[k]);
    }
    if (cw->compute) cudaStreamDestroy(cw->compute);
    if (cw->copy) cudaStreamDestroy(cw->copy);
    free(cw->blocks);
    free(cw);
    if (entered) leave_device(caller);
}

size_t dm_cuda_workspace_bytes(const dm_cuda_workspace *cw) { return cw ? cw->bytes : 0; }

/* -------------------------------------------------------------- operators */

/* One forward pass's state: where it runs, the first launch that failed
 * (in q) and the first failure of a call that reports one at once
 * (cuBLAS, a copy). */
typedef struct run {
    dm_cuda_workspace *cw;
    cu_queue q;
    dm_status status;
    size_t copied[OUTPUTS]; /* floats of each output on its way to pinned memory */
    int capture_offsets;    /* copy out this block's offsets */
} run;

/* C[M][N] = A[M][K] (row stride lda) * B[N][K]^T + beta * C, row-major: in
 * cuBLAS's column-major terms C^T = B^T' * A^T. */
static void gemm_nt(run *r, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B, float *C,
                    float beta)
{
    const float one = 1.0f;
    cublasStatus_t st = cublasSgemm(r->cw->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B, (int)K,
                                    A, (int)lda, &beta, C, (int)N);
    if (st != CUBLAS_STATUS_SUCCESS && r->status == DM_OK) {
        char what[80];
        snprintf(what, sizeof what, "sgemm %zux%zux%zu", M, N, K);
        r->status = blas_fail(st, what);
    }
}

/* Dense 3x3 convolution (padding 1) as banded im2col + GEMM; y = act(conv). */
static void conv3x3(run *r, const dm_conv3x3 *cv, const float *x, float *y, int n, int h, int w, dm_act act)
{
    int oh = cv->stride == 2 ? dm_down2(h) : h, ow = cv->stride == 2 ? dm_down2(w) : w;
    size_t total = (size_t)n * oh * ow, band = gpu_conv_band(cv->cin), K = 9 * (size_t)cv->cin;
    for (size_t p0 = 0; p0 < total; p0 += band) {
        size_t p1 = p0 + band < total ? p0 + band : total;
        cu_im2col3x3(&r->q, x, r->cw->cols, h, w, cv->cin, cv->stride, oh, ow, p0, p1);
        gemm_nt(r, p1 - p0, (size_t)cv->cout, K, r->cw->cols, K, cv->weight, y + p0 * cv->cout, 0.0f);
    }
    cu_bias_act(&r->q, y, total, cv->cout, cv->bias, act);
}

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

/* Once the compute stream has produced output k, copy it to pinned memory
 * on the copy stream while computing goes on. */
static dm_status copy_out(run *r, int k, size_t floats)
{
    dm_cuda_workspace *cw = r->cw;
    r->copied[k] = floats;
    CUDA_TRY(cudaEventRecord(cw->output_ready[k], cw->compute));
    CUDA_TRY(cudaStreamWaitEvent(cw->copy, cw->output_ready[k], 0));
    CUDA_TRY(cudaMemcpyAsync(cw->host_outputs[k], cw->outputs[k], floats * sizeof(float), cudaMemcpyDeviceToHost,
                             cw->copy));
    CUDA_TRY(cudaEventRecord(cw->output_copied[k], cw->copy));
    return DM_OK;
}

/* ------------------------------------------------------------------ model */

/* One block: x <- block(x), over n images of h x w; forward.c's block_forward. */
static void block_forward(run *r, const dm_config *cfg, int s, const dm_block *blk, int n, int h, int w)
{
    dm_cuda_workspace *ws = r->cw;
    cu_queue *q = &r->q;
    size_t P = (size_t)n * h * w, L = (size_t)h * w;
    int C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];

    /* x = pos_embed(x): ResDWC, the identity folded into its kernel */
    cu_dwconv3x3(q, ws->x, ws->t, n, h, w, C, blk->pos_w9, blk->pos_b, DM_ACT_NONE);
    swap(&ws->x, &ws->t);

    /* x = x + DASSM(norm1(x)) */
    cu_layernorm(q, ws->x, ws->t, P, C, blk->norm1_g, blk->norm1_b, DM_ACT_NONE);
    gemm_nt(r, P, C, C, ws->t, C, blk->in_proj, ws->a, 0.0f);
    cu_dwconv3x3(q, ws->a, ws->v, n, h, w, C, blk->conv_w9, blk->conv_b, DM_ACT_SILU);
    /* offsets: Linear(GELU(LN(dwconv(t)))) -> (dx, dy) per pixel and group */
    cu_dwconv3x3(q, ws->t, ws->ob, n, h, w, C, blk->off_dw_w9, blk->off_dw_b, DM_ACT_NONE);
    cu_layernorm(q, ws->ob, ws->ob, P, C, blk->off_ln_g, blk->off_ln_b, DM_ACT_GELU);
    gemm_nt(r, P, 2 * G, C, ws->ob, C, blk->off_w, ws->off, 0.0f);
    cu_bias_act(q, ws->off, P, 2 * G, blk->off_b, DM_ACT_NONE);
    if (r->capture_offsets) {
        /* Kept from the next block's, and copied out while computing goes on. */
        size_t count = P * 2 * G;
        cudaError_t e = cudaMemcpyAsync(ws->outputs[OUTPUT_OFFSETS], ws->off, count * sizeof(float),
                                        cudaMemcpyDeviceToDevice, q->stream);
        dm_status st = e == cudaSuccess ? copy_out(r, OUTPUT_OFFSETS, count) : cuda_fail(e, "copy of the offsets");
        if (st && r->status == DM_OK) r->status = st;
    }
    /* the Dynamic Adaptive Scan: sample at the moved positions, keep order */
    cu_sample(q, ws->v, ws->off, ws->u, n, h, w, C, G);
    /* selective scan inputs: dt (R), B, C per pixel; delta = dt_projs @ dt */
    gemm_nt(r, P, R + 2, C, ws->u, C, blk->x_proj, ws->dbl, 0.0f);
    gemm_nt(r, P, C, R, ws->dbl, R + 2, blk->dt_proj, ws->delta, 0.0f);
    cu_scan_args args = {ws->u, ws->delta, ws->dbl + R, (size_t)R + 2, blk->a, blk->d, blk->dt_bias, n, C, L};
    cu_scan(q, &args, ws->carry, ws->a);
    cu_layernorm(q, ws->a, ws->a, P, C, blk->out_norm_g, blk->out_norm_b, DM_ACT_NONE);
    gemm_nt(r, P, C, C, ws->a, C, blk->out_proj, ws->x, 1.0f); /* residual add, layer scale folded */

    /* x = x + ConvFFN(norm2(x)), norm2 folded into fc1 */
    gemm_nt(r, P, F, C, ws->x, C, blk->fc1_w, ws->hid, 0.0f);
    cu_bias_act(q, ws->hid, P, F, blk->fc1_b, DM_ACT_GELU);
    cu_dwconv3x3(q, ws->hid, ws->hid2, n, h, w, F, blk->mlp_w9, blk->mlp_b, DM_ACT_NONE);
    gemm_nt(r, P, C, F, ws->hid2, F, blk->fc2_w, ws->x, 1.0f);
    cu_bias_act(q, ws->x, P, C, blk->fc2_b, DM_ACT_NONE);
}

/* The stem on images [i0, i0 + m) of the batch, whose NCHW input is on the
 * device: conv-BN-GELU x3, conv-BN into x. */
static void stem(run *r, const dm_config *cfg, int i0, int m, int h, int w)
{
    dm_cuda_workspace *ws = r->cw;
    int h1 = dm_down2(h), w1 = dm_down2(w), h2 = dm_down2(h1), w2 = dm_down2(w1);
    size_t in = (size_t)h * w * cfg->in_chans, s1 = (size_t)h1 * w1 * (cfg->dims[0] / 2);
    size_t s2 = (size_t)h2 * w2 * cfg->dims[0];
    cu_to_nhwc(&r->q, ws->input + i0 * in, ws->t + i0 * in, m, (size_t)h * w, cfg->in_chans);
    conv3x3(r, &ws->stem[0], ws->t + i0 * in, ws->a + i0 * s1, m, h, w, DM_ACT_GELU);
    conv3x3(r, &ws->stem[1], ws->a + i0 * s1, ws->v + i0 * s1, m, h1, w1, DM_ACT_GELU);
    conv3x3(r, &ws->stem[2], ws->v + i0 * s1, ws->a + i0 * s2, m, h1, w1, DM_ACT_GELU);
    conv3x3(r, &ws->stem[3], ws->a + i0 * s2, ws->x + i0 * s2, m, h2, w2, DM_ACT_NONE);
}

/* Enqueue the whole forward pass; outputs land in the pinned buffers. */
static dm_status enqueue_forward(run *r, const float *input, int n, int h, int w, const dm_outputs *outputs)
{
    dm_cuda_workspace *cw = r->cw;
    const dm_config *cfg = &cw->model->config;
    size_t image = (size_t)cfg->in_chans * h * w;
    int per_chunk = (n + INPUT_CHUNKS - 1) / INPUT_CHUNKS;
    for (int i0 = 0, k = 0; i0 < n; i0 += per_chunk, k++) {
        int m = per_chunk < n - i0 ? per_chunk : n - i0;
        size_t bytes = (size_t)m * image * sizeof(float);
        memcpy(cw->host_input + i0 * image, input + i0 * image, bytes);
        CUDA_TRY(cudaMemcpyAsync(cw->input + i0 * image, cw->host_input + i0 * image, bytes, cudaMemcpyHostToDevice,
                                 cw->copy));
        CUDA_TRY(cudaEventRecord(cw->input_ready[k], cw->copy));
        CUDA_TRY(cudaStreamWaitEvent(cw->compute, cw->input_ready[k], 0));
        stem(r, cfg, i0, m, h, w);
    }
    h = dm_down2(dm_down2(h));
    w = dm_down2(dm_down2(w));

    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_stage *stage = &cw->stages[s];
        int C = cfg->dims[s];
        if (s > 0) {
            conv3x3(r, &stage->downsample, cw->x, cw->t, n, h, w, DM_ACT_NONE);
            swap(&cw->x, &cw->t);
            h = dm_down2(h);
            w = dm_down2(w);
        }
        for (int j = 0; j < cfg->depths[s]; j++) {
            r->capture_offsets = outputs->offsets && outputs->offsets_stage == s && outputs->offsets_block == j;
            block_forward(r, cfg, s, &stage->blocks[j], n, h, w);
        }
        size_t P = (size_t)n * h * w;
        cu_layernorm(&r->q, cw->x, cw->x, P, C, stage->norm_g, stage->norm_b, DM_ACT_NONE);
        if (outputs->stages[s]) {
            cu_to_nchw(&r->q, cw->x, cw->outputs[s], n, (size_t)h * w, C);
            dm_status st = copy_out(r, s, P * C);
            if (st) return st;
        }
    }

    if (outputs->logits) {
        int C = cfg->dims[3], classes = cfg->num_classes;
        float *logits = cw->outputs[OUTPUT_LOGITS];
        cu_mean_pool(&r->q, cw->x, cw->pooled, n, (size_t)h * w, C);
        gemm_nt(r, (size_t)n, (size_t)classes, (size_t)C, cw->pooled, (size_t)C, cw->head_w, logits, 0.0f);
        cu_bias_act(&r->q, logits, (size_t)n, classes, cw->head_b, DM_ACT_NONE);
        return copy_out(r, OUTPUT_LOGITS, (size_t)n * classes);
    }
    return DM_OK;
}

/* Wait for both streams, whatever happened, so that no work of this call
 * outlives it; report the first failure: of queueing work, of a launch or a
 * call, then of the device while it ran the work. */
static dm_status finish(run *r, dm_status st)
{
    cudaError_t copy = cudaStreamSynchronize(r->cw->copy), compute = cudaStreamSynchronize(r->cw->compute);
    if (st) return st;
    if (r->status) return r->status;
    if (r->q.error != cudaSuccess) {
        char what[80];
        snprintf(what, sizeof what, "launch of kernel %s", r->q.failed_kernel);
        return cuda_fail(r->q.error, what);
    }
    if (compute != cudaSuccess) return cuda_fail(compute, "device, running the forward pass,");
    if (copy != cudaSuccess) return cuda_fail(copy, "device, copying to or from the host,");
    return DM_OK;
}

/* Start a call on the workspace's device.  An error the runtime still holds
 * from before (a failed call of the caller's) would be blamed on this call's
 * first launch, so it is cleared. */
static dm_status begin(const dm_model *model, dm_cuda_workspace *cw, run *r, int *caller)
{
    if (model != cw->model)
        return dm_fail(DM_ERR_ARGUMENT, "this CUDA workspace holds the parameters of another model; "
                                        "create one with dm_workspace_create_on for this model");
    dm_status st = enter_device(cw->device, caller);
    if (st) return st;
    (void)cudaGetLastError();
    *r = (run){cw, {cw->compute, cudaSuccess, NULL}, DM_OK, {0}, 0};
    return DM_OK;
}

dm_status dm_cuda_forward(const dm_model *model, dm_cuda_workspace *cw, const float *input, int n, int h, int w,
                          const dm_outputs *outputs)
{
    run r;
    int caller;
    dm_status st = begin(model, cw, &r, &caller);
    if (st) return st;
    st = enqueue_forward(&r, input, n, h, w, outputs);
    /* Hand each output over as soon as its copy is done, while the device
     * may still be computing later ones. */
    float *dst[OUTPUTS] = {outputs->stages[0], outputs->stages[1], outputs->stages[2], outputs->stages[3],
                           outputs->logits, outputs->offsets};
    for (int k = 0; k < OUTPUTS && !st; k++) {
        if (!dst[k]) continue;
        cudaError_t e = cudaEventSynchronize(cw->output_copied[k]);
        if (e != cudaSuccess) st = cuda_fail(e, "copy of the outputs");
        else memcpy(dst[k], cw->host_outputs[k], r.copied[k] * sizeof(float));
    }
    st = finish(&r, st);
    leave_device(caller);
    return st;
}

dm_status dm_cuda_block_run(const dm_model *model, dm_cuda_workspace *cw, const float *input, float *output, int n,
                            int h, int w)
{
    run r;
    int caller;
    dm_status st = begin(model, cw, &r, &caller);
    if (st) return st;
    size_t hw = (size_t)h * w, C = (size_t)model->config.dims[0], bytes = (size_t)n * hw * C * sizeof(float);
    cudaError_t e = cudaMemcpyAsync(cw->t, input, bytes, cudaMemcpyHostToDevice, cw->compute);
    if (e == cudaSuccess) {
        cu_to_nhwc(&r.q, cw->t, cw->x, n, hw, (int)C);
        block_forward(&r, &model->config, 0, &cw->stages[0].blocks[0], n, h, w);
        cu_to_nchw(&r.q, cw->x, cw->t, n, hw, (int)C);
        e = cudaMemcpyAsync(output, cw->t, bytes, cudaMemcpyDeviceToHost, cw->compute);
    }
    st = finish(&r, e == cudaSuccess ? DM_OK : cuda_fail(e, "copy of the block's input or output"));
    leave_device(caller);
    return st;
}
