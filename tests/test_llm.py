"""The vLLM-shaped Python API over the engine, on SmolLM2."""

import pytest

from mistralcli import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(model=str(smollm2_path), kv_cache_mb=32)


def test_generate_returns_one_output_per_prompt_in_order(llm):
    greedy = SamplingParams(temperature=0, max_tokens=8, logprobs=2)
    prompts = ["The capital of France is", "1, 2, 3, 4,", "The capital of France is"]
    outputs = llm.generate(prompts, greedy)
    assert [o.prompt for o in outputs] == prompts
    first, counting, again = outputs
    assert first.outputs[0].text == again.outputs[0].text and first.outputs[0].text.startswith(" Paris")
    assert counting.outputs[0].text.startswith(" 5, 6")
    for o in outputs:
        c = o.outputs[0]
        assert llm.tokenizer.decode(c.token_ids) == c.text
        assert c.finish_reason in ("stop", "length") and len(c.logprobs) == len(c.token_ids)
        assert c.cumulative_logprob <= 0
        assert o.usage.prompt_tokens == len(o.prompt_token_ids) and o.usage.completion_tokens == len(c.token_ids)
        assert o.usage.total_tokens == o.usage.prompt_tokens + o.usage.completion_tokens
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


def test_chat_applies_the_template(llm):
    [out] = llm.chat(
        [{"role": "user", "content": "What is the capital of France?"}], SamplingParams(temperature=0, max_tokens=16)
    )
    assert "Paris" in out.outputs[0].text
    assert out.prompt_token_ids[0] == llm.tokenizer.encode("<|im_start|>", add_special=False)[0]


def test_token_ids_and_per_prompt_params(llm):
    ids = llm.tokenizer.encode("1, 2, 3,")
    short, longer = llm.generate(
        [ids, ids], [SamplingParams(temperature=0, max_tokens=2), SamplingParams(temperature=0, max_tokens=5)]
    )
    assert len(short.outputs[0].token_ids) == 2 and len(longer.outputs[0].token_ids) == 5
    assert longer.outputs[0].token_ids[:2] == short.outputs[0].token_ids
    with pytest.raises(ValueError, match="2 sampling params for 1 prompts"):
        llm.generate(["x"], [SamplingParams(), SamplingParams()])


def test_n_choices_come_back_by_index(llm):
    [out] = llm.generate(
        "Once upon a time", SamplingParams(temperature=1.0, seed=3, n=2, max_tokens=6, ignore_eos=True)
    )
    assert [c.index for c in out.outputs] == [0, 1]
    assert all(len(c.token_ids) == 6 and c.finish_reason == "length" for c in out.outputs)
    assert out.usage.completion_tokens == 12
