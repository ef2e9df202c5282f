"""Offline benchmark: load, prefill, decode, time to first token, peak RSS, bandwidth roofline, through
the engine (Engine -> ModelRunner over the paged cache), as `mistral run` executes a request."""

import itertools
import time

import numpy as np

from mistralcli.bench.figures import DECODE_PROMPT_TOKENS, EngineFigures, run_protocol


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
    model_spec, prompt_lengths, gen_tokens, repetitions, threads, progress=None, kv_cache_dtype: str = "f32"
) -> tuple[EngineFigures, object]:
    """Measure our engine in this process, through what `mistral run` executes (Engine -> ModelRunner
    over the paged cache, greedy sampling, detokenization); returns the figures and the loaded model."""
    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.engine.paged_cache import PagedKVCache, cache_dtype
    from mistralcli.loading.loader import load_model
    from mistralcli.sampling import SamplingParams

    figures = EngineFigures("mistralcli")
    start = time.perf_counter()
    loaded = load_model(model_spec, threads=threads)
    figures.load_s = time.perf_counter() - start
    longest = max([*prompt_lengths, DECODE_PROMPT_TOKENS + gen_tokens + 1])
    config = EngineConfig(  # one request at a time, its cache sized for it, as `mistral run` sizes its own
        max_num_seqs=1,
        max_num_batched_tokens=max(512, longest),
        kv_cache_mb=PagedKVCache.mib_for_tokens(loaded.model.args, longest + 32, cache_dtype(kv_cache_dtype)),
        kv_cache_dtype=kv_cache_dtype,
    )
    engine = Engine(loaded.model, loaded.tokenizer, loaded.context_length, config)
    ids = itertools.count()
    last = []  # the request of the latest prefill: the next prefill ends it, decoded or not

    def next_token(request_id: str) -> int:
        """Step the engine until it gives request_id a token."""
        while engine.has_unfinished():
            for out in engine.step():
                if out.request_id == request_id and out.new_token_ids:
                    return out.new_token_ids[-1]
        raise RuntimeError(f"the engine gave no token for {request_id}")

    def prefill(prompt):
        """A new request, stepped until its first token: (request id, that token). Each opens with a
        token of its own, so that no run finds an earlier one's blocks in the prefix cache."""
        while last:
            engine.abort(last.pop())
        n = next(ids)
        request_id = f"bench-{n}"
        prompt = [(1000 + 7919 * n) % engine.vocab_size, *prompt[1:]]
        engine.add_request(
            request_id, prompt, SamplingParams(temperature=0, ignore_eos=True, max_tokens=gen_tokens + 1)
        )
        last.append(request_id)
        return request_id, next_token(request_id)

    def decode(request_id, token, position):
        return next_token(request_id)

    encode = lambda text: loaded.tokenizer.encode(text, add_special=False)
    run_protocol(figures, encode, prefill, decode, prompt_lengths, gen_tokens, repetitions, progress)
    return figures, loaded
