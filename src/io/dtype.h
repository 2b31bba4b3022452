/* dtype.h - conversions between float32 and the half-size formats model
 * files use (IEEE binary16, bfloat16), and of whole tensors to float32. */
#ifndef DM_DTYPE_H
#define DM_DTYPE_H

#include "tensor_file.h"

#include <stdint.h>

float dm_f16_to_f32(uint16_t h);
float dm_bf16_to_f32(uint16_t h);
/* Round to nearest, ties to even; overflow gives infinity, NaN stays NaN. */
uint16_t dm_f32_to_f16(float f);
uint16_t dm_f32_to_bf16(float f);

/* Convert a floating-point tensor (F32, F16, BF16, F64) to float32.  Other
 * dtypes are refused by the callers before they get here. */
void dm_tensor_to_f32(const dm_tensor *t, float *dst);

#endif
