#include "scanmap.h"

#include "internal_api.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dm_status scanmap_compute(const dm_model *model, const float *image, int h, int w, int stage, int block,
                          scanmap *out)
{
    memset(out, 0, sizeof *out);
    /* validates the stage; dm_forward validates the block */
    dm_status st = dm_stage_shape(model, h, w, stage, NULL, &out->grid_h, &out->grid_w);
    if (st) return st;
    out->stage = stage;
    out->block = block;
    out->groups = dm_model_config(model)->groups[stage];
    out->step = 4 << stage;
    out->offsets = malloc(sizeof(float) * out->grid_h * out->grid_w * out->groups * 2);
    if (!out->offsets) return dm_fail(DM_ERR_NOMEM, "out of memory for the offsets");
    dm_workspace *ws;
    if ((st = dm_workspace_create(model, 1, h, w, &ws))) {
        scanmap_free(out);
        return st;
    }
    dm_outputs o = {.size = sizeof(dm_outputs), .offsets = out->offsets, .offsets_stage = stage, .offsets_block = block};
    st = dm_forward(model, ws, image, 1, h, w, &o);
    dm_workspace_free(ws);
    if (st) scanmap_free(out);
    return st;
}

void scanmap_free(scanmap *map)
{
    free(map->offsets);
    map->offsets = NULL;
}

void scanmap_position(const scanmap *map, int g, int p, float *x, float *y)
{
    const float *o = map->offsets + ((size_t)p * map->groups + g) * 2;
    *x = (float)map->step * ((float)(p % map->grid_w) + o[0]);
    *y = (float)map->step * ((float)(p / map->grid_w) + o[1]);
}

int scanmap_next(const scanmap *map, int p, int stride)
{
    int last = map->grid_h * map->grid_w - 1;
    if (p >= last) return -1;
    return p + stride < last ? p + stride : last;
}

colour scanmap_colour(int g)
{
    static const colour palette[] = {
        {255, 64, 64}, {64, 200, 255}, {255, 210, 40}, {120, 255, 120},
        {255, 90, 255}, {255, 150, 40}, {160, 120, 255}, {40, 255, 220},
    };
    return palette[g % (int)(sizeof palette / sizeof palette[0])];
}

int scanmap_draw(const scanmap *map, const float *image, int channels, int h, int w, int scale, int group,
                 int stride, int arrows, canvas *out)
{
    if ((size_t)w * scale * h * scale > CANVAS_MAX_PIXELS || canvas_init(out, w * scale, h * scale)) return -1;
    /* the image, dimmed so the paths stand out */
    for (int y = 0; y < out->height; y++)
        for (int x = 0; x < out->width; x++) {
            uint8_t *px = out->rgb + ((size_t)y * out->width + x) * 3;
            for (int c = 0; c < 3; c++) {
                float v = image[((size_t)(channels == 3 ? c : 0) * h + y / scale) * w + x / scale];
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                px[c] = (uint8_t)lrintf(v * 0.6f * 255.0f);
            }
        }
    float line = scale >= 8 ? 2.0f : 1.0f, mark = 3.0f + 2.0f * line;
    for (int g = 0; g < map->groups; g++) {
        if (group >= 0 && g != group) continue;
        colour col = scanmap_colour(g);
        float px, py, x, y;
        if (arrows)
            for (int p = 0; p >= 0; p = scanmap_next(map, p, stride)) {
                scanmap_position(map, g, p, &x, &y);
                float ox = (float)map->step * (float)(p % map->grid_w), oy = (float)map->step * (float)(p / map->grid_w);
                draw_arrow(out, scanmap_to_canvas(ox, scale), scanmap_to_canvas(oy, scale),
                           scanmap_to_canvas(x, scale), scanmap_to_canvas(y, scale), 1.0f, (colour){200, 200, 200});
            }
        scanmap_position(map, g, 0, &px, &py);
        for (int p = scanmap_next(map, 0, stride); p >= 0; p = scanmap_next(map, p, stride)) {
            scanmap_position(map, g, p, &x, &y);
            draw_line(out, scanmap_to_canvas(px, scale), scanmap_to_canvas(py, scale), scanmap_to_canvas(x, scale),
                      scanmap_to_canvas(y, scale), line, col);
            px = x;
            py = y;
        }
        for (int p = 0; p >= 0; p = scanmap_next(map, p, stride)) {
            scanmap_position(map, g, p, &x, &y);
            draw_disc(out, scanmap_to_canvas(x, scale), scanmap_to_canvas(y, scale), line + 0.5f, col);
        }
        scanmap_position(map, g, 0, &x, &y);
        draw_star(out, scanmap_to_canvas(x, scale), scanmap_to_canvas(y, scale), 2.0f * mark, line, (colour){255, 255, 255});
        scanmap_position(map, g, map->grid_h * map->grid_w - 1, &x, &y);
        draw_circle(out, scanmap_to_canvas(x, scale), scanmap_to_canvas(y, scale), mark, line, (colour){255, 255, 255});
    }
    return 0;
}
