/* kernels.cuh - device kernels of the forward pass (kernels.cu), one launch
 * function per operator of simd/kernels.h, each over a whole batch in the
 * same channels-last layouts and with the same arithmetic as the scalar
 * reference.  Launches are asynchronous on the queue's stream; the queue
 * keeps the first launch that failed, by name. */
#ifndef DM_CUDA_KERNELS_CUH
#define DM_CUDA_KERNELS_CUH

#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {
#include "detect_kernels.h"
#include "kernels.h"
#include "ops.h"
}

/* A stream and the first launch on it that failed. */
typedef struct cu_queue {
    cudaStream_t stream;
    cudaError_t error;
    const char *failed_kernel;
} cu_queue;

/* cudaErrorNoKernelImageForDevice (or another error) when the current
 * device cannot run this build's kernels. */
cudaError_t cu_check_kernel_image(void);

/* y[r] = act(LayerNorm(x[r]) * g + b) over rows of c channels; x == y allowed. */
void cu_layernorm(cu_queue *q, const float *x, float *y, size_t rows, int c, const float *g, const float *b,
                  dm_act act);

/* y[r][j] = act(y[r][j] + bias[j]); bias may be NULL. */
void cu_bias_act(cu_queue *q, float *y, size_t rows, int c, const float *bias, dm_act act);

/* Depthwise 3x3, stride 1, padding 1, over n images of h x w x c. */
void cu_dwconv3x3(cu_queue *q, const float *x, float *y, int n, int h, int w, int c, const float *w9,
                  const float *bias, dm_act act);

/* Rows [p0, p1) of the batch's 3x3 im2col matrix: output pixel p's 3x3
 * neighbourhood, tap-major, zeros in the padding. */
void cu_im2col3x3(cu_queue *q, const float *x, float *cols, int h, int w, int cin, int stride, int pad, int oh,
                  int ow, size_t p0, size_t p1);

/* The Dynamic Adaptive Scan sampler over n images. */
void cu_sample(cu_queue *q, const float *v, const float *off, float *u, int n, int h, int w, int c, int groups);

/* Inputs of the selective scan over n images of L steps and C channels;
 * B_t, C_t at bc[(img * L + t) * bc_stride] and the next float. */
typedef struct cu_scan_args {
    const float *u, *delta, *bc;
    size_t bc_stride;
    const float *a, *d, *dt_bias;
    int n, channels;
    size_t steps;
} cu_scan_args;

/* Floats of carry the scan needs for up to max_n images of up to steps
 * steps and this many channels. */
size_t cu_scan_carry_floats(int max_n, int channels, size_t steps);

/* y = the scan's outputs, as scan_ref with a zero start state.  carry holds
 * cu_scan_carry_floats(n, C, L) floats. */
void cu_scan(cu_queue *q, const cu_scan_args *args, float *carry, float *y);

/* NCHW [n][c][hw] <-> channels-last [n][hw][c]. */
void cu_to_nhwc(cu_queue *q, const float *in, float *x, int n, size_t hw, int c);
void cu_to_nchw(cu_queue *q, const float *x, float *out, int n, size_t hw, int c);

/* The kernels.h operators of the same names over n images of h x w x c
 * into oh x ow. */
void cu_avg_pool(cu_queue *q, const float *x, int n, int h, int w, int c, float *y, int oh, int ow);
void cu_max_pool(cu_queue *q, const float *x, int n, int h, int w, int c, int k, int stride, int pad, float *y,
                 int oh, int ow);
void cu_resize(cu_queue *q, const float *x, int n, int h, int w, int c, dm_resize mode, float *y, int oh, int ow);

/* y = act(a + b) elementwise. */
void cu_add(cu_queue *q, const float *a, const float *b, float *y, size_t count, dm_act act);
/* Channels [c0, c0 + xc) of y's yc at each of `pixels` pixels = x's. */
void cu_concat(cu_queue *q, const float *x, size_t pixels, int xc, float *y, int yc, int c0);

/* RoIAlign of n RoIs (rois [n][5] in device memory: level, box) from
 * levels into y (n x out_h x out_w x c), as dm_roi_align. */
void cu_roi_align(cu_queue *q, const dm_roi_levels *levels, const float *rois, int n, int out_h, int out_w, int c,
                  float *y);

#endif
