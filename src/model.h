/* model.h - a loaded DAMamba: configuration plus parameters, with
 * BatchNorm, conv_constant and layer scales folded in at load time.
 * Layouts are the ones the channels-last forward pass wants. */
#ifndef DM_MODEL_H
#define DM_MODEL_H

#include "damamba.h"
#include "tensor_file.h"

/* A dense 3x3 convolution, BatchNorm folded in. */
typedef struct dm_conv3x3 {
    int cin, cout, stride, pad;
    float *weight; /* [cout][3][3][cin]: rows of an im2col GEMM */
    float *bias;   /* [cout] */
} dm_conv3x3;

/* A 1x1 convolution or fully connected layer, BatchNorm folded in (or a
 * plain one with its bias). */
typedef struct dm_conv1x1 {
    int cin, cout;
    float *weight; /* [cout][cin] */
    float *bias;   /* [cout] */
} dm_conv1x1;

/* mmseg's UPerHead: every ConvModule (conv, BatchNorm, ReLU) folded. */
#define DM_PPM_SCALES 4
extern const int dm_ppm_scales[DM_PPM_SCALES]; /* 1, 2, 3, 6 */

typedef struct dm_upernet {
    dm_conv1x1 psp[DM_PPM_SCALES];     /* stage 3 -> channels, per pool scale */
    dm_conv3x3 bottleneck;             /* C3 + 4 channels -> channels */
    dm_conv1x1 lateral[DM_NUM_STAGES - 1];
    dm_conv3x3 fpn[DM_NUM_STAGES - 1]; /* channels -> channels */
    dm_conv3x3 fpn_bottleneck;         /* 4 channels -> channels */
    dm_conv1x1 cls;                    /* conv_seg: channels -> classes */
} dm_upernet;

/* Mask R-CNN's neck and heads (mmdetection's FPN, RPNHead,
 * Shared2FCBBoxHead, FCNMaskHead).  Feature maps are channels-last. */
typedef struct dm_det_heads {
    dm_conv1x1 lateral[DM_NUM_STAGES]; /* neck.lateral_convs */
    dm_conv3x3 fpn[DM_NUM_STAGES];     /* neck.fpn_convs, no activation */
    dm_conv3x3 rpn_conv;               /* followed by ReLU */
    dm_conv1x1 rpn_cls, rpn_reg;       /* A and 4A outputs per pixel */
    dm_conv1x1 fc[2];                  /* shared_fcs; fc[0] takes RoI features as
                                          [7][7][C] (reordered from C x 7 x 7) */
    dm_conv1x1 cls, reg;               /* classes + 1 (background last), 4 x classes */
    dm_conv3x3 *mask_convs;            /* mask_convs_count, each followed by ReLU */
    int mask_convs_count;
    dm_conv1x1 upsample;               /* the 2x2 stride-2 deconvolution as a
                                          GEMM: rows (dy, dx, out channel) */
    dm_conv1x1 mask_logits;            /* one channel per class */
} dm_det_heads;

/* One block; C = dim, G = groups, R = dt_rank, F = mlp hidden.  Here and in
 * every struct of the model, a matrix-product weight given as [n][k] (the
 * linear layers, the convolutions' [cout][taps][cin]) is held packed: see
 * dm_product below. */
typedef struct dm_block {
    float *pos_w9, *pos_b;           /* pos_embed: [9][C] (weight + constant), [C] */
    float *norm1_g, *norm1_b;        /* [C] */
    /* DASSM token mixer */
    float *in_proj;                  /* [C][C] */
    float *conv_w9, *conv_b;         /* conv2d: [9][C], [C] */
    float *off_dw_w9, *off_dw_b;     /* da_scan.dw_conv.0: [9][C], [C] */
    float *off_ln_g, *off_ln_b;      /* da_scan.dw_conv.1.1: [C] */
    float *off_w, *off_b;            /* da_scan.offset: [2G][C], [2G] */
    float *x_proj;                   /* [R + 2][C] */
    float *dt_proj;                  /* [C][R] */
    float *dt_bias;                  /* [C] */
    float *a;                        /* [C], -exp(A_logs) */
    float *d;                        /* [C], Ds */
    float *out_norm_g, *out_norm_b;  /* [C] */
    float *out_proj;                 /* [C][C], rows scaled by layer_scale_1 */
    /* ConvFFN, norm2 (BatchNorm) folded into fc1 */
    float *fc1_w, *fc1_b;            /* [F][C], [F] */
    float *mlp_w9, *mlp_b;           /* mlp.conv: [9][F] (weight + constant), [F] */
    float *fc2_w, *fc2_b;            /* [C][F], [C], scaled by layer_scale_2 */
} dm_block;

typedef struct dm_stage {
    dm_conv3x3 downsample; /* stages 1..3 */
    dm_block *blocks;
    int block_count;        /* blocks held: config.depths[s], or 1 or 0 in a single-block model */
    float *norm_g, *norm_b; /* norm{i+1}: the stage output's LayerNorm */
} dm_stage;

struct dm_model {
    dm_config config;
    dm_conv3x3 stem[4];
    dm_stage stages[DM_NUM_STAGES];
    float *head_w, *head_b; /* [classes][C3], [classes] */
    dm_upernet *upernet;    /* the segmentation head, or NULL */
    dm_det_heads det;       /* when config.det_classes > 0 */
    void **allocs;          /* every parameter buffer, for freeing */
    size_t alloc_count, alloc_cap;
    dm_meta *meta;
    size_t meta_count;
    char **class_names; /* the metadata's 'classes', or NULL */
    uint8_t *palette;   /* the metadata's 'palette' ([classes][3]), or NULL */
    int *category_ids;  /* a detector's COCO category ids, or NULL */
    /* Unique among the models of this process, so what a workspace
     * prepared from one model's weights is never taken for another's that
     * happens to reuse its addresses. */
    uint64_t serial;
};

/* The official variants' configurations. */
dm_status dm_variant_config(char variant, int in_chans, int num_classes,
                            dm_config *out);

/* Where parameter values come from while binding: a file, or a generator. */
typedef struct dm_param_source {
    const dm_tensor_file *file; /* NULL: call generate */
    const dm_tensor_file *head_file; /* the UperNet or Mask R-CNN heads', when file has them */
    /* What the names in file and head_file lack of the checkpoint's own
     * (views of it without "backbone." or "decode_head."): messages show
     * the names as the checkpoint has them.  NULL for none. */
    const char *prefix, *head_prefix;
    void (*generate)(void *ctx, const char *name, const dm_tensor *shape,
                     float *dst);
    void *ctx;
} dm_param_source;

/* Build a model of a known configuration from a parameter source. */
dm_status dm_model_build(const dm_config *config, const dm_param_source *src,
                         dm_model **out);

/* Infer the configuration from a file's tensor names and shapes. */
dm_status dm_config_infer(const dm_tensor_file *file, dm_config *out);

/* Load from an open tensor file (the public loader and tests use this). */
dm_status dm_model_from_file(const dm_tensor_file *file, dm_model **out);

/* A model holding just one block (stage 0, block 0) whose tensors carry no
 * prefix, as in a single-block test file; for tests of the block alone. */
dm_status dm_block_load(const dm_tensor_file *file, const dm_config *config,
                        dm_model **out);
/* Run that block on n images of h x w (NCHW in and out); the workspace must
 * have been created for 4h x 4w. */
dm_status dm_block_run(const dm_model *model, dm_workspace *ws,
                       const float *input, float *output, int n, int h, int w);

/* A matrix product's weight: n x k, W[n][k] multiplying column k of the
 * input into output channel n.  The model holds every such weight (linear
 * layers, and convolutions as n = out channels by k = taps x in channels)
 * packed by dm_pack_panels (panels.h), as the CPU's product kernels read
 * it. */
typedef struct dm_product {
    size_t n, k;
} dm_product;

/* A copy of model's structure whose parameters are place(ctx, p, floats,
 * product) of the model's parameter p of `floats` floats: the same
 * parameters in another memory (a device's).  product is the shape of a
 * matrix-product weight (p then packed, floats dm_packed_floats(n, k)),
 * NULL for any other parameter.  place may return NULL (a measuring
 * pass).  The copy's block and mask-conv arrays are its own: free them
 * with dm_model_mirror_free. */
typedef float *(*dm_param_place)(void *ctx, const float *src, size_t floats, const dm_product *product);
dm_status dm_model_mirror(const dm_model *model, dm_param_place place, void *ctx, dm_model *out);
void dm_model_mirror_free(dm_model *mirror);

/* Multiply-accumulates of the UperNet head's convolutions for an h x w input. */
double dm_upernet_macs(const dm_config *c, int h, int w);

/* Output size of a stride-2 3x3 convolution with padding 1. */
static inline int dm_down2(int n) { return (n - 1) / 2 + 1; }

#endif
