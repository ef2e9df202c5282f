"""`mistral tools`: the tools a model could call (MCP servers' tools, and the agent tools on request),
listed, called by hand and checked.

stdout carries the answer only (the list, the result, the report); servers' failures and errors go to stderr."""

import asyncio
import json
import sys
from pathlib import Path

import typer

from mistralcli.commands._command import MistralCommand, MistralGroup
from mistralcli.commands._common import stderr_console, write_stdout

app = typer.Typer(
    name="tools",
    cls=MistralGroup,
    help="List, call and check the tools of MCP servers (config: mcp.json in the user config directory).\n\n"
    "Example: mistral tools list",
    no_args_is_help=True,
)

CONFIG_HELP = "MCP config file (mistral.rs or Cursor/Claude shape). Default: mcp.json in the user config directory."


def _config_option():
    return typer.Option(None, "--mcp-config", help=CONFIG_HELP, show_default=False)


def _agent_options():
    return (
        typer.Option(False, "--agent-tools", help="Add the agent tools (sandboxed ls, cat, grep, ...)."),
        typer.Option(
            Path("."), "--sandbox-root", help="The agent tools' sandbox: they see this directory only, read-only."
        ),
    )


def _registry(with_agent_tools: bool, sandbox_root: Path):
    """A registry holding the agent tools when asked for; MCP servers' tools join it."""
    from mistralcli.tools.registry import ToolRegistry

    registry = ToolRegistry()
    if with_agent_tools:
        from mistralcli.tools.agent_tools import agent_tools
        from mistralcli.tools.sandbox import SandboxConfig

        for tool in agent_tools(SandboxConfig(root=sandbox_root)):
            registry.add(tool)
    return registry


def _load(config_path: Path | None, quiet: bool = False):
    """The MCP config; with no file given and none at the default place, a note says so (unless quiet: the
    agent tools were asked for, and are what the user wants)."""
    from mistralcli.tools.mcp_config import default_config_path, load_config

    config = load_config(config_path)
    if config_path is None and not config.servers and not quiet:
        stderr_console().print(f"no MCP servers: no config at {default_config_path()}", highlight=False)
    return config


def _warn_failed(statuses) -> None:
    console = stderr_console()
    for status in statuses:
        if not status.ok:
            console.print(f"warning: MCP server {status.id} failed: {status.reason}", highlight=False, markup=False)


@app.command("list", cls=MistralCommand)
def list_tools(
    mcp_config: Path = _config_option(),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list of OpenAI-style tools, each with its source."
    ),
    with_agent_tools: bool = _agent_options()[0],
    sandbox_root: Path = _agent_options()[1],
):
    """List every tool with its description and parameters.

    Example: mistral tools list --mcp-config mcp.json --json   |   mistral tools list --agent-tools --sandbox-root .
    """
    from mistralcli.tools.mcp_client import McpClients

    async def collect():
        config, registry = _load(mcp_config, with_agent_tools), _registry(with_agent_tools, sandbox_root)
        async with McpClients(config, registry) as clients:
            _warn_failed(clients.statuses)
            return list(clients.registry)

    tools = asyncio.run(collect())
    if as_json:
        write_stdout(json.dumps([{**tool.openai(), "source": tool.source} for tool in tools], indent=2) + "\n")
        return
    for tool in tools:
        params = tool.parameters.get("properties", {})
        required = set(tool.parameters.get("required", []))
        signature = ", ".join(f"{name}{'' if name in required else '?'}: {_type(p)}" for name, p in params.items())
        write_stdout(f"{tool.name}({signature})  [{tool.source}]\n    {tool.description or '(no description)'}\n")


def _type(schema: dict) -> str:
    if "anyOf" in schema:  # pydantic's optional fields: X | None
        kinds = [_type(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return "|".join(kinds) or "null"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"{_type(schema.get('items', {}))}[]"
    return "|".join(kind) if isinstance(kind, list) else str(kind)


@app.command("call", cls=MistralCommand)
def call(
    name: str = typer.Argument(..., help="The tool's name, as `mistral tools list` shows it."),
    args: str = typer.Option("{}", "--args", help="The arguments, a JSON object."),
    mcp_config: Path = _config_option(),
    with_agent_tools: bool = _agent_options()[0],
    sandbox_root: Path = _agent_options()[1],
):
    """Call a tool and print its result.

    Example: mistral tools call fs_read_file --args '{"path": "README.md"}'

    Agent tools: mistral tools call cat --agent-tools --sandbox-root . --args '{"path": "README.md"}'

    Exit status: 1 if the tool reports an error, 2 if the arguments are not JSON or do not fit its schema.
    """
    from mistralcli.tools.mcp_client import McpClients
    from mistralcli.tools.registry import ToolCallError

    try:
        arguments = json.loads(args)
    except ValueError as exc:
        raise typer.BadParameter(f"{args!r} is not JSON ({exc})", param_hint="--args") from None

    async def run_call():
        config, registry = _load(mcp_config, with_agent_tools), _registry(with_agent_tools, sandbox_root)
        async with McpClients(config, registry) as clients:
            _warn_failed(clients.statuses)
            try:
                return await clients.registry.call(name, arguments)
            except ToolCallError as exc:
                hint = "--args" if exc.kind == "invalid_arguments" else "NAME"
                raise typer.BadParameter(str(exc), param_hint=hint) from None

    result = asyncio.run(run_call())
    if result.is_error:
        print(f"error: tool {name} failed: {result.text}", file=sys.stderr)
        raise typer.Exit(1)
    write_stdout(result.text if result.text.endswith("\n") else result.text + "\n")


@app.command("check", cls=MistralCommand)
def check(
    mcp_config: Path = _config_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list: id, name, ok, reason, tools, seconds."),
):
    """Start each MCP server and report whether it works, its tool count and its start time.

    Example: mistral tools check --mcp-config mcp.json

    Exit status: 1 if any server failed.
    """
    from mistralcli.tools.mcp_client import McpClients

    async def start_all():
        async with McpClients(_load(mcp_config)) as clients:
            return clients.statuses

    statuses = asyncio.run(start_all())
    if as_json:
        rows = [
            {"id": s.id, "name": s.name, "ok": s.ok, "reason": s.reason, "tools": s.num_tools, "seconds": s.start_secs}
            for s in statuses
        ]
        write_stdout(json.dumps(rows, indent=2) + "\n")
    else:
        for s in statuses:
            outcome = f"ok      {s.num_tools} tools" if s.ok else f"failed  {s.reason}"
            write_stdout(f"{s.id}  {outcome}  ({s.start_secs:.2f} s)\n")
    if any(not s.ok for s in statuses):
        raise typer.Exit(1)
