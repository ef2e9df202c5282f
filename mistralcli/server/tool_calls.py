"""Tool calls in a chat model's output, turned into OpenAI's `tool_calls`.

The formats the chat templates ask for:

- `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call (Hermes, Qwen 2/2.5/3),
  or a JSON list of calls in one block (SmolLM2);
- `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (Mistral), where the marker survives decoding.

Text before the first marker stays the message's content. When what follows a marker is not JSON
naming a function, nothing is taken for a call: the whole output stays content and finish_reason
stays as the engine said. Streaming, the parser holds back what might be a marker's start and
everything after a marker, until the choice finishes.
"""

import json
import uuid

MARKERS = ("<tool_call>", "[TOOL_CALLS]")
CLOSE = "</tool_call>"


def _call(obj) -> dict | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": obj["name"], "arguments": arguments}}


def parse(text: str) -> tuple[str | None, list[dict]]:
    """(content, calls) from a whole output; calls is empty when it holds no well-formed call."""
    start = min((i for i in (text.find(m) for m in MARKERS) if i >= 0), default=-1)
    if start < 0:
        return text, []
    decoder, calls, pos = json.JSONDecoder(), [], start
    while pos < len(text):
        marker = next((m for m in MARKERS if text.startswith(m, pos)), None)
        if marker is None:
            return text, []
        pos = _skip_space(text, pos + len(marker))
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return text, []
        found = [_call(o) for o in (obj if isinstance(obj, list) else [obj])]
        if not found or None in found:
            return text, []
        calls += found
        pos = _skip_space(text, pos)
        if text.startswith(CLOSE, pos):
            pos = _skip_space(text, pos + len(CLOSE))
    content = text[:start].strip()
    return content or None, calls


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


class StreamParser:
    """Feed a choice's text as it comes; `feed` returns the content that is safe to send now, `finish`
    the (content still held, calls) at the end."""

    def __init__(self):
        self.text = ""
        self.sent = 0  # characters of self.text already returned as content
        self.in_call = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.in_call:
            return ""
        start = min((i for i in (self.text.find(m, self.sent) for m in MARKERS) if i >= 0), default=-1)
        if start >= 0:
            self.in_call = True
            out, self.sent = self.text[self.sent:start], start
            return out
        hold = max((k for m in MARKERS for k in range(1, len(m)) if self.text.endswith(m[:k])), default=0)
        end = max(self.sent, len(self.text) - hold)
        out, self.sent = self.text[self.sent:end], end
        return out

    def finish(self) -> tuple[str, list[dict]]:
        rest = self.text[self.sent:]
        if not self.in_call:
            self.sent = len(self.text)
            return rest, []
        _, calls = parse(rest)
        self.sent = len(self.text)
        return ("", calls) if calls else (rest, [])
