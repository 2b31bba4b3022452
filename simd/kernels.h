/* kernels.h - the operators of the forward pass, as a table of function
 * pointers with one implementation per instruction set.
 *
 * Tensors are channels-last: a pixel's channels are contiguous.  Kernels are
 * single-threaded; the forward pass splits work into ranges (rows, pixels,
 * channels, chunks of the scan) and runs ranges on threads.  The scalar table
 * (kernels_ref.c) is the reference every SIMD table is tested against. */
#ifndef DM_KERNELS_H
#define DM_KERNELS_H

#include <math.h>
#include <stddef.h>

#include "damamba.h"

#define DM_LN_EPS 1e-6f

typedef enum dm_act {
    DM_ACT_NONE,
    DM_ACT_GELU, /* exact erf form */
    DM_ACT_SILU,
    DM_ACT_RELU,
} dm_act;

/* Inputs of the selective scan with state size 1 over one image, channels-
 * last: element (t, c) of a [L][C] array is at t * C + c. */
typedef struct dm_scan_args {
    const float *u;       /* [L][C] sampled features */
    const float *delta;   /* [L][C] dt_projs output, before bias/softplus */
    const float *bc;      /* B_t = bc[t * bc_stride], C_t = bc[t * bc_stride + 1] */
    size_t bc_stride;
    const float *a;       /* [C] A = -exp(A_logs) */
    const float *d;       /* [C] Ds */
    const float *dt_bias; /* [C] */
    size_t channels;      /* C */
} dm_scan_args;

typedef struct dm_kernels {
    const char *isa;

    /* y[r] = LayerNorm(x[r]) * gamma + beta over c channels, eps DM_LN_EPS,
     * then act.  x == y is allowed. */
    void (*layernorm)(const float *x, float *y, size_t rows, size_t c,
                      const float *gamma, const float *beta, dm_act act);

    /* Depthwise 3x3, stride 1, zero padding 1, over one h x w x c image;
     * writes output rows [y0, y1).  w9 is [9][c] (tap-major), bias [c]. */
    void (*dwconv3x3)(const float *x, float *y, int h, int w, int c,
                      const float *w9, const float *bias, dm_act act,
                      int y0, int y1);

    /* y[r][j] = act(y[r][j] + bias[j]) for rows x c; bias may be NULL. */
    void (*bias_act)(float *y, size_t rows, size_t c, const float *bias,
                     dm_act act);

    /* Dynamic Adaptive Scan sampler over one h x w x c image for pixels
     * [p0, p1) (row-major index): u[p] group g = bilinear sample of v at
     * (x + off[p][2g], y + off[p][2g+1]), corners outside contribute 0. */
    void (*sample)(const float *v, const float *off, float *u, int h, int w,
                   int c, int groups, size_t p0, size_t p1);

    /* Selective scan over steps [t0, t1) and channels [c0, c1):
     *   dt = softplus(delta + dt_bias); h = exp(dt * a) * h + dt * B_t * u
     * h[c] holds the state on entry and exit.  If y is non-NULL it receives
     * y = h * C_t + u * d.  If decay is non-NULL ([L][C] like y) it receives
     * at step t the product of exp(dt * a) over steps t0..t: what a chunked
     * scan needs to fix up a chunk that started from a zero state. */
    void (*scan)(const dm_scan_args *args, size_t t0, size_t t1, size_t c0,
                 size_t c1, float *h, float *decay, float *y);

    /* The fix-up of a chunk scanned from a zero state whose true entry state
     * is carry[c]: y[t][c] += C_t * decay[t][c] * carry[c] over steps
     * [t0, t1) and channels [c0, c1). */
    void (*scan_fixup)(const dm_scan_args *args, size_t t0, size_t t1,
                       size_t c0, size_t c1, const float *carry,
                       const float *decay, float *y);
} dm_kernels;

/* The scalar reference table. */
extern const dm_kernels dm_kernels_scalar;

/* The table the library uses: chosen once, honouring DAMAMBA_ISA; NULL
 * when DAMAMBA_ISA names an instruction set this build or CPU lacks. */
const dm_kernels *dm_kernels_active(void);
/* The active table, or DM_ERR_UNSUPPORTED with a message naming the
 * refused instruction set. */
dm_status dm_kernels_require(const dm_kernels **out);
/* A table by name, or NULL if this build or CPU lacks it. */
const dm_kernels *dm_kernels_by_name(const char *isa);

/* The scan of one whole sequence (steps [0, L), all channels) split into
 * `chunks` pieces that up to `threads` threads scan at once; exact up to
 * rounding, any chunk count (even above L).  h holds the state on entry and
 * exit; y is required.  Scratch: states [chunks][C], decay [L][C]. */
void dm_scan_chunked(const dm_kernels *k, const dm_scan_args *args, size_t L,
                     size_t chunks, int threads, float *h, float *states,
                     float *decay, float *y);

/* The bilinear corners of sample point (sx, sy) in an h x w x c image that
 * lie inside it: their addresses (plus channel offset ch) and weights, in
 * the order (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).  None
 * unless -1 < sy < h and -1 < sx < w, which also rejects NaN.  Every
 * sampler implementation shares this, so they differ only in how they
 * accumulate channels. */
static inline int dm_bilinear_corners(const float *v, int h, int w, int c, size_t ch, float sx, float sy,
                                      const float *src[4], float weight[4])
{
    int corners = 0;
    if (!(sy > -1.0f && sy < (float)h && sx > -1.0f && sx < (float)w)) return 0;
    float fy0 = floorf(sy), fx0 = floorf(sx), ly = sy - fy0, lx = sx - fx0;
    int y0 = (int)fy0, x0 = (int)fx0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int yy = y0 + dy, xx = x0 + dx;
            if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
            src[corners] = v + ((size_t)yy * w + xx) * c + ch;
            weight[corners++] = (dy ? ly : 1.0f - ly) * (dx ? lx : 1.0f - lx);
        }
    return corners;
}

/* Scalar helpers shared with SIMD tails. */
float dm_gelu_ref(float x);
float dm_silu_ref(float x);
float dm_softplus_ref(float x);

#endif
