#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "json.h"
#include "files.h"

/* The default model's bytes, linked in by embed.S. */
extern const unsigned char dm_default_model[];
extern const unsigned char dm_default_model_end[];

void cli_put_text(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7F) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    char *msg;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    fputs("damamba: ", stderr);
    if (n < 0) {
        fputs("(out of memory formatting a message)", stderr);
    } else {
        cli_put_text(stderr, msg);
        free(msg);
    }
    fputc('\n', stderr);
}

dm_model *cli_load_model(const char *path, int use_ema)
{
    dm_model *m = NULL;
    dm_status st;
    if (path) {
        dm_load_options opts = {.use_ema = use_ema};
        st = dm_model_load(path, &opts, &m);
    } else {
        st = dm_model_load_buffer(dm_default_model, (size_t)(dm_default_model_end - dm_default_model), &m);
    }
    if (st != DM_OK) {
        cli_error("%s", dm_last_error());
        return NULL;
    }
    return m;
}

int cli_output_distinct(const char *output, const char *const *inputs, size_t count)
{
    if (dm_output_distinct(output, inputs, count) == DM_OK) return 1;
    cli_error("%s", dm_last_error());
    return 0;
}

int cli_parse_int(const char *option, const char *value, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < min || v > max) {
        cli_error("%s expects an integer from %d to %d, got '%s'", option, min, max, value);
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* Two whole numbers "A<separator>B" (or one, when separator is 0), each
 * from min to max: strtol with range checks, so nothing wraps. */
static int parse_pair(const char *value, char separator, long min, long max, long *a, long *b)
{
    char *end;
    errno = 0;
    *a = *b = strtol(value, &end, 10);
    if (end != value && separator && *end == separator) {
        const char *second = end + 1;
        *b = strtol(second, &end, 10);
        if (end == second) return 0;
    } else if (separator) {
        return 0;
    }
    return !errno && end != value && !*end && *a >= min && *a <= max && *b >= min && *b <= max;
}

int cli_parse_size(const char *option, const char *value, int *h, int *w)
{
    long a, b;
    if (parse_pair(value, 'x', 1, 65536, &a, &b) || parse_pair(value, 0, 1, 65536, &a, &b)) {
        *h = (int)a;
        *w = (int)b;
        return 1;
    }
    cli_error("%s expects HxW or N, each from 1 to 65536, got '%s'", option, value);
    return 0;
}

int cli_parse_backend(const char *option, const char *value, dm_backend *out)
{
    static const dm_backend all[] = {DM_BACKEND_CPU, DM_BACKEND_CUDA};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(value, dm_backend_name(all[i]))) {
            *out = all[i];
            return 1;
        }
    cli_error("%s expects cpu or cuda, got '%s'", option, value);
    return 0;
}

dm_workspace *cli_workspace_create(const dm_model *model, dm_backend backend, int n, int h, int w)
{
    dm_workspace *ws;
    if (dm_workspace_create_on(model, backend, n, h, w, &ws) != DM_OK) {
        cli_error("%s backend: %s", dm_backend_name(backend), dm_last_error());
        return NULL;
    }
    return ws;
}

/* ------------------------------------------------------------- labels */

extern const char dm_imagenet_classes[];

/* Split text into lines (the last may lack its newline). */
static int split_lines(const char *text, cli_labels *out)
{
    int n = 0;
    for (const char *p = text; *p; p++) n += *p == '\n';
    if (*text && text[strlen(text) - 1] != '\n') n++;
    out->names = calloc((size_t)n ? (size_t)n : 1, sizeof(char *));
    if (!out->names) return 0;
    for (const char *p = text; *p && out->count < n;) {
        size_t len = strcspn(p, "\n");
        if (!(out->names[out->count] = strndup(p, len))) return 0;
        out->count++;
        p += len + (p[len] == '\n');
    }
    return 1;
}

static int labels_from_json(const char *text, int classes, cli_labels *out)
{
    char err[128];
    dm_json *root = dm_json_parse(text, strlen(text), err, sizeof err);
    int ok = root && root->type == DM_JSON_ARRAY && root->count == (size_t)classes;
    if (ok) ok = (out->names = calloc((size_t)classes, sizeof(char *))) != NULL;
    for (const dm_json *e = ok ? root->child : NULL; e; e = e->next) {
        if (e->type != DM_JSON_STRING || !(out->names[out->count] = strdup(e->string))) {
            ok = 0;
            break;
        }
        out->count++;
    }
    dm_json_free(root);
    if (!ok) cli_error("model metadata 'classes' is not a JSON list of %d names", classes);
    return ok;
}

int cli_labels_load(const dm_model *model, cli_labels *out)
{
    *out = (cli_labels){0};
    int classes = dm_model_config(model)->num_classes, ok;
    const char *meta = dm_model_metadata(model, "classes");
    if (meta) {
        ok = labels_from_json(meta, classes, out);
    } else if (classes == 1000) {
        ok = split_lines(dm_imagenet_classes, out) && out->count == 1000;
        if (!ok) cli_error("the built-in ImageNet class list is damaged");
    } else {
        ok = (out->names = calloc((size_t)classes ? (size_t)classes : 1, sizeof(char *))) != NULL;
        for (; ok && out->count < classes; out->count++) {
            char name[32];
            snprintf(name, sizeof name, "class %d", out->count);
            ok = (out->names[out->count] = strdup(name)) != NULL;
        }
        if (!ok) cli_error("out of memory");
    }
    if (!ok) cli_labels_free(out);
    return ok;
}

void cli_labels_free(cli_labels *labels)
{
    for (int i = 0; i < labels->count; i++) free(labels->names[i]);
    free(labels->names);
    *labels = (cli_labels){0};
}

/* ------------------------------------------------------- preprocessing */

/* "a" or "a,b,c": 1 to 3 finite numbers, positive when `positive`. */
static int parse_floats(const char *option, const char *value, int positive, cli_floats *out)
{
    const char *p = value;
    out->count = 0;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !isfinite(v) || (positive && !(v > 0)) || out->count == 3 ||
            (*end != ',' && *end != '\0'))
            break;
        out->values[out->count++] = (float)v;
        if (*end == '\0') return 1;
        p = end + 1;
    }
    cli_error("%s expects 1 or 3 comma-separated %snumbers, got '%s'", option, positive ? "positive " : "", value);
    return 0;
}

int cli_preprocess_opt(cli_preprocess_opts *opts, int c, const char *value)
{
    switch (c) {
    case CLI_OPT_SIZE: return cli_parse_int("--size", value, 1, 65536, &opts->size) ? 1 : -1;
    case CLI_OPT_CROP_FRACTION: {
        char *end;
        double f = strtod(value, &end);
        if (end == value || *end || !(f > 0 && f <= 1)) {
            cli_error("--crop-fraction expects a number in (0, 1], got '%s'", value);
            return -1;
        }
        opts->crop_fraction = f;
        return 1;
    }
    case CLI_OPT_INTERPOLATION:
        if (!strcmp(value, "bicubic")) opts->interpolation = DM_INTERP_BICUBIC;
        else if (!strcmp(value, "bilinear")) opts->interpolation = DM_INTERP_BILINEAR;
        else {
            cli_error("--interpolation expects bicubic or bilinear, got '%s'", value);
            return -1;
        }
        opts->interpolation_set = 1;
        return 1;
    case CLI_OPT_MEAN: return parse_floats("--mean", value, 0, &opts->mean) ? 1 : -1;
    case CLI_OPT_STD: return parse_floats("--std", value, 1, &opts->std) ? 1 : -1;
    }
    return 0;
}

/* Per-channel values from an option, if it was given. */
static int apply_floats(const char *option, const cli_floats *v, int channels, float *out)
{
    if (!v->count) return 1;
    if (v->count != channels) {
        cli_error("%s: the model takes %d channel%s, got %d value%s", option, channels, channels == 1 ? "" : "s",
                  v->count, v->count == 1 ? "" : "s");
        return 0;
    }
    memcpy(out, v->values, sizeof(float) * (size_t)channels);
    return 1;
}

int cli_preprocess_settings(const dm_model *model, const cli_preprocess_opts *opts, dm_preprocess *out)
{
    if (dm_preprocess_default(model, out) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 1;
    }
    if (opts->interpolation_set) out->interpolation = opts->interpolation;
    if (!apply_floats("--mean", &opts->mean, out->channels, out->mean) ||
        !apply_floats("--std", &opts->std, out->channels, out->std))
        return 2;
    if (opts->size || opts->crop_fraction) {
        double fraction = opts->crop_fraction ? opts->crop_fraction
                          : out->crop && out->resize ? (double)out->crop / out->resize : 1.0;
        int size = opts->size ? opts->size : out->crop ? out->crop : out->resize;
        /* timm's rule: the shorter side is floor(size / crop fraction).  An
         * image at least that large in both sides must stay under the pixel
         * limit, or no image could ever be preprocessed. */
        double resize = floor(size / fraction);
        if (resize * resize > DM_IMAGE_MAX_PIXELS) {
            cli_error("--size %d with crop fraction %g resizes to a shorter side of %.0f pixels: no image can stay "
                      "under the limit of %d pixels", size, fraction, resize, DM_IMAGE_MAX_PIXELS);
            return 2;
        }
        out->crop = size;
        out->resize = (int)resize;
    }
    return 0;
}

float *cli_load_image(const char *path, const dm_preprocess *prep, int *h, int *w)
{
    dm_image img = {0};
    float *input = NULL;
    if (dm_image_load(path, prep->channels, &img) != DM_OK ||
        dm_preprocess_output_size(prep, img.width, img.height, h, w) != DM_OK) {
        cli_error("%s", dm_last_error());
    } else if (!(input = malloc(sizeof(float) * prep->channels * *h * *w))) {
        cli_error("out of memory");
    } else if (dm_image_preprocess(&img, prep, input) != DM_OK) {
        cli_error("%s", dm_last_error());
        free(input);
        input = NULL;
    }
    dm_image_free(&img);
    return input;
}

/* ------------------------------------------------------------ file lists */

static int files_push(cli_files *f, const char *path)
{
    if (f->count == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 64;
        char **p = realloc(f->paths, cap * sizeof(char *));
        if (!p) return 0;
        f->paths = p;
        f->cap = cap;
    }
    if (!(f->paths[f->count] = strdup(path))) return 0;
    f->count++;
    return 1;
}

/* File names the directory walk takes: the formats the decoder reads. */
static int is_image_name(const char *name)
{
    static const char *const exts[] = {"png", "jpg", "jpeg", "bmp", "gif", "tga", "ppm", "pgm", "pnm"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (!strcasecmp(dot + 1, exts[i])) return 1;
    return 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cli_list_dir(const char *dir, cli_files *names)
{
    *names = (cli_files){0};
    DIR *d = opendir(dir);
    if (!d) {
        cli_error("%s: cannot read directory: %s", dir, strerror(errno));
        return 0;
    }
    struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d)))
        if (e->d_name[0] != '.') ok = files_push(names, e->d_name);
    closedir(d);
    if (!ok) {
        cli_error("out of memory listing %s", dir);
        cli_files_free(names);
        return 0;
    }
    if (names->count) qsort(names->paths, names->count, sizeof(char *), compare_strings);
    return 1;
}

/* Record a directory as walked; 0 when it already was (a link into a
 * directory the walk has seen, or a loop), -1 when out of memory. */
static int first_visit(cli_files *f, const struct stat *sb)
{
    for (size_t i = 0; i < f->dir_count; i++)
        if (f->dirs[i].dev == sb->st_dev && f->dirs[i].ino == sb->st_ino) return 0;
    if (f->dir_count == f->dir_cap) {
        size_t cap = f->dir_cap ? 2 * f->dir_cap : 16;
        cli_dir_id *d = realloc(f->dirs, cap * sizeof *d);
        if (!d) return -1;
        f->dirs = d;
        f->dir_cap = cap;
    }
    f->dirs[f->dir_count++] = (cli_dir_id){sb->st_dev, sb->st_ino};
    return 1;
}

/* Adds the images under dir; *skipped counts the other files. */
static int walk_dir(cli_files *f, const char *dir, size_t *skipped)
{
    struct stat sb;
    int first = stat(dir, &sb) == 0 ? first_visit(f, &sb) : 1;
    if (first < 0) {
        cli_error("out of memory");
        return 0;
    }
    if (!first) return 1;
    cli_files names;
    if (!cli_list_dir(dir, &names)) return 0;
    int ok = 1;
    for (size_t i = 0; ok && i < names.count; i++) {
        char *path;
        size_t len = strlen(dir);
        if (asprintf(&path, "%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/", names.paths[i]) < 0) {
            cli_error("out of memory");
            ok = 0;
            break;
        }
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            ok = walk_dir(f, path, skipped);
        } else if (!is_image_name(names.paths[i])) {
            ++*skipped;
        } else if (!files_push(f, path)) {
            cli_error("out of memory");
            ok = 0;
        }
        free(path);
    }
    cli_files_free(&names);
    return ok;
}

static int add_list(cli_files *f, const char *list)
{
    FILE *in = fopen(list, "r");
    if (!in) {
        cli_error("%s: cannot open list: %s", list, strerror(errno));
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int ok = 1;
    while (ok && (len = getline(&line, &cap, in)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len > 0) ok = files_push(f, line);
    }
    free(line);
    if (!ok) cli_error("out of memory reading %s", list);
    else if (ferror(in)) cli_error("%s: cannot read list: %s", list, strerror(errno));
    ok = ok && !ferror(in);
    fclose(in);
    return ok;
}

int cli_files_add(cli_files *files, const char *arg)
{
    if (arg[0] == '@') return add_list(files, arg + 1);
    struct stat sb;
    if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t skipped = 0;
        int ok = walk_dir(files, arg, &skipped);
        if (ok && skipped)
            cli_error("%s: skipped %zu file%s without an image file name extension", arg, skipped,
                      skipped == 1 ? "" : "s");
        return ok;
    }
    /* Anything else is tried as an image, so its failure is reported with the rest. */
    if (!files_push(files, arg)) {
        cli_error("out of memory");
        return 0;
    }
    return 1;
}
void cli_files_shard(cli_files *files, int index, int count)
{
    size_t kept = 0;
    for (size_t i = 0; i < files->count; i++) {
        if ((int)(i % (size_t)count) == index) files->paths[kept++] = files->paths[i];
        else free(files->paths[i]);
    }
    files->count = kept;
}

void cli_files_free(cli_files *files)
{
    for (size_t i = 0; i < files->count; i++) free(files->paths[i]);
    free(files->paths);
    free(files->dirs);
    *files = (cli_files){0};
}

int cli_parse_shard(const char *value, int *index, int *count)
{
    long i, n;
    if (!parse_pair(value, '/', 0, INT_MAX, &i, &n) || n < 1 || i >= n) {
        cli_error("--shard expects I/N with 0 <= I < N <= %d, got '%s'", INT_MAX, value);
        return 0;
    }
    *index = (int)i;
    *count = (int)n;
    return 1;
}

/* ------------------------------------------------------------- progress */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, size_t total, int quiet)
{
    *p = (cli_progress){.enabled = !quiet && total > 1 && isatty(STDERR_FILENO), .total = total};
}

void cli_progress_update(cli_progress *p, size_t done)
{
    double t = now_seconds();
    if (!p->enabled || (done < p->total && t - p->last < 0.1)) return;
    p->last = t;
    int width = 40, filled = (int)(width * done / p->total);
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu", filled, "########################################", width - filled, "",
            done, p->total);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p)
{
    if (p->enabled) fputc('\n', stderr);
}

/* --------------------------------------------------------- classifying */

int cli_classifier_init(cli_classifier *c, const dm_model *model, const dm_preprocess *prep, int batch)
{
    *c = (cli_classifier){.model = model, .prep = *prep, .batch = batch};
    c->classes = dm_model_config(model)->num_classes;
    if (!c->classes) {
        cli_error("the model has no classification head");
        return 0;
    }
    /* Every image must become the same size: a crop, or a fixed resize. */
    c->h = prep->crop ? prep->crop : prep->resize ? 0 : prep->resize_h;
    c->w = prep->crop ? prep->crop : prep->resize ? 0 : prep->resize_w;
    if (c->h < 1 || c->w < 1) {
        cli_error("classifying needs a fixed input size: set a crop (--size)");
        return 0;
    }
    size_t chw = (size_t)prep->channels * c->h * c->w;
    c->input = malloc(sizeof(float) * chw * batch);
    c->logits = malloc(sizeof(float) * c->classes * batch);
    c->errors = calloc((size_t)batch, sizeof(char *));
    if (!c->input || !c->logits || !c->errors) {
        cli_error("out of memory for a batch of %d", batch);
        cli_classifier_free(c);
        return 0;
    }
    return 1;
}

int cli_classify(cli_classifier *c, const cli_item *items, int n)
{
    size_t chw = (size_t)c->prep.channels * c->h * c->w;
#pragma omp parallel for schedule(dynamic) num_threads(dm_threads())
    for (int i = 0; i < n; i++) {
        float *slot = c->input + i * chw;
        dm_image loaded = {0};
        const dm_image *img = &items[i].image;
        dm_status st = DM_OK;
        if (items[i].path) {
            st = dm_image_load(items[i].path, c->prep.channels, &loaded);
            img = &loaded;
        }
        if (st == DM_OK && (st = dm_image_preprocess(img, &c->prep, slot)) != DM_OK && items[i].path)
            dm_error_prefix("%s: ", items[i].path);
        free(c->errors[i]);
        c->errors[i] = NULL;
        if (st != DM_OK) {
            c->errors[i] = strdup(dm_last_error());
            if (!c->errors[i]) c->errors[i] = strdup("out of memory");
        }
        dm_image_free(&loaded);
    }
    /* Only the images that loaded go through the forward pass, packed at
     * the front; nothing runs when none did. */
    int ok = 0;
    for (int i = 0; i < n; i++)
        if (!c->errors[i]) {
            if (ok != i) memcpy(c->input + ok * chw, c->input + i * chw, sizeof(float) * chw);
            ok++;
        }
    if (!ok) return 1;
    /* The workspace is made when first needed: a batch of failures costs no
     * memory for activations. */
    if (!c->ws && dm_workspace_create(c->model, c->batch, c->h, c->w, &c->ws) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    dm_outputs out = {.logits = c->logits};
    if (dm_forward(c->model, c->ws, c->input, ok, c->h, c->w, &out) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    /* Back to the items' positions, last first: item i's logits are at its
     * rank among the successes, which is at most i. */
    size_t row = sizeof(float) * c->classes;
    for (int i = n - 1; i >= 0; i--)
        if (!c->errors[i] && --ok != i) memcpy(c->logits + (size_t)i * c->classes, c->logits + (size_t)ok * c->classes, row);
    return 1;
}

void cli_classifier_free(cli_classifier *c)
{
    for (int i = 0; c->errors && i < c->batch; i++) free(c->errors[i]);
    free(c->errors);
    free(c->input);
    free(c->logits);
    dm_workspace_free(c->ws);
    *c = (cli_classifier){0};
}

/* Class a ranks above class b: a larger logit, ties to the lower index. */
static int ranks_above(const float *logits, int a, int b)
{
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* Restore the heap below position i: every class ranks above its parent's,
 * so heap[0] is the lowest-ranked kept. */
static void sift_down(const float *logits, int *heap, int size, int i)
{
    for (;;) {
        int low = i, l = 2 * i + 1, r = l + 1;
        if (l < size && ranks_above(logits, heap[low], heap[l])) low = l;
        if (r < size && ranks_above(logits, heap[low], heap[r])) low = r;
        if (low == i) return;
        int t = heap[i];
        heap[i] = heap[low];
        heap[low] = t;
        i = low;
    }
}

void cli_top_k(const float *logits, int classes, int k, int *index, double *prob)
{
    double max = logits[0], sum = 0;
    for (int i = 1; i < classes; i++)
        if (logits[i] > max) max = logits[i];
    for (int i = 0; i < classes; i++) sum += exp(logits[i] - max);
    /* The k best in a heap of the lowest-ranked first: classes x log k. */
    for (int i = 0; i < k; i++) index[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(logits, index, k, i);
    for (int i = k; i < classes; i++)
        if (ranks_above(logits, i, index[0])) {
            index[0] = i;
            sift_down(logits, index, k, 0);
        }
    /* Taking the lowest-ranked to the end each time leaves the best first. */
    for (int size = k; size > 1; size--) {
        int t = index[0];
        index[0] = index[size - 1];
        index[size - 1] = t;
        sift_down(logits, index, size - 1, 0);
    }
    for (int j = 0; j < k; j++) prob[j] = exp(logits[index[j]] - max) / sum;
}
