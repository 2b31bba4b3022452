/* tables.c - the SIMD tables compiled into this build, best first, each
 * with the test of whether this CPU (and its OS) runs it. */
#include "simd_tables.h"

#if defined(__x86_64__)

extern const dm_kernels dm_kernels_avx512, dm_kernels_avx2, dm_kernels_sse2;

static int has_avx512(void) { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"); }
/* F16C comes with every AVX2 CPU; checked all the same */
static int has_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

/* SSE2 is part of the x86-64 baseline. */
static int has_sse2(void) { return 1; }

dm_simd_table dm_simd_tables[] = {
    {&dm_kernels_avx512, has_avx512, {0}},
    {&dm_kernels_avx2, has_avx2, {0}},
    {&dm_kernels_sse2, has_sse2, {0}},
};
const size_t dm_simd_table_count = sizeof dm_simd_tables / sizeof dm_simd_tables[0];

#elif defined(__aarch64__)

extern const dm_kernels dm_kernels_neon;

/* Advanced SIMD is part of the aarch64 baseline. */
static int has_neon(void) { return 1; }

dm_simd_table dm_simd_tables[] = {
    {&dm_kernels_neon, has_neon, {0}},
};
const size_t dm_simd_table_count = sizeof dm_simd_tables / sizeof dm_simd_tables[0];

#else

dm_simd_table dm_simd_tables[] = {{0, 0, {0}}};
const size_t dm_simd_table_count = 0;

#endif
