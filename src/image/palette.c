/* palette.c - palettes completed before stb_image decodes them.
 *
 * stb_image fills only the palette entries a file has: a PNG's and a BMP's
 * palette is an array on its stack, so a pixel whose index lies beyond the
 * file's entries took whatever an earlier call left there, a GIF's pixel
 * of such an index was not drawn at all, and a TGA's took entry 0.  Each reference decides
 * these pixels: Pillow starts a palette as the grey ramp (entry i is
 * (i, i, i)); libpng, which OpenCV reads PNG with, and OpenCV's own BMP
 * reader start one black.  So stb_image decodes a copy of the file whose
 * palette holds 256 entries, completed as the reference completes it. */
#include "palette.h"

#include "error.h"
#include "gif.h"
#include "image_check.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bytes.h"

#define FULL 256 /* entries of a completed palette */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

void dm_palette_fill(uint8_t *out, size_t out_entry, const uint8_t *file, size_t file_entry, size_t file_entries,
                     int grey_ramp)
{
    memset(out, 0, FULL * out_entry);
    for (unsigned i = 0; i < FULL; i++) {
        uint8_t *e = out + i * out_entry;
        if (i < file_entries) memcpy(e, file + i * file_entry, 3);
        else if (grey_ramp) e[0] = e[1] = e[2] = (uint8_t)i;
    }
}

/* A palette PNG (colour type 3) with each PLTE chunk replaced by one of 256
 * entries.  A PLTE chunk stb_image refuses (of a length not a multiple of
 * 3, or over 256 entries) stays as it is. */
static dm_status complete_png(const uint8_t *b, size_t size, int grey_ramp, uint8_t **out, size_t *out_size)
{
    if (size < 26 || b[25] != 3) return DM_OK;
    /* The chunks were screened: each lies whole in the file up to IEND. */
    size_t grown = size;
    for (size_t p = 8; size - p >= 12 && memcmp(b + p + 4, "IEND", 4); p += 12 + (size_t)dm_be32(b + p)) {
        uint32_t len = dm_be32(b + p);
        if (memcmp(b + p + 4, "PLTE", 4) == 0 && len % 3 == 0 && len < 3 * FULL) grown += 3 * FULL - len;
    }
    if (grown == size) return DM_OK;
    uint8_t *c = malloc(grown);
    if (!c) return dm_fail(DM_ERR_NOMEM, "out of memory completing a PNG's palette");
    size_t p = 8, q = 8;
    memcpy(c, b, 8);
    while (size - p >= 12 && memcmp(b + p + 4, "IEND", 4)) {
        uint32_t len = dm_be32(b + p);
        if (memcmp(b + p + 4, "PLTE", 4) == 0 && len % 3 == 0 && len < 3 * FULL) {
            put_be32(c + q, 3 * FULL);
            memcpy(c + q + 4, "PLTE", 4);
            dm_palette_fill(c + q + 8, 3, b + p + 8, 3, len / 3, grey_ramp);
            put_be32(c + q + 8 + 3 * FULL, (uint32_t)crc32(0, c + q + 4, 4 + 3 * FULL));
            q += 12 + 3 * FULL;
        } else {
            memcpy(c + q, b + p, 12 + (size_t)len);
            q += 12 + (size_t)len;
        }
        p += 12 + (size_t)len;
    }
    memcpy(c + q, b + p, size - p);
    *out = c;
    *out_size = grown;
    return DM_OK;
}

/* A BMP of 1, 4 or 8 bits per pixel rewritten with a 40-byte header and a
 * palette of 256 entries, then its rows.  The references read as many
 * entries as the header's colour count says (all 2^bits where it is 0;
 * OS/2's 12-byte header has none), from the end of the header, three bytes
 * each after an OS/2 header and four after any other; stb_image counted
 * them from the space before the rows instead, wrongly for OS/2 files.
 * Headers stb_image does not read stay as they are, for it to refuse. */
static dm_status complete_bmp(const uint8_t *b, size_t size, int grey_ramp, uint8_t **out, size_t *out_size)
{
    /* check_bmp read the header's sizes and found the rows in the file */
    uint32_t offset = dm_le32(b + 10), header = dm_le32(b + 14);
    if (header != 12 && header != 40 && header != 56 && header != 108 && header != 124) return DM_OK;
    int os2 = header == 12;
    unsigned bpp = os2 ? dm_le16(b + 24) : dm_le16(b + 28);
    if (bpp > 8) return DM_OK;
    if (!os2 && dm_le32(b + 30) != 0)
        return dm_fail(DM_ERR_FORMAT, "unsupported BMP: compression %u with %u bits per pixel", dm_le32(b + 30), bpp);
    int64_t width = os2 ? (int64_t)dm_le16(b + 18) : (int32_t)dm_le32(b + 18);
    int64_t height = os2 ? (int64_t)dm_le16(b + 20) : (int32_t)dm_le32(b + 22);
    size_t entry = os2 ? 3 : 4, start = 14 + (size_t)header;
    if (start > size) return dm_fail(DM_ERR_FORMAT, "truncated BMP: the file ends inside its header");
    uint64_t colours = os2 || !dm_le32(b + 46) ? 1u << bpp : dm_le32(b + 46);
    if (colours > FULL)
        return dm_fail(DM_ERR_FORMAT, "corrupt BMP: a palette of %llu colours, over 256", (unsigned long long)colours);
    if (size - start < colours * entry)
        return dm_fail(DM_ERR_FORMAT, "truncated BMP: the file ends inside its palette of %llu colours",
                       (unsigned long long)colours);
    uint64_t rows = ((uint64_t)width * bpp + 31) / 32 * 4 * (uint64_t)(height < 0 ? -height : height);
    size_t pixels_at = 14 + 40 + 4 * FULL;
    if (rows > INT_MAX - pixels_at)
        return dm_fail(DM_ERR_FORMAT, "BMP of %llu bytes of rows is too large for the image decoder",
                       (unsigned long long)rows);
    size_t grown = pixels_at + (size_t)rows;
    uint8_t *c = calloc(1, grown);
    if (!c) return dm_fail(DM_ERR_NOMEM, "out of memory completing a BMP's palette");
    c[0] = 'B', c[1] = 'M';
    put_le32(c + 2, (uint32_t)grown);
    put_le32(c + 10, (uint32_t)pixels_at);
    put_le32(c + 14, 40);
    put_le32(c + 18, (uint32_t)width);
    put_le32(c + 22, (uint32_t)height);
    c[26] = 1;            /* planes */
    c[28] = (uint8_t)bpp; /* compression, sizes and counts stay 0 */
    /* BGR(X) entries, the grey ramp alike in either order */
    dm_palette_fill(c + 54, 4, b + start, entry, (size_t)colours, grey_ramp);
    memcpy(c + pixels_at, b + offset, (size_t)rows);
    *out = c;
    *out_size = grown;
    return DM_OK;
}

/* A colour-mapped TGA of 8-bit indices whose map holds fewer than 256
 * entries, rewritten with a map of 256 whose entries past the file's are
 * the grey ramp, as Pillow's palettes are (OpenCV reads no TGA): stb_image
 * took entry 0 for an index beyond the map.  Entries of 15 or 16 bits
 * become 24-bit ones, widened as stb_image widens them (v * 255 / 31),
 * since the ramp has no 5-bit form; 24- and 32-bit ones stay as they are
 * (blue, green, red, and alpha). */
static dm_status complete_tga(const uint8_t *b, size_t size, uint8_t **out, size_t *out_size)
{
    /* check_tga passed it: a map from entry 0, the pixels in the file */
    unsigned entries = dm_le16(b + 5), bits = b[7];
    if (b[1] != 1 || (b[2] != 1 && b[2] != 9) || b[16] != 8 || entries >= FULL) return DM_OK;
    if (bits != 15 && bits != 16 && bits != 24 && bits != 32) return DM_OK; /* stb_image refuses it */
    size_t entry = (bits + 7) / 8, out_entry = bits == 32 ? 4 : 3, map_at = 18 + (size_t)b[0];
    size_t pixels_at = map_at + entries * entry;
    if (pixels_at > size) return DM_OK;
    size_t grown = size - entries * entry + FULL * out_entry;
    uint8_t *c = malloc(grown);
    if (!c) return dm_fail(DM_ERR_NOMEM, "out of memory completing a TGA's colour map");
    memcpy(c, b, map_at);
    c[5] = FULL & 0xFF, c[6] = FULL >> 8, c[7] = (uint8_t)(8 * out_entry);
    for (unsigned i = 0; i < FULL; i++) {
        uint8_t *e = c + map_at + i * out_entry;
        const uint8_t *from = b + map_at + i * entry;
        if (i >= entries) {
            e[0] = e[1] = e[2] = (uint8_t)i;
            if (out_entry == 4) e[3] = 255;
        } else if (entry == 2) {
            unsigned v = dm_le16(from);
            for (int k = 0; k < 3; k++) e[k] = (uint8_t)((v >> (5 * k) & 31) * 255 / 31); /* blue, green, red */
        } else {
            memcpy(e, from, out_entry);
        }
    }
    memcpy(c + map_at + FULL * out_entry, b + pixels_at, size - pixels_at);
    *out = c;
    *out_size = grown;
    return DM_OK;
}

dm_status dm_palette_complete(const uint8_t *data, size_t size, int grey_ramp, uint8_t **copy, size_t *copy_size)
{
    *copy = NULL;
    *copy_size = 0;
    if (dm_is_png(data, size)) return complete_png(data, size, grey_ramp, copy, copy_size);
    if (size >= 2 && data[0] == 'B' && data[1] == 'M') return complete_bmp(data, size, grey_ramp, copy, copy_size);
    if (size >= 6 && memcmp(data, "GIF", 3) == 0) return dm_gif_complete_palettes(data, size, copy, copy_size);
    if (dm_looks_like_tga(data, size)) return complete_tga(data, size, copy, copy_size);
    return DM_OK;
}
