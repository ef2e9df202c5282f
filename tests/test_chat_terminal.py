"""`mistral chat` at a real terminal: driven under a pseudo-terminal (pexpect) as a person types: a prompt that
streams, Ctrl-C mid-answer and chatting on, a \"\"\" block, the up arrow recalling it, Ctrl-D to leave; and an
agent's dangerous call approved at the terminal."""

import os
import sys
import time

import pytest
from chat_helpers import ScriptedServer
from tool_loop_server import call, tool_results

from mistralcli.chat.store import SessionStore

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.slow


def spawn(data_dir, *args, color: bool = False, rows: int = 40):
    env = {**os.environ, "MISTRALCLI_DATA": str(data_dir), "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    env.pop("NO_COLOR", None)
    if not color:
        env["NO_COLOR"] = "1"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mistralcli", "chat", *args],
        env=env,
        encoding="utf-8",
        timeout=180,  # a loaded machine (CI) is slow to a first token
        dimensions=(rows, 100),
    )
    child.expect(">>>")
    return child


def messages(data_dir, name):
    with SessionStore(data_dir / "sessions.sqlite3") as store:
        return store.get(name).messages


def test_stream_stop_multiline_history_and_ctrl_d(tmp_path, smollm2_path):
    child = spawn(tmp_path, "-m", str(smollm2_path), "-t", "0", "-n", "600", "--session", "pty")
    child.sendline("Write a long story about a dragon.")
    child.expect("Once upon a time")  # it streams: words come before the answer ends (greedy: known words)
    time.sleep(0.3)
    child.sendintr()  # Ctrl-C
    child.expect("stopped: the answer so far is kept")
    child.expect(">>>")
    stopped = messages(tmp_path, "pty")[-1]
    assert stopped.role == "assistant" and stopped.partial and stopped.content.startswith("Once upon a time")

    child.sendline('"""')  # a block: Enter gives new lines until it is closed
    child.expect(r"\.\.\.")
    child.sendline("Say hi")
    child.expect(r"\.\.\.")
    child.sendline('in French"""')
    child.expect(r"generated tokens")
    child.expect(">>>")
    child.send("\x1b[A")  # the up arrow recalls the whole block
    child.expect("in French")
    child.sendline("")
    child.expect(r"generated tokens")
    child.expect(">>>")
    child.send("\x1b[200~Translate:\nhello\x1b[201~")  # a paste (bracketed) keeps its newline
    child.send("\r")
    child.expect(r"generated tokens")
    child.expect(">>>")
    child.sendeof()  # Ctrl-D
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    session = messages(tmp_path, "pty")
    assert [m.role for m in session] == ["user", "assistant"] * 4
    assert session[2].content == session[4].content == "Say hi\nin French"
    assert session[6].content == "Translate:\nhello"
    assert session[1].partial and not any(m.partial for m in session[3:])
    history = (tmp_path / "chat_history").read_text()
    assert "Write a long story about a dragon." in history and "in French" in history


def test_markdown_on_a_colour_terminal(tmp_path, smollm2_path):
    child = spawn(tmp_path, "-m", str(smollm2_path), "-t", "0", "-n", "120", color=True, rows=20)
    child.sendline("Write a Python function that adds two numbers, in a code block.")
    child.expect("generated tokens")
    shown = child.before
    child.expect(">>>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    answer = messages(tmp_path, SessionStore(tmp_path / "sessions.sqlite3").last().name)[-1].content
    assert "```" in answer  # the model wrote a fenced block ...
    assert "```" not in shown and "\x1b[" in shown and "def" in shown  # ... shown highlighted, not as fences


def approve_then_answer(prompt: str) -> str:
    done = tool_results(prompt)
    if done < 3:
        return f"Writing note {done}." + call("write_file", path=f"note{done}.txt", content=f"note {done}")
    return "The notes are written."


def test_agent_asks_before_a_dangerous_call(tmp_path, smollm2):
    server = ScriptedServer(smollm2, approve_then_answer)
    root = tmp_path / "project"
    root.mkdir()
    try:
        child = spawn(tmp_path, "--url", server.url, "--agent", "--sandbox-root", str(root), "--writable", str(root))
        child.sendline("Write three notes.")
        child.expect(r"write_file\(path=\"note0.txt\"")
        child.expect(r"\[y/n/always\]")
        child.sendline("n")  # denied: the model reads that it was not run
        child.expect(r"write_file\(path=\"note1.txt\"")
        child.expect(r"\[y/n/always\]")
        child.sendline("always")  # this one, and every later write_file of this chat, unasked
        child.expect(r"write_file\(path=\"note2.txt\"")
        child.expect("The notes are written.")
        asked_again = "[y/n/always]" in child.before
        child.expect(">>>")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        server.close()
    assert not asked_again
    assert not (root / "note0.txt").exists()
    assert (root / "note1.txt").read_text() == "note 1" and (root / "note2.txt").read_text() == "note 2"
