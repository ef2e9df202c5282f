#ifndef MCLI_DEQUANT_H
#define MCLI_DEQUANT_H

#include "common.h"

/* Dequantization of GGML blocks, exactly as gguf's reference computes it: float32 products, no
 * fused multiply-add (the extensions build with -ffp-contract=off). Layouts of Q4_0, Q4_1 and Q8_0
 * are drawn in qdot.h; the others (QK_K = 256 weights per super-block):
 *   Q5_0 (22): | d fp16 | qh u32 | qs[16] |   w[j] = d*((qs[j] & 15 | bit j of qh << 4) - 16),
 *                                             w[j+16] = d*((qs[j] >> 4 | bit j+16 of qh << 4) - 16)
 *   Q5_1 (24): | d fp16 | m fp16 | qh u32 | qs[16] |   the same without -16, plus m
 *   Q4_K (144): | d fp16 | dmin fp16 | scales[12] | qs[128] |  8 sub-blocks of 32, each with a
 *        6-bit scale sc and min mn packed in scales[] (see mcli_scale_min_k4): w = d*sc*q - dmin*mn,
 *        q a nibble; sub-blocks 2i and 2i+1 take the low and high nibbles of qs[32i .. 32i+31]
 *   Q5_K (176): | d | dmin | scales[12] | qh[32] | qs[128] |  as Q4_K with a fifth bit from qh
 *        (bit 2i of qh[l] for sub-block 2i, bit 2i+1 for 2i+1)
 *   Q6_K (210): | ql[128] | qh[64] | scales[16] int8 | d fp16 |  16 sub-blocks of 16:
 *        w = d*scales[s]*(q - 32), q = 4 low bits from ql and 2 high bits from qh
 */

/* Layouts dequantized here only (their products go through dequantized tiles):
 *   Q2_K (84): | scales[16] | qs[64] | d fp16 | dmin fp16 |  16 sub-blocks of 16: w = d*(sc & 15)*q - dmin*(sc >> 4),
 *        q = 2 bits: weight 128h + 32k + l is (qs[32h + l] >> 2k) & 3
 *   Q3_K (110): | hmask[32] | qs[64] | scales[12] | d fp16 |  w = d*(scale - 32)*(q - 4*(1 - hbit)),
 *        q as Q2_K; hbit of weight 32k + l is (hmask[l] >> k) & 1; the 16 6-bit scales: low 4 bits
 *        from scales[s % 8] >> 4*(s / 8), high 2 bits from scales[8 + s % 4] >> 2*(s / 4)
 *   IQ4_NL (18): | d fp16 | qs[16] |  w = d * KVALUES[nibble] (nibbles as Q4_0)
 *   IQ4_XS (136): | d fp16 | scales_h u16 | scales_l[4] | qs[128] |  8 sub-blocks of 32 as IQ4_NL with
 *        scale (scales_l[s/2] >> 4*(s%2) & 15 | (scales_h >> 2s & 3) << 4) - 32
 *   Q8_K (292): | d float32 | qs[256] int8 | bsums[16] int16 |  w[j] = d*qs[j] (bsums: sums of 16 qs,
 *        which only llama.cpp's dot products read) */
static const int8_t MCLI_IQ4_KVALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* Q4_K/Q5_K sub-block j (0..7): 6-bit scale and min.
 *   j < 4:  sc = scales[j] & 63,                        mn = scales[j+4] & 63
 *   j >= 4: sc = scales[j+4] & 15 | scales[j-4] >> 6 << 4, mn = scales[j+4] >> 4 | scales[j] >> 6 << 4 */
static inline void mcli_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Bytes of one block and weights per block, by type (0: not a type this file dequantizes). */
static int mcli_block_bytes(int qtype) {
    switch (qtype) {
    case MCLI_Q4_0: return 18;
    case MCLI_Q4_1: return 20;
    case MCLI_Q5_0: return 22;
    case MCLI_Q5_1: return 24;
    case MCLI_Q8_0: return 34;
    case MCLI_Q4_K: return 144;
    case MCLI_Q5_K: return 176;
    case MCLI_Q6_K: return 210;
    case MCLI_Q2_K: return 84;
    case MCLI_Q3_K: return 110;
    case MCLI_IQ4_NL: return 18;
    case MCLI_IQ4_XS: return 136;
    case MCLI_Q8_K: return 292;
    }
    return 0;
}

static int mcli_block_weights(int qtype) {
    return (qtype >= MCLI_Q2_K && qtype <= MCLI_Q8_K) || qtype == MCLI_IQ4_XS ? 256 : 32;
}

static inline __attribute__((always_inline)) void mcli_dequant_block(int qtype, const uint8_t *blk, float *out) {
    switch (qtype) {
    case MCLI_Q4_0: {
        const float d = mcli_fp16(blk);
        for (int j = 0; j < 16; j++) {
            out[j] = d * (float)((blk[2 + j] & 15) - 8);
            out[j + 16] = d * (float)((blk[2 + j] >> 4) - 8);
        }
    } break;
    case MCLI_Q4_1: {
        const float d = mcli_fp16(blk), m = mcli_fp16(blk + 2);
        for (int j = 0; j < 16; j++) {
            out[j] = d * (float)(blk[4 + j] & 15) + m;
            out[j + 16] = d * (float)(blk[4 + j] >> 4) + m;
        }
    } break;
    case MCLI_Q5_0:
    case MCLI_Q5_1: {
        const int has_min = qtype == MCLI_Q5_1;
        const float d = mcli_fp16(blk), m = has_min ? mcli_fp16(blk + 2) : 0.0f;
        const uint8_t *qhp = blk + (has_min ? 4 : 2), *qs = qhp + 4;
        const uint32_t qh = (uint32_t)qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 | (uint32_t)qhp[3] << 24;
        const int offset = has_min ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            const int lo = ((qs[j] & 15) | (((qh >> j) & 1) << 4)) - offset;
            const int hi = ((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset;
            out[j] = has_min ? d * (float)lo + m : d * (float)lo;
            out[j + 16] = has_min ? d * (float)hi + m : d * (float)hi;
        }
    } break;
    case MCLI_Q8_0: {
        const float d = mcli_fp16(blk);
        for (int j = 0; j < 32; j++) out[j] = d * (float)(int8_t)blk[2 + j];
    } break;
    case MCLI_Q4_K:
    case MCLI_Q5_K: {
        const int five = qtype == MCLI_Q5_K;
        const float d = mcli_fp16(blk), dmin = mcli_fp16(blk + 2);
        const uint8_t *scales = blk + 4, *qh = blk + 16, *qs = blk + (five ? 48 : 16);
        for (int pair = 0; pair < 4; pair++, qs += 32, out += 64) {
            uint8_t sc, mn;
            mcli_scale_min_k4(2 * pair, scales, &sc, &mn);
            const float d1 = d * (float)sc, m1 = dmin * (float)mn;
            mcli_scale_min_k4(2 * pair + 1, scales, &sc, &mn);
            const float d2 = d * (float)sc, m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                const int h1 = five ? ((qh[l] >> (2 * pair)) & 1) << 4 : 0;
                const int h2 = five ? ((qh[l] >> (2 * pair + 1)) & 1) << 4 : 0;
                out[l] = d1 * (float)((qs[l] & 15) | h1) - m1;
                out[l + 32] = d2 * (float)((qs[l] >> 4) | h2) - m2;
            }
        }
    } break;
    case MCLI_Q2_K: {
        const uint8_t *scales = blk, *qs = blk + 16;
        const float d = mcli_fp16(blk + 80), dmin = mcli_fp16(blk + 82);
        for (int i = 0; i < 256; i++) {
            const int h = i / 128, k = (i % 128) / 32, l = i % 32, sub = i / 16;
            const float dl = d * (float)(scales[sub] & 15), ml = dmin * (float)(scales[sub] >> 4);
            out[i] = dl * (float)((qs[32 * h + l] >> (2 * k)) & 3) - ml;
        }
    } break;
    case MCLI_Q3_K: {
        const uint8_t *hmask = blk, *qs = blk + 32, *scales = blk + 96;
        const float d = mcli_fp16(blk + 108);
        for (int i = 0; i < 256; i++) {
            const int h = i / 128, k = (i % 128) / 32, l = i % 32, sub = i / 16;
            const int low = (scales[sub % 8] >> (4 * (sub / 8))) & 15, high = (scales[8 + sub % 4] >> (2 * (sub / 4))) & 3;
            const float dl = d * (float)((int8_t)(low | (high << 4)) - 32);
            const int q = ((qs[32 * h + l] >> (2 * k)) & 3) - (((hmask[l] >> (i / 32)) & 1) ? 0 : 4);
            out[i] = dl * (float)q;
        }
    } break;
    case MCLI_IQ4_NL: {
        const float d = mcli_fp16(blk);
        for (int j = 0; j < 16; j++) {
            out[j] = d * (float)MCLI_IQ4_KVALUES[blk[2 + j] & 15];
            out[j + 16] = d * (float)MCLI_IQ4_KVALUES[blk[2 + j] >> 4];
        }
    } break;
    case MCLI_IQ4_XS: {
        const float d = mcli_fp16(blk);
        const unsigned scales_h = (unsigned)blk[2] | (unsigned)blk[3] << 8;
        const uint8_t *scales_l = blk + 4, *qs = blk + 8;
        for (int sub = 0; sub < 8; sub++) {
            const int sc = (((scales_l[sub / 2] >> (4 * (sub % 2))) & 15) | (((scales_h >> (2 * sub)) & 3) << 4)) - 32;
            const float dl = d * (float)sc;
            for (int j = 0; j < 16; j++) {
                out[32 * sub + j] = dl * (float)MCLI_IQ4_KVALUES[qs[16 * sub + j] & 15];
                out[32 * sub + j + 16] = dl * (float)MCLI_IQ4_KVALUES[qs[16 * sub + j] >> 4];
            }
        }
    } break;
    case MCLI_Q8_K: {
        float d;
        memcpy(&d, blk, 4);
        for (int j = 0; j < 256; j++) out[j] = d * (float)(int8_t)blk[4 + j];
    } break;
    case MCLI_Q6_K: {
        const uint8_t *ql = blk, *qh = blk + 128;
        const int8_t *scales = (const int8_t *)(blk + 192);
        const float d = mcli_fp16(blk + 208);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, scales += 8, out += 128) {
            for (int is = 0; is < 2; is++) { /* 16 weights share each scale: a loop the compiler vectorizes */
                const float s1 = d * (float)scales[is], s2 = d * (float)scales[is + 2];
                const float s3 = d * (float)scales[is + 4], s4 = d * (float)scales[is + 6];
                for (int l = 16 * is; l < 16 * is + 16; l++) {
                    const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    out[l] = s1 * (float)q1;
                    out[l + 32] = s2 * (float)q2;
                    out[l + 64] = s3 * (float)q3;
                    out[l + 96] = s4 * (float)q4;
                }
            }
        }
    } break;
    }
}

static void mcli_dequant_row_portable(int qtype, const uint8_t *row, float *out, int64_t k) {
    const int bytes = mcli_block_bytes(qtype), weights = mcli_block_weights(qtype);
    for (int64_t b = 0; b < k / weights; b++) mcli_dequant_block(qtype, row + b * bytes, out + b * weights);
}

#ifdef MCLI_X86
/* The same statements compiled for AVX2, which the compiler vectorizes: the same bits, since the
 * build never contracts a multiply and an add into one rounding (-ffp-contract=off). */
MCLI_AVX2 static void mcli_dequant_row_avx2(int qtype, const uint8_t *row, float *out, int64_t k) {
    const int bytes = mcli_block_bytes(qtype), weights = mcli_block_weights(qtype);
    for (int64_t b = 0; b < k / weights; b++) mcli_dequant_block(qtype, row + b * bytes, out + b * weights);
}
#endif

/* k weights of one row (k a multiple of the type's block) */
static void mcli_dequant_row(int qtype, const uint8_t *row, float *out, int64_t k) {
#ifdef MCLI_X86
    static int level = -1; /* a benign race: every thread computes the same value */
    if (level < 0) level = mcli_simd_level();
    if (level >= 2) {
        mcli_dequant_row_avx2(qtype, row, out, k);
        return;
    }
#endif
    mcli_dequant_row_portable(qtype, row, out, k);
}

#endif
