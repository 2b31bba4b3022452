#include "draw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

int canvas_init(canvas *c, int width, int height)
{
    c->width = width;
    c->height = height;
    c->rgb = (size_t)width * height <= CANVAS_MAX_PIXELS ? calloc((size_t)width * height, 3) : NULL;
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

/* Clip the segment to the rectangle [xa, xb] x [ya, yb] (Liang and
 * Barsky's parameters, in double: a far end loses no precision of the
 * near part); 0 when nothing of it is inside, or when it is not finite. */
static int clip_segment(float *x0, float *y0, float *x1, float *y1, float xa, float ya, float xb, float yb)
{
    if (!isfinite(*x0) || !isfinite(*y0) || !isfinite(*x1) || !isfinite(*y1)) return 0;
    double sx = *x0, sy = *y0, dx = (double)*x1 - sx, dy = (double)*y1 - sy, t0 = 0.0, t1 = 1.0;
    /* each edge keeps p * t <= q */
    double p[4] = {-dx, dx, -dy, dy}, q[4] = {sx - xa, xb - sx, sy - ya, yb - sy};
    for (int e = 0; e < 4; e++) {
        if (p[e] == 0.0) {
            if (q[e] < 0.0) return 0;
            continue;
        }
        double t = q[e] / p[e];
        if (p[e] < 0.0) t0 = t > t0 ? t : t0;
        else t1 = t < t1 ? t : t1;
    }
    if (!(t0 <= t1)) return 0;
    *x0 = (float)(sx + t0 * dx), *y0 = (float)(sy + t0 * dy);
    *x1 = (float)(sx + t1 * dx), *y1 = (float)(sy + t1 * dy);
    return 1;
}

/* Lines are rendered as capsules: coverage falls off over one pixel at the
 * edge, which anti-aliases without a second pass.  Only the part within
 * reach of the canvas is walked, along its longer axis, each step over the
 * capsule's cross-section: a line costs its visible length times its
 * width, however far it runs off the canvas. */
void draw_line(canvas *c, float x0, float y0, float x1, float y1, float width, colour col)
{
    float r = width / 2.0f, reach = r + 1.0f;
    if (!clip_segment(&x0, &y0, &x1, &y1, -reach, -reach, c->width + reach, c->height + reach)) return;
    int steep = fabsf(y1 - y0) > fabsf(x1 - x0);
    /* a: the longer axis, b: the other, a0 <= a1 */
    float a0 = steep ? y0 : x0, a1 = steep ? y1 : x1, b0 = steep ? x0 : y0, b1 = steep ? x1 : y1;
    if (a0 > a1) {
        float t = a0;
        a0 = a1, a1 = t, t = b0, b0 = b1, b1 = t;
    }
    int na = steep ? c->height : c->width, nb = steep ? c->width : c->height;
    float slope = a1 > a0 ? (b1 - b0) / (a1 - a0) : 0.0f;
    /* |slope| <= 1: within r + 0.5 of the line means within 1.5 (r + 0.5)
     * of it along b */
    float span = 1.5f * (r + 0.5f) + 1.0f;
    int aa = bound(floorf(a0 - reach), na), ab = bound(ceilf(a1 + reach), na);
    for (int a = aa; a < ab; a++) {
        float t = a + 0.5f < a0 ? a0 : a + 0.5f > a1 ? a1 : a + 0.5f;
        float b = b0 + (t - a0) * slope;
        int ba = bound(floorf(b - span), nb), bb = bound(ceilf(b + span), nb);
        for (int k = ba; k < bb; k++) {
            int x = steep ? k : a, y = steep ? a : k;
            float d = segment_distance(x + 0.5f, y + 0.5f, x0, y0, x1, y1);
            canvas_blend(c, x, y, col, r + 0.5f - d);
        }
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
