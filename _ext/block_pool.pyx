# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: language = c++
"""The paged KV cache's block pool: reference counts, the free list and the prefix-hash table.

Reference: mistralcli.engine.block_pool_reference.BlockPoolReference (same methods, same choices).

A block with reference count 0 is free. Free blocks form one list in least-recently-freed order;
`take` hands out its head. A free block may still hold the keys and values of a full block that
some sequence computed, registered under its prefix hash: a later prompt with that prefix finds it
with `lookup` and revives it with `acquire`, and only when `take` reuses it is its hash forgotten
(eviction, counted in `num_evictions`).
"""

from cython.operator cimport dereference as deref
from libc.stdint cimport int8_t, int32_t, int64_t
from libcpp.unordered_map cimport unordered_map

import numpy as np


cdef class BlockPool:
    cdef readonly int num_blocks
    cdef readonly int num_free
    cdef readonly int64_t num_evictions
    cdef int32_t[::1] _refs, _prev, _next  # free list: doubly linked through prev/next, sentinel = num_blocks
    cdef int64_t[::1] _hashes
    cdef int8_t[::1] _hashed
    cdef unordered_map[int64_t, int32_t] _table

    def __init__(self, int num_blocks):
        if num_blocks <= 0:
            raise ValueError(f"a block pool needs at least one block, not {num_blocks}")
        self.num_blocks = num_blocks
        self._refs = np.zeros(num_blocks, dtype=np.int32)
        self._prev = np.empty(num_blocks + 1, dtype=np.int32)
        self._next = np.empty(num_blocks + 1, dtype=np.int32)
        self._hashes = np.zeros(num_blocks, dtype=np.int64)
        self._hashed = np.zeros(num_blocks, dtype=np.int8)
        cdef int i, s = num_blocks
        self._next[s] = s
        self._prev[s] = s
        for i in range(num_blocks):
            self._link_tail(i)
        self.num_free = num_blocks
        self.num_evictions = 0

    cdef inline void _link_tail(self, int block) noexcept nogil:
        cdef int s = self.num_blocks, last = self._prev[s]
        self._next[last] = block
        self._prev[block] = last
        self._next[block] = s
        self._prev[s] = block

    cdef inline void _unlink(self, int block) noexcept nogil:
        self._next[self._prev[block]] = self._next[block]
        self._prev[self._next[block]] = self._prev[block]

    cdef inline void _check(self, int block) except *:
        if block < 0 or block >= self.num_blocks:
            raise IndexError(f"block {block} is not in a pool of {self.num_blocks}")

    def take(self):
        """A free block with reference count 1 (the least recently freed one), or -1 if none is free."""
        cdef int s = self.num_blocks, block = self._next[s]
        if block == s:
            return -1
        self._unlink(block)
        self.num_free -= 1
        if self._hashed[block]:
            self._table.erase(self._hashes[block])
            self._hashed[block] = 0
            self.num_evictions += 1
        self._refs[block] = 1
        return block

    def acquire(self, int block):
        """One more reference to `block` (a free one leaves the free list with its contents)."""
        self._check(block)
        if self._refs[block] == 0:
            self._unlink(block)
            self.num_free -= 1
        self._refs[block] += 1

    def release(self, int block):
        """One reference fewer; at 0 the block joins the end of the free list (its hash is kept)."""
        self._check(block)
        if self._refs[block] <= 0:
            raise ValueError(f"block {block} is already free")
        self._refs[block] -= 1
        if self._refs[block] == 0:
            self._link_tail(block)
            self.num_free += 1

    def lookup(self, int64_t block_hash):
        """The block registered under block_hash, or -1."""
        it = self._table.find(block_hash)
        if it == self._table.end():
            return -1
        return deref(it).second

    def register(self, int block, int64_t block_hash):
        """Record that `block` holds the full block with this prefix hash. Returns False (and records
        nothing) when the hash already names a block, or when `block` has a hash already."""
        self._check(block)
        if self._hashed[block] or self._table.count(block_hash):
            return False
        self._table[block_hash] = block
        self._hashes[block] = block_hash
        self._hashed[block] = 1
        return True

    def ref_count(self, int block):
        self._check(block)
        return self._refs[block]

    def block_hash(self, int block):
        """The hash `block` is registered under, or None."""
        self._check(block)
        return self._hashes[block] if self._hashed[block] else None

    @property
    def num_cached(self):
        """Blocks registered under a prefix hash (in use or free)."""
        return self._table.size()
