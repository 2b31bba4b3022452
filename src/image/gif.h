/* gif.h - a GIF's first frame as Pillow shows it. */
#ifndef DM_GIF_H
#define DM_GIF_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

/* Mend stb_image's RGBA decoding (width x height) of the GIF in data to
 * Pillow's colours: outside the first image's rectangle, and where it
 * drew the transparent index, the colour of the transparent index (else of
 * index 0), opaque.  Leaves the pixels where the file ends before its
 * first image. */
void dm_gif_as_pillow(const uint8_t *data, size_t size, uint8_t *rgba, int width, int height);

/* A copy of the screened GIF in b (free()) whose colour tables of the
 * screen and of the first image hold 256 entries, completed by Pillow's
 * grey ramp; a grey ramp is the screen's table where the file has neither.
 * stb_image leaves a pixel of an index beyond the file's entries undrawn.
 * *out is NULL where the file ends before its first image. */
dm_status dm_gif_complete_palettes(const uint8_t *b, size_t size, uint8_t **out, size_t *out_size);

#endif
