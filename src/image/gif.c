/* gif.c - a GIF's first frame as Pillow shows it, mended from stb_image's.
 *
 * stb_image leaves the pixels of the transparent colour index, and those
 * outside the first image's rectangle, transparent black (or the
 * background colour).  Pillow 9 fills its canvas with the transparent
 * index (else index 0) before the image is drawn, and keeps the indices:
 * converted to RGB they take their palette colours, alpha aside. */
#include "gif.h"

#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "palette.h"

/* The first image's rectangle, the palette it uses (local, else global;
 * colours entries, none where the file has neither) and the transparent
 * index of the graphic control extensions before it (-1 for none).  0 where
 * the file ends first. */
typedef struct gif_frame {
    unsigned x0, y0, w, h;
    const uint8_t *palette;
    size_t colours;
    int transparent;
    size_t descriptor; /* where the image descriptor starts, after 0x2C */
} gif_frame;

static int first_frame(const uint8_t *b, size_t size, gif_frame *f)
{
    *f = (gif_frame){.transparent = -1};
    size_t p = 13;
    if (size < p) return 0;
    if (b[10] & 0x80) {
        f->colours = (size_t)2 << (b[10] & 7);
        f->palette = b + p;
        p += 3 * f->colours;
    }
    while (p < size) {
        unsigned block = b[p++];
        if (block == 0x2C) {
            if (size - p < 9) return 0;
            f->descriptor = p;
            f->x0 = dm_le16(b + p), f->y0 = dm_le16(b + p + 2), f->w = dm_le16(b + p + 4), f->h = dm_le16(b + p + 6);
            if (b[p + 8] & 0x80) {
                f->colours = (size_t)2 << (b[p + 8] & 7);
                f->palette = b + p + 9;
                if (size - p - 9 < 3 * f->colours) return 0;
            }
            return 1;
        }
        if (block != 0x21 || p >= size) return 0;
        unsigned label = b[p++];
        /* Pillow takes a control extension's flags and index from its first
         * sub-block, and keeps an index once one is set */
        if (label == 0xF9 && p < size && b[p] >= 4 && size - p > 4 && (b[p + 1] & 1)) f->transparent = b[p + 4];
        while (p < size && b[p]) p += 1 + (size_t)b[p]; /* sub-blocks, up to an empty one */
        p++;
    }
    return 0;
}

/* Index i's colour: its palette entry, or the grey ramp Pillow starts a
 * palette from beyond the file's entries. */
static void colour_of(const gif_frame *f, unsigned i, uint8_t *rgba)
{
    if (f->palette && i < f->colours) memcpy(rgba, f->palette + 3 * i, 3);
    else rgba[0] = rgba[1] = rgba[2] = (uint8_t)i;
    rgba[3] = 255;
}

void dm_gif_as_pillow(const uint8_t *data, size_t size, uint8_t *rgba, int width, int height)
{
    gif_frame f;
    if (!first_frame(data, size, &f)) return;
    uint8_t fill[4];
    colour_of(&f, f.transparent >= 0 ? (unsigned)f.transparent : 0, fill);
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++) {
            uint8_t *px = rgba + ((size_t)y * width + x) * 4;
            int inside = (unsigned)x >= f.x0 && (unsigned)x - f.x0 < f.w && (unsigned)y >= f.y0 &&
                         (unsigned)y - f.y0 < f.h;
            /* inside the image, stb_image leaves alpha 0 where it drew the
             * transparent index */
            if (!inside || px[3] == 0) memcpy(px, fill, 4);
        }
}

/* A colour table's 256 entries written at out, completed by the grey ramp;
 * returns the end of the table in the file. */
static size_t complete_table(const uint8_t *b, size_t at, unsigned flags, uint8_t *out)
{
    size_t entries = flags & 0x80 ? (size_t)2 << (flags & 7) : 0;
    dm_palette_fill(out, 3, b + at, 3, entries, 1);
    return at + 3 * entries;
}

dm_status dm_gif_complete_palettes(const uint8_t *b, size_t size, uint8_t **out, size_t *out_size)
{
    gif_frame f;
    if (!first_frame(b, size, &f)) return DM_OK; /* stb_image refuses it */
    unsigned screen = b[10], image = b[f.descriptor + 8];
    int local = image & 0x80, global = (screen & 0x80) || !local; /* a grey table where the file has none */
    uint8_t *c = malloc(size + 2 * 3 * 256);
    if (!c) return dm_fail(DM_ERR_NOMEM, "out of memory completing a GIF's palette");
    memcpy(c, b, 13);
    /* A first image beyond the screen (a screen of 0 x 0, written by some
     * encoders): Pillow widens its canvas to hold it, stb_image refused
     * the file.  The copy's screen holds it (the pixel limit is checked
     * again on the copy). */
    unsigned right = f.x0 + f.w, bottom = f.y0 + f.h;
    if (right > dm_le16(b + 6) && right <= 0xFFFF) c[6] = (uint8_t)right, c[7] = (uint8_t)(right >> 8);
    if (bottom > dm_le16(b + 8) && bottom <= 0xFFFF) c[8] = (uint8_t)bottom, c[9] = (uint8_t)(bottom >> 8);
    size_t p = 13, q = 13;
    if (global) {
        c[10] = (uint8_t)(screen | 0x87);
        p = complete_table(b, 13, screen, c + q);
        q += 3 * 256;
    }
    size_t flags_at = f.descriptor + 8;
    memcpy(c + q, b + p, flags_at - p);
    q += flags_at - p;
    p = flags_at + 1;
    c[q++] = (uint8_t)(local ? image | 0x87 : image);
    if (local) {
        p = complete_table(b, p, image, c + q);
        q += 3 * 256;
    }
    memcpy(c + q, b + p, size - p);
    *out = c;
    *out_size = q + size - p;
    return DM_OK;
}
