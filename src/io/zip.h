/* zip.h - the parts of the zip format torch.save writes: a central
 * directory (zip64 when large) over stored, uncompressed members, each with
 * its CRC-32.  Nothing is copied; entries point into the caller's buffer. */
#ifndef DM_ZIP_H
#define DM_ZIP_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

typedef struct dm_zip_entry {
    const char *name; /* not NUL-terminated */
    size_t name_len;
    uint64_t header_offset; /* of the local file header */
    uint64_t size, compressed_size;
    unsigned method, flags;
    uint32_t crc;     /* the central directory's (right even where a data
                         descriptor follows the data); 0: none recorded */
    int crc_checked;  /* the data matched crc once: no need to read it again */
} dm_zip_entry;

typedef struct dm_zip {
    const unsigned char *buf;
    size_t size;
    dm_zip_entry *entries; /* sorted by name */
    size_t count;
    const char *first_name; /* the central directory's first entry's */
    size_t first_name_len;
} dm_zip;

/* Read the central directory of the archive in buf.  Members whose bytes
 * (local header and data) overlap are refused. */
dm_status dm_zip_open(const void *buf, size_t size, dm_zip *out);
void dm_zip_close(dm_zip *zip);

/* The entry of that name, or NULL. */
dm_zip_entry *dm_zip_find(dm_zip *zip, const char *name, size_t name_len);

/* The bytes of a stored member, their CRC-32 checked on the first call
 * (unless the archive records none); compressed or encrypted members are
 * refused. */
dm_status dm_zip_data(dm_zip *zip, dm_zip_entry *entry, const unsigned char **data);

#endif
