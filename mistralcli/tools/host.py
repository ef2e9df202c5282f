"""The tools of a synchronous caller (the Python API's `LLM`): the agent tools, plain Python functions and MCP
servers' tools in one registry, run by a ToolRunner on an event loop in a thread of its own, where the MCP
sessions live. `close()` ends the sessions and reaps the servers' processes."""

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from mistralcli.errors import MistralError
from mistralcli.tools.loop import CallOutcome, ToolCall, ToolRunner
from mistralcli.tools.mcp_config import McpConfig, load_config, parse_config
from mistralcli.tools.registry import ToolRegistry, function_tool
from mistralcli.tools.sandbox import SandboxConfig

log = logging.getLogger("mistralcli.tools")


def mcp_config_of(config: McpConfig | dict | str | Path) -> McpConfig:
    """An MCP config from a file's path, a dict of either shape, or a config as it is."""
    if isinstance(config, McpConfig):
        return config
    if isinstance(config, dict):
        try:
            return parse_config(config)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise MistralError(f"mcp_config: {exc}") from None
    return load_config(Path(config))


class ToolHost:
    """agent_tools: a SandboxConfig (the agent tools over it); tool_callbacks: {name: function}; mcp_config:
    see mcp_config_of; permission: for the dangerous agent tools, "auto" or "deny" (a synchronous caller
    has nobody to ask)."""

    def __init__(
        self,
        *,
        agent_tools: SandboxConfig | None = None,
        tool_callbacks: dict[str, Callable] | None = None,
        mcp_config: McpConfig | dict | str | Path | None = None,
        permission: str = "auto",
    ):
        if permission not in ("auto", "deny"):
            raise ValueError(f"agent_permission {permission!r}: the Python API takes 'auto' or 'deny'")
        registry = ToolRegistry()
        if agent_tools is not None:
            from mistralcli.tools.agent_tools import agent_tools as make_agent_tools

            for tool in make_agent_tools(agent_tools):
                registry.add(tool)
        for name, func in (tool_callbacks or {}).items():
            registry.add(function_tool(func, name))
        config = mcp_config_of(mcp_config) if mcp_config is not None else None
        self.runner = ToolRunner(registry, permission=permission)
        self.statuses = []
        self._clients = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mistralcli-tools", daemon=True)
        self._thread.start()
        if config is not None and config.enabled_servers:
            from mistralcli.tools.mcp_client import McpClients

            try:
                self._clients = self._run(McpClients(config, registry).__aenter__())
            except BaseException:
                self.close()
                raise
            self.statuses = self._clients.statuses
            for status in self.statuses:
                if not status.ok:
                    log.warning("MCP server %s failed: %s", status.id, status.reason)

    @property
    def registry(self) -> ToolRegistry:
        return self.runner.registry

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def run(self, calls: list[ToolCall]) -> list[CallOutcome]:
        """Every call at once; their outcomes in order."""
        return self._run(self.runner.run(calls))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._clients is not None:
            clients, self._clients = self._clients, None
            self._run(clients.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
