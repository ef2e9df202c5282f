"""Reasoning parsers: the thought a model writes between `<think>` and `</think>`, kept apart from its answer.

Qwen3, SmolLM3 and the DeepSeek-R1 distills think in `<think>...</think>` before they answer. Where the
chat template already ends the prompt with `<think>\\n` (DeepSeek-R1 distills, Qwen3 thinking templates)
the output starts inside the thought and only `</think>` appears; elsewhere the model opens its output
with `<think>`, or answers straight away. The server asks `prompt_ends_in_thought` which case a rendered
prompt is and builds one parser per choice, `REASONING_PARSERS[name](starts_in_thought=...)`, that it
feeds the text as it is decoded.

What counts: `<think>` opens a thought only at the start of the output (whitespace before it aside), so
an answer that mentions the tag stays an answer; the first `</think>` closes it, and all that follows
is content, tags and all. Whitespace as Qwen3's own template reads an answer back
(`content.split('</think>')[-1].lstrip('\\n')`): the newlines right after `<think>` and right after
`</think>` are dropped, and the whitespace before an opening `<think>`; the rest is kept as written.
"""

from dataclasses import dataclass
from enum import Enum

from mistralcli.engine.thinking import ThinkingBudget
from mistralcli.structured.spec import StructuredOutputs, after_thought

THINK_MARKERS = ("<think>", "</think>", "enable_thinking")


class Phase(Enum):
    START = "start"  # nothing decided yet: the output may open with <think>
    THOUGHT = "thought"
    ANSWER = "answer"


class ThinkParser:
    """One choice's stream split into (reasoning, content) at `<think>` / `</think>`.

    feed(text) returns the pieces that are safe to emit now: only what may still become a tag is held
    back (a partial tag at the end, or the whitespace and partial `<think>` at the very start) until the
    next feed or finish() tells. A thought never closed (max_tokens hit inside it) is all reasoning.
    """

    name = "think"
    start_tag = "<think>"
    end_tag = "</think>"
    end_of_thought_text = "</think>"  # what a thinking budget forces when it runs out

    def __init__(self, starts_in_thought: bool = False):
        """starts_in_thought: the prompt ended inside an open think block (see prompt_ends_in_thought);
        the output may still repeat the `<think>`, which is then dropped."""
        self.phase = Phase.START
        self.has_thought = starts_in_thought  # a thought was opened, by the prompt or by the output
        self._held = ""
        self._strip_newlines = starts_in_thought  # right after a tag: drop newlines until text comes

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) of text, joined to what was held back, that can be emitted now."""
        text, self._held = self._held + text, ""
        reasoning, content = [], []
        while text:
            if self.phase is Phase.START:
                text = self._open(text)
            elif self.phase is Phase.THOUGHT:
                text = self._lstrip(text)
                end = text.find(self.end_tag)
                if end < 0:
                    keep = len(text) - _partial_tag_length(text, self.end_tag)
                    reasoning.append(text[:keep])
                    self._held = text[keep:]
                    break
                reasoning.append(text[:end])
                text = text[end + len(self.end_tag) :]
                self.phase, self._strip_newlines = Phase.ANSWER, True
            else:
                content.append(self._lstrip(text))
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """(reasoning, content) still held back at the end of the stream: a partial tag is only text."""
        held, self._held = self._held, ""
        if self.phase is Phase.START:
            self.phase = Phase.THOUGHT if self.has_thought else Phase.ANSWER
        return (self._lstrip(held), "") if self.phase is Phase.THOUGHT else ("", held)

    def _open(self, text: str) -> str:
        """At the start: cross an opening `<think>`, hold what may still become one, or decide there is
        none. Returns the text left to parse in the phase decided ("" when held)."""
        head = text.lstrip()
        if head.startswith(self.start_tag):
            self.phase, self.has_thought, self._strip_newlines = Phase.THOUGHT, True, True
            return head[len(self.start_tag) :]
        if self.start_tag.startswith(head):  # whitespace only so far, or a partial <think>
            self._held = text
            return ""
        self.phase = Phase.THOUGHT if self.has_thought else Phase.ANSWER
        return text

    def _lstrip(self, text: str) -> str:
        if not self._strip_newlines:
            return text
        stripped = text.lstrip("\n")
        if stripped:
            self._strip_newlines = False
        return stripped


class DeepSeekR1Parser(ThinkParser):
    """DeepSeek-R1 and its distills: their template opens the thought, so the output starts inside it."""

    name = "deepseek_r1"

    def __init__(self, starts_in_thought: bool = True):
        super().__init__(starts_in_thought)


REASONING_PARSERS: dict[str, type[ThinkParser]] = {cls.name: cls for cls in (ThinkParser, DeepSeekR1Parser)}


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of text that is a proper beginning of tag (0 if none)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def reasoning_parser_for_template(template_source: str | None) -> str | None:
    """The reasoning parser a chat template calls for: `think` where it knows `<think>` / `</think>` or
    takes `enable_thinking` (Qwen3, SmolLM3, DeepSeek-R1 distills), None where the model does not think."""
    if template_source and any(marker in template_source for marker in THINK_MARKERS):
        return ThinkParser.name
    return None


def prompt_ends_in_thought(prompt: str, parser_class: type[ThinkParser] = ThinkParser) -> bool:
    """Whether a rendered prompt leaves a think block open (its last `<think>` after its last
    `</think>`), so that the output starts inside the thought: DeepSeek-R1's `<think>\\n`, not Qwen3's
    empty `<think>\\n\\n</think>\\n\\n` of enable_thinking=False."""
    return prompt.rfind(parser_class.start_tag) > prompt.rfind(parser_class.end_tag)


def split_reasoning(text: str, parser: ThinkParser | None = None) -> tuple[str | None, str]:
    """(reasoning, content) of a whole output, read by a fresh parser (ThinkParser() by default) as a
    stream is; reasoning is None when no thought was opened.

    Args:
        text: the whole output of one choice.
        parser: a parser not fed yet, e.g. REASONING_PARSERS[name](starts_in_thought=...).
    """
    parser = parser or ThinkParser()
    reasoning, content = parser.feed(text)
    more_reasoning, more_content = parser.finish()
    return (reasoning + more_reasoning if parser.has_thought else None), content + more_content


@dataclass(frozen=True)
class Thinking:
    """How a request's output thinks: its parser, and whether the prompt left a thought open. With the
    tokenizer, the engine's side of it: a thinking budget, and a constraint held for the answer after the
    thought. The server and `mistral run` build theirs with `Thinking.of`."""

    parser: type[ThinkParser]
    starts_inside: bool

    @classmethod
    def of(cls, template_source: str | None, prompt: str, override: str | None = None) -> "Thinking | None":
        """The template's reasoning (override: a parser's name, or "none"), for this rendered prompt; None
        when the model does not think."""
        name = override or reasoning_parser_for_template(template_source)
        if not name or name == "none":
            return None
        parser = REASONING_PARSERS[name]
        return cls(parser, prompt_ends_in_thought(prompt, parser))

    def new_parser(self) -> ThinkParser:
        return self.parser(self.starts_inside)

    def budget(self, tokenizer, tokens: int) -> ThinkingBudget:
        """At most `tokens` in the thought; then "\\n</think>\\n\\n" is forced, as the models write it."""

        def ids(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special=False))

        return ThinkingBudget(
            tokens,
            start_ids=ids(self.parser.start_tag),
            end_ids=ids(self.parser.end_tag),
            forced_ids=ids("\n" + self.parser.end_of_thought_text + "\n\n"),
            starts_inside=self.starts_inside,
        )

    def constrain(self, spec: StructuredOutputs, tokenizer) -> StructuredOutputs:
        """spec held for the answer after the thought (the thought stays free)."""
        return after_thought(
            spec, self.parser.start_tag, self.parser.end_tag, self.starts_inside, lambda tag: tag_token(tokenizer, tag)
        )


def tag_token(tokenizer, text: str) -> int | None:
    """The one token a tag is (a control token, or a single token of the vocabulary), which a grammar then
    names by id, so the model writes that token (as a thinking budget and the parser expect), not the tag's
    text in pieces; None: the tag is more than one token."""
    special = tokenizer.control_id(text)
    if special is not None:
        return special
    ids = tokenizer.encode(text, add_special=False)
    return ids[0] if len(ids) == 1 else None
