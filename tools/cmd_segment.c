/* cmd_segment.c - `damamba segment`: images in, label maps out (palette
 * PNGs, overlays, JSON class shares). */
#include "cli.h"

#include <limits.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

#include "internal_api.h"

static const char segment_usage[] =
    "usage: damamba segment -m MODEL [--ema] [-o DIR] [--mode whole|slide|aug] [--crop H[xW]]\n"
    "                       [--stride H[xW]] [--overlay] [--json] [-t THREADS]\n"
    "                       [--dtype f32|bf16|f16] [--backend cpu|cuda] [--quiet] FILE|DIR|@LIST ...\n"
    "\n"
    "Labels every pixel of each image with a segmentation model (an UperNet\n"
    "head, as mmsegmentation checkpoints have), as mmsegmentation's ADE20K test\n"
    "does: the image decoded as OpenCV decodes it (turned upright as its EXIF\n"
    "orientation says), scaled to fit (2048, 512), keeping its aspect ratio,\n"
    "inference, logits resized back to the image, the most probable class per\n"
    "pixel.  Writes DIR/NAME_seg.png, an 8-bit palette PNG whose pixel values\n"
    "are class indices and whose palette is the model's colours.  Files,\n"
    "directories and @LIST as for `damamba classify`; a file that cannot be\n"
    "segmented is reported and skipped (exit status 1).\n"
    "\n"
    "  -m, --model FILE     segmentation model (.pth or .safetensors, mmseg names)\n"
    "      --ema            a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -o, --output DIR     where the PNGs go (default: the current directory; created\n"
    "                       with its parents if missing, once the model is loaded)\n"
    "      --mode M         whole: the whole image at once; slide (default): crop x\n"
    "                       crop windows stride apart; aug: multi-scale (0.5 .. 1.75)\n"
    "                       + flip, each scale in slide mode (in whole mode after\n"
    "                       --mode whole)\n"
    "      --crop H[xW]     slide window (default 512)\n"
    "      --stride H[xW]   slide step (default 341)\n"
    "      --overlay        also NAME_overlay.png: the colours over the photo, half and half\n"
    "  -j, --json           one JSON object per line: {\"file\": ..., \"width\": w, \"height\": h,\n"
    "                       \"classes\": [{\"index\": k, \"label\": ..., \"share\": s}, ...]}\n"
    "                       (classes present, largest share first), or {\"file\", \"error\"}\n"
    "  -t, --threads N      threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("      ")
    CLI_BACKEND_HELP("      ")
    "  -q, --quiet          no progress bar (there is none when stderr is not a terminal)\n"
    "                       and no closing timing line\n";

enum { OPT_MODE = 300, OPT_CROP, OPT_STRIDE, OPT_OVERLAY };

typedef struct segmenter {
    cli_segmenter run;
    int classes;
    uint8_t palette[256 * 3];
} segmenter;

/* The model's colours, else distinct generated ones: three bit-reversed
 * ramps of the class index. */
static void load_palette(segmenter *s)
{
    const uint8_t *rgb = dm_model_palette(s->run.model);
    if (rgb) {
        memcpy(s->palette, rgb, 3 * (size_t)s->classes);
        return;
    }
    for (int k = 0; k < s->classes; k++)
        for (int c = 0; c < 3; c++) {
            unsigned v = 0;
            for (int bit = 0; bit < 8; bit++) v |= (((unsigned)(k + 1) >> (3 * bit + c)) & 1u) << (7 - bit);
            s->palette[3 * k + c] = (uint8_t)v;
        }
}

/* Write an 8-bit palette PNG through a temporary file, renamed into place
 * once complete.  Returns 0 and prints the reason on failure. */
static int write_label_png(const char *path, const uint8_t *labels, int w, int h, const uint8_t *rgb, int colours)
{
    dm_outfile out;
    if (dm_outfile_open(path, &out) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    int ok = info != NULL;
    if (ok && setjmp(png_jmpbuf(png))) ok = 0; /* libpng's errors return here */
    else if (ok) {
        png_init_io(png, out.f);
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_color plte[256];
        for (int k = 0; k < colours; k++) plte[k] = (png_color){rgb[3 * k], rgb[3 * k + 1], rgb[3 * k + 2]};
        png_set_PLTE(png, info, plte, colours);
        png_write_info(png, info);
        for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(labels + (size_t)y * w));
        png_write_end(png, NULL);
    }
    png_destroy_write_struct(&png, &info);
    if (!ok) cli_error("%s: cannot encode the PNG", path);
    if (dm_outfile_finish(&out, ok) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    return ok;
}

static void write_to_file(void *f, void *data, int size) { fwrite(data, 1, (size_t)size, f); }

/* Half the photo, half the class colour. */
static int write_overlay(const char *path, const dm_image *img, const uint8_t *labels, const uint8_t *rgb)
{
    size_t n = (size_t)img->width * img->height;
    uint8_t *out = malloc(n * 3);
    if (!out) {
        cli_error("out of memory");
        return 0;
    }
    for (size_t p = 0; p < n; p++)
        for (int c = 0; c < 3; c++) out[3 * p + c] = (uint8_t)((img->pixels[3 * p + c] + rgb[3 * labels[p] + c] + 1) / 2);
    dm_outfile file; /* a write error is kept in file.f's error flag */
    int ok = dm_outfile_open(path, &file) == DM_OK;
    if (ok) {
        ok = stbi_write_png_to_func(write_to_file, file.f, img->width, img->height, 3, out, img->width * 3);
        if (!ok) cli_error("%s: cannot encode the PNG", path);
        if (dm_outfile_finish(&file, ok) != DM_OK) ok = 0, cli_error("%s", dm_last_error());
    } else {
        cli_error("%s", dm_last_error());
    }
    free(out);
    return ok;
}

static void print_json(const char *file, int w, int h, const uint8_t *labels, const segmenter *s)
{
    char buf[32];
    size_t counts[256] = {0}, n = (size_t)w * h;
    for (size_t p = 0; p < n; p++) counts[labels[p]]++;
    fputs("{\"file\": ", stdout);
    dm_json_write_string(stdout, file);
    printf(", \"width\": %d, \"height\": %d, \"classes\": [", w, h);
    for (int printed = 0;; printed++) {
        int best = -1;
        for (int k = 0; k < s->classes; k++)
            if (counts[k] && (best < 0 || counts[k] > counts[best])) best = k;
        if (best < 0) break;
        printf("%s{\"index\": %d, \"label\": ", printed ? ", " : "", best);
        dm_json_write_string(stdout, cli_class_name(s->run.model, best, buf, sizeof buf));
        printf(", \"share\": %.6g}", (double)counts[best] / n);
        counts[best] = 0;
    }
    fputs("]}\n", stdout);
}

/* DIR/STEM_SUFFIX.png for an input path; 0 (printed) when it is too long. */
static int output_path(char *out, size_t size, const char *dir, const char *input, const char *suffix)
{
    int len;
    const char *stem = cli_path_stem(input, &len);
    if (snprintf(out, size, "%s/%.*s_%s.png", dir, len, stem, suffix) < (int)size) return 1;
    cli_error("%s: the output path in %s is too long", input, dir);
    return 0;
}

/* Segment one file; returns 0 (printed) when it failed, or when its
 * outputs would replace one of the run's inputs or outputs. */
static int segment_file(segmenter *s, cli_outputs *outs, const char *path, const char *dir, int overlay, int json)
{
    char seg_out[PATH_MAX], overlay_out[PATH_MAX];
    if (!output_path(seg_out, sizeof seg_out, dir, path, "seg") || !cli_outputs_claim(outs, path, seg_out) ||
        (overlay && (!output_path(overlay_out, sizeof overlay_out, dir, path, "overlay") ||
                     !cli_outputs_claim(outs, path, overlay_out))))
        return 0;
    dm_image img;
    if (cli_image_load(path, 3, DM_IMAGE_OPENCV, &img) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    int ok = 0;
    size_t n = (size_t)img.width * img.height;
    int32_t *labels = malloc(sizeof(int32_t) * n);
    uint8_t *map = malloc(n);
    if (!labels || !map) {
        cli_error("out of memory");
        goto done;
    }
    if (!cli_segment_image(&s->run, path, &img, labels)) goto done;
    for (size_t p = 0; p < n; p++) map[p] = (uint8_t)labels[p];
    if (!write_label_png(seg_out, map, img.width, img.height, s->palette, s->classes)) goto done;
    if (overlay && !write_overlay(overlay_out, &img, map, s->palette)) goto done;
    if (json) print_json(path, img.width, img.height, map, s);
    ok = 1;
done:
    free(labels);
    free(map);
    dm_image_free(&img);
    return ok;
}

int cmd_segment(int argc, char **argv)
{
    const char *model_path = NULL, *dir = ".";
    int overlay = 0, json = 0, quiet = 0, ema = 0, window_given = 0, c;
    segmenter s = {.run = {.transform = dm_mm_transform_ade20k(), .options = dm_seg_options_ade20k()}};
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"output", required_argument, 0, 'o'},
        {"mode", required_argument, 0, OPT_MODE}, {"crop", required_argument, 0, OPT_CROP},
        {"stride", required_argument, 0, OPT_STRIDE}, {"overlay", no_argument, 0, OPT_OVERLAY},
        {"json", no_argument, 0, 'j'}, {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, CLI_OPT_DTYPE},
        {"backend", required_argument, 0, CLI_OPT_BACKEND}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:jt:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'o': dir = optarg; break;
        case OPT_MODE: if (!cli_parse_seg_mode(optarg, &s.run.options)) return 2; break;
        case OPT_CROP:
            if (!cli_parse_size("--crop", optarg, &s.run.options.crop_h, &s.run.options.crop_w)) return 2;
            window_given = 1;
            break;
        case OPT_STRIDE:
            if (!cli_parse_size("--stride", optarg, &s.run.options.stride_h, &s.run.options.stride_w)) return 2;
            window_given = 1;
            break;
        case OPT_OVERLAY: overlay = 1; break;
        case 'j': json = 1; break;
        case CLI_OPT_DTYPE: if (!cli_parse_precision("--dtype", optarg)) return 2; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case CLI_OPT_BACKEND: if (!cli_parse_backend("--backend", optarg, &s.run.backend)) return 2; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(segment_usage, stdout); return 0;
        default: fputs(segment_usage, stderr); return 2;
        }
    }
    if (window_given && s.run.options.mode == DM_SEG_WHOLE) {
        cli_error("--crop and --stride set slide windows; --mode whole has none");
        return 2;
    }
    if (optind == argc || !model_path) {
        if (!model_path) cli_error("segment needs a segmentation model (-m)");
        fputs(segment_usage, stderr);
        return 2;
    }
    if (!cli_backend_usable(s.run.backend)) return 1;
    cli_source source;
    if (!cli_source_init(&source, argv + optind, argc - optind, 0, 1)) return 2;
    cli_outputs outs;
    if (!cli_outputs_init(&outs, &source.files, argv + optind, argc - optind, (const char *[]){model_path}, 1)) {
        cli_source_free(&source);
        return 1;
    }
    int rc = 1;
    dm_model *m = cli_load_model(model_path, ema);
    s.run.model = m;
    if (m && dm_model_config(m)->seg_classes == 0) cli_error("%s: not a segmentation model (no decode_head.*)", model_path);
    else if (m && dm_model_config(m)->seg_classes > 256)
        cli_error("%s: %d classes do not fit an 8-bit label map", model_path, dm_model_config(m)->seg_classes);
    /* the directory is made once the model is known to segment: a run
     * refused before leaves nothing behind */
    else if (m && cli_output_dir(dir)) {
        s.classes = dm_model_config(m)->seg_classes;
        load_palette(&s);
        cli_progress progress;
        cli_progress_start(&progress, cli_source_total(&source), quiet);
        size_t done = 0, bad = 0;
        int written = 1; /* standard output takes the results: else the run stops */
        for (char *path; written && (path = cli_source_next(&source)); free(path)) {
            if (!segment_file(&s, &outs, path, dir, overlay, json)) {
                bad++;
                if (json) {
                    fputs("{\"file\": ", stdout);
                    dm_json_write_string(stdout, path);
                    fputs(", \"error\": ", stdout);
                    dm_json_write_string(stdout, cli_last_error()); /* what stderr said */
                    fputs("}\n", stdout);
                }
            }
            written = cli_flush_stdout();
            cli_progress_update(&progress, ++done, bad);
        }
        cli_progress_end(&progress, "segmented");
        cli_segmenter_free(&s.run);
        rc = source.failed || bad || !written ? 1 : 0;
    }
    dm_model_free(m);
    cli_outputs_free(&outs);
    cli_source_free(&source);
    return rc;
}
