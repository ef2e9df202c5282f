"""Tool-call parsers, one class per output format, registered by name in TOOL_CALL_PARSERS (one instance per
choice), and the format a chat template teaches (`parser_for_template`):

- `hermes` (Hermes, Qwen 2/2.5/3): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, one block
  per call, or a JSON list of calls in one block (SmolLM2);
- `mistral`: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (v3), or `[TOOL_CALLS]name[ARGS]{...}`,
  repeated for each call (v11);
- `llama3_json` (Llama 3.x): `{"name": ..., "parameters": {...}}`, several separated by `;`, bare or after
  `<|python_tag|>`;
- `json`: nothing but the bare form every format takes (see base.py).

Each also writes the grammars that force its calls (grammars.py).
"""

from collections.abc import Iterator

from mistralcli.tools import grammars
from mistralcli.tools.base import BrokenCall, ToolCallParser


class HermesParser(ToolCallParser):
    name = "hermes"
    markers = ("<tool_call>",)
    grammar_tokens = ("<tool_call>", "</tool_call>")

    def _marked(self, marker):
        yield from self._skip_ws()
        yield from self._calls()
        yield from self._skip_ws()
        yield from self._accept("</tool_call>")

    @classmethod
    def call_grammar(cls, tools, *, names=None, parallel=True, special_tokens=None):
        return grammars.hermes(tools, names, parallel, special_tokens or {})

    @classmethod
    def strict_grammar(cls, tools, *, special_tokens=None, parallel=True):
        return grammars.hermes_strict(tools, special_tokens or {}, parallel)


class MistralParser(ToolCallParser):
    name = "mistral"
    markers = ("[TOOL_CALLS]",)
    grammar_tokens = ("[TOOL_CALLS]", "[ARGS]")

    def _marked(self, marker):
        yield from self._skip_ws()
        if (yield from self._peek()) in ("[", "{"):
            yield from self._calls()
        else:
            yield from self._named_call()

    def _named_call(self) -> Iterator[None]:
        """v11: `name[ARGS]{...}`."""
        start = self.pos
        while (char := (yield from self._peek())) and (char.isalnum() or char in "_-."):
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise BrokenCall("[TOOL_CALLS] is followed by neither a JSON list of calls nor a function name")
        if not (yield from self._accept("[ARGS]")):
            raise BrokenCall(f"expected [ARGS] after the function name {name!r}")
        call = self._begin_call()
        self._name_call(call, name)
        yield from self._skip_ws()
        yield from self._arguments(call)
        self._end_call(call)

    @classmethod
    def call_grammar(cls, tools, *, names=None, parallel=True, special_tokens=None):
        return grammars.mistral(tools, names, parallel, special_tokens or {})

    @classmethod
    def strict_grammar(cls, tools, *, special_tokens=None, parallel=True):
        return grammars.mistral_strict(tools, special_tokens or {}, parallel)


class Llama3JsonParser(ToolCallParser):
    name = "llama3_json"
    markers = ("<|python_tag|>",)
    separator = ";"
    grammar_tokens = ("<|python_tag|>",)

    def _marked(self, marker):
        yield from self._skip_ws()
        yield from self._calls(self.separator)

    @classmethod
    def call_grammar(cls, tools, *, names=None, parallel=True, special_tokens=None):
        return grammars.llama3_json(tools, names, parallel)

    @classmethod
    def strict_grammar(cls, tools, *, special_tokens=None, parallel=True):
        return grammars.llama3_json_strict(tools, special_tokens or {}, parallel)


class JsonParser(ToolCallParser):
    name = "json"

    @classmethod
    def call_grammar(cls, tools, *, names=None, parallel=True, special_tokens=None):
        return grammars.bare_json(tools, names, parallel)

    @classmethod
    def strict_grammar(cls, tools, *, special_tokens=None, parallel=True):
        return grammars.bare_json_strict(tools, parallel)


TOOL_CALL_PARSERS: dict[str, type[ToolCallParser]] = {
    cls.name: cls for cls in (HermesParser, MistralParser, Llama3JsonParser, JsonParser)
}


def parser_for_template(template_source: str | None) -> str:
    """The tool-call format a chat template teaches: `hermes` where it writes `<tool_call>`, `mistral` for
    `[TOOL_CALLS]`, `llama3_json` for `<|python_tag|>` or Llama 3 headers with tools, else `json`."""
    source = template_source or ""
    if "<tool_call>" in source:
        return HermesParser.name
    if "[TOOL_CALLS]" in source:
        return MistralParser.name
    if "<|python_tag|>" in source or ("<|start_header_id|>" in source and "tools" in source):
        return Llama3JsonParser.name
    return JsonParser.name
