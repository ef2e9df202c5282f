"""The KV-cache interface the models write through, and a simple contiguous cache for one sequence.

A model calls `attend(layer, q, k, v, positions, scale, ops)` once per layer per forward: the cache
stores the new keys and values and runs the attention over what it holds. The engine's paged cache
(engine/paged_cache.py) implements the same method, attending where the keys lie.
"""

import mmap

import numpy as np


def lazy_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """float32 zeros whose memory is taken page by page as it is first written, so a cache uses memory
    for the tokens it holds, not for its capacity. An anonymous mmap, with 4 KiB pages: numpy's own
    large arrays ask for 2 MiB huge pages, and one token written into each layer's stretch of a fresh
    cache then cost 2 MiB per layer (measured: 43 MiB after a 30-token prompt on SmolLM2)."""
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(1, count * 4), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype=np.float32, count=count).reshape(shape)


class KVCache:
    """Keys and values of one sequence, slot = position, grown by doubling.

    k, v: (layers, capacity, Hkv, D) float32.
    """

    def __init__(
        self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int = 256, max_capacity: int | None = None
    ):
        self.max_capacity = max_capacity
        self.k = lazy_zeros((num_layers, capacity, num_kv_heads, head_dim))
        self.v = lazy_zeros(self.k.shape)
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

    def attend(
        self,
        layer: int,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        positions: np.ndarray,
        scale: float,
        ops,
        window: int = 0,
    ) -> np.ndarray:
        """Store k, v (T, Hkv, D) at positions, then attend q (T, H, D) causally over the cache (the last
        `window` positions only, when window > 0): (T, H, D)."""
        keys, values, key_positions = self.update(layer, positions, k, v)
        return ops.attention(q, keys, values, positions, key_positions, scale, window)

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
            new = lazy_zeros((old.shape[0], capacity, *old.shape[2:]))
            new[:, :used] = old[:, :used]
            setattr(self, name, new)
