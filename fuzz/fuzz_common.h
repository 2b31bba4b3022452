/* fuzz_common.h - what every model-file fuzz target does with a result:
 * read every tensor byte (so a pointer outside the input trips the address
 * sanitizer) and convert floating tensors as the model loader would. */
#ifndef DM_FUZZ_COMMON_H
#define DM_FUZZ_COMMON_H

#include "tensor_file.h"

#include <stdlib.h>

static inline void fuzz_touch(const dm_tensor_file *f)
{
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < f->count; i++) {
        const dm_tensor *t = &f->tensors[i];
        const unsigned char *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++) sink ^= p[b];
        if (t->dtype != DM_F32 && t->dtype != DM_F16 && t->dtype != DM_BF16 && t->dtype != DM_F64) continue;
        float *dst = malloc((size_t)t->numel * sizeof *dst + 1);
        if (dst) dm_tensor_to_f32(t, dst);
        free(dst);
    }
    for (size_t i = 0; i < f->meta_count; i++) sink ^= (unsigned char)f->meta[i].value[0];
    (void)sink;
}

#endif
