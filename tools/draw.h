/* draw.h - a small RGB raster for the scan maps: anti-aliased lines,
 * circles, stars and arrows, written as PNG. */
#ifndef DM_DRAW_H
#define DM_DRAW_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

typedef struct canvas {
    int width, height;
    uint8_t *rgb; /* width * height * 3 */
} canvas;

typedef struct colour {
    uint8_t r, g, b;
} colour;

/* The most pixels a canvas holds: the PNG writer counts the bytes of its
 * rows (3 a pixel, 1 a row more) in an int. */
#define CANVAS_MAX_PIXELS (INT_MAX / 4)

/* 0 on success, -1 when out of memory or over CANVAS_MAX_PIXELS. */
int canvas_init(canvas *c, int width, int height);
void canvas_free(canvas *c);

/* Blend colour into pixel (x, y) with coverage a in [0, 1]; outside: no-op. */
void canvas_blend(canvas *c, int x, int y, colour col, float a);

/* Shapes in canvas pixel coordinates (pixel centres at integer + 0.5). */
void draw_line(canvas *c, float x0, float y0, float x1, float y1, float width, colour col);
void draw_circle(canvas *c, float cx, float cy, float radius, float width, colour col);
void draw_disc(canvas *c, float cx, float cy, float radius, colour col);
void draw_star(canvas *c, float cx, float cy, float radius, float width, colour col);
void draw_arrow(canvas *c, float x0, float y0, float x1, float y1, float width, colour col);

/* Write as PNG to f; 0 on success. */
int canvas_write_png(const canvas *c, FILE *f);

#endif
