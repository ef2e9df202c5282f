"""NumPy reference of the K-type quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256 weights a super-block), of
IQ4_NL and IQ4_XS, and of the legacy Q4_0, Q4_1, Q5_0 and Q5_1 with an importance matrix: the algorithms of
llama.cpp's ggml-quants.c that `llama-quantize` runs (without an importance matrix the quantize_row_*_ref
searches, and for IQ4 the search with 7 tries; with one the weighted quantize_row_*_impl searches), vectorized
over blocks. Every value is a float32 computed in the C code's order, sums accumulated element by element, so
the bytes are llama.cpp's, bit for bit; the oracle of the Numba kernels in numba_kernels/cpu/kquants.py
(tests/test_kquants.py). The legacy types without an importance matrix have no search: gguf.quants quantizes
those.

The helpers work on groups of weights, (groups, n) arrays, and return per-group scales (groups,) and quants
(groups, n) int32; a loop runs over the element index, a search's candidates or refinement rounds, never over
groups. The packing follows the block layouts in _ext/kernels/dequant.h."""

import gguf
import numpy as np

F = np.float32
_F0 = F(0.0)
_F1 = F(1.0)
_EPS = F(1e-15)  # GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero
_TENTH = F(0.1)
IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_IQ4_F = IQ4_VALUES.astype(F)


def _sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in index order, from 0, as the C loops add (np.sum adds pairwise)."""
    s = np.zeros(a.shape[:-1], F)
    for i in range(a.shape[-1]):
        s = s + a[..., i]
    return s


def _round(v: np.ndarray, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    """nearest_int (round half to even), clamped to [lo, hi] where given, as int32. An infinity (a scale's
    inverse past float32's range, from denormal weights) rounds to -2**22 and a NaN to 0, as ggml's float
    trick makes them."""
    r = np.rint(v)
    r = np.where(np.isinf(r), F(-4194304.0), np.where(np.isnan(r), _F0, r))
    if lo is not None or hi is not None:
        r = np.clip(r, lo, hi)
    return r.astype(np.int32)


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """The element of largest magnitude of each group, the first of equals; 0 where all are 0."""
    picked = np.take_along_axis(x, np.argmax(np.abs(x), axis=-1)[..., None], axis=-1)[..., 0]
    return np.where(np.abs(picked) > _F0, picked, _F0)


def _positive_max(x: np.ndarray) -> np.ndarray:
    """max(0, x...) over the last axis, +0 where none is positive (the C loops start from 0)."""
    top = x.max(axis=-1)
    return np.where(top > _F0, top, _F0)


def _half(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGML_FP32_TO_FP16: the float16 bytes (n, 2) of f (n,) and the value they hold, as float32."""
    h = f.astype("<f2")
    return h.view(np.uint8).reshape(-1, 2), h.astype(F)


def _safe(d: np.ndarray) -> np.ndarray:
    """d with its zeros replaced by 1: a divisor for the lanes that keep their result."""
    return np.where(d == _F0, _F1, d)


def _qx(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants with rmse_type 1 and weights w: signed quants -nmax..nmax-1 (returned + nmax) with one
    scale, the best of 19 candidate steps by weighted least squares."""
    top = _signed_absmax(x)
    zero = np.abs(top) < _EPS
    top = _safe(top)
    fmax = F(nmax)

    def candidate(iscale):
        q = _round(iscale[:, None] * x, -nmax, nmax - 1)
        fl = q.astype(F)
        return q, _sum(w * x * fl), _sum(w * fl * fl)

    q, sumlx, suml2 = candidate(-fmax / top)
    scale = np.where(suml2 != _F0, sumlx / _safe(suml2), _F0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        q_is, slx, sl2 = candidate(-(fmax + _TENTH * F(step)) / top)
        better = (sl2 > _F0) & (slx * slx > best * sl2)
        q = np.where(better[:, None], q_is, q)
        scale = np.where(better, slx / _safe(sl2), scale)
        best = np.where(better, scale * slx, best)
    return np.where(zero, _F0, scale), np.where(zero[:, None], 0, q + nmax)


def _q3(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_q3_quants with do_rmse: signed quants (returned + nmax) weighted by x**2, then improved one at a
    time over at most 5 rounds."""
    top = _signed_absmax(x)
    zero = np.abs(top) < _EPS
    q = _round((-F(nmax) / _safe(top))[:, None] * x, -nmax, nmax - 1)
    w = x * x
    fl = q.astype(F)
    sumlx, suml2 = _sum(w * x * fl), _sum(w * fl * fl)
    active = ~zero
    for _ in range(5):
        changed = np.zeros_like(active)
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i], x[:, i], q[:, i]
            fl = li.astype(F)
            slx = sumlx - wi * xi * fl
            sl2 = suml2 - wi * fl * fl
            new = _round(xi * sl2 / _safe(slx), -nmax, nmax - 1)
            fn = new.astype(F)
            slx_new = slx + wi * xi * fn
            sl2_new = sl2 + wi * fn * fn
            take = active & (slx > _F0) & (new != li) & (sl2_new > _F0)
            take &= slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new
            q[:, i] = np.where(take, new, li)
            sumlx = np.where(take, slx_new, sumlx)
            suml2 = np.where(take, sl2_new, suml2)
            changed |= take
        active &= changed
        if not active.any():
            break
    scale = np.where(suml2 > _F0, sumlx / _safe(suml2), _F0)
    return np.where(zero, _F0, scale), np.where(zero[:, None], 0, q + nmax)


def _qp(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qp_quants: non-negative quants 0..nmax of the (non-negative) sub-block scales x, weighted by w: the
    best of 9 candidate steps, then improved one at a time over at most 5 rounds."""
    top = _positive_max(x)
    zero = top < _EPS
    top = _safe(top)
    fmax = F(nmax)
    iscale = fmax / top
    scale = _F1 / iscale
    diff = x - scale[:, None] * _round(iscale[:, None] * x).astype(F)
    best = _sum(w * diff * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (_TENTH * F(step) + fmax) / top
        scale_is = _F1 / iscale_is
        diff = x - scale_is[:, None] * _round(iscale_is[:, None] * x, None, nmax).astype(F)
        mse = _sum(w * diff * diff)
        better = mse < best
        best = np.where(better, mse, best)
        iscale = np.where(better, iscale_is, iscale)
    q = _round(iscale[:, None] * x, None, nmax)
    fl = q.astype(F)
    sumlx, suml2 = _sum(w * x * fl), _sum(w * fl * fl)
    active = ~zero
    for _ in range(5):
        changed = np.zeros_like(active)
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i], x[:, i], q[:, i]
            fl = li.astype(F)
            slx = sumlx - wi * xi * fl
            sl2 = suml2 - wi * fl * fl
            new = _round(xi * sl2 / _safe(slx), None, nmax)
            fn = new.astype(F)
            slx_new = slx + wi * xi * fn
            sl2_new = sl2 + wi * fn * fn
            take = active & (slx > _F0) & (sl2 > _F0) & (new != li)
            take &= slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new
            q[:, i] = np.where(take, new, li)
            sumlx = np.where(take, slx_new, sumlx)
            suml2 = np.where(take, sl2_new, suml2)
            changed |= take
        active &= changed
        if not active.any():
            break
    scale = np.where(suml2 > _F0, sumlx / _safe(suml2), _F0)
    return np.where(zero, _F0, scale), np.where(zero[:, None], 0, q)


def _qkx(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants (the same once the weights are given; nstep >= 1): quants 0..nmax
    with a scale and a minimum, the scale searched over nstep + 1 candidates by weighted least squares
    (absolute differences where use_mad). Returns (scale, -minimum, quants)."""
    fmax = F(nmax)
    lo = x.min(axis=1)
    lo = np.where(lo > _F0, _F0, lo)
    hi = x.max(axis=1)
    flat = hi <= lo
    span = np.where(flat, _F1, hi - lo)
    sum_w = w[:, 0]
    sum_x = sum_w * x[:, 0]
    for i in range(1, x.shape[1]):
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]

    def error(scale, fl, minimum):
        diff = scale[:, None] * fl + minimum[:, None] - x
        return _sum(w * (np.abs(diff) if use_mad else diff * diff))

    iscale = fmax / span
    scale = _F1 / iscale
    L = _round(iscale[:, None] * (x - lo[:, None]), 0, nmax)
    best = error(scale, L.astype(F), lo)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F(step) + fmax) / _safe(hi - lo)
        aux = _round(iscale[:, None] * (x - lo[:, None]), 0, nmax)
        fl = aux.astype(F)
        sum_l, sum_l2, sum_xl = _sum(w * fl), _sum(w * fl * fl), _sum(w * fl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / _safe(D)
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / _safe(D)
        clamped = this_min > _F0
        this_min = np.where(clamped, _F0, this_min)
        this_scale = np.where(clamped, sum_xl / _safe(sum_l2), this_scale)
        err = error(this_scale, fl, this_min)
        better = (D > _F0) & (err < best)
        L = np.where(better[:, None], aux, L)
        best = np.where(better, err, best)
        scale = np.where(better, this_scale, scale)
        lo = np.where(better, this_min, lo)
    return np.where(flat, _F0, scale), -lo, np.where(flat[:, None], 0, L)


def _weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray, size: int) -> np.ndarray:
    """qw * sqrt(sigma2 + x**2) of blocks x (n, block), sigma2 (n,), as sub-blocks (n * block / size, size)."""
    nsub = x.shape[1] // size
    xs = x.reshape(-1, size)
    return qw.reshape(-1, size) * np.sqrt(np.repeat(sigma2, nsub)[:, None] + xs * xs)


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
    again = _round((xs + m[:, :, None]) / _safe(d)[:, :, None], 0, nmax)
    return np.where((d != _F0)[:, :, None], again, L).reshape(n, -1)


def _q4_q5_k(x: np.ndarray, qw: np.ndarray | None, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The part Q4_K (nmax 15) and Q5_K (nmax 31) share: the header bytes (d, dmin, scales: 16) and the quants."""
    n = x.shape[0]
    xs = x.reshape(-1, 32)
    if qw is not None:
        w = _weights(x, qw, F(2.0) * _sum(x * x) / F(256.0), 32)
        scales, mins, L = _qkx(xs, w, nmax, F(-0.9), F(0.05), 36, False)
        sw = _sum(w).reshape(n, 8)
        d, ls = _qp(scales.reshape(n, 8), 63, sw)
        dmin, lm = _qp(mins.reshape(n, 8), 63, sw)
        ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    else:
        av = np.sqrt(_sum(xs * xs) / F(32.0))
        rmin, nstep = (F(-1.0), 20) if nmax == 15 else (F(-0.5), 15)
        scales, mins, L = _qkx(xs, av[:, None] + np.abs(xs), nmax, rmin, _TENTH, nstep, False)
        scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
        max_scale, max_min = _positive_max(scales), _positive_max(mins)
        inv_scale = np.where(max_scale > _F0, F(63.0) / _safe(max_scale), _F0)
        inv_min = np.where(max_min > _F0, F(63.0) / _safe(max_min), _F0)
        ls = np.minimum(_round(inv_scale[:, None] * scales) & 0xFF, 63)
        lm = np.minimum(_round(inv_min[:, None] * mins) & 0xFF, 63)
        d, dmin = max_scale / F(63.0), max_min / F(63.0)
    d_bytes, d = _half(d)
    dmin_bytes, dmin = _half(dmin)
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
        w = _weights(x, qw, _sum(x * x) / F(256.0), 16)
        scales, mins, L = _qkx(xs, w, 3, F(-0.9), F(0.05), 36, False)
        sw = _sum(w).reshape(n, 16)
        dm, ls = _qp(scales.reshape(n, 16), 15, sw)
        mm, lm = _qp(mins.reshape(n, 16), 15, sw)
        sc = (ls | lm << 4).astype(np.uint8)
    else:
        scales, mins, L = _qkx(xs, np.abs(xs), 3, F(-0.5), _TENTH, 15, True)
        scales, mins = scales.reshape(n, 16), mins.reshape(n, 16)
        max_scale, max_min = _positive_max(scales), _positive_max(mins)
        has_scale, has_min = max_scale > _F0, max_min > _F0
        ls = np.where(has_scale[:, None], _round((q4scale / _safe(max_scale))[:, None] * scales) & 0xFF, 0)
        lm = np.where(has_min[:, None], (_round((q4scale / _safe(max_min))[:, None] * mins) << 4) & 0xFF, 0)
        sc = (ls | lm).astype(np.uint8)
        dm = np.where(has_scale, max_scale / q4scale, _F0)
        mm = np.where(has_min, max_min / q4scale, _F0)
    d_bytes, dm = _half(dm)
    m_bytes, mm = _half(mm)
    L = _requantize(x, L, dm[:, None] * (sc & 0xF).astype(F), mm[:, None] * (sc >> 4).astype(F), 3, 16)
    return np.concatenate([sc, _pack_2bit(L), d_bytes, m_bytes], axis=1)


def q3_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q3_K blocks (n, 110) of x (n, 256): 16 sub-blocks of 16, signed 6-bit scales, quants -4..3."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    if qw is not None:
        w = _weights(x, qw, F(2.0) * _sum(x * x) / F(256.0), 16)
        scales, L = _qx(xs, 4, w)
        d, ls = _qx(scales.reshape(n, 16), 32, _sum(w).reshape(n, 16))
    else:
        scales, L = _q3(xs, 4)
        scales = scales.reshape(n, 16)
        max_scale = _signed_absmax(scales)
        nonzero = max_scale != _F0
        iscale = F(-32.0) / _safe(max_scale)
        ls = np.where(nonzero[:, None], _round(iscale[:, None] * scales, -32, 31) + 32, 0)
        d = np.where(nonzero, _F1 / iscale, _F0)
    d_bytes, d = _half(d)
    sc = ls.astype(np.uint8)
    low = (sc[:, :8] & 0xF) | (sc[:, 8:] & 0xF) << 4
    high = np.bitwise_or.reduce((sc >> 4).reshape(n, 4, 4) << np.array([0, 2, 4, 6], np.uint8)[None, :, None], axis=1)
    dj = d[:, None] * (ls - 32).astype(F)
    again = _round(x.reshape(n, 16, 16) / _safe(dj)[:, :, None], -4, 3) + 4
    L = np.where((dj != _F0)[:, :, None], again, L.reshape(n, 16, 16)).reshape(n, 256)
    hbits = (L > 3).reshape(n, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]
    hmask = np.bitwise_or.reduce(hbits, axis=1)
    return np.concatenate([hmask, _pack_2bit(L & 3), low, high, d_bytes], axis=1)


def q6_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Q6_K blocks (n, 210) of x (n, 256): 16 sub-blocks of 16, int8 scales, quants -32..31."""
    n = x.shape[0]
    xs = x.reshape(-1, 16)
    scales, L = _qx(xs, 32, xs * xs if qw is None else qw.reshape(-1, 16))
    scales = scales.reshape(n, 16)
    max_scale = _signed_absmax(scales)
    zero = np.abs(max_scale) < _EPS
    iscale = F(-128.0) / _safe(max_scale)
    d_bytes, d = _half(_F1 / iscale)
    sc = np.minimum(_round(iscale[:, None] * scales), 127)
    dj = d[:, None] * sc.astype(F)
    again = _round(x.reshape(n, 16, 16) / _safe(dj)[:, :, None], -32, 31) + 32
    L = np.where((dj != _F0)[:, :, None], again, L.reshape(n, 16, 16)).reshape(n, 2, 4, 32).astype(np.uint8)
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
    sigma2 = _sum(x * x) * (F(2.0) / F(size))
    xs = x.reshape(-1, 32)
    w = xs * xs if qw is None else _weights(x, qw, sigma2, 32)
    top = _signed_absmax(xs)
    zero = np.abs(top) < _EPS
    top = _safe(top)

    def sums(inv):
        q = _IQ4_F[_best_index(inv[:, None] * xs)]
        return _sum(w * q * xs), _sum(w * q * q)

    sumqx, sumq2 = sums(_F1 / (-top / _IQ4_F[0]))
    d = np.where(sumq2 > _F0, sumqx / _safe(sumq2), _F0)
    best = d * sumqx
    for itry in range(-7, 8):
        sumqx, sumq2 = sums(F(itry + int(IQ4_VALUES[0])) / top)
        better = (sumq2 > _F0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, sumqx / _safe(sumq2), d)
        best = np.where(better, d * sumqx, best)
    return np.where(zero, _F0, d).reshape(n, -1), xs


def iq4_nl(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """IQ4_NL blocks (n, 18) of x (n, 32)."""
    scales, _ = _iq4_scales(x, qw)
    d = scales[:, 0]
    d_bytes, _ = _half(d)
    inv = np.where(d != _F0, _F1 / _safe(d), _F0)
    return np.concatenate([d_bytes, _pack_nibbles(_best_index(inv[:, None] * x), 16)], axis=1)


def iq4_xs(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """IQ4_XS blocks (n, 136) of x (n, 256): 8 sub-blocks of 32 with 6-bit scales."""
    n = x.shape[0]
    scales, xs = _iq4_scales(x, qw)
    d = -_signed_absmax(scales) / F(32.0)
    d_bytes, _ = _half(d)
    inv = np.where(d != _F0, _F1 / _safe(d), _F0)
    lv = _round(inv[:, None] * scales, -32, 31)
    dl = (d[:, None] * lv.astype(F)).reshape(-1)
    idl = np.where(dl != _F0, _F1 / _safe(dl), _F0)
    L = _best_index(idl[:, None] * xs).reshape(n, 256)
    lv = (lv + 32).astype(np.uint16)
    scales_l = (lv[:, 0::2] & 0xF | (lv[:, 1::2] & 0xF) << 4).astype(np.uint8)
    scales_h = np.bitwise_or.reduce((lv >> 4) << np.arange(0, 16, 2, dtype=np.uint16), axis=1)
    scales_h = scales_h.astype("<u2").view(np.uint8).reshape(n, 2)
    return np.concatenate([d_bytes, scales_h, scales_l, _pack_nibbles(L, 16)], axis=1)


def _legacy_weighted(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray, nmax: int, with_min: bool):
    """quantize_row_q4_0/q4_1/q5_0/q5_1_impl of blocks x (n, 32) with importances qw (n, 32) and their rows'
    sigma2 (n,): the header bytes (d, and m where with_min) and the quants 0..2 * nmax - 1 (with_min: 0..nmax)."""
    w = _weights(x, qw, sigma2, 32)
    if with_min:
        d, the_min, L = _qkx(x, w, nmax, F(-0.9), F(0.05), 36, False)
        return np.concatenate([_half(d)[0], _half(-the_min)[0]], axis=1), L  # m: the minimum itself, <= 0
    d, L = _qx(x, nmax, w)
    return _half(d)[0], L


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
            sigma2 = np.repeat(_sum(x * x) / F(n_per_row), n_per_row // block)
            out = WEIGHTED_LEGACY[qtype](blocks, qw, sigma2)
        else:
            out = QUANTIZERS[qtype](blocks, qw)
    return out.reshape(rows, n_per_row // block * size)
