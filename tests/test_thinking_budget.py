"""The thinking budget (engine/thinking.py): a thought is cut at its budget by forcing its end, the answer
follows; alone, and together with structured output after the thought."""

import json

import pytest

from mistralcli import LLM, SamplingParams
from mistralcli.engine.thinking import BudgetState, Phase, ThinkingBudget
from mistralcli.structured import StructuredOutputs
from mistralcli.structured.spec import after_thought


def _run(state: BudgetState, sampled: list[int]) -> list[int]:
    """The tokens taken when the sampler would give `sampled` in turn (forced ones take precedence)."""
    taken, pending = [], list(sampled)
    while pending or state.forced() is not None:
        token = state.forced()
        if token is None:
            token = pending.pop(0)
        state.accept(token)
        taken.append(token)
    return taken


def test_the_budget_forces_the_end_once_spent():
    spec = ThinkingBudget(3, start_ids=(1,), end_ids=(8, 9))
    state = BudgetState(spec)
    assert _run(state, [5, 1, 6, 6, 6, 7, 7]) == [5, 1, 6, 6, 6, 8, 9, 7, 7]
    assert state.phase is Phase.DONE and state.used == 3


def test_a_thought_that_ends_in_time_is_left_alone_and_later_starts_are_ignored():
    state = BudgetState(ThinkingBudget(4, start_ids=(1,), end_ids=(8, 9)))
    assert _run(state, [1, 6, 8, 9, 1, 6, 6, 6, 6, 6]) == [1, 6, 8, 9, 1, 6, 6, 6, 6, 6]
    assert state.phase is Phase.DONE


def test_starting_inside_and_a_zero_budget_and_forced_text():
    inside = BudgetState(ThinkingBudget(2, start_ids=(), end_ids=(8,), starts_inside=True))
    assert _run(inside, [6, 6, 6]) == [6, 6, 8, 6]
    zero = BudgetState(ThinkingBudget(0, start_ids=(), end_ids=(8,), forced_ids=(4, 8), starts_inside=True))
    assert _run(zero, [6]) == [4, 8, 6]
    with pytest.raises(ValueError, match="end a thought"):
        ThinkingBudget(3, start_ids=(1,), end_ids=())
    with pytest.raises(ValueError, match=">= 0"):
        ThinkingBudget(-1, start_ids=(1,), end_ids=(2,))


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(str(smollm2_path), kv_cache_mb=32)


def test_through_the_engine_the_thought_ends_at_its_budget(llm):
    tokenizer = llm.tokenizer
    end = tuple(tokenizer.encode("</think>", add_special=False))
    budget = ThinkingBudget(6, start_ids=(), end_ids=end, starts_inside=True)
    params = SamplingParams(temperature=1.0, seed=2, max_tokens=20, ignore_eos=True, thinking_budget=budget)
    [out] = llm.generate(["Think about the sky."], params)
    ids = out.outputs[0].token_ids
    assert tuple(ids[6 : 6 + len(end)]) == end and "</think>" in out.outputs[0].text
    assert len(ids) == 20  # the answer goes on after the forced end
    # with structured output after the thought, the thought is cut and the answer is valid JSON
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    structured = after_thought(StructuredOutputs(json=schema), "<think>", "</think>", starts_inside=True)
    for seed in range(4):
        params = SamplingParams(
            temperature=1.0, seed=seed, max_tokens=40, thinking_budget=budget, structured=structured
        )
        choice = llm.generate(["Is the sky blue? Think, then answer in JSON."], params)[0].outputs[0]
        thought, _, answer = choice.text.partition("</think>")
        assert len(tokenizer.encode(thought, add_special=False)) <= 8  # the budget, give or take a merge
        assert choice.grammar_complete is True and json.loads(answer)["ok"] in (True, False), choice


def test_rows_past_the_tokenizer_are_never_sampled(tmp_path):
    """A model whose output layer has more rows (512) than its tokenizer has tokens (261), as padded
    vocabularies do: no sampled token lies past the tokenizer, where it would have no text."""
    from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, save_byte_level_tokenizer

    make_hf_model("qwen3", head_dim=32).save_pretrained(tmp_path)
    save_byte_level_tokenizer(tmp_path, QWEN3_CHAT_TEMPLATE)
    llm = LLM(str(tmp_path), kv_cache_mb=8)
    assert llm.engine.runner.vocab_size > llm.tokenizer.vocab_size
    params = [SamplingParams(temperature=2.0, top_k=0, top_p=1.0, min_p=0.0, seed=s, max_tokens=40) for s in range(4)]
    for out in llm.generate(["hello"] * 4, params):
        assert max(out.outputs[0].token_ids) < llm.tokenizer.vocab_size


def test_forcing_waits_while_other_tokens_are_taken():
    """The engine samples instead of forcing while the text is inside a UTF-8 character: the forcing resumes."""
    state = BudgetState(ThinkingBudget(1, start_ids=(), end_ids=(8, 9), starts_inside=True))
    state.accept(5)  # the budget is spent
    assert state.forced() == 8
    state.accept(200)  # sampled: the rest of a character
    assert state.forced() == 8
    state.accept(8)
    state.accept(9)
    assert state.phase is Phase.DONE and state.forced() is None
