/* cmd_detect.c - `damamba detect`: images in, objects (boxes, classes,
 * scores, masks) out, as text, JSON records, drawings or a COCO results
 * file. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "draw.h"
#include "internal_api.h"
/* stb's one-file bitmap font, for labels: quiet about its own style */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-braces"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

static const char detect_usage[] =
    "usage: damamba detect -m MODEL [-o DIR] [--json] [--draw] [--score-thr T]\n"
    "                      [--coco-results FILE --coco-annotations FILE] [-t THREADS]\n"
    "                      [--dtype f32|bf16|f16] [--backend cpu|cuda] [--quiet] FILE|DIR|@LIST ...\n"
    "\n"
    "Finds objects with a Mask R-CNN model (an mmdetection checkpoint): each\n"
    "image goes through mmdetection's COCO test pipeline (decoded as OpenCV\n"
    "decodes it, turned upright as its EXIF orientation says; resized into\n"
    "1333 x 800, normalized, padded to 32), and its detections come back in\n"
    "the upright image's pixels, best first.  Directories and @LIST as for\n"
    "`damamba classify`.  A file that cannot be read is reported and skipped,\n"
    "and so is a drawing that cannot be written (its detections are printed);\n"
    "the exit status is then 1.\n"
    "\n"
    "  -m, --model FILE          detection model (.safetensors or .pth)\n"
    "  -j, --json                one JSON object per image and line: {\"file\", \"width\",\n"
    "                            \"height\", \"detections\": [{\"label\", \"category_id\",\n"
    "                            \"score\", \"bbox\": [x, y, w, h], \"segmentation\":\n"
    "                            {\"size\": [h, w], \"counts\": COCO compressed RLE}}]}\n"
    "      --draw                write DIR/NAME.png: the photo with boxes, labels and\n"
    "                            translucent masks (needs -o)\n"
    "  -o, --output DIR          where --draw writes (created with its parents if missing)\n"
    "      --score-thr T         keep detections scoring above T (default 0.05, the\n"
    "                            authors' test setting)\n"
    "      --coco-results FILE   write every detection as the COCO results list\n"
    "                            (image_id, category_id, bbox, score, segmentation)\n"
    "      --coco-annotations F  the annotation file (instances_*.json) whose images'\n"
    "                            file names give the image ids\n"
    "  -t, --threads N           threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("           ")
    CLI_BACKEND_HELP("           ")
    "  -q, --quiet               no progress bar (there is none when stderr is not a\n"
    "                            terminal) and no closing timing line\n";

enum { OPT_DRAW = 300, OPT_SCORE_THR, OPT_COCO_RESULTS, OPT_COCO_ANNOTATIONS };

typedef struct detect_opts {
    const char *model, *out_dir, *results, *annotations;
    int json, draw, quiet;
    float score_thr;
    dm_backend backend;
} detect_opts;

/* The annotation file's id of an image, found by file name. */
static int image_id_of(const coco_image *images, size_t n, const char *path, int64_t *id)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < n; i++)
        if (strcmp(images[i].file_name, base) == 0) {
            *id = images[i].id;
            return 1;
        }
    return 0;
}

/* --------------------------------------------------------------- output */

static void print_text(const char *file, const dm_detections *d, const cli_det_classes *labels)
{
    char text[4096];
    printf("%s: %d object%s\n", cli_text(file, text, sizeof text), d->count, d->count == 1 ? "" : "s");
    for (int i = 0; i < d->count; i++) {
        const float *b = d->boxes + 4 * i;
        printf("  %.4f  %-16s x %7.1f  y %7.1f  w %7.1f  h %7.1f\n", d->scores[i],
               cli_text(labels->names[d->labels[i]], text, sizeof text), b[0], b[1], b[2] - b[0], b[3] - b[1]);
    }
}

/* One detection's fields of a COCO record, after the caller's opening. */
static void write_detection(FILE *f, const dm_detections *d, int i, const cli_det_classes *labels)
{
    const float *b = d->boxes + 4 * i;
    const double bbox[4] = {b[0], b[1], b[2] - b[0], b[3] - b[1]};
    fprintf(f, "\"category_id\": %d, \"bbox\": [", labels->ids[d->labels[i]]);
    for (int k = 0; k < 4; k++) {
        if (k) fputs(", ", f);
        dm_json_write_number(f, "%.2f", bbox[k]);
    }
    fputs("], \"score\": ", f);
    dm_json_write_number(f, "%.5f", d->scores[i]);
    fprintf(f, ", \"segmentation\": {\"size\": [%d, %d], \"counts\": ", d->mask_h, d->mask_w);
    dm_json_write_string(f, d->rle[i]);
    fputs("}", f);
}

static void print_json(const char *file, const dm_detections *d, const cli_det_classes *labels)
{
    fputs("{\"file\": ", stdout);
    dm_json_write_string(stdout, file);
    printf(", \"width\": %d, \"height\": %d, \"detections\": [", d->mask_w, d->mask_h);
    for (int i = 0; i < d->count; i++) {
        fputs(i ? ", {\"label\": " : "{\"label\": ", stdout);
        dm_json_write_string(stdout, labels->names[d->labels[i]]);
        fputs(", ", stdout);
        write_detection(stdout, d, i, labels);
        fputs("}", stdout);
    }
    fputs("]}\n", stdout);
}

/* ---------------------------------------------------------------- draw */

static colour class_colour(int label)
{
    static const colour palette[] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                     {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
                                     {210, 245, 60}, {250, 190, 212}, {0, 128, 128}, {170, 110, 40}};
    return palette[label % (int)(sizeof palette / sizeof palette[0])];
}

/* Text in stb_easy_font's strokes, scaled, on a filled background, at
 * (x, y) clamped into the canvas.  The font has printable ASCII only: any
 * other byte (UTF-8, control characters of a model's class names) is
 * drawn as '?'. */
static void draw_label(canvas *c, float x, float y, const char *label, colour fg, colour bg)
{
    /* stb_easy_font writes floats: 4 vertices of x, y, z and a colour word per quad */
    static float quads[16 * 1024];
    char text[160];
    size_t n_text = 0;
    for (; label[n_text] && n_text + 1 < sizeof text; n_text++)
        text[n_text] = label[n_text] >= 32 && label[n_text] < 127 ? label[n_text] : '?';
    text[n_text] = 0;
    if (!(x > 0)) x = 0; /* NaN too */
    if (!(y > 0)) y = 0;
    if (x > c->width) x = (float)c->width;
    if (y > c->height) y = (float)c->height;
    const int scale = 2;
    float w = (float)stb_easy_font_width(text) * scale + 4, h = 8.0f * scale + 2;
    if (y - h < 0) y = h;
    for (int py = (int)(y - h); py < (int)y; py++)
        for (int px = (int)x; px < (int)(x + w); px++) canvas_blend(c, px, py, bg, 1.0f);
    int n = stb_easy_font_print(0, 0, text, NULL, quads, sizeof quads);
    for (int q = 0; q < n; q++) {
        const float *v = quads + q * 16;
        float x0 = v[0], y0 = v[1], x1 = v[8], y1 = v[9];
        for (int py = (int)(y0 * scale); py < (int)(y1 * scale); py++)
            for (int px = (int)(x0 * scale); px < (int)(x1 * scale); px++)
                canvas_blend(c, (int)x + 2 + px, (int)(y - h) + 2 + py, fg, 1.0f);
    }
}

static int draw_detections(const char *path, const dm_image *img, const dm_detections *d, const cli_det_classes *labels)
{
    canvas c;
    if (canvas_init(&c, img->width, img->height) != 0) {
        cli_error("out of memory");
        return 0;
    }
    memcpy(c.rgb, img->pixels, (size_t)img->width * img->height * 3);
    size_t plane = (size_t)img->width * img->height;
    for (int i = d->count - 1; i >= 0; i--) /* best on top */
        for (size_t p = 0; p < plane; p++)
            if (d->masks[plane * i + p]) canvas_blend(&c, (int)(p % img->width), (int)(p / img->width), class_colour(d->labels[i]), 0.45f);
    for (int i = d->count - 1; i >= 0; i--) {
        const float *b = d->boxes + 4 * i;
        colour col = class_colour(d->labels[i]);
        draw_line(&c, b[0], b[1], b[2], b[1], 2, col);
        draw_line(&c, b[2], b[1], b[2], b[3], 2, col);
        draw_line(&c, b[2], b[3], b[0], b[3], 2, col);
        draw_line(&c, b[0], b[3], b[0], b[1], 2, col);
        char text[160];
        snprintf(text, sizeof text, "%s %.2f", labels->names[d->labels[i]], d->scores[i]);
        draw_label(&c, b[0], b[1], text, (colour){255, 255, 255}, col);
    }
    /* through a temporary file: the drawing replaces path only once whole */
    dm_outfile out;
    int ok = 0;
    if (dm_outfile_open(path, &out) != DM_OK) {
        cli_error("%s", dm_last_error());
    } else {
        int encoded = canvas_write_png(&c, out.f) == 0;
        if (!encoded) cli_error("out of memory encoding a %dx%d PNG", c.width, c.height);
        if (dm_outfile_finish(&out, encoded) != DM_OK) cli_error("%s", dm_last_error());
        else ok = encoded;
    }
    canvas_free(&c);
    return ok;
}

/* DIR/NAME.png for an input path, unless it would replace one of the run's
 * inputs or drawings. */
static int drawing_path(const char *dir, const char *input, cli_outputs *outs, char *out, size_t size)
{
    int len;
    const char *stem = cli_path_stem(input, &len);
    if (snprintf(out, size, "%s/%.*s.png", dir, len, stem) >= (int)size) {
        cli_error("%s: output path too long", input);
        return 0;
    }
    return cli_outputs_claim(outs, input, out);
}

/* ----------------------------------------------------------------- run */

static int parse_opts(int argc, char **argv, detect_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"output", required_argument, 0, 'o'},
        {"json", no_argument, 0, 'j'},               {"draw", no_argument, 0, OPT_DRAW},
        {"score-thr", required_argument, 0, OPT_SCORE_THR},
        {"coco-results", required_argument, 0, OPT_COCO_RESULTS},
        {"coco-annotations", required_argument, 0, OPT_COCO_ANNOTATIONS},
        {"threads", required_argument, 0, 't'},     {"dtype", required_argument, 0, CLI_OPT_DTYPE},
        {"backend", required_argument, 0, CLI_OPT_BACKEND}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    int c;
    char *end;
    *o = (detect_opts){.score_thr = 0.05f};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:jt:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'o': o->out_dir = optarg; break;
        case 'j': o->json = 1; break;
        case OPT_DRAW: o->draw = 1; break;
        case OPT_SCORE_THR:
            o->score_thr = strtof(optarg, &end);
            if (end == optarg || *end || !(o->score_thr >= 0.0f && o->score_thr <= 1.0f)) {
                cli_error("--score-thr expects a number from 0 to 1, got '%s'", optarg);
                return 2;
            }
            break;
        case OPT_COCO_RESULTS: o->results = optarg; break;
        case OPT_COCO_ANNOTATIONS: o->annotations = optarg; break;
        case CLI_OPT_DTYPE: if (!cli_parse_precision("--dtype", optarg)) return 2; break;
        case CLI_OPT_BACKEND: if (!cli_parse_backend("--backend", optarg, &o->backend)) return 2; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case 'q': o->quiet = 1; break;
        case 'h': fputs(detect_usage, stdout); return -1;
        default: fputs(detect_usage, stderr); return 2;
        }
    }
    if (optind == argc || !o->model) {
        if (!o->model) cli_error("detect needs a detection model (-m)");
        fputs(detect_usage, stderr);
        return 2;
    }
    if (o->draw != !!o->out_dir) {
        cli_error(o->draw ? "--draw needs -o DIR" : "-o DIR is where --draw writes: give --draw too");
        return 2;
    }
    if (!o->results != !o->annotations) {
        cli_error("--coco-results and --coco-annotations go together");
        return 2;
    }
    return 0;
}

int cmd_detect(int argc, char **argv)
{
    detect_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (!cli_backend_usable(o.backend)) return 1;
    cli_source source;
    if (!cli_source_init(&source, argv + optind, argc - optind, 0, 1)) return 2;
    /* nothing written replaces what the run reads or wrote */
    cli_outputs outs;
    if (!cli_outputs_init(&outs, &source.files, argv + optind, argc - optind, (const char *[]){o.model, o.annotations},
                          2)) {
        cli_source_free(&source);
        return 1;
    }
    if (o.results && !cli_outputs_claim(&outs, "--coco-results", o.results)) {
        cli_outputs_free(&outs);
        cli_source_free(&source);
        return 2;
    }
    cli_detector det = {.backend = o.backend};
    dm_det_settings_default(&det.settings);
    det.settings.score_thr = o.score_thr;
    det.settings.masks = (o.draw ? DM_MASKS_BITMAP : 0) | DM_MASKS_RLE;
    cli_det_classes labels = {0};
    coco_image *images = NULL;
    size_t nimages = 0;
    dm_outfile out = {0}; /* the results list, renamed into place when complete */
    FILE *results = NULL;
    dm_model *m = cli_load_model(o.model, 0);
    rc = 1;
    if (!m || !cli_det_classes_load(m, &labels)) goto done;
    det.model = m;
    if (dm_model_config(m)->det_classes == 0) {
        cli_error("%s: not a detection model (it has no Mask R-CNN heads)", o.model);
        goto done;
    }
    if (o.draw && !cli_output_dir(o.out_dir)) goto done;
    if (o.results) {
        dm_json *root = cli_coco_load(o.annotations);
        int ok = root && cli_coco_images(root, o.annotations, &images, &nimages);
        dm_json_free(root);
        if (!ok) goto done;
        if (dm_outfile_open(o.results, &out) != DM_OK) {
            cli_error("%s", dm_last_error());
            goto done;
        }
        results = out.f;
        fputs("[", results);
    }
    size_t written = 0, done = 0, bad = 0;
    cli_progress progress;
    cli_progress_start(&progress, cli_source_total(&source), o.quiet);
    int written_out = 1; /* standard output takes the results: else the run stops */
    for (char *path; written_out && (path = cli_source_next(&source)); free(path)) {
        dm_image img = {0};
        dm_detections d = {0};
        int64_t image_id = 0;
        const char *error = NULL;
        if (results && !image_id_of(images, nimages, path, &image_id)) error = "not among the annotation file's images";
        if (!error) error = cli_detect_file(&det, path, &img, &d);
        cli_progress_clear(&progress); /* results never mix with the progress line */
        if (error) {
            /* the image reader's messages name the file already */
            if (strncmp(error, path, strlen(path)) == 0) cli_error("%s", error);
            else cli_error("%s: %s", path, error);
            if (o.json) {
                fputs("{\"file\": ", stdout);
                dm_json_write_string(stdout, path);
                fputs(", \"error\": ", stdout);
                dm_json_write_string(stdout, error);
                fputs("}\n", stdout);
            }
            bad++;
        } else {
            if (o.json) print_json(path, &d, &labels);
            else print_text(path, &d, &labels);
            char out[4096];
            if (o.draw &&
                (!drawing_path(o.out_dir, path, &outs, out, sizeof out) || !draw_detections(out, &img, &d, &labels)))
                bad++;
            for (int i = 0; results && i < d.count; i++) {
                fprintf(results, "%s\n{\"image_id\": %lld, ", written++ ? "," : "", (long long)image_id);
                write_detection(results, &d, i, &labels);
                fputs("}", results);
            }
        }
        written_out = cli_flush_stdout();
        dm_detections_free(&d);
        dm_image_free(&img);
        cli_progress_update(&progress, ++done, bad);
    }
    cli_progress_end(&progress, "detected");
    if (!written_out) goto done; /* the results of a run cut short are not written */
    if (results && bad == done) {
        cli_error("%s: not written: no image was detected", o.results);
        goto done;
    }
    if (results) {
        fputs("\n]\n", results);
        results = NULL;
        if (dm_outfile_finish(&out, 1) != DM_OK) {
            cli_error("%s", dm_last_error());
            goto done;
        }
    }
    rc = source.failed || bad ? 1 : 0;
done:
    if (results) dm_outfile_finish(&out, 0);
    cli_detector_free(&det);
    coco_images_free(images, nimages);
    cli_det_classes_free(&labels);
    dm_model_free(m);
    cli_outputs_free(&outs);
    cli_source_free(&source);
    return rc;
}
