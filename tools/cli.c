#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>

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
