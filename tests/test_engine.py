"""The engine on SmolLM2: a request's greedy output is the same alone, batched with 15 others, cut
into prompt chunks, preempted and recomputed, or sharing a cached prefix; cancelled and finished
requests give every block back; bad requests are refused before they are queued."""

from dataclasses import replace

import numpy as np
import pytest

from mistralcli.engine.engine import Engine, EngineConfig, RequestError
from mistralcli.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, ignore_eos=True)  # random prompts: no early end


@pytest.fixture(scope="module")
def lm(smollm2_path):
    from mistralcli.loading.loader import load_model

    return load_model(str(smollm2_path), threads=2)


def engine(lm, **config):
    return Engine(lm.model, lm.tokenizer, lm.context_length, EngineConfig(**config))


def prompts(count, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 90, count)
    return [[int(t) for t in rng.integers(100, 40000, n)] for n in lengths]


def run(eng, requests, max_tokens=12, params=GREEDY):
    for i, ids in enumerate(requests):
        eng.add_request(str(i), ids, replace(params, max_tokens=max_tokens))
    outputs = {str(i): [] for i in range(len(requests))}
    finished = set()
    while eng.has_unfinished():
        for out in eng.step():
            assert out.request_id not in finished, "output after finishing"
            outputs[out.request_id] += out.new_token_ids
            if out.finished:
                finished.add(out.request_id)
    assert finished == set(outputs), "every request finished"
    return [outputs[str(i)] for i in range(len(requests))]


def alone(lm, requests, max_tokens=12, params=GREEDY):
    return [run(engine(lm, kv_cache_mb=32), [ids], max_tokens, params)[0] for ids in requests]


def test_batched_with_15_others_equals_alone(lm):
    requests = prompts(16)
    eng = engine(lm, kv_cache_mb=64, max_num_batched_tokens=64)  # long prompts go in chunks beside decodes
    batched = run(eng, requests)
    assert batched == alone(lm, requests)
    assert all(len(out) == 12 for out in batched)
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks


def test_prompt_chunks_of_several_sequences_in_one_forward_are_the_same_bits(lm):
    """ModelRunner.prefill batches prompts: chunks of three sequences (one resuming at position 3) in one
    forward give each last token's logits, and every cached key and value, the bits of a forward apiece."""
    from mistralcli.engine.model_runner import ModelRunner
    from mistralcli.engine.paged_cache import PagedKVCache

    a = lm.model.args
    rng = np.random.default_rng(7)
    ids = [list(rng.integers(100, 40000, n)) for n in (2, 17, 12)]  # 2: alone, the row kernels
    tables = [[0, 1], [2, 3, 4], [5, 6]]

    def fresh():
        cache = PagedKVCache(a.num_hidden_layers, 8, 8, a.num_key_value_heads, a.head_dim)
        runner = ModelRunner(lm.model, cache, blocks=None)
        runner.prefill([(ids[2][:3], 0)], [tables[2]])  # the third's first 3 tokens, computed before
        return runner, cache

    chunks = [(ids[0], 0), (ids[1], 0), (ids[2][3:], 3)]
    together, together_cache = fresh()
    joint = together.prefill(chunks, tables)
    apart, apart_cache = fresh()
    each = [apart.prefill([chunk], [table])[0] for chunk, table in zip(chunks, tables, strict=True)]
    assert [row.tobytes() for row in joint] == [row.tobytes() for row in each]
    assert together_cache.k.tobytes() == apart_cache.k.tobytes()
    assert together_cache.v.tobytes() == apart_cache.v.tobytes()


def test_preempted_requests_finish_with_the_same_text(lm):
    requests = prompts(6, seed=1)
    eng = engine(lm, kv_cache_mb=8, block_size=8, max_num_seqs=6)  # 22 blocks of 8: not all fit at once
    outputs = run(eng, requests, max_tokens=24)
    assert eng.scheduler.num_preemptions > 0
    assert outputs == alone(lm, requests, max_tokens=24)
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks


def test_shared_prefix_is_computed_once(lm):
    rng = np.random.default_rng(2)
    prefix = [int(t) for t in rng.integers(100, 40000, 200)]
    first, second = prefix + [11, 12, 13], prefix + [21, 22]
    eng = engine(lm, kv_cache_mb=64)
    assert run(eng, [first]) == alone(lm, [first])
    eng.add_request("again", second, replace(GREEDY, max_tokens=12))
    got, cached = [], None
    while eng.has_unfinished():
        for out in eng.step():
            got += out.new_token_ids
            cached = out.num_cached_tokens
    assert cached == 192  # the 12 full blocks of 16 in the prefix; the rest is computed
    assert eng.blocks.num_prefix_hits == 192
    assert got == alone(lm, [second])[0]


def test_a_cached_prefix_gives_the_same_bits_as_computing_it(lm, monkeypatch):
    """The logprobs (so the logits, to the bit) of a prompt whose first blocks come from the prefix cache
    equal those of the prompt computed whole: a prompt chunk's products do not depend on its length (where
    the GEMM path's invariance costs a BLAS a third of its speed, AVX2 only, as asked for)."""
    monkeypatch.setenv("MISTRALCLI_BATCH_INVARIANT", "1")
    ids = prompts(1, seed=9)[0] + list(range(200, 240))
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=9, logprobs=3, ignore_eos=True)

    def once(eng, request_id):
        eng.add_request(request_id, ids, replace(params, max_tokens=8))
        outs = []
        while eng.has_unfinished():
            outs += [o for o in eng.step() if o.request_id == request_id]
        return [(e.token_id, e.logprob, e.top) for o in outs for e in o.logprobs], outs[-1].num_cached_tokens

    eng = engine(lm, kv_cache_mb=64)
    cold, cached_cold = once(eng, "cold")
    warm, cached_warm = once(eng, "warm")
    assert cached_cold == 0 and cached_warm > 0
    assert warm == cold


def test_same_seed_same_sample_whatever_else_runs(lm):
    sampled = SamplingParams(temperature=0.9, seed=7, ignore_eos=True)
    requests = prompts(5, seed=3)
    together = run(engine(lm, kv_cache_mb=64), requests, params=sampled)
    assert together == alone(lm, requests, params=sampled)


def test_cancel_frees_every_block(lm):
    eng = engine(lm, kv_cache_mb=16)
    for i, ids in enumerate(prompts(4, seed=4)):
        eng.add_request(str(i), ids, replace(GREEDY, max_tokens=50))
    for _ in range(3):
        eng.step()
    assert eng.blocks.num_free_blocks < eng.blocks.num_blocks
    assert all(eng.abort(str(i)) for i in range(4))
    assert not eng.abort("0") and not eng.has_unfinished()
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks


def test_bad_requests_are_refused_and_nothing_is_queued(lm):
    eng = engine(lm, kv_cache_mb=1)
    with pytest.raises(RequestError, match="empty"):
        eng.add_request("a", [], GREEDY)
    with pytest.raises(RequestError, match="KV cache holds"):
        eng.add_request("b", [5] * eng.max_tokens_in_cache, GREEDY)
    with pytest.raises(RequestError, match="context holds"):
        eng.add_request("c", [5] * lm.context_length, GREEDY)
    with pytest.raises(RequestError, match="outside the vocabulary"):
        eng.add_request("d", [5, 10**7], GREEDY)
    with pytest.raises(RequestError, match="max_tokens is") as info:
        eng.add_request("f", [5, 6], replace(GREEDY, max_tokens=lm.context_length - 1))
    assert (info.value.param, info.value.code) == ("max_tokens", "context_length_exceeded")
    for field, value in [("logit_bias", {10**7: 1.0}), ("allowed_token_ids", [10**7]), ("stop_token_ids", [10**7])]:
        with pytest.raises(RequestError, match="outside the vocabulary") as info:
            eng.add_request("g", [5, 6], replace(GREEDY, **{field: value}))
        assert (info.value.param, info.value.code) == (field, "invalid_value")
    eng.add_request("e", [5, 6], GREEDY)
    with pytest.raises(RequestError, match="already in use"):
        eng.add_request("e", [5, 6], GREEDY)
    assert len(eng.scheduler.waiting) == 1


def test_a_sequence_longer_than_the_pool_ends_with_length(lm):
    eng = engine(lm, kv_cache_mb=0.7, block_size=8)  # a handful of blocks
    capacity = eng.max_tokens_in_cache
    eng.add_request("long", [5] * (capacity - 3), replace(GREEDY, max_tokens=100))
    outs = []
    while eng.has_unfinished():
        outs += eng.step()
    assert outs[-1].finished and outs[-1].finish_reason == "length"
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks


def collect(eng, request_id):
    tokens, text, last = [], "", None
    while eng.has_unfinished():
        for out in eng.step():
            if out.request_id == request_id:
                tokens += out.new_token_ids
                text += out.text
                last = out
    return tokens, text, last


def test_stop_strings_cut_the_text_and_nothing_after_a_match_leaks(lm):
    eng = engine(lm, kv_cache_mb=16)
    ids = lm.tokenizer.encode("1, 2, 3, 4,")
    eng.add_request("free", ids, SamplingParams(temperature=0, ignore_eos=True, max_tokens=20))
    _, free_text, _ = collect(eng, "free")
    assert " 7, 8" in free_text  # the continuation counts on
    eng.add_request("stopped", ids, SamplingParams(temperature=0, stop=[" 7, 8", "never"], max_tokens=20))
    tokens, text, last = collect(eng, "stopped")
    assert last.finished and last.finish_reason == "stop"
    assert text == free_text[: free_text.index(" 7, 8")]
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks


def test_output_text_holds_back_a_possible_stop_across_tokens():
    from mistralcli.engine.output_text import OutputText

    class Bytes:  # a tokenizer whose tokens are single characters
        def decode_bytes(self, ids, skip_special=True):
            return bytes(ids)

    text = OutputText(Bytes(), ["END"])
    pieces = [text.push(ord(c)) for c in "abcENx"]
    assert [p for p, _ in pieces] == ["a", "b", "c", "", "", "ENx"]  # "E", "EN" might start "END"
    assert [text.push(ord(c)) for c in "yEND"] == [("y", False), ("", False), ("", False), ("", True)]
    assert text.text == "abcENxy"


def test_min_tokens_logprobs_and_length(lm):
    eng = engine(lm, kv_cache_mb=16)
    ids = lm.tokenizer.encode("The capital of France is")
    eos = sorted(lm.tokenizer.eog_token_ids)
    eng.add_request("a", ids, SamplingParams(temperature=0, min_tokens=6, max_tokens=6, logprobs=3, stop_token_ids=eos))
    logprobs = []
    while eng.has_unfinished():
        for out in eng.step():
            logprobs += out.logprobs or []
            last = out
    assert last.finish_reason == "length" and last.num_output_tokens == 6 and len(logprobs) == 6
    for entry in logprobs:
        assert len(entry.top) == 3 and entry.top[0][0] == entry.token_id  # greedy picks the likeliest
        assert entry.top[0][1] >= entry.top[1][1] >= entry.top[2][1] and entry.logprob <= 0
        assert entry.token_id not in eos


def test_token_logprob_is_the_log_softmax():
    from mistralcli.sampling import token_logprob

    logits = np.array([1.0, 3.0, -np.inf, 2.0, 0.5], dtype=np.float32)
    expected = logits.astype(np.float64) - np.log(np.exp(logits[np.isfinite(logits)].astype(np.float64)).sum())
    got = token_logprob(logits, 3, 2)
    assert got.token_id == 3 and got.logprob == pytest.approx(expected[3])
    assert [i for i, _ in got.top] == [1, 3] and got.top[0][1] == pytest.approx(expected[1])
    assert token_logprob(logits, 0, 0).top == []


def test_stats_and_histograms(lm):
    from mistralcli.engine.metrics import Histogram

    eng = engine(lm, kv_cache_mb=16)
    run(eng, prompts(3, seed=5), max_tokens=4)
    stats = eng.stats()
    assert stats["running"] == stats["waiting"] == 0 and stats["kv_blocks_used"] == 0
    assert stats["generated_tokens"] == 12 and stats["finished_requests"] == 3 and stats["steps"] > 0
    assert eng.counters.ttft_s.count == 3 and eng.counters.itl_s.count == 9
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)] and h.total == pytest.approx(3.65)


def test_dry_breaks_a_loop_the_greedy_model_falls_into(lm):
    ids = lm.tokenizer.encode("1, 2, 3, 1, 2, 3, 1, 2, 3,")
    texts = []
    for dry in (0.0, 0.8):
        eng = engine(lm, kv_cache_mb=16)
        eng.add_request("a", ids, SamplingParams(temperature=0, ignore_eos=True, max_tokens=8, dry_multiplier=dry))
        texts.append(collect(eng, "a")[1])
    assert texts[0].startswith(" 1, 2, 3") and not texts[1].startswith(" 1, 2, 3")


def test_n_choices_share_the_prompt_and_each_is_its_own_seeded_request(lm):
    ids = prompts(1, seed=6)[0]
    params = SamplingParams(temperature=1.0, seed=40, n=3, ignore_eos=True, max_tokens=10)
    eng = engine(lm, kv_cache_mb=16)
    eng.add_request("r", ids, params)
    choices, finished = {}, set()
    while eng.has_unfinished():
        for out in eng.step():
            assert out.request_id == "r"
            choices.setdefault(out.index, []).extend(out.new_token_ids)
            if out.finished:
                finished.add(out.index)
    assert finished == {0, 1, 2} and eng.blocks.num_free_blocks == eng.blocks.num_blocks
    for index in range(3):
        single = SamplingParams(temperature=1.0, seed=40 + index, ignore_eos=True, max_tokens=10)
        assert choices[index] == alone(lm, [ids], 10, single)[0]
    assert len({tuple(c) for c in choices.values()}) > 1
    assert eng.stats()["finished_requests"] == 1


def test_control_tokens_give_text_only_when_asked(lm):
    """skip_special_tokens=False keeps control tokens' text (the tool-call markers some formats use are such
    tokens); by default they give none."""
    special = min(lm.tokenizer.control_ids - lm.tokenizer.eog_token_ids)
    texts = {}
    for skip in (True, False):
        eng = engine(lm)
        params = SamplingParams(temperature=0, max_tokens=2, allowed_token_ids=[special], skip_special_tokens=skip)
        eng.add_request("r", [1, 2, 3], params)
        texts[skip] = "".join(out.text for _ in range(4) for out in eng.step())
    assert texts[True] == "" and texts[False] == lm.tokenizer.tokens[special] * 2


def test_a_float16_cache_holds_twice_the_tokens_and_keeps_every_promise(lm):
    """kv_cache_dtype "f16": the same memory holds twice the blocks; a request's greedy output is the same
    alone or batched with others (prompts in chunks beside decodes); the logits of the prompt's last token
    and of every decoded one stay within 0.03 of the float32 cache's on the top-5 (its fidelity cost,
    measured in the README's Serving section on larger models)."""
    from paged import OneSequence

    f16, f32 = engine(lm, kv_cache_mb=32, kv_cache_dtype="f16"), engine(lm, kv_cache_mb=32)
    assert f16.cache.k.dtype == np.float16 and f16.blocks.num_blocks // 2 == f32.blocks.num_blocks
    requests = prompts(8, seed=3)
    batched = run(engine(lm, kv_cache_mb=16, max_num_batched_tokens=64, kv_cache_dtype="f16"), requests)
    assert batched == [run(engine(lm, kv_cache_mb=16, kv_cache_dtype="f16"), [ids])[0] for ids in requests]
    ids = requests[0] + batched[0]
    rows = {}
    for dtype in (np.float32, np.float16):
        seq = OneSequence(lm.model, capacity=128, dtype=dtype)
        rows[dtype] = [seq.forward(ids[: len(requests[0])], np.arange(len(requests[0])))[-1]]
        rows[dtype] += [seq.forward(ids[p : p + 1], [p])[-1] for p in range(len(requests[0]), len(ids) - 1)]
    full, half = np.stack(rows[np.float32]), np.stack(rows[np.float16])
    top = np.argsort(-full, axis=-1)[:, :5]
    drift = np.abs(np.take_along_axis(half, top, -1) - np.take_along_axis(full, top, -1))
    assert 0 < drift.max() < 0.03, drift.max()
    with pytest.raises(ValueError, match="'bf16' is not one of f32, f16"):
        EngineConfig(kv_cache_dtype="bf16")
