/* cv_resize.h - 8-bit image resizing computed exactly as OpenCV 4's
 * cv::resize with INTER_LINEAR computes it, which mmcv's imresize calls. */
#ifndef DM_CV_RESIZE_H
#define DM_CV_RESIZE_H

#include "damamba.h"

#include <stdint.h>

/* Resize a src_w x src_h image of `channels` interleaved bytes to
 * dst_w x dst_h (dst: dst_h x dst_w x channels bytes). */
dm_status dm_cv_resize(const uint8_t *src, int src_w, int src_h, int channels, uint8_t *dst, int dst_w, int dst_h);

#endif
