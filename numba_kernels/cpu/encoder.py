"""An encoder's ops (Numba, parallel over rows or over sequences and heads): LayerNorm with a bias, GELU (the
erf form, erf to float32's rounding), and bidirectional attention over packed sequences (each attends to its own
tokens, no padding). References: mistralcli.reference.ops (layernorm, gelu, encoder_attention, pool); one caller at
a time (the embedder's lock), as Numba's parallel layer wants."""

import math

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True, parallel=True, fastmath=False)
def layernorm(out, x, weight, bias, eps):
    """out[t] = (x[t] - mean) / sqrt(var + eps) * weight + bias, the sums in float64 (as the reference's)."""
    rows, cols = x.shape
    for t in prange(rows):
        mean = 0.0
        for j in range(cols):
            mean += x[t, j]
        mean /= cols
        var = 0.0
        for j in range(cols):
            d = x[t, j] - mean
            var += d * d
        inv = 1.0 / math.sqrt(var / cols + eps)
        for j in range(cols):
            out[t, j] = np.float32((x[t, j] - mean) * inv) * weight[j] + bias[j]


@njit(nogil=True, cache=True, inline="always")
def _erf(x):
    """erf in float32 by Abramowitz and Stegun 7.1.28 (|error| < 3e-7, about float32's rounding): products and one
    division, no exp and no branch, so that the loops around it vectorize."""
    a = min(abs(x), np.float32(4.0))  # erf(4) is 1 in float32; beyond, p ** 16 would overflow
    p = np.float32(1.0) + a * (
        np.float32(0.0705230784)
        + a
        * (
            np.float32(0.0422820123)
            + a
            * (
                np.float32(0.0092705272)
                + a * (np.float32(0.0001520143) + a * (np.float32(0.0002765672) + a * np.float32(0.0000430638)))
            )
        )
    )
    p2 = p * p
    p4 = p2 * p2
    p8 = p4 * p4
    y = np.float32(1.0) - np.float32(1.0) / (p8 * p8)
    return np.float32(math.copysign(y, x))


@njit(nogil=True, cache=True, parallel=True, fastmath=True)
def gelu(out, x):
    """out = x * (1 + erf(x / sqrt 2)) / 2 in float32, in place where out is x."""
    rows, cols = x.shape
    half, inv_sqrt2 = np.float32(0.5), np.float32(0.7071067811865476)
    for t in prange(rows):
        for j in range(cols):
            v = x[t, j]
            out[t, j] = half * v * (np.float32(1.0) + _erf(v * inv_sqrt2))


@njit(nogil=True, cache=True, parallel=True, fastmath=True)
def encoder_attention(out, q, k, v, starts, scale):
    """q, k, v (T, H, D) packed sequences, starts (B + 1,) their bounds: each query attends to every key of its
    own sequence -> out (T, H, D)."""
    num_seqs = len(starts) - 1
    num_heads, dim = q.shape[1], q.shape[2]
    scale32 = np.float32(scale)
    for job in prange(num_seqs * num_heads):
        s, h = job // num_heads, job % num_heads
        a, b = starts[s], starts[s + 1]
        n = b - a
        scores = np.empty(n, dtype=np.float32)
        acc = np.empty(dim, dtype=np.float32)
        for i in range(a, b):
            best = np.float32(-np.inf)
            for j in range(n):
                dot = np.float32(0.0)
                for d in range(dim):
                    dot += q[i, h, d] * k[a + j, h, d]
                scores[j] = dot * scale32
                best = max(best, scores[j])
            total = np.float32(0.0)
            for j in range(n):
                scores[j] = np.exp(scores[j] - best)
                total += scores[j]
            acc[:] = 0.0
            for j in range(n):
                p = scores[j] / total
                for d in range(dim):
                    acc[d] += p * v[a + j, h, d]
            for d in range(dim):
                out[i, h, d] = acc[d]


@njit(nogil=True, cache=True, parallel=True, fastmath=False)
def pool(out, h, starts, mode):
    """Each packed sequence's vector: mode 0 the mean of its tokens (float64 sums), 1 its first token (CLS), 2
    its last."""
    num_seqs, cols = len(starts) - 1, h.shape[1]
    for s in prange(num_seqs):
        a, b = starts[s], starts[s + 1]
        if mode == 0:
            for j in range(cols):
                total = 0.0
                for t in range(a, b):
                    total += h[t, j]
                out[s, j] = np.float32(total / (b - a))
        else:
            row = a if mode == 1 else b - 1
            for j in range(cols):
                out[s, j] = h[row, j]
