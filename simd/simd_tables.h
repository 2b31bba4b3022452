/* simd_tables.h - the SIMD kernel tables this build carries, best first. */
#ifndef DM_SIMD_TABLES_H
#define DM_SIMD_TABLES_H

#include "kernels.h"

typedef struct dm_simd_table {
    const dm_kernels *table;
    int (*supported)(void); /* does this CPU run it? */
    dm_kernels completed;   /* table, its NULL entries the scalar ones (dispatch.c) */
} dm_simd_table;

extern dm_simd_table dm_simd_tables[];
extern const size_t dm_simd_table_count;

#endif
