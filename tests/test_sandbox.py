"""The agent tools' sandbox: an escape corpus that must all be refused with nothing outside the root read or
written, races between the check and the open, and the size, extension, binary and output limits."""

import os
import socket
from pathlib import Path

import pytest
from sandbox_tree import SECRET, call, make_registry, snapshot

from mistralcli.tools.sandbox import Sandbox, SandboxConfig, SandboxError

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
