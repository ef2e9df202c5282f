"""Sequence: one request's tokens, where its computation stands, and its state."""

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from mistralcli.engine.output_text import OutputText
from mistralcli.sampling import SamplingParams


class SequenceStatus(Enum):
    WAITING = "waiting"  # queued, or preempted: holds no KV blocks
    RUNNING = "running"  # holds blocks; prefilling (in chunks) or decoding
    FINISHED = "finished"


@dataclass
class Sequence:
    """token_ids = prompt_ids + output_ids. The keys and values of the first `num_computed` tokens are in
    the cache. Prompt tokens are computed by the prefill path and output tokens by the decode step,
    also when a preempted sequence recomputes them (so its numbers do not change)."""

    seq_id: int
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    stop_token_ids: frozenset[int] = frozenset()
    output_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed: int = 0
    finish_reason: str | None = None  # "stop", "length" or "abort"
    arrival_s: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None
    last_token_s: float | None = None
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache when last allocated
    index: int = 0  # which of the request's n choices
    rng: np.ndarray | None = None  # (1,) uint64: the sampler's state for this choice (sampling.rng_state)
    text: OutputText | None = None  # the output's text as it becomes final, stop strings matched
    dry_breakers: np.ndarray | None = None  # (V,) uint8, the tokens that end a DRY repeat (with DRY on)
    matcher: Any = None  # the llguidance matcher of a constrained choice (params.structured), advanced per token
    thought: Any = None  # with params.thinking_budget: its BudgetState (engine.thinking)
    text_ends: list[int] = field(default_factory=list)  # with a matcher: len(text.text) after each output token

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed < self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
