"""NumPy references of the sampler's kernels (`mistralcli._ext.sampler`): the same arguments, the same
results, so the tests can hold the Cython to them."""

import numpy as np

from mistralcli.sampling import CUTOFF, MASK64


def dry_penalties_reference(history_ids, multiplier, base, allowed_length, is_breaker, vocab) -> np.ndarray:
    """NumPy-side reference of `_ext.sampler.dry_penalties` (returns the (V,) penalties)."""
    history = [int(t) for t in history_ids]
    penalties = np.zeros(vocab, dtype=np.float64)
    n = len(history)
    if n < 2 or multiplier <= 0 or is_breaker[history[-1]]:
        return penalties
    for i in range(n - 1):
        length = 0
        while length <= i and history[i - length] == history[n - 1 - length] and not is_breaker[history[i - length]]:
            length += 1
        if length >= allowed_length:
            follower = history[i + 1]
            penalties[follower] = max(penalties[follower], multiplier * base ** (length - allowed_length))
    return penalties


def _splitmix64_uniform(state: np.ndarray) -> float:
    s = (int(state[0]) + 0x9E3779B97F4A7C15) & MASK64
    state[0] = s
    z = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z >> 11) * (1.0 / 9007199254740992.0)


def sample_reference(
    logits,
    history_ids,
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    presence_penalty,
    frequency_penalty,
    rng_state,
    typical_p=1.0,
    token_mask=None,
) -> int:
    """NumPy reference of `_ext.sampler.sample` (same arguments, same result)."""
    work = np.asarray(logits, dtype=np.float64).copy()
    if token_mask is not None:
        work[~unpack_mask(token_mask, len(work))] = -np.inf
    history = np.asarray(history_ids, dtype=np.int64)
    history = history[(history >= 0) & (history < len(work))]
    if len(history) and (repetition_penalty != 1.0 or presence_penalty != 0.0 or frequency_penalty != 0.0):
        counts = np.bincount(history, minlength=len(work))
        seen = counts > 0
        if repetition_penalty != 1.0:
            work[seen] = np.where(work[seen] > 0, work[seen] / repetition_penalty, work[seen] * repetition_penalty)
        work[seen] = work[seen] - counts[seen] * frequency_penalty - presence_penalty
    if work.max() == -np.inf:
        return -1
    if temperature <= 0:
        return int(np.argmax(work))
    scaled = work / temperature
    best = scaled.max()
    ids = np.nonzero(scaled >= best - CUTOFF)[0]
    if top_k > 0 or top_p < 1.0 or min_p > 0.0 or typical_p < 1.0:  # else nothing is cut off: keep id order
        ids = ids[np.lexsort((ids, -scaled[ids]))]  # logit descending, then id ascending
    if 0 < top_k < len(ids):
        ids = ids[:top_k]
    weights = np.exp(scaled[ids] - best)
    total = weights.sum()
    if typical_p < 1.0 and len(ids) > 1:
        probs = weights / total
        with np.errstate(divide="ignore"):
            surprise = -np.log(probs)
        entropy = -(probs[probs > 0] * np.log(probs[probs > 0])).sum()
        deviation = np.where(probs > 0, np.abs(surprise - entropy), 1e300)
        order = np.lexsort((np.arange(len(ids)), deviation))  # closest to the entropy first, then step-4 order
        cum = np.cumsum(probs[order])
        reached = np.nonzero(cum >= typical_p)[0]
        count = int(reached[0]) + 1 if len(reached) else len(ids)
        kept = np.sort(order[:count])
        ids, weights = ids[kept], weights[kept]
        total = weights.sum()
    keep = len(ids)
    if top_p < 1.0:
        cum = np.cumsum(weights / total)
        reached = np.nonzero(cum >= top_p)[0]
        if len(reached):
            keep = int(reached[0]) + 1
    if min_p > 0.0:
        probs = weights[:keep] / total
        below = np.nonzero(probs[1:] < min_p * probs[0])[0]
        if len(below):
            keep = int(below[0]) + 1
    weights = weights[:keep]
    u = _splitmix64_uniform(rng_state) * weights.sum()
    hit = np.nonzero(u < np.cumsum(weights))[0]
    return int(ids[hit[0]] if len(hit) else ids[keep - 1])


def unpack_mask(token_mask, vocab: int) -> np.ndarray:
    """(V,) bool from llguidance's bitmask: bit i % 32 of int32 word i // 32 allows token i."""
    words = np.asarray(token_mask, dtype=np.int32).view(np.uint32)
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab].astype(bool)
