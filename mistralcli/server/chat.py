"""POST /v1/chat/completions: a conversation through the chat template, and each choice's text split as it
comes into reasoning, content and tool calls (chat_choice.py), whole or streamed as OpenAI streams them.
Tool calls asked for (tool_choice "required", a named function, strict tools) and structured output are
grammars on the answer, after any thought; a thinking budget cuts a thought. With tools the server runs
itself (serve --enable-agent-tools, --mcp-config), the tool loop: their calls run and the model goes on."""

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field

from pydantic import ValidationError

from mistralcli.engine.engine import RequestError, RequestOutput
from mistralcli.prompt import PromptError, render_chat
from mistralcli.reasoning import Thinking
from mistralcli.sampling import SamplingParams
from mistralcli.server import protocol
from mistralcli.server.base import APIError, ServerState, invalid
from mistralcli.server.chat_choice import _ChatChoice, _ChatDelta
from mistralcli.server.generate import _GenerateHandler, _Usage
from mistralcli.structured import StructuredOutputs
from mistralcli.tools import (
    TOOL_CALL_PARSERS,
    ToolCallParseError,
    ToolCallParser,
    parser_for_template,
)
from mistralcli.tools.loop import ToolCall, held, round_messages, split_calls

log = logging.getLogger("mistralcli.server")


@dataclass
class _ToolLoop:
    """What the server's tool loop did for a request: the rounds it ran, their messages (each round's
    assistant message with its calls, then the tool results), and whether a limit stopped it, with the
    calls it did not run."""

    rounds: int = 0
    messages: list[dict] = field(default_factory=list)
    stopped_by: str | None = None  # "max_tool_rounds" or "context"
    unrun_calls: list[dict] = field(default_factory=list)

    def body(self) -> dict:
        body = {"rounds": self.rounds, "messages": self.messages}
        if self.stopped_by is not None:
            body["stopped_by"] = self.stopped_by
            body["unrun_tool_calls"] = self.unrun_calls
        return body


class ChatCompletionsHandler(_GenerateHandler):
    route = "/v1/chat/completions"
    id_prefix = "chatcmpl-"
    prompt_param = "messages"
    response_object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    extra_fields = {"system_fingerprint": None}
    thinking_budget_optional = False  # True: a thinking budget is ignored for a model that does not think

    def initialize(self, state: ServerState):
        super().initialize(state)
        self.tools: list[dict] = []  # the request's tools, as dicts
        self.tool_parser: type[ToolCallParser] | None = None  # None: the output is not parsed for calls
        self.thinking: Thinking | None = None  # how the model thinks, where it does
        # the server's tool loop, when it runs its tools for this request
        self.runner = None  # the server's mistralcli.tools.loop.ToolRunner
        self.server_tools: set[str] = set()  # the names of its tools offered (the client's own win a clash)
        self.strict_server_tools = False  # their calls held to their parameters (unless the output has a shape)
        self.loop: _ToolLoop | None = None
        self.round = 0  # the generation under way, from 1
        self.stream = False
        self.emit_lock = asyncio.Lock()

    async def post(self):
        request = self.parse(protocol.ChatCompletionRequest)
        await self.use_model(request.model)
        await self.chat(request)

    async def chat(self, request: protocol.ChatCompletionRequest) -> None:
        """Answer a chat completion request (the other protocols' handlers translate theirs into one)."""
        self.require_engine()
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs", code="invalid_value")
        self._offer_server_tools(request)
        check_tool_choice(request)
        text = self._render(request)
        self._choose_parsers(request, text)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        self.stream = bool(request.stream)
        await self.generate(request, [self.encode_rendered(text)], logprobs)

    @property
    def final(self) -> _ChatChoice | None:
        """The answer's (first) choice, once generated."""
        return self.choices[0] if self.choices else None

    def _offer_server_tools(self, request: protocol.ChatCompletionRequest) -> None:
        """The tools the server runs join the request's own (which win a clash of names), unless tool_choice
        is "none"; the request then runs the tool loop. They are strict: the server runs what the model
        writes, so its calls are held to their parameters (but where the request constrains the output)."""
        runner = self._server_runner()
        if runner is None or not len(runner) or request.tool_choice == "none":
            return
        own = {t.function.name for t in request.tools or []}
        offered = [m for tool in runner.registry if tool.name not in own and (m := self._tool_model(tool)) is not None]
        if not offered:
            return
        if request.n > 1:
            message = 'n: the server runs its tools for one choice at a time; ask for n=1 (or tool_choice "none")'
            raise APIError(400, message, param="n", code="invalid_value")
        self.runner = runner
        self.server_tools = {t.function.name for t in offered}
        request.tools = [*(request.tools or []), *offered]
        try:  # strict (in the grammar; the template shows the tools as they are), unless the output has a shape
            self.strict_server_tools = request.structured()[0] is None
        except ValueError:
            self.strict_server_tools = False  # the request is refused later, with the field named

    def _server_runner(self):
        """The runner of the tools the server runs for this request: the server's own (a protocol may add)."""
        return self.state.settings.tools

    def _tool_model(self, tool) -> protocol.Tool | None:
        """A server tool as a request's tool, validated once per tool (its JSON schema's check costs about a
        millisecond, on the event loop); None for an MCP server's schema that is not one (left out, said once)."""
        cached = self.state.tool_models.get(tool.name)
        if cached is None or cached[0] is not tool:
            try:
                model = protocol.Tool.model_validate(tool.openai())
            except ValidationError as exc:
                log.warning("the tool %s is not offered: %s", tool.name, exc.errors()[0]["msg"])
                model = None
            cached = self.state.tool_models[tool.name] = (tool, model)
        return cached[1]

    def _render(self, request: protocol.ChatCompletionRequest, messages: list[dict] | None = None) -> str:
        """The prompt text (of the request's conversation, or of messages); a conversation the template
        refuses is a 400 naming the message it refuses, where that can be told."""
        messages = messages if messages is not None else request.template_messages()
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
            self.tools = [self._strict(t.model_dump(exclude_none=True)) for t in request.tools]
            self.tool_parser = TOOL_CALL_PARSERS[settings.tool_call_parser or parser_for_template(source)]

    def _strict(self, tool: dict) -> dict:
        """A tool as the parser and the grammars take it: the server's own are strict where they may be."""
        if self.strict_server_tools and tool["function"]["name"] in self.server_tools:
            return held(tool)
        return tool

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
        if self.tool_parser is not None and self.tool_parser.keeps_special_tokens(self.state.tokenizer):
            extra["skip_special_tokens"] = False
        budget = request.thinking_token_budget
        if budget is None:
            budget = request.max_thinking_tokens
        if budget is not None and self.thinking is None and self.thinking_budget_optional:
            budget = None  # a model that does not think has no thought to cut
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
        special = self.tool_parser.special_tokens(self.state.tokenizer)
        choice = request.tool_choice
        if choice == "required" or isinstance(choice, protocol.NamedToolChoice):
            names = [choice.function.name] if isinstance(choice, protocol.NamedToolChoice) else None
            grammar = self.tool_parser.call_grammar(
                self.tools, names=names, parallel=request.parallel_tool_calls, special_tokens=special
            )
            return StructuredOutputs(grammar=grammar), "tool_choice"
        strict = any(t["function"].get("strict") for t in self.tools)
        if strict or not request.parallel_tool_calls:  # "auto": text, and calls held to the syntax (at most one)
            grammar = self.tool_parser.strict_grammar(
                self.tools, special_tokens=special, parallel=request.parallel_tool_calls
            )
            return StructuredOutputs(grammar=grammar), "tools" if strict else "parallel_tool_calls"
        return None

    def _new_choice(self, index: int) -> _ChatChoice:
        return _ChatChoice(
            index,
            started=self.round > 1,  # a later round of the tool loop: the stream has begun the message
            reasoning_parser=self.thinking.new_parser() if self.thinking else None,
            tool_parser=self.tool_parser(self.tools) if self.tool_parser else None,
            on_parse_error=self._parse_error,
        )

    # ---- the server's tool loop
    async def _rounds(
        self, request: protocol.ChatCompletionRequest, prompts: list[list[int]], params: SamplingParams, usage: _Usage
    ) -> list[_ChatChoice]:
        """With the server's tools: generate, run the calls of the server's tools (all at once), feed the
        results back and generate again, until the model answers, calls a client's tool (returned to the
        client as usual) or a limit stops it."""
        if self.runner is None:
            return await super()._rounds(request, prompts, params, usage)
        self.loop = _ToolLoop()
        conversation = request.template_messages()
        while True:
            self.round += 1
            choices = [self._new_choice(0)]
            await self._round(request, prompts, params, choices, usage)
            choice = choices[0]
            if not choice.continues:
                return choices
            text = self._render(request, conversation + self.loop.messages)
            prompts = [self.encode_rendered(text)]
            params = self._later_params(request, params)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.state.engine.validate, prompts[0], params)
            except RequestError as exc:  # the conversation has outgrown the context: the answer ends here
                log.warning("%s: the tool loop stops after %d rounds: %s", self.completion_id, self.loop.rounds, exc)
                self.loop.stopped_by = "context"
                choice.finish_reason, choice.continues = "length", False
                if self.stream:
                    await self._send_cut(choice)
                return choices

    def _later_params(self, request: protocol.ChatCompletionRequest, params: SamplingParams) -> SamplingParams:
        """The sampling params of the rounds after the first: a tool call forced by tool_choice is forced
        once (the first round's), then the model is free to answer."""
        if self.round != 1 or request.tool_choice in (None, "auto"):
            return params
        structured, _ = self.structured(request.model_copy(update={"tool_choice": "auto"}))
        return dataclasses.replace(params, structured=structured)

    async def _choice_done(self, choice: _ChatChoice) -> None:
        """A round's end: the calls of the server's tools are split from the client's and run, before the
        round's last chunk goes out."""
        if self.runner is None:
            return
        server, client = split_calls(choice.tool_calls, self.server_tools)
        if not server:
            return
        choice.tool_calls, choice.server_calls = client, server
        if choice.finish_reason == "length" or self.round > self.state.settings.max_tool_rounds:
            self.loop.stopped_by = "max_tool_rounds" if choice.finish_reason != "length" else "length"
            self.loop.unrun_calls = server
            choice.finish_reason = "length"
            return
        task = asyncio.ensure_future(self.runner.run([ToolCall.of(c) for c in server], self._emit))
        self.tasks.append(task)  # a client that leaves cancels it
        outcomes = await task
        self.loop.rounds += 1
        self.state.metrics.tool_rounds.inc()
        self.loop.messages += round_messages(choice.content, outcomes)
        # the answer goes back to the client with its own calls, or with a call that could not be parsed
        choice.continues = not client and choice.parse_error is None
        choice.finish_reason = None if choice.continues else "tool_calls" if client else "stop"

    async def _emit(self, event: dict) -> None:
        """A tool loop's event: a chunk of its own in a stream (`_event_chunk`), a log line for an approval."""
        event = {**event, "round": self.round}
        if event["type"] == "approval_required" and self.state.settings.access_log is not None:
            print(
                f"{self.completion_id}: {event['name']} waits for approval: "
                f'POST /v1/agent/approvals/{event["approval_id"]} {{"approved": true}}',
                file=self.state.settings.access_log,
                flush=True,
            )
        await self._tool_event(event)

    async def _tool_event(self, event: dict) -> None:
        """A tool loop's event, to the client: in a stream, a chunk of its own."""
        if not self.stream:
            return
        async with self.emit_lock:
            await self._send_tool_event(event)

    async def _send_cut(self, choice: _ChatChoice) -> None:
        """A stream's end where the tool loop stopped at the context's end: the choice's finish_reason."""
        await self._sse(self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]))

    async def _send_tool_event(self, event: dict) -> None:
        await self._sse(self._event_chunk(event))

    def _event_chunk(self, event: dict) -> dict:
        """A stream's chunk for a tool loop's event: an empty delta (what the openai SDK and other clients take
        in their stride) and the event in `tool_event`."""
        chunk = self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}])
        chunk["tool_event"] = event
        return chunk

    def _client_deltas(self, choice: _ChatChoice, deltas: list[dict]) -> list[dict]:
        """The tool-call deltas a client gets: those of its own tools, numbered among them."""
        if self.runner is None:
            return deltas
        routed = []
        for delta in deltas:
            if "id" in delta:  # a call's first piece names its tool
                own = delta["function"]["name"] not in self.server_tools
                taken = sum(v is not None for v in choice.stream_index.values())
                choice.stream_index[delta["index"]] = taken if own else None
            index = choice.stream_index.get(delta["index"])
            if index is not None:
                routed.append({**delta, "index": index})
        return routed

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
        piece.tool_calls = self._client_deltas(choice, piece.tool_calls)
        if not (piece or (out.finished and not choice.continues) or is_first):
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
        if self.loop is not None and (self.loop.rounds or self.loop.stopped_by):
            body["tool_loop"] = self.loop.body()
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


def chat_request(body: dict, renamed: dict | None = None) -> protocol.ChatCompletionRequest:
    """Another protocol's request, translated into a chat completion request's body, validated; a 400 names the
    field by the client's name for it (renamed: a chat request's field -> the protocol's)."""
    try:
        return protocol.ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc, renamed=renamed) from None


def check_tool_choice(request: protocol.ChatCompletionRequest) -> None:
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
