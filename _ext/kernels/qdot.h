/* Dot products of GGML weight blocks with int16-quantized activations.
 *
 * Activations are quantized per block of 32 to int16 with a float scale (error 2^-16 of the
 * block's largest value, some 500x finer than llama.cpp's int8 activations), so the products are
 * integer multiply-adds (AVX2 vpmaddwd) and the result stays within ~1e-5 of the float model.
 *
 * Layouts (one block = 32 weights):
 *   Q4_0 (18 bytes): | d fp16 | qs[16] |         w[j] = d*((qs[j] & 15) - 8), w[j+16] = d*((qs[j] >> 4) - 8)
 *   Q4_1 (20 bytes): | d fp16 | m fp16 | qs[16] | w[j] = d*(qs[j] & 15) + m,   w[j+16] = d*(qs[j] >> 4) + m
 *   Q8_0 (34 bytes): | d fp16 | qs[32] int8 |     w[j] = d*qs[j]
 * Activation block b: xq[32b .. 32b+31] int16, x = xq * xscale[b]; xsum[b] = float sum of x.
 * The other block formats are drawn in dequant.h.
 *
 * Each format has a portable scalar function and an AVX2 one compiled with a target attribute;
 * mcli_select() picks by the CPU at run time (and MISTRALCLI_NO_SIMD=1 forces the scalar path).
 */
#ifndef MCLI_QDOT_H
#define MCLI_QDOT_H

#include "common.h"
#include "dequant.h"

/* ---- portable ------------------------------------------------------------------------------ */

static float mcli_dot_q4_0_scalar(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb) {
    (void)xsum;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++, row += 18, xq += 32) {
        int32_t s = 0;
        for (int j = 0; j < 16; j++) s += ((row[2 + j] & 15) - 8) * xq[j] + ((row[2 + j] >> 4) - 8) * xq[16 + j];
        acc += mcli_fp16(row) * xscale[b] * (float)s;
    }
    return acc;
}

static float mcli_dot_q4_1_scalar(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++, row += 20, xq += 32) {
        int32_t s = 0;
        for (int j = 0; j < 16; j++) s += (row[4 + j] & 15) * xq[j] + (row[4 + j] >> 4) * xq[16 + j];
        acc += mcli_fp16(row) * xscale[b] * (float)s + mcli_fp16(row + 2) * xsum[b];
    }
    return acc;
}

static float mcli_dot_q8_0_scalar(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb) {
    (void)xsum;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++, row += 34, xq += 32) {
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += (int8_t)row[2 + j] * xq[j];
        acc += mcli_fp16(row) * xscale[b] * (float)s;
    }
    return acc;
}

/* ---- AVX2 ---------------------------------------------------------------------------------- */
#ifdef MCLI_X86
/* ---- AVX-512 with VNNI: two blocks per step -----------------------------------------------------
 * The 16 quant bytes of blocks b and b+1 share one 256-bit register; their low nibbles (weights 0-15
 * of each) and high nibbles (16-31) widen to 32 int16 each, against the activations rearranged to
 * match (xA[0..15] xB[0..15] and xA[16..31] xB[16..31], one lane shuffle each). vpdpwssd leaves
 * block b's partial sums in int32 lanes 0-7 and b+1's in 8-15, scaled by d*xscale per half.
 * The two fp16 pairs (d, m) convert in one instruction. Measured on SmolLM2's Q4_1 matrices held in
 * L2, one thread: 8.7 -> 10.9 GB/s; the whole decode step, which streams from memory: +3-10 %. */
/* (d, m) fp16 pairs of two blocks `stride` bytes apart -> [dA, mA, dB, mB] */
MCLI_AVX512 static inline __m128 mcli_dm_pair(const uint8_t *row, int stride) {
    uint32_t a, b;
    memcpy(&a, row, 4);
    memcpy(&b, row + stride, 4);
    return _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)b, (int)a));
}

/* One weight row against NT tokens (a compile-time count): each token's sums go through the same
 * operations in the same order whatever NT is, so a token's result does not depend on how many
 * others share the call (batch invariance; the tests check it bit for bit).
 * HAS_MIN 1: Q4_1 (20-byte blocks, w = d*q + m); 0: Q4_0 (18-byte blocks, w = d*(q - 8)). */
#define MCLI_DEFINE_Q4_AVX512_TILE(NAME, NT, BLOCK, QS, OFFSET, HAS_MIN, SCALAR_ONE)                             \
    MCLI_AVX512 static inline void NAME(const uint8_t *row, const int16_t *xq, const float *xscale,                \
                                        const float *xsum, int64_t nb, float *out, int64_t out_stride) {           \
        const int64_t k = nb * 32;                                                                                 \
        const __m512i offset = _mm512_set1_epi16(OFFSET);                                                          \
        const __m256i mask = _mm256_set1_epi8(0x0F);                           \
        const __m512i spread = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);                  \
        __m512 acc[NT];                                                                                            \
        __m128 macc[NT];                                                                                           \
        for (int i = 0; i < NT; i++) { acc[i] = _mm512_setzero_ps(); macc[i] = _mm_setzero_ps(); }               \
        const uint8_t *blk = row;                                                                                  \
        int64_t b = 0;                                                                                             \
        for (; b + 1 < nb; b += 2, blk += 2 * BLOCK) {                                                             \
            _mm_prefetch((const char *)blk + MCLI_PREFETCH, _MM_HINT_T0);                                          \
            __m128 dm = HAS_MIN ? mcli_dm_pair(blk, BLOCK)                                                         \
                                : _mm_set_ps(0.0f, mcli_fp16_f16c(blk + BLOCK), 0.0f, mcli_fp16_f16c(blk));         \
            __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(blk + QS))), \
                                                _mm_loadu_si128((const __m128i *)(blk + BLOCK + QS)), 1);          \
            const __m512i lo = _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(v, mask)), offset); \
            const __m512i hi = _mm512_add_epi16(                                                                   \
                _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask)), offset); \
            for (int i = 0; i < NT; i++) {                                                                         \
                const int16_t *x = xq + i * k + 32 * b;                                                            \
                __m512i x0 = _mm512_loadu_si512((const void *)x), x1 = _mm512_loadu_si512((const void *)(x + 32)); \
                __m512i s = _mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, _mm512_shuffle_i64x2(x0, x1, 0x44));   \
                s = _mm512_dpwssd_epi32(s, hi, _mm512_shuffle_i64x2(x0, x1, 0xEE));                                \
                /* [xscale_b, xsum_b, xscale_b+1, xsum_b+1] of token i */                                          \
                __m128 xs = _mm_unpacklo_ps(_mm_castpd_ps(_mm_load_sd((const double *)(xscale + i * nb + b))),      \
                                            _mm_castpd_ps(_mm_load_sd((const double *)(xsum + i * nb + b))));       \
                __m128 prod = _mm_mul_ps(dm, xs); /* [dA*xsA, mA*sumA, dB*xsB, mB*sumB] */                          \
                macc[i] = _mm_add_ps(macc[i], prod);                                                               \
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),                                                    \
                                         _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(prod)), acc[i]);     \
            }                                                                                                      \
        }                                                                                                          \
        for (int i = 0; i < NT; i++) {                                                                             \
            float total = _mm512_reduce_add_ps(acc[i]);                                                            \
            if (HAS_MIN)                                                                                           \
                total += _mm_cvtss_f32(_mm_shuffle_ps(macc[i], macc[i], 1)) + _mm_cvtss_f32(_mm_shuffle_ps(macc[i], macc[i], 3)); \
            if (b < nb) total += SCALAR_ONE(blk, xq + i * k + 32 * b, xscale + i * nb + b, xsum + i * nb + b, 1);  \
            out[i * out_stride] = total;                                                                           \
        }                                                                                                          \
    }

/* tokens in tiles of 4, the rest one at a time; the one-token dot is the 1-tile */
#define MCLI_DEFINE_Q4_AVX512(NAME, BLOCK, QS, OFFSET, HAS_MIN, SCALAR_ONE)                                     \
    MCLI_DEFINE_Q4_AVX512_TILE(NAME##_t4, 4, BLOCK, QS, OFFSET, HAS_MIN, SCALAR_ONE)                               \
    MCLI_DEFINE_Q4_AVX512_TILE(NAME##_t1, 1, BLOCK, QS, OFFSET, HAS_MIN, SCALAR_ONE)                               \
    MCLI_AVX512 static float NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum,   \
                                  int64_t nb) {                                                                    \
        float out;                                                                                                 \
        NAME##_t1(row, xq, xscale, xsum, nb, &out, 1);                                                             \
        return out;                                                                                                \
    }                                                                                                              \
    MCLI_AVX512 static void NAME##_multi(const uint8_t *row, const int16_t *xq, const float *xscale,               \
                                         const float *xsum, int64_t nb, int num_tokens, float *out,                \
                                         int64_t out_stride) {                                                     \
        const int64_t k = nb * 32;                                                                                 \
        int t = 0;                                                                                                 \
        for (; t + 4 <= num_tokens; t += 4)                                                                        \
            NAME##_t4(row, xq + t * k, xscale + t * nb, xsum + t * nb, nb, out + t * out_stride, out_stride);      \
        for (; t < num_tokens; t++)                                                                                \
            NAME##_t1(row, xq + t * k, xscale + t * nb, xsum + t * nb, nb, out + t * out_stride, out_stride);      \
    }

MCLI_DEFINE_Q4_AVX512(mcli_dot_q4_0_avx512, 18, 2, -8, 0, mcli_dot_q4_0_scalar)
MCLI_DEFINE_Q4_AVX512(mcli_dot_q4_1_avx512, 20, 4, 0, 1, mcli_dot_q4_1_scalar)

/* ---- many tokens: one weight row against a tile of 4 activation rows ---------------------------
 * The block is unpacked to int16 once and multiplied with 4 tokens, so prefill costs about half
 * of 4 separate dot products. xq (T, K), xscale/xsum (T, K/32); out[t * out_stride]. */
MCLI_AVX2 static inline void mcli_unpack_nibbles(const uint8_t *qs, int16_t offset, __m256i *w0, __m256i *w1) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    *w0 = _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(v, mask)), _mm256_set1_epi16(offset));
    *w1 = _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), mask)), _mm256_set1_epi16(offset));
}

MCLI_AVX2 static inline __m256 mcli_madd_block(__m256i w0, __m256i w1, const int16_t *x) {
    __m256i x0 = _mm256_loadu_si256((const __m256i *)x), x1 = _mm256_loadu_si256((const __m256i *)(x + 16));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
}

#define MCLI_TILE 8
/* One weight row against NT tokens; as in the AVX-512 tiles, a token's operations do not depend
 * on NT (batch invariance). BLOCK_BYTES, the unpack statement (w0, w1 from blk), HAS_MIN (Q4_1's m). */
#define MCLI_DEFINE_MULTI_TILE(NAME, NT, BLOCK_BYTES, UNPACK, HAS_MIN)                                         \
    MCLI_AVX2 static inline void NAME(const uint8_t *row, const int16_t *xq, const float *xscale,                 \
                                      const float *xsum, int64_t nb, float *out, int64_t out_stride) {            \
        const int64_t k = nb * 32;                                                                                \
        __m256 acc[NT];                                                                                           \
        float macc[NT];                                                                                           \
        for (int i = 0; i < NT; i++) { acc[i] = _mm256_setzero_ps(); macc[i] = 0.0f; }                          \
        const uint8_t *blk = row;                                                                                 \
        for (int64_t b = 0; b < nb; b++, blk += BLOCK_BYTES) {                                                    \
            if ((b & 1) == 0) _mm_prefetch((const char *)blk + MCLI_PREFETCH, _MM_HINT_T0);                       \
            __m256i w0, w1;                                                                                       \
            UNPACK;                                                                                               \
            const float d = mcli_fp16_f16c(blk), m = HAS_MIN ? mcli_fp16_f16c(blk + 2) : 0.0f;                   \
            for (int i = 0; i < NT; i++) {                                                                        \
                __m256 p = mcli_madd_block(w0, w1, xq + i * k + 32 * b);                                          \
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * xscale[i * nb + b]), p, acc[i]);                     \
                if (HAS_MIN) macc[i] += m * xsum[i * nb + b];                                                     \
            }                                                                                                     \
        }                                                                                                         \
        for (int i = 0; i < NT; i++) out[i * out_stride] = mcli_hsum(acc[i]) + macc[i];                          \
    }

#define MCLI_DEFINE_MULTI(NAME, BLOCK_BYTES, UNPACK, HAS_MIN)                                                   \
    MCLI_DEFINE_MULTI_TILE(NAME##_tile, MCLI_TILE, BLOCK_BYTES, UNPACK, HAS_MIN)                                  \
    MCLI_DEFINE_MULTI_TILE(NAME##_t1, 1, BLOCK_BYTES, UNPACK, HAS_MIN)                                            \
    MCLI_AVX2 static float NAME##_one(const uint8_t *row, const int16_t *xq, const float *xscale,                 \
                                      const float *xsum, int64_t nb) {                                            \
        float out;                                                                                                \
        NAME##_t1(row, xq, xscale, xsum, nb, &out, 1);                                                            \
        return out;                                                                                               \
    }                                                                                                             \
    MCLI_AVX2 static void NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum,     \
                               int64_t nb, int num_tokens, float *out, int64_t out_stride) {                      \
        const int64_t k = nb * 32;                                                                                \
        int t = 0;                                                                                                \
        for (; t + MCLI_TILE <= num_tokens; t += MCLI_TILE)                                                       \
            NAME##_tile(row, xq + t * k, xscale + t * nb, xsum + t * nb, nb, out + t * out_stride, out_stride);  \
        for (; t < num_tokens; t++)                                                                               \
            NAME##_t1(row, xq + t * k, xscale + t * nb, xsum + t * nb, nb, out + t * out_stride, out_stride);    \
    }

MCLI_DEFINE_MULTI(mcli_dot_q4_0_multi, 18, mcli_unpack_nibbles(blk + 2, -8, &w0, &w1), 0)
MCLI_DEFINE_MULTI(mcli_dot_q4_1_multi, 20, mcli_unpack_nibbles(blk + 4, 0, &w0, &w1), 1)
MCLI_DEFINE_MULTI(mcli_dot_q8_0_multi, 34,
                  (w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2))),
                   w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)))), 0)
#endif

/* ---- the other block formats: unpack a group of 32 weights to small integers, then madd -------
 * Group g of a row holds weights 32g .. 32g+31: w = s_lo * q (first 16) or s_hi * q (last 16),
 * minus `mn` for every weight (Q4_K/Q5_K mins; Q5_1 adds its m, so mn = -m). */
static inline __attribute__((always_inline)) void mcli_unpack_group(int qtype, const uint8_t *row, int64_t g, int16_t *q, float *s_lo, float *s_hi, float *mn) {
    switch (qtype) {
    case MCLI_Q5_0:
    case MCLI_Q5_1: {
        const int has_min = qtype == MCLI_Q5_1;
        const uint8_t *blk = row + g * (has_min ? 24 : 22);
        const uint8_t *qhp = blk + (has_min ? 4 : 2), *qs = qhp + 4;
        const uint32_t qh = (uint32_t)qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 | (uint32_t)qhp[3] << 24;
        const int offset = has_min ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            q[j] = (int16_t)(((qs[j] & 15) | (((qh >> j) & 1) << 4)) - offset);
            q[j + 16] = (int16_t)(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
        }
        *s_lo = *s_hi = mcli_fp16(blk);
        *mn = has_min ? -mcli_fp16(blk + 2) : 0.0f;
    } break;
    case MCLI_Q4_K:
    case MCLI_Q5_K: {
        const int five = qtype == MCLI_Q5_K;
        const uint8_t *blk = row + (g / 8) * (five ? 176 : 144);
        const int sub = (int)(g % 8), pair = sub / 2, high = sub % 2;
        const uint8_t *qs = blk + (five ? 48 : 16) + 32 * pair, *qh = blk + 16;
        uint8_t sc, m;
        mcli_scale_min_k4(sub, blk + 4, &sc, &m);
        for (int l = 0; l < 32; l++) {
            int v = high ? qs[l] >> 4 : qs[l] & 15;
            if (five) v |= ((qh[l] >> sub) & 1) << 4;
            q[l] = (int16_t)v;
        }
        *s_lo = *s_hi = mcli_fp16(blk) * (float)sc;
        *mn = mcli_fp16(blk + 2) * (float)m;
    } break;
    case MCLI_Q6_K: {
        const uint8_t *blk = row + (g / 8) * 210;
        const int sub = (int)(g % 8), half = sub / 4, r = sub % 4;
        const uint8_t *ql = blk + 64 * half + (r % 2) * 32, *qh = blk + 128 + 32 * half;
        const int8_t *scales = (const int8_t *)(blk + 192) + 8 * half + 2 * r;
        const int shift = 2 * r, use_high = r >= 2;
        for (int l = 0; l < 32; l++)
            q[l] = (int16_t)(((use_high ? ql[l] >> 4 : ql[l] & 15) | (((qh[l] >> shift) & 3) << 4)) - 32);
        const float d = mcli_fp16(blk + 208);
        *s_lo = d * (float)scales[0];
        *s_hi = d * (float)scales[1];
        *mn = 0.0f;
    } break;
    }
}

#define MCLI_DEFINE_GENERIC_SCALAR(NAME, QTYPE)                                                              \
    static float NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb) { \
        float acc = 0.0f;                                                                                    \
        int16_t q[32];                                                                                       \
        for (int64_t g = 0; g < nb; g++, xq += 32) {                                                         \
            float s_lo, s_hi, mn;                                                                            \
            mcli_unpack_group(QTYPE, row, g, q, &s_lo, &s_hi, &mn);                                          \
            int32_t lo = 0, hi = 0;                                                                          \
            for (int j = 0; j < 16; j++) { lo += q[j] * xq[j]; hi += q[j + 16] * xq[j + 16]; }               \
            acc += (s_lo * (float)lo + s_hi * (float)hi) * xscale[g] - mn * xsum[g];                         \
        }                                                                                                    \
        return acc;                                                                                          \
    }
MCLI_DEFINE_GENERIC_SCALAR(mcli_dot_q5_0_scalar, MCLI_Q5_0)
MCLI_DEFINE_GENERIC_SCALAR(mcli_dot_q5_1_scalar, MCLI_Q5_1)
MCLI_DEFINE_GENERIC_SCALAR(mcli_dot_q4_k_scalar, MCLI_Q4_K)
MCLI_DEFINE_GENERIC_SCALAR(mcli_dot_q5_k_scalar, MCLI_Q5_K)
MCLI_DEFINE_GENERIC_SCALAR(mcli_dot_q6_k_scalar, MCLI_Q6_K)

#ifdef MCLI_X86
/* Q5_0/Q5_1: the 32 fifth bits spread to 32 bytes (0xFF where set) in one shuffle, as llama.cpp does */
MCLI_AVX2 static inline __m256i mcli_bits_to_bytes(const uint8_t *p) {
    uint32_t bits;
    memcpy(&bits, p, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
}

/* A Q5_0/Q5_1 block's 32 weights as int16 (w0 the first 16, w1 the last 16), and its d and m. */
MCLI_AVX2 static inline __attribute__((always_inline)) void mcli_unpack_q5_avx2(const uint8_t *blk, int has_min,
                                                                              __m256i *w0, __m256i *w1, float *d,
                                                                              float *m) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    const uint8_t *qh = blk + (has_min ? 4 : 2), *qs = qh + 4;
    const __m128i v = _mm_loadu_si128((const __m128i *)qs);
    const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask));
    __m256i q = _mm256_or_si256(nib, _mm256_and_si256(mcli_bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
    if (!has_min) q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    *w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q));
    *w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
    *d = mcli_fp16_f16c(blk);
    *m = has_min ? mcli_fp16_f16c(blk + 2) : 0.0f;
}

/* acc += (d * xscale) * (the block's exact int32 sum): the one float step of a Q5 block, shared by the
 * one-token and many-token functions so that both give the same bits */
MCLI_AVX2 static inline __attribute__((always_inline)) __m256 mcli_q5_step(__m256i w0, __m256i w1, const int16_t *x,
                                                                         float scale, __m256 acc) {
    const __m256i x0 = _mm256_loadu_si256((const __m256i *)x), x1 = _mm256_loadu_si256((const __m256i *)(x + 16));
    const __m256 p = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
    return _mm256_fmadd_ps(_mm256_set1_ps(scale), p, acc);
}

#define MCLI_DEFINE_Q5_AVX2(NAME, HAS_MIN)                                                                   \
    MCLI_AVX2 static float NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb) { \
        const int bytes = HAS_MIN ? 24 : 22;                                                                 \
        __m256 acc = _mm256_setzero_ps();                                                                    \
        float macc = 0.0f;                                                                                   \
        for (int64_t b = 0; b < nb; b++, row += bytes, xq += 32) {                                           \
            _mm_prefetch((const char *)row + MCLI_PREFETCH, _MM_HINT_T0);                                    \
            __m256i w0, w1;                                                                                  \
            float d, m;                                                                                      \
            mcli_unpack_q5_avx2(row, HAS_MIN, &w0, &w1, &d, &m);                                             \
            acc = mcli_q5_step(w0, w1, xq, d * xscale[b], acc);                                              \
            if (HAS_MIN) macc += m * xsum[b];                                                                \
        }                                                                                                    \
        return mcli_hsum(acc) + macc;                                                                        \
    }
MCLI_DEFINE_Q5_AVX2(mcli_dot_q5_0_avx2, 0)
MCLI_DEFINE_Q5_AVX2(mcli_dot_q5_1_avx2, 1)

/* The K-quants' group of 32 unpacked in vector registers: the same int16 values and scales as
 * mcli_unpack_group (so the same bits downstream), w0 the first 16 weights, w1 the last 16. */
MCLI_AVX2 static inline __attribute__((always_inline)) void mcli_unpack_group_k_avx2(
    int qtype, const uint8_t *row, int64_t g, __m256i *w0, __m256i *w1, float *s_lo, float *s_hi, float *mn) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i q8;
    if (qtype == MCLI_Q6_K) {
        const uint8_t *blk = row + (g / 8) * 210;
        const int sub = (int)(g % 8), half = sub / 4, r = sub % 4;
        const __m256i ql = _mm256_loadu_si256((const __m256i *)(blk + 64 * half + (r % 2) * 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * half));
        const __m256i nib = _mm256_and_si256(r >= 2 ? _mm256_srli_epi16(ql, 4) : ql, low4);
        const __m256i two = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * r)), _mm256_set1_epi8(3));
        q8 = _mm256_sub_epi8(_mm256_or_si256(nib, _mm256_slli_epi16(two, 4)), _mm256_set1_epi8(32));
        *w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q8));
        *w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q8, 1));
        const int8_t *scales = (const int8_t *)(blk + 192) + 8 * half + 2 * r;
        const float d = mcli_fp16_f16c(blk + 208);
        *s_lo = d * (float)scales[0];
        *s_hi = d * (float)scales[1];
        *mn = 0.0f;
        return;
    }
    const int five = qtype == MCLI_Q5_K;
    const uint8_t *blk = row + (g / 8) * (five ? 176 : 144);
    const int sub = (int)(g % 8), pair = sub / 2, high = sub % 2;
    const __m256i qs = _mm256_loadu_si256((const __m256i *)(blk + (five ? 48 : 16) + 32 * pair));
    q8 = _mm256_and_si256(high ? _mm256_srli_epi16(qs, 4) : qs, low4);
    if (five) {
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 16));
        const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(sub)), _mm256_set1_epi8(1));
        q8 = _mm256_or_si256(q8, _mm256_slli_epi16(bit, 4));
    }
    *w0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(q8));
    *w1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(q8, 1));
    uint8_t sc, m;
    mcli_scale_min_k4(sub, blk + 4, &sc, &m);
    *s_lo = *s_hi = mcli_fp16_f16c(blk) * (float)sc;
    *mn = mcli_fp16_f16c(blk + 2) * (float)m;
}

/* acc += s_lo * (exact int32 sums of the first 16) + s_hi * (of the last 16): a K-quant group's float
 * steps, shared by the one-token and many-token functions so that both give the same bits */
MCLI_AVX2 static inline __attribute__((always_inline)) __m256 mcli_k_step(__m256i w0, __m256i w1, const int16_t *x,
                                                                        float s_lo, float s_hi, __m256 acc) {
    const __m256i lo = _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)x));
    const __m256i hi = _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(x + 16)));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s_lo), _mm256_cvtepi32_ps(lo), acc);
    return _mm256_fmadd_ps(_mm256_set1_ps(s_hi), _mm256_cvtepi32_ps(hi), acc);
}

/* One token against a K-quant row: per group, the exact int32 sums of each half (vpmaddwd), then one
 * fused multiply-add of each into the float accumulator, in group order; the mins apart. */
#define MCLI_DEFINE_K_AVX2(NAME, QTYPE)                                                                      \
    MCLI_AVX2 static float NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb) { \
        __m256 acc = _mm256_setzero_ps();                                                                    \
        float macc = 0.0f;                                                                                   \
        for (int64_t g = 0; g < nb; g++, xq += 32) {                                                         \
            float s_lo, s_hi, mn;                                                                            \
            __m256i w0, w1;                                                                                  \
            if ((g & 3) == 0)                                                                                \
                _mm_prefetch((const char *)row + g * 32 * mcli_block_bytes(QTYPE) / mcli_block_weights(QTYPE) \
                             + MCLI_PREFETCH, _MM_HINT_T0);                                                  \
            mcli_unpack_group_k_avx2(QTYPE, row, g, &w0, &w1, &s_lo, &s_hi, &mn);                           \
            acc = mcli_k_step(w0, w1, xq, s_lo * xscale[g], s_hi * xscale[g], acc);                          \
            macc += mn * xsum[g];                                                                            \
        }                                                                                                    \
        return mcli_hsum(acc) - macc;                                                                        \
    }
MCLI_DEFINE_K_AVX2(mcli_dot_q4_k_avx2, MCLI_Q4_K)
MCLI_DEFINE_K_AVX2(mcli_dot_q5_k_avx2, MCLI_Q5_K)
MCLI_DEFINE_K_AVX2(mcli_dot_q6_k_avx2, MCLI_Q6_K)

/* ---- many tokens for the formats above: the row is unpacked once (to int16 groups and their
 * scales), then each token runs exactly the one-token function's arithmetic on it, so a token's
 * result is the same bits through either. Rows of more than MCLI_MULTI_MAX_GROUPS groups of 32 go
 * token by token through the one-token function. */
#define MCLI_MULTI_MAX_GROUPS 1024

static inline void mcli_multi_by_one(mcli_dot_fn one, const uint8_t *row, const int16_t *xq, const float *xscale,
                                     const float *xsum, int64_t nb, int num_tokens, float *out, int64_t out_stride) {
    for (int t = 0; t < num_tokens; t++)
        out[t * out_stride] = one(row, xq + t * nb * 32, xscale + t * nb, xsum + t * nb, nb);
}

#define MCLI_DEFINE_GENERIC_MULTI_AVX2(NAME, QTYPE, ONE)                                                      \
    MCLI_AVX2 static void NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum,  \
                               int64_t nb, int num_tokens, float *out, int64_t out_stride) {                   \
        if (nb > MCLI_MULTI_MAX_GROUPS) {                                                                     \
            mcli_multi_by_one(ONE, row, xq, xscale, xsum, nb, num_tokens, out, out_stride);                   \
            return;                                                                                           \
        }                                                                                                     \
        int16_t q[MCLI_MULTI_MAX_GROUPS * 32] __attribute__((aligned(32)));                                   \
        float s_lo[MCLI_MULTI_MAX_GROUPS], s_hi[MCLI_MULTI_MAX_GROUPS], mn[MCLI_MULTI_MAX_GROUPS];            \
        for (int64_t g = 0; g < nb; g++) {                                                                    \
            __m256i w0, w1;                                                                                   \
            mcli_unpack_group_k_avx2(QTYPE, row, g, &w0, &w1, &s_lo[g], &s_hi[g], &mn[g]);                   \
            _mm256_store_si256((__m256i *)(q + 32 * g), w0);                                                  \
            _mm256_store_si256((__m256i *)(q + 32 * g + 16), w1);                                             \
        }                                                                                                     \
        for (int t = 0; t < num_tokens; t++) {                                                                \
            const int16_t *x = xq + t * nb * 32;                                                              \
            const float *xs = xscale + t * nb, *xm = xsum + t * nb;                                           \
            __m256 acc = _mm256_setzero_ps();                                                                 \
            float macc = 0.0f;                                                                                \
            for (int64_t g = 0; g < nb; g++, x += 32) {                                                       \
                acc = mcli_k_step(_mm256_load_si256((const __m256i *)(q + 32 * g)),                           \
                                  _mm256_load_si256((const __m256i *)(q + 32 * g + 16)), x, s_lo[g] * xs[g],  \
                                  s_hi[g] * xs[g], acc);                                                      \
                macc += mn[g] * xm[g];                                                                        \
            }                                                                                                 \
            out[t * out_stride] = mcli_hsum(acc) - macc;                                                      \
        }                                                                                                     \
    }
MCLI_DEFINE_GENERIC_MULTI_AVX2(mcli_dot_q4_k_avx2_multi, MCLI_Q4_K, mcli_dot_q4_k_avx2)
MCLI_DEFINE_GENERIC_MULTI_AVX2(mcli_dot_q5_k_avx2_multi, MCLI_Q5_K, mcli_dot_q5_k_avx2)
MCLI_DEFINE_GENERIC_MULTI_AVX2(mcli_dot_q6_k_avx2_multi, MCLI_Q6_K, mcli_dot_q6_k_avx2)

#define MCLI_DEFINE_Q5_MULTI_AVX2(NAME, HAS_MIN, ONE)                                                         \
    MCLI_AVX2 static void NAME(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum,  \
                               int64_t nb, int num_tokens, float *out, int64_t out_stride) {                   \
        if (nb > MCLI_MULTI_MAX_GROUPS) {                                                                     \
            mcli_multi_by_one(ONE, row, xq, xscale, xsum, nb, num_tokens, out, out_stride);                   \
            return;                                                                                           \
        }                                                                                                     \
        const int bytes = HAS_MIN ? 24 : 22;                                                                  \
        int16_t q[MCLI_MULTI_MAX_GROUPS * 32] __attribute__((aligned(32)));                                   \
        float d[MCLI_MULTI_MAX_GROUPS], m[MCLI_MULTI_MAX_GROUPS];                                             \
        for (int64_t b = 0; b < nb; b++) {                                                                    \
            __m256i w0, w1;                                                                                   \
            mcli_unpack_q5_avx2(row + b * bytes, HAS_MIN, &w0, &w1, &d[b], &m[b]);                           \
            _mm256_store_si256((__m256i *)(q + 32 * b), w0);                                                  \
            _mm256_store_si256((__m256i *)(q + 32 * b + 16), w1);                                             \
        }                                                                                                     \
        for (int t = 0; t < num_tokens; t++) {                                                                \
            const int16_t *x = xq + t * nb * 32;                                                              \
            const float *xs = xscale + t * nb, *xm = xsum + t * nb;                                           \
            __m256 acc = _mm256_setzero_ps();                                                                 \
            float macc = 0.0f;                                                                                \
            for (int64_t b = 0; b < nb; b++, x += 32) {                                                       \
                acc = mcli_q5_step(_mm256_load_si256((const __m256i *)(q + 32 * b)),                          \
                                   _mm256_load_si256((const __m256i *)(q + 32 * b + 16)), x, d[b] * xs[b], acc); \
                if (HAS_MIN) macc += m[b] * xm[b];                                                            \
            }                                                                                                 \
            out[t * out_stride] = mcli_hsum(acc) + macc;                                                      \
        }                                                                                                     \
    }
MCLI_DEFINE_Q5_MULTI_AVX2(mcli_dot_q5_0_avx2_multi, 0, mcli_dot_q5_0_avx2)
MCLI_DEFINE_Q5_MULTI_AVX2(mcli_dot_q5_1_avx2_multi, 1, mcli_dot_q5_1_avx2)
#endif

/* ---- float weights (F32, F16, BF16): dot products with float activations -------------------- */
enum { MCLI_F32 = 0, MCLI_F16 = 1, MCLI_BF16 = 30 };
typedef float (*mcli_fdot_fn)(const uint8_t *row, const float *x, int64_t k);

static inline float mcli_bf16(const uint8_t *p) {
    uint32_t bits = ((uint32_t)p[0] | (uint32_t)p[1] << 8) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float mcli_fdot_f32_scalar(const uint8_t *row, const float *x, int64_t k) {
    const float *w = (const float *)row;
    float acc = 0.0f;
    for (int64_t j = 0; j < k; j++) acc += w[j] * x[j];
    return acc;
}

static float mcli_fdot_f16_scalar(const uint8_t *row, const float *x, int64_t k) {
    float acc = 0.0f;
    for (int64_t j = 0; j < k; j++) acc += mcli_fp16(row + 2 * j) * x[j];
    return acc;
}

static float mcli_fdot_bf16_scalar(const uint8_t *row, const float *x, int64_t k) {
    float acc = 0.0f;
    for (int64_t j = 0; j < k; j++) acc += mcli_bf16(row + 2 * j) * x[j];
    return acc;
}

#ifdef MCLI_X86
/* 8 weights at a time; k a multiple of 8 (callers check), the tail in scalar code otherwise */
#define MCLI_DEFINE_FDOT_AVX2(NAME, BYTES, LOAD8, ONE)                                                        \
    MCLI_AVX2 static float NAME(const uint8_t *row, const float *x, int64_t k) {                             \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                       \
        int64_t j = 0;                                                                                       \
        for (; j + 16 <= k; j += 16) {                                                                       \
            _mm_prefetch((const char *)row + j * BYTES + MCLI_PREFETCH, _MM_HINT_T0);                        \
            acc0 = _mm256_fmadd_ps(LOAD8(row + j * BYTES), _mm256_loadu_ps(x + j), acc0);                    \
            acc1 = _mm256_fmadd_ps(LOAD8(row + (j + 8) * BYTES), _mm256_loadu_ps(x + j + 8), acc1);          \
        }                                                                                                    \
        float acc = mcli_hsum(_mm256_add_ps(acc0, acc1));                                                    \
        for (; j < k; j++) acc += ONE(row + j * BYTES) * x[j];                                               \
        return acc;                                                                                          \
    }
#define MCLI_LOAD8_F32(p) _mm256_loadu_ps((const float *)(p))
#define MCLI_LOAD8_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define MCLI_LOAD8_BF16(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
static inline float mcli_f32_at(const uint8_t *p) { float f; memcpy(&f, p, 4); return f; }
MCLI_DEFINE_FDOT_AVX2(mcli_fdot_f32_avx2, 4, MCLI_LOAD8_F32, mcli_f32_at)
MCLI_DEFINE_FDOT_AVX2(mcli_fdot_f16_avx2, 2, MCLI_LOAD8_F16, mcli_fp16)
MCLI_DEFINE_FDOT_AVX2(mcli_fdot_bf16_avx2, 2, MCLI_LOAD8_BF16, mcli_bf16)

/* One row against ntok tokens (x: rows of k), four at a time: the row is converted once for the four, and
 * each token's sums go through its single-token kernel's operations in the same order (the same bits). */
#define MCLI_DEFINE_FMULTI_AVX2(NAME, BYTES, LOAD8, ONE, SINGLE)                                               \
    MCLI_AVX2 static void NAME(const uint8_t *row, const float *x, int64_t k, int ntok, float *out,          \
                               int64_t out_stride) {                                                         \
        int t = 0;                                                                                           \
        for (; t + 4 <= ntok; t += 4) {                                                                      \
            __m256 a0[4], a1[4];                                                                             \
            for (int i = 0; i < 4; i++) a0[i] = a1[i] = _mm256_setzero_ps();                                 \
            int64_t j = 0;                                                                                   \
            for (; j + 16 <= k; j += 16) {                                                                   \
                const __m256 w0 = LOAD8(row + j * BYTES), w1 = LOAD8(row + (j + 8) * BYTES);                 \
                for (int i = 0; i < 4; i++) {                                                                \
                    const float *xt = x + (t + i) * k;                                                       \
                    a0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + j), a0[i]);                             \
                    a1[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + j + 8), a1[i]);                         \
                }                                                                                            \
            }                                                                                                \
            for (int i = 0; i < 4; i++) {                                                                    \
                const float *xt = x + (t + i) * k;                                                           \
                float acc = mcli_hsum(_mm256_add_ps(a0[i], a1[i]));                                          \
                for (int64_t jj = j; jj < k; jj++) acc += ONE(row + jj * BYTES) * xt[jj];                    \
                out[(t + i) * out_stride] = acc;                                                             \
            }                                                                                                \
        }                                                                                                    \
        for (; t < ntok; t++) out[t * out_stride] = SINGLE(row, x + t * k, k);                               \
    }
MCLI_DEFINE_FMULTI_AVX2(mcli_fmulti_f32_avx2, 4, MCLI_LOAD8_F32, mcli_f32_at, mcli_fdot_f32_avx2)
MCLI_DEFINE_FMULTI_AVX2(mcli_fmulti_f16_avx2, 2, MCLI_LOAD8_F16, mcli_fp16, mcli_fdot_f16_avx2)
MCLI_DEFINE_FMULTI_AVX2(mcli_fmulti_bf16_avx2, 2, MCLI_LOAD8_BF16, mcli_bf16, mcli_fdot_bf16_avx2)
#endif

typedef void (*mcli_fmulti_fn)(const uint8_t *row, const float *x, int64_t k, int ntok, float *out, int64_t out_stride);

/* The many-token float-weight kernel for F32/F16/BF16 at a SIMD level (NULL: the dot token by token). */
static mcli_fmulti_fn mcli_select_float_multi(int qtype, int level) {
#ifdef MCLI_X86
    if (level >= 2) {
        switch (qtype) {
        case MCLI_F32: return mcli_fmulti_f32_avx2;
        case MCLI_F16: return mcli_fmulti_f16_avx2;
        case MCLI_BF16: return mcli_fmulti_bf16_avx2;
        }
    }
#else
    (void)qtype;
    (void)level;
#endif
    return NULL;
}

/* The float-weight dot function for F32/F16/BF16 (NULL for other types). */
static mcli_fdot_fn mcli_select_float(int qtype, int level) {
#ifdef MCLI_X86
    if (level >= 2) {
        switch (qtype) {
        case MCLI_F32: return mcli_fdot_f32_avx2;
        case MCLI_F16: return mcli_fdot_f16_avx2;
        case MCLI_BF16: return mcli_fdot_bf16_avx2;
        }
    }
#else
    (void)level;
#endif
    switch (qtype) {
    case MCLI_F32: return mcli_fdot_f32_scalar;
    case MCLI_F16: return mcli_fdot_f16_scalar;
    case MCLI_BF16: return mcli_fdot_bf16_scalar;
    }
    return NULL;
}

/* The dot function for a GGML type at the given SIMD level (NULL: type not handled here). */
static mcli_dot_fn mcli_select(int qtype, int level) {
#ifdef MCLI_X86
    if (level >= 3) {
        switch (qtype) {
        case MCLI_Q4_0: return mcli_dot_q4_0_avx512;
        case MCLI_Q4_1: return mcli_dot_q4_1_avx512;
        }
    }
    if (level >= 2) {
        switch (qtype) {
        case MCLI_Q4_0: return mcli_dot_q4_0_multi_one;
        case MCLI_Q4_1: return mcli_dot_q4_1_multi_one;
        case MCLI_Q8_0: return mcli_dot_q8_0_multi_one;
        case MCLI_Q5_0: return mcli_dot_q5_0_avx2;
        case MCLI_Q5_1: return mcli_dot_q5_1_avx2;
        case MCLI_Q4_K: return mcli_dot_q4_k_avx2;
        case MCLI_Q5_K: return mcli_dot_q5_k_avx2;
        case MCLI_Q6_K: return mcli_dot_q6_k_avx2;
        }
    }
#else
    (void)level;
#endif
    switch (qtype) {
    case MCLI_Q4_0: return mcli_dot_q4_0_scalar;
    case MCLI_Q4_1: return mcli_dot_q4_1_scalar;
    case MCLI_Q8_0: return mcli_dot_q8_0_scalar;
    case MCLI_Q5_0: return mcli_dot_q5_0_scalar;
    case MCLI_Q5_1: return mcli_dot_q5_1_scalar;
    case MCLI_Q4_K: return mcli_dot_q4_k_scalar;
    case MCLI_Q5_K: return mcli_dot_q5_k_scalar;
    case MCLI_Q6_K: return mcli_dot_q6_k_scalar;
    }
    return NULL;
}

/* The many-token product for a GGML type (NULL: use the one-token dot per token). Either way a
 * token's result is the one-token dot's, bit for bit, whatever the other tokens (batch invariance). */
static mcli_dot_multi_fn mcli_select_multi(int qtype, int level) {
#ifdef MCLI_X86
    if (level >= 3) {
        switch (qtype) {
        case MCLI_Q4_0: return mcli_dot_q4_0_avx512_multi;
        case MCLI_Q4_1: return mcli_dot_q4_1_avx512_multi;
        }
    }
    if (level >= 2) {
        switch (qtype) {
        case MCLI_Q4_0: return mcli_dot_q4_0_multi;
        case MCLI_Q4_1: return mcli_dot_q4_1_multi;
        case MCLI_Q8_0: return mcli_dot_q8_0_multi;
        case MCLI_Q5_0: return mcli_dot_q5_0_avx2_multi;
        case MCLI_Q5_1: return mcli_dot_q5_1_avx2_multi;
        case MCLI_Q4_K: return mcli_dot_q4_k_avx2_multi;
        case MCLI_Q5_K: return mcli_dot_q5_k_avx2_multi;
        case MCLI_Q6_K: return mcli_dot_q6_k_avx2_multi;
        }
    }
#else
    (void)qtype;
    (void)level;
#endif
    return NULL;
}

#endif
