/* cmd_convert.c - `damamba convert`: a checkpoint to safetensors. */
#include "cli.h"
#include "internal_api.h"

#include <getopt.h>
#include <string.h>

static const char convert_usage[] =
    "usage: damamba convert IN OUT.safetensors [--ema] [--dtype f32|f16|bf16]\n"
    "\n"
    "Rewrites a model file (a PyTorch .pth checkpoint or safetensors) as\n"
    "safetensors under the official tensor names, with the inferred\n"
    "configuration and the source file name as metadata.  Only a model this\n"
    "program can load is written; OUT is replaced once completely written\n"
    "and may not be IN.\n"
    "\n"
    "  -e, --ema           take a training checkpoint's 'model_ema' weights\n"
    "  -d, --dtype TYPE    f32 (default), f16 or bf16 (rounded to nearest even)\n";

int cmd_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ema", no_argument, 0, 'e'}, {"dtype", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    static const struct { const char *name; dm_dtype dtype; } dtypes[] = {
        {"f32", DM_F32}, {"f16", DM_F16}, {"bf16", DM_BF16}};
    int c, use_ema = 0;
    dm_dtype dtype = DM_F32;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ed:h", opts, NULL)) != -1) {
        switch (c) {
        case 'e': use_ema = 1; break;
        case 'd': {
            size_t i = 0, n = sizeof dtypes / sizeof dtypes[0];
            while (i < n && strcmp(optarg, dtypes[i].name) != 0) i++;
            if (i == n) {
                cli_error("--dtype expects f32, f16 or bf16, got '%s'", optarg);
                return 2;
            }
            dtype = dtypes[i].dtype;
            break;
        }
        case 'h': fputs(convert_usage, stdout); return 0;
        default: fputs(convert_usage, stderr); return 2;
        }
    }
    if (argc - optind != 2) {
        fputs(convert_usage, stderr);
        return 2;
    }
    if (!cli_output_distinct(argv[optind + 1], (const char *[]){argv[optind]}, 1)) return 2;
    if (dm_convert(argv[optind], argv[optind + 1], use_ema, dtype) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 1;
    }
    return 0;
}
