/* half_gemm.c - the half-precision product's reference, the weight layout
 * the native kernels share, the tests of whether the CPU has their
 * instructions, and the choice among them. */
#include "half_gemm.h"

#include "dtype.h"
#include "kernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#endif

static float rounded(float x, dm_precision precision)
{
    float y;
    dm_kernels_scalar.round_half(&x, &y, 1, precision);
    return y;
}

void dm_half_gemm_ref(dm_precision precision, size_t M, size_t N, size_t K, const float *A, size_t lda,
                      const float *W, float beta, float *C, size_t ldc)
{
    for (size_t r = 0; r < M; r++)
        for (size_t n = 0; n < N; n++) {
            float sum = 0.0f;
            for (size_t k = 0; k < K; k++) sum += rounded(A[r * lda + k], precision) * rounded(W[n * K + k], precision);
            float *c = C + r * ldc + n;
            *c = beta != 0.0f ? beta * *c + sum : sum;
        }
}

size_t dm_half_panels_bytes(size_t N, size_t k_padded)
{
    return dm_panel_count(N) * DM_PANEL * k_padded * sizeof(uint16_t);
}

void dm_half_pack_panels(const float *W, size_t N, size_t K, size_t k_padded, size_t group, dm_precision precision,
                         uint16_t *packed)
{
    for (size_t n = 0; n < dm_panel_count(N) * DM_PANEL; n++)
        for (size_t k = 0; k < k_padded; k++) {
            float w = n < N && k < K ? W[dm_panel_index(n, k, K, 1)] : 0.0f;
            packed[dm_panel_index(n, k, k_padded, group)] =
                precision == DM_PRECISION_F16 ? dm_f32_to_f16(w) : dm_f32_to_bf16(w);
        }
}

#if defined(__x86_64__)

/* The first of a precision that the CPU runs is chosen: AMX before
 * AVX512-BF16. */
extern const dm_half_gemm dm_half_gemm_avx512_amx_bf16, dm_half_gemm_avx512_bf16;
const dm_half_gemm *const dm_half_gemms[] = {&dm_half_gemm_avx512_amx_bf16, &dm_half_gemm_avx512_bf16};
const size_t dm_half_gemm_count = sizeof dm_half_gemms / sizeof dm_half_gemms[0];

/* The flags its file is compiled with (simd/meson.build); the avx512
 * checks include the OS's saving of the registers (XCR0). */
int dm_cpu_has_avx512_bf16(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* Linux grants a process the tiles' 8 KB of state only when asked
 * (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, Linux 5.16 on), and
 * faults the first tile instruction otherwise.  The grant is the whole
 * process's; asked once. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_granted;

static void ask_for_amx(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    int amx = (d >> 22 & 1) && (d >> 24 & 1); /* AMX-BF16, AMX-TILE */
    int osxsave = __get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 1);
    if (!amx || !osxsave) return;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo >> 17 & 3) != 3) return; /* XTILECFG and XTILEDATA enabled by the OS */
    amx_granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int dm_cpu_has_amx_bf16(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ask_for_amx);
    return amx_granted && dm_cpu_has_avx512_bf16();
}

#elif defined(__aarch64__)

extern const dm_half_gemm dm_half_gemm_neon_fp16, dm_half_gemm_neon_bf16;
const dm_half_gemm *const dm_half_gemms[] = {&dm_half_gemm_neon_fp16, &dm_half_gemm_neon_bf16};
const size_t dm_half_gemm_count = sizeof dm_half_gemms / sizeof dm_half_gemms[0];

/* FEAT_FHM (fmlal) comes with FEAT_FP16, which its file is compiled for too. */
int dm_cpu_has_fhm(void)
{
    unsigned long hwcap = getauxval(AT_HWCAP);
    return (hwcap & HWCAP_ASIMDHP) && (hwcap & HWCAP_ASIMDFHM);
}

int dm_cpu_has_bf16(void) { return (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0; }

#else

const dm_half_gemm *const dm_half_gemms[] = {NULL};
const size_t dm_half_gemm_count = 0;

#endif

const dm_half_gemm *dm_half_gemm_native(dm_precision precision)
{
    const dm_kernels *k = dm_kernels_active();
    for (size_t i = 0; i < dm_half_gemm_count; i++) {
        const dm_half_gemm *g = dm_half_gemms[i];
        /* a native kernel belongs to the instruction set its name starts with */
        if (g->precision == precision && k && strncmp(g->name, k->isa, strlen(k->isa)) == 0 && g->supported())
            return g;
    }
    return NULL;
}
