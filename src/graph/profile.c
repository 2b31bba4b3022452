/* profile.c - the time each operator-table entry takes: a table that
 * forwards every call to the workspace's own and times the operators.  It
 * replaces the workspace's table only when profiling is asked for, so
 * ordinary passes call the backend directly.
 *
 * An entry is timed from its call to its completion.  On a backend whose
 * entries run asynchronously (ops.h: synchronous = 0) completion means
 * finish(), so each operator is followed by finish() and a new begin():
 * the pass then has no overlap between operators (nor between copies and
 * computation) and runs slower than unprofiled, and after a failing
 * operator the later ones still run; the pass reports the first failure. */
#include "internal_api.h"

#include "error.h"
#include "ops.h"
#include "workspace.h"

#include <stdlib.h>
#include <time.h>

/* The operators, in table order. */
#define PROFILED_ENTRIES(X)                                                                                           \
    X(input) X(output) X(gemm) X(conv3x3) X(dwconv3x3) X(layernorm) X(bias_act) X(sample) X(scan) X(avg_pool)        \
    X(max_pool) X(resize) X(add) X(concat) X(roi_align)

enum {
#define X(entry) ENTRY_##entry,
    PROFILED_ENTRIES(X)
#undef X
    ENTRY_COUNT
};

static const char *const entry_names[ENTRY_COUNT] = {
#define X(entry) #entry,
    PROFILED_ENTRIES(X)
#undef X
};

typedef struct profile {
    dm_ops inner;          /* the backend's table */
    dm_status first_error; /* of a per-operator finish(), for the pass's own */
    long calls[ENTRY_COUNT];
    double seconds[ENTRY_COUNT], flops[ENTRY_COUNT];
} profile;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Book an operator called at t0 once it has completed; on an asynchronous
 * backend the pass goes on after a new begin(), outside the time. */
static void done(profile *p, int entry, double t0, double flops)
{
    dm_status st = p->inner.synchronous ? DM_OK : p->inner.finish(p->inner.ctx);
    p->seconds[entry] += now_s() - t0;
    p->calls[entry]++;
    p->flops[entry] += flops;
    if (!p->inner.synchronous) {
        /* begin again whatever finish() said: the pass's own finish() follows */
        dm_status began = p->inner.begin(p->inner.ctx);
        if (!p->first_error) p->first_error = st ? st : began;
    }
}

#define UNWRAP(...) __VA_ARGS__
/* timed_ENTRY(ctx, params): the backend's ENTRY on args, timed, doing
 * `flops` floating-point operations. */
#define TIMED(entry, params, args, flops)                                                                             \
    static void timed_##entry(void *ctx, UNWRAP params)                                                              \
    {                                                                                                                 \
        profile *p = ctx;                                                                                             \
        double t0 = now_s();                                                                                          \
        p->inner.entry(p->inner.ctx, UNWRAP args);                                                                    \
        done(p, ENTRY_##entry, t0, flops);                                                                            \
    }

TIMED(input, (const float *host, dm_layout layout, dm_view dst), (host, layout, dst), 0)
TIMED(output, (dm_view src, dm_layout layout, float *host), (src, layout, host), 0)
TIMED(gemm,
      (size_t M, size_t N, size_t K, const float *A, size_t lda, const float *W, float beta, const float *bias,
       dm_act act, float *C),
      (M, N, K, A, lda, W, beta, bias, act, C), 2.0 * M * N * K)
TIMED(conv3x3, (const dm_conv3x3 *cv, dm_view x, dm_act act, dm_view y), (cv, x, act, y),
      2.0 * dm_view_pixels(y) * cv->cout * cv->cin * 9)
TIMED(dwconv3x3, (dm_view x, const float *w9, const float *bias, dm_act act, dm_view y), (x, w9, bias, act, y), 0)
TIMED(layernorm, (dm_view x, const float *gamma, const float *beta, dm_act act, dm_view y),
      (x, gamma, beta, act, y), 0)
TIMED(bias_act, (dm_view y, const float *bias, dm_act act), (y, bias, act), 0)
TIMED(sample, (dm_view v, const float *offsets, int groups, dm_view u), (v, offsets, groups, u), 0)
TIMED(scan, (const dm_scan_inputs *in, dm_view y), (in, y), 0)
TIMED(avg_pool, (dm_view x, dm_view y), (x, y), 0)
TIMED(max_pool, (dm_view x, int k, int stride, int pad, dm_view y), (x, k, stride, pad, y), 0)
TIMED(resize, (dm_view x, dm_resize mode, dm_view y), (x, mode, y), 0)
TIMED(add, (dm_view a, dm_view b, dm_act act, dm_view y), (a, b, act, y), 0)
TIMED(concat, (dm_view x, int c0, dm_view y), (x, c0, y), 0)
TIMED(roi_align, (const dm_roi_levels *levels, const float *rois, int n, dm_view y), (levels, rois, n, y), 0)

/* The entries outside the passes' operators go straight through. */
static size_t fwd_conv3x3_scratch(void *ctx, size_t out_pixels, int cin)
{
    profile *p = ctx;
    return p->inner.conv3x3_scratch(p->inner.ctx, out_pixels, cin);
}
static size_t fwd_scan_scratch(void *ctx, int n, size_t steps, int c)
{
    profile *p = ctx;
    return p->inner.scan_scratch(p->inner.ctx, n, steps, c);
}
static dm_status fwd_reserve(void *ctx, size_t scratch_floats, size_t output_floats, int outputs)
{
    profile *p = ctx;
    return p->inner.reserve(p->inner.ctx, scratch_floats, output_floats, outputs);
}
static float *fwd_alloc(void *ctx, size_t floats)
{
    profile *p = ctx;
    return p->inner.alloc(p->inner.ctx, floats);
}
static void fwd_release(void *ctx, float *ptr)
{
    profile *p = ctx;
    p->inner.release(p->inner.ctx, ptr);
}
static const dm_model *fwd_params(void *ctx, const dm_model *model)
{
    profile *p = ctx;
    return p->inner.params(p->inner.ctx, model);
}
static size_t fwd_held_bytes(void *ctx)
{
    profile *p = ctx;
    return p->inner.held_bytes(p->inner.ctx) + sizeof *p;
}
static dm_status fwd_set_threads(void *ctx, int threads)
{
    profile *p = ctx;
    return p->inner.set_threads(p->inner.ctx, threads);
}
/* host work is no operator: its time counts as outside them */
static void fwd_host_run(void *ctx, size_t pieces, dm_pool_piece piece, void *arg)
{
    profile *p = ctx;
    p->inner.host_run(p->inner.ctx, pieces, piece, arg);
}
static dm_status fwd_set_precision(void *ctx, dm_precision precision)
{
    profile *p = ctx;
    return p->inner.set_precision(p->inner.ctx, precision);
}
static void fwd_destroy(void *ctx)
{
    profile *p = ctx;
    p->inner.destroy(p->inner.ctx);
    free(p);
}
static dm_status fwd_begin(void *ctx)
{
    profile *p = ctx;
    p->first_error = DM_OK;
    return p->inner.begin(p->inner.ctx);
}
static dm_status fwd_finish(void *ctx)
{
    profile *p = ctx;
    dm_status st = p->inner.finish(p->inner.ctx);
    return p->first_error ? p->first_error : st;
}

dm_status dm_workspace_profile(dm_workspace *ws)
{
    if (!ws) return dm_fail(DM_ERR_ARGUMENT, "dm_workspace_profile: a workspace is required");
    if (ws->ops.begin == fwd_begin) { /* already profiled: start counting again */
        profile *p = ws->ops.ctx;
        *p = (profile){.inner = p->inner};
        return DM_OK;
    }
    profile *p = calloc(1, sizeof *p);
    if (!p) return dm_fail(DM_ERR_NOMEM, "out of memory for an operator profile");
    p->inner = ws->ops;
    /* every entry spelled out: one that is not would be NULL, never the
     * backend's function handed this context */
    dm_ops *o = &ws->ops;
    *o = (dm_ops){
        .name = p->inner.name,
        .ctx = p,
        .conv3x3_scratch = fwd_conv3x3_scratch,
        .scan_scratch = fwd_scan_scratch,
        .reserve = fwd_reserve,
        .alloc = fwd_alloc,
        .release = fwd_release,
        .params = fwd_params,
        .held_bytes = fwd_held_bytes,
        .set_threads = p->inner.set_threads ? fwd_set_threads : NULL,
        .host_run = fwd_host_run,
        .set_precision = p->inner.set_precision ? fwd_set_precision : NULL,
        .destroy = fwd_destroy,
        .begin = fwd_begin,
        .finish = fwd_finish,
        /* and every property, as the backend states it */
        .input_pieces = p->inner.input_pieces,
        .synchronous = p->inner.synchronous,
        .group_bytes = p->inner.group_bytes,
        .packed_weights = p->inner.packed_weights,
    };
#define X(entry) o->entry = p->inner.entry ? timed_##entry : NULL;
    PROFILED_ENTRIES(X)
#undef X
    return DM_OK;
}

int dm_workspace_profile_read(const dm_workspace *ws, dm_op_profile *out, int max)
{
    if (!ws || ws->ops.begin != fwd_begin) return 0;
    const profile *p = ws->ops.ctx;
    int n = 0;
    for (int e = 0; e < ENTRY_COUNT; e++) {
        if (!p->calls[e]) continue;
        if (n < max) out[n] = (dm_op_profile){entry_names[e], p->calls[e], p->seconds[e], p->flops[e]};
        n++;
    }
    return n;
}
