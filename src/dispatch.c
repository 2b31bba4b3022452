/* dispatch.c - choose the kernel table once: the best instruction set this
 * CPU has, unless DAMAMBA_ISA names one.  A SIMD table may leave entries
 * NULL; those fall back to the scalar reference. */
#include "kernels.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd_tables.h"

/* Copy t, filling entries it leaves NULL from the scalar table.  The table
 * is a struct of pointers after the name, so a pointer walk covers all. */
static void complete(const dm_kernels *t, dm_kernels *out)
{
    *out = *t;
    void (**slot)(void) = (void (**)(void))((char *)out + offsetof(dm_kernels, layernorm));
    void (*const *ref)(void) = (void (*const *)(void))((const char *)&dm_kernels_scalar + offsetof(dm_kernels, layernorm));
    size_t n = (sizeof(dm_kernels) - offsetof(dm_kernels, layernorm)) / sizeof(void (*)(void));
    for (size_t i = 0; i < n; i++)
        if (!slot[i]) slot[i] = ref[i];
}

static dm_kernels completed[8];

const dm_kernels *dm_kernels_by_name(const char *isa)
{
    if (strcmp(isa, "scalar") == 0) return &dm_kernels_scalar;
    for (size_t i = 0; i < dm_simd_table_count && i < 8; i++)
        if (strcmp(dm_simd_tables[i].table->isa, isa) == 0) {
            if (!dm_simd_tables[i].supported()) return NULL;
            if (!completed[i].isa) complete(dm_simd_tables[i].table, &completed[i]);
            return &completed[i];
        }
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
        if (dm_simd_tables[i].supported()) return dm_kernels_by_name(dm_simd_tables[i].table->isa);
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
