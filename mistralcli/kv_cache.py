"""The KV-cache interface the models write through, and a simple contiguous cache for one sequence.

A model calls `update(layer, positions, k, v)` once per layer per forward and attends over what it
returns; it never looks inside. The paged cache of the engine implements the same method.
"""

import numpy as np


class KVCache:
    """Keys and values of one sequence, slot = position, grown by doubling.

    k, v: (layers, capacity, Hkv, D) float32.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int = 256,
                 max_capacity: int | None = None):
        self.max_capacity = max_capacity
        # np.zeros (not zeros_like, not pad): the OS hands out zero pages as they are first written, so
        # memory grows with the tokens stored, not with the capacity
        self.k = np.zeros((num_layers, capacity, num_kv_heads, head_dim), dtype=np.float32)
        self.v = np.zeros(self.k.shape, dtype=np.float32)
        self.lengths = np.zeros(num_layers, dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.max())

    def update(self, layer: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray):
        """Store k, v (T, Hkv, D) at `positions` (T,); return (keys (S, Hkv, D), values, key_positions (S,))."""
        end = int(positions.max()) + 1
        self.ensure(end)
        self.k[layer, positions] = k
        self.v[layer, positions] = v
        length = max(int(self.lengths[layer]), end)
        self.lengths[layer] = length
        return self.k[layer, :length], self.v[layer, :length], np.arange(length)

    def ensure(self, needed: int) -> None:
        """Make room for positions < needed."""
        if needed > self.k.shape[1]:
            self._grow(needed)

    def _grow(self, needed: int) -> None:
        capacity = self.k.shape[1]
        while capacity < needed:
            capacity *= 2
        if self.max_capacity is not None:
            if needed > self.max_capacity:
                raise ValueError(f"sequence of {needed} tokens exceeds the context length {self.max_capacity}")
            capacity = min(capacity, self.max_capacity)
        used = int(self.lengths.max())
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], capacity, *old.shape[2:]), dtype=old.dtype)
            new[:, :used] = old[:, :used]
            setattr(self, name, new)
