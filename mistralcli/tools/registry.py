"""Tools a model can call that we run ourselves: agent tools (sandboxed utilities) and MCP servers' tools,
each a `Tool` (name, description, JSON schema of its parameters, an async call), gathered in a
`ToolRegistry` by name. The server's tool loop, `mistral tools` and the Python API all go through it.

A tool's result is text for the model (`ToolResult`); a tool that fails says so in the result
(`is_error`), it does not raise: only a call the registry cannot make (an unknown tool, arguments that
are not an object or violate the schema) raises `ToolCallError`."""

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import jsonschema
import pydantic

from mistralcli.errors import MistralError


class ToolCallError(MistralError):
    """A call that cannot be made: kind is "unknown_tool" or "invalid_arguments"."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class ToolResult:
    text: str
    is_error: bool = False


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    call: Callable[[dict], Awaitable[ToolResult]]
    source: str = ""  # where it comes from: "agent", or the MCP server's id
    dangerous: bool = False  # writes or runs things: subject to the server's --agent-permission

    def openai(self) -> dict:
        """The tool as an OpenAI `tools` entry (what a chat template renders)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class ToolRegistry:
    tools: dict[str, Tool] = field(default_factory=dict)

    def add(self, tool: Tool) -> None:
        """Register a tool; a name already taken (by another source) is an error naming both."""
        existing = self.tools.get(tool.name)
        if existing is not None:
            raise MistralError(
                f"two tools are named {tool.name!r}: from {existing.source or 'a source'} and from "
                f"{tool.source or 'another'} (give one of them a tool_prefix)"
            )
        self.tools[tool.name] = tool

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __iter__(self):
        return iter(self.tools.values())

    def __len__(self) -> int:
        return len(self.tools)

    def check(self, name: str, arguments) -> Tool:
        """The tool, once the call is known to be valid; ToolCallError otherwise."""
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            raise ToolCallError(f"no tool named {name!r} (the tools: {known})", "unknown_tool")
        if not isinstance(arguments, dict):
            raise ToolCallError(
                f"{name}: the arguments are a JSON object, not {type(arguments).__name__}", "invalid_arguments"
            )
        try:
            jsonschema.validate(arguments, tool.parameters)
        except jsonschema.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path)) or "the arguments"
            raise ToolCallError(f"{name}: {where}: {exc.message}", "invalid_arguments") from None
        return tool

    async def call(self, name: str, arguments) -> ToolResult:
        """Run a tool. Raises ToolCallError for a call that cannot be made; a tool's own failure is a
        result with is_error set."""
        tool = self.check(name, arguments)
        try:
            return await tool.call(arguments)
        except Exception as exc:
            return ToolResult(f"{name} failed: {exc}", is_error=True)


def arguments_model(func: Callable, skip: int = 0) -> type[pydantic.BaseModel]:
    """A pydantic model of `func`'s parameters (but the first `skip`), refusing unknown ones; a parameter
    without a type hint takes any JSON value."""
    hints = get_type_hints(func, include_extras=True)
    params = list(inspect.signature(func).parameters.values())[skip:]
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"{func.__name__}: a tool's parameters are named ones; {p.name!r} is {p.kind.description}")
    fields = {p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default) for p in params}
    return pydantic.create_model(func.__name__, __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def untitled(schema: dict) -> dict:
    """The schema without pydantic's generated titles, which only repeat the names."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def function_tool(func: Callable, name: str | None = None) -> Tool:
    """A plain Python function (or coroutine function) as a Tool: its JSON schema from its signature, its
    description from its docstring. It is called with the arguments by name; a str it returns is the result,
    anything else is sent as JSON (or its str() where it is not JSON); an exception is a tool error. A
    function that is not a coroutine runs in a worker thread."""
    model = arguments_model(func)
    is_async = inspect.iscoroutinefunction(func)

    async def call(arguments: dict) -> ToolResult:
        try:
            kwargs = dict(model.model_validate(arguments))
        except pydantic.ValidationError as exc:
            return ToolResult(f"{name or func.__name__}: {exc.errors()[0]['msg']}", is_error=True)
        value = await func(**kwargs) if is_async else await asyncio.to_thread(func, **kwargs)
        if isinstance(value, str):
            return ToolResult(value)
        try:
            return ToolResult(json.dumps(value, ensure_ascii=False))
        except (TypeError, ValueError):
            return ToolResult(str(value))

    return Tool(
        name=name or func.__name__,
        description=inspect.getdoc(func) or "",
        parameters=untitled(model.model_json_schema()),
        call=call,
        source="python",
    )
