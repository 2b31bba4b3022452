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
    if (dm_image_load(path, 3, img) != DM_OK || dm_mm_transform_size(&t, img->width, img->height, &h, &w, sf) != DM_OK)
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

static int json_int(const dm_json *o, const char *key, int64_t *out)
{
    const dm_json *v = dm_json_get(o, key);
    if (!v || v->type != DM_JSON_NUMBER || !v->is_integer) return 0;
    *out = v->integer;
    return 1;
}

int cli_coco_images(const dm_json *root, const char *path, cli_coco_image **out, size_t *count)
{
    const dm_json *images = dm_json_get(root, "images");
    *out = NULL;
    *count = 0;
    if (!images || images->type != DM_JSON_ARRAY) {
        cli_error("%s: no \"images\" list: not a COCO annotation file", path);
        return 0;
    }
    if (!(*out = calloc(images->count + 1, sizeof **out))) {
        cli_error("out of memory");
        return 0;
    }
    for (const dm_json *e = images->child; e; e = e->next) {
        cli_coco_image *im = &(*out)[*count];
        const dm_json *name = dm_json_get(e, "file_name");
        int64_t w = 0, h = 0;
        if (!name || name->type != DM_JSON_STRING || !json_int(e, "id", &im->id)) {
            cli_error("%s: image %zu has no file_name and integer id", path, *count);
            cli_coco_images_free(*out, *count);
            return 0;
        }
        /* sizes are needed only to evaluate masks */
        json_int(e, "width", &w);
        json_int(e, "height", &h);
        im->width = w > 0 && w <= 65536 ? (int)w : 0;
        im->height = h > 0 && h <= 65536 ? (int)h : 0;
        if (!(im->file_name = strdup(name->string))) {
            cli_error("out of memory");
            cli_coco_images_free(*out, *count);
            return 0;
        }
        (*count)++;
    }
    return 1;
}

void cli_coco_images_free(cli_coco_image *images, size_t count)
{
    for (size_t i = 0; images && i < count; i++) free(images[i].file_name);
    free(images);
}
