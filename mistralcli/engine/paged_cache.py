"""PagedKVCache: the engine's key/value arrays, in blocks, and a one-sequence view the models write
and attend through: a model calls `view.attend(layer, q, k, v, positions, scale, ops)` once per layer
per forward; the view stores the new keys and values and attends over the sequence's blocks.

k, v: (layers, num_blocks, block_size, Hkv, D) float32, or float16 (half the memory, and half the bytes a
batch of decodes reads: `kv_cache_dtype`), taken from the OS page by page as written. A float16 cache stores
each key and value rounded to nearest (numpy's astype here, F16C in the decode step: the same bits); the
kernels widen them back to float32 as they read them.
"""

import mmap

import numpy as np

KV_CACHE_DTYPES = {"f32": np.float32, "f16": np.float16}  # --kv-cache-dtype's names


def cache_dtype(name: str) -> type:
    """The numpy type of a KV cache dtype's name (KV_CACHE_DTYPES); ValueError naming the choices."""
    try:
        return KV_CACHE_DTYPES[name]
    except KeyError:
        raise ValueError(f"kv cache dtype {name!r} is not one of {', '.join(KV_CACHE_DTYPES)}") from None


def lazy_zeros(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Zeros whose memory is taken page by page as it is first written, so a cache uses memory
    for the tokens it holds, not for its capacity. An anonymous mmap, with 4 KiB pages: numpy's own
    large arrays ask for 2 MiB huge pages, and one token written into each layer's stretch of a fresh
    cache then cost 2 MiB per layer (measured: 43 MiB after a 30-token prompt on SmolLM2)."""
    count, itemsize = int(np.prod(shape)), np.dtype(dtype).itemsize
    buffer = mmap.mmap(-1, max(1, count * itemsize), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


class PagedKVCache:
    def __init__(
        self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, dtype=np.float32
    ):
        self.block_size = block_size
        self.k = lazy_zeros((num_layers, num_blocks, block_size, num_kv_heads, head_dim), dtype)
        self.v = lazy_zeros(self.k.shape, dtype)

    @staticmethod
    def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype=np.float32) -> int:
        return 2 * num_layers * block_size * num_kv_heads * head_dim * np.dtype(dtype).itemsize

    @staticmethod
    def mib_for_tokens(args, num_tokens: int, dtype=np.float32) -> float:
        """The kv_cache_mb (EngineConfig) that holds num_tokens of a model with these DecoderArgs: what
        one request needs, for a private engine sized to it."""
        per_token = PagedKVCache.bytes_per_block(
            args.num_hidden_layers, 1, args.num_key_value_heads, args.head_dim, dtype
        )
        return num_tokens * per_token / 2**20

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

    def views(self, block_tables: list[list[int]], lengths: list[int]) -> "ChunksView":
        """Several sequences' prompt chunks (lengths[i] rows each, in order) in one forward."""
        return ChunksView([self.view(table) for table in block_tables], lengths)


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


class ChunksView:
    """Prompt chunks of several sequences, their rows one after another, computed in one forward: every
    product takes all of them at once, and `attend` hands each sequence's rows to its own view, so a token
    attends over its own sequence as it would in a forward of its own (and gets the same bits: the products
    and the per-token ops do not depend on the other rows)."""

    def __init__(self, views: list[SequenceView], lengths: list[int]):
        self.views = views
        self.bounds = np.cumsum([0, *lengths])

    def attend(self, layer, q, k, v, positions, scale, ops, window: int = 0) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        parts = [
            view.attend(layer, q[a:b], k[a:b], v[a:b], positions[a:b], scale, ops, window=window)
            for view, a, b in zip(self.views, self.bounds[:-1], self.bounds[1:], strict=True)
        ]
        return np.concatenate(parts)
