/* dtype.c - the dtype table, and float32 <-> binary16 / bfloat16 bit by
 * bit, so results do not depend on the compiler's half-precision support. */
#include "dtype.h"

#include <string.h>

static const struct { const char *name; dm_dtype dtype; size_t size; } dtypes[] = {
    {"F32", DM_F32, 4},  {"F16", DM_F16, 2}, {"BF16", DM_BF16, 2},
    {"F64", DM_F64, 8},  {"I64", DM_I64, 8}, {"I32", DM_I32, 4},
    {"U8", DM_U8, 1},    {"I8", DM_I8, 1},   {"BOOL", DM_BOOL, 1},
};

size_t dm_dtype_size(dm_dtype dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype) return dtypes[i].size;
    return 0;
}

const char *dm_dtype_name(dm_dtype dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype) return dtypes[i].name;
    return "?";
}

int dm_dtype_from_name(const char *name, dm_dtype *out)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, name) == 0) {
            *out = dtypes[i].dtype;
            return 1;
        }
    return 0;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float dm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: renormalize */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FF) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    return f32_from_bits(bits);
}

float dm_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* Drop the low `shift` bits of v, rounding to nearest, ties to even. */
static uint32_t round_shift(uint32_t v, int shift)
{
    if (shift >= 32) return 0;
    uint32_t kept = v >> shift, rest = v & ((1u << shift) - 1), half = 1u << (shift - 1);
    return kept + (rest > half || (rest == half && (kept & 1)));
}

uint16_t dm_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xFF, man = u & 0x7FFFFF;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00 | (man ? 0x200 | (man >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00);
    if (e <= 0) { /* subnormal in half: the implicit bit joins the mantissa */
        if (e < -10) return (uint16_t)sign; /* below half the smallest subnormal */
        return (uint16_t)(sign | round_shift(man | 0x800000, 14 - e));
    }
    /* A carry out of the mantissa bumps the exponent, up to infinity: right. */
    return (uint16_t)(sign | round_shift(((uint32_t)e << 23) | man, 13));
}

uint16_t dm_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFF)) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)round_shift(u, 16);
}
