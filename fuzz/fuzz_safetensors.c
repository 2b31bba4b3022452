/* fuzz_safetensors.c - the safetensors parser, then the model loader on
 * whatever parses (config inference and binding see hostile shapes). */
#include "fuzz_common.h"

#include "damamba.h"
#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dm_tensor_file f;
    if (dm_safetensors_parse(data, size, &f) == DM_OK) {
        fuzz_touch(&f);
        dm_tensor_file_close(&f);
    }
    dm_model *m = NULL;
    if (dm_model_load_buffer(data, size, NULL, &m) == DM_OK) dm_model_free(m);
    return 0;
}
