/* tensor_file.c - open a model file of either supported format. */
#include "tensor_file.h"

#include "error.h"
#include "pth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

dm_status dm_tensor_file_open(const char *path, int use_ema, dm_tensor_file *out)
{
    if (!path || !out) return dm_fail(DM_ERR_ARGUMENT, "a model path is required");
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return dm_fail(DM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    /* torch.save writes a zip archive; safetensors starts with a length. */
    if (n == 4 && memcmp(magic, "PK\x03\x04", 4) == 0) return dm_pth_open(path, use_ema, out);
    return dm_safetensors_open(path, out);
}
