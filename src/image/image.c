/* image.c - decoding images (libjpeg-turbo for JPEG, libwebp for WebP,
 * stb_image for the rest) and turning them into model inputs the way the
 * authors' evaluation transform does. */
#include "damamba.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "error.h"
#include "internal_api.h"
#include "image_check.h"
#include "gif.h"
#include "jpeg.h"
#include "orientation.h"
#include "palette.h"
#include "json.h"
#include "resample.h"
#include "versioned.h"
#include "webp.h"

/* Every buffer stb_image allocates starts filled with dm_image_alloc_fill,
 * so no byte of an earlier allocation can reach a decoded pixel. */
unsigned char dm_image_alloc_fill = 0;

/* Set when one of stb_image's allocations failed: its zlib reports no
 * reason, and a decode out of memory is not a corrupt file. */
static _Thread_local int decoder_out_of_memory;

static void *decoder_alloc(size_t size)
{
    void *p = malloc(size);
    if (p) memset(p, dm_image_alloc_fill, size);
    else decoder_out_of_memory = 1;
    return p;
}

static void *decoder_realloc(void *p, size_t old_size, size_t new_size)
{
    unsigned char *q = realloc(p, new_size);
    if (q && new_size > old_size) memset(q + old_size, dm_image_alloc_fill, new_size - old_size);
    if (!q) decoder_out_of_memory = 1;
    return q;
}

/* stb_image, limited to the formats the library documents other than JPEG
 * (jpeg.c).  Files are read here and decoded from memory, so stb needs no
 * stdio. */
#define STBI_MALLOC(size) decoder_alloc(size)
#define STBI_REALLOC_SIZED(p, old_size, new_size) decoder_realloc(p, old_size, new_size)
#define STBI_FREE(p) free(p)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC /* private to this file: never clashes with a program's own stb_image */
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_TGA
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 16)
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
/* With STB_IMAGE_STATIC, functions the header declares but this build leaves
 * out are reported at the end of the file, after the pop above. */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

/* PIL's convert("L"): ITU-R 601-2 luma in 16-bit fixed point, rounded. */
static uint8_t pil_luma(const uint8_t *rgb)
{
    return (uint8_t)((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

/* Convert n pixels of 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA)
 * channels to 1 or 3, dropping alpha as PIL's convert() does. */
static void convert_pixels(const uint8_t *in, int in_channels, uint8_t *out, int out_channels, size_t n)
{
    for (size_t i = 0; i < n; i++, in += in_channels, out += out_channels) {
        int colour = in_channels >= 3;
        if (out_channels == 1) {
            out[0] = colour ? pil_luma(in) : in[0];
        } else {
            out[0] = in[0];
            out[1] = colour ? in[1] : in[0];
            out[2] = colour ? in[2] : in[0];
        }
    }
}

/* stb_image leaves a PNM's samples as the file has them; Pillow (9.1 on)
 * scales a maximum sample value other than 255 to it: min(255,
 * round(v / max_value * 255)), Python's round taking halves to even, as
 * rint does. */
static void pnm_to_8_bits(uint8_t *samples, size_t n, int max_value)
{
    uint8_t to[256];
    for (int v = 0; v < 256; v++) {
        double scaled = rint((double)v / max_value * 255.0);
        to[v] = (uint8_t)(scaled < 255.0 ? scaled : 255.0);
    }
    for (size_t i = 0; i < n; i++) samples[i] = to[samples[i]];
}

/* A 16-bit BMP's colour fields of 5 or 6 bits: stb_image widens them to 8
 * by repeating their high bits, Pillow as v * 255 / 31 (or / 63),
 * truncated, OpenCV by a shift alone.  stb_image's byte holds the field in
 * its high bits, so each sample is remapped.  Pillow reads the 5-5-5 and
 * 5-6-5 layouts only; others are left as stb_image gives them. */
static void bmp_16_as(const uint8_t *b, size_t size, int opencv, uint8_t *pixels, size_t n, int channels)
{
    /* a header of at least 40 bytes (not OS/2's of 12) of 16 bits per pixel */
    if (size < 54 || b[0] != 'B' || b[1] != 'M' || dm_le32(b + 14) < 40 || b[28] != 16 || b[29] != 0) return;
    uint32_t compression = dm_le32(b + 30), masks[3] = {0};
    if (compression == 3 && size >= 66)
        for (int m = 0; m < 3; m++) masks[m] = dm_le32(b + 54 + 4 * m);
    int green; /* bits of the green field; red and blue have 5 */
    if (compression == 0 || (masks[0] == 0x7C00 && masks[1] == 0x3E0 && masks[2] == 0x1F))
        green = 5;
    else if (masks[0] == 0xF800 && masks[1] == 0x7E0 && masks[2] == 0x1F)
        green = 6;
    else
        return;
    uint8_t to[2][256]; /* [0] for 5-bit fields, [1] for 6-bit ones */
    for (int x = 0; x < 256; x++) {
        int v5 = x >> 3, v6 = x >> 2;
        to[0][x] = (uint8_t)(opencv ? v5 << 3 : v5 * 255 / 31);
        to[1][x] = (uint8_t)(opencv ? v6 << 2 : v6 * 255 / 63);
    }
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) pixels[i * channels + c] = to[c == 1 && green == 6][pixels[i * channels + c]];
}

/* A TGA whose header says its pixels run right to left (descriptor bit
 * 4): stb_image ignores the bit, Pillow mirrors the rows. */
static int tga_right_to_left(const uint8_t *b, size_t size)
{
    return dm_looks_like_tga(b, size) && (b[17] & 0x10);
}

static void mirror_rows(uint8_t *pixels, int w, int h, int n)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w / 2; x++) {
            uint8_t *a = pixels + ((size_t)y * w + x) * n, *b = pixels + ((size_t)y * w + w - 1 - x) * n, t[4];
            memcpy(t, a, (size_t)n), memcpy(a, b, (size_t)n), memcpy(b, t, (size_t)n);
        }
}

/* Mend stb_image's w x h pixels of n channels where it decodes otherwise
 * than the reference (Pillow, or OpenCV where opencv is set): a GIF's
 * transparent and uncovered pixels, 16-bit BMP fields, TGA rows right to
 * left (OpenCV reads neither GIF nor TGA: they stay as Pillow shows them). */
static void as_references(const uint8_t *data, size_t size, int opencv, uint8_t *pixels, int w, int h, int n)
{
    if (n == 4 && memcmp(data, "GIF", 3) == 0) dm_gif_as_pillow(data, size, pixels, w, h);
    if (n >= 3) bmp_16_as(data, size, opencv, pixels, (size_t)w * h, n);
    if (tga_right_to_left(data, size)) mirror_rows(pixels, w, h, n);
}

/* Is this a PNG of 16-bit grey samples (IHDR: bit depth 16, colour type 0)? */
static int png_grey_16(const uint8_t *b, size_t size)
{
    return size > 25 && dm_is_png(b, size) && b[24] == 16 && b[25] == 0;
}

/* stb_decode's work on the screened file, its palettes completed. */
static dm_status stb_decode_screened(const stbi_uc *bytes, size_t size, int64_t max_pixels, int pil, uint8_t **pixels,
                                     int *w, int *h, int *n)
{
    dm_status st;
    if (!stbi_info_from_memory(bytes, (int)size, w, h, n))
        return dm_fail(DM_ERR_FORMAT, "not a readable PNG, BMP, GIF, TGA or PNM image: %s",
                       stbi_failure_reason());
    if (*h < 0) *h = -*h; /* a top-down BMP's (the screen refused INT_MIN) */
    if ((st = dm_image_within(*w, *h, max_pixels))) return st;
    /* stb_image holds the decoded samples (2 bytes each at 16 bits, and a
     * GIF frame as RGBA), and about twice that in its working buffers. */
    int wide = stbi_is_16_bit_from_memory(bytes, (int)size);
    size_t samples = (size_t)*w * *h * (*n < 4 && memcmp(bytes, "GIF", 3) == 0 ? 4 : (size_t)*n);
    size_t need = 3 * samples * (wide ? 2 : 1);
    if (need > DM_IMAGE_MAX_DECODE_BYTES)
        return dm_fail(DM_ERR_FORMAT, "image of %d x %d pixels, %d channel%s%s, needs %zu MB to decode, over the "
                       "limit of %zu MB", *w, *h, *n, *n == 1 ? "" : "s", wide ? " of 16 bits" : "", need >> 20,
                       (size_t)DM_IMAGE_MAX_DECODE_BYTES >> 20);
    dm_decode_memory_take(need);
    stbi__g_failure_reason = NULL; /* stbi_info's tries of other formats leave theirs */
    decoder_out_of_memory = 0;
    if (pil && png_grey_16(bytes, size)) {
        uint16_t *deep = stbi_load_16_from_memory(bytes, (int)size, w, h, n, 0);
        size_t count = deep ? (size_t)*w * *h * *n : 0;
        if (deep && !(*pixels = malloc(count))) decoder_out_of_memory = 1;
        for (size_t i = 0; *pixels && i < count; i++) (*pixels)[i] = (uint8_t)(deep[i] < 255 ? deep[i] : 255);
        free(deep);
    } else {
        *pixels = stbi_load_from_memory(bytes, (int)size, w, h, n, 0);
    }
    dm_decode_memory_give(need);
    const char *why = stbi_failure_reason();
    if (!*pixels && (decoder_out_of_memory || (why && !strcmp(why, "outofmem"))))
        return dm_fail(DM_ERR_NOMEM, "out of memory decoding a %d x %d image", *w, *h);
    if (!*pixels) return dm_fail(DM_ERR_FORMAT, "cannot decode image: %s", why ? why : "corrupt data");
    if ((st = dm_image_within(*w, *h, max_pixels))) { /* a GIF frame may differ from its header */
        stbi_image_free(*pixels);
        return st;
    }
    int max_value = dm_pnm_max_value(bytes, size);
    if (pil && max_value && max_value < 255) pnm_to_8_bits(*pixels, (size_t)*w * *h * *n, max_value); /* OpenCV keeps them */
    return DM_OK;
}

/* Decode a non-JPEG file with stb_image (its pixels are freed with free()),
 * after screening the bytes and completing their palettes (palette.h),
 * by Pillow's grey ramp where pil is set.  16-bit samples keep their high byte, as
 * OpenCV and Pillow do, except that Pillow opens a 16-bit grey PNG as
 * 32-bit integers (mode "I"), which its conversions to 8 bits clip at 255:
 * so it does where pil is set. */
static dm_status stb_decode(const void *data, size_t size, int64_t max_pixels, int pil, uint8_t **pixels, int *w,
                            int *h, int *n)
{
    dm_status st = dm_image_check(data, size, max_pixels);
    if (st || (st = dm_png_check_crcs(data, size, pil))) return st;
    uint8_t *completed;
    size_t completed_size;
    if ((st = dm_palette_complete(data, size, pil, &completed, &completed_size))) return st;
    if (completed) size = completed_size;
    const stbi_uc *bytes = completed ? completed : data;
    if (size > INT_MAX)
        st = dm_fail(DM_ERR_FORMAT, "file of %zu bytes with its palette completed is too large for the image decoder",
                     size);
    else
        st = stb_decode_screened(bytes, size, max_pixels, pil, pixels, w, h, n);
    free(completed);
    return st;
}

dm_status dm_image_load_memory_within(const void *data, size_t size, int channels, int64_t max_pixels,
                                      dm_image_convention convention, dm_image *out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_image_load_memory: out is NULL");
    *out = (dm_image){0};
    if (!data && size) return dm_fail(DM_ERR_ARGUMENT, "dm_image_load_memory: data is NULL");
    if (convention != DM_IMAGE_PIL && convention != DM_IMAGE_OPENCV)
        return dm_fail(DM_ERR_ARGUMENT, "%d is not an image convention (DM_IMAGE_PIL or DM_IMAGE_OPENCV)",
                       (int)convention);
    if (channels != 1 && channels != 3)
        return dm_fail(DM_ERR_ARGUMENT, "images load as 1 or 3 channels, not %d", channels);
    int opencv = convention == DM_IMAGE_OPENCV;
    if (opencv && channels != 3)
        return dm_fail(DM_ERR_ARGUMENT, "images load as 3 channels in OpenCV's convention (IMREAD_COLOR), not %d",
                       channels);
    if (max_pixels < 1 || max_pixels > DM_IMAGE_MAX_PIXELS)
        return dm_fail(DM_ERR_ARGUMENT, "a pixel limit of %lld is outside 1 .. %d", (long long)max_pixels,
                       DM_IMAGE_MAX_PIXELS);
    if (size == 0) return dm_fail(DM_ERR_FORMAT, "empty file");
    if (size > INT_MAX) return dm_fail(DM_ERR_FORMAT, "file of %zu bytes is too large for the image decoder", size);
    uint8_t *decoded = NULL;
    int w = 0, h = 0, n = 0, orientation = 0;
    if (dm_is_jpeg(data, size) || dm_is_webp(data, size)) {
        dm_image image;
        dm_status st = dm_is_jpeg(data, size) ? dm_jpeg_decode(data, size, max_pixels, opencv, &image, &orientation)
                                              : dm_webp_decode(data, size, max_pixels, opencv, &image);
        if (st) return st;
        decoded = image.pixels;
        w = image.width;
        h = image.height;
        n = image.channels;
    } else {
        dm_status st = stb_decode(data, size, max_pixels, !opencv, &decoded, &w, &h, &n);
        if (st) return st;
        as_references(data, size, opencv, decoded, w, h, n);
        /* stb_decode screened the chunks */
        if (opencv && dm_is_png(data, size)) orientation = dm_png_orientation(data, size);
    }
    size_t npix = (size_t)w * h;
    uint8_t *pixels = n == channels ? decoded : malloc(npix * channels);
    if (!pixels) {
        free(decoded);
        return dm_fail(DM_ERR_NOMEM, "out of memory for a %d x %d image", w, h);
    }
    if (pixels != decoded) {
        convert_pixels(decoded, n, pixels, channels, npix);
        free(decoded);
    }
    dm_image img = {.width = w, .height = h, .channels = channels, .pixels = pixels};
    dm_status st = dm_image_orient(&img, orientation);
    if (st == DM_OK) *out = img;
    else dm_image_free(&img);
    return st;
}

dm_status dm_image_load_memory_as(const void *data, size_t size, int channels, dm_image_convention convention,
                                  dm_image *out)
{
    return dm_image_load_memory_within(data, size, channels, DM_IMAGE_MAX_PIXELS, convention, out);
}

dm_status dm_image_load_memory(const void *data, size_t size, int channels, dm_image *out)
{
    return dm_image_load_memory_as(data, size, channels, DM_IMAGE_PIL, out);
}

dm_status dm_image_load_as(const char *path, int channels, dm_image_convention convention, dm_image *out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_image_load: out is NULL");
    *out = (dm_image){0};
    if (!path) return dm_fail(DM_ERR_ARGUMENT, "dm_image_load: path is NULL");
    char *data;
    size_t size;
    dm_status st = dm_read_input(path, INT_MAX, "image decoder", &data, &size);
    if (st == DM_OK) st = dm_image_load_memory_as(data, size, channels, convention, out);
    free(data);
    if (st != DM_OK) dm_error_prefix("%s: ", path);
    return st;
}

dm_status dm_image_load(const char *path, int channels, dm_image *out)
{
    return dm_image_load_as(path, channels, DM_IMAGE_PIL, out);
}

void dm_image_free(dm_image *image)
{
    if (!image) return;
    free(image->pixels);
    *image = (dm_image){0};
}

/* ------------------------------------------------------------ preprocess */

static const dm_preprocess imagenet_default = {
    .size = sizeof(dm_preprocess),
    .resize = 256,
    .crop = 224,
    .interpolation = DM_INTERP_BICUBIC,
    .channels = 3,
    .mean = {0.485f, 0.456f, 0.406f},
    .std = {0.229f, 0.224f, 0.225f},
};

/* A JSON number that is a whole number from 1 to 65536. */
static dm_status json_size(const dm_json *v, const char *key, int *out)
{
    if (!v) return DM_OK;
    if (v->type != DM_JSON_NUMBER || !v->is_integer || v->integer < 1 || v->integer > 65536)
        return dm_fail(DM_ERR_MODEL, "preprocess metadata: '%s' must be a size from 1 to 65536", key);
    *out = (int)v->integer;
    return DM_OK;
}

/* A JSON list of `channels` numbers. */
static dm_status json_channels(const dm_json *v, const char *key, int channels, float *out)
{
    if (!v) return DM_OK;
    if (v->type != DM_JSON_ARRAY || v->count != (size_t)channels)
        return dm_fail(DM_ERR_MODEL, "preprocess metadata: '%s' must be a list of %d numbers", key, channels);
    int i = 0;
    for (const dm_json *e = v->child; e; e = e->next) {
        if (e->type != DM_JSON_NUMBER)
            return dm_fail(DM_ERR_MODEL, "preprocess metadata: '%s' must be a list of %d numbers", key, channels);
        out[i++] = (float)e->number;
    }
    return DM_OK;
}

/* Apply the metadata's settings over the defaults in p. */
static dm_status parse_preprocess(const dm_json *root, int in_chans, dm_preprocess *p)
{
    if (root->type != DM_JSON_OBJECT) return dm_fail(DM_ERR_MODEL, "preprocess metadata is not a JSON object");
    dm_status st;
    if ((st = json_size(dm_json_get(root, "resize"), "resize", &p->resize)) != DM_OK ||
        (st = json_size(dm_json_get(root, "crop"), "crop", &p->crop)) != DM_OK ||
        (st = json_size(dm_json_get(root, "channels"), "channels", &p->channels)) != DM_OK)
        return st;
    if (p->channels != in_chans)
        return dm_fail(DM_ERR_MODEL, "preprocess metadata: channels %d, but the model takes %d", p->channels,
                       in_chans);
    const dm_json *interp = dm_json_get(root, "interpolation");
    if (interp) {
        if (interp->type == DM_JSON_STRING && !strcmp(interp->string, "bicubic"))
            p->interpolation = DM_INTERP_BICUBIC;
        else if (interp->type == DM_JSON_STRING && !strcmp(interp->string, "bilinear"))
            p->interpolation = DM_INTERP_BILINEAR;
        else
            return dm_fail(DM_ERR_MODEL, "preprocess metadata: interpolation must be \"bicubic\" or \"bilinear\"");
    }
    if ((st = json_channels(dm_json_get(root, "mean"), "mean", p->channels, p->mean)) != DM_OK ||
        (st = json_channels(dm_json_get(root, "std"), "std", p->channels, p->std)) != DM_OK)
        return st;
    for (int c = 0; c < p->channels; c++)
        if (!dm_normalization_ok(p->mean[c], p->std[c], 1.0f))
            return dm_fail(DM_ERR_MODEL, "preprocess metadata: 'std' must be positive, and with 'mean' give finite "
                                         "values (v - mean) / std for pixels v from 0 to 1");
    return DM_OK;
}

/* The model's preprocessing into a full-size struct. */
static dm_status model_preprocess(const dm_model *model, dm_preprocess *out)
{
    *out = imagenet_default;
    if (!model) return DM_OK;
    int in_chans = dm_model_config(model)->in_chans;
    if (in_chans == 1) {
        out->channels = 1;
        out->mean[0] = (0.485f + 0.456f + 0.406f) / 3;
        out->std[0] = (0.229f + 0.224f + 0.225f) / 3;
    } else if (in_chans != 3) {
        return dm_fail(DM_ERR_MODEL, "no image preprocessing for a model with %d input channels", in_chans);
    }
    const char *text = dm_model_metadata(model, "preprocess");
    if (!text) return DM_OK;
    char err[128];
    dm_json *root = dm_json_parse(text, strlen(text), err, sizeof err);
    if (!root && dm_json_out_of_memory(err)) return dm_fail(DM_ERR_NOMEM, "%s reading preprocess metadata", err);
    if (!root) return dm_fail(DM_ERR_MODEL, "preprocess metadata is not valid JSON: %s", err);
    dm_status st = parse_preprocess(root, in_chans, out);
    dm_json_free(root);
    return st;
}

dm_status dm_preprocess_default(const dm_model *model, dm_preprocess *out)
{
    dm_preprocess full;
    dm_status st = dm_struct_import(&full, sizeof full, out, DM_PREPROCESS_MIN_SIZE, "dm_preprocess");
    if (st != DM_OK) return st;
    st = model_preprocess(model, &full);
    if (st != DM_OK) full = (dm_preprocess){.size = sizeof full};
    dm_struct_export(out, &full, sizeof full);
    return st;
}

/* Size after the resize step, as torchvision's Resize computes it: the
 * shorter side becomes `resize`, the longer one int(resize * long / short),
 * which may pass what an int holds for a thin image (the caller refuses
 * sizes over 65536). */
static void resized_size(const dm_preprocess *p, int width, int height, int64_t *out_w, int64_t *out_h)
{
    *out_w = width;
    *out_h = height;
    if (p->resize > 0) {
        int shorter = width <= height ? width : height, longer = width <= height ? height : width;
        int64_t scaled = (int64_t)((double)((int64_t)p->resize * longer) / shorter);
        *out_w = width <= height ? p->resize : scaled;
        *out_h = width <= height ? scaled : p->resize;
    } else if (p->resize_h > 0 && p->resize_w > 0) {
        *out_w = p->resize_w;
        *out_h = p->resize_h;
    }
}

/* dm_preprocess_output_size() of settings already imported. */
static dm_status output_size(const dm_preprocess *p, int width, int height, int *out_h, int *out_w)
{
    if (p->channels != 1 && p->channels != 3)
        return dm_fail(DM_ERR_ARGUMENT, "preprocess: channels must be 1 or 3, not %d", p->channels);
    if (p->interpolation != DM_INTERP_BICUBIC && p->interpolation != DM_INTERP_BILINEAR)
        return dm_fail(DM_ERR_ARGUMENT, "preprocess: unknown interpolation %d", (int)p->interpolation);
    if (p->resize < 0 || p->resize > 65536 || p->resize_h < 0 || p->resize_h > 65536 || p->resize_w < 0 ||
        p->resize_w > 65536 || p->crop < 0 || p->crop > 65536)
        return dm_fail(DM_ERR_ARGUMENT, "preprocess: sizes must be from 0 to 65536");
    if (!p->resize && (p->resize_h > 0) != (p->resize_w > 0))
        return dm_fail(DM_ERR_ARGUMENT, "preprocess: resize_h %d and resize_w %d: an exact size needs both",
                       p->resize_h, p->resize_w);
    for (int c = 0; c < p->channels; c++)
        if (!dm_normalization_ok(p->mean[c], p->std[c], 1.0f))
            return dm_fail(DM_ERR_ARGUMENT, "preprocess: std must be positive, and with mean give finite values "
                                            "(v - mean) / std for pixels v from 0 to 1");
    if (width < 1 || height < 1 || width > 65536 || height > 65536)
        return dm_fail(DM_ERR_ARGUMENT, "preprocess: image size %d x %d out of range", width, height);
    int64_t w, h;
    resized_size(p, width, height, &w, &h);
    if (w > 65536 || h > 65536 || w * h > DM_IMAGE_MAX_PIXELS)
        return dm_fail(DM_ERR_ARGUMENT,
                       "preprocess: resizing %d x %d gives %lld x %lld, over the limit of 65536 a side and %d pixels",
                       width, height, (long long)w, (long long)h, DM_IMAGE_MAX_PIXELS);
    if (p->crop > w || p->crop > h)
        return dm_fail(DM_ERR_ARGUMENT, "preprocess: crop %d is larger than the resized image (%lld x %lld)",
                       p->crop, (long long)w, (long long)h);
    *out_h = p->crop ? p->crop : (int)h;
    *out_w = p->crop ? p->crop : (int)w;
    return DM_OK;
}

dm_status dm_preprocess_output_size(const dm_preprocess *settings, int width, int height, int *out_h, int *out_w)
{
    if (!out_h || !out_w) return dm_fail(DM_ERR_ARGUMENT, "dm_preprocess_output_size: NULL argument");
    dm_preprocess p;
    dm_status st = dm_struct_import(&p, sizeof p, settings, DM_PREPROCESS_MIN_SIZE, "dm_preprocess");
    return st != DM_OK ? st : output_size(&p, width, height, out_h, out_w);
}

/* torchvision's CenterCrop offset: int(round(extra / 2.0)), ties to even. */
static int center_offset(int extra)
{
    int half = extra / 2;
    return (extra % 2 && half % 2) ? half + 1 : half;
}

dm_status dm_image_preprocess(const dm_image *image, const dm_preprocess *settings, float *out)
{
    if (!image || !image->pixels || !out)
        return dm_fail(DM_ERR_ARGUMENT, "dm_image_preprocess: NULL argument");
    if (image->channels < 1 || image->channels > 4)
        return dm_fail(DM_ERR_ARGUMENT, "dm_image_preprocess: images have 1 to 4 channels, not %d", image->channels);
    dm_preprocess full;
    const dm_preprocess *p = &full;
    int oh = 0, ow = 0;
    dm_status st = dm_struct_import(&full, sizeof full, settings, DM_PREPROCESS_MIN_SIZE, "dm_preprocess");
    if (st == DM_OK) st = output_size(p, image->width, image->height, &oh, &ow);
    if (st != DM_OK) return st;
    int64_t resized_w, resized_h;
    resized_size(p, image->width, image->height, &resized_w, &resized_h);
    int rw = (int)resized_w, rh = (int)resized_h; /* at most 65536: output_size accepted them */
    int C = p->channels;
    size_t npix = (size_t)image->width * image->height, onpix = (size_t)oh * ow;
    uint8_t *converted = NULL, *window = malloc(onpix * C);
    const uint8_t *src = image->pixels;
    if (window && image->channels != C) {
        if ((converted = malloc(npix * C))) convert_pixels(image->pixels, image->channels, converted, C, npix);
        src = converted;
    }
    if (!window || !src) {
        free(window);
        return dm_fail(DM_ERR_NOMEM, "out of memory preprocessing a %d x %d image", image->width, image->height);
    }
    st = dm_resample(src, image->width, image->height, C, rw, rh, center_offset(rw - ow), center_offset(rh - oh),
                     ow, oh, p->interpolation, window);
    if (st == DM_OK) {
        /* ToTensor then Normalize, in float32 as torchvision computes them. */
        for (int c = 0; c < C; c++)
            for (size_t i = 0; i < onpix; i++)
                out[c * onpix + i] = ((float)window[i * C + c] / 255.0f - p->mean[c]) / p->std[c];
    }
    free(converted);
    free(window);
    return st;
}
