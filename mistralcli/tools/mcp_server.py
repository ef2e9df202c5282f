"""Our model as an MCP server: a `chat` tool and a `complete` tool, so other agents and desktop clients can
call a local model through MCP. Built on the SDK's FastMCP, which derives each tool's JSON schema from its
signature and answers a raised error as a tool error. A bad request (an empty prompt, one the context cannot
hold) is a tool error naming the problem.

Two ways to run it: `mistral mcp-server` over stdio, on an LLM (one generation at a time: the LLM is driven
by one caller); and `mistral serve --mcp-port P`, streamable HTTP beside the OpenAI server, on the server's
engine (its calls are batched with the HTTP requests)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from mcp.server.fastmcp import FastMCP
from pydantic import BaseModel, Field

from mistralcli.errors import MistralError

MaxTokens = Annotated[int, Field(ge=1, le=8192, description="Most tokens to generate.")]
Temperature = Annotated[float, Field(ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class LLMBackend:
    """Generation on a mistralcli.LLM, one at a time, in a worker thread."""

    def __init__(self, llm):
        self.llm = llm
        self.name = llm.loaded.name
        self.sampling_defaults = llm.loaded.sampling_defaults
        self.lock = asyncio.Lock()

    async def _one(self, run) -> str:
        async with self.lock:
            try:
                [out] = await asyncio.to_thread(run)
            except (MistralError, ValueError) as exc:
                raise ValueError(str(exc)) from None
        return out.outputs[0].text

    async def chat(self, conversation: list[dict], params) -> str:
        return await self._one(lambda: self.llm.chat([conversation], params))

    async def complete(self, prompt: str, params) -> str:
        return await self._one(lambda: self.llm.generate([prompt], params))


class EngineBackend:
    """Generation on a running server's engine (an AsyncEngine), beside its other requests."""

    def __init__(self, engine, name: str, chat_template, sampling_defaults: dict):
        self.engine = engine
        self.name = name
        self.chat_template = chat_template
        self.sampling_defaults = sampling_defaults

    async def _one(self, ids: list[int], params) -> str:
        from mistralcli.engine.async_engine import EngineDeadError

        try:
            _, outputs = self.engine.add_request(ids, params)
            return "".join([out.text async for out in outputs])
        except (MistralError, EngineDeadError) as exc:
            raise ValueError(str(exc)) from None

    async def chat(self, conversation: list[dict], params) -> str:
        from mistralcli.prompt import chat_prompt_ids

        if self.chat_template is None:
            raise ValueError("this model has no chat template: use the complete tool")
        return await self._one(chat_prompt_ids(self.engine.tokenizer, self.chat_template, conversation), params)

    async def complete(self, prompt: str, params) -> str:
        from mistralcli.prompt import encode_prompt

        if not prompt:
            raise ValueError("the prompt is empty")
        return await self._one(encode_prompt(self.engine.tokenizer, prompt), params)


def build_server(backend, **settings) -> FastMCP:
    """A FastMCP server whose tools run on `backend`: a mistralcli.LLM (see LLMBackend), or an LLMBackend or
    EngineBackend. settings go to FastMCP (host, port, ...)."""
    from mistralcli.sampling import SamplingParams

    if not isinstance(backend, (LLMBackend, EngineBackend)):
        backend = LLMBackend(backend)
    server = FastMCP(name=f"mistralcli: {backend.name}", **settings)
    defaults = backend.sampling_defaults

    @server.tool()
    async def chat(
        prompt: Annotated[str | None, Field(description="The user's message (or give messages).")] = None,
        messages: Annotated[list[Message] | None, Field(description="A whole conversation instead.")] = None,
        system: Annotated[str | None, Field(description="A system message before the conversation.")] = None,
        max_tokens: MaxTokens = 512,
        temperature: Temperature = 0.7,
    ) -> str:
        """Ask the local language model; it answers the conversation (through its chat template)."""
        if (prompt is None) == (messages is None):
            raise ValueError("give prompt or messages (one of them)")
        conversation = [m.model_dump() for m in messages] if messages else [{"role": "user", "content": prompt}]
        if system:
            conversation.insert(0, {"role": "system", "content": system})
        params = SamplingParams(**{**defaults, "temperature": temperature}, max_tokens=max_tokens)
        return await backend.chat(conversation, params)

    @server.tool()
    async def complete(
        prompt: Annotated[str, Field(description="The text to continue.")],
        max_tokens: MaxTokens = 64,
        temperature: Temperature = 0.7,
        stop: Annotated[list[str] | None, Field(description="Stop before any of these strings.")] = None,
    ) -> str:
        """Continue a text with the local language model (no chat template)."""
        params = SamplingParams(**{**defaults, "temperature": temperature}, max_tokens=max_tokens, stop=stop or [])
        return await backend.complete(prompt, params)

    return server


@contextlib.asynccontextmanager
async def serving_http(server: FastMCP, host: str, port: int) -> AsyncIterator[str]:
    """Serve `server` over streamable HTTP (at /mcp) on host:port while the context lasts; it gives the URL.
    An address in use raises OSError on entering (the socket is bound here, before uvicorn, which would
    exit the process). Signals are left to the caller (the OpenAI server handles them)."""
    import tornado.netutil
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    sockets = tornado.netutil.bind_sockets(port, host)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", timeout_graceful_shutdown=5)
    http = Server(config)
    task = asyncio.create_task(http.serve(sockets=sockets))
    try:
        while not http.started and not task.done():
            await asyncio.sleep(0.02)
        if task.done():
            await task  # it failed to start: raise its error
        bound = sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        yield f"http://{shown}:{bound[1]}/mcp"
    finally:
        http.should_exit = True
        await task
