/* Q4_K, Q5_K and Q6_K super-block quantizers (AVX2): the searches of a super-block's sub-blocks (8 of 32 weights,
 * or 16 of 16 in two groups of 8) run side by side, one sub-block per SIMD lane. Each lane does llama.cpp's float32
 * operations in its order (make_qkx2/3_quants, make_qx_quants, make_qp_quants of ggml-quants.c: no fused
 * multiply-add, the extensions build with -ffp-contract=off), and a candidate's verdict is taken per lane by
 * masks, so the bytes are llama.cpp's, bit for bit (tests/test_kquants.py, against the NumPy reference and
 * llama.cpp). A single sub-block's sums are chains that cannot be reordered; lanes are independent, so 8 of
 * them run in the instructions one took. The rest of a block (its 6-bit scales, the quants again from them,
 * the packing) is scalar. Layouts: _ext/kernels/dequant.h. Without AVX2 numba_kernels/cpu/kquants.py runs. */
#ifndef MCLI_KQUANT_H
#define MCLI_KQUANT_H

#include "common.h"

#define MCLI_KQ_EPS 1e-15f /* GROUP_MAX_EPS */

static inline int mcli_kq_nearest1(float f) { /* ggml's nearest_int: its float trick */
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007FFFFF) - 0x00400000;
}

static inline int mcli_kq_min(int a, int b) { return a < b ? a : b; }
static inline int mcli_kq_max(int a, int b) { return a > b ? a : b; }

/* make_qp_quants (n <= 16): non-negative quants 0..nmax of x, weighted by qw; its scale. */
static float mcli_kq_qp(int n, int nmax, const float *x, int32_t *L, const float *qw) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
    if (max < MCLI_KQ_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i) L[i] = mcli_kq_nearest1(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = mcli_kq_min(nmax, mcli_kq_nearest1(iscale_is * x[i]));
            float diff = x[i] - scale_is * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = mcli_kq_min(nmax, mcli_kq_nearest1(iscale * x[i]));
        L[i] = l;
        sumlx += qw[i] * x[i] * l;
        suml2 += qw[i] * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float slx = sumlx - qw[i] * x[i] * L[i];
            float sl2 = suml2 - qw[i] * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = mcli_kq_min(nmax, mcli_kq_nearest1(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += qw[i] * x[i] * new_l;
                    sl2 += qw[i] * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

#ifdef MCLI_X86

/* float32 -> float16 rounded to nearest even, as ggml's GGML_FP32_TO_FP16 (F16C); the value it holds back */
MCLI_AVX2 static inline float mcli_kq_put_half(uint8_t *at, float f) {
    uint16_t h = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    at[0] = (uint8_t)(h & 0xFF);
    at[1] = (uint8_t)(h >> 8);
    return _cvtsh_ss(h);
}

MCLI_AVX2 static inline __m256i mcli_kq_nearest8(__m256 v) {
    __m256i i = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x00400000));
}

MCLI_AVX2 static inline __m256i mcli_kq_clamp8(__m256i q, int lo, int hi) {
    return _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}

MCLI_AVX2 static inline __m256 mcli_kq_neg8(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }

/* make_qkx2_quants / make_qkx3_quants (weights given) for 8 groups of n weights side by side: X and W (n, 8),
 * X[8*i + g] weight i of group g. Quants into L (n, 8); each group's scale, and its -min, into scale, the_min. */
MCLI_AVX2 static void mcli_kq_qkx8(const float *X, const float *W, int n, int nmax, float rmin, float rdelta, int nstep,
                                   int use_mad, int32_t *L, int32_t *Laux, float *scale_out, float *min_out) {
    const __m256 fmax = _mm256_set1_ps((float)nmax), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 lo = _mm256_loadu_ps(X), hi = lo, sum_w = _mm256_loadu_ps(W);
    __m256 sum_x = _mm256_mul_ps(sum_w, lo);
    for (int i = 1; i < n; ++i) {
        __m256 x = _mm256_loadu_ps(X + 8 * i), w = _mm256_loadu_ps(W + 8 * i);
        lo = _mm256_blendv_ps(lo, x, _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
        hi = _mm256_blendv_ps(hi, x, _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
        sum_w = _mm256_add_ps(sum_w, w);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(w, x));
    }
    lo = _mm256_blendv_ps(lo, zero, _mm256_cmp_ps(lo, zero, _CMP_GT_OQ));
    const __m256 flat = _mm256_cmp_ps(hi, lo, _CMP_LE_OQ); /* max <= min: all zero quants, scale 0 */
    __m256 iscale = _mm256_div_ps(fmax, _mm256_blendv_ps(_mm256_sub_ps(hi, lo), one, flat));
    __m256 scale = _mm256_div_ps(one, iscale), best = zero;
    const __m256i qmax = _mm256_set1_epi32(nmax);
    for (int i = 0; i < n; ++i) {
        __m256 x = _mm256_loadu_ps(X + 8 * i), w = _mm256_loadu_ps(W + 8 * i);
        __m256i q = _mm256_min_epi32(_mm256_max_epi32(mcli_kq_nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(x, lo))),
                                                      _mm256_setzero_si256()), qmax);
        _mm256_storeu_si256((__m256i *)(L + 8 * i), q);
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(q)), lo), x);
        diff = use_mad ? _mm256_and_ps(diff, absmask) : _mm256_mul_ps(diff, diff);
        best = _mm256_add_ps(best, _mm256_mul_ps(w, diff));
    }
    for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
        __m256 span = _mm256_blendv_ps(_mm256_sub_ps(hi, lo), one, flat);
        iscale = _mm256_div_ps(_mm256_set1_ps(rmin + rdelta * is + nmax), span);
        __m256 sl = zero, sl2 = zero, sxl = zero;
        for (int i = 0; i < n; ++i) {
            __m256 x = _mm256_loadu_ps(X + 8 * i), w = _mm256_loadu_ps(W + 8 * i);
            __m256i q = _mm256_min_epi32(
                _mm256_max_epi32(mcli_kq_nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(x, lo))), _mm256_setzero_si256()),
                qmax);
            _mm256_storeu_si256((__m256i *)(Laux + 8 * i), q);
            __m256 fl = _mm256_cvtepi32_ps(q), wl = _mm256_mul_ps(w, fl);
            sl = _mm256_add_ps(sl, wl);
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, fl));
            sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, x));
        }
        __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sl2), _mm256_mul_ps(sl, sl));
        __m256 ok = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
        __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sxl), _mm256_mul_ps(sum_x, sl)), D);
        __m256 this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sl2, sum_x), _mm256_mul_ps(sl, sxl)), D);
        __m256 positive = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
        this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sxl, sl2), positive);
        this_min = _mm256_blendv_ps(this_min, zero, positive);
        __m256 err = zero;
        for (int i = 0; i < n; ++i) {
            __m256 x = _mm256_loadu_ps(X + 8 * i), w = _mm256_loadu_ps(W + 8 * i);
            __m256 fl = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(Laux + 8 * i)));
            __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, fl), this_min), x);
            diff = use_mad ? _mm256_and_ps(diff, absmask) : _mm256_mul_ps(diff, diff);
            err = _mm256_add_ps(err, _mm256_mul_ps(w, diff));
        }
        __m256 take = _mm256_andnot_ps(flat, _mm256_and_ps(ok, _mm256_cmp_ps(err, best, _CMP_LT_OQ)));
        if (_mm256_movemask_ps(take)) {
            best = _mm256_blendv_ps(best, err, take);
            scale = _mm256_blendv_ps(scale, this_scale, take);
            lo = _mm256_blendv_ps(lo, this_min, take);
            for (int i = 0; i < n; ++i) {
                __m256 old = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(L + 8 * i)));
                __m256 new_ = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(Laux + 8 * i)));
                _mm256_storeu_si256((__m256i *)(L + 8 * i), _mm256_castps_si256(_mm256_blendv_ps(old, new_, take)));
            }
        }
    }
    if (_mm256_movemask_ps(flat)) {
        scale = _mm256_blendv_ps(scale, zero, flat);
        for (int i = 0; i < n; ++i) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(L + 8 * i));
            _mm256_storeu_si256((__m256i *)(L + 8 * i), _mm256_andnot_si256(_mm256_castps_si256(flat), q));
        }
    }
    _mm256_storeu_ps(scale_out, scale);
    _mm256_storeu_ps(min_out, mcli_kq_neg8(lo));
}

/* make_qx_quants, rmse_type 1, for 8 groups of n weights side by side (X (n, 8)): signed quants -nmax..nmax-1
 * stored + nmax in L (n, 8); weights QW (n, 8) where weighted, else x**2. Each group's scale into scale_out. */
MCLI_AVX2 static void mcli_kq_qx8(const float *X, const float *QW, int weighted, int n, int nmax, int32_t *L,
                                  float *scale_out) {
    const __m256 zero = _mm256_setzero_ps(), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 fmax = _mm256_set1_ps((float)nmax);
    const __m256i off = _mm256_set1_epi32(nmax);
    __m256 amax = zero, top = zero;
    for (int i = 0; i < n; ++i) {
        __m256 x = _mm256_loadu_ps(X + 8 * i), ax = _mm256_and_ps(x, absmask);
        __m256 bigger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, bigger);
        top = _mm256_blendv_ps(top, x, bigger);
    }
    const __m256 empty = _mm256_cmp_ps(amax, _mm256_set1_ps(MCLI_KQ_EPS), _CMP_LT_OQ);
    __m256 iscale = _mm256_div_ps(mcli_kq_neg8(fmax), top);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
        __m256 x = _mm256_loadu_ps(X + 8 * i);
        __m256 w = weighted ? _mm256_loadu_ps(QW + 8 * i) : _mm256_mul_ps(x, x);
        __m256i q = mcli_kq_clamp8(mcli_kq_nearest8(_mm256_mul_ps(iscale, x)), -nmax, nmax - 1);
        _mm256_storeu_si256((__m256i *)(L + 8 * i), _mm256_add_epi32(q, off));
        __m256 fl = _mm256_cvtepi32_ps(q);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w, x), fl));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, fl), fl));
    }
    __m256 scale = _mm256_blendv_ps(_mm256_div_ps(sumlx, suml2), zero, _mm256_cmp_ps(suml2, zero, _CMP_EQ_OQ));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = _mm256_div_ps(mcli_kq_neg8(_mm256_set1_ps(nmax + 0.1f * is)), top);
        sumlx = zero;
        suml2 = zero;
        for (int i = 0; i < n; ++i) {
            __m256 x = _mm256_loadu_ps(X + 8 * i);
            __m256 w = weighted ? _mm256_loadu_ps(QW + 8 * i) : _mm256_mul_ps(x, x);
            __m256 fl = _mm256_cvtepi32_ps(mcli_kq_clamp8(mcli_kq_nearest8(_mm256_mul_ps(iscale, x)), -nmax, nmax - 1));
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w, x), fl));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, fl), fl));
        }
        __m256 take = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                    _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
        if (_mm256_movemask_ps(take)) {
            for (int i = 0; i < n; ++i) {
                __m256 x = _mm256_loadu_ps(X + 8 * i);
                __m256i q = _mm256_add_epi32(mcli_kq_clamp8(mcli_kq_nearest8(_mm256_mul_ps(iscale, x)), -nmax, nmax - 1), off);
                __m256 old = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(L + 8 * i)));
                _mm256_storeu_si256((__m256i *)(L + 8 * i),
                                    _mm256_castps_si256(_mm256_blendv_ps(old, _mm256_castsi256_ps(q), take)));
            }
            scale = _mm256_blendv_ps(scale, _mm256_div_ps(sumlx, suml2), take);
            best = _mm256_blendv_ps(best, _mm256_mul_ps(scale, sumlx), take);
        }
    }
    if (_mm256_movemask_ps(empty)) {
        scale = _mm256_blendv_ps(scale, zero, empty);
        for (int i = 0; i < n; ++i) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(L + 8 * i));
            _mm256_storeu_si256((__m256i *)(L + 8 * i), _mm256_andnot_si256(_mm256_castps_si256(empty), q));
        }
    }
    _mm256_storeu_ps(scale_out, scale);
}

/* One Q4_K (nmax 15) or Q5_K (nmax 31) super-block of x (256) into out (144 or 176 bytes); qw (256) where
 * weighted (quantize_row_q*_K_impl), else the reference search (quantize_row_q*_K_ref). */
MCLI_AVX2 static void mcli_kq_q4_q5_block(const float *x, const float *qw, int weighted, int nmax, uint8_t *out) {
    float X[256], W[256], scales[8], mins[8], sw[8];
    int32_t T[256], Taux[256], L[256], Ls[8], Lm[8];
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < 8; ++j) X[8 * i + j] = x[32 * j + i];
    if (weighted) {
        float sum_x2 = 0;
        for (int l = 0; l < 256; ++l) sum_x2 += x[l] * x[l];
        __m256 sigma2 = _mm256_set1_ps(2 * sum_x2 / 256), s = _mm256_setzero_ps();
        for (int i = 0; i < 32; ++i) {
            float q[8];
            for (int j = 0; j < 8; ++j) q[j] = qw[32 * j + i];
            __m256 xv = _mm256_loadu_ps(X + 8 * i);
            __m256 w = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_sqrt_ps(_mm256_add_ps(sigma2, _mm256_mul_ps(xv, xv))));
            _mm256_storeu_ps(W + 8 * i, w);
            s = _mm256_add_ps(s, w);
        }
        _mm256_storeu_ps(sw, s);
        mcli_kq_qkx8(X, W, 32, nmax, -0.9f, 0.05f, 36, 0, T, Taux, scales, mins);
    } else {
        __m256 s = _mm256_setzero_ps();
        for (int i = 0; i < 32; ++i) {
            __m256 xv = _mm256_loadu_ps(X + 8 * i);
            s = _mm256_add_ps(s, _mm256_mul_ps(xv, xv));
        }
        __m256 av = _mm256_sqrt_ps(_mm256_div_ps(s, _mm256_set1_ps(32.0f)));
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        for (int i = 0; i < 32; ++i)
            _mm256_storeu_ps(W + 8 * i, _mm256_add_ps(av, _mm256_and_ps(_mm256_loadu_ps(X + 8 * i), absmask)));
        if (nmax == 15)
            mcli_kq_qkx8(X, W, 32, 15, -1.f, 0.1f, 20, 0, T, Taux, scales, mins);
        else
            mcli_kq_qkx8(X, W, 32, 31, -0.5f, 0.1f, 15, 0, T, Taux, scales, mins);
    }
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < 8; ++j) L[32 * j + i] = T[8 * i + j];
    float d, dmin;
    if (weighted) {
        d = mcli_kq_qp(8, 63, scales, Ls, sw);
        dmin = mcli_kq_qp(8, 63, mins, Lm, sw);
    } else {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; ++j) {
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; ++j) {
            Ls[j] = (uint8_t)mcli_kq_nearest1(inv_scale * scales[j]);
            Lm[j] = (uint8_t)mcli_kq_nearest1(inv_min * mins[j]);
        }
        d = max_scale / 63.f;
        dmin = max_min / 63.f;
    }
    uint8_t *sc = out + 4;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)mcli_kq_min(63, Ls[j]), lm = (uint8_t)mcli_kq_min(63, Lm[j]);
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= ((ls >> 4) << 6);
            sc[j - 0] |= ((lm >> 4) << 6);
        }
    }
    d = mcli_kq_put_half(out, d);
    dmin = mcli_kq_put_half(out + 2, dmin);
    for (int j = 0; j < 8; ++j) {
        int s, m;
        if (j < 4) {
            s = sc[j] & 63;
            m = sc[j + 4] & 63;
        } else {
            s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
            m = (sc[j + 4] >> 4) | ((sc[j - 0] >> 6) << 4);
        }
        const float dj = d * s;
        if (!dj) continue;
        const float dm = dmin * m;
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = mcli_kq_max(0, mcli_kq_min(nmax, mcli_kq_nearest1((x[32 * j + ii] + dm) / dj)));
    }
    if (nmax == 15) {
        uint8_t *q = out + 16;
        for (int j = 0; j < 256; j += 64, q += 32)
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    } else {
        uint8_t *qh = out + 16, *ql = out + 48;
        memset(qh, 0, 32);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < 256; n += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[n + j], l2 = L[n + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}

/* One Q6_K super-block (210 bytes): make_qx_quants(16, 32) of its 16 sub-blocks, 8 at a time; qw raw where
 * weighted (quantize_row_q6_K_impl). */
MCLI_AVX2 static void mcli_kq_q6_block(const float *x, const float *qw, int weighted, uint8_t *out) {
    float X[128], QW[128], scales[16];
    int32_t T[128], L[256];
    for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 16; ++i)
            for (int g = 0; g < 8; ++g) {
                X[8 * i + g] = x[16 * (8 * h + g) + i];
                QW[8 * i + g] = weighted ? qw[16 * (8 * h + g) + i] : 0.f;
            }
        mcli_kq_qx8(X, QW, weighted, 16, 32, T, scales + 8 * h);
        for (int i = 0; i < 16; ++i)
            for (int g = 0; g < 8; ++g) L[16 * (8 * h + g) + i] = T[8 * i + g];
    }
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < MCLI_KQ_EPS) {
        memset(out, 0, 210);
        return;
    }
    float iscale = -128.f / max_scale;
    float d = mcli_kq_put_half(out + 208, 1 / iscale);
    int8_t *sc = (int8_t *)(out + 192);
    for (int ib = 0; ib < 16; ++ib) sc[ib] = (int8_t)mcli_kq_min(127, mcli_kq_nearest1(iscale * scales[ib]));
    for (int j = 0; j < 16; ++j) {
        float dj = d * sc[j];
        if (!dj) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = mcli_kq_max(-32, mcli_kq_min(31, mcli_kq_nearest1(x[16 * j + ii] / dj))) + 32;
    }
    uint8_t *ql = out, *qh = out + 128;
    for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF,
                          q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = q1 | (q3 << 4);
            ql[l + 32] = q2 | (q4 << 4);
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
    }
}

static int mcli_kq_available(void) { return mcli_simd_level() >= 2; }

#else
static int mcli_kq_available(void) { return 0; }
static void mcli_kq_q4_q5_block(const float *x, const float *qw, int weighted, int nmax, uint8_t *out) {}
static void mcli_kq_q6_block(const float *x, const float *qw, int weighted, uint8_t *out) {}
#endif /* MCLI_X86 */
#endif /* MCLI_KQUANT_H */
