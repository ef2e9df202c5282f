"""PagedKVCache: the engine's key/value arrays, in blocks, and a one-sequence view the models write
and attend through (the `attend` method of kv_cache.KVCache).

k, v: (layers, num_blocks, block_size, Hkv, D) float32, taken from the OS page by page as written.
"""

import numpy as np

from mistralcli.kv_cache import lazy_zeros


class PagedKVCache:
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int):
        self.block_size = block_size
        self.k = lazy_zeros((num_layers, num_blocks, block_size, num_kv_heads, head_dim))
        self.v = lazy_zeros(self.k.shape)

    @staticmethod
    def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int) -> int:
        return 2 * num_layers * block_size * num_kv_heads * head_dim * 4

    @property
    def num_blocks(self) -> int:
        return self.k.shape[1]

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy whole blocks src -> dst in every layer (copy-on-write of a shared block)."""
        for src, dst in copies:
            self.k[:, dst] = self.k[:, src]
            self.v[:, dst] = self.v[:, src]

    def view(self, block_ids: list[int]) -> "SequenceView":
        return SequenceView(self, np.asarray(block_ids, dtype=np.int64))


class SequenceView:
    """One sequence's slots in the paged cache, as a model's forward sees a cache."""

    def __init__(self, cache: PagedKVCache, block_ids: np.ndarray):
        self.cache = cache
        self.block_ids = block_ids

    def _slots(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bs = self.cache.block_size
        return self.block_ids[positions // bs], positions % bs

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
        """Store k, v at positions; attend q over this sequence's blocks where they lie (ops.paged_attention;
        the last `window` positions only, when window > 0)."""
        positions = np.asarray(positions, dtype=np.int64)
        blocks, offsets = self._slots(positions)
        self.cache.k[layer, blocks, offsets] = k
        self.cache.v[layer, blocks, offsets] = v
        return ops.paged_attention(
            q, self.cache.k[layer], self.cache.v[layer], self.block_ids, positions, scale, window
        )
