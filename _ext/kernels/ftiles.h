/* Products of float weights (F32, F16, BF16) repacked once into a tile layout: 16 rows in the lanes of a
 * vector, one input feature after another, so a token's activation x[j], broadcast, meets 16 rows' weights
 * at once and nothing is reduced across lanes. A tile is 16 rows by up to 16 tokens, one float32
 * accumulator per token.
 *
 * The arithmetic of a (row, token) result: acc = 0; for j in order: acc = fma(w[j], x[j], acc), in float32
 * (mcli_ftile_ref states it). It does not depend on the other rows or tokens of a call, so a sequence
 * decodes to the same bits alone (one token a tile) or in a batch.
 *
 * Tile layout, per group of 16 rows (the last padded with zero rows), per input feature j: the 16 rows'
 * w[j] in the weights' own type (64 bytes for F32, 32 for F16 and BF16): the bytes of the rows themselves.
 */
#ifndef MCLI_FTILES_H
#define MCLI_FTILES_H

#include "qdot.h"

static inline int mcli_ftile_elem_bytes(int qtype) {
    switch (qtype) {
    case MCLI_F32: return 4;
    case MCLI_F16: return 2;
    case MCLI_BF16: return 2;
    }
    return 0;
}

static inline int64_t mcli_ftiles_bytes(int qtype, int64_t nrows, int64_t k) {
    return (nrows + 15) / 16 * 16 * k * mcli_ftile_elem_bytes(qtype);
}

/* w (nrows rows of k values of qtype, row_bytes apart) into the tile layout at out, on the calling thread
 * (see mcli_tiles_pack for why) */
static void mcli_ftiles_pack(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, int64_t k, uint8_t *out) {
    const int e = mcli_ftile_elem_bytes(qtype);
    const int64_t groups = (nrows + 15) / 16;
    memset(out, 0, (size_t)mcli_ftiles_bytes(qtype, nrows, k));
    for (int64_t g = 0; g < groups; g++)
        for (int r = 0; r < 16 && 16 * g + r < nrows; r++) {
            const uint8_t *row = w + (16 * g + r) * row_bytes;
            uint8_t *t = out + g * 16 * k * e + (int64_t)r * e;
            for (int64_t j = 0; j < k; j++) memcpy(t + j * 16 * e, row + j * e, (size_t)e);
        }
}

static inline float mcli_float_at(int qtype, const uint8_t *p) {
    if (qtype == MCLI_F16) return mcli_fp16(p);
    if (qtype == MCLI_BF16) return mcli_bf16(p);
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* the portable statement: out[t * out_stride + row] for the tokens of x (num_tokens rows of k, x_stride apart) */
static void mcli_ftile_ref(int qtype, const uint8_t *tiles, int64_t nrows, const float *x, int64_t x_stride,
                           int num_tokens, int64_t k, float *out, int64_t out_stride) {
    const int e = mcli_ftile_elem_bytes(qtype);
    for (int t = 0; t < num_tokens; t++)
        for (int64_t row = 0; row < nrows; row++) {
            const uint8_t *g = tiles + row / 16 * 16 * k * e + (row % 16) * e;
            float acc = 0.0f;
            for (int64_t j = 0; j < k; j++) acc = fmaf(mcli_float_at(qtype, g + j * 16 * e), x[t * x_stride + j], acc);
            out[t * out_stride + row] = acc;
        }
}

typedef void (*mcli_ftile_fn)(const uint8_t *group, int nrows, const float *x, int64_t x_stride, int64_t k, float *out,
                              int64_t out_stride);

#ifdef MCLI_X86
#define MCLI_FTILE_LOAD_F32(p) _mm512_loadu_ps((const float *)(p))
#define MCLI_FTILE_LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define MCLI_FTILE_LOAD_BF16(p) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))

/* 16 rows (one group; nrows of them stored) against NT tokens (a compile-time count) */
#define MCLI_DEFINE_FTILE(NAME, E, LOAD, NT)                                                                       \
    MCLI_AVX512 static void NAME(const uint8_t *group, int nrows, const float *x, int64_t x_stride, int64_t k,      \
                                 float *out, int64_t out_stride) {                                                 \
        __m512 acc[NT];                                                                                            \
        for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();                                                 \
        for (int64_t j = 0; j < k; j++) {                                                                          \
            _mm_prefetch((const char *)group + j * 16 * (E) + 2048, _MM_HINT_T0);                                  \
            const __m512 w = LOAD(group + j * 16 * (E));                                                           \
            for (int t = 0; t < NT; t++) acc[t] = _mm512_fmadd_ps(w, _mm512_set1_ps(x[t * x_stride + j]), acc[t]);  \
        }                                                                                                          \
        const __mmask16 keep = (__mmask16)((1u << nrows) - 1);                                                     \
        for (int t = 0; t < NT; t++) _mm512_mask_storeu_ps(out + t * out_stride, keep, acc[t]);                    \
    }

#define MCLI_DEFINE_FTILES(PREFIX, E, LOAD)                                                                        \
    MCLI_DEFINE_FTILE(PREFIX##_16, E, LOAD, 16)                                                                    \
    MCLI_DEFINE_FTILE(PREFIX##_8, E, LOAD, 8)                                                                      \
    MCLI_DEFINE_FTILE(PREFIX##_4, E, LOAD, 4)                                                                      \
    MCLI_DEFINE_FTILE(PREFIX##_2, E, LOAD, 2)                                                                      \
    MCLI_DEFINE_FTILE(PREFIX##_1, E, LOAD, 1)                                                                      \
    static const mcli_ftile_fn PREFIX[5] = {PREFIX##_1, PREFIX##_2, PREFIX##_4, PREFIX##_8, PREFIX##_16};

MCLI_DEFINE_FTILES(mcli_ftile_f32, 4, MCLI_FTILE_LOAD_F32)
MCLI_DEFINE_FTILES(mcli_ftile_f16, 2, MCLI_FTILE_LOAD_F16)
MCLI_DEFINE_FTILES(mcli_ftile_bf16, 2, MCLI_FTILE_LOAD_BF16)
#endif

/* the float tile kernels of a type: [i] takes 2^i tokens (NULL: none on this CPU) */
static const mcli_ftile_fn *mcli_ftile_kernels(int qtype, int level) {
#ifdef MCLI_X86
    if (level >= 3) {
        switch (qtype) {
        case MCLI_F32: return mcli_ftile_f32;
        case MCLI_F16: return mcli_ftile_f16;
        case MCLI_BF16: return mcli_ftile_bf16;
        }
    }
#else
    (void)qtype;
    (void)level;
#endif
    return NULL;
}

/* One group of 16 rows (nrows stored) against num_tokens tokens: 16 at a time, the rest 8, 4, 2, 1. */
static inline void mcli_ftiles_group(const mcli_ftile_fn *fns, const uint8_t *group, int nrows, const float *x,
                                     int64_t x_stride, int num_tokens, int64_t k, float *out, int64_t out_stride) {
    int t = 0;
    for (int i = 4; i >= 0; i--)
        for (; t + (1 << i) <= num_tokens; t += 1 << i)
            fns[i](group, nrows, x + t * x_stride, x_stride, k, out + t * out_stride, out_stride);
}

/* out (T, N) = num_tokens rows of x times the N float rows in the tile layout, split over the OpenMP team the
 * caller is in as qtiles.h's mcli_tiles_matmul splits its products: (token block, group) pairs in order, two
 * at a time to whichever thread is free. */
static void mcli_ftiles_matmul(const mcli_ftile_fn *fns, int qtype, const uint8_t *tiles, int64_t n, const float *x,
                               int num_tokens, int64_t k, float *out) {
    const int64_t groups = (n + 15) / 16, gb = 16 * k * mcli_ftile_elem_bytes(qtype);
    const int64_t blocks = (num_tokens + MCLI_TILES_TOKEN_BLOCK - 1) / MCLI_TILES_TOKEN_BLOCK;
    int64_t j;
#pragma omp for schedule(dynamic, 2)
    for (j = 0; j < blocks * groups; j++) {
        const int64_t g = j % groups, t0 = j / groups * MCLI_TILES_TOKEN_BLOCK;
        const int count = (int)(num_tokens - t0 < MCLI_TILES_TOKEN_BLOCK ? num_tokens - t0 : MCLI_TILES_TOKEN_BLOCK);
        mcli_ftiles_group(fns, tiles + g * gb, (int)(n - 16 * g < 16 ? n - 16 * g : 16), x + t0 * k, k, count, k,
                          out + t0 * n + 16 * g, n);
    }
}

#endif
