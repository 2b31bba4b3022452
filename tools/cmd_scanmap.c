/* cmd_scanmap.c - `damamba scanmap`: draw where one block's Dynamic Adaptive
 * Scan samples, as the paper's Figure 5 does, or write the positions. */
#include "cli.h"
#include "scanmap.h"
#include "internal_api.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: damamba scanmap [-m MODEL] IMAGE -o OUT.png [--stage S] [--block B]\n"
    "                       [--group G|all] [--stride K] [--arrows] [--scale N] [--json]\n"
    "\n"
    "Runs the model on IMAGE and draws, over the image as the model sees it\n"
    "(preprocessed, shown de-normalized), where block B of stage S samples:\n"
    "every K-th position of the scan at its sampled location, consecutive\n"
    "positions joined in scan order (row-major over the stage's grid), the\n"
    "first marked with a star and the last with a circle, one colour per\n"
    "offset group.  Positions are in input-image pixels: grid point q of stage\n"
    "S lies on input pixel (4 << S) * q.\n"
    "\n"
    "  -m, --model FILE   model (.safetensors or .pth); default: embedded\n"
    "      --ema          a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -o, --output FILE  PNG to write (required); with --json the JSON (default:\n"
    "                     standard output)\n"
    "      --stage S      stage 0..3 (default 0)\n"
    "      --block B      block within the stage (default 0)\n"
    "      --group G|all  offset group to draw (default all)\n"
    "      --stride K     draw every K-th scan position (default 1)\n"
    "      --arrows       also an arrow from each drawn pixel to where it samples\n"
    "      --scale N      canvas pixels per image pixel (default: about 512 wide)\n"
    "      --json         write the positions as JSON instead of a picture\n";

static int write_json(FILE *f, const char *image, const scanmap *map, int h, int w, int group, int stride)
{
    fputs("{\"image\": ", f);
    dm_json_write_string(f, image);
    fprintf(f, ", \"input_size\": [%d, %d], \"stage\": %d, \"block\": %d, \"grid\": [%d, %d], "
               "\"step\": %d, \"stride\": %d, \"groups\": [",
            h, w, map->stage, map->block, map->grid_h, map->grid_w, map->step, stride);
    int first = 1;
    for (int g = 0; g < map->groups; g++) {
        if (group >= 0 && g != group) continue;
        fprintf(f, "%s{\"group\": %d, \"points\": [", first ? "" : ", ", g);
        first = 0;
        for (int p = 0; p >= 0; p = scanmap_next(map, p, stride)) {
            float x, y;
            scanmap_position(map, g, p, &x, &y);
            fprintf(f, "%s{\"index\": %d, \"x\": ", p ? ", " : "", p);
            dm_json_write_number(f, "%.9g", x);
            fputs(", \"y\": ", f);
            dm_json_write_number(f, "%.9g", y);
            fputs("}", f);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "]}\n");
    return ferror(f) ? -1 : 0;
}

int cmd_scanmap(int argc, char **argv)
{
    const char *model_path = NULL, *out_path = NULL;
    int ema = 0;
    int stage = 0, block = 0, group = -1, stride = 1, arrows = 0, scale = 0, json = 0, c;
    enum { OPT_STAGE = 300, OPT_BLOCK, OPT_GROUP, OPT_STRIDE, OPT_ARROWS, OPT_SCALE, OPT_JSON };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"output", required_argument, 0, 'o'},
        {"stage", required_argument, 0, OPT_STAGE}, {"block", required_argument, 0, OPT_BLOCK},
        {"group", required_argument, 0, OPT_GROUP}, {"stride", required_argument, 0, OPT_STRIDE},
        {"arrows", no_argument, 0, OPT_ARROWS}, {"scale", required_argument, 0, OPT_SCALE},
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'o': out_path = optarg; break;
        case OPT_STAGE: if (!cli_parse_int("--stage", optarg, 0, 3, &stage)) return 2; break;
        case OPT_BLOCK: if (!cli_parse_int("--block", optarg, 0, 1000, &block)) return 2; break;
        case OPT_GROUP:
            if (strcmp(optarg, "all") && !cli_parse_int("--group", optarg, 0, 1 << 16, &group)) return 2;
            break;
        case OPT_STRIDE: if (!cli_parse_int("--stride", optarg, 1, 1 << 30, &stride)) return 2; break;
        case OPT_ARROWS: arrows = 1; break;
        case OPT_SCALE: if (!cli_parse_int("--scale", optarg, 1, 64, &scale)) return 2; break;
        case OPT_JSON: json = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind + 1 != argc || (!out_path && !json)) {
        fputs(usage, stderr);
        return 2;
    }
    const char *image_path = argv[optind];
    if (out_path && !cli_output_distinct(out_path, (const char *[]){image_path, model_path}, 2)) return 2;
    dm_model *m = cli_load_model(model_path, ema);
    if (!m) return 1;
    const dm_config *cfg = dm_model_config(m);
    int rc = 1, h, w;
    float *input = NULL;
    scanmap map = {0};
    canvas cv = {0};
    dm_preprocess pre = DM_PREPROCESS_INIT;
    if (block >= cfg->depths[stage]) {
        cli_error("stage %d has %d blocks; --block %d does not exist", stage, cfg->depths[stage], block);
        goto done;
    }
    if (group >= cfg->groups[stage]) {
        cli_error("stage %d has %d offset groups; --group %d does not exist", stage, cfg->groups[stage], group);
        goto done;
    }
    if (dm_preprocess_default(m, &pre)) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    if (!(input = cli_load_image(image_path, &pre, &h, &w))) goto done;
    /* a picture too large to write is refused before the pass that maps it */
    if (!scale) scale = (512 + (h > w ? h : w) - 1) / (h > w ? h : w);
    if (!json && (double)w * scale * h * scale > CANVAS_MAX_PIXELS) {
        cli_error("the model sees %dx%d pixels: at --scale %d the picture would have %.0f, over the %d a PNG here "
                  "may have", w, h, scale, (double)w * scale * h * scale, CANVAS_MAX_PIXELS);
        goto done;
    }
    if (scanmap_compute(m, input, h, w, stage, block, &map)) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    if (json && !out_path) {
        rc = write_json(stdout, image_path, &map, h, w, group, stride) ? 1 : 0;
        goto done;
    }
    dm_outfile out;
    if (dm_outfile_open(out_path, &out) != DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    int drawn = 1; /* a write error is kept in out.f's error flag */
    if (json) {
        write_json(out.f, image_path, &map, h, w, group, stride);
    } else {
        /* the image as the model sees it, de-normalized */
        for (int ch = 0; ch < pre.channels; ch++)
            for (int i = 0; i < h * w; i++)
                input[(size_t)ch * h * w + i] = input[(size_t)ch * h * w + i] * pre.std[ch] + pre.mean[ch];
        if (scanmap_draw(&map, input, pre.channels, h, w, scale, group, stride, arrows, &cv)) {
            cli_error("out of memory for a %lldx%lld picture", (long long)w * scale, (long long)h * scale);
            drawn = 0;
        } else if (canvas_write_png(&cv, out.f)) {
            cli_error("out of memory encoding a %lldx%lld PNG", (long long)w * scale, (long long)h * scale);
            drawn = 0;
        }
    }
    if (dm_outfile_finish(&out, drawn) != DM_OK) cli_error("%s", dm_last_error());
    else rc = !drawn;
done:
    canvas_free(&cv);
    scanmap_free(&map);
    free(input);
    dm_model_free(m);
    return rc;
}
