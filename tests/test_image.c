/* test_image.c - image decoding and preprocessing: the authors' evaluation
 * transform against PIL/torchvision's output, Pillow's resampling on cases
 * worked out by hand, grey conversion, and hostile files. */
#include "testutil.h"

#include <stb_image_write.h>

#include <jpeglib.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "damamba.h"
#include "image_check.h"
#include "internal_api.h"
#include "resample.h"

/* The ImageNet evaluation transform of two photographs, against the tensors
 * torchvision made of them; differences counted in 8-bit levels. */
START_TEST(preprocess_matches_torchvision)
{
    static const char *names[] = {"chelsea", "coffee"};
    char file[64];
    snprintf(file, sizeof file, "%s.png", names[_i]);
    dm_image img;
    ck_assert_msg(dm_image_load(test_path(file), 3, &img) == DM_OK, "%s", dm_last_error());
    dm_preprocess p = DM_PREPROCESS_INIT;
    ck_assert(dm_preprocess_default(NULL, &p) == DM_OK);
    int h, w;
    ck_assert(dm_preprocess_output_size(&p, img.width, img.height, &h, &w) == DM_OK);
    ck_assert_int_eq(h, 224);
    ck_assert_int_eq(w, 224);
    float *got = malloc(sizeof(float) * 3 * 224 * 224);
    ck_assert_msg(dm_image_preprocess(&img, &p, got) == DM_OK, "%s", dm_last_error());
    dm_tensor_file golden;
    test_open("preprocess.safetensors", &golden);
    size_t n;
    const float *want = test_f32(&golden, names[_i], &n);
    ck_assert_uint_eq(n, 3 * 224 * 224);
    double max_levels = 0, sum_levels = 0;
    size_t differing = 0;
    for (size_t i = 0; i < n; i++) {
        double levels = fabs((double)got[i] - want[i]) * p.std[i / (224 * 224)] * 255.0;
        if (!(levels <= max_levels)) max_levels = levels;
        sum_levels += levels;
        differing += levels > 0.5;
    }
    printf("%-10s %dx%d: max |diff| %.4f levels, mean %.6f levels, %zu of %zu values off by a level\n",
           names[_i], img.width, img.height, max_levels, sum_levels / n, differing, n);
    ck_assert_double_le(max_levels, 1.0 + 1e-3);
    ck_assert_double_lt(sum_levels / n, 0.1);
    free(got);
    dm_tensor_file_close(&golden);
    dm_image_free(&img);
}
END_TEST

/* Pillow's bilinear upscaling of the row [0, 255] to 4 pixels, by hand:
 * scale 0.5, support 1; output x has center (x + 0.5) / 2 and reads inputs
 * within 1 of it with weights 1 - |i + 0.5 - center|, normalized:
 * x=0: only input 0 -> 0; x=1: 0.75 / 0.25 -> 63.75 -> 64;
 * x=2: 0.25 / 0.75 -> 191.25 -> 191; x=3: only input 1 -> 255. */
START_TEST(resample_bilinear_by_hand)
{
    const uint8_t src[2] = {0, 255};
    uint8_t dst[4];
    ck_assert(dm_resample(src, 2, 1, 1, 4, 1, 0, 0, 4, 1, DM_INTERP_BILINEAR, dst) == DM_OK);
    ck_assert_int_eq(dst[0], 0);
    ck_assert_int_eq(dst[1], 64);
    ck_assert_int_eq(dst[2], 191);
    ck_assert_int_eq(dst[3], 255);
    /* The same along columns, and a window of it. */
    uint8_t col[2];
    ck_assert(dm_resample(src, 1, 2, 1, 1, 4, 0, 1, 1, 2, DM_INTERP_BILINEAR, col) == DM_OK);
    ck_assert_int_eq(col[0], 64);
    ck_assert_int_eq(col[1], 191);
}
END_TEST

/* Shrinking 4 -> 2 with bicubic: scale 2, support 4; output x has center
 * 2x + 1 and reads inputs 0..3 (the bounds clip to the image) with weights
 * cubic((i + 0.5 - center) / 2): for output 1 (center 3), i = 0..3 give
 * cubic(-1.25) = -0.0703125, cubic(-0.75) = 0.2265625, cubic(-0.25) =
 * 0.8671875, cubic(0.25) = 0.8671875, summing to 1.890625.  For the row
 * [0, 0, 0, 255]: 255 * 0.8671875 / 1.890625 = 116.96 -> 117; output 0
 * (center 1) weighs input 3 by cubic(1.25) < 0 -> clipped to 0. */
START_TEST(resample_bicubic_by_hand)
{
    const uint8_t src[4] = {0, 0, 0, 255};
    uint8_t dst[2];
    ck_assert(dm_resample(src, 4, 1, 1, 2, 1, 0, 0, 2, 1, DM_INTERP_BICUBIC, dst) == DM_OK);
    ck_assert_int_eq(dst[0], 0);
    ck_assert_int_eq(dst[1], 117);
}
END_TEST

/* Colour to grey as PIL's convert("L"), grey to RGB by repetition, alpha
 * dropped; then scaling and normalization. */
START_TEST(channel_conversion)
{
    /* 2 x 1 RGBA: (10, 200, 30) -> L = (10*19595 + 200*38470 + 30*7471 + 32768) >> 16 = 124;
     * (255, 255, 255) -> 255 (the weights sum to 65536). */
    uint8_t rgba[8] = {10, 200, 30, 7, 255, 255, 255, 0};
    dm_image img = {.width = 2, .height = 1, .channels = 4, .pixels = rgba};
    dm_preprocess p = {.size = sizeof(dm_preprocess), .interpolation = DM_INTERP_BILINEAR, .channels = 1, .mean = {0.5f}, .std = {0.25f}};
    float out[3 * 2];
    ck_assert_msg(dm_image_preprocess(&img, &p, out) == DM_OK, "%s", dm_last_error());
    ck_assert_float_eq(out[0], (124 / 255.0f - 0.5f) / 0.25f);
    ck_assert_float_eq(out[1], (1.0f - 0.5f) / 0.25f);
    uint8_t grey[2] = {0, 51};
    dm_image g = {.width = 1, .height = 2, .channels = 1, .pixels = grey};
    p = (dm_preprocess){.size = sizeof(dm_preprocess), .interpolation = DM_INTERP_BILINEAR, .channels = 3, .mean = {0, 0, 0}, .std = {1, 1, 1}};
    ck_assert(dm_image_preprocess(&g, &p, out) == DM_OK);
    for (int c = 0; c < 3; c++) {
        ck_assert_float_eq(out[2 * c], 0.0f);
        ck_assert_float_eq(out[2 * c + 1], 51 / 255.0f);
    }
}
END_TEST

/* torchvision's Resize(int) and CenterCrop arithmetic. */
START_TEST(output_sizes)
{
    dm_preprocess p = DM_PREPROCESS_INIT;
    ck_assert(dm_preprocess_default(NULL, &p) == DM_OK);
    int h, w;
    ck_assert(dm_preprocess_output_size(&p, 500, 375, &h, &w) == DM_OK);
    ck_assert(h == 224 && w == 224);
    p.crop = 0;
    ck_assert(dm_preprocess_output_size(&p, 500, 375, &h, &w) == DM_OK);
    ck_assert_int_eq(h, 256);
    ck_assert_int_eq(w, 341); /* int(256 * 500 / 375) = int(341.33) */
    p.resize = 0;
    p.resize_h = 800;
    p.resize_w = 1280;
    ck_assert(dm_preprocess_output_size(&p, 500, 375, &h, &w) == DM_OK);
    ck_assert(h == 800 && w == 1280);
    /* one side of an exact size alone says nothing: refused, not ignored */
    p.resize_w = 0;
    ck_assert_int_eq(dm_preprocess_output_size(&p, 500, 375, &h, &w), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "resize_h 800 and resize_w 0: an exact size needs both"));
    p = (dm_preprocess){.size = sizeof(dm_preprocess), .resize = 100, .crop = 101, .channels = 3, .std = {1, 1, 1}};
    ck_assert_int_eq(dm_preprocess_output_size(&p, 300, 200, &h, &w), DM_ERR_ARGUMENT);
    /* the longer side of a thin image grows past what an int holds */
    p.resize = 65536;
    p.crop = 28;
    ck_assert_int_eq(dm_preprocess_output_size(&p, 1, 65536, &h, &w), DM_ERR_ARGUMENT);
    ck_assert_msg(strstr(dm_last_error(), "resizing 1 x 65536 gives 65536 x 4294967296, over the limit"), "%s",
                  dm_last_error());
}
END_TEST

/* A PNG with the given IHDR size and no pixels: signature, IHDR with a
 * valid CRC, an IDAT holding an empty zlib stream, IEND. */
static size_t png_header(uint8_t *buf, uint32_t width, uint32_t height, uint8_t depth, uint8_t colour)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[17] = {'I', 'H', 'D', 'R'};
    for (int i = 0; i < 4; i++) {
        ihdr[4 + i] = (uint8_t)(width >> (24 - 8 * i));
        ihdr[8 + i] = (uint8_t)(height >> (24 - 8 * i));
    }
    ihdr[12] = depth;
    ihdr[13] = colour; /* 2 RGB, 6 RGBA */
    uint32_t crc = test_crc32(ihdr, sizeof ihdr);
    memcpy(buf, sig, 8);
    const uint8_t len[4] = {0, 0, 0, 13};
    memcpy(buf + 8, len, 4);
    memcpy(buf + 12, ihdr, 17);
    for (int i = 0; i < 4; i++) buf[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
    static const uint8_t idat[20] = {0, 0, 0, 8, 'I', 'D', 'A', 'T', 0x78, 0x9c, 0x03, 0x00,
                                     0x00, 0x00, 0x00, 0x01, 0x48, 0x06, 0x89, 0xd2};
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    memcpy(buf + 33, idat, sizeof idat);
    memcpy(buf + 53, iend, sizeof iend);
    return 65;
}

static void expect_failure(dm_status st, dm_status want, const char *text)
{
    ck_assert_msg(st == want, "status %s, expected %s (%s)", dm_status_string(st), dm_status_string(want),
                  dm_last_error());
    ck_assert_msg(strstr(dm_last_error(), text) != NULL, "message '%s' lacks '%s'", dm_last_error(), text);
    printf("rejected: %s\n", dm_last_error());
}

/* Collects what stb_image_write writes. */
typedef struct encoded {
    uint8_t data[65536];
    size_t size;
} encoded;

static void collect(void *ctx, void *data, int size)
{
    encoded *e = ctx;
    ck_assert_uint_le(e->size + (size_t)size, sizeof e->data);
    memcpy(e->data + e->size, data, (size_t)size);
    e->size += (size_t)size;
}

static void expect_pixels(const void *file, size_t size, int channels, const uint8_t *want, int w, int h,
                          int tolerance, const char *what)
{
    dm_image img;
    ck_assert_msg(dm_image_load_memory(file, size, channels, &img) == DM_OK, "%s: %s", what, dm_last_error());
    ck_assert_int_eq(img.width, w);
    ck_assert_int_eq(img.height, h);
    int worst = 0;
    for (int i = 0; i < w * h * channels; i++) {
        int d = abs((int)img.pixels[i] - want[i]);
        if (d > worst) worst = d;
    }
    printf("%-5s %dx%d, %d channel(s): largest difference %d levels\n", what, w, h, channels, worst);
    ck_assert_msg(worst <= tolerance, "%s: pixels differ by %d levels", what, worst);
    dm_image_free(&img);
}

/* Every format the loader reads gives back the pixels that were written
 * (within a few levels for JPEG, which is lossy). */
/* An image that cannot be decoded for want of memory is out of memory,
 * not corrupt: a 1024 x 1024 grey PNG (a 1 MB image, a few kB of file)
 * with 512 kB to spare. */
static int decode_under_limit(void *file)
{
    const encoded *e = file;
    dm_image img;
    dm_status st = dm_image_load_memory(e->data, e->size, 1, &img);
    if (st == DM_OK) dm_image_free(&img);
    return st == DM_ERR_NOMEM && strstr(dm_last_error(), "out of memory decoding a 1024 x 1024 image") ? 0
           : st == DM_OK                                                                            ? 1
                                                                                                    : 2;
}

START_TEST(decode_out_of_memory_is_not_corrupt)
{
    enum { SIDE = 1024 };
    uint8_t *grey = calloc(SIDE, SIDE);
    encoded *e = calloc(1, sizeof *e);
    ck_assert(stbi_write_png_to_func(collect, e, SIDE, SIDE, 1, grey, SIDE));
    int got = test_with_spare_memory(512 << 10, decode_under_limit, e);
    ck_assert_msg(got <= 0, "decoding under a memory limit %s", got == 1 ? "succeeded" : "failed, not as out of memory");
    free(grey);
    free(e);
}
END_TEST

START_TEST(every_format_decodes)
{
    enum { W = 7, H = 5 };
    uint8_t rgb[W * H * 3], grey[W * H];
    for (int i = 0; i < W * H; i++) {
        grey[i] = (uint8_t)(i * 7);
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = (uint8_t)(40 + 4 * i + 60 * c);
    }
    encoded e = {.size = 0};
    ck_assert(stbi_write_png_to_func(collect, &e, W, H, 3, rgb, W * 3));
    expect_pixels(e.data, e.size, 3, rgb, W, H, 0, "PNG");
    e.size = 0;
    ck_assert(stbi_write_bmp_to_func(collect, &e, W, H, 3, rgb));
    expect_pixels(e.data, e.size, 3, rgb, W, H, 0, "BMP");
    /* the same rows top-down, as a negative height says (its header size
     * had wrapped to 17 TB in the decode estimate) */
    size_t offset = e.data[10] | e.data[11] << 8, row = (W * 3 + 3) / 4 * 4;
    uint8_t flipped[H * row];
    for (int y = 0; y < H; y++) memcpy(flipped + y * row, e.data + offset + (H - 1 - y) * row, row);
    memcpy(e.data + offset, flipped, sizeof flipped);
    int32_t height = -H;
    memcpy(e.data + 22, &height, 4); /* little-endian, as the tests' hosts */
    expect_pixels(e.data, e.size, 3, rgb, W, H, 0, "BMP top-down");
    e.size = 0;
    ck_assert(stbi_write_tga_to_func(collect, &e, W, H, 3, rgb));
    expect_pixels(e.data, e.size, 3, rgb, W, H, 0, "TGA");
    e.size = 0;
    ck_assert(stbi_write_jpg_to_func(collect, &e, W, H, 3, rgb, 100));
    expect_pixels(e.data, e.size, 3, rgb, W, H, 8, "JPEG");
    /* binary PPM and PGM */
    uint8_t pnm[64 + sizeof rgb];
    size_t head = (size_t)sprintf((char *)pnm, "P6\n# test\n%d %d\n255\n", W, H);
    memcpy(pnm + head, rgb, sizeof rgb);
    expect_pixels(pnm, head + sizeof rgb, 3, rgb, W, H, 0, "PPM");
    head = (size_t)sprintf((char *)pnm, "P5 %d %d 255\n", W, H);
    memcpy(pnm + head, grey, sizeof grey);
    expect_pixels(pnm, head + sizeof grey, 1, grey, W, H, 0, "PGM");
    /* a 1x1 GIF whose palette entry 0 is (10, 200, 30): clear code, 0, end */
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 10, 200, 30, 255, 255, 255,
                                  0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    static const uint8_t gif_pixel[3] = {10, 200, 30};
    expect_pixels(gif, sizeof gif, 3, gif_pixel, 1, 1, 0, "GIF");
}
END_TEST

/* A PNM whose maximum sample value is not 255 is scaled to 8 bits as Pillow
 * (9.1 on) reads it, in PIL's convention: min(255, round(v / max * 255)) with Python's round,
 * halves to even (values worked out in Python). */
START_TEST(pnm_max_value_as_pillow)
{
    static const uint8_t grey[] = "P5 6 1 6\n\x00\x01\x03\x05\x06\x07";
    static const uint8_t grey_want[] = {0, 42, 128, 212, 255, 255};
    expect_pixels(grey, sizeof grey - 1, 1, grey_want, 6, 1, 0, "PGM of maximum 6");
    static const uint8_t rgb[] = "P6\n2 1\n15\n\x00\x01\x07\x08\x0f\x10";
    static const uint8_t rgb_want[] = {0, 17, 119, 136, 255, 255};
    expect_pixels(rgb, sizeof rgb - 1, 3, rgb_want, 2, 1, 0, "PPM of maximum 15");
    /* OpenCV's imread keeps the samples as they are (it once scaled them too) */
    dm_image img;
    ck_assert_msg(dm_image_load_memory_within(rgb, sizeof rgb - 1, 3, 1 << 20, DM_IMAGE_OPENCV, &img) == DM_OK, "%s",
                  dm_last_error());
    ck_assert_int_eq(memcmp(img.pixels, "\x00\x01\x07\x08\x0f\x10", 6), 0);
    dm_image_free(&img);
    static const uint8_t zero[] = "P5 1 1 0\n\x00";
    expect_failure(dm_image_load_memory(zero, sizeof zero - 1, 1, &img), DM_ERR_FORMAT,
                   "corrupt PNM: a maximum sample value of 0");
}
END_TEST

/* dm_image_load_memory refusing images over max_pixels, as the server
 * decodes them (PIL's convention, three channels). */
static dm_status load_within(const void *data, size_t size, int64_t max_pixels, dm_image *img)
{
    return dm_image_load_memory_within(data, size, 3, max_pixels, DM_IMAGE_PIL, img);
}

/* A lower pixel limit (the server's) refuses an image from its header, in
 * every format; a GIF by its screen, which a 35-byte file can make 54
 * megapixels of background around a 1x1 image. */
START_TEST(pixel_limit_refuses_from_the_header)
{
    enum { W = 7, H = 5 };
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 5);
    encoded files[5] = {{.size = 0}};
    ck_assert(stbi_write_png_to_func(collect, &files[0], W, H, 3, rgb, W * 3));
    ck_assert(stbi_write_bmp_to_func(collect, &files[1], W, H, 3, rgb));
    ck_assert(stbi_write_tga_to_func(collect, &files[2], W, H, 3, rgb));
    ck_assert(stbi_write_jpg_to_func(collect, &files[3], W, H, 3, rgb, 90));
    files[4].size = (size_t)sprintf((char *)files[4].data, "P6 %d %d 255\n", W, H);
    memcpy(files[4].data + files[4].size, rgb, sizeof rgb);
    files[4].size += sizeof rgb;
    static const char *const names[5] = {"PNG", "BMP", "TGA", "JPEG", "PPM"};
    dm_image img;
    for (int f = 0; f < 5; f++) {
        ck_assert_msg(load_within(files[f].data, files[f].size, W * H, &img) == DM_OK, "%s: %s",
                      names[f], dm_last_error());
        ck_assert_int_eq(img.width * img.height, W * H);
        dm_image_free(&img);
        ck_assert_int_eq(load_within(files[f].data, files[f].size, W * H - 1, &img),
                         DM_ERR_FORMAT);
        ck_assert_ptr_null(img.pixels);
        ck_assert_msg(strstr(dm_last_error(), "7 x 5 pixels is over the limit of 34 pixels"), "%s: %s", names[f],
                      dm_last_error());
    }
    /* the 1x1 GIF of every_format_decodes on a screen of 30209 x 1792 */
    uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 0x01, 0x76, 0x00, 0x07, 0x80, 0, 0, 10, 200, 30, 255, 255, 255,
                     0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    ck_assert_int_eq(load_within(gif, sizeof gif, 1 << 20, &img), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "30209 x 1792 pixels is over the limit of 1048576"), "%s", dm_last_error());
    gif[6] = 1, gif[7] = 0, gif[8] = 1, gif[9] = 0; /* a 1 x 1 screen */
    ck_assert_msg(load_within(gif, sizeof gif, 1, &img) == DM_OK, "%s", dm_last_error());
    dm_image_free(&img);
    /* the limit itself must lie within the library's */
    ck_assert_int_eq(load_within(gif, sizeof gif, 0, &img), DM_ERR_ARGUMENT);
    ck_assert_int_eq(load_within(gif, sizeof gif, (int64_t)DM_IMAGE_MAX_PIXELS + 1, &img),
                     DM_ERR_ARGUMENT);
}
END_TEST

/* A file cut anywhere is refused: the decoder would fill what is missing
 * with zeros, or with whatever its buffers held before.  The whole file
 * decodes to the same pixels whatever the decoder's buffers held. */
static void expect_every_cut_refused(const uint8_t *file, size_t size, const char *what)
{
    dm_image img, poisoned;
    ck_assert_msg(dm_image_load_memory(file, size, 3, &img) == DM_OK, "%s: %s", what, dm_last_error());
    dm_image_alloc_fill = 0xA5;
    ck_assert_int_eq(dm_image_load_memory(file, size, 3, &poisoned), DM_OK);
    dm_image_alloc_fill = 0;
    ck_assert_int_eq(memcmp(img.pixels, poisoned.pixels, (size_t)img.width * img.height * 3), 0);
    dm_image_free(&poisoned);
    dm_image_free(&img);
    for (size_t cut = 1; cut < size; cut++) {
        uint8_t *copy = malloc(cut); /* exactly as long as the cut file, for ASan */
        memcpy(copy, file, cut);
        dm_status st = dm_image_load_memory(copy, cut, 3, &img);
        ck_assert_msg(st != DM_OK, "%s cut to %zu of %zu bytes was decoded", what, cut, size);
        ck_assert_ptr_null(img.pixels);
        free(copy);
    }
    printf("%-9s every cut of %zu bytes refused\n", what, size);
}

START_TEST(truncated_files)
{
    enum { W = 7, H = 5 };
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 37 / 3); /* runs and changes, for RLE */
    encoded e = {.size = 0};
    ck_assert(stbi_write_png_to_func(collect, &e, W, H, 3, rgb, W * 3));
    expect_every_cut_refused(e.data, e.size, "PNG");
    e.size = 0;
    ck_assert(stbi_write_bmp_to_func(collect, &e, W, H, 3, rgb));
    expect_every_cut_refused(e.data, e.size, "BMP");
    for (int rle = 0; rle < 2; rle++) {
        stbi_write_tga_with_rle = rle;
        e.size = 0;
        ck_assert(stbi_write_tga_to_func(collect, &e, W, H, 3, rgb));
        expect_every_cut_refused(e.data, e.size, rle ? "RLE TGA" : "TGA");
    }
    e.size = 0;
    ck_assert(stbi_write_jpg_to_func(collect, &e, W, H, 3, rgb, 90));
    expect_every_cut_refused(e.data, e.size, "JPEG");
    uint8_t pnm[64 + sizeof rgb];
    size_t head = (size_t)sprintf((char *)pnm, "P6\n%d %d\n255\n", W, H);
    memcpy(pnm + head, rgb, sizeof rgb);
    expect_every_cut_refused(pnm, head + sizeof rgb, "PPM");
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 10, 200, 30, 255, 255, 255,
                                  0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    /* Without its trailer (the last byte) the image is whole: that one loads. */
    expect_every_cut_refused(gif, sizeof gif - 1, "GIF");
    static const uint8_t no_image[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0, 0x3b};
    expect_failure(dm_image_load_memory(no_image, sizeof no_image, 3, &(dm_image){0}), DM_ERR_FORMAT,
                   "GIF without an image");
}
END_TEST

/* A JPEG frame far larger than its data (a valid 16 x 16 file whose frame
 * header claims 4096 x 4096) decodes as Pillow decodes it: the data's
 * blocks, and grey where there are none. */
START_TEST(jpeg_frame_larger_than_its_data)
{
    uint8_t rgb[16 * 16 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 7);
    encoded e = {.size = 0};
    ck_assert(stbi_write_jpg_to_func(collect, &e, 16, 16, 3, rgb, 90));
    size_t p = 2;
    while (p + 4 < e.size && !(e.data[p] == 0xFF && e.data[p + 1] == 0xC0)) p++;
    ck_assert_uint_lt(p + 9, e.size);
    e.data[p + 5] = e.data[p + 7] = 0x10; /* height, width: 0x1000 */
    e.data[p + 6] = e.data[p + 8] = 0x00;
    dm_image img;
    ck_assert_msg(dm_image_load_memory(e.data, e.size, 3, &img) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(img.width, 4096);
    ck_assert_int_eq(img.height, 4096);
    size_t grey = 0, n = (size_t)4096 * 4096 * 3;
    for (size_t i = 0; i < n; i++) grey += img.pixels[i] == 128;
    ck_assert_uint_gt(grey, n - 64 * 64 * 3);
    dm_image_free(&img);
}
END_TEST

/* w x h pixels of `components` interleaved bytes in `space` (JCS_RGB or
 * JCS_CMYK) as libjpeg writes them: quality 0 for libjpeg's default,
 * progressive for its ten-scan script (stb_image_write writes baseline
 * RGB only). */
static encoded libjpeg_write(const uint8_t *pixels, int w, int h, int components, J_COLOR_SPACE space, int quality,
                             int progressive)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *data = NULL;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &data, &size);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = space;
    jpeg_set_defaults(&c);
    if (quality) jpeg_set_quality(&c, quality, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(uintptr_t)(pixels + (size_t)c.next_scanline * w * components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    encoded e = {.size = 0};
    ck_assert_uint_le(size, sizeof e.data);
    memcpy(e.data, data, size);
    e.size = size;
    free(data);
    return e;
}

/* A w x h JPEG of a smooth RGB pattern, baseline or progressive. */
static encoded libjpeg_encode(int w, int h, int progressive)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w * 3; x++) rgb[(size_t)y * w * 3 + x] = (uint8_t)(x / 3 * 5 + y * 3 + x % 3 * 60);
    encoded e = libjpeg_write(rgb, w, h, 3, JCS_RGB, 0, progressive);
    free(rgb);
    return e;
}

/* A CMYK JPEG (an Adobe one, as libjpeg writes it) opens in Pillow as
 * inverted CMYK and converts to RGB as C, M, Y scaled by 1 - K and taken
 * from it, in 8-bit fixed point: stored (255, 128, 0, 200) gives (200, 100,
 * 0), stored (10, 20, 30, 40) gives (2, 3, 5), worked out by hand.  OpenCV
 * takes k - ((255 - c) k >> 8) for each of c, m, y and the stored k:
 * (200, 101, 1) and (2, 4, 5).  At quality 100 a block of one colour
 * decodes exactly. */
START_TEST(jpeg_cmyk_as_pillow_and_opencv)
{
    static const uint8_t stored[2][4] = {{255, 128, 0, 200}, {10, 20, 30, 40}};
    static const uint8_t pil_rgb[2][3] = {{200, 100, 0}, {2, 3, 5}}, opencv_rgb[2][3] = {{200, 101, 1}, {2, 4, 5}};
    uint8_t cmyk[8 * 16 * 4], want[8 * 16 * 3], want_opencv[8 * 16 * 3];
    for (int i = 0; i < 8 * 16; i++) {
        memcpy(cmyk + 4 * i, stored[i % 16 / 8], 4);
        memcpy(want + 3 * i, pil_rgb[i % 16 / 8], 3);
        memcpy(want_opencv + 3 * i, opencv_rgb[i % 16 / 8], 3);
    }
    encoded e = libjpeg_write(cmyk, 16, 8, 4, JCS_CMYK, 100, 0);
    expect_pixels(e.data, e.size, 3, want, 16, 8, 0, "CMYK JPEG");
    dm_image img;
    ck_assert(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK);
    ck_assert(img.width == 16 && img.height == 8 && !memcmp(img.pixels, want_opencv, sizeof want_opencv));
    dm_image_free(&img);
    /* OpenCV's convention is colour only (IMREAD_COLOR), and there are two */
    expect_failure(dm_image_load_memory_as(e.data, e.size, 1, DM_IMAGE_OPENCV, &img), DM_ERR_ARGUMENT,
                   "images load as 3 channels in OpenCV's convention (IMREAD_COLOR), not 1");
    expect_failure(dm_image_load_memory_as(e.data, e.size, 3, (dm_image_convention)2, &img), DM_ERR_ARGUMENT,
                   "2 is not an image convention");
}
END_TEST

/* The file with its first scan (SOS segment and data, up to the next scan)
 * written `repeats` more times, right after itself. */
static encoded repeat_first_scan(const encoded *jpeg, int repeats)
{
    size_t first = 0, next = 0;
    for (size_t i = 2; i + 1 < jpeg->size && !next; i++)
        if (jpeg->data[i] == 0xFF && jpeg->data[i + 1] == 0xDA) {
            if (first) next = i;
            else first = i;
        }
    ck_assert_uint_gt(next, 0);
    size_t scan = next - first;
    ck_assert_uint_le(jpeg->size + repeats * scan, sizeof(((encoded *)0)->data));
    encoded e = {.size = next};
    memcpy(e.data, jpeg->data, next);
    for (int r = 0; r < repeats; r++, e.size += scan) memcpy(e.data + e.size, jpeg->data + first, scan);
    memcpy(e.data + e.size, jpeg->data + next, jpeg->size - next);
    e.size += jpeg->size - next;
    return e;
}

/* A progressive JPEG decodes to the pixels of its baseline twin (the same
 * coefficients, sent in ten scans).  Repeating a scan costs a pass over the
 * whole image each time for a few bytes of file, so beyond
 * DM_IMAGE_MAX_JPEG_SCANS scans the file is refused; up to it, it loads. */
START_TEST(jpeg_scans)
{
    encoded baseline = libjpeg_encode(96, 64, 0), progressive = libjpeg_encode(96, 64, 1);
    dm_image want, got;
    ck_assert_msg(dm_image_load_memory(baseline.data, baseline.size, 3, &want) == DM_OK, "%s", dm_last_error());
    ck_assert_msg(dm_image_load_memory(progressive.data, progressive.size, 3, &got) == DM_OK, "%s",
                  dm_last_error());
    ck_assert_int_eq(got.width, 96);
    ck_assert_int_eq(got.height, 64);
    ck_assert_mem_eq(got.pixels, want.pixels, 96 * 64 * 3);
    dm_image_free(&got);
    int scans = 0;
    for (size_t i = 2; i + 1 < progressive.size; i++)
        scans += progressive.data[i] == 0xFF && progressive.data[i + 1] == 0xDA;
    ck_assert_int_eq(scans, 10);
    /* The first scan sets the DC coefficients' high bits, the same ones each
     * time it comes: repeated, it leaves the pixels as they were. */
    encoded most = repeat_first_scan(&progressive, DM_IMAGE_MAX_JPEG_SCANS - scans);
    ck_assert_msg(dm_image_load_memory(most.data, most.size, 3, &got) == DM_OK, "%s", dm_last_error());
    ck_assert_mem_eq(got.pixels, want.pixels, 96 * 64 * 3);
    dm_image_free(&got);
    encoded over = repeat_first_scan(&progressive, DM_IMAGE_MAX_JPEG_SCANS - scans + 1);
    expect_failure(dm_image_load_memory(over.data, over.size, 3, &got), DM_ERR_FORMAT,
                   "more than 100 scans, over the limit");
    ck_assert_ptr_null(got.pixels);
    dm_image_free(&want);
}
END_TEST

typedef struct decode_job {
    encoded file;
    dm_status status;
    atomic_int done;
} decode_job;

static void *decode_in_thread(void *arg)
{
    decode_job *job = arg;
    dm_image img;
    job->status = dm_image_load_memory(job->file.data, job->file.size, 3, &img);
    dm_image_free(&img);
    atomic_store(&job->done, 1);
    return NULL;
}

/* Decoders share twice DM_IMAGE_MAX_DECODE_BYTES: with all but 10 bytes
 * of it held, a JPEG (libjpeg-turbo) or a PNG (stb_image) waits, and
 * decodes once the memory is given back. */
START_TEST(decoders_share_their_memory)
{
    uint8_t rgb[16 * 16 * 3] = {0};
    static decode_job jobs[2];
    jobs[0].file = libjpeg_encode(16, 16, 1);
    jobs[1].file.size = 0;
    ck_assert(stbi_write_png_to_func(collect, &jobs[1].file, 16, 16, 3, rgb, 16 * 3));
    const size_t held = 2 * DM_IMAGE_MAX_DECODE_BYTES - 10;
    for (int j = 0; j < 2; j++) {
        dm_decode_memory_take(held);
        atomic_store(&jobs[j].done, 0);
        pthread_t thread;
        ck_assert_int_eq(pthread_create(&thread, NULL, decode_in_thread, &jobs[j]), 0);
        usleep(200 * 1000);
        ck_assert_msg(!atomic_load(&jobs[j].done), "%s decoded beside a full budget", j ? "PNG" : "JPEG");
        dm_decode_memory_give(held);
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        ck_assert_int_eq(jobs[j].status, DM_OK);
    }
}
END_TEST

/* Write a PNG chunk at out: length, type, data (which may already be in
 * place at out + 8), CRC.  Returns its size. */
static size_t png_chunk(uint8_t *out, const char *type, const uint8_t *data, size_t n)
{
    for (int i = 0; i < 4; i++) out[i] = (uint8_t)(n >> (24 - 8 * i));
    memcpy(out + 4, type, 4);
    if (n) memmove(out + 8, data, n);
    uint32_t crc = test_crc32(out + 4, 4 + n);
    for (int i = 0; i < 4; i++) out[8 + n + i] = (uint8_t)(crc >> (24 - 8 * i));
    return 12 + n;
}

/* A PNG of the given header, with a PLTE chunk of `entries` colours where
 * palette is not NULL, whose image data is `raw` (each row's filter byte
 * and samples) deflated, in buf of cap bytes. */
static size_t png_of(uint8_t *buf, size_t cap, uint32_t w, uint32_t h, uint8_t depth, uint8_t colour,
                     const uint8_t *palette, size_t entries, const uint8_t *raw, size_t raw_size)
{
    size_t n = png_header(buf, w, h, depth, colour) - 32; /* up to its IDAT chunk */
    if (palette) n += png_chunk(buf + n, "PLTE", palette, 3 * entries);
    uLongf packed = (uLongf)(cap - n - 24);
    ck_assert_int_eq(compress2(buf + n + 8, &packed, raw, (uLong)raw_size, 9), Z_OK);
    n += png_chunk(buf + n, "IDAT", buf + n + 8, packed);
    return n + png_chunk(buf + n, "IEND", NULL, 0);
}

/* A 1 x 1 grey PNG whose image data inflates to `inflated` zero bytes: its
 * one row (a filter byte and a sample) and zeros after it. */
static size_t png_inflating_to(uint8_t *buf, size_t cap, size_t inflated)
{
    uint8_t *raw = calloc(inflated, 1);
    size_t n = png_of(buf, cap, 1, 1, 8, 0, NULL, 0, raw, inflated);
    free(raw);
    return n;
}

/* The decoder inflates all of a PNG's data, doubling its buffer, whatever
 * the image needs (a 1 MB file of 1 x 1 pixels took 2 GB).  Data up to
 * twice the rows' bytes, plus 16 per row and 65,536, decodes: 65,556
 * bytes for this image's 2; a byte more is refused before decoding. */
START_TEST(png_data_beyond_the_image)
{
    uint8_t png[4096];
    dm_image img;
    size_t size = png_inflating_to(png, sizeof png, 65556);
    ck_assert_msg(dm_image_load_memory(png, size, 1, &img) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(img.width * img.height, 1);
    ck_assert_int_eq(img.pixels[0], 0);
    dm_image_free(&img);
    size = png_inflating_to(png, sizeof png, 65557);
    expect_failure(dm_image_load_memory(png, size, 1, &img), DM_ERR_FORMAT,
                   "corrupt PNG: its image data inflates to more than 65556 bytes, and its rows need 2");
}
END_TEST

/* A 64 x 64 GIF of palette entry 0, (10, 200, 30), whose LZW data is a
 * clear code, code 0 (one pixel), then `chain` codes each naming the entry
 * it makes, one pixel longer than the last (2, 3, ... pixels), and the end
 * code; code widths grow as the decoder's table does. */
static size_t gif_of_chains(uint8_t *out, int chain)
{
    static const uint8_t head[] = {'G', 'I', 'F', '8', '9', 'a', 64, 0, 64, 0, 0x80, 0, 0, 10, 200, 30, 255, 255,
                                   255, 0x2c, 0, 0, 0, 0, 64, 0, 64, 0, 0, 2};
    memcpy(out, head, sizeof head);
    uint8_t lzw[8192];
    size_t n = 0;
    uint32_t bits = 0;
    unsigned valid = 0, width = 3, avail = 6;
    for (int i = -2; i <= chain; i++) {
        unsigned code = i == -2 ? 4 : i == -1 ? 0 : i == chain ? 5 : avail; /* clear, 0, chains, end */
        bits |= code << valid;
        for (valid += width; valid >= 8; valid -= 8, bits >>= 8) lzw[n++] = (uint8_t)bits;
        if (i >= 0 && i < chain && (++avail & ((1u << width) - 1)) == 0 && avail <= 0xFFF) width++;
    }
    if (valid) lzw[n++] = (uint8_t)bits;
    size_t size = sizeof head;
    for (size_t p = 0; p < n; p += 255) { /* sub-blocks */
        size_t len = n - p < 255 ? n - p : 255;
        out[size++] = (uint8_t)len;
        memcpy(out + size, lzw + p, len);
        size += len;
    }
    out[size++] = 0;
    out[size++] = 0x3b;
    return size;
}

/* The decoder walks each code's whole chain, even past the image's last
 * pixel: 60 kB of such codes took 27 s for 64 x 64 pixels.  Codes that
 * stand for up to four times the pixels, plus 65,536, decode (403 chains:
 * 81,810 of 81,920); one chain more is refused before decoding. */
START_TEST(gif_codes_beyond_the_image)
{
    uint8_t gif[8192];
    size_t size = gif_of_chains(gif, 403);
    dm_image img;
    ck_assert_msg(dm_image_load_memory(gif, size, 3, &img) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(img.width * img.height, 64 * 64);
    for (int i = 0; i < 64 * 64; i++) {
        ck_assert_int_eq(img.pixels[3 * i], 10);
        ck_assert_int_eq(img.pixels[3 * i + 1], 200);
        ck_assert_int_eq(img.pixels[3 * i + 2], 30);
    }
    dm_image_free(&img);
    size = gif_of_chains(gif, 404);
    expect_failure(dm_image_load_memory(gif, size, 3, &img), DM_ERR_FORMAT,
                   "corrupt GIF: its compressed data stands for more than 81920 pixels, and the image has 4096");
}
END_TEST

/* A PNG of 16-bit grey samples, one row of w (stb_image_write writes 8
 * bits only). */
static encoded png_grey_16(const uint16_t *samples, int w)
{
    uint8_t raw[1 + 2 * 64] = {0}; /* filter byte 0: none */
    ck_assert_int_le(w, 64);
    for (int i = 0; i < w; i++) raw[1 + 2 * i] = (uint8_t)(samples[i] >> 8), raw[2 + 2 * i] = (uint8_t)samples[i];
    encoded e;
    e.size = png_of(e.data, sizeof e.data, (uint32_t)w, 1, 16, 0, NULL, 0, raw, 1 + 2 * (size_t)w);
    return e;
}

/* 16-bit samples become 8 bits as each reference does it: Pillow opens a
 * grey PNG of them as 32-bit integers and clips them at 255; OpenCV keeps
 * the high byte. */
START_TEST(png_grey_16_bits)
{
    static const uint16_t samples[6] = {0, 200, 255, 256, 1000, 65535};
    static const uint8_t pil[6] = {0, 200, 255, 255, 255, 255}, opencv[6] = {0, 0, 0, 1, 3, 255};
    encoded e = png_grey_16(samples, 6);
    dm_image img;
    for (int channels = 1; channels <= 3; channels += 2) {
        ck_assert_msg(dm_image_load_memory(e.data, e.size, channels, &img) == DM_OK, "%s", dm_last_error());
        for (int i = 0; i < 6 * channels; i++) ck_assert_int_eq(img.pixels[i], pil[i / channels]);
        dm_image_free(&img);
    }
    ck_assert(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK);
    for (int i = 0; i < 6 * 3; i++) ck_assert_int_eq(img.pixels[i], opencv[i / 3]);
    dm_image_free(&img);
}
END_TEST

/* A GIF of a 6 x 4 screen with a palette of four colours, background
 * index 1, transparent index 3 and a 3 x 2 image at (2, 1) of indices
 * 0 1 2 / 3 3 0, its codes 9 bits wide as a clear code keeps them. */
static size_t gif_framed(uint8_t *out)
{
    static const uint8_t head[] = {'G', 'I', 'F', '8', '9', 'a', 6, 0, 4, 0, 0x81, 1, 0,
                                   10, 20, 30, 200, 100, 50, 0, 255, 0, 7, 8, 9, /* palette */
                                   0x21, 0xF9, 4, 1, 0, 0, 3, 0,                 /* transparent index 3 */
                                   0x2C, 2, 0, 1, 0, 3, 0, 2, 0, 0, 8};          /* image at (2, 1), 3 x 2 */
    static const unsigned codes[] = {256, 0, 1, 2, 3, 3, 0, 257};
    memcpy(out, head, sizeof head);
    size_t n = sizeof head, start = n++;
    uint32_t bits = 0;
    unsigned valid = 0;
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        for (bits |= codes[i] << valid, valid += 9; valid >= 8; valid -= 8, bits >>= 8) out[n++] = (uint8_t)bits;
    if (valid) out[n++] = (uint8_t)bits;
    out[start] = (uint8_t)(n - start - 1); /* one sub-block */
    out[n++] = 0;
    out[n++] = 0x3B;
    return n;
}

/* Pillow fills a GIF's canvas with the transparent index before drawing
 * the first image, and shows every index in its palette colour: stb_image
 * left the transparent pixels and the rest of the screen black or the
 * background colour. */
START_TEST(gif_as_pillow)
{
    static const uint8_t palette[4][3] = {{10, 20, 30}, {200, 100, 50}, {0, 255, 0}, {7, 8, 9}};
    static const uint8_t index[4][6] = {{3, 3, 3, 3, 3, 3}, {3, 3, 0, 1, 2, 3}, {3, 3, 3, 3, 0, 3}, {3, 3, 3, 3, 3, 3}};
    uint8_t gif[128];
    size_t size = gif_framed(gif);
    ck_assert_uint_le(size, sizeof gif);
    dm_image img;
    ck_assert_msg(dm_image_load_memory(gif, size, 3, &img) == DM_OK, "%s", dm_last_error());
    ck_assert(img.width == 6 && img.height == 4);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++)
            ck_assert_msg(!memcmp(img.pixels + (y * 6 + x) * 3, palette[index[y][x]], 3), "pixel (%d, %d)", y, x);
    dm_image_free(&img);
}
END_TEST

/* An 8-bit palette BMP of w x 1 pixels of the given indices whose palette
 * has `entries` colours of `entry` bytes each (3 after OS/2's 12-byte
 * header, else 4 after a 40-byte one that counts them).  Returns its size. */
static size_t bmp_indexed(uint8_t *out, int os2, const uint8_t *palette, size_t entries, const uint8_t *index,
                          size_t w, unsigned bpp)
{
    size_t header = os2 ? 12 : 40, entry = os2 ? 3 : 4, offset = 14 + header + entry * entries;
    size_t row = (w * bpp + 31) / 32 * 4, size = offset + row;
    memset(out, 0, size);
    out[0] = 'B', out[1] = 'M', out[2] = (uint8_t)size, out[3] = (uint8_t)(size >> 8);
    out[10] = (uint8_t)offset, out[11] = (uint8_t)(offset >> 8), out[14] = (uint8_t)header;
    if (os2) {
        out[18] = (uint8_t)w, out[20] = 1, out[22] = 1, out[24] = (uint8_t)bpp;
    } else {
        out[18] = (uint8_t)w, out[22] = 1, out[26] = 1, out[28] = (uint8_t)bpp;
        out[46] = (uint8_t)entries, out[47] = (uint8_t)(entries >> 8); /* colours used */
    }
    for (size_t i = 0; i < entries; i++) /* BGR(X) */
        for (int c = 0; c < 3; c++) out[14 + header + i * entry + c] = palette[3 * i + 2 - c];
    for (size_t x = 0; x < w; x++) { /* bpp of 1 or 8 */
        if (bpp == 8) out[offset + x] = index[x];
        else out[offset + x / 8] |= (uint8_t)(index[x] << (7 - x % 8));
    }
    return size;
}

/* A GIF of w x 1 pixels of the given indices (each below 16), its screen's
 * table of `entries` colours, LZW codes of 5 bits. */
static size_t gif_indexed(uint8_t *out, const uint8_t *palette, unsigned entries, const uint8_t *index, size_t w)
{
    unsigned bits_of_size = 0;
    while ((2u << bits_of_size) < entries) bits_of_size++;
    const uint8_t head[13] = {'G', 'I', 'F', '8', '9', 'a', (uint8_t)w, 0, 1, 0, (uint8_t)(0x80 | bits_of_size), 0, 0};
    memcpy(out, head, 13);
    size_t n = 13;
    memcpy(out + n, palette, 3 * entries);
    n += 3 * entries;
    const uint8_t image[11] = {0x2C, 0, 0, 0, 0, (uint8_t)w, 0, 1, 0, 0, 4};
    memcpy(out + n, image, 11);
    n += 11;
    size_t start = n++;
    uint32_t bits = 0;
    unsigned valid = 0;
    /* a clear code before each index keeps the codes 5 bits wide */
    for (size_t i = 0; i <= w; i++) {
        unsigned codes[2] = {16, i < w ? index[i] : 17};
        for (int k = 0; k < 2 - (i == w); k++)
            for (bits |= (i == w ? 17u : codes[k]) << valid, valid += 5; valid >= 8; valid -= 8, bits >>= 8)
                out[n++] = (uint8_t)bits;
    }
    if (valid) out[n++] = (uint8_t)bits;
    out[start] = (uint8_t)(n - start - 1);
    out[n++] = 0;
    out[n++] = 0x3B;
    return n;
}

/* Pixels of a palette image whose indices lie beyond its palette's
 * entries: Pillow shows index i as (i, i, i), the grey ramp its palettes
 * start from; OpenCV (libpng, and its own BMP reader) as black.  stb_image
 * took them from a stack array: what an earlier decoding left there.  So a
 * full palette of another colour is decoded first, then files of two
 * entries whose pixels are the indices 0, 1, 2 and 200.  Also OS/2 BMPs,
 * whose three-byte entries stb_image counted four short (all of a 1-bit
 * file's). */
START_TEST(palettes_completed_as_the_references)
{
    static uint8_t full[3 * 256], two[6] = {10, 20, 30, 200, 100, 50};
    for (int i = 0; i < 256; i++) full[3 * i] = 171, full[3 * i + 1] = 205, full[3 * i + 2] = 239;
    const uint8_t index[4] = {0, 1, 2, 200}, raw[5] = {0, 0, 1, 2, 200};
    uint8_t pil[12], cv[12];
    for (int x = 0; x < 4; x++)
        for (int c = 0; c < 3; c++) {
            pil[3 * x + c] = index[x] < 2 ? two[3 * index[x] + c] : index[x];
            cv[3 * x + c] = index[x] < 2 ? two[3 * index[x] + c] : 0;
        }
    static uint8_t file[4096];
    for (int format = 0; format < 3; format++) {
        const char *name = (const char *[]){"PNG", "BMP", "GIF"}[format];
        size_t size;
        for (int pass = 0; pass < 2; pass++) {
            const uint8_t *palette = pass ? two : full;
            size_t entries = pass ? 2 : 256;
            if (format == 0) size = png_of(file, sizeof file, 4, 1, 8, 3, palette, entries, raw, sizeof raw);
            else if (format == 1) size = bmp_indexed(file, 0, palette, entries, index, 4, 8);
            else size = gif_indexed(file, palette, pass ? 2 : 16, (const uint8_t[]){0, 1, 2, 13}, 4);
            dm_image img;
            ck_assert_msg(dm_image_load_memory(file, size, 3, &img) == DM_OK, "%s: %s", name, dm_last_error());
            if (pass && format == 2) { /* codes of 5 bits reach index 13 at most */
                static const uint8_t want[12] = {10, 20, 30, 200, 100, 50, 2, 2, 2, 13, 13, 13};
                ck_assert_msg(!memcmp(img.pixels, want, 12), "GIF: indices beyond its table");
            } else if (pass) {
                ck_assert_msg(!memcmp(img.pixels, pil, 12), "%s: indices beyond the palette as Pillow shows them",
                              name);
            }
            dm_image_free(&img);
        }
        if (format == 2) continue; /* OpenCV reads no GIF */
        dm_image img;
        ck_assert_msg(dm_image_load_memory_as(file, size, 3, DM_IMAGE_OPENCV, &img) == DM_OK, "%s", dm_last_error());
        ck_assert_msg(!memcmp(img.pixels, cv, 12), "%s: indices beyond the palette as OpenCV shows them", name);
        dm_image_free(&img);
    }
    /* OS/2: 1 bit of two entries, 8 bits of 256 (the last one used) */
    static uint8_t ramp[3 * 256];
    for (int i = 0; i < 256; i++) ramp[3 * i] = (uint8_t)i, ramp[3 * i + 1] = (uint8_t)(255 - i), ramp[3 * i + 2] = 7;
    for (unsigned bpp = 1; bpp <= 8; bpp += 7) {
        const uint8_t os2_index[2] = {bpp == 1 ? 1 : 255, 0};
        size_t size = bmp_indexed(file, 1, bpp == 1 ? two : ramp, bpp == 1 ? 2 : 256, os2_index, 2, bpp);
        dm_image img;
        ck_assert_msg(dm_image_load_memory(file, size, 3, &img) == DM_OK, "OS/2 BMP: %s", dm_last_error());
        const uint8_t *palette = bpp == 1 ? two : ramp;
        ck_assert_msg(!memcmp(img.pixels, palette + 3 * os2_index[0], 3) && !memcmp(img.pixels + 3, palette, 3),
                      "OS/2 BMP of %u bits: its palette's colours", bpp);
        dm_image_free(&img);
    }
}
END_TEST

/* A 1 x 1 BMP of 16 bits per pixel: 5-5-5 without masks (compression 0),
 * or with the three masks given (bit fields). */
static size_t bmp_16(uint8_t *out, uint16_t pixel, const uint32_t *masks)
{
    size_t header = 14 + 40 + (masks ? 12 : 0), size = header + 4;
    memset(out, 0, size);
    out[0] = 'B', out[1] = 'M', out[2] = (uint8_t)size, out[10] = (uint8_t)header;
    out[14] = 40, out[18] = 1, out[22] = 1, out[26] = 1, out[28] = 16, out[30] = masks ? 3 : 0, out[34] = 4;
    for (int m = 0; masks && m < 3; m++)
        for (int i = 0; i < 4; i++) out[54 + 4 * m + i] = (uint8_t)(masks[m] >> (8 * i));
    out[header] = (uint8_t)pixel, out[header + 1] = (uint8_t)(pixel >> 8);
    return size;
}

/* 16-bit BMP fields widen to 8 bits as each reference widens them: Pillow
 * as v * 255 / 31 (or / 63 for 6 bits), truncated; OpenCV by a shift.
 * 5-5-5 (1, 16, 31) gives (8, 131, 255) and (8, 128, 248); 5-6-5
 * (30, 33, 2) gives (246, 133, 16) and (240, 132, 16). */
START_TEST(bmp_16_bits)
{
    static const uint32_t masks_555[3] = {0x7C00, 0x3E0, 0x1F}, masks_565[3] = {0xF800, 0x7E0, 0x1F};
    const struct {
        uint16_t pixel;
        const uint32_t *masks;
        uint8_t pil[3], opencv[3];
    } cases[] = {{1 << 10 | 16 << 5 | 31, NULL, {8, 131, 255}, {8, 128, 248}},
                 {1 << 10 | 16 << 5 | 31, masks_555, {8, 131, 255}, {8, 128, 248}},
                 {30 << 11 | 33 << 5 | 2, masks_565, {246, 133, 16}, {240, 132, 16}}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        uint8_t bmp[80];
        size_t size = bmp_16(bmp, cases[c].pixel, cases[c].masks);
        for (int opencv = 0; opencv <= 1; opencv++) {
            dm_image img;
            ck_assert_msg(dm_image_load_memory_as(bmp, size, 3, opencv ? DM_IMAGE_OPENCV : DM_IMAGE_PIL, &img) ==
                              DM_OK, "%s", dm_last_error());
            const uint8_t *want = opencv ? cases[c].opencv : cases[c].pil;
            ck_assert_msg(!memcmp(img.pixels, want, 3), "case %zu, %s: (%d, %d, %d)", c, opencv ? "OpenCV" : "PIL",
                          img.pixels[0], img.pixels[1], img.pixels[2]);
            dm_image_free(&img);
        }
    }
}
END_TEST

/* A TGA whose descriptor says right to left (bit 4) is mirrored, as Pillow
 * mirrors it; one whose colour map starts past entry 0, which stb_image
 * would read from the wrong place, is refused as such. */
START_TEST(tga_right_to_left_and_map_start)
{
    enum { W = 5, H = 3 };
    uint8_t rgb[W * H * 3], mirrored[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 11);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) memcpy(mirrored + (y * W + x) * 3, rgb + (y * W + W - 1 - x) * 3, 3);
    stbi_write_tga_with_rle = 0;
    encoded e = {.size = 0};
    ck_assert(stbi_write_tga_to_func(collect, &e, W, H, 3, rgb));
    stbi_write_tga_with_rle = 1;
    e.data[17] |= 0x10;
    expect_pixels(e.data, e.size, 3, mirrored, W, H, 0, "TGA right to left");
    /* 2 x 1 pixels of indices 2 and 3 into a map of entries 2 and 3 */
    static const uint8_t mapped[] = {0, 1, 1, 2, 0, 2, 0, 24, 0, 0, 0, 0, 2, 0, 1, 0, 8, 0,
                                     1, 2, 3, 4, 5, 6, 2, 3};
    dm_image img;
    expect_failure(dm_image_load_memory(mapped, sizeof mapped, 3, &img), DM_ERR_FORMAT,
                   "unsupported TGA: its colour map starts at entry 2; only maps from entry 0 are read");
}
END_TEST

/* A GIF whose first image lies beyond its screen (of 1 x 1, 0 x 0, or
 * 3 x 2 with the image one pixel to the right) was refused as a "bad
 * Image Descriptor"; Pillow widens its canvas to hold the image, filled
 * with index 0 (values from Pillow 9.4, the file written by it). */
START_TEST(gif_image_beyond_its_screen)
{
    static const uint8_t gif[] = {0x47, 0x49, 0x46, 0x38, 0x37, 0x61, 0x03, 0x00, 0x02, 0x00, 0x81, 0x00, 0x00,
                                  0x0a, 0x14, 0x1e, 0xc8, 0x64, 0x32, 0x00, 0xff, 0x00, 0x09, 0x09, 0x09, 0x2c,
                                  0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x08, 0x09, 0x00, 0x01,
                                  0x04, 0x10, 0x30, 0x20, 0x00, 0x80, 0x80, 0x00, 0x3b};
    static const uint8_t want[] = {10, 20, 30, 200, 100, 50, 0, 255, 0, 9, 9, 9, 200, 100, 50, 10, 20, 30};
    static const uint8_t want_moved[] = {10, 20, 30, 10, 20, 30, 200, 100, 50, 0, 255, 0,
                                         10, 20, 30, 9, 9, 9, 200, 100, 50, 10, 20, 30};
    uint8_t file[sizeof gif];
    expect_pixels(gif, sizeof gif, 3, want, 3, 2, 0, "GIF as written");
    for (int screen = 0; screen <= 1; screen++) {
        memcpy(file, gif, sizeof gif);
        file[6] = file[8] = (uint8_t)screen;
        expect_pixels(file, sizeof file, 3, want, 3, 2, 0, screen ? "GIF, screen 1 x 1" : "GIF, screen 0 x 0");
    }
    memcpy(file, gif, sizeof gif);
    file[26] = 1; /* the image descriptor's left edge */
    expect_pixels(file, sizeof file, 3, want_moved, 4, 2, 0, "GIF, image moved past the screen");
}
END_TEST

/* A colour-mapped TGA's index beyond its map took entry 0; Pillow shows
 * the grey ramp (values from Pillow 9.4): 3 x 1 pixels of indices 0, 1
 * and 5 into a map of two entries of 24 bits, of 16 bits, and run-length
 * coded (a raw packet of three). */
START_TEST(tga_index_beyond_the_map)
{
    static const uint8_t map24[] = {0, 1, 1, 0, 0, 2, 0, 24, 0, 0, 0, 0, 3, 0, 1, 0, 8, 0,
                                    30, 20, 10, 60, 50, 40, 0, 1, 5};
    static const uint8_t map16[] = {0, 1, 1, 0, 0, 2, 0, 16, 0, 0, 0, 0, 3, 0, 1, 0, 8, 0,
                                    0x00, 0x7c, 0xe0, 0x03, 0, 1, 5};
    static const uint8_t rle[] = {0, 1, 9, 0, 0, 2, 0, 24, 0, 0, 0, 0, 3, 0, 1, 0, 8, 0,
                                  30, 20, 10, 60, 50, 40, 2, 0, 1, 5};
    static const uint8_t want24[] = {10, 20, 30, 40, 50, 60, 5, 5, 5}, want16[] = {255, 0, 0, 0, 255, 0, 5, 5, 5};
    expect_pixels(map24, sizeof map24, 3, want24, 3, 1, 0, "TGA, 24-bit map");
    expect_pixels(map16, sizeof map16, 3, want16, 3, 1, 0, "TGA, 16-bit map");
    expect_pixels(rle, sizeof rle, 3, want24, 3, 1, 0, "TGA, run-length, 24-bit map");
}
END_TEST

/* ---------------------------------------------------- EXIF orientation */

/* TIFF-format EXIF data as cameras write it, little- or big-endian: IFD0
 * holds a Make string of 6 bytes (stored past the directory, at byte 38,
 * when make_at says so; no Make when it is 0) and then the orientation, a
 * SHORT.  Returns its size: 44 with a Make, 32 without. */
static size_t exif_tiff(uint8_t *out, int little, int orientation, uint32_t make_at)
{
    size_t n = 0;
#define PUT16(v) (little ? (out[n] = (uint8_t)(v), out[n + 1] = (uint8_t)((v) >> 8)) \
                         : (out[n] = (uint8_t)((v) >> 8), out[n + 1] = (uint8_t)(v)), n += 2)
#define PUT32(v) (little ? (PUT16((v) & 0xFFFF), PUT16((uint32_t)(v) >> 16)) \
                         : (PUT16((uint32_t)(v) >> 16), PUT16((v) & 0xFFFF)))
    out[n++] = little ? 'I' : 'M';
    out[n++] = little ? 'I' : 'M';
    PUT16(42);
    PUT32(8);           /* IFD0 right after the header */
    PUT16(make_at ? 2 : 1);
    if (make_at) {
        PUT16(0x010F); /* Make, ASCII, 6 bytes at make_at */
        PUT16(2);
        PUT32(6);
        PUT32(make_at);
    }
    PUT16(0x0112); /* Orientation, SHORT, 1 value */
    PUT16(3);
    PUT32(1);
    PUT16(orientation);
    PUT16(0);
    PUT32(0); /* no IFD1 */
    memcpy(out + n, "Maker", 6);
    n += 6;
#undef PUT32
#undef PUT16
    return n;
}

/* A JPEG's bytes with APP1 segments inserted after its SOI: each of the
 * `count` payloads gets the 6 bytes of `header` ("Exif\0\0" or an XMP
 * namespace's first 6) in front. */
static encoded jpeg_with_app1(const encoded *jpeg, const char *const *headers, const uint8_t *const *payloads,
                              const size_t *sizes, int count)
{
    encoded e = {.size = 2};
    memcpy(e.data, jpeg->data, 2);
    for (int i = 0; i < count; i++) {
        size_t len = 2 + 6 + sizes[i];
        ck_assert_uint_le(e.size + 2 + len + jpeg->size, sizeof e.data);
        uint8_t *p = e.data + e.size;
        p[0] = 0xFF, p[1] = 0xE1, p[2] = (uint8_t)(len >> 8), p[3] = (uint8_t)len;
        memcpy(p + 4, headers[i], 6);
        memcpy(p + 10, payloads[i], sizes[i]);
        e.size += 2 + len;
    }
    memcpy(e.data + e.size, jpeg->data + 2, jpeg->size - 2);
    e.size += jpeg->size - 2;
    return e;
}

static const char exif_header[6] = "Exif\0";

static encoded jpeg_oriented(const encoded *jpeg, int little, int orientation, uint32_t make_at)
{
    uint8_t tiff[64];
    const char *header = exif_header;
    const uint8_t *payload = tiff;
    size_t size = exif_tiff(tiff, little, orientation, make_at);
    return jpeg_with_app1(jpeg, &header, &payload, &size, 1);
}

/* Where the pixel at row y, column x of the upright image comes from in
 * the stored w x h one, by the EXIF specification's words for each tag:
 * 2 mirrored left to right, 3 turned half round, 4 mirrored top to
 * bottom, 5 mirrored along the main diagonal, 6 turned a quarter
 * clockwise, 7 mirrored along the other diagonal, 8 turned a quarter
 * anticlockwise. */
static void upright_source(int tag, int w, int h, int y, int x, int *sy, int *sx)
{
    switch (tag) {
    case 2: *sy = y, *sx = w - 1 - x; break;
    case 3: *sy = h - 1 - y, *sx = w - 1 - x; break;
    case 4: *sy = h - 1 - y, *sx = x; break;
    case 5: *sy = x, *sx = y; break;
    case 6: *sy = h - 1 - x, *sx = y; break;
    case 7: *sy = h - 1 - x, *sx = w - 1 - y; break;
    case 8: *sy = x, *sx = w - 1 - y; break;
    default: *sy = y, *sx = x; break;
    }
}

/* `turned` is `stored` as EXIF orientation `tag` turns it upright. */
static void expect_upright(const dm_image *stored, const dm_image *turned, int tag, const char *what)
{
    int w = stored->width, h = stored->height, c = stored->channels, swap = tag >= 5 && tag <= 8;
    ck_assert_msg(turned->width == (swap ? h : w) && turned->height == (swap ? w : h),
                  "%s: tag %d gives %d x %d from %d x %d", what, tag, turned->width, turned->height, w, h);
    for (int y = 0; y < turned->height; y++)
        for (int x = 0; x < turned->width; x++) {
            int sy, sx;
            upright_source(tag, w, h, y, x, &sy, &sx);
            ck_assert_msg(!memcmp(turned->pixels + ((size_t)y * turned->width + x) * c,
                                  stored->pixels + ((size_t)sy * w + sx) * c, (size_t)c),
                          "%s: tag %d, pixel (%d, %d)", what, tag, y, x);
        }
}

/* A JPEG's EXIF orientation turns it in OpenCV's convention, as OpenCV
 * turns it, for all eight tags, both byte orders, colour and grey files;
 * PIL's leaves it.  The pixels before turning are those of the file
 * without the tag. */
START_TEST(jpeg_exif_orientation)
{
    uint8_t grey[24 * 16];
    for (int i = 0; i < 24 * 16; i++) grey[i] = (uint8_t)(i * 7 % 251);
    encoded files[2] = {libjpeg_encode(24, 16, 0), libjpeg_write(grey, 24, 16, 1, JCS_GRAYSCALE, 0, 0)};
    for (int f = 0; f < 2; f++) {
        dm_image stored;
        ck_assert(dm_image_load_memory(files[f].data, files[f].size, 3, &stored) == DM_OK);
        for (int little = 0; little <= 1; little++)
            for (int tag = 0; tag <= 9; tag++) {
                encoded e = jpeg_oriented(&files[f], little, tag, 38);
                dm_image as_stored, turned;
                ck_assert_msg(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &turned) == DM_OK, "%s",
                              dm_last_error());
                ck_assert(dm_image_load_memory(e.data, e.size, 3, &as_stored) == DM_OK);
                expect_upright(&stored, &as_stored, 1, "without turning");
                expect_upright(&stored, &turned, tag, little ? "II" : "MM");
                dm_image_free(&as_stored);
                dm_image_free(&turned);
            }
        dm_image_free(&stored);
    }
}
END_TEST

/* The cases where OpenCV leaves a tagged JPEG as it is: the first APP1
 * segment is not the EXIF one (XMP written first); a Make entry before
 * the orientation points past the data, which ends OpenCV's reading of the
 * directory; the EXIF data is cut anywhere before the orientation's value.
 * None of these fails the decoding.  A file that turns is checked too. */
START_TEST(jpeg_exif_orientation_unread)
{
    encoded plain = libjpeg_encode(24, 16, 0);
    dm_image stored, img;
    ck_assert(dm_image_load_memory(plain.data, plain.size, 3, &stored) == DM_OK);

    uint8_t tiff[64];
    size_t size = exif_tiff(tiff, 1, 6, 38);
    const char *headers[2] = {"http:/", exif_header};
    const char xmp[] = "/ns.adobe.com/xap/1.0/";
    const uint8_t *payloads[2] = {(const uint8_t *)xmp, tiff};
    size_t sizes[2] = {sizeof xmp, size};
    encoded e = jpeg_with_app1(&plain, headers, payloads, sizes, 2);
    ck_assert(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK);
    expect_upright(&stored, &img, 1, "XMP first");
    dm_image_free(&img);
    e = jpeg_with_app1(&plain, headers + 1, payloads + 1, sizes + 1, 1);
    ck_assert(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK);
    expect_upright(&stored, &img, 6, "EXIF alone");
    dm_image_free(&img);

    e = jpeg_oriented(&plain, 0, 6, 40); /* the Make string's 6 bytes at 40, past the 44 there are */
    ck_assert(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK);
    expect_upright(&stored, &img, 1, "Make out of bounds");
    dm_image_free(&img);

    /* Without a Make, the orientation's value ends at byte 20 of the TIFF
     * data (header 8, count 2, then the entry's 12 of which the value is
     * bytes 8 and 9): shorter data leaves the image, longer turns it. */
    size = exif_tiff(tiff, 1, 6, 0);
    for (size_t cut = 0; cut <= size; cut++) {
        const uint8_t *payload = tiff;
        e = jpeg_with_app1(&plain, headers + 1, &payload, &cut, 1);
        ck_assert_msg(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK, "cut at %zu: %s", cut,
                      dm_last_error());
        expect_upright(&stored, &img, cut >= 20 ? 6 : 1, "cut");
        dm_image_free(&img);
    }
    dm_image_free(&stored);
}
END_TEST

/* A PNG file with an eXIf chunk of `tiff` (its CRC spoiled when bad_crc)
 * inserted before its image data or, when after_data, before IEND. */
static encoded png_with_exif(const encoded *png, const uint8_t *tiff, size_t size, int after_data, int bad_crc)
{
    size_t at = after_data ? png->size - 12 : 8 + 25; /* IEND's start, or past IHDR */
    encoded e = {.size = at};
    memcpy(e.data, png->data, at);
    e.size += png_chunk(e.data + at, "eXIf", tiff, size);
    if (bad_crc) e.data[e.size - 1] ^= 1;
    memcpy(e.data + e.size, png->data + at, png->size - at);
    e.size += png->size - at;
    return e;
}

static size_t chunk_length(const uint8_t *chunk)
{
    return (size_t)chunk[0] << 24 | (size_t)chunk[1] << 16 | (size_t)chunk[2] << 8 | chunk[3];
}

/* A PNG chunk with a wrong CRC-32 decoded silently, with a palette colour
 * wrong where a PLTE byte had flipped.  Each convention refuses it as its
 * reference does: Pillow any chunk before the image data, libpng (OpenCV)
 * a critical chunk. */
START_TEST(png_crcs_checked_as_each_reference_checks_them)
{
    static const uint8_t palette[6] = {10, 20, 30, 200, 100, 50}, raw[3] = {0, 0, 1};
    uint8_t plain[256];
    size_t n = png_of(plain, sizeof plain, 2, 1, 8, 3, palette, 2, raw, sizeof raw);
    /* a tEXt chunk after IHDR */
    encoded png = {.size = 8 + 25};
    memcpy(png.data, plain, png.size);
    png.size += png_chunk(png.data + png.size, "tEXt", (const uint8_t *)"k\0v", 3);
    memcpy(png.data + png.size, plain + 8 + 25, n - 8 - 25);
    png.size += n - 8 - 25;
    static const struct { const char *chunk; int pil_refuses, opencv_refuses; } cases[] = {
        {"IHDR", 1, 1}, {"tEXt", 1, 0}, {"PLTE", 1, 1}, {"IDAT", 0, 1}, {"IEND", 0, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        encoded e = png;
        size_t p = 8;
        while (memcmp(e.data + p + 4, cases[i].chunk, 4) != 0) p += 12 + chunk_length(e.data + p);
        e.data[p + 8 + chunk_length(e.data + p) + 3] ^= 1; /* the CRC's last byte */
        for (int opencv = 0; opencv <= 1; opencv++) {
            dm_image img;
            dm_status st = dm_image_load_memory_as(e.data, e.size, 3, opencv ? DM_IMAGE_OPENCV : DM_IMAGE_PIL, &img);
            int refuses = opencv ? cases[i].opencv_refuses : cases[i].pil_refuses;
            ck_assert_msg(st == (refuses ? DM_ERR_FORMAT : DM_OK), "%s, %s: %s", cases[i].chunk,
                          opencv ? "OpenCV" : "PIL", st ? dm_last_error() : "decoded");
            if (refuses) {
                char says[64];
                snprintf(says, sizeof says, "the %s chunk at byte %zu fails its CRC check", cases[i].chunk, p);
                ck_assert_msg(strstr(dm_last_error(), says), "%s", dm_last_error());
                continue;
            }
            ck_assert(img.pixels[0] == 10 && img.pixels[3] == 200);
            dm_image_free(&img);
        }
    }
}
END_TEST

/* A PNG's eXIf chunk turns it as OpenCV's PNG decoder reads it through
 * libpng: before or after the image data, not with a bad CRC (which
 * Pillow refuses before the image data). */
START_TEST(png_exif_orientation)
{
    enum { W = 5, H = 3 };
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 5);
    encoded png = {.size = 0};
    ck_assert(stbi_write_png_to_func(collect, &png, W, H, 3, rgb, W * 3));
    dm_image stored, img;
    ck_assert(dm_image_load_memory(png.data, png.size, 3, &stored) == DM_OK);
    uint8_t tiff[64];
    for (int tag = 1; tag <= 8; tag++)
        for (int after = 0; after <= 1; after++)
            for (int bad_crc = 0; bad_crc <= 1; bad_crc++) {
                encoded e = png_with_exif(&png, tiff, exif_tiff(tiff, tag % 2, tag, 0), after, bad_crc);
                ck_assert_msg(dm_image_load_memory_as(e.data, e.size, 3, DM_IMAGE_OPENCV, &img) == DM_OK, "%s",
                              dm_last_error());
                expect_upright(&stored, &img, bad_crc ? 1 : tag, after ? "eXIf after IDAT" : "eXIf before IDAT");
                dm_image_free(&img);
                /* Pillow checks the CRC of every chunk before the image data */
                if (bad_crc && !after) {
                    ck_assert_int_eq(dm_image_load_memory(e.data, e.size, 3, &img), DM_ERR_FORMAT);
                    continue;
                }
                ck_assert(dm_image_load_memory(e.data, e.size, 3, &img) == DM_OK);
                expect_upright(&stored, &img, 1, "PNG without turning");
                dm_image_free(&img);
            }
    dm_image_free(&stored);
}
END_TEST

START_TEST(hostile_files)
{
    dm_image img = {.width = 99};
    size_t size;
    uint8_t *png = test_read("chelsea.png", &size);
/* Truncated: half the file. */
    expect_failure(dm_image_load_memory(png, size / 2, 3, &img), DM_ERR_FORMAT, "runs past the end");
    ck_assert_ptr_null(img.pixels);
    ck_assert_int_eq(img.width, 0);
    /* Corrupt compressed data. */
    memset(png + size / 4, 0xff, 4096);
    expect_failure(dm_image_load_memory(png, size, 3, &img), DM_ERR_FORMAT, "invalid compressed image data");
    /* Not an image at all. */
    expect_failure(dm_image_load_memory("plain text, no image", 20, 3, &img), DM_ERR_FORMAT, "not a PNG");
    /* 16-bit PNM, which the decoder mishandles, is refused up front. */
    expect_failure(dm_image_load_memory("P6\n1 1\n65535\n\1\2\3\4\5\6", 18, 3, &img), DM_ERR_UNSUPPORTED, "8-bit");
    /* A PNM of no pixels, as Pillow refuses it. */
    expect_failure(dm_image_load_memory("P6 0 5 255\n", 11, 3, &img), DM_ERR_FORMAT, "corrupt PNM: 0 x 5 pixels");
    /* A header claiming 10000 x 10000 pixels is refused before decoding. */
    uint8_t hdr[80];
    size_t n = png_header(hdr, 10000, 10000, 8, 2);
    expect_failure(dm_image_load_memory(hdr, n, 3, &img), DM_ERR_FORMAT, "over the limit");
    /* 8192 x 8192 RGBA of 16 bits (a 516 kB file can say so) would take
     * 1.5 GB to decode; at 8 bits and RGB it gets as far as the missing data. */
    n = png_header(hdr, 8192, 8192, 16, 6);
    expect_failure(dm_image_load_memory(hdr, n, 3, &img), DM_ERR_FORMAT, "needs 1536 MB to decode");
    n = png_header(hdr, 8192, 8192, 8, 2);
    expect_failure(dm_image_load_memory(hdr, n, 3, &img), DM_ERR_FORMAT, "cannot decode image: not enough pixels");
    /* Wider than stb_image reads: named so, not "unknown image type". */
    n = png_header(hdr, 100000, 1, 8, 2);
    expect_failure(dm_image_load_memory(hdr, n, 3, &img), DM_ERR_FORMAT, "100000 x 1 pixels is over the limit");
    /* Empty input, bad channel count. */
    expect_failure(dm_image_load_memory(hdr, 0, 3, &img), DM_ERR_FORMAT, "empty");
    expect_failure(dm_image_load_memory(hdr, n, 2, &img), DM_ERR_ARGUMENT, "1 or 3");
    free(png);

    char dir[] = "/tmp/dm_image_test_XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/missing.png", dir);
    expect_failure(dm_image_load(path, 3, &img), DM_ERR_IO, "missing.png: cannot open");
    expect_failure(dm_image_load(dir, 3, &img), DM_ERR_IO, "directory");
    snprintf(path, sizeof path, "%s/empty.png", dir);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    expect_failure(dm_image_load(path, 3, &img), DM_ERR_FORMAT, "empty file");
    remove(path);
    rmdir(dir);
}
END_TEST

/* A model's preprocessing comes from its metadata. */
START_TEST(model_preprocess_metadata)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(getenv("DM_DEFAULT_MODEL"), NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_preprocess p = DM_PREPROCESS_INIT;
    ck_assert_msg(dm_preprocess_default(m, &p) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(p.resize, 28);
    ck_assert_int_eq(p.crop, 28);
    ck_assert_int_eq(p.channels, 1);
    ck_assert_int_eq(p.interpolation, DM_INTERP_BILINEAR);
    ck_assert_float_eq(p.mean[0], 0.286f);
    ck_assert_float_eq(p.std[0], 0.353f);
    dm_model_free(m);
}
END_TEST

/* A std of 0 in a model's metadata is the model's fault, named as such. */
START_TEST(metadata_std_must_be_positive)
{
    dm_tensor_file micro;
    test_open("micro.safetensors", &micro);
    char path[] = "/tmp/dm_std_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    dm_meta meta = {"preprocess", "{\"std\": [0.2, 0, 0.2]}"};
    ck_assert_int_eq(dm_safetensors_write(path, micro.tensors, micro.count, &meta, 1), DM_OK);
    dm_tensor_file_close(&micro);
    dm_model *m;
    ck_assert_msg(dm_model_load(path, NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_preprocess p = DM_PREPROCESS_INIT;
    expect_failure(dm_preprocess_default(m, &p), DM_ERR_MODEL, "preprocess metadata: 'std' must be positive");
    dm_model_free(m);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("image");
    tcase_add_loop_test(tc, preprocess_matches_torchvision, 0, 2);
    tcase_add_test(tc, resample_bilinear_by_hand);
    tcase_add_test(tc, resample_bicubic_by_hand);
    tcase_add_test(tc, channel_conversion);
    tcase_add_test(tc, output_sizes);
    tcase_add_test(tc, every_format_decodes);
    tcase_add_test(tc, decode_out_of_memory_is_not_corrupt);
    tcase_add_test(tc, pnm_max_value_as_pillow);
    tcase_add_test(tc, pixel_limit_refuses_from_the_header);
    tcase_add_test(tc, hostile_files);
    tcase_add_test(tc, truncated_files);
    tcase_add_test(tc, jpeg_frame_larger_than_its_data);
    tcase_add_test(tc, jpeg_scans);
    tcase_add_test(tc, jpeg_cmyk_as_pillow_and_opencv);
    tcase_add_test(tc, jpeg_exif_orientation);
    tcase_add_test(tc, jpeg_exif_orientation_unread);
    tcase_add_test(tc, png_exif_orientation);
    tcase_add_test(tc, png_crcs_checked_as_each_reference_checks_them);
    tcase_add_test(tc, png_grey_16_bits);
    tcase_add_test(tc, gif_as_pillow);
    tcase_add_test(tc, palettes_completed_as_the_references);
    tcase_add_test(tc, bmp_16_bits);
    tcase_add_test(tc, tga_right_to_left_and_map_start);
    tcase_add_test(tc, tga_index_beyond_the_map);
    tcase_add_test(tc, gif_image_beyond_its_screen);
    tcase_add_test(tc, gif_codes_beyond_the_image);
    tcase_add_test(tc, png_data_beyond_the_image);
    tcase_add_test(tc, decoders_share_their_memory);
    tcase_add_test(tc, model_preprocess_metadata);
    tcase_add_test(tc, metadata_std_must_be_positive);
    suite_add_tcase(s, tc);
    return test_run(s);
}
