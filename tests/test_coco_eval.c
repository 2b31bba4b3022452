/* test_coco_eval.c - COCO's detection metrics on small cases whose AP is
 * worked out by hand in the comments, and the mask encodings they use. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coco_annotations.h"
#include "coco_eval.h"
#include "internal_api.h"
#include "testutil.h"

static coco_object box(int64_t image, int category, double x, double y, double w, double h, double score)
{
    return (coco_object){.image_id = image, .category_id = category, .bbox = {x, y, w, h}, .area = w * h,
                         .score = score};
}

static coco_stats evaluate(const coco_object *gt, size_t ngt, const coco_object *dt, size_t ndt, int type)
{
    static const int64_t images[] = {1, 2};
    coco_stats s;
    ck_assert(coco_evaluate(gt, ngt, dt, ndt, images, 2, type, &s));
    return s;
}

START_TEST(perfect_box)
{
    coco_object gt[] = {box(1, 1, 10, 10, 50, 40, 0)}, dt[] = {box(1, 1, 10, 10, 50, 40, 0.9)};
    coco_stats s = evaluate(gt, 1, dt, 1, COCO_BBOX);
    ck_assert_double_eq_tol(s.ap, 1.0, 1e-12);
    ck_assert_double_eq_tol(s.ar100, 1.0, 1e-12);
}
END_TEST

/* IoU 0.62 passes the thresholds .50, .55 and .60 only: AP = 3 / 10,
 * AP50 = 1, AP75 = 0. */
START_TEST(partial_overlap)
{
    coco_object gt[] = {box(1, 1, 0, 0, 10, 10, 0)}, dt[] = {box(1, 1, 0, 0, 10, 6.2, 0.9)};
    coco_stats s = evaluate(gt, 1, dt, 1, COCO_BBOX);
    ck_assert_double_eq_tol(s.ap, 0.3, 1e-12);
    ck_assert_double_eq_tol(s.ap50, 1.0, 1e-12);
    ck_assert_double_eq_tol(s.ap75, 0.0, 1e-12);
}
END_TEST

/* A false positive ranked first, then both objects found: recall 0, .5, 1
 * at precision 0, .5, 2/3; interpolated, 2/3 at every recall: AP = 2/3. */
START_TEST(false_positive_first)
{
    coco_object gt[] = {box(1, 1, 0, 0, 10, 10, 0), box(2, 1, 50, 50, 20, 20, 0)};
    coco_object dt[] = {box(1, 1, 100, 100, 10, 10, 0.9), box(1, 1, 0, 0, 10, 10, 0.8),
                        box(2, 1, 50, 50, 20, 20, 0.7)};
    coco_stats s = evaluate(gt, 2, dt, 3, COCO_BBOX);
    ck_assert_double_eq_tol(s.ap, 2.0 / 3.0, 1e-12);
}
END_TEST

/* Found objects ranked below a miss: precision 1, 1, 2/3 at recall .5, 1,
 * 1 (the miss does not lower recall): AP = 1 since every recall step is
 * reached at precision 1 first. */
START_TEST(false_positive_last)
{
    coco_object gt[] = {box(1, 1, 0, 0, 10, 10, 0), box(2, 1, 50, 50, 20, 20, 0)};
    coco_object dt[] = {box(1, 1, 0, 0, 10, 10, 0.9), box(2, 1, 50, 50, 20, 20, 0.8),
                        box(1, 1, 100, 100, 10, 10, 0.7)};
    coco_stats s = evaluate(gt, 2, dt, 3, COCO_BBOX);
    ck_assert_double_eq_tol(s.ap, 1.0, 1e-12);
}
END_TEST

/* A detection inside a crowd region matches it (IoU over the detection's
 * own area) and is ignored, neither true nor false: AP = 1.  A second
 * category without ground truth does not enter the mean. */
START_TEST(crowd_and_empty_category)
{
    coco_object gt[] = {box(1, 1, 0, 0, 100, 100, 0), box(1, 1, 200, 200, 10, 10, 0)};
    gt[0].iscrowd = 1;
    coco_object dt[] = {box(1, 1, 10, 10, 20, 20, 0.9), box(1, 1, 200, 200, 10, 10, 0.8),
                        box(1, 7, 0, 0, 5, 5, 0.95)};
    coco_stats s = evaluate(gt, 2, dt, 3, COCO_BBOX);
    ck_assert_double_eq_tol(s.ap, 1.0, 1e-12);
}
END_TEST

/* One small (10 x 10) and one large (200 x 200) object, both found: AP
 * small and large 1; no medium ground truth: -1.  A medium false
 * positive counts only in the all-areas AP: recall .5 at precision 0 then
 * 1 at 2/3 -> 2/3 at every step. */
START_TEST(area_ranges)
{
    coco_object gt[] = {box(1, 1, 0, 0, 10, 10, 0), box(1, 1, 100, 100, 200, 200, 0)};
    coco_object dt[] = {box(1, 1, 500, 500, 50, 50, 0.95), box(1, 1, 0, 0, 10, 10, 0.9),
                        box(1, 1, 100, 100, 200, 200, 0.8)};
    coco_stats s = evaluate(gt, 2, dt, 3, COCO_BBOX);
    ck_assert_double_eq_tol(s.ap_small, 1.0, 1e-12);
    ck_assert_double_eq_tol(s.ap_large, 1.0, 1e-12);
    ck_assert_double_eq_tol(s.ap_medium, -1.0, 1e-12);
    ck_assert_double_eq_tol(s.ap, 2.0 / 3.0, 1e-12);
}
END_TEST

/* Masks: a 10 x 10 square and the same square two columns to the right
 * overlap in 80 of 120 pixels, IoU 2/3: thresholds .50 to .65 pass, AP =
 * 4 / 10.  The boxes of the same objects would give the same. */
START_TEST(mask_overlap)
{
    uint8_t a[20 * 20] = {0}, b[20 * 20] = {0};
    for (int y = 5; y < 15; y++)
        for (int x = 3; x < 13; x++) a[y * 20 + x] = 1, b[y * 20 + x + 2] = 1;
    coco_object gt[] = {box(1, 1, 3, 5, 10, 10, 0)}, dt[] = {box(1, 1, 5, 5, 10, 10, 0.9)};
    ck_assert(coco_rle_from_bitmap(a, 20, 20, &gt[0].mask) && coco_rle_from_bitmap(b, 20, 20, &dt[0].mask));
    ck_assert_uint_eq(coco_rle_area(&dt[0].mask), 100);
    coco_stats s = evaluate(gt, 1, dt, 1, COCO_SEGM);
    ck_assert_double_eq_tol(s.ap, 0.4, 1e-12);
    coco_rle u;
    ck_assert(coco_rle_union(&gt[0].mask, &dt[0].mask, &u));
    ck_assert_uint_eq(coco_rle_area(&u), 120);
    coco_rle_free(&u);
    coco_rle_free(&gt[0].mask);
    coco_rle_free(&dt[0].mask);
}
END_TEST

/* The rectangle (1, 1)-(4, 3) on a 6 x 5 image covers the pixels whose
 * centres lie inside: columns 1..3, rows 1..2, i.e. column-major runs 6
 * zeros, 2 ones, 3 zeros, 2 ones, 3 zeros, 2 ones, 12 zeros. */
START_TEST(polygon_rectangle)
{
    const double xy[] = {1, 1, 4, 1, 4, 3, 1, 3};
    const uint32_t want[] = {6, 2, 3, 2, 3, 2, 12};
    coco_rle r;
    ck_assert_int_eq(coco_rle_from_polygon(xy, 4, 5, 6, &r), 1);
    ck_assert_uint_eq(r.n, 7);
    for (size_t i = 0; i < 7; i++) ck_assert_uint_eq(r.counts[i], want[i]);
    coco_rle_free(&r);
    /* a repeated corner changes nothing (and divides no zero by zero) */
    const double repeated[] = {1, 1, 4, 1, 4, 1, 4, 3, 1, 3};
    ck_assert_int_eq(coco_rle_from_polygon(repeated, 5, 5, 6, &r), 1);
    ck_assert_uint_eq(r.n, 7);
    for (size_t i = 0; i < 7; i++) ck_assert_uint_eq(r.counts[i], want[i]);
    coco_rle_free(&r);
}
END_TEST

/* COCO's compressed strings: "13" is runs 1, 3; "05X1" runs 0, 5, 40;
 * counts that do not fill the image are refused. */
START_TEST(rle_strings)
{
    coco_rle r;
    ck_assert(coco_rle_from_string("13", 2, 2, &r));
    ck_assert(r.n == 2 && r.counts[0] == 1 && r.counts[1] == 3);
    coco_rle_free(&r);
    ck_assert(coco_rle_from_string("05X1", 45, 1, &r));
    ck_assert(r.n == 3 && r.counts[0] == 0 && r.counts[1] == 5 && r.counts[2] == 40);
    coco_rle_free(&r);
    ck_assert(coco_rle_from_string("2:1I", 16, 1, &r));
    ck_assert(r.n == 4 && r.counts[3] == 3);
    coco_rle_free(&r);
    ck_assert(!coco_rle_from_string("13", 3, 3, &r));
    ck_assert(!coco_rle_from_string("1\x7f", 2, 2, &r));
}
END_TEST

/* A polygon a hostile file could give: a coordinate that is not a number
 * or lies beyond +-2^20 pixels (its integer arithmetic would overflow), or
 * an outline of more than 2^24 traced points (gigabytes of it), is
 * refused, not rasterized. */
START_TEST(polygon_out_of_range)
{
    coco_rle r;
    double xy[8] = {1, 1, 4, 1, 4, 3, 1, 3};
    const double bad[4] = {NAN, INFINITY, 1e300, -1048577};
    for (int i = 0; i < 4; i++) {
        xy[5] = bad[i];
        ck_assert_int_eq(coco_rle_from_polygon(xy, 4, 5, 6, &r), -1);
        ck_assert_ptr_null(r.counts);
    }
    /* at the bound it is rasterized (nothing of it inside the image) */
    const double far[8] = {-1048576, -1048576, -1048575, -1048576, -1048575, -1048575, -1048576, -1048575};
    ck_assert_int_eq(coco_rle_from_polygon(far, 4, 5, 6, &r), 1);
    ck_assert_uint_eq(coco_rle_area(&r), 0);
    coco_rle_free(&r);
    /* 8 corners of +-2^20: four sides of 2^21 pixels, 10.5 million points
     * each traced at 5 a pixel, over 2^24 in all */
    const double huge[8] = {-1048576, -1048576, 1048576, -1048576, 1048576, 1048576, -1048576, 1048576};
    ck_assert_int_eq(coco_rle_from_polygon(huge, 4, 5, 6, &r), -1);
}
END_TEST

/* ground truth of `json` for its images; err gets the reason of a failure */
static int read_gt(const char *json, coco_image **images, size_t *count, coco_objects *gt, char *err)
{
    char perr[160];
    dm_json *root = dm_json_parse(json, strlen(json), perr, sizeof perr);
    ck_assert_msg(root != NULL, "%s", perr);
    int ok = coco_read_images(root, images, count, err, 256) &&
             coco_read_ground_truth(root, *images, *count, gt, err, 256);
    dm_json_free(root);
    return ok;
}

/* An annotation file's three mask forms (a polygon, uncompressed runs, a
 * compressed string) each give their object, found by image id among
 * unsorted ids; another image's annotation is skipped. */
START_TEST(annotations_read)
{
    const char *json =
        "{\"images\": [{\"id\": 9, \"file_name\": \"b.png\", \"width\": 6, \"height\": 5},"
        " {\"id\": 3, \"file_name\": \"a.png\", \"width\": 2, \"height\": 2},"
        " {\"id\": 5, \"file_name\": \"huge.png\", \"width\": 65536, \"height\": 65536}],"
        " \"annotations\": ["
        "{\"image_id\": 9, \"category_id\": 1, \"bbox\": [1, 1, 3, 2], \"area\": 6,"
        " \"segmentation\": [[1, 1, 4, 1, 4, 3, 1, 3]]},"
        "{\"image_id\": 3, \"category_id\": 2, \"bbox\": [0, 0, 1, 2], \"area\": 2, \"iscrowd\": 1,"
        " \"segmentation\": {\"counts\": [0, 2, 2], \"size\": [2, 2]}},"
        "{\"image_id\": 3, \"category_id\": 2, \"bbox\": [1, 0, 1, 2], \"area\": 3,"
        " \"segmentation\": {\"counts\": \"13\", \"size\": [2, 2]}},"
        "{\"image_id\": 77, \"category_id\": 2, \"bbox\": [0, 0, 1, 1], \"area\": 1, \"segmentation\": []}]}";
    coco_image *images;
    size_t count;
    coco_objects gt = {0};
    char err[256] = "";
    ck_assert_msg(read_gt(json, &images, &count, &gt, err), "%s", err);
    ck_assert_uint_eq(count, 3);
    /* 65536 x 65536 pixels do not fit 32-bit runs: no size */
    ck_assert(images[2].width == 0 && images[2].height == 0);
    ck_assert_uint_eq(gt.n, 3);
    ck_assert(gt.items[0].image_id == 9 && gt.items[0].category_id == 1 && coco_rle_area(&gt.items[0].mask) == 6);
    ck_assert(gt.items[1].image_id == 3 && gt.items[1].iscrowd && coco_rle_area(&gt.items[1].mask) == 2);
    ck_assert(gt.items[2].image_id == 3 && !gt.items[2].iscrowd && coco_rle_area(&gt.items[2].mask) == 3);
    ck_assert(gt.items[2].bbox[0] == 1 && gt.items[2].bbox[3] == 2 && gt.items[2].area == 3);
    coco_objects_free(&gt);
    coco_images_free(images, count);
}
END_TEST

/* Each malformed annotation fails the file with a message naming it. */
START_TEST(annotations_refused)
{
    static const char *const cases[][2] = {
        {"{\"annotations\": []}", "no \"images\" list: not a COCO annotation file"},
        {"{\"images\": [{\"file_name\": \"a.png\"}], \"annotations\": []}", "image 0 has no file_name and integer id"},
        {"{\"images\": []}", "no \"annotations\" list"},
        {"{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 6, \"height\": 5}], \"annotations\": ["
         "{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 1, 3], \"area\": 6, \"segmentation\": []}]}",
         "annotation 0 lacks image_id, category_id, bbox or area"},
        {"{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 6, \"height\": 5}], \"annotations\": ["
         "{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 1, 3, 2], \"area\": 6,"
         " \"segmentation\": [[1, 1, 4, 1, 4, 1e300, 1, 3]]}]}",
         "annotation 0: a polygon lies beyond +-2^20 pixels or its outline is too long"},
        {"{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 6, \"height\": 5}], \"annotations\": ["
         "{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 1, 3, 2], \"area\": 6,"
         " \"segmentation\": {\"counts\": [3, 4]}}]}",
         "annotation 0: no segmentation readable for a 6x5 image"},
        {"{\"images\": [{\"id\": 1, \"file_name\": \"a\"}], \"annotations\": ["
         "{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 1, 3, 2], \"area\": 6,"
         " \"segmentation\": [[1, 1, 4, 1, 4, 3]]}]}",
         "annotation 0: image 1 has no width and height, which its mask needs"},
        /* values that are no numbers were read as 0 */
        {"{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 6, \"height\": 5}], \"annotations\": ["
         "{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 1, 3, 2], \"area\": 6,"
         " \"segmentation\": [[0, 0, \"x\", 0, 3, 1, 0, 1]]}]}",
         "annotation 0: no segmentation readable for a 6x5 image"},
        {"{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 6, \"height\": 5}], \"annotations\": ["
         "{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, null, 3, 2], \"area\": 6,"
         " \"segmentation\": [[1, 1, 4, 1, 4, 3]]}]}",
         "annotation 0: its bbox holds a value that is no number"},
        /* one id, two images: pycocotools keeps one */
        {"{\"images\": [{\"id\": 7, \"file_name\": \"a\"}, {\"id\": 2, \"file_name\": \"b\"},"
         " {\"id\": 7, \"file_name\": \"c\"}], \"annotations\": []}",
         "two images have the id 7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        coco_image *images = NULL;
        size_t count = 0;
        coco_objects gt = {0};
        char err[256] = "";
        ck_assert_msg(!read_gt(cases[i][0], &images, &count, &gt, err), "case %zu was read", i);
        ck_assert_str_eq(err, cases[i][1]);
        coco_objects_free(&gt);
        coco_images_free(images, count);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coco_eval");
    TCase *tc = tcase_create("by_hand");
    tcase_add_test(tc, perfect_box);
    tcase_add_test(tc, partial_overlap);
    tcase_add_test(tc, false_positive_first);
    tcase_add_test(tc, false_positive_last);
    tcase_add_test(tc, crowd_and_empty_category);
    tcase_add_test(tc, area_ranges);
    tcase_add_test(tc, mask_overlap);
    tcase_add_test(tc, polygon_rectangle);
    tcase_add_test(tc, rle_strings);
    tcase_add_test(tc, polygon_out_of_range);
    tcase_add_test(tc, annotations_read);
    tcase_add_test(tc, annotations_refused);
    suite_add_tcase(s, tc);
    return test_run(s);
}
