/* Causal grouped-query attention over the paged KV cache, in C: prompt chunks (attention.pyx) and the
 * decode step (llama_step.h) both go through mcli_attend_paged_heads, so a query gets the same bits in
 * either. Two passes per query (scores with their maximum, then softmax-weighted values); AVX2 for the dot
 * products, the exponentials (8 at a time) and the value sums, and on AVX-512 CPUs the query heads that
 * share a key/value head at once; chosen at run time like qdot.h.
 *
 * The cache holds float32, or IEEE half (kv16: half the bytes to read, which is what a batch of decodes
 * waits on): a half is widened to float32 as it is loaded (F16C), and everything after the load is the
 * float32 kernel's arithmetic. */
#ifndef MCLI_ATTENTION_H
#define MCLI_ATTENTION_H

#include "qdot.h"

/* query heads per call of the grouped kernel (mcli_attend_paged_heads) */
#define MCLI_ATTN_GROUP 3

#ifdef MCLI_X86
/* p[s] = exp(p[s] - best) (0 for -inf) and *total = their sum, 8 at a time; returns how many were done */
MCLI_AVX2 static int64_t mcli_exp_shift8(float *p, int64_t n, float best, float *total) {
    __m256 vbest = _mm256_set1_ps(best), vtotal = _mm256_setzero_ps();
    int64_t s = 0;
    for (; s + 8 <= n; s += 8) { /* masked keys hold -inf: exp gives 0 (clamped, then * 0) */
        __m256 sc = _mm256_loadu_ps(p + s);
        __m256 valid = _mm256_cmp_ps(sc, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        __m256 e = _mm256_and_ps(mcli_exp8(_mm256_sub_ps(sc, vbest)), valid);
        _mm256_storeu_ps(p + s, e);
        vtotal = _mm256_add_ps(vtotal, e);
    }
    *total = mcli_hsum(vtotal);
    return s;
}

/* keys and values of one sequence at positions FIRST..NUM_KEYS-1, block by block in position order
 * (see mcli_attend_paged_query); T counts from 0 at FIRST; BASE: the slot's row, ES bytes an element */
#define MCLI_FOR_EACH_SLOT(T, BASE, ARRAY, TABLE, BS, FIRST, NUM_KEYS, STRIDE, ES, BODY)                       \
    for (int64_t p_ = (FIRST); p_ < (NUM_KEYS);) {                                                          \
        const int64_t blk_ = p_ / (BS), end_ = (blk_ + 1) * (BS) < (NUM_KEYS) ? (blk_ + 1) * (BS) : (NUM_KEYS); \
        const char *block_ = (const char *)(ARRAY) + (int64_t)(TABLE)[blk_] * (BS) * (STRIDE) * (ES);       \
        for (; p_ < end_; p_++) {                                                                           \
            const int64_t T = p_ - (FIRST);                                                                 \
            const char *BASE = block_ + (p_ - blk_ * (BS)) * (STRIDE) * (ES);                               \
            BODY                                                                                            \
        }                                                                                                   \
    }

/* 8 floats of a cache row from element I: float32 as stored, or half widened */
#define MCLI_KV_LOAD8(ROW, I, KV16)                                                              \
    ((KV16) ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(ROW) + (I)))) \
            : _mm256_loadu_ps((const float *)(ROW) + (I)))

/* 8 vectors of 8 partial sums -> one vector whose lane j is the sum of a[j] (a fixed tree per lane) */
MCLI_AVX2 static inline __m256 mcli_sum8x8(const __m256 *a) {
    const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

#define MCLI_ATTN_MAX_D 512
static const float MCLI_ZERO_KEY[MCLI_ATTN_MAX_D] = {0};

/* Keys 8 at a time, from the first (a padded last group reads a zero key and is masked), so every key's
 * score goes through the same operations wherever the query's keys end; values summed in registers,
 * 64 dimensions at a time, keys in position order. */
MCLI_AVX2 static inline __attribute__((always_inline)) void
mcli_attend_paged_query_avx2_body(const float *qh, const void *k, const void *v, const int32_t *table, int64_t bs,
                                  int64_t first, int64_t num_keys, int64_t stride, int d, float scale, float *scores,
                                  float *out, const int kv16) {
    const int64_t n = num_keys - first, padded = (n + 7) / 8 * 8, es = kv16 ? 2 : 4;
    const __m256 vscale = _mm256_set1_ps(scale);
    __m256 vbest = _mm256_set1_ps(-INFINITY);
    int64_t block = first / bs, offset = first % bs; /* slot of key t0: table[block], offset */
    for (int64_t t0 = 0; t0 < padded; t0 += 8) {
        const char *key[8];
        for (int j = 0; j < 8; j++) {
            key[j] = t0 + j < n ? (const char *)k + ((int64_t)table[block] * bs + offset) * stride * es
                                : (const char *)MCLI_ZERO_KEY;
            if (++offset == bs) { offset = 0; block++; }
        }
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) {
            const __m256 q8 = _mm256_loadu_ps(qh + i);
            for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(q8, MCLI_KV_LOAD8(key[j], i, kv16), acc[j]);
        }
        __m256 s8 = _mm256_mul_ps(mcli_sum8x8(acc), vscale);
        if (t0 + 8 > n) { /* the padding: masked */
            const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - t0)), lane));
            s8 = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), s8, valid);
        }
        _mm256_storeu_ps(scores + t0, s8);
        vbest = _mm256_max_ps(vbest, s8);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vbest), _mm256_extractf128_ps(vbest, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float total;
    mcli_exp_shift8(scores, padded, _mm_cvtss_f32(m4), &total);
    const __m256 inv = _mm256_set1_ps(1.0f / total);
    /* 64 dimensions in registers, keys in position order; NC vectors of them (a whole 64 a constant, so the
     * sums stay in registers) */
#define MCLI_QUERY_VALUES(NC)                                                                                   \
    {                                                                                                           \
        __m256 o[8];                                                                                            \
        for (int c = 0; c < 8; c++) o[c] = _mm256_setzero_ps();                                                 \
        MCLI_FOR_EACH_SLOT(t, vt, v, table, bs, first, num_keys, stride, es, {                                  \
            const __m256 p = _mm256_set1_ps(scores[t]);                                                         \
            for (int c = 0; c < (NC); c++) o[c] = _mm256_fmadd_ps(p, MCLI_KV_LOAD8(vt, i0 + 8 * c, kv16), o[c]); \
        })                                                                                                      \
        for (int c = 0; c < (NC); c++) _mm256_storeu_ps(out + i0 + 8 * c, _mm256_mul_ps(o[c], inv));           \
    }
    for (int i0 = 0; i0 < d; i0 += 64) {
        const int nc = (d - i0 < 64 ? d - i0 : 64) / 8;
        if (nc == 8) MCLI_QUERY_VALUES(8) else MCLI_QUERY_VALUES(nc)
    }
#undef MCLI_QUERY_VALUES
}

MCLI_AVX2 static void mcli_attend_paged_query_avx2(const float *qh, const void *k, const void *v, const int32_t *table,
                                                   int64_t bs, int64_t first, int64_t num_keys, int64_t stride, int d,
                                                   float scale, float *scores, float *out, int kv16) {
    if (kv16) mcli_attend_paged_query_avx2_body(qh, k, v, table, bs, first, num_keys, stride, d, scale, scores, out, 1);
    else mcli_attend_paged_query_avx2_body(qh, k, v, table, bs, first, num_keys, stride, d, scale, scores, out, 0);
}

/* Up to MCLI_ATTN_GROUP query heads that share a key/value head (grouped-query attention) at once: each
 * key and value vector is read once for all of them. Every head goes through the operations of
 * mcli_attend_paged_query_avx2 in the same order (the same bits); 32 vector registers hold the heads'
 * sums, so AVX-512 (VL) CPUs only. scores: room for nh rows of `stride_s` floats. */
MCLI_AVX512 static inline __attribute__((always_inline)) void
mcli_attend_paged_group_body(const float *q, const int nh, const void *k, const void *v, const int32_t *table, int64_t bs,
                             int64_t first, int64_t num_keys, int64_t stride, int d, float scale, float *scores,
                             int64_t stride_s, float *out, const int kv16) {
    const int64_t n = num_keys - first, padded = (n + 7) / 8 * 8, es = kv16 ? 2 : 4;
    const __m256 vscale = _mm256_set1_ps(scale);
    __m256 vbest[MCLI_ATTN_GROUP];
    for (int g = 0; g < nh; g++) vbest[g] = _mm256_set1_ps(-INFINITY);
    int64_t block = first / bs, offset = first % bs;
    for (int64_t t0 = 0; t0 < padded; t0 += 8) {
        const char *key[8];
        for (int j = 0; j < 8; j++) {
            key[j] = t0 + j < n ? (const char *)k + ((int64_t)table[block] * bs + offset) * stride * es
                                : (const char *)MCLI_ZERO_KEY;
            if (++offset == bs) { offset = 0; block++; }
        }
        __m256 acc[MCLI_ATTN_GROUP][8];
        for (int g = 0; g < nh; g++)
            for (int j = 0; j < 8; j++) acc[g][j] = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) {
            __m256 q8[MCLI_ATTN_GROUP];
            for (int g = 0; g < nh; g++) q8[g] = _mm256_loadu_ps(q + g * d + i);
            for (int j = 0; j < 8; j++) {
                const __m256 kv = MCLI_KV_LOAD8(key[j], i, kv16);
                for (int g = 0; g < nh; g++) acc[g][j] = _mm256_fmadd_ps(q8[g], kv, acc[g][j]);
            }
        }
        for (int g = 0; g < nh; g++) {
            __m256 s8 = _mm256_mul_ps(mcli_sum8x8(acc[g]), vscale);
            if (t0 + 8 > n) {
                const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - t0)), lane));
                s8 = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), s8, valid);
            }
            _mm256_storeu_ps(scores + g * stride_s + t0, s8);
            vbest[g] = _mm256_max_ps(vbest[g], s8);
        }
    }
    __m256 inv[MCLI_ATTN_GROUP];
    for (int g = 0; g < nh; g++) {
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vbest[g]), _mm256_extractf128_ps(vbest[g], 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float total;
        mcli_exp_shift8(scores + g * stride_s, padded, _mm_cvtss_f32(m4), &total);
        inv[g] = _mm256_set1_ps(1.0f / total);
    }
#define MCLI_GROUP_VALUES(NC)                                                                                   \
    {                                                                                                           \
        __m256 o[MCLI_ATTN_GROUP][8];                                                                           \
        for (int g = 0; g < nh; g++)                                                                            \
            for (int c = 0; c < 8; c++) o[g][c] = _mm256_setzero_ps();                                          \
        MCLI_FOR_EACH_SLOT(t, vt, v, table, bs, first, num_keys, stride, es, {                                  \
            __m256 p[MCLI_ATTN_GROUP];                                                                          \
            for (int g = 0; g < nh; g++) p[g] = _mm256_set1_ps(scores[g * stride_s + t]);                      \
            for (int c = 0; c < (NC); c++) {                                                                    \
                const __m256 vc = MCLI_KV_LOAD8(vt, i0 + 8 * c, kv16);                                          \
                for (int g = 0; g < nh; g++) o[g][c] = _mm256_fmadd_ps(p[g], vc, o[g][c]);                      \
            }                                                                                                   \
        })                                                                                                      \
        for (int g = 0; g < nh; g++)                                                                            \
            for (int c = 0; c < (NC); c++)                                                                      \
                _mm256_storeu_ps(out + g * d + i0 + 8 * c, _mm256_mul_ps(o[g][c], inv[g]));                    \
    }
    for (int i0 = 0; i0 < d; i0 += 64) { /* as mcli_attend_paged_query_avx2: a whole 64 dimensions a constant */
        const int nc = (d - i0 < 64 ? d - i0 : 64) / 8;
        if (nc == 8) MCLI_GROUP_VALUES(8) else MCLI_GROUP_VALUES(nc)
    }
#undef MCLI_GROUP_VALUES
}
#endif

/* element i of a cache row, as float */
static inline float mcli_kv_at(const char *row, int64_t i, int kv16) {
    if (kv16) return mcli_fp16((const uint8_t *)(row + 2 * i));
    float x;
    memcpy(&x, row + 4 * i, 4);
    return x;
}

/* ---- one query against a paged cache (prompt chunks, and the decode step) ----------------------
 * k, v: one layer of the paged cache (NB, BS, Hkv, D) at the query's kv head, float32 or (kv16) half;
 * table: the query's sequence's blocks; the query sees positions first..num_keys-1 (first > 0: a sliding
 * window), read block by block in position order; scores: scratch of num_keys - first rounded up to 8. The
 * arithmetic of a query does not depend on the other queries of a call, nor on how a prompt is cut
 * into chunks. */
static void mcli_attend_paged_query(const float *qh, const void *k, const void *v, const int32_t *table, int64_t bs,
                                    int64_t first, int64_t num_keys, int64_t stride, int d, float scale, float *scores,
                                    float *out, int level, int kv16) {
#ifdef MCLI_X86
    if (level >= 2 && d % 8 == 0 && d <= MCLI_ATTN_MAX_D) {
        mcli_attend_paged_query_avx2(qh, k, v, table, bs, first, num_keys, stride, d, scale, scores, out, kv16);
        return;
    }
#else
    (void)level;
#endif
    const int64_t es = kv16 ? 2 : 4;
    float best = -INFINITY, total = 0.0f;
    MCLI_FOR_EACH_SLOT(t, kt, k, table, bs, first, num_keys, stride, es, {
        float dot = 0.0f;
        for (int i = 0; i < d; i++) dot += qh[i] * mcli_kv_at(kt, i, kv16);
        scores[t] = dot * scale;
        best = scores[t] > best ? scores[t] : best;
    })
    for (int64_t t = 0; t < num_keys - first; t++) {
        scores[t] = expf(scores[t] - best);
        total += scores[t];
    }
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    MCLI_FOR_EACH_SLOT(t, vt, v, table, bs, first, num_keys, stride, es, {
        for (int i = 0; i < d; i++) out[i] += scores[t] * mcli_kv_at(vt, i, kv16);
    })
    for (int i = 0; i < d; i++) out[i] /= total;
}

#ifdef MCLI_X86
/* the grouped kernel with its head count and cache type constants, so that its sums stay in registers */
#define MCLI_DEFINE_ATTEND_GROUP(NAME, NH, KV16)                                                                   \
    MCLI_AVX512 static void NAME(const float *q, const void *k, const void *v, const int32_t *table, int64_t bs,    \
                                 int64_t first, int64_t num_keys, int64_t stride, int d, float scale, float *scores, \
                                 int64_t stride_s, float *out) {                                                   \
        mcli_attend_paged_group_body(q, NH, k, v, table, bs, first, num_keys, stride, d, scale, scores, stride_s, out, \
                                     KV16);                                                                        \
    }
MCLI_DEFINE_ATTEND_GROUP(mcli_attend_paged_group1, 1, 0)
MCLI_DEFINE_ATTEND_GROUP(mcli_attend_paged_group2, 2, 0)
MCLI_DEFINE_ATTEND_GROUP(mcli_attend_paged_group3, 3, 0)
MCLI_DEFINE_ATTEND_GROUP(mcli_attend_paged_group1_kv16, 1, 1)
MCLI_DEFINE_ATTEND_GROUP(mcli_attend_paged_group2_kv16, 2, 1)
MCLI_DEFINE_ATTEND_GROUP(mcli_attend_paged_group3_kv16, 3, 1)

typedef void (*mcli_attend_group_fn)(const float *, const void *, const void *, const int32_t *, int64_t, int64_t,
                                     int64_t, int64_t, int, float, float *, int64_t, float *);
static const mcli_attend_group_fn MCLI_ATTEND_GROUP[2][MCLI_ATTN_GROUP] = {
    {mcli_attend_paged_group1, mcli_attend_paged_group2, mcli_attend_paged_group3},
    {mcli_attend_paged_group1_kv16, mcli_attend_paged_group2_kv16, mcli_attend_paged_group3_kv16},
};
#endif

/* nh query heads of one position that share a key/value head (q and out: nh rows of d), as
 * mcli_attend_paged_query gives each (the same bits), MCLI_ATTN_GROUP at a time where the CPU has AVX-512;
 * scores: room for MCLI_ATTN_GROUP rows of num_keys - first rounded up to 8. */
static void mcli_attend_paged_heads(const float *q, int nh, const void *k, const void *v, const int32_t *table,
                                    int64_t bs, int64_t first, int64_t num_keys, int64_t stride, int d, float scale,
                                    float *scores, float *out, int level, int kv16) {
#ifdef MCLI_X86
    if (level >= 3 && d % 8 == 0 && d <= MCLI_ATTN_MAX_D) {
        const int64_t stride_s = (num_keys - first + 7) / 8 * 8;
        for (int h = 0; h < nh; h += MCLI_ATTN_GROUP) {
            const int heads = nh - h < MCLI_ATTN_GROUP ? nh - h : MCLI_ATTN_GROUP;
            MCLI_ATTEND_GROUP[kv16 != 0][heads - 1](q + h * d, k, v, table, bs, first, num_keys, stride, d, scale, scores,
                                                    stride_s, out + h * d);
        }
        return;
    }
#endif
    for (int h = 0; h < nh; h++)
        mcli_attend_paged_query(q + h * d, k, v, table, bs, first, num_keys, stride, d, scale, scores, out + h * d, level,
                                kv16);
}

#endif
