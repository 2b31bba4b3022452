/* upernet.c - semantic segmentation: mmseg 0.30's UPerHead on the four
 * stage outputs, and EncoderDecoder's inference modes (whole, sliding
 * window, multi-scale + flip) around it.  Channels-last throughout; the
 * head's buffers live in the workspace. */
#include "cpu.h"

#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- layout */

/* Stage sizes of an h x w input, as dm_stage_shape gives them. */
static void stage_sizes(int h, int w, int hs[DM_NUM_STAGES], int ws[DM_NUM_STAGES])
{
    hs[0] = dm_down2(dm_down2(h));
    ws[0] = dm_down2(dm_down2(w));
    for (int s = 1; s < DM_NUM_STAGES; s++) {
        hs[s] = dm_down2(hs[s - 1]);
        ws[s] = dm_down2(ws[s - 1]);
    }
}

#define MAX_BINS 6 /* the largest pool scale */

/* The head's buffers for n images, carved in this order from one block. */
typedef struct head_buffers {
    float *stage[DM_NUM_STAGES];   /* backbone outputs [P_s][C_s] */
    float *lateral[DM_NUM_STAGES]; /* laterals, [3] the PPM bottleneck [P_s][ch] */
    float *ppm_cat;                /* stage 3 and the four pooled branches [P3][C3 + 4 ch] */
    float *pooled, *pooled_conv;   /* [n][bins^2][C3], [n][bins^2][ch] */
    float *fpn_cat;                /* the four levels at 1/4 scale [P0][4 ch] */
    float *fpn_tmp;                /* one FPN conv's output [P0][ch] */
    float *feats;                  /* fpn_bottleneck output [P0][ch] */
    float *decode;                 /* conv_seg output [P0][K] */
} head_buffers;

static size_t head_layout(const dm_config *c, int n, int h, int w, float *base, head_buffers *b)
{
    int hs[DM_NUM_STAGES], ws[DM_NUM_STAGES];
    stage_sizes(h, w, hs, ws);
    size_t P[DM_NUM_STAGES], ch = (size_t)c->seg_channels, total = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) P[s] = (size_t)n * hs[s] * ws[s];
    float **slots[2 * DM_NUM_STAGES + 7];
    size_t sizes[2 * DM_NUM_STAGES + 7];
    int k = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        slots[k] = &b->stage[s], sizes[k++] = P[s] * c->dims[s];
        slots[k] = &b->lateral[s], sizes[k++] = P[s] * ch;
    }
    slots[k] = &b->ppm_cat, sizes[k++] = P[3] * (c->dims[3] + DM_PPM_SCALES * ch);
    slots[k] = &b->pooled, sizes[k++] = (size_t)n * MAX_BINS * MAX_BINS * c->dims[3];
    slots[k] = &b->pooled_conv, sizes[k++] = (size_t)n * MAX_BINS * MAX_BINS * ch;
    slots[k] = &b->fpn_cat, sizes[k++] = P[0] * DM_NUM_STAGES * ch;
    slots[k] = &b->fpn_tmp, sizes[k++] = P[0] * ch;
    slots[k] = &b->feats, sizes[k++] = P[0] * ch;
    slots[k] = &b->decode, sizes[k++] = P[0] * c->seg_classes;
    for (int i = 0; i < k; i++) {
        if (base) *slots[i] = base + total;
        total += (sizes[i] + 15) & ~(size_t)15;
    }
    return total;
}

/* Column rows of one 3x3 conv: a band, or all output pixels when fewer. */
static size_t conv_cols(size_t (*conv_band)(int), size_t pixels, int cin)
{
    size_t band = conv_band(cin);
    return (band < pixels ? band : pixels) * 9 * (size_t)cin;
}

size_t dm_upernet_plan(const dm_config *c, int n, int h, int w, size_t (*conv_band)(int cin), size_t *cols)
{
    int hs[DM_NUM_STAGES], ws[DM_NUM_STAGES], ch = c->seg_channels;
    stage_sizes(h, w, hs, ws);
    size_t need[] = {
        conv_cols(conv_band, (size_t)n * hs[3] * ws[3], c->dims[3] + DM_PPM_SCALES * ch), /* bottleneck */
        conv_cols(conv_band, (size_t)n * hs[0] * ws[0], ch),                             /* fpn_convs */
        conv_cols(conv_band, (size_t)n * hs[0] * ws[0], DM_NUM_STAGES * ch),             /* fpn_bottleneck */
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (need[i] > *cols) *cols = need[i];
    head_buffers b;
    return head_layout(c, n, h, w, NULL, &b);
}

/* ------------------------------------------------------------- operators */

/* Resize n channels-last images; threads share the n * oh output rows.
 * Image i lands at y + i * out_image (see the kernel for the strides). */
static void resize_images(const dm_cpu *cx, const float *x, int n, int ih, int iw, int c, float *y, int oh, int ow,
                          size_t pixel_stride, size_t channel_stride, size_t out_image, int accumulate)
{
    size_t in_image = (size_t)ih * iw * c;
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (int t = 0; t < cx->threads; t++) {
        size_t r0, r1;
        dm_cpu_share((size_t)n * oh, cx->threads, t, &r0, &r1);
        while (r0 < r1) { /* one call per image the share touches */
            size_t img = r0 / oh, y0 = r0 % oh, y1 = y0 + (r1 - r0) < (size_t)oh ? y0 + (r1 - r0) : (size_t)oh;
            cx->k->resize_bilinear(x + img * in_image, ih, iw, c, y + img * out_image, oh, ow, pixel_stride,
                                   channel_stride, accumulate, (int)y0, (int)y1);
            r0 += y1 - y0;
        }
    }
}

/* y = act(x W^T + b) over rows pixels: a 1x1 convolution. */
static void conv1x1(const dm_cpu *cx, const dm_conv1x1 *cv, const float *x, size_t rows, float *y, dm_act act)
{
    dm_cpu_gemm(cx, rows, (size_t)cv->cout, (size_t)cv->cin, x, (size_t)cv->cin, cv->weight, y, 0.0f, cv->bias,
                act);
}

/* ------------------------------------------------------------------ head */

/* Pyramid pooling on stage 3: its output next to each pool scale's
 * pooled, convolved and upsampled branch, then the 3x3 bottleneck. */
static void psp_forward(const dm_cpu *cx, const dm_model *m, float *cols, head_buffers *b, int n, int h3, int w3)
{
    const dm_upernet *u = m->upernet;
    int c3 = m->config.dims[3], ch = m->config.seg_channels, oh, ow;
    size_t width = (size_t)c3 + DM_PPM_SCALES * ch, per_image = (size_t)h3 * w3;
    cx->k->concat_rows(b->stage[3], n * per_image, (size_t)c3, b->ppm_cat, width);
    for (int i = 0; i < DM_PPM_SCALES; i++) {
        int bins = dm_ppm_scales[i];
        size_t cells = (size_t)bins * bins;
        for (int img = 0; img < n; img++)
            cx->k->adaptive_avg_pool(b->stage[3] + img * per_image * c3, h3, w3, c3, b->pooled + img * cells * c3,
                                     bins);
        conv1x1(cx, &u->psp[i], b->pooled, n * cells, b->pooled_conv, DM_ACT_RELU);
        resize_images(cx, b->pooled_conv, n, bins, bins, ch, b->ppm_cat + c3 + (size_t)i * ch, h3, w3, width, 1,
                      per_image * width, 0);
    }
    dm_cpu_conv3x3(cx, &u->bottleneck, b->ppm_cat, b->lateral[3], cols, n, h3, w3, &oh, &ow, DM_ACT_RELU);
}

/* UPerHead.forward: laterals, top-down sums, FPN convs, everything resized
 * to 1/4 and concatenated, fpn_bottleneck, conv_seg -> b->decode. */
static void upernet_forward(const dm_cpu *cx, const dm_model *m, float *cols, head_buffers *b, int n, int h, int w)
{
    const dm_upernet *u = m->upernet;
    const dm_config *c = &m->config;
    int hs[DM_NUM_STAGES], ws[DM_NUM_STAGES], ch = c->seg_channels, oh, ow;
    stage_sizes(h, w, hs, ws);
    size_t P0 = (size_t)hs[0] * ws[0], width = (size_t)DM_NUM_STAGES * ch;
    for (int s = 0; s < DM_NUM_STAGES - 1; s++)
        conv1x1(cx, &u->lateral[s], b->stage[s], (size_t)n * hs[s] * ws[s], b->lateral[s], DM_ACT_RELU);
    psp_forward(cx, m, cols, b, n, hs[3], ws[3]);
    for (int s = DM_NUM_STAGES - 1; s > 0; s--)
        resize_images(cx, b->lateral[s], n, hs[s], ws[s], ch, b->lateral[s - 1], hs[s - 1], ws[s - 1], (size_t)ch, 1,
                      (size_t)hs[s - 1] * ws[s - 1] * ch, 1);
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const float *level = b->lateral[s];
        if (s < DM_NUM_STAGES - 1) {
            dm_cpu_conv3x3(cx, &u->fpn[s], b->lateral[s], b->fpn_tmp, cols, n, hs[s], ws[s], &oh, &ow, DM_ACT_RELU);
            level = b->fpn_tmp;
        }
        if (s == 0) cx->k->concat_rows(level, n * P0, (size_t)ch, b->fpn_cat, width);
        else resize_images(cx, level, n, hs[s], ws[s], ch, b->fpn_cat + (size_t)s * ch, hs[0], ws[0], width, 1,
                           P0 * width, 0);
    }
    dm_cpu_conv3x3(cx, &u->fpn_bottleneck, b->fpn_cat, b->feats, cols, n, hs[0], ws[0], &oh, &ow, DM_ACT_RELU);
    /* Dropout is the identity at inference. */
    conv1x1(cx, &u->cls, b->feats, n * P0, b->decode, DM_ACT_NONE);
}

/* ------------------------------------------------------------- inference */

/* Whole-image inference of n images of h x w: the head's output is left in
 * b (laid out in the workspace), and if logits is non-NULL it receives them
 * resized to h x w, channels-last [n][h][w][K]. */
static dm_status infer_whole(const dm_cpu *cx, const dm_model *m, dm_workspace *ws, const float *input, int n,
                             int h, int w, head_buffers *b, float *logits)
{
    head_layout(&m->config, n, h, w, ws->head, b);
    dm_outputs none = {0};
    dm_status st = dm_cpu_forward(m, ws, input, n, h, w, &none, b->stage);
    if (st) return st;
    upernet_forward(cx, m, ws->cols, b, n, h, w);
    int hs[DM_NUM_STAGES], wss[DM_NUM_STAGES], K = m->config.seg_classes;
    stage_sizes(h, w, hs, wss);
    if (logits)
        resize_images(cx, b->decode, n, hs[0], wss[0], K, logits, h, w, (size_t)K, 1, (size_t)h * w * K, 0);
    return DM_OK;
}

/* Sliding-window inference as mmseg's slide_inference: windows of the crop
 * size clipped to the input, the last of each axis moved back inside it;
 * each window's logits (resized to the window) are summed and divided by
 * how many windows cover a pixel.  logits: [n][h][w][K]. */
static dm_status infer_slide(const dm_cpu *cx, const dm_model *m, dm_workspace *ws, const float *input, int n,
                             int h, int w, const dm_seg_options *o, float *logits)
{
    int K = m->config.seg_classes, C = m->config.in_chans;
    int wh = o->crop_h < h ? o->crop_h : h, ww = o->crop_w < w ? o->crop_w : w;
    int rows = (h - o->crop_h + o->stride_h - 1 > 0 ? h - o->crop_h + o->stride_h - 1 : 0) / o->stride_h + 1;
    int cols = (w - o->crop_w + o->stride_w - 1 > 0 ? w - o->crop_w + o->stride_w - 1 : 0) / o->stride_w + 1;
    size_t window = (size_t)wh * ww;
    float *crop = malloc(sizeof(float) * n * C * window), *win = malloc(sizeof(float) * n * window * K);
    int *count = calloc((size_t)h * w, sizeof(int));
    if (!crop || !win || !count) {
        free(crop), free(win), free(count);
        return dm_fail(DM_ERR_NOMEM, "out of memory for sliding windows over %d x %d", h, w);
    }
    memset(logits, 0, sizeof(float) * n * h * w * K);
    head_buffers b;
    dm_status st = DM_OK;
    for (int r = 0; r < rows && !st; r++)
        for (int q = 0; q < cols && !st; q++) {
            int y2 = r * o->stride_h + o->crop_h < h ? r * o->stride_h + o->crop_h : h, y1 = y2 - wh;
            int x2 = q * o->stride_w + o->crop_w < w ? q * o->stride_w + o->crop_w : w, x1 = x2 - ww;
            for (int p = 0; p < n * C; p++)
                for (int y = 0; y < wh; y++)
                    memcpy(crop + ((size_t)p * wh + y) * ww, input + ((size_t)p * h + y1 + y) * w + x1,
                           sizeof(float) * ww);
            if ((st = infer_whole(cx, m, ws, crop, n, wh, ww, &b, win))) break;
            for (int img = 0; img < n; img++)
                for (int y = 0; y < wh; y++) {
                    const float *src = win + ((size_t)img * wh + y) * ww * K;
                    float *dst = logits + (((size_t)img * h + y1 + y) * w + x1) * K;
                    for (size_t i = 0; i < (size_t)ww * K; i++) dst[i] += src[i];
                }
            for (int y = y1; y < y2; y++)
                for (int x = x1; x < x2; x++) count[(size_t)y * w + x]++;
        }
    if (!st)
        for (int img = 0; img < n; img++)
            for (size_t p = 0; p < (size_t)h * w; p++)
                for (int k = 0; k < K; k++) logits[((size_t)img * h * w + p) * K + k] /= (float)count[p];
    free(crop), free(win), free(count);
    return st;
}

/* Index of the largest of n values (the first, on ties), stride apart. */
static int32_t argmax(const float *v, int n, size_t stride)
{
    int32_t best = 0;
    for (int k = 1; k < n; k++)
        if (v[k * stride] > v[best * stride]) best = k;
    return best;
}

dm_seg_options dm_seg_options_ade20k(void)
{
    return (dm_seg_options){.mode = DM_SEG_SLIDE, .crop_h = 512, .crop_w = 512, .stride_h = 341, .stride_w = 341};
}

/* The model, the options and the size of the network input a workspace
 * must hold for them (the window, in slide mode). */
static dm_status check_request(const dm_model *m, const dm_seg_options *o, int h, int w, int *need_h, int *need_w)
{
    if (!m->upernet)
        return dm_fail(DM_ERR_ARGUMENT, "the model has no segmentation head (no decode_head.* tensors)");
    if (o->mode == DM_SEG_WHOLE) {
        *need_h = h;
        *need_w = w;
        return DM_OK;
    }
    if (o->mode != DM_SEG_SLIDE) return dm_fail(DM_ERR_ARGUMENT, "unknown segmentation mode %d", (int)o->mode);
    if (o->crop_h < 1 || o->crop_w < 1 || o->stride_h < 1 || o->stride_w < 1)
        return dm_fail(DM_ERR_ARGUMENT, "slide mode needs a crop and a stride of at least 1 (got %dx%d, %dx%d)",
                       o->crop_h, o->crop_w, o->stride_h, o->stride_w);
    *need_h = o->crop_h < h ? o->crop_h : h;
    *need_w = o->crop_w < w ? o->crop_w : w;
    return DM_OK;
}

static dm_status cpu_context(dm_cpu *cx)
{
    *cx = (dm_cpu){.threads = dm_threads()};
    return dm_kernels_require(&cx->k);
}

/* Logits of n inputs at their own size, channels-last [n][h][w][K]. */
static dm_status infer(const dm_cpu *cx, const dm_model *m, dm_workspace *ws, const float *input, int n, int h,
                       int w, const dm_seg_options *o, head_buffers *b, float *logits)
{
    return o->mode == DM_SEG_WHOLE ? infer_whole(cx, m, ws, input, n, h, w, b, logits)
                                   : infer_slide(cx, m, ws, input, n, h, w, o, logits);
}

dm_status dm_segment(const dm_model *model, dm_workspace *ws, const float *input, int n, int h, int w,
                     const dm_seg_options *options, const dm_seg_outputs *outputs)
{
    if (!model || !ws || !input || !options || !outputs)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: model, workspace, input, options and outputs are required");
    if (n < 1 || h < 1 || w < 1) return dm_fail(DM_ERR_ARGUMENT, "dm_segment: batch %d of %dx%d images is empty", n, h, w);
    int need_h, need_w;
    dm_status st = check_request(model, options, h, w, &need_h, &need_w);
    if (st) return st;
    if (options->multi_scale_flip)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: multi-scale + flip needs the image (dm_segment_image)");
    if (outputs->decode_logits && options->mode != DM_SEG_WHOLE)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: decode logits exist in whole mode only");
    if (ws->cuda) return dm_fail(DM_ERR_UNSUPPORTED, "dm_segment: the segmentation head runs on the CPU backend only");
    if (n > ws->max_batch || need_h > ws->max_h || need_w > ws->max_w)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: batch %d of %dx%d network inputs exceeds the workspace (batch %d, %dx%d)",
                       n, need_h, need_w, ws->max_batch, ws->max_h, ws->max_w);
    dm_cpu cx;
    if ((st = cpu_context(&cx))) return st;
    int K = model->config.seg_classes;
    size_t pixels = (size_t)n * h * w;
    float *logits = NULL;
    if ((outputs->seg_logits || outputs->seg_pred) && !(logits = malloc(sizeof(float) * pixels * K)))
        return dm_fail(DM_ERR_NOMEM, "out of memory for %d x %d x %d logits", n, h, w);
    head_buffers b;
    if (logits || outputs->decode_logits) st = infer(&cx, model, ws, input, n, h, w, options, &b, logits);
    if (!st && outputs->decode_logits) {
        int hs[DM_NUM_STAGES], wss[DM_NUM_STAGES];
        stage_sizes(h, w, hs, wss);
        dm_cpu_to_nchw(&cx, b.decode, outputs->decode_logits, n, (size_t)hs[0] * wss[0], (size_t)K);
    }
    if (!st && outputs->seg_logits) dm_cpu_to_nchw(&cx, logits, outputs->seg_logits, n, (size_t)h * w, (size_t)K);
    if (!st && outputs->seg_pred)
        for (size_t p = 0; p < pixels; p++) outputs->seg_pred[p] = argmax(logits + p * K, K, 1);
    free(logits);
    return st;
}

/* ---------------------------------------------------------------- images */

static const double multi_scale_ratios[] = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75};
#define MULTI_SCALE_COUNT (int)(sizeof multi_scale_ratios / sizeof multi_scale_ratios[0])

/* Augmentation i of the run: the transform, or (multi-scale + flip) ratio
 * i / 2, flipped when i is odd, as mmseg orders them. */
static dm_mm_transform augmentation(const dm_mm_transform *t, const dm_seg_options *o, int i)
{
    dm_mm_transform a = *t;
    if (o->multi_scale_flip) {
        a.ratio = multi_scale_ratios[i / 2];
        a.flip = i % 2;
    }
    return a;
}

/* Softmax over K planes of `plane` floats each, pixel by pixel. */
static void softmax_planes(const dm_cpu *cx, float *x, int K, size_t plane)
{
#pragma omp parallel for num_threads(cx->threads) schedule(static)
    for (long p = 0; p < (long)plane; p++) {
        float *v = x + p, top = v[0], sum = 0.0f;
        for (int k = 1; k < K; k++) top = v[k * plane] > top ? v[k * plane] : top;
        for (int k = 0; k < K; k++) sum += (v[k * plane] = expf(v[k * plane] - top));
        for (int k = 0; k < K; k++) v[k * plane] /= sum;
    }
}

typedef struct image_run {
    float *input, *logits, *probs, *planes;
    dm_workspace *ws;
} image_run;

/* One augmentation: transform, infer, resize to the image, softmax, flip
 * back, add to run->probs. */
static dm_status run_augmentation(const dm_cpu *cx, const dm_model *m, const dm_image *image,
                                  const dm_mm_transform *a, const dm_seg_options *o, image_run *run)
{
    int h, w, K = m->config.seg_classes, H = image->height, W = image->width;
    size_t plane = (size_t)H * W;
    dm_status st;
    head_buffers b;
    if ((st = dm_mm_transform_size(a, W, H, &h, &w, NULL)) || (st = dm_mm_transform_image(image, a, run->input)) ||
        (st = infer(cx, m, run->ws, run->input, 1, h, w, o, &b, run->logits)))
        return st;
    resize_images(cx, run->logits, 1, h, w, K, run->planes, H, W, 1, plane, 0, 0);
    softmax_planes(cx, run->planes, K, plane);
    for (int k = 0; k < K; k++)
        for (int y = 0; y < H; y++) {
            const float *src = run->planes + k * plane + (size_t)y * W;
            float *dst = run->probs + k * plane + (size_t)y * W;
            for (int x = 0; x < W; x++) dst[x] += src[a->flip ? W - 1 - x : x];
        }
    return DM_OK;
}

dm_status dm_segment_image(const dm_model *model, const dm_image *image, const dm_mm_transform *transform,
                           const dm_seg_options *options, float *probs, int32_t *labels)
{
    if (!model || !image || !image->pixels || !transform || !options)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment_image: model, image, transform and options are required");
    if (model->config.in_chans != 3)
        return dm_fail(DM_ERR_MODEL, "segmentation takes RGB images; the model has %d input channels",
                       model->config.in_chans);
    int augs = options->multi_scale_flip ? 2 * MULTI_SCALE_COUNT : 1, max_h = 1, max_w = 1, need_h, need_w;
    dm_status st;
    for (int i = 0; i < augs; i++) {
        dm_mm_transform a = augmentation(transform, options, i);
        int h, w;
        if ((st = dm_mm_transform_size(&a, image->width, image->height, &h, &w, NULL))) return st;
        max_h = h > max_h ? h : max_h;
        max_w = w > max_w ? w : max_w;
    }
    if ((st = check_request(model, options, max_h, max_w, &need_h, &need_w))) return st;
    dm_cpu cx;
    if ((st = cpu_context(&cx))) return st;
    int K = model->config.seg_classes;
    size_t plane = (size_t)image->width * image->height, net = (size_t)max_h * max_w;
    image_run run = {
        .input = malloc(sizeof(float) * 3 * net),
        .logits = malloc(sizeof(float) * net * K),
        .planes = malloc(sizeof(float) * plane * K),
        .probs = probs ? probs : malloc(sizeof(float) * plane * K),
    };
    if (!run.input || !run.logits || !run.planes || !run.probs)
        st = dm_fail(DM_ERR_NOMEM, "out of memory segmenting a %d x %d image", image->width, image->height);
    else
        st = dm_workspace_create(model, 1, need_h, need_w, &run.ws);
    if (!st) memset(run.probs, 0, sizeof(float) * plane * K);
    for (int i = 0; i < augs && !st; i++) {
        dm_mm_transform a = augmentation(transform, options, i);
        st = run_augmentation(&cx, model, image, &a, options, &run);
    }
    if (!st && augs > 1)
        for (size_t i = 0; i < plane * K; i++) run.probs[i] /= (float)augs;
    if (!st && labels)
        for (size_t p = 0; p < plane; p++) labels[p] = argmax(run.probs + p, K, plane);
    dm_workspace_free(run.ws);
    free(run.input), free(run.logits), free(run.planes);
    if (run.probs != probs) free(run.probs);
    return st;
}
