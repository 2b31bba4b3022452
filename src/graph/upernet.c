/* upernet.c - semantic segmentation: mmseg 0.30's UPerHead on the four
 * stage outputs, written against the operator table like the backbone, and
 * EncoderDecoder's inference modes (whole, sliding window, multi-scale +
 * flip) around it.  The backbone and the head run on the workspace's
 * backend; the head's output comes back to the host, where it is resized,
 * averaged and labelled. */
#include "model.h"

#include "error.h"
#include "host_memory.h"
#include "ops.h"
#include "workspace.h"

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

/* The head's buffers for n images (backend memory), carved in this order
 * from the workspace's `head`. */
typedef struct head_buffers {
    float *stage[DM_NUM_STAGES];   /* backbone outputs [P_s][C_s] */
    float *lateral[DM_NUM_STAGES]; /* laterals, [3] the PPM bottleneck [P_s][ch] */
    float *ppm_cat;                /* stage 3 and the four pooled branches [P3][C3 + 4 ch] */
    float *pooled, *pooled_conv;   /* [n][bins^2][C3], [n][bins^2][ch] */
    float *resized;                /* one level resized, at most [P0][ch] */
    float *fpn_out;                /* one FPN conv's output, at most [P0][ch] */
    float *fpn_cat;                /* the four levels at 1/4 scale [P0][4 ch] */
    float *feats;                  /* fpn_bottleneck output [P0][ch] */
    float *decode;                 /* conv_seg output [P0][K] */
} head_buffers;

static size_t head_layout(const dm_config *c, int n, int h, int w, float *base, head_buffers *b)
{
    int hs[DM_NUM_STAGES], ws[DM_NUM_STAGES];
    stage_sizes(h, w, hs, ws);
    size_t P[DM_NUM_STAGES], ch = (size_t)c->seg_channels, total = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) P[s] = (size_t)n * hs[s] * ws[s];
    float **slots[2 * DM_NUM_STAGES + 8];
    size_t sizes[2 * DM_NUM_STAGES + 8];
    int k = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        slots[k] = &b->stage[s], sizes[k++] = P[s] * c->dims[s];
        slots[k] = &b->lateral[s], sizes[k++] = P[s] * ch;
    }
    slots[k] = &b->ppm_cat, sizes[k++] = P[3] * (c->dims[3] + DM_PPM_SCALES * ch);
    slots[k] = &b->pooled, sizes[k++] = (size_t)n * MAX_BINS * MAX_BINS * c->dims[3];
    slots[k] = &b->pooled_conv, sizes[k++] = (size_t)n * MAX_BINS * MAX_BINS * ch;
    slots[k] = &b->resized, sizes[k++] = P[0] * ch;
    slots[k] = &b->fpn_out, sizes[k++] = P[0] * ch;
    slots[k] = &b->fpn_cat, sizes[k++] = P[0] * DM_NUM_STAGES * ch;
    slots[k] = &b->feats, sizes[k++] = P[0] * ch;
    slots[k] = &b->decode, sizes[k++] = P[0] * c->seg_classes;
    for (int i = 0; i < k; i++) {
        if (base) *slots[i] = base + total;
        total += (sizes[i] + 63) & ~(size_t)63;
    }
    return total;
}

size_t dm_upernet_plan(const dm_config *c, const dm_ops *ops, int n, int h, int w, dm_plan *plan)
{
    int hs[DM_NUM_STAGES], ws[DM_NUM_STAGES], ch = c->seg_channels;
    stage_sizes(h, w, hs, ws);
    size_t P0 = (size_t)n * hs[0] * ws[0];
    size_t scratch[] = {
        ops->conv3x3_scratch(ops->ctx, (size_t)n * hs[3] * ws[3], c->dims[3] + DM_PPM_SCALES * ch), /* bottleneck */
        ops->conv3x3_scratch(ops->ctx, P0, ch),                                                      /* fpn_convs */
        ops->conv3x3_scratch(ops->ctx, P0, DM_NUM_STAGES * ch),                                      /* fpn_bottleneck */
    };
    for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++)
        if (scratch[i] > plan->scratch) plan->scratch = scratch[i];
    plan->transfer += P0 * c->seg_classes; /* the decode logits */
    plan->outputs += 1;
    head_buffers b;
    return head_layout(c, n, h, w, NULL, &b);
}

double dm_upernet_macs(const dm_config *c, int h, int w)
{
    int hs[DM_NUM_STAGES], ws[DM_NUM_STAGES];
    stage_sizes(h, w, hs, ws);
    double ch = c->seg_channels, P[DM_NUM_STAGES], macs = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) P[s] = (double)hs[s] * ws[s];
    for (int i = 0; i < DM_PPM_SCALES; i++) macs += (double)dm_ppm_scales[i] * dm_ppm_scales[i] * c->dims[3] * ch;
    macs += P[3] * 9 * (c->dims[3] + DM_PPM_SCALES * ch) * ch;           /* bottleneck */
    for (int s = 0; s < DM_NUM_STAGES - 1; s++) macs += P[s] * c->dims[s] * ch + P[s] * 9 * ch * ch; /* lateral, fpn */
    macs += P[0] * 9 * DM_NUM_STAGES * ch * ch + P[0] * ch * c->seg_classes; /* fpn_bottleneck, conv_seg */
    return macs;
}

/* ------------------------------------------------------------------ head */

#define VIEW(buffer, n, h, w, c) dm_view_of(buffer, n, h, w, c)

/* Pyramid pooling on stage 3: its output next to each pool scale's pooled,
 * convolved (1x1 ConvModule) and upsampled branch, then the 3x3
 * bottleneck into lateral[3]. */
static void psp_forward(dm_workspace *ws, const dm_upernet *u, const dm_config *c, const head_buffers *b, int n,
                        int h3, int w3)
{
    int c3 = c->dims[3], ch = c->seg_channels, width = c3 + DM_PPM_SCALES * ch;
    dm_view cat = VIEW(b->ppm_cat, n, h3, w3, width), up = VIEW(b->resized, n, h3, w3, ch);
    OP(ws, concat, VIEW(b->stage[3], n, h3, w3, c3), 0, cat);
    for (int i = 0; i < DM_PPM_SCALES; i++) {
        int bins = dm_ppm_scales[i];
        OP(ws, avg_pool, VIEW(b->stage[3], n, h3, w3, c3), VIEW(b->pooled, n, bins, bins, c3));
        OP(ws, gemm, (size_t)n * bins * bins, (size_t)ch, (size_t)c3, b->pooled, (size_t)c3, u->psp[i].weight, 0.0f,
           u->psp[i].bias, DM_ACT_RELU, b->pooled_conv);
        OP(ws, resize, VIEW(b->pooled_conv, n, bins, bins, ch), DM_RESIZE_BILINEAR, up);
        OP(ws, concat, up, c3 + i * ch, cat);
    }
    OP(ws, conv3x3, &u->bottleneck, cat, DM_ACT_RELU, VIEW(b->lateral[3], n, h3, w3, ch));
}

/* UPerHead.forward on the stage outputs in b->stage: laterals, top-down
 * sums, FPN convs, every level resized to 1/4 and concatenated,
 * fpn_bottleneck, conv_seg into b->decode.  Dropout is the identity. */
static void upernet_forward(dm_workspace *ws, const dm_model *params, const head_buffers *b, int n, int h, int w)
{
    const dm_upernet *u = params->upernet;
    const dm_config *c = &params->config;
    int hs[DM_NUM_STAGES], wd[DM_NUM_STAGES], ch = c->seg_channels;
    stage_sizes(h, w, hs, wd);
    dm_view level[DM_NUM_STAGES];
    for (int s = 0; s < DM_NUM_STAGES; s++) level[s] = VIEW(b->lateral[s], n, hs[s], wd[s], ch);
    for (int s = 0; s < DM_NUM_STAGES - 1; s++)
        OP(ws, gemm, dm_view_pixels(level[s]), (size_t)ch, (size_t)c->dims[s], b->stage[s], (size_t)c->dims[s],
           u->lateral[s].weight, 0.0f, u->lateral[s].bias, DM_ACT_RELU, b->lateral[s]);
    psp_forward(ws, u, c, b, n, hs[3], wd[3]);
    for (int s = DM_NUM_STAGES - 1; s > 0; s--) {
        dm_view up = VIEW(b->resized, n, hs[s - 1], wd[s - 1], ch);
        OP(ws, resize, level[s], DM_RESIZE_BILINEAR, up);
        OP(ws, add, level[s - 1], up, DM_ACT_NONE, level[s - 1]);
    }
    dm_view cat = VIEW(b->fpn_cat, n, hs[0], wd[0], DM_NUM_STAGES * ch);
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        dm_view x = level[s];
        if (s < DM_NUM_STAGES - 1) {
            x = VIEW(b->fpn_out, n, hs[s], wd[s], ch);
            OP(ws, conv3x3, &u->fpn[s], level[s], DM_ACT_RELU, x);
        }
        if (s > 0) {
            OP(ws, resize, x, DM_RESIZE_BILINEAR, VIEW(b->resized, n, hs[0], wd[0], ch));
            x = VIEW(b->resized, n, hs[0], wd[0], ch);
        }
        OP(ws, concat, x, s * ch, cat);
    }
    OP(ws, conv3x3, &u->fpn_bottleneck, cat, DM_ACT_RELU, VIEW(b->feats, n, hs[0], wd[0], ch));
    OP(ws, gemm, (size_t)n * hs[0] * wd[0], (size_t)c->seg_classes, (size_t)ch, b->feats, (size_t)ch, u->cls.weight,
       0.0f, u->cls.bias, DM_ACT_NONE, b->decode);
}

/* ------------------------------------------------------------- inference */

/* Host-side work: the CPU kernels, on the workspace's threads
 * (dm_ops.host_run). */
typedef struct host {
    const dm_kernels *k;
    const dm_ops *ops;
} host;

/* Output pixels a piece of host work takes: each is computed alone, so the
 * cut changes no result. */
#define HOST_PIECE_PIXELS 4096

static size_t host_pieces(size_t pixels) { return (pixels + HOST_PIECE_PIXELS - 1) / HOST_PIECE_PIXELS; }

typedef struct resize_job {
    const dm_kernels *k;
    const float *x;
    float *y;
    int ih, iw, c, oh, ow, n_images;
} resize_job;

/* The output pixels [HOST_PIECE_PIXELS * i, ...) of the batch, one kernel
 * call per image they touch. */
static void resize_piece(void *arg, size_t i)
{
    const resize_job *j = arg;
    size_t per_image = (size_t)j->oh * j->ow, q0 = HOST_PIECE_PIXELS * i, q1 = q0 + HOST_PIECE_PIXELS;
    size_t total = per_image * (size_t)(j->n_images);
    if (q1 > total) q1 = total;
    while (q0 < q1) {
        size_t img = q0 / per_image, p0 = q0 % per_image;
        size_t p1 = p0 + (q1 - q0) < per_image ? p0 + (q1 - q0) : per_image;
        j->k->resize(j->x + img * j->ih * j->iw * j->c, j->ih, j->iw, j->c, DM_RESIZE_BILINEAR,
                     j->y + img * per_image * j->c, j->oh, j->ow, p0, p1);
        q0 += p1 - p0;
    }
}

/* Resize n channels-last images on the host. */
static void host_resize(const host *hx, const float *x, int n, int ih, int iw, int c, float *y, int oh, int ow)
{
    resize_job j = {hx->k, x, y, ih, iw, c, oh, ow, n};
    hx->ops->host_run(hx->ops->ctx, host_pieces((size_t)n * oh * ow), resize_piece, &j);
}

/* One pass of the backbone and the head over n images of h x w; the head's
 * logits (n x h4 x w4 x K, channels-last) come back to decode. */
static dm_status run_head(dm_workspace *ws, const dm_model *params, const float *input, int n, int h, int w,
                         float *decode)
{
    const dm_config *c = &params->config;
    head_buffers b;
    head_layout(c, n, h, w, ws->head, &b);
    dm_status st = ws->ops.begin(ws->ops.ctx);
    if (st) return st;
    dm_outputs none = {0};
    dm_enqueue_forward(ws, params, input, n, h, w, &none, b.stage);
    upernet_forward(ws, params, &b, n, h, w);
    int hs[DM_NUM_STAGES], wd[DM_NUM_STAGES];
    stage_sizes(h, w, hs, wd);
    OP(ws, output, VIEW(b.decode, n, hs[0], wd[0], c->seg_classes), DM_LAYOUT_NHWC, decode);
    return ws->ops.finish(ws->ops.ctx);
}

/* Scratch of one request: the head's logits of a pass, and for slide mode
 * the window's input and resized logits and the coverage counts. */
typedef struct seg_scratch {
    float *decode, *crop, *window;
    int *count;
} seg_scratch;

static void scratch_free(seg_scratch *s)
{
    dm_host_free(s->decode), free(s->crop), dm_host_free(s->window), free(s->count);
    *s = (seg_scratch){0};
}

/* The network input size of a request: the window, clipped to the input,
 * in slide mode. */
static void network_size(const dm_seg_options *o, int h, int w, int *nh, int *nw)
{
    *nh = o->mode == DM_SEG_SLIDE && o->crop_h < h ? o->crop_h : h;
    *nw = o->mode == DM_SEG_SLIDE && o->crop_w < w ? o->crop_w : w;
}

static dm_status scratch_alloc(const dm_config *c, const dm_seg_options *o, int n, int h, int w, seg_scratch *s)
{
    int nh, nw, hs[DM_NUM_STAGES], wd[DM_NUM_STAGES], K = c->seg_classes;
    network_size(o, h, w, &nh, &nw);
    stage_sizes(nh, nw, hs, wd);
    size_t window = (size_t)n * nh * nw;
    *s = (seg_scratch){.decode = dm_host_array((size_t)n * hs[0] * wd[0] * K, sizeof(float))};
    if (o->mode == DM_SEG_SLIDE) {
        s->crop = malloc(sizeof(float) * window * c->in_chans);
        s->window = dm_host_array(window * K, sizeof(float));
        s->count = calloc((size_t)h * w, sizeof(int));
    }
    if (!s->decode || (o->mode == DM_SEG_SLIDE && (!s->crop || !s->window || !s->count))) {
        scratch_free(s);
        return dm_fail_nomem("out of memory for the logits of %d x %d images", h, w);
    }
    return DM_OK;
}

/* Whole-image inference of n images of h x w: the head's logits in
 * s->decode, and resized to h x w into logits ([n][h][w][K]) if non-NULL. */
static dm_status infer_whole(const host *hx, dm_workspace *ws, const dm_model *params, const float *input, int n,
                             int h, int w, seg_scratch *s, float *logits)
{
    int hs[DM_NUM_STAGES], wd[DM_NUM_STAGES], K = params->config.seg_classes;
    stage_sizes(h, w, hs, wd);
    dm_status st = run_head(ws, params, input, n, h, w, s->decode);
    if (!st && logits) host_resize(hx, s->decode, n, hs[0], wd[0], K, logits, h, w);
    return st;
}

/* The end of window i of a slide along an axis of `size` pixels: the
 * crop's end, or the input's where the window reaches past it (the
 * window then moves back inside). */
static int window_end(int i, int size, int crop, int stride)
{
    long long end = (long long)i * stride + crop;
    return end < size ? (int)end : size;
}

/* How many windows a slide along an axis of `size` pixels takes, counted as
 * mmseg's slide_inference counts them; 0 when they leave a pixel between
 * them uncovered (a stride longer than the crop), which mmseg asserts
 * never happens. */
static int slide_windows(int size, int crop, int stride)
{
    long long span = (long long)size - crop + stride - 1;
    int count = (int)((span > 0 ? span : 0) / stride + 1), window = crop < size ? crop : size, covered = 0;
    for (int i = 0; i < count; i++) {
        int end = window_end(i, size, crop, stride);
        if (end - window > covered) return 0;
        covered = end;
    }
    return count;
}

/* Sliding-window inference as mmseg's slide_inference: windows of the crop
 * size clipped to the input, the last of each axis moved back inside it;
 * each window's logits (resized to the window) are summed and divided by
 * how many windows cover a pixel.  logits: [n][h][w][K]. */
static dm_status infer_slide(const host *hx, dm_workspace *ws, const dm_model *params, const float *input, int n,
                             int h, int w, const dm_seg_options *o, seg_scratch *s, float *logits)
{
    int K = params->config.seg_classes, C = params->config.in_chans, wh, ww;
    network_size(o, h, w, &wh, &ww);
    int rows = slide_windows(h, o->crop_h, o->stride_h), cols = slide_windows(w, o->crop_w, o->stride_w);
    if (!rows || !cols)
        return dm_fail(DM_ERR_ARGUMENT,
                       "slide mode: %d x %d windows %d x %d apart leave pixels of the %d x %d input uncovered "
                       "(a stride may exceed its crop only where the windows still meet)",
                       o->crop_h, o->crop_w, o->stride_h, o->stride_w, h, w);
    memset(logits, 0, sizeof(float) * n * h * w * K);
    memset(s->count, 0, sizeof(int) * h * w);
    dm_status st = DM_OK;
    for (int r = 0; r < rows && !st; r++)
        for (int q = 0; q < cols && !st; q++) {
            int y2 = window_end(r, h, o->crop_h, o->stride_h), y1 = y2 - wh;
            int x2 = window_end(q, w, o->crop_w, o->stride_w), x1 = x2 - ww;
            for (int p = 0; p < n * C; p++)
                for (int y = 0; y < wh; y++)
                    memcpy(s->crop + ((size_t)p * wh + y) * ww, input + ((size_t)p * h + y1 + y) * w + x1,
                           sizeof(float) * ww);
            if ((st = infer_whole(hx, ws, params, s->crop, n, wh, ww, s, s->window))) break;
            for (int img = 0; img < n; img++)
                for (int y = 0; y < wh; y++) {
                    const float *src = s->window + ((size_t)img * wh + y) * ww * K;
                    float *dst = logits + (((size_t)img * h + y1 + y) * w + x1) * K;
                    for (size_t i = 0; i < (size_t)ww * K; i++) dst[i] += src[i];
                }
            for (int y = y1; y < y2; y++)
                for (int x = x1; x < x2; x++) s->count[(size_t)y * w + x]++;
        }
    if (!st)
        for (int img = 0; img < n; img++)
            for (size_t p = 0; p < (size_t)h * w; p++)
                for (int k = 0; k < K; k++) logits[((size_t)img * h * w + p) * K + k] /= (float)s->count[p];
    return st;
}

/* Logits of n inputs at their own size, channels-last [n][h][w][K]. */
static dm_status infer(const host *hx, dm_workspace *ws, const dm_model *params, const float *input, int n, int h,
                       int w, const dm_seg_options *o, seg_scratch *s, float *logits)
{
    return o->mode == DM_SEG_WHOLE ? infer_whole(hx, ws, params, input, n, h, w, s, logits)
                                   : infer_slide(hx, ws, params, input, n, h, w, o, s, logits);
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

/* The options of a request: a mode, and slide windows that exist. */
static dm_status check_options(const dm_seg_options *o)
{
    if (o->mode == DM_SEG_WHOLE) return DM_OK;
    if (o->mode != DM_SEG_SLIDE) return dm_fail(DM_ERR_ARGUMENT, "unknown segmentation mode %d", (int)o->mode);
    if (o->crop_h < 1 || o->crop_w < 1 || o->stride_h < 1 || o->stride_w < 1)
        return dm_fail(DM_ERR_ARGUMENT, "slide mode needs a crop and a stride of at least 1 (got %dx%d, %dx%d)",
                       o->crop_h, o->crop_w, o->stride_h, o->stride_w);
    return DM_OK;
}

/* The model and the options of a request. */
static dm_status check_request(const dm_model *m, const dm_seg_options *o)
{
    if (!m->upernet)
        return dm_fail(DM_ERR_ARGUMENT, "the model has no segmentation head (no decode_head.* tensors)");
    return check_options(o);
}

static dm_status host_init(const dm_workspace *ws, host *hx)
{
    hx->ops = &ws->ops;
    return dm_kernels_require(&hx->k);
}

/* [n][hw][c] -> [n][c][hw] */
static void to_planes(const float *x, int n, size_t hw, int c, float *y)
{
    for (int img = 0; img < n; img++)
        for (size_t p = 0; p < hw; p++)
            for (int k = 0; k < c; k++) y[((size_t)img * c + k) * hw + p] = x[((size_t)img * hw + p) * c + k];
}

dm_status dm_segment(const dm_model *model, dm_workspace *ws, const float *input, int n, int h, int w,
                     const dm_seg_options *options, const dm_seg_outputs *outputs)
{
    if (!input || !options || !outputs || !model)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: model, input, options and outputs are required");
    /* the options first: the network's size is read from them */
    dm_status st = check_request(model, options);
    if (st) return st;
    int nh, nw;
    network_size(options, h, w, &nh, &nw);
    const dm_model *params;
    if ((st = dm_check_run("dm_segment", model, ws, n, nh, nw, &params))) return st;
    if (options->multi_scale_flip)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: multi-scale + flip needs the image (dm_segment_image)");
    if (outputs->decode_logits && options->mode != DM_SEG_WHOLE)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment: decode logits exist in whole mode only");
    host hx;
    seg_scratch scratch;
    if ((st = host_init(ws, &hx)) || (st = scratch_alloc(&model->config, options, n, h, w, &scratch))) return st;
    int K = model->config.seg_classes;
    size_t pixels = (size_t)n * h * w;
    float *logits = NULL;
    if ((outputs->seg_logits || outputs->seg_pred || options->mode == DM_SEG_SLIDE) &&
        !(logits = dm_host_array(pixels * K, sizeof(float)))) {
        scratch_free(&scratch);
        return dm_fail_nomem("out of memory for %d x %d x %d logits", n, h, w);
    }
    st = infer(&hx, ws, params, input, n, h, w, options, &scratch, logits);
    if (!st && outputs->decode_logits) {
        int hs[DM_NUM_STAGES], wd[DM_NUM_STAGES];
        stage_sizes(h, w, hs, wd);
        to_planes(scratch.decode, n, (size_t)hs[0] * wd[0], K, outputs->decode_logits);
    }
    if (!st && outputs->seg_logits) to_planes(logits, n, (size_t)h * w, K, outputs->seg_logits);
    if (!st && outputs->seg_pred)
        for (size_t p = 0; p < pixels; p++) outputs->seg_pred[p] = argmax(logits + p * K, K, 1);
    dm_host_free(logits);
    scratch_free(&scratch);
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

typedef struct softmax_job {
    float *x;
    int K;
    size_t pixels;
} softmax_job;

static void softmax_piece(void *arg, size_t i)
{
    const softmax_job *j = arg;
    size_t end = HOST_PIECE_PIXELS * (i + 1) < j->pixels ? HOST_PIECE_PIXELS * (i + 1) : j->pixels;
    for (size_t p = HOST_PIECE_PIXELS * i; p < end; p++) {
        float *v = j->x + p * j->K, top = v[0], sum = 0.0f;
        for (int k = 1; k < j->K; k++) top = v[k] > top ? v[k] : top;
        for (int k = 0; k < j->K; k++) sum += (v[k] = expf(v[k] - top));
        for (int k = 0; k < j->K; k++) v[k] /= sum;
    }
}

/* Softmax over the K channels of each of `pixels` pixels, in place. */
static void softmax_pixels(const host *hx, float *x, int K, size_t pixels)
{
    softmax_job j = {x, K, pixels};
    hx->ops->host_run(hx->ops->ctx, host_pieces(pixels), softmax_piece, &j);
}

typedef struct image_run {
    float *input, *logits, *resized, *probs;
    seg_scratch scratch;
    dm_workspace *ws;
    const dm_model *params; /* as the workspace's backend reads them */
} image_run;

/* One augmentation: transform, infer, resize to the image, softmax, flip
 * back, add to run->probs (K planes). */
static dm_status run_augmentation(const host *hx, const dm_image *image, const dm_mm_transform *a,
                                  const dm_seg_options *o, image_run *run)
{
    int h, w, K = run->params->config.seg_classes, H = image->height, W = image->width;
    size_t plane = (size_t)H * W;
    dm_status st;
    if ((st = dm_mm_transform_size(a, W, H, &h, &w, NULL)) || (st = dm_mm_transform_image(image, a, run->input)) ||
        (st = infer(hx, run->ws, run->params, run->input, 1, h, w, o, &run->scratch, run->logits)))
        return st;
    host_resize(hx, run->logits, 1, h, w, K, run->resized, H, W);
    softmax_pixels(hx, run->resized, K, plane);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const float *src = run->resized + ((size_t)y * W + (a->flip ? W - 1 - x : x)) * K;
            float *dst = run->probs + (size_t)y * W + x;
            for (int k = 0; k < K; k++) dst[k * plane] += src[k];
        }
    return DM_OK;
}

/* The largest transformed image of the request's augmentations (max_h x
 * max_w), and the network input its workspace must hold for the options'
 * mode; the outputs are written on success alone. */
static dm_status image_sizes(const dm_mm_transform *t, const dm_seg_options *o, int width, int height, int *max_h,
                             int *max_w, int *ws_h, int *ws_w)
{
    if (t->pad_to)
        return dm_fail(DM_ERR_ARGUMENT, "segmentation takes a transform without padding (pad_to 0), as mmseg's test "
                                        "pipeline has none; this one pads to multiples of %d", t->pad_to);
    int augs = o->multi_scale_flip ? 2 * MULTI_SCALE_COUNT : 1, most_h = 1, most_w = 1;
    for (int i = 0; i < augs; i++) {
        dm_mm_transform a = augmentation(t, o, i);
        int h, w;
        dm_status st = dm_mm_transform_size(&a, width, height, &h, &w, NULL);
        if (st) return st;
        most_h = h > most_h ? h : most_h;
        most_w = w > most_w ? w : most_w;
    }
    *max_h = most_h;
    *max_w = most_w;
    network_size(o, most_h, most_w, ws_h, ws_w);
    return DM_OK;
}

dm_status dm_segment_image_size(const dm_mm_transform *transform, const dm_seg_options *options, int width,
                                int height, int *ws_h, int *ws_w)
{
    if (!transform || !options || !ws_h || !ws_w)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment_image_size: NULL argument");
    int max_h, max_w;
    dm_status st = check_options(options);
    return st ? st : image_sizes(transform, options, width, height, &max_h, &max_w, ws_h, ws_w);
}

dm_status dm_segment_image(const dm_model *model, dm_workspace *ws, const dm_image *image,
                           const dm_mm_transform *transform, const dm_seg_options *options, float *probs,
                           int32_t *labels)
{
    if (!model || !image || !image->pixels || !transform || !options)
        return dm_fail(DM_ERR_ARGUMENT, "dm_segment_image: model, image, transform and options are required");
    dm_status st = check_request(model, options);
    if (st) return st;
    if (model->config.in_chans != 3)
        return dm_fail(DM_ERR_MODEL, "segmentation takes RGB images; the model has %d input channels",
                       model->config.in_chans);
    int max_h, max_w, nh, nw, augs = options->multi_scale_flip ? 2 * MULTI_SCALE_COUNT : 1;
    const dm_model *params;
    if ((st = image_sizes(transform, options, image->width, image->height, &max_h, &max_w, &nh, &nw)) ||
        (st = dm_check_run("dm_segment_image", model, ws, 1, nh, nw, &params)))
        return st;
    host hx;
    if ((st = host_init(ws, &hx))) return st;
    int K = model->config.seg_classes;
    size_t plane = (size_t)image->width * image->height, net = (size_t)max_h * max_w;
    image_run run = {
        .input = malloc(sizeof(float) * 3 * net),
        .logits = dm_host_array(net * K, sizeof(float)),
        .resized = dm_host_array(plane * K, sizeof(float)),
        .probs = probs ? probs : dm_host_array(plane * K, sizeof(float)),
        .ws = ws,
        .params = params,
    };
    if (!run.input || !run.logits || !run.resized || !run.probs)
        st = dm_fail_nomem("out of memory segmenting a %d x %d image", image->width, image->height);
    else
        st = scratch_alloc(&model->config, options, 1, max_h, max_w, &run.scratch);
    if (!st) memset(run.probs, 0, sizeof(float) * plane * K);
    for (int i = 0; i < augs && !st; i++) {
        dm_mm_transform a = augmentation(transform, options, i);
        st = run_augmentation(&hx, image, &a, options, &run);
    }
    if (!st && augs > 1)
        for (size_t i = 0; i < plane * K; i++) run.probs[i] /= (float)augs;
    if (!st && labels)
        for (size_t p = 0; p < plane; p++) labels[p] = argmax(run.probs + p, K, plane);
    scratch_free(&run.scratch);
    free(run.input), dm_host_free(run.logits), dm_host_free(run.resized);
    if (run.probs != probs) dm_host_free(run.probs);
    return st;
}
