"""The MCP client against real servers written with FastMCP (tests/mcp_servers/toolbox.py), over stdio and
streamable HTTP; its config in both shapes; and `mistral tools` as a user runs it."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import types

from mistralcli.errors import MistralError
from mistralcli.tools.mcp_client import McpClients, result_to_text
from mistralcli.tools.mcp_config import load_config, parse_config
from mistralcli.tools.registry import ToolCallError

TOOLBOX = str(Path(__file__).parent / "mcp_servers" / "toolbox.py")
TOOL_NAMES = {"add", "echo", "sleep", "fail", "image", "stats", "pid"}


def stdio_server(name: str = "box", **fields) -> dict:
    return {
        "name": name,
        "source": {"type": "Process", "command": sys.executable, "args": [TOOLBOX, "stdio"]},
        **fields,
    }


def process_server(name: str, command: str, *args: str) -> dict:
    return {"name": name, "source": {"type": "Process", "command": command, "args": list(args)}}


def config(*servers: dict, **fields):
    return parse_config({"servers": list(servers), **fields})


def run(coro):
    return asyncio.run(coro)


async def started(cfg, then):
    """then(clients) within a started McpClients."""
    async with McpClients(cfg) as clients:
        return await then(clients)


@pytest.fixture(scope="module")
def http_url():
    """The toolbox over streamable HTTP, on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, TOOLBOX, "http", str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "the HTTP test server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    server.terminate()
    server.wait(10)


def test_stdio_tools_are_discovered_under_their_prefix_and_called():
    async def check(clients):
        assert {tool.name for tool in clients.registry} == {f"box_{name}" for name in TOOL_NAMES}
        add = clients.registry.tools["box_add"]
        assert add.description == "Add two integers."
        assert add.source == "box"
        assert add.parameters["required"] == ["a", "b"]
        return await clients.registry.call("box_add", {"a": 2, "b": 40})

    result = run(started(config(stdio_server(tool_prefix="box")), check))
    assert (result.text, result.is_error) == ("42", False)


def test_streamable_http_server(http_url):
    cfg = config({"name": "web", "source": {"type": "Http", "url": http_url}})

    async def check(clients):
        assert [(s.id, s.ok, s.num_tools) for s in clients.statuses] == [("web", True, len(TOOL_NAMES))]
        return await clients.registry.call("echo", {"text": "héllo"})

    assert run(started(cfg, check)).text == "héllo"


def test_two_servers_and_a_disabled_one(http_url):
    cfg = config(
        stdio_server("local", tool_prefix="l"),
        {"name": "web", "tool_prefix": "w", "source": {"type": "Http", "url": http_url}},
        stdio_server("off", tool_prefix="o", enabled=False),
    )

    async def check(clients):
        assert [s.id for s in clients.statuses] == ["local", "web"]
        assert {t.name for t in clients.registry} == {f"{p}_{n}" for p in "lw" for n in TOOL_NAMES}
        return [(await clients.registry.call(f"{p}_add", {"a": 1, "b": 2})).text for p in "lw"]

    assert run(started(cfg, check)) == ["3", "3"]


def test_failing_servers_are_reported_and_the_others_keep_working():
    cfg = config(
        process_server("missing", "no-such-mcp-server-xyz"),
        process_server("quits", sys.executable, "-c", "import sys; print('no api key', file=sys.stderr); sys.exit(1)"),
        stdio_server("box"),
        tool_timeout_secs=5,
    )

    async def check(clients):
        return clients.statuses, (await clients.registry.call("echo", {"text": "still here"})).text

    statuses, text = run(started(cfg, check))
    by_id = {s.id: s for s in statuses}
    assert [s.ok for s in statuses] == [False, False, True]
    assert by_id["missing"].reason == "command not found: no-such-mcp-server-xyz"
    assert by_id["quits"].reason.endswith("(its stderr: no api key)")
    assert all(s.start_secs < 5 for s in statuses)
    assert text == "still here"


def test_a_call_past_tool_timeout_secs_is_an_error_result_and_the_server_still_answers():
    async def check(clients):
        start = time.monotonic()
        slow = await clients.registry.call("sleep", {"seconds": 8})
        elapsed = time.monotonic() - start
        return slow, elapsed, await clients.registry.call("add", {"a": 1, "b": 1})

    # 2 s: the limit of a call, and of the server's start too (a Python process: a second on a busy machine)
    slow, elapsed, after = run(started(config(stdio_server(), tool_timeout_secs=2), check))
    assert slow.is_error and slow.text == "sleep: no answer within 2 s"
    assert elapsed < 5
    assert after.text == "2"


def test_a_tool_error_is_an_error_result_not_an_exception():
    result = run(started(config(stdio_server()), lambda c: c.registry.call("fail", {"message": "disk full"})))
    assert result.is_error
    assert "disk full" in result.text


def test_images_are_described_and_structured_content_is_json():
    async def check(clients):
        return [
            (await clients.registry.call(name, args)).text
            for name, args in [("image", {}), ("stats", {"values": [1, 2]})]
        ]

    image, stats = run(started(config(stdio_server()), check))
    assert image == "[image: image/png, 67 bytes]"
    assert json.loads(stats) == {"count": 2, "sum": 3.0}


def test_results_without_text_keep_structured_content_and_resources():
    result = types.CallToolResult(
        content=[
            types.EmbeddedResource(
                type="resource", resource=types.TextResourceContents(uri="file:///a.txt", text="alpha")
            ),
            types.ResourceLink(type="resource_link", uri="file:///b.bin", name="b", mimeType="application/zip"),
        ],
        structuredContent={"n": 1},
        isError=True,
    )
    converted = result_to_text(result)
    assert (
        converted.text == '[resource: file:///a.txt]\nalpha\n[resource link: file:///b.bin, application/zip]\n{"n": 1}'
    )
    assert converted.is_error


def test_arguments_that_violate_the_schema_are_refused_before_the_call():
    async def check(clients):
        with pytest.raises(ToolCallError, match="a: 'two' is not of type 'integer'") as caught:
            clients.registry.check("add", {"a": "two", "b": 1})
        return caught.value.kind

    assert run(started(config(stdio_server()), check)) == "invalid_arguments"


def test_server_processes_are_reaped_when_the_clients_close():
    pid = int(run(started(config(stdio_server()), lambda c: c.registry.call("pid", {}))).text)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, not even a zombie


def test_two_servers_with_one_tool_name_is_an_error_naming_both():
    with pytest.raises(MistralError, match="two tools are named 'add'.*from first and from second"):
        run(started(config(stdio_server("first"), stdio_server("second")), lambda c: asyncio.sleep(0)))


def test_cursor_config_shape():
    cfg = parse_config(
        {
            "mcpServers": {
                "files": {"command": "npx", "args": ["-y", "server-fs"], "env": {"ROOT": "/tmp"}},
                "web": {"url": "http://localhost:8000/mcp", "headers": {"X-Key": "k"}, "type": "http"},
                "old": {"command": "old-server", "disabled": True},
            }
        }
    )
    files, web, old = cfg.servers
    assert (files.id, files.source.type, files.source.command, files.source.args) == (
        "files",
        "Process",
        "npx",
        ["-y", "server-fs"],
    )
    assert files.source.env == {"ROOT": "/tmp"}
    assert (web.source.type, web.source.url, web.source.headers) == (
        "Http",
        "http://localhost:8000/mcp",
        {"X-Key": "k"},
    )
    assert [s.id for s in cfg.enabled_servers] == ["files", "web"]


def test_mistralrs_config_shape(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "servers": [
                    {"id": "fs", "name": "Filesystem", "source": {"type": "Process", "command": "fs", "work_dir": "/"}},
                    {"name": "ws", "source": {"type": "WebSocket", "url": "ws://x"}, "bearer_token": "t"},
                ],
                "tool_timeout_secs": 5,
                "max_concurrent_calls": 2,
            }
        )
    )
    cfg = load_config(path)
    assert [(s.id, s.name, s.source.type) for s in cfg.servers] == [
        ("fs", "Filesystem", "Process"),
        ("ws", "ws", "WebSocket"),
    ]
    assert (cfg.tool_timeout_secs, cfg.max_concurrent_calls, cfg.auto_register_tools) == (5, 2, True)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "no such MCP config file"),
        ("{not json", "not JSON"),
        ('{"servers": [{"name": "x", "source": {"type": "Pipe"}}]}', "servers.0.source: Input tag 'Pipe'"),
        ('{"servers": [{"name": "x", "source": {"type": "Http"}}]}', "servers.0.source.Http.url: Field required"),
        ('{"tool_timeout_secs": 0}', "tool_timeout_secs: Input should be greater than 0"),
        ('{"mcpServers": {"x": {"args": []}}}', "mcpServers.x: needs a command or a url"),
        ("[]", "Input should be a valid dictionary"),
    ],
)
def test_bad_configs_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "mcp.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(MistralError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# `mistral tools` as a user runs it


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mcp") / "mcp.json"
    path.write_text(json.dumps({"servers": [stdio_server("box", tool_prefix="b")], "tool_timeout_secs": 10}))
    return path


def mistral(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "mistralcli", "tools", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_cli_list(config_file):
    result = mistral("list", "--mcp-config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert "b_add(a: integer, b: integer)  [box]\n    Add two integers.\n" in result.stdout
    assert "b_stats(values: number[])  [box]" in result.stdout


def test_cli_list_json(config_file):
    result = mistral("list", "--mcp-config", str(config_file), "--json")
    tools = {tool["function"]["name"]: tool for tool in json.loads(result.stdout)}
    assert set(tools) == {f"b_{name}" for name in TOOL_NAMES}
    assert tools["b_echo"]["type"] == "function" and tools["b_echo"]["source"] == "box"
    assert tools["b_echo"]["function"]["parameters"]["required"] == ["text"]


def test_cli_call(config_file):
    result = mistral("call", "b_add", "--args", '{"a": 2, "b": 3}', "--mcp-config", str(config_file))
    assert (result.returncode, result.stdout, result.stderr) == (0, "5\n", "")


@pytest.mark.parametrize(
    "name, args, code, stderr",
    [
        ("b_fail", '{"message": "boom"}', 1, "error: tool b_fail failed: Error executing tool fail: boom"),
        ("b_add", "{oops", 2, "'{oops' is not JSON"),
        ("b_add", '{"a": "x", "b": 1}', 2, "b_add: a: 'x' is not of type 'integer'"),
        ("nope", "{}", 2, "no tool named 'nope' (the tools: b_add, b_echo, b_fail, b_image, b_pid, b_sleep, b_stats)"),
    ],
)
def test_cli_call_failures(config_file, name, args, code, stderr):
    result = mistral("call", name, "--args", args, "--mcp-config", str(config_file))
    assert result.returncode == code
    assert result.stdout == ""
    assert stderr in " ".join(line.strip("│╭╮╰╯─ ") for line in result.stderr.splitlines())
    assert "Traceback" not in result.stderr


def test_cli_check(tmp_path, config_file):
    assert mistral("check", "--mcp-config", str(config_file)).returncode == 0
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"servers": [stdio_server("box"), process_server("gone", "no-such-mcp-server-xyz")]}))
    result = mistral("check", "--mcp-config", str(path), "--json")
    assert result.returncode == 1
    box, gone = json.loads(result.stdout)
    assert (box["id"], box["ok"], box["tools"]) == ("box", True, len(TOOL_NAMES))
    assert (gone["ok"], gone["reason"], gone["tools"]) == (False, "command not found: no-such-mcp-server-xyz", 0)


def test_cli_bad_config_is_one_line_without_traceback(tmp_path):
    result = mistral("list", "--mcp-config", str(tmp_path / "absent.json"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: {tmp_path / 'absent.json'}: no such MCP config file\n"


def test_cli_agent_tools_beside_mcp_tools(tmp_path, config_file):
    (tmp_path / "a.txt").write_text("alpha\nbeta\n")
    flags = ["--agent-tools", "--sandbox-root", str(tmp_path), "--mcp-config", str(config_file)]
    names = {tool["function"]["name"]: tool["source"] for tool in json.loads(mistral("list", "--json", *flags).stdout)}
    assert (names["cat"], names["b_add"]) == ("agent", "box")
    result = mistral("call", "cat", "--args", '{"path": "a.txt"}', *flags)
    assert (result.returncode, result.stdout) == (0, "alpha\nbeta\n")
