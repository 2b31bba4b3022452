/* gif.h - a GIF's first frame as Pillow shows it. */
#ifndef DM_GIF_H
#define DM_GIF_H

#include <stddef.h>
#include <stdint.h>

/* Mend stb_image's RGBA decoding (width x height) of the GIF in data to
 * Pillow's colours: outside the first image's rectangle, and where it
 * drew the transparent index, the colour of the transparent index (else of
 * index 0), opaque.  Leaves the pixels where the file ends before its
 * first image. */
void dm_gif_as_pillow(const uint8_t *data, size_t size, uint8_t *rgba, int width, int height);

#endif
