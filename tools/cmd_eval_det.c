/* cmd_eval_det.c - `damamba eval --task det`: box and mask AP of a Mask
 * R-CNN model on the annotated images of a folder, by COCO's protocol. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coco_eval.h"
#include "internal_api.h"

/* One image's detections as COCO results would hold them. */
static int add_detections(const dm_detections *d, int64_t image_id, const cli_det_classes *labels, coco_objects *dt)
{
    for (int i = 0; i < d->count; i++) {
        coco_object *o = coco_objects_add(dt);
        if (!o || !coco_rle_from_string(d->rle[i], d->mask_h, d->mask_w, &o->mask)) return 0;
        const float *b = d->boxes + 4 * i;
        o->image_id = image_id;
        o->category_id = labels->ids[d->labels[i]];
        o->score = d->scores[i];
        o->bbox[0] = b[0];
        o->bbox[1] = b[1];
        o->bbox[2] = (double)b[2] - b[0];
        o->bbox[3] = (double)b[3] - b[1];
    }
    return 1;
}

static void print_stats(const char *what, const coco_stats *s)
{
    printf("%s: AP %.3f  AP50 %.3f  AP75 %.3f  APs %.3f  APm %.3f  APl %.3f  AR100 %.3f\n", what, s->ap, s->ap50,
           s->ap75, s->ap_small, s->ap_medium, s->ap_large, s->ar100);
}

int cli_eval_detection(const char *model_path, dm_backend backend, const char *annotations, const char *dir,
                       float score_thr, int quiet)
{
    cli_detector det = {.backend = backend};
    cli_det_classes labels = {0};
    coco_image *images = NULL;
    size_t nimages = 0, evaluated = 0;
    coco_objects gt = {0}, dt = {0};
    int64_t *ids = NULL;
    int rc = 1, failed = 0;
    dm_json *root = cli_coco_load(annotations);
    dm_model *m = root ? cli_load_model(model_path, 0) : NULL;
    if (!m || !cli_det_classes_load(m, &labels) || !cli_coco_images(root, annotations, &images, &nimages)) goto done;
    if (dm_model_config(m)->det_classes == 0) {
        cli_error("%s: not a detection model (it has no Mask R-CNN heads)", model_path);
        goto done;
    }
    /* the annotated images present in the folder */
    size_t kept = 0;
    for (size_t i = 0; i < nimages; i++) {
        char path[4096];
        struct stat sb;
        /* a name too long for a path names no file of the folder */
        if (snprintf(path, sizeof path, "%s/%s", dir, images[i].file_name) < (int)sizeof path &&
            stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            images[kept++] = images[i];
        else free(images[i].file_name);
    }
    nimages = kept;
    if (!nimages) {
        cli_error("%s: none of the images of %s", dir, annotations);
        goto done;
    }
    char err[256];
    if (!(ids = malloc(nimages * sizeof *ids))) {
        cli_error("out of memory");
        goto done;
    }
    if (!coco_read_ground_truth(root, images, nimages, &gt, err, sizeof err)) {
        cli_error("%s: %s", annotations, err);
        goto done;
    }
    dm_json_free(root);
    root = NULL;
    det.model = m;
    dm_det_settings_default(&det.settings);
    det.settings.score_thr = score_thr;
    det.settings.masks = DM_MASKS_RLE;
    cli_progress progress;
    cli_progress_start(&progress, nimages, quiet);
    for (size_t i = 0; i < nimages; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, images[i].file_name);
        dm_image img = {0};
        dm_detections d = {0};
        /* a size the file does not give is known before anything is detected */
        const char *error = images[i].width ? cli_detect_file(&det, path, &img, &d)
                                            : "the annotation file gives no width and height for it";
        cli_progress_clear(&progress);
        /* mmdet's loading turns a photo by its EXIF orientation, and
         * evaluates it so against annotations of the stored one: width and
         * height may have traded places */
        int same = img.width == images[i].width && img.height == images[i].height;
        int turned = img.width == images[i].height && img.height == images[i].width;
        if (!error && !same && !turned) error = "size differs from the annotation file's";
        if (error) {
            cli_error("%s: %s", path, error);
            failed = 1;
        } else if (!add_detections(&d, images[i].id, &labels, &dt)) {
            cli_error("out of memory");
            failed = 1;
        } else {
            ids[evaluated++] = images[i].id;
        }
        dm_detections_free(&d);
        dm_image_free(&img);
        cli_progress_update(&progress, i + 1, i + 1 - evaluated);
    }
    cli_progress_end(&progress, "evaluated"); /* as eval's other tasks end */
    if (!evaluated) { /* an AP of nothing is no measurement */
        cli_error("%s: no image could be evaluated", dir);
        goto done;
    }
    /* detections' areas: their boxes' for boxes, their masks' for masks */
    coco_stats box, segm;
    for (size_t i = 0; i < dt.n; i++) dt.items[i].area = dt.items[i].bbox[2] * dt.items[i].bbox[3];
    int ok = coco_evaluate(gt.items, gt.n, dt.items, dt.n, ids, evaluated, COCO_BBOX, &box);
    for (size_t i = 0; i < dt.n; i++) dt.items[i].area = (double)coco_rle_area(&dt.items[i].mask);
    ok = ok && coco_evaluate(gt.items, gt.n, dt.items, dt.n, ids, evaluated, COCO_SEGM, &segm);
    if (!ok) {
        cli_error("out of memory");
        goto done;
    }
    print_stats("bbox", &box);
    print_stats("segm", &segm);
    printf("bbox_mAP=%.4f segm_mAP=%.4f n=%zu\n", box.ap, segm.ap, evaluated);
    rc = failed ? 1 : 0;
done:
    dm_json_free(root);
    coco_objects_free(&gt);
    coco_objects_free(&dt);
    free(ids);
    coco_images_free(images, nimages);
    cli_detector_free(&det);
    cli_det_classes_free(&labels);
    dm_model_free(m);
    return rc;
}
