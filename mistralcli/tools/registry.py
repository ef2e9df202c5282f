"""Tools a model can call that we run ourselves: agent tools (sandboxed utilities) and MCP servers' tools,
each a `Tool` (name, description, JSON schema of its parameters, an async call), gathered in a
`ToolRegistry` by name. The server's tool loop, `mistral tools` and the Python API all go through it.

A tool's result is text for the model (`ToolResult`); a tool that fails says so in the result
(`is_error`), it does not raise: only a call the registry cannot make (an unknown tool, arguments that
are not an object or violate the schema) raises `ToolCallError`."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import jsonschema

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
