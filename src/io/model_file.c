/* model_file.c - open a model file of either supported format. */
#include "model_file.h"

#include "error.h"
#include "pth.h"
#include "safetensors.h"

#include <string.h>

/* Before PyTorch 1.6, torch.save wrote bare pickles, the first of them its
 * magic number 0x1950a86a20f9469cfc6c: in protocol 1 as a LONG in text; in
 * 2 and later a PROTO, from 4 on a FRAME, then the number as a LONG1. */
static int legacy_torch_save(const unsigned char *b, size_t size)
{
    static const char text[] = "L119547037146038801333356L\n";
    static const unsigned char number[12] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    if (size >= sizeof text - 1 && memcmp(b, text, sizeof text - 1) == 0) return 1;
    if (size < 2 || b[0] != 0x80 || b[1] < 2) return 0;
    size_t at = b[1] >= 4 && size > 2 && b[2] == 0x95 ? 11 : 2; /* PROTO, and FRAME with its length */
    return size >= at + sizeof number && memcmp(b + at, number, sizeof number) == 0;
}

dm_status dm_model_file_parse(const void *buf, size_t size, int use_ema, dm_tensor_file *out)
{
    memset(out, 0, sizeof *out);
    /* torch.save writes a zip archive; safetensors starts with a length. */
    if (size >= 4 && memcmp(buf, "PK\x03\x04", 4) == 0) return dm_pth_parse(buf, size, use_ema, out);
    if (legacy_torch_save(buf, size))
        return dm_fail(DM_ERR_UNSUPPORTED, "a legacy (before PyTorch 1.6) checkpoint; re-save it with a newer torch.save");
    if (use_ema) return dm_fail(DM_ERR_ARGUMENT, "the EMA weights exist only in .pth training checkpoints");
    /* an image given where the model goes is a common slip: say so */
    static const struct { const char *magic, *form, *what; } images[] = { /* form: the RIFF form at byte 8 */
        {"\x89PNG", NULL, "a PNG image"}, {"\xff\xd8\xff", NULL, "a JPEG image"}, {"GIF8", NULL, "a GIF image"},
        {"RIFF", "WEBP", "a WebP image"}};
    const char *bytes = buf;
    for (size_t i = 0; i < sizeof images / sizeof images[0]; i++) {
        size_t n = strlen(images[i].magic);
        if (size >= n && memcmp(bytes, images[i].magic, n) == 0 &&
            (!images[i].form || (size >= 12 && memcmp(bytes + 8, images[i].form, 4) == 0)))
            return dm_fail(DM_ERR_FORMAT, "%s, not a model (a .pth checkpoint or a safetensors file)", images[i].what);
    }
    if (!dm_safetensors_plausible(buf, size))
        return dm_fail(DM_ERR_FORMAT, "not a model file: neither a .pth checkpoint (a zip archive) nor safetensors "
                                      "(a JSON header after an 8-byte length)");
    return dm_safetensors_parse(buf, size, out);
}

dm_status dm_model_file_open(const char *path, int use_ema, dm_tensor_file *out)
{
    if (!path || !out) return dm_fail(DM_ERR_ARGUMENT, "a model path is required");
    return dm_tensor_file_read(path, dm_model_file_parse, use_ema, out);
}
