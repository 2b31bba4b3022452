/* fuzz_coco.c - a COCO annotation file as `damamba eval --task det` reads
 * it: the JSON, its images and ground truth (polygons, uncompressed and
 * compressed runs), then the evaluation of the ground truth against
 * itself as detections, boxes and masks. */
#include "coco_annotations.h"
#include "coco_eval.h"
#include "internal_api.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    dm_json *root = dm_json_parse((const char *)data, size, err, sizeof err);
    if (!root) return 0;
    coco_image *images = NULL;
    size_t count = 0;
    coco_objects gt = {0};
    if (coco_read_images(root, &images, &count, err, sizeof err) &&
        coco_read_ground_truth(root, images, count, &gt, err, sizeof err)) {
        int64_t *ids = malloc((count + 1) * sizeof *ids);
        coco_object *dt = malloc((gt.n + 1) * sizeof *dt);
        if (ids && dt) {
            for (size_t i = 0; i < count; i++) ids[i] = images[i].id;
            for (size_t i = 0; i < gt.n; i++) {
                dt[i] = gt.items[i];
                dt[i].score = (double)(i % 7) / 7.0;
                dt[i].iscrowd = 0;
            }
            coco_stats s;
            coco_evaluate(gt.items, gt.n, dt, gt.n, ids, count, COCO_BBOX, &s);
            coco_evaluate(gt.items, gt.n, dt, gt.n, ids, count, COCO_SEGM, &s);
        }
        free(ids);
        free(dt);
    }
    coco_objects_free(&gt);
    coco_images_free(images, count);
    dm_json_free(root);
    return 0;
}
