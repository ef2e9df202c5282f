"""Lark grammars, in llguidance's dialect, that force tool calls in a model's own syntax: the parsers'
`call_grammar` (tool_choice "required" or a named function) and `strict_grammar` ("auto" with strict
tools) are written here, one pair per format.

A call's JSON is an inline `%json` schema: `name` a `const` of one allowed function, its arguments that
function's `parameters` (any object where it has none), laid out as the structured outputs lay out JSON
(structured.spec.JSON_LAYOUT). A marker that the model's tokenizer holds as a control token is written as
that token (`<[id]>`): llguidance never matches a control token with text. The strict form lets the model
write anything until it opens a call, then holds the call to the grammar: a lazy lexeme ends the free text
at the marker when the marker is text, a control token does so by itself.
"""

import json
from collections.abc import Mapping, Sequence

from mistralcli.structured.spec import JSON_LAYOUT

ANY_TEXT = r"/(.|\n)*/"


def hermes(tools: Sequence[Mapping], names: Sequence[str] | None, parallel: bool, special: Mapping[str, int]) -> str:
    """`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, blocks separated by a newline."""
    return _lark(
        "start: call" + (' ("\\n" call)*' if parallel else ""),
        f'call: {_marker("<tool_call>", special)} "\\n" fn "\\n" {_marker("</tool_call>", special)}',
        f"fn: {_json(_calls_schema(tools, names))}",
    )


def hermes_strict(tools: Sequence[Mapping], special: Mapping[str, int], parallel: bool = True) -> str:
    """Text with marked calls, or bare call objects (which the parser takes at the output's start, as small
    models write them): as llama3_json_strict's, text that opens with `{` must be calls."""
    body = f'"\\n" fn "\\n" {_marker("</tool_call>", special)}'
    bare = "bare: fn" + (' ("\\n" fn)*' if parallel else "")
    return _lark(
        *_text_with_calls("<tool_call>", body, special, parallel, bare=True),
        bare,
        f"fn: {_json(_calls_schema(tools, strict=True))}",
    )


def mistral(tools: Sequence[Mapping], names: Sequence[str] | None, parallel: bool, special: Mapping[str, int]) -> str:
    """`[TOOL_CALLS]` then the v3 list, or v11's `name[ARGS]{...}` (repeated, each after its own marker)."""
    marker = _marker("[TOOL_CALLS]", special)
    return _lark(f"start: {marker} calls", *_mistral_calls(tools, names, parallel, special))


def mistral_strict(tools: Sequence[Mapping], special: Mapping[str, int], parallel: bool = True) -> str:
    return _lark(
        *_text_with_calls("[TOOL_CALLS]", "calls", special, parallel),
        *_mistral_calls(tools, None, parallel, special, True),
    )


def _mistral_calls(tools, names, parallel, special, strict=False) -> list[str]:
    marker, args = _marker("[TOOL_CALLS]", special), _marker("[ARGS]", special)
    listing = {"type": "array", "items": _calls_schema(tools, names, strict=strict), "minItems": 1}
    if not parallel:
        listing["maxItems"] = 1
    named = " | ".join(
        f"{json.dumps(name)} {args} {_json(schema)}" for name, schema in _functions(tools, names, strict)
    )
    return [
        'calls: " "? listing | named' + (f" ({marker} named)*" if parallel else ""),
        f"listing: {_json(listing)}",
        f"named: {named}",
    ]


def llama3_json(tools: Sequence[Mapping], names: Sequence[str] | None, parallel: bool) -> str:
    """`{"name": ..., "parameters": ...}`, several separated by `;`."""
    return _lark(*_llama3_calls(tools, names, parallel), "start: calls")


def llama3_json_strict(tools: Sequence[Mapping], special: Mapping[str, int], parallel: bool = True) -> str:
    """Text that does not open with `{`, or calls; after `<|python_tag|>` where that is a control token."""
    start = "start: calls | TEXT" + (
        f" | {_marker('<|python_tag|>', special)} calls" if "<|python_tag|>" in special else ""
    )
    return _lark(start, r"TEXT: /([^{](.|\n)*)?/", *_llama3_calls(tools, None, parallel, strict=True))


def _llama3_calls(tools, names, parallel, strict=False) -> list[str]:
    return [
        "calls: fn" + (' (";" " "? fn)*' if parallel else ""),
        f"fn: {_json(_calls_schema(tools, names, key='parameters', strict=strict))}",
    ]


def bare_json(tools: Sequence[Mapping], names: Sequence[str] | None, parallel: bool) -> str:
    """A call object, or (parallel) a JSON list of them."""
    return _lark("start: fn", f"fn: {_json(_bare_schema(tools, names, parallel))}")


def bare_json_strict(tools: Sequence[Mapping], parallel: bool = True) -> str:
    """Text that does not open with `{` or `[`, or calls."""
    schema = _bare_schema(tools, None, parallel, True)
    return _lark("start: fn | TEXT", r"TEXT: /([^{\[](.|\n)*)?/", f"fn: {_json(schema)}")


def _bare_schema(tools, names, parallel, strict=False) -> dict:
    one = _calls_schema(tools, names, strict=strict)
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]} if parallel else one


# ---- building blocks
def _functions(tools: Sequence[Mapping], names: Sequence[str] | None, strict: bool = False) -> list[tuple[str, dict]]:
    """(name, arguments schema) of the allowed functions; strict: only strict tools keep their parameters."""
    out = []
    for tool in tools:
        function = tool["function"]
        if names is not None and function["name"] not in names:
            continue
        schema = function.get("parameters") or {"type": "object"}
        if strict and not function.get("strict"):
            schema = {"type": "object"}
        out.append((function["name"], schema))
    if not out:
        raise ValueError("no tool to call")
    return out


def _calls_schema(tools, names=None, key: str = "arguments", strict: bool = False) -> dict:
    """One call object, naming one of the functions."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, key: schema},
            "required": ["name", key],
            "additionalProperties": False,
        }
        for name, schema in _functions(tools, names, strict)
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _json(schema: dict) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_LAYOUT})


def _marker(text: str, special: Mapping[str, int]) -> str:
    return f"<[{special[text]}]>" if text in special else json.dumps(text)


def _text_with_calls(
    trigger: str, body: str, special: Mapping[str, int], parallel: bool = True, bare: bool = False
) -> list[str]:
    """Free text with calls (`trigger` then body) anywhere in it: the pattern llguidance.StructTag compiles.
    parallel False: text with no call, or text then one call and nothing after it; the free text cannot
    hold the trigger's text (a lexeme that is the intersection of any text and the negation of any text
    holding the trigger), so a second call cannot pass for text. bare: the output may instead be a `bare`
    rule (bare call objects), and the text before the first call cannot open with `{`."""
    text = ANY_TEXT
    if not parallel and trigger not in special:  # a control token is never text: any text is free of it
        text = f"{ANY_TEXT} & ~/(.|\\n)*{_regex_literal(trigger)}(.|\\n)*/"
    first = f"{text} & ~/[ \\t\\n]*\\{{(.|\\n)*/" if bare else text
    alternatives = "bare | " if bare else ""

    def opened(rule: str, lexeme: str) -> list[str]:
        """A call (`rule`) after text (`lexeme`): a control-token trigger ends the text by itself, a text one
        through a lazy lexeme."""
        if trigger in special:
            return [f"{rule}: {lexeme} {_marker(trigger, special)} {body}"]
        return [f"{rule}_open[lazy]: {lexeme} {json.dumps(trigger)}", f"{rule}: {rule}_open {body}"]

    if parallel:
        rules = [f"start: {alternatives}first_call call* TEXT | FIRST", f"TEXT: {text}", *opened("call", "TEXT")]
    else:  # one call at most
        rules = [f"start: {alternatives}FIRST | first_call"]
    return [*rules, f"FIRST: {first}", *opened("first_call", "FIRST")]


def _regex_literal(text: str) -> str:
    """text as a regex that matches it literally, inside Lark's /.../."""
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}/" else c for c in text)


def _lark(*rules: str) -> str:
    return "%llguidance {}\n" + "\n".join(rules) + "\n"
