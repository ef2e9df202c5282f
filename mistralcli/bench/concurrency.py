"""N requests at once through the engine (`mistral bench --concurrency`), optionally each level also under
a JSON schema (`--structured`), measured in the same run, so the grammar's cost is a ratio of like runs."""

import statistics
import time

from mistralcli.bench.figures import concurrency_level, prompt_ids

# a typical nested schema, as a list long enough that no request completes it within --gen-tokens: every
# constrained request runs as many tokens as its free twin, so the two aggregate rates compare like for like
BENCH_SCHEMA = {
    "type": "array",
    "minItems": 200,
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "name": {"type": "string", "maxLength": 24},
            "active": {"type": "boolean"},
            "role": {"enum": ["admin", "editor", "viewer"]},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
        },
        "required": ["id", "name", "active", "role", "address", "scores"],
        "additionalProperties": False,
    },
}


def bench_concurrency(
    loaded,
    levels: list[int],
    prompt_tokens: int,
    gen_tokens: int,
    repetitions: int,
    progress=None,
    structured=None,
    kv_cache_dtype: str = "f32",
) -> dict:
    """N requests at once through the engine, for each N in levels: aggregate and per-stream generated tok/s
    (median [min..max] over repetitions), time to first token and inter-token latency (p50/p95 over every
    request and token of all repetitions), and the engine's share of the step time.

    With structured (a StructuredOutputs), every repetition runs the level free and constrained, back to back
    (in turn first, so a drift of the machine's speed weighs on both alike), and the result is {"free":
    levels' figures, "structured": theirs, "cost": {N: 1 - the median over repetitions of constrained / free
    aggregate tok/s}} (paired, so that noise between repetitions cancels); else the levels' figures. The
    same fields as the HTTP mode's (`mistral bench --url`), so one report compares both."""
    from dataclasses import replace

    from mistralcli.engine.engine import Engine, EngineConfig
    from mistralcli.sampling import SamplingParams

    free = SamplingParams(temperature=0, ignore_eos=True, max_tokens=gen_tokens)
    variants = (
        {"free": free} if structured is None else {"free": free, "structured": replace(free, structured=structured)}
    )
    filler = prompt_ids(loaded.tokenizer.encode, prompt_tokens)

    def distinct(tag: str) -> list[int]:  # each request opens differently: no prefix-cache hits between them
        opening = loaded.tokenizer.encode(f"Request {tag}: ")
        return (opening + filler)[: max(prompt_tokens, len(opening) + 1)]

    results = {name: {} for name in variants}
    for n in levels:
        engine = Engine(
            loaded.model,
            loaded.tokenizer,
            loaded.context_length,
            EngineConfig(max_num_seqs=max(n, 1), kv_cache_mb=None, kv_cache_dtype=kv_cache_dtype),
        )
        samples = {name: ([], [], [], [], [0], [0.0]) for name in variants}
        for rep in range(repetitions + 1):  # the first is a warm-up
            order = list(variants.items())
            for name, params in order if rep % 2 else order[::-1]:
                aggregate, per_stream, ttft, itl, errors, overhead = samples[name]
                tag = f"{n}.{rep}.{name}"
                one = _repetition(engine, params, {f"{tag}-{i}": distinct(f"{tag}-{i}") for i in range(n)})
                if rep == 0:
                    continue
                aggregate.append(one["aggregate"])
                per_stream += one["per_stream"]
                ttft += one["ttft"]
                itl += one["itl"]
                errors[0] += one["errors"]
                overhead[0] = one["overhead"]
        for name, (aggregate, per_stream, ttft, itl, errors, overhead) in samples.items():
            results[name][str(n)] = concurrency_level(aggregate, per_stream, ttft, itl, errors[0], overhead[0])
            if progress:
                rate = results[name][str(n)]["aggregate_tok_s"]["median"]
                label = "" if structured is None else f" ({name})"
                progress(f"mistralcli concurrency {n}{label}: {rate:.1f} tok/s aggregate")
    if structured is None:
        return results["free"]
    cost = {}
    for n, f in results["free"].items():
        pairs = zip(results["structured"][n]["aggregate_tok_s"]["values"], f["aggregate_tok_s"]["values"], strict=True)
        cost[n] = 1 - statistics.median(c / r for c, r in pairs)
    return {**results, "cost": cost}


def _repetition(engine, params, prompts: dict[str, list[int]]) -> dict:
    """These requests (request id -> prompt ids) at once until all finish: their figures."""
    engine.counters.step_s = engine.counters.model_s = 0.0
    start = time.perf_counter()
    for request_id, ids in prompts.items():
        engine.add_request(request_id, ids, params)
    last, first, counts, itl, errors = {}, {}, {}, [], 0
    while engine.has_unfinished():
        for out in engine.step():
            now = time.perf_counter()
            if out.new_token_ids:
                if out.request_id in last:
                    itl.append(now - last[out.request_id])
                else:
                    first[out.request_id] = now
                last[out.request_id] = now
                counts[out.request_id] = counts.get(out.request_id, 0) + len(out.new_token_ids)
            if out.finished and out.finish_reason not in ("length", "stop"):
                errors += 1
    wall = time.perf_counter() - start
    return {
        "aggregate": sum(counts.values()) / wall,
        "per_stream": [(counts[r] - 1) / (last[r] - first[r]) for r in counts if counts[r] > 1 and last[r] > first[r]],
        "ttft": [first[r] - start for r in first],
        "itl": itl,
        "errors": errors,
        "overhead": 1 - engine.counters.model_s / engine.counters.step_s if engine.counters.step_s else 0.0,
    }
