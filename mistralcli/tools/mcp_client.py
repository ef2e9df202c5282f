"""MCP servers' tools as `Tool`s in a `ToolRegistry`, through the `mcp` SDK (stdio processes, streamable HTTP
with SSE as the fallback, WebSocket).

`McpClients` starts every enabled server of a config at once and keeps each one's connection in a task of
its own: the SDK's transports are anyio context managers that must be left in the task that entered them,
and a task per server also lets one server fail, time out or die while the others keep working. Each
server's outcome is in `statuses`; nothing is all-or-nothing. Leaving the context closes every connection,
which ends (and reaps) every server process."""

import asyncio
import base64
import binascii
import contextlib
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta

from mcp import ClientSession, StdioServerParameters, types
from mcp.shared.exceptions import McpError

from mistralcli.tools.mcp_config import HttpSource, McpConfig, ProcessSource, ServerConfig, WebSocketSource
from mistralcli.tools.registry import Tool, ToolRegistry, ToolResult


@dataclass
class ServerStatus:
    """How a server's start went: ok, or the reason it failed (or later died); start_secs is how long it took."""

    id: str
    name: str
    ok: bool = False
    reason: str = ""
    start_secs: float = 0.0
    num_tools: int = 0


class McpClients:
    """The enabled servers of config, started and their tools registered in registry (a new one by default)
    as `<tool_prefix>_<tool>`, or by their bare names when a server has no prefix.

    Use as `async with McpClients(config) as clients:`; then `clients.registry` holds the tools and
    `clients.statuses` says, per enabled server, whether it started and why not."""

    def __init__(self, config: McpConfig, registry: ToolRegistry | None = None):
        self.config = config
        self.registry = registry if registry is not None else ToolRegistry()
        self.statuses: list[ServerStatus] = []
        self._calls = asyncio.Semaphore(config.max_concurrent_calls)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "McpClients":
        started = []
        for server in self.config.enabled_servers:
            status = ServerStatus(server.id, server.name)
            ready = asyncio.get_running_loop().create_future()
            self.statuses.append(status)
            self._tasks.append(asyncio.create_task(self._serve(server, status, ready)))
            started.append((server, status, ready))
        try:
            for server, status, ready in started:
                session, tools = await ready
                if session is not None and self.config.auto_register_tools:
                    self._register(server, status, session, tools)
        except BaseException:  # two servers' tools of one name, say: stop them all before raising
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _register(self, server: ServerConfig, status: ServerStatus, session: ClientSession, tools) -> None:
        for tool in tools:
            name = f"{server.tool_prefix}_{tool.name}" if server.tool_prefix else tool.name
            self.registry.add(
                Tool(
                    name=name,
                    description=tool.description or "",
                    parameters=tool.inputSchema,
                    call=self._caller(status, session, tool.name),
                    source=server.id,
                )
            )

    async def _serve(self, server: ServerConfig, status: ServerStatus, ready: asyncio.Future) -> None:
        """Connect, initialise and list the tools (within tool_timeout_secs), hand the session over through
        ready, then hold the connection open until the clients close. ready always gets a value: the
        session and its tools, or (None, []) with the reason in status."""
        start = time.monotonic()
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with asyncio.timeout(self.config.tool_timeout_secs):
                        session = await _connect(stack, server, errlog)
                        await session.initialize()
                        tools = await _list_tools(session)
                    status.ok, status.num_tools = True, len(tools)
                    status.start_secs = time.monotonic() - start
                    ready.set_result((session, tools))
                    await self._stop.wait()
            except Exception as exc:  # the server's failure is reported in its status, never raised
                reason = _reason(exc, self.config.tool_timeout_secs)
                status.ok, status.reason = False, reason + _last_line(errlog)
                if not ready.done():
                    status.start_secs = time.monotonic() - start
                    ready.set_result((None, []))

    def _caller(self, status: ServerStatus, session: ClientSession, tool_name: str):
        timeout = self.config.tool_timeout_secs

        async def call(arguments: dict) -> ToolResult:
            async with self._calls:
                for attempt in range(2):  # one retry, on a transport failure only
                    try:
                        result = await session.call_tool(
                            tool_name, arguments, read_timeout_seconds=timedelta(seconds=timeout)
                        )
                        return result_to_text(result)
                    except McpError as exc:
                        if _is_timeout(exc):
                            return ToolResult(f"{tool_name}: no answer within {timeout:g} s", is_error=True)
                        return ToolResult(f"{tool_name}: {exc.error.message}", is_error=True)
                    except Exception as exc:
                        if attempt == 1:
                            status.ok, status.reason = False, f"connection lost: {_reason(exc, timeout)}"
                            return ToolResult(f"{tool_name}: server {status.id}: {status.reason}", is_error=True)

        return call


async def _connect(stack: contextlib.AsyncExitStack, server: ServerConfig, errlog) -> ClientSession:
    """A session with the server, its transport entered on stack (not yet initialised)."""
    source = server.source
    headers = dict(getattr(source, "headers", {}))
    if server.bearer_token:
        headers["Authorization"] = f"Bearer {server.bearer_token}"
    if isinstance(source, ProcessSource):
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(command=source.command, args=source.args, env=source.env, cwd=source.work_dir)
        streams = await stack.enter_async_context(stdio_client(params, errlog=errlog))
    elif isinstance(source, HttpSource):
        streams = await _enter_http(stack, source, headers)
    elif isinstance(source, WebSocketSource):
        streams = await _enter_websocket(stack, source, headers)
    return await stack.enter_async_context(ClientSession(streams[0], streams[1]))


async def _enter_http(stack: contextlib.AsyncExitStack, source: HttpSource, headers: dict):
    """Streamable HTTP, or SSE for a URL ending in /sse (the path SSE-only servers serve)."""
    timeout = source.timeout_secs or 30
    if source.url.rstrip("/").endswith("/sse"):
        from mcp.client.sse import sse_client

        return await stack.enter_async_context(sse_client(source.url, headers=headers, timeout=timeout))
    from mcp.client.streamable_http import streamablehttp_client

    with warnings.catch_warnings():  # deprecated in late mcp 1.x for a successor that 1.23 and older lack
        warnings.simplefilter("ignore", DeprecationWarning)
        transport = streamablehttp_client(source.url, headers=headers, timeout=timeout)
    return await stack.enter_async_context(transport)


async def _enter_websocket(stack: contextlib.AsyncExitStack, source: WebSocketSource, headers: dict):
    if headers:
        raise ValueError("the mcp SDK's WebSocket client cannot send headers (or a bearer_token)")
    try:
        from mcp.client.websocket import websocket_client
    except ImportError:
        raise ValueError("WebSocket servers need the websockets package (pip install websockets)") from None
    return await stack.enter_async_context(websocket_client(source.url))


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    tools, cursor = [], None
    while True:
        page = await session.list_tools(cursor)
        tools.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            return tools


def result_to_text(result: types.CallToolResult) -> ToolResult:
    """A tool's result as the model reads it: text joined, images, audio and resources described, and the
    structured content as JSON where no text carries it (servers send both, the text for older clients);
    isError kept as is_error."""
    parts = [_describe(block) for block in result.content]
    has_text = any(isinstance(block, types.TextContent) for block in result.content)
    if result.structuredContent is not None and not has_text:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return ToolResult("\n".join(parts), is_error=bool(result.isError))


def _describe(block) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, (types.ImageContent, types.AudioContent)):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind}: {block.mimeType}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[resource: {resource.uri}]\n{resource.text}"
        return f"[resource: {resource.uri}, {resource.mimeType or 'binary'}, {_decoded_size(resource.blob)} bytes]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}" + (f", {block.mimeType}]" if block.mimeType else "]")
    return f"[{getattr(block, 'type', 'content')}]"


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return len(data)


def _is_timeout(exc: McpError) -> bool:
    return exc.error.code == 408 or "Timed out" in exc.error.message


def _reason(exc: BaseException, timeout: float) -> str:
    """One line saying why a server could not be used."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_reason(inner, timeout) for inner in exc.exceptions)
    if isinstance(exc, McpError):
        return exc.error.message
    return str(exc) or type(exc).__name__


def _last_line(errlog) -> str:
    """The last line the server wrote on stderr, as a hint to why it failed."""
    errlog.seek(0)
    lines = [line.strip() for line in errlog.read().splitlines() if line.strip()]
    return f" (its stderr: {lines[-1]})" if lines else ""
