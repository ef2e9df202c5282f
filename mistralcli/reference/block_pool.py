"""Pure-Python reference of `mistralcli._ext.block_pool.BlockPool`: the same methods, the same
choices (which block `take` returns, when a hash is forgotten), checked against it in
tests/test_block_pool.py."""

from collections import OrderedDict


class BlockPoolReference:
    def __init__(self, num_blocks: int):
        if num_blocks <= 0:
            raise ValueError(f"a block pool needs at least one block, not {num_blocks}")
        self.num_blocks = num_blocks
        self._refs = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # oldest first
        self._table: dict[int, int] = {}  # prefix hash -> block
        self._hashes: dict[int, int] = {}  # block -> prefix hash
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._table)

    def _check(self, block: int) -> None:
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} is not in a pool of {self.num_blocks}")

    def take(self) -> int:
        if not self._free:
            return -1
        block, _ = self._free.popitem(last=False)
        if block in self._hashes:
            del self._table[self._hashes.pop(block)]
            self.num_evictions += 1
        self._refs[block] = 1
        return block

    def acquire(self, block: int) -> None:
        self._check(block)
        if self._refs[block] == 0:
            del self._free[block]
        self._refs[block] += 1

    def release(self, block: int) -> None:
        self._check(block)
        if self._refs[block] <= 0:
            raise ValueError(f"block {block} is already free")
        self._refs[block] -= 1
        if self._refs[block] == 0:
            self._free[block] = None

    def lookup(self, block_hash: int) -> int:
        return self._table.get(block_hash, -1)

    def register(self, block: int, block_hash: int) -> bool:
        self._check(block)
        if block in self._hashes or block_hash in self._table:
            return False
        self._table[block_hash] = block
        self._hashes[block] = block_hash
        return True

    def ref_count(self, block: int) -> int:
        self._check(block)
        return self._refs[block]

    def block_hash(self, block: int) -> int | None:
        self._check(block)
        return self._hashes.get(block)
