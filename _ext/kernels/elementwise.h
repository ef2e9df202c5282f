/* Per-token float kernels shared by the decode step and the prefill path: RMSNorm, RoPE, SwiGLU, GeGLU.
 * References: mistralcli.ops.reference (rmsnorm, rope, swiglu, geglu_tanh); RMSNorm sums squares in double. */
#ifndef MCLI_ELEMENTWISE_H
#define MCLI_ELEMENTWISE_H

#include "common.h"

static void mcli_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * weight[i];
}

static void mcli_rope(float *x, int num_heads, int d, const float *cos_, const float *sin_, int interleaved) {
    for (int h = 0; h < num_heads; h++) {
        float *v = x + h * d;
        for (int i = 0; i < d / 2; i++) {
            int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + d / 2;
            float a = v[ia], b = v[ib];
            v[ia] = a * cos_[i] - b * sin_[i];
            v[ib] = a * sin_[i] + b * cos_[i];
        }
    }
}

/* out (n,) = silu(gate) * up: 8 at a time where the CPU has AVX2 (common.h's exponential, relative error
 * below 2e-7; e^-g clamped to e^88 for g < -88, where silu is -0 either way), the rest with expf. */
#ifdef MCLI_X86
MCLI_AVX2 static int64_t mcli_swiglu8(float *out, const float *gate, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), cap = _mm256_set1_ps(88.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = mcli_exp8(_mm256_min_ps(_mm256_xor_ps(g, sign), cap));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    return i;
}
#endif

static void mcli_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
#ifdef MCLI_X86
    static int level = -1;
    if (level < 0) level = mcli_simd_level();
    if (level >= 2) i = mcli_swiglu8(out, gate, up, n);
#endif
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* out (n,) = gelu_tanh(gate) * up, GELU's tanh approximation (Gemma's MLP) */
static void mcli_geglu_tanh(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        out[i] = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g))) * up[i];
    }
}

#endif
