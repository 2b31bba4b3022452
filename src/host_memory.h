/* host_memory.h - the library's large host buffers, held to the memory this
 * process may use.  Linux grants more memory than it has and kills the
 * process once the pages are touched; a buffer that would take the process
 * past its limit fails here instead, with a reason for the message. */
#ifndef DM_HOST_MEMORY_H
#define DM_HOST_MEMORY_H

#include "internal_api.h"

#include <stddef.h>

/* Bytes this process may hold: the machine's memory, or its control
 * groups' limit where tighter; DAMAMBA_MEMORY_LIMIT, where set, replaces
 * both.  Read once.  0 when DAMAMBA_MEMORY_LIMIT is not a size: every
 * buffer then fails, naming it. */
size_t dm_memory_limit(void);

/* 64-byte aligned memory for bytes, or NULL: out of memory, or the
 * process, holding the larger of its resident memory (less mapped files)
 * and these buffers, would pass dm_memory_limit().  Free with
 * dm_host_free(). */
void *dm_host_alloc(size_t bytes);
void dm_host_free(void *p);

/* dm_host_alloc() of n elements of size bytes (NULL if that overflows).
 * For buffers that what a model file names scales (its classes, its
 * widths), where a small file could otherwise ask for gigabytes. */
void *dm_host_array(size_t n, size_t size);

/* Bytes the buffers of dm_host_alloc() hold now. */
size_t dm_host_held(void);

/* dm_fail(DM_ERR_NOMEM, ...) for a failed dm_host_alloc(): the message,
 * then why, when the limit refused it on this thread. */
dm_status dm_fail_nomem(const char *fmt, ...) DM_PRINTF(1, 2);

#endif
