/* fuzz_pth.c - the .pth reader: zip directory, restricted unpickler and
 * state-dict selection, with and without the EMA weights; then the model
 * loader on the same bytes (checkpoint names mapped, hostile shapes). */
#include "fuzz_common.h"

#include "damamba.h"
#include "pth.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int use_ema = 0; use_ema < 2; use_ema++) {
        dm_tensor_file f;
        if (dm_pth_parse(data, size, use_ema, &f) == DM_OK) {
            fuzz_touch(&f);
            dm_tensor_file_close(&f);
        }
        dm_load_options opts = DM_LOAD_OPTIONS_INIT;
        opts.use_ema = use_ema;
        dm_model *m = NULL;
        if (dm_model_load_buffer(data, size, &opts, &m) == DM_OK) dm_model_free(m);
    }
    return 0;
}
