/* tables.c - the SIMD tables compiled into this build, best first. */
#include "simd_tables.h"

const dm_simd_table dm_simd_tables[] = {
    {0, 0},
};
const size_t dm_simd_table_count = 0;
