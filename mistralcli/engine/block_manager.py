"""BlockManager: which KV-cache blocks each sequence owns, prefix sharing, copy-on-write.

It never touches arrays: the model runner reads block tables and performs the block copies it is
handed. Blocks hold `block_size` consecutive token slots; slot p of a sequence lies in block
`block_ids[p // block_size]` at offset `p % block_size`.

Prefix caching: once a full block's keys and values are computed (`commit`), it is registered
under a hash of its tokens and of everything before it. A new prompt starting with the same tokens
takes those blocks instead of computing them (`allocate` returns how many tokens it can skip). The
last prompt token is always computed, since its logits are needed. Forked sequences (`n` choices)
share every block; the first one to write into a shared, partly filled block gets a copy.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from mistralcli._ext.block_pool import BlockPool


class NoFreeBlocks(Exception):
    """The pool has too few free blocks for the operation (nothing was changed)."""


def block_hash(parent_hash: int, token_ids: Sequence[int]) -> int:
    """Prefix hash of a full block: its token ids and the hash of the blocks before it (0: none).
    Tuples of ints hash the same in every process (PYTHONHASHSEED only salts str and bytes)."""
    return hash((parent_hash, *token_ids))


@dataclass
class SequenceBlocks:
    block_ids: list[int]
    token_ids: list[int]  # the tokens whose slots are allocated
    num_hashed: int = 0  # leading full blocks registered under (or found by) their prefix hash
    last_hash: int = 0  # prefix hash of block num_hashed - 1 (0 when num_hashed is 0)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, pool=None):
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, not {block_size}")
        self.block_size = block_size
        self.pool = pool if pool is not None else BlockPool(num_blocks)
        self._seqs: dict[int, SequenceBlocks] = {}
        self._block_keys: dict[int, tuple[int, tuple[int, ...]]] = {}  # registered block -> (parent hash, tokens)
        self.num_prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.num_prefix_hits = 0  # of those, found

    # ---- queries --------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_prefix_hits / self.num_prefix_queries if self.num_prefix_queries else 0.0

    def block_table(self, seq_id: int) -> list[int]:
        return self._seqs[seq_id].block_ids

    def num_tokens(self, seq_id: int) -> int:
        return len(self._seqs[seq_id].token_ids)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prompts ----------------------------------------------------------------------------------
    def _cached_prefix(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        """(block, hash) of the leading full blocks found in the cache, stopping before the last token."""
        hits, parent, size = [], 0, self.block_size
        for i in range((len(token_ids) - 1) // size):
            tokens = tuple(token_ids[i * size : (i + 1) * size])
            h = block_hash(parent, tokens)
            block = self.pool.lookup(h)
            if block < 0 or self._block_keys.get(block) != (parent, tokens):  # absent, or a hash collision
                break
            hits.append((block, h))
            parent = h
        return hits

    def _blocks_needed(self, token_ids: Sequence[int], hits) -> int:
        """Free blocks an allocation takes: the new ones, and the cached ones now on the free list."""
        revived = sum(1 for block, _ in hits if self.pool.ref_count(block) == 0)
        return self.blocks_for(len(token_ids)) - len(hits) + revived

    def can_allocate(self, token_ids: Sequence[int]) -> bool:
        return self._blocks_needed(token_ids, self._cached_prefix(token_ids)) <= self.pool.num_free

    def allocate(self, seq_id: int, token_ids: Sequence[int]) -> int:
        """Slots for a prompt; returns how many of its leading tokens already have their KV cached."""
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} already has blocks")
        if not token_ids:
            raise ValueError("a prompt needs at least one token")
        hits = self._cached_prefix(token_ids)
        if self._blocks_needed(token_ids, hits) > self.pool.num_free:
            raise NoFreeBlocks(f"{len(token_ids)} tokens need more than the {self.pool.num_free} free blocks")
        for block, _ in hits:  # first, so that taking new blocks cannot evict them
            self.pool.acquire(block)
        block_ids = [block for block, _ in hits]
        block_ids += [self.pool.take() for _ in range(self.blocks_for(len(token_ids)) - len(hits))]
        self._seqs[seq_id] = SequenceBlocks(block_ids, list(token_ids), len(hits), hits[-1][1] if hits else 0)
        self.num_prefix_queries += len(token_ids)
        self.num_prefix_hits += len(hits) * self.block_size
        return len(hits) * self.block_size

    # ---- decoding ---------------------------------------------------------------------------------
    def can_append(self, seq_id: int) -> bool:
        seq = self._seqs[seq_id]
        needs_block = len(seq.token_ids) % self.block_size == 0 or self.pool.ref_count(seq.block_ids[-1]) > 1
        return not needs_block or self.pool.num_free > 0

    def append_token(self, seq_id: int, token_id: int) -> tuple[int, int] | None:
        """A slot for one more token. Returns (src, dst) when the last block was shared and the runner
        must copy block src into dst (the sequence's new last block) before writing the slot."""
        seq = self._seqs[seq_id]
        copy = None
        if len(seq.token_ids) % self.block_size == 0:
            block = self.pool.take()
            if block < 0:
                raise NoFreeBlocks(f"sequence {seq_id} needs a new block and none is free")
            seq.block_ids.append(block)
        elif self.pool.ref_count(seq.block_ids[-1]) > 1:
            block = self.pool.take()
            if block < 0:
                raise NoFreeBlocks(f"sequence {seq_id} must copy its shared last block and no block is free")
            copy = (seq.block_ids[-1], block)
            self.pool.release(seq.block_ids[-1])
            seq.block_ids[-1] = block
        seq.token_ids.append(token_id)
        return copy

    def commit(self, seq_id: int, num_computed: int) -> None:
        """The first num_computed tokens now have their KV in the cache: register the full blocks."""
        seq, size = self._seqs[seq_id], self.block_size
        while seq.num_hashed < min(num_computed, len(seq.token_ids)) // size:
            i = seq.num_hashed
            tokens = tuple(seq.token_ids[i * size : (i + 1) * size])
            h = block_hash(seq.last_hash, tokens)
            if self.pool.register(seq.block_ids[i], h):
                self._block_keys[seq.block_ids[i]] = (seq.last_hash, tokens)
            seq.last_hash, seq.num_hashed = h, i + 1

    # ---- sharing and freeing ------------------------------------------------------------------------
    def fork(self, parent_id: int, child_id: int) -> None:
        """child_id shares every block of parent_id (its slots so far hold the same tokens)."""
        if child_id in self._seqs:
            raise ValueError(f"sequence {child_id} already has blocks")
        parent = self._seqs[parent_id]
        for block in parent.block_ids:
            self.pool.acquire(block)
        self._seqs[child_id] = SequenceBlocks(
            list(parent.block_ids), list(parent.token_ids), parent.num_hashed, parent.last_hash
        )

    def free(self, seq_id: int) -> None:
        """Give back a sequence's blocks (last first: the tail of a sequence is the least shareable, so
        it is reused before the cached prefix)."""
        seq = self._seqs.pop(seq_id)
        for block in reversed(seq.block_ids):
            self.pool.release(block)

    def has(self, seq_id: int) -> bool:
        return seq_id in self._seqs
