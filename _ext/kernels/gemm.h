/* Prefill products through a float32 GEMM: tiles of weight rows are dequantized (bit-exact, see
 * dequant.h) into a per-thread buffer that stays in L2, then multiplied with every token by the
 * BLAS sgemm that scipy exports (scipy.linalg.cython_blas; the caller passes its pointer).
 *
 * Prefill is compute-bound: on SmolLM2, 512 tokens, this runs at 1.9-2.8x the int16 block
 * products of qdot.h (OpenBLAS's packed, register-blocked kernels with AVX-512 or AVX2 FMA), and
 * its float32 arithmetic is the float model's. Decode stays with qdot.h, which reads each weight
 * once for 1-4 tokens and is memory-bound.
 *
 * BLAS is Fortran-ordered: with row-major x (T, K), w (N, K) and out (T, N), the call computes the
 * column-major (rows, T) block out^T[r0:r0+rows, :] = w[r0:r0+rows, :] x^T, ldc = N.
 */
#ifndef MCLI_GEMM_H
#define MCLI_GEMM_H

#include "attention.h"
#include "dequant.h"

#ifdef _OPENMP
#include <omp.h>
#endif

typedef void (*mcli_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, float *alpha, float *a,
                              int *lda, float *b, int *ldb, float *beta, float *c, int *ldc);


/* rows [r0, r0 + rows) of w (row_bytes each) as float32 (rows, k) */
static void mcli_rows_f32(int qtype, const uint8_t *w, int64_t row_bytes, int64_t r0, int64_t rows, int64_t k,
                          float *out) {
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = w + (r0 + r) * row_bytes;
        float *o = out + r * k;
        switch (qtype) {
        case MCLI_F32: memcpy(o, row, (size_t)k * 4); break;
        case MCLI_F16: for (int64_t i = 0; i < k; i++) o[i] = mcli_fp16(row + 2 * i); break;
        case MCLI_BF16:
            for (int64_t i = 0; i < k; i++) {
                uint32_t bits = (uint32_t)(row[2 * i] | (row[2 * i + 1] << 8)) << 16;
                memcpy(o + i, &bits, 4);
            }
            break;
        default: mcli_dequant_row(qtype, row, o, k);
        }
    }
}

/* Weight rows per tile: the tiles split evenly over the threads, each at most about 1 MiB of
 * float32 (it stays in L2 while sgemm streams the tokens past it), a multiple of 16 rows. */
static inline int64_t mcli_gemm_tile_rows(int64_t n, int64_t k, int num_threads) {
    const int64_t budget = 1024 * 1024 / 4, per_thread = (n + num_threads - 1) / num_threads;
    const int64_t rounds = (per_thread * k + budget - 1) / budget;
    int64_t rows = (per_thread + rounds - 1) / rounds;
    rows = (rows + 15) / 16 * 16;
    return rows < n ? rows : n;
}

/* out (t, n) = x (t, k) @ w (n, k)^T; tiles of rows are split over num_threads threads. */
static int mcli_matmul_gemm(mcli_sgemm_fn sgemm, int qtype, const uint8_t *w, int64_t row_bytes, int64_t n,
                            int64_t k, const float *x, int64_t t, float *out, int num_threads) {
    const int64_t tile = mcli_gemm_tile_rows(n, k, num_threads), num_tiles = (n + tile - 1) / tile;
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *buf = (float *)malloc((size_t)(tile * k) * sizeof(float));
        if (buf == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < num_tiles; i++) {
            if (buf == NULL) continue;
            const int64_t r0 = i * tile;
            int rows = (int)(n - r0 < tile ? n - r0 : tile), tokens = (int)t, kk = (int)k, ldc = (int)n;
            char ta = 'T', tb = 'N';
            float one = 1.0f, zero = 0.0f;
            mcli_rows_f32(qtype, w, row_bytes, r0, rows, k, buf);
            sgemm(&ta, &tb, &rows, &tokens, &kk, &one, buf, &kk, (float *)x, &kk, &zero, out + r0, &ldc);
        }
        free(buf);
    }
    return failed ? -1 : 0;
}

/* ---- causal attention for many queries: two GEMMs per (head, block of queries) ------------------
 * q (T, H, D), k/v (S, Hkv, D), out (T, H, D) float32; a query at position p sees the keys at
 * positions <= p. A block of MCLI_ATTN_QBLOCK queries only multiplies the keys up to the last one
 * any of them can see (keys are stored by position, so in prefill the work is about halved). */
#define MCLI_ATTN_QBLOCK 64

/* p[0..n) = softmax(p[0..n)) where keys with k_pos > limit count as -inf */
static void mcli_masked_softmax(float *p, const int64_t *k_pos, int64_t limit, int64_t n, int level) {
    float best = -INFINITY;
    for (int64_t s = 0; s < n; s++) {
        if (k_pos[s] > limit) p[s] = -INFINITY;
        best = p[s] > best ? p[s] : best;
    }
    float total = 0.0f;
    int64_t s = 0;
#ifdef MCLI_X86
    if (level >= 2) s = mcli_exp_shift8(p, n, best, &total);
#else
    (void)level;
#endif
    for (; s < n; s++) {
        p[s] = p[s] == -INFINITY ? 0.0f : expf(p[s] - best);
        total += p[s];
    }
    const float inv = 1.0f / total;
    for (s = 0; s < n; s++) p[s] *= inv;
}

static int mcli_attention_gemm(mcli_sgemm_fn sgemm, const float *q, const float *k, const float *v,
                               const int64_t *q_pos, const int64_t *k_pos, int64_t t, int64_t s, int h,
                               int hkv, int d, float scale, float *out, int num_threads, int level) {
    const int group = h / hkv;
    const int64_t num_blocks = (t + MCLI_ATTN_QBLOCK - 1) / MCLI_ATTN_QBLOCK;
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *scores = (float *)malloc((size_t)(MCLI_ATTN_QBLOCK * (s > 0 ? s : 1)) * sizeof(float));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < num_blocks * h; job++) {
            if (scores == NULL) continue;
            const int head = (int)(job % h);
            const int64_t t0 = (job / h) * MCLI_ATTN_QBLOCK, tn = t - t0 < MCLI_ATTN_QBLOCK ? t - t0 : MCLI_ATTN_QBLOCK;
            int64_t limit = q_pos[t0];
            for (int64_t i = 1; i < tn; i++) limit = q_pos[t0 + i] > limit ? q_pos[t0 + i] : limit;
            int64_t keys = s;
            while (keys > 0 && k_pos[keys - 1] > limit) keys--;
            const float *qh = q + (t0 * h + head) * d;
            const float *kh = k + (int64_t)(head / group) * d, *vh = v + (int64_t)(head / group) * d;
            float *oh = out + (t0 * h + head) * d;
            if (keys == 0) { /* nothing visible: zeros, as the reference's empty softmax */
                for (int64_t i = 0; i < tn; i++) memset(oh + i * h * d, 0, (size_t)d * sizeof(float));
                continue;
            }
            int m = (int)keys, n = (int)tn, kd = d, ldq = h * d, ldk = hkv * d, ldp = (int)keys;
            char ta = 'T', tn_ = 'N';
            float zero = 0.0f, one = 1.0f, sc = scale;
            /* scores^T (keys, tn) col-major = K_h Q_h^T * scale: row i of `scores` is query t0 + i */
            sgemm(&ta, &tn_, &m, &n, &kd, &sc, (float *)kh, &ldk, (float *)qh, &ldq, &zero, scores, &ldp);
            for (int64_t i = 0; i < tn; i++) mcli_masked_softmax(scores + i * keys, k_pos, q_pos[t0 + i], keys, level);
            /* out_h^T (d, tn) col-major = V_h^T P^T */
            sgemm(&tn_, &tn_, &kd, &n, &m, &one, (float *)vh, &ldk, scores, &ldp, &zero, oh, &ldq);
        }
        free(scores);
    }
    return failed ? -1 : 0;
}

#endif
