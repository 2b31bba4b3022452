#include "draw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

int canvas_init(canvas *c, int width, int height)
{
    c->width = width;
    c->height = height;
    c->rgb = calloc((size_t)width * height, 3);
    return c->rgb ? 0 : -1;
}

void canvas_free(canvas *c)
{
    free(c->rgb);
    c->rgb = NULL;
}

void canvas_blend(canvas *c, int x, int y, colour col, float a)
{
    if (x < 0 || y < 0 || x >= c->width || y >= c->height || !(a > 0.0f)) return;
    if (a > 1.0f) a = 1.0f;
    uint8_t *p = c->rgb + ((size_t)y * c->width + x) * 3;
    p[0] = (uint8_t)lrintf(p[0] + a * (col.r - p[0]));
    p[1] = (uint8_t)lrintf(p[1] + a * (col.g - p[1]));
    p[2] = (uint8_t)lrintf(p[2] + a * (col.b - p[2]));
}

/* Distance from point (px, py) to the segment (x0, y0)-(x1, y1). */
static float segment_distance(float px, float py, float x0, float y0, float x1, float y1)
{
    float dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    float t = len2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / len2 : 0.0f;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float ex = px - (x0 + t * dx), ey = py - (y0 + t * dy);
    return sqrtf(ex * ex + ey * ey);
}

/* A whole-numbered v (floorf'd or ceilf'd) as a pixel bound in [0, n]:
 * defined for any float, so offsets that are huge, infinite or NaN (a broken
 * model's) draw nothing instead of overflowing the cast. */
static int bound(float v, int n)
{
    return !(v > 0) ? 0 : v >= (float)n ? n : (int)v;
}

/* Lines are rendered as capsules: coverage falls off over one pixel at the
 * edge, which anti-aliases without a second pass. */
void draw_line(canvas *c, float x0, float y0, float x1, float y1, float width, colour col)
{
    float r = width / 2.0f;
    int xa = bound(floorf(fminf(x0, x1) - r - 1), c->width), xb = bound(ceilf(fmaxf(x0, x1) + r + 1), c->width);
    int ya = bound(floorf(fminf(y0, y1) - r - 1), c->height), yb = bound(ceilf(fmaxf(y0, y1) + r + 1), c->height);
    for (int y = ya; y < yb; y++)
        for (int x = xa; x < xb; x++) {
            float d = segment_distance(x + 0.5f, y + 0.5f, x0, y0, x1, y1);
            canvas_blend(c, x, y, col, r + 0.5f - d);
        }
}

void draw_circle(canvas *c, float cx, float cy, float radius, float width, colour col)
{
    float reach = radius + width + 1;
    int xa = bound(floorf(cx - reach), c->width), xb = bound(ceilf(cx + reach), c->width);
    int ya = bound(floorf(cy - reach), c->height), yb = bound(ceilf(cy + reach), c->height);
    for (int y = ya; y < yb; y++)
        for (int x = xa; x < xb; x++) {
            float d = fabsf(hypotf(x + 0.5f - cx, y + 0.5f - cy) - radius);
            canvas_blend(c, x, y, col, width / 2.0f + 0.5f - d);
        }
}

void draw_disc(canvas *c, float cx, float cy, float radius, colour col)
{
    int xa = bound(floorf(cx - radius - 1), c->width), xb = bound(ceilf(cx + radius + 1), c->width);
    int ya = bound(floorf(cy - radius - 1), c->height), yb = bound(ceilf(cy + radius + 1), c->height);
    for (int y = ya; y < yb; y++)
        for (int x = xa; x < xb; x++)
            canvas_blend(c, x, y, col, radius + 0.5f - hypotf(x + 0.5f - cx, y + 0.5f - cy));
}

/* A pentagram: the five outer vertices joined every second one. */
void draw_star(canvas *c, float cx, float cy, float radius, float width, colour col)
{
    float vx[5], vy[5];
    for (int i = 0; i < 5; i++) {
        float a = (float)(-M_PI / 2 + i * 2 * M_PI / 5);
        vx[i] = cx + radius * cosf(a);
        vy[i] = cy + radius * sinf(a);
    }
    for (int i = 0; i < 5; i++) {
        int j = (i + 2) % 5;
        draw_line(c, vx[i], vy[i], vx[j], vy[j], width, col);
    }
}

void draw_arrow(canvas *c, float x0, float y0, float x1, float y1, float width, colour col)
{
    draw_line(c, x0, y0, x1, y1, width, col);
    float dx = x1 - x0, dy = y1 - y0, len = hypotf(dx, dy);
    if (len < 1e-3f) return;
    float head = fminf(4.0f * width + 2.0f, 0.5f * len);
    float ux = dx / len, uy = dy / len;
    for (int side = -1; side <= 1; side += 2) {
        float hx = x1 - head * (ux * 0.866f - side * uy * 0.5f);
        float hy = y1 - head * (uy * 0.866f + side * ux * 0.5f);
        draw_line(c, x1, y1, hx, hy, width, col);
    }
}

static void write_to_file(void *f, void *data, int size) { fwrite(data, 1, (size_t)size, f); }

int canvas_write_png(const canvas *c, FILE *f)
{
    return stbi_write_png_to_func(write_to_file, f, c->width, c->height, 3, c->rgb, c->width * 3) ? 0 : -1;
}
