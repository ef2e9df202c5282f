"""Agent tools on a tmp_path sandbox: every tool's output, an escape corpus that must all be refused with
nothing outside the root read or written, the limits, the shell's time limit, the generated schemas."""

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from mistralcli.tools import agent_tools as at
from mistralcli.tools.registry import ToolCallError, ToolRegistry
from mistralcli.tools.sandbox import Sandbox, SandboxConfig, SandboxError

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


# --- every tool, expected outputs ---


def test_ls(tools, root):
    (root / "link").symlink_to("a.txt")
    assert call(tools, "ls").text == "a.txt\nb.txt\ndata.csv\nlink@\nsub/\nw/"
    assert call(tools, "ls", path="sub", show_hidden=True).text == "code.py\ndeep/"
    assert ".hidden" in call(tools, "ls", show_hidden=True).text
    long = call(tools, "ls", path="sub", long=True).text.splitlines()
    assert long[0].startswith("-rw") and long[0].endswith(" 12 code.py")
    assert call(tools, "ls", path="a.txt").text == "a.txt"


def test_cat_head_tail_wc(tools):
    assert call(tools, "cat", path="a.txt").text == "one\ntwo\nthree\n"
    assert call(tools, "head", path="a.txt", lines=2).text == "one\ntwo\n"
    assert call(tools, "tail", path="a.txt", lines=2).text == "two\nthree\n"
    assert call(tools, "tail", path="a.txt", lines=0).text == ""
    assert call(tools, "wc", path="a.txt").text == "3 3 14 a.txt"


def test_grep(tools):
    assert call(tools, "grep", pattern="t", path="a.txt").text == "two\nthree"
    assert call(tools, "grep", pattern="^T", path="a.txt", ignore_case=True, line_numbers=True).text == "2:two\n3:three"
    assert call(tools, "grep", pattern="zzz", path="a.txt").text == "no matches"
    result = call(tools, "grep", pattern="two", ignore_case=True, recursive=True, line_numbers=True)
    assert result.text == "a.txt:2:two\nsub/deep/c.txt:1:deep Two"
    assert call(tools, "grep", pattern="two", path="sub").is_error  # a directory without recursive
    assert call(tools, "grep", pattern="(", path="a.txt").is_error  # a bad regex


def test_find_and_tree(tools):
    assert call(tools, "find", name="*.txt").text == "a.txt\nb.txt\nsub/deep/c.txt\nw/notes.txt"
    assert call(tools, "find", type="d").text == "sub\nsub/deep\nw\nw/ro"
    assert call(tools, "find", path="sub", max_depth=1).text == "sub/code.py\nsub/deep"
    assert call(tools, "find", name="*.rs").text == "nothing found"
    assert call(tools, "tree", path="sub").text == "sub\n├── code.py\n├── deep/\n    ├── c.txt"
    assert call(tools, "tree", max_depth=1).text.splitlines()[:3] == [".", "├── .hidden", "├── a.txt"]


def test_sort_uniq_cut(tools):
    assert call(tools, "sort", path="a.txt").text == "one\nthree\ntwo"
    assert call(tools, "sort", path="a.txt", reverse=True).text == "two\nthree\none"
    assert call(tools, "cut", path="data.csv", fields="2", delimiter=",").text == "2\n10\n2\n1"
    assert call(tools, "cut", path="data.csv", fields="1,3", delimiter=",").text == "y,b\nx,a\ny,b\nz,c"
    assert call(tools, "cut", path="data.csv", fields="0", delimiter=",").is_error
    assert call(tools, "uniq", path="data.csv").text == "y,2,b\nx,10,a\ny,2,b\nz,1,c"
    assert call(tools, "sort", path="data.csv", unique=True).text == "x,10,a\ny,2,b\nz,1,c"


def test_sort_numeric_and_uniq_count(tools, root):
    (root / "w" / "n.txt").write_text("10 a\n9 b\n9 b\n-1 c\n")
    assert call(tools, "sort", path="w/n.txt", numeric=True).text == "-1 c\n9 b\n9 b\n10 a"
    assert call(tools, "uniq", path="w/n.txt", count=True).text == "      1 10 a\n      2 9 b\n      1 -1 c"


def test_diff(tools):
    assert call(tools, "diff", path_a="a.txt", path_b="a.txt").text == "no differences"
    assert call(tools, "diff", path_a="a.txt", path_b="b.txt", context=0).text == (
        "--- a.txt\n+++ b.txt\n@@ -2 +2 @@\n-two\n+2\n@@ -3,0 +4 @@\n+four\n"
    )


def test_stat(tools):
    lines = call(tools, "stat", path="a.txt").text.splitlines()
    assert lines[:3] == ["path: a.txt", "type: file", "size: 14"]
    assert lines[3].startswith("mode: -rw") and lines[4].startswith("modified: ")
    assert call(tools, "stat", path="sub").text.splitlines()[1] == "type: directory"


def test_write_and_edit(tools, root):
    assert call(tools, "write_file", path="w/new.txt", content="hello\n").text == "wrote 6 bytes to w/new.txt"
    assert (root / "w" / "new.txt").read_text() == "hello\n"
    assert call(tools, "write_file", path="w/new.txt", content="hi\n").text == "wrote 3 bytes to w/new.txt"
    assert (root / "w" / "new.txt").read_text() == "hi\n"
    assert call(tools, "edit_file", path="w/notes.txt", old="beta", new="gamma").text == "edited w/notes.txt"
    assert (root / "w" / "notes.txt").read_text() == "alpha gamma alpha\n"
    twice = call(tools, "edit_file", path="w/notes.txt", old="alpha", new="x")
    assert twice.is_error and "2 times" in twice.text
    assert call(tools, "edit_file", path="w/notes.txt", old="nope", new="x").is_error
    assert (root / "w" / "notes.txt").read_text() == "alpha gamma alpha\n"
    assert call(tools, "write_file", path="w/missing/x.txt", content="x").is_error  # parent must exist


def test_tool_metadata(tools):
    assert {t.source for t in tools} == {"agent"}
    assert {t.name for t in tools if t.dangerous} == {"write_file", "edit_file"}
    assert tools.tools["cat"].description == "Print a text file."
    assert "shell" not in tools


# --- the escape corpus ---


@pytest.fixture
def traps(root, outside):
    """Links and special files inside the root that lead (or try to lead) outside it."""
    secret = outside / "secret.txt"
    (root / "link_file").symlink_to(secret)
    (root / "link_dir").symlink_to(outside)
    (root / "chain2").symlink_to(secret)
    (root / "chain1").symlink_to("chain2")
    (root / "inner").symlink_to("link_file")  # inside, pointing at a symlink that points out
    (root / "rel_out").symlink_to("../outside/secret.txt")
    (root / "dev_link").symlink_to("/dev/zero")
    (root / "proc_link").symlink_to("/proc/self/environ")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    os.mkfifo(root / "fifo")
    os.mkfifo(root / "w" / "fifo")
    (root / "w" / "link_out").symlink_to(outside / "new.txt")  # dangling: writing through it would create it
    (root / "w" / "link_in").symlink_to("../a.txt")
    (root / "w" / "dir_out").symlink_to(outside)
    try:
        os.link(secret, root / "hard")
        os.link(outside / "f.txt", root / "w" / "hard")
    except OSError:
        pass
    return root


ESCAPES = [
    ("cat", {"path": "../outside/secret.txt"}),
    ("cat", {"path": "../../etc/passwd"}),
    ("cat", {"path": "/etc/passwd"}),
    ("cat", {"path": "/proc/self/environ"}),
    ("cat", {"path": "/dev/zero"}),
    ("cat", {"path": "link_file"}),
    ("cat", {"path": "link_dir/secret.txt"}),
    ("cat", {"path": "chain1"}),
    ("cat", {"path": "inner"}),
    ("cat", {"path": "rel_out"}),
    ("cat", {"path": "hard"}),
    ("cat", {"path": "dev_link"}),
    ("cat", {"path": "proc_link"}),
    ("cat", {"path": "fifo"}),
    ("cat", {"path": "loop1"}),
    ("cat", {"path": "a.txt\0../outside/secret.txt"}),
    ("cat", {"path": "a/" * 2100}),
    ("cat", {"path": "x" * 300}),
    ("cat", {"path": "~/secret.txt"}),
    ("cat", {"path": "~"}),
    ("cat", {"path": "sub/../../outside/secret.txt"}),
    ("cat", {"path": "./../outside/secret.txt"}),
    ("cat", {"path": "sub/./deep/../../../outside/secret.txt"}),
    ("cat", {"path": "%2e%2e/outside/secret.txt"}),
    ("cat", {"path": "..%2f..%2fetc%2fpasswd"}),
    ("cat", {"path": "..\\outside\\secret.txt"}),
    ("head", {"path": "hard"}),
    ("tail", {"path": "chain1"}),
    ("wc", {"path": "link_dir/secret.txt"}),
    ("stat", {"path": "link_file"}),
    ("stat", {"path": "/etc/passwd"}),
    ("ls", {"path": ".."}),
    ("ls", {"path": "link_dir"}),
    ("ls", {"path": "/"}),
    ("find", {"path": ".."}),
    ("find", {"path": "link_dir"}),
    ("tree", {"path": "link_dir"}),
    ("grep", {"pattern": "SECRET", "path": "..", "recursive": True}),
    ("grep", {"pattern": "SECRET", "path": "link_file"}),
    ("sort", {"path": "inner"}),
    ("uniq", {"path": "hard"}),
    ("cut", {"path": "link_file", "fields": "1"}),
    ("diff", {"path_a": "a.txt", "path_b": "link_file"}),
    ("write_file", {"path": "../outside/new.txt", "content": "x"}),
    ("write_file", {"path": str(Path("/tmp") / "agent-tools-escape.txt"), "content": "x"}),
    ("write_file", {"path": "a.txt", "content": "x"}),  # not under a writable path
    ("write_file", {"path": "w/ro/x.txt", "content": "x"}),  # read-only
    ("write_file", {"path": "w/link_out", "content": "x"}),  # through a dangling symlink out
    ("write_file", {"path": "w/link_in", "content": "x"}),  # through a symlink, even one inside
    ("write_file", {"path": "w/dir_out/new.txt", "content": "x"}),
    ("write_file", {"path": "w/hard", "content": "x"}),  # a hard link to an outside file
    ("write_file", {"path": "w/fifo", "content": "x"}),
    ("write_file", {"path": "w/../../outside/new.txt", "content": "x"}),
    ("edit_file", {"path": "link_file", "old": "SECRET", "new": "x"}),
    ("edit_file", {"path": "w/hard", "old": "SECRET", "new": "x"}),
    ("edit_file", {"path": "w/ro/../../a.txt", "old": "one", "new": "x"}),
]


@pytest.mark.parametrize(("name", "arguments"), ESCAPES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ESCAPES)])
def test_escape_is_refused(traps, outside, name, arguments):
    if "hard" in arguments.get("path", "") and not (traps / "hard").exists():
        pytest.skip("the filesystem does not allow a hard link from the root to outside it")
    before, root_before = snapshot(outside), (traps / "a.txt").read_text()
    result = call(
        make_registry(SandboxConfig(root=traps, writable=[Path("w")], read_only=[Path("w/ro")])), name, **arguments
    )
    assert result.is_error, result.text
    assert SECRET not in result.text and "root:" not in result.text
    assert snapshot(outside) == before
    assert not (outside / "new.txt").exists() and not Path("/tmp/agent-tools-escape.txt").exists()
    assert (traps / "a.txt").read_text() == root_before


def test_recursive_walks_do_not_leak(traps, tools):
    for result in (
        call(tools, "grep", pattern="SECRET", recursive=True),
        call(tools, "find"),
        call(tools, "tree", max_depth=5),
        call(tools, "ls", path="w", long=True),
    ):
        assert not result.is_error and SECRET not in result.text
    assert "secret.txt" not in call(tools, "find").text


def test_refusals_name_the_path_and_reason(traps):
    sb = Sandbox(SandboxConfig(root=traps, writable=[Path("w")], read_only=[Path("w/ro")]))
    cases = {
        "../outside/secret.txt": "climbs out of the sandbox root",
        "/etc/passwd": "is outside the sandbox root",
        "link_file": "a symlink leads out",
        "fifo": "fifo: refused: a FIFO",
    }
    for path, reason in cases.items():
        with pytest.raises(SandboxError, match=reason):
            sb.read_text(path)
    with pytest.raises(SandboxError, match="w/ro/x.txt: refused: the path is read-only"):
        sb.resolve("w/ro/x.txt", write=True)
    with pytest.raises(SandboxError, match=r"a.txt: refused: not under a writable path \(writable: w\)"):
        sb.resolve("a.txt", write=True)
    if (traps / "hard").exists():
        with pytest.raises(SandboxError, match="hard: refused: a file with 2 hard links"):
            sb.read_text("hard")


def test_socket_is_refused(root):
    path = root / "sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
    except OSError as exc:
        pytest.skip(f"cannot bind a unix socket here: {exc}")
    with server, pytest.raises(SandboxError, match="a socket"):
        Sandbox(SandboxConfig(root=root)).read_text("sock")


def test_system_trees_refused_even_as_root():
    sb = Sandbox(SandboxConfig(root=Path("/")))
    for path in ("/proc/self/environ", "proc/self/status", "/dev/zero", "/sys/kernel"):
        with pytest.raises(SandboxError, match="system paths"):
            sb.resolve(path)


def test_config_paths_must_be_inside_root(root):
    from mistralcli.errors import MistralError

    with pytest.raises(MistralError, match="outside the root"):
        SandboxConfig(root=root, writable=[Path("..")])
    with pytest.raises(MistralError, match="not a directory"):
        SandboxConfig(root=root / "a.txt")


# --- races: the path changes between the check and the open ---


def swap_after_resolve(monkeypatch, swap):
    """Make the next resolve run `swap` right after its checks pass, as a racing process would."""
    original = Sandbox.resolve

    def resolve(self, path, *, write=False):
        real = original(self, path, write=write)
        monkeypatch.setattr(Sandbox, "resolve", original)
        swap()
        return real

    monkeypatch.setattr(Sandbox, "resolve", resolve)


def replace_with_symlink(path: Path, target: Path):
    path.unlink()
    path.symlink_to(target)


def test_race_file_swapped_for_symlink(config, outside, monkeypatch):
    sb, target = Sandbox(config), config.root / "w" / "race.txt"
    target.write_text("mine\n")
    swap_after_resolve(monkeypatch, lambda: replace_with_symlink(target, outside / "secret.txt"))
    with pytest.raises(SandboxError, match="changed to a symlink"):
        sb.read_text("w/race.txt")
    target.unlink()
    target.write_text("mine\n")
    before = snapshot(outside)
    swap_after_resolve(monkeypatch, lambda: replace_with_symlink(target, outside / "secret.txt"))
    with pytest.raises(SandboxError, match="changed to a symlink"):
        sb.write_text("w/race.txt", "x")
    assert snapshot(outside) == before


def test_race_directory_swapped_for_symlink(config, outside, monkeypatch):
    sb, folder = Sandbox(config), config.root / "w" / "d"
    folder.mkdir()
    (folder / "f.txt").write_text("mine\n")

    def swap():
        folder.rename(config.root / "w" / "d_old")
        folder.symlink_to(outside)

    before = snapshot(outside)
    swap_after_resolve(monkeypatch, swap)
    with pytest.raises(SandboxError, match="changed to a symlink"):
        sb.write_text("w/d/f.txt", "x")
    assert snapshot(outside) == before


def test_race_file_swapped_for_hard_link(config, outside, monkeypatch):
    sb, target = Sandbox(config), config.root / "w" / "race.txt"
    target.write_text("mine\n")

    def swap():
        target.unlink()
        os.link(outside / "secret.txt", target)

    try:
        os.link(outside / "secret.txt", outside / "probe")
    except OSError:
        pytest.skip("no hard links on this filesystem")
    (outside / "probe").unlink()
    before = snapshot(outside)
    swap_after_resolve(monkeypatch, swap)
    with pytest.raises(SandboxError, match="changed while opening"):
        sb.write_text("w/race.txt", "x")
    assert snapshot(outside) == before  # not truncated: the check comes before any write


# --- limits ---


def test_size_limit(root):
    tools = make_registry(SandboxConfig(root=root, writable=[Path("w")], max_file_bytes=100))
    (root / "w" / "big.txt").write_text("x" * 101)
    (root / "w" / "fits.txt").write_text("x" * 100)
    assert "over the limit of 100" in call(tools, "cat", path="w/big.txt").text
    assert call(tools, "cat", path="w/fits.txt").text == "x" * 100
    assert call(tools, "write_file", path="w/new.txt", content="y" * 101).is_error
    assert not (root / "w" / "new.txt").exists()


def test_extension_limit(root):
    tools = make_registry(SandboxConfig(root=root, writable=[Path("w")], allowed_extensions=["txt"]))
    assert "extension .py is not allowed" in call(tools, "cat", path="sub/code.py").text
    assert call(tools, "write_file", path="w/x.sh", content="x").is_error
    assert not call(tools, "write_file", path="w/x.txt", content="x").is_error
    assert call(tools, "grep", pattern="print", recursive=True).text == (
        "[skipped 3 files that are binary, too large or refused: .hidden, data.csv, sub/code.py]"
    )


def test_binary_files_refused(tools, root):
    (root / "w" / "nul.txt").write_bytes(b"text\0more")
    (root / "w" / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert "a binary file" in call(tools, "cat", path="w/nul.txt").text
    assert "not UTF-8" in call(tools, "head", path="w/latin.txt").text
    assert call(tools, "edit_file", path="w/nul.txt", old="text", new="x").is_error
    assert (root / "w" / "nul.txt").read_bytes() == b"text\0more"


def test_output_caps(root):
    (root / "w" / "many.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    (root / "w" / "wide.txt").write_text("y" * 1000)
    tools = make_registry(SandboxConfig(root=root, max_output_lines=5, max_output_bytes=100))
    assert (
        call(tools, "cat", path="w/many.txt").text == "line 0\nline 1\nline 2\nline 3\nline 4\n[... cut: 15 more lines]"
    )
    assert call(tools, "cat", path="w/wide.txt").text == "y" * 100 + "\n[... cut: 1 more lines]"
    assert call(tools, "head", path="w/many.txt", lines=5).text == "line 0\nline 1\nline 2\nline 3\nline 4\n"


# --- shell ---


def test_shell_is_refused_unless_allowed(config):
    tools = make_registry(config)
    with pytest.raises(ToolCallError, match="no tool named 'shell'"):
        call(tools, "shell", command="echo hi")
    with pytest.raises(SandboxError, match="not enabled"):
        at.shell(Sandbox(config), "echo hi")


@pytest.fixture
def shell_tools(root) -> ToolRegistry:
    return make_registry(SandboxConfig(root=root, allow_shell=True, shell_timeout_s=1, max_output_bytes=1000))


def test_shell_runs_in_root(shell_tools, root):
    assert shell_tools.tools["shell"].dangerous
    assert call(shell_tools, "shell", command="pwd; echo oops >&2; exit 3").text == f"[exit status 3]\n{root}\noops\n"
    assert call(shell_tools, "shell", command="read x; echo got:$x").text == "[exit status 0]\ngot:\n"  # stdin is empty


def test_shell_output_is_capped(shell_tools):
    lines = call(shell_tools, "shell", command="yes | head -c 100000").text.splitlines()
    assert lines[0] == "[exit status 0; output cut: 99000 more bytes]"
    # 1000 bytes read (500 lines); the whole result, header included, bounded to 1000 bytes
    assert lines[1:-1] == ["y"] * 477 and lines[-1] == "[... cut: 23 more lines]"


def test_shell_killed_at_time_limit_with_its_group(shell_tools):
    start = time.monotonic()
    result = call(shell_tools, "shell", command="echo $$; sleep 10 & sleep 10")
    assert time.monotonic() - start < 5
    assert result.is_error and "killed after 1 s" in result.text
    group = int(result.text.split("output:\n")[1].splitlines()[0])
    assert live_members(group) == []


def live_members(group: int) -> list[int]:
    """Processes in a process group that are not zombies (a container's init may never reap them)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


# --- schemas ---


def test_schemas_check_arguments(tools):
    good = [
        ("cat", {"path": "a.txt"}),
        ("head", {"path": "a.txt", "lines": 3}),
        ("grep", {"pattern": "x", "recursive": True}),
        ("find", {"type": "d", "max_depth": 2}),
        ("find", {"name": None}),
        ("edit_file", {"path": "w/notes.txt", "old": "a", "new": ""}),
    ]
    for name, arguments in good:
        assert tools.check(name, arguments).name == name
    bad = [
        ("cat", {}),
        ("cat", {"path": 3}),
        ("cat", {"path": "a.txt", "extra": 1}),
        ("head", {"path": "a.txt", "lines": "ten"}),
        ("head", {"path": "a.txt", "lines": -1}),
        ("find", {"type": "x"}),
        ("grep", {"pattern": "x", "recursive": "yes"}),
        ("edit_file", {"path": "w/notes.txt", "old": "", "new": "x"}),
        ("cut", {"path": "data.csv", "fields": "1", "delimiter": ""}),
    ]
    for name, arguments in bad:
        with pytest.raises(ToolCallError) as exc:
            tools.check(name, arguments)
        assert exc.value.kind == "invalid_arguments"


def test_tool_call_validates_arguments_itself(tools):
    # A call that skips the registry's check still goes through pydantic.
    result = asyncio.run(tools.tools["head"].call({"path": "a.txt", "lines": -1}))
    assert result.is_error and "lines" in result.text
