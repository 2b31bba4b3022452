/* convert.h - rewrite a model file (.pth or safetensors) as safetensors
 * under the official names, with the inferred configuration as metadata. */
#ifndef DM_CONVERT_H
#define DM_CONVERT_H

#include "tensor_file.h"

/* Convert in_path to out_path with floating-point weights stored as dtype
 * (DM_F32, DM_F16 or DM_BF16, rounding to nearest even).  The input must be
 * a DAMamba the library can load; out_path must not be the input. */
dm_status dm_convert(const char *in_path, const char *out_path, int use_ema, dm_dtype dtype);

#endif
