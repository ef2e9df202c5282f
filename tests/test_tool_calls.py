"""Tool calls found in a chat model's output (mistralcli/server/tool_calls.py), whole and streamed."""

import json

import pytest

from mistralcli.server.tool_calls import StreamParser, parse

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def _names_and_args(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize(
    "text, content, expected",
    [
        (f"<tool_call>\n{WEATHER}\n</tool_call>", None, [("get_weather", {"city": "Paris"})]),
        (f"Let me look.\n<tool_call>{WEATHER}</tool_call>", "Let me look.", [("get_weather", {"city": "Paris"})]),
        (
            f"<tool_call>{WEATHER}</tool_call>\n<tool_call>" + '{"name": "get_time", "arguments": {}}</tool_call>',
            None,
            [("get_weather", {"city": "Paris"}), ("get_time", {})],
        ),
        (
            f'<tool_call>[{WEATHER}, {{"name": "f", "parameters": {{"x": 1}}}}]</tool_call>',
            None,
            [("get_weather", {"city": "Paris"}), ("f", {"x": 1})],
        ),
        (f"[TOOL_CALLS] [{WEATHER}]", None, [("get_weather", {"city": "Paris"})]),
        ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 2}"}</tool_call>', None, [("f", {"a": 2})]),
    ],
)
def test_calls_are_parsed(text, content, expected):
    got_content, calls = parse(text)
    assert got_content == content
    assert _names_and_args(calls) == expected
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


@pytest.mark.parametrize(
    "text",
    [
        "No tools here.",
        "<tool_call>not json</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "f", "arguments": {"a": 1}',  # cut off
        f"<tool_call>{WEATHER}</tool_call> and then prose",
        "<tool_call>[]</tool_call>",
    ],
)
def test_anything_else_stays_content(text):
    assert parse(text) == (text, [])


def _stream(text: str, step: int):
    parser, sent = StreamParser(), ""
    for i in range(0, len(text), step):
        sent += parser.feed(text[i : i + step])
    held, calls = parser.finish()
    return sent + held, calls


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streaming_holds_back_calls_and_gives_the_same_answer(step):
    text = f"Checking.\n<tool_call>{WEATHER}</tool_call>"
    content, calls = _stream(text, step)
    assert content == "Checking.\n"
    assert _names_and_args(calls) == [("get_weather", {"city": "Paris"})]
    # a marker's prefix that turns out to be prose is sent, in order, with nothing lost
    for prose in ("a <tool_ and <tool_cal done", "ends with <tool_c", "[TOOL", "x [TOOL_CALL y"):
        assert _stream(prose, step) == (prose, [])
    broken = "Sure <tool_call>{oops"
    assert _stream(broken, step) == (broken, [])


def test_streaming_sends_prose_before_the_call_starts():
    parser = StreamParser()
    assert parser.feed("Hello there") == "Hello there"
    assert parser.feed(" <tool") == " "
    assert parser.feed("_call>{") == ""
    assert parser.feed(WEATHER[1:] + "</tool_call>") == ""
    held, calls = parser.finish()
    assert held == "" and len(calls) == 1


@pytest.mark.parametrize("text", [WEATHER, f"  {WEATHER}\n", f"```json\n{WEATHER}\n```", f"[{WEATHER}]"])
def test_a_bare_json_answer_naming_a_tool_is_a_call(text):
    content, calls = parse(text, names=("get_weather",))
    assert content is None and _names_and_args(calls) == [("get_weather", {"city": "Paris"})]
    for step in (1, 5, 1000):
        parser = StreamParser(("get_weather",))
        sent = "".join(parser.feed(text[i : i + step]) for i in range(0, len(text), step))
        held, calls = parser.finish()
        assert sent == held == "" and len(calls) == 1 and parser.content() is None


@pytest.mark.parametrize("text", ['{"name": "other_tool", "arguments": {}}', '{"answer": 42}', "{not json", "[1, 2]"])
def test_bare_json_that_names_no_declared_tool_stays_content(text):
    assert parse(text, names=("get_weather",)) == (text, [])
    parser = StreamParser(("get_weather",))
    sent = "".join(parser.feed(c) for c in text)
    held, calls = parser.finish()
    assert sent + held == text and calls == []
