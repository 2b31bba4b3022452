/* tensor_file.h - a model file's named tensors, whatever its format.
 *
 * Readers (safetensors, .pth) fill a dm_tensor_file: a list of named tensors
 * whose data stays valid until dm_tensor_file_close().  Nothing is converted
 * here; the model loader converts to float32 as it binds parameters.  The
 * types and the functions the damamba program uses are in internal_api.h. */
#ifndef DM_TENSOR_FILE_H
#define DM_TENSOR_FILE_H

#include "internal_api.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes per element of a dtype. */
size_t dm_dtype_size(dm_dtype dtype);
/* Name of a dtype as safetensors spells it ("F32", ...). */
const char *dm_dtype_name(dm_dtype dtype);

/* Parse a safetensors image already in memory (not copied: buf must outlive
 * the result).  Used by the file reader and the fuzz target. */
dm_status dm_safetensors_parse(const void *buf, size_t size,
                               dm_tensor_file *out);

/* Open any model file: .pth (zip) or safetensors, told apart by content. */
dm_status dm_tensor_file_open(const char *path, int use_ema,
                              dm_tensor_file *out);

/* Map a whole file read-only and parse it with a format's parser; the file
 * keeps the mapping.  Errors get the path as a prefix. */
typedef dm_status (*dm_parse_fn)(const void *buf, size_t size, int use_ema,
                                 dm_tensor_file *out);
dm_status dm_tensor_file_map(const char *path, dm_parse_fn parse, int use_ema,
                             dm_tensor_file *out);

const char *dm_tensor_file_meta(const dm_tensor_file *file, const char *key);

#endif
