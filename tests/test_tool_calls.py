"""Tool-call parsers (mistralcli/tools/parsers.py) on scripted outputs, whole and in every split of the stream,
and the grammars that force calls (mistralcli/tools/grammars.py), checked by an llguidance matcher."""

import re

import llguidance
import pytest

from mistralcli.tools import TOOL_CALL_PARSERS, ContentDelta, ToolCallDelta, parser_for_template

WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time"}},
]
W = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
T = '{"name": "get_time", "arguments": {}}'
PARIS = ("get_weather", '{"city": "Paris"}')
TIME = ("get_time", "{}")


def _splits(text: str):
    """The whole text, char by char, and every 2-way split."""
    yield [text]
    yield list(text)
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]


def _run(fmt: str, pieces: list[str]):
    """(content, events normalised, calls without ids, error) of a stream; checks the ids and fragments agree."""
    parser = TOOL_CALL_PARSERS[fmt](TOOLS)
    events = [e for piece in pieces for e in parser.feed(piece)]
    end = parser.finish()
    events += end.events
    normal = []  # adjacent pieces of the same kind merged: the same for every split
    for e in events:
        if isinstance(e, ContentDelta):
            item = ["content", e.text]
        elif e.id is not None:
            item = ["call", e.index, e.name, e.arguments]
        else:
            item = ["args", e.index, e.arguments]
        if normal and item[0] != "call" and normal[-1][:-1] == item[:-1]:
            normal[-1][-1] += item[-1]
        else:
            normal.append(item)
    headers = [e for e in events if isinstance(e, ToolCallDelta) and e.id is not None]
    assert [h.id for h in headers[: len(end.calls)]] == [c["id"] for c in end.calls]
    assert len({c["id"] for c in end.calls}) == len(end.calls)
    for k, call in enumerate(end.calls):
        sent = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == k)
        assert sent == call["function"]["arguments"]
        assert call["type"] == "function" and call["id"].startswith("call_")
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in end.calls]
    return content, normal, calls, end.error


def _check_every_split(fmt: str, text: str):
    whole = _run(fmt, [text])
    for pieces in _splits(text):
        assert _run(fmt, pieces) == whole, pieces
    return whole


@pytest.mark.parametrize(
    "fmt, text, content, calls",
    [
        ("hermes", f"<tool_call>\n{W}\n</tool_call>", "", [PARIS]),
        ("hermes", f"Let me look.\n<tool_call>{W}</tool_call>", "Let me look.", [PARIS]),
        ("hermes", f"<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{T}\n</tool_call>\n", "", [PARIS, TIME]),
        ("hermes", f'<tool_call>[{W}, {{"name": "get_time", "parameters": {{}}}}]</tool_call>', "", [PARIS, TIME]),
        ("hermes", '<tool_call>{"arguments": {"city": "Paris"}, "name": "get_weather"}</tool_call>', "", [PARIS]),
        (
            "hermes",
            '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
            "",
            [PARIS],
        ),
        ("hermes", '<tool_call>{"name": "get_time"}</tool_call>', "", [TIME]),
        ("hermes", f"<tool_call>{W}</tool_call> Done.", "Done.", [PARIS]),
        ("hermes", f"<tool_call>{W}", "", [PARIS]),  # the close tag cut by the end of the output
        ("hermes", W, "", [PARIS]),  # bare, as small models write whatever the template says
        ("mistral", f"[TOOL_CALLS] [{W}, {T}]", "", [PARIS, TIME]),
        ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}', "", [PARIS, TIME]),
        ("mistral", "Sure.[TOOL_CALLS]get_time[ARGS]{}", "Sure.", [TIME]),
        ("mistral", f"[{W}]", "", [PARIS]),  # the marker, a control token, decoded away
        ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
        ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}; ' + T, "", [PARIS, TIME]),
        ("llama3_json", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
        ("llama3_json", f"Checking. <|python_tag|>{W}", "Checking.", [PARIS]),
        ("json", W, "", [PARIS]),
        ("json", f"  {W}\n", "", [PARIS]),
        ("json", f"```json\n{W}\n```", "", [PARIS]),
        ("json", f"[{W}, {T}]", "", [PARIS, TIME]),
    ],
)
def test_calls_are_parsed_the_same_in_every_split(fmt, text, content, calls):
    got_content, _, got_calls, error = _check_every_split(fmt, text)
    assert (got_content, got_calls, error) == (content, calls, None)


@pytest.mark.parametrize(
    "fmt, text",
    [
        ("hermes", "No tools here."),
        ("hermes", "a <tool_ and <tool_cal done"),
        ("hermes", "ends with <tool_c"),
        ("hermes", "  spaces kept \n"),
        ("hermes", ""),
        ("mistral", "[TOOL"),
        ("mistral", "x [TOOL_CALL y"),
        ("mistral", "[1, 2]"),
        ("json", '{"name": "other_tool", "arguments": {}}'),  # names no declared tool: may be the answer
        ("json", '{"answer": 42}'),
        ("json", "{not json"),
        ("json", "[1, 2]"),
        ("json", "```python\nprint(1)\n```"),
        ("json", "Hello {x}"),
        ("llama3_json", '{"name": "Bob", "age": 3}'),
    ],
)
def test_text_that_is_no_call_is_content_verbatim(fmt, text):
    assert _check_every_split(fmt, text) == (text, [["content", text]] if text else [], [], None)


@pytest.mark.parametrize(
    "fmt, text, message",
    [
        ("hermes", "<tool_call>not json</tool_call>", "must be a JSON object"),
        ("hermes", '<tool_call>{"arguments": {}}</tool_call>', "no function name"),
        ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "Pa', "cut off"),
        ("hermes", '<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "'nope', which is not among"),
        ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": 3}}</tool_call>', "do not match"),
        ("hermes", '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', "'city' is a required"),
        ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"]}}', "unbalanced"),
        ("hermes", '<tool_call>{"name": "get_time", "arguments": [1]}', "not a JSON object"),
        ("hermes", '<tool_call>{"name": "get_time", "arguments": {"a": tru}}', "not valid JSON"),
        ("hermes", "<tool_call>[]</tool_call>", "empty"),
        ("hermes", "Sure <tool_call>{oops", "expected a key"),
        ("mistral", "[TOOL_CALLS]get_time{}", "expected [ARGS]"),
        ("mistral", "[TOOL_CALLS]nope[ARGS]{}", "not among"),
        ("json", '{"name": "get_weather", "arguments": {"city": 3}}', "do not match"),  # names a tool: a call
    ],
)
def test_a_broken_call_is_reported_and_stays_content(fmt, text, message):
    content, _, calls, error = _check_every_split(fmt, text)
    assert content == text and calls == []
    assert message in error.message
    assert error.raw == text[text.find("<tool_call>") if "<tool_call>" in text else 0 :].lstrip()


def test_calls_before_a_broken_one_are_kept():
    text = f'Hi.\n<tool_call>{W}</tool_call>\n<tool_call>{{"name": "nope"}}</tool_call>'
    content, normal, calls, error = _check_every_split("hermes", text)
    assert calls == [PARIS]
    assert error.raw == '<tool_call>{"name": "nope"}</tool_call>' and "nope" in error.message
    assert content == "Hi." + error.raw  # the whitespace between the calls is no content


def test_deltas_come_in_order_name_first_then_argument_fragments():
    text = f"Let me look.<tool_call>{W}</tool_call><tool_call>{T}</tool_call>"
    _, normal, _, _ = _check_every_split("hermes", text)
    assert normal == [
        ["content", "Let me look."],
        ["call", 0, "get_weather", ""],
        ["args", 0, '{"city": "Paris"}'],
        ["call", 1, "get_time", ""],
        ["args", 1, "{}"],
    ]


def test_streaming_sends_prose_at_once_and_arguments_as_they_are_written():
    parser = TOOL_CALL_PARSERS["hermes"](TOOLS)
    assert parser.feed("Hello there") == [ContentDelta("Hello there")]
    assert parser.feed(" <tool") == []  # the space may come before a marker, "<tool" may be one
    assert parser.feed("_call>{") == []
    header, fragment = parser.feed('"name": "get_weather", "arguments": {"ci')
    assert (header.index, header.name, header.arguments) == (0, "get_weather", "") and header.id
    assert fragment == ToolCallDelta(0, arguments='{"ci')
    assert parser.feed('ty": "Paris"}}</tool_call>') == [ToolCallDelta(0, arguments='ty": "Paris"}')]
    end = parser.finish()
    assert end.events == [] and end.error is None and len(end.calls) == 1


def test_bare_json_is_held_only_until_it_cannot_be_a_call():
    parser = TOOL_CALL_PARSERS["json"](TOOLS)
    assert parser.feed('{"name": "get_') == []
    assert parser.feed('weather", ')[0].name == "get_weather"
    parser = TOOL_CALL_PARSERS["json"](TOOLS)
    assert parser.feed('{"answer": 4') == [ContentDelta('{"answer": 4')]


@pytest.mark.parametrize(
    "source, name",
    [
        ("{% for tool in tools %}...{% endfor %}<tool_call>\n{{ call | tojson }}\n</tool_call>", "hermes"),
        ("{{ '[TOOL_CALLS]' + (message.tool_calls | tojson) }}", "mistral"),
        ("{{ '<|python_tag|>' + call }}", "llama3_json"),
        ("<|start_header_id|>user<|end_header_id|>{% if tools %}{{ tools | tojson }}{% endif %}", "llama3_json"),
        ("<|im_start|>{{ message['content'] }}<|im_end|>", "json"),
        (None, "json"),
    ],
)
def test_the_format_is_read_from_the_chat_template(source, name):
    assert parser_for_template(source) == name


# ---- grammars
SPECIALS = ["<eos>", "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>"]
SPECIAL_IDS = {text: 256 + i for i, text in enumerate(SPECIALS)}


class _ByteTokenizer:
    """One token per byte, and the control tokens above: what llguidance's TokenizerWrapper reads."""

    tokens = [bytes([i]) for i in range(256)] + [s.encode() for s in SPECIALS]
    eos_token_id = 256
    bos_token_id = None
    special_token_ids = list(SPECIAL_IDS.values())

    def __call__(self, text):
        return list(text.encode() if isinstance(text, str) else text)


LLTOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()))


def _ids(text: str) -> list[int]:
    parts = re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text)
    return [i for part in parts for i in ([SPECIAL_IDS[part]] if part in SPECIAL_IDS else list(part.encode()))]


def _accepts(grammar: str, text: str, ids=_ids) -> bool:
    matcher = llguidance.LLMatcher(LLTOKENIZER, grammar, log_level=0)
    return matcher.consume_tokens(ids(text)) and matcher.is_accepting() and not matcher.is_error()


HERMES_PARIS = f"<tool_call>\n{W}\n</tool_call>"
HERMES_TIME = f"<tool_call>\n{T}\n</tool_call>"
LLAMA_PARIS = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
LLAMA_TIME = '{"name": "get_time", "parameters": {}}'
GRAMMAR_CASES = {  # format: (one call, two calls, a call with arguments against the schema)
    "hermes": (HERMES_PARIS, f"{HERMES_PARIS}\n{HERMES_TIME}", HERMES_PARIS.replace('"Paris"', "3")),
    "mistral": (
        f"[TOOL_CALLS] [{W}]",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
        '[TOOL_CALLS]get_weather[ARGS]{"town": "Paris"}',
    ),
    "llama3_json": (LLAMA_PARIS, f"{LLAMA_PARIS}; {LLAMA_TIME}", LLAMA_PARIS.replace('"Paris"', "null")),
    "json": (W, f"[{W}, {T}]", W.replace("city", "town")),
}


@pytest.mark.parametrize("fmt", sorted(GRAMMAR_CASES))
def test_call_grammar_forces_the_formats_own_calls(fmt):
    one, two, bad = GRAMMAR_CASES[fmt]
    cls = TOOL_CALL_PARSERS[fmt]
    grammar = cls.call_grammar(TOOLS, special_tokens=SPECIAL_IDS)
    assert llguidance.LLMatcher.validate_grammar(grammar, LLTOKENIZER) == ""
    assert _accepts(grammar, one) and _accepts(grammar, two)
    assert not _accepts(grammar, bad) and not _accepts(grammar, "Sure! " + one) and not _accepts(grammar, "")
    single = cls.call_grammar(TOOLS, parallel=False, special_tokens=SPECIAL_IDS)
    assert _accepts(single, one) and not _accepts(single, two)
    named = cls.call_grammar(TOOLS, names=["get_time"], special_tokens=SPECIAL_IDS)
    assert not _accepts(named, one)
    for text in (one, two):  # what the grammar lets through, the parser reads back
        _, _, calls, error = _run(fmt, [text])
        assert error is None and calls[0] == PARIS


@pytest.mark.parametrize("fmt", sorted(GRAMMAR_CASES))
def test_strict_grammar_lets_text_through_and_holds_calls_to_the_schema(fmt):
    one, two, bad = GRAMMAR_CASES[fmt]
    tools = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}, TOOLS[1]]
    grammar = TOOL_CALL_PARSERS[fmt].strict_grammar(tools, special_tokens=SPECIAL_IDS)
    assert llguidance.LLMatcher.validate_grammar(grammar, LLTOKENIZER) == ""
    assert _accepts(grammar, "The weather is fine.") and _accepts(grammar, "")
    assert _accepts(grammar, one) and _accepts(grammar, two) and not _accepts(grammar, bad)
    if fmt in ("hermes", "mistral"):  # calls after prose: the marker opens them
        assert _accepts(grammar, f"Let me look. {one}") and not _accepts(grammar, f"Let me look. {bad}")
    loose = TOOL_CALL_PARSERS[fmt].strict_grammar(TOOLS, special_tokens=SPECIAL_IDS)
    assert _accepts(loose, bad)  # get_weather is not strict: any arguments object


def test_markers_that_are_not_control_tokens_are_text_in_the_grammar():
    grammar = TOOL_CALL_PARSERS["mistral"].call_grammar(TOOLS)  # no special_tokens: the markers are text
    text = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    assert _accepts(grammar, text, ids=lambda t: list(t.encode())) and not _accepts(grammar, text)


@pytest.mark.parametrize("fmt", sorted(GRAMMAR_CASES))
@pytest.mark.parametrize("markers_are_tokens", [True, False])
def test_without_parallel_calls_auto_allows_text_or_one_call(fmt, markers_are_tokens):
    one, two, bad = GRAMMAR_CASES[fmt]
    special = SPECIAL_IDS if markers_are_tokens else {}
    ids = _ids if markers_are_tokens else (lambda t: list(t.encode()))
    grammar = TOOL_CALL_PARSERS[fmt].strict_grammar(TOOLS, special_tokens=special, parallel=False)
    assert llguidance.LLMatcher.validate_grammar(grammar, LLTOKENIZER) == ""
    assert _accepts(grammar, "The weather is fine.", ids) and _accepts(grammar, one, ids)
    assert not _accepts(grammar, two, ids)  # a second call is neither a call nor text
    if fmt in ("hermes", "mistral"):
        assert _accepts(grammar, f"Let me look. {one}", ids) and not _accepts(grammar, f"Let me look. {one} Done.", ids)


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("markers_are_tokens", [True, False])
def test_hermes_strict_holds_bare_calls_too(parallel, markers_are_tokens):
    """Small models write Hermes calls bare (the parser takes them at the output's start): under strict tools
    such an output is held to the schema as well, and text cannot open with `{` to slip past it."""
    special = SPECIAL_IDS if markers_are_tokens else {}
    ids = _ids if markers_are_tokens else (lambda t: list(t.encode()))
    tools = [{**t, "function": {**t["function"], "strict": True}} for t in TOOLS]
    grammar = TOOL_CALL_PARSERS["hermes"].strict_grammar(tools, special_tokens=special, parallel=parallel)
    assert llguidance.LLMatcher.validate_grammar(grammar, LLTOKENIZER) == ""
    bare = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert _accepts(grammar, bare, ids) and _accepts(grammar, "The weather is fine.", ids)
    assert not _accepts(grammar, '{"name": "get_weather", "arguments": {"town": "Paris"}}', ids)
    assert not _accepts(grammar, "{'name': 'get_weather', 'arguments': {}}", ids)  # not JSON: not text either
    assert _accepts(grammar, f"{bare}\n{bare}", ids) == parallel
    _, _, calls, error = _run("hermes", [bare])
    assert error is None and calls[0] == PARIS
