/* coco_eval.h - COCO's detection metrics as the official evaluation
 * (pycocotools' COCOeval) computes them: boxes or masks matched greedily
 * by score at IoU 0.50:0.05:0.95, precision interpolated at 101 recall
 * points, averaged over categories that have ground truth; crowd regions
 * and objects outside an area range are ignored.  Masks are run-length
 * encoded as COCO encodes them: runs over the column-major pixels,
 * starting with a run of zeros. */
#ifndef DM_COCO_EVAL_H
#define DM_COCO_EVAL_H

#include <stddef.h>
#include <stdint.h>

/* A mask of h x w pixels as runs (alternately 0s and 1s, column-major). */
typedef struct coco_rle {
    uint32_t *counts;
    size_t n;
    int h, w;
} coco_rle;

/* A ground-truth object or a detection. */
typedef struct coco_object {
    int64_t image_id;
    int category_id;
    double bbox[4]; /* x, y, w, h */
    double area;    /* ground truth: the annotation's area; detections: bbox or mask area */
    int iscrowd;
    double score;   /* detections */
    coco_rle mask;  /* when evaluating masks */
} coco_object;

enum { COCO_BBOX, COCO_SEGM };

/* The summary: AP at IoU .50:.95, at .50, at .75, for small, medium and
 * large objects (all at 100 detections), and AR at 100 detections; -1
 * where no category has ground truth in that range. */
typedef struct coco_stats {
    double ap, ap50, ap75, ap_small, ap_medium, ap_large, ar100;
} coco_stats;

/* Evaluate detections against ground truth over the given images; returns
 * 0 when out of memory. */
int coco_evaluate(const coco_object *gts, size_t ngt, const coco_object *dts, size_t ndt, const int64_t *image_ids,
                  size_t nimages, int iou_type, coco_stats *out);

/* The RLE of a 0/1 bitmap (row-major h x w); 0 when out of memory. */
int coco_rle_from_bitmap(const uint8_t *mask, int h, int w, coco_rle *out);
/* The RLE of a polygon (x0, y0, x1, y1, ... in pixels, k points) rasterized
 * as pycocotools' rleFrPoly does: 1; 0 when out of memory; -1 when a
 * coordinate is not a number within +-COCO_MAX_COORD or the outline,
 * traced at 5 points per pixel, exceeds COCO_MAX_OUTLINE points. */
#define COCO_MAX_COORD 1048576.0
#define COCO_MAX_OUTLINE ((size_t)1 << 24)
int coco_rle_from_polygon(const double *xy, size_t k, int h, int w, coco_rle *out);
/* The union of two masks of the same size into out; 0 when out of memory. */
int coco_rle_union(const coco_rle *a, const coco_rle *b, coco_rle *out);
/* Decode COCO's compressed string form; 0 when malformed or out of memory. */
int coco_rle_from_string(const char *s, int h, int w, coco_rle *out);
uint64_t coco_rle_area(const coco_rle *r);
void coco_rle_free(coco_rle *r);

#endif
