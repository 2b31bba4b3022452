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
#include "panels.h"
#include "pool.h"

#define DM_LN_EPS 1e-6f

typedef enum dm_act {
    DM_ACT_NONE,
    DM_ACT_GELU, /* the erf form (not tanh's approximation); erf as the erf kernel's */
    DM_ACT_SILU,
    DM_ACT_RELU,
} dm_act;

typedef enum dm_resize {
    DM_RESIZE_BILINEAR, /* align_corners=False: half-pixel centres, edges clamped */
    DM_RESIZE_NEAREST,  /* source index floor(i * in / out) */
} dm_resize;

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

/* The kernels, one X(name, parameters) each.  This one list produces the
 * table struct, the scalar fallback of SIMD tables (dispatch.c), and the
 * loops of the kernel tests and the benchmark, which need an entry per
 * kernel to compile.
 *
 * layernorm: y[r] = LayerNorm(x[r]) * gamma + beta over c channels, eps
 *   DM_LN_EPS, then act.  x == y is allowed.
 * dwconv3x3: depthwise 3x3, stride 1, zero padding 1, over one h x w x c
 *   image; writes output rows [y0, y1).  w9 is [9][c] (tap-major), bias [c].
 * bias_act: y[r][j] = act(y[r][j] + bias[j]) for rows x c; bias may be NULL.
 * sample: the Dynamic Adaptive Scan sampler over one h x w x c image for
 *   pixels [p0, p1) (row-major index): u[p] group g = bilinear sample of v
 *   at (x + off[p][2g], y + off[p][2g+1]), corners outside contribute 0.
 * scan: the selective scan over steps [t0, t1) and channels [c0, c1):
 *     dt = softplus(delta + dt_bias); h = exp(dt * a) * h + dt * B_t * u
 *   h[c] holds the state on entry and exit.  If y is non-NULL it receives
 *   y = h * C_t + u * d.  If decay is non-NULL, decay[c] receives the
 *   product of exp(dt * a) over the steps, how the entry state reaches the
 *   end (a chunked scan carries states from chunk to chunk by it), as the
 *   exp of the sum of dt * a: a running product would pass through
 *   subnormal numbers, which cost x86 cores a hundred cycles a multiply.
 * avg_pool: adaptive average pooling of one h x w x c image to oh x ow
 *   bins (PyTorch's: bin i spans [floor(i * h / oh), ceil((i + 1) * h / oh))),
 *   output pixels [p0, p1).
 * max_pool: k x k max pooling at stride with an implicit -inf border of
 *   pad, one image, output pixels [p0, p1) of oh x ow.
 * resize: one h x w x c image resized to oh x ow, output pixels [p0, p1):
 *   bilinear with align_corners=False or nearest, as PyTorch's interpolate.
 * add: y[i] = act(a[i] + b[i]) for count elements; y may be a or b.
 * erf: y[i] = erf(x[i]), the erf every GELU uses: erff in the scalar
 *   table, within 3 ulp of it in the SIMD ones.
 * exp: y[i] = e^x[i], the exp of SiLU, softplus, the scan's decay and erf:
 *   expf in the scalar table; in the SIMD ones within 2 ulp of it on
 *   [-87.3, 88.37], 0 below and infinity above.
 * round_half: y[i] = x[i] rounded to nearest, ties to even, to bf16 or f16
 *   (precision), as a float: what half-precision products multiply.  NaN
 *   stays NaN; f16 overflows to infinity.  y may be x.
 * gemm: C[r][n] = act(sum over k of A[r][k] * W[n][k] + beta * C[r][n]
 *   + bias[n]) for r < rows and n0 <= n < n1, W [N][K] laid out by
 *   dm_pack_panels (panels.h); A's rows are lda floats apart, C's ldc; n0
 *   is a multiple of DM_PANEL; bias may be NULL; C is not read when beta
 *   is 0.
 *   The scalar table sums in k order from beta * C, one rounding per
 *   multiply and per add; the SIMD ones sum steps of consecutive k with
 *   fused multiply-adds, then add each step's sum to the running one. */
#define DM_KERNEL_LIST(X)                                                                                \
    X(layernorm, (const float *x, float *y, size_t rows, size_t c, const float *gamma, const float *beta, \
                  dm_act act))                                                                          \
    X(dwconv3x3, (const float *x, float *y, int h, int w, int c, const float *w9, const float *bias,      \
                  dm_act act, int y0, int y1))                                                          \
    X(bias_act, (float *y, size_t rows, size_t c, const float *bias, dm_act act))                        \
    X(sample, (const float *v, const float *off, float *u, int h, int w, int c, int groups, size_t p0,   \
               size_t p1))                                                                              \
    X(scan, (const dm_scan_args *args, size_t t0, size_t t1, size_t c0, size_t c1, float *h, float *decay, \
             float *y))                                                                                 \
    X(avg_pool, (const float *x, int h, int w, int c, float *y, int oh, int ow, size_t p0, size_t p1))   \
    X(max_pool, (const float *x, int h, int w, int c, int k, int stride, int pad, float *y, int oh,      \
                 int ow, size_t p0, size_t p1))                                                         \
    X(resize, (const float *x, int h, int w, int c, dm_resize mode, float *y, int oh, int ow, size_t p0, \
               size_t p1))                                                                              \
    X(add, (const float *a, const float *b, float *y, size_t count, dm_act act))                        \
    X(erf, (const float *x, float *y, size_t count))                                                   \
    X(exp, (const float *x, float *y, size_t count))                                                   \
    X(round_half, (const float *x, float *y, size_t count, dm_precision precision))                     \
    X(gemm, (size_t rows, size_t K, const float *A, size_t lda, const float *w, size_t n0, size_t n1,     \
             float beta, const float *bias, dm_act act, float *C, size_t ldc))

typedef struct dm_kernels {
    const char *isa;
    /* Rows of gemm's register block: a call on a multiple of it runs no
     * partial block, so threads take rows in multiples of it. */
    size_t gemm_rows;
#define DM_KERNEL_POINTER(name, params) void(*name) params;
    DM_KERNEL_LIST(DM_KERNEL_POINTER)
#undef DM_KERNEL_POINTER
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
 * `chunks` runs of steps, each cut into blocks of `block` channels (0: all),
 * pieces that pool's threads scan at once; exact up to rounding, any chunk
 * count (even above L).  The result depends on the chunk count, not on the
 * block or the threads.  h holds the state on entry and exit; y is
 * required.  Scratch: states and decays, [chunks][C] each. */
void dm_scan_chunked(const dm_kernels *k, const dm_scan_args *args, size_t L,
                     size_t chunks, size_t block, dm_pool *pool, float *h,
                     float *states, float *decays, float *y);

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

/* Index arithmetic every implementation shares, the CUDA one included. */
#ifdef __CUDACC__
#define DM_HOST_DEVICE __host__ __device__
#else
#define DM_HOST_DEVICE
#endif

/* PyTorch's adaptive pooling bin i of `bins` over n: [*a, *b). */
DM_HOST_DEVICE static inline void dm_adaptive_bin(int i, int n, int bins, int *a, int *b)
{
    *a = (int)((long)i * n / bins);
    *b = (int)(((long)(i + 1) * n + bins - 1) / bins);
}

/* PyTorch's bilinear source coordinate of output index i (align_corners=
 * False): half-pixel centres, clamped at 0. */
DM_HOST_DEVICE static inline float dm_bilinear_source(int i, int in, int out)
{
    float src = ((float)in / (float)out) * ((float)i + 0.5f) - 0.5f;
    return src < 0.0f ? 0.0f : src;
}

/* PyTorch's nearest source index of output index i. */
DM_HOST_DEVICE static inline int dm_nearest_source(int i, int in, int out)
{
    int src = (int)floorf((float)i * ((float)in / (float)out));
    return src < in - 1 ? src : in - 1;
}

/* Scalar helpers shared with SIMD tails. */
float dm_gelu_ref(float x);
float dm_silu_ref(float x);
float dm_softplus_ref(float x);

#endif
