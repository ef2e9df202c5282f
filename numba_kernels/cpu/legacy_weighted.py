"""Q4_0, Q4_1, Q5_0 and Q5_1 with an importance matrix, in Numba: llama.cpp's quantize_row_q*_impl, on the
searches of the K types (searches.py), bit-exact with llama.cpp and the NumPy reference (tests/test_kquants.py).
Without an importance matrix these types go through the C of _ext/kernels/legacy_quant.h."""

import numpy as np
from numba import njit, prange

from mistralcli.numba_kernels.cpu.searches import (
    importance_weights,
    put_half,
    qkx,
    qx,
    sum_squares,
)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def legacy_weighted(x, qw, qtype, out):
    """Q4_0 (type 2), Q4_1 (3), Q5_0 (6), Q5_1 (7) with an importance matrix, as llama.cpp's
    quantize_row_q*_impl: x (rows, n) whole rows (the weights' sigma2 is the row's mean square), qw (n // 32, 32),
    out (rows * n // 32, block bytes). The types with a minimum search as Q4_K's weighted path, the others as
    Q6_K's; without an importance matrix these types go through _ext/kernels/legacy_quant.h."""
    rows, n = x.shape
    per_row = n // 32
    nmax = 8 if qtype == 2 else 15 if qtype == 3 else 16 if qtype == 6 else 31
    with_min = qtype == 3 or qtype == 7
    five = qtype == 6 or qtype == 7
    for r in prange(rows):
        L, Laux, last = np.empty(32, np.int32), np.empty(32, np.int32), np.empty(32, np.int32)
        w = np.empty(32, np.float32)
        xr = x[r]
        sigma2 = sum_squares(xr) / np.float32(n)
        for ib in range(per_row):
            b = r * per_row + ib
            xb, qb = xr[32 * ib : 32 * ib + 32], qw[ib]
            importance_weights(xb, qb, sigma2, w)  # (their sum is not used here)
            at = 2
            if with_min:
                d, the_min = qkx(xb, w, L, Laux, nmax, np.float32(-0.9), np.float32(0.05), 36, False)
                put_half(out, b, 0, d)
                put_half(out, b, 2, -the_min)
                at = 4
            else:
                d = qx(xb, L, nmax, w, True, last)
                put_half(out, b, 0, d)
            if five:
                high = np.uint32(0)
                for j in range(16):
                    lo, hi = L[j], L[j + 16]
                    out[b, at + 4 + j] = np.uint8((lo & 0x0F) | ((hi & 0x0F) << 4))
                    high |= (np.uint32((lo >> 4) & 1) << np.uint32(j)) | (np.uint32((hi >> 4) & 1) << np.uint32(j + 16))
                for k in range(4):
                    out[b, at + k] = np.uint8((high >> np.uint32(8 * k)) & np.uint32(0xFF))
            else:
                for j in range(16):
                    out[b, at + j] = np.uint8(L[j] | (L[j + 16] << 4))
