/* coco_annotations.c - a COCO annotation file's images and ground truth
 * (see coco_annotations.h). */
#include "coco_annotations.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal_api.h"

static int failed(char *err, size_t err_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failed(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return 0;
}

static int json_int(const dm_json *o, const char *key, int64_t *out)
{
    const dm_json *v = dm_json_get(o, key);
    if (!v || v->type != DM_JSON_NUMBER || !v->is_integer) return 0;
    *out = v->integer;
    return 1;
}

static int int64_before(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int coco_read_images(const dm_json *root, coco_image **out, size_t *count, char *err, size_t err_size)
{
    const dm_json *images = dm_json_get(root, "images");
    *out = NULL;
    *count = 0;
    if (!images || images->type != DM_JSON_ARRAY)
        return failed(err, err_size, "no \"images\" list: not a COCO annotation file");
    coco_image *list = calloc(images->count + 1, sizeof *list);
    if (!list) return failed(err, err_size, "out of memory");
    size_t n = 0;
    for (const dm_json *e = images->child; e; e = e->next, n++) {
        coco_image *im = &list[n];
        const dm_json *name = dm_json_get(e, "file_name");
        int64_t w = 0, h = 0;
        if (!name || name->type != DM_JSON_STRING || !json_int(e, "id", &im->id)) {
            coco_images_free(list, n);
            return failed(err, err_size, "image %zu has no file_name and integer id", n);
        }
        /* sizes are needed only to evaluate masks */
        json_int(e, "width", &w);
        json_int(e, "height", &h);
        if (w > 0 && w <= 65536 && h > 0 && h <= 65536 && (uint64_t)w * h <= UINT32_MAX) {
            im->width = (int)w; /* runs of a mask count in 32 bits */
            im->height = (int)h;
        }
        if (!(im->file_name = strdup(name->string))) {
            coco_images_free(list, n);
            return failed(err, err_size, "out of memory");
        }
    }
    /* an id names one image: pycocotools keeps one entry per id */
    int64_t *ids = malloc((n + 1) * sizeof *ids);
    if (!ids) {
        coco_images_free(list, n);
        return failed(err, err_size, "out of memory");
    }
    for (size_t i = 0; i < n; i++) ids[i] = list[i].id;
    qsort(ids, n, sizeof *ids, int64_before);
    for (size_t i = 1; i < n; i++)
        if (ids[i] == ids[i - 1]) {
            int64_t id = ids[i];
            free(ids);
            coco_images_free(list, n);
            return failed(err, err_size, "two images have the id %lld", (long long)id);
        }
    free(ids);
    *out = list;
    *count = n;
    return 1;
}

void coco_images_free(coco_image *images, size_t count)
{
    for (size_t i = 0; images && i < count; i++) free(images[i].file_name);
    free(images);
}

coco_object *coco_objects_add(coco_objects *o)
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

void coco_objects_free(coco_objects *o)
{
    for (size_t i = 0; i < o->n; i++) coco_rle_free(&o->items[i].mask);
    free(o->items);
    *o = (coco_objects){0};
}

/* The images sorted by id, to find an annotation's in log time: a file
 * may hold a million annotations. */
typedef struct id_entry {
    int64_t id;
    const coco_image *image;
} id_entry;

static int id_before(const void *a, const void *b)
{
    int64_t x = ((const id_entry *)a)->id, y = ((const id_entry *)b)->id;
    return (x > y) - (x < y);
}

static const coco_image *image_by_id(const id_entry *index, size_t count, int64_t id)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (index[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < count && index[lo].id == id ? index[lo].image : NULL;
}

/* An annotation's mask: polygons (merged), uncompressed runs, or a
 * compressed string, as pycocotools' annToRLE reads them.  1, 0 when
 * malformed, -1 when a polygon is out of range, -2 out of memory. */
static int annotation_mask(const dm_json *seg, int h, int w, coco_rle *out)
{
    if (seg->type == DM_JSON_ARRAY) {
        coco_rle acc = {0};
        int st = 1;
        for (const dm_json *poly = seg->child; st == 1 && poly; poly = poly->next) {
            if (poly->type != DM_JSON_ARRAY || poly->count < 6 || poly->count % 2) {
                st = 0;
                break;
            }
            double *xy = malloc(poly->count * sizeof(double));
            if (!xy) {
                st = -2;
                break;
            }
            size_t k = 0;
            for (const dm_json *v = poly->child; v && v->type == DM_JSON_NUMBER; v = v->next) xy[k++] = v->number;
            if (k != poly->count) { /* a coordinate that is no number */
                free(xy);
                st = 0;
                break;
            }
            coco_rle one, merged;
            int made = coco_rle_from_polygon(xy, poly->count / 2, h, w, &one);
            free(xy);
            if (made != 1) {
                st = made < 0 ? -1 : -2;
            } else if (acc.counts) {
                st = coco_rle_union(&acc, &one, &merged) ? 1 : -2;
                coco_rle_free(&acc);
                coco_rle_free(&one);
                acc = merged;
            } else {
                acc = one;
            }
        }
        if (st == 1 && !acc.counts) st = 0; /* no polygon */
        if (st != 1) coco_rle_free(&acc);
        else *out = acc;
        return st;
    }
    const dm_json *counts = dm_json_get(seg, "counts");
    if (!counts) return 0;
    if (counts->type == DM_JSON_STRING) return coco_rle_from_string(counts->string, h, w, out);
    if (counts->type != DM_JSON_ARRAY) return 0;
    *out = (coco_rle){.h = h, .w = w, .counts = malloc((counts->count + 1) * sizeof(uint32_t))};
    if (!out->counts) return -2;
    uint64_t total = 0;
    for (const dm_json *c = counts->child; c; c = c->next) {
        if (c->type != DM_JSON_NUMBER || !c->is_integer || c->integer < 0 || c->integer > UINT32_MAX) break;
        out->counts[out->n++] = (uint32_t)c->integer;
        total += (uint64_t)c->integer;
    }
    if (out->n == counts->count && total == (uint64_t)h * w) return 1;
    coco_rle_free(out);
    return 0;
}

int coco_read_ground_truth(const dm_json *root, const coco_image *images, size_t count, coco_objects *gt,
                           char *err, size_t err_size)
{
    const dm_json *anns = dm_json_get(root, "annotations");
    if (!anns || anns->type != DM_JSON_ARRAY) return failed(err, err_size, "no \"annotations\" list");
    id_entry *index = malloc((count + 1) * sizeof *index);
    if (!index) return failed(err, err_size, "out of memory");
    for (size_t i = 0; i < count; i++) index[i] = (id_entry){images[i].id, &images[i]};
    qsort(index, count, sizeof *index, id_before);
    int ok = 1;
    size_t i = 0;
    for (const dm_json *a = anns->child; ok && a; a = a->next, i++) {
        const dm_json *image = dm_json_get(a, "image_id"), *cat = dm_json_get(a, "category_id");
        const dm_json *bbox = dm_json_get(a, "bbox"), *area = dm_json_get(a, "area"), *crowd = dm_json_get(a, "iscrowd");
        const dm_json *seg = dm_json_get(a, "segmentation");
        if (!image || !image->is_integer || !cat || !cat->is_integer || cat->integer < INT32_MIN ||
            cat->integer > INT32_MAX || !bbox || bbox->type != DM_JSON_ARRAY || bbox->count != 4 || !area ||
            area->type != DM_JSON_NUMBER) {
            ok = failed(err, err_size, "annotation %zu lacks image_id, category_id, bbox or area", i);
            break;
        }
        const coco_image *im = image_by_id(index, count, image->integer);
        if (!im) continue; /* an image not evaluated */
        coco_object *o = coco_objects_add(gt);
        if (!o) {
            ok = failed(err, err_size, "out of memory");
            break;
        }
        o->image_id = image->integer;
        o->category_id = (int)cat->integer;
        o->area = area->number;
        o->iscrowd = crowd && crowd->type == DM_JSON_NUMBER && crowd->number != 0;
        size_t k = 0;
        for (const dm_json *v = bbox->child; v && v->type == DM_JSON_NUMBER; v = v->next) o->bbox[k++] = v->number;
        if (k != 4) {
            ok = failed(err, err_size, "annotation %zu: its bbox holds a value that is no number", i);
            break;
        }
        if (seg && (!im->width || !im->height)) {
            ok = failed(err, err_size, "annotation %zu: image %lld has no width and height, which its mask needs", i,
                        (long long)im->id);
            break;
        }
        int st = seg ? annotation_mask(seg, im->height, im->width, &o->mask) : 0;
        if (st == 1) continue;
        if (st == -1)
            ok = failed(err, err_size, "annotation %zu: a polygon lies beyond +-2^20 pixels or its outline is too long",
                        i);
        else if (st == -2)
            ok = failed(err, err_size, "out of memory");
        else
            ok = failed(err, err_size, "annotation %zu: no segmentation readable for a %dx%d image", i, im->width,
                        im->height);
    }
    free(index);
    return ok;
}
