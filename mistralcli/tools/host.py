"""The tools of a synchronous caller (the Python API's `LLM`): the agent tools, plain Python functions and MCP
servers' tools in one registry, run by a ToolRunner on an event loop in a thread of its own, where the MCP
sessions live. `close()` ends the sessions and reaps the servers' processes."""

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from mistralcli.errors import MistralError
from mistralcli.tools.loop import Approvals, CallOutcome, ToolCall, ToolRunner
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
    see mcp_config_of; permission: for the dangerous agent tools, "auto", "deny" or "ask" (for a caller that
    has a person to ask: it reads the "approval_required" events of `submit` and answers with `decide`)."""

    def __init__(
        self,
        *,
        agent_tools: SandboxConfig | None = None,
        tool_callbacks: dict[str, Callable] | None = None,
        mcp_config: McpConfig | dict | str | Path | None = None,
        permission: str = "auto",
        approval_timeout_s: float = 24 * 3600.0,
    ):
        registry = ToolRegistry()
        if agent_tools is not None:
            from mistralcli.tools.agent_tools import agent_tools as make_agent_tools

            for tool in make_agent_tools(agent_tools):
                registry.add(tool)
        for name, func in (tool_callbacks or {}).items():
            registry.add(function_tool(func, name))
        config = mcp_config_of(mcp_config) if mcp_config is not None else None
        self.runner = ToolRunner(registry, permission=permission, approvals=Approvals(approval_timeout_s))
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

    def submit(self, calls: list[ToolCall], emit: Callable[[dict], None]) -> concurrent.futures.Future:
        """Start every call at once; emit(event) is called (in the tools' thread) as they go (see ToolRunner);
        the future's result is their outcomes in order."""

        async def forward(event: dict) -> None:
            emit(event)

        return asyncio.run_coroutine_threadsafe(self.runner.run(calls, forward), self._loop)

    def decide(self, approval_id: str, approved: bool) -> None:
        """A person's answer to an "approval_required" event (from any thread)."""
        self._loop.call_soon_threadsafe(self.runner.approvals.decide, approval_id, approved)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._clients is not None:
            clients, self._clients = self._clients, None
            self._run(clients.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
