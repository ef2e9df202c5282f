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

/* out (t, n) = x (t, k) @ w (n, k)^T; tiles of rows are split over num_threads threads. The tokens go to
 * sgemm `group` at a time (t a multiple of it; 0: all at once): a BLAS may sum a token's product in an
 * order that depends on its column in the call, and in calls of a group size it does not (see
 * mistralcli.ops.cpu.gemm_group), a token gets the same bits wherever it sits in a prompt chunk. */
static int mcli_matmul_gemm(mcli_sgemm_fn sgemm, int qtype, const uint8_t *w, int64_t row_bytes, int64_t n,
                            int64_t k, const float *x, int64_t t, float *out, int num_threads, int64_t group) {
    if (group <= 0 || group > t) group = t;
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
            int rows = (int)(n - r0 < tile ? n - r0 : tile), tokens = (int)group, kk = (int)k, ldc = (int)n;
            char ta = 'T', tb = 'N';
            float one = 1.0f, zero = 0.0f;
            mcli_rows_f32(qtype, w, row_bytes, r0, rows, k, buf);
            for (int64_t t0 = 0; t0 < t; t0 += group)
                sgemm(&ta, &tb, &rows, &tokens, &kk, &one, buf, &kk, (float *)(x + t0 * k), &kk, &zero,
                      out + t0 * n + r0, &ldc);
        }
        free(buf);
    }
    return failed ? -1 : 0;
}

#endif
