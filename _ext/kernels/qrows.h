/* Products of Q4_0, Q4_1 and Q8_0 weight rows with int16 activations, for one token or many, built so
 * that a (row, token) result is the same bits whichever kernel computes it (batch invariance).
 *
 * The arithmetic of one row r against one token (mcli_rowdot_ref is its portable statement):
 *     acc = 0
 *     for each block b, in order:
 *         S = sum over the block of q_j * xq_j, exact in int32        (Q4_0: q - 8; Q4_1: q; Q8_0: int8)
 *         acc = fma((float)S, d_b * xscale_b, acc)
 *         Q4_1 only: acc = fma(m_b, xsum_b, acc)
 * Integer sums are exact in any order, and the float steps are the same per (row, token) in every
 * kernel, so the kernels may lay rows or tokens across SIMD lanes as suits them:
 *
 *  - one token ("rows in lanes", mcli_q*_rows16): 16 rows at once. Each row's blocks go through
 *    vpdpwssd as qdot.h's AVX-512 kernels do, the 16 rows' int32 partial sums fold into one vector
 *    of exact block sums (a transposing add tree), and the float steps run on 16 rows per vector.
 *    This is the memory-bound decode of one sequence.
 *  - many tokens ("tokens in lanes", mcli_q*_lanes): 16 tokens per vector. A block of 4 rows is
 *    unpacked once to int16 weight pairs; each pair is broadcast against the 16 tokens' activation
 *    pairs (vpdpwssd), 32 multiply-adds per instruction with no reduction, then the float steps
 *    run on 16 tokens per vector. This is the compute-bound batched decode.
 *
 * Tokens in lanes need the activations rearranged ("lanes layout", mcli_lanes_put): group g of 16
 * tokens, xt[((g * nb + b) * 16 + p) * 16 + lane] = xq[32b + p] | xq[32b + p + 16] << 16 (the int16
 * pair that meets weights p and p + 16: a Q4 byte's two nibbles), xst/xmt[(g * nb + b) * 16 + lane]
 * = xscale/xsum of block b.
 */
#ifndef MCLI_QROWS_H
#define MCLI_QROWS_H

#include "common.h"

/* The activations of one product: T tokens of K values. xt/xst/xmt: the lanes layout, or NULL. */
typedef struct {
    const int16_t *xq;      /* (T, K) */
    const float *xs, *xm;   /* (T, K/32) */
    const int32_t *xt;      /* (ceil(T/16), K/32, 16, 16) */
    const float *xst, *xmt; /* (ceil(T/16), K/32, 16) */
    int64_t k;
    int num_tokens;
} mcli_acts;

/* out[t * out_stride + r] = row r of w (rows row_bytes apart, r < nrows) . token t, every token of a */
typedef void (*mcli_rows_fn)(const uint8_t *w, int64_t row_bytes, int64_t nrows, const mcli_acts *a, float *out,
                             int64_t out_stride);

/* A group of 16 tokens goes through the tokens-in-lanes kernel when it has this many. */
#ifndef MCLI_LANES_MIN
#define MCLI_LANES_MIN 6
#endif

static inline int64_t mcli_lanes_groups(int64_t num_tokens) { return (num_tokens + 15) / 16; }

/* nblocks blocks of one token into the lanes layout: xt, xst, xmt point at its lane of the first
 * block (block i's pairs at xt + 256 i + 16 p, its scales at xst/xmt + 16 i). The lanes layout is
 * only read by the AVX-512 kernels, so callers are on such a CPU. */
#ifdef MCLI_X86
MCLI_AVX512 static void mcli_lanes_put_blocks(const int16_t *xq, const float *xs, const float *xm, int64_t nblocks,
                                              int32_t *xt, float *xst, float *xmt) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(16));
    for (int64_t i = 0; i < nblocks; i++) {
        const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(xq + 32 * i)));
        const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(xq + 32 * i + 16)));
        _mm512_i32scatter_epi32((void *)(xt + 256 * i), idx, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)), 4);
        xst[16 * i] = xs[i];
        xmt[16 * i] = xm[i];
    }
}
#else
static void mcli_lanes_put_blocks(const int16_t *xq, const float *xs, const float *xm, int64_t nblocks, int32_t *xt,
                                  float *xst, float *xmt) {
    for (int64_t i = 0; i < nblocks; i++) {
        for (int p = 0; p < 16; p++)
            xt[256 * i + 16 * p] = (int32_t)((uint32_t)(uint16_t)xq[32 * i + p] | ((uint32_t)(uint16_t)xq[32 * i + p + 16] << 16));
        xst[16 * i] = xs[i];
        xmt[16 * i] = xm[i];
    }
}
#endif

/* Token t's quantized activations (k values) into the lanes layout. */
static inline void mcli_lanes_put(const int16_t *xq, const float *xs, const float *xm, int64_t k, int64_t t, int32_t *xt,
                                  float *xst, float *xmt) {
    const int64_t nb = k / 32, g = t / 16, lane = t % 16;
    mcli_lanes_put_blocks(xq, xs, xm, nb, xt + g * nb * 256 + lane, xst + g * nb * 16 + lane, xmt + g * nb * 16 + lane);
}

/* ---- the portable statement ---------------------------------------------------------------- */
static inline float mcli_rowdot_ref(int qtype, const uint8_t *row, const int16_t *xq, const float *xs, const float *xm,
                                    int64_t nb) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++, xq += 32) {
        int32_t s = 0;
        float d, m = 0.0f;
        if (qtype == MCLI_Q8_0) {
            const uint8_t *blk = row + 34 * b;
            for (int j = 0; j < 32; j++) s += (int8_t)blk[2 + j] * xq[j];
            d = mcli_fp16(blk);
        } else if (qtype == MCLI_Q4_1) {
            const uint8_t *blk = row + 20 * b;
            for (int j = 0; j < 16; j++) s += (blk[4 + j] & 15) * xq[j] + (blk[4 + j] >> 4) * xq[16 + j];
            d = mcli_fp16(blk);
            m = mcli_fp16(blk + 2);
        } else {
            const uint8_t *blk = row + 18 * b;
            for (int j = 0; j < 16; j++) s += ((blk[2 + j] & 15) - 8) * xq[j] + ((blk[2 + j] >> 4) - 8) * xq[16 + j];
            d = mcli_fp16(blk);
        }
        acc = fmaf((float)s, d * xs[b], acc);
        if (qtype == MCLI_Q4_1) acc = fmaf(m, xm[b], acc);
    }
    return acc;
}

static void mcli_rows_ref(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, const mcli_acts *a, float *out,
                          int64_t out_stride) {
    const int64_t nb = a->k / 32;
    for (int t = 0; t < a->num_tokens; t++)
        for (int64_t r = 0; r < nrows; r++)
            out[t * out_stride + r] = mcli_rowdot_ref(qtype, w + r * row_bytes, a->xq + t * a->k, a->xs + t * nb,
                                                      a->xm + t * nb, nb);
}

#ifdef MCLI_X86
/* ---- AVX-512 VNNI ---------------------------------------------------------------------------- */

/* Four vectors of 4 x 128-bit chunks -> one: chunk c, lane j = the sum of input j's chunk c. */
MCLI_AVX512 static inline __m512i mcli_fold4(__m512i a, __m512i b, __m512i c, __m512i d) {
    __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* fp16 in the low half of each int32 lane -> float */
MCLI_AVX512 static inline __m512 mcli_lo_fp16(__m512i g) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)); }

/* the float steps for 16 lanes of exact block sums */
#define MCLI_FLOAT_STEP(ACC, S, D, XS, HAS_MIN, M, XM)                                                            \
    do {                                                                                                          \
        ACC = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S), _mm512_mul_ps(D, XS), ACC);                                  \
        if (HAS_MIN) ACC = _mm512_fmadd_ps(M, XM, ACC);                                                           \
    } while (0)

/* One row against one token, block sums in a vector then added up (the tails of the 16-row kernels). */
#define MCLI_DEFINE_Q4_ROW1(NAME, BLOCK, QS, OFFSET, HAS_MIN)                                                       \
    MCLI_AVX512 static float NAME(const uint8_t *row, const int16_t *xq, const float *xs, const float *xm, int64_t nb) { \
        const __m256i mask = _mm256_set1_epi8(0x0F);                                                              \
        float acc = 0.0f;                                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                                        \
            const uint8_t *blk = row + b * BLOCK;                                                                 \
            __m128i q = _mm_loadu_si128((const __m128i *)(blk + QS));                                             \
            __m256i v = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), mask); \
            __m512i w = _mm512_add_epi16(_mm512_cvtepu8_epi16(v), _mm512_set1_epi16(OFFSET));                     \
            int32_t s = _mm512_reduce_add_epi32(                                                                  \
                _mm512_dpwssd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512((const void *)(xq + 32 * b)))); \
            acc = fmaf((float)s, mcli_fp16_f16c(blk) * xs[b], acc);                                               \
            if (HAS_MIN) acc = fmaf(mcli_fp16_f16c(blk + 2), xm[b], acc);                                         \
        }                                                                                                         \
        return acc;                                                                                               \
    }

MCLI_AVX512 static float mcli_q8_0_row1(const uint8_t *row, const int16_t *xq, const float *xs, const float *xm, int64_t nb) {
    (void)xm;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = row + b * 34;
        __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(blk + 2)));
        int32_t s = _mm512_reduce_add_epi32(
            _mm512_dpwssd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512((const void *)(xq + 32 * b))));
        acc = fmaf((float)s, mcli_fp16_f16c(blk) * xs[b], acc);
    }
    return acc;
}

/* Sixteen Q4 rows against one token, two blocks per step: a row's two blocks share one vector (lanes
 * 0-7 block b, 8-15 block b + 1, as in qdot.h), rows pair up (chunks: row 2i b, b+1, row 2i+1 b, b+1),
 * four pairs fold into one vector, and two permutes give the 16 rows' sums of b and of b + 1. */
#define MCLI_DEFINE_Q4_ROWS16(NAME, BLOCK, QS, OFFSET, HAS_MIN)                                                \
    MCLI_AVX512 static void NAME(const uint8_t *w, int64_t row_bytes, const int16_t *xq, const float *xs,           \
                                 const float *xm, int64_t nb, float *out) {                                         \
        const __m512i offset = _mm512_set1_epi16(OFFSET);                                                          \
        const __m256i mask = _mm256_set1_epi8(0x0F);                                                               \
        const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), \
                                                _mm512_set1_epi32((int32_t)row_bytes));                            \
        /* row r (j = (r & 7) >> 1, h = r & 1) sits in lane 8h + j of its fold (+4 for block b + 1) */          \
        const __m512i sel0 = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27);          \
        const __m512i sel1 = _mm512_add_epi32(sel0, _mm512_set1_epi32(4));                                         \
        __m512 acc = _mm512_setzero_ps();                                                                          \
        int64_t b = 0;                                                                                             \
        for (; b + 1 < nb; b += 2) {                                                                               \
            const __m512i x0 = _mm512_loadu_si512((const void *)(xq + 32 * b)),                                    \
                          x1 = _mm512_loadu_si512((const void *)(xq + 32 * b + 32));                               \
            const __m512i xlo = _mm512_shuffle_i64x2(x0, x1, 0x44), xhi = _mm512_shuffle_i64x2(x0, x1, 0xEE);      \
            __m512i v[8];                                                                                          \
            for (int i = 0; i < 8; i++) {                                                                          \
                __m512i s2[2];                                                                                     \
                for (int h = 0; h < 2; h++) {                                                                      \
                    const uint8_t *blk = w + (2 * i + h) * row_bytes + b * BLOCK;                                  \
                    _mm_prefetch((const char *)blk + MCLI_PREFETCH, _MM_HINT_T0);                                  \
                    __m256i q = _mm256_inserti128_si256(                                                           \
                        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(blk + QS))),                      \
                        _mm_loadu_si128((const __m128i *)(blk + BLOCK + QS)), 1);                                  \
                    const __m512i lo = _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(q, mask)), offset);  \
                    const __m512i hi = _mm512_add_epi16(                                                           \
                        _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), mask)), offset);            \
                    s2[h] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, xlo), hi, xhi);    \
                }                                                                                                  \
                v[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(s2[0], s2[1], 0x88),                                   \
                                        _mm512_shuffle_i32x4(s2[0], s2[1], 0xDD));                                  \
            }                                                                                                      \
            const __m512i f0 = mcli_fold4(v[0], v[1], v[2], v[3]), f1 = mcli_fold4(v[4], v[5], v[6], v[7]);        \
            const __m512i s0 = _mm512_permutex2var_epi32(f0, sel0, f1), s1 = _mm512_permutex2var_epi32(f0, sel1, f1); \
            const __m512i g0 = _mm512_i32gather_epi32(gidx, (const void *)(w + b * BLOCK), 1);                     \
            const __m512i g1 = _mm512_i32gather_epi32(gidx, (const void *)(w + (b + 1) * BLOCK), 1);               \
            MCLI_FLOAT_STEP(acc, s0, mcli_lo_fp16(g0), _mm512_set1_ps(xs[b]), HAS_MIN,                              \
                            mcli_lo_fp16(_mm512_srli_epi32(g0, 16)), _mm512_set1_ps(xm[b]));                        \
            MCLI_FLOAT_STEP(acc, s1, mcli_lo_fp16(g1), _mm512_set1_ps(xs[b + 1]), HAS_MIN,                          \
                            mcli_lo_fp16(_mm512_srli_epi32(g1, 16)), _mm512_set1_ps(xm[b + 1]));                    \
        }                                                                                                          \
        _mm512_storeu_ps(out, acc);                                                                                \
        if (b < nb) /* an odd last block: its step per row */                                                     \
            for (int r = 0; r < 16; r++) {                                                                         \
                const uint8_t *blk = w + r * row_bytes + b * BLOCK;                                                \
                int32_t s = 0;                                                                                     \
                for (int j = 0; j < 16; j++)                                                                       \
                    s += ((blk[QS + j] & 15) + (OFFSET)) * xq[32 * b + j] +                                        \
                         ((blk[QS + j] >> 4) + (OFFSET)) * xq[32 * b + 16 + j];                                    \
                out[r] = fmaf((float)s, mcli_fp16_f16c(blk) * xs[b], out[r]);                                      \
                if (HAS_MIN) out[r] = fmaf(mcli_fp16_f16c(blk + 2), xm[b], out[r]);                                \
            }                                                                                                      \
    }

MCLI_DEFINE_Q4_ROW1(mcli_q4_0_row1, 18, 2, -8, 0)
MCLI_DEFINE_Q4_ROW1(mcli_q4_1_row1, 20, 4, 0, 1)
MCLI_DEFINE_Q4_ROWS16(mcli_q4_0_rows16, 18, 2, -8, 0)
MCLI_DEFINE_Q4_ROWS16(mcli_q4_1_rows16, 20, 4, 0, 1)

/* Sixteen Q8_0 rows against one token, a block per step: one vector of partial sums per row; pairs of
 * rows, then pairs of pairs, halve the chunks, a fold adds within them, and a permute puts the rows
 * in order. */
MCLI_AVX512 static void mcli_q8_0_rows16(const uint8_t *w, int64_t row_bytes, const int16_t *xq, const float *xs,
                                         const float *xm, int64_t nb, float *out) {
    (void)xm;
    const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int32_t)row_bytes));
    /* row 4j + c sits in lane 4c + j */
    const __m512i sel = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m512i x = _mm512_loadu_si512((const void *)(xq + 32 * b));
        __m512i y[8], z[4];
        for (int i = 0; i < 8; i++) {
            __m512i s2[2];
            for (int h = 0; h < 2; h++) {
                const uint8_t *blk = w + (2 * i + h) * row_bytes + b * 34;
                _mm_prefetch((const char *)blk + MCLI_PREFETCH, _MM_HINT_T0);
                s2[h] = _mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                            _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(blk + 2))), x);
            }
            y[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(s2[0], s2[1], 0x44), _mm512_shuffle_i32x4(s2[0], s2[1], 0xEE));
        }
        for (int i = 0; i < 4; i++)
            z[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(y[2 * i], y[2 * i + 1], 0x88),
                                    _mm512_shuffle_i32x4(y[2 * i], y[2 * i + 1], 0xDD));
        const __m512i s = _mm512_permutexvar_epi32(sel, mcli_fold4(z[0], z[1], z[2], z[3]));
        const __m512i g = _mm512_i32gather_epi32(gidx, (const void *)(w + b * 34), 1);
        MCLI_FLOAT_STEP(acc, s, mcli_lo_fp16(g), _mm512_set1_ps(xs[b]), 0, acc, acc);
    }
    _mm512_storeu_ps(out, acc);
}

/* acc += x . the int16 pair at p, broadcast from memory: written out, because compilers turn
 * _mm512_set1_epi32 of a value they have just stored into a shuffle (port 5, as busy as vpdpwssd). */
MCLI_AVX512 static inline __m512i mcli_dpwssd_bcast(__m512i acc, __m512i x, const int32_t *p) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*p));
    return acc;
}

/* R rows (a compile-time count) against the 16 tokens of one lanes group. Per block: each row's
 * weights unpack to 16 int16 pairs (w_p, w_p+16) in a small buffer, and each pair, broadcast,
 * meets the 16 tokens' activation pairs; two accumulators per row keep the adds independent. */
#define MCLI_DEFINE_LANES_TILE(NAME, R, BLOCK, UNPACK, HAS_MIN)                                                     \
    MCLI_AVX512 static inline void NAME(const uint8_t *w, int64_t row_bytes, const int32_t *xt, const float *xst,  \
                                        const float *xmt, int64_t nb, int ntok, float *out, int64_t out_stride) {  \
        __m512 facc[R];                                                                                            \
        for (int r = 0; r < R; r++) facc[r] = _mm512_setzero_ps();                                                 \
        __attribute__((aligned(64))) int32_t wb[R][16];                                                            \
        for (int64_t b = 0; b < nb; b++) {                                                                         \
            for (int r = 0; r < R; r++) {                                                                          \
                const uint8_t *blk = w + r * row_bytes + b * BLOCK;                                                \
                __m512i pairs;                                                                                     \
                UNPACK;                                                                                            \
                _mm512_store_si512((void *)wb[r], pairs);                                                          \
            }                                                                                                      \
            __m512i a0[R], a1[R];                                                                                  \
            for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm512_setzero_si512();                                    \
            const int32_t *xb = xt + b * 256;                                                                      \
            for (int p = 0; p < 16; p += 2) {                                                                      \
                const __m512i xe = _mm512_loadu_si512((const void *)(xb + 16 * p)),                                 \
                              xo = _mm512_loadu_si512((const void *)(xb + 16 * p + 16));                           \
                for (int r = 0; r < R; r++) {                                                                      \
                    a0[r] = mcli_dpwssd_bcast(a0[r], xe, &wb[r][p]);                               \
                    a1[r] = mcli_dpwssd_bcast(a1[r], xo, &wb[r][p + 1]);                       \
                }                                                                                                  \
            }                                                                                                      \
            const __m512 xsv = _mm512_loadu_ps(xst + 16 * b);                                                       \
            const __m512 xmv = HAS_MIN ? _mm512_loadu_ps(xmt + 16 * b) : xsv;                                       \
            for (int r = 0; r < R; r++) {                                                                          \
                const uint8_t *blk = w + r * row_bytes + b * BLOCK;                                                \
                MCLI_FLOAT_STEP(facc[r], _mm512_add_epi32(a0[r], a1[r]), _mm512_set1_ps(mcli_fp16_f16c(blk)), xsv, \
                                HAS_MIN, _mm512_set1_ps(HAS_MIN ? mcli_fp16_f16c(blk + 2) : 0.0f), xmv);             \
            }                                                                                                      \
        }                                                                                                          \
        for (int r = 0; r < R; r++) {                                                                              \
            __attribute__((aligned(64))) float lanes[16];                                                          \
            _mm512_store_ps(lanes, facc[r]);                                                                       \
            for (int t = 0; t < ntok; t++) out[t * out_stride + r] = lanes[t];                                     \
        }                                                                                                          \
    }

/* a Q4 block's 16 bytes -> pairs (q_p, q_p+16) in int32 lanes, less 8 each for Q4_0 */
#define MCLI_UNPACK_Q4_PAIRS(QS, OFFSET)                                                                           \
    do {                                                                                                           \
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + QS)));                      \
        pairs = _mm512_ternarylogic_epi32(v, _mm512_slli_epi32(v, 12), _mm512_set1_epi32(0x000F000F), 0xA8);       \
        if (OFFSET) pairs = _mm512_sub_epi16(pairs, _mm512_set1_epi16(-(OFFSET)));                                 \
    } while (0)
#define MCLI_UNPACK_Q8_PAIRS                                                                                       \
    do {                                                                                                           \
        const __m512i lo = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));                      \
        const __m512i hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)));                     \
        pairs = _mm512_mask_blend_epi16(0xAAAAAAAAu, lo, _mm512_slli_epi32(hi, 16));                               \
    } while (0)

#define MCLI_DEFINE_LANES(NAME, BLOCK, UNPACK, HAS_MIN)                                                             \
    MCLI_DEFINE_LANES_TILE(NAME##_r4, 4, BLOCK, UNPACK, HAS_MIN)                                                   \
    MCLI_DEFINE_LANES_TILE(NAME##_r1, 1, BLOCK, UNPACK, HAS_MIN)                                                   \
    MCLI_AVX512 static void NAME(const uint8_t *w, int64_t row_bytes, int64_t nrows, const int32_t *xt,            \
                                 const float *xst, const float *xmt, int64_t nb, int ntok, float *out,             \
                                 int64_t out_stride) {                                                             \
        int64_t r = 0;                                                                                             \
        for (; r + 4 <= nrows; r += 4)                                                                             \
            NAME##_r4(w + r * row_bytes, row_bytes, xt, xst, xmt, nb, ntok, out + r, out_stride);                  \
        for (; r < nrows; r++) NAME##_r1(w + r * row_bytes, row_bytes, xt, xst, xmt, nb, ntok, out + r, out_stride); \
    }

MCLI_DEFINE_LANES(mcli_q4_0_lanes, 18, MCLI_UNPACK_Q4_PAIRS(2, -8), 0)
MCLI_DEFINE_LANES(mcli_q4_1_lanes, 20, MCLI_UNPACK_Q4_PAIRS(4, 0), 1)
MCLI_DEFINE_LANES(mcli_q8_0_lanes, 34, MCLI_UNPACK_Q8_PAIRS, 0)

/* Every token of a: lanes groups with at least MCLI_LANES_MIN tokens through the lanes kernel, the
 * rest token by token through the 16-row kernel (and the one-row kernel for the last rows). */
#define MCLI_DEFINE_ROWS(NAME, LANES, ROWS16, ROW1)                                                                 \
    MCLI_AVX512 static void NAME(const uint8_t *w, int64_t row_bytes, int64_t nrows, const mcli_acts *a, float *out, \
                                 int64_t out_stride) {                                                             \
        const int64_t nb = a->k / 32;                                                                              \
        for (int64_t g = 0; g * 16 < a->num_tokens; g++) {                                                         \
            const int t0 = (int)(g * 16), n = a->num_tokens - t0 < 16 ? a->num_tokens - t0 : 16;                   \
            if (a->xt && n >= MCLI_LANES_MIN) {                                                                    \
                LANES(w, row_bytes, nrows, a->xt + g * nb * 256, a->xst + g * nb * 16, a->xmt + g * nb * 16, nb, n,  \
                      out + t0 * out_stride, out_stride);                                                          \
                continue;                                                                                          \
            }                                                                                                      \
            for (int t = t0; t < t0 + n; t++) {                                                                    \
                const int16_t *xq = a->xq + t * a->k;                                                              \
                const float *xs = a->xs + t * nb, *xm = a->xm + t * nb;                                            \
                float *o = out + t * out_stride;                                                                   \
                int64_t r = 0;                                                                                     \
                for (; r + 16 <= nrows; r += 16) ROWS16(w + r * row_bytes, row_bytes, xq, xs, xm, nb, o + r);      \
                for (; r < nrows; r++) o[r] = ROW1(w + r * row_bytes, xq, xs, xm, nb);                             \
            }                                                                                                      \
        }                                                                                                          \
    }

MCLI_DEFINE_ROWS(mcli_q4_0_rows, mcli_q4_0_lanes, mcli_q4_0_rows16, mcli_q4_0_row1)
MCLI_DEFINE_ROWS(mcli_q4_1_rows, mcli_q4_1_lanes, mcli_q4_1_rows16, mcli_q4_1_row1)
MCLI_DEFINE_ROWS(mcli_q8_0_rows, mcli_q8_0_lanes, mcli_q8_0_rows16, mcli_q8_0_row1)
#endif

/* The row kernel for a GGML type at a SIMD level (NULL: none; use qdot.h's). */
static mcli_rows_fn mcli_select_rows(int qtype, int level) {
#ifdef MCLI_X86
    if (level >= 3) {
        switch (qtype) {
        case MCLI_Q4_0: return mcli_q4_0_rows;
        case MCLI_Q4_1: return mcli_q4_1_rows;
        case MCLI_Q8_0: return mcli_q8_0_rows;
        }
    }
#else
    (void)qtype;
    (void)level;
#endif
    return NULL;
}

#endif
