"""AsyncEngine on SmolLM2: concurrent streams get what the engine gives alone, a consumer that
leaves early cancels its request and frees its blocks, bad requests raise before queuing."""

import asyncio

import pytest

from mistralcli.engine.async_engine import AsyncEngine, EngineDeadError
from mistralcli.engine.engine import Engine, EngineConfig, RequestError
from mistralcli.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, ignore_eos=True, max_tokens=10)


@pytest.fixture(scope="module")
def lm(smollm2_path):
    from mistralcli.loading.loader import load_model

    return load_model(str(smollm2_path), threads=2)


def new_engine(lm):
    return Engine(lm.model, lm.tokenizer, lm.context_length, EngineConfig(kv_cache_mb=16))


async def wait_for(condition, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_concurrent_streams_match_the_engine_alone(lm):
    prompts = [lm.tokenizer.encode(text) for text in ("The capital of France is", "1, 2, 3,", "def add(a, b):")]
    expected = []
    for ids in prompts:
        eng = new_engine(lm)
        eng.add_request("x", ids, GREEDY)
        tokens = []
        while eng.has_unfinished():
            for out in eng.step():
                tokens += out.new_token_ids
        expected.append(tokens)

    async def main():
        front = AsyncEngine(new_engine(lm))

        async def consume(ids):
            _, stream = front.add_request(ids, GREEDY)
            tokens, text, last = [], "", None
            async for out in stream:
                tokens += out.new_token_ids
                text += out.text
                last = out
            assert last.finished and last.finish_reason == "length"
            assert text == lm.tokenizer.decode(tokens)
            return tokens

        try:
            return await asyncio.gather(*(consume(ids) for ids in prompts))
        finally:
            front.shutdown()

    assert asyncio.run(main()) == expected


def test_leaving_early_cancels_and_frees_blocks(lm):
    async def main():
        engine = new_engine(lm)
        front = AsyncEngine(engine)
        try:
            _, stream = front.add_request(
                lm.tokenizer.encode("Tell me a long story."),
                SamplingParams(temperature=0, ignore_eos=True, max_tokens=500),
            )
            async for out in stream:
                if out.num_output_tokens >= 3:
                    break
            await stream.aclose()
            await wait_for(
                lambda: engine.blocks.num_free_blocks == engine.blocks.num_blocks and not engine.has_unfinished()
            )
            assert front.num_streams == 0
            rid, stream = front.add_request([1, 2, 3], GREEDY)  # still serving
            front.cancel(rid)
            await wait_for(lambda: not engine.has_unfinished())
        finally:
            front.shutdown()
        assert engine.blocks.num_free_blocks == engine.blocks.num_blocks

    asyncio.run(main())


def test_bad_requests_raise_at_once_and_a_stopped_engine_says_so(lm):
    async def main():
        front = AsyncEngine(new_engine(lm))
        with pytest.raises(RequestError, match="empty"):
            front.add_request([], GREEDY)
        front.add_request([5, 6], GREEDY, request_id="same")
        with pytest.raises(RequestError, match="already in use"):
            front.add_request([5, 6], GREEDY, request_id="same")
        front.shutdown()
        with pytest.raises(EngineDeadError):
            front.add_request([5, 6], GREEDY)

    asyncio.run(main())


def test_a_stream_ends_when_every_choice_has_finished(lm):
    params = SamplingParams(temperature=1.0, seed=5, n=3, ignore_eos=True, max_tokens=8)
    ids = lm.tokenizer.encode("Tell me a word.")
    eng = new_engine(lm)
    eng.add_request("x", ids, params)
    expected = {i: [] for i in range(3)}
    while eng.has_unfinished():
        for out in eng.step():
            expected[out.index] += out.new_token_ids

    async def main():
        front = AsyncEngine(new_engine(lm))
        try:
            _, stream = front.add_request(ids, params)
            tokens, reasons = {i: [] for i in range(3)}, {}
            async for out in stream:
                assert out.index not in reasons, "an output after the choice finished"
                tokens[out.index] += out.new_token_ids
                if out.finished:
                    reasons[out.index] = out.finish_reason
            assert front.num_streams == 0
            return tokens, reasons
        finally:
            front.shutdown()

    tokens, reasons = asyncio.run(main())
    assert reasons == {0: "length", 1: "length", 2: "length"}
    assert tokens == expected and all(len(t) == 8 for t in tokens.values())
