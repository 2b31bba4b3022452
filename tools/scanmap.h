/* scanmap.h - where the Dynamic Adaptive Scan samples: the scan positions of
 * one block in input-image coordinates, and their picture. */
#ifndef DM_SCANMAP_H
#define DM_SCANMAP_H

#include "damamba.h"
#include "draw.h"

typedef struct scanmap {
    int stage, block;
    int grid_h, grid_w; /* the stage's grid */
    int groups;
    int step;           /* input pixels per grid step: 4 << stage */
    float *offsets;     /* grid_h x grid_w x groups x 2, as the forward pass used them */
} scanmap;

/* Run the model on one preprocessed image (channels x h x w) and keep the
 * offsets of (stage, block). */
dm_status scanmap_compute(const dm_model *model, const float *image, int h, int w, int stage, int block,
                          scanmap *out);
void scanmap_free(scanmap *map);

/* Input-image position (pixel units, pixel centres at integers) where scan
 * position p (row-major over the grid) of group g samples.  A 3x3 stride-2
 * convolution with padding 1 centres output pixel i on input pixel 2i, so
 * grid point q sits on input pixel step * q. */
void scanmap_position(const scanmap *map, int g, int p, float *x, float *y);

/* Scan positions drawn for a stride: 0, k, 2k, ... and always the last. */
int scanmap_next(const scanmap *map, int p, int stride);

/* Colour of group g's path. */
colour scanmap_colour(int g);

/* Draw the image (channels x h x w, de-normalized to [0, 1]) scaled by
 * scale, and over it the path of each selected group (group < 0: all):
 * every stride-th scan position joined in scan order, a star at the first,
 * a circle at the last; with arrows, one from each drawn pixel's own
 * position to where it samples. */
int scanmap_draw(const scanmap *map, const float *image, int channels, int h, int w, int scale, int group,
                 int stride, int arrows, canvas *out);

/* Canvas coordinate of an input-image position. */
static inline float scanmap_to_canvas(float v, int scale) { return (v + 0.5f) * (float)scale; }

#endif
