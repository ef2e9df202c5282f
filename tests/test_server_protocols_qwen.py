"""Tool round trips over every protocol with Qwen2.5-Coder (whose chat template has tools): OpenAI's Responses API
(function_call and function_call_output items, statelessly and by previous_response_id, streamed), a
Claude-Code-style exchange over Anthropic's Messages API (system blocks, tools, tool_use and tool_result), and
Ollama's /api/chat with tools; each SDK unmodified. Each second turn's prompt is checked against the same
conversation given to chat completions (the translation is exact), and each answer is well formed."""

import json

import httpx
import pytest
from test_server import Server, client
from test_server_anthropic import anthropic_client

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
QUESTION = "What is the weather in Paris right now?"
SYSTEM = "You are a coding agent. Use the tools when they help."
RESULT = '{"temperature_c": 18, "conditions": "sunny"}'
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The current weather in a city", "parameters": PARAMETERS},
    }
]


@pytest.fixture(scope="module")
def server(qwen_path, tmp_path_factory):
    store = tmp_path_factory.mktemp("responses") / "responses.sqlite3"
    s = Server(qwen_path, "--max-num-seqs", "4", "--responses-db", str(store))
    yield s
    assert s.stop() == 0


def prompt_tokens(server, messages: list[dict]) -> int:
    """The prompt chat completions would give the model for this conversation, in tokens."""
    return httpx.post(server.url + "/tokenize", json={"messages": messages, "tools": CHAT_TOOLS}).json()["count"]


def exchange(call_id: str, arguments: str) -> list[dict]:
    """The conversation after the model's call and its result, in chat completions' terms."""
    call = {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": RESULT},
    ]


def test_responses_function_tool_round_trip(server):
    c = client(server)
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": PARAMETERS,
        }
    ]
    kw = dict(model=MODEL, instructions=SYSTEM, tools=tools, temperature=0, max_output_tokens=60)
    first = c.responses.create(input=QUESTION, **kw)
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"} and calls[0].call_id
    # streamed: the same call, its arguments in deltas
    with c.responses.stream(input=QUESTION, **kw) as stream:
        events = list(stream)
        streamed = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert deltas == calls[0].arguments and done[0].arguments == calls[0].arguments
    assert [i.type for i in streamed.output] == [i.type for i in first.output]
    # the result back, by previous_response_id: the prompt is the whole exchange
    output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": RESULT}
    second = c.responses.create(input=[output], previous_response_id=first.id, **kw)
    assert second.status in ("completed", "incomplete") and second.output
    expected = prompt_tokens(server, exchange(calls[0].call_id, calls[0].arguments))
    assert second.usage.input_tokens == expected
    # and statelessly, the call and its output as input items: the same prompt
    items = [
        {"role": "user", "content": QUESTION},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        output,
    ]
    stateless = c.responses.create(input=items, store=False, **kw)
    assert stateless.usage.input_tokens == expected
    assert [i.type for i in stateless.output] == [i.type for i in second.output]


def test_anthropic_claude_code_style_tool_exchange(server):
    c = anthropic_client(server)
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "get_weather", "description": "The current weather in a city", "input_schema": PARAMETERS}]
    kw = dict(model=MODEL, max_tokens=60, system=system, tools=tools, extra_body={"temperature": 0})
    messages = [{"role": "user", "content": QUESTION}]
    first = c.messages.create(messages=messages, **kw)
    uses = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
    # streamed: a tool_use block whose input comes in input_json_delta pieces
    with c.messages.stream(messages=messages, **kw) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["tool_use"] and streamed.stop_reason == "tool_use"
    assert [b.input for b in streamed.content] == [{"city": "Paris"}]
    pieces = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta")
    assert json.loads(pieces) == {"city": "Paris"}
    # the second turn: the assistant's tool_use, then the user's tool_result
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": RESULT}]},
    ]
    counted = c.messages.count_tokens(model=MODEL, system=system, tools=tools, messages=messages).input_tokens
    arguments = json.dumps(uses[0].input)
    assert counted == prompt_tokens(server, exchange(uses[0].id, arguments))
    second = c.messages.create(messages=messages, **kw)
    assert second.stop_reason in ("end_turn", "tool_use", "max_tokens") and second.content
    assert second.usage.input_tokens + second.usage.cache_read_input_tokens == counted
    # tool_choice "any" forces a call (one, without parallel calls), "none" forbids one
    one = {"type": "any", "disable_parallel_tool_use": True}
    forced = c.messages.create(messages=[{"role": "user", "content": "Hello!"}], tool_choice=one, **kw)
    assert [b.type for b in forced.content] == ["tool_use"] and forced.content[0].name == "get_weather"
    assert set(forced.content[0].input) == {"city"}
    plain = c.messages.create(messages=[{"role": "user", "content": "Say hello."}], tool_choice={"type": "none"}, **kw)
    assert [b.type for b in plain.content] == ["text"]


def test_ollama_chat_tool_round_trip(server):
    import ollama

    c = ollama.Client(host=server.url)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    first = c.chat(model=MODEL, messages=messages, tools=CHAT_TOOLS, options={"temperature": 0, "num_predict": 60})
    calls = first.message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "Paris"}
    streamed = list(
        c.chat(
            model=MODEL, messages=messages, tools=CHAT_TOOLS, stream=True, options={"temperature": 0, "num_predict": 60}
        )
    )
    assert [p.message.tool_calls for p in streamed if p.message.tool_calls] == [calls]
    messages += [
        first.message.model_dump(exclude_none=True),
        {"role": "tool", "content": RESULT, "tool_name": "get_weather"},
    ]
    second = c.chat(model=MODEL, messages=messages, tools=CHAT_TOOLS, options={"temperature": 0, "num_predict": 60})
    assert second.done and (second.message.content or second.message.tool_calls)
    assert "tools" in c.show(MODEL).capabilities


def test_each_sdk_answers_with_qwen(server):
    import ollama

    question = [{"role": "user", "content": "What is the capital of France?"}]
    response = client(server).responses.create(model=MODEL, input=question, temperature=0, max_output_tokens=20)
    message = anthropic_client(server).messages.create(
        model=MODEL, max_tokens=20, messages=question, extra_body={"temperature": 0}
    )
    chat = ollama.Client(host=server.url).chat(
        model=MODEL, messages=question, options={"temperature": 0, "num_predict": 20}
    )
    assert "Paris" in response.output_text
    assert response.output_text == message.content[0].text == chat.message.content
