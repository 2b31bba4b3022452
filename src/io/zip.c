/* zip.c - read a zip archive's central directory and its stored members.
 * Every offset and length is checked against the buffer before use, and
 * every member read against its CRC-32. */
#include "zip.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define EOCD_SIG 0x06054b50u
#define EOCD64_SIG 0x06064b50u
#define EOCD64_LOCATOR_SIG 0x07064b50u
#define CENTRAL_SIG 0x02014b50u
#define LOCAL_SIG 0x04034b50u
#define EOCD_SIZE 22
#define CENTRAL_SIZE 46
#define LOCAL_SIZE 30
#define ZIP64_EXTRA_ID 0x0001

/* A fuzzing build computes the CRC but lets a mismatch through, so that
 * mutated members reach the readers behind this one. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define REFUSE_BAD_CRC 0
#else
#define REFUSE_BAD_CRC 1
#endif

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* The end-of-central-directory record: the last signature that leaves room
 * for the record and its comment. */
static const unsigned char *find_eocd(const unsigned char *buf, size_t size)
{
    if (size < EOCD_SIZE) return NULL;
    size_t lowest = size - EOCD_SIZE > 0xFFFF ? size - EOCD_SIZE - 0xFFFF : 0;
    for (size_t pos = size - EOCD_SIZE + 1; pos-- > lowest;)
        if (le(buf + pos, 4) == EOCD_SIG && pos + EOCD_SIZE + le(buf + pos + 20, 2) <= size) return buf + pos;
    return NULL;
}

/* Entry count and central directory extent, from the zip64 record when the
 * classic one's fields are saturated. */
static dm_status directory_extent(const unsigned char *buf, size_t size, const unsigned char *eocd,
                                  uint64_t *count, uint64_t *cd_offset, uint64_t *cd_size)
{
    *count = le(eocd + 10, 2);
    *cd_size = le(eocd + 12, 4);
    *cd_offset = le(eocd + 16, 4);
    if (*count == 0xFFFF || *cd_size == 0xFFFFFFFF || *cd_offset == 0xFFFFFFFF) {
        size_t at = (size_t)(eocd - buf);
        if (at < 20 || le(eocd - 20, 4) != EOCD64_LOCATOR_SIG)
            return dm_fail(DM_ERR_FORMAT, "zip: saturated end record without a zip64 locator");
        uint64_t rec = le(eocd - 20 + 8, 8);
        if (rec > size || size - rec < 56 || le(buf + rec, 4) != EOCD64_SIG)
            return dm_fail(DM_ERR_FORMAT, "zip: zip64 end record missing or outside the file");
        *count = le(buf + rec + 32, 8);
        *cd_size = le(buf + rec + 40, 8);
        *cd_offset = le(buf + rec + 48, 8);
    }
    if (*cd_offset > size || *cd_size > size - *cd_offset)
        return dm_fail(DM_ERR_FORMAT, "zip: central directory (%llu bytes at offset %llu) lies outside the file (%zu bytes)",
                       (unsigned long long)*cd_size, (unsigned long long)*cd_offset, size);
    if (*count > *cd_size / CENTRAL_SIZE)
        return dm_fail(DM_ERR_FORMAT, "zip: %llu entries cannot fit in a %llu-byte central directory",
                       (unsigned long long)*count, (unsigned long long)*cd_size);
    return DM_OK;
}

/* Replace saturated 32-bit fields with their zip64 extra-field values. */
static dm_status apply_zip64_extra(const unsigned char *x, size_t xlen, dm_zip_entry *e)
{
    uint64_t *fields[] = {&e->size, &e->compressed_size, &e->header_offset};
    while (xlen >= 4) {
        size_t id = (size_t)le(x, 2), len = (size_t)le(x + 2, 2);
        if (len > xlen - 4) break;
        if (id == ZIP64_EXTRA_ID) {
            size_t used = 0;
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xFFFFFFFF) continue;
                if (used + 8 > len)
                    return dm_fail(DM_ERR_FORMAT, "zip: member '%.*s': zip64 extra field too short",
                                   (int)e->name_len, e->name);
                *fields[i] = le(x + 4 + used, 8);
                used += 8;
            }
            return DM_OK;
        }
        x += 4 + len;
        xlen -= 4 + len;
    }
    return DM_OK;
}

static int by_name(const void *a, const void *b)
{
    const dm_zip_entry *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Where entry e's data starts: after its local header, which must lie in
 * the file (0 where it does not). */
static uint64_t data_start(const dm_zip *zip, const dm_zip_entry *e)
{
    if (e->header_offset > zip->size || zip->size - e->header_offset < LOCAL_SIZE ||
        le(zip->buf + e->header_offset, 4) != LOCAL_SIG)
        return 0;
    const unsigned char *h = zip->buf + e->header_offset;
    return e->header_offset + LOCAL_SIZE + le(h + 26, 2) + le(h + 28, 2);
}

typedef struct extent {
    uint64_t from, to; /* [local header, end of data) */
    const dm_zip_entry *entry;
} extent;

static int by_start(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    return (x->from > y->from) - (x->from < y->from);
}

/* No two members may share bytes.  torch.save writes each record once;
 * entries that point into one member's bytes would have them read, and
 * their CRC computed, once per entry: 20,000 entries over an 8 MB member
 * took 51 s. */
static dm_status members_apart(const dm_zip *zip)
{
    extent *x = malloc((zip->count ? zip->count : 1) * sizeof *x);
    if (!x) return dm_fail(DM_ERR_NOMEM, "zip: out of memory for %zu entries", zip->count);
    size_t n = 0;
    for (size_t i = 0; i < zip->count; i++) {
        const dm_zip_entry *e = &zip->entries[i];
        uint64_t start = data_start(zip, e);
        /* a member past the end of the file is refused where it is read */
        if (start && start <= zip->size && e->compressed_size <= zip->size - start)
            x[n++] = (extent){e->header_offset, start + e->compressed_size, e};
    }
    qsort(x, n, sizeof *x, by_start);
    dm_status st = DM_OK;
    for (size_t i = 1; i < n && !st; i++)
        if (x[i].from < x[i - 1].to)
            st = dm_fail(DM_ERR_FORMAT, "zip: members '%.*s' and '%.*s' share bytes at offset %llu; torch.save "
                         "writes each record apart", (int)x[i - 1].entry->name_len, x[i - 1].entry->name,
                         (int)x[i].entry->name_len, x[i].entry->name, (unsigned long long)x[i].from);
    free(x);
    return st;
}

dm_status dm_zip_open(const void *buf, size_t size, dm_zip *out)
{
    memset(out, 0, sizeof *out);
    const unsigned char *b = buf;
    const unsigned char *eocd = find_eocd(b, size);
    if (!eocd) return dm_fail(DM_ERR_FORMAT, "zip: no end-of-central-directory record (truncated archive?)");
    uint64_t count, cd_offset, cd_size;
    dm_status st = directory_extent(b, size, eocd, &count, &cd_offset, &cd_size);
    if (st) return st;
    out->buf = b;
    out->size = size;
    out->entries = calloc(count ? (size_t)count : 1, sizeof *out->entries);
    if (!out->entries) return dm_fail(DM_ERR_NOMEM, "zip: out of memory for %llu entries", (unsigned long long)count);
    const unsigned char *p = b + cd_offset, *end = p + cd_size;
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < CENTRAL_SIZE || le(p, 4) != CENTRAL_SIG) {
            dm_zip_close(out);
            return dm_fail(DM_ERR_FORMAT, "zip: central directory entry %llu is missing or damaged",
                           (unsigned long long)i);
        }
        size_t nlen = (size_t)le(p + 28, 2), xlen = (size_t)le(p + 30, 2), clen = (size_t)le(p + 32, 2);
        if ((size_t)(end - p) - CENTRAL_SIZE < nlen + xlen + clen) {
            dm_zip_close(out);
            return dm_fail(DM_ERR_FORMAT, "zip: central directory entry %llu runs past the directory",
                           (unsigned long long)i);
        }
        dm_zip_entry *e = &out->entries[out->count++];
        *e = (dm_zip_entry){.name = (const char *)p + CENTRAL_SIZE, .name_len = nlen,
                            .header_offset = le(p + 42, 4), .size = le(p + 24, 4),
                            .compressed_size = le(p + 20, 4), .method = (unsigned)le(p + 10, 2),
                            .flags = (unsigned)le(p + 8, 2), .crc = (uint32_t)le(p + 16, 4)};
        if ((st = apply_zip64_extra(p + CENTRAL_SIZE + nlen, xlen, e))) {
            dm_zip_close(out);
            return st;
        }
        p += CENTRAL_SIZE + nlen + xlen + clen;
    }
    if ((st = members_apart(out))) {
        dm_zip_close(out);
        return st;
    }
    if (out->count) {
        out->first_name = out->entries[0].name;
        out->first_name_len = out->entries[0].name_len;
    }
    qsort(out->entries, out->count, sizeof *out->entries, by_name);
    return DM_OK;
}

void dm_zip_close(dm_zip *zip)
{
    free(zip->entries);
    memset(zip, 0, sizeof *zip);
}

dm_zip_entry *dm_zip_find(dm_zip *zip, const char *name, size_t name_len)
{
    dm_zip_entry key = {.name = name, .name_len = name_len};
    return zip->count ? bsearch(&key, zip->entries, zip->count, sizeof key, by_name) : NULL;
}

dm_status dm_zip_data(dm_zip *zip, dm_zip_entry *e, const unsigned char **data)
{
    int n = (int)e->name_len;
    if (e->flags & 1) return dm_fail(DM_ERR_UNSUPPORTED, "zip: member '%.*s' is encrypted", n, e->name);
    if (e->method != 0 || e->compressed_size != e->size)
        return dm_fail(DM_ERR_UNSUPPORTED,
                       "zip: member '%.*s' is compressed (method %u); only stored members, as torch.save writes them, can be read",
                       n, e->name, e->method);
    uint64_t start = data_start(zip, e);
    if (!start)
        return dm_fail(DM_ERR_FORMAT, "zip: member '%.*s': local header at offset %llu is missing or outside the file",
                       n, e->name, (unsigned long long)e->header_offset);
    if (start > zip->size || e->size > zip->size - start)
        return dm_fail(DM_ERR_FORMAT, "zip: member '%.*s' (%llu bytes at offset %llu) runs past the end of the file (%zu bytes)",
                       n, e->name, (unsigned long long)e->size, (unsigned long long)start, zip->size);
    const unsigned char *bytes = zip->buf + start;
    /* torch.save leaves the CRC 0 when told not to compute it
     * (torch.serialization.set_crc32_options(False)) and torch.load reads
     * such files, so 0 means none was recorded. */
    if (!e->crc_checked && e->crc != 0) {
        uint32_t crc = (uint32_t)crc32_z(0, bytes, (size_t)e->size);
        if (crc != e->crc && REFUSE_BAD_CRC)
            return dm_fail(DM_ERR_FORMAT, "zip: member '%.*s': CRC-32 mismatch (stored 0x%08x, computed 0x%08x): the file is damaged",
                           n, e->name, (unsigned)e->crc, (unsigned)crc);
        e->crc_checked = 1;
    }
    *data = bytes;
    return DM_OK;
}
