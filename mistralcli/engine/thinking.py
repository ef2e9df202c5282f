"""A thinking budget: at most so many tokens inside a model's thought (`<think>` ... `</think>`); when they
are spent, the thought's end is forced, token by token, and the model goes on to its answer. As vLLM's
`thinking_token_budget` and llama.cpp's reasoning budget: the output is watched for the start and the end of
a thought, a state per choice, and the forced tokens bypass the sampler."""

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class ThinkingBudget:
    """budget: the most tokens a thought may take; start_ids / end_ids: the tokens that open and close a
    thought; forced_ids: what is forced when the budget is spent (default: end_ids); starts_inside: the
    prompt already opened the thought (DeepSeek-R1's and Qwen3's templates can)."""

    budget: int
    start_ids: tuple[int, ...]
    end_ids: tuple[int, ...]
    forced_ids: tuple[int, ...] | None = None
    starts_inside: bool = False

    def __post_init__(self):
        for name in ("start_ids", "end_ids", "forced_ids"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(t) for t in value))
        if self.budget < 0:
            raise ValueError("the thinking budget must be >= 0")
        if not self.end_ids or not (self.start_ids or self.starts_inside):
            raise ValueError("a thinking budget needs the tokens that end a thought, and that start one")


class Phase(Enum):
    BEFORE = "before"  # no thought yet: watching for its start
    THINKING = "thinking"  # counting the thought's tokens
    FORCING = "forcing"  # the budget is spent: forcing its end
    DONE = "done"  # the thought is over


class _Sequence:
    """Finds a token sequence in a stream of tokens."""

    def __init__(self, ids: tuple[int, ...]):
        self.ids = ids
        self.recent: list[int] = []

    def push(self, token: int) -> bool:
        self.recent = (self.recent + [token])[-len(self.ids) :] if self.ids else []
        return bool(self.ids) and tuple(self.recent) == self.ids


class BudgetState:
    """One choice's thought: `forced()` is the token it must take next (None: sample it), `accept(token)`
    follows every token taken. The engine may sample instead of forcing (to finish a UTF-8 character the
    thought was in the middle of): a token that is not the forced one leaves the forcing where it was."""

    def __init__(self, spec: ThinkingBudget):
        self.spec = spec
        self.phase = Phase.THINKING if spec.starts_inside else Phase.BEFORE
        self.used = 0
        self._start = _Sequence(spec.start_ids)
        self._end = _Sequence(spec.end_ids)
        self._forcing: list[int] = []
        if self.phase is Phase.THINKING and spec.budget == 0:
            self._force()

    def forced(self) -> int | None:
        return self._forcing[0] if self.phase is Phase.FORCING else None

    def accept(self, token: int) -> None:
        if self.phase is Phase.BEFORE:
            if self._start.push(token):
                self.phase = Phase.THINKING
                if self.spec.budget == 0:
                    self._force()
        elif self.phase is Phase.THINKING:
            self.used += 1
            if self._end.push(token):
                self.phase = Phase.DONE
            elif self.used >= self.spec.budget:
                self._force()
        elif self.phase is Phase.FORCING and token == self._forcing[0]:  # else sampled: a character to finish
            self._forcing.pop(0)
            if not self._forcing:
                self.phase = Phase.DONE

    def _force(self) -> None:
        self.phase = Phase.FORCING
        self._forcing = list(self.spec.forced_ids or self.spec.end_ids)
