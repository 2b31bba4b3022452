/* versioned.h - structs at the API boundary that carry their own size, so
 * they can grow without breaking programs built against an older header. */
#ifndef DM_VERSIONED_H
#define DM_VERSIONED_H

#include "damamba.h"

/* Copy the caller's struct (its first member is `size_t size`) into full, a
 * struct of the library's own size: the fields the caller's size covers,
 * zeros beyond.  Fails naming the struct when its size is below min_size
 * (the struct's first published layout) or the pointer is NULL. */
dm_status dm_struct_import(void *full, size_t full_size, const void *caller, size_t min_size, const char *name);

/* Write full back to the caller's struct, as far as the caller's size goes. */
void dm_struct_export(void *caller, const void *full, size_t full_size);

/* Each struct's first published layout: ends with its last 0.2 field. */
#define DM_LOAD_OPTIONS_MIN_SIZE (offsetof(dm_load_options, use_ema) + sizeof(int))
#define DM_OUTPUTS_MIN_SIZE (offsetof(dm_outputs, offsets_block) + sizeof(int))
#define DM_PREPROCESS_MIN_SIZE (offsetof(dm_preprocess, std) + 3 * sizeof(float))

#endif
