/* coco_annotations.h - what the detection evaluation reads from a COCO
 * annotation file (instances JSON, already parsed): its images and their
 * ground truth.  Every failure is a message in the caller's buffer; the
 * readers print nothing. */
#ifndef DM_COCO_ANNOTATIONS_H
#define DM_COCO_ANNOTATIONS_H

#include <stddef.h>
#include <stdint.h>

#include "coco_eval.h"

struct dm_json;

/* An entry of the "images" list; width and height are 0 where absent,
 * not from 1 to 65536, or of 2^32 pixels or more. */
typedef struct coco_image {
    char *file_name;
    int64_t id;
    int width, height;
} coco_image;

/* A growing array of objects, each owning its mask. */
typedef struct coco_objects {
    coco_object *items;
    size_t n, cap;
} coco_objects;

/* The "images" list into *out (count entries); 0 with the reason in err
 * when it is missing or an entry lacks a file name or an integer id. */
int coco_read_images(const struct dm_json *root, coco_image **out, size_t *count, char *err, size_t err_size);
void coco_images_free(coco_image *images, size_t count);

/* The annotations of the given images (sizes known) into gt, their masks
 * decoded as pycocotools' annToRLE does: polygons merged, uncompressed
 * runs or a compressed string; other images' annotations are skipped.  0
 * with the reason in err when an annotation is malformed, a polygon lies
 * beyond +-2^20 pixels or its outline is implausibly long, or memory runs
 * out. */
int coco_read_ground_truth(const struct dm_json *root, const coco_image *images, size_t count, coco_objects *gt,
                           char *err, size_t err_size);

/* A new zeroed object at the end of o; NULL when out of memory. */
coco_object *coco_objects_add(coco_objects *o);
void coco_objects_free(coco_objects *o);

#endif
