/* tensor_file.h - a model file's named tensors, whatever its format: the
 * layer below the format readers.
 *
 * Readers (safetensors.h, pth.h) fill a dm_tensor_file: a list of named
 * tensors whose data stays valid until dm_tensor_file_close().  Nothing is
 * converted as they read; the model loader converts to float32 as it binds
 * parameters.  model_file.h, above the readers, opens either format.  The
 * types, and the functions the damamba program uses, are in internal_api.h. */
#ifndef DM_TENSOR_FILE_H
#define DM_TENSOR_FILE_H

#include "dtype.h"
#include "internal_api.h"

#include <stddef.h>
#include <stdint.h>

/* Read a whole file into memory and parse it with a format's parser; the
 * file keeps the bytes.  Errors get the path as a prefix.  (Not a mapping:
 * a file cut short while mapped, as torch.save or cp rewrite one in place,
 * would end the process with SIGBUS.) */
typedef dm_status (*dm_parse_fn)(const void *buf, size_t size, int use_ema,
                                 dm_tensor_file *out);
dm_status dm_tensor_file_read(const char *path, dm_parse_fn parse, int use_ema,
                              dm_tensor_file *out);

const char *dm_tensor_file_meta(const dm_tensor_file *file, const char *key);

/* Convert a floating-point tensor (F32, F16, BF16, F64) to float32.  Other
 * dtypes are refused by the callers before they get here. */
void dm_tensor_to_f32(const dm_tensor *t, float *dst);

/* Sort the names for dm_tensor_file_find (log n, where a model's n lookups
 * were n^2 without it) and refuse a name that appears twice.  The readers
 * call it once the tensors are listed. */
dm_status dm_tensor_file_index(dm_tensor_file *file);

#endif
