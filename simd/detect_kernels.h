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

#include <stddef.h>
#include <stdint.h>

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

/* Paste an mh x mw probability map into image pixels [x0, x1) x [y0, y1) as
 * _do_paste_mask does: bilinear grid_sample (zeros outside,
 * align_corners False) at the pixel centres mapped into box.  prob is
 * (y1 - y0) x (x1 - x0). */
void dm_paste_mask(const float *mask, int mh, int mw, const float box[4], int x0, int y0, int x1, int y1,
                   float *prob);

#endif
