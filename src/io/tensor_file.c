/* tensor_file.c - open a model file of either supported format. */
#include "tensor_file.h"

#include "error.h"
#include "files.h"
#include "pth.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

dm_status dm_tensor_file_map(const char *path, dm_parse_fn parse, int use_ema, dm_tensor_file *out)
{
    memset(out, 0, sizeof *out);
    size_t size;
    int fd = dm_open_input(path, &size);
    if (fd < 0) {
        dm_error_prefix("%s: ", path);
        return DM_ERR_IO;
    }
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return dm_fail(DM_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    dm_status st = parse(map ? map : "", size, use_ema, out);
    if (st != DM_OK) {
        if (map) munmap(map, size);
        dm_error_prefix("%s: ", path);
        return st;
    }
    out->map = map;
    out->map_size = size;
    return DM_OK;
}

void dm_tensor_file_close(dm_tensor_file *file)
{
    if (!file) return;
    for (size_t i = 0; i < file->count; i++) free(file->tensors[i].name);
    for (size_t i = 0; i < file->meta_count; i++) {
        free(file->meta[i].key);
        free(file->meta[i].value);
    }
    free(file->tensors);
    free(file->meta);
    if (file->map) munmap(file->map, file->map_size);
    free(file->owned);
    memset(file, 0, sizeof *file);
}

dm_status dm_tensor_file_open(const char *path, int use_ema, dm_tensor_file *out)
{
    if (!path || !out) return dm_fail(DM_ERR_ARGUMENT, "a model path is required");
    unsigned char magic[4] = {0};
    size_t size;
    int fd = dm_open_input(path, &size);
    if (fd < 0) {
        dm_error_prefix("%s: ", path);
        return DM_ERR_IO;
    }
    ssize_t n = read(fd, magic, sizeof magic);
    close(fd);
    /* torch.save writes a zip archive; safetensors starts with a length. */
    if (n == 4 && memcmp(magic, "PK\x03\x04", 4) == 0) return dm_pth_open(path, use_ema, out);
    /* Before PyTorch 1.6, torch.save wrote bare pickles (PROTO 2, then a
     * LONG1 magic number). */
    if (n == 4 && memcmp(magic, "\x80\x02\x8a\x0a", 4) == 0)
        return dm_fail(DM_ERR_UNSUPPORTED, "%s: a legacy (before PyTorch 1.6) checkpoint; re-save it with a newer torch.save",
                       path);
    if (use_ema) return dm_fail(DM_ERR_ARGUMENT, "%s: the EMA weights exist only in .pth training checkpoints", path);
    return dm_safetensors_open(path, out);
}
