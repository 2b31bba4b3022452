#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The default model's bytes, linked in by embed.S. */
extern const unsigned char dm_default_model[];
extern const unsigned char dm_default_model_end[];

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("damamba: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

dm_model *cli_load_model(const char *path, int use_ema)
{
    dm_model *m = NULL;
    dm_status st;
    if (path) {
        dm_load_options opts = {.use_ema = use_ema};
        st = dm_model_load(path, &opts, &m);
    } else {
        st = dm_model_load_buffer(dm_default_model, (size_t)(dm_default_model_end - dm_default_model), &m);
    }
    if (st != DM_OK) {
        cli_error("%s", dm_last_error());
        return NULL;
    }
    return m;
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

int cli_parse_size(const char *option, const char *value, int *h, int *w)
{
    char x;
    if (sscanf(value, "%dx%d%c", h, w, &x) == 2 && *h >= 1 && *w >= 1 && *h <= 65536 && *w <= 65536) return 1;
    if (sscanf(value, "%d%c", h, &x) == 1 && *h >= 1 && *h <= 65536) {
        *w = *h;
        return 1;
    }
    cli_error("%s expects HxW or N, got '%s'", option, value);
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

dm_workspace *cli_workspace_create(const dm_model *model, dm_backend backend, int n, int h, int w)
{
    dm_workspace *ws;
    if (dm_workspace_create_on(model, backend, n, h, w, &ws) != DM_OK) {
        cli_error("%s backend: %s", dm_backend_name(backend), dm_last_error());
        return NULL;
    }
    return ws;
}
