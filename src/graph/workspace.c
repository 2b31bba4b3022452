/* workspace.c - planning and allocating a workspace on a backend. */
#include "workspace.h"

#include "backends.h"
#include "error.h"
#include "half_gemm.h"
#include "host_memory.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

#define GROW(field, n) do { size_t n_ = (n); if (n_ > plan->field) plan->field = n_; } while (0)

void dm_plan_forward(const dm_config *c, const dm_ops *ops, int n, int h, int w, dm_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    size_t N = (size_t)n;
    int h1 = dm_down2(h), w1 = dm_down2(w), h2 = dm_down2(h1), w2 = dm_down2(w1);
    int half = c->dims[0] / 2;
    /* stem: the batch in normed; convs into projected, values, projected, tokens */
    size_t input = N * h * w * c->in_chans;
    GROW(normed, input);
    GROW(projected, N * h1 * w1 * half);
    GROW(values, N * h1 * w1 * half);
    GROW(projected, N * h2 * w2 * c->dims[0]);
    GROW(tokens, N * h2 * w2 * c->dims[0]);
    int cins[4] = {c->in_chans, half, half, c->dims[0]};
    size_t outs[4] = {N * h1 * w1, N * h1 * w1, N * h2 * w2, N * h2 * w2};
    for (int i = 0; i < 4; i++) GROW(scratch, ops->conv3x3_scratch(ops->ctx, outs[i], cins[i]));
    plan->transfer = input;
    int hs = h2, ws = w2;
    size_t offsets = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        if (s > 0) {
            hs = dm_down2(hs);
            ws = dm_down2(ws);
            GROW(scratch, ops->conv3x3_scratch(ops->ctx, N * hs * ws, c->dims[s - 1]));
        }
        size_t image = (size_t)hs * ws, P = N * image, C = c->dims[s];
        GROW(tokens, P * C);
        GROW(normed, P * C);
        /* The residual stream holds the batch, the other buffers one group
         * of images (forward.c): at most dm_group_pixels, or one image. */
        size_t Pg = dm_group_pixels(c, ops, s);
        if (Pg < image) Pg = image;
        if (Pg > P) Pg = P;
        GROW(projected, Pg * C);
        GROW(values, Pg * C);
        GROW(offset_hidden, Pg * C);
        GROW(sampled, Pg * C);
        GROW(delta, Pg * C);
        GROW(offsets, Pg * 2 * c->groups[s]);
        GROW(dt_bc, Pg * (c->dt_rank[s] + 2));
        GROW(ffn_hidden, Pg * c->mlp_hidden[s]);
        GROW(ffn_conv, Pg * c->mlp_hidden[s]);
        GROW(scratch, ops->scan_scratch(ops->ctx, n, image, c->dims[s]));
        plan->transfer += P * C;
        if (P * 2 * c->groups[s] > offsets) offsets = P * 2 * c->groups[s];
    }
    GROW(pooled, N * c->dims[3]);
    GROW(logits, N * c->num_classes);
    plan->transfer += offsets + N * c->num_classes;
    plan->outputs = DM_NUM_STAGES + 2; /* the stages, the logits, one block's offsets */
    if (c->seg_classes > 0) plan->head = dm_upernet_plan(c, ops, n, h, w, plan);
    if (c->det_classes > 0) {
        /* Mask R-CNN's 3x3 convs: FPN outputs and RPN at stride 4, then the
         * mask head over any number of RoIs (bounded by the conv's band) */
        GROW(scratch, ops->conv3x3_scratch(ops->ctx, N * h2 * w2, c->fpn_channels));
        GROW(scratch, ops->conv3x3_scratch(ops->ctx, (size_t)1 << 40, c->fpn_channels));
        GROW(scratch, ops->conv3x3_scratch(ops->ctx, (size_t)1 << 40, c->mask_channels));
    }
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

/* The graph's buffers in one allocation of backend memory. */
static dm_status alloc_buffers(dm_workspace *ws, const dm_plan *plan)
{
    size_t total = 0;
#define X(name) total += (plan->name + 63) & ~(size_t)63;
    DM_GRAPH_BUFFERS(X)
#undef X
    if (!(ws->buffers = ws->ops.alloc(ws->ops.ctx, total)))
        return dm_fail_nomem("out of %s memory for a %.1f MB workspace", ws->ops.name, total * 4.0 / 1e6);
    float *p = ws->buffers;
#define X(name) ws->name = p; p += (plan->name + 63) & ~(size_t)63;
    DM_GRAPH_BUFFERS(X)
#undef X
    ws->bytes = total * sizeof(float);
    return DM_OK;
}

/* device < 0: the calling thread's current CUDA device. */
static dm_status create_backend(const dm_model *model, dm_backend backend, int device, dm_ops *ops)
{
    switch (backend) {
    case DM_BACKEND_CPU: {
        if (device > 0)
            return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_create: the CPU backend has device 0 only, not %d", device);
        dm_status st = dm_threads_check();
        return st ? st : dm_cpu_backend_create(dm_threads(), ops);
    }
    case DM_BACKEND_CUDA: return dm_cuda_backend_create(model, device, ops);
    }
    return dm_fail(DM_ERR_ARGUMENT, "unknown backend %d", (int)backend);
}

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
    dm_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return dm_fail(DM_ERR_NOMEM, "out of memory for a workspace");
    ws->backend = backend;
    ws->config = model->config;
    ws->max_batch = max_batch;
    ws->max_h = max_h;
    ws->max_w = max_w;
    if ((st = create_backend(model, backend, device, &ws->ops))) {
        free(ws);
        return st;
    }
    dm_plan plan;
    dm_plan_forward(&model->config, &ws->ops, max_batch, max_h, max_w, &plan);
    /* the graph's buffers first: the largest request fails soonest */
    if ((st = alloc_buffers(ws, &plan)) ||
        (st = ws->ops.reserve(ws->ops.ctx, plan.scratch, plan.transfer, plan.outputs))) {
        dm_workspace_free(ws);
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
    if (ws->buffers) ws->ops.release(ws->ops.ctx, ws->buffers);
    ws->ops.destroy(ws->ops.ctx);
    free(ws);
}

size_t dm_workspace_bytes(const dm_workspace *ws) { return ws ? ws->bytes + ws->ops.held_bytes(ws->ops.ctx) : 0; }

dm_status dm_workspace_set_threads(dm_workspace *ws, int n)
{
    if (!ws || n < 1 || n > DM_MAX_THREADS)
        return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_set_threads: need a workspace and 1 to %d threads (got %d)",
                       DM_MAX_THREADS, n);
    return ws->ops.set_threads ? ws->ops.set_threads(ws->ops.ctx, n) : DM_OK;
}

const char *dm_precision_name(dm_precision precision)
{
    switch (precision) {
    case DM_PRECISION_F32: return "f32";
    case DM_PRECISION_BF16: return "bf16";
    case DM_PRECISION_F16: return "f16";
    }
    return NULL;
}

const char *dm_precision_kernel(dm_precision precision)
{
    if (!dm_precision_name(precision)) return NULL;
    if (precision == DM_PRECISION_F32) return "float32";
    const dm_half_gemm *native = dm_half_gemm_native(precision);
    return native ? native->name : "widened";
}

dm_status dm_workspace_set_precision(dm_workspace *ws, dm_precision precision)
{
    if (!ws) return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_set_precision: a workspace is required");
    if (!dm_precision_name(precision))
        return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_set_precision: no precision %d", (int)precision);
    if (!ws->ops.set_precision) {
        if (precision == DM_PRECISION_F32) return DM_OK;
        return dm_fail(DM_ERR_UNSUPPORTED, "the %s backend computes in f32 only, not %s", ws->ops.name,
                       dm_precision_name(precision));
    }
    return ws->ops.set_precision(ws->ops.ctx, precision);
}
