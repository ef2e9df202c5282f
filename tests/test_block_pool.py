"""The Cython block pool against its pure-Python reference: the same answers and the same state
after every operation of long random workloads; and its errors."""

import random

import pytest

from mistralcli._ext.block_pool import BlockPool
from mistralcli.reference.block_pool import BlockPoolReference


def state(pool):
    return (
        pool.num_free,
        pool.num_cached,
        pool.num_evictions,
        [pool.ref_count(b) for b in range(pool.num_blocks)],
        [pool.block_hash(b) for b in range(pool.num_blocks)],
    )


@pytest.mark.parametrize("seed", range(5))
def test_random_workload_matches_reference(seed):
    rng = random.Random(seed)
    fast, ref = BlockPool(12), BlockPoolReference(12)
    held: list[int] = []  # one entry per reference we hold
    for _ in range(3000):
        op = rng.choice(["take", "take", "release", "acquire", "register", "lookup"])
        if op == "take":
            got = fast.take()
            assert got == ref.take()
            if got >= 0:
                held.append(got)
        elif op == "release" and held:
            block = held.pop(rng.randrange(len(held)))
            fast.release(block)
            ref.release(block)
        elif op == "acquire":
            block = rng.randrange(12)  # free or in use: a free one revives with its hash
            fast.acquire(block)
            ref.acquire(block)
            held.append(block)
        elif op == "register":
            block, h = rng.randrange(12), rng.randrange(-20, 20)
            assert fast.register(block, h) == ref.register(block, h)
        else:
            h = rng.randrange(-20, 20)
            assert fast.lookup(h) == ref.lookup(h)
        assert state(fast) == state(ref)
    assert fast.num_evictions > 0  # the workload did evict cached blocks


def test_take_order_and_eviction():
    pool = BlockPool(3)
    assert [pool.take(), pool.take(), pool.take(), pool.take()] == [0, 1, 2, -1]
    assert pool.register(1, 99) and not pool.register(2, 99) and not pool.register(1, 7)
    for block in (2, 1, 0):
        pool.release(block)
    assert pool.lookup(99) == 1 and pool.num_free == 3
    pool.acquire(1)  # revived from the free list with its contents
    assert pool.num_free == 2 and pool.ref_count(1) == 1
    pool.release(1)  # now the most recently freed: reused last
    assert [pool.take(), pool.take()] == [2, 0]
    assert pool.lookup(99) == 1 and pool.num_evictions == 0
    assert pool.take() == 1 and pool.lookup(99) == -1 and pool.num_evictions == 1


@pytest.mark.parametrize("cls", [BlockPool, BlockPoolReference])
def test_errors(cls):
    with pytest.raises(ValueError, match="at least one block"):
        cls(0)
    pool = cls(2)
    with pytest.raises(ValueError, match="already free"):
        pool.release(0)
    with pytest.raises(IndexError):
        pool.acquire(2)
    with pytest.raises(IndexError):
        pool.ref_count(-1)
