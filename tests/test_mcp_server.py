"""`mistral mcp-server`: our model as an MCP server over stdio, called through our own MCP client (SmolLM2)."""

import asyncio
import sys

import pytest

from mistralcli.tools.mcp_client import McpClients
from mistralcli.tools.mcp_config import parse_config
from mistralcli.tools.registry import ToolCallError

pytestmark = pytest.mark.slow


def test_the_model_answers_through_its_chat_and_complete_tools(smollm2_path):
    command = [sys.executable, "-m", "mistralcli", "mcp-server", "--model", str(smollm2_path), "--threads", "2"]
    cfg = parse_config(
        {
            "servers": [{"name": "local", "source": {"type": "Process", "command": command[0], "args": command[1:]}}],
            "tool_timeout_secs": 120,
        }
    )

    async def session():
        async with McpClients(cfg) as clients:
            [status] = clients.statuses
            assert status.ok, status.reason
            registry = clients.registry
            assert {t.name for t in registry} == {"chat", "complete"}
            chat = registry.tools["chat"]
            assert chat.parameters["properties"]["max_tokens"]["maximum"] == 8192
            answer = await registry.call("chat", {"prompt": "What is the capital of France?", "temperature": 0})
            assert not answer.is_error and "Paris" in answer.text, answer
            counted = await registry.call(
                "complete", {"prompt": "1, 2, 3, 4,", "temperature": 0, "max_tokens": 12, "stop": [" 8"]}
            )
            assert counted.text == " 5, 6, 7,", counted
            both = await registry.call("chat", {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]})
            assert both.is_error and "one of them" in both.text
            with pytest.raises(ToolCallError):
                registry.check("chat", {"prompt": "hi", "temperature": 9})

    asyncio.run(session())
