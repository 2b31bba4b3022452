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

/* ImageNet's names, one per line, linked in by embed.S. */
extern char dm_imagenet_classes_text[];

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

dm_status dm_model_parse_classes(dm_model *model)
{
    int classes = model->config.num_classes;
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
    for (int i = 0; model->class_names && i < model->config.num_classes; i++) free(model->class_names[i]);
    free(model->class_names);
    model->class_names = NULL;
}

const char *const *dm_model_class_names(const dm_model *model)
{
    if (!model) return NULL;
    if (model->class_names) return (const char *const *)model->class_names;
    return model->config.num_classes == DM_IMAGENET_CLASSES ? dm_imagenet_class_names() : NULL;
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

/* Class a ranks above class b: a larger score, ties to the lower index. */
static int ranks_above(const float *scores, int a, int b)
{
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
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
