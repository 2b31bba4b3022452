/* cli.h - shared pieces of the damamba command-line program.  Each command
 * lives in its own cmd_*.c file as `int cmd_NAME(int argc, char **argv)`
 * (argv[0] is the command name) and is listed in damamba.c. */
#ifndef DM_CLI_H
#define DM_CLI_H

#include "coco_annotations.h"
#include "damamba.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Write s with control characters (escape sequences, newlines) as \xHH,
 * so names from files and models cannot steer the terminal. */
void cli_put_text(FILE *f, const char *s);
/* The same into buf (size > 0), cut short to fit; returns buf, for a
 * printf argument. */
const char *cli_text(const char *s, char *buf, size_t size);

/* Print "damamba: message" to stderr, control characters escaped. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The message cli_error() last printed on this thread (truncated to 8191
 * bytes), for a result line that reports a failure; "" before any. */
const char *cli_last_error(void);

/* Flush standard output: 1 when all that was printed got there, else 0,
 * "cannot write to standard output: REASON" printed (once per run).  A
 * command printing results per image calls it after each, and stops on 0:
 * with SIGPIPE ignored, a reader that went away ends the run no other way. */
int cli_flush_stdout(void);

/* Load -m MODEL, or the embedded Fashion-MNIST model when path is NULL.
 * Prints the error and returns NULL on failure. */
dm_model *cli_load_model(const char *path, int use_ema);

/* Name shown for the embedded default model. */
#define CLI_DEFAULT_MODEL_NAME "(embedded damamba_fmnist)"

/* Refuse an output that is one of the inputs (NULL entries skipped): prints
 * the error and returns 0. */
int cli_output_distinct(const char *output, const char *const *inputs, size_t count);

/* Parse a positive integer option value; prints an error and returns 0 on
 * failure. */
int cli_parse_int(const char *option, const char *value, int min, int max, int *out);

/* Parse an image size "HxW" (or "N" for N x N); prints an error and returns
 * 0 on failure. */
int cli_parse_size(const char *option, const char *value, int *h, int *w);

/* Parse a backend name ("cpu" or "cuda"), as for --backend; prints an error
 * and returns 0 on failure. */
int cli_parse_backend(const char *option, const char *value, dm_backend *out);
/* Whether the backend can run here (dm_backend_available), asked once
 * before any work: when not, prints the library's reason and returns 0. */
int cli_backend_usable(dm_backend backend);
/* The --backend option's line of a command's help, aligned as
 * CLI_DTYPE_HELP(pad). */
#define CLI_BACKEND_HELP(pad) "      --backend B" pad "cpu (default) or cuda (a build with -Dcuda=enabled)\n"

/* The precision of the command's matrix products (--dtype), applied by
 * cli_workspace_create; f32 unless given. */
extern dm_precision cli_precision;
/* Parse f32, bf16 or f16 into cli_precision; prints an error otherwise. */
int cli_parse_precision(const char *option, const char *value);
/* The --dtype option's line of a command's help. */
#define CLI_DTYPE_HELP(pad)                                                                          \
    "      --dtype T  " pad "f32 (default), bf16 or f16: the precision of the matrix products\n"        \
    "                 " pad "(inputs rounded, sums in float32; the README's \"Half precision\")\n"

/* Threads the command's workspaces and its own parallel loops use: the
 * --threads option's value when given (cli_threads > 0), else dm_threads(). */
extern int cli_threads;
int cli_thread_count(void);
/* Parse --threads (1 to DM_MAX_THREADS) into cli_threads; prints an error
 * and returns 0 on failure. */
int cli_parse_threads(const char *value);

/* Parse a segmentation --mode: whole, slide, or aug (multi-scale + flip
 * over the options' mode); prints an error and returns 0 on failure. */
int cli_parse_seg_mode(const char *value, dm_seg_options *o);

/* The model a command works with: --task cls (a classifier), seg (an
 * UperNet segmentation model) or det (a Mask R-CNN). */
typedef enum cli_task { CLI_TASK_CLS, CLI_TASK_SEG, CLI_TASK_DET } cli_task;

/* Parse --task; prints an error and returns 0 on failure. */
int cli_parse_task(const char *value, cli_task *task);

/* A workspace on a backend for n images of h x w, with the command's
 * threads and precision; NULL on failure, dm_last_error() saying why
 * ("cuda backend: ...", "--dtype bf16: ..."). */
dm_workspace *cli_workspace_open(const dm_model *model, dm_backend backend, int n, int h, int w);
/* The same, printing the error on failure. */
dm_workspace *cli_workspace_create(const dm_model *model, dm_backend backend, int n, int h, int w);
/* ------------------------------------------------------------- labels */

/* The name of class index: the model's (its metadata, or ImageNet's for a
 * 1000-class model), else "class N" written to buf. */
const char *cli_class_name(const dm_model *model, int index, char *buf, size_t size);

/* ------------------------------------------------------- preprocessing */

/* Per-channel values of an option: 1 or 3 of them, none when not given. */
typedef struct cli_floats {
    float values[3];
    int count;
} cli_floats;

/* Options that change a model's preprocessing; zero when not given. */
typedef struct cli_preprocess_opts {
    int size;
    double crop_fraction;
    dm_interpolation interpolation;
    int interpolation_set;
    cli_floats mean, std;
} cli_preprocess_opts;

enum { CLI_OPT_SIZE = 256, CLI_OPT_CROP_FRACTION, CLI_OPT_INTERPOLATION, CLI_OPT_MEAN, CLI_OPT_STD, CLI_OPT_EMA, CLI_OPT_DTYPE,
       CLI_OPT_BACKEND };

#define CLI_PREPROCESS_LONG_OPTIONS                                                                    \
    {"size", required_argument, 0, CLI_OPT_SIZE},                                                      \
        {"crop-fraction", required_argument, 0, CLI_OPT_CROP_FRACTION},                                \
        {"interpolation", required_argument, 0, CLI_OPT_INTERPOLATION},                                \
        {"mean", required_argument, 0, CLI_OPT_MEAN}, {"std", required_argument, 0, CLI_OPT_STD}

#define CLI_PREPROCESS_HELP                                                                            \
    "Preprocessing (default: the model's metadata, else ImageNet's 256 / 224 bicubic):\n"              \
    "      --size N             input side after the center crop\n"                                   \
    "      --crop-fraction F    crop / resized shorter side (0.875 = 224 of 256); with --size\n"      \
    "                           the shorter side becomes floor(N / F)\n"                               \
    "      --interpolation I    bicubic or bilinear (PIL's, antialiased when shrinking)\n"             \
    "      --mean A[,B,C]       per-channel mean, on pixels scaled to [0, 1]\n"                        \
    "      --std A[,B,C]        per-channel standard deviation\n"

/* Decode an image and preprocess it into a new channels x h x w tensor
 * (free it); prints the error and returns NULL on failure. */
float *cli_load_image(const char *path, const dm_preprocess *prep, int *h, int *w);

/* The size every image has after preprocessing (a crop, or a fixed
 * resize); returns 0 when the size depends on the image. */
int cli_fixed_input_size(const dm_preprocess *prep, int *h, int *w);

/* Record c if it is a preprocessing option: 1 when it was, 0 when it is
 * not one, -1 when its value is invalid (printed). */
int cli_preprocess_opt(cli_preprocess_opts *opts, int c, const char *value);

/* The model's preprocessing with the options applied.  Returns 0, or the
 * exit status for the error it printed: 1 when the model's own settings are
 * invalid, 2 when an option does not fit the model. */
int cli_preprocess_settings(const dm_model *model, const cli_preprocess_opts *opts, dm_preprocess *out);

/* A whole file, NUL-terminated, in a malloc'ed buffer (size without the
 * NUL); prints the error and returns NULL on failure. */
char *cli_read_file(const char *path, size_t *size);

/* ------------------------------------------------------------ file lists */

typedef struct cli_file_id {
    dev_t dev;
    ino_t ino;
} cli_file_id;

typedef struct cli_files {
    char **paths; /* NULL marks where '@-' reads a list from standard input */
    size_t count, cap;
    cli_file_id *dirs; /* directories walked so far */
    size_t dir_count, dir_cap;
    size_t revisits; /* directories met again and not walked again */
} cli_files;

/* Add one command-line argument: a file as is ('-' is an image read from
 * standard input), the image files under a directory (recursively, in byte
 * order of their names, each directory once however many links lead to it;
 * other files are counted and reported), the paths listed one per line in
 * the file after '@', or for '@-' a marker to read such a list from
 * standard input as it comes.  Prints the error and returns 0 when a
 * directory or list cannot be read; a walk leaves out a directory under it
 * that cannot be read and goes on (returning 0 at the end). */
int cli_files_add(cli_files *files, const char *arg);

void cli_files_free(cli_files *files);

/* The files a command writing one or more outputs per input image must
 * not replace: every input of the run (the expanded images, the files of
 * @LIST arguments, the model and any other file it reads) and what it has
 * written itself. */
typedef struct cli_outputs {
    cli_file_id *inputs; /* device and inode, sorted */
    size_t input_count;
    char **written; /* what names each written file (directory and name), sorted */
    size_t written_count, written_cap;
} cli_outputs;

/* From the images (cli_files_add's expansion), the command-line arguments
 * args[0 .. arg_count) (for their @LIST files) and other_count other
 * inputs (NULL skipped).  Prints and returns 0 when out of memory. */
int cli_outputs_init(cli_outputs *o, const cli_files *images, char *const *args, int arg_count,
                     const char *const *others, size_t other_count);
/* May the output for input be written at path?  0 (printed, naming input)
 * when it is one of the run's inputs or was written before in the run;
 * otherwise it counts as written. */
int cli_outputs_claim(cli_outputs *o, const char *input, const char *path);
void cli_outputs_free(cli_outputs *o);

/* The directory a command writes its files to: created when missing, with
 * its missing parents (mkdir -p).  Prints and returns 0 when it cannot be created or
 * is not a directory. */
int cli_output_dir(const char *dir);

/* The names in a directory, except those starting with '.', in byte order.
 * Prints the error and returns 0 on failure. */
int cli_list_dir(const char *dir, cli_files *names);

/* qsort's comparison of two char * by strcmp. */
int cli_compare_strings(const void *a, const void *b);

/* Parse --shard I/N (0 <= I < N); prints an error and returns 0 on failure. */
int cli_parse_shard(const char *value, int *index, int *count);

/* The paths to work on, one at a time: the expanded arguments in order, a
 * list on standard input read line by line as it arrives, and only every
 * shard_count-th path from shard_index on. */
/* A list of paths read line by line from a descriptor, as it arrives. */
typedef struct cli_line_reader {
    int fd;
    const char *name;          /* for messages: the list, or "standard input" */
    char *buf;                 /* what is read and not yet returned */
    size_t len, cap;
    size_t lines;              /* lines taken so far */
    int eof, failed;           /* failed: a line or the descriptor could not be read */
} cli_line_reader;

typedef struct cli_source {
    cli_files files;
    size_t next_file;
    int reading_stdin;         /* inside the '@-' list */
    cli_line_reader in;        /* standard input's list */
    size_t stdin_paths;        /* the paths it has given */
    int failed;                /* an argument or standard input could not be read */
    size_t index;              /* paths seen, for sharding */
    int shard_index, shard_count;
} cli_source;

/* Expand args (see cli_files_add).  An argument that cannot be expanded is
 * reported and sets failed; standard input named twice ('-' or '@-', as
 * arguments or lines '-' of lists) is a usage error: printed, and 0
 * returned.  A line '-' of the '@-' list is reported, sets failed and is
 * skipped. */
int cli_source_init(cli_source *s, char **args, int count, int shard_index, int shard_count);

/* The next path (the caller frees it), or NULL at the end. */
char *cli_source_next(cli_source *s);

/* Whether cli_source_next() would return without waiting for input. */
int cli_source_ready(cli_source *s);

/* Paths the source will give, or 0 when a list on standard input makes
 * that unknown. */
size_t cli_source_total(const cli_source *s);

void cli_source_free(cli_source *s);

/* Decode an image file, or standard input for "-", as PIL (the classifier's
 * transform) or OpenCV (the mm pipelines) decodes it. */
dm_status cli_image_load(const char *path, int channels, dm_image_convention convention, dm_image *out);

/* ------------------------------------------------------------- progress */

typedef struct cli_progress {
    int enabled, quiet;
    size_t total;        /* 0: unknown */
    size_t done, failed; /* images handled so far, and those of them that failed */
    double start, last;
    int shown;           /* a bar is on the terminal's current line */
} cli_progress;

/* A progress line on stderr (count, rate, ETA), only when stderr is a
 * terminal and not quiet. */
void cli_progress_start(cli_progress *p, size_t total, int quiet);
/* done images handled so far, failed of them included. */
void cli_progress_update(cli_progress *p, size_t done, size_t failed);
/* Erase the line before printing results, so they never mix with it. */
void cli_progress_clear(cli_progress *p);
/* Erase the line and, unless quiet, print "VERB N images in S s (R
 * images/s)" on stderr, N and R counting the images that succeeded, and
 * ", F failed" after it when some did. */
void cli_progress_end(cli_progress *p, const char *verb);

/* --------------------------------------------------------- classifying */

/* One image to classify: a file, or (path NULL) pixels already in memory. */
typedef struct cli_item {
    const char *path;
    dm_image image;
} cli_item;

/* Batches of images: decoded and preprocessed in parallel, then one
 * forward pass per batch. */
typedef struct cli_classifier {
    const dm_model *model;
    dm_backend backend;
    dm_workspace *ws;
    dm_preprocess prep;
    int batch, h, w, classes;
    float *input, *logits;
    char **errors; /* per slot after cli_classify: NULL, or why it failed */
} cli_classifier;

/* Prints the error and returns 0 on failure. */
int cli_classifier_init(cli_classifier *c, const dm_model *model, dm_backend backend, const dm_preprocess *prep,
                        int batch);

/* Classify n <= batch items: afterwards c->logits + i * classes holds item
 * i's logits unless c->errors[i] says why it failed.  Returns 0 when the
 * forward pass itself failed (printed). */
int cli_classify(cli_classifier *c, const cli_item *items, int n);

void cli_classifier_free(cli_classifier *c);

/* Write the JSON record `classify --json` prints for one image, without a
 * newline: {"file": ..., "top": [{"index": i, "label": ..., "prob": p}, ...]}
 * for the k classes in index; probs holds every class's probability. */
void cli_write_top_json(FILE *out, const char *file, const dm_model *model, const float *probs, const int *index,
                        int k);

/* ---------------------------------------------------------- segmenting */

/* Images segmented one after the other, as dm_segment_image does, on one
 * workspace grown to the largest network input met so far. */
typedef struct cli_segmenter {
    const dm_model *model;
    dm_backend backend;
    dm_mm_transform transform;
    dm_seg_options options;
    dm_workspace *ws;
    int ws_h, ws_w;
} cli_segmenter;

/* Labels (width x height) of a decoded image read from path; prints the
 * error and returns 0 on failure. */
int cli_segment_image(cli_segmenter *s, const char *path, const dm_image *img, int32_t *labels);
void cli_segmenter_free(cli_segmenter *s);

/* The file name of path without its directory and extension: a pointer
 * into path, and its length in *len; "stdin" for "-". */
const char *cli_path_stem(const char *path, int *len);

/* eval --task seg over ROOT/images/validation and ROOT/annotations/
 * validation; prints the metrics; returns the exit status. */
int cli_eval_seg(const dm_model *m, dm_backend backend, const char *root, const dm_seg_options *o,
                 int reduce_zero_label, int per_class, int quiet);

/* Commands */
/* ------------------------------------------------------------ detection */

/* A Mask R-CNN model with a workspace that grows to the images it sees. */
typedef struct cli_detector {
    const dm_model *model;
    dm_backend backend;
    dm_workspace *ws;
    int ws_h, ws_w;
    dm_det_settings settings;
} cli_detector;

/* A detector's class names (the model's, else "class N") and category ids
 * (dm_model_category_ids). */
typedef struct cli_det_classes {
    const char **names;
    const int *ids;
    char (*fallback)[24]; /* the "class N" names, when the model has none */
} cli_det_classes;

/* Prints the error and returns 0 when the model is no detector or out of
 * memory. */
int cli_det_classes_load(const dm_model *model, cli_det_classes *out);
void cli_det_classes_free(cli_det_classes *c);

/* Decode an image file into img and detect in it through mmdetection's
 * COCO test pipeline.  Returns NULL, or the reason it failed (valid until
 * the next call). */
const char *cli_detect_file(cli_detector *det, const char *path, dm_image *img, dm_detections *out);
void cli_detector_free(cli_detector *det);

/* A COCO annotation file, parsed; free with dm_json_free().  NULL, the
 * error printed, when it cannot be read or parsed. */
struct dm_json *cli_coco_load(const char *path);
/* Its "images" list (coco_annotations.h); prints the error and returns 0
 * when malformed. */
int cli_coco_images(const struct dm_json *root, const char *path, coco_image **out, size_t *count);

/* `damamba eval --task det`: box and mask AP over the images of the
 * annotation file found in dir; returns the exit status. */
int cli_eval_detection(const char *model_path, dm_backend backend, const char *annotations, const char *dir,
                       float score_thr, int quiet);

int cmd_run(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_detect(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_scanmap(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_segment(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
