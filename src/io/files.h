/* files.h - open inputs without blocking.  An input must be a regular
 * file: a FIFO, device or directory is refused before anything is read
 * from it.  Outputs (dm_outfile, dm_output_distinct) are declared in
 * internal_api.h, for the program, and implemented in files.c. */
#ifndef DM_FILES_H
#define DM_FILES_H

#include "internal_api.h"

#include <stddef.h>
#include <stdio.h>

/* A descriptor (close it) of the regular file at path, and its size; or -1
 * with the error set, without the path (callers add it). */
int dm_open_input(const char *path, size_t *size);

#endif
