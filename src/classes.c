/* classes.c - what a classifier's logits mean: class names (the model's
 * metadata, ImageNet's built-in list), softmax probabilities and the top k. */
#include "classes.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "model.h"

/* ImageNet's names, one per line, and COCO's, name, tab and category id per
 * line, linked in by embed.S. */
extern char dm_imagenet_classes_text[];
extern char dm_coco_classes_text[];

static const char *imagenet_names[DM_IMAGENET_CLASSES];
static pthread_once_t imagenet_once = PTHREAD_ONCE_INIT;

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

static const char *coco_names[DM_COCO_CLASSES];
static int coco_ids[DM_COCO_CLASSES];
static pthread_once_t coco_once = PTHREAD_ONCE_INIT;

static void split_coco(void)
{
    char *p = dm_coco_classes_text;
    for (int i = 0; i < DM_COCO_CLASSES && *p; i++) {
        coco_names[i] = p;
        p += strcspn(p, "\t\n");
        if (*p == '\t') *p++ = '\0';
        coco_ids[i] = atoi(p);
        p += strcspn(p, "\n");
        if (*p) *p++ = '\0';
    }
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
        return dm_fail(DM_ERR_MODEL, "metadata 'classes' names %d classes, the model has %d", n, classes);
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

dm_status dm_model_parse_classes(dm_model *model)
{
    int detector = model->config.num_classes == 0 && model->config.det_classes > 0;
    int classes = detector ? model->config.det_classes : model->config.num_classes;
    const char *text = dm_model_metadata(model, "classes");
    if (detector && (!text || text[0] != '[')) { /* a JSON list is read below */
        dm_status st = text ? parse_detector_names(model, text, classes) : DM_OK;
        return st ? st : category_ids(model, classes);
    }
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
    return st || !detector ? st : category_ids(model, classes);
}

void dm_model_free_classes(dm_model *model)
{
    int classes = model->config.num_classes ? model->config.num_classes : model->config.det_classes;
    for (int i = 0; model->class_names && i < classes; i++) free(model->class_names[i]);
    free(model->class_names);
    free(model->category_ids);
    model->class_names = NULL;
    model->category_ids = NULL;
}

const char *const *dm_model_class_names(const dm_model *model)
{
    if (!model) return NULL;
    if (model->class_names) return (const char *const *)model->class_names;
    if (model->config.num_classes == 0 && model->config.det_classes == DM_COCO_CLASSES) return dm_coco_class_names();
    return model->config.num_classes == DM_IMAGENET_CLASSES ? dm_imagenet_class_names() : NULL;
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
