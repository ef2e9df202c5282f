"""Scheduler: which sequences run in the next step, and how many of their tokens.

Waiting and running queues; each step has a token budget (`max_num_batched_tokens`) and a cap on
running sequences (`max_num_seqs`). Running sequences go first: one token each when decoding, a
chunk when still prefilling (long prompts are cut into chunks that share steps with decodes).
Then waiting sequences are admitted in arrival order while blocks and budget last. When the pool
has no block for a running sequence's next token, the newest running sequence is preempted: its
blocks are freed and it goes back to the front of the waiting queue, to be recomputed later
(prefix caching often finds most of its blocks still there). Nothing is ever dropped.
"""

from collections import deque
from dataclasses import dataclass, field

from mistralcli.engine.block_manager import BlockManager
from mistralcli.engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512

    def __post_init__(self):
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be at least 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be at least 1")


@dataclass
class ScheduledBatch:
    prefills: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, tokens from num_computed)
    decodes: list[Sequence] = field(default_factory=list)  # one token each, at num_computed
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src, dst) blocks, before computing
    preempted: list[Sequence] = field(default_factory=list)
    out_of_blocks: list[Sequence] = field(default_factory=list)  # the pool cannot hold more of these: they end

    @property
    def is_empty(self) -> bool:
        return not self.prefills and not self.decodes


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager):
        self.config = config
        self.blocks = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the last is the newest
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            if seq.is_prefilling:
                n = min(budget, seq.num_prompt_tokens - seq.num_computed)
                batch.prefills.append((seq, n))
                budget -= n
                continue
            if not self._reserve_slot(seq, batch):
                continue  # seq itself was preempted
            batch.decodes.append(seq)
            budget -= 1
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if self.blocks.blocks_for(seq.num_tokens) > self.blocks.num_blocks:
                # preempted after it outgrew the whole pool: it can never be recomputed
                self.waiting.popleft()
                batch.out_of_blocks.append(seq)
                continue
            if not self.blocks.can_allocate(seq.token_ids):
                break
            self.waiting.popleft()
            seq.num_cached_tokens = self.blocks.allocate(seq.seq_id, seq.token_ids)
            seq.num_computed = seq.num_cached_tokens
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            if seq.is_prefilling:
                n = min(budget, seq.num_prompt_tokens - seq.num_computed)
                batch.prefills.append((seq, n))
                budget -= n
            else:  # recomputing after a preemption, its prompt found in the cache: decode steps replay
                batch.decodes.append(seq)  # the slot exists: allocate covered every token
                budget -= 1
        return batch

    def _reserve_slot(self, seq: Sequence, batch: ScheduledBatch) -> bool:
        """Make sure seq's next token has a slot, preempting the newest other sequences if needed.
        Returns False when seq itself had to be preempted."""
        if seq.num_computed < self.blocks.num_tokens(seq.seq_id):
            return True  # its slot already exists (a recomputation replaying its outputs)
        while not self.blocks.can_append(seq.seq_id):
            if self.running == [seq]:  # nobody left to make room: the pool is full of this one sequence
                batch.out_of_blocks.append(seq)
                return False
            victim = self.running[-1]
            self.preempt(victim, batch)
            if victim is seq:
                return False
        copy = self.blocks.append_token(seq.seq_id, seq.token_ids[seq.num_computed])
        if copy is not None:
            batch.copies.append(copy)
        return True

    def preempt(self, seq: Sequence, batch: ScheduledBatch | None = None) -> None:
        """Free seq's blocks and queue it first for recomputation."""
        self.running.remove(seq)
        self.blocks.free(seq.seq_id)
        seq.status = SequenceStatus.WAITING
        seq.num_computed = 0
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        if batch is not None:
            batch.preempted.append(seq)
            batch.prefills = [(s, n) for s, n in batch.prefills if s is not seq]
            if seq in batch.decodes:
                batch.decodes.remove(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """seq is done (or aborted): free its blocks and drop it from the queues."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.blocks.free(seq.seq_id)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
