"""The OpenAI request shapes the server takes, as pydantic models: they validate a request (a bad one
is a 400 naming the field) and give /openapi.json its schemas. `sampling_params` turns a request into
the engine's SamplingParams.

Fields OpenAI defines keep its names, ranges and defaults; the engine's extensions (top_k, min_p,
typical_p, repetition_penalty, dry_*, min_tokens, ignore_eos, ...) are named as vLLM names them.
"""

import json
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mistralcli.sampling import SamplingParams
from mistralcli.structured import StructuredOutputs

MAX_N = 16
MAX_TOP_LOGPROBS = 20


class _Request(BaseModel):
    # unknown fields are ignored, as OpenAI's API does for forward compatibility
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Request):
    include_usage: bool = False


class JsonSchemaFormat(_Request):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # the schema is enforced either way: output never strays from it


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs a json_schema object')
        return self

    def structured(self) -> StructuredOutputs | None:
        if self.type == "json_object":
            return StructuredOutputs(json_object=True)
        if self.type == "json_schema":
            return StructuredOutputs(json=self.json_schema.schema_)
        return None


# the grammar extension's types -> StructuredOutputs' fields (lark takes GBNF too, as llama.cpp writes it)
GRAMMAR_TYPES = {
    "regex": "regex",
    "lark": "grammar",
    "gbnf": "grammar",
    "json_schema": "json",
    "llguidance": "llguidance",
}


class Grammar(_Request):
    """An extension for what OpenAI has no field for: {"type": "regex" | "lark" | "gbnf" | "json_schema" |
    "llguidance", "value": ...}."""

    type: Literal["regex", "lark", "gbnf", "json_schema", "llguidance"]
    value: str | dict[str, Any]

    def structured(self) -> StructuredOutputs:
        field = GRAMMAR_TYPES[self.type]
        if field in ("regex", "grammar") and not isinstance(self.value, str):
            raise ValueError(f"a {self.type} grammar's value is a string")
        return StructuredOutputs(**{field: self.value})


class VllmStructuredOutputs(_Request):
    """vLLM's `structured_outputs` request field (the StructuredOutputsParams fields we have)."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    json_object: bool = False
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def structured(self) -> StructuredOutputs:
        return StructuredOutputs(
            json=self.json_, json_object=self.json_object, regex=self.regex, choice=self.choice, grammar=self.grammar
        )


class _Sampling(_Request):
    """What chat and text completions share."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    seed: int | None = None
    user: str | None = None
    # extensions
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    typical_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0)] | None = None
    penalty_last_n: Annotated[int, Field(ge=0)] | None = None
    dry_multiplier: Annotated[float, Field(ge=0.0)] | None = None
    dry_base: Annotated[float, Field(gt=1.0)] | None = None
    dry_allowed_length: Annotated[int, Field(ge=1)] | None = None
    dry_penalty_last_n: Annotated[int, Field(ge=0)] | None = None
    dry_sequence_breakers: list[str] | None = None
    min_tokens: Annotated[int, Field(ge=0)] = 0
    ignore_eos: bool = False
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    allowed_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    banned_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    # structured output: OpenAI's response_format, our grammar extension, vLLM's structured_outputs (one of them)
    response_format: ResponseFormat | None = None
    grammar: Grammar | None = None
    structured_outputs: VllmStructuredOutputs | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops is not None and any(not s for s in stops):
            raise ValueError("a stop string may not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, value):
        for key in value or {}:
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys are token ids; got {key!r}")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def structured(self) -> tuple[StructuredOutputs | None, str | None]:
        """The output's constraint and the field it came from. Raises ValueError for more than one, or one
        that is not well-formed (a schema that does not compile is the engine's to refuse)."""
        given = [name for name in ("response_format", "grammar", "structured_outputs") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one way of constraining the output")
        if not given:
            return None, None
        try:
            return getattr(self, given[0]).structured(), given[0]
        except ValueError as exc:
            raise ValueError(f"{given[0]}: {exc}") from None

    def max_tokens_field(self) -> str:
        """The field requested_max_tokens comes from, for errors."""
        return "max_tokens"


class TextContent(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str
    arguments: str = "{}"


class ToolCall(_Request):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall

    @field_validator("function")
    @classmethod
    def _arguments_are_an_object(cls, value: FunctionCall):
        json_object_text(value.arguments, "arguments ")
        return value


def json_object_text(text: str, what: str = "") -> str:
    """A field validator's check: text is a JSON object (else ValueError, its message begun by what)."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what}is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{what}must be a JSON object (in a string)")
    return text


def text_parts_only(parts, refused: tuple[str, ...]):
    """A field validator's check (before parsing): no part of these kinds (images and the like), each named
    with its place, rather than a discriminator's error."""
    for i, part in enumerate(parts if isinstance(parts, list) else []):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in refused:
            raise ValueError(f"{i}: {kind} is not supported (this server's models read text)")
    return parts


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContent] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(_Request):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # with tool_choice "auto", calls are held to the parameters (constrained decoding)

    @field_validator("parameters")
    @classmethod
    def _a_json_schema(cls, value):
        return check_json_schema(value)


def check_json_schema(value: dict | None) -> dict | None:
    """A field validator's check: value is None or a valid JSON schema (else ValueError)."""
    if value is not None:
        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
    return value


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


def template_messages(messages: list[ChatMessage]) -> list[dict]:
    """A conversation as chat templates expect it (content as one string, developer as system, a tool
    call's arguments as the object that OpenAI sends as JSON text)."""
    out = []
    for m in messages:
        message = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.name:
            message["name"] = m.name
        if m.tool_calls:
            message["tool_calls"] = [
                {
                    **c.model_dump(exclude_none=True),
                    "function": {"name": c.function.name, "arguments": json.loads(c.function.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[Tool] | None = None
    # "required" and a named function are forced by a grammar of the model's call syntax
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    # the most tokens a thinking model's thought may take (vLLM's name, and ours), then it answers
    thinking_token_budget: Annotated[int, Field(ge=0)] | None = None
    max_thinking_tokens: Annotated[int, Field(ge=0)] | None = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _one_tool_choice(cls, value):
        """One error for the field, not one per form it may take."""
        if value is None or value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict):
            try:
                return NamedToolChoice.model_validate(value)
            except ValidationError as exc:
                error = exc.errors()[0]
                raise ValueError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
        raise ValueError(
            f'give "none", "auto", "required" or {{"type": "function", "function": {{"name": ...}}}}; got {value!r}'
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def max_tokens_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def template_messages(self) -> list[dict]:
        return template_messages(self.messages)


class CompletionRequest(_Sampling):
    prompt: (
        str
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]], Field(min_length=1)]
    )
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    suffix: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's (and vLLM's) default for text completions

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value):
        if value:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        return value

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)


class ApprovalDecision(_Request):
    """POST /v1/agent/approvals/{id}: run the waiting call (true) or refuse it (false)."""

    approved: bool


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class ChatTemplateRequest(_Request):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[Tool] | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None


# the server's defaults where a request says nothing and the model recommends nothing: OpenAI's
# (temperature 1, top_p 1) with the engine's other filters off
SERVER_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}


def sampling_params(
    request: _Sampling, model_defaults: dict, logprobs: int | None, max_tokens: int | None
) -> SamplingParams:
    """The engine's SamplingParams for a request. Raises ValueError with a message naming the field."""
    values = {**SERVER_DEFAULTS, **model_defaults}
    for name in (
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repetition_penalty",
        "penalty_last_n",
        "seed",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "dry_sequence_breakers",
    ):
        value = getattr(request, name)
        if value is not None:
            values[name] = value
    if request.top_k is not None:
        values["top_k"] = max(0, request.top_k)  # -1 (vLLM's "off") is 0 here
    values.update(
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        min_tokens=request.min_tokens,
        ignore_eos=request.ignore_eos,
        n=request.n,
        max_tokens=max_tokens,
        logprobs=logprobs,
    )
    stops = request.stop
    values["stop"] = [stops] if isinstance(stops, str) else list(stops or [])
    for name in ("stop_token_ids", "allowed_token_ids", "banned_token_ids"):
        ids = getattr(request, name)
        if ids is not None:
            values[name] = list(ids)  # ids outside the vocabulary: the engine's validate refuses them
    if request.logit_bias:
        values["logit_bias"] = {int(k): v for k, v in request.logit_bias.items()}
    if request.min_tokens and max_tokens is not None and request.min_tokens > max_tokens:
        raise ValueError("min_tokens is larger than max_tokens")
    return SamplingParams(**values)
