"""The registry of tools we run ourselves (mistralcli/tools/registry.py): names, argument checks, failures."""

import asyncio

import pytest

from mistralcli.errors import MistralError
from mistralcli.tools.registry import Tool, ToolCallError, ToolRegistry, ToolResult

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}


async def _double(arguments):
    return ToolResult(str(2 * arguments["a"]))


async def _broken(arguments):
    raise OSError("the disk is gone")


def _registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.add(Tool("double", "Twice a", SCHEMA, _double, source="agent"))
    registry.add(Tool("broken", "Always fails", SCHEMA, _broken, source="agent"))
    return registry


def test_calls_run_and_a_tools_failure_is_an_error_result():
    registry = _registry()
    assert asyncio.run(registry.call("double", {"a": 21})) == ToolResult("42")
    result = asyncio.run(registry.call("broken", {"a": 1}))
    assert result.is_error and "the disk is gone" in result.text
    assert len(registry) == 2 and "double" in registry and {t.name for t in registry} == {"double", "broken"}
    assert registry.tools["double"].openai()["function"]["parameters"] == SCHEMA


@pytest.mark.parametrize(
    "name, arguments, kind, words",
    [
        ("triple", {"a": 1}, "unknown_tool", ["triple", "broken, double"]),
        ("double", [1], "invalid_arguments", ["JSON object", "list"]),
        ("double", {"a": "x"}, "invalid_arguments", ["a", "'x' is not of type 'integer'"]),
        ("double", {}, "invalid_arguments", ["'a' is a required property"]),
        ("double", {"a": 1, "b": 2}, "invalid_arguments", ["'b' was unexpected"]),
    ],
)
def test_calls_that_cannot_be_made_raise(name, arguments, kind, words):
    with pytest.raises(ToolCallError) as info:
        asyncio.run(_registry().call(name, arguments))
    assert info.value.kind == kind and all(w in str(info.value) for w in words), str(info.value)


def test_a_name_taken_twice_names_both_sources():
    registry = _registry()
    with pytest.raises(MistralError, match="from agent and from weather"):
        registry.add(Tool("double", "", SCHEMA, _double, source="weather"))
