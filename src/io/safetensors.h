/* safetensors.h - read and write safetensors files. */
#ifndef DM_SAFETENSORS_H
#define DM_SAFETENSORS_H

#include "tensor_file.h"

/* Open a safetensors file (memory-mapped). */
dm_status dm_safetensors_open(const char *path, dm_tensor_file *out);
/* Parse a safetensors image already in memory (not copied: buf must outlive
 * the result).  Used by the file reader and the fuzz target. */
dm_status dm_safetensors_parse(const void *buf, size_t size, dm_tensor_file *out);

/* Write tensors to a safetensors file.  Writes PATH.tmp, then renames it over
 * PATH, so a failure never leaves a half-written file behind. */
dm_status dm_safetensors_write(const char *path, const dm_tensor *tensors, size_t count, const dm_meta *meta,
                               size_t meta_count);

#endif
