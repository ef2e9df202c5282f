# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Quantized matrix products over GGML blocks with int16 activations (C kernels in kernels/qdot.h).

Legend: T tokens, K input features, N output rows, RB bytes per weight row.
"""

from cython.parallel cimport parallel, prange
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t

import numpy as np

cdef extern from "kernels/qdot.h" nogil:
    ctypedef float (*mcli_dot_fn)(const uint8_t *row, const int16_t *xq, const float *xscale,
                                  const float *xsum, int64_t nb)
    ctypedef void (*mcli_dot_multi_fn)(const uint8_t *row, const int16_t *xq, const float *xscale,
                                       const float *xsum, int64_t nb, int num_tokens, float *out,
                                       int64_t out_stride)
    mcli_dot_multi_fn mcli_select_multi(int qtype, int level)
    ctypedef float (*mcli_fdot_fn)(const uint8_t *row, const float *x, int64_t k)
    mcli_fdot_fn mcli_select_float(int qtype, int level)
    void mcli_quantize_x16(const float *x, int64_t k, int16_t *xq, float *xscale, float *xsum)
    void mcli_quantize_x16_portable(const float *x, int64_t k, int16_t *xq, float *xscale, float *xsum)
    int mcli_simd_level()
    void mcli_dequant_row(int qtype, const uint8_t *row, float *out, int64_t k)
    mcli_dot_fn mcli_select(int qtype, int level)

cdef extern from "kernels/qrows.h" nogil:
    ctypedef struct mcli_acts:
        const int16_t *xq
        const float *xs
        const float *xm
        const int32_t *xt
        const float *xst
        const float *xmt
        int64_t k
        int num_tokens
    ctypedef void (*mcli_rows_fn)(const uint8_t *w, int64_t row_bytes, int64_t nrows, const mcli_acts *a,
                                  float *out, int64_t out_stride)
    mcli_rows_fn mcli_select_rows(int qtype, int level)
    void mcli_rows_ref(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, const mcli_acts *a, float *out,
                       int64_t out_stride)
    void mcli_lanes_put(const int16_t *xq, const float *xs, const float *xm, int64_t k, int64_t t, int32_t *xt,
                        float *xst, float *xmt)
    int MCLI_LANES_MIN

include "blas.pxi"

cdef extern from "kernels/gemm.h" nogil:
    int mcli_matmul_gemm(mcli_sgemm_fn sgemm, int qtype, const uint8_t *w, int64_t row_bytes, int64_t n,
                         int64_t k, const float *x, int64_t t, float *out, int num_threads, int64_t group)

SIMD_LEVEL = mcli_simd_level()
# GGML types with C products (and dequantization): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K
SUPPORTED_TYPES = (2, 3, 6, 7, 8, 12, 13, 14)
# and dequantization only: Q2_K, Q3_K, Q8_K, IQ4_NL, IQ4_XS
DEQUANT_TYPES = SUPPORTED_TYPES + (10, 11, 15, 20, 23)
# Float weights with C products (float activations): F32, F16, BF16, given as raw bytes
FLOAT_TYPES = (0, 1, 30)


def simd_name():
    return {0: "portable", 2: "avx2", 3: "avx512-vnni"}.get(SIMD_LEVEL, "portable")


def quantize_x16(const float[:, ::1] x, bint portable=False):
    """x (T, K) -> (xq (T, K) int16, xscale (T, K/32), xsum (T, K/32)); portable: the plain C loop that
    the vector code matches bit for bit."""
    cdef Py_ssize_t t, num_tokens = x.shape[0], k = x.shape[1]
    xq = np.empty((num_tokens, k), dtype=np.int16)
    xscale = np.empty((num_tokens, k // 32), dtype=np.float32)
    xsum = np.empty((num_tokens, k // 32), dtype=np.float32)
    cdef int16_t[:, ::1] q = xq
    cdef float[:, ::1] s = xscale, m = xsum
    with nogil:
        for t in range(num_tokens):
            if portable:
                mcli_quantize_x16_portable(&x[t, 0], k, &q[t, 0], &s[t, 0], &m[t, 0])
            else:
                mcli_quantize_x16(&x[t, 0], k, &q[t, 0], &s[t, 0], &m[t, 0])
    return xq, xscale, xsum


def has_row_kernels(int qtype):
    """Whether this CPU multiplies qtype through kernels/qrows.h (batch-invariant by construction)."""
    return mcli_select_rows(qtype, SIMD_LEVEL) != NULL


def matmul_rows_reference(float[:, ::1] out, const float[:, ::1] x, const uint8_t[:, ::1] w, int qtype):
    """out (T, N): the portable statement of qrows.h's arithmetic (Q4_0, Q4_1, Q8_0), which its SIMD kernels
    equal bit for bit."""
    if qtype not in (2, 3, 8):
        raise ValueError(f"GGML type {qtype} has no row kernel")
    xq_arr, xs_arr, xm_arr = quantize_x16(x)
    cdef int16_t[:, ::1] xq = xq_arr
    cdef float[:, ::1] xs = xs_arr, xm = xm_arr
    cdef mcli_acts a
    a.xq = &xq[0, 0]
    a.xs = &xs[0, 0]
    a.xm = &xm[0, 0]
    a.xt = NULL
    a.xst = NULL
    a.xmt = NULL
    a.k = x.shape[1]
    a.num_tokens = <int>x.shape[0]
    with nogil:
        mcli_rows_ref(qtype, &w[0, 0], w.shape[1], w.shape[0], &a, &out[0, 0], out.shape[1])


def matmul(float[:, ::1] out, const float[:, ::1] x, const uint8_t[:, ::1] w, int qtype, int num_threads=0,
           int simd_level=-1):
    """out (T, N) = x (T, K) @ dequant(w (N, RB))^T, parallel over rows; simd_level -1 = best."""
    cdef int level = SIMD_LEVEL if simd_level < 0 else simd_level
    cdef mcli_dot_fn dot = mcli_select(qtype, level)
    cdef mcli_dot_multi_fn multi = mcli_select_multi(qtype, level)
    if dot == NULL:
        raise ValueError(f"GGML type {qtype} has no fused kernel")
    cdef Py_ssize_t num_tokens = x.shape[0], k = x.shape[1], num_rows = w.shape[0], n, t
    cdef int64_t nb = k // 32
    if k % 32 or out.shape[0] != num_tokens or out.shape[1] != num_rows:
        raise ValueError("shape mismatch")
    xq_arr, xs_arr, xm_arr = quantize_x16(x)
    cdef int16_t[:, ::1] xq = xq_arr
    cdef float[:, ::1] xs = xs_arr, xm = xm_arr
    if num_threads <= 0:
        num_threads = 1
    cdef mcli_rows_fn rows_fn = mcli_select_rows(qtype, level)
    if rows_fn != NULL:
        _matmul_rows(rows_fn, out, w, xq, xs, xm, num_threads)
        return
    for n in prange(num_rows, nogil=True, schedule="static", num_threads=num_threads):
        if multi != NULL and num_tokens > 1:
            multi(&w[n, 0], &xq[0, 0], &xs[0, 0], &xm[0, 0], nb, <int>num_tokens, &out[0, n], num_rows)
        else:
            for t in range(num_tokens):
                out[t, n] = dot(&w[n, 0], &xq[t, 0], &xs[t, 0], &xm[t, 0], nb)


cdef _matmul_rows(mcli_rows_fn rows_fn, float[:, ::1] out, const uint8_t[:, ::1] w, const int16_t[:, ::1] xq,
                  const float[:, ::1] xs, const float[:, ::1] xm, int num_threads):
    """qrows.h's kernels: units of 16 rows, the tokens in lanes when there are enough of them."""
    cdef Py_ssize_t num_tokens = xq.shape[0], k = xq.shape[1], num_rows = w.shape[0], u, t, r0
    cdef int64_t nb = k // 32, groups = (num_tokens + 15) // 16
    xt_arr = np.zeros(groups * nb * 256, np.int32)
    xst_arr = np.zeros(groups * nb * 16, np.float32)
    xmt_arr = np.zeros(groups * nb * 16, np.float32)
    cdef int32_t[::1] xt = xt_arr
    cdef float[::1] xst = xst_arr, xmt = xmt_arr
    cdef mcli_acts a
    a.xq = &xq[0, 0]
    a.xs = &xs[0, 0]
    a.xm = &xm[0, 0]
    a.xt = NULL
    a.xst = &xst[0]
    a.xmt = &xmt[0]
    a.k = k
    a.num_tokens = <int>num_tokens
    if num_tokens >= MCLI_LANES_MIN:
        with nogil:
            for t in range(num_tokens):
                mcli_lanes_put(&xq[t, 0], &xs[t, 0], &xm[t, 0], k, t, &xt[0], &xst[0], &xmt[0])
        a.xt = &xt[0]
    for u in prange((num_rows + 15) // 16, nogil=True, schedule="static", num_threads=num_threads):
        r0 = 16 * u
        rows_fn(&w[r0, 0], w.shape[1], min(16, num_rows - r0), &a, &out[0, r0], num_rows)


def dequantize(float[:, ::1] out, const uint8_t[:, ::1] w, int qtype, Py_ssize_t row_start, int num_threads=1):
    """out (R, K) = rows [row_start, row_start + R) of w as float32, bit-exact with gguf's reference."""
    if qtype not in DEQUANT_TYPES:
        raise ValueError(f"GGML type {qtype} has no C dequantizer")
    cdef Py_ssize_t r, num_rows = out.shape[0]
    cdef int64_t k = out.shape[1]
    if row_start < 0 or row_start + num_rows > w.shape[0]:
        raise ValueError("rows out of range")
    for r in prange(num_rows, nogil=True, schedule="static", num_threads=max(1, num_threads)):
        mcli_dequant_row(qtype, &w[row_start + r, 0], &out[r, 0], k)


def matmul_float(float[:, ::1] out, const float[:, ::1] x, const uint8_t[:, ::1] w, int qtype, int num_threads=1,
                 int simd_level=-1):
    """out (T, N) = x (T, K) @ w^T for float weights (F32/F16/BF16 rows as raw bytes), parallel over rows."""
    cdef mcli_fdot_fn fdot = mcli_select_float(qtype, SIMD_LEVEL if simd_level < 0 else simd_level)
    if fdot == NULL:
        raise ValueError(f"GGML type {qtype} is not a float type")
    cdef Py_ssize_t num_tokens = x.shape[0], k = x.shape[1], num_rows = w.shape[0], n, t
    if out.shape[0] != num_tokens or out.shape[1] != num_rows:
        raise ValueError("shape mismatch")
    for n in prange(num_rows, nogil=True, schedule="static", num_threads=max(1, num_threads)):
        for t in range(num_tokens):
            out[t, n] = fdot(&w[n, 0], &x[t, 0], k)



def matmul_gemm(
    float[:, ::1] out, const float[:, ::1] x, const uint8_t[:, ::1] w, int qtype, int num_threads=1, int group=0
):
    """out (T, N) = x (T, K) @ w^T by float32 GEMM on dequantized tiles of w (any type of DEQUANT_TYPES or
    FLOAT_TYPES); the compute-bound prefill path (kernels/gemm.h). group: tokens per sgemm call (T a multiple
    of it; 0: all in one call)."""
    if group > 0 and x.shape[0] % group:
        raise ValueError(f"{x.shape[0]} tokens are not a multiple of the group {group}")
    if qtype not in DEQUANT_TYPES and qtype not in FLOAT_TYPES:
        raise ValueError(f"GGML type {qtype} has no C dequantizer")
    cdef mcli_sgemm_fn sgemm = blas_sgemm()
    cdef Py_ssize_t num_tokens = x.shape[0], k = x.shape[1], num_rows = w.shape[0]
    if out.shape[0] != num_tokens or out.shape[1] != num_rows:
        raise ValueError("shape mismatch")
    if num_tokens == 0 or num_rows == 0:
        return
    cdef int failed
    with nogil:
        failed = mcli_matmul_gemm(sgemm, qtype, &w[0, 0], w.shape[1], num_rows, k, &x[0, 0], num_tokens,
                                  &out[0, 0], max(1, num_threads), group)
    if failed:
        raise MemoryError("no memory for the GEMM tile buffers")


cdef extern from "kernels/qtiles.h" nogil:
    ctypedef struct mcli_tile_acts:
        const int16_t *xq
        const float *xs
        const float *xm
        int64_t k, xq_stride, xs_stride
        int num_tokens
    ctypedef void (*mcli_tile_fn)(const uint8_t *tiles, int nrows, const int16_t *xq, int64_t xq_stride,
                                  const float *xs, const float *xm, int64_t xs_stride, int64_t nb, float *out,
                                  int64_t out_stride)
    int64_t mcli_tiles_bytes(int qtype, int64_t nrows, int64_t k)
    void mcli_tiles_pack(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, int64_t k, uint8_t *out)
    const mcli_tile_fn *mcli_tile_kernels(int qtype, int level)
    void mcli_tile_ref(int qtype, const uint8_t *tiles, int64_t nrows, const mcli_tile_acts *a, float *out,
                       int64_t out_stride)
    void mcli_tiles_matmul(const mcli_tile_fn *fns, int qtype, const uint8_t *tiles, int64_t n,
                           const mcli_tile_acts *a, float *out, int64_t out_stride)

# GGML types with a tile layout (kernels/qtiles.h): Q4_0, Q4_1, Q8_0
TILE_TYPES = (2, 3, 8)


def has_tile_kernels(int qtype, int simd_level=-1):
    """Whether this CPU multiplies qtype's repacked weights through kernels/qtiles.h."""
    return mcli_tile_kernels(qtype, SIMD_LEVEL if simd_level < 0 else simd_level) != NULL


def tiles_pack(const uint8_t[:, ::1] w, int qtype, Py_ssize_t k):
    """The rows of w (N, row bytes) in the tile layout of kernels/qtiles.h: a uint8 array of the same bytes as w
    (N rounded up to 16), packed on the calling thread (see mcli_tiles_pack)."""
    if qtype not in TILE_TYPES:
        raise ValueError(f"GGML type {qtype} has no tile layout")
    if k % 32 or w.shape[1] * 32 != k * {2: 18, 3: 20, 8: 34}[qtype]:
        raise ValueError("row bytes do not match k")
    out = np.empty(mcli_tiles_bytes(qtype, w.shape[0], k), dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        mcli_tiles_pack(qtype, &w[0, 0], w.shape[1], w.shape[0], k, &o[0])
    return out


cdef _tile_acts(mcli_tile_acts *a, const int16_t[:, ::1] xq, const float[:, ::1] xs, const float[:, ::1] xm):
    a.xq = &xq[0, 0]
    a.xs = &xs[0, 0]
    a.xm = &xm[0, 0]
    a.k = xq.shape[1]
    a.xq_stride = xq.shape[1]
    a.xs_stride = xs.shape[1]
    a.num_tokens = <int>xq.shape[0]


def matmul_tiles(float[:, ::1] out, const float[:, ::1] x, const uint8_t[::1] tiles, int qtype, int num_threads=1,
                 bint reference=False, int simd_level=-1):
    """out (T, N) = x (T, K) @ the N rows packed by tiles_pack; reference: the portable statement of the tile
    kernels (which equal it, and qrows.h's kernels, bit for bit)."""
    if x.shape[1] % 32:
        raise ValueError("shape mismatch")
    xq_arr, xs_arr, xm_arr = quantize_x16(x)
    matmul_tiles_quantized(out, xq_arr, xs_arr, xm_arr, tiles, qtype, num_threads, reference, simd_level)


def matmul_tiles_quantized(float[:, ::1] out, const int16_t[:, ::1] xq, const float[:, ::1] xs,
                           const float[:, ::1] xm, const uint8_t[::1] tiles, int qtype, int num_threads=1,
                           bint reference=False, int simd_level=-1):
    """matmul_tiles on activations already quantized by quantize_x16 (several products of one input share
    them)."""
    cdef Py_ssize_t num_tokens = xq.shape[0], k = xq.shape[1], n = out.shape[1]
    if (out.shape[0] != num_tokens or k % 32 or xs.shape[0] != num_tokens or xs.shape[1] != k // 32
            or xm.shape[0] != num_tokens or xm.shape[1] != k // 32 or tiles.shape[0] != mcli_tiles_bytes(qtype, n, k)):
        raise ValueError("shape mismatch")
    cdef const mcli_tile_fn *fns = mcli_tile_kernels(qtype, SIMD_LEVEL if simd_level < 0 else simd_level)
    if fns == NULL and not reference:
        raise ValueError(f"no tile kernels for GGML type {qtype} on this CPU")
    if num_tokens == 0:
        return
    cdef mcli_tile_acts a
    _tile_acts(&a, xq, xs, xm)
    with nogil:
        if reference:
            mcli_tile_ref(qtype, &tiles[0], n, &a, &out[0, 0], out.shape[1])
        else:
            with parallel(num_threads=max(1, num_threads)):
                mcli_tiles_matmul(fns, qtype, &tiles[0], n, &a, &out[0, 0], out.shape[1])


cdef extern from "kernels/ftiles.h" nogil:
    ctypedef void (*mcli_ftile_fn)(const uint8_t *group, int nrows, const float *x, int64_t x_stride, int64_t k,
                                   float *out, int64_t out_stride)
    int64_t mcli_ftiles_bytes(int qtype, int64_t nrows, int64_t k)
    int mcli_ftile_elem_bytes(int qtype)
    void mcli_ftiles_pack(int qtype, const uint8_t *w, int64_t row_bytes, int64_t nrows, int64_t k, uint8_t *out)
    const mcli_ftile_fn *mcli_ftile_kernels(int qtype, int level)
    void mcli_ftile_ref(int qtype, const uint8_t *tiles, int64_t nrows, const float *x, int64_t x_stride,
                        int num_tokens, int64_t k, float *out, int64_t out_stride)
    void mcli_ftiles_matmul(const mcli_ftile_fn *fns, int qtype, const uint8_t *tiles, int64_t n, const float *x,
                            int num_tokens, int64_t k, float *out)


def has_float_tile_kernels(int qtype, int simd_level=-1):
    """Whether this CPU multiplies qtype's (F32/F16/BF16) repacked rows through kernels/ftiles.h."""
    return mcli_ftile_kernels(qtype, SIMD_LEVEL if simd_level < 0 else simd_level) != NULL


def ftiles_pack(const uint8_t[:, ::1] w, int qtype, Py_ssize_t k):
    """Float rows w (N, row bytes) in the tile layout of kernels/ftiles.h (the same bytes, N rounded up to 16)."""
    if qtype not in FLOAT_TYPES:
        raise ValueError(f"GGML type {qtype} is not a float type")
    if w.shape[1] != k * mcli_ftile_elem_bytes(qtype):
        raise ValueError("row bytes do not match k")
    out = np.empty(mcli_ftiles_bytes(qtype, w.shape[0], k), dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        mcli_ftiles_pack(qtype, &w[0, 0], w.shape[1], w.shape[0], k, &o[0])
    return out


def matmul_ftiles(float[:, ::1] out, const float[:, ::1] x, const uint8_t[::1] tiles, int qtype, int num_threads=1,
                  bint reference=False):
    """out (T, N) = x (T, K) @ the N float rows packed by ftiles_pack; reference: the portable statement,
    which the kernels equal bit for bit."""
    cdef Py_ssize_t num_tokens = x.shape[0], k = x.shape[1], n = out.shape[1]
    if out.shape[0] != num_tokens or tiles.shape[0] != mcli_ftiles_bytes(qtype, n, k):
        raise ValueError("shape mismatch")
    cdef const mcli_ftile_fn *fns = mcli_ftile_kernels(qtype, SIMD_LEVEL)
    if fns == NULL and not reference:
        raise ValueError(f"no float tile kernels for GGML type {qtype} on this CPU")
    if num_tokens == 0:
        return
    with nogil:
        if reference:
            mcli_ftile_ref(qtype, &tiles[0], n, &x[0, 0], k, <int>num_tokens, k, &out[0, 0], n)
        else:
            with parallel(num_threads=max(1, num_threads)):
                mcli_ftiles_matmul(fns, qtype, &tiles[0], n, &x[0, 0], <int>num_tokens, k, &out[0, 0])
