/* classes.c - what a classifier's logits, a segmentation model's labels or
 * a detector's classes mean: class names (the model's metadata, ImageNet's,
 * ADE20K's or COCO's built-in lists), colours of the labels, COCO category
 * ids, softmax probabilities and the top k. */
#include "classes.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "model.h"

/* The built-in lists, linked in by embed.S: ImageNet's names one per line,
 * ADE20K's "name\tR G B" and COCO's "name\tcategory id" per line. */
extern char dm_imagenet_classes_text[];
extern char dm_ade20k_classes_text[];
extern char dm_coco_classes_text[];

#define ADE20K_CLASSES 150

static const char *imagenet_names[DM_IMAGENET_CLASSES];
static pthread_once_t imagenet_once = PTHREAD_ONCE_INIT;
static const char *ade20k_names[ADE20K_CLASSES];
static uint8_t ade20k_palette[3 * ADE20K_CLASSES];
static pthread_once_t ade20k_once = PTHREAD_ONCE_INIT;
static const char *coco_names[DM_COCO_CLASSES];
static int coco_ids[DM_COCO_CLASSES];
static pthread_once_t coco_once = PTHREAD_ONCE_INIT;

/* Split a built-in list into its lines, in place (it is never read as a
 * whole): names[i] is line i up to a tab, fields[i] (if fields is not NULL)
 * the rest of the line after the tab, "" without one. */
static void split_lines(char *p, int count, const char **names, char **fields)
{
    for (int i = 0; i < count && *p; i++) {
        names[i] = p;
        p += strcspn(p, "\t\n");
        if (*p == '\t') *p++ = '\0';
        if (fields) fields[i] = p;
        p += strcspn(p, "\n");
        if (*p) *p++ = '\0';
    }
}

static void split_imagenet(void)
{
    split_lines(dm_imagenet_classes_text, DM_IMAGENET_CLASSES, imagenet_names, NULL);
}

const char *const *dm_imagenet_class_names(void)
{
    pthread_once(&imagenet_once, split_imagenet);
    return imagenet_names;
}

static void split_ade20k(void)
{
    char *colours[ADE20K_CLASSES] = {0};
    split_lines(dm_ade20k_classes_text, ADE20K_CLASSES, ade20k_names, colours);
    for (int i = 0; i < ADE20K_CLASSES && colours[i]; i++) {
        char *p = colours[i];
        for (int c = 0; c < 3; c++) ade20k_palette[3 * i + c] = (uint8_t)strtol(p, &p, 10);
    }
}

/* The classes a model's names and colours are for: the classifier's, the
 * segmentation head's or the detector's. */
static int class_count(const dm_model *model)
{
    const dm_config *cfg = &model->config;
    return cfg->num_classes ? cfg->num_classes : cfg->seg_classes ? cfg->seg_classes : cfg->det_classes;
}

/* Parse the metadata "palette", a JSON list of `classes` [r, g, b], into a
 * new model->palette. */
static dm_status parse_palette(dm_model *model, const char *text, int classes)
{
    char err[128];
    dm_json *root = dm_json_parse(text, strlen(text), err, sizeof err);
    int ok = root && root->type == DM_JSON_ARRAY && root->count == (size_t)classes, k = 0;
    dm_status st = !root && dm_json_out_of_memory(err) ? dm_fail(DM_ERR_NOMEM, "%s reading metadata 'palette'", err)
                                                       : DM_OK;
    if (ok && !(model->palette = malloc(3 * (size_t)classes))) st = dm_fail(DM_ERR_NOMEM, "out of memory");
    for (const dm_json *e = ok && !st ? root->child : NULL; e && ok; e = e->next, k++) {
        ok = e->type == DM_JSON_ARRAY && e->count == 3;
        int c = 0;
        for (const dm_json *v = ok ? e->child : NULL; v && ok; v = v->next, c++) {
            ok = v->type == DM_JSON_NUMBER && v->number >= 0 && v->number <= 255;
            if (ok) model->palette[3 * k + c] = (uint8_t)v->number;
        }
    }
    dm_json_free(root);
    if (!st && !ok) st = dm_fail(DM_ERR_MODEL, "metadata 'palette' (a .pth's meta PALETTE) is not a JSON list of %d [r, g, b] "
                                   "colours (the model's classes)", classes);
    return st;
}

static void split_coco(void)
{
    char *ids[DM_COCO_CLASSES] = {0};
    split_lines(dm_coco_classes_text, DM_COCO_CLASSES, coco_names, ids);
    for (int i = 0; i < DM_COCO_CLASSES && ids[i]; i++) coco_ids[i] = atoi(ids[i]);
}

const char *const *dm_coco_class_names(void)
{
    pthread_once(&coco_once, split_coco);
    return coco_names;
}

const int *dm_coco_category_ids(void)
{
    pthread_once(&coco_once, split_coco);
    return coco_ids;
}

/* A detector's names from metadata in one of its three forms. */
static dm_status parse_detector_names(dm_model *model, const char *text, int classes)
{
    char sep = strchr(text, '\n') ? '\n' : ',';
    if (!(model->class_names = calloc((size_t)classes, sizeof(char *))))
        return dm_fail(DM_ERR_NOMEM, "out of memory for the class names");
    int n = 0;
    for (const char *p = text; *p; n++) {
        size_t len = strcspn(p, (char[]){sep, '\t', 0}), end = len + strcspn(p + len, (char[]){sep, 0});
        if (n < classes && !(model->class_names[n] = strndup(p, len)))
            return dm_fail(DM_ERR_NOMEM, "out of memory for the class names");
        p += end + (p[end] == sep);
    }
    if (n != classes)
        return dm_fail(DM_ERR_MODEL, "metadata 'classes' (a .pth's meta CLASSES) names %d classes, the model has %d",
                       n, classes);
    return DM_OK;
}

/* COCO's category ids when every name is one of COCO's, else index + 1. */
static dm_status category_ids(dm_model *model, int classes)
{
    const char *const *names = dm_model_class_names(model), *const *coco = dm_coco_class_names();
    if (!(model->category_ids = calloc((size_t)classes, sizeof(int))))
        return dm_fail(DM_ERR_NOMEM, "out of memory for the category ids");
    int all = names != NULL;
    for (int i = 0; all && i < classes; i++) {
        for (int j = 0; j < DM_COCO_CLASSES && !model->category_ids[i]; j++)
            if (strcmp(names[i], coco[j]) == 0) model->category_ids[i] = dm_coco_category_ids()[j];
        all = model->category_ids[i] > 0;
    }
    for (int i = 0; !all && i < classes; i++) model->category_ids[i] = i + 1;
    return DM_OK;
}

/* A JSON list of the model's `classes` names. */
static dm_status parse_class_names(dm_model *model, const char *text, int classes)
{
    char err[128];
    dm_json *root = dm_json_parse(text, strlen(text), err, sizeof err);
    dm_status st = DM_OK;
    if (!root && dm_json_out_of_memory(err)) {
        st = dm_fail(DM_ERR_NOMEM, "%s reading metadata 'classes'", err);
    } else if (!root || root->type != DM_JSON_ARRAY || root->count != (size_t)classes) {
        st = dm_fail(DM_ERR_MODEL, "metadata 'classes' (a .pth's meta CLASSES) is not a JSON list of %d names "
                                   "(the model's classes)", classes);
    } else if (!(model->class_names = calloc((size_t)classes, sizeof(char *)))) {
        st = dm_fail(DM_ERR_NOMEM, "out of memory for the class names");
    } else {
        int i = 0;
        for (const dm_json *e = root->child; e && st == DM_OK; e = e->next, i++) {
            if (e->type != DM_JSON_STRING)
                st = dm_fail(DM_ERR_MODEL, "metadata 'classes': entry %d is not a string", i);
            else if (!(model->class_names[i] = strdup(e->string)))
                st = dm_fail(DM_ERR_NOMEM, "out of memory for the class names");
        }
    }
    dm_json_free(root);
    return st;
}

/* The names first: a palette that does not fit is usually one of a list
 * of names that does not fit either, and the names say more. */
dm_status dm_model_parse_classes(dm_model *model)
{
    int detector = model->config.num_classes == 0 && model->config.det_classes > 0;
    int classes = class_count(model);
    const char *text = dm_model_metadata(model, "classes");
    if (detector && (!text || text[0] != '[')) { /* a JSON list is read below */
        dm_status st = text ? parse_detector_names(model, text, classes) : DM_OK;
        return st ? st : category_ids(model, classes);
    }
    if (text && classes > 0) {
        dm_status st = parse_class_names(model, text, classes);
        if (st) return st;
    }
    if (detector) return category_ids(model, classes);
    const char *palette = dm_model_metadata(model, "palette");
    return palette && model->config.seg_classes ? parse_palette(model, palette, classes) : DM_OK;
}

void dm_model_free_classes(dm_model *model)
{
    for (int i = 0; model->class_names && i < class_count(model); i++) free(model->class_names[i]);
    free(model->class_names);
    free(model->category_ids);
    model->class_names = NULL;
    model->category_ids = NULL;
    free(model->palette);
    model->palette = NULL;
}

const char *const *dm_model_class_names(const dm_model *model)
{
    if (!model) return NULL;
    if (model->class_names) return (const char *const *)model->class_names;
    if (model->config.seg_classes == ADE20K_CLASSES) {
        pthread_once(&ade20k_once, split_ade20k);
        return ade20k_names;
    }
    if (model->config.num_classes == 0 && model->config.det_classes == DM_COCO_CLASSES) return dm_coco_class_names();
    return model->config.num_classes == DM_IMAGENET_CLASSES ? dm_imagenet_class_names() : NULL;
}

const uint8_t *dm_model_palette(const dm_model *model)
{
    if (!model || !model->config.seg_classes) return NULL;
    if (model->palette) return model->palette;
    if (model->config.seg_classes == ADE20K_CLASSES) {
        pthread_once(&ade20k_once, split_ade20k);
        return ade20k_palette;
    }
    return NULL;
}

const int *dm_model_category_ids(const dm_model *model) { return model ? model->category_ids : NULL; }

dm_status dm_softmax(const float *logits, int n, float *probs)
{
    if (!logits || !probs || n < 1) return dm_fail(DM_ERR_ARGUMENT, "dm_softmax: NULL pointer or n %d < 1", n);
    double max = logits[0], sum = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > max) max = logits[i];
    for (int i = 0; i < n; i++) sum += exp(logits[i] - max);
    for (int i = 0; i < n; i++) probs[i] = (float)(exp(logits[i] - max) / sum);
    return DM_OK;
}

/* Class a ranks above class b: a larger score, ties to the lower index.  A
 * NaN ranks above every number, as torch.topk ranks it (and the order stays
 * one order, whatever the scores). */
static int ranks_above(const float *scores, int a, int b)
{
    float x = scores[a], y = scores[b];
    if (isnan(x) || isnan(y)) return isnan(x) && (!isnan(y) || a < b);
    return x > y || (x == y && a < b);
}

/* Restore the heap below position i: every class ranks above its parent,
 * so heap[0] is the lowest-ranked kept. */
static void sift_down(const float *scores, int *heap, int size, int i)
{
    for (;;) {
        int low = i, l = 2 * i + 1, r = l + 1;
        if (l < size && ranks_above(scores, heap[low], heap[l])) low = l;
        if (r < size && ranks_above(scores, heap[low], heap[r])) low = r;
        if (low == i) return;
        int t = heap[i];
        heap[i] = heap[low];
        heap[low] = t;
        i = low;
    }
}

dm_status dm_top_k(const float *scores, int n, int k, int *index)
{
    if (!scores || !index || k < 1 || k > n)
        return dm_fail(DM_ERR_ARGUMENT, "dm_top_k: NULL pointer, or k %d not in 1..n (n = %d)", k, n);
    /* The k best in a heap, the lowest-ranked at its root: n log k, for any
     * k (a sorted insertion took n k, 10^10 steps for k = n = 100,000). */
    for (int i = 0; i < k; i++) index[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(scores, index, k, i);
    for (int i = k; i < n; i++)
        if (ranks_above(scores, i, index[0])) {
            index[0] = i;
            sift_down(scores, index, k, 0);
        }
    /* Taking the lowest-ranked to the end each time leaves the best first. */
    for (int size = k; size > 1; size--) {
        int t = index[0];
        index[0] = index[size - 1];
        index[size - 1] = t;
        sift_down(scores, index, size - 1, 0);
    }
    return DM_OK;
}
