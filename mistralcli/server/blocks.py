"""A chat choice's output as typed blocks, one after another: a thought, text, tool calls. The protocols that
answer in blocks (Anthropic's content blocks, the Responses API's output items) stream their opening, growth
and end from these events; a protocol of deltas (chat completions) does not need them."""

from dataclasses import dataclass
from typing import Literal

from mistralcli.server.chat_choice import _ChatDelta

BlockKind = Literal["reasoning", "text", "tool_call"]


@dataclass
class Block:
    index: int  # among the answer's blocks, from 0
    kind: BlockKind
    text: str = ""  # the thought, the text, or the call's arguments (JSON text)
    call_id: str | None = None
    name: str | None = None  # the called function's


@dataclass(frozen=True)
class BlockEvent:
    type: Literal["start", "delta", "stop"]
    block: Block
    text: str = ""  # a delta's


class Blocks:
    """The blocks of one answer, fed its deltas in order. Text that is only whitespace waits for more: where a
    call comes next, it is dropped (the newline a model writes before its call is no block of its own)."""

    def __init__(self):
        self.blocks: list[Block] = []
        self.open: Block | None = None
        self.pending = ""  # whitespace that would begin a text block
        self.calls: dict[int, Block] = {}  # by the parser's call index

    def feed(self, piece: _ChatDelta) -> list[BlockEvent]:
        events = []
        if piece.reasoning:
            events += self._grow("reasoning", piece.reasoning)
        if piece.content:
            events += self._grow("text", piece.content)
        for delta in piece.tool_calls:
            function = delta["function"]
            if "id" in delta:  # a call's first piece names it
                events += self._start("tool_call", call_id=delta["id"], name=function["name"])
                self.calls[delta["index"]] = self.open
            block = self.calls.get(delta["index"])
            if block is self.open and block is not None and function.get("arguments"):  # (a cut call's last piece
                # may come after the text it turned into: dropped)
                block.text += function["arguments"]
                events.append(BlockEvent("delta", block, function["arguments"]))
        return events

    def close(self) -> list[BlockEvent]:
        """The end of the answer: the open block ends (whitespace still waiting is dropped)."""
        self.pending = ""
        if self.open is None:
            return []
        block, self.open = self.open, None
        return [BlockEvent("stop", block)]

    def _grow(self, kind: BlockKind, text: str) -> list[BlockEvent]:
        if self.open is not None and self.open.kind == kind:
            self.open.text += text
            return [BlockEvent("delta", self.open, text)]
        if kind == "text" and not (self.pending + text).strip():
            self.pending += text
            return []
        text, self.pending = (self.pending + text if kind == "text" else text), ""
        events = self._start(kind)
        self.open.text = text
        return [*events, BlockEvent("delta", self.open, text)]

    def _start(self, kind: BlockKind, **fields) -> list[BlockEvent]:
        events = self.close()
        self.open = Block(len(self.blocks), kind, **fields)
        self.blocks.append(self.open)
        return [*events, BlockEvent("start", self.open)]


class BlockStreaming:
    """For a chat handler whose stream is typed blocks (Anthropic's, the Responses API's): each output's deltas go
    to self.blocks, and each block event to the protocol's own _block_event (its events for a block's start,
    growth and end)."""

    def initialize(self, state):
        super().initialize(state)
        self.blocks = Blocks()

    async def _send_chunk(self, choice, out, piece) -> None:
        choice.started = True
        piece.tool_calls = self._client_deltas(choice, piece.tool_calls)  # the client's own calls only
        for event in self.blocks.feed(piece):
            await self._block_event(event)

    async def _close_blocks(self) -> None:
        """The open block ends (the answer's end, or a server tool call's start)."""
        for event in self.blocks.close():
            await self._block_event(event)


def choice_blocks(reasoning: str, content: str, tool_calls: list[dict]) -> list[Block]:
    """A whole answer's blocks (not streamed): its thought, its text, its calls (OpenAI's tool_calls)."""
    blocks = Blocks()
    blocks.feed(_ChatDelta(reasoning=reasoning, content=content))
    for call in tool_calls:
        function = call["function"]
        blocks._start("tool_call", call_id=call["id"], name=function["name"])
        blocks.open.text = function["arguments"]
    blocks.close()
    return blocks.blocks
