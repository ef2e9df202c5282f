"""Mixture-of-experts routing (Numba): each token's top-k experts and weights, the tokens grouped by
expert, and the experts' outputs added back into the tokens' rows. The experts' products themselves
run on the quantized weights through the usual kernels (ops.matmul), one expert at a time over the
tokens routed to it. References: mistralcli.ops.reference (route_experts, group_by_expert,
scatter_add_rows).
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def route_experts(logits, k, renormalize, ids, weights):
    """Per token t: softmax of logits[t] (E,) in float64, its k largest (ties: the lower expert first)
    into ids[t] (k,) int32 and weights[t] (k,) float32, renormalized to sum 1 when asked."""
    num_tokens, num_experts = logits.shape
    probs = np.empty(num_experts, dtype=np.float64)
    taken = np.empty(num_experts, dtype=np.bool_)
    for t in range(num_tokens):
        best = -np.inf
        for e in range(num_experts):
            best = max(best, np.float64(logits[t, e]))
        total = 0.0
        for e in range(num_experts):
            probs[e] = np.exp(np.float64(logits[t, e]) - best)
            total += probs[e]
        chosen = 0.0
        taken[:] = False
        for j in range(k):
            pick = -1
            for e in range(num_experts):
                if not taken[e] and (pick < 0 or probs[e] > probs[pick]):
                    pick = e
            taken[pick] = True
            ids[t, j] = pick
            weights[t, j] = probs[pick] / total
            chosen += probs[pick] / total
        if renormalize:
            for j in range(k):
                weights[t, j] = np.float32(np.float64(weights[t, j]) / chosen)


@njit(nogil=True, cache=True)
def group_by_expert(ids, num_experts, order, offsets):
    """A counting sort of the (token, slot) pairs by expert: order[offsets[e]:offsets[e + 1]] are the
    flat indices t * k + slot routed to expert e, in token order. offsets (E + 1,)."""
    num_tokens, k = ids.shape
    offsets[:] = 0
    for t in range(num_tokens):
        for j in range(k):
            offsets[ids[t, j] + 1] += 1
    for e in range(num_experts):
        offsets[e + 1] += offsets[e]
    fill = offsets[:num_experts].copy()
    for t in range(num_tokens):
        for j in range(k):
            e = ids[t, j]
            order[fill[e]] = t * k + j
            fill[e] += 1


@njit(nogil=True, cache=True)
def scatter_add_rows(out, rows, targets, scales):
    """out[targets[i]] += scales[i] * rows[i] for each i, in order."""
    for i in range(rows.shape[0]):
        s = scales[i]
        for c in range(rows.shape[1]):
            out[targets[i], c] += s * rows[i, c]
