/* damamba - the command-line program: one word per job. */
#include "cli.h"
#include "internal_api.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"run", cmd_run, "run a model on a tensor file, write logits and stage outputs"},
    {"info", cmd_info, "print a model's inferred configuration, parameters and MACs"},
    {"bench", cmd_bench, "time forward passes of an official variant with synthetic weights"},
    {"compare", cmd_compare, "run one input on the CPU and the CUDA backend, print the differences"},
    {"classify", cmd_classify, "top-k classes of images, as text or JSON lines"},
    {"segment", cmd_segment, "label every pixel of images with a segmentation model (PNG, JSON)"},
    {"detect", cmd_detect, "objects in images (Mask R-CNN): boxes, classes, masks, COCO results"},
    {"eval", cmd_eval, "top-1 / top-5 accuracy over a labelled image folder or dataset"},
    {"features", cmd_features, "the four stage outputs of one image, for detection necks"},
    {"preprocess", cmd_preprocess, "an image as the model sees it, as a tensor file"},
    {"scanmap", cmd_scanmap, "draw where a block's Dynamic Adaptive Scan samples (or write JSON)"},
    {"convert", cmd_convert, "rewrite a .pth checkpoint as safetensors (optionally f16/bf16)"},
#if DM_HAVE_SERVE
    {"serve", cmd_serve, "an HTTP inference server (KServe v2 protocol, dynamic batching)"},
#endif
};

static void usage(FILE *out)
{
    fprintf(out, "usage: damamba COMMAND [OPTIONS]\n"
                 "       damamba help [COMMAND]\n"
                 "       damamba --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'damamba help COMMAND' (or 'damamba COMMAND --help') describes a command.\n"
                 "Without -m, commands use the built-in Fashion-MNIST model.\n");
}

static int (*find_command(const char *name))(int, char **)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run;
    cli_error("unknown command '%s' (try 'damamba help')", name);
    return NULL;
}

static int run_command(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || (!strcmp(argv[1], "help") && argc == 2)) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("damamba %s (libdamamba %s)\n", DM_VERSION_STRING, dm_version_string());
        return 0;
    }
    if (!strcmp(argv[1], "help")) {
        if (argc > 3) {
            usage(stderr);
            return 2;
        }
        int (*run)(int, char **) = find_command(argv[2]);
        char *help_argv[] = {argv[2], "--help", NULL};
        return run ? run(2, help_argv) : 2;
    }
    int (*run)(int, char **) = find_command(argv[1]);
    return run ? run(argc - 1, argv + 1) : 2;
}

/* A standard stream the caller closed (>&-) is opened again, on /dev/full
 * for output (writes then fail and are reported) and /dev/null for input:
 * otherwise the next file opened takes its number, and printf writes
 * into an output file. */
static void hold_standard_streams(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        /* the lowest free number: fd itself, as those below are open */
        if (open(fd ? "/dev/full" : "/dev/null", fd ? O_WRONLY : O_RDONLY) < 0 && fd) open("/dev/null", O_WRONLY);
    }
}

/* A command's exit status, made 1 when what it wrote to standard output did
 * not all get there (a full disk, a closed pipe, /dev/full). */
static int flushed(int status)
{
    if (cli_flush_stdout()) return status;
    return status ? status : 1;
}

/* A signal that ends the program first removes the temporary files of the
 * outputs being written, then ends it as it would have: Ctrl-C, a kill or
 * a reader that went away (SIGPIPE) leaves no PATH.tmp.XXXXXX behind.
 * (serve installs its own handlers for a graceful stop.) */
static void remove_temporaries_and_end(int sig)
{
    dm_outfile_remove_temporaries();
    raise(sig); /* the handler was reset: the default action, once this returns */
}

static void clean_up_on_signals(void)
{
    static const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
    struct sigaction sa = {.sa_handler = remove_temporaries_and_end, .sa_flags = SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof signals / sizeof *signals; i++) {
        struct sigaction old;
        /* a signal the caller ignores (nohup, a shell's background job) stays ignored */
        if (sigaction(signals[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(signals[i], &sa, NULL);
    }
}

int main(int argc, char **argv)
{
    hold_standard_streams();
    clean_up_on_signals();
    return flushed(run_command(argc, argv));
}
