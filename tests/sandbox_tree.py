"""The agent tools' tests' sandbox tree (test_agent_tools.py, test_sandbox.py), a pytest plugin of
tests/conftest.py: fixtures for a root with files and a writable part (w, with w/ro read-only), an outside
directory holding a secret, and a registry of the agent tools on it; and the helpers to call a tool and to
snapshot a directory, to show nothing in it changed."""

import asyncio
from pathlib import Path

import pytest

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


@pytest.fixture
def outside(tmp_path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(SECRET + "\n")
    (out / "f.txt").write_text(SECRET + "\n")
    return out


@pytest.fixture
def root(tmp_path, outside) -> Path:
    root = tmp_path / "root"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "w" / "ro").mkdir(parents=True)
    (root / "a.txt").write_text("one\ntwo\nthree\n")
    (root / "b.txt").write_text("one\n2\nthree\nfour\n")
    (root / "data.csv").write_text("y,2,b\nx,10,a\ny,2,b\nz,1,c\n")
    (root / "sub" / "code.py").write_text("print('hi')\n")
    (root / "sub" / "deep" / "c.txt").write_text("deep Two\n")
    (root / ".hidden").write_text("h\n")
    (root / "w" / "notes.txt").write_text("alpha beta alpha\n")
    return root


@pytest.fixture
def config(root) -> SandboxConfig:
    return SandboxConfig(root=root, writable=[Path("w")], read_only=[Path("w/ro")])


@pytest.fixture
def tools(config) -> ToolRegistry:
    return make_registry(config)
