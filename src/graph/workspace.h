/* workspace.h - what a forward pass writes: the graph's buffers, named by
 * their role in the model, sized once for the largest batch and image the
 * workspace accepts, in the memory of the backend whose table runs them. */
#ifndef DM_WORKSPACE_H
#define DM_WORKSPACE_H

#include "damamba.h"
#include "ops.h"

#include <stddef.h>

/* The graph's buffers.  P = pixels of the batch at the current stage (in
 * a stage's blocks, of the group of images they run on: all but tokens
 * hold one group), C its channels, G offset groups, R dt rank, F the
 * ConvFFN's hidden width. */
#define DM_GRAPH_BUFFERS(X)                                                                     \
    X(tokens)        /* [P][C] the residual stream: block input and output, stage outputs */   \
    X(normed)        /* [P][C] norm1's output; also the input batch and the downsample's */     \
    X(projected)     /* [P][C] in_proj's output; once read, the scan's output */                \
    X(values)        /* [P][C] SiLU(conv2d(projected)): what the sampler reads */              \
    X(offset_hidden) /* [P][C] the offset branch before its Linear */                          \
    X(offsets)       /* [P][2G] the sampling offsets */                                         \
    X(sampled)       /* [P][C] the sampler's output, the scan's input */                        \
    X(dt_bc)         /* [P][R + 2] x_proj's output: dt, then B and C */                         \
    X(delta)         /* [P][C] dt_projs's output */                                             \
    X(ffn_hidden)    /* [P][F] fc1's output */                                                  \
    X(ffn_conv)      /* [P][F] the ConvFFN's depthwise conv */                                  \
    X(pooled)        /* [n][C3] the head's global mean */                                       \
    X(logits)        /* [n][classes] */                                                        \
    X(head)          /* the UperNet head's buffers, carved by upernet.c */

/* Floats of each buffer, and what the backend must reserve besides. */
typedef struct dm_plan {
#define X(name) size_t name;
    DM_GRAPH_BUFFERS(X)
#undef X
    size_t scratch;       /* the largest scratch one operator needs */
    size_t transfer;      /* floats of input plus every output of one pass */
    int outputs;          /* outputs one pass delivers at most */
} dm_plan;

struct dm_workspace {
    dm_backend backend;
    dm_ops ops;
    dm_config config;      /* of the model the workspace was created for */
    int max_batch, max_h, max_w;
#define X(name) float *name;
    DM_GRAPH_BUFFERS(X)
#undef X
    float *buffers; /* the one allocation behind all of the above */
    size_t bytes;   /* the buffers' bytes; the backend adds its own */
};

/* Plan a forward pass of n images of h x w on the backend of `ops`. */
void dm_plan_forward(const dm_config *c, const dm_ops *ops, int n, int h, int w, dm_plan *out);

/* The table's entries are called through the context they come with. */
#define OP(ws, entry, ...) (ws)->ops.entry((ws)->ops.ctx, __VA_ARGS__)

/* Enqueue the backbone and the classification head (forward.c) on n images
 * of h x w; where keep[s] is non-NULL, stage s's output is also copied
 * there (backend memory, channels-last).  keep may be NULL. */
void dm_enqueue_forward(dm_workspace *ws, const dm_model *params, const float *input, int n, int h, int w,
                        const dm_outputs *outputs, float *const keep[DM_NUM_STAGES]);

/* Pixels a stage's blocks run on at once at most on the backend of ops:
 * the images of one group (forward.c); SIZE_MAX where the backend runs
 * whole batches. */
size_t dm_group_pixels(const dm_config *c, const dm_ops *ops, int s);

/* The checks every entry point makes (model, workspace, sizes); NULL-safe.
 * who names the entry point in the message; on success *params is the
 * model's parameters as the backend reads them. */
dm_status dm_check_run(const char *who, const dm_model *model, const dm_workspace *ws, int n, int h, int w,
                       const dm_model **params);

/* Floats of the UperNet head's buffers for n images of h x w (a network
 * input); grows plan's scratch for its convolutions and its transfers. */
size_t dm_upernet_plan(const dm_config *c, const dm_ops *ops, int n, int h, int w, dm_plan *plan);

#endif
