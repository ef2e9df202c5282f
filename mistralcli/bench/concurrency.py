"""N requests at once through the engine (`mistral bench --concurrency`)."""

import time

from mistralcli.bench.figures import concurrency_level, prompt_ids


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
        results[str(n)] = concurrency_level(aggregate, per_stream, ttft, itl, errors, overhead)
        if progress:
            progress(f"mistralcli concurrency {n}: {results[str(n)]['aggregate_tok_s']['median']:.1f} tok/s aggregate")
    return results
