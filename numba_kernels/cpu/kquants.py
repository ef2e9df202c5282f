"""Quantizers of the K types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256 weights a super-block) and of IQ4_NL and
IQ4_XS, in Numba, parallel over super-blocks. They follow llama.cpp's ggml-quants.c, the algorithms its
`llama-quantize` runs: without an importance matrix its reference quantizers (quantize_row_*_ref, and for
IQ4 the search with 7 tries that quantize_iq4_* makes), with one the weighted searches (quantize_row_*_impl).
Every value is a float32 computed in the C code's order (the shared searches: searches.py), so the bytes match
the NumPy reference in mistralcli/reference/kquants.py bit for bit (tests/test_kquants.py). Per thread they run
as fast as llama.cpp's C: the searches' sums are chains that cannot be reordered, and the CPU overlaps the
sub-blocks' chains on its own (8 sub-blocks side by side in SIMD lanes measured no faster here; in C they are:
_ext/kernels/kquant.h, which quantize() runs for Q4_K, Q5_K and Q6_K where the CPU has AVX2).

Each kernel takes x (n_blocks, 256) float32 (IQ4_NL: (n_blocks, 32)), qw (blocks per row, block) float32,
the importance of each column of a row, used when `weighted`, and writes the packed blocks into out
(n_blocks, block bytes) uint8, in the layouts _ext/kernels/dequant.h reads."""

import numpy as np
from numba import njit, prange

from mistralcli.numba_kernels.cpu.searches import (
    EPS,
    F0,
    F1,
    TENTH,
    importance_weights,
    nearest,
    put_half,
    q3,
    qkx,
    qp,
    qx,
    sum_squares,
)

IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_CHUNK = 16  # super-blocks a thread quantizes with one set of scratch arrays


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _pack_2bit(out, b, at, L):
    """Four 2-bit quants a byte: byte at + 32 * (j // 128) + i holds weights j + i, + 32, + 64, + 96."""
    for j in range(0, 256, 128):
        for i in range(32):
            out[b, at + j // 4 + i] = np.uint8(
                L[j + i] | (L[j + i + 32] << 2) | (L[j + i + 64] << 4) | (L[j + i + 96] << 6)
            )


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _pack_k4_scales(out, b, at, ls, lm):
    """Eight 6-bit scales and minimums in 12 bytes (the layout get_scale_min_k4 reads)."""
    for j in range(12):
        out[b, at + j] = 0
    for j in range(8):
        if j < 4:
            out[b, at + j] = np.uint8(ls[j])
            out[b, at + j + 4] = np.uint8(lm[j])
        else:
            out[b, at + j + 4] = np.uint8((ls[j] & 0xF) | ((lm[j] & 0xF) << 4))
            out[b, at + j - 4] |= np.uint8((ls[j] >> 4) << 6)
            out[b, at + j] |= np.uint8((lm[j] >> 4) << 6)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _k4_scale_min(out, b, at, j):
    if j < 4:
        return np.int32(out[b, at + j]) & 63, np.int32(out[b, at + j + 4]) & 63
    mid, low, high = np.int32(out[b, at + j + 4]), np.int32(out[b, at + j - 4]), np.int32(out[b, at + j])
    return (mid & 0xF) | ((low >> 6) << 4), (mid >> 4) | ((high >> 6) << 4)


@njit(nogil=True, cache=True, error_model="numpy")
def _requantize_min(x, L, out, b, at, d, dmin, nsub, size, nmax):
    """The quants again from the scales as stored (6-bit, through float16): L = (x + min) / scale."""
    for j in range(nsub):
        sc, m = _k4_scale_min(out, b, at, j)
        dj = d * np.float32(sc)
        if dj == F0:
            continue
        dm = dmin * np.float32(m)
        for i in range(size):
            L[size * j + i] = max(0, min(nmax, nearest((x[size * j + i] + dm) / dj)))


@njit(nogil=True, cache=True, error_model="numpy")
def _q4_q5_k_block(x, qw, weighted, out, b, nmax, L, Laux, w, scales, mins, sw, Ls, Lm):
    """One Q4_K (nmax 15) or Q5_K (nmax 31) super-block's scales, minimums and quants; the quants into L."""
    sigma2 = F0
    if weighted:
        sigma2 = np.float32(2.0) * sum_squares(x) / np.float32(256.0)
    for j in range(8):
        xs = x[32 * j : 32 * j + 32]
        if weighted:
            sw[j] = importance_weights(xs, qw[32 * j : 32 * j + 32], sigma2, w)
            scales[j], mins[j] = qkx(
                xs, w, L[32 * j : 32 * j + 32], Laux, nmax, np.float32(-0.9), np.float32(0.05), 36, False
            )
        else:
            av = np.sqrt(sum_squares(xs) / np.float32(32.0))
            for i in range(32):
                w[i] = av + abs(xs[i])
            if nmax == 15:
                rmin, nstep = np.float32(-1.0), 20
            else:
                rmin, nstep = np.float32(-0.5), 15
            scales[j], mins[j] = qkx(xs, w, L[32 * j : 32 * j + 32], Laux, nmax, rmin, TENTH, nstep, False)
    if weighted:
        d = qp(scales, Ls, 63, sw)
        dmin = qp(mins, Lm, 63, sw)
    else:
        max_scale, max_min = F0, F0
        for j in range(8):
            max_scale = max(max_scale, scales[j])
            max_min = max(max_min, mins[j])
        inv_scale = np.float32(63.0) / max_scale if max_scale > F0 else F0
        inv_min = np.float32(63.0) / max_min if max_min > F0 else F0
        for j in range(8):
            Ls[j] = min(63, nearest(inv_scale * scales[j]) & 0xFF)
            Lm[j] = min(63, nearest(inv_min * mins[j]) & 0xFF)
        d = max_scale / np.float32(63.0)
        dmin = max_min / np.float32(63.0)
    for j in range(8):
        Ls[j] = min(63, Ls[j])
        Lm[j] = min(63, Lm[j])
    _pack_k4_scales(out, b, 4, Ls, Lm)
    d = put_half(out, b, 0, d)
    dmin = put_half(out, b, 2, dmin)
    _requantize_min(x, L, out, b, 4, d, dmin, 8, 32, nmax)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _q4_q5_k(x, qw, weighted, out, nmax):
    """Q4_K (nmax 15: | d | dmin | scales[12] | qs[128] |) or Q5_K (31: | d | dmin | scales[12] | qh[32] | qs |)."""
    n, per_row = x.shape[0], qw.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        L, Laux = np.empty(256, np.int32), np.empty(32, np.int32)
        w, scales, mins, sw = (
            np.empty(32, np.float32),
            np.empty(8, np.float32),
            np.empty(8, np.float32),
            np.empty(8, np.float32),
        )
        Ls, Lm = np.empty(8, np.int32), np.empty(8, np.int32)
        for b in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            _q4_q5_k_block(x[b], qw[b % per_row], weighted, out, b, nmax, L, Laux, w, scales, mins, sw, Ls, Lm)
            if nmax == 15:
                for j in range(0, 256, 64):
                    for i in range(32):
                        out[b, 16 + j // 2 + i] = np.uint8(L[j + i] | (L[j + i + 32] << 4))
                continue
            for i in range(32):
                out[b, 16 + i] = 0
            for j in range(0, 256, 64):
                m1, m2 = 1 << (j // 32), 2 << (j // 32)
                for i in range(32):
                    lo, hi = L[j + i], L[j + i + 32]
                    if lo > 15:
                        lo -= 16
                        out[b, 16 + i] |= np.uint8(m1)
                    if hi > 15:
                        hi -= 16
                        out[b, 16 + i] |= np.uint8(m2)
                    out[b, 48 + j // 2 + i] = np.uint8(lo | (hi << 4))


def q4_k(x, qw, weighted, out):
    _q4_q5_k(x, qw, weighted, out, 15)


def q5_k(x, qw, weighted, out):
    _q4_q5_k(x, qw, weighted, out, 31)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q2_k(x, qw, weighted, out):
    n, per_row = x.shape[0], qw.shape[0]
    q4scale = np.float32(15.0)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        L, Laux = np.empty(256, np.int32), np.empty(16, np.int32)
        w, scales, mins, sw = (
            np.empty(16, np.float32),
            np.empty(16, np.float32),
            np.empty(16, np.float32),
            np.empty(16, np.float32),
        )
        Ls, Lm = np.empty(16, np.int32), np.empty(16, np.int32)
        for b in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            xb, qb = x[b], qw[b % per_row]
            sigma2 = sum_squares(xb) / np.float32(256.0)
            for j in range(16):
                xs = xb[16 * j : 16 * j + 16]
                if weighted:
                    sw[j] = importance_weights(xs, qb[16 * j : 16 * j + 16], sigma2, w)
                    scales[j], mins[j] = qkx(
                        xs, w, L[16 * j : 16 * j + 16], Laux, 3, np.float32(-0.9), np.float32(0.05), 36, False
                    )
                else:
                    for i in range(16):
                        w[i] = abs(xs[i])
                    scales[j], mins[j] = qkx(xs, w, L[16 * j : 16 * j + 16], Laux, 3, np.float32(-0.5), TENTH, 15, True)
            if weighted:
                dm = qp(scales, Ls, 15, sw)
                mm = qp(mins, Lm, 15, sw)
                for j in range(16):
                    out[b, j] = np.uint8(Ls[j] | (Lm[j] << 4))
            else:
                max_scale, max_min = F0, F0
                for j in range(16):
                    max_scale = max(max_scale, scales[j])
                    max_min = max(max_min, mins[j])
                dm, mm = F0, F0
                for j in range(16):
                    out[b, j] = 0
                if max_scale > F0:
                    iscale = q4scale / max_scale
                    for j in range(16):
                        out[b, j] = np.uint8(nearest(iscale * scales[j]) & 0xFF)
                    dm = max_scale / q4scale
                if max_min > F0:
                    iscale = q4scale / max_min
                    for j in range(16):
                        out[b, j] |= np.uint8((nearest(iscale * mins[j]) << 4) & 0xFF)
                    mm = max_min / q4scale
            dm = put_half(out, b, 80, dm)
            mm = put_half(out, b, 82, mm)
            for j in range(16):
                sc = np.int32(out[b, j])
                dj = dm * np.float32(sc & 0xF)
                if dj == F0:
                    continue
                m = mm * np.float32(sc >> 4)
                for i in range(16):
                    L[16 * j + i] = max(0, min(3, nearest((xb[16 * j + i] + m) / dj)))
            _pack_2bit(out, b, 16, L)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _q3_k_scale(out, b, j):
    """Sub-block j's 6-bit scale of a Q3_K block (bytes 96..107), minus 32."""
    low = np.int32(out[b, 96 + j]) & 0xF if j < 8 else np.int32(out[b, 96 + j - 8]) >> 4
    return (low | (((np.int32(out[b, 104 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q3_k(x, qw, weighted, out):
    n, per_row = x.shape[0], qw.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        L, last = np.empty(256, np.int32), np.empty(16, np.int32)
        w, scales, sw = np.empty(16, np.float32), np.empty(16, np.float32), np.empty(16, np.float32)
        Ls = np.empty(16, np.int32)
        for b in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            xb, qb = x[b], qw[b % per_row]
            for j in range(12):
                out[b, 96 + j] = 0
            if weighted:
                sigma2 = np.float32(2.0) * sum_squares(xb) / np.float32(256.0)
                for j in range(16):
                    xs = xb[16 * j : 16 * j + 16]
                    sw[j] = importance_weights(xs, qb[16 * j : 16 * j + 16], sigma2, w)
                    scales[j] = qx(xs, L[16 * j : 16 * j + 16], 4, w, True, last)
                d = qx(scales, Ls, 32, sw, True, last)
            else:
                max_scale, amax = F0, F0
                for j in range(16):
                    scales[j] = q3(xb[16 * j : 16 * j + 16], L[16 * j : 16 * j + 16], 4)
                    if abs(scales[j]) > amax:
                        amax, max_scale = abs(scales[j]), scales[j]
                d = F0
                if max_scale != F0:
                    iscale = np.float32(-32.0) / max_scale
                    for j in range(16):
                        Ls[j] = max(-32, min(31, nearest(iscale * scales[j]))) + 32
                    d = F1 / iscale
                else:
                    for j in range(16):
                        Ls[j] = 0
            for j in range(16):
                lj = Ls[j]
                if j < 8:
                    out[b, 96 + j] = np.uint8(lj & 0xF)
                else:
                    out[b, 96 + j - 8] |= np.uint8((lj & 0xF) << 4)
                out[b, 96 + 8 + j % 4] |= np.uint8(((lj >> 4) << (2 * (j // 4))) & 0xFF)
            d = put_half(out, b, 108, d)
            for j in range(16):
                dj = d * np.float32(_q3_k_scale(out, b, j))
                if dj == F0:
                    continue
                for i in range(16):
                    L[16 * j + i] = max(-4, min(3, nearest(xb[16 * j + i] / dj))) + 4
            for m in range(32):
                out[b, m] = 0
            for j in range(256):
                if L[j] > 3:
                    out[b, j % 32] |= np.uint8(1 << (j // 32))
                    L[j] -= 4
            _pack_2bit(out, b, 32, L)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q6_k(x, qw, weighted, out):
    n, per_row = x.shape[0], qw.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        L, last = np.empty(256, np.int32), np.empty(16, np.int32)
        scales = np.empty(16, np.float32)
        for b in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            xb, qb = x[b], qw[b % per_row]
            max_scale, amax = F0, F0
            for j in range(16):
                sub = slice(16 * j, 16 * j + 16)
                scales[j] = qx(xb[sub], L[sub], 32, qb[sub], weighted, last)
                if abs(scales[j]) > amax:
                    amax, max_scale = abs(scales[j]), scales[j]
            if amax < EPS:
                for i in range(210):
                    out[b, i] = 0
                continue
            iscale = np.float32(-128.0) / max_scale
            d = put_half(out, b, 208, F1 / iscale)
            for j in range(16):
                sc = min(127, nearest(iscale * scales[j]))
                out[b, 192 + j] = np.uint8(sc & 0xFF)
                dj = d * np.float32(sc)
                if dj == F0:
                    continue
                for i in range(16):
                    L[16 * j + i] = max(-32, min(31, nearest(xb[16 * j + i] / dj))) + 32
            for j in range(0, 256, 128):
                for i in range(32):
                    q1, q2, q3, q4 = L[j + i], L[j + i + 32], L[j + i + 64], L[j + i + 96]
                    out[b, j // 2 + i] = np.uint8((q1 & 0xF) | ((q3 & 0xF) << 4))
                    out[b, j // 2 + i + 32] = np.uint8((q2 & 0xF) | ((q4 & 0xF) << 4))
                    out[b, 128 + j // 4 + i] = np.uint8(
                        (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
                    )


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _best_index(values, v):
    """best_index_int8: the index of the value nearest v (of a sorted table, the lower one on a tie)."""
    if v <= np.float32(values[0]):
        return 0
    if v >= np.float32(values[15]):
        return 15
    lo, hi = 0, 15
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if v < np.float32(values[mid]):
            hi = mid
        else:
            lo = mid
    return hi - 1 if v - np.float32(values[hi - 1]) < np.float32(values[hi]) - v else hi


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_scales(x, qw, weighted, L, w, scales, values, nsub):
    """quantize_row_iq4_nl_impl's search (7 tries) of each 32-weight sub-block's scale; returns the one of
    largest magnitude. L holds the sub-blocks' indices into the table."""
    size = x.shape[0]
    sigma2 = sum_squares(x) * (np.float32(2.0) / np.float32(size))
    max_scale, amax_scale = F0, F0
    v0 = np.float32(values[0])
    for ib in range(nsub):
        xb = x[32 * ib : 32 * ib + 32]
        for j in range(32):
            w[j] = qw[32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j]) if weighted else xb[j] * xb[j]
        amax, top = F0, F0
        for j in range(32):
            if abs(xb[j]) > amax:
                amax, top = abs(xb[j]), xb[j]
        if amax < EPS:
            scales[ib] = F0
            continue
        d = -top / v0
        inv = F1 / d
        sumqx, sumq2 = F0, F0
        for j in range(32):
            k = _best_index(values, inv * xb[j])
            L[32 * ib + j] = k
            q = np.float32(values[k])
            sumqx += w[j] * q * xb[j]
            sumq2 += w[j] * q * q
        d = sumqx / sumq2 if sumq2 > F0 else F0
        best = d * sumqx
        for itry in range(-7, 8):
            inv = np.float32(itry + np.int32(values[0])) / top
            sumqx, sumq2 = F0, F0
            for j in range(32):
                q = np.float32(values[_best_index(values, inv * xb[j])])
                sumqx += w[j] * q * xb[j]
                sumq2 += w[j] * q * q
            if sumq2 > F0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        if abs(d) > amax_scale:
            amax_scale, max_scale = abs(d), d
    return max_scale


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _pack_iq4(out, b, at, L, nsub):
    for i in range(nsub):
        for j in range(16):
            out[b, at + 16 * i + j] = np.uint8(L[32 * i + j] | (L[32 * i + 16 + j] << 4))


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_nl(x, qw, weighted, out):
    n, per_row = x.shape[0], qw.shape[0]
    values = IQ4_VALUES
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        L, w, scales = np.zeros(32, np.int32), np.empty(32, np.float32), np.empty(1, np.float32)
        for b in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            xb = x[b]
            _iq4_scales(xb, qw[b % per_row], weighted, L, w, scales, values, 1)
            d = scales[0]
            put_half(out, b, 0, d)
            inv = F1 / d if d != F0 else F0
            for j in range(32):
                L[j] = _best_index(values, inv * xb[j])
            _pack_iq4(out, b, 2, L, 1)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_xs(x, qw, weighted, out):
    n, per_row = x.shape[0], qw.shape[0]
    values = IQ4_VALUES
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        L, w, scales = np.zeros(256, np.int32), np.empty(32, np.float32), np.empty(8, np.float32)
        for b in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            xb = x[b]
            max_scale = _iq4_scales(xb, qw[b % per_row], weighted, L, w, scales, values, 8)
            d = -max_scale / np.float32(32.0)
            put_half(out, b, 0, d)
            inv = F1 / d if d != F0 else F0
            high = 0
            for i in range(4):
                out[b, 4 + i] = 0
            for ib in range(8):
                lv = max(-32, min(31, nearest(inv * scales[ib])))
                dl = d * np.float32(lv)
                idl = F1 / dl if dl != F0 else F0
                for j in range(32):
                    L[32 * ib + j] = _best_index(values, idl * xb[32 * ib + j])
                lv += 32
                out[b, 4 + ib // 2] |= np.uint8((lv & 0xF) << (4 * (ib % 2)))
                high |= (lv >> 4) << (2 * ib)
            out[b, 2] = np.uint8(high & 0xFF)
            out[b, 3] = np.uint8(high >> 8)
            _pack_iq4(out, b, 8, L, 8)
