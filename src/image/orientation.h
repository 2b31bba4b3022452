/* orientation.h - the EXIF orientation of JPEG and PNG files, read and
 * applied as OpenCV's imread and imdecode do in IMREAD_COLOR mode, which
 * mmsegmentation's and mmdetection's test pipelines load images with. */
#ifndef DM_ORIENTATION_H
#define DM_ORIENTATION_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

/* The orientation tag (1 to 8 turn the image; any other value leaves it)
 * of EXIF data starting at its TIFF header, or 0 where it has none.  As
 * OpenCV reads it: the first IFD's entries in order, the first orientation
 * entry's first short, whatever its type, and nothing after an entry whose
 * value OpenCV reads out of bounds. */
int dm_exif_orientation(const uint8_t *tiff, size_t size);

/* The orientation tag of a PNG file's first eXIf chunk before its image
 * data, else after it, as libpng keeps them: at least 2 bytes, the right
 * CRC and a byte-order mark.  0 where it has none.  The chunks must lie
 * within the file (dm_image_check). */
int dm_png_orientation(const uint8_t *png, size_t size);

/* Turn *image upright for an orientation tag, as OpenCV's EXIF transform
 * does: 2 to 4 flip, 5 to 8 transpose and then flip (6 is a quarter turn
 * clockwise).  Other values leave it.  On failure the image is kept. */
dm_status dm_image_orient(dm_image *image, int orientation);

#endif
