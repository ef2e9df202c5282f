"""A model prompted with tools, and its answers read for calls: the chat template shows the tools, the
template's call format (tools/parsers.py) reads the calls, and, unless the caller constrains the answer
itself, a grammar holds every call to its tool's name and parameters. The Python API's tool loop (LLM.chat)
and `mistral chat`'s agent mode prompt through it."""

import dataclasses

from mistralcli.prompt import encode_prompt, render_chat
from mistralcli.reasoning import Thinking
from mistralcli.sampling import SamplingParams
from mistralcli.tools.loop import held


class ToolPrompting:
    """caller_tools: the caller's tools (OpenAI entries), whose calls go back to the caller; own_tools:
    the tools run here, whose calls the grammar also holds to their parameters (`held`)."""

    def __init__(
        self,
        loaded,
        caller_tools: list[dict],
        own_tools: list[dict],
        params: SamplingParams,
        template_kwargs: dict | None = None,
    ):
        from mistralcli.structured import StructuredOutputs
        from mistralcli.tools import TOOL_CALL_PARSERS, parser_for_template

        self.loaded = loaded
        self.tools = [*caller_tools, *own_tools]  # as the template shows them
        self.parser = TOOL_CALL_PARSERS[parser_for_template(loaded.chat_template.source)]
        tokenizer = loaded.tokenizer
        extra: dict = {}
        if self.parser.keeps_special_tokens(tokenizer):
            extra["skip_special_tokens"] = False
        if params.structured is None:  # the tools are held to their parameters
            grammar = self.parser.strict_grammar(
                [*caller_tools, *map(held, own_tools)], special_tokens=self.parser.special_tokens(tokenizer)
            )
            extra["structured"] = StructuredOutputs(grammar=grammar)
        self.params = dataclasses.replace(params, **extra) if extra else params
        self.template_kwargs = template_kwargs

    def prompt(self, conversation: list[dict]) -> tuple[list[int], Thinking | None, SamplingParams]:
        """The conversation's prompt, how the model thinks in it (a template may think or not by its
        kwargs), and the params: a constraint holds after the thought."""
        template = self.loaded.chat_template
        text = render_chat(template, conversation, self.tools, True, self.template_kwargs)
        thinking = Thinking.of(template.source, text, None)
        params = self.params
        if thinking is not None and params.structured is not None:
            params = dataclasses.replace(
                params, structured=thinking.constrain(params.structured, self.loaded.tokenizer)
            )
        return encode_prompt(self.loaded.tokenizer, text), thinking, params

    def reader(self, thinking: Thinking | None) -> "AnswerReader":
        return AnswerReader(self.parser(self.tools), thinking)

    def read(self, text: str, thinking: Thinking | None) -> tuple[str, list[dict], bool]:
        """The content of a whole answer, its calls, and whether a call could not be parsed."""
        reader = self.reader(thinking)
        content = "".join(c for _, c in reader.feed(text))
        content += "".join(c for _, c in reader.finish())
        return content, reader.calls, reader.broken


class AnswerReader:
    """An answer read as it streams: feed(piece) gives (reasoning, content) pieces, the thought split off
    and the calls' text held back; after finish(), `calls` and `broken` (a call could not be parsed).
    parser None: an answer without tools (all of it content)."""

    def __init__(self, parser, thinking: Thinking | None):
        self.parser = parser
        self.splitter = thinking.new_parser() if thinking is not None else None
        self.calls: list[dict] = []
        self.broken = False

    def _pieces(self, reasoning: str, text: str) -> list[tuple[str, str]]:
        from mistralcli.tools import ContentDelta

        if self.parser is not None and text:
            text = "".join(e.text for e in self.parser.feed(text) if isinstance(e, ContentDelta))
        return [(reasoning, text)] if reasoning or text else []

    def feed(self, piece: str) -> list[tuple[str, str]]:
        return self._pieces(*(self.splitter.feed(piece) if self.splitter is not None else ("", piece)))

    def finish(self) -> list[tuple[str, str]]:
        from mistralcli.tools import ContentDelta

        out = self._pieces(*self.splitter.finish()) if self.splitter is not None else []
        if self.parser is None:
            return out
        end = self.parser.finish()
        self.calls, self.broken = end.calls, end.error is not None
        held_back = "".join(e.text for e in end.events if isinstance(e, ContentDelta))
        return out + ([("", held_back)] if held_back else [])
