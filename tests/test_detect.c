/* test_detect.c - Mask R-CNN against mmdetection 2.28's float64 reference
 * (maskrcnn_micro), stage by stage, plus the detection kernels on cases
 * worked out by hand.  DM_TEST_BACKEND=cuda runs the networks on the CUDA
 * backend instead (to the same tolerances) and compares them with the CPU
 * backend's too; a machine without a device skips (exit 77) unless
 * DM_TEST_REQUIRE_CUDA is set. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "damamba.h"
#include "detect.h"
#include "detect_kernels.h"
#include "json.h"
#include "model.h"

static dm_tensor_file io;
/* Where the networks run, and its name for result lines. */
static dm_backend backend = DM_BACKEND_CPU;
static const char *on = "cpu";

static void open_io(void) { test_open("maskrcnn_micro.io.safetensors", &io); }
static void close_io(void) { dm_tensor_file_close(&io); }

static const dm_tensor *io_tensor(const char *name)
{
    const dm_tensor *t = dm_tensor_file_find(&io, name);
    ck_assert_msg(t != NULL, "golden tensor %s missing", name);
    return t;
}

static int64_t io_i64(const char *name, size_t i)
{
    const dm_tensor *t = io_tensor(name);
    ck_assert(t->dtype == DM_I64 && i < (size_t)t->numel);
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

/* A channels-last [h][w][c] copy of an NCHW reference (batch 1). */
static float *to_nhwc(const float *nchw, size_t c, size_t hw)
{
    float *out = malloc(sizeof(float) * c * hw);
    for (size_t ch = 0; ch < c; ch++)
        for (size_t p = 0; p < hw; p++) out[p * c + ch] = nchw[ch * hw + p];
    return out;
}

static dm_det_image golden_image(void)
{
    dm_det_image im = {(int)io_i64("meta.img_shape", 0), (int)io_i64("meta.img_shape", 1),
                       (int)io_i64("meta.ori_shape", 0), (int)io_i64("meta.ori_shape", 1), {0}};
    memcpy(im.scale_factor, test_f32(&io, "meta.scale_factor", NULL), sizeof im.scale_factor);
    return im;
}

/* The whole pass on the golden input, once per test that needs it. */
static dm_model *model;
static dm_det_state state;

static void run_golden(void)
{
    open_io();
    ck_assert_msg(dm_model_load(test_path("maskrcnn_micro.safetensors"), NULL, &model) == DM_OK, "%s",
                  dm_last_error());
    const dm_tensor *in = io_tensor("input");
    int h = (int)in->shape[2], w = (int)in->shape[3];
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(model, backend, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
    dm_det_image im = golden_image();
    state.keep_features = 1;
    ck_assert_msg(dm_det_run(model, ws, in->data, h, w, &im, NULL, &state) == DM_OK, "%s", dm_last_error());
    dm_workspace_free(ws);
}

static void free_golden(void)
{
    dm_det_state_free(&state);
    dm_model_free(model);
    close_io();
}

START_TEST(fpn_and_rpn_outputs)
{
    char name[64], label[64];
    const dm_config *c = dm_model_config(model);
    ck_assert_int_eq(c->det_classes, 5);
    ck_assert_int_eq(c->fpn_channels, 64);
    for (int l = 0; l < DM_FPN_LEVELS; l++) {
        size_t hw = (size_t)state.feat_h[l] * state.feat_w[l];
        struct { const char *what; const float *got; size_t c; } outs[] = {
            {"neck", state.feat[l], 64}, {"rpn.cls_score", state.rpn_cls[l], 3}, {"rpn.bbox_pred", state.rpn_reg[l], 12}};
        for (int o = 0; o < 3; o++) {
            snprintf(name, sizeof name, o ? "%s.p%d.expected" : "%s.p%d.expected", outs[o].what, l + 2);
            const dm_tensor *t = io_tensor(name);
            ck_assert_int_eq(t->shape[2], state.feat_h[l]);
            ck_assert_int_eq(t->shape[3], state.feat_w[l]);
            float *want = to_nhwc(t->data, outs[o].c, hw);
            snprintf(label, sizeof label, "[%s] %s p%d", on, outs[o].what, l + 2);
            ck_assert_double_le(test_rel_err(label, outs[o].got, want, outs[o].c * hw), GOLDEN_TOL);
            free(want);
        }
    }
}
END_TEST

/* For each reference proposal, the index of the computed one with the same
 * box (within 0.01 px) and score (within 1e-4): adjacent proposals can be
 * closer than float32 error, so they are matched as a set. */
static int *match_proposals(void)
{
    size_t n;
    const float *want = test_f32(&io, "rpn.proposals.expected", &n);
    n /= 5;
    ck_assert_int_eq(state.num_proposals, (int)n);
    int *match = malloc(n * sizeof(int));
    char *used = calloc(n, 1);
    double worst_box = 0, worst_score = 0;
    for (size_t i = 0; i < n; i++) {
        match[i] = -1;
        /* nearby in order: search outward from the same rank */
        for (size_t d = 0; d < n && match[i] < 0; d++)
            for (int sgn = -1; sgn <= 1 && match[i] < 0; sgn += 2) {
                long j = (long)i + sgn * (long)d;
                if (j < 0 || j >= (long)n || used[j]) continue;
                const float *g = state.proposals + 5 * j, *r = want + 5 * i;
                double box = 0;
                for (int k = 0; k < 4; k++) box = fmax(box, fabs(g[k] - r[k]));
                double score = fabs(g[4] - r[4]);
                if (box <= 0.01 && score <= 1e-4) {
                    match[i] = (int)j;
                    used[j] = 1;
                    worst_box = fmax(worst_box, box);
                    worst_score = fmax(worst_score, score);
                }
            }
        ck_assert_msg(match[i] >= 0, "reference proposal %zu (%.3f %.3f %.3f %.3f, %.6f) not found", i, want[5 * i],
                      want[5 * i + 1], want[5 * i + 2], want[5 * i + 3], want[5 * i + 4]);
    }
    printf("[%s] proposals: %zu matched; max box err %.3e px, max score err %.3e\n", on, n, worst_box, worst_score);
    free(used);
    return match;
}

START_TEST(proposals_as_a_set)
{
    free(match_proposals());
}
END_TEST

START_TEST(box_head_outputs)
{
    int *match = match_proposals();
    size_t n = (size_t)state.num_proposals;
    int K = 5;
    float *cls = malloc(sizeof(float) * n * (K + 1)), *reg = malloc(sizeof(float) * n * 4 * K);
    for (size_t i = 0; i < n; i++) {
        memcpy(cls + i * (K + 1), state.cls_score + (size_t)match[i] * (K + 1), sizeof(float) * (K + 1));
        memcpy(reg + i * 4 * K, state.bbox_pred + (size_t)match[i] * 4 * K, sizeof(float) * 4 * K);
        ck_assert_int_eq(state.roi_levels[match[i]], io_i64("bbox.roi_levels", i));
    }
    char label[64];
    snprintf(label, sizeof label, "[%s] bbox.cls_score", on);
    ck_assert_double_le(test_rel_err(label, cls, test_f32(&io, "bbox.cls_score.expected", NULL), n * (K + 1)),
                        GOLDEN_TOL);
    snprintf(label, sizeof label, "[%s] bbox.bbox_pred", on);
    ck_assert_double_le(test_rel_err(label, reg, test_f32(&io, "bbox.bbox_pred.expected", NULL), n * 4 * K),
                        GOLDEN_TOL);
    free(cls), free(reg), free(match);
}
END_TEST

START_TEST(detections_in_order)
{
    size_t n;
    const float *boxes = test_f32(&io, "det.bboxes.expected", &n), *scores = test_f32(&io, "det.scores.expected", NULL);
    n /= 4;
    ck_assert_int_eq(state.count, (int)n);
    double box_err = 0, score_err = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(state.det_labels[i], io_i64("det.labels", i));
        for (int k = 0; k < 4; k++) box_err = fmax(box_err, fabs(state.det_boxes[4 * i + k] - boxes[4 * i + k]));
        score_err = fmax(score_err, fabs(state.det_scores[i] - scores[i]));
    }
    printf("[%s] detections: %zu in order; max box err %.3e px, max score err %.3e\n", on, n, box_err, score_err);
    ck_assert_double_le(box_err, 0.01);
    ck_assert_double_le(score_err, 1e-4);
}
END_TEST

/* The mask head's output is held to the golden tolerance; its sigmoid is
 * printed for the record (float32 PyTorch is 2.2e-4 from the reference). */
START_TEST(mask_logits)
{
    size_t n;
    const float *want = test_f32(&io, "mask.pred.label_channel", &n);
    ck_assert_int_eq((size_t)state.count * DM_MASK_SIZE * DM_MASK_SIZE, n);
    char label[64];
    snprintf(label, sizeof label, "[%s] mask.pred (label channel)", on);
    ck_assert_double_le(test_rel_err(label, state.mask_logit, want, n), GOLDEN_TOL);
    snprintf(label, sizeof label, "[%s] mask.prob", on);
    test_rel_err(label, state.mask_prob, test_f32(&io, "mask.prob.expected", NULL), n);
}
END_TEST

/* The same pass on the CPU backend: every stage of the other backend's
 * within the golden tolerances of it. */
START_TEST(same_as_cpu)
{
    const dm_tensor *in = io_tensor("input");
    int h = (int)in->shape[2], w = (int)in->shape[3];
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create(model, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
    dm_det_image im = golden_image();
    dm_det_state cpu = {.keep_features = 1};
    ck_assert_msg(dm_det_run(model, ws, in->data, h, w, &im, NULL, &cpu) == DM_OK, "%s", dm_last_error());
    dm_workspace_free(ws);
    char label[64];
    for (int l = 0; l < DM_FPN_LEVELS; l++) {
        size_t hw = (size_t)cpu.feat_h[l] * cpu.feat_w[l];
        snprintf(label, sizeof label, "[%s] neck p%d vs cpu", on, l + 2);
        ck_assert_double_le(test_rel_err(label, state.feat[l], cpu.feat[l], hw * 64), GOLDEN_TOL);
        snprintf(label, sizeof label, "[%s] rpn.cls_score p%d vs cpu", on, l + 2);
        ck_assert_double_le(test_rel_err(label, state.rpn_cls[l], cpu.rpn_cls[l], hw * 3), GOLDEN_TOL);
        snprintf(label, sizeof label, "[%s] rpn.bbox_pred p%d vs cpu", on, l + 2);
        ck_assert_double_le(test_rel_err(label, state.rpn_reg[l], cpu.rpn_reg[l], hw * 12), GOLDEN_TOL);
    }
    ck_assert_int_eq(state.num_proposals, cpu.num_proposals);
    ck_assert_int_eq(state.count, cpu.count);
    double box_err = 0, score_err = 0;
    for (int i = 0; i < cpu.count; i++) {
        ck_assert_int_eq(state.det_labels[i], cpu.det_labels[i]);
        for (int k = 0; k < 4; k++) box_err = fmax(box_err, fabs(state.det_boxes[4 * i + k] - cpu.det_boxes[4 * i + k]));
        score_err = fmax(score_err, fabs(state.det_scores[i] - cpu.det_scores[i]));
    }
    printf("[%s] detections vs cpu: %d in order; max box err %.3e px, max score err %.3e\n", on, cpu.count, box_err,
           score_err);
    ck_assert_double_le(box_err, 0.01);
    ck_assert_double_le(score_err, 1e-4);
    snprintf(label, sizeof label, "[%s] mask.pred vs cpu", on);
    ck_assert_double_le(test_rel_err(label, state.mask_logit, cpu.mask_logit,
                                     (size_t)cpu.count * DM_MASK_SIZE * DM_MASK_SIZE),
                        GOLDEN_TOL);
    dm_det_state_free(&cpu);
}
END_TEST

/* pycocotools' rleFrString and rleDecode, written from their description:
 * 5-bit groups with a continuation bit, sign-extended, counts from the
 * third on relative to the one two before, runs column-major from 0s. */
static void rle_decode(const char *s, int h, int w, uint8_t *out)
{
    long counts[4096];
    size_t m = 0;
    for (const char *p = s; *p;) {
        long x = 0;
        int k = 0, more = 1;
        while (more) {
            long c = *p++ - 48;
            x |= (c & 0x1f) << 5 * k++;
            more = (c & 0x20) != 0;
            if (!more && (c & 0x10)) x -= 1L << 5 * k; /* sign-extend */
        }
        if (m > 2) x += counts[m - 2];
        ck_assert_uint_lt(m, 4096);
        counts[m++] = x;
    }
    size_t px = 0;
    for (size_t i = 0; i < m; i++)
        for (long r = 0; r < counts[i]; r++, px++) {
            ck_assert_uint_lt(px, (size_t)h * w);
            out[(px % h) * w + px / h] = (uint8_t)(i % 2);
        }
    ck_assert_uint_eq(px, (size_t)h * w);
}

START_TEST(pasted_masks)
{
    const dm_tensor *in = io_tensor("input"), *masks = io_tensor("segm.masks.expected");
    const dm_tensor *near = io_tensor("segm.near_threshold");
    dm_workspace *ws;
    int h = (int)in->shape[2], w = (int)in->shape[3];
    ck_assert_msg(dm_workspace_create_on(model, backend, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
    dm_det_image im = golden_image();
    dm_det_settings cfg;
    dm_det_settings_default(&cfg);
    cfg.masks = DM_MASKS_BITMAP | DM_MASKS_RLE;
    dm_detections d;
    ck_assert_msg(dm_detect(model, ws, in->data, h, w, &im, &cfg, &d) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(d.count, (int)masks->shape[0]);
    ck_assert_int_eq(d.mask_h, im.ori_h);
    ck_assert_int_eq(d.mask_w, im.ori_w);
    const uint8_t *want = masks->data, *skip = near->data;
    size_t differ = 0, skipped = 0, set = 0;
    for (size_t i = 0; i < (size_t)masks->numel; i++) {
        set += want[i];
        if (skip[i]) skipped++;
        else differ += d.masks[i] != want[i];
    }
    printf("[%s] masks: %zu pixels set, %zu differ, %zu within 1e-3 of the threshold not compared\n", on, set, differ,
           skipped);
    ck_assert_uint_eq(differ, 0);
    /* the RLE strings decode back to the bitmaps */
    uint8_t *decoded = malloc((size_t)d.mask_h * d.mask_w);
    for (int i = 0; i < d.count; i++) {
        rle_decode(d.rle[i], d.mask_h, d.mask_w, decoded);
        ck_assert_mem_eq(decoded, d.masks + (size_t)i * d.mask_h * d.mask_w, (size_t)d.mask_h * d.mask_w);
    }
    free(decoded);
    /* the RLE alone (one plane reused, read inside each window) is the same */
    dm_detections rle;
    cfg.masks = DM_MASKS_RLE;
    ck_assert_msg(dm_detect(model, ws, in->data, h, w, &im, &cfg, &rle) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(rle.count, d.count);
    ck_assert_ptr_null(rle.masks);
    for (int i = 0; i < d.count; i++) ck_assert_str_eq(rle.rle[i], d.rle[i]);
    dm_detections_free(&rle);
    dm_detections_free(&d);
    dm_workspace_free(ws);
}
END_TEST

START_TEST(paste_kernel_and_window)
{
    size_t n;
    const float *dets = test_f32(&io, "det.bboxes.expected", &n), *boxes = test_f32(&io, "segm.paste_boxes.expected", NULL);
    const float *prob = test_f32(&io, "mask.prob.expected", NULL), *pasted = test_f32(&io, "segm.prob.first4", NULL);
    dm_det_image im = golden_image();
    n /= 4;
    for (size_t i = 0; i < n; i++) {
        float box[4];
        int win[4];
        dm_paste_window(dets + 4 * i, &im, box, win);
        for (int k = 0; k < 4; k++) {
            ck_assert_int_eq(win[k], io_i64("segm.windows", 4 * i + k));
            ck_assert_float_eq_tol(box[k], boxes[4 * i + k], 1e-4); /* float32 * s / s, not float64 */
        }
    }
    /* boxes far outside the image (a tiny scale factor makes them) give
     * windows clamped to it, not ints overflowed: empty ones beside it, the
     * whole image around it */
    const float far[4][4] = {{1e31f, 1e31f, 2e31f, 2e31f}, {-2e31f, -2e31f, -1e31f, -1e31f},
                             {-1e31f, -1e31f, 1e31f, 1e31f}, {NAN, NAN, NAN, NAN}};
    const int whole[4] = {0, 0, 1, 0};
    for (int j = 0; j < 4; j++) {
        float box[4];
        int win[4];
        dm_paste_window(far[j], &im, box, win);
        for (int k = 0; k < 4; k++) ck_assert(win[k] >= 0 && win[k] <= (k % 2 ? im.ori_h : im.ori_w));
        if (whole[j]) ck_assert(win[0] == 0 && win[1] == 0 && win[2] == im.ori_w && win[3] == im.ori_h);
        else ck_assert(win[2] <= win[0] || win[3] <= win[1]);
    }
    /* the first four pasted from the reference's own 28 x 28 probabilities */
    size_t plane = (size_t)im.ori_h * im.ori_w;
    float *got = calloc(4 * plane, sizeof(float)), *win_prob = malloc(sizeof(float) * plane);
    for (int i = 0; i < 4; i++) {
        int win[4];
        for (int k = 0; k < 4; k++) win[k] = (int)io_i64("segm.windows", 4 * i + k);
        dm_paste_mask(prob + (size_t)i * 784, 28, 28, boxes + 4 * i, win[0], win[1], win[2], win[3], win_prob);
        int ww = win[2] - win[0];
        for (int y = win[1]; y < win[3]; y++)
            for (int x = win[0]; x < win[2]; x++)
                got[i * plane + (size_t)y * im.ori_w + x] = win_prob[(size_t)(y - win[1]) * ww + x - win[0]];
    }
    ck_assert_double_le(test_rel_err("segm.prob (first 4)", got, pasted, 4 * plane), 1e-5);
    free(got), free(win_prob);
}
END_TEST

START_TEST(anchors_exact)
{
    static const float ratios[] = {0.5f, 1.0f, 2.0f}, scales[] = {8.0f};
    char name[32];
    for (int l = 0; l < 5; l++) {
        snprintf(name, sizeof name, "rpn.anchors.p%d", l + 2);
        size_t n;
        const float *want = test_f32(&io, name, &n);
        snprintf(name, sizeof name, "neck.p%d.expected", l + 2);
        const dm_tensor *t = io_tensor(name);
        int h = (int)t->shape[2], w = (int)t->shape[3];
        ck_assert_uint_eq(n, (size_t)h * w * 3 * 4);
        float *got = malloc(sizeof(float) * n);
        dm_anchors((float)(4 << l), ratios, 3, scales, 1, h, w, got);
        for (size_t i = 0; i < n; i++) ck_assert_float_eq(got[i], want[i]);
        free(got);
    }
}
END_TEST

/* RoIAlign of 27 boxes over all four levels, some outside the image, one
 * of zero width, from the reference FPN levels. */
START_TEST(roi_align_extra_boxes)
{
    size_t n;
    const float *rois = test_f32(&io, "extra.rois", &n);
    n /= 5;
    float *levels[4];
    int lh[4], lw[4], C = 64, keep = 16;
    for (int l = 0; l < 4; l++) {
        char name[32];
        snprintf(name, sizeof name, "neck.p%d.expected", l + 2);
        const dm_tensor *t = io_tensor(name);
        lh[l] = (int)t->shape[2], lw[l] = (int)t->shape[3];
        levels[l] = to_nhwc(t->data, C, (size_t)lh[l] * lw[l]);
    }
    for (int size = 7; size <= 14; size += 7) {
        float *out = malloc(sizeof(float) * size * size * C), *got = malloc(sizeof(float) * n * keep * size * size);
        for (size_t i = 0; i < n; i++) {
            int l = dm_roi_level(rois + 5 * i + 1);
            ck_assert_int_eq(l, io_i64("extra.roi_levels", i));
            dm_roi_align(levels[l], lh[l], lw[l], C, 1.0f / (float)(4 << l), rois + 5 * i + 1, size, size, out);
            for (int ch = 0; ch < keep; ch++)
                for (int p = 0; p < size * size; p++)
                    got[(i * keep + ch) * size * size + p] = out[(size_t)p * C + ch];
        }
        char name[48];
        snprintf(name, sizeof name, "extra.roi_feats%d.first16ch", size);
        ck_assert_double_le(test_rel_err(name, got, test_f32(&io, name, NULL), n * keep * size * size), GOLDEN_TOL);
        free(out), free(got);
    }
    for (int l = 0; l < 4; l++) free(levels[l]);
}
END_TEST

/* The COCO test pipeline on the two photographs: sizes, scale factors and
 * bands of rows of the normalized, padded input, exactly. */
START_TEST(coco_pipeline)
{
    static const char *names[] = {"chelsea", "coffee"};
    const char *name = names[_i];
    dm_tensor_file ref;
    test_open("det_transform.safetensors", &ref);
    char key[64], file[32];
    snprintf(file, sizeof file, "%s.png", name);
    dm_image img;
    ck_assert_msg(dm_image_load(test_path(file), 3, &img) == DM_OK, "%s", dm_last_error());
    dm_mm_transform t = dm_mm_transform_coco();
    int h, w;
    float sf[4];
    ck_assert(dm_mm_transform_size(&t, img.width, img.height, &h, &w, sf) == DM_OK);
    int ph = dm_mm_padded(&t, h), pw = dm_mm_padded(&t, w);
    int64_t want[3][2];
    const char *shapes[] = {"ori_shape", "img_shape", "pad_shape"};
    for (int k = 0; k < 3; k++) {
        snprintf(key, sizeof key, "%s.%s", name, shapes[k]);
        const dm_tensor *s = dm_tensor_file_find(&ref, key);
        ck_assert_ptr_nonnull(s);
        memcpy(want[k], s->data, sizeof want[k]);
    }
    ck_assert_int_eq(img.height, want[0][0]);
    ck_assert_int_eq(img.width, want[0][1]);
    ck_assert_int_eq(h, want[1][0]);
    ck_assert_int_eq(w, want[1][1]);
    ck_assert_int_eq(ph, want[2][0]);
    ck_assert_int_eq(pw, want[2][1]);
    snprintf(key, sizeof key, "%s.scale_factor", name);
    const float *want_sf = test_f32(&ref, key, NULL);
    for (int k = 0; k < 4; k++) ck_assert_float_eq(sf[k], want_sf[k]);
    float *input = malloc(sizeof(float) * 3 * ph * pw);
    ck_assert(dm_mm_transform_image(&img, &t, input) == DM_OK);
    snprintf(key, sizeof key, "%s.rows", name);
    const dm_tensor *rows = dm_tensor_file_find(&ref, key);
    snprintf(key, sizeof key, "%s.input_rows", name);
    const float *band = test_f32(&ref, key, NULL);
    size_t nrows = (size_t)rows->numel, differ = 0;
    for (int c = 0; c < 3; c++)
        for (size_t r = 0; r < nrows; r++) {
            int64_t y;
            memcpy(&y, (const char *)rows->data + 8 * r, 8);
            for (int x = 0; x < pw; x++)
                differ += input[((size_t)c * ph + y) * pw + x] != band[(c * nrows + r) * pw + x];
        }
    printf("coco pipeline %s: %dx%d -> %dx%d padded %dx%d, %zu of %zu values differ\n", name, img.height,
           img.width, h, w, ph, pw, differ, 3 * nrows * pw);
    ck_assert_uint_eq(differ, 0);
    free(input);
    dm_image_free(&img);
    dm_tensor_file_close(&ref);
}
END_TEST

/* ------------------------------------------------------------ the tool */

/* Run the damamba program (DM_DAMAMBA, set by meson) with arguments;
 * returns its exit status. */
static int damamba(const char *args)
{
    const char *exe = getenv("DM_DAMAMBA");
    ck_assert_msg(exe != NULL, "DM_DAMAMBA (the damamba program) is not set");
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' %s", exe, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static const char *tmp_path(const char *name)
{
    static _Thread_local char buf[3][512];
    static _Thread_local int next;
    char *p = buf[next++ % 3];
    snprintf(p, sizeof buf[0], "%s/%s", getenv("DM_TEST_TMP") ? getenv("DM_TEST_TMP") : "/tmp", name);
    return p;
}

/* damamba run --backend on the detection model: the reference input with
 * its image shapes in, the reference detections and masks out. */
START_TEST(run_command)
{
    const dm_tensor *in = io_tensor("input");
    int64_t img[3], ori[3];
    for (int k = 0; k < 3; k++) img[k] = io_i64("meta.img_shape", k), ori[k] = io_i64("meta.ori_shape", k);
    dm_tensor t[] = {
        *in,
        {.name = "img_shape", .dtype = DM_I64, .ndim = 1, .shape = {3}, .numel = 3, .data = img, .nbytes = 24},
        {.name = "ori_shape", .dtype = DM_I64, .ndim = 1, .shape = {3}, .numel = 3, .data = ori, .nbytes = 24},
        *io_tensor("meta.scale_factor"),
    };
    t[0].name = "input";
    t[3].name = "scale_factor";
    const char *in_path = tmp_path("det_run_in.safetensors"), *out_path = tmp_path("det_run_out.safetensors");
    ck_assert(dm_safetensors_write(in_path, t, 4, NULL, 0) == DM_OK);
    char args[4096], model[1024];
    snprintf(model, sizeof model, "%s", test_path("maskrcnn_micro.safetensors")); /* test_path reuses its buffer */
    snprintf(args, sizeof args, "run --backend %s -m '%s' -i '%s' -o '%s'", on, model, in_path, out_path);
    ck_assert_int_eq(damamba(args), 0);
    dm_tensor_file out;
    ck_assert(dm_safetensors_open(out_path, &out) == DM_OK);
    const dm_tensor *boxes = dm_tensor_file_find(&out, "det_bboxes"), *labels = dm_tensor_file_find(&out, "det_labels");
    const dm_tensor *masks = dm_tensor_file_find(&out, "det_masks"), *props = dm_tensor_file_find(&out, "proposals");
    ck_assert(boxes && labels && masks && props && dm_tensor_file_find(&out, "det_scores"));
    ck_assert_int_eq(props->shape[0], 1000);
    ck_assert_int_eq(props->shape[1], 5);
    size_t n;
    const float *want = test_f32(&io, "det.bboxes.expected", &n);
    ck_assert_uint_eq((size_t)boxes->numel, n);
    for (size_t i = 0; i < n; i++) ck_assert_float_eq_tol(((const float *)boxes->data)[i], want[i], 0.01);
    for (size_t i = 0; i < n / 4; i++) {
        int64_t l;
        memcpy(&l, (const char *)labels->data + 8 * i, 8);
        ck_assert_int_eq(l, io_i64("det.labels", i));
    }
    const dm_tensor *ref = io_tensor("segm.masks.expected"), *near = io_tensor("segm.near_threshold");
    ck_assert_uint_eq(masks->dtype, DM_U8);
    ck_assert_uint_eq((size_t)masks->numel, (size_t)ref->numel);
    size_t differ = 0;
    for (size_t i = 0; i < (size_t)ref->numel; i++)
        differ += !((const uint8_t *)near->data)[i] &&
                  ((const uint8_t *)masks->data)[i] != ((const uint8_t *)ref->data)[i];
    ck_assert_uint_eq(differ, 0);
    dm_tensor_file_close(&out);
    remove(in_path);
    remove(out_path);
    /* an input without its image shapes is refused, naming what is missing */
    snprintf(args, sizeof args, "run -m '%s' -i '%s' -o '%s' 2>/dev/null", model, test_path("maskrcnn_micro.io.safetensors"),
             out_path);
    ck_assert_int_eq(damamba(args), 1);
}
END_TEST

/* damamba detect --backend --coco-results: one record per detection of
 * the images the annotation file names, image ids from it, the others
 * reported. */
START_TEST(detect_command)
{
    const char *ann = tmp_path("det_ann.json"), *res = tmp_path("det_res.json");
    FILE *f = fopen(ann, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"images\": [{\"id\": 42, \"file_name\": \"coffee.png\"}], \"annotations\": []}", f);
    fclose(f);
    /* a file of the user's where the results' temporary file once went */
    char mine[1100];
    snprintf(mine, sizeof mine, "%s.tmp", res);
    f = fopen(mine, "w");
    ck_assert_ptr_nonnull(f);
    fputs("keep", f);
    fclose(f);
    char args[8192], model[1024], coffee[1024];
    /* test_path reuses its buffer */
    snprintf(model, sizeof model, "%s", test_path("maskrcnn_micro.safetensors"));
    snprintf(coffee, sizeof coffee, "%s", test_path("coffee.png"));
    snprintf(args, sizeof args, "detect -q --backend %s -m '%s' --score-thr 0.5 --coco-results '%s' "
             "--coco-annotations '%s' '%s' '%s' >/dev/null 2>&1", on, model, res, ann, coffee, test_path("chelsea.png"));
    ck_assert_int_eq(damamba(args), 1); /* chelsea.png is not in the annotations */
    size_t size;
    f = fopen(res, "rb");
    ck_assert_ptr_nonnull(f);
    char *text = malloc(1 << 20);
    size = fread(text, 1, 1 << 20, f);
    fclose(f);
    char err[128];
    dm_json *root = dm_json_parse(text, size, err, sizeof err);
    ck_assert_msg(root && root->type == DM_JSON_ARRAY, "%s", err);
    ck_assert_uint_gt(root->count, 0);
    for (const dm_json *r = root->child; r; r = r->next) {
        ck_assert_int_eq(dm_json_get(r, "image_id")->integer, 42);
        ck_assert_double_gt(dm_json_get(r, "score")->number, 0.5);
        const dm_json *cat = dm_json_get(r, "category_id"), *seg = dm_json_get(r, "segmentation");
        ck_assert(cat->integer >= 1 && cat->integer <= 5); /* person .. airplane */
        ck_assert_uint_eq(dm_json_get(r, "bbox")->count, 4);
        const dm_json *size = dm_json_get(seg, "size");
        ck_assert(size->count == 2 && size->child->integer == 400 && size->child->next->integer == 600);
        ck_assert_uint_eq(dm_json_get(seg, "counts")->type, DM_JSON_STRING);
    }
    dm_json_free(root);
    free(text);
    f = fopen(mine, "rb");
    ck_assert_ptr_nonnull(f);
    char kept[8] = "";
    ck_assert_uint_eq(fread(kept, 1, sizeof kept - 1, f), 4);
    fclose(f);
    ck_assert_str_eq(kept, "keep");
    remove(mine);
    remove(ann);
    remove(res);
}
END_TEST

/* damamba eval --task det against ground truth made of the model's own
 * detections scoring above 0.5 (the results of detect --coco-results):
 * each such detection matches its own object at IoU 1 before any lower
 * one is ranked, so box and mask AP are exactly 1. */
START_TEST(eval_command)
{
    const char *ann = tmp_path("det_eval_ann.json"), *res = tmp_path("det_eval_res.json");
    const char *gt = tmp_path("det_eval_gt.json");
    FILE *f = fopen(ann, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"images\": [{\"id\": 1, \"file_name\": \"coffee.png\", \"height\": 400, \"width\": 600}, "
          "{\"id\": 2, \"file_name\": \"chelsea.png\", \"height\": 300, \"width\": 451}], \"annotations\": []}", f);
    fclose(f);
    char args[8192], model[1024], dir[1024];
    snprintf(model, sizeof model, "%s", test_path("maskrcnn_micro.safetensors"));
    snprintf(dir, sizeof dir, "%s", test_path(""));
    snprintf(args, sizeof args, "detect -q -m '%s' --coco-results '%s' --coco-annotations '%s' '%s/coffee.png' "
             "'%s/chelsea.png' >/dev/null", model, res, ann, dir, dir);
    ck_assert_int_eq(damamba(args), 0);
    size_t size;
    f = fopen(res, "rb");
    char *text = malloc(1 << 22);
    size = fread(text, 1, 1 << 22, f);
    fclose(f);
    char err[128];
    dm_json *results = dm_json_parse(text, size, err, sizeof err);
    ck_assert_msg(results != NULL, "%s", err);
    f = fopen(gt, "w");
    fputs("{\"images\": [{\"id\": 1, \"file_name\": \"coffee.png\", \"height\": 400, \"width\": 600}, "
          "{\"id\": 2, \"file_name\": \"chelsea.png\", \"height\": 300, \"width\": 451}], \"annotations\": [", f);
    int n = 0;
    for (const dm_json *r = results->child; r; r = r->next) {
        if (dm_json_get(r, "score")->number <= 0.5) continue;
        const dm_json *b = dm_json_get(r, "bbox")->child, *seg = dm_json_get(r, "segmentation");
        double w = b->next->next->number, h = b->next->next->next->number;
        fprintf(f, "%s{\"id\": %d, \"image_id\": %lld, \"category_id\": %lld, \"iscrowd\": 0, \"area\": %g, "
                   "\"bbox\": [%.2f, %.2f, %.2f, %.2f], \"segmentation\": {\"size\": [%lld, %lld], \"counts\": ",
                n ? ", " : "", n + 1, (long long)dm_json_get(r, "image_id")->integer,
                (long long)dm_json_get(r, "category_id")->integer, w * h, b->number, b->next->number, w, h,
                (long long)dm_json_get(seg, "size")->child->integer,
                (long long)dm_json_get(seg, "size")->child->next->integer);
        dm_json_write_string(f, dm_json_get(seg, "counts")->string);
        fputs("}}", f);
        n++;
    }
    fputs("]}", f);
    fclose(f);
    dm_json_free(results);
    free(text);
    ck_assert_int_gt(n, 5);
    const char *log = tmp_path("det_eval.log");
    snprintf(args, sizeof args, "eval -q --task det -m '%s' --coco-annotations '%s' '%s' > '%s'", model, gt, dir, log);
    ck_assert_int_eq(damamba(args), 0);
    f = fopen(log, "r");
    char line[512], last[512] = "";
    while (fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line);
    fclose(f);
    printf("eval on its own detections: %s", last);
    ck_assert_str_eq(last, "bbox_mAP=1.0000 segm_mAP=1.0000 n=2\n");
    remove(ann), remove(res), remove(gt), remove(log);
}
END_TEST

/* ------------------------------------------------------- worked by hand */

START_TEST(nms_strict_threshold)
{
    /* b overlaps a by IoU exactly 0.5 (inter 50, union 100); c by 1/3 */
    const float boxes[] = {0, 0, 10, 7.5f, 0, 2.5f, 10, 10, 0, 5, 10, 10};
    int keep[3];
    uint8_t scratch[3];
    ck_assert_uint_eq(dm_nms(boxes, 2, 0.5f, keep, scratch), 2);
    ck_assert_uint_eq(dm_nms(boxes, 2, 0.49f, keep, scratch), 1);
    ck_assert_int_eq(keep[0], 0);
    /* a suppressed box suppresses nothing: c survives the dropped b */
    const float chain[] = {0, 0, 10, 10, 2, 0, 12, 10, 4, 0, 14, 10};
    ck_assert_uint_eq(dm_nms(chain, 3, 0.6f, keep, scratch), 2);
    ck_assert_int_eq(keep[1], 2);
    /* a box with a NaN coordinate neither suppresses nor is suppressed */
    for (int k = 0; k < 4; k++) {
        float twins[] = {0, 0, 10, 10, 0, 0, 10, 10, 0, 0, 10, 10};
        twins[4 + k] = NAN;
        ck_assert_uint_eq(dm_nms(twins, 3, 0.5f, keep, scratch), 2);
        ck_assert_int_eq(keep[1], 1);
        twins[4 + k] = twins[k], twins[k] = NAN;
        ck_assert_uint_eq(dm_nms(twins, 3, 0.5f, keep, scratch), 2);
    }
}
END_TEST

/* mmcv's batched_nms as written: every box moved by group * (largest
 * coordinate + 1), one NMS over all of them in score order (equal scores
 * in index order). */
static size_t batched_nms_whole(const float *boxes, const float *scores, const int *groups, size_t n, float iou,
                                int *keep)
{
    int *order = malloc(n * sizeof *order), *picked = malloc(n * sizeof *picked);
    float *moved = malloc(4 * n * sizeof *moved), top = -INFINITY;
    uint8_t *scratch = malloc(n);
    ck_assert(order && picked && moved && scratch);
    for (size_t i = 0; i < 4 * n; i++) top = fmaxf(top, boxes[i]);
    for (size_t i = 0; i < n; i++) order[i] = (int)i;
    for (size_t i = 1; i < n; i++) /* insertion sort: stable, by descending score */
        for (size_t j = i; j > 0 && scores[order[j - 1]] < scores[order[j]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            moved[4 * i + k] = boxes[4 * (size_t)order[i] + k] + (float)groups[order[i]] * (top + 1.0f);
    size_t kept = dm_nms(moved, n, iou, picked, scratch);
    for (size_t i = 0; i < kept; i++) keep[i] = order[picked[i]];
    free(order), free(picked), free(moved), free(scratch);
    return kept;
}

/* Each group's NMS alone gives what one NMS over the moved boxes gives:
 * boxes in clusters (so many suppress each other), scores with ties,
 * groups with gaps, at several thresholds. */
START_TEST(batched_nms_by_group)
{
    test_seed(31);
    size_t total_kept = 0, total = 0;
    for (int round = 0; round < 60; round++) {
        size_t n = (size_t)(round % 12 == 0 ? round / 12 : 20 + rand() % 400);
        int groups_used = 1 + rand() % 7, spread = 1 + rand() % 3;
        float iou = (float[]){0.3f, 0.5f, 0.7f}[round % 3];
        float *boxes = malloc((4 * n + 1) * sizeof *boxes), *scores = malloc((n + 1) * sizeof *scores);
        int *groups = malloc((n + 1) * sizeof *groups), *want = malloc((n + 1) * sizeof *want);
        int *got = malloc((n + 1) * sizeof *got);
        ck_assert(boxes && scores && groups && want && got);
        for (size_t i = 0; i < n; i++) {
            float cx = (float)(rand() % 5) * 150 + (float)(rand() % 9);
            float cy = (float)(rand() % 4) * 120 + (float)(rand() % 9);
            float bw = 50 + (float)(rand() % 20), bh = 40 + (float)(rand() % 30);
            boxes[4 * i] = fmaxf(0, cx - bw / 2), boxes[4 * i + 1] = fmaxf(0, cy - bh / 2);
            boxes[4 * i + 2] = cx + bw / 2, boxes[4 * i + 3] = cy + bh / 2;
            scores[i] = (float)(rand() % 50) / 50; /* many ties */
            groups[i] = spread * (rand() % groups_used);
        }
        size_t want_n = batched_nms_whole(boxes, scores, groups, n, iou, want), got_n = 0;
        ck_assert_int_eq(dm_batched_nms(boxes, scores, groups, n, iou, got, &got_n), DM_OK);
        ck_assert_uint_eq(got_n, want_n);
        for (size_t i = 0; i < want_n; i++) ck_assert_int_eq(got[i], want[i]);
        total_kept += got_n, total += n;
        free(boxes), free(scores), free(groups), free(want), free(got);
    }
    /* the clusters made NMS drop boxes, and not all of them */
    ck_assert_uint_gt(total_kept, total / 20);
    ck_assert_uint_lt(total_kept, total / 2);
    float box[4] = {0, 0, 1, 1}, score = 1;
    int group = -1, keep[1];
    size_t kept;
    ck_assert_int_eq(dm_batched_nms(box, &score, &group, 1, 0.5f, keep, &kept), DM_ERR_ARGUMENT);
}
END_TEST

START_TEST(box_decode_by_hand)
{
    /* roi 10..30 x 20..60 (centre 20, 40; 20 x 40), deltas (0.5, -0.25,
     * log 2, 0) with stds 1: centre (30, 30), size 40 x 40 */
    const float roi[] = {10, 20, 30, 60}, means[4] = {0}, stds[4] = {1, 1, 1, 1};
    float d[] = {0.5f, -0.25f, logf(2.0f), 0}, out[4];
    dm_delta2bbox(roi, d, 1, means, stds, 4.135f, 100, 100, out);
    ck_assert_float_eq_tol(out[0], 10, 1e-4);
    ck_assert_float_eq_tol(out[1], 10, 1e-4);
    ck_assert_float_eq_tol(out[2], 50, 1e-4);
    ck_assert_float_eq_tol(out[3], 50, 1e-4);
    /* a huge dw is clamped to the ratio limit; the box is clipped */
    d[2] = 100;
    dm_delta2bbox(roi, d, 1, means, stds, 1.0f, 45, 45, out);
    ck_assert_float_eq_tol(out[0], 30 - 10 * expf(1.0f), 1e-4);
    ck_assert_float_eq(out[2], 45);
}
END_TEST

/* The RLE of a bitmap known to be 0 outside a window reads only the
 * window, and equals the whole bitmap's. */
START_TEST(rle_of_a_window)
{
    test_seed(3);
    for (int t = 0; t < 200; t++) {
        int h = 1 + (int)test_uniform(0, 40), w = 1 + (int)test_uniform(0, 40);
        int win[4] = {(int)test_uniform(-3, (float)w), (int)test_uniform(-3, (float)h), 0, 0};
        win[2] = win[0] + (int)test_uniform(-2, (float)w), win[3] = win[1] + (int)test_uniform(-2, (float)h);
        uint8_t *zeroed = calloc((size_t)h * w, 1), *garbage = malloc((size_t)h * w);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int inside = x >= win[0] && x < win[2] && y >= win[1] && y < win[3];
                uint8_t v = test_uniform(0, 1) < 0.5f;
                zeroed[(size_t)y * w + x] = inside ? v : 0;
                garbage[(size_t)y * w + x] = inside ? v : 1; /* never read */
            }
        char *want = dm_rle_encode(zeroed, h, w), *got = dm_rle_encode_window(garbage, h, w, win);
        ck_assert_msg(!strcmp(got, want), "%dx%d window %d %d %d %d: %s, not %s", h, w, win[0], win[1], win[2], win[3],
                      got, want);
        free(want), free(got), free(zeroed), free(garbage);
    }
}
END_TEST

START_TEST(rle_by_hand)
{
    /* column-major runs start with zeros: [[0, 1], [1, 1]] -> 0 1 1 1 -> "13" */
    const uint8_t a[] = {0, 1, 1, 1};
    char *s = dm_rle_encode(a, 2, 2);
    ck_assert_str_eq(s, "13");
    free(s);
    /* a column of 5 ones then 40 zeros: counts 0 5 40; 40 needs two
     * 5-bit groups: 8 | 0x20 -> 'X', then 1 -> '1' */
    uint8_t b[45] = {0};
    memset(b, 1, 5);
    s = dm_rle_encode(b, 45, 1);
    ck_assert_str_eq(s, "05X1");
    free(s);
    /* counts 2 10 1 3: the fourth is written as 3 - 10 = -7 -> 25 -> 'I' */
    uint8_t c[16] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1};
    s = dm_rle_encode(c, 16, 1);
    ck_assert_str_eq(s, "2:1I");
    free(s);
}
END_TEST

/* A model whose RPN and box classifier give NaN scores runs to the end
 * and finds nothing: no NaN passes the score threshold, as in mmdet. */
/* The detections of model m in a 128 x 160 image of noise, which must run
 * to the end. */
static dm_detections detect_noise(const dm_model *m)
{
    int h = 128, w = 160;
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, backend, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
    float *x = malloc(sizeof(float) * 3 * h * w);
    test_seed(11);
    for (int i = 0; i < 3 * h * w; i++) x[i] = test_uniform(-2, 2);
    dm_det_image im = {h, w, h, w, {1, 1, 1, 1}};
    dm_detections d;
    ck_assert_msg(dm_detect(m, ws, x, h, w, &im, NULL, &d) == DM_OK, "%s", dm_last_error());
    free(x);
    dm_workspace_free(ws);
    return d;
}

START_TEST(nan_scores_find_nothing)
{
    dm_model *m;
    ck_assert(dm_model_load(test_path("maskrcnn_micro.safetensors"), NULL, &m) == DM_OK);
    dm_det_heads *heads = &m->det;
    for (int i = 0; i < heads->rpn_cls.cout; i++) heads->rpn_cls.bias[i] = NAN;
    for (int i = 0; i < heads->cls.cout; i++) heads->cls.bias[i] = NAN;
    dm_detections d = detect_noise(m);
    printf("[%s] NaN scores: %d proposals, %d detections\n", dm_backend_name(backend), d.num_proposals, d.count);
    ck_assert_int_gt(d.num_proposals, 0);
    ck_assert_int_eq(d.count, 0);
    dm_detections_free(&d);
    dm_model_free(m);
}
END_TEST

/* NaN box deltas give NaN boxes with finite scores; the mask head pools
 * nothing from them (mmcv's RoIAlign takes no samples there) and the pass
 * runs to the end: no undefined conversion of NaN to a sample count. */
START_TEST(nan_boxes_pool_nothing)
{
    float nan_roi[4] = {NAN, 1, NAN, 5}, wide[4] = {0, 0, 1e30f, 1e30f};
    dm_roi_grid g = dm_roi_grid_of(nan_roi, 0.25f, 14, 14);
    ck_assert_int_eq(g.grid_w, 0);
    ck_assert_int_eq(g.grid_h, 1);
    g = dm_roi_grid_of(wide, 0.25f, 7, 7);
    ck_assert_int_eq(g.grid_w, 65536);

    dm_model *m;
    ck_assert(dm_model_load(test_path("maskrcnn_micro.safetensors"), NULL, &m) == DM_OK);
    for (int i = 0; i < m->det.reg.cout; i++) m->det.reg.bias[i] = NAN;
    dm_detections d = detect_noise(m);
    printf("[%s] NaN boxes: %d detections\n", dm_backend_name(backend), d.count);
    ck_assert_int_gt(d.count, 0);
    ck_assert(isnan(d.boxes[0]) && isfinite(d.scores[0]));
    dm_detections_free(&d);
    dm_model_free(m);
}
END_TEST

/* A box of no width whose edge lies on a pixel centre (x = 2.5): that
 * column's grid coordinate is 0 / 0, and grid_sample gives NaN there,
 * which mmdet's mask threshold never admits, not even 0; the other columns
 * (coordinates of +-inf, taken as 0) sample the mask's centre.  NaN was
 * pasted as 0, which a threshold of 0 admitted. */
START_TEST(paste_through_a_centre_gives_nan)
{
    float ones[28 * 28], prob[5 * 4];
    for (int i = 0; i < 28 * 28; i++) ones[i] = 1.0f;
    const float box[4] = {2.5f, 0.0f, 2.5f, 4.0f};
    dm_paste_mask(ones, 28, 28, box, 0, 0, 5, 4, prob);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 5; x++) {
            float p = prob[y * 5 + x];
            ck_assert_msg(x == 2 ? isnan(p) : p == 1.0f, "pixel (%d, %d) is %g", x, y, p);
        }
}
END_TEST

START_TEST(detect_rejects_bad_calls)
{
    dm_model *m;
    ck_assert(dm_model_synthetic('F', 3, 10, 1, &m) == DM_OK);
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, backend, 1, 64, 64, &ws) == DM_OK, "%s", dm_last_error());
    float *x = calloc(3 * 64 * 64, sizeof(float));
    dm_det_image im = {64, 64, 64, 64, {1, 1, 1, 1}};
    dm_detections d;
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, NULL, &d), DM_ERR_MODEL);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "no detection heads"));
    dm_workspace_free(ws);
    dm_model_free(m);

    ck_assert(dm_model_load(test_path("maskrcnn_micro.safetensors"), NULL, &m) == DM_OK);
    ck_assert_msg(dm_workspace_create_on(m, backend, 1, 64, 64, &ws) == DM_OK, "%s", dm_last_error());
    im.img_h = 65;
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, NULL, &d), DM_ERR_ARGUMENT);
    im.img_h = 64;
    im.scale_factor[1] = 0;
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, NULL, &d), DM_ERR_ARGUMENT);
    im.scale_factor[1] = 1;
    im.ori_h = im.ori_w = 65536; /* masks are pasted at the original size */
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, NULL, &d), DM_ERR_ARGUMENT);
    ck_assert_msg(strstr(dm_last_error(), "original size 65536x65536 must be positive and at most 1e9 pixels"), "%s",
                  dm_last_error());
    im.ori_h = im.ori_w = 64;
    dm_det_settings cfg;
    dm_det_settings_default(&cfg);
    cfg.iou = 2;
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, &cfg, &d), DM_ERR_ARGUMENT);
    cfg.iou = 0.5f;
    cfg.masks = DM_MASKS_BITMAP | 4; /* a kind of mask there is none of */
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, &cfg, &d), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "masks 0x5 holds bits other than"));
    cfg.masks = DM_MASKS_BITMAP;
    cfg.size = 0; /* not filled in by dm_det_settings_default */
    ck_assert_int_eq(dm_detect(m, ws, x, 64, 64, &im, &cfg, &d), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "dm_det_settings"));
    ck_assert_int_eq(d.count, 0);
    ck_assert_ptr_null(d.boxes);
    /* a blank image still runs to the end */
    ck_assert_msg(dm_detect(m, ws, x, 64, 64, &im, NULL, &d) == DM_OK, "%s", dm_last_error());
    dm_detections_free(&d);
    free(x);
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* The golden image's detections on one thread and on three: the same
 * proposals, boxes, scores, labels and masks, bit for bit. */
START_TEST(threads_change_no_bit)
{
    const dm_tensor *in = io_tensor("input");
    int h = (int)in->shape[2], w = (int)in->shape[3];
    dm_det_image im = golden_image();
    dm_detections d[2];
    for (int i = 0; i < 2; i++) {
        dm_workspace *ws;
        ck_assert_msg(dm_workspace_create_on(model, backend, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
        ck_assert(dm_workspace_set_threads(ws, i ? 3 : 1) == DM_OK);
        ck_assert_msg(dm_detect(model, ws, in->data, h, w, &im, NULL, &d[i]) == DM_OK, "%s", dm_last_error());
        dm_workspace_free(ws);
    }
    int n = d[0].count, p = d[0].num_proposals;
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(d[1].count, n);
    ck_assert_int_eq(d[1].num_proposals, p);
    ck_assert_msg(memcmp(d[0].proposals, d[1].proposals, sizeof(float) * 5 * p) == 0, "proposals differ");
    ck_assert_msg(memcmp(d[0].boxes, d[1].boxes, sizeof(float) * 4 * n) == 0, "boxes differ");
    ck_assert_msg(memcmp(d[0].scores, d[1].scores, sizeof(float) * n) == 0, "scores differ");
    ck_assert_msg(memcmp(d[0].labels, d[1].labels, sizeof(int) * n) == 0, "labels differ");
    ck_assert_msg(memcmp(d[0].masks, d[1].masks, (size_t)n * d[0].mask_h * d[0].mask_w) == 0, "masks differ");
    dm_detections_free(&d[0]);
    dm_detections_free(&d[1]);
}
END_TEST

static Suite *detect_suite(void)
{
    Suite *s = suite_create("detect");
    TCase *golden = tcase_create("golden");
    tcase_add_unchecked_fixture(golden, run_golden, free_golden);
    tcase_set_timeout(golden, 300);
    tcase_add_test(golden, fpn_and_rpn_outputs);
    tcase_add_test(golden, proposals_as_a_set);
    tcase_add_test(golden, box_head_outputs);
    tcase_add_test(golden, detections_in_order);
    tcase_add_test(golden, mask_logits);
    tcase_add_test(golden, pasted_masks);
    tcase_add_test(golden, paste_kernel_and_window);
    tcase_add_test(golden, anchors_exact);
    tcase_add_test(golden, roi_align_extra_boxes);
    if (backend != DM_BACKEND_CPU) tcase_add_test(golden, same_as_cpu);
    else tcase_add_test(golden, threads_change_no_bit);
    suite_add_tcase(s, golden);
    if (backend == DM_BACKEND_CPU) { /* no network in it */
        TCase *pipeline = tcase_create("pipeline");
        tcase_add_loop_test(pipeline, coco_pipeline, 0, 2);
        suite_add_tcase(s, pipeline);
    }
    /* native builds (see meson.build); run and detect on the suite's
     * backend, eval (which has no --backend) on the CPU */
    if (getenv("DM_DAMAMBA")) {
        TCase *tool = tcase_create("tool");
        tcase_add_unchecked_fixture(tool, open_io, close_io);
        tcase_set_timeout(tool, 300);
        tcase_add_test(tool, run_command);
        tcase_add_test(tool, detect_command);
        if (backend == DM_BACKEND_CPU) tcase_add_test(tool, eval_command);
        suite_add_tcase(s, tool);
    }
    TCase *hand = tcase_create("by_hand");
    tcase_add_test(hand, nms_strict_threshold);
    tcase_add_test(hand, batched_nms_by_group);
    tcase_add_test(hand, box_decode_by_hand);
    tcase_add_test(hand, rle_by_hand);
    tcase_add_test(hand, rle_of_a_window);
    tcase_add_test(hand, detect_rejects_bad_calls);
    tcase_add_test(hand, paste_through_a_centre_gives_nan);
    tcase_add_test(hand, nan_scores_find_nothing);
    tcase_add_test(hand, nan_boxes_pool_nothing);
    suite_add_tcase(s, hand);
    return s;
}

/* In process: the golden fixture runs OpenMP once, which a forked child
 * could not use (nor the CUDA runtime, once initialized). */
int main(void)
{
    const char *name = getenv("DM_TEST_BACKEND");
    if (name && !strcmp(name, "cuda")) {
        int missing = test_cuda_missing();
        if (missing) return missing;
        backend = DM_BACKEND_CUDA;
        on = "cuda";
    }
    return test_run_in_process(detect_suite());
}
