"""ToolCallParser, the base of the tool-call formats: the bare form, the content between calls, and call
objects read as they come, whatever the format around them.

Every format takes a bare answer that is one call object, a JSON list of them (or, for Llama, objects
separated by `;`), optionally in a ```json fence, as small models write whatever their template says. Bare
JSON is a call only once it names one of the request's tools: until then it may be the answer itself, and
JSON that names none (`{"answer": 42}`) stays content. After a marker, the model meant a call: what cannot
be read as one (broken JSON, a function not among the tools, arguments against its parameters' schema) is
a parse error, reported with its raw text, which stays in the content; the calls before it are kept.

Streaming: `feed(text)` returns events, `ContentDelta` (text safe to show now: only what may be a marker's
start, and whitespace that may precede one, is held back) and `ToolCallDelta` (a call's id and name, then
its arguments' JSON text in fragments as the model writes it); `finish()` returns the last events, the
calls and the error. How the output is split into feeds changes the fragments, never what they add up to.
Whitespace around calls is not content.
"""

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import jsonschema

from mistralcli.tools.events import ContentDelta, Event, ParsedEnd, ToolCallDelta, ToolCallParseError


class BrokenCall(Exception):
    """What is being read is not a well-formed call (a parse error, or content where the call was bare)."""


@dataclass
class _Call:
    """The call being read; its span of arguments is positions in the parser's text."""

    index: int
    name: str | None = None
    id: str | None = None  # set when its first delta goes out
    args_start: int | None = None
    args_end: int | None = None
    args_sent: int = 0  # arguments text up to here went out as fragments
    args_is_string: bool = False  # `"arguments": "{\"a\": 1}"`: sent decoded, whole, at the end


_CUT = "the tool call is cut off"
_SCALAR_END = ",}] \t\r\n"


class ToolCallParser:
    """Base of the formats: the bare form, the content between calls, and reading call objects as they
    come. A format names its markers and reads what follows one (`_marked`).

    The reading is a generator over the growing text: it yields when it needs more, and `finish` resumes
    it once more with `is_final` set, where every wait returns at once."""

    name: ClassVar[str] = ""
    markers: ClassVar[tuple[str, ...]] = ()  # texts that open calls in running text
    separator: ClassVar[str | None] = None  # between bare call objects
    grammar_tokens: ClassVar[tuple[str, ...]] = ()  # marker texts a grammar writes as the token when it is one

    def __init__(self, tools: Sequence[Mapping]):
        """tools: the request's tools, as OpenAI gives them (`{"type": "function", "function": {...}}`)."""
        self.functions = {t["function"]["name"]: t["function"].get("parameters") for t in tools}
        self.text = ""
        self.pos = 0  # read up to here
        self.is_final = False
        self.calls: list[dict] = []
        self._events: list[Event] = []
        self._call: _Call | None = None
        self._num_headers = 0  # calls whose first delta went out
        self._tentative_from: int | None = None  # in a bare region: _num_headers when it began
        self._error: tuple[str, int] | None = None  # message, where the raw text begins
        self._run = self._parse()

    def feed(self, text: str) -> list[Event]:
        """Events for the next piece of output."""
        self.text += text
        next(self._run, None)
        return self._take_events()

    def finish(self) -> ParsedEnd:
        """The end of the output: what was held back, the calls and the parse error, if any."""
        self.is_final = True
        next(self._run, None)
        error = None
        if self._error is not None:
            message, raw_start = self._error
            error = ToolCallParseError(message, self.text[raw_start:])
        return ParsedEnd(self._take_events(), list(self.calls), error)

    # ---- the model's tokens for this format
    @classmethod
    def special_tokens(cls, tokenizer) -> dict[str, int]:
        """The grammar's marker texts that are control tokens of this tokenizer, with their ids (for the
        grammars' special_tokens)."""
        return {m: token for m in cls.grammar_tokens if (token := tokenizer.control_id(m)) is not None}

    @classmethod
    def keeps_special_tokens(cls, tokenizer) -> bool:
        """Whether a marker is a control token of this tokenizer (Mistral's [TOOL_CALLS], Llama's
        <|python_tag|>): then the output's control tokens must stay in its text, for the parser to see."""
        return any(tokenizer.control_id(m) is not None for m in (*cls.markers, *cls.grammar_tokens))

    # ---- the grammars that force this format's calls (see grammars.py)
    @classmethod
    def call_grammar(
        cls,
        tools: Sequence[Mapping],
        *,
        names: Sequence[str] | None = None,
        parallel: bool = True,
        special_tokens: Mapping[str, int] | None = None,
    ) -> str:
        """A Lark grammar (llguidance's dialect) for an output that is nothing but calls in this format: one,
        or one or more when parallel, each naming one of `names` (default: every tool) with arguments that
        match its parameters. special_tokens: the model's control tokens by text, for markers that are one
        (a control token never matches text, so the grammar names it)."""
        raise NotImplementedError

    @classmethod
    def strict_grammar(
        cls, tools: Sequence[Mapping], *, special_tokens: Mapping[str, int] | None = None, parallel: bool = True
    ) -> str:
        """A Lark grammar for tool_choice "auto" with strict tools, or with parallel_tool_calls false: any
        text, but a call the model opens must name a tool, with arguments matching its parameters where the
        tool is strict (an object where it is not); parallel False: at most one call, and nothing after it."""
        raise NotImplementedError

    # ---- the output's structure
    def _parse(self) -> Iterator[None]:
        yield from self._skip_ws()
        if (yield from self._region(self._bare(), resume=0, raw_start=self.pos, is_bare=True)):
            yield from self._skip_ws()
        while self._error is None:
            found = yield from self._content()
            if found is None:
                return
            resume, raw_start, marker = found
            if (yield from self._region(self._marked(marker), resume, raw_start, is_bare=False)):
                yield from self._skip_ws()
        yield from self._passthrough()

    def _region(self, body: Iterator[None], resume: int, raw_start: int, is_bare: bool) -> Iterator[None]:
        """Read calls with body; returns whether they were. A bare region that named no tool is content from
        `resume` on; any other failure is the parse error, and all from `resume` on is content."""
        self._tentative_from = self._num_headers if is_bare else None
        try:
            yield from body
            return True
        except BrokenCall as exc:
            self._send_arguments()  # what was read up to the break, whatever the feeds were
            self._call = None
            self.pos = resume
            if not self._is_tentative():
                self._error = (str(exc), raw_start)
            return False
        finally:
            self._tentative_from = None

    def _is_tentative(self) -> bool:
        """In a bare region that has not named a tool yet: what fails is content, not an error."""
        return self._tentative_from is not None and self._num_headers == self._tentative_from

    def _bare(self) -> Iterator[None]:
        is_fenced = yield from self._accept("```")
        if is_fenced:
            yield from self._accept("json")
            yield from self._skip_ws()
        yield from self._calls(self.separator)
        if is_fenced:
            yield from self._skip_ws()
            yield from self._accept("```")

    def _marked(self, marker: str) -> Iterator[None]:
        """Read what follows `marker` (the position is past it)."""
        raise NotImplementedError

    def _content(self) -> Iterator[None]:
        """Send content up to the next marker; returns (where content ends, where the marker begins, the
        marker), the position past it, or None at the end of the output."""
        while True:
            found = min(((i, m) for m in self.markers if (i := self.text.find(m, self.pos)) >= 0), default=None)
            if found is not None:
                at, marker = found
                end = self._rstrip(at)
                self._send_content(end)
                self.pos = at + len(marker)
                return end, at, marker
            if self.is_final:
                self._send_content(self._rstrip(len(self.text)) if self.calls else len(self.text))
                return None
            self._send_content(self._rstrip(len(self.text) - self._partial_marker()))
            yield from self._more()

    def _passthrough(self) -> Iterator[None]:
        """After a parse error: everything is content."""
        while True:
            self._send_content(len(self.text))
            if not (yield from self._more()):
                return

    # ---- calls
    def _calls(self, separator: str | None = None) -> Iterator[None]:
        """One call object, a JSON list of them, or call objects separated by `separator`."""
        opening = yield from self._peek()
        if opening == "[":
            yield from self._call_list()
            return
        yield from self._call_object()
        while separator:
            yield from self._skip_ws()
            if not (yield from self._accept(separator)):
                return
            yield from self._skip_ws()
            yield from self._call_object()

    def _call_list(self) -> Iterator[None]:
        self.pos += 1
        yield from self._skip_ws()
        if (yield from self._accept("]")):
            raise BrokenCall("the list of tool calls is empty")
        while True:
            yield from self._skip_ws()
            yield from self._call_object()
            if (yield from self._next_item("]", "after a tool call in the list")):
                return

    def _call_object(self) -> Iterator[None]:
        """Read `{"name": ..., "arguments": {...}}` (or "parameters"), keys in any order, streaming it."""
        if (yield from self._peek()) != "{":
            raise BrokenCall("a tool call must be a JSON object")
        call = self._begin_call()
        self.pos += 1
        yield from self._skip_ws()
        if not (yield from self._accept("}")):
            while True:
                yield from self._skip_ws()
                if (yield from self._peek()) != '"':
                    raise BrokenCall("expected a key in the tool call object")
                start = self.pos
                yield from self._scan_string()
                key = _loads(self.text[start : self.pos], "a key")
                if key not in ("name", "arguments", "parameters") and self._is_tentative():
                    raise BrokenCall("not a tool call")
                yield from self._skip_ws()
                if not (yield from self._accept(":")):
                    raise BrokenCall(f"expected ':' after the key {key!r}")
                yield from self._skip_ws()
                if key == "name":
                    start = self.pos
                    yield from self._scan_value()
                    name = _loads(self.text[start : self.pos], "the function name")
                    if not isinstance(name, str):
                        raise BrokenCall("the function name must be a string")
                    self._name_call(call, name)
                elif key in ("arguments", "parameters"):
                    yield from self._arguments(call)
                else:
                    yield from self._scan_value()
                if (yield from self._next_item("}", "in the tool call object")):
                    break
        self._end_call(call)

    def _next_item(self, close: str, where: str) -> Iterator[None]:
        """After an item of a list or object: False at a ',' (another follows), True at `close` (the end)."""
        yield from self._skip_ws()
        if (yield from self._accept(",")):
            return False
        if (yield from self._accept(close)):
            return True
        raise BrokenCall(f"expected ',' or '{close}' {where}")

    def _arguments(self, call: _Call) -> Iterator[None]:
        """Read the arguments' value at the position, sending it as it comes once the call has a name."""
        call.args_is_string = (yield from self._peek()) == '"'
        call.args_start = call.args_sent = self.pos
        yield from self._scan_value()
        call.args_end = self.pos
        self._send_arguments()

    def _begin_call(self) -> _Call:
        self._call = _Call(index=len(self.calls))
        return self._call

    def _name_call(self, call: _Call, name: str) -> None:
        """The call's name is known: check it and send the call's first delta."""
        if call.id is not None:
            raise BrokenCall("the tool call names its function twice")
        if name not in self.functions:
            tools = ", ".join(self.functions)
            raise BrokenCall(f"the model called {name!r}, which is not among the request's tools ({tools})")
        call.name, call.id = name, f"call_{uuid.uuid4().hex[:24]}"
        self._events.append(ToolCallDelta(call.index, id=call.id, name=name))
        self._num_headers += 1
        self._send_arguments()

    def _end_call(self, call: _Call) -> None:
        """The call's text is complete: check its arguments and record it."""
        if call.name is None:
            raise BrokenCall("the tool call has no function name")
        if call.args_start is None:
            arguments = "{}"
        else:
            arguments = self.text[call.args_start : call.args_end]
            if call.args_is_string:
                arguments = _loads(arguments, f"the arguments of {call.name}")
        if call.args_start is None or call.args_is_string:
            self._events.append(ToolCallDelta(call.index, arguments=arguments))
        self._check_arguments(call.name, arguments)
        self.calls.append({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
        self._call = None

    def _check_arguments(self, name: str, arguments: str) -> None:
        value = _loads(arguments, f"the arguments of {name}")
        if not isinstance(value, dict):
            raise BrokenCall(f"the arguments of {name} are not a JSON object")
        schema = self.functions[name]
        if not schema:
            return
        error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
        if error is not None:
            where = f" (at {error.json_path})" if error.path else ""
            raise BrokenCall(f"the arguments of {name} do not match its parameters: {error.message}{where}")

    def _send_arguments(self) -> None:
        """Send the arguments text read so far of the call being read, once it has a name."""
        call = self._call
        if call is None or call.id is None or call.args_start is None or call.args_is_string:
            return
        end = call.args_end if call.args_end is not None else self.pos
        if end > call.args_sent:
            self._events.append(ToolCallDelta(call.index, arguments=self.text[call.args_sent : end]))
            call.args_sent = end

    # ---- JSON, structurally (the values that matter are checked by json.loads once complete)
    def _scan_value(self) -> Iterator[None]:
        opening = yield from self._peek()
        if opening == '"':
            yield from self._scan_string()
        elif opening and opening in "{[":
            closers = []
            while True:
                if self.pos == len(self.text):
                    if not (yield from self._more()):
                        raise BrokenCall(_CUT)
                    continue
                char = self.text[self.pos]
                if char == '"':
                    yield from self._scan_string()
                    continue
                self.pos += 1
                if char in "{[":
                    closers.append("}" if char == "{" else "]")
                elif char in "}]":
                    if char != closers.pop():
                        raise BrokenCall(f"unbalanced {char!r} in the tool call's JSON")
                    if not closers:
                        return
        elif opening and (opening in "-tfn" or opening.isdigit()):
            while True:
                if self.pos == len(self.text):
                    if not (yield from self._more()):
                        return
                    continue
                if self.text[self.pos] in _SCALAR_END:
                    return
                self.pos += 1
        else:
            raise BrokenCall(_CUT if not opening else f"expected a JSON value, not {opening!r}")

    def _scan_string(self) -> Iterator[None]:
        self.pos += 1
        is_escaped = False
        while True:
            if self.pos == len(self.text):
                if not (yield from self._more()):
                    raise BrokenCall(_CUT)
                continue
            char = self.text[self.pos]
            self.pos += 1
            if is_escaped:
                is_escaped = False
            elif char == "\\":
                is_escaped = True
            elif char == '"':
                return

    # ---- reading primitives: each waits (yields) until the text can tell, or the output ends
    def _more(self) -> Iterator[None]:
        """Wait for more text; returns False at the end of the output."""
        if self.is_final:
            return False
        self._send_arguments()
        yield
        return True

    def _peek(self) -> Iterator[None]:
        """The character at the position ("" at the end)."""
        while self.pos >= len(self.text):
            if not (yield from self._more()):
                return ""
        return self.text[self.pos]

    def _accept(self, literal: str) -> Iterator[None]:
        """Step past literal if the text goes on with it; returns whether it did."""
        while len(self.text) - self.pos < len(literal) and literal.startswith(self.text[self.pos :]):
            if not (yield from self._more()):
                return False
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def _skip_ws(self) -> Iterator[None]:
        while True:
            while self.pos < len(self.text) and self.text[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.text) or not (yield from self._more()):
                return

    # ---- content
    def _send_content(self, end: int) -> None:
        if end > self.pos:
            self._events.append(ContentDelta(self.text[self.pos : end]))
            self.pos = end

    def _rstrip(self, end: int) -> int:
        """Where the whitespace before `end` begins (not before the position)."""
        while end > self.pos and self.text[end - 1].isspace():
            end -= 1
        return end

    def _partial_marker(self) -> int:
        """Length of the longest end of the text that may be a marker's start."""
        unread = len(self.text) - self.pos
        return max(
            (k for m in self.markers for k in range(1, min(len(m), unread + 1)) if self.text.endswith(m[:k])), default=0
        )

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


def _loads(text: str, what: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BrokenCall(f"{what} is not valid JSON: {exc}") from None
