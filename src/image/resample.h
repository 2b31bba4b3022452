/* resample.h - 8-bit image resizing, computed exactly as Pillow's
 * Image.resize computes it for 8-bit images. */
#ifndef DM_RESAMPLE_H
#define DM_RESAMPLE_H

#include "damamba.h"

/* Resize a src_w x src_h image of `channels` interleaved bytes to
 * out_w x out_h and write only the window of crop_w x crop_h pixels at
 * (crop_x, crop_y) of the result to dst (crop_h x crop_w x channels).  The
 * window's pixels equal those of a full resize followed by a crop. */
dm_status dm_resample(const uint8_t *src, int src_w, int src_h, int channels,
                      int out_w, int out_h, int crop_x, int crop_y,
                      int crop_w, int crop_h, dm_interpolation interpolation,
                      uint8_t *dst);

#endif
