/* bytes.h - integers stored in image files, read byte by byte. */
#ifndef DM_BYTES_H
#define DM_BYTES_H

#include <stdint.h>

static inline unsigned dm_le16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

static inline uint32_t dm_le32(const uint8_t *p) { return dm_le16(p) | (uint32_t)dm_le16(p + 2) << 16; }

static inline uint32_t dm_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
