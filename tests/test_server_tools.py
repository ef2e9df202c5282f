"""Tool calls through `mistral serve`: parsed and streamed as OpenAI streams them, forced by tool_choice,
reported when they cannot be parsed, and multi-turn conversations with tools (SmolLM2, shown Hermes' format);
and tool_choice "required" with SmolLM2 and Qwen2.5-Coder at temperature 1: every answer is a parseable call
to a declared function with arguments that satisfy its schema, and the streamed call is the whole one."""

import json
import subprocess
import sys

import httpx
import jsonschema
import pytest
from test_server import Server, client

pytestmark = pytest.mark.slow

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_forecast",
            "description": "The weather forecast for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 30},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "days", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount between currencies",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "minimum": 0},
                    "to": {"type": "string", "pattern": "^[A-Z]{3}$"},
                },
                "required": ["amount", "to"],
                "additionalProperties": False,
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTIONS = ["Will it rain in Lyon this week?", "How much is 20 dollars in euros?", "Hello!"]


@pytest.fixture(scope="module")
def server(smollm2_path):  # SmolLM2's template teaches no call format: the tests show it Hermes'
    s = Server(smollm2_path, "--max-num-seqs", "8", "--tool-call-parser", "hermes")
    yield s
    assert s.stop() == 0


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _weather_conversation() -> list[dict]:
    """Two examples of the call format, so that SmolLM2-135M (whose template has no tools) follows it."""
    messages = [
        {
            "role": "system",
            "content": 'To call a function, answer with <tool_call>{"name": NAME, '
            '"arguments": ARGS}</tool_call> and nothing else.',
        }
    ]
    for city in ("London", "Berlin"):
        messages += [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {
                "role": "assistant",
                "content": f'<tool_call>{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}</tool_call>',
            },
        ]
    return messages + [{"role": "user", "content": "What is the weather in Paris?"}]


def _streamed_calls(chunks) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each streamed call, put together as OpenAI's clients do: by index, the id and
    name from a call's first delta, its arguments the join of the fragments."""
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if d.index not in calls:
                assert d.id and d.type == "function" and d.function.name  # the first delta names the call
                calls[d.index] = [d.id, d.function.name, ""]
            else:
                assert d.id is None and d.function.name is None
            calls[d.index][2] += d.function.arguments or ""
    return [tuple(calls[k]) for k in sorted(calls)]


def test_tool_calls_whole_and_streamed(server):
    c = client(server)
    model = c.models.list().data[0].id
    kw = dict(model=model, messages=_weather_conversation(), tools=[WEATHER_TOOL], temperature=0, max_tokens=40)
    whole = c.chat.completions.create(**kw).choices[0]
    assert whole.finish_reason == "tool_calls"
    assert whole.message.content is None
    [call] = whole.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    chunks = list(c.chat.completions.create(**kw, stream=True))
    assert not "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    [(_, name, arguments)] = _streamed_calls(chunks)
    assert (name, arguments) == (call.function.name, call.function.arguments)
    fragments = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or [] if d.id is None]
    assert len(fragments) > 1  # the arguments come as the model writes them
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # tool_choice "none": the same text comes back as content, not parsed
    plain = c.chat.completions.create(**kw, tool_choice="none").choices[0]
    assert plain.finish_reason in ("stop", "length") and "<tool_call>" in plain.message.content


TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_tool_choice_required_named_and_strict_are_forced(server):
    """With no example of the format in the prompt, the grammar makes SmolLM2 call anyway, in Hermes' syntax."""
    c = client(server)
    model = c.models.list().data[0].id
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw = dict(model=model, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], temperature=0, max_tokens=60)
    required = c.chat.completions.create(**kw, tool_choice="required", parallel_tool_calls=False).choices[0]
    assert required.finish_reason == "tool_calls" and required.message.content is None
    [call] = required.message.tool_calls
    assert call.function.name in ("get_weather", "get_time")
    assert set(json.loads(call.function.arguments)) == {"city"}
    chunks = list(c.chat.completions.create(**kw, tool_choice="required", parallel_tool_calls=False, stream=True))
    assert [c[1:] for c in _streamed_calls(chunks)] == [(call.function.name, call.function.arguments)]

    named = {"type": "function", "function": {"name": "get_time"}}
    forced = c.chat.completions.create(**kw, tool_choice=named, parallel_tool_calls=False).choices[0]
    assert [t.function.name for t in forced.message.tool_calls] == ["get_time"]

    # "auto" with a strict tool: prose stays free, a call is held to the parameters
    strict = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "strict": True}}
    auto = c.chat.completions.create(**{**kw, "messages": _weather_conversation(), "tools": [strict]}).choices[0]
    assert json.loads(auto.message.tool_calls[0].function.arguments) == {"city": "Paris"}

    body = {**kw, "messages": messages}
    for extra, param in [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required", "tools": []}, "tool_choice"),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ]:
        r = httpx.post(server.url + "/v1/chat/completions", json={**body, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (extra, r.text)


def test_a_call_that_cannot_be_parsed_is_reported_and_stays_content(server):
    """The examples call get_weather, but the request's only tool is lookup_weather."""
    other = {"type": "function", "function": {"name": "lookup_weather", "parameters": {"type": "object"}}}
    body = dict(messages=_weather_conversation(), tools=[other], temperature=0, max_tokens=40)
    before = _counter(server, 'mistralcli_tool_call_parse_errors_total{parser="hermes"}')
    choice = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    error = choice["tool_call_parse_error"]
    assert "'get_weather', which is not among the request's tools (lookup_weather)" in error["message"]
    assert error["raw"].startswith("<tool_call>") and choice["message"]["content"] == error["raw"]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]

    events = _sse(httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == error["raw"]
    assert events[-1]["choices"][0]["tool_call_parse_error"] == error
    assert _counter(server, 'mistralcli_tool_call_parse_errors_total{parser="hermes"}') == before + 2
    assert any("a tool call could not be parsed (hermes)" in line for line in server.stderr_lines)


def test_multi_turn_tool_conversations_and_their_errors(server):
    turn = {"role": "assistant", "content": None, "tool_calls": [_weather_call('{"city": "Paris"}')]}
    messages = [*_weather_conversation(), turn, {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
    body = dict(messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=8)
    assert httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    for i, bad, param in [
        (len(messages) - 2, _weather_call("{city: Paris}"), f"messages.{len(messages) - 2}.tool_calls.0.function"),
        (len(messages) - 2, _weather_call("[1]"), f"messages.{len(messages) - 2}.tool_calls.0.function"),
    ]:
        broken = [*messages[:i], {**turn, "tool_calls": [bad]}, *messages[i + 1 :]]
        r = httpx.post(server.url + "/v1/chat/completions", json={**body, "messages": broken})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    bad_schema = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "parameters": {"type": "objekt"}}}
    r = httpx.post(server.url + "/v1/chat/completions", json={**body, "tools": [bad_schema]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools.0.function.parameters"


def _weather_call(arguments: str) -> dict:
    return {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def _counter(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _sse(response) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_template_messages_give_templates_the_arguments_as_an_object():
    from mistralcli.server import protocol

    request = protocol.ChatCompletionRequest.model_validate(
        {"messages": [{"role": "assistant", "tool_calls": [_weather_call('{"city": "Paris"}')]}]}
    )
    [message] = request.template_messages()
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_a_refused_conversation_names_the_message_the_template_refuses():
    from mistralcli.chat_template import ChatTemplate
    from mistralcli.prompt import PromptError, render_chat
    from mistralcli.server.chat import refused_message

    template = ChatTemplate(
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}{{ m.content }}{% endfor %}"
    )
    messages = [{"role": r, "content": "x"} for r in ("user", "assistant", "assistant", "user")]
    with pytest.raises(PromptError) as refused:
        render_chat(template, messages)
    assert refused_message(template, messages, None, True, None, message=str(refused.value)) == 2
    assert refused_message(template, messages[:2], None, True, None, message="another error") is None


def test_a_chat_choice_splits_reasoning_then_content_and_tool_calls():
    from mistralcli.engine.engine import RequestOutput
    from mistralcli.reasoning import ThinkParser
    from mistralcli.server.chat import _ChatChoice
    from mistralcli.tools.parsers import HermesParser

    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    text = f"<think>\nParis, then.\n</think>\n\nLet me look.<tool_call>{call}</tool_call>"
    choice = _ChatChoice(0, reasoning_parser=ThinkParser(), tool_parser=HermesParser([WEATHER_TOOL]))
    pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
    deltas = [
        choice.add(RequestOutput("r", [1], piece, finished=i == len(pieces) - 1, finish_reason="stop"))
        for i, piece in enumerate(pieces)
    ]
    assert "".join(d.reasoning for d in deltas) == "Paris, then.\n"
    assert "".join(d.content for d in deltas) == "Let me look."
    message = choice.message()
    assert message["reasoning_content"] == message["reasoning"] == "Paris, then.\n"
    assert message["content"] == "Let me look." and choice.finish_reason == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize("flag, value", [("--tool-call-parser", "nope"), ("--reasoning-parser", "maybe")])
def test_an_unknown_parser_is_a_usage_error(flag, value):
    result = subprocess.run(
        [sys.executable, "-m", "mistralcli", "serve", flag, value], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and f"'{value}'" in result.stderr
    choices = ("hermes", "mistral", "llama3_json", "json") if flag == "--tool-call-parser" else ("think", "none")
    assert all(name in result.stderr for name in choices)


@pytest.fixture(scope="module", params=["smollm2", "qwen2.5-coder"])
def served(request, smollm2_path, qwen_path):
    # SmolLM2's template teaches no call format: Hermes' is given; Qwen2.5's template asks for Hermes' itself
    s = Server(smollm2_path, "--tool-call-parser", "hermes") if request.param == "smollm2" else Server(qwen_path)
    yield s
    assert s.stop() == 0


def test_required_always_gives_a_valid_call_whole_and_streamed(served):
    c = client(served)
    model = c.models.list().data[0].id
    for i, question in enumerate(QUESTIONS):
        for parallel in (False, True):
            kw = dict(
                model=model,
                messages=[{"role": "user", "content": question}],
                tools=TOOLS,
                tool_choice="required",
                parallel_tool_calls=parallel,
                temperature=1.0,
                seed=i,
                max_tokens=80,
            )
            choice = c.chat.completions.create(**kw).choices[0]
            calls = choice.message.tool_calls or []
            if not parallel:
                assert choice.finish_reason == "tool_calls" and len(calls) == 1, choice
            else:  # a small model may go on calling until max_tokens cuts the last call: reported, not taken
                assert len(calls) >= 1, choice
                assert choice.finish_reason in ("tool_calls", "length"), choice
                if choice.finish_reason == "tool_calls":
                    assert getattr(choice, "tool_call_parse_error", None) is None
            for call in calls:
                jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
            streamed = _streamed_calls(list(c.chat.completions.create(**kw, stream=True)))
            assert [s[1:] for s in streamed[: len(calls)]] == [(t.function.name, t.function.arguments) for t in calls]


def test_auto_without_parallel_calls_makes_at_most_one(served):
    c = client(served)
    model = c.models.list().data[0].id
    question = "What is the forecast for Lyon and for Paris, for 3 days each, in celsius?"
    for seed in range(2):
        choice = c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            tools=TOOLS,
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=80,
        ).choices[0]
        calls = choice.message.tool_calls or []
        assert len(calls) <= 1 and getattr(choice, "tool_call_parse_error", None) is None, choice
        if calls:
            assert choice.finish_reason == "tool_calls" and calls[0].function.name in SCHEMAS
