"""The searches and roundings the NumPy reference of the K-type quantizers shares (mistralcli/reference/kquants.py):
llama.cpp's ggml-quants.c helpers make_qx_quants (qx), make_q3_quants (q3), make_qp_quants (qp), make_qkx2/3_quants
(qkx) and nearest_int (nearest), vectorized over groups of weights: (groups, n) arrays in, per-group scales
(groups,) and quants (groups, n) int32 out; a loop runs over the element index, a search's candidates or
refinement rounds, never over groups. Every value is a float32 computed in the C code's order, sums added element
by element (ordered_sum), so the bytes built on them are llama.cpp's."""

import numpy as np

F = np.float32
F0 = F(0.0)
F1 = F(1.0)
EPS = F(1e-15)  # GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero
TENTH = F(0.1)


def ordered_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in index order, from 0, as the C loops add (np.sum adds pairwise)."""
    s = np.zeros(a.shape[:-1], F)
    for i in range(a.shape[-1]):
        s = s + a[..., i]
    return s


def nearest(v: np.ndarray, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    """nearest_int (round half to even), clamped to [lo, hi] where given, as int32. An infinity (a scale's
    inverse past float32's range, from denormal weights) rounds to -2**22 and a NaN to 0, as ggml's float
    trick makes them."""
    r = np.rint(v)
    r = np.where(np.isinf(r), F(-4194304.0), np.where(np.isnan(r), F0, r))
    if lo is not None or hi is not None:
        r = np.clip(r, lo, hi)
    return r.astype(np.int32)


def signed_absmax(x: np.ndarray) -> np.ndarray:
    """The element of largest magnitude of each group, the first of equals; 0 where all are 0."""
    picked = np.take_along_axis(x, np.argmax(np.abs(x), axis=-1)[..., None], axis=-1)[..., 0]
    return np.where(np.abs(picked) > F0, picked, F0)


def positive_max(x: np.ndarray) -> np.ndarray:
    """max(0, x...) over the last axis, +0 where none is positive (the C loops start from 0)."""
    top = x.max(axis=-1)
    return np.where(top > F0, top, F0)


def half(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGML_FP32_TO_FP16: the float16 bytes (n, 2) of f (n,) and the value they hold, as float32."""
    h = f.astype("<f2")
    return h.view(np.uint8).reshape(-1, 2), h.astype(F)


def safe(d: np.ndarray) -> np.ndarray:
    """d with its zeros replaced by 1: a divisor for the lanes that keep their result."""
    return np.where(d == F0, F1, d)


def qx(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants with rmse_type 1 and weights w: signed quants -nmax..nmax-1 (returned + nmax) with one
    scale, the best of 19 candidate steps by weighted least squares."""
    top = signed_absmax(x)
    zero = np.abs(top) < EPS
    top = safe(top)
    fmax = F(nmax)

    def candidate(iscale):
        q = nearest(iscale[:, None] * x, -nmax, nmax - 1)
        fl = q.astype(F)
        return q, ordered_sum(w * x * fl), ordered_sum(w * fl * fl)

    q, sumlx, suml2 = candidate(-fmax / top)
    scale = np.where(suml2 != F0, sumlx / safe(suml2), F0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        q_is, slx, sl2 = candidate(-(fmax + TENTH * F(step)) / top)
        better = (sl2 > F0) & (slx * slx > best * sl2)
        q = np.where(better[:, None], q_is, q)
        scale = np.where(better, slx / safe(sl2), scale)
        best = np.where(better, scale * slx, best)
    return np.where(zero, F0, scale), np.where(zero[:, None], 0, q + nmax)


def q3(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_q3_quants with do_rmse: signed quants (returned + nmax) weighted by x**2, then improved one at a
    time over at most 5 rounds."""
    top = signed_absmax(x)
    zero = np.abs(top) < EPS
    q = nearest((-F(nmax) / safe(top))[:, None] * x, -nmax, nmax - 1)
    w = x * x
    fl = q.astype(F)
    sumlx, suml2 = ordered_sum(w * x * fl), ordered_sum(w * fl * fl)
    active = ~zero
    for _ in range(5):
        changed = np.zeros_like(active)
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i], x[:, i], q[:, i]
            fl = li.astype(F)
            slx = sumlx - wi * xi * fl
            sl2 = suml2 - wi * fl * fl
            new = nearest(xi * sl2 / safe(slx), -nmax, nmax - 1)
            fn = new.astype(F)
            slx_new = slx + wi * xi * fn
            sl2_new = sl2 + wi * fn * fn
            take = active & (slx > F0) & (new != li) & (sl2_new > F0)
            take &= slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new
            q[:, i] = np.where(take, new, li)
            sumlx = np.where(take, slx_new, sumlx)
            suml2 = np.where(take, sl2_new, suml2)
            changed |= take
        active &= changed
        if not active.any():
            break
    scale = np.where(suml2 > F0, sumlx / safe(suml2), F0)
    return np.where(zero, F0, scale), np.where(zero[:, None], 0, q + nmax)


def qp(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qp_quants: non-negative quants 0..nmax of the (non-negative) sub-block scales x, weighted by w: the
    best of 9 candidate steps, then improved one at a time over at most 5 rounds."""
    top = positive_max(x)
    zero = top < EPS
    top = safe(top)
    fmax = F(nmax)
    iscale = fmax / top
    scale = F1 / iscale
    diff = x - scale[:, None] * nearest(iscale[:, None] * x).astype(F)
    best = ordered_sum(w * diff * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (TENTH * F(step) + fmax) / top
        scale_is = F1 / iscale_is
        diff = x - scale_is[:, None] * nearest(iscale_is[:, None] * x, None, nmax).astype(F)
        mse = ordered_sum(w * diff * diff)
        better = mse < best
        best = np.where(better, mse, best)
        iscale = np.where(better, iscale_is, iscale)
    q = nearest(iscale[:, None] * x, None, nmax)
    fl = q.astype(F)
    sumlx, suml2 = ordered_sum(w * x * fl), ordered_sum(w * fl * fl)
    active = ~zero
    for _ in range(5):
        changed = np.zeros_like(active)
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i], x[:, i], q[:, i]
            fl = li.astype(F)
            slx = sumlx - wi * xi * fl
            sl2 = suml2 - wi * fl * fl
            new = nearest(xi * sl2 / safe(slx), None, nmax)
            fn = new.astype(F)
            slx_new = slx + wi * xi * fn
            sl2_new = sl2 + wi * fn * fn
            take = active & (slx > F0) & (sl2 > F0) & (new != li)
            take &= slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new
            q[:, i] = np.where(take, new, li)
            sumlx = np.where(take, slx_new, sumlx)
            suml2 = np.where(take, sl2_new, suml2)
            changed |= take
        active &= changed
        if not active.any():
            break
    scale = np.where(suml2 > F0, sumlx / safe(suml2), F0)
    return np.where(zero, F0, scale), np.where(zero[:, None], 0, q)


def qkx(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants (the same once the weights are given; nstep >= 1): quants 0..nmax
    with a scale and a minimum, the scale searched over nstep + 1 candidates by weighted least squares
    (absolute differences where use_mad). Returns (scale, -minimum, quants)."""
    fmax = F(nmax)
    lo = x.min(axis=1)
    lo = np.where(lo > F0, F0, lo)
    hi = x.max(axis=1)
    flat = hi <= lo
    span = np.where(flat, F1, hi - lo)
    sum_w = w[:, 0]
    sum_x = sum_w * x[:, 0]
    for i in range(1, x.shape[1]):
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]

    def error(scale, fl, minimum):
        diff = scale[:, None] * fl + minimum[:, None] - x
        return ordered_sum(w * (np.abs(diff) if use_mad else diff * diff))

    iscale = fmax / span
    scale = F1 / iscale
    L = nearest(iscale[:, None] * (x - lo[:, None]), 0, nmax)
    best = error(scale, L.astype(F), lo)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F(step) + fmax) / safe(hi - lo)
        aux = nearest(iscale[:, None] * (x - lo[:, None]), 0, nmax)
        fl = aux.astype(F)
        sum_l, sum_l2, sum_xl = ordered_sum(w * fl), ordered_sum(w * fl * fl), ordered_sum(w * fl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe(D)
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe(D)
        clamped = this_min > F0
        this_min = np.where(clamped, F0, this_min)
        this_scale = np.where(clamped, sum_xl / safe(sum_l2), this_scale)
        err = error(this_scale, fl, this_min)
        better = (D > F0) & (err < best)
        L = np.where(better[:, None], aux, L)
        best = np.where(better, err, best)
        scale = np.where(better, this_scale, scale)
        lo = np.where(better, this_min, lo)
    return np.where(flat, F0, scale), -lo, np.where(flat[:, None], 0, L)


def importance_weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray, size: int) -> np.ndarray:
    """qw * sqrt(sigma2 + x**2) of blocks x (n, block), sigma2 (n,), as sub-blocks (n * block / size, size)."""
    nsub = x.shape[1] // size
    xs = x.reshape(-1, size)
    return qw.reshape(-1, size) * np.sqrt(np.repeat(sigma2, nsub)[:, None] + xs * xs)
