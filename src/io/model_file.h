/* model_file.h - a model file of any supported format, told apart by its
 * content: the one place formats are detected, above the readers. */
#ifndef DM_MODEL_FILE_H
#define DM_MODEL_FILE_H

#include "tensor_file.h"

/* Parse a model file already in memory: a .pth (zip) checkpoint or
 * safetensors; buf must outlive the result.  use_ema picks a training
 * checkpoint's EMA weights (.pth only). */
dm_status dm_model_file_parse(const void *buf, size_t size, int use_ema, dm_tensor_file *out);

/* The same for a file, memory-mapped. */
dm_status dm_model_file_open(const char *path, int use_ema, dm_tensor_file *out);

#endif
