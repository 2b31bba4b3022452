/* workspace.h - the activation buffers of a forward pass, sized once for the
 * largest batch and image a workspace accepts.  The CPU and the CUDA backend
 * both plan with it, so they hold the same tensors in the same layouts. */
#ifndef DM_WORKSPACE_H
#define DM_WORKSPACE_H

#include "damamba.h"

#include <stddef.h>

#include "backend_cuda.h"

/* A chunked scan splits one image's sequence among at most this many. */
#define SCAN_MAX_CHUNKS 64

/* The CPU workspace: every buffer a forward pass writes. */
struct dm_workspace {
    dm_backend backend;
    int max_batch, max_h, max_w;
    size_t bytes;
    float *x, *t;       /* block input/output and its normalized copy [P][C] */
    float *a, *v, *ob;  /* in_proj output (later y), SiLU(conv) values, offset branch */
    float *u, *delta;   /* sampled features, dt projection [P][C] */
    float *off, *dbl;   /* offsets [P][2G], x_proj output [P][R+2] */
    float *hid, *hid2;  /* ConvFFN hidden [P][F] */
    float *cols;        /* im2col band */
    float *state;       /* scan states [N][C] */
    float *chunk_state; /* entry states of a chunked scan's chunks [SCAN_MAX_CHUNKS][C] */
    float *pooled;      /* [N][C3] */
    float *head;        /* the UperNet head's buffers (upernet.c), or NULL */
    void *block;        /* one allocation behind all of the above */
    dm_cuda_workspace *cuda; /* the device side, for DM_BACKEND_CUDA */
};

/* Floats per buffer; the names are the CPU forward pass's workspace fields. */
typedef struct dm_plan {
    size_t x, a, v, ob, u, delta, off, dbl, hid, cols, state, chunk_state, pooled;
    size_t head;                  /* the UperNet head's buffers, 0 without one */
    size_t input;                 /* n x in_chans x h x w */
    size_t stage[DM_NUM_STAGES];  /* stage outputs, n x C x H x W */
    int stage_h[DM_NUM_STAGES], stage_w[DM_NUM_STAGES];
} dm_plan;

/* Plan for n images of h x w.  conv_band(cin) is how many output pixels one
 * im2col band of a dense 3x3 convolution with cin input channels holds. */
void dm_plan_buffers(const dm_config *c, int n, int h, int w, size_t (*conv_band)(int cin), dm_plan *out);

/* The CPU's band size for conv_band. */
size_t dm_conv_band(int cin);

/* Floats the UperNet head needs for n images of h x w (a model input), and
 * the im2col buffer its 3x3 convolutions need, grown into *cols. */
size_t dm_upernet_plan(const dm_config *c, int n, int h, int w, size_t (*conv_band)(int cin), size_t *cols);

#endif
