/* dtype.h - the element types model files use: their names and sizes (the
 * one table of them), and conversions between float32 and the half-size
 * formats (IEEE binary16, bfloat16).  The bottom of the file layers:
 * tensor_file.h builds on it, the format readers on that. */
#ifndef DM_DTYPE_H
#define DM_DTYPE_H

#include "internal_api.h" /* dm_dtype */

#include <stddef.h>
#include <stdint.h>

/* Bytes per element of a dtype. */
size_t dm_dtype_size(dm_dtype dtype);
/* Name of a dtype as safetensors spells it ("F32", ...). */
const char *dm_dtype_name(dm_dtype dtype);
/* The dtype safetensors spells `name`; 0 if there is none. */
int dm_dtype_from_name(const char *name, dm_dtype *out);

float dm_f16_to_f32(uint16_t h);
float dm_bf16_to_f32(uint16_t h);
/* Round to nearest, ties to even; overflow gives infinity, NaN stays NaN. */
uint16_t dm_f32_to_f16(float f);
uint16_t dm_f32_to_bf16(float f);

#endif
