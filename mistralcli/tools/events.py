"""What a tool-call parser gives as it reads: content text, pieces of tool calls, and at the end the calls and
the parse error, in OpenAI's shapes."""

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class ContentDelta:
    """Text of the message's content."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call `index`: the first carries the call's id and name, the others a fragment of its
    arguments' JSON text (joined, the fragments are the call's `arguments`)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def body(self) -> dict:
        """The delta as OpenAI streams it in `choices[].delta.tool_calls`."""
        if self.id is None:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        function = {"name": self.name, "arguments": self.arguments}
        return {"index": self.index, "id": self.id, "type": "function", "function": function}


@dataclass(frozen=True)
class ToolCallParseError:
    """A call the model opened that could not be parsed; raw: the output from that call on."""

    message: str
    raw: str

    def body(self) -> dict:
        return {"message": self.message, "raw": self.raw}


Event = ContentDelta | ToolCallDelta


class ParsedEnd(NamedTuple):
    events: list[Event]  # the last ones
    calls: list[dict]  # every call, in OpenAI's message shape: {"id", "type", "function": {"name", "arguments"}}
    error: ToolCallParseError | None
