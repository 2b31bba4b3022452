/* coco_eval.c - COCO's detection metrics (see coco_eval.h), computed step
 * for step as the official evaluation does, so the numbers agree. */
#include "coco_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IOU_STEPS 10
#define RECALL_STEPS 101
#define MAX_DETS 100
#define AREAS 4

/* ------------------------------------------------------------------ RLE */

void coco_rle_free(coco_rle *r)
{
    free(r->counts);
    *r = (coco_rle){0};
}

static int rle_init(coco_rle *r, int h, int w, size_t cap)
{
    *r = (coco_rle){.h = h, .w = w, .counts = malloc((cap ? cap : 1) * sizeof(uint32_t))};
    return r->counts != NULL;
}

int coco_rle_from_bitmap(const uint8_t *mask, int h, int w, coco_rle *out)
{
    size_t n = (size_t)h * w;
    if (!rle_init(out, h, w, n + 1)) return 0;
    uint8_t prev = 0;
    uint32_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t v = mask[(i % (size_t)h) * w + i / (size_t)h] != 0;
        if (v != prev) {
            out->counts[out->n++] = run;
            run = 0;
            prev = v;
        }
        run++;
    }
    out->counts[out->n++] = run;
    return 1;
}

int coco_rle_from_string(const char *s, int h, int w, coco_rle *out)
{
    if (!rle_init(out, h, w, strlen(s) + 1)) return 0;
    uint64_t total = 0;
    while (*s) {
        long x = 0;
        int k = 0, more = 1;
        while (more) {
            if (!*s || *s < 48 || *s > 48 + 63 || k > 6) goto bad;
            long c = *s++ - 48;
            x |= (c & 0x1f) << 5 * k++;
            more = (c & 0x20) != 0;
            if (!more && (c & 0x10)) x -= 1L << 5 * k; /* sign-extend */
        }
        if (out->n > 2) x += out->counts[out->n - 2];
        if (x < 0 || x > (long)UINT32_MAX) goto bad;
        out->counts[out->n++] = (uint32_t)x;
        total += (uint64_t)x;
    }
    if (total == (uint64_t)h * w) return 1;
bad:
    coco_rle_free(out);
    return 0;
}

uint64_t coco_rle_area(const coco_rle *r)
{
    uint64_t a = 0;
    for (size_t i = 1; i < r->n; i += 2) a += r->counts[i];
    return a;
}

/* Walk two masks' runs together: the pixels both set (intersect) or
 * either set, as runs into out when out is non-NULL; returns the count of
 * pixels set in the result. */
static uint64_t rle_combine(const coco_rle *a, const coco_rle *b, int intersect, coco_rle *out)
{
    size_t i = 0, j = 0;
    uint64_t ca = a->n ? a->counts[0] : 0, cb = b->n ? b->counts[0] : 0, set = 0, run = 0;
    int va = 0, vb = 0, v = 0;
    for (;;) {
        /* step past exhausted runs, each flipping its value */
        while (ca == 0 && i + 1 < a->n) ca = a->counts[++i], va = !va;
        while (cb == 0 && j + 1 < b->n) cb = b->counts[++j], vb = !vb;
        if (ca == 0 && cb == 0) break;
        uint64_t c = ca && cb ? (ca < cb ? ca : cb) : (ca ? ca : cb);
        int now = intersect ? (va && vb && ca && cb) : ((va && ca) || (vb && cb));
        if (now) set += c;
        if (out && now != v) {
            out->counts[out->n++] = (uint32_t)run;
            run = 0;
            v = now;
        }
        run += c;
        if (ca) ca -= c;
        if (cb) cb -= c;
    }
    if (out) out->counts[out->n++] = (uint32_t)run;
    return set;
}

int coco_rle_union(const coco_rle *a, const coco_rle *b, coco_rle *out)
{
    if (!rle_init(out, a->h, a->w, a->n + b->n + 1)) return 0;
    rle_combine(a, b, 0, out);
    return 1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* pycocotools' rleFrPoly: the outline upsampled 5x and traced densely,
 * its crossings of pixel columns turned into column-major run
 * boundaries.  Its coordinates must be within +-COCO_MAX_COORD and its
 * traced outline at most COCO_MAX_OUTLINE points, which keeps the integer
 * arithmetic exact and the memory bounded (a hostile file could ask for
 * terabytes); real annotations are far inside both. */
int coco_rle_from_polygon(const double *xy, size_t k, int h, int w, coco_rle *out)
{
    const double scale = 5;
    *out = (coco_rle){0};
    for (size_t j = 0; j < 2 * k; j++)
        if (!(fabs(xy[j]) <= COCO_MAX_COORD)) return -1; /* NaN too */
    int *x = malloc((k + 1) * sizeof(int)), *y = malloc((k + 1) * sizeof(int));
    int *u = NULL, *v = NULL;
    uint32_t *a = NULL;
    int ok = 0;
    if (!x || !y || !rle_init(out, h, w, 1)) goto done;
    for (size_t j = 0; j < k; j++) x[j] = (int)(scale * xy[2 * j] + .5), y[j] = (int)(scale * xy[2 * j + 1] + .5);
    x[k] = x[0];
    y[k] = y[0];
    size_t m = 0;
    for (size_t j = 0; j < k; j++) {
        int dx = abs(x[j] - x[j + 1]), dy = abs(y[j] - y[j + 1]);
        m += (size_t)(dx > dy ? dx : dy) + 1;
        if (m > COCO_MAX_OUTLINE) {
            ok = -1;
            goto done;
        }
    }
    if (!(u = malloc((m + 1) * sizeof(int))) || !(v = malloc((m + 1) * sizeof(int)))) goto done;
    m = 0;
    for (size_t j = 0; j < k; j++) {
        int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1], t;
        int dx = abs(xe - xs), dy = abs(ys - ye);
        int flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if (flip) {
            t = xs, xs = xe, xe = t;
            t = ys, ys = ye, ye = t;
        }
        /* (a repeated point, dx = dy = 0, is its one sample: no slope) */
        double s = dx >= dy ? (dx ? (double)(ye - ys) / dx : 0) : (double)(xe - xs) / dy;
        if (dx >= dy)
            for (int d = 0; d <= dx; d++) {
                t = flip ? dx - d : d;
                u[m] = t + xs;
                v[m++] = (int)(ys + s * t + .5);
            }
        else
            for (int d = 0; d <= dy; d++) {
                t = flip ? dy - d : d;
                v[m] = t + ys;
                u[m++] = (int)(xs + s * t + .5);
            }
    }
    /* where the outline crosses a column: the first pixel below it */
    free(x), free(y);
    if (!(x = malloc((m + 1) * sizeof(int))) || !(y = malloc((m + 1) * sizeof(int)))) goto done;
    size_t n = 0;
    for (size_t j = 1; j < m; j++) {
        if (u[j] == u[j - 1]) continue;
        double xd = (double)(u[j] < u[j - 1] ? u[j] : u[j] - 1);
        xd = (xd + .5) / scale - .5;
        if (floor(xd) != xd || xd < 0 || xd > w - 1) continue;
        double yd = (double)(v[j] < v[j - 1] ? v[j] : v[j - 1]);
        yd = (yd + .5) / scale - .5;
        yd = ceil(yd < 0 ? 0 : yd > h ? h : yd);
        x[n] = (int)xd;
        y[n++] = (int)yd;
    }
    if (!(a = malloc((n + 1) * sizeof(uint32_t)))) goto done;
    for (size_t j = 0; j < n; j++) a[j] = (uint32_t)(x[j] * h + y[j]);
    a[n++] = (uint32_t)h * (uint32_t)w;
    qsort(a, n, sizeof *a, cmp_u32);
    uint32_t prev = 0;
    for (size_t j = 0; j < n; j++) {
        uint32_t t = a[j];
        a[j] -= prev;
        prev = t;
    }
    /* zero-length runs fold into the run before the next */
    free(out->counts);
    if (!(out->counts = malloc((n + 1) * sizeof(uint32_t)))) goto done;
    size_t j = 0;
    out->n = 0;
    out->counts[out->n++] = a[j++];
    while (j < n) {
        if (a[j] > 0) {
            out->counts[out->n++] = a[j++];
        } else {
            j++;
            if (j < n) out->counts[out->n - 1] += a[j++];
        }
    }
    ok = 1;
done:
    free(x), free(y), free(u), free(v), free(a);
    if (ok != 1) coco_rle_free(out);
    return ok;
}

/* ------------------------------------------------------------- matching */

static double box_iou(const double *d, const double *g, int crowd)
{
    double w = fmin(d[0] + d[2], g[0] + g[2]) - fmax(d[0], g[0]);
    double h = fmin(d[1] + d[3], g[1] + g[3]) - fmax(d[1], g[1]);
    if (w <= 0 || h <= 0) return 0;
    double i = w * h, u = crowd ? d[2] * d[3] : d[2] * d[3] + g[2] * g[3] - i;
    return i / u;
}

static double mask_iou(const coco_rle *d, const coco_rle *g, int crowd)
{
    double i = (double)rle_combine(d, g, 1, NULL), da = (double)coco_rle_area(d);
    double u = crowd ? da : da + (double)coco_rle_area(g) - i;
    return u > 0 ? i / u : 0;
}

/* Objects of one image and category. */
typedef struct group {
    const coco_object **items;
    size_t n;
} group;

/* What the matching of one image and category leaves for accumulation. */
typedef struct image_eval {
    size_t nd, ng;
    double scores[MAX_DETS];
    uint8_t matched[IOU_STEPS][MAX_DETS], ignored[IOU_STEPS][MAX_DETS];
    size_t gt_counted; /* ground truth not ignored */
} image_eval;

static int by_score(const void *a, const void *b)
{
    const coco_object *x = *(const coco_object *const *)a, *y = *(const coco_object *const *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x > y) - (x < y); /* stable: input order */
}

static const double area_lo[AREAS] = {0, 0, 32 * 32, 96 * 96}, area_hi[AREAS] = {1e10, 32 * 32, 96 * 96, 1e10};

/* evaluateImg: gts (non-ignored first), detections by score. */
static int evaluate_image(group gt, group dt, const double *iou_thr, int area, int iou_type, image_eval *e)
{
    size_t G = gt.n, D = dt.n < MAX_DETS ? dt.n : MAX_DETS;
    const coco_object **g = malloc((G + 1) * sizeof *g);
    uint8_t *g_ign = malloc(G + 1), *g_used = malloc(IOU_STEPS * (G + 1));
    double *ious = malloc((D * G + 1) * sizeof(double));
    if (!g || !g_ign || !g_used || !ious) {
        free(g), free(g_ign), free(g_used), free(ious);
        return 0;
    }
    size_t n = 0;
    e->gt_counted = 0;
    for (int pass = 0; pass < 2; pass++) /* stable: counted, then ignored */
        for (size_t i = 0; i < G; i++) {
            const coco_object *o = gt.items[i];
            int ign = o->iscrowd || o->area < area_lo[area] || o->area > area_hi[area];
            if (ign != pass) continue;
            g_ign[n] = (uint8_t)ign;
            g[n++] = o;
            e->gt_counted += !ign;
        }
    for (size_t d = 0; d < D; d++)
        for (size_t i = 0; i < G; i++)
            ious[d * G + i] = iou_type == COCO_SEGM ? mask_iou(&dt.items[d]->mask, &g[i]->mask, g[i]->iscrowd)
                                                     : box_iou(dt.items[d]->bbox, g[i]->bbox, g[i]->iscrowd);
    memset(g_used, 0, IOU_STEPS * (G + 1));
    e->nd = D;
    e->ng = G;
    for (int t = 0; t < IOU_STEPS; t++)
        for (size_t d = 0; d < D; d++) {
            double best = fmin(iou_thr[t], 1 - 1e-10);
            long m = -1;
            for (size_t i = 0; i < G; i++) {
                if (g_used[t * (G + 1) + i] && !g[i]->iscrowd) continue;
                if (m > -1 && !g_ign[m] && g_ign[i]) break;
                if (ious[d * G + i] < best) continue;
                best = ious[d * G + i];
                m = (long)i;
            }
            const coco_object *o = dt.items[d];
            int outside = o->area < area_lo[area] || o->area > area_hi[area];
            e->matched[t][d] = m > -1;
            e->ignored[t][d] = m > -1 ? g_ign[m] : (uint8_t)outside;
            if (m > -1) g_used[t * (G + 1) + m] = 1;
        }
    for (size_t d = 0; d < D; d++) e->scores[d] = dt.items[d]->score;
    free(g), free(g_ign), free(g_used), free(ious);
    return 1;
}

/* One entry of the concatenated detections, for the global sort. */
typedef struct ranked {
    double score;
    size_t image, det;
} ranked;

static int by_rank(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->image != y->image) return x->image < y->image ? -1 : 1;
    return (x->det > y->det) - (x->det < y->det);
}

/* accumulate for one category and area: precision[t][r] and recall[t],
 * left at -1 when the category has no counted ground truth. */
static int accumulate(const image_eval *evals, size_t nimages, const double *recall_thr, double precision[][RECALL_STEPS],
                      double *recall)
{
    size_t counted = 0, total = 0;
    for (size_t i = 0; i < nimages; i++) counted += evals[i].gt_counted, total += evals[i].nd;
    if (counted == 0) return 1;
    ranked *r = malloc((total + 1) * sizeof *r);
    double *rc = malloc((total + 1) * sizeof(double)), *pr = malloc((total + 1) * sizeof(double));
    if (!r || !rc || !pr) {
        free(r), free(rc), free(pr);
        return 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < nimages; i++)
        for (size_t d = 0; d < evals[i].nd; d++) r[n++] = (ranked){evals[i].scores[d], i, d};
    qsort(r, n, sizeof *r, by_rank);
    for (int t = 0; t < IOU_STEPS; t++) {
        double tp = 0, fp = 0;
        size_t nd = 0;
        for (size_t j = 0; j < n; j++) {
            const image_eval *e = &evals[r[j].image];
            if (e->ignored[t][r[j].det]) continue; /* neither true nor false */
            if (e->matched[t][r[j].det]) tp++;
            else fp++;
            rc[nd] = tp / (double)counted;
            pr[nd++] = tp / (fp + tp + 2.220446049250313e-16);
        }
        recall[t] = nd ? rc[nd - 1] : 0;
        for (size_t j = nd; j-- > 1;)
            if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
        /* the precision at the first rank whose recall reaches each step */
        size_t j = 0;
        for (int s = 0; s < RECALL_STEPS; s++) {
            while (j < nd && rc[j] < recall_thr[s]) j++;
            precision[t][s] = j < nd ? pr[j] : 0;
        }
    }
    free(r), free(rc), free(pr);
    return 1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* The objects of each (image, category) pair, in input order. */
static group *group_objects(const coco_object *objs, size_t n, const int64_t *images, size_t ni, const int *cats,
                            size_t nc, const coco_object ***storage, int sort_by_score)
{
    group *groups = calloc(ni * nc + 1, sizeof *groups);
    *storage = malloc((n + 1) * sizeof **storage);
    size_t *fill = calloc(ni * nc + 1, sizeof(size_t));
    if (!groups || !*storage || !fill) {
        free(groups), free(*storage), free(fill);
        return NULL;
    }
    size_t *slot = malloc((n + 1) * sizeof(size_t));
    if (!slot) {
        free(groups), free(*storage), free(fill);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const int64_t *im = bsearch(&objs[i].image_id, images, ni, sizeof *images, cmp_i64);
        const int *c = bsearch(&objs[i].category_id, cats, nc, sizeof *cats, cmp_int);
        slot[i] = im && c ? (size_t)(im - images) * nc + (size_t)(c - cats) : (size_t)-1;
        if (slot[i] != (size_t)-1) groups[slot[i]].n++;
    }
    size_t off = 0;
    for (size_t g = 0; g < ni * nc; g++) {
        groups[g].items = *storage + off;
        off += groups[g].n;
    }
    for (size_t i = 0; i < n; i++)
        if (slot[i] != (size_t)-1) groups[slot[i]].items[fill[slot[i]]++] = &objs[i];
    for (size_t g = 0; sort_by_score && g < ni * nc; g++)
        qsort((void *)groups[g].items, groups[g].n, sizeof *groups[g].items, by_score);
    free(fill), free(slot);
    return groups;
}

int coco_evaluate(const coco_object *gts, size_t ngt, const coco_object *dts, size_t ndt, const int64_t *image_ids,
                  size_t nimages, int iou_type, coco_stats *out)
{
    double iou_thr[IOU_STEPS], recall_thr[RECALL_STEPS];
    const double iou_step = (0.95 - 0.5) / (IOU_STEPS - 1);
    for (int t = 0; t < IOU_STEPS; t++) iou_thr[t] = t == IOU_STEPS - 1 ? 0.95 : t * iou_step + 0.5;
    for (int s = 0; s < RECALL_STEPS; s++) recall_thr[s] = s == RECALL_STEPS - 1 ? 1.0 : s * 0.01;

    int64_t *images = malloc((nimages + 1) * sizeof *images);
    int *cats = malloc((ngt + 1) * sizeof *cats);
    if (!images || !cats) {
        free(images), free(cats);
        return 0;
    }
    memcpy(images, image_ids, nimages * sizeof *images);
    qsort(images, nimages, sizeof *images, cmp_i64);
    size_t nc = 0;
    for (size_t i = 0; i < ngt; i++) cats[nc++] = gts[i].category_id;
    qsort(cats, nc, sizeof *cats, cmp_int);
    size_t unique = 0;
    for (size_t i = 0; i < nc; i++)
        if (!unique || cats[unique - 1] != cats[i]) cats[unique++] = cats[i];
    nc = unique;

    const coco_object **gstore = NULL, **dstore = NULL;
    group *gg = group_objects(gts, ngt, images, nimages, cats, nc, &gstore, 0);
    group *dg = group_objects(dts, ndt, images, nimages, cats, nc, &dstore, 1);
    size_t cells = nc * AREAS;
    double (*precision)[IOU_STEPS][RECALL_STEPS] = malloc((cells + 1) * sizeof *precision);
    double (*recall)[IOU_STEPS] = malloc((cells + 1) * sizeof *recall);
    image_eval *evals = malloc((nimages + 1) * sizeof *evals);
    int ok = gg && dg && precision && recall && evals;
    for (size_t i = 0; ok && i < cells; i++) {
        for (int t = 0; t < IOU_STEPS; t++) {
            recall[i][t] = -1;
            for (int s = 0; s < RECALL_STEPS; s++) precision[i][t][s] = -1;
        }
        size_t k = i / AREAS, n = 0;
        int area = (int)(i % AREAS);
        for (size_t im = 0; ok && im < nimages; im++) {
            group g = gg[im * nc + k], d = dg[im * nc + k];
            if (g.n == 0 && d.n == 0) continue;
            ok = evaluate_image(g, d, iou_thr, area, iou_type, &evals[n++]);
        }
        ok = ok && accumulate(evals, n, recall_thr, precision[i], recall[i]);
    }
    if (ok) {
        double sum[AREAS + 3] = {0};
        size_t count[AREAS + 3] = {0};
        for (size_t k = 0; k < nc; k++)
            for (int a = 0; a < AREAS; a++)
                for (int t = 0; t < IOU_STEPS; t++)
                    for (int s = 0; s < RECALL_STEPS; s++) {
                        double p = precision[k * AREAS + a][t][s];
                        if (!(p > -1)) continue;
                        /* slots: 0..3 all IoUs per area, 4 IoU .50, 5 IoU .75 (area all) */
                        sum[a] += p, count[a]++;
                        if (a == 0 && t == 0) sum[4] += p, count[4]++;
                        if (a == 0 && t == 5) sum[5] += p, count[5]++;
                    }
        for (size_t k = 0; k < nc; k++)
            for (int t = 0; t < IOU_STEPS; t++)
                if (recall[k * AREAS][t] > -1) sum[6] += recall[k * AREAS][t], count[6]++;
        double v[AREAS + 3];
        for (int j = 0; j < AREAS + 3; j++) v[j] = count[j] ? sum[j] / (double)count[j] : -1;
        *out = (coco_stats){v[0], v[4], v[5], v[1], v[2], v[3], v[6]};
    }
    free(images), free(cats), free(gg), free(dg), free(gstore), free(dstore), free(precision), free(recall), free(evals);
    return ok;
}
