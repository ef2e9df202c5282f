"""StructuredOutputs: one constraint on a request's output, named as vLLM's StructuredOutputsParams names
them, and its llguidance grammar. Pure Python: llguidance is imported only to write the grammar text."""

import json
from dataclasses import dataclass, fields

from mistralcli.errors import MistralError

# how a JSON schema's output is laid out: one space after ':' and ',' (what models write), no other
# whitespace, so a small model cannot spend its tokens on blank lines where the grammar would allow them
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarError(MistralError):
    """A constraint that cannot be used: a schema, regex or grammar llguidance cannot compile, or a keyword
    it does not support. field: which StructuredOutputs field it was."""

    def __init__(self, reason: str, field: str):
        super().__init__(f"{field}: {reason}")
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class StructuredOutputs:
    """Exactly one of: json (a JSON schema, as a dict or its text), json_object (any JSON object), regex,
    choice (one of these strings), grammar (Lark, in llguidance's dialect, or GBNF as llama.cpp writes it),
    llguidance (an llguidance grammar object or its JSON text)."""

    json: dict | str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    llguidance: dict | str | None = None

    def __post_init__(self):
        if self.choice is not None:
            object.__setattr__(self, "choice", tuple(self.choice))
        given = [f.name for f in fields(self) if getattr(self, f.name) not in (None, False)]
        if len(given) != 1:
            raise ValueError(
                "structured outputs take exactly one of json, json_object, regex, choice, grammar, llguidance"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.choice is not None and (not self.choice or not all(isinstance(c, str) and c for c in self.choice)):
            raise ValueError("choice must be a list of non-empty strings")

    @property
    def kind(self) -> str:
        return next(f.name for f in fields(self) if getattr(self, f.name) not in (None, False))

    def to_grammar(self) -> str:
        """The llguidance grammar (its text) for this constraint. Raises GrammarError for a schema that is
        not a JSON object; what llguidance itself refuses is found when it is compiled."""
        import llguidance

        kind = self.kind
        try:
            if kind == "json" or kind == "json_object":
                schema = self.json if kind == "json" else {"type": "object"}
                if isinstance(schema, str):
                    schema = json.loads(schema)
                if not isinstance(schema, dict):
                    raise GrammarError("a JSON schema is a JSON object", kind)
                return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT)
            if kind == "regex":
                return llguidance.LLMatcher.grammar_from_regex(self.regex)
            if kind == "choice":
                return llguidance.grammar_from("choice", json.dumps(list(self.choice)))
            if kind == "grammar":
                return llguidance.grammar_from("grammar", self.grammar)
            value = self.llguidance
            return value if isinstance(value, str) else json.dumps(value)
        except GrammarError:
            raise
        except (ValueError, TypeError) as exc:  # not JSON, or a GBNF grammar that does not convert
            raise GrammarError(str(exc), kind) from None


def after_thought(
    spec: StructuredOutputs, start: str, end: str, starts_inside: bool, special_id=lambda text: None
) -> StructuredOutputs:
    """spec applied to the answer of a model that thinks first: the output is a thought (free text, ended by
    `end`; opened by `start` unless the prompt already opened it, and optional then), newlines (which the
    reasoning parser drops), then what spec allows. special_id(tag) is the tag's token id where one token is
    the tag, else None: the grammar then names the tag by that id (a special token's text is never matched
    by ordinary tokens, and an ordinary tag token is then the only way to write the tag)."""
    grammar = spec.to_grammar()
    grammars = json.loads(grammar)["grammars"] if grammar.lstrip().startswith("{") else [{"lark_grammar": grammar}]
    answer, *rest = grammars

    def tag(text: str) -> str:
        token = special_id(text)
        return f"<[{token}]>" if token is not None else json.dumps(text)

    if special_id(end) is not None:  # free text, then the end token
        thought = f"thought: THOUGHT_TEXT {tag(end)}\nTHOUGHT_TEXT: /(.|\\n)*/"
    else:  # the shortest text that ends with the end tag (a lazy rule, as llguidance's tool-call tags do)
        thought = f"thought[lazy]: THOUGHT_TEXT {tag(end)}\nTHOUGHT_TEXT: /(.|\\n)*/"
    opening = "thought BLANK" if starts_inside else f"({tag(start)} thought BLANK)?"  # blank space after a thought only
    top = f"%llguidance {{}}\nstart: {opening} @answer\nBLANK: /\\n*/\n{thought}\n"
    combined = {"grammars": [{"name": "after_thought", "lark_grammar": top}, {**answer, "name": "answer"}, *rest]}
    return StructuredOutputs(llguidance=combined)
