/* detect_kernels.h - the operators of the Mask R-CNN heads besides the
 * convolutions and fully connected layers (those are GEMMs): resampling
 * feature maps, anchors, box decoding, non-maximum suppression, RoIAlign and
 * mask pasting, with mmdetection 2.28 / mmcv 1.7 semantics in float32.
 * (Upsampling, pooling and adding feature maps are table kernels.)
 *
 * One scalar implementation each: they gather, sort and compare, and cost a
 * small fraction of the convolutions around them.  Feature maps are
 * channels-last ([h][w][c]); boxes are (x1, y1, x2, y2) in pixels. */
#ifndef DM_DETECT_KERNELS_H
#define DM_DETECT_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h" /* DM_HOST_DEVICE */

/* The anchors of one feature level (AnchorGenerator, centre offset 0, no
 * rounding): h * w * nratios * nscales boxes, position-major (row-major),
 * then ratio, then scale. */
void dm_anchors(float stride, const float *ratios, int nratios, const float *scales, int nscales, int h, int w,
                float *out);

/* Decode deltas into boxes (DeltaXYWHBBoxCoder): box i uses rois[i] and
 * deltas[i] (dx, dy, dw, dh), denormalized by means and stds; dw and dh are
 * clamped to +-max_ratio; the result is clipped to [0, max_w] x [0, max_h]. */
void dm_delta2bbox(const float *rois, const float *deltas, size_t n, const float means[4], const float stds[4],
                   float max_ratio, float max_h, float max_w, float *out);

/* Greedy non-maximum suppression over boxes already sorted by descending
 * score: a box is dropped when its IoU with a kept, higher-scoring box is
 * strictly above iou_thr (mmcv's nms, offset 0).  Writes the indices of the
 * kept boxes in order to keep and returns their count; removed is n bytes
 * of scratch. */
size_t dm_nms(const float *boxes, size_t n, float iou_thr, int *keep, uint8_t *removed);

/* RoIAlign (mmcv, aligned, average, adaptive sampling: ceil(size / out)
 * samples per bin and axis) of one box over an h x w x c feature map with
 * spatial_scale; y is out_h x out_w x c. */
void dm_roi_align(const float *feat, int h, int w, int c, float spatial_scale, const float roi[4], int out_h,
                  int out_w, float *y);

/* The geometry of RoIAlign every implementation shares, the CUDA one
 * included: one box's bins in feature pixels, its samples per bin and
 * axis, and the count each bin's sum is divided by. */
typedef struct dm_roi_grid {
    float start_x, start_y, bin_w, bin_h;
    int grid_w, grid_h;
    float count;
} dm_roi_grid;

/* Samples per bin along an axis of `extent` feature pixels cut into `out`
 * bins: ceil(extent / out), none for a box of NaN (from NaN deltas, whose
 * conversion to int is undefined; mmcv's CUDA gives 0) or of no extent. */
DM_HOST_DEVICE static inline int dm_roi_samples(float extent, int out)
{
    float n = ceilf(extent / (float)out);
    return n > 0 ? (n < 65536.0f ? (int)n : 65536) : 0;
}

DM_HOST_DEVICE static inline dm_roi_grid dm_roi_grid_of(const float roi[4], float spatial_scale, int out_h, int out_w)
{
    dm_roi_grid g;
    g.start_x = roi[0] * spatial_scale - 0.5f;
    g.start_y = roi[1] * spatial_scale - 0.5f;
    float roi_w = roi[2] * spatial_scale - 0.5f - g.start_x, roi_h = roi[3] * spatial_scale - 0.5f - g.start_y;
    g.bin_w = roi_w / (float)out_w;
    g.bin_h = roi_h / (float)out_h;
    g.grid_w = dm_roi_samples(roi_w, out_w);
    g.grid_h = dm_roi_samples(roi_h, out_h);
    g.count = (float)(g.grid_w * g.grid_h > 1 ? g.grid_w * g.grid_h : 1);
    return g;
}

/* Sample (iy, ix) of bin (py, px), in feature pixels. */
DM_HOST_DEVICE static inline float dm_roi_sample_y(const dm_roi_grid *g, int py, int iy)
{
    return g->start_y + (float)py * g->bin_h + ((float)iy + 0.5f) * g->bin_h / (float)g->grid_h;
}

DM_HOST_DEVICE static inline float dm_roi_sample_x(const dm_roi_grid *g, int px, int ix)
{
    return g->start_x + (float)px * g->bin_w + ((float)ix + 0.5f) * g->bin_w / (float)g->grid_w;
}

/* One bilinear sample of mmcv's RoIAlign at (y, x) of an h x w map: its
 * corners' pixel offsets and weights; 0 for a sample outside [-1, size],
 * which adds nothing. */
typedef struct dm_roi_sample {
    size_t pos[4];
    float w[4];
} dm_roi_sample;

DM_HOST_DEVICE static inline int dm_roi_sample_at(int h, int w, float y, float x, dm_roi_sample *s)
{
    if (y < -1.0f || y > (float)h || x < -1.0f || x > (float)w) return 0;
    if (y <= 0) y = 0;
    if (x <= 0) x = 0;
    int y_low = (int)y, x_low = (int)x, y_high, x_high;
    if (y_low >= h - 1) {
        y_high = y_low = h - 1;
        y = (float)y_low;
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= w - 1) {
        x_high = x_low = w - 1;
        x = (float)x_low;
    } else {
        x_high = x_low + 1;
    }
    float ly = y - (float)y_low, lx = x - (float)x_low, hy = 1.0f - ly, hx = 1.0f - lx;
    s->pos[0] = (size_t)y_low * w + x_low;
    s->pos[1] = (size_t)y_low * w + x_high;
    s->pos[2] = (size_t)y_high * w + x_low;
    s->pos[3] = (size_t)y_high * w + x_high;
    s->w[0] = hy * hx;
    s->w[1] = hy * lx;
    s->w[2] = ly * hx;
    s->w[3] = ly * lx;
    return 1;
}

/* Paste an mh x mw probability map into image pixels [x0, x1) x [y0, y1) as
 * _do_paste_mask does: bilinear grid_sample (zeros outside,
 * align_corners False) at the pixel centres mapped into box; NaN where a
 * centre's coordinate is NaN (0 / 0: a box of no width or height through
 * that centre), as grid_sample gives, which no threshold admits.  prob is
 * (y1 - y0) x (x1 - x0). */
void dm_paste_mask(const float *mask, int mh, int mw, const float box[4], int x0, int y0, int x1, int y1,
                   float *prob);

#endif
