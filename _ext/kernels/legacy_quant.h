/* The legacy block quantizers (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: 32 weights a block) and BF16, scalar C: the
 * float32 operations of numba_kernels/cpu/quantize.py in its order, so the same bytes as it and as gguf.quants
 * (tests/test_quantize.py); C so that a quantizer of the common mixes starts without Numba. Each block function
 * writes the block's scale (and minimum) as float32, its packed quants, and for the 5-bit types their high
 * bits; mistralcli.quantize.blocks turns the scales into float16 as gguf does. */
#ifndef MCLI_LEGACY_QUANT_H
#define MCLI_LEGACY_QUANT_H

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define MCLI_LQ_CLONES __attribute__((target_clones("avx2", "default")))  /* vectorized where the CPU has AVX2 */
#else
#define MCLI_LQ_CLONES
#endif

static inline float mcli_lq_inverse(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

static inline float mcli_lq_signed_max(const float *x) { /* the element of largest magnitude, the first of equals */
    float best = x[0], best_abs = fabsf(best);
    for (int i = 1; i < 32; i++)
        if (fabsf(x[i]) > best_abs) {
            best = x[i];
            best_abs = fabsf(x[i]);
        }
    return best;
}

static inline void mcli_lq_min_max(const float *x, float *lo, float *hi) {
    float l = x[0], h = x[0];
    for (int i = 1; i < 32; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *lo = l;
    *hi = h;
}

static inline int mcli_lq_clamp(float v, int hi) { /* truncation toward zero (cvttss2si, as (int)truncf(v)), [0, hi] */
    int q = (int)v;
    return q < 0 ? 0 : (q > hi ? hi : q);
}

static inline float mcli_lq_floor_nonneg(float a) { /* floorf(a) for a >= 0 without SSE4.1's roundss: a float */
    return a < 8388608.0f ? (float)(int32_t)a : a;  /* from 2**23 up is an integer already */
}

MCLI_LQ_CLONES static void mcli_q4_0_block(const float *x, float *d, uint8_t *qs) {
    const float scale = mcli_lq_signed_max(x) / -8.0f, inv = mcli_lq_inverse(scale);
    *d = scale;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(mcli_lq_clamp(x[j] * inv + 8.5f, 15) | (mcli_lq_clamp(x[j + 16] * inv + 8.5f, 15) << 4));
}

MCLI_LQ_CLONES static void mcli_q4_1_block(const float *x, float *d, float *m, uint8_t *qs) {
    float lo, hi;
    mcli_lq_min_max(x, &lo, &hi);
    const float scale = (hi - lo) / 15.0f, inv = mcli_lq_inverse(scale);
    *d = scale;
    *m = lo;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(mcli_lq_clamp((x[j] - lo) * inv + 0.5f, 15) |
                          (mcli_lq_clamp((x[j + 16] - lo) * inv + 0.5f, 15) << 4));
}

static inline uint32_t mcli_lq_put5(uint8_t *qs, int j, int lo, int hi) {
    qs[j] = (uint8_t)((lo & 0x0F) | ((hi & 0x0F) << 4));
    return ((uint32_t)((lo >> 4) & 1) << j) | ((uint32_t)((hi >> 4) & 1) << (j + 16));
}

MCLI_LQ_CLONES static void mcli_q5_0_block(const float *x, float *d, uint32_t *qh, uint8_t *qs) {
    const float scale = mcli_lq_signed_max(x) / -16.0f, inv = mcli_lq_inverse(scale);
    *d = scale;
    uint32_t high = 0;
    for (int j = 0; j < 16; j++)
        high |= mcli_lq_put5(qs, j, mcli_lq_clamp(x[j] * inv + 16.5f, 31), mcli_lq_clamp(x[j + 16] * inv + 16.5f, 31));
    *qh = high;
}

MCLI_LQ_CLONES static void mcli_q5_1_block(const float *x, float *d, float *m, uint32_t *qh, uint8_t *qs) {
    float lo, hi;
    mcli_lq_min_max(x, &lo, &hi);
    const float scale = (hi - lo) / 31.0f, inv = mcli_lq_inverse(scale);
    *d = scale;
    *m = lo;
    uint32_t high = 0;
    for (int j = 0; j < 16; j++)
        high |= mcli_lq_put5(qs, j, mcli_lq_clamp((x[j] - lo) * inv + 0.5f, 31),
                             mcli_lq_clamp((x[j + 16] - lo) * inv + 0.5f, 31));
    *qh = high;
}

static inline float mcli_lq_round_away(float v) { /* gguf's np_roundf, in float32 as it computes it */
    const float a = fabsf(v), floored = mcli_lq_floor_nonneg(a);
    const float r = floored + mcli_lq_floor_nonneg(2.0f * (a - floored));
    return v < 0.0f ? -r : (v > 0.0f ? r : 0.0f);
}

MCLI_LQ_CLONES static void mcli_q8_0_block(const float *x, float *d, int8_t *qs) {
    float amax = 0.0f;
    for (int i = 0; i < 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const float scale = amax / 127.0f, inv = mcli_lq_inverse(scale);
    *d = scale;
    for (int i = 0; i < 32; i++) qs[i] = (int8_t)mcli_lq_round_away(x[i] * inv);
}

static inline uint16_t mcli_lq_bf16(uint32_t n) { /* ggml_compute_fp32_to_bf16: NaN made quiet, else RNE */
    if ((n & 0x7FFFFFFFu) > 0x7F800000u) n = (n & 0xFFFF0000u) | (64u << 16);
    return (uint16_t)(((uint64_t)n + 0x7FFFu + ((n >> 16) & 1u)) >> 16);
}

#endif /* MCLI_LEGACY_QUANT_H */
