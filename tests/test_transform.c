/* test_transform.c - the OpenMMLab test transform and JPEG and WebP decoding
 * against their references: OpenCV's resizes and mmcv's normalization as
 * mmsegmentation produced them (seg_transform.safetensors and the
 * seg_*_resized.png files, cut from the golden seg_preprocess), Pillow's
 * libjpeg-turbo decoding of two JPEGs and libwebp decoding of five WebPs,
 * and resizes worked out by hand. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cv_resize.h"
#include "damamba.h"

static void load_path(const char *path, int channels, dm_image *img)
{
    ck_assert_msg(dm_image_load(path, channels, img) == DM_OK, "%s", dm_last_error());
}

static void load_image(const char *name, int channels, dm_image *img) { load_path(test_path(name), channels, img); }

/* Count the bytes that differ, and fail if any do. */
static void expect_same_pixels(const char *what, const dm_image *got, const dm_image *want)
{
    ck_assert_int_eq(got->width, want->width);
    ck_assert_int_eq(got->height, want->height);
    ck_assert_int_eq(got->channels, want->channels);
    size_t n = (size_t)got->width * got->height * got->channels, differing = 0;
    for (size_t i = 0; i < n; i++) differing += got->pixels[i] != want->pixels[i];
    printf("%-28s %dx%d: %zu of %zu bytes differ\n", what, got->width, got->height, differing, n);
    ck_assert_msg(differing == 0, "%s: %zu bytes differ", what, differing);
}

/* libjpeg-turbo gives the pixels Pillow gives, colour (4:2:0) and grey. */
START_TEST(jpeg_matches_pillow)
{
    static const char *names[][2] = {{"jpeg_colour.jpg", "jpeg_colour_pillow.png"},
                                     {"jpeg_grey.jpg", "jpeg_grey_pillow.png"}};
    int channels = _i == 0 ? 3 : 1;
    dm_image got, want;
    load_image(names[_i][0], channels, &got);
    load_image(names[_i][1], channels, &want);
    expect_same_pixels(names[_i][0], &got, &want);
    dm_image_free(&got);
    dm_image_free(&want);
}
END_TEST

/* Whole files with corrupt data decode as in Pillow, grey where blocks are
 * missing: a scan cut short by the end-of-image marker, and a frame larger
 * than its data (tests/fixtures/make_corrupt_jpeg_fixtures.py). */
START_TEST(corrupt_jpeg_matches_pillow)
{
    static const char *names[][2] = {{"jpeg_corrupt/scan_cut.jpg", "jpeg_corrupt/scan_cut_pillow.png"},
                                     {"jpeg_corrupt/frame_larger.jpg", "jpeg_corrupt/frame_larger_pillow.png"}};
    dm_image got, want;
    load_path(test_fixture_path(names[_i][0]), 3, &got);
    load_path(test_fixture_path(names[_i][1]), 3, &want);
    expect_same_pixels(names[_i][0], &got, &want);
    dm_image_free(&got);
    dm_image_free(&want);
}
END_TEST

START_TEST(jpeg_hostile)
{
    FILE *f = fopen(test_path("jpeg_colour.jpg"), "rb");
    ck_assert_ptr_nonnull(f);
    uint8_t buf[8192];
    size_t size = fread(buf, 1, sizeof buf, f);
    fclose(f);
    dm_image img;
    /* Cut inside the headers: an error naming JPEG, nothing allocated. */
    ck_assert_int_eq(dm_image_load_memory(buf, 40, 3, &img), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "JPEG") != NULL, "%s", dm_last_error());
    ck_assert_ptr_null(img.pixels);
    /* A frame header claiming 0 x 0 pixels. */
    uint8_t bad[sizeof buf];
    memcpy(bad, buf, size);
    for (size_t i = 2; i + 8 < size; i++)
        if (bad[i] == 0xFF && bad[i + 1] == 0xC0) { /* SOF0: length, precision, height, width */
            memset(bad + i + 5, 0, 4);
            break;
        }
    ck_assert_int_eq(dm_image_load_memory(bad, size, 3, &img), DM_ERR_FORMAT);
    printf("hostile JPEG: %s\n", dm_last_error());
}
END_TEST

/* WebP decodes through libwebp as in Pillow, in both conventions (OpenCV
 * drops alpha as Pillow's convert("RGB") does): lossy, lossy with alpha,
 * lossless with alpha, and an animation whose first frame covers a corner
 * of its canvas (tests/fixtures/make_webp_fixtures.py). */
START_TEST(webp_matches_pillow)
{
    static const char *names[] = {"lossy", "lossy_alpha", "lossless_alpha", "animated"};
    char webp[64], png[64];
    snprintf(webp, sizeof webp, "webp/%s.webp", names[_i]);
    snprintf(png, sizeof png, "webp/%s_pillow.png", names[_i]);
    dm_image got, want;
    load_path(test_fixture_path(png), 3, &want);
    for (int opencv = 0; opencv <= 1; opencv++) {
        ck_assert_msg(dm_image_load_as(test_fixture_path(webp), 3, opencv ? DM_IMAGE_OPENCV : DM_IMAGE_PIL, &got) ==
                          DM_OK, "%s", dm_last_error());
        expect_same_pixels(webp, &got, &want);
        dm_image_free(&got);
    }
    dm_image_free(&want);
}
END_TEST

/* Each convention calls libwebp as its reference does, and they part on
 * damaged files: an EXIF chunk cut short after the image data fails
 * Pillow's container parse, while OpenCV decodes the image data alone
 * (tests/fixtures/make_webp_fixtures.py). */
START_TEST(webp_damage_as_each_reference)
{
    const char *path = test_fixture_path("webp/metadata_cut.webp");
    dm_image got, want;
    ck_assert_int_eq(dm_image_load_as(path, 3, DM_IMAGE_PIL, &got), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "WebP") != NULL, "%s", dm_last_error());
    ck_assert_ptr_null(got.pixels);
    printf("metadata cut, PIL's convention: %s\n", dm_last_error());
    ck_assert_msg(dm_image_load_as(path, 3, DM_IMAGE_OPENCV, &got) == DM_OK, "%s", dm_last_error());
    load_path(test_fixture_path("webp/metadata_cut_whole_pillow.png"), 3, &want);
    expect_same_pixels("webp/metadata_cut.webp", &got, &want);
    dm_image_free(&got);
    dm_image_free(&want);
}
END_TEST

/* A WebP cut anywhere is refused in both conventions, naming WebP, as
 * Pillow refuses it (a still and an animation); so is a canvas over the
 * pixel limit, before anything is decoded. */
START_TEST(webp_hostile)
{
    static const char *names[] = {"webp/lossy_alpha.webp", "webp/animated.webp"};
    size_t size;
    uint8_t *buf;
    dm_image img;
    for (int i = 0; i < 2; i++) {
        buf = test_read_path(test_fixture_path(names[i]), &size);
        for (int opencv = 0; opencv <= 1; opencv++)
            for (size_t n = 12; n < size; n++) {
                dm_status st = dm_image_load_memory_as(buf, n, 3, opencv ? DM_IMAGE_OPENCV : DM_IMAGE_PIL, &img);
                ck_assert_int_eq(st, DM_ERR_FORMAT);
                ck_assert_msg(strstr(dm_last_error(), "WebP") != NULL, "%s cut at %zu: %s", names[i], n,
                              dm_last_error());
                ck_assert_ptr_null(img.pixels);
            }
        dm_image_load_memory(buf, size / 2, 3, &img);
        printf("%s cut at %zu of %zu bytes: %s\n", names[i], size / 2, size, dm_last_error());
        free(buf);
    }
    /* The animation's VP8X canvas, 24-bit width and height less one,
     * rewritten to 12,000 x 9,000. */
    buf = test_read_path(test_fixture_path("webp/animated.webp"), &size);
    ck_assert(memcmp(buf + 12, "VP8X", 4) == 0);
    const unsigned w = 12000 - 1, h = 9000 - 1;
    uint8_t *canvas = buf + 24;
    canvas[0] = w & 255, canvas[1] = w >> 8 & 255, canvas[2] = w >> 16;
    canvas[3] = h & 255, canvas[4] = h >> 8 & 255, canvas[5] = h >> 16;
    ck_assert_int_eq(dm_image_load_memory(buf, size, 3, &img), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "12000 x 9000 pixels is over the limit") != NULL, "%s", dm_last_error());
    ck_assert_ptr_null(img.pixels);
    free(buf);
}
END_TEST

/* OpenCV's resize on the four golden cases: two enlargements into
 * (2048, 512), a 0.75 ratio, and an exact 2x reduction (the area path). */
START_TEST(resize_matches_opencv)
{
    static const struct { const char *photo, *want; int w, h; } cases[] = {
        {"chelsea.png", "seg_chelsea_resized.png", 770, 512},
        {"coffee.png", "seg_coffee_resized.png", 768, 512},
        {"chelsea.png", "seg_chelsea_r075_flip_resized.png", 577, 384},
        {"coffee.png", "seg_coffee_r0390625_resized.png", 300, 200},
    };
    dm_image src, want;
    load_image(cases[_i].photo, 3, &src);
    load_image(cases[_i].want, 3, &want);
    ck_assert_int_eq(want.width, cases[_i].w);
    ck_assert_int_eq(want.height, cases[_i].h);
    dm_image got = {.width = want.width, .height = want.height, .channels = 3};
    got.pixels = malloc((size_t)got.width * got.height * 3);
    ck_assert(dm_cv_resize(src.pixels, src.width, src.height, 3, got.pixels, got.width, got.height) == DM_OK);
    expect_same_pixels(cases[_i].want, &got, &want);
    dm_image_free(&got);
    dm_image_free(&src);
    dm_image_free(&want);
}
END_TEST

/* The row [0, 255] to 4 pixels, by hand: source x = (d + 0.5) / 2 - 0.5 =
 * -0.25 (clamped: 0), 0.25, 0.75, 1.25 (clamped: 1); weights of pixel 1 in
 * 11 bits: 0, 512, 1536, -; horizontal sums 0, 130560, 391680, 522240; the
 * vertical pass ((s >> 4) * 2048 >> 16, + 2 >> 2) gives 0, 64, 191, 255.
 * A 2x reduction rounds each 2x2 mean half up; a same-size resize copies. */
START_TEST(resize_by_hand)
{
    const uint8_t row[2] = {0, 255};
    uint8_t out[4];
    ck_assert(dm_cv_resize(row, 2, 1, 1, out, 4, 1) == DM_OK);
    ck_assert_int_eq(out[0], 0);
    ck_assert_int_eq(out[1], 64);
    ck_assert_int_eq(out[2], 191);
    ck_assert_int_eq(out[3], 255);
    const uint8_t block[8] = {0, 1, 10, 10, 1, 0, 10, 11}; /* 4 x 2 */
    uint8_t half[2];
    ck_assert(dm_cv_resize(block, 4, 2, 1, half, 2, 1) == DM_OK);
    ck_assert_int_eq(half[0], 1);  /* (0 + 1 + 1 + 0 + 2) >> 2 */
    ck_assert_int_eq(half[1], 10); /* (10 + 10 + 10 + 11 + 2) >> 2 */
    uint8_t same[8];
    ck_assert(dm_cv_resize(block, 4, 2, 1, same, 4, 2) == DM_OK);
    ck_assert_mem_eq(same, block, 8);
    ck_assert_int_eq(dm_cv_resize(block, 4, 2, 1, same, 0, 2), DM_ERR_ARGUMENT);
}
END_TEST

/* Sizes, scale factors and the normalized tensors, against mmseg's. */
START_TEST(transform_matches_mmseg)
{
    static const struct { const char *photo, *name; double ratio; int flip, w, h; const char *img; size_t rows; } cases[] = {
        {"chelsea.png", "chelsea", 1.0, 0, 770, 512, NULL, 0},
        {"coffee.png", "coffee", 1.0, 0, 768, 512, NULL, 0},
        {"chelsea.png", "chelsea_r075_flip", 0.75, 1, 577, 384, "chelsea_r075_flip.img_top", 32},
        {"coffee.png", "coffee_r0390625", 0.390625, 0, 300, 200, "coffee_r0390625.img", 200},
    };
    dm_tensor_file golden;
    test_open("seg_transform.safetensors", &golden);
    dm_image src;
    load_image(cases[_i].photo, 3, &src);
    dm_mm_transform t = dm_mm_transform_ade20k();
    t.ratio = cases[_i].ratio;
    t.flip = cases[_i].flip;
    int h, w;
    float sf[4];
    ck_assert(dm_mm_transform_size(&t, src.width, src.height, &h, &w, sf) == DM_OK);
    ck_assert_int_eq(w, cases[_i].w);
    ck_assert_int_eq(h, cases[_i].h);
    char key[96];
    snprintf(key, sizeof key, "%s.scale_factor", cases[_i].name);
    const float *want_sf = test_f32(&golden, key, NULL);
    for (int k = 0; k < 4; k++) ck_assert_float_eq(sf[k], want_sf[k]);
    if (cases[_i].img) {
        float *img = malloc(sizeof(float) * 3 * h * w);
        ck_assert(dm_mm_transform_image(&src, &t, img) == DM_OK);
        size_t n;
        const float *want = test_f32(&golden, cases[_i].img, &n);
        size_t rows = cases[_i].rows, differing = 0;
        ck_assert_uint_eq(n, 3 * rows * w);
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < rows * w; i++)
                differing += img[c * (size_t)h * w + i] != want[c * rows * w + i];
        printf("%-28s %zu of %zu values differ\n", cases[_i].img, differing, n);
        ck_assert_uint_eq(differing, 0);
        free(img);
    }
    dm_image_free(&src);
    dm_tensor_file_close(&golden);
}
END_TEST

START_TEST(transform_bad_settings)
{
    dm_mm_transform t = dm_mm_transform_ade20k();
    int h, w;
    ck_assert_int_eq(dm_mm_transform_size(&t, 0, 10, &h, &w, NULL), DM_ERR_ARGUMENT);
    t.ratio = 0;
    ck_assert_int_eq(dm_mm_transform_size(&t, 10, 10, &h, &w, NULL), DM_ERR_ARGUMENT);
    t = dm_mm_transform_ade20k();
    t.std[1] = 0;
    ck_assert_int_eq(dm_mm_transform_size(&t, 10, 10, &h, &w, NULL), DM_ERR_ARGUMENT);
    ck_assert_msg(strstr(dm_last_error(), "std") != NULL, "%s", dm_last_error());
    /* a std so small, or a mean so large, that (v - mean) / std overflows
     * a float for pixels v in 0 .. 255 */
    const float tiny[][2] = {{0, 1e-45f}, {-3e38f, 0.5f}, {1e37f, 0.01f}};
    for (int i = 0; i < 3; i++) {
        t = dm_mm_transform_ade20k();
        t.mean[2] = tiny[i][0], t.std[2] = tiny[i][1];
        ck_assert_int_eq(dm_mm_transform_size(&t, 10, 10, &h, &w, NULL), DM_ERR_ARGUMENT);
        ck_assert_msg(strstr(dm_last_error(), "finite values (v - mean) / std") != NULL, "%s", dm_last_error());
    }
    /* COCO's 1333 x 800 leaves a 1 x 3000 strip 0.44 pixels wide, which
     * mmcv rounds to none: refused, saying so */
    t = dm_mm_transform_coco();
    ck_assert_int_eq(dm_mm_transform_size(&t, 1, 3000, &h, &w, NULL), DM_ERR_ARGUMENT);
    ck_assert_str_eq(dm_last_error(), "transform: 1 x 3000 scaled by 0.444333 gives 0 x 1333 pixels: a side is empty");
    ck_assert_int_eq(dm_mm_transform_size(&t, 3, 3000, &h, &w, NULL), DM_OK);
    ck_assert(w == 1 && h == 1333);
    /* the pixel limit holds the tensor: sizes as rounded (8192 x 8192, the
     * limit itself, was refused as 8192.5 x 8192.5), padding counted */
    t = dm_mm_transform_ade20k();
    t.ratio = 16;
    ck_assert_msg(dm_mm_transform_size(&t, 1, 1, &h, &w, NULL) == DM_OK, "%s", dm_last_error());
    ck_assert(w == 8192 && h == 8192);
    t = (dm_mm_transform){.scale_long = 16400, .scale_short = 4090, .ratio = 1, .std = {1, 1, 1}};
    ck_assert_msg(dm_mm_transform_size(&t, 1640, 409, &h, &w, NULL) == DM_OK, "%s", dm_last_error());
    ck_assert(w == 16400 && h == 4090); /* 67,076,000 pixels */
    t.pad_to = 32;                       /* 16416 x 4096: 67,239,936 */
    ck_assert_int_eq(dm_mm_transform_size(&t, 1640, 409, &h, &w, NULL), DM_ERR_ARGUMENT);
    ck_assert_str_eq(dm_last_error(), "transform: 1640 x 409 scaled by 10 gives a tensor of 16416 x 4096 pixels, "
                                      "over the limit of 67108864");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("transform");
    TCase *tc = tcase_create("transform");
    tcase_add_loop_test(tc, jpeg_matches_pillow, 0, 2);
    tcase_add_loop_test(tc, corrupt_jpeg_matches_pillow, 0, 2);
    tcase_add_test(tc, jpeg_hostile);
    tcase_add_loop_test(tc, webp_matches_pillow, 0, 4);
    tcase_add_test(tc, webp_hostile);
    tcase_add_test(tc, webp_damage_as_each_reference);
    tcase_add_loop_test(tc, resize_matches_opencv, 0, 4);
    tcase_add_test(tc, resize_by_hand);
    tcase_add_loop_test(tc, transform_matches_mmseg, 0, 4);
    tcase_add_test(tc, transform_bad_settings);
    suite_add_tcase(s, tc);
    return test_run(s);
}
