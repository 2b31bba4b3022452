/* image_check.h - screen image bytes before stb_image decodes them.
 *
 * Debian 12 ships stb_image 2.27, whose decoders fail on hostile input in
 * ways found by fuzzing (fuzz/README.md).  So only the formats stb_image
 * reads for the library pass (JPEG goes to libjpeg-turbo instead), told by
 * their signatures (TGA by its header fields); a PNG chunk may not claim
 * more bytes than the file holds (2.27 allocates whatever a chunk claims);
 * and a PNM header must have numbers of at most 9 digits and 8-bit samples
 * (2.27 overflows an int on longer numbers and its buffers on 16-bit
 * files). */
#ifndef DM_IMAGE_CHECK_H
#define DM_IMAGE_CHECK_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

/* DM_OK, or why the bytes must not be decoded.  Also refused: files that
 * end before the pixels their header promises (PNM, BMP, TGA, also
 * run-length TGA) or before the end of their first image (GIF); a GIF
 * whose first image's codes stand for over four times its pixels; PNG
 * without a whole IEND chunk, of more than max_pixels pixels (before its
 * data is inflated), or whose data inflates to over twice what its rows
 * need.  JPEG is refused: it goes to libjpeg-turbo. */
dm_status dm_image_check(const void *buf, size_t size, int64_t max_pixels);

/* DM_OK unless buf is a PNG with a chunk whose CRC-32 is wrong where the
 * convention's reference refuses it: Pillow (pil) any chunk before the
 * image data (it checks none from the first IDAT on), libpng (OpenCV's)
 * any critical chunk (IHDR, PLTE, IDAT, IEND; it drops an ancillary one).
 * For a file dm_image_check passed. */
dm_status dm_png_check_crcs(const void *buf, size_t size, int pil);

/* The maximum sample value a binary PNM's header gives (1 to 255), or 0
 * for any other file. */
int dm_pnm_max_value(const void *buf, size_t size);

/* Does the buffer start with PNG's signature? */
int dm_is_png(const void *buf, size_t size);

/* Does the buffer look like a TGA file?  TGA has no signature: these are
 * the header fields stb_image tests, which no other format's signature
 * passes (their second byte is above 1). */
int dm_looks_like_tga(const void *buf, size_t size);

/* DM_OK, or the refusal of an image of width x height over max_pixels. */
dm_status dm_image_within(int64_t width, int64_t height, int64_t max_pixels);

/* Decoders running at once share twice DM_IMAGE_MAX_DECODE_BYTES: take
 * waits until `bytes` fit beside what the others hold (or none do), give
 * returns them. */
void dm_decode_memory_take(size_t bytes);
void dm_decode_memory_give(size_t bytes);

/* The byte stb_image's allocations, and the buffer WebPDecode writes,
 * are filled with (0).  The fuzz target decodes each input under two
 * fills: a pixel that differs depends on memory the decoder never wrote. */
extern unsigned char dm_image_alloc_fill;

#endif
