/* Shared by the C kernels: GGML type ids, fp16 conversion, int16 activation blocks, SIMD choice.
 *
 * Activation block b of a row: xq[32b .. 32b+31] int16, x = xq * xscale[b]; xsum[b] = float sum
 * of x. mcli_simd_level() says what this CPU runs (MISTRALCLI_NO_SIMD=1: the portable code). */
#ifndef MCLI_COMMON_H
#define MCLI_COMMON_H


#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MCLI_X86 1
#endif

enum { MCLI_Q4_0 = 2, MCLI_Q4_1 = 3, MCLI_Q8_0 = 8 };

static inline float mcli_fp16(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* fp32 -> fp16 bits, rounded to nearest even, subnormals kept, overflow to infinity: the rounding of
 * numpy's astype(float16) and of F16C's vcvtps2ph (a NaN stays a NaN, its payload not kept) */
static inline uint16_t mcli_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t a = x & 0x7fffffff;
    if (a > 0x7f800000) return sign | 0x7e00;
    if (a >= 0x47800000) return sign | 0x7c00; /* 2^16 and above, and infinity */
    uint32_t h, rest, halfway;
    if (a < 0x38800000) { /* below 2^-14: a half subnormal (in units of 2^-24), or zero */
        if (a < 0x33000000) return sign; /* below 2^-25: rounds to zero */
        const uint32_t shift = 126 - (a >> 23), m = (a & 0x7fffff) | 0x800000;
        h = m >> shift;
        rest = m & ((1u << shift) - 1);
        halfway = 1u << (shift - 1);
    } else {
        h = (a >> 13) - (112u << 10); /* the exponent rebiased (127 -> 15), 10 mantissa bits */
        rest = a & 0x1fff;
        halfway = 0x1000;
    }
    if (rest > halfway || (rest == halfway && (h & 1))) h++; /* a carry moves into the exponent, up to inf */
    return sign | (uint16_t)h;
}

/* The float sum of a block of 32 in one fixed order, the one an 8-lane vector add gives: lane j
 * sums x[j], x[j+8], x[j+16], x[j+24] in turn, then lanes j and j+4, then (0+2) + (1+3). */
static inline float mcli_sum32(const float *x) {
    float s[8];
    for (int j = 0; j < 8; j++) s[j] = ((x[j] + x[j + 8]) + x[j + 16]) + x[j + 24];
    const float t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}

/* x (k,) -> xq (k,) int16, xscale (k/32,), xsum (k/32,) */
static void mcli_quantize_x16_portable(const float *x, int64_t k, int16_t *xq, float *xscale, float *xsum) {
    for (int64_t b = 0; b < k / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        float scale = amax / 32767.0f, inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        for (int j = 0; j < 32; j++) xq[32 * b + j] = (int16_t)lrintf(xb[j] * inv);
        xscale[b] = scale;
        xsum[b] = mcli_sum32(xb);
    }
}

/* Tokens per block of the tiled products' loops (qtiles.h, ftiles.h): their activations stay in L2 while every
 * group of rows passes them. */
#define MCLI_TILES_TOKEN_BLOCK 64

typedef float (*mcli_dot_fn)(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum, int64_t nb);
typedef void (*mcli_dot_multi_fn)(const uint8_t *row, const int16_t *xq, const float *xscale, const float *xsum,
                                  int64_t nb, int num_tokens, float *out, int64_t out_stride);

enum { MCLI_Q5_0 = 6, MCLI_Q5_1 = 7, MCLI_Q2_K = 10, MCLI_Q3_K = 11, MCLI_Q4_K = 12, MCLI_Q5_K = 13, MCLI_Q6_K = 14, MCLI_Q8_K = 15,
       MCLI_IQ4_NL = 20, MCLI_IQ4_XS = 23 };

#ifdef MCLI_X86
/* Bytes ahead of the block being read to ask the cache for: the weights stream from DRAM once per
 * token, and the hardware prefetcher alone leaves the kernel waiting (measured on all of SmolLM2's matrices, one thread: 3.8 -> 7.2 GB/s). */
#ifndef MCLI_PREFETCH
#define MCLI_PREFETCH 4096
#endif
#define MCLI_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MCLI_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/* fp16 -> fp32 in one instruction (every AVX2 CPU has F16C) */
MCLI_AVX2 static inline float mcli_fp16_f16c(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* n floats -> fp16 bits, 8 at a time with F16C (level >= 2): the same rounding as mcli_to_fp16 */
MCLI_AVX2 static void mcli_to_fp16_f16c(uint16_t *dst, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = mcli_to_fp16(x[i]);
}

MCLI_AVX2 static inline float mcli_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x for 8 floats (x <= 0 here): 2^(x log2 e) split into 2^integer (exponent bits) and a degree-5
 * polynomial for 2^fraction; relative error below 2e-7, as Cephes' expf. */
MCLI_AVX2 static inline __m256 mcli_exp8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
    __m256 fi = _mm256_floor_ps(t);
    __m256 f = _mm256_sub_ps(t, fi); /* [0, 1) */
    __m256 p = _mm256_set1_ps(1.8775767e-3f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(8.9893397e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5826318e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4015361e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9315308e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.9999994e-1f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fi), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* the same quantization, 8 lanes at a time, bit for bit (lrintf and cvtps both round to nearest even) */
MCLI_AVX2 static void mcli_quantize_x16_avx2(const float *x, int64_t k, int16_t *xq, float *xscale, float *xsum) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < k / 32; b++) {
        const float *xb = x + 32 * b;
        __m256 v[4];
        for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(xb + 8 * i);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                                 _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float scale = amax / 32767.0f, inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        const __m256 vi = _mm256_set1_ps(inv);
        for (int i = 0; i < 4; i += 2) {
            __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[i], vi)),
                                           _mm256_cvtps_epi32(_mm256_mul_ps(v[i + 1], vi)));
            _mm256_storeu_si256((__m256i *)(xq + 32 * b + 8 * i), _mm256_permute4x64_epi64(p, 0xD8));
        }
        xscale[b] = scale;
        xsum[b] = mcli_hsum(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), v[2]), v[3]));
    }
}

#endif

/* 0: portable C; 2: AVX2 + FMA + F16C; 3: and AVX-512 (F, BW, VL, DQ) with VNNI.
 * MISTRALCLI_NO_SIMD=1 forces 0; MISTRALCLI_SIMD=2 caps the level (to compare or to work around a CPU). */
static int mcli_simd_level(void) {
    const char *off = getenv("MISTRALCLI_NO_SIMD");
    if (off && off[0] && off[0] != '0') return 0;
    int level = 0;
#ifdef MCLI_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        level = 2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
            level = 3;
    }
#endif
    const char *cap = getenv("MISTRALCLI_SIMD");
    if (cap && cap[0] >= '0' && cap[0] <= '9' && atoi(cap) < level) level = atoi(cap);
    return level;
}

/* n floats -> fp16 bits (the KV cache's halves): F16C from level 2, else mcli_to_fp16; the same bits */
static void mcli_to_fp16_row(uint16_t *dst, const float *x, int64_t n, int level) {
#ifdef MCLI_X86
    if (level >= 2) {
        mcli_to_fp16_f16c(dst, x, n);
        return;
    }
#else
    (void)level;
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = mcli_to_fp16(x[i]);
}

/* x (k,) -> xq (k,) int16, xscale (k/32,), xsum (k/32,): one result on every CPU */
static void mcli_quantize_x16(const float *x, int64_t k, int16_t *xq, float *xscale, float *xsum) {
#ifdef MCLI_X86
    static int level = -1;
    if (level < 0) level = mcli_simd_level();
    if (level >= 2) {
        mcli_quantize_x16_avx2(x, k, xq, xscale, xsum);
        return;
    }
#endif
    mcli_quantize_x16_portable(x, k, xq, xscale, xsum);
}

#endif
