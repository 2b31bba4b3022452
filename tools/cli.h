/* cli.h - shared pieces of the damamba command-line program.  Each command
 * lives in its own cmd_*.c file as `int cmd_NAME(int argc, char **argv)`
 * (argv[0] is the command name) and is listed in damamba.c. */
#ifndef DM_CLI_H
#define DM_CLI_H

#include "damamba.h"

#include <stdio.h>

/* Print "damamba: message" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Load -m MODEL, or the embedded Fashion-MNIST model when path is NULL.
 * Prints the error and returns NULL on failure. */
dm_model *cli_load_model(const char *path, int use_ema);

/* Name shown for the embedded default model. */
#define CLI_DEFAULT_MODEL_NAME "(embedded damamba_fmnist)"

/* Parse a positive integer option value; prints an error and returns 0 on
 * failure. */
int cli_parse_int(const char *option, const char *value, int min, int max, int *out);

/* Commands */
int cmd_run(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_convert(int argc, char **argv);

#endif
