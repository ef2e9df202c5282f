"""Quantizers of the K types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256 weights a super-block) and of IQ4_NL and
IQ4_XS, in Numba, parallel over super-blocks. They follow llama.cpp's ggml-quants.c, the algorithms its
`llama-quantize` runs: without an importance matrix its reference quantizers (quantize_row_*_ref, and for
IQ4 the search with 7 tries that quantize_iq4_* makes), with one the weighted searches (quantize_row_*_impl).
Every value is a float32 computed in the C code's order, constants included (no fastmath; divisions as IEEE
has them, error_model="numpy"), so the bytes match the NumPy reference in mistralcli/reference/kquants.py bit
for bit (tests/test_kquants.py). Per thread they run as fast as llama.cpp's C: the searches' sums are chains
that cannot be reordered, and the CPU overlaps the sub-blocks' chains on its own (8 sub-blocks run side by
side in SIMD lanes measured no faster).

Each kernel takes x (n_blocks, 256) float32 (IQ4_NL: (n_blocks, 32)), qw (blocks per row, block) float32,
the importance of each column of a row, used when `weighted`, and writes the packed blocks into out
(n_blocks, block bytes) uint8, in the layouts _ext/kernels/dequant.h reads."""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_EPS = np.float32(1e-15)  # GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero
_TENTH = np.float32(0.1)
IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_CHUNK = 16  # super-blocks a thread quantizes with one set of scratch arrays


@intrinsic
def _bits(typingctx, f):
    """The bits of a float32 as an int32 (a bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _nearest(f):
    """ggml's nearest_int, its own float trick: f + 1.5 * 2**23 rounds to an integer in the low mantissa bits
    (half to even). Branch-free, and what ggml gives outside its range too: NaN 0, an infinity -2**22."""
    return (_bits(f + np.float32(12582912.0)) & np.int32(0x007FFFFF)) - np.int32(0x00400000)


@njit(nogil=True, cache=True, error_model="numpy")
def half_bits(f):
    """float32 -> IEEE float16 bits, rounded to nearest even (numpy's astype, F16C's vcvtps2ph)."""
    sign = 0x8000 if math.copysign(1.0, f) < 0 else 0
    a = abs(np.float64(f))
    if a != a:
        return np.uint16(sign | 0x7E00)
    if a >= 65520.0:
        return np.uint16(sign | 0x7C00)
    if a < 6.103515625e-05:  # 2**-14: subnormal (a carry into the smallest normal is the right bits)
        return np.uint16(sign | int(np.rint(a * 16777216.0)))
    m, e = math.frexp(a)
    mant = int(np.rint(m * 2048.0))
    exp = e + 14
    if mant == 2048:
        mant, exp = 1024, exp + 1
    return np.uint16(sign | (exp << 10) | (mant - 1024))


@njit(nogil=True, cache=True, error_model="numpy")
def half_value(h):
    """IEEE float16 bits -> float32."""
    exp = (h >> 10) & 31
    mant = np.float64(h & 1023)
    if exp == 0:
        v = mant * 5.960464477539063e-08
    elif exp == 31:
        v = np.inf if mant == 0 else np.nan
    else:
        v = (1024.0 + mant) * 2.0 ** (exp - 25)
    return np.float32(-v if h & 0x8000 else v)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _rounded(f):
    """f as float16 holds it, back as float32 (GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(f)))."""
    return half_value(half_bits(f))


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _put_half(out, b, at, f):
    h = half_bits(f)
    out[b, at] = np.uint8(h & 0xFF)
    out[b, at + 1] = np.uint8(h >> 8)
    return half_value(h)


@njit(nogil=True, cache=True, error_model="numpy")
def _qkx(x, w, L, Laux, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants (the same with weights given): quants 0..nmax of x with a scale and
    a minimum, the scale searched over nstep + 1 candidates by weighted least squares. Returns (scale, -min)."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    lo, hi = x[0], x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if lo > _F0:
        lo = _F0
    if hi <= lo:
        for i in range(n):
            L[i] = 0
        return _F0, -lo
    iscale = fmax / (hi - lo)
    scale = _F1 / iscale
    best = _F0
    for i in range(n):
        L[i] = max(0, min(nmax, _nearest(iscale * (x[i] - lo))))
        diff = scale * np.float32(L[i]) + lo - x[i]
        best += w[i] * (abs(diff) if use_mad else diff * diff)
    if nstep < 1:
        return scale, -lo
    for i in range(n):
        Laux[i] = -1
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * np.float32(step) + fmax) / (hi - lo)
        changed = False
        for i in range(n):
            q = max(0, min(nmax, _nearest(iscale * (x[i] - lo))))
            changed |= q != Laux[i]
            Laux[i] = q
        if not changed:  # the last candidate's quants: its sums, scale, minimum and error, so its verdict
            continue
        sum_l, sum_l2, sum_xl = _F0, _F0, _F0
        for i in range(n):
            fl = np.float32(Laux[i])
            sum_l += w[i] * fl
            sum_l2 += w[i] * fl * fl
            sum_xl += w[i] * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > _F0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > _F0:
                this_min = _F0
                this_scale = sum_xl / sum_l2
            err = _F0
            for i in range(n):
                diff = this_scale * np.float32(Laux[i]) + this_min - x[i]
                err += w[i] * (abs(diff) if use_mad else diff * diff)
            if err < best:
                for i in range(n):
                    L[i] = Laux[i]
                best, scale, lo = err, this_scale, this_min
    return scale, -lo


@njit(nogil=True, cache=True, error_model="numpy")
def _qx(x, L, nmax, qw, weighted, last):
    """make_qx_quants with rmse_type 1: signed quants -nmax..nmax-1 (stored + nmax) of x with one scale,
    searched over 19 candidates; weights qw, or x**2. last: scratch of x's length."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    top, amax = _F0, _F0
    for i in range(n):
        if abs(x[i]) > amax:
            amax, top = abs(x[i]), x[i]
    if amax < _EPS:
        for i in range(n):
            L[i] = 0
        return _F0
    iscale = -fmax / top
    sumlx, suml2 = _F0, _F0
    for i in range(n):
        q = max(-nmax, min(nmax - 1, _nearest(iscale * x[i])))
        L[i] = q + nmax
        w = qw[i] if weighted else x[i] * x[i]
        fl = np.float32(q)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    scale = sumlx / suml2 if suml2 != _F0 else _F0
    best = scale * sumlx
    for i in range(n):
        last[i] = L[i]  # the last candidate's quants (+ nmax): the first candidate's here
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fmax + _TENTH * np.float32(step)) / top
        changed = False
        for i in range(n):
            q = nmax + max(-nmax, min(nmax - 1, _nearest(iscale * x[i])))
            changed |= q != last[i]
            last[i] = q
        if not changed:  # the same sums: the same verdict, and taking it again would change nothing
            continue
        sumlx, suml2 = _F0, _F0
        for i in range(n):
            fl = np.float32(last[i] - nmax)
            w = qw[i] if weighted else x[i] * x[i]
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        if suml2 > _F0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = last[i]
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(nogil=True, cache=True, error_model="numpy")
def _q3(x, L, nmax):
    """make_q3_quants with do_rmse: signed quants (stored + nmax), improved one at a time (5 rounds)."""
    n = x.shape[0]
    top, amax = _F0, _F0
    for i in range(n):
        if abs(x[i]) > amax:
            amax, top = abs(x[i]), x[i]
    if amax < _EPS:
        for i in range(n):
            L[i] = 0
        return _F0
    iscale = -np.float32(nmax) / top
    sumlx, suml2 = _F0, _F0
    for i in range(n):
        q = max(-nmax, min(nmax - 1, _nearest(iscale * x[i])))
        L[i] = q
        w = x[i] * x[i]
        sumlx += w * x[i] * np.float32(q)
        suml2 += w * np.float32(q) * np.float32(q)
    for _ in range(5):
        changed = 0
        for i in range(n):
            w = x[i] * x[i]
            fl = np.float32(L[i])
            slx = sumlx - w * x[i] * fl
            if slx > _F0:
                sl2 = suml2 - w * fl * fl
                new = max(-nmax, min(nmax - 1, _nearest(x[i] * sl2 / slx)))
                if new != L[i]:
                    fn = np.float32(new)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if sl2 > _F0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new
                        sumlx, suml2 = slx, sl2
                        changed += 1
        if changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > _F0 else _F0


@njit(nogil=True, cache=True, error_model="numpy")
def _qp(x, L, nmax, qw):
    """make_qp_quants: non-negative quants 0..nmax of the sub-block scales, weighted by qw."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    top = _F0
    for i in range(n):
        top = max(top, x[i])
    if top < _EPS:
        for i in range(n):
            L[i] = 0
        return _F0
    iscale = fmax / top
    for i in range(n):
        L[i] = _nearest(iscale * x[i])
    scale = _F1 / iscale
    best = _F0
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        best += qw[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (_TENTH * np.float32(step) + fmax) / top
        scale_is = _F1 / iscale_is
        mse = _F0
        for i in range(n):
            diff = x[i] - scale_is * np.float32(min(nmax, _nearest(iscale_is * x[i])))
            mse += qw[i] * diff * diff
        if mse < best:
            best, iscale = mse, iscale_is
    sumlx, suml2 = _F0, _F0
    for i in range(n):
        q = min(nmax, _nearest(iscale * x[i]))
        L[i] = q
        sumlx += qw[i] * x[i] * np.float32(q)
        suml2 += qw[i] * np.float32(q) * np.float32(q)
    for _ in range(5):
        changed = 0
        for i in range(n):
            fl = np.float32(L[i])
            slx = sumlx - qw[i] * x[i] * fl
            sl2 = suml2 - qw[i] * fl * fl
            if slx > _F0 and sl2 > _F0:
                new = min(nmax, _nearest(x[i] * sl2 / slx))
                if new != L[i]:
                    fn = np.float32(new)
                    slx += qw[i] * x[i] * fn
                    sl2 += qw[i] * fn * fn
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new
                        sumlx, suml2 = slx, sl2
                        changed += 1
        if changed == 0:
            break
    return sumlx / suml2 if suml2 > _F0 else _F0


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _sum_squares(x):
    s = _F0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _weights(xs, qs, sigma2, w):
    """The weighted searches' weights, qs * sqrt(sigma2 + x**2), into w; their sum, added in order."""
    for i in range(xs.shape[0]):
        w[i] = qs[i] * np.sqrt(sigma2 + xs[i] * xs[i])
    s = _F0
    for i in range(xs.shape[0]):
        s += w[i]
    return s


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
        if dj == _F0:
            continue
        dm = dmin * np.float32(m)
        for i in range(size):
            L[size * j + i] = max(0, min(nmax, _nearest((x[size * j + i] + dm) / dj)))


@njit(nogil=True, cache=True, error_model="numpy")
def _q4_q5_k_block(x, qw, weighted, out, b, nmax, L, Laux, w, scales, mins, sw, Ls, Lm):
    """One Q4_K (nmax 15) or Q5_K (nmax 31) super-block's scales, minimums and quants; the quants into L."""
    sigma2 = _F0
    if weighted:
        sigma2 = np.float32(2.0) * _sum_squares(x) / np.float32(256.0)
    for j in range(8):
        xs = x[32 * j : 32 * j + 32]
        if weighted:
            sw[j] = _weights(xs, qw[32 * j : 32 * j + 32], sigma2, w)
            scales[j], mins[j] = _qkx(
                xs, w, L[32 * j : 32 * j + 32], Laux, nmax, np.float32(-0.9), np.float32(0.05), 36, False
            )
        else:
            av = np.sqrt(_sum_squares(xs) / np.float32(32.0))
            for i in range(32):
                w[i] = av + abs(xs[i])
            if nmax == 15:
                rmin, nstep = np.float32(-1.0), 20
            else:
                rmin, nstep = np.float32(-0.5), 15
            scales[j], mins[j] = _qkx(xs, w, L[32 * j : 32 * j + 32], Laux, nmax, rmin, _TENTH, nstep, False)
    if weighted:
        d = _qp(scales, Ls, 63, sw)
        dmin = _qp(mins, Lm, 63, sw)
    else:
        max_scale, max_min = _F0, _F0
        for j in range(8):
            max_scale = max(max_scale, scales[j])
            max_min = max(max_min, mins[j])
        inv_scale = np.float32(63.0) / max_scale if max_scale > _F0 else _F0
        inv_min = np.float32(63.0) / max_min if max_min > _F0 else _F0
        for j in range(8):
            Ls[j] = min(63, _nearest(inv_scale * scales[j]) & 0xFF)
            Lm[j] = min(63, _nearest(inv_min * mins[j]) & 0xFF)
        d = max_scale / np.float32(63.0)
        dmin = max_min / np.float32(63.0)
    for j in range(8):
        Ls[j] = min(63, Ls[j])
        Lm[j] = min(63, Lm[j])
    _pack_k4_scales(out, b, 4, Ls, Lm)
    d = _put_half(out, b, 0, d)
    dmin = _put_half(out, b, 2, dmin)
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
            sigma2 = _sum_squares(xb) / np.float32(256.0)
            for j in range(16):
                xs = xb[16 * j : 16 * j + 16]
                if weighted:
                    sw[j] = _weights(xs, qb[16 * j : 16 * j + 16], sigma2, w)
                    scales[j], mins[j] = _qkx(
                        xs, w, L[16 * j : 16 * j + 16], Laux, 3, np.float32(-0.9), np.float32(0.05), 36, False
                    )
                else:
                    for i in range(16):
                        w[i] = abs(xs[i])
                    scales[j], mins[j] = _qkx(
                        xs, w, L[16 * j : 16 * j + 16], Laux, 3, np.float32(-0.5), _TENTH, 15, True
                    )
            if weighted:
                dm = _qp(scales, Ls, 15, sw)
                mm = _qp(mins, Lm, 15, sw)
                for j in range(16):
                    out[b, j] = np.uint8(Ls[j] | (Lm[j] << 4))
            else:
                max_scale, max_min = _F0, _F0
                for j in range(16):
                    max_scale = max(max_scale, scales[j])
                    max_min = max(max_min, mins[j])
                dm, mm = _F0, _F0
                for j in range(16):
                    out[b, j] = 0
                if max_scale > _F0:
                    iscale = q4scale / max_scale
                    for j in range(16):
                        out[b, j] = np.uint8(_nearest(iscale * scales[j]) & 0xFF)
                    dm = max_scale / q4scale
                if max_min > _F0:
                    iscale = q4scale / max_min
                    for j in range(16):
                        out[b, j] |= np.uint8((_nearest(iscale * mins[j]) << 4) & 0xFF)
                    mm = max_min / q4scale
            dm = _put_half(out, b, 80, dm)
            mm = _put_half(out, b, 82, mm)
            for j in range(16):
                sc = np.int32(out[b, j])
                dj = dm * np.float32(sc & 0xF)
                if dj == _F0:
                    continue
                m = mm * np.float32(sc >> 4)
                for i in range(16):
                    L[16 * j + i] = max(0, min(3, _nearest((xb[16 * j + i] + m) / dj)))
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
                sigma2 = np.float32(2.0) * _sum_squares(xb) / np.float32(256.0)
                for j in range(16):
                    xs = xb[16 * j : 16 * j + 16]
                    sw[j] = _weights(xs, qb[16 * j : 16 * j + 16], sigma2, w)
                    scales[j] = _qx(xs, L[16 * j : 16 * j + 16], 4, w, True, last)
                d = _qx(scales, Ls, 32, sw, True, last)
            else:
                max_scale, amax = _F0, _F0
                for j in range(16):
                    scales[j] = _q3(xb[16 * j : 16 * j + 16], L[16 * j : 16 * j + 16], 4)
                    if abs(scales[j]) > amax:
                        amax, max_scale = abs(scales[j]), scales[j]
                d = _F0
                if max_scale != _F0:
                    iscale = np.float32(-32.0) / max_scale
                    for j in range(16):
                        Ls[j] = max(-32, min(31, _nearest(iscale * scales[j]))) + 32
                    d = _F1 / iscale
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
            d = _put_half(out, b, 108, d)
            for j in range(16):
                dj = d * np.float32(_q3_k_scale(out, b, j))
                if dj == _F0:
                    continue
                for i in range(16):
                    L[16 * j + i] = max(-4, min(3, _nearest(xb[16 * j + i] / dj))) + 4
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
            max_scale, amax = _F0, _F0
            for j in range(16):
                sub = slice(16 * j, 16 * j + 16)
                scales[j] = _qx(xb[sub], L[sub], 32, qb[sub], weighted, last)
                if abs(scales[j]) > amax:
                    amax, max_scale = abs(scales[j]), scales[j]
            if amax < _EPS:
                for i in range(210):
                    out[b, i] = 0
                continue
            iscale = np.float32(-128.0) / max_scale
            d = _put_half(out, b, 208, _F1 / iscale)
            for j in range(16):
                sc = min(127, _nearest(iscale * scales[j]))
                out[b, 192 + j] = np.uint8(sc & 0xFF)
                dj = d * np.float32(sc)
                if dj == _F0:
                    continue
                for i in range(16):
                    L[16 * j + i] = max(-32, min(31, _nearest(xb[16 * j + i] / dj))) + 32
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
    sigma2 = _sum_squares(x) * (np.float32(2.0) / np.float32(size))
    max_scale, amax_scale = _F0, _F0
    v0 = np.float32(values[0])
    for ib in range(nsub):
        xb = x[32 * ib : 32 * ib + 32]
        for j in range(32):
            w[j] = qw[32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j]) if weighted else xb[j] * xb[j]
        amax, top = _F0, _F0
        for j in range(32):
            if abs(xb[j]) > amax:
                amax, top = abs(xb[j]), xb[j]
        if amax < _EPS:
            scales[ib] = _F0
            continue
        d = -top / v0
        inv = _F1 / d
        sumqx, sumq2 = _F0, _F0
        for j in range(32):
            k = _best_index(values, inv * xb[j])
            L[32 * ib + j] = k
            q = np.float32(values[k])
            sumqx += w[j] * q * xb[j]
            sumq2 += w[j] * q * q
        d = sumqx / sumq2 if sumq2 > _F0 else _F0
        best = d * sumqx
        for itry in range(-7, 8):
            inv = np.float32(itry + np.int32(values[0])) / top
            sumqx, sumq2 = _F0, _F0
            for j in range(32):
                q = np.float32(values[_best_index(values, inv * xb[j])])
                sumqx += w[j] * q * xb[j]
                sumq2 += w[j] * q * q
            if sumq2 > _F0 and sumqx * sumqx > best * sumq2:
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
            _put_half(out, b, 0, d)
            inv = _F1 / d if d != _F0 else _F0
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
            _put_half(out, b, 0, d)
            inv = _F1 / d if d != _F0 else _F0
            high = 0
            for i in range(4):
                out[b, 4 + i] = 0
            for ib in range(8):
                lv = max(-32, min(31, _nearest(inv * scales[ib])))
                dl = d * np.float32(lv)
                idl = _F1 / dl if dl != _F0 else _F0
                for j in range(32):
                    L[32 * ib + j] = _best_index(values, idl * xb[32 * ib + j])
                lv += 32
                out[b, 4 + ib // 2] |= np.uint8((lv & 0xF) << (4 * (ib % 2)))
                high |= (lv >> 4) << (2 * ib)
            out[b, 2] = np.uint8(high & 0xFF)
            out[b, 3] = np.uint8(high >> 8)
            _pack_iq4(out, b, 8, L, 8)


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
        sigma2 = _sum_squares(xr) / np.float32(n)
        for ib in range(per_row):
            b = r * per_row + ib
            xb, qb = xr[32 * ib : 32 * ib + 32], qw[ib]
            _weights(xb, qb, sigma2, w)  # (their sum is not used here)
            at = 2
            if with_min:
                d, the_min = _qkx(xb, w, L, Laux, nmax, np.float32(-0.9), np.float32(0.05), 36, False)
                _put_half(out, b, 0, d)
                _put_half(out, b, 2, -the_min)
                at = 4
            else:
                d = _qx(xb, L, nmax, w, True, last)
                _put_half(out, b, 0, d)
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
