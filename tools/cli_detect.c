/* cli_detect.c - what `damamba detect` and `damamba eval --task det`
 * share: detecting in image files, reading COCO annotation files. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "internal_api.h"

int cli_det_classes_load(const dm_model *model, cli_det_classes *out)
{
    *out = (cli_det_classes){0};
    int classes = dm_model_config(model)->det_classes;
    const char *const *names = dm_model_class_names(model);
    if (classes < 1 || !(out->ids = dm_model_category_ids(model))) {
        cli_error("not a detection model (it has no Mask R-CNN heads)");
        return 0;
    }
    if (!(out->names = calloc((size_t)classes, sizeof(char *))) ||
        (!names && !(out->fallback = calloc((size_t)classes, sizeof *out->fallback)))) {
        cli_error("out of memory");
        cli_det_classes_free(out);
        return 0;
    }
    for (int i = 0; i < classes; i++) {
        if (!names) snprintf(out->fallback[i], sizeof out->fallback[i], "class %d", i);
        out->names[i] = names ? names[i] : out->fallback[i];
    }
    return 1;
}

void cli_det_classes_free(cli_det_classes *c)
{
    free(c->names);
    free(c->fallback);
    *c = (cli_det_classes){0};
}

const char *cli_detect_file(cli_detector *det, const char *path, dm_image *img, dm_detections *out)
{
    dm_mm_transform t = dm_mm_transform_coco();
    float sf[4], *input = NULL;
    int h, w;
    if (cli_image_load(path, 3, DM_IMAGE_OPENCV, img) != DM_OK ||
        dm_mm_transform_size(&t, img->width, img->height, &h, &w, sf) != DM_OK)
        return dm_last_error();
    int ph = dm_mm_padded(&t, h), pw = dm_mm_padded(&t, w);
    if (!det->ws || ph > det->ws_h || pw > det->ws_w) {
        /* grow to fit both orientations seen so far */
        dm_workspace_free(det->ws);
        det->ws_h = ph > det->ws_h ? ph : det->ws_h;
        det->ws_w = pw > det->ws_w ? pw : det->ws_w;
        if (!(det->ws = cli_workspace_open(det->model, det->backend, 1, det->ws_h, det->ws_w))) return dm_last_error();
    }
    if (!(input = malloc(sizeof(float) * 3 * ph * pw))) return "out of memory";
    dm_det_image im = {h, w, img->height, img->width, {sf[0], sf[1], sf[2], sf[3]}};
    dm_status st = dm_mm_transform_image(img, &t, input);
    if (!st) st = dm_detect(det->model, det->ws, input, ph, pw, &im, &det->settings, out);
    free(input);
    return st ? dm_last_error() : NULL;
}

void cli_detector_free(cli_detector *det)
{
    dm_workspace_free(det->ws);
    det->ws = NULL;
}

dm_json *cli_coco_load(const char *path)
{
    size_t size;
    char *text = cli_read_file(path, &size), err[160];
    if (!text) return NULL;
    dm_json *root = dm_json_parse(text, size, err, sizeof err);
    free(text);
    if (!root) cli_error("%s: %s", path, err);
    return root;
}

int cli_coco_images(const dm_json *root, const char *path, coco_image **out, size_t *count)
{
    char err[256];
    if (coco_read_images(root, out, count, err, sizeof err)) return 1;
    cli_error("%s: %s", path, err);
    return 0;
}
