/* orientation.c - EXIF orientation, read as OpenCV 4 reads it and applied
 * as it applies it.  Phones store most photos sideways with a tag saying
 * how to turn them; PIL ignores the tag, OpenCV does not, so the
 * segmentation and detection pipelines see such photos turned upright. */
#include "orientation.h"

#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "bytes.h"
#include "error.h"

typedef struct tiff {
    const uint8_t *b;
    uint64_t size;
    int little;
} tiff;

/* A 16- or 32-bit value at off, or -1 where it runs past the end (where
 * OpenCV's reader gives up). */
static int64_t u16_at(const tiff *t, uint64_t off)
{
    if (off + 1 >= t->size) return -1;
    const uint8_t *p = t->b + off;
    return t->little ? dm_le16(p) : (unsigned)p[0] << 8 | p[1];
}

static int64_t u32_at(const tiff *t, uint64_t off)
{
    if (off + 3 >= t->size) return -1;
    return t->little ? dm_le32(t->b + off) : dm_be32(t->b + off);
}

/* n rationals at the 32-bit offset in the entry's value field, stepping as
 * OpenCV does (a 32-bit offset); 0 where one runs past the end. */
static int rationals_fit(const tiff *t, uint64_t entry, int n)
{
    int64_t at = u32_at(t, entry + 8);
    if (at < 0) return 0;
    uint32_t off = (uint32_t)at;
    for (int i = 0; i < n; i++, off += 8)
        if (u32_at(t, off) < 0 || u32_at(t, (uint64_t)off + 4) < 0) return 0;
    return 1;
}

/* Does OpenCV read entry's value without running past the end?  It reads
 * the values of the tags it knows (IFD0's baseline tags), so a broken one
 * ends the directory for it. */
static int entry_readable(const tiff *t, uint64_t entry, int64_t tag)
{
    switch (tag) {
    case 0x010E: case 0x010F: case 0x0110: case 0x0131: case 0x0132: case 0x8298: { /* strings */
        int64_t count = u32_at(t, entry + 4), at = 8;
        if (count < 0) return 0;
        if (count > 4 && (at = u32_at(t, entry + 8)) < 0) return 0;
        return (uint64_t)at <= t->size && (uint64_t)at + (uint64_t)count <= t->size;
    }
    case 0x0112: case 0x0128: case 0x0213: return u16_at(t, entry + 8) >= 0; /* shorts */
    case 0x011A: case 0x011B: return rationals_fit(t, entry, 1); /* resolutions */
    case 0x013E: return rationals_fit(t, entry, 2);              /* white point */
    case 0x013F: case 0x0214: return rationals_fit(t, entry, 6); /* primaries, black and white */
    case 0x0211: return rationals_fit(t, entry, 3);              /* YCbCr coefficients */
    default: return 1;                                           /* not read */
    }
}

int dm_exif_orientation(const uint8_t *b, size_t size)
{
    /* "II" little-endian; anything else is read big-endian */
    tiff t = {b, size, size > 1 && b[0] == b[1] && b[0] == 'I'};
    if (u16_at(&t, 2) != 42) return 0;
    int64_t ifd = u32_at(&t, 4), count = ifd < 0 ? -1 : u16_at(&t, (uint64_t)ifd);
    for (int64_t i = 0; i < count; i++) {
        uint64_t entry = (uint64_t)ifd + 2 + 12 * (uint64_t)i;
        int64_t tag = u16_at(&t, entry);
        if (tag < 0 || !entry_readable(&t, entry, tag)) return 0;
        if (tag == 0x0112) return (int)u16_at(&t, entry + 8); /* the first one counts */
    }
    return 0;
}

/* Would libpng keep this eXIf chunk?  Its CRC must match (an ancillary
 * chunk with a bad one is dropped), and it rejects a second byte that is
 * neither a byte-order letter nor the first byte again. */
static int exif_chunk_kept(const uint8_t *chunk, uint32_t len)
{
    const uint8_t *data = chunk + 8;
    if (len < 2) return 0;
    if (data[1] != 'M' && data[1] != 'I' && data[0] != data[1]) return 0;
    return (uint32_t)crc32_z(crc32_z(0, chunk + 4, 4), data, len) == dm_be32(data + len);
}

int dm_png_orientation(const uint8_t *b, size_t size)
{
    /* libpng keeps the first eXIf before IDAT in the image's info and the
     * first after it in the end info; OpenCV reads the former, else the
     * latter. */
    const uint8_t *before = NULL, *after = NULL;
    uint32_t before_len = 0, after_len = 0;
    int seen_data = 0;
    for (size_t p = 8; p + 12 <= size;) {
        uint32_t len = dm_be32(b + p);
        if (len > size - p - 12) break;
        const uint8_t *type = b + p + 4;
        if (!memcmp(type, "IDAT", 4)) seen_data = 1;
        else if (!memcmp(type, "IEND", 4)) break;
        else if (!memcmp(type, "eXIf", 4) && exif_chunk_kept(b + p, len)) {
            if (!seen_data && !before) before = b + p + 8, before_len = len;
            if (seen_data && !after) after = b + p + 8, after_len = len;
        }
        p += 12 + (size_t)len;
    }
    if (before) return dm_exif_orientation(before, before_len);
    return after ? dm_exif_orientation(after, after_len) : 0;
}

dm_status dm_image_orient(dm_image *image, int orientation)
{
    if (orientation < 2 || orientation > 8) return DM_OK;
    int W = image->width, H = image->height, c = image->channels;
    int transpose = orientation >= 5;
    int ow = transpose ? H : W, oh = transpose ? W : H;
    /* Which ends the output's rows and columns start from, after the
     * transpose: orientations 2 and 3, 6 and 7 mirror columns; 3 and 4,
     * 7 and 8 mirror rows. */
    int flip_x = orientation == 2 || orientation == 3 || orientation == 6 || orientation == 7;
    int flip_y = orientation == 3 || orientation == 4 || orientation == 7 || orientation == 8;
    uint8_t *out = malloc((size_t)ow * oh * c);
    if (!out) return dm_fail(DM_ERR_NOMEM, "out of memory turning a %d x %d image upright", W, H);
    for (int y = 0; y < oh; y++) {
        int ty = flip_y ? oh - 1 - y : y;
        for (int x = 0; x < ow; x++) {
            int tx = flip_x ? ow - 1 - x : x;
            /* (ty, tx) in the transposed image is (tx, ty) in the source */
            int sy = transpose ? tx : ty, sx = transpose ? ty : tx;
            memcpy(out + ((size_t)y * ow + x) * c, image->pixels + ((size_t)sy * W + sx) * c, (size_t)c);
        }
    }
    free(image->pixels);
    image->pixels = out;
    image->width = ow;
    image->height = oh;
    return DM_OK;
}
