"""Tool calls in a chat model's output, turned into OpenAI's `tool_calls`.

The formats the chat templates ask for:

- `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call (Hermes, Qwen 2/2.5/3),
  or a JSON list of calls in one block (SmolLM2);
- `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (Mistral), where the marker survives decoding;
- a bare JSON object (or list of them, optionally in a ```json fence) as the whole answer, naming one
  of the request's tools (what small models such as Qwen2.5-Coder-0.5B write).

Text before the first marker stays the message's content. When what follows a marker is not JSON
naming a function, nothing is taken for a call: the whole output stays content and finish_reason
stays as the engine said. Streaming, the parser holds back what might be a marker's start and
everything after a marker (and an answer that opens with `{`, `[` or a fence), until the choice finishes.
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
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": obj["name"], "arguments": arguments},
    }


def _bare(text: str, names) -> list[dict]:
    body = text.strip()
    if body.startswith("```"):
        body = body.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        obj = json.loads(body)
    except ValueError:
        return []
    found = [_call(o) for o in (obj if isinstance(obj, list) else [obj])]
    if not found or None in found or any(c["function"]["name"] not in names for c in found):
        return []
    return found


def parse(text: str, names=()) -> tuple[str | None, list[dict]]:
    """(content, calls) from a whole output; calls is empty when it holds no well-formed call.
    names: the request's tool names, for the bare JSON form."""
    start = min((i for i in (text.find(m) for m in MARKERS) if i >= 0), default=-1)
    if start < 0:
        calls = _bare(text, names) if names else []
        return (None, calls) if calls else (text, [])
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

    def __init__(self, names=()):
        self.names = tuple(names)
        self.text = ""
        self.sent = 0  # characters of self.text already returned as content
        self.in_call = False
        self.call_start = 0  # where the call began in self.text

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.in_call:
            return ""
        if self.names and self.sent == 0:  # the bare form: the whole answer is JSON
            opening = self.text.lstrip()
            if opening[:1] in ("{", "[") or opening.startswith("```"):
                self.in_call = True
                return ""
            if not opening or "```".startswith(opening):
                return ""  # whitespace, or maybe a fence: wait
        start = min((i for i in (self.text.find(m, self.sent) for m in MARKERS) if i >= 0), default=-1)
        if start >= 0:
            self.in_call = True
            out, self.sent, self.call_start = self.text[self.sent : start], start, start
            return out
        hold = max((k for m in MARKERS for k in range(1, len(m)) if self.text.endswith(m[:k])), default=0)
        end = max(self.sent, len(self.text) - hold)
        out, self.sent = self.text[self.sent : end], end
        return out

    def finish(self) -> tuple[str, list[dict]]:
        rest = self.text[self.sent :]
        if not self.in_call:
            self.sent = len(self.text)
            return rest, []
        _, calls = parse(rest, self.names)
        self.sent = len(self.text)
        return ("", calls) if calls else (rest, [])

    def content(self) -> str | None:
        """The message's content when it made calls: the prose before them, if any."""
        return self.text[: self.call_start].strip() or None
