"""Fused dequantize·dot over GGML blocks, and row dequantization for the BLAS prefill path.

Legend: T tokens, N output rows, K input features, RB bytes per row, R rows in a tile.
Every weight arrives twice, as the same bytes: `w` (N, RB) uint8 and `w16` (N, RB/2) uint16,
so the fp16 block scales can be read as one load and looked up in `lut` (65536,) float32,
the table of every fp16 value (as ggml's `ggml_table_f32_f16`). Block sizes are even, so a
scale at byte offset o of a row is w16[n, o // 2].

Block layouts (32 weights per block; bytes):
  Q4_0 (18): | d f16 | qs[16] |          w[j] = d * ((qs[j] & 15) - 8),  w[j+16] = d * ((qs[j] >> 4) - 8)
  Q4_1 (20): | d f16 | m f16 | qs[16] |  w[j] = d * (qs[j] & 15) + m,    w[j+16] = d * (qs[j] >> 4) + m
  Q8_0 (34): | d f16 | qs[32] int8 |     w[j] = d * qs[j]
"""

import numpy as np
from numba import njit, prange

Q4_0, Q4_1, Q8_0 = 2, 3, 8  # GGML type ids


@njit(nogil=True, fastmath=True, cache=True, inline="always")
def _block_dot(qtype, w, w16, n, b, x, t, lut):
    """Dot product of block b of row n with x[t, 32b:32b+32]."""
    xs = b * 32
    if qtype == Q4_1:
        o = b * 20
        d = lut[w16[n, o // 2]]
        m = lut[w16[n, o // 2 + 1]]
        acc = np.float32(0.0)
        xsum = np.float32(0.0)
        for j in range(16):
            q = w[n, o + 4 + j]
            x_lo = x[t, xs + j]
            x_hi = x[t, xs + 16 + j]
            acc += np.float32(q & 15) * x_lo + np.float32(q >> 4) * x_hi
            xsum += x_lo + x_hi
        return d * acc + m * xsum
    if qtype == Q4_0:
        o = b * 18
        d = lut[w16[n, o // 2]]
        acc = np.float32(0.0)
        for j in range(16):
            q = w[n, o + 2 + j]
            acc += np.float32(np.int32(q & 15) - 8) * x[t, xs + j] + np.float32(np.int32(q >> 4) - 8) * x[t, xs + 16 + j]
        return d * acc
    # Q8_0
    o = b * 34
    d = lut[w16[n, o // 2]]
    acc = np.float32(0.0)
    for j in range(32):
        q = np.int8(w[n, o + 2 + j])
        acc += np.float32(q) * x[t, xs + j]
    return d * acc


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def matmul_blocks(out, x, w, w16, lut, qtype):
    """out (T, N) = x (T, K) @ dequant(w) (N, K)^T, parallel over output rows."""
    num_tokens, num_rows = out.shape
    num_blocks = x.shape[1] // 32
    for n in prange(num_rows):
        for t in range(num_tokens):
            s = np.float32(0.0)
            for b in range(num_blocks):
                s += _block_dot(qtype, w, w16, n, b, x, t, lut)
            out[t, n] = s


@njit(nogil=True, fastmath=False, cache=True, parallel=True)
def dequantize_blocks(out, w, w16, lut, qtype, row_start):
    """out (R, K) = float32 rows [row_start, row_start + R) of w, exactly as gguf's reference."""
    num_rows, k = out.shape
    num_blocks = k // 32
    for r in prange(num_rows):
        n = row_start + r
        for b in range(num_blocks):
            xs = b * 32
            if qtype == Q4_1:
                o = b * 20
                d = lut[w16[n, o // 2]]
                m = lut[w16[n, o // 2 + 1]]
                for j in range(16):
                    q = w[n, o + 4 + j]
                    out[r, xs + j] = d * np.float32(q & 15) + m
                    out[r, xs + 16 + j] = d * np.float32(q >> 4) + m
            elif qtype == Q4_0:
                o = b * 18
                d = lut[w16[n, o // 2]]
                for j in range(16):
                    q = w[n, o + 2 + j]
                    out[r, xs + j] = d * np.float32(np.int32(q & 15) - 8)
                    out[r, xs + 16 + j] = d * np.float32(np.int32(q >> 4) - 8)
            else:
                o = b * 34
                d = lut[w16[n, o // 2]]
                for j in range(32):
                    out[r, xs + j] = d * np.float32(np.int8(w[n, o + 2 + j]))


def fp16_table() -> np.ndarray:
    """(65536,) float32: the value of every fp16 bit pattern."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
