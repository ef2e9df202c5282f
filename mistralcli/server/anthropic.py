"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens, as the anthropic SDK and Claude Code
speak it. A request is translated into a chat completion request and answered by the chat handler's machinery
(templates, tool calls, thinking, the server's tool loop); what differs is the answer's shape (content blocks,
streamed as message_start / content_block_* / message_delta / message_stop events) and the errors'
(`{"type": "error", "error": {"type", "message"}}`)."""

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from mistralcli.server import protocol
from mistralcli.server.base import APIError
from mistralcli.server.blocks import Block, BlockEvent, BlockStreaming, choice_blocks
from mistralcli.server.chat import ChatCompletionsHandler, chat_request, check_tool_choice
from mistralcli.server.chat_choice import _ChatChoice
from mistralcli.server.generate import _Usage
from mistralcli.server.protocol import _Request  # unknown fields ignored, types strict

# an HTTP status -> Anthropic's error type
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}  # else "end_turn", or "stop_sequence"


def error_body(error: APIError) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(error.status, "api_error"), "message": error.message}}


class TextBlock(_Request):
    type: Literal["text"]
    text: str


class ToolUseBlock(_Request):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Request):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: bool = False

    def text(self) -> str:
        text = self.content if isinstance(self.content, str) else "".join(b.text for b in self.content or [])
        return f"Error: {text}" if self.is_error else text


class ThinkingBlock(_Request):  # a thought of an earlier turn: dropped, as templates drop earlier thoughts
    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")]


class Message(_Request):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _known_blocks(cls, value):
        return protocol.text_parts_only(value, ("image", "document", "search_result"))

    def blocks(self) -> list:
        return [TextBlock(type="text", text=self.content)] if isinstance(self.content, str) else self.content


class ToolDefinition(_Request):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom", or one of Anthropic's own tools (not run here)

    @field_validator("input_schema")
    @classmethod
    def _a_json_schema(cls, value):
        return protocol.check_json_schema(value)

    def chat_tool(self) -> dict:
        if self.input_schema is None:
            kind = f"{self.type!r} " if self.type else ""
            raise ValueError(
                f"the tool {self.name!r}: {kind}tools need an input_schema (Anthropic's server tools are not run here)"
            )
        function = {"name": self.name, "parameters": self.input_schema}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class ToolChoice(_Request):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False

    def chat(self) -> str | dict:
        if self.type == "tool":
            if not self.name:
                raise ValueError('type "tool" needs the name of the tool')
            return {"type": "function", "function": {"name": self.name}}
        return {"auto": "auto", "any": "required", "none": "none"}[self.type]


class ThinkingConfig(_Request):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=1)] | None = None


class CountTokensRequest(_Request):
    model: str
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None

    def chat_request(self, **sampling) -> protocol.ChatCompletionRequest:
        """The request as a chat completion request; raises APIError (400) naming the field at fault."""
        body: dict[str, Any] = {"messages": self._chat_messages(), **sampling}
        if self.tools:
            try:
                body["tools"] = [t.chat_tool() for t in self.tools]
            except ValueError as exc:
                raise APIError(400, f"tools: {exc}", param="tools") from None
        if self.tool_choice is not None:
            try:
                body["tool_choice"] = self.tool_choice.chat()
            except ValueError as exc:
                raise APIError(400, f"tool_choice: {exc}", param="tool_choice") from None
            body["parallel_tool_calls"] = not self.tool_choice.disable_parallel_tool_use
        if self.thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": self.thinking.type != "disabled"}
            if self.thinking.type == "enabled" and self.thinking.budget_tokens is not None:
                body["thinking_token_budget"] = self.thinking.budget_tokens
        return chat_request(body, {"stop": "stop_sequences"})  # what the chat request checks beyond these fields

    def _chat_messages(self) -> list[dict]:
        """The conversation in OpenAI's terms: tool results are tool messages, tool uses an assistant's calls."""
        messages = []
        if self.system:
            text = self.system if isinstance(self.system, str) else "\n\n".join(b.text for b in self.system)
            messages.append({"role": "system", "content": text})
        for message in self.messages:
            texts, calls = [], []
            for block in message.blocks():
                if isinstance(block, TextBlock):
                    texts.append(block.text)
                elif isinstance(block, ToolResultBlock):
                    messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text()})
                elif isinstance(block, ToolUseBlock):
                    function = {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}
                    calls.append({"id": block.id, "type": "function", "function": function})
            if message.role == "assistant":
                messages.append(
                    {"role": "assistant", "content": "".join(texts), **({"tool_calls": calls} if calls else {})}
                )
            elif texts:
                messages.append({"role": "user", "content": "\n\n".join(texts)})
        return messages

    def prefill(self) -> str | None:
        """The text of a last assistant message without tool uses: the answer's beginning, which it continues."""
        last = self.messages[-1]
        if last.role != "assistant" or any(isinstance(b, ToolUseBlock) for b in last.blocks()):
            return None
        return "".join(b.text for b in last.blocks() if isinstance(b, TextBlock))


class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None

    def chat_request(self) -> protocol.ChatCompletionRequest:
        sampling = {"max_tokens": self.max_tokens, "stream": self.stream}
        for name in ("temperature", "top_p", "top_k"):
            if getattr(self, name) is not None:
                sampling[name] = getattr(self, name)
        if self.stop_sequences:
            sampling["stop"] = self.stop_sequences
        user = (self.metadata or {}).get("user_id")
        if isinstance(user, str):
            sampling["user"] = user
        return super().chat_request(**sampling)


class _AnthropicHandler(ChatCompletionsHandler):
    prefill: str | None = None
    thinking_budget_optional = True  # thinking asks a model that does not think for nothing

    def error_body(self, error: APIError) -> dict:
        return error_body(error)

    async def parse_messages(self, model_cls) -> tuple:
        """The body as model_cls, its chat request, and the prefill the answer continues (or None)."""
        request = self.parse(model_cls)
        await self.use_model(request.model)
        self.prefill = request.prefill()
        return request, request.chat_request()

    def _render(self, request: protocol.ChatCompletionRequest, messages: list[dict] | None = None) -> str:
        """With a prefill: the conversation before it, prompted for an answer, then the prefill's text."""
        if self.prefill is None:
            return super()._render(request, messages)
        messages = messages if messages is not None else request.template_messages()
        prefill_at = len(request.messages) - 1  # the tool loop's later messages come after it
        text = super()._render(request, messages[:prefill_at] + messages[prefill_at + 1 :])
        return text + self.prefill if len(messages) == len(request.messages) else text


class MessagesHandler(BlockStreaming, _AnthropicHandler):
    route = "/v1/messages"
    id_prefix = "msg_"
    prompt_param = "messages"

    def initialize(self, state):
        super().initialize(state)
        self.prompt_tokens = 0

    async def post(self):
        request, chat = await self.parse_messages(MessagesRequest)
        self.stop_sequences = request.stop_sequences or []
        await self.chat(chat)

    # ---- the answer, whole
    def _response(self, choices: list[_ChatChoice], usage: _Usage) -> dict:
        choice = choices[0]
        blocks = choice_blocks(choice.reasoning, choice.content, choice.tool_calls)
        return {
            **self._message(choice),
            "content": [_content_block(b, whole=True) for b in blocks],
            "usage": _usage(usage),
        }

    def _message(self, choice: _ChatChoice | None) -> dict:
        stop_reason = stop_sequence = None
        if choice is not None:
            stop_reason = STOP_REASONS.get(choice.finish_reason, "end_turn")
            if stop_reason == "end_turn" and choice.stop_string is not None:
                stop_reason, stop_sequence = "stop_sequence", choice.stop_string
        return {
            "id": self.completion_id,
            "type": "message",
            "role": "assistant",
            "model": self.state.settings.model_name,
            "content": [],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
        }

    # ---- the answer, streamed
    async def _open_stream(self):
        await super()._open_stream()
        usage = {"input_tokens": self.prompt_tokens, "output_tokens": 0}
        await self._event("message_start", {"message": {**self._message(None), "usage": usage}})
        await self._event("ping", {})

    async def _block_event(self, event: BlockEvent) -> None:
        block = event.block
        if event.type == "start":
            await self._event("content_block_start", {"index": block.index, "content_block": _content_block(block)})
        elif event.type == "delta":
            kind, field = {"reasoning": ("thinking_delta", "thinking"), "text": ("text_delta", "text")}.get(
                block.kind, ("input_json_delta", "partial_json")
            )
            await self._event("content_block_delta", {"index": block.index, "delta": {"type": kind, field: event.text}})
        else:
            if block.kind == "reasoning":
                delta = {"type": "signature_delta", "signature": ""}
                await self._event("content_block_delta", {"index": block.index, "delta": delta})
            await self._event("content_block_stop", {"index": block.index})

    async def _send_cut(self, choice: _ChatChoice) -> None:
        """The stream's end says it (message_delta's stop_reason)."""

    async def _send_tool_event(self, event: dict) -> None:
        """The server's own tool calls are not the client's blocks: not streamed."""

    async def _end_stream(self, usage: _Usage):
        await self._close_blocks()
        message = self._message(self.final)
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
        await self._event("message_delta", {"delta": delta, "usage": _usage(usage)})
        await self._event("message_stop", {})
        self.finish()

    async def _send_error(self, error: APIError) -> None:
        await self._event("error", error_body(error))

    async def _event(self, name: str, data: dict) -> None:
        await self._sse_raw(f"event: {name}\ndata: {json.dumps({'type': name, **data}, ensure_ascii=False)}\n\n")


def _content_block(block: Block, whole: bool = False) -> dict:
    """A block as Anthropic's content block: whole, or as a stream opens it (empty)."""
    if block.kind == "reasoning":
        return {"type": "thinking", "thinking": block.text if whole else "", "signature": ""}
    if block.kind == "text":
        return {"type": "text", "text": block.text if whole else ""}
    arguments = json.loads(block.text or "{}") if whole else {}
    return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": arguments}


def _usage(usage: _Usage) -> dict:
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


class CountTokensHandler(_AnthropicHandler):
    route = "/v1/messages/count_tokens"

    async def post(self):
        _, chat = await self.parse_messages(CountTokensRequest)
        self._offer_server_tools(chat)
        check_tool_choice(chat)
        text = self._render(chat)
        self.write_json({"input_tokens": len(self.encode_rendered(text))})
