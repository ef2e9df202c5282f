"""Causal grouped-query attention for prefill (Numba), one pass with an online softmax.

Legend: T queries, S keys, H query heads, Hkv key/value heads, D head dim.
Reference: mistralcli.ops.reference.ReferenceOps.attention (same signature; tolerance 1e-5).
"""

import numpy as np
from numba import njit, prange


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def causal_attention(out, q, k, v, q_positions, k_positions, scale):
    """out (T, H, D) = softmax(q k^T * scale, keys at positions <= the query's) v.

    q (T, H, D), k/v (S, Hkv, D) float32; q_positions (T,), k_positions (S,) int64.
    """
    num_tokens, num_heads, head_dim = q.shape
    num_keys, num_kv_heads = k.shape[0], k.shape[1]
    group = num_heads // num_kv_heads
    for job in prange(num_tokens * num_heads):
        t = job // num_heads
        h = job % num_heads
        kvh = h // group
        limit = q_positions[t]
        best = -np.inf
        total = np.float32(0.0)
        acc = np.zeros(head_dim, dtype=np.float32)
        for s in range(num_keys):
            if k_positions[s] > limit:
                continue
            score = np.float32(0.0)
            for i in range(head_dim):
                score += q[t, h, i] * k[s, kvh, i]
            score *= scale
            if score > best:  # a new maximum: rescale what was summed so far
                correction = np.exp(best - score)
                total *= correction
                for i in range(head_dim):
                    acc[i] *= correction
                best = score
            p = np.exp(score - best)
            total += p
            for i in range(head_dim):
                acc[i] += p * v[s, kvh, i]
        for i in range(head_dim):
            out[t, h, i] = acc[i] / total
