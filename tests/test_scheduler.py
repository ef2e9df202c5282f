"""Scheduler decisions on their own (no model): budgets, chunking, admission order, preemption of
the newest, and sequences that can never fit."""

from mistralcli.engine.block_manager import BlockManager
from mistralcli.engine.scheduler import Scheduler, SchedulerConfig
from mistralcli.engine.sequence import Sequence, SequenceStatus
from mistralcli.sampling import SamplingParams


def seq(seq_id, prompt_len, outputs=0):
    s = Sequence(seq_id, str(seq_id), list(range(1, prompt_len + 1)), SamplingParams(), 100)
    s.output_ids = [7] * outputs
    return s


def compute(batch):
    """What the engine does after the model ran: mark the scheduled tokens computed."""
    for s, n in batch.prefills:
        s.num_computed += n
    for s in batch.decodes:
        s.num_computed += 1


def test_prompts_are_chunked_within_the_budget_and_admitted_in_order():
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=3, max_num_batched_tokens=10), BlockManager(32, 4))
    a, b, c, d = seq(0, 25), seq(1, 3), seq(2, 3), seq(3, 3)
    for s in (a, b, c, d):
        scheduler.add(s)
    batch = scheduler.schedule()
    assert [(s.seq_id, n) for s, n in batch.prefills] == [(0, 10)]  # the budget went to the first prompt
    compute(batch)
    batch = scheduler.schedule()
    assert [(s.seq_id, n) for s, n in batch.prefills] == [(0, 10)]
    compute(batch)
    batch = scheduler.schedule()
    assert [(s.seq_id, n) for s, n in batch.prefills] == [(0, 5), (1, 3), (2, 2)]  # d waits: max_num_seqs
    assert [s.seq_id for s in scheduler.waiting] == [3]


def test_the_newest_is_preempted_and_requeued_first():
    blocks = BlockManager(4, 4)
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64), blocks)
    old, new = seq(0, 8), seq(1, 7)
    scheduler.add(old)
    scheduler.add(new)
    compute(scheduler.schedule())  # both prompts: 2 + 2 blocks, the pool is full
    for s in (old, new):
        s.output_ids.append(5)
    batch = scheduler.schedule()  # old needs a fifth block for its token 8: new goes
    assert batch.preempted == [new] and batch.decodes == [old]  # new's own slot was free, but it is newest
    assert new.status is SequenceStatus.WAITING and new.num_computed == 0 and scheduler.waiting[0] is new
    assert scheduler.num_preemptions == 1 and blocks.num_free_blocks == 1


def test_a_sequence_that_outgrew_the_pool_ends_instead_of_waiting_forever():
    scheduler = Scheduler(SchedulerConfig(), BlockManager(2, 4))
    huge = seq(0, 6, outputs=3)  # 9 tokens: 3 blocks, more than the pool has
    scheduler.add(huge)
    batch = scheduler.schedule()
    assert batch.out_of_blocks == [huge] and batch.is_empty and not scheduler.waiting
