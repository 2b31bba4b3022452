/* test_coco_eval.c - COCO's detection metrics on small cases whose AP is
 * worked out by hand in the comments, and the mask encodings they use. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coco_eval.h"
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
    ck_assert(coco_rle_from_polygon(xy, 4, 5, 6, &r));
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
    suite_add_tcase(s, tc);
    return test_run(s);
}
