"""tool_choice "required" through `mistral serve` with SmolLM2 and Qwen2.5-Coder at temperature 1: every
answer is a parseable call to a declared function with arguments that satisfy its schema, and the streamed
call is the whole one."""

import json

import jsonschema
import pytest
from test_server import Server, _streamed_calls, client

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
