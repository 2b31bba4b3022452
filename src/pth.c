/* pth.c - PyTorch checkpoint reader (not yet implemented). */
#include "pth.h"

#include "error.h"

dm_status dm_pth_open(const char *path, int use_ema, dm_tensor_file *out)
{
    (void)use_ema;
    (void)out;
    return dm_fail(DM_ERR_UNSUPPORTED, "%s: .pth checkpoints are not supported yet", path);
}

dm_status dm_pth_parse(const void *buf, size_t size, int use_ema, dm_tensor_file *out)
{
    (void)buf; (void)size; (void)use_ema; (void)out;
    return dm_fail(DM_ERR_UNSUPPORTED, ".pth checkpoints are not supported yet");
}
