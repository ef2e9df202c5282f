"""Helpers of the agent tools' tests (tests/agent_tools/): the secret kept outside the sandbox root, a
registry of the agent tools, a call, and a snapshot of a directory to show nothing in it changed."""

import asyncio
from pathlib import Path

from mistralcli.tools import agent_tools as at
from mistralcli.tools.registry import ToolRegistry
from mistralcli.tools.sandbox import SandboxConfig

SECRET = "SECRET-outside-the-root"


def make_registry(config: SandboxConfig) -> ToolRegistry:
    registry = ToolRegistry()
    for tool in at.agent_tools(config):
        registry.add(tool)
    return registry


def call(registry: ToolRegistry, tool: str, /, **arguments):
    return asyncio.run(registry.call(tool, arguments))


def snapshot(directory: Path) -> dict:
    """Every path under `directory` with its bytes (None for a directory) and mtime: to show nothing changed."""
    return {
        p: (None if p.is_dir() else p.read_bytes(), p.lstat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if not p.is_symlink()
    }
