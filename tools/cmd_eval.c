/* cmd_eval.c - `damamba eval`: top-1 and top-5 accuracy over a labelled
 * image folder or a safetensors dataset. */
#include "cli.h"

#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal_api.h"


static const char eval_usage[] =
    "usage: damamba eval [--task cls] [-m MODEL] [--ema] [-b BATCH] [-t THREADS]\n"
    "                    [--dtype f32|bf16|f16] [--backend cpu|cuda] [--per-class] [--quiet]\n"
    "                    [PREPROCESSING OPTIONS] DATA\n"
    "       damamba eval --task seg -m MODEL [--ema] [--mode whole|slide|aug] [--per-class]\n"
    "                    [--no-reduce-zero-label] [-t THREADS] [--dtype f32|bf16|f16]\n"
    "                    [--backend cpu|cuda] [--quiet] DATASET\n"
    "       damamba eval --task det -m MODEL --coco-annotations FILE [-t THREADS]\n"
    "                    [--dtype f32|bf16|f16] [--backend cpu|cuda] [--quiet] IMAGES_DIR\n"
    "\n"
    "Measures top-1 and top-5 accuracy of the model on DATA, either\n"
    "  - a folder with one sub-folder of images per class: when every\n"
    "    sub-folder is named after one of the model's classes (case and\n"
    "    punctuation aside, e.g. 'ankle-boot' for \"Ankle boot\", or one of the\n"
    "    names a class lists with '/' or ','), that class; otherwise, with a\n"
    "    warning, the class index is the position of the sub-folder in byte\n"
    "    order of the names (the ImageNet validation layout).  More sub-folders\n"
    "    than the model has classes is an error.  Images are found as\n"
    "    `damamba classify` finds them;\n"
    "  - a safetensors file holding 'images' (U8, N x H x W or N x C x H x W)\n"
    "    and 'labels' (I64, N).\n"
    "Every label must be one of the model's classes, and DATA must hold images.\n"
    "Images go through the model's preprocessing.  An image that cannot be\n"
    "read is reported, left out of the count, and makes the exit status 1.\n"
    "The last line printed is machine-readable: top1=0.xxxx top5=0.xxxx n=N\n"
    "\n"
    "With --task seg, a segmentation model's mIoU, mAcc and aAcc over an\n"
    "ADE20K-layout DATASET: images/validation/* and, for each, the 8-bit\n"
    "annotation annotations/validation/STEM.png (in the same folder under it),\n"
    "as mmsegmentation evaluates:\n"
    "the ADE20K test (slide 512/341 by default), areas summed over the whole\n"
    "dataset, annotation 0 ignored and the others shifted down by one\n"
    "(reduce_zero_label; --no-reduce-zero-label for datasets without it),\n"
    "255 ignored.  Last line: mIoU=0.xxxx mAcc=0.xxxx aAcc=0.xxxx n=N\n"
    "\n"
    "  -m, --model FILE     model (.safetensors or .pth); default: embedded\n"
    "      --ema            a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -b, --batch N        images per forward pass (default 256)\n"
    "  -t, --threads N      threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("      ")
    CLI_BACKEND_HELP("      ")
    "      --per-class      also the accuracy of each class: index, images, top-1,\n"
    "                       top-5 and name, one line each, before the last line;\n"
    "                       seg: each class's IoU and accuracy\n"
    "  -q, --quiet          no progress bar (there is none when stderr is not a\n"
    "                       terminal) and no timing line\n"
    "      --task T         cls (default), seg or det\n"
    "      --mode M         seg: whole, slide (default) or aug (multi-scale + flip, each\n"
    "                       scale in slide mode, or whole with --mode whole too)\n"
    "      --no-reduce-zero-label  seg: annotation values are class indices as they are\n"
    "      --coco-annotations F    det: the annotation file (instances_*.json)\n"
    "\n"
    "With --task det, a detection model's COCO box and mask AP instead (IoU\n"
    "0.50:0.95, 101 recall points, 100 detections per image, as the official\n"
    "evaluation computes it) over the images of the annotation file found in\n"
    "IMAGES_DIR (by file name), each through mmdetection's COCO test pipeline.\n"
    "Prints AP, AP50, AP75, AP small / medium / large and AR100 for boxes and\n"
    "masks; the last line: bbox_mAP=0.xxxx segm_mAP=0.xxxx n=N\n"
    "\n" CLI_PREPROCESS_HELP;

enum { OPT_TASK = 300, OPT_MODE, OPT_PER_CLASS, OPT_NO_REDUCE, OPT_COCO_ANNOTATIONS };

/* A labelled set of images: file paths, or a tensor of pixels. */
typedef struct dataset {
    cli_files files;   /* folder layout */
    cli_files folders; /* folder layout: the class sub-folders' names */
    int *file_labels;  /* folder layout: label of each file (its folder's position, then its class) */
    dm_tensor_file tf; /* safetensors layout */
    const dm_tensor *images, *labels;
    size_t count;
} dataset;

static int open_folder(const char *dir, dataset *d)
{
    cli_files names;
    if (!cli_list_dir(dir, &names)) return 0;
    int ok = 1, classes = 0;
    for (size_t i = 0; ok && i < names.count; i++) {
        char *path;
        struct stat sb;
        if (asprintf(&path, "%s/%s", dir, names.paths[i]) < 0) {
            cli_error("out of memory");
            ok = 0;
            break;
        }
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            size_t before = d->files.count;
            ok = cli_files_add(&d->files, path) && cli_files_add(&d->folders, names.paths[i]);
            int *labels = ok ? realloc(d->file_labels, sizeof(int) * (d->files.count ? d->files.count : 1)) : NULL;
            if (ok && !labels) cli_error("out of memory");
            ok = labels != NULL;
            if (ok) d->file_labels = labels;
            for (size_t f = before; ok && f < d->files.count; f++) d->file_labels[f] = classes;
            classes++;
        }
        free(path);
    }
    cli_files_free(&names);
    if (ok && !classes) {
        cli_error("%s: no class sub-folders", dir);
        ok = 0;
    } else if (ok && !d->files.count) {
        cli_error("%s: no images in the class sub-folders", dir);
        ok = 0;
    }
    d->count = d->files.count;
    return ok;
}

static int open_tensors(const char *path, dataset *d)
{
    if (dm_safetensors_open(path, &d->tf) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    d->images = dm_tensor_file_find(&d->tf, "images");
    d->labels = dm_tensor_file_find(&d->tf, "labels");
    const dm_tensor *im = d->images, *lb = d->labels;
    if (!im || im->dtype != DM_U8 || (im->ndim != 3 && im->ndim != 4) || !lb || lb->dtype != DM_I64 ||
        lb->ndim != 1 || lb->shape[0] != im->shape[0] ||
        (im->ndim == 4 && im->shape[1] != 1 && im->shape[1] != 3)) {
        cli_error("%s: needs 'images' (U8, N x H x W or N x C x H x W, C 1 or 3) and 'labels' (I64, N)", path);
        return 0;
    }
    for (int i = 1; i < im->ndim; i++)
        if (im->shape[i] < 1 || im->shape[i] > 65536) {
            cli_error("%s: image size out of range", path);
            return 0;
        }
    d->count = (size_t)im->shape[0];
    if (!d->count) {
        cli_error("%s: the dataset holds no images", path);
        return 0;
    }
    return 1;
}

/* Every label of a tensor dataset must name one of the model's classes, or
 * the accuracy is meaningless; checked before any image is run (folders are
 * checked by map_folders). */
static int check_labels(const dataset *d, const char *data, int classes)
{
    if (!d->images) return 1;
    for (size_t i = 0; i < d->count; i++) {
        int64_t label;
        memcpy(&label, (const char *)d->labels->data + 8 * i, 8);
        if (label < 0 || label >= classes) {
            cli_error("%s: label %lld of image %zu is not a class of the model (0 to %d)", data, (long long)label, i,
                      classes - 1);
            return 0;
        }
    }
    return 1;
}

static void close_dataset(dataset *d)
{
    cli_files_free(&d->files);
    cli_files_free(&d->folders);
    free(d->file_labels);
    dm_tensor_file_close(&d->tf);
}

/* Item i of the dataset and its label.  Tensor images are viewed in place
 * (N x H x W) or made interleaved in scratch (N x C x H x W). */
static int64_t dataset_item(const dataset *d, size_t i, cli_item *item, uint8_t *scratch)
{
    if (!d->images) {
        *item = (cli_item){.path = d->files.paths[i]};
        return d->file_labels[i];
    }
    const dm_tensor *im = d->images;
    int c = im->ndim == 4 ? (int)im->shape[1] : 1;
    int h = (int)im->shape[im->ndim - 2], w = (int)im->shape[im->ndim - 1];
    size_t plane = (size_t)h * w;
    const uint8_t *src = (const uint8_t *)im->data + i * plane * c;
    uint8_t *pixels = (uint8_t *)src;
    if (c > 1) {
        pixels = scratch;
        for (int ch = 0; ch < c; ch++)
            for (size_t p = 0; p < plane; p++) pixels[p * c + ch] = src[ch * plane + p];
    }
    *item = (cli_item){.image = {.width = w, .height = h, .channels = c, .pixels = pixels}};
    int64_t label;
    memcpy(&label, (const char *)d->labels->data + 8 * i, 8);
    return label;
}

/* A name as folders spell it: lower case, every run of other characters
 * than letters and digits one '-', none at the ends.  "Ankle boot" and
 * "ankle_boot" both become "ankle-boot". */
static void normalize(const char *name, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (isalnum(ch)) out[n++] = (char)tolower(ch);
        else if (n && out[n - 1] != '-') out[n++] = '-';
    }
    while (n && out[n - 1] == '-') n--;
    out[n] = '\0';
}

/* Whether a folder name stands for a class name or one of the names it
 * lists with '/' or ',' ("T-shirt/top", "tench, Tinca tinca"). */
static int names_class(const char *folder, const char *class_name)
{
    char want[256], got[256];
    normalize(folder, strlen(folder), want, sizeof want);
    normalize(class_name, strlen(class_name), got, sizeof got);
    if (!strcmp(want, got)) return 1;
    for (const char *p = class_name; *p;) {
        size_t len = strcspn(p, "/,");
        normalize(p, len, got, sizeof got);
        if (*got && !strcmp(want, got)) return 1;
        p += len + (p[len] != '\0');
    }
    return 0;
}

/* Turn folder positions into classes: by name when every folder names a
 * class, else by position with a warning.  Prints the error and returns 0
 * when there are more folders than classes. */
static int map_folders(dataset *d, const dm_model *m)
{
    int classes = dm_model_config(m)->num_classes, folders = (int)d->folders.count;
    if (folders > classes) {
        cli_error("the data has %d class folders but the model only %d classes", folders, classes);
        return 0;
    }
    const char *const *names = dm_model_class_names(m);
    int *class_of = malloc(sizeof(int) * (folders ? folders : 1)), matched = 0;
    if (!class_of) {
        cli_error("out of memory");
        return 0;
    }
    for (int f = 0; f < folders; f++) {
        class_of[f] = -1;
        for (int c = 0; names && c < classes && class_of[f] < 0; c++)
            if (names_class(d->folders.paths[f], names[c])) class_of[f] = c;
        matched += class_of[f] >= 0;
    }
    if (matched == folders) {
        for (size_t i = 0; i < d->files.count; i++) d->file_labels[i] = class_of[d->file_labels[i]];
    } else {
        const char *unmatched = NULL;
        for (int f = 0; f < folders && !unmatched; f++)
            if (class_of[f] < 0) unmatched = d->folders.paths[f];
        fprintf(stderr,
                "damamba: warning: %d of %d folder names are not class names of the model (e.g. '%s'); "
                "taking folder %d in byte order as class %d, and so on\n",
                folders - matched, folders, unmatched, 0, 0);
    }
    free(class_of);
    return 1;
}

int cmd_eval(int argc, char **argv)
{
    const char *model_path = NULL, *annotations = NULL;
    int ema = 0;
    int batch = 256, quiet = 0, per_class = 0, c, reduce_zero_label = 1;
    int batch_given = 0, mode_given = 0, preprocess_given = 0;
    cli_task task = CLI_TASK_CLS;
    dm_backend backend = DM_BACKEND_CPU;
    dm_seg_options seg_options = dm_seg_options_ade20k();
    cli_preprocess_opts popts = {0};
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, CLI_OPT_DTYPE}, {"quiet", no_argument, 0, 'q'},
        {"task", required_argument, 0, OPT_TASK}, {"mode", required_argument, 0, OPT_MODE},
        {"coco-annotations", required_argument, 0, OPT_COCO_ANNOTATIONS},
        {"backend", required_argument, 0, CLI_OPT_BACKEND},
        {"per-class", no_argument, 0, OPT_PER_CLASS}, {"no-reduce-zero-label", no_argument, 0, OPT_NO_REDUCE},
        {"help", no_argument, 0, 'h'}, CLI_PREPROCESS_LONG_OPTIONS, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:b:t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'b':
            if (!cli_parse_int("--batch", optarg, 1, 4096, &batch)) return 2;
            batch_given = 1;
            break;
        case CLI_OPT_DTYPE: if (!cli_parse_precision("--dtype", optarg)) return 2; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case 'q': quiet = 1; break;
        case OPT_TASK: if (!cli_parse_task(optarg, &task)) return 2; break;
        case OPT_MODE:
            if (!cli_parse_seg_mode(optarg, &seg_options)) return 2;
            mode_given = 1;
            break;
        case OPT_PER_CLASS: per_class = 1; break;
        case OPT_NO_REDUCE: reduce_zero_label = 0; break;
        case OPT_COCO_ANNOTATIONS: annotations = optarg; break;
        case CLI_OPT_BACKEND: if (!cli_parse_backend("--backend", optarg, &backend)) return 2; break;
        case 'h': fputs(eval_usage, stdout); return 0;
        default: {
            int taken = cli_preprocess_opt(&popts, c, optarg);
            preprocess_given |= taken > 0;
            if (taken > 0) break;
            if (!taken) fputs(eval_usage, stderr);
            return 2;
        }
        }
    }
    int det = task == CLI_TASK_DET;
    const char *missing = det && !annotations   ? "eval --task det needs --coco-annotations"
                          : !det && annotations ? "--coco-annotations is for --task det"
                          : det && !model_path  ? "eval --task det needs a model (-m)"
                                                : NULL;
    if (missing) {
        cli_error("%s", missing);
        return 2;
    }
    if (optind != argc - 1) {
        fputs(eval_usage, stderr);
        return 2;
    }
    /* an option of another task is refused, not ignored */
    static const char *const task_names[] = {"cls", "seg", "det"};
    const char *misplaced = task != CLI_TASK_SEG && mode_given            ? "--mode"
                            : task != CLI_TASK_SEG && !reduce_zero_label  ? "--no-reduce-zero-label"
                            : task != CLI_TASK_CLS && batch_given         ? "--batch"
                            : task != CLI_TASK_CLS && preprocess_given    ? "a preprocessing option"
                            : det && ema                                  ? "--ema"
                            : det && per_class                            ? "--per-class"
                                                                          : NULL;
    if (misplaced) {
        cli_error("eval --task %s does not take %s", task_names[task], misplaced);
        return 2;
    }
    if (!cli_backend_usable(backend)) return 1;
    const char *data = argv[optind];
    if (det) return cli_eval_detection(model_path, backend, annotations, data, 0.05f, quiet);
    if (task == CLI_TASK_SEG) {
        dm_model *m = cli_load_model(model_path, ema);
        int rc = m ? cli_eval_seg(m, backend, data, &seg_options, reduce_zero_label, per_class, quiet) : 1;
        dm_model_free(m);
        return rc;
    }
    struct stat sb;
    dataset d = {0};
    int ok = stat(data, &sb) == 0 && S_ISDIR(sb.st_mode) ? open_folder(data, &d) : open_tensors(data, &d);
    dm_model *m = ok ? cli_load_model(model_path, ema) : NULL;
    if (m && !dm_model_config(m)->num_classes) { /* before the labels are held against its classes */
        cli_error("the model has no classification head (--task seg or det evaluates the others)");
        dm_model_free(m);
        m = NULL;
    }
    if ((size_t)batch > d.count) batch = (int)d.count; /* no memory for empty slots; d.count > 0 once opened */
    dm_preprocess prep = DM_PREPROCESS_INIT;
    cli_classifier cls = {0};
    int usage = 0;
    if (!m || (d.folders.count && !map_folders(&d, m)) || !check_labels(&d, data, dm_model_config(m)->num_classes) ||
        (usage = cli_preprocess_settings(m, &popts, &prep)) || !cli_classifier_init(&cls, m, backend, &prep, batch)) {
        dm_model_free(m);
        close_dataset(&d);
        return usage ? usage : 1;
    }
    cli_item *items = calloc((size_t)batch, sizeof(cli_item));
    int64_t *labels = calloc((size_t)batch, sizeof(int64_t));
    size_t image_bytes = d.images ? (size_t)(d.images->numel / d.images->shape[0]) : 0;
    uint8_t *scratch = malloc(image_bytes * batch + 1);
    size_t counted = 0, bad = 0, top1 = 0, top5 = 0;
    /* Per class: images, top-1 hits, top-5 hits. */
    size_t *per = per_class ? calloc((size_t)cls.classes * 3, sizeof(size_t)) : NULL;
    int failed = !items || !labels || !scratch || (per_class && !per), k = cls.classes < 5 ? cls.classes : 5;
    if (failed) cli_error("out of memory");
    cli_progress progress;
    cli_progress_start(&progress, d.count, quiet);
    for (size_t start = 0; !failed && start < d.count; start += (size_t)batch) {
        int n = d.count - start < (size_t)batch ? (int)(d.count - start) : batch;
        for (int i = 0; i < n; i++) labels[i] = dataset_item(&d, start + i, &items[i], scratch + i * image_bytes);
        if (!cli_classify(&cls, items, n)) {
            failed = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (cls.errors[i]) {
                cli_progress_clear(&progress);
                /* a file's error names it; a tensor dataset's images have their index */
                if (items[i].path) cli_error("%s", cls.errors[i]);
                else cli_error("%s: image %zu: %s", data, start + i, cls.errors[i]);
                bad++;
                continue;
            }
            int index[5];
            dm_top_k(cls.logits + (size_t)i * cls.classes, cls.classes, k, index);
            int hit1 = index[0] == labels[i], hit5 = 0;
            for (int j = 0; j < k; j++) hit5 |= index[j] == labels[i];
            counted++;
            top1 += hit1;
            top5 += hit5;
            if (per && labels[i] >= 0 && labels[i] < cls.classes) {
                size_t *row = per + 3 * labels[i];
                row[0]++;
                row[1] += hit1;
                row[2] += hit5;
            }
        }
        cli_progress_update(&progress, start + (size_t)n, bad);
    }
    cli_progress_end(&progress, "evaluated");
    failed |= bad > 0;
    for (int c = 0; per && c < cls.classes; c++) {
        const size_t *row = per + 3 * c;
        char buf[32], text[4096];
        if (row[0])
            printf("class %d n=%zu top1=%.4f top5=%.4f %s\n", c, row[0], (double)row[1] / row[0],
                   (double)row[2] / row[0], cli_text(cli_class_name(m, c, buf, sizeof buf), text, sizeof text));
    }
    if (counted) printf("top1=%.4f top5=%.4f n=%zu\n", (double)top1 / counted, (double)top5 / counted, counted);
    else cli_error("%s: no image could be evaluated", data);
    free(items);
    free(labels);
    free(scratch);
    free(per);
    cli_classifier_free(&cls);
    dm_model_free(m);
    close_dataset(&d);
    return failed ? 1 : 0;
}
