/* palette.h - palettes completed to 256 entries before stb_image decodes. */
#ifndef DM_PALETTE_H
#define DM_PALETTE_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

/* A copy of the screened image file in data (dm_image_check passed it)
 * whose palettes hold 256 entries, in *copy (free()) and *copy_size, for
 * stb_image to decode: a palette PNG's and a BMP's completed by Pillow's
 * grey ramp where grey_ramp is set, else black (as libpng and OpenCV
 * complete them); a GIF's and a TGA's colour map by the grey ramp
 * (OpenCV reads neither).  *copy is NULL where the file has no palette to
 * complete. */
dm_status dm_palette_complete(const uint8_t *data, size_t size, int grey_ramp, uint8_t **copy, size_t *copy_size);

/* 256 palette entries of out_entry bytes at out: the first file_entries
 * take the three colour bytes of the file's entries, file_entry bytes
 * apart, in the file's order; the others (i, i, i) where grey_ramp is
 * set, else black.  A fourth byte of an entry is 0. */
void dm_palette_fill(uint8_t *out, size_t out_entry, const uint8_t *file, size_t file_entry, size_t file_entries,
                     int grey_ramp);

#endif
