/* cmd_serve.c - `damamba serve`: load the models, listen, and run until
 * SIGTERM or SIGINT, then drain. */
#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char serve_usage[] =
    "usage: damamba serve [-m [NAME=]MODEL]... [--host ADDR] [--port N] [-b MAX_BATCH]\n"
    "                     [--max-delay-ms D] [-t THREADS] [--dtype f32|bf16|f16]\n"
    "                     [--max-body-mb N] [--max-image-pixels N] [--queue N] [--timeout S]\n"
    "                     [--max-connections N]\n"
    "\n"
    "An HTTP inference server speaking the Open Inference Protocol (KServe v2,\n"
    "with Triton's binary tensor extension), plus POST /v1/classify for an image\n"
    "body and GET /metrics for Prometheus.  Requests that arrive together run as\n"
    "one batch.  SIGTERM or SIGINT stops accepting connections, finishes the\n"
    "requests in flight (for up to 30 s, or until a second signal), answers\n"
    "503 to those it has not started and exits 0.\n"
    "\n"
    "  -m, --model [NAME=]FILE  serve FILE as NAME (default: the file name without\n"
    "                           its extension); repeat for more models; default: the\n"
    "                           embedded model, as damamba_fmnist\n"
    "      --host ADDR          address to listen on (default 127.0.0.1; 0.0.0.0 or ::\n"
    "                           for every interface)\n"
    "      --port N             port (default 8080; 0: any free port, printed at start)\n"
    "  -b, --max-batch N        images per forward pass (default 8)\n"
    "      --max-delay-ms D     how long the first request of a batch waits for\n"
    "                           others (default 5)\n"
    "  -t, --threads N          threads per forward pass (default: DAMAMBA_THREADS,\n"
    "                           OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("          ")
    "      --max-body-mb N      larger request bodies get 413, requests for larger answers\n"
    "                           400 (default 64)\n"
    "      --max-image-pixels N an image whose header gives more pixels (width x\n"
    "                           height; a GIF's screen) gets 400 before any is\n"
    "                           decoded, as does a request whose images have more\n"
    "                           together (default and most: 67108864, 8192 x 8192)\n"
    "      --queue N            requests waiting per model before 503 (default 64)\n"
    "      --timeout S          close connections idle for S seconds (default 30)\n"
    "      --max-connections N  connections open at once (default 4096)\n";

enum { OPT_HOST = 300, OPT_PORT, OPT_MAX_DELAY, OPT_MAX_BODY, OPT_MAX_PIXELS, OPT_QUEUE, OPT_TIMEOUT, OPT_MAX_CONNECTIONS };

#define DRAIN_SECONDS 30
#define EMBEDDED_MODEL_NAME "damamba_fmnist"

static int stop_pipe[2];

static void on_stop_signal(int signo)
{
    int saved = errno;
    char byte = (char)signo;
    ssize_t written = write(stop_pipe[1], &byte, 1); /* fails only when a stop is already pending */
    (void)written;
    errno = saved;
}

/* Model names appear in URLs and metric labels: keep them plain. */
static int valid_name(const char *name)
{
    if (!*name || strlen(name) > 128) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-' || *p == '.'))
            return 0;
    return 1;
}

/* "NAME=FILE" or "FILE" (named after the file, without directory and extension). */
static char *model_name(const char *arg, const char **path)
{
    const char *eq = strchr(arg, '=');
    if (eq) {
        *path = eq + 1;
        return strndup(arg, (size_t)(eq - arg));
    }
    *path = arg;
    const char *base = strrchr(arg, '/') ? strrchr(arg, '/') + 1 : arg;
    const char *dot = strrchr(base, '.');
    return strndup(base, dot && dot != base ? (size_t)(dot - base) : strlen(base));
}

/* Load one model and start its batcher. */
static int model_open(serve_model *sm, char *name, const char *path, const serve_options *opt)
{
    sm->name = name;
    sm->source = path ? path : CLI_DEFAULT_MODEL_NAME;
    if (!(sm->model = cli_load_model(path, 0))) return 0;
    const dm_config *cfg = dm_model_config(sm->model);
    sm->prep = (dm_preprocess)DM_PREPROCESS_INIT;
    if (dm_preprocess_default(sm->model, &sm->prep) != DM_OK) {
        cli_error("%s: %s", sm->source, dm_last_error());
        return 0;
    }
    /* Batches need one input size: the one preprocessing gives every image. */
    if (!cli_fixed_input_size(&sm->prep, &sm->h, &sm->w) || sm->prep.channels != cfg->in_chans) {
        cli_error("%s: its preprocessing metadata gives no fixed input size of %d channels", sm->source,
                  cfg->in_chans);
        return 0;
    }
    sm->channels = cfg->in_chans;
    sm->classes = cfg->num_classes;
    sm->max_image_pixels = opt->max_image_pixels;
    for (int s = 0; s < DM_NUM_STAGES; s++)
        if (dm_stage_shape(sm->model, sm->h, sm->w, s, &sm->stage_c[s], &sm->stage_h[s], &sm->stage_w[s]) != DM_OK) {
            cli_error("%s: %s", sm->source, dm_last_error());
            return 0;
        }
    return serve_batcher_start(&sm->batcher, sm->model, opt->max_batch, opt->max_delay_ms, opt->queue_limit, sm->h,
                               sm->w);
}

static void model_close(serve_model *sm)
{
    serve_batcher_stop(&sm->batcher);
    dm_model_free(sm->model);
    free(sm->name);
}

/* Every connection is a file descriptor: allow as many as the hard limit. */
static void raise_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Whether the names the -m arguments give are usable and distinct, checked
 * before any model loads: a usage error, not a failure to serve. */
static int names_usable(const char **paths, int npaths)
{
    for (int i = 0; i < npaths; i++) {
        const char *path;
        char *name = model_name(paths[i], &path);
        int taken = 0;
        for (int j = 0; name && j < i && !taken; j++) {
            char *earlier = model_name(paths[j], &path);
            taken = !earlier || !strcmp(earlier, name);
            free(earlier);
        }
        if (!name || taken || !valid_name(name)) {
            if (name) cli_error("model name '%s' is %s (letters, digits, '_', '-' and '.'; each name once)", name,
                                taken ? "taken" : "not usable");
            else cli_error("out of memory");
            free(name);
            return 0;
        }
        free(name);
    }
    return 1;
}

/* Load every -m (or the embedded model) and start its batcher. */
static int open_models(serve_server *s, const char **paths, int npaths, int nmodels)
{
    for (int i = 0; i < nmodels; i++) {
        const char *path = NULL;
        char *name = npaths ? model_name(paths[i], &path) : strdup(EMBEDDED_MODEL_NAME);
        if (!name) {
            cli_error("out of memory");
            return 0;
        }
        s->model_count = i + 1;
        if (!model_open(&s->models[i], name, path, &s->opt)) return 0;
    }
    return 1;
}

/* SIGTERM and SIGINT may arrive on any thread (OpenBLAS starts its own):
 * the handler only writes to a pipe that the main thread waits on.  The
 * pipe stays open, as the handlers stay installed, until the process ends. */
static int watch_stop_signals(void)
{
    if (pipe(stop_pipe) != 0) {
        cli_error("cannot create a pipe: %s", strerror(errno));
        return 0;
    }
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Writes to clients that hung up fail with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    raise_file_limit();
    return 1;
}

/* Returns 1 to serve, 0 after a usage error, -1 after --help. */
static int parse_options(int argc, char **argv, serve_options *opt, const char ***models, int *count)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT}, {"max-batch", required_argument, 0, 'b'},
        {"max-delay-ms", required_argument, 0, OPT_MAX_DELAY}, {"threads", required_argument, 0, 't'},
        {"dtype", required_argument, 0, CLI_OPT_DTYPE}, {"max-body-mb", required_argument, 0, OPT_MAX_BODY},
        {"max-image-pixels", required_argument, 0, OPT_MAX_PIXELS}, {"queue", required_argument, 0, OPT_QUEUE},
        {"timeout", required_argument, 0, OPT_TIMEOUT}, {"max-connections", required_argument, 0, OPT_MAX_CONNECTIONS},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, body_mb = 64;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:b:t:h", opts, NULL)) != -1) {
        int ok = 1;
        switch (c) {
        case 'm': (*models)[(*count)++] = optarg; break;
        case OPT_HOST: opt->host = optarg; break;
        case OPT_PORT: ok = cli_parse_int("--port", optarg, 0, 65535, &opt->port); break;
        case 'b': ok = cli_parse_int("--max-batch", optarg, 1, 4096, &opt->max_batch); break;
        case OPT_MAX_DELAY: ok = cli_parse_int("--max-delay-ms", optarg, 0, 60000, &opt->max_delay_ms); break;
        case 't': ok = cli_parse_threads(optarg); break;
        case CLI_OPT_DTYPE: ok = cli_parse_precision("--dtype", optarg); break;
        case OPT_MAX_BODY: ok = cli_parse_int("--max-body-mb", optarg, 1, 4096, &body_mb); break;
        case OPT_MAX_PIXELS:
            ok = cli_parse_int("--max-image-pixels", optarg, 1, DM_IMAGE_MAX_PIXELS, &opt->max_image_pixels);
            break;
        case OPT_QUEUE: ok = cli_parse_int("--queue", optarg, 1, 1 << 20, &opt->queue_limit); break;
        case OPT_TIMEOUT: ok = cli_parse_int("--timeout", optarg, 1, 86400, &opt->timeout_s); break;
        case OPT_MAX_CONNECTIONS:
            ok = cli_parse_int("--max-connections", optarg, 1, 1 << 20, &opt->max_connections);
            break;
        case 'h': fputs(serve_usage, stdout); return -1;
        default: ok = 0; fputs(serve_usage, stderr); break;
        }
        if (ok <= 0) return ok;
    }
    if (optind != argc) {
        fputs(serve_usage, stderr);
        return 0;
    }
    opt->max_body = (size_t)body_mb << 20;
    return 1;
}

int cmd_serve(int argc, char **argv)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    serve_server s = {.opt = {.host = "127.0.0.1", .port = 8080, .max_batch = 8, .max_delay_ms = 5,
                              .queue_limit = 64, .timeout_s = 30, .max_connections = 4096,
                              .max_image_pixels = DM_IMAGE_MAX_PIXELS,
                              .http_threads = cores > 2 ? (int)cores : 2}};
    const char **paths = calloc((size_t)argc, sizeof(char *));
    int npaths = 0;
    int parsed = paths ? parse_options(argc, argv, &s.opt, &paths, &npaths) : 0;
    if (parsed == 1 && !names_usable(paths, npaths)) parsed = 0;
    if (parsed != 1) {
        free(paths);
        return parsed < 0 ? 0 : 2;
    }
    int nmodels = npaths ? npaths : 1, rc = 1;
    s.models = calloc((size_t)nmodels, sizeof(serve_model));
    serve_metrics_init(&s.metrics);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.idle, NULL);
    int ok = s.models && open_models(&s, paths, npaths, nmodels);
    if (!s.models) cli_error("out of memory");
    if (ok && watch_stop_signals() && serve_http_start(&s)) {
        fprintf(stderr, "damamba serve: listening on http://%s%s%s:%d/ (", strchr(s.opt.host, ':') ? "[" : "",
                s.opt.host, strchr(s.opt.host, ':') ? "]" : "", s.opt.port);
        for (int i = 0; i < s.model_count; i++)
            fprintf(stderr, "%s%s %dx%dx%d", i ? ", " : "models: ", s.models[i].name, s.models[i].channels,
                    s.models[i].h, s.models[i].w);
        fprintf(stderr, "; batch %d, %d threads)\n", s.opt.max_batch, cli_thread_count());
        char signo = 0;
        while (read(stop_pipe[0], &signo, 1) < 0 && errno == EINTR) continue;
        fprintf(stderr, "damamba serve: %s: finishing the requests in flight\n", strsignal(signo));
        serve_http_stop(&s, DRAIN_SECONDS, stop_pipe[0]);
        fprintf(stderr, "damamba serve: stopped\n");
        rc = 0;
    }
    for (int i = 0; i < s.model_count; i++) model_close(&s.models[i]);
    free(s.models);
    free(paths);
    pthread_cond_destroy(&s.idle);
    pthread_mutex_destroy(&s.lock);
    serve_metrics_destroy(&s.metrics);
    return rc;
}
