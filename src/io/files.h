/* files.h - open inputs without blocking, and write outputs so that they
 * are replaced whole or not at all.
 *
 * An input is opened without blocking and must be a regular file: a FIFO,
 * device or directory is refused before anything is read from it.
 *
 * An output's content goes to a new file beside PATH, named PATH.tmp.XXXXXX with six
 * random characters and created with O_CREAT | O_EXCL | O_NOFOLLOW: no
 * existing file, and no symbolic link planted under any name, is ever opened
 * for writing, and concurrent writers to one PATH each write their own file.
 * Once complete it is renamed over PATH in one step, so PATH holds either its
 * old content or the whole new one (the last writer wins); on failure the
 * temporary file is removed. */
#ifndef DM_FILES_H
#define DM_FILES_H

#include "damamba.h"

#include <stddef.h>
#include <stdio.h>

/* A descriptor (close it) of the regular file at path, and its size; or -1
 * with the error set, without the path (callers add it). */
int dm_open_input(const char *path, size_t *size);

typedef struct dm_outfile {
    FILE *f;
    char *path, *tmp;
} dm_outfile;

/* DM_ERR_ARGUMENT when path is the same file (device and inode, so hard
 * links and other spellings count) as one of the count inputs: replacing it
 * would destroy an input.  NULL inputs are skipped. */
dm_status dm_output_distinct(const char *path, const char *const *inputs, size_t count);

/* Create the temporary file for path; write through out->f. */
dm_status dm_outfile_open(const char *path, dm_outfile *out);

/* Close the temporary file and, when ok and every write succeeded, rename
 * it over the path; otherwise remove it.  ok = 0 abandons the output without
 * an error of its own (the caller has one).  Frees out in any case. */
dm_status dm_outfile_finish(dm_outfile *out, int ok);

#endif
