"""POST /v1/chat/completions: a conversation through the chat template, and each choice's text split as it
comes into reasoning (a thinking model's thought), content and tool calls, whole or streamed as OpenAI
streams them. Tool calls asked for (tool_choice "required", a named function, strict tools) and
structured output are grammars on the answer, after any thought; a thinking budget cuts a thought."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mistralcli.engine.engine import RequestOutput
from mistralcli.prompt import PromptError, render_chat
from mistralcli.reasoning import Thinking, ThinkParser
from mistralcli.server import protocol
from mistralcli.server.base import APIError, ServerState
from mistralcli.server.completions import _Choice, _GenerateHandler
from mistralcli.structured import StructuredOutputs
from mistralcli.tools import (
    TOOL_CALL_PARSERS,
    ContentDelta,
    ToolCallDelta,
    ToolCallParseError,
    ToolCallParser,
    parser_for_template,
)

log = logging.getLogger("mistralcli.server")


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


class ChatCompletionsHandler(_GenerateHandler):
    route = "/v1/chat/completions"
    id_prefix = "chatcmpl"
    prompt_param = "messages"
    response_object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    extra_fields = {"system_fingerprint": None}

    def initialize(self, state: ServerState):
        super().initialize(state)
        self.tools: list[dict] = []  # the request's tools, as dicts
        self.tool_parser: type[ToolCallParser] | None = None  # None: the output is not parsed for calls
        self.thinking: Thinking | None = None  # how the model thinks, where it does

    async def post(self):
        request = self.parse(protocol.ChatCompletionRequest)
        self.check_model(request.model)
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs", code="invalid_value")
        _check_tool_choice(request)
        text = self._render(request)
        self._choose_parsers(request, text)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        await self.generate(request, [self.encode_rendered(text)], logprobs)

    def _render(self, request: protocol.ChatCompletionRequest) -> str:
        """The prompt text; a conversation the template refuses is a 400 naming the message it refuses,
        where that can be told."""
        messages = request.template_messages()
        try:
            return self.render_chat(
                messages, request.tools, request.add_generation_prompt, request.chat_template_kwargs
            )
        except APIError as exc:
            if exc.code != "chat_template_error":
                raise
            tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
            args = (tools, request.add_generation_prompt, request.chat_template_kwargs)
            i = refused_message(self.state.settings.chat_template, messages, *args, message=exc.message)
            if i is None:
                raise
            raise APIError(400, f"messages.{i}: {exc.message}", param=f"messages.{i}", code=exc.code) from None

    def _choose_parsers(self, request: protocol.ChatCompletionRequest, prompt: str) -> None:
        """The reasoning parser and the tool-call parser: the server's, or the ones its chat template calls for."""
        settings = self.state.settings
        source = settings.chat_template.source
        self.thinking = Thinking.of(source, prompt, settings.reasoning_parser)
        if request.tools and request.tool_choice != "none":
            self.tools = [t.model_dump(exclude_none=True) for t in request.tools]
            self.tool_parser = TOOL_CALL_PARSERS[settings.tool_call_parser or parser_for_template(source)]

    def structured(self, request: protocol.ChatCompletionRequest) -> tuple[StructuredOutputs | None, str | None]:
        """The request's own constraint, or the one its tool calls ask for: never both. With a thinking
        model, it holds for the answer after the thought (which stays free)."""
        own, param = super().structured(request)
        forced = self._tool_constraint(request)
        if forced is not None and forced[1] == "parallel_tool_calls" and own is not None:
            forced = None  # the output is the request's own shape: the one-call grammar has nothing to hold
        if forced is not None and own is not None:
            why = "tool_choice forces the output" if forced[1] == "tool_choice" else "strict tools constrain it"
            raise APIError(400, f"{param} cannot be combined with tool calls: {why}", param=param, code="invalid_value")
        spec, param = forced or (own, param)
        if spec is not None and self.thinking is not None:
            spec = self.thinking.constrain(spec, self.state.tokenizer)
        return spec, param

    def sampling_extras(self, request: protocol.ChatCompletionRequest) -> dict:
        """The thinking budget, and the control tokens kept in the text where the tool-call markers are such
        tokens (Mistral's [TOOL_CALLS], Llama's <|python_tag|>): the parser must see them."""
        extra = {}
        markers = (*self.tool_parser.markers, *self.tool_parser.grammar_tokens) if self.tool_parser else ()
        if any(self.state.tokenizer.control_id(m) is not None for m in markers):
            extra["skip_special_tokens"] = False
        budget = request.thinking_token_budget
        if budget is None:
            budget = request.max_thinking_tokens
        if budget is not None:
            field_name = "thinking_token_budget" if request.thinking_token_budget is not None else "max_thinking_tokens"
            if self.thinking is None:
                message = f"{field_name}: this model's chat template does not think (no reasoning parser)"
                raise APIError(400, message, param=field_name, code="invalid_value")
            extra["thinking_budget"] = self.thinking.budget(self.state.tokenizer, budget)
        return extra

    def _tool_constraint(self, request: protocol.ChatCompletionRequest) -> tuple[StructuredOutputs, str] | None:
        """tool_choice "required" or a named function: a grammar of nothing but calls in the model's syntax;
        "auto" with strict tools, or with parallel_tool_calls false: free text whose calls are held to the
        syntax (and, for strict tools, to their parameters; at most one call without parallel calls). With
        the field asking."""
        if self.tool_parser is None:
            return None
        tokenizer = self.state.tokenizer
        markers = self.tool_parser.grammar_tokens
        special = {m: token for m in markers if (token := tokenizer.control_id(m)) is not None}
        choice = request.tool_choice
        if choice == "required" or isinstance(choice, protocol.NamedToolChoice):
            names = [choice.function.name] if isinstance(choice, protocol.NamedToolChoice) else None
            grammar = self.tool_parser.call_grammar(
                self.tools, names=names, parallel=request.parallel_tool_calls, special_tokens=special
            )
            return StructuredOutputs(grammar=grammar), "tool_choice"
        strict = any(t.function.strict for t in request.tools)
        if strict or not request.parallel_tool_calls:  # "auto": text, and calls held to the syntax (at most one)
            grammar = self.tool_parser.strict_grammar(
                self.tools, special_tokens=special, parallel=request.parallel_tool_calls
            )
            return StructuredOutputs(grammar=grammar), "tools" if strict else "parallel_tool_calls"
        return None

    def _new_choice(self, index: int) -> _ChatChoice:
        return _ChatChoice(
            index,
            reasoning_parser=self.thinking.new_parser() if self.thinking else None,
            tool_parser=self.tool_parser(self.tools) if self.tool_parser else None,
            on_parse_error=self._parse_error,
        )

    def _parse_error(self, error: ToolCallParseError) -> None:
        self.state.metrics.tool_call_parse_errors.labels(self.tool_parser.name).inc()
        log.warning(
            "%s: a tool call could not be parsed (%s): %s; raw: %.300r",
            self.completion_id,
            self.tool_parser.name,
            error.message,
            error.raw,
        )

    def _chunk_choice(self, choice: _ChatChoice, out: RequestOutput, piece: _ChatDelta) -> dict | None:
        is_first = not choice.started
        choice.started = True
        if not (piece or out.finished or is_first):
            return None
        delta = {"role": "assistant", "content": ""} if is_first else {}
        if piece.reasoning:
            delta["reasoning_content"] = delta["reasoning"] = piece.reasoning
        if piece.content:
            delta["content"] = piece.content
        if piece.tool_calls:
            delta["tool_calls"] = piece.tool_calls
        body = {
            "index": choice.index,
            "delta": delta,
            "logprobs": self._logprobs(out.logprobs) if self.logprobs is not None and out.logprobs else None,
            "finish_reason": choice.finish_reason if out.finished else None,
        }
        if out.finished and choice.parse_error is not None:
            body["tool_call_parse_error"] = choice.parse_error.body()
        return body

    def _response_choice(self, choice: _ChatChoice) -> dict:
        body = {
            "index": choice.index,
            "message": choice.message(),
            "logprobs": self._logprobs(choice.logprobs) if self.logprobs is not None else None,
            "finish_reason": choice.finish_reason,
        }
        if choice.parse_error is not None:
            body["tool_call_parse_error"] = choice.parse_error.body()
        return body

    def _logprobs(self, entries) -> dict:
        content = []
        for e in entries:
            text, raw = self._token(e.token_id)
            top = []
            for token_id, lp in e.top:
                t, b = self._token(token_id)
                top.append({"token": t, "logprob": lp, "bytes": b})
            content.append({"token": text, "logprob": e.logprob, "bytes": raw, "top_logprobs": top})
        return {"content": content}


def _check_tool_choice(request: protocol.ChatCompletionRequest) -> None:
    """A forced tool call needs tools, and a named function must be one of them."""
    choice = request.tool_choice
    names = [t.function.name for t in request.tools or []]
    if choice not in (None, "none", "auto") and not names:
        message = "tool_choice: a tool call is asked for, but there are no tools"
        raise APIError(400, message, param="tool_choice", code="invalid_value")
    if isinstance(choice, protocol.NamedToolChoice) and choice.function.name not in names:
        message = f"tool_choice: the function {choice.function.name!r} is not among the tools ({', '.join(names)})"
        raise APIError(400, message, param="tool_choice", code="invalid_value")


def refused_message(
    template, messages: list[dict], tools, add_generation_prompt, kwargs, *, message: str
) -> int | None:
    """The index of the message a chat template refuses with `message`: the end of the shortest beginning of
    the conversation that fails the same way (None when none does: the conversation as a whole is refused)."""
    for i in range(len(messages)):
        try:
            render_chat(template, messages[: i + 1], tools, add_generation_prompt, kwargs)
        except PromptError as exc:
            if str(exc) == message:
                return i
    return None
