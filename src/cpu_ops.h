/* cpu_ops.h - the CPU forward pass's threaded operators, shared by the
 * backbone (forward.c) and the detection heads (detect.c). */
#ifndef DM_CPU_OPS_H
#define DM_CPU_OPS_H

#include "kernels.h"
#include "model.h"

typedef struct dm_cpu {
    const dm_kernels *k;
    int threads;
    float *offsets; /* where the backbone copies one block's offsets, or NULL */
} dm_cpu;

/* Thread t's share [*a, *b) of total items: contiguous, sizes within one. */
void dm_share(size_t total, int threads, int t, size_t *a, size_t *b);

/* C[M][N] = act(A[M][K] (row stride lda) * B[N][K]^T + beta * C + bias),
 * threads taking bands of rows; bias may be NULL. */
void dm_cpu_gemm_nt(const dm_cpu *cx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B,
                    float *C, float beta, const float *bias, dm_act act);

/* Floats of im2col scratch a dense 3x3 convolution with cin input channels
 * needs for up to `pixels` output pixels. */
size_t dm_conv3x3_cols(size_t pixels, int cin);

/* Dense 3x3 convolution (padding 1) of n channels-last h x w images;
 * y = act(conv(x)); cols is dm_conv3x3_cols() floats of scratch. */
void dm_cpu_conv3x3(const dm_cpu *cx, const dm_conv3x3 *cv, const float *x, float *y, float *cols, int n, int h,
                    int w, int *oh_out, int *ow_out, dm_act act);

#endif
