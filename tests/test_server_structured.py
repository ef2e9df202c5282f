"""Structured output through `mistral serve`, with the openai SDK: response_format (json_schema, json_object,
text), the grammar extension and vLLM's structured_outputs on both endpoints; what does not compile is a 400
naming the field, and nothing is queued."""

import json
import re

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field
from test_server import Server

pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0},
        "districts": {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": 1, "maxItems": 3},
        "climate": {"enum": ["dry", "wet", "mild"]},
    },
    "required": ["city", "population", "districts", "climate"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Describe a city as JSON."}]


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = Server(smollm2_path, "--max-num-seqs", "8")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def _counter(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):  # the engine's counters have a model label
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def test_json_schema_outputs_validate_across_seeds(client, model):
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    for seed in range(10):
        choice = client.chat.completions.create(
            model=model, messages=MESSAGES, temperature=1.0, seed=seed, max_tokens=150, response_format=response_format
        ).choices[0]
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


class Planet(BaseModel):
    name: str = Field(max_length=20)
    moons: int = Field(ge=0, le=200)
    rings: bool


def test_sdk_parse_with_a_pydantic_model(client, model):
    for seed in range(3):
        completion = client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": "A planet, please."}],
            temperature=1.0,
            seed=seed,
            max_tokens=80,
            response_format=Planet,
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Planet) and 0 <= parsed.moons <= 200


def test_json_object_text_and_the_streamed_answer_is_the_whole_one(client, model):
    kw = dict(messages=MESSAGES, temperature=1.0, seed=4, max_tokens=150)
    whole = client.chat.completions.create(model=model, **kw, response_format={"type": "json_object"}).choices[0]
    if whole.finish_reason == "stop":
        assert isinstance(json.loads(whole.message.content), dict)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=model, **kw, response_format={"type": "json_object"}, stream=True)
        if c.choices
    )
    assert streamed == whole.message.content
    text = client.chat.completions.create(model=model, **kw, response_format={"type": "text"}).choices[0]
    assert text.message.content == client.chat.completions.create(model=model, **kw).choices[0].message.content


def test_grammar_extension_and_vllm_structured_outputs_on_both_endpoints(client, model):
    cases = [
        ({"grammar": {"type": "regex", "value": r"[A-Z]{3}-[0-9]{4}"}}, r"[A-Z]{3}-[0-9]{4}"),
        ({"grammar": {"type": "lark", "value": 'start: "id=" /[0-9]{2}/ ";"'}}, r"id=[0-9]{2};"),
        ({"grammar": {"type": "gbnf", "value": 'root ::= ("ab" | "cd") "!"'}}, r"(ab|cd)!"),
        ({"structured_outputs": {"choice": ["left", "right"]}}, r"left|right"),
        ({"structured_outputs": {"regex": r"[0-9]{3}"}}, r"[0-9]{3}"),
    ]
    for extra, pattern in cases:
        for seed in range(3):
            chat = client.chat.completions.create(
                model=model, messages=MESSAGES, temperature=1.0, seed=seed, max_tokens=30, extra_body=extra
            ).choices[0]
            text = client.completions.create(
                model=model, prompt="Code:", temperature=1.0, seed=seed, max_tokens=30, extra_body=extra
            ).choices[0]
            assert re.fullmatch(pattern, chat.message.content), (extra, chat)
            assert re.fullmatch(pattern, text.text), (extra, text)


def test_ending_before_the_schema_closes_is_length_and_marked(server):
    body = {
        "messages": MESSAGES,
        "max_tokens": 5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
    }
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["structured_output_incomplete"] is True
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    last = events[-1]["choices"][0]
    assert last["finish_reason"] == "length" and last["structured_output_incomplete"] is True
    # greedy: sampled at the server's default temperature, a number can run past any max_tokens
    ok = httpx.post(server.url + "/v1/chat/completions", json={**body, "max_tokens": 150, "temperature": 0}, timeout=60)
    ok = ok.json()
    assert "structured_output_incomplete" not in ok["choices"][0]


BAD = [
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "if": {}}},
            }
        },
        "response_format",
        "if",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
        "response_format",
        "nope",
    ),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format", "type"),
    ({"grammar": {"type": "regex", "value": "(unclosed"}}, "grammar", "unclosed"),
    ({"grammar": {"type": "lark", "value": "start: nothing_here"}}, "grammar", "nothing_here"),
    (
        {"grammar": {"type": "regex", "value": "a"}, "response_format": {"type": "json_object"}},
        "response_format",
        "one",
    ),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "exactly one"),
]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_what_cannot_be_compiled_is_a_400_and_nothing_is_queued(server, path):
    base = {"messages": MESSAGES} if "chat" in path else {"prompt": "Hello"}
    added = _counter(server, "mistralcli_engine_requests_added_total")
    for extra, param, word in BAD:
        r = httpx.post(server.url + path, json={**base, **extra, "max_tokens": 8}, timeout=30)
        assert r.status_code == 400, (extra, r.text)
        error = r.json()["error"]
        assert error["param"] == param or error["param"].startswith(param), (extra, error)
        assert word in error["message"], (extra, error)
    assert _counter(server, "mistralcli_engine_requests_added_total") == added
    ok = httpx.post(server.url + path, json={**base, "max_tokens": 2, "grammar": {"type": "regex", "value": "ab"}})
    assert ok.status_code == 200
    assert _counter(server, "mistralcli_engine_requests_added_total") == added + 1
    assert _counter(server, "mistralcli_engine_requests_constrained_total") >= 1
