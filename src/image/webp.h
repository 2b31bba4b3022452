/* webp.h - WebP decoding with libwebp, the library Pillow and OpenCV both
 * decode it with, so decoded pixels equal the ones they see. */
#ifndef DM_WEBP_H
#define DM_WEBP_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

/* Does the buffer start with WebP's RIFF signature? */
int dm_is_webp(const void *data, size_t size);

/* Decode a WebP (lossy, lossless, with or without alpha; of an animation,
 * the canvas after its first frame, as Pillow shows it) into RGB, alpha
 * dropped as Pillow's convert("RGB") and OpenCV's IMREAD_COLOR drop it,
 * refusing one of more than max_pixels pixels from its header.  A damaged
 * file is refused or decoded as Pillow does, or where opencv is set as
 * OpenCV does.  out->channels is 3; free with dm_image_free(). */
dm_status dm_webp_decode(const void *data, size_t size, int64_t max_pixels, int opencv, dm_image *out);

#endif
