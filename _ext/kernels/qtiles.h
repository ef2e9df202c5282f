/* Multi-token products of Q4_0, Q4_1 and Q8_0 weights on weights repacked once into a tile layout:
 * 16 rows in the lanes of a vector, each lane a pair of adjacent weights, so a token's activation pair
 * (xq[2j], xq[2j+1], one int32 of its int16 row as quantized) is broadcast against 16 rows at once with
 * vpdpwssd and nothing is reduced across lanes. A tile is 16 rows by up to 16 tokens: 16 independent
 * int32 accumulators, one per token, over the 16 pairs of a block, then each token's float step on 16
 * rows per vector.
 *
 * The arithmetic of a (row, token) result is qrows.h's (mcli_rowdot_ref): an exact int32 sum per
 * block, acc = fma((float)S, d * xscale, acc), and for Q4_1 acc = fma(m, xsum, acc), blocks in order.
 * Only the order of the integer adds differs, and those are exact: a token gets the same bits here as
 * from the one-token row kernels (batch invariance), whatever tile it lands in.
 *
 * Tile layout ("tiles"), per group of 16 rows (the last group padded with zero rows), per block b of
 * 32 weights, in order:
 *     Q4_0/Q4_1: 16 x 16 bytes: byte [j][r] = w[2j] | w[2j+1] << 4 of row r (the raw nibbles 0..15)
 *     Q8_0:      16 x 32 bytes: bytes [j][2r], [j][2r+1] = w[2j], w[2j+1] of row r (int8)
 *     then the 16 rows' scales d (fp16), and for Q4_1 their minimums m (fp16)
 * which is the bytes of the rows themselves: 320 (Q4_0 288, Q8_0 544) per group and block.
 */
#ifndef MCLI_QTILES_H
#define MCLI_QTILES_H

#include "common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Bytes of one group of 16 rows and one block in the tile layout (0: no tile layout for the type). */
static inline int64_t mcli_tile_block_bytes(int qtype) {
    switch (qtype) {
    case MCLI_Q4_0: return 256 + 32;
    case MCLI_Q4_1: return 256 + 64;
    case MCLI_Q8_0: return 512 + 32;
    }
    return 0;
}

static inline int64_t mcli_tiles_bytes(int qtype, int64_t nrows, int64_t k) {
    return (nrows + 15) / 16 * (k / 32) * mcli_tile_block_bytes(qtype);
}

/* weight i (0..31) of a block, as an integer: Q4 nibbles 0..15, Q8_0 int8 */
static inline int mcli_block_weight(int qtype, const uint8_t *blk, int i) {
    if (qtype == MCLI_Q8_0) return (int8_t)blk[2 + i];
    const uint8_t *qs = blk + (qtype == MCLI_Q4_1 ? 4 : 2);
    return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
}

/* Rows [16 g0, 16 g1) of w (nrows rows of row_bytes, k weights each) into the tile layout at out. */
static void mcli_tiles_pack_groups(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, int64_t k,
                                   int64_t g0, int64_t g1, uint8_t *out) {
    const int64_t nb = k / 32, bb = mcli_tile_block_bytes(qtype), blk_bytes = row_bytes / nb;
    const int q8 = qtype == MCLI_Q8_0, scales = q8 ? 512 : 256;
    for (int64_t g = g0; g < g1; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *t = out + (g * nb + b) * bb;
            memset(t, 0, (size_t)bb);
            for (int r = 0; r < 16 && 16 * g + r < nrows; r++) {
                const uint8_t *blk = w + (16 * g + r) * row_bytes + b * blk_bytes;
                for (int j = 0; j < 16; j++) {
                    const int lo = mcli_block_weight(qtype, blk, 2 * j), hi = mcli_block_weight(qtype, blk, 2 * j + 1);
                    if (q8) {
                        t[32 * j + 2 * r] = (uint8_t)(int8_t)lo;
                        t[32 * j + 2 * r + 1] = (uint8_t)(int8_t)hi;
                    } else {
                        t[16 * j + r] = (uint8_t)(lo | hi << 4);
                    }
                }
                memcpy(t + scales + 2 * r, blk, 2); /* d */
                if (qtype == MCLI_Q4_1) memcpy(t + scales + 32 + 2 * r, blk + 2, 2); /* m */
            }
        }
}

/* On the calling thread alone: a model is repacked as it loads, often on a loader thread, and an OpenMP team
 * started there would outlive the load; with more OpenMP threads alive than cores, libgomp stops spinning at
 * barriers and the compute thread's team then sleeps at every one (measured: one-token decode 4.7 -> 15 ms). */
static void mcli_tiles_pack(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, int64_t k, uint8_t *out) {
    mcli_tiles_pack_groups(qtype, w, row_bytes, nrows, k, 0, (nrows + 15) / 16, out);
}

/* The activations of a product: num_tokens rows of k int16 values (xq, a token's row xq_stride apart)
 * with their block scales and sums (xs, xm: nb per token, xs_stride apart). */
typedef struct {
    const int16_t *xq;
    const float *xs, *xm;
    int64_t k, xq_stride, xs_stride;
    int num_tokens;
} mcli_tile_acts;

/* ---- the portable statement of a tile: the reference arithmetic read from the tile layout ---- */
static void mcli_tile_ref(int qtype, const uint8_t *tiles, int64_t nrows, const mcli_tile_acts *a, float *out,
                          int64_t out_stride) {
    const int64_t nb = a->k / 32, bb = mcli_tile_block_bytes(qtype);
    const int q8 = qtype == MCLI_Q8_0, scales = q8 ? 512 : 256;
    for (int t = 0; t < a->num_tokens; t++)
        for (int64_t row = 0; row < nrows; row++) {
            const int64_t g = row / 16;
            const int r = (int)(row % 16);
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *tb = tiles + (g * nb + b) * bb;
                const int16_t *x = a->xq + t * a->xq_stride + 32 * b;
                int32_t s = 0;
                for (int j = 0; j < 16; j++) {
                    int lo, hi;
                    if (q8) {
                        lo = (int8_t)tb[32 * j + 2 * r];
                        hi = (int8_t)tb[32 * j + 2 * r + 1];
                    } else {
                        lo = (tb[16 * j + r] & 15) - (qtype == MCLI_Q4_0 ? 8 : 0);
                        hi = (tb[16 * j + r] >> 4) - (qtype == MCLI_Q4_0 ? 8 : 0);
                    }
                    s += lo * x[2 * j] + hi * x[2 * j + 1];
                }
                acc = fmaf((float)s, mcli_fp16(tb + scales + 2 * r) * a->xs[t * a->xs_stride + b], acc);
                if (qtype == MCLI_Q4_1) acc = fmaf(mcli_fp16(tb + scales + 32 + 2 * r), a->xm[t * a->xs_stride + b], acc);
            }
            out[t * out_stride + row] = acc;
        }
}

#ifdef MCLI_X86
/* acc += w . the int32 at p broadcast (the token's activation pair), from memory */
MCLI_AVX512 static inline __m512i mcli_tile_dp(__m512i acc, __m512i w, const int16_t *p) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}

/* pair j of a tile block as 16 lanes of int16 pairs */
#define MCLI_TILE_UNPACK(QTYPE, TB, J)                                                                             \
    ((QTYPE) == MCLI_Q8_0                                                                                          \
         ? _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)((TB) + 32 * (J))))                            \
         : ((QTYPE) == MCLI_Q4_0                                                                                   \
                ? _mm512_sub_epi16(mcli_nibble_pairs(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((TB) + 16 * (J))))), \
                                   _mm512_set1_epi16(8))                                                           \
                : mcli_nibble_pairs(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((TB) + 16 * (J)))))))

/* bytes lo | hi << 4 in int32 lanes -> int16 pairs (lo, hi) */
MCLI_AVX512 static inline __m512i mcli_nibble_pairs(__m512i v) {
    return _mm512_ternarylogic_epi32(v, _mm512_slli_epi32(v, 12), _mm512_set1_epi32(0x000F000F), 0xA8);
}

/* 16 rows (one group; nrows of them stored) against NT tokens (a compile-time count, 1..16). */
#define MCLI_DEFINE_TILE(NAME, QTYPE, NT)                                                                          \
    MCLI_AVX512 static void NAME(const uint8_t *tiles, int nrows, const int16_t *xq, int64_t xq_stride,             \
                                 const float *xs, const float *xm, int64_t xs_stride, int64_t nb, float *out,       \
                                 int64_t out_stride) {                                                             \
        const int64_t bb = mcli_tile_block_bytes(QTYPE), scales = (QTYPE) == MCLI_Q8_0 ? 512 : 256;               \
        __m512 facc[NT];                                                                                           \
        for (int t = 0; t < NT; t++) facc[t] = _mm512_setzero_ps();                                                \
        for (int64_t b = 0; b < nb; b++) {                                                                         \
            const uint8_t *tb = tiles + b * bb;                                                                    \
            __m512i acc[NT];                                                                                       \
            for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_si512();                                          \
            for (int j = 0; j < 16; j++) {                                                                         \
                const __m512i wv = MCLI_TILE_UNPACK(QTYPE, tb, j);                                                 \
                for (int t = 0; t < NT; t++) acc[t] = mcli_tile_dp(acc[t], wv, xq + t * xq_stride + 32 * b + 2 * j); \
            }                                                                                                      \
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(tb + scales)));                  \
            const __m512 m = (QTYPE) == MCLI_Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(tb + scales + 32))) \
                                                  : d;                                                             \
            for (int t = 0; t < NT; t++) {                                                                         \
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t]), _mm512_mul_ps(d, _mm512_set1_ps(xs[t * xs_stride + b])), \
                                          facc[t]);                                                                \
                if ((QTYPE) == MCLI_Q4_1) facc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(xm[t * xs_stride + b]), facc[t]); \
            }                                                                                                      \
        }                                                                                                          \
        const __mmask16 keep = (__mmask16)((1u << nrows) - 1);                                                     \
        for (int t = 0; t < NT; t++) _mm512_mask_storeu_ps(out + t * out_stride, keep, facc[t]);                   \
    }

typedef void (*mcli_tile_fn)(const uint8_t *tiles, int nrows, const int16_t *xq, int64_t xq_stride, const float *xs,
                             const float *xm, int64_t xs_stride, int64_t nb, float *out, int64_t out_stride);

#define MCLI_DEFINE_TILES(PREFIX, QTYPE)                                                                           \
    MCLI_DEFINE_TILE(PREFIX##_16, QTYPE, 16)                                                                       \
    MCLI_DEFINE_TILE(PREFIX##_8, QTYPE, 8)                                                                         \
    MCLI_DEFINE_TILE(PREFIX##_4, QTYPE, 4)                                                                         \
    MCLI_DEFINE_TILE(PREFIX##_2, QTYPE, 2)                                                                         \
    MCLI_DEFINE_TILE(PREFIX##_1, QTYPE, 1)                                                                         \
    static const mcli_tile_fn PREFIX[5] = {PREFIX##_1, PREFIX##_2, PREFIX##_4, PREFIX##_8, PREFIX##_16};

MCLI_DEFINE_TILES(mcli_tile_q4_0, MCLI_Q4_0)
MCLI_DEFINE_TILES(mcli_tile_q4_1, MCLI_Q4_1)
MCLI_DEFINE_TILES(mcli_tile_q8_0, MCLI_Q8_0)

/* the tile kernels of a type: [i] takes 2^i tokens (NULL: none on this CPU) */
static const mcli_tile_fn *mcli_tile_kernels(int qtype, int level) {
    if (level < 3) return NULL;
    switch (qtype) {
    case MCLI_Q4_0: return mcli_tile_q4_0;
    case MCLI_Q4_1: return mcli_tile_q4_1;
    case MCLI_Q8_0: return mcli_tile_q8_0;
    }
    return NULL;
}

/* One group of 16 rows (nrows stored) against every token of a: 16 at a time, the rest 8, 4, 2, 1. */
static inline void mcli_tiles_group(const mcli_tile_fn *fns, const uint8_t *group, int nrows, const mcli_tile_acts *a,
                                    float *out, int64_t out_stride) {
    const int64_t nb = a->k / 32;
    int t = 0;
    for (int i = 4; i >= 0; i--)
        for (; t + (1 << i) <= a->num_tokens; t += 1 << i)
            fns[i](group, nrows, a->xq + t * a->xq_stride, a->xq_stride, a->xs + t * a->xs_stride, a->xm + t * a->xs_stride,
                   a->xs_stride, nb, out + t * out_stride, out_stride);
}
#else
typedef void (*mcli_tile_fn)(const uint8_t *, int, const int16_t *, int64_t, const float *, const float *, int64_t,
                             int64_t, float *, int64_t);
static const mcli_tile_fn *mcli_tile_kernels(int qtype, int level) {
    (void)qtype;
    (void)level;
    return NULL;
}
static inline void mcli_tiles_group(const mcli_tile_fn *fns, const uint8_t *group, int nrows, const mcli_tile_acts *a,
                                    float *out, int64_t out_stride) {
    (void)fns, (void)group, (void)nrows, (void)a, (void)out, (void)out_stride;
}
#endif

/* out (T, N) = every token of a times the N rows in the tile layout, split over the OpenMP team the caller
 * is in: (token block, group of 16 rows) pairs in that order, so that the groups stream against one block of
 * tokens before the next (the activations stay in L2), two pairs at a time to whichever thread is free: on a
 * shared machine a thread slowed by a neighbour takes fewer (a busy process on one of two cores: a 512-token
 * prefill 236 -> 270 tok/s against a static split; no change on a quiet machine). */
static void mcli_tiles_matmul(const mcli_tile_fn *fns, int qtype, const uint8_t *tiles, int64_t n,
                              const mcli_tile_acts *a, float *out, int64_t out_stride) {
    const int64_t groups = (n + 15) / 16, gb = (a->k / 32) * mcli_tile_block_bytes(qtype);
    const int64_t blocks = (a->num_tokens + MCLI_TILES_TOKEN_BLOCK - 1) / MCLI_TILES_TOKEN_BLOCK;
    int64_t j;
#pragma omp for schedule(dynamic, 2)
    for (j = 0; j < blocks * groups; j++) {
        const int64_t tb = j / groups, g = j % groups, t0 = tb * MCLI_TILES_TOKEN_BLOCK;
        mcli_tile_acts part = *a;
        part.xq += t0 * a->xq_stride;
        part.xs += t0 * a->xs_stride;
        part.xm += t0 * a->xs_stride;
        part.num_tokens = (int)(a->num_tokens - t0 < MCLI_TILES_TOKEN_BLOCK ? a->num_tokens - t0 : MCLI_TILES_TOKEN_BLOCK);
        mcli_tiles_group(fns, tiles + g * gb, (int)(n - 16 * g < 16 ? n - 16 * g : 16), &part,
                         out + t0 * out_stride + 16 * g, out_stride);
    }
}

#endif
