"""The searches and roundings the K-type quantizers share (numba_kernels/cpu/kquants.py), in Numba: llama.cpp's
ggml-quants.c helpers make_qkx2/3_quants (qkx), make_qx_quants (qx), make_q3_quants (q3), make_qp_quants (qp),
nearest_int (nearest, its own float trick) and GGML_FP32_TO_FP16 (half_bits, put_half). Every value is a float32
computed in the C code's order, constants included (no fastmath; divisions as IEEE has them, error_model="numpy"),
so the bytes of the kernels built on them match llama.cpp's and the NumPy reference's (mistralcli/reference)."""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F0 = np.float32(0.0)
F1 = np.float32(1.0)
EPS = np.float32(1e-15)  # GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero
TENTH = np.float32(0.1)


@intrinsic
def _bits(typingctx, f):
    """The bits of a float32 as an int32 (a bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def nearest(f):
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
def put_half(out, b, at, f):
    h = half_bits(f)
    out[b, at] = np.uint8(h & 0xFF)
    out[b, at + 1] = np.uint8(h >> 8)
    return half_value(h)


@njit(nogil=True, cache=True, error_model="numpy")
def qkx(x, w, L, Laux, nmax, rmin, rdelta, nstep, use_mad):
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
    if lo > F0:
        lo = F0
    if hi <= lo:
        for i in range(n):
            L[i] = 0
        return F0, -lo
    iscale = fmax / (hi - lo)
    scale = F1 / iscale
    best = F0
    for i in range(n):
        L[i] = max(0, min(nmax, nearest(iscale * (x[i] - lo))))
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
            q = max(0, min(nmax, nearest(iscale * (x[i] - lo))))
            changed |= q != Laux[i]
            Laux[i] = q
        if not changed:  # the last candidate's quants: its sums, scale, minimum and error, so its verdict
            continue
        sum_l, sum_l2, sum_xl = F0, F0, F0
        for i in range(n):
            fl = np.float32(Laux[i])
            sum_l += w[i] * fl
            sum_l2 += w[i] * fl * fl
            sum_xl += w[i] * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F0:
                this_min = F0
                this_scale = sum_xl / sum_l2
            err = F0
            for i in range(n):
                diff = this_scale * np.float32(Laux[i]) + this_min - x[i]
                err += w[i] * (abs(diff) if use_mad else diff * diff)
            if err < best:
                for i in range(n):
                    L[i] = Laux[i]
                best, scale, lo = err, this_scale, this_min
    return scale, -lo


@njit(nogil=True, cache=True, error_model="numpy")
def qx(x, L, nmax, qw, weighted, last):
    """make_qx_quants with rmse_type 1: signed quants -nmax..nmax-1 (stored + nmax) of x with one scale,
    searched over 19 candidates; weights qw, or x**2. last: scratch of x's length."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    top, amax = F0, F0
    for i in range(n):
        if abs(x[i]) > amax:
            amax, top = abs(x[i]), x[i]
    if amax < EPS:
        for i in range(n):
            L[i] = 0
        return F0
    iscale = -fmax / top
    sumlx, suml2 = F0, F0
    for i in range(n):
        q = max(-nmax, min(nmax - 1, nearest(iscale * x[i])))
        L[i] = q + nmax
        w = qw[i] if weighted else x[i] * x[i]
        fl = np.float32(q)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    scale = sumlx / suml2 if suml2 != F0 else F0
    best = scale * sumlx
    for i in range(n):
        last[i] = L[i]  # the last candidate's quants (+ nmax): the first candidate's here
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fmax + TENTH * np.float32(step)) / top
        changed = False
        for i in range(n):
            q = nmax + max(-nmax, min(nmax - 1, nearest(iscale * x[i])))
            changed |= q != last[i]
            last[i] = q
        if not changed:  # the same sums: the same verdict, and taking it again would change nothing
            continue
        sumlx, suml2 = F0, F0
        for i in range(n):
            fl = np.float32(last[i] - nmax)
            w = qw[i] if weighted else x[i] * x[i]
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        if suml2 > F0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = last[i]
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(nogil=True, cache=True, error_model="numpy")
def q3(x, L, nmax):
    """make_q3_quants with do_rmse: signed quants (stored + nmax), improved one at a time (5 rounds)."""
    n = x.shape[0]
    top, amax = F0, F0
    for i in range(n):
        if abs(x[i]) > amax:
            amax, top = abs(x[i]), x[i]
    if amax < EPS:
        for i in range(n):
            L[i] = 0
        return F0
    iscale = -np.float32(nmax) / top
    sumlx, suml2 = F0, F0
    for i in range(n):
        q = max(-nmax, min(nmax - 1, nearest(iscale * x[i])))
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
            if slx > F0:
                sl2 = suml2 - w * fl * fl
                new = max(-nmax, min(nmax - 1, nearest(x[i] * sl2 / slx)))
                if new != L[i]:
                    fn = np.float32(new)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if sl2 > F0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new
                        sumlx, suml2 = slx, sl2
                        changed += 1
        if changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > F0 else F0


@njit(nogil=True, cache=True, error_model="numpy")
def qp(x, L, nmax, qw):
    """make_qp_quants: non-negative quants 0..nmax of the sub-block scales, weighted by qw."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    top = F0
    for i in range(n):
        top = max(top, x[i])
    if top < EPS:
        for i in range(n):
            L[i] = 0
        return F0
    iscale = fmax / top
    for i in range(n):
        L[i] = nearest(iscale * x[i])
    scale = F1 / iscale
    best = F0
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        best += qw[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (TENTH * np.float32(step) + fmax) / top
        scale_is = F1 / iscale_is
        mse = F0
        for i in range(n):
            diff = x[i] - scale_is * np.float32(min(nmax, nearest(iscale_is * x[i])))
            mse += qw[i] * diff * diff
        if mse < best:
            best, iscale = mse, iscale_is
    sumlx, suml2 = F0, F0
    for i in range(n):
        q = min(nmax, nearest(iscale * x[i]))
        L[i] = q
        sumlx += qw[i] * x[i] * np.float32(q)
        suml2 += qw[i] * np.float32(q) * np.float32(q)
    for _ in range(5):
        changed = 0
        for i in range(n):
            fl = np.float32(L[i])
            slx = sumlx - qw[i] * x[i] * fl
            sl2 = suml2 - qw[i] * fl * fl
            if slx > F0 and sl2 > F0:
                new = min(nmax, nearest(x[i] * sl2 / slx))
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
    return sumlx / suml2 if suml2 > F0 else F0


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def sum_squares(x):
    s = F0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def importance_weights(xs, qs, sigma2, w):
    """The weighted searches' weights, qs * sqrt(sigma2 + x**2), into w; their sum, added in order."""
    for i in range(xs.shape[0]):
        w[i] = qs[i] * np.sqrt(sigma2 + xs[i] * xs[i])
    s = F0
    for i in range(xs.shape[0]):
        s += w[i]
    return s
