/* workspace.h - the activation buffers of a forward pass, sized once for the
 * largest batch and image a workspace accepts.  The CPU and the CUDA backend
 * both plan with it, so they hold the same tensors in the same layouts. */
#ifndef DM_WORKSPACE_H
#define DM_WORKSPACE_H

#include "damamba.h"

#include <stddef.h>

/* Floats per buffer; the names are the CPU forward pass's workspace fields. */
typedef struct dm_plan {
    size_t x, a, v, ob, u, delta, off, dbl, hid, cols, state, chunk_state, pooled;
    size_t input;                 /* n x in_chans x h x w */
    size_t stage[DM_NUM_STAGES];  /* stage outputs, n x C x H x W */
    int stage_h[DM_NUM_STAGES], stage_w[DM_NUM_STAGES];
} dm_plan;

/* Plan for n images of h x w.  conv_band(cin) is how many output pixels one
 * im2col band of a dense 3x3 convolution with cin input channels holds. */
void dm_plan_buffers(const dm_config *c, int n, int h, int w, size_t (*conv_band)(int cin), dm_plan *out);

#endif
