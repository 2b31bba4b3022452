/* cmd_eval_det.c - `damamba eval --task det`: box and mask AP of a Mask
 * R-CNN model on the annotated images of a folder, by COCO's protocol. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coco_eval.h"
#include "internal_api.h"

/* A growing array of objects. */
typedef struct objects {
    coco_object *items;
    size_t n, cap;
} objects;

static coco_object *objects_add(objects *o)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 256;
        coco_object *grown = realloc(o->items, cap * sizeof *grown);
        if (!grown) return NULL;
        o->items = grown;
        o->cap = cap;
    }
    o->items[o->n] = (coco_object){0};
    return &o->items[o->n++];
}

static void objects_free(objects *o)
{
    for (size_t i = 0; i < o->n; i++) coco_rle_free(&o->items[i].mask);
    free(o->items);
    *o = (objects){0};
}

static const cli_coco_image *image_by_id(const cli_coco_image *images, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (images[i].id == id) return &images[i];
    return NULL;
}

/* An annotation's mask: polygons (merged), uncompressed runs, or a
 * compressed string, as pycocotools' annToRLE reads them. */
static int annotation_mask(const dm_json *seg, int h, int w, coco_rle *out)
{
    if (seg->type == DM_JSON_ARRAY) {
        coco_rle acc = {0};
        int ok = 1;
        for (const dm_json *poly = seg->child; ok && poly; poly = poly->next) {
            if (poly->type != DM_JSON_ARRAY || poly->count < 6 || poly->count % 2) return 0;
            double *xy = malloc(poly->count * sizeof(double));
            size_t k = 0;
            for (const dm_json *v = poly->child; xy && v; v = v->next) xy[k++] = v->type == DM_JSON_NUMBER ? v->number : 0;
            coco_rle one, merged;
            ok = xy && coco_rle_from_polygon(xy, poly->count / 2, h, w, &one);
            free(xy);
            if (ok && acc.counts) {
                ok = coco_rle_union(&acc, &one, &merged);
                coco_rle_free(&acc);
                coco_rle_free(&one);
                acc = merged;
            } else if (ok) {
                acc = one;
            }
        }
        if (!ok || !acc.counts) {
            coco_rle_free(&acc);
            return 0;
        }
        *out = acc;
        return 1;
    }
    const dm_json *counts = dm_json_get(seg, "counts");
    if (!counts) return 0;
    if (counts->type == DM_JSON_STRING) return coco_rle_from_string(counts->string, h, w, out);
    if (counts->type != DM_JSON_ARRAY) return 0;
    *out = (coco_rle){.h = h, .w = w, .counts = malloc((counts->count + 1) * sizeof(uint32_t))};
    uint64_t total = 0;
    for (const dm_json *c = counts->child; out->counts && c; c = c->next) {
        if (c->type != DM_JSON_NUMBER || !c->is_integer || c->integer < 0 || c->integer > UINT32_MAX) break;
        out->counts[out->n++] = (uint32_t)c->integer;
        total += (uint64_t)c->integer;
    }
    if (out->counts && out->n == counts->count && total == (uint64_t)h * w) return 1;
    coco_rle_free(out);
    return 0;
}

/* The ground truth of the chosen images (those with a mask size). */
static int load_ground_truth(const dm_json *root, const char *path, const cli_coco_image *images, size_t nimages,
                             objects *gt)
{
    const dm_json *anns = dm_json_get(root, "annotations");
    if (!anns || anns->type != DM_JSON_ARRAY) {
        cli_error("%s: no \"annotations\" list", path);
        return 0;
    }
    size_t index = 0;
    for (const dm_json *a = anns->child; a; a = a->next, index++) {
        const dm_json *image = dm_json_get(a, "image_id"), *cat = dm_json_get(a, "category_id");
        const dm_json *bbox = dm_json_get(a, "bbox"), *area = dm_json_get(a, "area"), *crowd = dm_json_get(a, "iscrowd");
        const dm_json *seg = dm_json_get(a, "segmentation");
        if (!image || !image->is_integer || !cat || !cat->is_integer || !bbox || bbox->type != DM_JSON_ARRAY ||
            bbox->count != 4 || !area || area->type != DM_JSON_NUMBER) {
            cli_error("%s: annotation %zu lacks image_id, category_id, bbox or area", path, index);
            return 0;
        }
        const cli_coco_image *im = image_by_id(images, nimages, image->integer);
        if (!im) continue; /* an image not evaluated */
        coco_object *o = objects_add(gt);
        if (!o) {
            cli_error("out of memory");
            return 0;
        }
        o->image_id = image->integer;
        o->category_id = (int)cat->integer;
        o->area = area->number;
        o->iscrowd = crowd && crowd->type == DM_JSON_NUMBER && crowd->number != 0;
        size_t k = 0;
        for (const dm_json *v = bbox->child; v; v = v->next) o->bbox[k++] = v->number;
        if (!seg || !im->width || !im->height || !annotation_mask(seg, im->height, im->width, &o->mask)) {
            cli_error("%s: annotation %zu: no segmentation readable for a %dx%d image", path, index, im->width,
                      im->height);
            return 0;
        }
    }
    return 1;
}

/* One image's detections as COCO results would hold them. */
static int add_detections(const dm_detections *d, int64_t image_id, const cli_det_classes *labels, objects *dt)
{
    for (int i = 0; i < d->count; i++) {
        coco_object *o = objects_add(dt);
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
    cli_coco_image *images = NULL;
    size_t nimages = 0, evaluated = 0;
    objects gt = {0}, dt = {0};
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
        snprintf(path, sizeof path, "%s/%s", dir, images[i].file_name);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) images[kept++] = images[i];
        else free(images[i].file_name);
    }
    nimages = kept;
    if (!nimages) {
        cli_error("%s: none of the images of %s", dir, annotations);
        goto done;
    }
    if (!(ids = malloc(nimages * sizeof *ids)) || !load_ground_truth(root, annotations, images, nimages, &gt)) {
        if (!ids) cli_error("out of memory");
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
        const char *error = cli_detect_file(&det, path, &img, &d);
        cli_progress_clear(&progress);
        if (!error && (img.width != images[i].width || img.height != images[i].height)) error = "size differs from the annotation file's";
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
    cli_progress_end(&progress, "detected");
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
    objects_free(&gt);
    objects_free(&dt);
    free(ids);
    cli_coco_images_free(images, nimages);
    cli_detector_free(&det);
    cli_det_classes_free(&labels);
    dm_model_free(m);
    return rc;
}
