"""Our model as an MCP server (`mistral mcp-server`, over stdio): a `chat` tool and a `complete` tool, so
other agents and desktop clients can call a local model through MCP. Built on the SDK's FastMCP, which
derives each tool's JSON schema from its signature and answers a raised error as a tool error.

One generation runs at a time (the LLM is driven by one caller); a bad request (an empty prompt, one the
context cannot hold) is a tool error naming the problem."""

import asyncio
from typing import Annotated, Literal

from mcp.server.fastmcp import FastMCP
from pydantic import BaseModel, Field

from mistralcli.errors import MistralError

MaxTokens = Annotated[int, Field(ge=1, le=8192, description="Most tokens to generate.")]
Temperature = Annotated[float, Field(ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


def build_server(llm) -> FastMCP:
    """A FastMCP server whose tools run on `llm` (a mistralcli.LLM)."""
    from mistralcli.sampling import SamplingParams

    server = FastMCP(name=f"mistralcli: {llm.loaded.name}")
    lock = asyncio.Lock()

    async def generate(run) -> str:
        async with lock:
            try:
                [out] = await asyncio.to_thread(run)
            except (MistralError, ValueError) as exc:
                raise ValueError(str(exc)) from None
        return out.outputs[0].text

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
        params = SamplingParams(**{**llm.loaded.sampling_defaults, "temperature": temperature}, max_tokens=max_tokens)
        return await generate(lambda: llm.chat([conversation], params))

    @server.tool()
    async def complete(
        prompt: Annotated[str, Field(description="The text to continue.")],
        max_tokens: MaxTokens = 64,
        temperature: Temperature = 0.7,
        stop: Annotated[list[str] | None, Field(description="Stop before any of these strings.")] = None,
    ) -> str:
        """Continue a text with the local language model (no chat template)."""
        params = SamplingParams(
            **{**llm.loaded.sampling_defaults, "temperature": temperature}, max_tokens=max_tokens, stop=stop or []
        )
        return await generate(lambda: llm.generate([prompt], params))

    return server
