/* cmd_classify.c - `damamba classify`: images in, top-k labels out. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "internal_api.h"

static const char classify_usage[] =
    "usage: damamba classify [-m MODEL] [--ema] [-k TOP] [--json] [-b BATCH] [-t THREADS]\n"
    "                        [--dtype f32|bf16|f16] [--backend cpu|cuda] [--shard I/N] [--quiet]\n"
    "                        [PREPROCESSING OPTIONS] FILE|DIR|@LIST|-|@- ...\n"
    "\n"
    "Prints the TOP most probable classes of each image, with softmax\n"
    "probabilities.  A directory stands for the image files under it (.png,\n"
    ".jpg, .jpeg, .webp, .bmp, .gif, .tga, .ppm, .pgm, .pnm, recursively, in\n"
    "byte order of their names, each directory once however many links lead to\n"
    "it; other files are counted and reported); @LIST for the paths in file\n"
    "LIST, one per line; '-' for one image read from standard input, '@-' for\n"
    "a list read from it.  A directory or list without images is an error.  Labels\n"
    "come from the model's metadata 'classes', else ImageNet's for 1000-class\n"
    "models.  A file that cannot be classified is reported with its reason and\n"
    "skipped; the exit status is then 1.\n"
    "\n"
    "  -m, --model FILE     model (.safetensors or .pth); default: embedded\n"
    "      --ema            a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -k, --top K          classes per image (default 5, at most the model's)\n"
    "  -j, --json           one JSON object per line: {\"file\": ..., \"top\":\n"
    "                       [{\"index\": i, \"label\": ..., \"prob\": p}, ...]}, or\n"
    "                       {\"file\": ..., \"error\": ...} for a file that failed\n"
    "  -b, --batch N        images per forward pass (default 32)\n"
    "  -t, --threads N      threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("      ")
    CLI_BACKEND_HELP("      ")
    "      --shard I/N      only files I, I+N, I+2N, ... (0 <= I < N) of the whole list,\n"
    "                       so N jobs can split one list\n"
    "  -q, --quiet          no progress bar (there is none when stderr is not a terminal)\n"
    "                       and no closing timing line\n"
    "\n" CLI_PREPROCESS_HELP;

enum { OPT_SHARD = 300 };

/* probs: scratch for the model's classes. */
static void print_result(const char *file, const char *error, const float *logits, int classes, int k,
                         const dm_model *model, float *probs, int json)
{
    int index[k];
    char buf[32];
    if (error) {
        cli_error("%s", error);
        if (!json) return;
        fputs("{\"file\": ", stdout);
        dm_json_write_string(stdout, file);
        fputs(", \"error\": ", stdout);
        dm_json_write_string(stdout, error);
        fputs("}\n", stdout);
        return;
    }
    dm_softmax(logits, classes, probs);
    dm_top_k(probs, classes, k, index);
    if (!json) {
        cli_put_text(stdout, file);
        putchar('\n');
        for (int j = 0; j < k; j++) {
            printf("  %8.4f%%  ", 100 * probs[index[j]]);
            cli_put_text(stdout, cli_class_name(model, index[j], buf, sizeof buf));
            printf(" (%d)\n", index[j]);
        }
        return;
    }
    cli_write_top_json(stdout, file, model, probs, index, k);
    fputc('\n', stdout);
}

int cmd_classify(int argc, char **argv)
{
    const char *model_path = NULL;
    int ema = 0;
    int top = 5, json = 0, batch = 32, quiet = 0, shard_index = 0, shard_count = 1, c;
    dm_backend backend = DM_BACKEND_CPU;
    cli_preprocess_opts popts = {0};
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"top", required_argument, 0, 'k'},
        {"json", no_argument, 0, 'j'}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, CLI_OPT_DTYPE}, {"shard", required_argument, 0, OPT_SHARD},
        {"backend", required_argument, 0, CLI_OPT_BACKEND},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, CLI_PREPROCESS_LONG_OPTIONS, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:k:jb:t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'k': if (!cli_parse_int("--top", optarg, 1, 100000, &top)) return 2; break;
        case 'j': json = 1; break;
        case 'b': if (!cli_parse_int("--batch", optarg, 1, 4096, &batch)) return 2; break;
        case CLI_OPT_DTYPE: if (!cli_parse_precision("--dtype", optarg)) return 2; break;
        case CLI_OPT_BACKEND: if (!cli_parse_backend("--backend", optarg, &backend)) return 2; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case OPT_SHARD: if (!cli_parse_shard(optarg, &shard_index, &shard_count)) return 2; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(classify_usage, stdout); return 0;
        default: {
            int taken = cli_preprocess_opt(&popts, c, optarg);
            if (taken > 0) break;
            if (!taken) fputs(classify_usage, stderr);
            return 2;
        }
        }
    }
    if (optind == argc) {
        fputs(classify_usage, stderr);
        return 2;
    }
    if (!cli_backend_usable(backend)) return 1;
    int failed = 0;
    cli_source source;
    if (!cli_source_init(&source, argv + optind, argc - optind, shard_index, shard_count)) return 2;
    /* No memory for slots no image can fill (0: a list from standard input
     * may hold any number). */
    size_t total = cli_source_total(&source);
    if (total && (size_t)batch > total) batch = (int)total;
    dm_model *m = cli_load_model(model_path, ema);
    dm_preprocess prep = DM_PREPROCESS_INIT;
    cli_classifier cls = {0};
    int usage = 0;
    if (!m || (usage = cli_preprocess_settings(m, &popts, &prep)) ||
        !cli_classifier_init(&cls, m, backend, &prep, batch)) {
        dm_model_free(m);
        cli_source_free(&source);
        return usage ? usage : 1;
    }
    if (top > cls.classes) top = cls.classes;
    cli_item *items = calloc((size_t)batch, sizeof(cli_item));
    float *probs = malloc(sizeof(float) * cls.classes);
    cli_progress progress;
    cli_progress_start(&progress, cli_source_total(&source), quiet);
    size_t done = 0, bad = 0;
    while (items && probs) {
        /* A batch is whatever input is at hand, up to its size: a list
         * arriving on standard input gets its answers as it goes. */
        int n = 0;
        while (n < batch && (n == 0 || cli_source_ready(&source)) && (items[n].path = cli_source_next(&source)))
            n++;
        if (n == 0) break;
        int ran = cli_classify(&cls, items, n);
        cli_progress_clear(&progress);
        for (int i = 0; ran && i < n; i++) {
            print_result(items[i].path, cls.errors[i], cls.logits + (size_t)i * cls.classes, cls.classes, top,
                         m, probs, json);
            bad += cls.errors[i] != NULL;
        }
        int written = cli_flush_stdout();
        for (int i = 0; i < n; i++) free((char *)items[i].path);
        if (!ran || !written) {
            failed = 1;
            break;
        }
        cli_progress_update(&progress, done += (size_t)n, bad);
    }
    cli_progress_end(&progress, "classified");
    failed |= bad > 0;
    if (!items || !probs) {
        cli_error("out of memory");
        failed = 1;
    }
    failed |= source.failed;
    free(items);
    free(probs);
    cli_classifier_free(&cls);
    dm_model_free(m);
    cli_source_free(&source);
    return failed ? 1 : 0;
}
