"""BlockManager: prefix hits counted and capped, copy-on-write after a fork, failures that change
nothing, every block back at the end; the same decisions over the Cython pool and the reference."""

import random

import pytest

from mistralcli._ext.block_pool import BlockPool
from mistralcli.engine.block_manager import BlockManager, NoFreeBlocks
from mistralcli.reference.block_pool import BlockPoolReference

POOLS = [BlockPool, BlockPoolReference]


def manager(num_blocks=16, block_size=4, pool_cls=BlockPool):
    return BlockManager(num_blocks, block_size, pool_cls(num_blocks))


@pytest.mark.parametrize("pool_cls", POOLS)
def test_shared_prefix_is_found_after_commit_and_counted(pool_cls):
    m = manager(pool_cls=pool_cls)
    prompt = list(range(100, 110))  # 10 tokens: blocks [4, 4, 2]
    assert m.allocate(1, prompt) == 0
    assert m.allocate(2, prompt) == 0  # nothing committed yet: nothing to share
    m.commit(1, 10)
    assert m.allocate(3, prompt[:8] + [7, 7]) == 8  # two full blocks shared
    assert m.block_table(3)[:2] == m.block_table(1)[:2]
    assert m.block_table(3)[2] != m.block_table(1)[2]
    assert m.pool.ref_count(m.block_table(1)[0]) == 2
    assert (m.num_prefix_queries, m.num_prefix_hits) == (30, 8)
    assert m.prefix_hit_rate == pytest.approx(8 / 30)


def test_the_last_prompt_token_is_always_computed():
    m = manager()
    m.allocate(1, list(range(8)))
    m.commit(1, 8)
    assert m.allocate(2, list(range(8))) == 4  # block 2 is cached, but its last token needs logits
    assert m.allocate(3, list(range(9))) == 8


def test_freed_blocks_stay_cached_until_reused():
    m = manager(num_blocks=4)
    m.allocate(1, list(range(8)))
    m.commit(1, 8)
    m.free(1)
    assert m.num_free_blocks == 4
    assert m.allocate(2, list(range(8)) + [5]) == 8  # revived from the free list
    m.free(2)
    m.allocate(3, [9] * 16)  # takes every block: the cached ones are evicted
    m.free(3)
    assert m.allocate(4, list(range(8)) + [5]) == 0


@pytest.mark.parametrize("pool_cls", POOLS)
def test_fork_shares_blocks_and_copies_on_write(pool_cls):
    m = manager(pool_cls=pool_cls)
    m.allocate(1, list(range(6)))  # blocks [4, 2]: the second is partly filled
    m.fork(1, 2)
    shared = m.block_table(1)[1]
    assert m.block_table(2) == m.block_table(1) and m.pool.ref_count(shared) == 2
    src, dst = m.append_token(1, 50)
    assert src == shared and m.block_table(1)[1] == dst != shared
    assert m.append_token(2, 60) is None  # the last owner writes in place
    assert m.block_table(2)[1] == shared and m.pool.ref_count(shared) == 1
    m.append_token(1, 51)
    assert m.append_token(1, 52) is None and len(m.block_table(1)) == 3  # a full block: a new one
    assert m.num_tokens(1) == 9 and m.num_tokens(2) == 7


def test_failures_change_nothing():
    m = manager(num_blocks=3)
    with pytest.raises(NoFreeBlocks):
        m.allocate(1, list(range(13)))
    assert m.num_free_blocks == 3 and not m.has(1) and m.num_prefix_queries == 0
    assert not m.can_allocate(list(range(13))) and m.can_allocate(list(range(12)))
    m.allocate(1, list(range(12)))
    assert not m.can_append(1)
    with pytest.raises(NoFreeBlocks):
        m.append_token(1, 5)
    assert m.num_tokens(1) == 12 and len(m.block_table(1)) == 3
    with pytest.raises(ValueError, match="already has blocks"):
        m.allocate(1, [1])
    with pytest.raises(ValueError, match="at least one token"):
        m.allocate(2, [])


def test_a_hash_collision_is_not_a_hit(monkeypatch):
    from mistralcli.engine import block_manager

    monkeypatch.setattr(block_manager, "block_hash", lambda parent, tokens: 42)  # every block collides
    m = manager()
    m.allocate(1, [1, 2, 3, 4, 5])
    m.commit(1, 5)
    assert m.allocate(2, [9, 9, 9, 9, 5]) == 0  # same hash, other tokens
    assert m.allocate(3, [1, 2, 3, 4, 6]) == 4


def run_workload(pool_cls, seed):
    """Random requests that share prefixes, fork, decode and finish; returns every decision made."""
    rng = random.Random(seed)
    m = manager(num_blocks=24, block_size=4, pool_cls=pool_cls)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(1, 14))] for _ in range(4)]
    live, log, next_id = [], [], 0
    for _ in range(400):
        op = rng.random()
        if op < 0.3:
            prompt = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(0, 6))]
            if m.can_allocate(prompt):
                cached = m.allocate(next_id, prompt)
                m.commit(next_id, len(prompt))
                live.append(next_id)
                log.append(("alloc", next_id, cached, tuple(m.block_table(next_id))))
            else:
                log.append(("full", next_id))
            next_id += 1
        elif op < 0.4 and live:
            parent = rng.choice(live)
            m.fork(parent, next_id)
            live.append(next_id)
            next_id += 1
        elif op < 0.85 and live:
            seq = rng.choice(live)
            if m.can_append(seq):
                log.append(("append", seq, m.append_token(seq, rng.randrange(50))))
                m.commit(seq, m.num_tokens(seq))
        elif live:
            seq = live.pop(rng.randrange(len(live)))
            m.free(seq)
        log.append(("free", m.num_free_blocks))
    for seq in live:
        m.free(seq)
    assert m.num_free_blocks == m.num_blocks  # every block came back
    assert all(m.pool.ref_count(b) == 0 for b in range(m.num_blocks))
    return log, m.num_prefix_hits, m.pool.num_evictions


@pytest.mark.parametrize("seed", range(4))
def test_random_workload_same_over_both_pools(seed):
    fast = run_workload(BlockPool, seed)
    assert fast == run_workload(BlockPoolReference, seed)
    assert fast[1] > 0 and any(entry[0] == "append" and entry[2] for entry in fast[0])  # hits and copies happened
