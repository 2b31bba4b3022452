/* backend.cu - the operator table (ops.h) on the GPU.  GEMMs go to cuBLAS
 * in full float32, through cublasLt where its epilogue can add the bias and
 * apply the activation; the other operators are the kernels of kernels.cu.
 * No model logic lives here: src/graph/ calls these entries.
 *
 * Two streams: the compute stream runs the operators; the copy stream
 * moves the batch in (input() of each piece, so a piece's first operators
 * start as soon as it has arrived) and each output out while later
 * operators compute, through pinned host memory so the copies are truly
 * asynchronous. */
extern "C" {
#include "backends.h"
}
#include "kernels.cuh"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pieces a batch is brought in as. */
#define INPUT_PIECES 4
/* cuBLAS's and cublasLt's scratch (one stream: they never overlap);
 * NVIDIA's recommendation for Hopper. */
static const size_t blas_workspace_bytes = (size_t)32 << 20;

/* An output on its way to the caller: from pinned memory once `copied`. */
typedef struct pending {
    float *host;
    const float *pinned;
    size_t floats;
    cudaEvent_t copied;
} pending;

typedef struct gpu {
    int device;
    int caller_device;     /* current when begin() was called; finish() restores it */
    cu_queue compute;      /* the operators' stream, its first failed launch */
    cudaStream_t copy;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    cublasLtMatmulPreference_t lt_preference; /* its workspace limit */
    const dm_model *source; /* the model params copies */
    dm_model params;       /* its structure, device pointers */
    void *param_memory;    /* device memory behind params */
    size_t param_bytes;
    float *scratch;        /* im2col bands; the scan's carries */
    size_t scratch_floats;
    void *blas_scratch;
    /* Transfers: the same offsets in device and pinned staging, handed out
     * in order during a pass. */
    float *staging, *pinned;
    size_t staging_floats, staged;
    cudaEvent_t *events;   /* two per output, one per input piece */
    int event_count, events_used;
    pending *pendings;
    int pending_count, pending_cap;
    dm_status status;      /* the pass's first failure */
    dm_pool *host;         /* threads for the graph's work on host memory */
} gpu;

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

/* Record the first failure of a pass (finish() returns it); later ones
 * are dropped, the runtime's copy included. */
static void note(gpu *g, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return;
    if (g->status == DM_OK) g->status = cuda_fail(e, what);
    else (void)cudaGetLastError();
}

/* Make device current for one entry of the table; leave_device restores
 * the caller's current device. */
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

/* ------------------------------------------------------------- parameters */

/* Lays parameters out in one allocation, 256-byte aligned.  A first pass
 * with base == NULL only measures; the second, with base the allocation,
 * hands out addresses in it and copies each array to the same offset of a
 * host staging block, uploaded in one go.  Product weights, which the
 * model holds packed for the CPU's kernels, go up as cuBLAS reads them:
 * [n][k]. */
typedef struct arena {
    char *base, *staging;
    size_t used;
} arena;

static float *place(void *ctx, const float *src, size_t floats, const dm_product *product)
{
    arena *ar = (arena *)ctx;
    size_t at = ar->used;
    if (product) floats = product->n * product->k;
    ar->used += (floats * sizeof(float) + 255) & ~(size_t)255;
    if (ar->staging && product) dm_unpack_panels(src, product->n, product->k, (float *)(ar->staging + at));
    else if (ar->staging) memcpy(ar->staging + at, src, floats * sizeof(float));
    return ar->base ? (float *)(ar->base + at) : NULL;
}

static dm_status upload_params(const dm_model *m, gpu *g)
{
    if (!m) return DM_OK;
    arena ar = {NULL, NULL, 0};
    dm_status st = dm_model_mirror(m, place, &ar, &g->params);
    dm_model_mirror_free(&g->params);
    if (st) return st;
    size_t bytes = ar.used;
    CUDA_TRY(cudaMalloc(&g->param_memory, bytes ? bytes : 1));
    g->param_bytes = bytes;
    ar = (arena){(char *)g->param_memory, (char *)malloc(bytes ? bytes : 1), 0};
    if (!ar.staging) return dm_fail(DM_ERR_NOMEM, "out of memory staging %.1f MB of parameters", bytes / 1e6);
    if ((st = dm_model_mirror(m, place, &ar, &g->params))) {
        free(ar.staging);
        return st;
    }
    /* The pass's streams are ordered after nothing else (non-blocking), so
     * the upload completes here, before its first use. */
    cudaError_t e = cudaMemcpyAsync(g->param_memory, ar.staging, bytes, cudaMemcpyHostToDevice, g->compute.stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->compute.stream);
    free(ar.staging);
    if (e != cudaSuccess) return cuda_fail(e, "upload of the parameters");
    return DM_OK;
}

/* --------------------------------------------------------- memory, passes */

/* Output pixels per im2col band: a column block of at most 128 MB. */
static size_t conv_band(int cin)
{
    size_t band = ((size_t)1 << 25) / (9 * (size_t)cin);
    return band ? band : 1;
}

static size_t gpu_conv3x3_scratch(void *, size_t out_pixels, int cin)
{
    size_t band = conv_band(cin);
    return (band < out_pixels ? band : out_pixels) * 9 * (size_t)cin;
}

static size_t gpu_scan_scratch(void *, int n, size_t steps, int c) { return cu_scan_carry_floats(n, c, steps); }

/* Grows what reserve() planned: the scratch, the staging of transfers, the
 * events and pending outputs.  Only between passes (nothing in flight). */
static dm_status reserve(gpu *g, size_t scratch_floats, size_t transfer_floats, int outputs)
{
    if (!g->scratch || scratch_floats > g->scratch_floats) {
        cudaFree(g->scratch);
        g->scratch = NULL;
        g->scratch_floats = 0;
        CUDA_TRY(cudaMalloc(&g->scratch, (scratch_floats ? scratch_floats : 1) * sizeof(float)));
        g->scratch_floats = scratch_floats;
    }
    /* Each transfer rounded up to 256 bytes, as staged. */
    size_t staging = transfer_floats + 64 * (size_t)(outputs + INPUT_PIECES);
    if (staging > g->staging_floats) {
        cudaFree(g->staging);
        cudaFreeHost(g->pinned);
        g->staging = g->pinned = NULL;
        g->staging_floats = 0;
        CUDA_TRY(cudaMalloc(&g->staging, staging * sizeof(float)));
        CUDA_TRY(cudaMallocHost(&g->pinned, staging * sizeof(float)));
        g->staging_floats = staging;
    }
    int events = 2 * outputs + INPUT_PIECES;
    if (events > g->event_count) {
        cudaEvent_t *grown = (cudaEvent_t *)realloc(g->events, (size_t)events * sizeof(cudaEvent_t));
        pending *pendings = grown ? (pending *)realloc(g->pendings, (size_t)outputs * sizeof(pending)) : NULL;
        if (grown) g->events = grown;
        if (pendings) g->pendings = pendings;
        if (!grown || !pendings) return dm_fail(DM_ERR_NOMEM, "out of memory for the CUDA transfers");
        g->pending_cap = outputs;
        for (; g->event_count < events; g->event_count++)
            CUDA_TRY(cudaEventCreateWithFlags(&g->events[g->event_count], cudaEventDisableTiming));
    }
    return DM_OK;
}

/* The entries outside a pass (reserve, alloc, release, destroy) make the
 * workspace's device current and restore the caller's. */
static dm_status gpu_reserve(void *ctx, size_t scratch_floats, size_t transfer_floats, int outputs)
{
    gpu *g = (gpu *)ctx;
    int caller;
    dm_status st = enter_device(g->device, &caller);
    if (st) return st;
    st = reserve(g, scratch_floats, transfer_floats, outputs);
    leave_device(caller);
    return st;
}

static float *gpu_alloc(void *ctx, size_t floats)
{
    int caller;
    if (enter_device(((gpu *)ctx)->device, &caller)) return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, (floats ? floats : 1) * sizeof(float));
    if (e != cudaSuccess) (void)cudaGetLastError(); /* the caller reports it */
    leave_device(caller);
    return e == cudaSuccess ? (float *)p : NULL;
}

/* cudaFree waits for work in flight on the memory.  Freed even when the
 * device cannot be made current (after a fault), as destroy() does. */
static void gpu_release(void *ctx, float *p)
{
    int caller, entered = enter_device(((gpu *)ctx)->device, &caller) == DM_OK;
    cudaFree(p);
    if (entered) leave_device(caller);
}

static const dm_model *gpu_params(void *ctx, const dm_model *model)
{
    gpu *g = (gpu *)ctx;
    return model == g->source ? &g->params : NULL;
}

static size_t gpu_held_bytes(void *ctx)
{
    const gpu *g = (const gpu *)ctx;
    return g->param_bytes + (g->scratch_floats + g->staging_floats) * sizeof(float) +
           (g->blas_scratch ? blas_workspace_bytes : 0);
}

static void gpu_destroy(void *ctx)
{
    gpu *g = (gpu *)ctx;
    if (!g) return;
    int caller, entered = enter_device(g->device, &caller) == DM_OK;
    if (g->blas) cublasDestroy(g->blas);
    if (g->lt_preference) cublasLtMatmulPreferenceDestroy(g->lt_preference);
    if (g->lt) cublasLtDestroy(g->lt);
    cudaFree(g->blas_scratch);
    cudaFree(g->scratch);
    cudaFree(g->staging);
    cudaFree(g->param_memory);
    cudaFreeHost(g->pinned);
    for (int k = 0; k < g->event_count; k++)
        if (g->events[k]) cudaEventDestroy(g->events[k]);
    if (g->compute.stream) cudaStreamDestroy(g->compute.stream);
    if (g->copy) cudaStreamDestroy(g->copy);
    dm_model_mirror_free(&g->params);
    dm_pool_destroy(g->host);
    free(g->events);
    free(g->pendings);
    free(g);
    if (entered) leave_device(caller);
}

static dm_status gpu_begin(void *ctx)
{
    gpu *g = (gpu *)ctx;
    dm_status st = enter_device(g->device, &g->caller_device);
    if (st) return st;
    /* An error the runtime still holds from before (a failed call of the
     * caller's) would be blamed on the pass's first launch. */
    (void)cudaGetLastError();
    g->status = DM_OK;
    g->compute.error = cudaSuccess;
    g->compute.failed_kernel = NULL;
    g->staged = 0;
    g->events_used = 0;
    g->pending_count = 0;
    return DM_OK;
}

/* Hand each output over as soon as its copy is done, then wait for both
 * streams whatever happened, so that no work of the pass outlives it.
 * Report the first failure: of queueing work, of a launch, then of the
 * device while it ran the work.  The caller's device is current again. */
static dm_status gpu_finish(void *ctx)
{
    gpu *g = (gpu *)ctx;
    cudaError_t copied = cudaSuccess;
    for (int k = 0; k < g->pending_count && g->status == DM_OK && copied == cudaSuccess; k++) {
        const pending *p = &g->pendings[k];
        if ((copied = cudaEventSynchronize(p->copied)) == cudaSuccess)
            memcpy(p->host, p->pinned, p->floats * sizeof(float));
    }
    cudaError_t copy = cudaStreamSynchronize(g->copy), compute = cudaStreamSynchronize(g->compute.stream);
    if (g->status == DM_OK && g->compute.error != cudaSuccess) {
        char what[80];
        snprintf(what, sizeof what, "launch of kernel %s", g->compute.failed_kernel);
        g->status = cuda_fail(g->compute.error, what);
    }
    note(g, compute, "device, running the operators,");
    note(g, copied != cudaSuccess ? copied : copy, "device, copying to or from the host,");
    leave_device(g->caller_device);
    return g->status;
}

/* The next `floats` of staging (device and pinned at the same offset) and
 * an event, or NULL (noted) when the pass outgrows what reserve() planned. */
static float *stage(gpu *g, size_t floats, float **pinned)
{
    size_t rounded = (floats + 63) & ~(size_t)63;
    if (g->staged + rounded > g->staging_floats) {
        if (g->status == DM_OK)
            g->status = dm_fail(DM_ERR_UNSUPPORTED, "CUDA transfers of a pass exceed the %zu floats planned",
                                g->staging_floats);
        return NULL;
    }
    *pinned = g->pinned + g->staged;
    float *dev = g->staging + g->staged;
    g->staged += rounded;
    return dev;
}

static cudaEvent_t next_event(gpu *g)
{
    if (g->events_used < g->event_count) return g->events[g->events_used++];
    if (g->status == DM_OK) g->status = dm_fail(DM_ERR_UNSUPPORTED, "a pass has more CUDA transfers than planned");
    return NULL;
}

/* ------------------------------------------------------------- transfers */

static void gpu_input(void *ctx, const float *host, dm_layout layout, dm_view dst)
{
    gpu *g = (gpu *)ctx;
    size_t floats = dm_view_floats(dst);
    float *pinned = NULL, *dev = stage(g, floats, &pinned);
    cudaEvent_t ready = next_event(g);
    if (!dev || !ready) return;
    memcpy(pinned, host, floats * sizeof(float));
    note(g, cudaMemcpyAsync(dev, pinned, floats * sizeof(float), cudaMemcpyHostToDevice, g->copy), "input copy");
    note(g, cudaEventRecord(ready, g->copy), "input event");
    note(g, cudaStreamWaitEvent(g->compute.stream, ready, 0), "input wait");
    if (layout == DM_LAYOUT_NCHW) cu_to_nhwc(&g->compute, dev, dst.data, dst.n, (size_t)dst.h * dst.w, dst.c);
    else note(g, cudaMemcpyAsync(dst.data, dev, floats * sizeof(float), cudaMemcpyDeviceToDevice, g->compute.stream),
              "input copy");
}

static void gpu_output(void *ctx, dm_view src, dm_layout layout, float *host)
{
    gpu *g = (gpu *)ctx;
    size_t floats = dm_view_floats(src);
    float *pinned = NULL, *dev = stage(g, floats, &pinned);
    cudaEvent_t ready = next_event(g), copied = next_event(g);
    if (!dev || !ready || !copied) return;
    if (g->pending_count == g->pending_cap) {
        if (g->status == DM_OK) g->status = dm_fail(DM_ERR_UNSUPPORTED, "a pass has more outputs than planned");
        return;
    }
    if (layout == DM_LAYOUT_NCHW) cu_to_nchw(&g->compute, src.data, dev, src.n, (size_t)src.h * src.w, src.c);
    else note(g, cudaMemcpyAsync(dev, src.data, floats * sizeof(float), cudaMemcpyDeviceToDevice, g->compute.stream),
              "output copy");
    note(g, cudaEventRecord(ready, g->compute.stream), "output event");
    note(g, cudaStreamWaitEvent(g->copy, ready, 0), "output wait");
    note(g, cudaMemcpyAsync(pinned, dev, floats * sizeof(float), cudaMemcpyDeviceToHost, g->copy), "output copy");
    note(g, cudaEventRecord(copied, g->copy), "output event");
    g->pendings[g->pending_count++] = (pending){host, pinned, floats, copied};
}

/* ------------------------------------------------------------- operators */

/* The cublasLt epilogue for a bias, and in *rest the activation it leaves
 * to a pass: cublasLt's GELU is the tanh approximation, not the exact erf
 * the model uses, it has no SiLU, and its ReLU makes NaN 0 where
 * PyTorch's keeps it. */
static cublasLtEpilogue_t epilogue_of(const float *bias, dm_act act, dm_act *rest)
{
    *rest = act;
    return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

/* The largest power of two up to 256 that divides p's address: unless told
 * otherwise, cublasLt's heuristic picks algorithms for 256-byte aligned
 * operands, and a GEMM's operands may start inside a buffer (a band of a
 * convolution's output). */
static uint32_t alignment_of(const void *p)
{
    uintptr_t a = (uintptr_t)p & (~(uintptr_t)p + 1); /* the lowest set bit */
    return a == 0 || a > 256 ? 256 : (uint32_t)a;
}

/* gpu_gemm's product by cublasLt with an epilogue, in the same
 * column-major terms as the cublasSgemm call there.
 * CUBLAS_STATUS_NOT_SUPPORTED when cublasLt has no algorithm for it. */
static cublasStatus_t lt_gemm(gpu *g, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *W,
                              float beta, const float *bias, cublasLtEpilogue_t epilogue, float *C)
{
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t w = NULL, a = NULL, c = NULL;
    int32_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    uint32_t ep = epilogue;
    const float one = 1.0f;
    cublasLtMatmulHeuristicResult_t best;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa);
    if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb);
    if (!st) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
    if (!st && bias) st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    if (!st) st = cublasLtMatrixLayoutCreate(&w, CUDA_R_32F, K, N, (int64_t)K);
    if (!st) st = cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, K, M, (int64_t)lda);
    if (!st) st = cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, N, M, (int64_t)N);
    static const cublasLtMatmulPreferenceAttributes_t aligned[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const void *operands[4] = {W, A, C, C};
    for (int k = 0; k < 4 && !st; k++) {
        uint32_t bytes = alignment_of(operands[k]);
        st = cublasLtMatmulPreferenceSetAttribute(g->lt_preference, aligned[k], &bytes, sizeof bytes);
    }
    if (!st) st = cublasLtMatmulAlgoGetHeuristic(g->lt, desc, w, a, c, c, g->lt_preference, 1, &best, &found);
    if (!st && found < 1) st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (!st)
        st = cublasLtMatmul(g->lt, desc, &one, W, w, A, a, &beta, C, c, C, c, &best.algo, g->blas_scratch,
                            blas_workspace_bytes, g->compute.stream);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (w) cublasLtMatrixLayoutDestroy(w);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return st;
}

/* C[M][N] = A[M][K] (row stride lda) * W[N][K]^T + beta * C, row-major: in
 * cuBLAS's column-major terms C^T = W^T' * A^T.  The bias, and a ReLU, go
 * in cublasLt's epilogue; what it cannot do (another activation, or all of
 * it when it has no algorithm for the problem) in one pass after. */
static void gpu_gemm(void *ctx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *W, float beta,
                     const float *bias, dm_act act, float *C)
{
    gpu *g = (gpu *)ctx;
    dm_act rest;
    cublasLtEpilogue_t epilogue = epilogue_of(bias, act, &rest);
    cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
    const char *call = "cublasLt matmul";
    if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) st = lt_gemm(g, M, N, K, A, lda, W, beta, bias, epilogue, C);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
        const float one = 1.0f;
        st = cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, W, (int)K, A, (int)lda,
                         &beta, C, (int)N);
        call = "sgemm";
        rest = act;
    } else {
        bias = NULL; /* added by the epilogue */
    }
    if (st != CUBLAS_STATUS_SUCCESS) {
        char what[80];
        snprintf(what, sizeof what, "%s %zux%zux%zu", call, M, N, K);
        dm_status failed = blas_fail(st, what);
        if (g->status == DM_OK) g->status = failed;
    }
    if (bias || rest != DM_ACT_NONE) cu_bias_act(&g->compute, C, M, (int)N, bias, rest);
}

/* Banded im2col + GEMM, each band's GEMM with the bias and activation. */
static void gpu_conv3x3(void *ctx, const dm_conv3x3 *cv, dm_view x, dm_act act, dm_view y)
{
    gpu *g = (gpu *)ctx;
    size_t total = dm_view_pixels(y), band = conv_band(cv->cin), K = 9 * (size_t)cv->cin;
    for (size_t p0 = 0; p0 < total; p0 += band) {
        size_t p1 = p0 + band < total ? p0 + band : total;
        cu_im2col3x3(&g->compute, x.data, g->scratch, x.h, x.w, cv->cin, cv->stride, cv->pad, y.h, y.w, p0, p1);
        gpu_gemm(g, p1 - p0, (size_t)cv->cout, K, g->scratch, K, cv->weight, 0.0f, cv->bias, act,
                 y.data + p0 * cv->cout);
    }
}

static void gpu_dwconv3x3(void *ctx, dm_view x, const float *w9, const float *bias, dm_act act, dm_view y)
{
    cu_dwconv3x3(&((gpu *)ctx)->compute, x.data, y.data, x.n, x.h, x.w, x.c, w9, bias, act);
}

static void gpu_layernorm(void *ctx, dm_view x, const float *gamma, const float *beta, dm_act act, dm_view y)
{
    cu_layernorm(&((gpu *)ctx)->compute, x.data, y.data, dm_view_pixels(x), x.c, gamma, beta, act);
}

static void gpu_bias_act(void *ctx, dm_view y, const float *bias, dm_act act)
{
    cu_bias_act(&((gpu *)ctx)->compute, y.data, dm_view_pixels(y), y.c, bias, act);
}

static void gpu_sample(void *ctx, dm_view v, const float *offsets, int groups, dm_view u)
{
    cu_sample(&((gpu *)ctx)->compute, v.data, offsets, u.data, v.n, v.h, v.w, v.c, groups);
}

static void gpu_scan(void *ctx, const dm_scan_inputs *in, dm_view y)
{
    gpu *g = (gpu *)ctx;
    cu_scan_args args = {in->u.data, in->delta, in->bc, in->bc_stride, in->a, in->d, in->dt_bias,
                         in->u.n, in->u.c, (size_t)in->u.h * in->u.w};
    cu_scan(&g->compute, &args, g->scratch, y.data);
}

static void gpu_avg_pool(void *ctx, dm_view x, dm_view y)
{
    cu_avg_pool(&((gpu *)ctx)->compute, x.data, x.n, x.h, x.w, x.c, y.data, y.h, y.w);
}

static void gpu_max_pool(void *ctx, dm_view x, int k, int stride, int pad, dm_view y)
{
    cu_max_pool(&((gpu *)ctx)->compute, x.data, x.n, x.h, x.w, x.c, k, stride, pad, y.data, y.h, y.w);
}

static void gpu_resize(void *ctx, dm_view x, dm_resize mode, dm_view y)
{
    cu_resize(&((gpu *)ctx)->compute, x.data, x.n, x.h, x.w, x.c, mode, y.data, y.h, y.w);
}

static void gpu_add(void *ctx, dm_view a, dm_view b, dm_act act, dm_view y)
{
    cu_add(&((gpu *)ctx)->compute, a.data, b.data, y.data, dm_view_floats(y), act);
}

static void gpu_concat(void *ctx, dm_view x, int c0, dm_view y)
{
    cu_concat(&((gpu *)ctx)->compute, x.data, dm_view_pixels(x), x.c, y.data, y.c, c0);
}

static void gpu_roi_align(void *ctx, const dm_roi_levels *levels, const float *rois, int n, dm_view y)
{
    cu_roi_align(&((gpu *)ctx)->compute, levels, rois, n, y.h, y.w, y.c, y.data);
}

/* The device's work has no threads to choose; the host's does. */
static dm_status gpu_set_threads(void *ctx, int threads)
{
    gpu *g = (gpu *)ctx;
    if (threads == dm_pool_threads(g->host)) return DM_OK;
    dm_pool *pool = dm_pool_create(threads);
    if (!pool) return dm_fail(DM_ERR_NOMEM, "out of memory for a pool of %d threads", threads);
    dm_pool_destroy(g->host);
    g->host = pool;
    return DM_OK;
}

static void gpu_host_run(void *ctx, size_t pieces, dm_pool_piece piece, void *arg)
{
    dm_pool_run(((gpu *)ctx)->host, pieces, piece, arg);
}

/* ---------------------------------------------------------------- create */

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

/* Everything but the buffers reserve() sizes, on the current device. */
static dm_status create(const dm_model *model, gpu *g)
{
    dm_status st = check_kernel_image(g->device);
    if (st) return st;
    CUDA_TRY(cudaStreamCreateWithFlags(&g->compute.stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaStreamCreateWithFlags(&g->copy, cudaStreamNonBlocking));
    if ((st = upload_params(model, g))) return st;
    g->source = model;
    CUDA_TRY(cudaMalloc(&g->blas_scratch, blas_workspace_bytes));
    cublasStatus_t bs = cublasCreate(&g->blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(g->blas, g->compute.stream);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(g->blas, g->blas_scratch, blas_workspace_bytes);
    /* Full float32: TF32 tensor cores would round inputs to 10-bit mantissas
     * (cublasLt's CUBLAS_COMPUTE_32F, below, is full float32 too). */
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(g->blas, CUBLAS_DEFAULT_MATH);
    uint64_t lt_workspace = blas_workspace_bytes;
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasLtCreate(&g->lt);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasLtMatmulPreferenceCreate(&g->lt_preference);
    if (bs == CUBLAS_STATUS_SUCCESS)
        bs = cublasLtMatmulPreferenceSetAttribute(g->lt_preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &lt_workspace, sizeof lt_workspace);
    if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(bs, "setup");
    return DM_OK;
}

dm_status dm_cuda_backend_create(const dm_model *model, int device, dm_ops *out)
{
    dm_status st = dm_cuda_available();
    if (st) return st;
    int count = 0, caller;
    CUDA_TRY(cudaGetDeviceCount(&count));
    if (device >= count)
        return dm_fail(DM_ERR_ARGUMENT, "no CUDA device %d: this machine has %d (0 to %d)", device, count, count - 1);
    if (device < 0) CUDA_TRY(cudaGetDevice(&device));
    gpu *g = (gpu *)calloc(1, sizeof *g);
    if (!g) return dm_fail(DM_ERR_NOMEM, "out of memory for the CUDA backend");
    g->device = device;
    if ((st = enter_device(device, &caller))) {
        free(g);
        return st;
    }
    st = create(model, g);
    leave_device(caller);
    if (!st && !(g->host = dm_pool_create(dm_threads())))
        st = dm_fail(DM_ERR_NOMEM, "out of memory for the host's threads");
    if (st) {
        gpu_destroy(g);
        return st;
    }
    dm_ops ops = {};
    ops.name = "cuda";
    ops.ctx = g;
    ops.conv3x3_scratch = gpu_conv3x3_scratch;
    ops.scan_scratch = gpu_scan_scratch;
    ops.reserve = gpu_reserve;
    ops.alloc = gpu_alloc;
    ops.release = gpu_release;
    ops.params = gpu_params;
    ops.held_bytes = gpu_held_bytes;
    ops.destroy = gpu_destroy;
    ops.begin = gpu_begin;
    ops.finish = gpu_finish;
    ops.input_pieces = INPUT_PIECES;
    ops.synchronous = 0; /* kernels and copies run on streams */
    ops.group_bytes = 0; /* the whole batch at once: it is the parallelism */
    ops.input = gpu_input;
    ops.output = gpu_output;
    ops.gemm = gpu_gemm;
    ops.conv3x3 = gpu_conv3x3;
    ops.dwconv3x3 = gpu_dwconv3x3;
    ops.layernorm = gpu_layernorm;
    ops.bias_act = gpu_bias_act;
    ops.sample = gpu_sample;
    ops.scan = gpu_scan;
    ops.avg_pool = gpu_avg_pool;
    ops.max_pool = gpu_max_pool;
    ops.resize = gpu_resize;
    ops.add = gpu_add;
    ops.concat = gpu_concat;
    ops.roi_align = gpu_roi_align;
    ops.set_threads = gpu_set_threads;
    ops.host_run = gpu_host_run;
    *out = ops;
    return DM_OK;
}
