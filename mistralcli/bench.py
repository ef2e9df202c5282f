"""Offline benchmark: load, prefill, decode, time to first token, peak RSS, bandwidth roofline.

The figures of each engine have one shape (`EngineFigures.to_dict()`), the one the HTTP mode of
the server benchmark fills in too: throughput as {"median", "min", "max", "values"}.
"""

import itertools
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

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


def measure_bandwidth(threads: int, size_mib: int = 512, repeats: int = 5) -> float:
    """GB/s reading a fresh array of size_mib with `threads` threads (best of repeats)."""
    import numba

    from mistralcli.numba_kernels import call_noting_compilation
    from mistralcli.numba_kernels.cpu.bandwidth import sum_chunks

    numba.set_num_threads(threads)
    data = np.ones(size_mib * 2**20 // 4, dtype=np.float32)
    call_noting_compilation(sum_chunks, data, threads)  # compile (first run) or load, and first touch
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        sum_chunks(data, threads)
        best = max(best, data.nbytes / (time.perf_counter() - start) / 1e9)
    return best


def bytes_per_token(model) -> int:
    """Weight bytes one decode step reads: every layer's matrices and the output matrix."""
    total = model.output.data.nbytes
    for layer in model.layers:
        total += sum(v.data.nbytes for k, v in layer.items() if hasattr(v, "ggml_type") and v.data.ndim == 2)
    return total


def bench_mistralcli(
    model_spec, prompt_lengths, gen_tokens, repetitions, threads, progress=None
) -> tuple[EngineFigures, object]:
    """Measure our engine in this process, through what `mistral run` executes (Engine -> ModelRunner
    over the paged cache, greedy sampling, detokenization); returns the figures and the loaded model."""
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.loading.loader import load_model
    from mistralcli.sampling import SamplingParams

    figures = EngineFigures("mistralcli")
    start = time.perf_counter()
    loaded = load_model(model_spec, threads=threads)
    figures.load_s = time.perf_counter() - start
    longest = max([*prompt_lengths, DECODE_PROMPT_TOKENS + gen_tokens + 1])
    engine = Engine(
        loaded.model,
        loaded.tokenizer,
        loaded.context_length,
        EngineConfig(max_num_seqs=1, max_num_batched_tokens=max(512, longest), kv_cache_mb=None),
    )
    ids = itertools.count()
    vocab = loaded.model.output.shape[0]

    def prefill(prompt):
        """A new request, stepped until its first token: (request id, that token). Each opens with a
        token of its own, so that no run finds an earlier one's blocks in the prefix cache."""
        n = next(ids)
        request_id = f"bench-{n}"
        prompt = [(1000 + 7919 * n) % vocab, *prompt[1:]]
        params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=gen_tokens + 1)
        engine.add_request(request_id, list(prompt), params)
        while True:
            for out in engine.step():
                if out.new_token_ids:
                    if len(prompt) != DECODE_PROMPT_TOKENS:  # a prefill-only measurement
                        engine.abort(request_id)
                    return request_id, out.new_token_ids[-1]

    def decode(request_id, token, position):
        for out in engine.step():
            if out.new_token_ids:
                return out.new_token_ids[-1]
        raise RuntimeError(f"the engine gave no token for {request_id} at position {position}")

    encode = lambda text: loaded.tokenizer.encode(text, add_special=False)
    run_protocol(figures, encode, prefill, decode, prompt_lengths, gen_tokens, repetitions, progress)
    return figures, loaded


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


def bench_concurrency(
    loaded, levels: list[int], prompt_tokens: int, gen_tokens: int, repetitions: int, progress=None
) -> dict:
    """N requests at once through the engine, for each N in levels: aggregate and per-stream generated tok/s
    (median [min..max] over repetitions), time to first token and inter-token latency (p50/p95 over every
    request and token of all repetitions), and the engine's share of the step time.

    The same fields as the HTTP mode's (`mistral bench --url`), so one report compares both."""
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.sampling import SamplingParams

    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=gen_tokens)
    filler = prompt_ids(loaded.tokenizer.encode, prompt_tokens)

    def distinct(tag: str) -> list[int]:  # each request opens differently: no prefix-cache hits between them
        opening = loaded.tokenizer.encode(f"Request {tag}: ")
        return (opening + filler)[: max(prompt_tokens, len(opening) + 1)]

    results = {}
    for n in levels:
        engine = Engine(
            loaded.model,
            loaded.tokenizer,
            loaded.context_length,
            EngineConfig(max_num_seqs=max(n, 1), kv_cache_mb=None),
        )
        aggregate, per_stream, ttft, itl, errors = [], [], [], [], 0
        for rep in range(repetitions + 1):  # the first is a warm-up
            engine.counters.step_s = engine.counters.model_s = 0.0
            start = time.perf_counter()
            for i in range(n):
                engine.add_request(f"{rep}-{i}", distinct(f"{n}.{rep}-{i}"), params)
            last, first, counts = {}, {}, {}
            rep_itl = []
            while engine.has_unfinished():
                for out in engine.step():
                    now = time.perf_counter()
                    if out.new_token_ids:
                        if out.request_id in last:
                            rep_itl.append(now - last[out.request_id])
                        else:
                            first[out.request_id] = now
                        last[out.request_id] = now
                        counts[out.request_id] = counts.get(out.request_id, 0) + len(out.new_token_ids)
                    if out.finished and out.finish_reason not in ("length", "stop"):
                        errors += 1
            wall = time.perf_counter() - start
            if rep == 0:
                continue
            aggregate.append(sum(counts.values()) / wall)
            per_stream += [
                (counts[r] - 1) / (last[r] - first[r]) for r in counts if counts[r] > 1 and last[r] > first[r]
            ]
            ttft += [first[r] - start for r in first]
            itl += rep_itl
            overhead = 1 - engine.counters.model_s / engine.counters.step_s if engine.counters.step_s else 0.0
        results[str(n)] = {
            "aggregate_tok_s": summary(aggregate),
            "per_stream_tok_s": summary(per_stream),
            "ttft_s": percentiles(ttft),
            "itl_s": percentiles(itl),
            "errors": errors,
            "engine_overhead_fraction": overhead,
        }
        if progress:
            progress(f"mistralcli concurrency {n}: {results[str(n)]['aggregate_tok_s']['median']:.1f} tok/s aggregate")
    return results
