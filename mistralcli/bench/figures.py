"""What every benchmark mode shares: the figures' one shape (`EngineFigures.to_dict()`, throughput as
{"median", "min", "max", "values"}), summaries and percentiles, the prompts, and the measuring protocol
every engine goes through."""

import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

FILLER = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press. Within decades, printing "
    "shops spread across Europe, books became cheaper, and ideas travelled faster than ever before. "
)
DECODE_PROMPT_TOKENS = 16


def summary(values: list[float]) -> dict:
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


@dataclass
class EngineFigures:
    engine: str
    load_s: float = 0.0
    prefill_tok_s: dict[int, dict] = field(default_factory=dict)  # prompt tokens -> summary
    decode_tok_s: dict | None = None
    ttft_s: dict | None = None
    peak_rss_mib: float = 0.0

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "load_s": self.load_s,
            "prefill_tok_s": {str(k): v for k, v in self.prefill_tok_s.items()},
            "decode_tok_s": self.decode_tok_s,
            "ttft_s": self.ttft_s,
            "peak_rss_mib": self.peak_rss_mib,
        }


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident memory (default: this one's). Linux: VmHWM, which (unlike ru_maxrss)
    does not carry over the parent's peak into a process started with fork + exec."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        if pid != "self":
            return float("nan")
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def prompt_ids(tokenizer_encode, length: int) -> list[int]:
    ids = tokenizer_encode(FILLER)
    return (ids * (length // len(ids) + 1))[:length]


def run_protocol(
    figures: EngineFigures, encode, prefill, decode, prompt_lengths, gen_tokens, repetitions, progress=None
) -> None:
    """The measurements every engine goes through, filling `figures`.

    prefill(ids) -> (state, next token) from an empty cache; decode(state, token, position) -> next
    token. Prefill: each prompt length once to warm up, then `repetitions` timed runs. Decode: greedy
    `gen_tokens` after a 16-token prompt, whose prefill is the time to first token; one warm-up.
    """
    for length in prompt_lengths:
        ids = prompt_ids(encode, length)
        prefill(ids)
        values = []
        for _ in range(repetitions):
            start = time.perf_counter()
            prefill(ids)
            values.append(length / (time.perf_counter() - start))
        figures.prefill_tok_s[length] = summary(values)
        if progress:
            progress(f"{figures.engine} prefill {length}: {figures.prefill_tok_s[length]['median']:.1f} tok/s")
    ids = prompt_ids(encode, DECODE_PROMPT_TOKENS)
    decode_values, ttft_values = [], []
    for rep in range(repetitions + 1):
        start = time.perf_counter()
        state, token = prefill(ids)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        for position in range(len(ids), len(ids) + gen_tokens):
            token = decode(state, token, position)
        if rep:
            decode_values.append(gen_tokens / (time.perf_counter() - start))
            ttft_values.append(ttft)
    figures.decode_tok_s = summary(decode_values)
    figures.ttft_s = summary(ttft_values)
    figures.peak_rss_mib = peak_rss_mib()
    if progress:
        progress(f"{figures.engine} decode: {figures.decode_tok_s['median']:.1f} tok/s")


def ratios(ours: EngineFigures, peer: EngineFigures) -> dict:
    """> 1 means mistralcli is better (faster, or less time)."""
    out = {
        f"prefill_{k}": ours.prefill_tok_s[k]["median"] / peer.prefill_tok_s[k]["median"]
        for k in ours.prefill_tok_s
        if k in peer.prefill_tok_s
    }
    out["decode"] = ours.decode_tok_s["median"] / peer.decode_tok_s["median"]
    out["ttft"] = peer.ttft_s["median"] / ours.ttft_s["median"]
    out["load"] = peer.load_s / ours.load_s
    out["peak_rss"] = peer.peak_rss_mib / ours.peak_rss_mib
    return out


def percentiles(values: list[float]) -> dict:
    """p50 and p95 (nearest rank), and the count."""
    if not values:
        return {"p50": None, "p95": None, "count": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]
    return {"p50": pick(0.50), "p95": pick(0.95), "count": len(ordered)}


def concurrency_level(aggregate, per_stream, ttft, itl, errors: int, overhead: float | None) -> dict:
    """One concurrency level's figures, in the one shape the offline and HTTP modes share: throughput
    summaries over repetitions, latency percentiles over every request and token."""
    return {
        "aggregate_tok_s": summary(aggregate),
        "per_stream_tok_s": summary(per_stream),
        "ttft_s": percentiles(ttft),
        "itl_s": percentiles(itl),
        "errors": errors,
        "engine_overhead_fraction": overhead,
    }
