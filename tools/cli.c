#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal_api.h"


static int is_control(unsigned char c) { return c < 0x20 || c == 0x7F; }

void cli_put_text(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_control(*p)) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
}

const char *cli_text(const char *s, char *buf, size_t size)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        size_t len = is_control(*p) ? 4 : 1;
        if (n + len >= size) break;
        if (len == 4) snprintf(buf + n, 5, "\\x%02x", *p);
        else buf[n] = (char)*p;
        n += len;
    }
    buf[n] = 0;
    return buf;
}

/* The calling thread's last message of cli_error(), for cli_last_error(). */
static _Thread_local char last_error[8192];

void cli_error(const char *fmt, ...)
{
    va_list ap;
    char *msg;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    fputs("damamba: ", stderr);
    if (n < 0) {
        snprintf(last_error, sizeof last_error, "(out of memory formatting a message)");
        fputs(last_error, stderr);
    } else {
        snprintf(last_error, sizeof last_error, "%s", msg);
        cli_put_text(stderr, msg);
        free(msg);
    }
    fputc('\n', stderr);
}

const char *cli_last_error(void) { return last_error; }

int cli_flush_stdout(void)
{
    static int reported;
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return 1;
    if (!reported) cli_error("cannot write to standard output: %s", errno ? strerror(errno) : "a write failed");
    reported = 1;
    return 0;
}

dm_model *cli_load_model(const char *path, int use_ema)
{
    dm_model *m = NULL;
    dm_status st;
    if (path) {
        dm_load_options opts = {.size = sizeof opts, .use_ema = use_ema};
        st = dm_model_load(path, &opts, &m);
    } else if (use_ema) {
        st = dm_fail(DM_ERR_ARGUMENT, "--ema takes a .pth training checkpoint (-m); the built-in model has no EMA "
                                      "weights");
    } else {
        st = dm_model_load_default(&m);
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

int cli_threads;
dm_precision cli_precision = DM_PRECISION_F32;

int cli_parse_precision(const char *option, const char *value)
{
    static const dm_precision all[] = {DM_PRECISION_F32, DM_PRECISION_BF16, DM_PRECISION_F16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(value, dm_precision_name(all[i]))) {
            cli_precision = all[i];
            return 1;
        }
    cli_error("%s expects f32, bf16 or f16, got '%s'", option, value);
    return 0;
}

int cli_thread_count(void) { return cli_threads > 0 ? cli_threads : dm_threads(); }

int cli_parse_threads(const char *value) { return cli_parse_int("--threads", value, 1, DM_MAX_THREADS, &cli_threads); }

int cli_backend_usable(dm_backend backend)
{
    if (dm_backend_available(backend) == DM_OK) return 1;
    cli_error("%s backend: %s", dm_backend_name(backend), dm_last_error());
    return 0;
}

/* Put what failed before the library's reason: the new last error. */
static dm_status prefix_error(dm_status st, const char *what)
{
    char reason[512];
    snprintf(reason, sizeof reason, "%s", dm_last_error());
    return dm_fail(st, "%s: %s", what, reason);
}

dm_workspace *cli_workspace_open(const dm_model *model, dm_backend backend, int n, int h, int w)
{
    dm_workspace *ws;
    char what[32];
    dm_status st = dm_workspace_create_on(model, backend, n, h, w, &ws);
    if (st != DM_OK) {
        snprintf(what, sizeof what, "%s backend", dm_backend_name(backend));
        prefix_error(st, what);
        return NULL;
    }
    dm_workspace_set_threads(ws, cli_thread_count());
    if ((st = dm_workspace_set_precision(ws, cli_precision)) != DM_OK) {
        snprintf(what, sizeof what, "--dtype %s", dm_precision_name(cli_precision));
        prefix_error(st, what);
        dm_workspace_free(ws);
        return NULL;
    }
    return ws;
}

dm_workspace *cli_workspace_create(const dm_model *model, dm_backend backend, int n, int h, int w)
{
    dm_workspace *ws = cli_workspace_open(model, backend, n, h, w);
    if (!ws) cli_error("%s", dm_last_error());
    return ws;
}

int cli_parse_seg_mode(const char *value, dm_seg_options *o)
{
    if (!strcmp(value, "whole")) o->mode = DM_SEG_WHOLE;
    else if (!strcmp(value, "slide")) o->mode = DM_SEG_SLIDE;
    else if (!strcmp(value, "aug")) o->multi_scale_flip = 1;
    else {
        cli_error("--mode expects whole, slide or aug, got '%s'", value);
        return 0;
    }
    return 1;
}

int cli_parse_task(const char *value, cli_task *task)
{
    if (!strcmp(value, "cls")) *task = CLI_TASK_CLS;
    else if (!strcmp(value, "seg")) *task = CLI_TASK_SEG;
    else if (!strcmp(value, "det")) *task = CLI_TASK_DET;
    else {
        cli_error("--task expects cls, seg or det, got '%s'", value);
        return 0;
    }
    return 1;
}

char *cli_read_file(const char *path, size_t *size)
{
    char *data;
    if (dm_read_input(path, SIZE_MAX - 1, "reader", &data, size) == DM_OK) return data;
    cli_error("%s: %s", path, dm_last_error());
    return NULL;
}

/* ------------------------------------------------------------- labels */

const char *cli_class_name(const dm_model *model, int index, char *buf, size_t size)
{
    const char *const *names = dm_model_class_names(model);
    if (names) return names[index];
    snprintf(buf, size, "class %d", index);
    return buf;
}

/* ------------------------------------------------------- preprocessing */

/* "a" or "a,b,c": 1 to 3 numbers finite as floats, positive when `positive`. */
static int parse_floats(const char *option, const char *value, int positive, cli_floats *out)
{
    const char *p = value;
    out->count = 0;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !isfinite((float)v) || (positive && !(v > 0)) || out->count == 3 ||
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
    /* as the library will check them, but once, as a usage error */
    for (int c = 0; c < out->channels; c++)
        if (!dm_normalization_ok(out->mean[c], out->std[c], 1.0f)) {
            cli_error("channel %d: mean %g and std %g (--mean, --std or the model's) do not give finite values "
                      "(v - mean) / std for pixels v from 0 to 1", c, (double)out->mean[c], (double)out->std[c]);
            return 2;
        }
    if (opts->size || opts->crop_fraction) {
        int size = opts->size ? opts->size : out->crop ? out->crop : out->resize;
        /* timm's rule: the shorter side is floor(size / crop fraction).
         * Without --crop-fraction the model's crop / resize ratio stays,
         * computed in integers: 28 / (28 / 50.0) is 49.999..., and --size
         * equal to the model's crop must give its own resize.  An image at
         * least that large in both sides must stay under the pixel limit,
         * or no image could ever be preprocessed. */
        double fraction = opts->crop_fraction ? opts->crop_fraction
                          : out->crop && out->resize ? (double)out->crop / out->resize : 1.0;
        double resize = opts->crop_fraction         ? floor(size / fraction)
                        : out->crop && out->resize ? (double)((int64_t)size * out->resize / out->crop)
                                                    : size;
        if (resize * resize > DM_IMAGE_MAX_PIXELS) {
            /* %.10g: whole pixel counts, but a tiny fraction's 1e300 in a few digits */
            cli_error("--size %d with crop fraction %g resizes to a shorter side of %.10g pixels: no image can stay "
                      "under the limit of %d pixels", size, fraction, resize, DM_IMAGE_MAX_PIXELS);
            return 2;
        }
        out->crop = size;
        out->resize = (int)resize;
    }
    /* a model's metadata may crop as much (the batches are sized for it) */
    if ((int64_t)out->crop * out->crop > DM_IMAGE_MAX_PIXELS) {
        cli_error("the model's preprocessing crops %d x %d pixels, over the limit of %d pixels", out->crop, out->crop,
                  DM_IMAGE_MAX_PIXELS);
        return 2;
    }
    return 0;
}

float *cli_load_image(const char *path, const dm_preprocess *prep, int *h, int *w)
{
    dm_image img = {0};
    float *input = NULL;
    /* the loader's messages name the file; the transform's name the image */
    if (cli_image_load(path, prep->channels, DM_IMAGE_PIL, &img) != DM_OK) {
        cli_error("%s", dm_last_error());
    } else if (dm_preprocess_output_size(prep, img.width, img.height, h, w) != DM_OK) {
        cli_error("%s: %s", path, dm_last_error());
    } else if (!(input = malloc(sizeof(float) * prep->channels * *h * *w))) {
        cli_error("%s: out of memory for its %d x %d input", path, *w, *h);
    } else if (dm_image_preprocess(&img, prep, input) != DM_OK) {
        cli_error("%s: %s", path, dm_last_error());
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
    f->paths[f->count] = NULL;
    if (path && !(f->paths[f->count] = strdup(path))) return 0;
    f->count++;
    return 1;
}

/* File names the directory walk takes: the formats the decoder reads. */
static int is_image_name(const char *name)
{
    static const char *const exts[] = {"png", "jpg", "jpeg", "webp", "bmp", "gif", "tga", "ppm", "pgm", "pnm"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (!strcasecmp(dot + 1, exts[i])) return 1;
    return 0;
}

int cli_compare_strings(const void *a, const void *b)
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
    if (names->count) qsort(names->paths, names->count, sizeof(char *), cli_compare_strings);
    return 1;
}

/* Record a directory as walked; 0 when it already was (a link into a
 * directory the walk has seen, or a loop), -1 when out of memory. */
static int first_visit(cli_files *f, const struct stat *sb)
{
    for (size_t i = 0; i < f->dir_count; i++)
        if (f->dirs[i].dev == sb->st_dev && f->dirs[i].ino == sb->st_ino) {
            f->revisits++;
            return 0;
        }
    if (f->dir_count == f->dir_cap) {
        size_t cap = f->dir_cap ? 2 * f->dir_cap : 16;
        cli_file_id *d = realloc(f->dirs, cap * sizeof *d);
        if (!d) return -1;
        f->dirs = d;
        f->dir_cap = cap;
    }
    f->dirs[f->dir_count++] = (cli_file_id){sb->st_dev, sb->st_ino};
    return 1;
}

/* Adds the images under dir; *skipped counts the other files.  A
 * directory that cannot be read is reported and the walk goes on without
 * it (returns 0 at the end); running out of memory ends it (-1). */
static int walk_dir(cli_files *f, const char *dir, size_t *skipped)
{
    struct stat sb;
    int first = stat(dir, &sb) == 0 ? first_visit(f, &sb) : 1;
    if (first < 0) {
        cli_error("out of memory");
        return -1;
    }
    if (!first) return 1;
    cli_files names;
    if (!cli_list_dir(dir, &names)) return 0;
    int result = 1;
    for (size_t i = 0; result >= 0 && i < names.count; i++) {
        char *path;
        size_t len = strlen(dir);
        if (asprintf(&path, "%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/", names.paths[i]) < 0) {
            cli_error("out of memory");
            result = -1;
            break;
        }
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            int sub = walk_dir(f, path, skipped);
            result = sub < result ? sub : result;
        } else if (!is_image_name(names.paths[i])) {
            ++*skipped;
        } else if (!files_push(f, path)) {
            cli_error("out of memory");
            result = -1;
        }
        free(path);
    }
    cli_files_free(&names);
    return result;
}

/* A line of a list names a file: one longer than any path cannot, and
 * reading on for its end (a list that is /dev/zero) would fill the memory. */
#define LIST_LINE_MAX PATH_MAX

/* A line longer than LIST_LINE_MAX ends the list: its end may never come. */
static char *end_long_line(cli_line_reader *r)
{
    cli_error("%s: line %zu is longer than any file name (over %d bytes)", r->name, r->lines + 1, LIST_LINE_MAX);
    r->failed = r->eof = 1;
    r->len = 0;
    return NULL;
}

/* The next non-empty line of r, without its newline and trailing CRs,
 * waiting for it; NULL at the end of input, or once r fails.  A line
 * holding a NUL byte is reported and skipped; a line too long or a read
 * error is reported and ends the list.  Either sets r->failed. */
static char *read_line(cli_line_reader *r)
{
    for (;;) {
        char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl || (r->eof && r->len)) {
            size_t len = nl ? (size_t)(nl - r->buf) : r->len, used = nl ? len + 1 : len;
            char *line = NULL;
            if (len > LIST_LINE_MAX) return end_long_line(r);
            r->lines++;
            if (memchr(r->buf, '\0', len)) {
                cli_error("%s: line %zu holds a NUL byte, which no file name can", r->name, r->lines);
                r->failed = 1;
            } else if (!(line = strndup(r->buf, len))) {
                cli_error("out of memory reading %s", r->name);
                r->failed = r->eof = 1;
                r->len = 0;
                return NULL;
            }
            memmove(r->buf, r->buf + used, r->len - used);
            r->len -= used;
            if (!line) continue;
            while (len && line[len - 1] == '\r') line[--len] = '\0';
            if (len) return line;
            free(line);
            continue;
        }
        if (r->eof) return NULL;
        if (r->len > LIST_LINE_MAX) return end_long_line(r);
        if (r->len == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 4096;
            char *buf = realloc(r->buf, cap);
            if (!buf) {
                cli_error("out of memory reading %s", r->name);
                r->failed = r->eof = 1;
                return NULL;
            }
            r->buf = buf;
            r->cap = cap;
        }
        ssize_t got = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            cli_error("%s: cannot read list: %s", r->name, strerror(errno));
            r->failed = 1;
        }
        if (got <= 0) r->eof = 1;
        else r->len += (size_t)got;
    }
}

static int add_list(cli_files *f, const char *list)
{
    int fd = open(list, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cli_error("%s: cannot open list: %s", list, strerror(errno));
        return 0;
    }
    /* A list is read whole before any image: a device such as /dev/urandom
     * would fill the memory; a pipe (@<(find ...)) ends with its writer. */
    struct stat sb;
    const char *refused = fstat(fd, &sb) != 0 ? strerror(errno)
                          : S_ISDIR(sb.st_mode) ? "cannot read list: Is a directory"
                          : !S_ISREG(sb.st_mode) && !S_ISFIFO(sb.st_mode)
                              ? "a list must be a regular file or a pipe (@- reads standard input)"
                              : NULL;
    if (refused) {
        cli_error("%s: %s", list, refused);
        close(fd);
        return 0;
    }
    cli_line_reader r = {.fd = fd, .name = list};
    int ok = 1;
    for (char *line; ok && (line = read_line(&r));) {
        ok = files_push(f, line);
        free(line);
        if (!ok) cli_error("out of memory reading %s", list);
    }
    free(r.buf);
    close(fd);
    return ok && !r.failed;
}

int cli_files_add(cli_files *files, const char *arg)
{
    int ok;
    if (!strcmp(arg, "@-")) ok = files_push(files, NULL);
    else if (arg[0] == '@') return add_list(files, arg + 1);
    else {
        struct stat sb;
        if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            size_t skipped = 0;
            int walked = walk_dir(files, arg, &skipped);
            if (walked >= 0 && skipped)
                cli_error("%s: skipped %zu file%s without an image file name extension", arg, skipped,
                          skipped == 1 ? "" : "s");
            return walked > 0;
        }
        /* Anything else is tried as an image, so its failure is reported with the rest. */
        ok = files_push(files, arg);
    }
    if (!ok) cli_error("out of memory");
    return ok;
}

void cli_files_free(cli_files *files)
{
    for (size_t i = 0; i < files->count; i++) free(files->paths[i]);
    free(files->paths);
    free(files->dirs);
    *files = (cli_files){0};
}

/* --------------------------------------------------------- outputs */

static int compare_ids(const void *a, const void *b)
{
    const cli_file_id *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Add the file at path ("-": standard input's) if it exists. */
static void add_input_id(cli_outputs *o, const char *path)
{
    struct stat st;
    if (path && dm_stat_input(path, &st) == 0)
        o->inputs[o->input_count++] = (cli_file_id){st.st_dev, st.st_ino};
}

int cli_outputs_init(cli_outputs *o, const cli_files *images, char *const *args, int arg_count,
                     const char *const *others, size_t other_count)
{
    *o = (cli_outputs){0};
    if (!(o->inputs = malloc(sizeof *o->inputs * (images->count + (size_t)arg_count + other_count + 1)))) {
        cli_error("out of memory");
        return 0;
    }
    for (size_t i = 0; i < images->count; i++) add_input_id(o, images->paths[i]);
    for (int i = 0; i < arg_count; i++)
        if (args[i][0] == '@' && strcmp(args[i], "@-")) add_input_id(o, args[i] + 1);
    for (size_t i = 0; i < other_count; i++) add_input_id(o, others[i]);
    qsort(o->inputs, o->input_count, sizeof *o->inputs, compare_ids);
    return 1;
}

/* What names the file an output path will be, though it need not exist
 * yet: its directory's device and inode and its name there, so that
 * "d//a.png", "./d/a.png" and a name through a link to d agree.  The path
 * itself when its directory cannot be read (writing it fails anyway);
 * NULL when out of memory. */
static char *output_key(const char *path)
{
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    char *dir = slash ? strndup(path, slash > path ? (size_t)(slash - path) : 1) : strdup(".");
    if (!dir) return NULL;
    struct stat st;
    int found = stat(dir, &st) == 0;
    free(dir);
    if (!found) return strdup(path);
    size_t size = strlen(name) + 2 * sizeof(uintmax_t) * 2 + 3;
    char *key = malloc(size);
    if (key) snprintf(key, size, "%jx:%jx/%s", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino, name);
    return key;
}

int cli_outputs_claim(cli_outputs *o, const char *input, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && bsearch(&(cli_file_id){st.st_dev, st.st_ino}, o->inputs, o->input_count,
                                        sizeof *o->inputs, compare_ids)) {
        cli_error("%s: the output %s is one of this run's inputs", input, path);
        return 0;
    }
    char *key = output_key(path);
    if (!key) {
        cli_error("out of memory");
        return 0;
    }
    /* the first written key not before this one, where it goes */
    size_t lo = 0, hi = o->written_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(o->written[mid], key) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < o->written_count && !strcmp(o->written[lo], key)) {
        cli_error("%s: the output %s is already an output of this run", input, path);
        free(key);
        return 0;
    }
    if (o->written_count == o->written_cap) {
        size_t cap = o->written_cap ? 2 * o->written_cap : 64;
        char **grown = realloc(o->written, sizeof *grown * cap);
        if (!grown) {
            cli_error("out of memory");
            free(key);
            return 0;
        }
        o->written = grown, o->written_cap = cap;
    }
    memmove(o->written + lo + 1, o->written + lo, sizeof *o->written * (o->written_count - lo));
    o->written[lo] = key;
    o->written_count++;
    return 1;
}

void cli_outputs_free(cli_outputs *o)
{
    for (size_t i = 0; i < o->written_count; i++) free(o->written[i]);
    free(o->written);
    free(o->inputs);
    *o = (cli_outputs){0};
}

/* mkdir -p: the directory and any of its parents missing; 0 or -1. */
static int make_directories(const char *dir)
{
    char *path = strdup(dir);
    if (!path) return -1;
    int failed = 0;
    for (char *p = path + 1; *p && !failed; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = 0;
        failed = mkdir(path, 0777) != 0 && errno != EEXIST;
        *p = '/';
    }
    failed = failed || (mkdir(path, 0777) != 0 && errno != EEXIST);
    int why = errno;
    free(path);
    errno = why;
    return failed ? -1 : 0;
}

int cli_output_dir(const char *dir)
{
    struct stat sb;
    if (make_directories(dir) != 0) {
        cli_error("%s: cannot create the directory: %s", dir, strerror(errno));
        return 0;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        cli_error("%s: not a directory", dir);
        return 0;
    }
    return 1;
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

/* ---------------------------------------------------------- sources */

int cli_source_init(cli_source *s, char **args, int count, int shard_index, int shard_count)
{
    *s = (cli_source){.in = {.fd = STDIN_FILENO, .name = "standard input"},
                      .shard_index = shard_index, .shard_count = shard_count};
    for (int i = 0; i < count; i++) {
        int from_stdin = !strcmp(args[i], "-") || !strcmp(args[i], "@-");
        /* a directory whose images an earlier argument listed adds none */
        size_t before = s->files.count, revisits = s->files.revisits;
        if (!cli_files_add(&s->files, args[i])) {
            s->failed = 1;
        } else if (!from_stdin && s->files.count == before && s->files.revisits == revisits) {
            cli_error("%s: no images in the %s", args[i], args[i][0] == '@' ? "list" : "directory");
            s->failed = 1;
        }
    }
    /* '-' and '@-' as arguments, and a list's lines '-' (an image read
     * from standard input too) */
    size_t stdin_uses = 0;
    for (size_t i = 0; i < s->files.count; i++) stdin_uses += !s->files.paths[i] || !strcmp(s->files.paths[i], "-");
    if (stdin_uses > 1) {
        cli_error("standard input can be read once: give '-' or '@-' once, as an argument or a list's line");
        cli_source_free(s);
        return 0;
    }
    return 1;
}

char *cli_source_next(cli_source *s)
{
    for (;;) {
        char *path = NULL;
        if (s->reading_stdin && !(path = read_line(&s->in))) {
            s->reading_stdin = 0;
            s->failed |= s->in.failed;
            if (!s->stdin_paths && !s->in.failed) { /* as a list file without images */
                cli_error("@-: no images in the list");
                s->failed = 1;
            }
        }
        s->stdin_paths += path != NULL;
        if (path && !strcmp(path, "-")) { /* standard input holds this list: no image is left to read there */
            cli_error("%s: line %zu is '-', but standard input holds the list (@-)", s->in.name, s->in.lines);
            s->failed = 1;
            free(path);
            continue;
        }
        if (!path) {
            if (s->next_file == s->files.count) return NULL;
            const char *next = s->files.paths[s->next_file++];
            if (!next) {
                s->reading_stdin = 1;
                continue;
            }
            if (!(path = strdup(next))) {
                cli_error("out of memory");
                s->failed = 1;
                return NULL;
            }
        }
        if ((int)(s->index++ % (size_t)s->shard_count) == s->shard_index) return path;
        free(path);
    }
}

int cli_source_ready(cli_source *s)
{
    const cli_line_reader *in = &s->in;
    if (!s->reading_stdin || in->eof || (in->len && memchr(in->buf, '\n', in->len))) return 1;
    struct pollfd fd = {.fd = STDIN_FILENO, .events = POLLIN};
    return poll(&fd, 1, 0) > 0;
}

size_t cli_source_total(const cli_source *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->files.count; i++) {
        if (!s->files.paths[i]) return 0;
        n += (int)(i % (size_t)s->shard_count) == s->shard_index;
    }
    return n;
}

void cli_source_free(cli_source *s)
{
    cli_files_free(&s->files);
    free(s->in.buf);
    *s = (cli_source){0};
}

dm_status cli_image_load(const char *path, int channels, dm_image_convention convention, dm_image *out)
{
    if (strcmp(path, "-")) return dm_image_load_as(path, channels, convention, out);
    *out = (dm_image){0};
    size_t len = 0, cap = 0;
    unsigned char *data = NULL;
    dm_status st = DM_OK;
    /* read no more than a file the decoder takes may hold (/dev/zero as
     * stdin would fill the memory) */
    const size_t most = (size_t)INT_MAX + 1;
    for (;;) {
        if (len == most) {
            st = dm_fail(DM_ERR_FORMAT, "-: standard input holds over %d bytes, too large for the image decoder",
                         INT_MAX);
            break;
        }
        if (len == cap) {
            cap = cap ? (2 * cap < most ? 2 * cap : most) : 1 << 16;
            unsigned char *grown = realloc(data, cap);
            if (!grown) {
                st = dm_fail(DM_ERR_NOMEM, "-: out of memory reading standard input");
                break;
            }
            data = grown;
        }
        ssize_t got = read(STDIN_FILENO, data + len, cap - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) st = dm_fail(DM_ERR_IO, "-: cannot read standard input: %s", strerror(errno));
        if (got <= 0) break;
        len += (size_t)got;
    }
    if (st == DM_OK && (st = dm_image_load_memory_as(data, len, channels, convention, out)) != DM_OK)
        prefix_error(st, "-");
    free(data);
    return st;
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
    *p = (cli_progress){.enabled = !quiet && isatty(STDERR_FILENO), .quiet = quiet, .total = total,
                        .start = now_seconds()};
}

void cli_progress_update(cli_progress *p, size_t done, size_t failed)
{
    double t = now_seconds();
    p->done = done;
    p->failed = failed;
    if (!p->enabled || (p->shown && t - p->last < 0.1)) return;
    p->last = t;
    double rate = t > p->start ? done / (t - p->start) : 0;
    fputs("\r\033[K", stderr);
    if (p->total) {
        int width = 30, filled = (int)(width * (done < p->total ? done : p->total) / p->total);
        fprintf(stderr, "[%.*s%*s] %zu/%zu", filled, "##############################", width - filled, "", done,
                p->total);
    } else {
        fprintf(stderr, "%zu", done);
    }
    fprintf(stderr, "  %.1f images/s", rate);
    if (p->total && rate > 0 && done < p->total) {
        long eta = lround((p->total - done) / rate);
        fprintf(stderr, "  ETA %ld:%02ld:%02ld", eta / 3600, eta / 60 % 60, eta % 60);
    }
    fflush(stderr);
    p->shown = 1;
}

void cli_progress_clear(cli_progress *p)
{
    if (!p->shown) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->shown = 0;
}

void cli_progress_end(cli_progress *p, const char *verb)
{
    cli_progress_clear(p);
    double seconds = now_seconds() - p->start;
    size_t succeeded = p->done - p->failed;
    if (p->quiet) return;
    fprintf(stderr, "%s %zu image%s in %.2f s (%.1f images/s)", verb, succeeded, succeeded == 1 ? "" : "s", seconds,
            seconds > 0 ? succeeded / seconds : 0.0);
    if (p->failed) fprintf(stderr, ", %zu failed", p->failed);
    fputc('\n', stderr);
}

/* --------------------------------------------------------- classifying */

int cli_fixed_input_size(const dm_preprocess *prep, int *h, int *w)
{
    /* Every image becomes the same size after a crop, or a fixed resize. */
    *h = prep->crop ? prep->crop : prep->resize ? 0 : prep->resize_h;
    *w = prep->crop ? prep->crop : prep->resize ? 0 : prep->resize_w;
    return *h >= 1 && *w >= 1;
}

int cli_classifier_init(cli_classifier *c, const dm_model *model, dm_backend backend, const dm_preprocess *prep,
                        int batch)
{
    *c = (cli_classifier){.model = model, .backend = backend, .prep = *prep, .batch = batch};
    c->classes = dm_model_config(model)->num_classes;
    if (!c->classes) {
        cli_error("the model has no classification head");
        return 0;
    }
    if (!cli_fixed_input_size(prep, &c->h, &c->w)) {
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
#pragma omp parallel for schedule(dynamic) num_threads(cli_thread_count())
    for (int i = 0; i < n; i++) {
        float *slot = c->input + i * chw;
        dm_image loaded = {0};
        const dm_image *img = &items[i].image;
        dm_status st = DM_OK;
        if (items[i].path) {
            st = cli_image_load(items[i].path, c->prep.channels, DM_IMAGE_PIL, &loaded);
            img = &loaded;
        }
        int decoded = st == DM_OK;
        if (decoded) st = dm_image_preprocess(img, &c->prep, slot);
        free(c->errors[i]);
        c->errors[i] = NULL;
        if (st != DM_OK) {
            /* Decoding errors name the file already, preprocessing ones do not. */
            if (asprintf(&c->errors[i], "%s%s%s", decoded && items[i].path ? items[i].path : "",
                         decoded && items[i].path ? ": " : "", dm_last_error()) < 0)
                c->errors[i] = NULL;
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
    if (!c->ws && !(c->ws = cli_workspace_create(c->model, c->backend, c->batch, c->h, c->w))) return 0;
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = c->logits};
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

void cli_write_top_json(FILE *out, const char *file, const dm_model *model, const float *probs, const int *index,
                        int k)
{
    char buf[32];
    fputs("{\"file\": ", out);
    dm_json_write_string(out, file);
    fputs(", \"top\": [", out);
    for (int j = 0; j < k; j++) {
        fprintf(out, "%s{\"index\": %d, \"label\": ", j ? ", " : "", index[j]);
        dm_json_write_string(out, cli_class_name(model, index[j], buf, sizeof buf));
        fputs(", \"prob\": ", out);
        dm_json_write_number(out, "%.6g", probs[index[j]]);
        fputs("}", out);
    }
    fputs("]}", out);
}

/* ---------------------------------------------------------- segmenting */

int cli_segment_image(cli_segmenter *s, const char *path, const dm_image *img, int32_t *labels)
{
    int h, w;
    if (dm_segment_image_size(&s->transform, &s->options, img->width, img->height, &h, &w) != DM_OK) {
        cli_error("%s: %s", path, dm_last_error());
        return 0;
    }
    if (!s->ws || h > s->ws_h || w > s->ws_w) {
        dm_workspace_free(s->ws);
        s->ws_h = h > s->ws_h ? h : s->ws_h;
        s->ws_w = w > s->ws_w ? w : s->ws_w;
        if (!(s->ws = cli_workspace_open(s->model, s->backend, 1, s->ws_h, s->ws_w))) {
            cli_error("%s: %s", path, dm_last_error());
            return 0;
        }
    }
    if (dm_segment_image(s->model, s->ws, img, &s->transform, &s->options, NULL, labels) != DM_OK) {
        cli_error("%s: %s", path, dm_last_error());
        return 0;
    }
    return 1;
}

void cli_segmenter_free(cli_segmenter *s)
{
    dm_workspace_free(s->ws);
    s->ws = NULL;
}

const char *cli_path_stem(const char *path, int *len)
{
    if (!strcmp(path, "-")) {
        *len = 5;
        return "stdin";
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    *len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    return base;
}
