"""NumPy reference of the K-type quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256 weights a super-block), of
IQ4_NL and IQ4_XS, and of the legacy Q4_0, Q4_1, Q5_0 and Q5_1 with an importance matrix: the algorithms of
llama.cpp's ggml-quants.c that `llama-quantize` runs (without an importance matrix the quantize_row_*_ref
searches, and for IQ4 the search with 7 tries; with one the weighted quantize_row_*_impl searches), vectorized
over blocks. Every value is a float32 computed in the C code's order, sums accumulated element by element, so
the bytes are llama.cpp's, bit for bit; the oracle of the Numba kernels in numba_kernels/cpu/kquants.py
(tests/test_kquants.py). The legacy types without an importance matrix have no search: gguf.quants quantizes
those.

The searches are in searches.py; the packing here follows the block layouts in _ext/kernels/dequant.h."""

import gguf
import numpy as np

from mistralcli.reference.searches import (
    EPS,
    F0,
    F1,
    TENTH,
    F,
    half,
    importance_weights,
    nearest,
    ordered_sum,
    positive_max,
    q3,
    qkx,
    qp,
    qx,
    safe,
    signed_absmax,
)

IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_IQ4_F = IQ4_VALUES.astype(F)


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(n, 256) quants 0..3 -> (n, 64) bytes: weight 128h + 32k + l is bits 2k, 2k + 1 of byte 32h + l."""
    L = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (L[:, :, 0] | L[:, :, 1] << 2 | L[:, :, 2] << 4 | L[:, :, 3] << 6).reshape(-1, 64)


def _pack_nibbles(L: np.ndarray, group: int) -> np.ndarray:
    """Quants 0..15 in runs of 2 * group: the first group into the low nibbles, the second into the high."""
    L = L.reshape(L.shape[0], -1, 2, group).astype(np.uint8)
    return (L[:, :, 0] | L[:, :, 1] << 4).reshape(L.shape[0], -1)


def _pack_k4_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and minimums (n, 8) into the 12 bytes get_scale_min_k4 reads."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    low = ls[:, :4] | (ls[:, 4:] >> 4) << 6
    mid = lm[:, :4] | (lm[:, 4:] >> 4) << 6
    high = (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4
    return np.concatenate([low, mid, high], axis=1)


def _requantize(x, L, d, m, nmax, size):
    """The quants again from the scales as stored: round((x + m) / d) where d (n, nsub) is not 0."""
    n = x.shape[0]
    xs, L = x.reshape(n, -1, size), L.reshape(n, -1, size)
    again = nearest((xs + m[:, :, None]) / safe(d)[:, :, None], 0, nmax)
    return np.where((d != F0)[:, :, None], again, L).reshape(n, -1)


def _q4_q5_k(x: np.ndarray, qw: np.ndarray | None, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The part Q4_K (nmax 15) and Q5_K (nmax 31) share: the header bytes (d, dmin, scales: 16) and the quants."""
    n = x.shape[0]
    xs = x.reshape(-1, 32)
    if qw is not None:
        w = importance_weights(x, qw, F(2.0) * ordered_sum(x * x) / F(256.0), 32)
        scales, mins, L = qkx(xs, w, nmax, F(-0.9), F(0.05), 36, False)
        sw = ordered_sum(w).reshape(n, 8)
        d, ls = qp(scales.reshape(n, 8), 63, sw)
        dmin, lm = qp(mins.reshape(n, 8), 63, sw)
        ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    else:
        av = np.sqrt(ordered_sum(xs * xs) / F(32.0))
        rmin, nstep = (F(-1.0), 20) if nmax == 15 else (F(-0.5), 15)
        scales, mins, L = qkx(xs, av[:, None] + np.abs(xs), nmax, rmin, TENTH, nstep, False)
        scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
        max_scale, max_min = positive_max(scales), positive_max(mins)
        inv_scale = np.where(max_scale > F0, F(63.0) / safe(max_scale), F0)
        inv_min = np.where(max_min > F0, F(63.0) / safe(max_min), F0)
        ls = np.minimum(nearest(inv_scale[:, None] * scales) & 0xFF, 63)
        lm = np.minimum(nearest(inv_min[:, None] * mins) & 0xFF, 63)
        d, dmin = max_scale / F(63.0), max_min / F(63.0)
    d_bytes, d = half(d)
    dmin_bytes, dmin = half(dmin)
    L = _requantize(x, L, d[:, None] * ls.astype(F), dmin[:, None] * lm.astype(F), nmax, 32)
    return np.concatenate([d_bytes, dmin_bytes, _pack_k4_scales(ls, lm)], axis=1), L


def q4_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q4_K blocks (n, 144) of x (n, 256); qw (n, 256) the importance of each weight, or None."""
    header, L = _q4_q5_k(x, qw, 15)
    return np.concatenate([header, _pack_nibbles(L, 32)], axis=1)


def q5_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q5_K blocks (n, 176) of x (n, 256): the fifth bits of sub-blocks 2i, 2i + 1 are bits 2i, 2i + 1 of qh."""
    header, L = _q4_q5_k(x, qw, 31)
    high = (L >> 4).reshape(-1, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]
    qh = np.bitwise_or.reduce(high, axis=1)
    return np.concatenate([header, qh, _pack_nibbles(L & 0xF, 32)], axis=1)


def q2_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q2_K blocks (n, 84) of x (n, 256): 16 sub-blocks of 16, 4-bit scales and minimums."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    q4scale = F(15.0)
    if qw is not None:
        w = importance_weights(x, qw, ordered_sum(x * x) / F(256.0), 16)
        scales, mins, L = qkx(xs, w, 3, F(-0.9), F(0.05), 36, False)
        sw = ordered_sum(w).reshape(n, 16)
        dm, ls = qp(scales.reshape(n, 16), 15, sw)
        mm, lm = qp(mins.reshape(n, 16), 15, sw)
        sc = (ls | lm << 4).astype(np.uint8)
    else:
        scales, mins, L = qkx(xs, np.abs(xs), 3, F(-0.5), TENTH, 15, True)
        scales, mins = scales.reshape(n, 16), mins.reshape(n, 16)
        max_scale, max_min = positive_max(scales), positive_max(mins)
        has_scale, has_min = max_scale > F0, max_min > F0
        ls = np.where(has_scale[:, None], nearest((q4scale / safe(max_scale))[:, None] * scales) & 0xFF, 0)
        lm = np.where(has_min[:, None], (nearest((q4scale / safe(max_min))[:, None] * mins) << 4) & 0xFF, 0)
        sc = (ls | lm).astype(np.uint8)
        dm = np.where(has_scale, max_scale / q4scale, F0)
        mm = np.where(has_min, max_min / q4scale, F0)
    d_bytes, dm = half(dm)
    m_bytes, mm = half(mm)
    L = _requantize(x, L, dm[:, None] * (sc & 0xF).astype(F), mm[:, None] * (sc >> 4).astype(F), 3, 16)
    return np.concatenate([sc, _pack_2bit(L), d_bytes, m_bytes], axis=1)


def q3_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q3_K blocks (n, 110) of x (n, 256): 16 sub-blocks of 16, signed 6-bit scales, quants -4..3."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    if qw is not None:
        w = importance_weights(x, qw, F(2.0) * ordered_sum(x * x) / F(256.0), 16)
        scales, L = qx(xs, 4, w)
        d, ls = qx(scales.reshape(n, 16), 32, ordered_sum(w).reshape(n, 16))
    else:
        scales, L = q3(xs, 4)
        scales = scales.reshape(n, 16)
        max_scale = signed_absmax(scales)
        nonzero = max_scale != F0
        iscale = F(-32.0) / safe(max_scale)
        ls = np.where(nonzero[:, None], nearest(iscale[:, None] * scales, -32, 31) + 32, 0)
        d = np.where(nonzero, F1 / iscale, F0)
    d_bytes, d = half(d)
    sc = ls.astype(np.uint8)
    low = (sc[:, :8] & 0xF) | (sc[:, 8:] & 0xF) << 4
    high = np.bitwise_or.reduce((sc >> 4).reshape(n, 4, 4) << np.array([0, 2, 4, 6], np.uint8)[None, :, None], axis=1)
    dj = d[:, None] * (ls - 32).astype(F)
    again = nearest(x.reshape(n, 16, 16) / safe(dj)[:, :, None], -4, 3) + 4
    L = np.where((dj != F0)[:, :, None], again, L.reshape(n, 16, 16)).reshape(n, 256)
    hbits = (L > 3).reshape(n, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]
    hmask = np.bitwise_or.reduce(hbits, axis=1)
    return np.concatenate([hmask, _pack_2bit(L & 3), low, high, d_bytes], axis=1)


def q6_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q6_K blocks (n, 210) of x (n, 256): 16 sub-blocks of 16, int8 scales, quants -32..31."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    scales, L = qx(xs, 32, xs * xs if qw is None else qw.reshape(-1, 16))
    scales = scales.reshape(n, 16)
    max_scale = signed_absmax(scales)
    zero = np.abs(max_scale) < EPS
    iscale = F(-128.0) / safe(max_scale)
    d_bytes, d = half(F1 / iscale)
    sc = np.minimum(nearest(iscale[:, None] * scales), 127)
    dj = d[:, None] * sc.astype(F)
    again = nearest(x.reshape(n, 16, 16) / safe(dj)[:, :, None], -32, 31) + 32
    L = np.where((dj != F0)[:, :, None], again, L.reshape(n, 16, 16)).reshape(n, 2, 4, 32).astype(np.uint8)
    low = L & 0xF
    ql = np.concatenate([low[:, :, 0] | low[:, :, 2] << 4, low[:, :, 1] | low[:, :, 3] << 4], axis=2)
    qh = np.bitwise_or.reduce((L >> 4) << np.array([0, 2, 4, 6], np.uint8)[None, None, :, None], axis=2)
    out = np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64), sc.astype(np.uint8), d_bytes], axis=1)
    return np.where(zero[:, None], np.uint8(0), out)


def _best_index(v: np.ndarray) -> np.ndarray:
    """best_index_int8: the index of the IQ4 value nearest v, the lower one on a tie."""
    hi = np.clip(np.searchsorted(_IQ4_F, v, side="right"), 1, 15)
    return np.where(v - _IQ4_F[hi - 1] < _IQ4_F[hi] - v, hi - 1, hi)


def _iq4_scales(x: np.ndarray, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_iq4_nl_impl's search (7 tries) of each 32-weight sub-block's scale, of blocks x (n, block).
    Returns (scales (n, block / 32), the sub-blocks as rows (n * block / 32, 32))."""
    n, size = x.shape
    sigma2 = ordered_sum(x * x) * (F(2.0) / F(size))
    xs = x.reshape(-1, 32)
    w = xs * xs if qw is None else importance_weights(x, qw, sigma2, 32)
    top = signed_absmax(xs)
    zero = np.abs(top) < EPS
    top = safe(top)

    def sums(inv):
        q = _IQ4_F[_best_index(inv[:, None] * xs)]
        return ordered_sum(w * q * xs), ordered_sum(w * q * q)

    sumqx, sumq2 = sums(F1 / (-top / _IQ4_F[0]))
    d = np.where(sumq2 > F0, sumqx / safe(sumq2), F0)
    best = d * sumqx
    for itry in range(-7, 8):
        sumqx, sumq2 = sums(F(itry + int(IQ4_VALUES[0])) / top)
        better = (sumq2 > F0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, sumqx / safe(sumq2), d)
        best = np.where(better, d * sumqx, best)
    return np.where(zero, F0, d).reshape(n, -1), xs


def iq4_nl(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """IQ4_NL blocks (n, 18) of x (n, 32)."""
    scales, _ = _iq4_scales(x, qw)
    d = scales[:, 0]
    d_bytes, _ = half(d)
    inv = np.where(d != F0, F1 / safe(d), F0)
    return np.concatenate([d_bytes, _pack_nibbles(_best_index(inv[:, None] * x), 16)], axis=1)


def iq4_xs(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """IQ4_XS blocks (n, 136) of x (n, 256): 8 sub-blocks of 32 with 6-bit scales."""
    n = x.shape[0]
    scales, xs = _iq4_scales(x, qw)
    d = -signed_absmax(scales) / F(32.0)
    d_bytes, _ = half(d)
    inv = np.where(d != F0, F1 / safe(d), F0)
    lv = nearest(inv[:, None] * scales, -32, 31)
    dl = (d[:, None] * lv.astype(F)).reshape(-1)
    idl = np.where(dl != F0, F1 / safe(dl), F0)
    L = _best_index(idl[:, None] * xs).reshape(n, 256)
    lv = (lv + 32).astype(np.uint16)
    scales_l = (lv[:, 0::2] & 0xF | (lv[:, 1::2] & 0xF) << 4).astype(np.uint8)
    scales_h = np.bitwise_or.reduce((lv >> 4) << np.arange(0, 16, 2, dtype=np.uint16), axis=1)
    scales_h = scales_h.astype("<u2").view(np.uint8).reshape(n, 2)
    return np.concatenate([d_bytes, scales_h, scales_l, _pack_nibbles(L, 16)], axis=1)


def _legacy_weighted(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray, nmax: int, with_min: bool):
    """quantize_row_q4_0/q4_1/q5_0/q5_1_impl of blocks x (n, 32) with importances qw (n, 32) and their rows'
    sigma2 (n,): the header bytes (d, and m where with_min) and the quants 0..2 * nmax - 1 (with_min: 0..nmax)."""
    w = importance_weights(x, qw, sigma2, 32)
    if with_min:
        d, the_min, L = qkx(x, w, nmax, F(-0.9), F(0.05), 36, False)
        return np.concatenate([half(d)[0], half(-the_min)[0]], axis=1), L  # m: the minimum itself, <= 0
    d, L = qx(x, nmax, w)
    return half(d)[0], L


def _high_bits(L: np.ndarray) -> np.ndarray:
    """The fifth bits of quants (n, 32) as Q5_0/Q5_1's qh: that of weight j at bit j, a little-endian uint32."""
    qh = np.bitwise_or.reduce((L >> 4 & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32), axis=1)
    return qh.astype("<u4").view(np.uint8).reshape(-1, 4)


def q4_0(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (n, 18) of x (n, 32): d, then qs[j] = L[j] | L[j + 16] << 4."""
    header, L = _legacy_weighted(x, qw, sigma2, 8, False)
    return np.concatenate([header, _pack_nibbles(L, 16)], axis=1)


def q4_1(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """Q4_1 blocks (n, 20) of x (n, 32): d, m (the minimum: weight = d * L + m), qs."""
    header, L = _legacy_weighted(x, qw, sigma2, 15, True)
    return np.concatenate([header, _pack_nibbles(L, 16)], axis=1)


def q5_0(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """Q5_0 blocks (n, 22) of x (n, 32): d, qh, qs (the low 4 bits)."""
    header, L = _legacy_weighted(x, qw, sigma2, 16, False)
    return np.concatenate([header, _high_bits(L), _pack_nibbles(L & 0xF, 16)], axis=1)


def q5_1(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """Q5_1 blocks (n, 24) of x (n, 32): d, m, qh, qs."""
    header, L = _legacy_weighted(x, qw, sigma2, 31, True)
    return np.concatenate([header, _high_bits(L), _pack_nibbles(L & 0xF, 16)], axis=1)


Q = gguf.GGMLQuantizationType
QUANTIZERS = {Q.Q2_K: q2_k, Q.Q3_K: q3_k, Q.Q4_K: q4_k, Q.Q5_K: q5_k, Q.Q6_K: q6_k, Q.IQ4_NL: iq4_nl, Q.IQ4_XS: iq4_xs}
WEIGHTED_LEGACY = {Q.Q4_0: q4_0, Q.Q4_1: q4_1, Q.Q5_0: q5_0, Q.Q5_1: q5_1}


def quantize_reference(
    x: np.ndarray, qtype: gguf.GGMLQuantizationType, imatrix: np.ndarray | None = None
) -> np.ndarray:
    """x (rows, n_per_row) float32 quantized to qtype's blocks, (rows, row bytes) uint8, as llama.cpp's
    ggml_quantize_chunk does; imatrix (n_per_row,) the importance of each column, or None. Q4_0, Q4_1, Q5_0
    and Q5_1 without an importance matrix are delegated to gguf.quants.quantize."""
    x = np.ascontiguousarray(x, dtype=F)
    if imatrix is None and qtype in WEIGHTED_LEGACY:
        return gguf.quants.quantize(x, qtype)
    rows, n_per_row = x.shape
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = x.reshape(-1, block)
    qw = None
    if imatrix is not None:
        qw = np.tile(np.asarray(imatrix, dtype=F).reshape(-1, block), (rows, 1))
    # the lanes np.where discards divide by 0; huge weights overflow, as they do in C
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if qtype in WEIGHTED_LEGACY:
            sigma2 = np.repeat(ordered_sum(x * x) / F(n_per_row), n_per_row // block)
            out = WEIGHTED_LEGACY[qtype](blocks, qw, sigma2)
        else:
            out = QUANTIZERS[qtype](blocks, qw)
    return out.reshape(rows, n_per_row // block * size)
