"""A thinking model through `mistral serve` (a tiny random Qwen3 with Qwen3's chat template): the thought
comes back apart from the answer (`reasoning_content`, whole and streamed), a thinking budget cuts it, and
structured output holds for the answer after the thought. None of our real test models thinks."""

import json

import httpx
import pytest
from test_server import Server
from tiny_models import QWEN3_CHAT_TEMPLATE, make_hf_model, save_byte_level_tokenizer

pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Is 2+2 4? Answer in JSON."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3")
    make_hf_model("qwen3", head_dim=32).save_pretrained(directory)
    save_byte_level_tokenizer(directory, QWEN3_CHAT_TEMPLATE)
    s = Server(directory)
    yield s
    assert s.stop() == 0


def _chat(server, **body):
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": MESSAGES, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_a_budgeted_thought_then_an_answer_under_the_schema(server):
    response_format = {"type": "json_schema", "json_schema": {"name": "ok", "schema": SCHEMA}}
    thought = 0
    for seed in range(6):
        choice = _chat(
            server,
            temperature=1.0,
            seed=seed,
            max_tokens=80,
            response_format=response_format,
            thinking_token_budget=6,
        )
        message = choice["message"]
        assert choice["finish_reason"] == "stop" and "structured_output_incomplete" not in choice, choice
        assert json.loads(message["content"]) in ({"ok": True}, {"ok": False}), message
        assert message["reasoning"] == message["reasoning_content"]
        if message["reasoning_content"] is not None:  # the random model opened a thought: the budget cut it
            thought += 1
            assert "</think>" not in message["reasoning_content"]
            # byte tokens: the budget, the rest of a character it ended inside (up to 3 bytes), a newline
            assert len(message["reasoning_content"].encode()) <= 6 + 3 + 1
    assert thought > 0  # some of the seeds thought (the grammar lets the model open a thought or not)


def test_streamed_reasoning_and_content_equal_the_whole(server):
    body = {"messages": MESSAGES, "temperature": 1.0, "seed": 3, "max_tokens": 30, "thinking_token_budget": 5}
    whole = _chat(server, **{k: v for k, v in body.items() if k != "messages"})["message"]
    reasoning, content = "", ""
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                reasoning += delta.get("reasoning_content") or ""
                content += delta.get("content") or ""
    assert content == whole["content"] and reasoning == (whole["reasoning_content"] or "")


def test_thinking_off_passes_through_and_a_budget_needs_a_thinking_model(server, smollm2_path):
    choice = _chat(server, max_tokens=8, temperature=0, chat_template_kwargs={"enable_thinking": False})
    assert "reasoning_content" in choice["message"]
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": MESSAGES, "thinking_token_budget": -1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "thinking_token_budget"


# a template whose answers always begin in a thought (as DeepSeek-R1's and Qwen3's thinking-only models open one)
ALWAYS_THINKS = QWEN3_CHAT_TEMPLATE.replace(
    "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"
)


@pytest.fixture(scope="module")
def thinker(tmp_path_factory):
    assert ALWAYS_THINKS != QWEN3_CHAT_TEMPLATE
    directory = tmp_path_factory.mktemp("qwen3-thinks")
    make_hf_model("qwen3", head_dim=32).save_pretrained(directory)
    save_byte_level_tokenizer(directory, ALWAYS_THINKS)
    s = Server(directory)
    yield s
    assert s.stop() == 0


def test_the_thought_is_anthropic_s_thinking_block_and_the_responses_api_s_reasoning_item(thinker):
    import anthropic
    from openai import OpenAI

    name = httpx.get(thinker.url + "/v1/models").json()["data"][0]["id"]
    c = anthropic.Anthropic(base_url=thinker.url, api_key="none", max_retries=0)
    kw = dict(model=name, max_tokens=40, messages=MESSAGES, thinking={"type": "enabled", "budget_tokens": 8})
    message = c.messages.create(**kw)
    assert message.content[0].type == "thinking" and message.content[0].thinking
    assert "</think>" not in message.content[0].thinking  # the budget (8 tokens) cut it
    assert all(b.type == "text" for b in message.content[1:])
    with c.messages.stream(**kw) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert kinds[0] == "thinking_delta" and "signature_delta" in kinds and final.content[0].type == "thinking"
    # the Responses API: a reasoning item before the message, its text the thought (and its summary, asked for)
    o = OpenAI(base_url=thinker.url + "/v1", api_key="none", max_retries=0)
    response = o.responses.create(
        model=name, input="Is 2+2 4?", reasoning={"effort": "low", "summary": "auto"}, max_output_tokens=40
    )
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content[0].text
    assert reasoning.summary[0].text == reasoning.content[0].text
    assert [item.type for item in response.output[1:]] in (["message"], [])
    with o.responses.stream(model=name, input="Is 2+2 4?", max_output_tokens=40) as stream:
        types = [e.type for e in stream]
    assert "response.reasoning_text.delta" in types and types[-1] in ("response.completed", "response.incomplete")
