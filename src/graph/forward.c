/* forward.c - the DAMamba forward pass, written once against the operator
 * table (ops.h).  Reads top to bottom like the model: stem, then per stage
 * an optional downsample, the blocks and the stage norm, then the head. */
#include "model.h"

#include "error.h"
#include "ops.h"
#include "versioned.h"
#include "workspace.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

/* x = conv(x) of a convolution whose input is ws->tokens: the output goes
 * to ws->normed, which then takes the residual stream's place. */
static dm_view conv_in_place(dm_workspace *ws, const dm_conv3x3 *cv, dm_view x)
{
    dm_view y = dm_view_of(ws->normed, x.n, dm_conv3x3_out(x.h, cv->stride, cv->pad),
                           dm_conv3x3_out(x.w, cv->stride, cv->pad), cv->cout);
    OP(ws, conv3x3, cv, x, DM_ACT_NONE, y);
    swap(&ws->tokens, &ws->normed);
    y.data = ws->tokens;
    return y;
}

/* One block on n images of h x w at stage s of a model of configuration
 * cfg: *x <- block(*x).  *x holds the residual stream, *spare is as large
 * and free: the position conv writes its output there and the two trade
 * places.  The other buffers are the workspace's, from their start.  The
 * block's offsets go to `offsets` (host memory) unless it is NULL. */
static void block_forward(dm_workspace *ws, const dm_config *cfg, int s, const dm_block *blk, float **x,
                          float **spare, int n, int h, int w, float *offsets)
{
    int C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];
    size_t P = (size_t)n * h * w;
#define MAP(buffer, channels) dm_view_of(buffer, n, h, w, channels)

    /* x = pos_embed(x): ResDWC, the identity folded into its kernel */
    OP(ws, dwconv3x3, MAP(*x, C), blk->pos_w9, blk->pos_b, DM_ACT_NONE, MAP(*spare, C));
    swap(x, spare);
    float *tokens = *x, *normed = *spare;

    /* x = x + DASSM(norm1(x)) */
    OP(ws, layernorm, MAP(tokens, C), blk->norm1_g, blk->norm1_b, DM_ACT_NONE, MAP(normed, C));
    OP(ws, gemm, P, C, C, normed, C, blk->in_proj, 0.0f, NULL, DM_ACT_NONE, ws->projected);
    OP(ws, dwconv3x3, MAP(ws->projected, C), blk->conv_w9, blk->conv_b, DM_ACT_SILU, MAP(ws->values, C));
    /* offsets: Linear(GELU(LN(dwconv(normed)))) -> (dx, dy) per pixel and group */
    OP(ws, dwconv3x3, MAP(normed, C), blk->off_dw_w9, blk->off_dw_b, DM_ACT_NONE, MAP(ws->offset_hidden, C));
    OP(ws, layernorm, MAP(ws->offset_hidden, C), blk->off_ln_g, blk->off_ln_b, DM_ACT_GELU,
       MAP(ws->offset_hidden, C));
    OP(ws, gemm, P, 2 * G, C, ws->offset_hidden, C, blk->off_w, 0.0f, blk->off_b, DM_ACT_NONE, ws->offsets);
    if (offsets) OP(ws, output, MAP(ws->offsets, 2 * G), DM_LAYOUT_NHWC, offsets);
    /* the Dynamic Adaptive Scan: sample at the moved positions, keep order */
    OP(ws, sample, MAP(ws->values, C), ws->offsets, G, MAP(ws->sampled, C));
    /* selective scan inputs: dt (R), B, C per pixel; delta = dt_projs @ dt */
    OP(ws, gemm, P, R + 2, C, ws->sampled, C, blk->x_proj, 0.0f, NULL, DM_ACT_NONE, ws->dt_bc);
    OP(ws, gemm, P, C, R, ws->dt_bc, R + 2, blk->dt_proj, 0.0f, NULL, DM_ACT_NONE, ws->delta);
    dm_scan_inputs scan = {MAP(ws->sampled, C), ws->delta, ws->dt_bc + R, (size_t)R + 2, blk->a, blk->d, blk->dt_bias};
    dm_view scanned = MAP(ws->projected, C); /* in_proj's output is spent */
    OP(ws, scan, &scan, scanned);
    OP(ws, layernorm, scanned, blk->out_norm_g, blk->out_norm_b, DM_ACT_NONE, scanned);
    /* residual add, layer scale folded */
    OP(ws, gemm, P, C, C, scanned.data, C, blk->out_proj, 1.0f, NULL, DM_ACT_NONE, tokens);

    /* x = x + ConvFFN(norm2(x)), norm2 folded into fc1 */
    OP(ws, gemm, P, F, C, tokens, C, blk->fc1_w, 0.0f, blk->fc1_b, DM_ACT_GELU, ws->ffn_hidden);
    OP(ws, dwconv3x3, MAP(ws->ffn_hidden, F), blk->mlp_w9, blk->mlp_b, DM_ACT_NONE, MAP(ws->ffn_conv, F));
    OP(ws, gemm, P, C, F, ws->ffn_conv, F, blk->fc2_w, 1.0f, blk->fc2_b, DM_ACT_NONE, tokens);
#undef MAP
}

size_t dm_group_pixels(const dm_config *cfg, const dm_ops *ops, int s)
{
    if (ops->group_bytes == 0) return SIZE_MAX;
    size_t C = cfg->dims[s], F = cfg->mlp_hidden[s];
    /* the floats of a pixel in tokens, normed, projected, values,
     * offset_hidden, sampled, delta, offsets, dt_bc, ffn_hidden, ffn_conv */
    size_t floats = 7 * C + 2 * (size_t)cfg->groups[s] + (size_t)cfg->dt_rank[s] + 2 + 2 * F;
    return ops->group_bytes / (floats * sizeof(float));
}

/* Images of a batch of n that run a stage's blocks together: as many as
 * dm_group_pixels allows (at least one), in groups of equal size. */
static int images_per_group(const dm_workspace *ws, const dm_config *cfg, int s, int n, int h, int w)
{
    size_t fit = dm_group_pixels(cfg, &ws->ops, s) / ((size_t)h * w);
    if (fit >= (size_t)n) return n;
    if (fit < 1) fit = 1;
    size_t groups = (n + fit - 1) / fit;
    return (int)((n + groups - 1) / groups);
}

/* blocks[0 .. count) of stage s on the n images of h x w in ws->tokens,
 * group by group: each block's buffers but the residual stream then hold
 * one group.  outputs (may be NULL) says which block's offsets to keep. */
static void run_blocks(dm_workspace *ws, const dm_config *cfg, int s, const dm_block *blocks, int count, int n,
                       int h, int w, const dm_outputs *outputs)
{
    int per_group = images_per_group(ws, cfg, s, n, h, w), C = cfg->dims[s];
    size_t image = (size_t)h * w * C;
    for (int i0 = 0; i0 < n; i0 += per_group) {
        int m = per_group < n - i0 ? per_group : n - i0;
        float *home = ws->tokens + i0 * image, *x = home, *spare = ws->normed;
        for (int j = 0; j < count; j++) {
            float *offsets = NULL;
            if (outputs && outputs->offsets && outputs->offsets_stage == s && outputs->offsets_block == j)
                offsets = outputs->offsets + (size_t)i0 * h * w * 2 * cfg->groups[s];
            block_forward(ws, cfg, s, &blocks[j], &x, &spare, m, h, w, offsets);
        }
        /* after an odd number of blocks the group's stream is in normed */
        if (x == home) continue;
        if (m == n)
            swap(&ws->tokens, &ws->normed);
        else
            OP(ws, concat, dm_view_of(x, m, h, w, C), 0, dm_view_of(home, m, h, w, C));
    }
}

/* The stem on a piece of the batch, images [i0, i0 + piece.n), whose input
 * is in ws->normed: conv-BN-GELU x3, conv-BN into ws->tokens.  Returns the
 * piece's output. */
static dm_view stem(dm_workspace *ws, const dm_conv3x3 convs[4], int i0, dm_view piece)
{
    /* each conv writes the buffer its successor does not read */
    float *into[4] = {ws->projected, ws->values, ws->projected, ws->tokens};
    dm_act acts[4] = {DM_ACT_GELU, DM_ACT_GELU, DM_ACT_GELU, DM_ACT_NONE};
    dm_view x = piece;
    for (int i = 0; i < 4; i++) {
        const dm_conv3x3 *cv = &convs[i];
        int oh = dm_conv3x3_out(x.h, cv->stride, cv->pad), ow = dm_conv3x3_out(x.w, cv->stride, cv->pad);
        dm_view y = dm_view_of(into[i] + (size_t)i0 * oh * ow * cv->cout, x.n, oh, ow, cv->cout);
        OP(ws, conv3x3, cv, x, acts[i], y);
        x = y;
    }
    return x;
}

/* The whole pass; the caller brackets it with begin and finish. */
void dm_enqueue_forward(dm_workspace *ws, const dm_model *params, const float *input, int n, int h, int w,
                        const dm_outputs *outputs, float *const keep[DM_NUM_STAGES])
{
    const dm_config *cfg = &params->config;
    size_t image = (size_t)cfg->in_chans * h * w;
    /* bring the batch in piece by piece, each piece's stem starting as soon
     * as it has arrived */
    int per_piece = (n + ws->ops.input_pieces - 1) / ws->ops.input_pieces;
    dm_view x = {0};
    for (int i0 = 0; i0 < n; i0 += per_piece) {
        dm_view piece = dm_view_of(ws->normed + i0 * image, per_piece < n - i0 ? per_piece : n - i0, h, w,
                                   cfg->in_chans);
        OP(ws, input, input + i0 * image, DM_LAYOUT_NCHW, piece);
        x = stem(ws, params->stem, i0, piece);
    }
    x.n = n;
    x.data = ws->tokens;

    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_stage *stage = &params->stages[s];
        if (s > 0) x = conv_in_place(ws, &stage->downsample, x);
        run_blocks(ws, cfg, s, stage->blocks, cfg->depths[s], n, x.h, x.w, outputs);
        x.data = ws->tokens;
        OP(ws, layernorm, x, stage->norm_g, stage->norm_b, DM_ACT_NONE, x);
        if (outputs->stages[s]) OP(ws, output, x, DM_LAYOUT_NCHW, outputs->stages[s]);
        if (keep && keep[s]) OP(ws, concat, x, 0, dm_view_of(keep[s], x.n, x.h, x.w, x.c));
    }

    if (outputs->logits) {
        dm_view pooled = dm_view_of(ws->pooled, n, 1, 1, x.c);
        OP(ws, avg_pool, x, pooled);
        OP(ws, gemm, n, cfg->num_classes, x.c, ws->pooled, x.c, params->head_w, 0.0f, params->head_b, DM_ACT_NONE,
           ws->logits);
        OP(ws, output, dm_view_of(ws->logits, n, 1, 1, cfg->num_classes), DM_LAYOUT_NHWC, outputs->logits);
    }
}

/* Do workspace buffers planned for configuration a fit a model of b?  Every
 * field but num_params is a shape: the backbone's before it, the heads'
 * after. */
static int same_shapes(const dm_config *a, const dm_config *b)
{
    size_t heads = offsetof(dm_config, seg_classes), end = offsetof(dm_config, mask_convs) + sizeof b->mask_convs;
    return memcmp(a, b, offsetof(dm_config, num_params)) == 0 &&
           memcmp((const char *)a + heads, (const char *)b + heads, end - heads) == 0;
}

dm_status dm_check_run(const char *who, const dm_model *model, const dm_workspace *ws, int n, int h, int w,
                       const dm_model **params)
{
    if (!model || !ws)
        return dm_fail(DM_ERR_ARGUMENT, "%s: model and workspace are required", who);
    /* the buffers are planned for one model's shapes */
    const dm_config *a = &ws->config, *b = &model->config;
    if (!same_shapes(a, b))
        return dm_fail(DM_ERR_ARGUMENT,
                       "%s: the workspace was created for another model (depths %d, %d, %d, %d, dims %d, %d, %d, %d, "
                       "%d classes), not this one (depths %d, %d, %d, %d, dims %d, %d, %d, %d, %d classes)",
                       who, a->depths[0], a->depths[1], a->depths[2], a->depths[3], a->dims[0], a->dims[1], a->dims[2],
                       a->dims[3], a->num_classes, b->depths[0], b->depths[1], b->depths[2], b->depths[3], b->dims[0],
                       b->dims[1], b->dims[2], b->dims[3], b->num_classes);
    if (!(*params = ws->ops.params(ws->ops.ctx, model)))
        return dm_fail(DM_ERR_ARGUMENT, "%s: the %s workspace holds the weights of the model it was created for; "
                                        "this is another model", who, ws->ops.name);
    if (n < 1 || h < 1 || w < 1)
        return dm_fail(DM_ERR_ARGUMENT, "%s: batch %d of %dx%d images is empty", who, n, h, w);
    if (n > ws->max_batch || h > ws->max_h || w > ws->max_w)
        return dm_fail(DM_ERR_ARGUMENT, "%s: batch %d of %dx%d images exceeds the workspace (batch %d, %dx%d)",
                       who, n, h, w, ws->max_batch, ws->max_h, ws->max_w);
    return DM_OK;
}

dm_status dm_forward(const dm_model *model, dm_workspace *ws, const float *input, int n, int h, int w,
                     const dm_outputs *caller_outputs)
{
    if (!input || !caller_outputs) return dm_fail(DM_ERR_ARGUMENT, "dm_forward: input and outputs are required");
    dm_outputs full_outputs;
    dm_status st = dm_struct_import(&full_outputs, sizeof full_outputs, caller_outputs, DM_OUTPUTS_MIN_SIZE,
                                    "dm_outputs");
    if (st) return st;
    const dm_outputs *outputs = &full_outputs;
    const dm_model *params;
    if ((st = dm_check_run("dm_forward", model, ws, n, h, w, &params))) return st;
    const dm_config *cfg = &model->config;
    if (outputs->logits && cfg->num_classes == 0)
        return dm_fail(DM_ERR_ARGUMENT, "dm_forward: logits requested but the model has no head");
    if (outputs->offsets &&
        (outputs->offsets_stage < 0 || outputs->offsets_stage >= DM_NUM_STAGES || outputs->offsets_block < 0 ||
         outputs->offsets_block >= cfg->depths[outputs->offsets_stage]))
        return dm_fail(DM_ERR_ARGUMENT, "dm_forward: no block %d in stage %d (the model has depths %d, %d, %d, %d)",
                       outputs->offsets_block, outputs->offsets_stage, cfg->depths[0], cfg->depths[1],
                       cfg->depths[2], cfg->depths[3]);
    if ((st = ws->ops.begin(ws->ops.ctx))) return st;
    dm_enqueue_forward(ws, params, input, n, h, w, outputs, NULL);
    return ws->ops.finish(ws->ops.ctx);
}

dm_status dm_block_run(const dm_model *model, dm_workspace *ws, const float *input, float *output, int n, int h,
                       int w)
{
    if (!input || !output) return dm_fail(DM_ERR_ARGUMENT, "dm_block_run: input and output are required");
    /* the workspace holds stage 0, a quarter of the image's side */
    const dm_model *params;
    dm_status st = dm_check_run("dm_block_run", model, ws, n, 4 * h, 4 * w, &params);
    if (st) return st;
    if ((st = ws->ops.begin(ws->ops.ctx))) return st;
    dm_view x = dm_view_of(ws->tokens, n, h, w, model->config.dims[0]);
    OP(ws, input, input, DM_LAYOUT_NCHW, x);
    run_blocks(ws, &params->config, 0, params->stages[0].blocks, 1, n, h, w, NULL);
    x.data = ws->tokens;
    OP(ws, output, x, DM_LAYOUT_NCHW, output);
    return ws->ops.finish(ws->ops.ctx);
}

/* ------------------------------------------------------------------ costs */

int64_t dm_model_macs(const dm_model *model, int h, int w)
{
    if (!model || h < 1 || w < 1) return 0;
    const dm_config *c = &model->config;
    /* Counted in double: huge sizes and depths overflow 64-bit integers. */
    double macs = c->seg_classes ? dm_upernet_macs(c, h, w) : 0;
    for (int i = 0; i < 4; i++) {
        const dm_conv3x3 *cv = &model->stem[i];
        if (cv->stride == 2) { h = dm_down2(h); w = dm_down2(w); }
        macs += (double)h * w * cv->cout * cv->cin * 9;
    }
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        if (s > 0) {
            h = dm_down2(h);
            w = dm_down2(w);
            macs += (double)h * w * c->dims[s] * c->dims[s - 1] * 9;
        }
        double P = (double)h * w, C = c->dims[s], F = c->mlp_hidden[s], G = c->groups[s], R = c->dt_rank[s];
        double block = P * (9 * C              /* pos_embed */
                             + C * C + 9 * C    /* in_proj, conv2d */
                             + 9 * C + 2 * G * C /* offset branch */
                             + 4 * C            /* bilinear sampler */
                             + (R + 2) * C + R * C /* x_proj, dt_projs */
                             + 3 * C            /* scan */
                             + C * C            /* out_proj */
                             + F * C + 9 * F + F * C); /* ConvFFN */
        macs += block * c->depths[s];
    }
    macs += (double)c->num_classes * c->dims[3];
    return macs < 0x1p63 ? (int64_t)macs : INT64_MAX;
}
