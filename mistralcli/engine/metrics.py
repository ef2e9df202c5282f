"""The engine's counters for the server's /metrics: plain numbers and fixed-bucket histograms
(Prometheus' shape: cumulative bucket counts, sum and count), cheap to update on every token."""

import bisect
from dataclasses import dataclass, field

# seconds; the same buckets as vLLM's time-to-first-token and inter-token histograms, roughly
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket (not cumulative), then +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self):
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it), the last bound +inf."""
        running, out = 0, []
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class EngineCounters:
    added_requests: int = 0  # queued by add_request (a refused request is not)
    constrained_requests: int = 0  # of those, with structured output
    prompt_tokens: int = 0  # of finished requests
    generated_tokens: int = 0
    steps: int = 0
    finished_requests: int = 0
    preemptions: int = 0
    step_s: float = 0.0  # in step() in all
    model_s: float = 0.0  # of which in the model (ModelRunner.execute); the rest is the engine's overhead
    ttft_s: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))  # arrival to first token
    itl_s: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))  # between a request's tokens
