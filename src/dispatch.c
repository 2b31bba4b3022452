/* dispatch.c - choose the kernel table once: the best instruction set this
 * CPU has, unless DAMAMBA_ISA names one. */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd_tables.h"

const dm_kernels *dm_kernels_by_name(const char *isa)
{
    if (strcmp(isa, "scalar") == 0) return &dm_kernels_scalar;
    for (size_t i = 0; i < dm_simd_table_count; i++)
        if (strcmp(dm_simd_tables[i].table->isa, isa) == 0)
            return dm_simd_tables[i].supported() ? dm_simd_tables[i].table : NULL;
    return NULL;
}

static const dm_kernels *choose(void)
{
    const char *forced = getenv("DAMAMBA_ISA");
    if (forced && *forced) {
        const dm_kernels *k = dm_kernels_by_name(forced);
        if (k) return k;
        /* Stay usable: report the refusal, fall back to the reference. */
        fprintf(stderr, "damamba: DAMAMBA_ISA=%s is not available on this CPU or build; using scalar\n", forced);
        return &dm_kernels_scalar;
    }
    /* Tables are listed best first. */
    for (size_t i = 0; i < dm_simd_table_count; i++)
        if (dm_simd_tables[i].supported()) return dm_simd_tables[i].table;
    return &dm_kernels_scalar;
}

const dm_kernels *dm_kernels_active(void)
{
    static const dm_kernels *active;
    /* A benign race: every thread computes the same answer. */
    if (!active) active = choose();
    return active;
}

const char *dm_isa(void) { return dm_kernels_active()->isa; }
