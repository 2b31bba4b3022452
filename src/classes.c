/* classes.c - what a classifier's logits or a segmentation model's labels
 * mean: class names (the model's metadata, ImageNet's or ADE20K's built-in
 * lists), colours of the labels, softmax probabilities and the top k. */
#include "classes.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "model.h"

/* ImageNet's names, one per line, and ADE20K's ("name\tR G B" per line),
 * linked in by embed.S. */
extern char dm_imagenet_classes_text[];
extern char dm_ade20k_classes_text[];

#define ADE20K_CLASSES 150

static const char *imagenet_names[DM_IMAGENET_CLASSES];
static pthread_once_t imagenet_once = PTHREAD_ONCE_INIT;
static const char *ade20k_names[ADE20K_CLASSES];
static uint8_t ade20k_palette[3 * ADE20K_CLASSES];
static pthread_once_t ade20k_once = PTHREAD_ONCE_INIT;

/* Split the built-in text into its lines, in place (it is never read as a
 * whole). */
static void split_imagenet(void)
{
    char *p = dm_imagenet_classes_text;
    for (int i = 0; i < DM_IMAGENET_CLASSES && *p; i++) {
        imagenet_names[i] = p;
        p += strcspn(p, "\n");
        if (*p) *p++ = '\0';
    }
}

const char *const *dm_imagenet_class_names(void)
{
    pthread_once(&imagenet_once, split_imagenet);
    return imagenet_names;
}

/* Split ADE20K's lines into names and colours, in place. */
static void split_ade20k(void)
{
    char *p = dm_ade20k_classes_text;
    for (int i = 0; i < ADE20K_CLASSES && *p; i++) {
        char *end = p + strcspn(p, "\n"), *next = *end ? end + 1 : end;
        *end = '\0';
        char *tab = strchr(p, '\t');
        if (tab) {
            *tab = '\0';
            for (int c = 0; c < 3; c++) ade20k_palette[3 * i + c] = (uint8_t)strtol(tab + 1, &tab, 10);
        }
        ade20k_names[i] = p;
        p = next;
    }
}

/* The classes a model's names and colours are for: the classifier's, or
 * the segmentation head's. */
static int class_count(const dm_model *model)
{
    return model->config.num_classes ? model->config.num_classes : model->config.seg_classes;
}

/* Parse the metadata "palette", a JSON list of `classes` [r, g, b], into a
 * new model->palette. */
static dm_status parse_palette(dm_model *model, const char *text, int classes)
{
    char err[128];
    dm_json *root = dm_json_parse(text, strlen(text), err, sizeof err);
    int ok = root && root->type == DM_JSON_ARRAY && root->count == (size_t)classes, k = 0;
    dm_status st = DM_OK;
    if (ok && !(model->palette = malloc(3 * (size_t)classes))) st = dm_fail(DM_ERR_NOMEM, "out of memory");
    for (const dm_json *e = ok && !st ? root->child : NULL; e && ok; e = e->next, k++) {
        ok = e->type == DM_JSON_ARRAY && e->count == 3;
        int c = 0;
        for (const dm_json *v = ok ? e->child : NULL; v && ok; v = v->next, c++) {
            ok = v->type == DM_JSON_NUMBER && v->number >= 0 && v->number <= 255;
            model->palette[3 * k + c] = (uint8_t)v->number;
        }
    }
    dm_json_free(root);
    if (!st && !ok) st = dm_fail(DM_ERR_MODEL, "metadata 'palette' is not a JSON list of %d [r, g, b] colours", classes);
    return st;
}

dm_status dm_model_parse_classes(dm_model *model)
{
    int classes = class_count(model);
    const char *palette = dm_model_metadata(model, "palette");
    if (palette && model->config.seg_classes) {
        dm_status st = parse_palette(model, palette, classes);
        if (st) return st;
    }
    const char *text = dm_model_metadata(model, "classes");
    if (!text || classes == 0) return DM_OK;
    char err[128];
    dm_json *root = dm_json_parse(text, strlen(text), err, sizeof err);
    dm_status st = DM_OK;
    if (!root || root->type != DM_JSON_ARRAY || root->count != (size_t)classes) {
        st = dm_fail(DM_ERR_MODEL, "metadata 'classes' is not a JSON list of %d names (the model's classes)",
                     classes);
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

void dm_model_free_classes(dm_model *model)
{
    for (int i = 0; model->class_names && i < class_count(model); i++) free(model->class_names[i]);
    free(model->class_names);
    model->class_names = NULL;
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

dm_status dm_top_k(const float *scores, int n, int k, int *index)
{
    if (!scores || !index || k < 1 || k > n)
        return dm_fail(DM_ERR_ARGUMENT, "dm_top_k: NULL pointer, or k %d not in 1..n (n = %d)", k, n);
    /* Insertion into the sorted best k: O(n k), for the small k of a top-k
     * listing.  Strictly greater moves up, so ties keep index order. */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        int at = kept < k ? kept++ : k;
        while (at > 0 && scores[i] > scores[index[at - 1]]) {
            if (at < k) index[at] = index[at - 1];
            at--;
        }
        if (at < k) index[at] = i;
    }
    return DM_OK;
}
