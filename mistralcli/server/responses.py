"""OpenAI's Responses API: POST /v1/responses, and GET / DELETE /v1/responses/{id}, its input_items and cancel.

A request's input items (messages, function calls and their outputs), after the conversation its
previous_response_id ended, become a chat completion request answered by the chat handler's machinery
(templates, tool calls, structured output, thinking, the server's tool loop); the answer is output items
(reasoning, message, function_call, and mcp_call for the server's own tools), streamed as the typed events the
openai SDK parses. With `store` (the default) a response and its conversation are kept in the server's
ResponseStore (SQLite), so a conversation goes on across restarts; `background` answers at once and generates
on, to be retrieved or cancelled."""

import contextlib
import json
from typing import Any

from mistralcli.errors import MistralError
from mistralcli.server import protocol
from mistralcli.server.base import APIError
from mistralcli.server.blocks import Block, BlockEvent, BlockStreaming, choice_blocks
from mistralcli.server.chat import ChatCompletionsHandler, chat_request
from mistralcli.server.chat_choice import _ChatChoice
from mistralcli.server.generate import _Usage
from mistralcli.server.responses_request import (
    EFFORTS,
    McpTool,
    ReasoningConfig,
    ResponsesRequest,
    chat_messages,
    input_items,
    item_id,
)
from mistralcli.tools.loop import ToolRunner


class ResponsesHandler(BlockStreaming, ChatCompletionsHandler):
    route = "/v1/responses"
    id_prefix = "resp_"
    prompt_param = "input"
    thinking_budget_optional = True  # reasoning.effort asks a model that does not think for nothing

    def initialize(self, state):
        super().initialize(state)
        self.output: list[dict] = []  # the output items so far
        self.positions: dict[int, int] = {}  # a block's index -> its item's output index
        self.item_ids: dict[int, str] = {}  # a block's index -> its item's id
        self.sequence = 0
        self.request_body: ResponsesRequest | None = None
        self.history: list[dict] = []  # the conversation before the answer (no instructions)
        self.listed_items: list[dict] = []
        self.detached = False  # a background response: the client has its answer, the generation goes on
        self.cancelled = False
        self.saved = False
        self.server_items: dict[str, int] = {}  # the server's own tool calls (mcp_call items) by call id
        self.request_runner = None  # the tool runner of the request's own MCP servers (with the server's tools)

    async def post(self):
        request = self.parse(ResponsesRequest)
        await self.use_model(request.model)
        store = self.state.responses
        if request.background and not request.store:
            raise APIError(400, "background: a background response is stored: it needs store true", param="background")
        if request.background and request.stream:
            raise APIError(400, "background: streaming a background response is not supported", param="background")
        if request.background and store is None:
            raise APIError(400, "background: this server stores no responses", param="background")
        previous: list[dict] = []
        if request.previous_response_id is not None:
            stored = store.get(request.previous_response_id) if store is not None else None
            if stored is None:
                message = f"no stored response {request.previous_response_id!r} (unknown, deleted or expired)"
                raise APIError(404, message, param="previous_response_id", code="response_not_found")
            previous = stored.conversation
        items = request.items()
        self.request_body = request
        self.history = previous + chat_messages(items)
        self.listed_items = input_items(items)
        chat = self._chat_request(request)
        _, servers = request.parsed_tools()
        if not servers:
            await self.chat(chat)
            return
        if not self.state.settings.request_mcp:
            message = "tools: this server does not connect to MCP servers a request names (serve --allow-request-mcp)"
            raise APIError(400, message, param="tools")
        async with self._mcp_servers(servers):
            await self.chat(chat)

    @contextlib.asynccontextmanager
    async def _mcp_servers(self, servers: list[McpTool]):
        """The request's MCP servers connected while the response is made, their allowed tools run by the tool
        loop (with the server's own), listed as mcp_list_tools items."""
        from mistralcli.tools.mcp_client import McpClients
        from mistralcli.tools.mcp_config import HttpSource, McpConfig, ServerConfig
        from mistralcli.tools.registry import ToolRegistry

        config = McpConfig(
            servers=[
                ServerConfig(
                    name=s.server_label, source=HttpSource(type="Http", url=s.server_url, headers=s.headers or {})
                )
                for s in servers
            ]
        )
        try:
            async with McpClients(config) as clients:
                failed = [status for status in clients.statuses if not status.ok]
                if failed:
                    message = f"tools: the MCP server {failed[0].id!r} could not be used: {failed[0].reason}"
                    raise APIError(424, message, param="tools", code="mcp_server_failed")
                registry = ToolRegistry()
                for tool in self.state.settings.tools.registry if self.state.settings.tools is not None else []:
                    registry.add(tool)
                for server in servers:
                    allowed = server.allowed()
                    listed = []
                    for tool in clients.registry:
                        if tool.source == server.server_label and (allowed is None or tool.name in allowed):
                            registry.add(tool)
                            listed.append(
                                {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
                            )
                    self.output.append(
                        {
                            "type": "mcp_list_tools",
                            "id": item_id("mcpl"),
                            "server_label": server.server_label,
                            "tools": listed,
                        }
                    )
                self.request_runner = ToolRunner(
                    registry, permission="auto", observe=self.state.metrics.observe_tool_call
                )
                yield
        except MistralError as exc:  # two servers' tools of one name
            raise APIError(400, f"tools: {exc}", param="tools") from None

    def _server_runner(self):
        return self.request_runner if self.request_runner is not None else super()._server_runner()

    def _chat_request(self, request: ResponsesRequest) -> protocol.ChatCompletionRequest:
        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        body: dict[str, Any] = {"messages": system + self.history, "stream": request.stream}
        for ours, theirs in (("max_tokens", "max_output_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
            if getattr(request, theirs) is not None:
                body[ours] = getattr(request, theirs)
        if request.user is not None:
            body["user"] = request.user
        tools, _ = request.parsed_tools()
        if tools:
            body["tools"] = [t.chat_tool() for t in tools]
        if request.tool_choice is not None:
            body["tool_choice"] = request.chat_tool_choice()
        body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.text is not None and request.text.format is not None:
            response_format = request.text.format.response_format()
            if response_format is not None:
                body["response_format"] = response_format
        if request.reasoning is not None and request.reasoning.effort is not None:
            think, budget = EFFORTS[request.reasoning.effort]
            body["chat_template_kwargs"] = {"enable_thinking": think}
            if budget is not None:
                body["thinking_token_budget"] = budget
        return chat_request(
            body, {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format"}
        )

    def _refused(self, exc, request):
        error = super()._refused(exc, request)
        if error.param in ("max_tokens", "max_completion_tokens"):
            error.param = "max_output_tokens"
            error.message = error.message.replace("max_completion_tokens", "max_output_tokens").replace(
                "max_tokens", "max_output_tokens"
            )
        if error.param == "response_format":
            error.param = "text.format"
            error.message = error.message.replace("response_format", "text.format")
        return error

    # ---- the response object
    def _body(self, status: str, usage: _Usage | None = None, error: dict | None = None) -> dict:
        request = self.request_body
        incomplete = None
        if status == "incomplete":
            incomplete = {"reason": "max_output_tokens"}
        text_format = (
            request.text.format.model_dump(by_alias=True, exclude_none=True)
            if request.text and request.text.format
            else {"type": "text"}
        )
        body = {
            "id": self.completion_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": request.background,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.state.settings.model_name,
            "output": self.output,
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "reasoning": (request.reasoning or ReasoningConfig()).model_dump(),
            "store": request.store and self.state.responses is not None,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": text_format},
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": request.tools or [],
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "truncation": request.truncation or "disabled",
            "usage": _usage(usage) if usage is not None else None,
            "user": request.user,
            "metadata": request.metadata or {},
        }
        if self.final is not None and self.final.grammar_complete is False:
            body["structured_output_incomplete"] = True
        return body

    def _status(self) -> str:
        if self.cancelled:
            return "cancelled"
        return "incomplete" if self.final is not None and self.final.finish_reason == "length" else "completed"

    def _conversation(self) -> list[dict]:
        """The conversation this response ends: its history, the server's tool rounds, then the answer."""
        messages = list(self.history)
        if self.loop is not None:
            messages += [_chat_shape(m) for m in self.loop.messages]
        if self.final is not None:
            answer = {"role": "assistant", "content": self.final.content}
            if self.final.tool_calls:
                answer["tool_calls"] = self.final.tool_calls
            messages.append(answer)
        return messages

    def _save(self, body: dict) -> None:
        store = self.state.responses
        if not (self.request_body.store and store is not None):
            return
        self.saved = True
        if self.request_body.background:
            store.update(self.completion_id, body, self._conversation())
        else:
            store.put(self.completion_id, body, self.listed_items, self._conversation())

    # ---- generation: the hooks of the common loop
    async def _generation_started(self) -> None:
        """Admitted: a background response is stored as in progress and answered at once."""
        self.state.responses_in_flight[self.completion_id] = self
        if not self.request_body.background:
            return
        body = self._body("queued")
        self.state.responses.put(self.completion_id, {**body, "status": "in_progress"}, self.listed_items, [])
        self.write_json(body)
        self.detached = True

    async def _generation_done(self) -> None:
        self.state.responses_in_flight.pop(self.completion_id, None)
        if self.detached and not self.saved:  # a background response cut before its answer was stored
            self._save(self._body(self._status()))

    def on_connection_close(self):
        if not self.detached:
            super().on_connection_close()

    def cancel(self) -> None:
        """Stop a background response (POST .../cancel): its requests end, it is stored as cancelled."""
        self.cancelled = True
        self.closed = True
        super().on_connection_close()

    def write_json(self, obj, status: int = 200):
        if not self.detached:
            super().write_json(obj, status)

    def _response(self, choices: list[_ChatChoice], usage: _Usage) -> dict:
        choice = choices[0]
        for block in choice_blocks(choice.reasoning, choice.content, choice.tool_calls):
            self.output.append(self._item(block, whole=True))
        body = self._body(self._status(), usage)
        self._save(body)
        return body

    async def _fail(self, error: APIError):
        if self.detached:  # a background response: stored as failed
            self._save(self._body("failed", error={"code": error.code or "server_error", "message": error.message}))
            return
        await super()._fail(error)

    async def _send_error(self, error: APIError) -> None:
        await self._event("error", code=error.code, message=error.message, param=error.param)
        body = self._body("failed", error={"code": error.code or "server_error", "message": error.message})
        await self._event("response.failed", response=body)

    # ---- output items
    def _item(self, block: Block, whole: bool) -> dict:
        """A block as its output item: whole, or as a stream adds it (empty, in progress)."""
        own_id = self.item_ids.setdefault(
            block.index, item_id({"reasoning": "rs", "text": "msg"}.get(block.kind, "fc"))
        )
        status = "completed" if whole else "in_progress"
        if block.kind == "reasoning":
            item = {"type": "reasoning", "id": own_id, "summary": [], "content": []}
            if whole:
                item["content"] = [{"type": "reasoning_text", "text": block.text}]
                if self.request_body.reasoning is not None and self.request_body.reasoning.summary is not None:
                    item["summary"] = [{"type": "summary_text", "text": block.text}]  # the thought itself
            return item
        if block.kind == "text":
            content = [_text_part(block.text)] if whole else []
            return {"type": "message", "id": own_id, "status": status, "role": "assistant", "content": content}
        return {
            "type": "function_call",
            "id": own_id,
            "call_id": block.call_id,
            "name": block.name,
            "arguments": block.text if whole else "",
            "status": status,
        }

    # ---- streaming
    async def _open_stream(self):
        await super()._open_stream()
        listed = list(self.output)  # the request's MCP servers' tools, listed before anything is generated
        self.output.clear()
        body = self._body("in_progress")
        await self._event("response.created", response=body)
        await self._event("response.in_progress", response=body)
        for item in listed:
            self.output.append(item)
            await self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)
            await self._event("response.output_item.done", output_index=len(self.output) - 1, item=item)

    async def _block_event(self, event: BlockEvent) -> None:
        block = event.block
        if event.type == "start":
            self.positions[block.index] = len(self.output)
            item = self._item(block, whole=False)
            self.output.append(item)
            await self._event("response.output_item.added", output_index=self.positions[block.index], item=item)
            if block.kind != "tool_call":
                part = {"type": "reasoning_text", "text": ""} if block.kind == "reasoning" else _text_part("")
                await self._event("response.content_part.added", **self._where(block), content_index=0, part=part)
            return
        where = self._where(block)
        if event.type == "delta":
            if block.kind == "text":
                await self._event("response.output_text.delta", **where, content_index=0, delta=event.text, logprobs=[])
            elif block.kind == "reasoning":
                await self._event("response.reasoning_text.delta", **where, content_index=0, delta=event.text)
            else:
                await self._event("response.function_call_arguments.delta", **where, delta=event.text)
            return
        item = self._item(block, whole=True)
        self.output[where["output_index"]] = item
        if block.kind == "text":
            await self._event("response.output_text.done", **where, content_index=0, text=block.text, logprobs=[])
            await self._event("response.content_part.done", **where, content_index=0, part=item["content"][0])
        elif block.kind == "reasoning":
            await self._event("response.reasoning_text.done", **where, content_index=0, text=block.text)
            await self._event("response.content_part.done", **where, content_index=0, part=item["content"][0])
        else:
            await self._event("response.function_call_arguments.done", **where, name=block.name, arguments=block.text)
        await self._event("response.output_item.done", output_index=where["output_index"], item=item)

    def _where(self, block: Block) -> dict:
        return {"item_id": self.item_ids[block.index], "output_index": self.positions[block.index]}

    async def _send_cut(self, choice: _ChatChoice) -> None:
        """The stream's end says it (the response's status)."""

    async def _tool_event(self, event: dict) -> None:
        """The server's own tool calls, as mcp_call items (streamed or not): added when called, done with their
        result."""
        async with self.emit_lock:
            await self._send_tool_event(event)

    async def _send_tool_event(self, event: dict) -> None:
        if event["type"] == "tool_call":
            if self.stream:
                await self._close_blocks()
            item = {
                "type": "mcp_call",
                "id": item_id("mcp"),
                "server_label": self._server_label(event["name"]),
                "name": event["name"],
                "arguments": event["arguments"],
                "output": None,
                "error": None,
                "status": "in_progress",
            }
            self.server_items[event["id"]] = len(self.output)
            self.output.append(item)
            if self.stream:
                await self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)
        elif event["type"] == "tool_result" and event["id"] in self.server_items:
            index = self.server_items[event["id"]]
            item = self.output[index]
            item.update(status="completed" if not event["is_error"] else "failed")
            item["output" if not event["is_error"] else "error"] = event["content"]
            if self.stream:
                await self._event("response.output_item.done", output_index=index, item=item)

    def _server_label(self, name: str) -> str:
        tool = self.runner.registry.tools.get(name) if self.runner is not None else None
        return getattr(tool, "source", None) or "mistralcli"

    async def _end_stream(self, usage: _Usage):
        await self._close_blocks()
        status = self._status()
        body = self._body(status, usage)
        self._save(body)
        await self._event("response.completed" if status == "completed" else "response.incomplete", response=body)
        self.finish()

    async def _event(self, event_type: str, /, **fields) -> None:
        data = {"type": event_type, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        await self._sse_raw(f"event: {event_type}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n")


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _chat_shape(message: dict) -> dict:
    """A tool loop's message (arguments as objects, as templates take them) in the chat shape (JSON text)."""
    if not message.get("tool_calls"):
        return {k: v for k, v in message.items() if k in ("role", "content", "tool_call_id")}
    calls = []
    for call in message["tool_calls"]:
        arguments = call["function"]["arguments"]
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        calls.append({**call, "function": {**call["function"], "arguments": text}})
    return {"role": "assistant", "content": message["content"], "tool_calls": calls}


def _usage(usage: _Usage) -> dict:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
