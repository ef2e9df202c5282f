"""Quantizers of the legacy GGML block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: 32 weights a block) and BF16, in
Numba, parallel over blocks. Their reference is the `gguf` package's NumPy quantizers (gguf.quants), which are
bit-exact with ggml's own: these kernels compute the same float32 operations in the same order (no fastmath,
every constant a float32), so their bytes are the same, bit for bit (tests/test_quantize.py).

Each block kernel takes x (n_blocks, 32) float32 and writes each block's scale (and minimum) as float32 into
d (and m), and its packed quants into qs (n_blocks, 16) or, for Q8_0, (n_blocks, 32) int8; the 5-bit types'
high bits into qh (n_blocks,) uint32. The scales become float16 in NumPy (mistralcli.quantize.blocks), which
rounds them as gguf does."""

import numpy as np
from numba import njit, prange

_F0 = np.float32(0.0)
_HALF = np.float32(0.5)


@njit(nogil=True, cache=True, inline="always")
def _signed_max(x, b):
    """The element of block b with the largest magnitude, the first of equals (numpy's argmax of abs)."""
    best = x[b, 0]
    best_abs = abs(best)
    for i in range(1, x.shape[1]):
        a = abs(x[b, i])
        if a > best_abs:
            best, best_abs = x[b, i], a
    return best


@njit(nogil=True, cache=True, inline="always")
def _min_max(x, b):
    lo, hi = x[b, 0], x[b, 0]
    for i in range(1, x.shape[1]):
        lo = min(lo, x[b, i])
        hi = max(hi, x[b, i])
    return lo, hi


@njit(nogil=True, cache=True, inline="always")
def _put5(qs, b, j, lo, hi):
    """Two 5-bit quants, of positions j and j + 16: their low nibbles into qs[b, j]; their high bits as they
    stand in the block's qh."""
    qs[b, j] = np.uint8((lo & 0x0F) | ((hi & 0x0F) << 4))
    return (np.uint32((lo >> 4) & 1) << np.uint32(j)) | (np.uint32((hi >> 4) & 1) << np.uint32(j + 16))


@njit(nogil=True, cache=True, inline="always")
def _inverse(d):
    return _F0 if d == _F0 else np.float32(1.0) / d


@njit(nogil=True, cache=True, parallel=True)
def q4_0_blocks(x, d, qs):
    n = x.shape[0]
    for b in prange(n):
        scale = _signed_max(x, b) / np.float32(-8.0)
        inv = _inverse(scale)
        d[b] = scale
        for j in range(16):
            lo = min(np.int32(np.trunc(x[b, j] * inv + np.float32(8.5))), 15)
            hi = min(np.int32(np.trunc(x[b, j + 16] * inv + np.float32(8.5))), 15)
            qs[b, j] = np.uint8(max(lo, 0) | (max(hi, 0) << 4))


@njit(nogil=True, cache=True, parallel=True)
def q4_1_blocks(x, d, m, qs):
    n = x.shape[0]
    for b in prange(n):
        lo_v, hi_v = _min_max(x, b)
        scale = (hi_v - lo_v) / np.float32(15.0)
        inv = _inverse(scale)
        d[b], m[b] = scale, lo_v
        for j in range(16):
            lo = min(np.int32(np.trunc((x[b, j] - lo_v) * inv + _HALF)), 15)
            hi = min(np.int32(np.trunc((x[b, j + 16] - lo_v) * inv + _HALF)), 15)
            qs[b, j] = np.uint8(max(lo, 0) | (max(hi, 0) << 4))


@njit(nogil=True, cache=True, parallel=True)
def q5_0_blocks(x, d, qh, qs):
    n = x.shape[0]
    for b in prange(n):
        scale = _signed_max(x, b) / np.float32(-16.0)
        inv = _inverse(scale)
        d[b] = scale
        high = np.uint32(0)
        for j in range(16):
            lo = max(min(np.int32(np.trunc(x[b, j] * inv + np.float32(16.5))), 31), 0)
            hi = max(min(np.int32(np.trunc(x[b, j + 16] * inv + np.float32(16.5))), 31), 0)
            high |= _put5(qs, b, j, lo, hi)
        qh[b] = high


@njit(nogil=True, cache=True, parallel=True)
def q5_1_blocks(x, d, m, qh, qs):
    n = x.shape[0]
    for b in prange(n):
        lo_v, hi_v = _min_max(x, b)
        scale = (hi_v - lo_v) / np.float32(31.0)
        inv = _inverse(scale)
        d[b], m[b] = scale, lo_v
        high = np.uint32(0)
        for j in range(16):
            lo = max(min(np.int32(np.trunc((x[b, j] - lo_v) * inv + _HALF)), 31), 0)
            hi = max(min(np.int32(np.trunc((x[b, j + 16] - lo_v) * inv + _HALF)), 31), 0)
            high |= _put5(qs, b, j, lo, hi)
        qh[b] = high


@njit(nogil=True, cache=True, inline="always")
def _round_away(v):
    """gguf's np_roundf: half away from zero, in float32 as it computes it."""
    a = abs(v)
    floored = np.floor(a)
    r = floored + np.floor(np.float32(2.0) * (a - floored))
    return -r if v < _F0 else (r if v > _F0 else _F0)


@njit(nogil=True, cache=True, parallel=True)
def q8_0_blocks(x, d, qs):
    n = x.shape[0]
    for b in prange(n):
        amax = _F0
        for i in range(32):
            amax = max(amax, abs(x[b, i]))
        scale = amax / np.float32(127.0)
        inv = _inverse(scale)
        d[b] = scale
        for i in range(32):
            qs[b, i] = np.int8(_round_away(x[b, i] * inv))


@njit(nogil=True, cache=True, parallel=True)
def bf16(bits, out):
    """float32 bits to bfloat16 bits: NaN made quiet, the rest rounded to nearest even (ggml_compute_fp32_to_bf16)."""
    for i in prange(bits.shape[0]):
        n = bits[i]
        if (n & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            n = (n & np.uint32(0xFFFF0000)) | np.uint32(64 << 16)
        out[i] = np.uint16((np.uint64(n) + np.uint64(0x7FFF) + np.uint64((n >> np.uint32(16)) & np.uint32(1))) >> 16)
