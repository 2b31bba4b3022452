/* safetensors.h - read and write safetensors files.  dm_safetensors_open
 * and dm_safetensors_write, which the damamba program uses too, are
 * declared in internal_api.h. */
#ifndef DM_SAFETENSORS_H
#define DM_SAFETENSORS_H

#include "tensor_file.h"

/* Parse a safetensors image already in memory (not copied: buf must outlive
 * the result).  Used by the file reader and the fuzz target. */
dm_status dm_safetensors_parse(const void *buf, size_t size, dm_tensor_file *out);

/* 0 when buf is plainly not safetensors: what follows the 8-byte length
 * does not begin a JSON object.  1 does not promise a valid file. */
int dm_safetensors_plausible(const void *buf, size_t size);

#endif
