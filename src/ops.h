/* ops.h - the operator table the model graph (src/graph/) is written
 * against.  A backend (src/backend/cpu/, cuda/) is one filled-in table:
 * function pointers plus the context they all receive.  The graph owns the
 * order of operations and the buffers; a backend owns how each operator
 * runs (threads, SIMD, cuBLAS, streams) and its own scratch memory.
 *
 * Tensors are channels-last (NHWC) in backend memory unless an entry says
 * otherwise.  Operators are enqueued: they may run asynchronously, report no
 * status, and an entry's first failure is returned by finish().  Adding an
 * operator to the graph means adding an entry here and filling it in once
 * per backend, and once in the timing table (src/graph/profile.c);
 * tests/test_ops.c checks every entry against the scalar reference on
 * every backend the build has. */
#ifndef DM_OPS_H
#define DM_OPS_H

#include "damamba.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"

#include <stddef.h>

/* A batch of feature maps in backend memory: n images of h x w pixels of c
 * channels, element (i, y, x, ch) at data[((i * h + y) * w + x) * c + ch]. */
typedef struct dm_view {
    float *data;
    int n, h, w, c;
} dm_view;

static inline dm_view dm_view_of(float *data, int n, int h, int w, int c) { return (dm_view){data, n, h, w, c}; }
static inline size_t dm_view_pixels(dm_view v) { return (size_t)v.n * v.h * v.w; }
static inline size_t dm_view_floats(dm_view v) { return dm_view_pixels(v) * v.c; }

/* How caller (host) memory is laid out at input() and output(). */
typedef enum dm_layout {
    DM_LAYOUT_NHWC, /* as the view: a plain copy */
    DM_LAYOUT_NCHW, /* [n][c][h][w], PyTorch's */
} dm_layout;

/* Output size of a 3x3 convolution along one axis. */
static inline int dm_conv3x3_out(int in, int stride, int pad) { return (in + 2 * pad - 3) / stride + 1; }

/* The selective scan with state size 1 over a batch: each image of u is one
 * sequence of h * w steps in row-major pixel order, channels independent.
 *   dt = softplus(delta + dt_bias); s = exp(dt * a) * s + dt * B_t * u
 *   y = s * C_t + u * d, from s = 0 at each image's first pixel. */
typedef struct dm_scan_inputs {
    dm_view u;            /* sampled features */
    const float *delta;   /* like u: dt projection before bias and softplus */
    const float *bc;      /* B and C of batch pixel p at bc[p * bc_stride], [+1] */
    size_t bc_stride;
    const float *a;       /* [c] -exp(A_logs) */
    const float *d;       /* [c] Ds */
    const float *dt_bias; /* [c] */
} dm_scan_inputs;

/* The feature levels RoIAlign pools from, each with its spatial scale
 * (1 / stride). */
#define DM_MAX_ROI_LEVELS 4
typedef struct dm_roi_levels {
    dm_view level[DM_MAX_ROI_LEVELS]; /* n = 1 each */
    float scale[DM_MAX_ROI_LEVELS];
    int count;
} dm_roi_levels;

typedef struct dm_ops {
    const char *name;
    void *ctx; /* passed to every entry */

    /* ------------------------------------------------ memory and passes */

    /* Floats of scratch a 3x3 convolution producing out_pixels pixels from
     * cin channels needs, and the selective scan of n images of `steps`
     * steps and c channels; reserve() then sizes the scratch for the
     * largest.  Outputs: the floats (inputs included) and count of outputs
     * one pass delivers at most (a backend may stage them).  Called again
     * between passes, reserve() grows what it holds to fit (a pass whose
     * transfers depend on its call, as detection's heads, reserves them
     * first); it never shrinks. */
    size_t (*conv3x3_scratch)(void *ctx, size_t out_pixels, int cin);
    size_t (*scan_scratch)(void *ctx, int n, size_t steps, int c);
    dm_status (*reserve)(void *ctx, size_t scratch_floats, size_t output_floats, int outputs);
    /* Backend memory for a graph's buffers (NULL when out of memory). */
    float *(*alloc)(void *ctx, size_t floats);
    void (*release)(void *ctx, float *p);
    /* model's parameters in backend memory: the same structs with pointers
     * the backend reads (the CPU uses the model itself); NULL when the
     * backend holds another model's copy. */
    const dm_model *(*params)(void *ctx, const dm_model *model);
    /* Bytes the backend holds itself (scratch, parameter copies, staging). */
    size_t (*held_bytes)(void *ctx);
    /* Threads the operators, and host_run, may use from now on. */
    dm_status (*set_threads)(void *ctx, int threads);
    /* Runs piece(arg, i) for every i in [0, pieces) on the workspace's
     * threads, for the graph's work on host memory (resizing and softmax of
     * segmentation logits): a pool of the backend's, never a thread the
     * process shares (OpenMP's is not safe across fork()). */
    void (*host_run)(void *ctx, size_t pieces, dm_pool_piece piece, void *arg);
    /* The precision of gemm and conv3x3 from the next pass on (damamba.h's
     * dm_precision); NULL where the backend has float32 only. */
    dm_status (*set_precision)(void *ctx, dm_precision precision);
    /* Free everything the backend holds, ctx included. */
    void (*destroy)(void *ctx);
    /* Bracket one pass.  finish() waits for the pass, completes every
     * output(), restores any setting begin() changed, and returns the first
     * failure of the pass. */
    dm_status (*begin)(void *ctx);
    dm_status (*finish)(void *ctx);
    /* Images a batch's input is brought in as, so that the first piece can
     * be computed on while the rest still travels (1: all at once). */
    int input_pieces;
    /* 1 when an operator has completed by the time its entry returns (the
     * CPU); 0 when entries enqueue work that only finish() waits for. */
    int synchronous;
    /* Bytes of buffers a stage's blocks should keep within.  A batch runs
     * each stage in groups of as many images as fit, so that what one
     * operator writes is still in the cache when the next reads it; 0 runs
     * the whole batch at once (a GPU, whose parallelism is the batch). */
    size_t group_bytes;
    /* How gemm and conv3x3 read a weight of n x k (model.h's dm_product):
     * 1 packed by dm_pack_panels, as the model holds it (the CPU); 0 as
     * [n][k], which params() unpacks it to (CUDA, for cuBLAS). */
    int packed_weights;

    /* ---------------------------------------------------------- transfers */

    /* dst = the caller's batch at host, laid out as `layout`. */
    void (*input)(void *ctx, const float *host, dm_layout layout, dm_view dst);
    /* The caller's host memory = src laid out as `layout`; complete when
     * finish() returns, whatever src holds by then. */
    void (*output)(void *ctx, dm_view src, dm_layout layout, float *host);

    /* ---------------------------------------------------------- operators */

    /* C[M][N] = act(A[M][K] * W[N][K]^T + beta * C + bias): A's rows are
     * lda floats apart; C may be read (beta) and is written in place; bias
     * [N] may be NULL.  The product with a linear layer's weight: W [N][K]
     * is a model parameter, laid out as packed_weights says, constant while
     * the workspace lives, so a backend may keep a copy of it prepared for
     * its precision, found by its address. */
    void (*gemm)(void *ctx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *W, float beta,
                 const float *bias, dm_act act, float *C);
    /* y = act(conv(x) + bias), a dense 3x3 convolution with cv's stride and
     * padding; y's h and w are dm_conv3x3_out of x's.  cv->weight is
     * [cout][3][3][cin], a product weight of cout x 9 cin laid out as
     * packed_weights says. */
    void (*conv3x3)(void *ctx, const dm_conv3x3 *cv, dm_view x, dm_act act, dm_view y);
    /* y = act(depthwise conv(x) + bias), 3x3, stride 1, zero padding 1; w9 is
     * [9][c], tap-major.  x and y must not overlap. */
    void (*dwconv3x3)(void *ctx, dm_view x, const float *w9, const float *bias, dm_act act, dm_view y);
    /* y = act(LayerNorm(x) * gamma + beta) per pixel over its c channels,
     * eps DM_LN_EPS; y may be x. */
    void (*layernorm)(void *ctx, dm_view x, const float *gamma, const float *beta, dm_act act, dm_view y);
    /* y = act(y + bias) in place; bias [c] may be NULL. */
    void (*bias_act)(void *ctx, dm_view y, const float *bias, dm_act act);
    /* The Dynamic Adaptive Scan's sampler: u at pixel (y, x), group g (of
     * `groups` equal channel slices) = bilinear sample of v at (x + dx,
     * y + dy), (dx, dy) = offsets[pixel][g]; corners outside count as 0. */
    void (*sample)(void *ctx, dm_view v, const float *offsets, int groups, dm_view u);
    /* y = the selective scan of in (see dm_scan_inputs); y is like in->u. */
    void (*scan)(void *ctx, const dm_scan_inputs *in, dm_view y);
    /* Adaptive average pooling to y's h x w bins, PyTorch's bins: output row
     * i averages input rows [floor(i * H / h), ceil((i + 1) * H / h)), the
     * same for columns.  1 x 1 is the global mean. */
    void (*avg_pool)(void *ctx, dm_view x, dm_view y);
    /* Max pooling, k x k windows at `stride`, `pad` implicit -inf border;
     * y's h and w are (in + 2 * pad - k) / stride + 1. */
    void (*max_pool)(void *ctx, dm_view x, int k, int stride, int pad, dm_view y);
    /* y = x resized to y's h x w: bilinear as PyTorch with
     * align_corners=False (half-pixel centres, edges clamped), or nearest
     * (source index floor(i * in / out)). */
    void (*resize)(void *ctx, dm_view x, dm_resize mode, dm_view y);
    /* y = act(a + b), all the same shape; y may be a or b. */
    void (*add)(void *ctx, dm_view a, dm_view b, dm_act act, dm_view y);
    /* y's channels [c0, c0 + x.c) = x: concatenation along channels, one
     * input at a time; y has the same n, h, w as x. */
    void (*concat)(void *ctx, dm_view x, int c0, dm_view y);
    /* RoIAlign (mmcv's, aligned, averaging ceil(size / out) samples per bin
     * and axis): RoI i of rois ([n][5] in backend memory: level, x1, y1,
     * x2, y2 in image pixels) pooled from its level into image i of y
     * (n x out x out x c). */
    void (*roi_align)(void *ctx, const dm_roi_levels *levels, const float *rois, int n, dm_view y);
} dm_ops;

#endif
