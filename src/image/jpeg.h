/* jpeg.h - JPEG decoding with libjpeg-turbo, the decoder Pillow and OpenCV
 * both use, so decoded pixels equal the ones the reference pipelines saw. */
#ifndef DM_JPEG_H
#define DM_JPEG_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

/* Does the buffer start with a JPEG signature (SOI)? */
int dm_is_jpeg(const void *data, size_t size);

/* Decode a JPEG into RGB (colour files; CMYK ones converted as Pillow
 * converts them, or as OpenCV does where opencv is set) or grey
 * (one-component files), at libjpeg's default settings (islow DCT, fancy
 * upsampling), refusing one of more than max_pixels pixels from its
 * header.  out->channels is 3 or 1; free with dm_image_free().
 * *orientation gets the EXIF orientation tag as OpenCV reads it
 * (orientation.h) where opencv is set, else 0. */
dm_status dm_jpeg_decode(const void *data, size_t size, int64_t max_pixels, int opencv, dm_image *out,
                         int *orientation);

#endif
