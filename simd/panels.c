/* panels.c - packing a product's weight into panels and back (panels.h). */
#include "panels.h"

void dm_pack_panels(const float *W, size_t N, size_t K, float *packed)
{
    for (size_t n = 0; n < dm_panel_count(N) * DM_PANEL; n++)
        for (size_t k = 0; k < K; k++) packed[dm_panel_index(n, k, K, 1)] = n < N ? W[n * K + k] : 0.0f;
}

void dm_unpack_panels(const float *packed, size_t N, size_t K, float *W)
{
    for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < K; k++) W[n * K + k] = packed[dm_panel_index(n, k, K, 1)];
}
