/* detect.c - Mask R-CNN on a DAMamba backbone, as mmdetection 2.28 runs it
 * at test time: backbone, FPN, RPN proposals, the box head with per-class
 * NMS, the mask head, and masks pasted into the original image.  Reads top
 * to bottom in that order.  The networks run on the workspace's operator
 * table, on either backend; choosing proposals and detections (sorting,
 * NMS) and pasting masks run on the host between passes, on what each pass
 * delivered through output().  Each pass first reserves the transfers it
 * makes, which depend on the image and the settings. */
#include "detect.h"

#include "detect_kernels.h"
#include "error.h"
#include "host_memory.h"
#include "model.h"
#include "ops.h"
#include "versioned.h"
#include "workspace.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void dm_det_settings_default(dm_det_settings *out)
{
    *out = (dm_det_settings){
        .size = sizeof(dm_det_settings), .rpn_pre_nms = 1000, .rpn_iou = 0.7f, .rpn_proposals = 1000,
        .score_thr = 0.05f, .iou = 0.5f, .max_dets = 100, .mask_thr = 0.5f, .masks = DM_MASKS_BITMAP,
    };
}

/* Anchor generator and box coders of the authors' config. */
static const float anchor_ratios[] = {0.5f, 1.0f, 2.0f};
static const float anchor_scales[] = {8.0f};
static const float zero_means[4] = {0, 0, 0, 0};
static const float rpn_stds[4] = {1, 1, 1, 1};
static const float rcnn_stds[4] = {0.1f, 0.1f, 0.2f, 0.2f};
#define WH_RATIO_CLIP (16.0 / 1000.0)
#define NUM_ANCHORS 3

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static void *alloc_floats(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

/* Backend memory of one pass, released together. */
typedef struct pass_memory {
    dm_workspace *ws;
    float *blocks[32];
    int count;
} pass_memory;

static float *pass_alloc(pass_memory *pm, size_t floats)
{
    if (pm->count == (int)(sizeof pm->blocks / sizeof pm->blocks[0])) return NULL;
    float *p = pm->ws->ops.alloc(pm->ws->ops.ctx, floats ? floats : 1);
    if (p) pm->blocks[pm->count++] = p;
    return p;
}

static void pass_release(pass_memory *pm)
{
    for (int i = 0; i < pm->count; i++) pm->ws->ops.release(pm->ws->ops.ctx, pm->blocks[i]);
    pm->count = 0;
}

/* -------------------------------------------------------- FPN and RPN */

/* Backbone, FPN and RPN head in one pass: levels[0..4] = P2..P6; the RPN's
 * logits and deltas of every level come back to st. */
static dm_status backbone_fpn_rpn(dm_workspace *ws, pass_memory *pm, const dm_model *params, int F, const float *input,
                                  int h, int w, dm_view levels[DM_FPN_LEVELS], dm_det_state *st)
{
    const dm_det_heads *d = &params->det;
    dm_view lat[DM_NUM_STAGES];
    float *stages[DM_NUM_STAGES];
    int lh = dm_down2(dm_down2(h)), lw = dm_down2(dm_down2(w));
    size_t transfer = (size_t)params->config.in_chans * h * w;
    for (int l = 0; l < DM_FPN_LEVELS; l++) {
        /* each level halves the last (P6 by 1x1 pooling at stride 2 too) */
        int ph = lh, pw = lw;
        size_t P = (size_t)ph * pw;
        levels[l] = dm_view_of(pass_alloc(pm, P * F), 1, ph, pw, F);
        if (l < DM_NUM_STAGES) {
            lat[l] = dm_view_of(pass_alloc(pm, P * F), 1, ph, pw, F);
            stages[l] = pass_alloc(pm, P * d->lateral[l].cin);
        }
        st->feat_h[l] = ph;
        st->feat_w[l] = pw;
        transfer += P * (NUM_ANCHORS + 4 * NUM_ANCHORS + (st->keep_features ? F : 0)); /* RPN outputs, levels */
        if (!(st->rpn_cls[l] = alloc_floats(P * NUM_ANCHORS)) || !(st->rpn_reg[l] = alloc_floats(P * 4 * NUM_ANCHORS)) ||
            (st->keep_features && !(st->feat[l] = alloc_floats(P * F))))
            return dm_fail(DM_ERR_NOMEM, "out of memory for the RPN outputs");
        lh = dm_down2(lh);
        lw = dm_down2(lw);
    }
    size_t most = (size_t)levels[0].h * levels[0].w;
    float *upsampled = pass_alloc(pm, most * F), *hidden = pass_alloc(pm, most * F);
    float *cls = pass_alloc(pm, most * NUM_ANCHORS), *reg = pass_alloc(pm, most * 4 * NUM_ANCHORS);
    for (int l = 0; l < DM_FPN_LEVELS; l++)
        if (!levels[l].data || (l < DM_NUM_STAGES && (!lat[l].data || !stages[l]))) upsampled = NULL;
    if (!upsampled || !hidden || !cls || !reg) return dm_fail_nomem("out of memory for the FPN");

    dm_status status = ws->ops.reserve(ws->ops.ctx, 0, transfer, DM_FPN_LEVELS * (st->keep_features ? 3 : 2));
    if (!status) status = ws->ops.begin(ws->ops.ctx);
    if (status) return status;
    dm_outputs none = DM_OUTPUTS_INIT;
    dm_enqueue_forward(ws, params, input, 1, h, w, &none, stages);
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_conv1x1 *conv = &d->lateral[s];
        OP(ws, gemm, dm_view_pixels(lat[s]), F, conv->cin, stages[s], conv->cin, conv->weight, 0.0f, conv->bias,
           DM_ACT_NONE, lat[s].data);
    }
    /* top-down: each lateral plus the coarser one, nearest-upsampled */
    for (int s = DM_NUM_STAGES - 1; s > 0; s--) {
        dm_view up = lat[s - 1];
        up.data = upsampled;
        OP(ws, resize, lat[s], DM_RESIZE_NEAREST, up);
        OP(ws, add, lat[s - 1], up, DM_ACT_NONE, lat[s - 1]);
    }
    for (int s = 0; s < DM_NUM_STAGES; s++) OP(ws, conv3x3, &d->fpn[s], lat[s], DM_ACT_NONE, levels[s]);
    OP(ws, max_pool, levels[DM_NUM_STAGES - 1], 1, 2, 0, levels[DM_NUM_STAGES]);
    for (int l = 0; l < DM_FPN_LEVELS; l++) {
        dm_view t = levels[l];
        t.data = hidden;
        OP(ws, conv3x3, &d->rpn_conv, levels[l], DM_ACT_RELU, t);
        size_t P = dm_view_pixels(t);
        OP(ws, gemm, P, NUM_ANCHORS, F, hidden, F, d->rpn_cls.weight, 0.0f, d->rpn_cls.bias, DM_ACT_NONE, cls);
        OP(ws, gemm, P, 4 * NUM_ANCHORS, F, hidden, F, d->rpn_reg.weight, 0.0f, d->rpn_reg.bias, DM_ACT_NONE, reg);
        OP(ws, output, dm_view_of(cls, 1, t.h, t.w, NUM_ANCHORS), DM_LAYOUT_NHWC, st->rpn_cls[l]);
        OP(ws, output, dm_view_of(reg, 1, t.h, t.w, 4 * NUM_ANCHORS), DM_LAYOUT_NHWC, st->rpn_reg[l]);
        if (st->feat[l]) OP(ws, output, levels[l], DM_LAYOUT_NHWC, st->feat[l]);
    }
    return ws->ops.finish(ws->ops.ctx);
}

/* Indices 0..n-1 ordered by descending score; equal scores keep index
 * order.  NaN comes first, as torch.sort(descending=True) puts it: qsort
 * needs a consistent order, and a model of NaNs gives NaN scores. */
static int by_score_desc(const void *a, const void *b, void *scores)
{
    int i = *(const int *)a, j = *(const int *)b;
    float si = ((const float *)scores)[i], sj = ((const float *)scores)[j];
    int nan_i = isnan(si), nan_j = isnan(sj);
    if (nan_i != nan_j) return nan_i ? -1 : 1;
    if (!nan_i && si != sj) return si > sj ? -1 : 1;
    return (i > j) - (i < j);
}

static void argsort_desc(const float *scores, size_t n, int *order)
{
    for (size_t i = 0; i < n; i++) order[i] = (int)i;
    qsort_r(order, n, sizeof *order, by_score_desc, (void *)scores);
}

/* mmcv's batched_nms: boxes of different groups are moved apart by
 * group * (largest coordinate + 1), so boxes of two groups never overlap
 * and no group's box suppresses another's.  Each group's NMS therefore runs
 * over its own boxes alone, in score order, on the same moved coordinates:
 * the same picks as one NMS over all of them (mmcv's own path above 10000
 * boxes), in a fraction of the comparisons.  Writes the kept indices, best
 * first, and returns their count. */
dm_status dm_batched_nms(const float *boxes, const float *scores, const int *groups, size_t n, float iou, int *keep,
                         size_t *kept)
{
    int last_group = 0;
    for (size_t i = 0; i < n; i++) {
        if (groups[i] < 0) return dm_fail(DM_ERR_ARGUMENT, "NMS group %d of box %zu is negative", groups[i], i);
        if (groups[i] > last_group) last_group = groups[i];
    }
    size_t slots = (size_t)last_group + 2;
    float *moved = alloc_floats(4 * n);
    int *order = malloc((n ? n : 1) * sizeof *order), *picked = malloc((n ? n : 1) * sizeof *picked);
    size_t *member = malloc((n ? n : 1) * sizeof *member), *first = calloc(slots, sizeof *first);
    uint8_t *scratch = malloc(n ? n : 1), *is_kept = calloc(n ? n : 1, 1);
    dm_status status = DM_OK;
    if (!moved || !order || !picked || !member || !first || !scratch || !is_kept) {
        status = dm_fail(DM_ERR_NOMEM, "out of memory for NMS over %zu boxes", n);
        goto done;
    }
    float top = -INFINITY;
    for (size_t i = 0; i < 4 * n; i++) top = fmaxf(top, boxes[i]);
    argsort_desc(scores, n, order);
    /* the boxes by group, each group's in score order: group g's from
     * first[g] on */
    for (size_t i = 0; i < n; i++) first[groups[i] + 1]++;
    for (size_t g = 1; g < slots; g++) first[g] += first[g - 1];
    for (size_t i = 0; i < n; i++) {
        int g = groups[order[i]];
        size_t slot = first[g]++;
        float shift = (float)g * (top + 1.0f);
        member[slot] = i;
        for (int k = 0; k < 4; k++) moved[4 * slot + k] = boxes[4 * (size_t)order[i] + k] + shift;
    }
    /* first[g] now ends group g; each group's NMS over its own boxes */
    size_t begin = 0;
    for (int g = 0; g <= last_group; g++) {
        size_t end = first[g], count = dm_nms(moved + 4 * begin, end - begin, iou, picked, scratch);
        for (size_t p = 0; p < count; p++) is_kept[member[begin + (size_t)picked[p]]] = 1;
        begin = end;
    }
    *kept = 0;
    for (size_t i = 0; i < n; i++)
        if (is_kept[i]) keep[(*kept)++] = order[i];
done:
    free(moved), free(order), free(picked), free(member), free(first), free(scratch), free(is_kept);
    return status;
}

/* RPN proposals: per level the best rpn_pre_nms anchors, decoded, boxes of
 * zero width or height dropped, NMS per level, the best rpn_proposals. */
static dm_status proposals(const dm_det_image *im, const dm_det_settings *cfg, dm_det_state *st)
{
    size_t total = 0;
    for (int l = 0; l < DM_FPN_LEVELS; l++) {
        size_t n = (size_t)st->feat_h[l] * st->feat_w[l] * NUM_ANCHORS;
        total += n < (size_t)cfg->rpn_pre_nms ? n : (size_t)cfg->rpn_pre_nms;
    }
    size_t most = (size_t)st->feat_h[0] * st->feat_w[0] * NUM_ANCHORS;
    float *scores = alloc_floats(total), *anchors = alloc_floats(4 * total), *deltas = alloc_floats(4 * total);
    float *boxes = alloc_floats(4 * total), *level_scores = alloc_floats(most), *level_anchors = alloc_floats(4 * most);
    int *levels = malloc(total * sizeof(int) + 1), *order = malloc(most * sizeof(int) + 1);
    int *keep = malloc(total * sizeof(int) + 1);
    dm_status status = DM_OK;
    if (!scores || !anchors || !deltas || !boxes || !level_scores || !level_anchors || !levels || !order || !keep) {
        status = dm_fail(DM_ERR_NOMEM, "out of memory for the RPN proposals");
        goto done;
    }
    size_t n = 0;
    for (int l = 0; l < DM_FPN_LEVELS; l++) {
        size_t count = (size_t)st->feat_h[l] * st->feat_w[l] * NUM_ANCHORS;
        for (size_t i = 0; i < count; i++) level_scores[i] = sigmoid(st->rpn_cls[l][i]);
        dm_anchors((float)(4 << l), anchor_ratios, NUM_ANCHORS, anchor_scales, 1, st->feat_h[l], st->feat_w[l],
                   level_anchors);
        size_t take = count;
        if ((size_t)cfg->rpn_pre_nms < count) {
            /* the best of up to 200,000 anchors: a selection, not a sort */
            take = (size_t)cfg->rpn_pre_nms;
            if (count > INT_MAX) {
                status = dm_fail(DM_ERR_ARGUMENT, "%zu anchors on one FPN level are too many", count);
                goto done;
            }
            if ((status = dm_top_k(level_scores, (int)count, (int)take, order))) goto done;
        } else {
            for (size_t i = 0; i < count; i++) order[i] = (int)i;
        }
        for (size_t i = 0; i < take; i++, n++) {
            size_t j = (size_t)order[i];
            scores[n] = level_scores[j];
            memcpy(anchors + 4 * n, level_anchors + 4 * j, 4 * sizeof(float));
            memcpy(deltas + 4 * n, st->rpn_reg[l] + 4 * j, 4 * sizeof(float));
            levels[n] = l;
        }
    }
    dm_delta2bbox(anchors, deltas, n, zero_means, rpn_stds, (float)fabs(log(WH_RATIO_CLIP)), (float)im->img_h,
                  (float)im->img_w, boxes);
    /* drop empty boxes (min_bbox_size 0), keeping the order */
    size_t valid = 0;
    for (size_t i = 0; i < n; i++) {
        const float *b = boxes + 4 * i;
        if (!(b[2] - b[0] > 0.0f && b[3] - b[1] > 0.0f)) continue;
        memmove(boxes + 4 * valid, b, 4 * sizeof(float));
        scores[valid] = scores[i];
        levels[valid++] = levels[i];
    }
    size_t kept = 0;
    if ((status = dm_batched_nms(boxes, scores, levels, valid, cfg->rpn_iou, keep, &kept))) goto done;
    if (kept > (size_t)cfg->rpn_proposals) kept = (size_t)cfg->rpn_proposals;
    if (!(st->proposals = alloc_floats(5 * kept))) {
        status = dm_fail(DM_ERR_NOMEM, "out of memory for the RPN proposals");
        goto done;
    }
    for (size_t i = 0; i < kept; i++) {
        memcpy(st->proposals + 5 * i, boxes + 4 * (size_t)keep[i], 4 * sizeof(float));
        st->proposals[5 * i + 4] = scores[keep[i]];
    }
    st->num_proposals = (int)kept;
done:
    free(scores), free(anchors), free(deltas), free(boxes), free(level_scores), free(level_anchors);
    free(levels), free(order), free(keep);
    return status;
}

/* ------------------------------------------------------------ RoI heads */

int dm_roi_level(const float box[4])
{
    float scale = sqrtf((box[2] - box[0]) * (box[3] - box[1]));
    float level = floorf(log2f(scale / 56.0f + 1e-6f));
    return level > DM_ROI_LEVELS - 1 ? DM_ROI_LEVELS - 1 : level > 0 ? (int)level : 0;
}

/* Enqueue RoIAlign of n boxes (stride floats apart) from their levels
 * (P2..P5) into y (n x size x size x F, backend memory).  host is 5n
 * floats that must stay until the pass finishes. */
static dm_status roi_extract(dm_workspace *ws, pass_memory *pm, const dm_view levels[DM_FPN_LEVELS],
                             const float *boxes, size_t stride, int n, const int *box_levels, float *host, dm_view y)
{
    float *rois = pass_alloc(pm, 5 * (size_t)n);
    if (!rois) return dm_fail_nomem("out of memory for %d RoIs", n);
    dm_roi_levels rl = {.count = DM_ROI_LEVELS};
    for (int l = 0; l < DM_ROI_LEVELS; l++) {
        rl.level[l] = levels[l];
        rl.scale[l] = 1.0f / (float)(4 << l);
    }
    for (int i = 0; i < n; i++) {
        host[5 * i] = (float)box_levels[i];
        memcpy(host + 5 * i + 1, boxes + stride * i, 4 * sizeof(float));
    }
    OP(ws, input, host, DM_LAYOUT_NHWC, dm_view_of(rois, 1, 1, n, 5));
    OP(ws, roi_align, &rl, rois, n, y);
    return DM_OK;
}

/* Softmax over classes + 1 scores, as PyTorch computes it. */
static void softmax(float *x, int n)
{
    float top = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++) top = fmaxf(top, x[i]);
    for (int i = 0; i < n; i++) sum += x[i] = expf(x[i] - top);
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* The box head on the proposals: logits and deltas back to st. */
static dm_status box_head(dm_workspace *ws, pass_memory *pm, const dm_model *m, const dm_view levels[DM_FPN_LEVELS],
                          dm_det_state *st)
{
    const dm_det_heads *d = &m->det;
    int N = st->num_proposals, K = m->config.det_classes, F = m->config.fpn_channels;
    int fc = m->config.det_fc_channels, R = DM_BOX_ROI;
    size_t in = (size_t)R * R * F;
    float *host = alloc_floats(5 * (size_t)N);
    float *feats = pass_alloc(pm, (size_t)N * in), *h1 = pass_alloc(pm, (size_t)N * fc);
    float *h2 = pass_alloc(pm, (size_t)N * fc), *cls = pass_alloc(pm, (size_t)N * (K + 1));
    float *reg = pass_alloc(pm, (size_t)N * 4 * K);
    st->roi_levels = malloc((size_t)N * sizeof(int) + 1);
    st->cls_score = dm_host_array((size_t)N * (K + 1), sizeof(float));
    st->bbox_pred = dm_host_array((size_t)N * 4 * K, sizeof(float));
    dm_status status = DM_OK;
    if (!host || !feats || !h1 || !h2 || !cls || !reg || !st->roi_levels || !st->cls_score || !st->bbox_pred) {
        free(host);
        return dm_fail_nomem("out of memory for the box head over %d proposals", N);
    }
    for (int i = 0; i < N; i++) st->roi_levels[i] = dm_roi_level(st->proposals + 5 * i);
    if ((status = ws->ops.reserve(ws->ops.ctx, 0, (size_t)N * (5 + K + 1 + 4 * (size_t)K), 2)) ||
        (status = ws->ops.begin(ws->ops.ctx)))
        goto done;
    status = roi_extract(ws, pm, levels, st->proposals, 5, N, st->roi_levels, host, dm_view_of(feats, N, R, R, F));
    if (!status) {
        OP(ws, gemm, N, fc, in, feats, in, d->fc[0].weight, 0.0f, d->fc[0].bias, DM_ACT_RELU, h1);
        OP(ws, gemm, N, fc, fc, h1, fc, d->fc[1].weight, 0.0f, d->fc[1].bias, DM_ACT_RELU, h2);
        OP(ws, gemm, N, K + 1, fc, h2, fc, d->cls.weight, 0.0f, d->cls.bias, DM_ACT_NONE, cls);
        OP(ws, gemm, N, 4 * (size_t)K, fc, h2, fc, d->reg.weight, 0.0f, d->reg.bias, DM_ACT_NONE, reg);
        OP(ws, output, dm_view_of(cls, N, 1, 1, K + 1), DM_LAYOUT_NHWC, st->cls_score);
        OP(ws, output, dm_view_of(reg, N, 1, 1, 4 * K), DM_LAYOUT_NHWC, st->bbox_pred);
    }
    dm_status finished = ws->ops.finish(ws->ops.ctx);
    if (!status) status = finished;
done:
    free(host);
    return status;
}

/* Class scores and boxes from the box head, then per-class NMS: candidates
 * above the score threshold in (proposal, class) order, NMS within each
 * class, the best max_dets. */
static dm_status detections(const dm_model *m, const dm_det_image *im, const dm_det_settings *cfg, dm_det_state *st)
{
    int N = st->num_proposals, K = m->config.det_classes;
    float *scores = dm_host_array((size_t)N * (K + 1), sizeof(float)), *rois = NULL, *deltas = NULL, *cand_boxes = NULL;
    float *cand_scores = NULL;
    int *cand_labels = NULL, *keep = NULL;
    dm_status status = DM_OK;
    if (!scores) {
        status = dm_fail_nomem("out of memory for the detections of %d proposals", N);
        goto done;
    }
    memcpy(scores, st->cls_score, sizeof(float) * N * (K + 1));
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        softmax(scores + (size_t)i * (K + 1), K + 1);
        for (int k = 0; k < K; k++) n += scores[(size_t)i * (K + 1) + k] > cfg->score_thr;
    }
    /* only the candidates get boxes: every (proposal, class) pair's was
     * 1,000 x classes boxes, gigabytes for a model of 100,000 classes */
    rois = dm_host_array(n * 4, sizeof(float)), deltas = dm_host_array(n * 4, sizeof(float));
    cand_boxes = dm_host_array(n * 4, sizeof(float)), cand_scores = dm_host_array(n, sizeof(float));
    cand_labels = dm_host_array(n, sizeof(int)), keep = dm_host_array(n, sizeof(int));
    if (!rois || !deltas || !cand_boxes || !cand_scores || !cand_labels || !keep) {
        status = dm_fail_nomem("out of memory for %zu candidate detections", n);
        goto done;
    }
    n = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            float s = scores[(size_t)i * (K + 1) + k];
            if (!(s > cfg->score_thr)) continue;
            memcpy(rois + 4 * n, st->proposals + 5 * i, 4 * sizeof(float));
            memcpy(deltas + 4 * n, st->bbox_pred + ((size_t)i * K + k) * 4, 4 * sizeof(float));
            cand_scores[n] = s;
            cand_labels[n++] = k;
        }
    /* class-specific boxes in original-image pixels */
    dm_delta2bbox(rois, deltas, n, zero_means, rcnn_stds, (float)fabs(log(WH_RATIO_CLIP)), (float)im->img_h,
                  (float)im->img_w, cand_boxes);
    for (size_t i = 0; i < n * 4; i++) cand_boxes[i] /= im->scale_factor[i % 4];
    size_t kept = 0;
    if ((status = dm_batched_nms(cand_boxes, cand_scores, cand_labels, n, cfg->iou, keep, &kept))) goto done;
    if (kept > (size_t)cfg->max_dets) kept = (size_t)cfg->max_dets;
    st->det_boxes = alloc_floats(4 * kept);
    st->det_scores = alloc_floats(kept);
    st->det_labels = malloc(kept * sizeof(int) + 1);
    if (!st->det_boxes || !st->det_scores || !st->det_labels) {
        status = dm_fail(DM_ERR_NOMEM, "out of memory for %zu detections", kept);
        goto done;
    }
    for (size_t i = 0; i < kept; i++) {
        memcpy(st->det_boxes + 4 * i, cand_boxes + 4 * (size_t)keep[i], 4 * sizeof(float));
        st->det_scores[i] = cand_scores[keep[i]];
        st->det_labels[i] = cand_labels[keep[i]];
    }
    st->count = (int)kept;
done:
    dm_host_free(scores), dm_host_free(rois), dm_host_free(deltas), dm_host_free(cand_boxes);
    dm_host_free(cand_scores), dm_host_free(cand_labels), dm_host_free(keep);
    return status;
}

/* The FCN mask head on the detections (boxes scaled back to the input):
 * each detection's class channel, 28 x 28, and its sigmoid.  The 2x2
 * stride-2 deconvolution is one GEMM whose rows are (pixel, dy, dx); the
 * 1x1 logits conv runs on each detection's rows for the 16 classes around
 * its label only (a product weight's columns from a multiple of 16 on are
 * a weight of their own in either layout): the logits of every class were
 * detections x 784 x classes floats, 31 GB for 100,000 classes.  The
 * host puts each sub-pixel in its place while taking the label's
 * channel. */
/* The panel of DM_PANEL classes that holds label: its first class, and how
 * many of the K classes it has. */
static size_t label_panel(size_t label, size_t K, size_t *first)
{
    *first = label / DM_PANEL * DM_PANEL;
    return K - *first < DM_PANEL ? K - *first : DM_PANEL;
}

static dm_status mask_head(dm_workspace *ws, pass_memory *pm, const dm_model *m, const dm_det_image *im,
                           const dm_view levels[DM_FPN_LEVELS], dm_det_state *st)
{
    const dm_det_heads *d = &m->det;
    int D = st->count, F = m->config.fpn_channels, M = m->config.mask_channels, K = m->config.det_classes;
    int R = DM_MASK_ROI, S = DM_MASK_SIZE, C = F > M ? F : M;
    size_t in_px = (size_t)D * R * R, out_px = (size_t)D * S * S;
    size_t per_det = (size_t)S * S, near = DM_PANEL;
    float *host = alloc_floats(5 * (size_t)D), *rois = alloc_floats(4 * (size_t)D), *logits = alloc_floats(out_px * near);
    float *a = pass_alloc(pm, in_px * C), *b = pass_alloc(pm, in_px * C), *up = pass_alloc(pm, in_px * 4 * M);
    float *dev_logits = pass_alloc(pm, out_px * near);
    int *box_levels = malloc((size_t)D * sizeof(int) + 1);
    st->mask_logit = alloc_floats(out_px);
    st->mask_prob = alloc_floats(out_px);
    dm_status status = DM_OK;
    if (!host || !rois || !logits || !a || !b || !up || !dev_logits || !box_levels || !st->mask_logit ||
        !st->mask_prob) {
        status = dm_fail_nomem("out of memory for the mask head over %d detections", D);
        goto done;
    }
    for (int i = 0; i < D; i++) {
        for (int k = 0; k < 4; k++) rois[4 * i + k] = st->det_boxes[4 * i + k] * im->scale_factor[k];
        box_levels[i] = dm_roi_level(rois + 4 * i);
    }
    if ((status = ws->ops.reserve(ws->ops.ctx, 0, 5 * (size_t)D + out_px * near, 1)) ||
        (status = ws->ops.begin(ws->ops.ctx)))
        goto done;
    status = roi_extract(ws, pm, levels, rois, 4, D, box_levels, host, dm_view_of(a, D, R, R, F));
    if (!status) {
        dm_view x = dm_view_of(a, D, R, R, F), y = dm_view_of(b, D, R, R, M);
        for (int i = 0; i < d->mask_convs_count; i++) {
            OP(ws, conv3x3, &d->mask_convs[i], x, DM_ACT_RELU, y);
            dm_view t = x;
            x = y;
            y = dm_view_of(t.data, D, R, R, M);
        }
        OP(ws, gemm, in_px, 4 * (size_t)M, M, x.data, M, d->upsample.weight, 0.0f, d->upsample.bias, DM_ACT_RELU, up);
        for (int i = 0; i < D; i++) {
            size_t first, n = label_panel((size_t)st->det_labels[i], (size_t)K, &first);
            OP(ws, gemm, per_det, n, M, up + i * per_det * M, M, d->mask_logits.weight + first * M, 0.0f,
               d->mask_logits.bias + first, DM_ACT_NONE, dev_logits + i * per_det * near);
        }
        OP(ws, output, dm_view_of(dev_logits, 1, 1, (int)out_px, (int)near), DM_LAYOUT_NHWC, logits);
    }
    dm_status finished = ws->ops.finish(ws->ops.ctx);
    if (!status) status = finished;
    if (status) goto done;
    /* row (i, y, x, dy, dx) is mask pixel (2y + dy, 2x + dx) of detection i */
    for (size_t r = 0; r < out_px; r++) {
        size_t i = r / ((size_t)R * R * 4), p = r / 4 % ((size_t)R * R), t = r % 4;
        size_t q = (i * S + 2 * (p / R) + t / 2) * S + 2 * (p % R) + t % 2;
        size_t label = (size_t)st->det_labels[i], first, n = label_panel(label, (size_t)K, &first);
        st->mask_logit[q] = logits[i * per_det * near + (r - i * per_det) * n + label - first];
        st->mask_prob[q] = sigmoid(st->mask_logit[q]);
    }
done:
    free(host), free(rois), free(logits), free(box_levels);
    return status;
}

/* ---------------------------------------------------------------- whole */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static dm_status check_image(const dm_det_image *im, int h, int w)
{
    if (!im) return dm_fail(DM_ERR_ARGUMENT, "dm_detect: the image description is required");
    if (im->img_h < 1 || im->img_w < 1 || im->img_h > h || im->img_w > w)
        return dm_fail(DM_ERR_ARGUMENT, "dm_detect: img_shape %dx%d must be positive and fit the %dx%d input",
                       im->img_h, im->img_w, h, w);
    if (im->ori_h < 1 || im->ori_w < 1 || (double)im->ori_h * im->ori_w > 1e9)
        return dm_fail(DM_ERR_ARGUMENT, "dm_detect: original size %dx%d must be positive and at most 1e9 pixels",
                       im->ori_h, im->ori_w);
    for (int k = 0; k < 4; k++)
        if (!(im->scale_factor[k] > 0.0f) || !isfinite(im->scale_factor[k]))
            return dm_fail(DM_ERR_ARGUMENT, "dm_detect: scale_factor must be positive and finite");
    return DM_OK;
}

static dm_status check_settings(const dm_det_settings *s)
{
    if (s->rpn_pre_nms < 1 || s->rpn_proposals < 1 || s->max_dets < 1)
        return dm_fail(DM_ERR_ARGUMENT, "detection settings: rpn_pre_nms, rpn_proposals and max_dets must be >= 1");
    if (!(s->rpn_iou >= 0.0f && s->rpn_iou <= 1.0f) || !(s->iou >= 0.0f && s->iou <= 1.0f))
        return dm_fail(DM_ERR_ARGUMENT, "detection settings: IoU thresholds must lie in [0, 1]");
    if (!(s->score_thr >= 0.0f && s->score_thr <= 1.0f) || !(s->mask_thr >= 0.0f && s->mask_thr <= 1.0f))
        return dm_fail(DM_ERR_ARGUMENT, "detection settings: score and mask thresholds must lie in [0, 1]");
    if (s->masks & ~(DM_MASKS_BITMAP | DM_MASKS_RLE))
        return dm_fail(DM_ERR_ARGUMENT, "detection settings: masks 0x%x holds bits other than DM_MASKS_BITMAP and "
                                        "DM_MASKS_RLE", (unsigned)s->masks);
    return DM_OK;
}

dm_status dm_det_run(const dm_model *model, dm_workspace *ws, const float *input, int h, int w,
                     const dm_det_image *image, const dm_det_settings *settings, dm_det_state *st)
{
    int keep_features = st->keep_features;
    memset(st, 0, sizeof *st);
    st->keep_features = keep_features;
    if (!input) return dm_fail(DM_ERR_ARGUMENT, "dm_detect: input is required");
    const dm_model *params; /* as the workspace's backend reads them */
    dm_status status = dm_check_run("dm_detect", model, ws, 1, h, w, &params);
    if (status) return status;
    const dm_config *c = &model->config;
    if (c->det_classes < 1)
        return dm_fail(DM_ERR_MODEL, "dm_detect: the model has no detection heads (not a Mask R-CNN checkpoint)");
    dm_det_settings full;
    if (settings) status = dm_struct_import(&full, sizeof full, settings, DM_DET_SETTINGS_MIN_SIZE, "dm_det_settings");
    else dm_det_settings_default(&full);
    const dm_det_settings *cfg = &full;
    if (status || (status = check_image(image, h, w)) || (status = check_settings(cfg))) return status;

    pass_memory pm = {.ws = ws};
    dm_view levels[DM_FPN_LEVELS];
    double t = now_s(), t_next;
    status = backbone_fpn_rpn(ws, &pm, params, c->fpn_channels, input, h, w, levels, st);
    st->seconds[0] = (t_next = now_s()) - t, t = t_next;
    if (!status) status = proposals(image, cfg, st);
    st->seconds[1] = (t_next = now_s()) - t, t = t_next;
    if (!status && !(status = box_head(ws, &pm, params, levels, st))) status = detections(model, image, cfg, st);
    st->seconds[2] = (t_next = now_s()) - t, t = t_next;
    if (!status) status = mask_head(ws, &pm, params, image, levels, st);
    st->seconds[3] = now_s() - t;
    if (status) dm_det_state_free(st);
    pass_release(&pm);
    return status;
}

void dm_det_state_free(dm_det_state *st)
{
    if (!st) return;
    for (int l = 0; l < DM_FPN_LEVELS; l++) free(st->feat[l]), free(st->rpn_cls[l]), free(st->rpn_reg[l]);
    free(st->proposals), free(st->roi_levels), dm_host_free(st->cls_score), dm_host_free(st->bbox_pred);
    free(st->det_boxes), free(st->det_scores), free(st->det_labels), free(st->mask_logit), free(st->mask_prob);
    memset(st, 0, sizeof *st);
}

/* ---------------------------------------------------------------- masks */

/* A whole-pixel coordinate clamped to [0, limit] before it becomes an int:
 * a box far outside the image (a tiny scale factor) would overflow it. */
static int pixel_within(float v, int limit)
{
    return !(v > 0) ? 0 : v < (float)limit ? (int)v : limit;
}

void dm_paste_window(const float det_box[4], const dm_det_image *im, float paste_box[4], int window[4])
{
    for (int k = 0; k < 4; k++) paste_box[k] = det_box[k] * im->scale_factor[k] / im->scale_factor[k];
    float x0 = floorf(fminf(paste_box[0], paste_box[2])) - 1, y0 = floorf(fminf(paste_box[1], paste_box[3])) - 1;
    float x1 = ceilf(paste_box[2]) + 1, y1 = ceilf(paste_box[3]) + 1;
    window[0] = pixel_within(x0, im->ori_w);
    window[1] = pixel_within(y0, im->ori_h);
    window[2] = pixel_within(x1, im->ori_w);
    window[3] = pixel_within(y1, im->ori_h);
}

/* Paste detection i's probabilities and threshold them into its bitmap:
 * every pixel of its window, which goes to win; the rest of the bitmap is
 * cleared when `clear`, else left as it was. */
static dm_status paste(const dm_det_state *st, int i, const dm_det_image *im, float thr, uint8_t *bitmap, int clear,
                       int win[4])
{
    float box[4];
    dm_paste_window(st->det_boxes + 4 * i, im, box, win);
    if (clear) memset(bitmap, 0, (size_t)im->ori_h * im->ori_w);
    int ww = win[2] - win[0], wh = win[3] - win[1];
    if (ww <= 0 || wh <= 0) return DM_OK;
    float *prob = dm_host_array((size_t)ww * wh, sizeof(float));
    if (!prob) return dm_fail_nomem("out of memory pasting a %dx%d mask", ww, wh);
    dm_paste_mask(st->mask_prob + (size_t)i * DM_MASK_SIZE * DM_MASK_SIZE, DM_MASK_SIZE, DM_MASK_SIZE, box, win[0],
                  win[1], win[2], win[3], prob);
    for (int y = 0; y < wh; y++)
        for (int x = 0; x < ww; x++)
            bitmap[(size_t)(win[1] + y) * im->ori_w + win[0] + x] = prob[(size_t)y * ww + x] >= thr;
    dm_host_free(prob);
    return DM_OK;
}

/* The runs of an RLE as they are counted: each extends the last run or,
 * for the other value, starts the next. */
typedef struct rle_runs {
    long *counts, run;
    size_t n, cap;
    uint8_t value;
    int failed;
} rle_runs;

static void end_run(rle_runs *r)
{
    if (r->failed) return;
    if (r->n == r->cap) {
        long *grown = realloc(r->counts, 2 * r->cap * sizeof *grown);
        if (!grown) {
            r->failed = 1;
            return;
        }
        r->counts = grown;
        r->cap *= 2;
    }
    r->counts[r->n++] = r->run;
    r->run = 0;
}

static void add_pixels(rle_runs *r, uint8_t value, long count)
{
    if (count == 0) return;
    if (value != r->value) {
        end_run(r);
        r->value = value;
    }
    r->run += count;
}

char *dm_rle_encode_window(const uint8_t *mask, int h, int w, const int window[4])
{
    int x0 = window[0] > 0 ? window[0] : 0, y0 = window[1] > 0 ? window[1] : 0;
    int x1 = window[2] < w ? window[2] : w, y1 = window[3] < h ? window[3] : h;
    if (x1 < x0) x1 = x0;
    if (y1 < y0) y1 = y0;
    rle_runs r = {.counts = malloc(16 * sizeof(long)), .cap = 16};
    if (!r.counts) return NULL;
    /* column-major, starting with a run of zeros; outside the window, zeros */
    add_pixels(&r, 0, (long)x0 * h);
    for (int x = x0; x < x1; x++) {
        add_pixels(&r, 0, y0);
        for (int y = y0; y < y1; y++) add_pixels(&r, mask[(size_t)y * w + x] != 0, 1);
        add_pixels(&r, 0, h - y1);
    }
    add_pixels(&r, 0, (long)(w - x1) * h);
    end_run(&r);
    if (r.failed) {
        free(r.counts);
        return NULL;
    }
    /* pycocotools' string form: each count (minus the count two before,
     * from the third on) in 5-bit groups, low first, a continuation bit
     * 0x20, offset by '0' */
    char *s = malloc(r.n * 14 + 1), *p = s;
    if (!s) { free(r.counts); return NULL; }
    for (size_t i = 0; i < r.n; i++) {
        long x = r.counts[i] - (i > 2 ? r.counts[i - 2] : 0);
        int more = 1;
        while (more) {
            char c = (char)(x & 0x1f);
            x = x >= 0 ? x >> 5 : -((-x - 1) >> 5) - 1; /* arithmetic shift */
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            *p++ = (char)(c + 48);
        }
    }
    *p = 0;
    free(r.counts);
    return s;
}

char *dm_rle_encode(const uint8_t *mask, int h, int w) { return dm_rle_encode_window(mask, h, w, (int[]){0, 0, w, h}); }

void dm_detections_free(dm_detections *d)
{
    if (!d) return;
    if (d->rle)
        for (int i = 0; i < d->count; i++) free(d->rle[i]);
    free(d->rle), free(d->boxes), free(d->scores), free(d->labels), free(d->proposals);
    dm_host_free(d->masks);
    memset(d, 0, sizeof *d);
}

dm_status dm_detect(const dm_model *model, dm_workspace *ws, const float *input, int h, int w,
                    const dm_det_image *image, const dm_det_settings *settings, dm_detections *out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_detect: out is required");
    memset(out, 0, sizeof *out);
    dm_det_state st = {0};
    dm_status status = dm_det_run(model, ws, input, h, w, image, settings, &st);
    if (status) return status;
    double paste_start = now_s();
    /* dm_det_run accepted the settings, so their size covers every field */
    dm_det_settings defaults;
    dm_det_settings_default(&defaults);
    const dm_det_settings *cfg = settings ? settings : &defaults;
    int D = st.count;
    size_t plane = (size_t)image->ori_h * image->ori_w;
    out->count = D;
    out->mask_h = image->ori_h;
    out->mask_w = image->ori_w;
    out->boxes = st.det_boxes, st.det_boxes = NULL;
    out->scores = st.det_scores, st.det_scores = NULL;
    out->labels = st.det_labels, st.det_labels = NULL;
    out->num_proposals = st.num_proposals;
    out->proposals = st.proposals, st.proposals = NULL;
    /* pasting needs the boxes, which now belong to out */
    st.det_boxes = out->boxes;
    /* D masks of the original image's size: an 8000 x 8000 photo's 100 take
     * 6.4 GB, so they are held to the process's memory limit */
    size_t planes = cfg->masks & DM_MASKS_BITMAP ? (size_t)D : 1;
    uint8_t *bitmap = cfg->masks ? dm_host_array(planes, plane) : NULL;
    if (cfg->masks && !bitmap)
        status = dm_fail_nomem("out of memory for %zu mask%s of %dx%d pixels", planes, planes == 1 ? "" : "s",
                               image->ori_h, image->ori_w);
    if (!status && (cfg->masks & DM_MASKS_RLE) && !(out->rle = calloc((size_t)D + 1, sizeof(char *))))
        status = dm_fail(DM_ERR_NOMEM, "out of memory for %d masks", D);
    for (int i = 0; i < D && !status && cfg->masks; i++) {
        /* returned bitmaps are whole planes; one reused for the RLE alone is
         * read only inside each mask's window, which pasting fills */
        int whole = cfg->masks & DM_MASKS_BITMAP, window[4];
        uint8_t *mask = whole ? bitmap + plane * i : bitmap;
        if ((status = paste(&st, i, image, cfg->mask_thr, mask, whole, window))) break;
        if (out->rle && !(out->rle[i] = dm_rle_encode_window(mask, image->ori_h, image->ori_w, window)))
            status = dm_fail(DM_ERR_NOMEM, "out of memory encoding a mask");
    }
    st.det_boxes = NULL;
    memcpy(out->seconds, st.seconds, sizeof st.seconds);
    out->seconds[3] += now_s() - paste_start;
    dm_det_state_free(&st);
    if (cfg->masks & DM_MASKS_BITMAP) out->masks = bitmap;
    else dm_host_free(bitmap);
    if (status) dm_detections_free(out);
    return status;
}
