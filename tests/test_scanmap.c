/* test_scanmap.c - the scan map shows the offsets the forward pass used:
 * positions are the same numbers, and the picture has each group's colour
 * where its positions are drawn. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

#include "damamba.h"
#include "draw.h"
#include "scanmap.h"

START_TEST(positions_and_picture_match_forward_offsets)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &m), DM_OK);
    const int h = 64, w = 96, stage = 1, block = 0;
    float *x = malloc(sizeof(float) * 3 * h * w);
    for (int i = 0; i < 3 * h * w; i++) x[i] = sinf(0.05f * (float)i) + 0.3f * cosf(0.17f * (float)(i % w));

    /* the offsets straight from the library */
    int gh, gw, groups = dm_model_config(m)->groups[stage];
    dm_stage_shape(m, h, w, stage, NULL, &gh, &gw);
    float *off = malloc(sizeof(float) * gh * gw * groups * 2);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, 1, h, w, &ws), DM_OK);
    dm_outputs o = {.size = sizeof(dm_outputs), .offsets = off, .offsets_stage = stage, .offsets_block = block};
    ck_assert_int_eq(dm_forward(m, ws, x, 1, h, w, &o), DM_OK);

    scanmap map;
    ck_assert_int_eq(scanmap_compute(m, x, h, w, stage, block, &map), DM_OK);
    ck_assert_int_eq(map.grid_h, gh);
    ck_assert_int_eq(map.grid_w, gw);
    ck_assert_int_eq(map.groups, groups);
    int moved = 0;
    for (int p = 0; p < gh * gw; p++)
        for (int g = 0; g < groups; g++) {
            float px, py;
            scanmap_position(&map, g, p, &px, &py);
            const float *d = off + ((size_t)p * groups + g) * 2;
            ck_assert_float_eq(px, 8.0f * ((float)(p % gw) + d[0]));
            ck_assert_float_eq(py, 8.0f * ((float)(p / gw) + d[1]));
            moved += fabsf(d[0]) > 0.01f || fabsf(d[1]) > 0.01f;
        }
    ck_assert_int_gt(moved, gh * gw * groups / 2); /* the offsets are real, not zeros */

    /* each drawn position of a group carries the group's colour */
    const int scale = 4;
    for (int g = 0; g < groups; g++) {
        canvas cv;
        float *img = calloc((size_t)3 * h * w, sizeof(float));
        ck_assert_int_eq(scanmap_draw(&map, img, 3, h, w, scale, g, 1, 0, &cv), 0);
        colour want = scanmap_colour(g);
        float sx, sy, ex, ey;
        scanmap_position(&map, g, 0, &sx, &sy);
        scanmap_position(&map, g, gh * gw - 1, &ex, &ey);
        int checked = 0;
        for (int p = 1; p < gh * gw - 1; p++) {
            float px, py;
            scanmap_position(&map, g, p, &px, &py);
            int cx = (int)floorf(scanmap_to_canvas(px, scale)), cy = (int)floorf(scanmap_to_canvas(py, scale));
            /* skip positions off the canvas or under the start and end markers */
            if (cx < 0 || cy < 0 || cx >= cv.width || cy >= cv.height) continue;
            if (hypotf(px - sx, py - sy) * scale < 20 || hypotf(px - ex, py - ey) * scale < 20) continue;
            const uint8_t *rgb = cv.rgb + ((size_t)cy * cv.width + cx) * 3;
            ck_assert_msg(rgb[0] == want.r && rgb[1] == want.g && rgb[2] == want.b,
                          "group %d position %d at canvas (%d, %d) is (%d, %d, %d), not the group colour", g, p, cx,
                          cy, rgb[0], rgb[1], rgb[2]);
            checked++;
        }
        ck_assert_int_gt(checked, gh * gw / 2);
        canvas_free(&cv);
        free(img);
    }
    scanmap_free(&map);
    dm_workspace_free(ws);
    free(off);
    free(x);
    dm_model_free(m);
}
END_TEST

/* Offsets from a broken model can be NaN, infinite or huge: shapes there
 * draw nothing (the pixel bounds were float-to-int casts out of range). */
START_TEST(shapes_at_non_finite_positions_draw_nothing)
{
    canvas cv;
    ck_assert_int_eq(canvas_init(&cv, 16, 16), 0);
    colour white = {255, 255, 255};
    const float bad[] = {NAN, INFINITY, -INFINITY, 1e30f, -1e30f};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        draw_line(&cv, bad[i], 2, bad[i], 3, 1, white);
        draw_circle(&cv, bad[i], bad[i], 2, 1, white);
        draw_disc(&cv, 3, bad[i], 2, white);
        draw_star(&cv, bad[i], 4, 3, 1, white);
        draw_arrow(&cv, 1, 1, NAN, bad[i], 1, white);
    }
    int lit = 0;
    for (int p = 0; p < 16 * 16 * 3; p++) lit += cv.rgb[p] != 0;
    ck_assert_int_eq(lit, 0);
    draw_line(&cv, 1, 1, 1e30f, 1e30f, 1, white); /* from inside the canvas out: drawn up to the edge */
    for (int p = 0; p < 16 * 16 * 3; p++) lit += cv.rgb[p] != 0;
    ck_assert_int_gt(lit, 0);
    canvas_free(&cv);
}
END_TEST

/* A line running far off the canvas draws what its visible part draws
 * (and costs what that part costs): the walk is clipped to the canvas. */
START_TEST(far_lines_draw_their_visible_part)
{
    const float far[][4] = {{-1e9f, 7.5f, 1e9f, 7.5f}, {7.5f, 3e9f, 7.5f, -3e9f}, {-1e9f, -1e9f, 1e9f, 1e9f}};
    const float near[][4] = {{-40, 7.5f, 40, 7.5f}, {7.5f, 40, 7.5f, -40}, {-40, -40, 40, 40}};
    colour white = {255, 255, 255};
    for (int i = 0; i < 3; i++) {
        canvas a, b;
        ck_assert_int_eq(canvas_init(&a, 16, 16), 0);
        ck_assert_int_eq(canvas_init(&b, 16, 16), 0);
        draw_line(&a, far[i][0], far[i][1], far[i][2], far[i][3], 1.5f, white);
        draw_line(&b, near[i][0], near[i][1], near[i][2], near[i][3], 1.5f, white);
        int lit = 0, differ = 0;
        for (int p = 0; p < 16 * 16 * 3; p++) {
            lit += b.rgb[p] != 0;
            differ += abs(a.rgb[p] - b.rgb[p]) > 1; /* rounding of the clipped ends */
        }
        ck_assert_msg(lit >= 16 * 3 && differ == 0, "line %d: %d of %d lit values differ", i, differ, lit);
        canvas_free(&a);
        canvas_free(&b);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("scanmap");
    TCase *tc = tcase_create("scanmap");
    tcase_add_test(tc, positions_and_picture_match_forward_offsets);
    tcase_add_test(tc, shapes_at_non_finite_positions_draw_nothing);
    tcase_add_test(tc, far_lines_draw_their_visible_part);
    suite_add_tcase(s, tc);
    return test_run(s);
}
