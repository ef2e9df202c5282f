"""A chat completion's choice: its text split, as it comes, into reasoning (a thinking model's thought), content
and tool calls, and what each output adds in OpenAI's streamed shape."""

from collections.abc import Callable
from dataclasses import dataclass, field

from mistralcli.engine.engine import RequestOutput
from mistralcli.reasoning import ThinkParser
from mistralcli.server.generate import _Choice
from mistralcli.tools import ContentDelta, ToolCallDelta, ToolCallParseError, ToolCallParser


@dataclass
class _ChatDelta:
    """What one output of a chat choice adds: reasoning, content and tool-call deltas (OpenAI's shape)."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)


@dataclass
class _ChatChoice(_Choice):
    """A chat choice: its text split, as it comes, into reasoning (by the reasoning parser), then content and
    tool calls (by the tool-call parser)."""

    reasoning_parser: ThinkParser | None = None
    tool_parser: ToolCallParser | None = None
    on_parse_error: Callable[[ToolCallParseError], None] | None = None
    reasoning: str = ""
    content: str = ""
    tool_calls: list = field(default_factory=list)
    parse_error: ToolCallParseError | None = None
    # the server's tool loop: the calls of its tools (run by the server, not the client's), whether the loop
    # goes on after this choice (its calls answered), and where the parser's call indexes go in the stream
    server_calls: list = field(default_factory=list)
    continues: bool = False
    stream_index: dict = field(default_factory=dict)

    def add(self, out: RequestOutput) -> _ChatDelta:
        text = super().add(out)
        reasoning = ""
        if self.reasoning_parser is not None:
            reasoning, text = self.reasoning_parser.feed(text)
            if out.finished:
                more_reasoning, more_text = self.reasoning_parser.finish()
                reasoning, text = reasoning + more_reasoning, text + more_text
        delta = _ChatDelta(reasoning=reasoning, content=text)
        if self.tool_parser is not None:
            events = self.tool_parser.feed(text)
            if out.finished:
                events, self.tool_calls, self.parse_error = self._finish_tools(events)
            delta.content = "".join(e.text for e in events if isinstance(e, ContentDelta))
            delta.tool_calls = _merged_tool_deltas(events)
        self.reasoning += delta.reasoning
        self.content += delta.content
        if out.finished and self.tool_calls and self.finish_reason != "length":  # cut off: "length", as OpenAI says
            self.finish_reason = "tool_calls"
        return delta

    def _finish_tools(self, events: list) -> tuple[list, list, ToolCallParseError | None]:
        end = self.tool_parser.finish()
        if end.error is not None and self.on_parse_error is not None:
            self.on_parse_error(end.error)
        return events + end.events, end.calls, end.error

    def message(self) -> dict:
        """The whole choice as OpenAI's assistant message."""
        message = {"role": "assistant", "content": (self.content or None) if self.tool_calls else self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.reasoning_parser is not None:
            message["reasoning_content"] = message["reasoning"] = (
                self.reasoning if self.reasoning_parser.has_thought else None
            )
        return message


def _merged_tool_deltas(events: list) -> list[dict]:
    """The tool-call deltas among events as OpenAI streams them, one per call in a chunk (its pieces joined)."""
    merged: list[dict] = []
    for event in events:
        if not isinstance(event, ToolCallDelta):
            continue
        if merged and merged[-1]["index"] == event.index:
            merged[-1]["function"]["arguments"] += event.arguments
        else:
            merged.append(event.body())
    return merged
