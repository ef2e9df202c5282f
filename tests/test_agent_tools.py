"""Agent tools on a tmp_path sandbox: every tool's output, the shell's time limit, the generated schemas
(the escape corpus and the limits: test_sandbox.py)."""

import asyncio
import time
from pathlib import Path

import pytest
from sandbox_tree import call, make_registry

from mistralcli.tools import agent_tools as at
from mistralcli.tools.registry import ToolCallError, ToolRegistry
from mistralcli.tools.sandbox import Sandbox, SandboxConfig, SandboxError

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
