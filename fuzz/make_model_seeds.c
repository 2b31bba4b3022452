/* make_model_seeds.c - model-file seeds of the shapes hostile files take,
 * for fuzz_safetensors and fuzz_pth: make_model_seeds SAFETENSORS_DIR PTH_DIR
 *
 * safetensors: repeated __metadata__ objects and tensor names, an empty
 * tensor between two overlapping ones, a header of many tensors.  pth:
 * stored zip archives whose data.pkl is a long run of one opcode (values,
 * containers, marks, duplicates, nested tuples). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, size, f) == size;
    return f && fclose(f) == 0 && ok;
}

static void le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file: the header, then data_size zero bytes. */
static int safetensors(const char *dir, const char *name, const char *header, size_t data_size)
{
    size_t h = strlen(header), size = 8 + h + data_size;
    unsigned char *buf = calloc(1, size);
    if (!buf) return 0;
    le(buf, h, 8);
    memcpy(buf + 8, header, h);
    int ok = write_file(dir, name, buf, size);
    free(buf);
    return ok;
}

/* A zip archive holding one stored member, archive/data.pkl (its CRC-32
 * left 0: the fuzzing build reads a member whose CRC does not match). */
static int pth(const char *dir, const char *name, const unsigned char *pkl, size_t len)
{
    static const char member[] = "archive/data.pkl";
    size_t m = sizeof member - 1, size = 30 + m + len + 46 + m + 22;
    unsigned char *z = calloc(1, size), *p = z;
    if (!z) return 0;
    le(p, 0x04034b50, 4), le(p + 18, len, 4), le(p + 22, len, 4), le(p + 26, m, 2);
    memcpy(p + 30, member, m);
    memcpy(p + 30 + m, pkl, len);
    p += 30 + m + len;
    le(p, 0x02014b50, 4), le(p + 20, len, 4), le(p + 24, len, 4), le(p + 28, m, 2);
    memcpy(p + 46, member, m);
    p += 46 + m;
    le(p, 0x06054b50, 4), le(p + 8, 1, 2), le(p + 10, 1, 2), le(p + 12, 46 + m, 4), le(p + 16, 30 + m + len, 4);
    int ok = write_file(dir, name, z, size);
    free(z);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    const char *st = argv[1];
    int ok = 1;
    ok &= safetensors(st, "metadata_twice.safetensors",
                      "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\",\"c\":\"3\"},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    ok &= safetensors(st, "name_twice.safetensors",
                      "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    ok &= safetensors(st, "overlap_behind_empty.safetensors",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    /* 400 blocks' first norm and an array of numbers: lookups and the
     * JSON reader's memory budget */
    size_t cap = 400 * 96 + 4096, n = 0;
    char *h = malloc(cap);
    n += (size_t)snprintf(h, cap, "{\"list\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[");
    for (int i = 0; i < 1000; i++) n += (size_t)snprintf(h + n, cap - n, "%s0", i ? "," : "");
    n += (size_t)snprintf(h + n, cap - n, "]}");
    for (int i = 0; i < 400; i++)
        n += (size_t)snprintf(h + n, cap - n, ",\"stages.0.blocks.%d.norm1.norm.weight\":{\"dtype\":\"F32\","
                              "\"shape\":[0],\"data_offsets\":[0,0]}", i);
    snprintf(h + n, cap - n, "}");
    ok &= safetensors(st, "many_blocks.safetensors", h, 4);
    free(h);

    /* PROTO 2, a first value, then 8000 of one opcode, STOP */
    static const struct { const char *name; char first, op; } runs[] = {
        {"empty_lists.pth", ']', ']'}, {"nones.pth", 'N', 'N'}, {"marks.pth", 'N', '('},
        {"dups.pth", ']', '2'}, {"tuples.pth", 'N', '\x85'}, {"appends.pth", ']', 'a'},
    };
    size_t len = 8000;
    unsigned char *pkl = malloc(len + 4);
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        pkl[0] = 0x80, pkl[1] = 2, pkl[2] = (unsigned char)runs[i].first;
        memset(pkl + 3, runs[i].op, len);
        pkl[len + 3] = '.';
        ok &= pth(argv[2], runs[i].name, pkl, len + 4);
    }
    free(pkl);
    return ok ? 0 : 1;
}
