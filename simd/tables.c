/* tables.c - the SIMD tables compiled into this build, best first. */
#include "simd_tables.h"

#if defined(__aarch64__)
extern const dm_kernels dm_kernels_neon;
int dm_neon_supported(void);
#endif

const dm_simd_table dm_simd_tables[] = {
#if defined(__aarch64__)
    {&dm_kernels_neon, dm_neon_supported},
#endif
    {0, 0},
};
/* The {0, 0} entry only keeps the array non-empty. */
const size_t dm_simd_table_count = sizeof dm_simd_tables / sizeof dm_simd_tables[0] - 1;
