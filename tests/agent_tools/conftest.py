"""The agent tools' sandbox tree for these tests: a root with files and a writable part (w, with w/ro
read-only), an outside directory holding a secret, and a registry of the agent tools on it."""

from pathlib import Path

import pytest
from sandbox_tree import SECRET, make_registry

from mistralcli.tools.registry import ToolRegistry
from mistralcli.tools.sandbox import SandboxConfig


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
