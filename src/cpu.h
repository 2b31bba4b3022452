/* cpu.h - the CPU forward pass's operators, shared by the backbone
 * (forward.c) and the segmentation head (upernet.c).  Each runs on
 * `threads` OpenMP threads over channels-last tensors. */
#ifndef DM_CPU_H
#define DM_CPU_H

#include "kernels.h"
#include "model.h"
#include "workspace.h"

typedef struct dm_cpu {
    const dm_kernels *k;
    int threads;
    float *offsets; /* where to copy this block's offsets, or NULL */
} dm_cpu;

/* Thread t's share [*a, *b) of total items: contiguous, sizes within one. */
void dm_cpu_share(size_t total, int threads, int t, size_t *a, size_t *b);

/* C[M][N] = act(A[M][K] (row stride lda) * B[N][K]^T + beta * C + bias);
 * bias may be NULL. */
void dm_cpu_gemm(const dm_cpu *cx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B,
                 float *C, float beta, const float *bias, dm_act act);

/* Dense 3x3 convolution, padding 1, of n images of h x w: y = act(conv(x)). */
void dm_cpu_conv3x3(const dm_cpu *cx, const dm_conv3x3 *cv, const float *x, float *y, float *cols, int n, int h,
                    int w, int *oh_out, int *ow_out, dm_act act);

/* Channels-last [n][hw][c] -> NCHW [n][c][hw]. */
void dm_cpu_to_nchw(const dm_cpu *cx, const float *x, float *out, int n, size_t hw, size_t c);

/* The backbone on the CPU (arguments checked by the caller); each stage's
 * normalized output is also copied channels-last to stage_nhwc[s] where
 * that is non-NULL. */
dm_status dm_cpu_forward(const dm_model *model, dm_workspace *ws, const float *input, int n, int h, int w,
                         const dm_outputs *outputs, float *const stage_nhwc[DM_NUM_STAGES]);

#endif
