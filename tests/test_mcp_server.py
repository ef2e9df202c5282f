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


def test_serve_mcp_port_serves_the_model_over_streamable_http_beside_the_openai_api(smollm2_path):
    import re
    import socket
    import subprocess
    import time

    import httpx
    from test_server import Server

    s = Server(smollm2_path, "--mcp-port", "0")
    try:
        deadline = time.monotonic() + 30
        while not (urls := [m for line in s.stderr_lines if (m := re.search(r"at (http://\S+/mcp)", line))]):
            assert time.monotonic() < deadline, s.stderr_lines
            time.sleep(0.1)
        cfg = parse_config({"mcpServers": {"local": {"url": urls[0].group(1)}}, "tool_timeout_secs": 60})

        async def session():
            async with McpClients(cfg) as clients:
                assert [st.ok for st in clients.statuses] == [True], clients.statuses
                return await asyncio.gather(
                    clients.registry.call("chat", {"prompt": "What is the capital of France?", "temperature": 0}),
                    clients.registry.call("complete", {"prompt": "1, 2, 3, 4,", "temperature": 0, "max_tokens": 8}),
                    clients.registry.call("complete", {"prompt": ""}),
                )

        answer, counted, empty = asyncio.run(session())
        assert "Paris" in answer.text and counted.text.startswith(" 5, 6, 7")
        assert empty.is_error and "the prompt is empty" in empty.text
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        assert httpx.post(f"{s.url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    finally:
        assert s.stop() == 0
    # a port in use: one line naming the flag, exit 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "mistralcli", "serve", "-m", str(smollm2_path), "--port", "0"]
        done = subprocess.run([*command, "--mcp-port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port} (--mcp-port)" in done.stderr
    assert "Traceback" not in done.stderr
