/* fuzz_pth.c - the .pth reader: zip directory, restricted unpickler and
 * state-dict selection, with and without the EMA weights. */
#include "fuzz_common.h"

#include "pth.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int use_ema = 0; use_ema < 2; use_ema++) {
        dm_tensor_file f;
        if (dm_pth_parse(data, size, use_ema, &f) != DM_OK) continue;
        fuzz_touch(&f);
        dm_tensor_file_close(&f);
    }
    return 0;
}
