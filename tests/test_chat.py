"""`mistral chat` as scripts and people use it: a scripted conversation over stdin (commands, sessions, exports),
-c, a chat killed mid-answer, --url against `mistral serve` and against a port where nothing listens."""

import json
import signal
import socket
import subprocess
import time

import pytest
from chat_helpers import CHAT, chat_env, run_chat
from test_server import Server

from mistralcli.chat.store import SessionStore

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


def greedy_answer(model_path, conversation, max_tokens):
    from mistralcli import LLM, SamplingParams

    llm = LLM(str(model_path))
    out = llm.chat(conversation, SamplingParams(temperature=0, max_tokens=max_tokens))
    return out[0].outputs[0].text


def store_of(data_dir) -> SessionStore:
    return SessionStore(data_dir / "sessions.sqlite3")


def test_a_scripted_conversation_answers_stores_and_exports(tmp_path, smollm2_path):
    script = f"""/system You answer in one short sentence.
/set temperature 0
/set max_tokens 24
/set temprature 1
{QUESTION}
/save paris
/sessions
/load paris
/export {tmp_path}/paris.md
/export {tmp_path}/paris.json
/bogus
/exit
This line is never sent.
"""
    result = run_chat(tmp_path, "-m", str(smollm2_path), input=script)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    conversation = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": QUESTION},
    ]
    answer = greedy_answer(smollm2_path, conversation, 24)
    assert answer and answer in result.stdout  # the same bits as the Python API gives, greedy
    assert "no parameter temprature; did you mean temperature?" in result.stderr
    assert "unknown command /bogus" in result.stderr
    assert "paris" in result.stdout  # /sessions
    assert "never sent" not in result.stdout + result.stderr

    with store_of(tmp_path) as store:
        sessions = {s.name: store.get(s.name) for s in store.sessions()}
    assert len(sessions) == 2  # the chat's own and the copy /save made
    for session in sessions.values():
        assert session.system == "You answer in one short sentence."
        assert session.params == {"temperature": 0.0, "max_tokens": 24}
        user, assistant = session.messages
        assert (user.role, user.content) == ("user", QUESTION)
        assert assistant.content == answer and not assistant.partial
        assert assistant.params == {"temperature": 0.0, "max_tokens": 24}
        assert assistant.prompt_tokens > 10 and 0 < assistant.completion_tokens <= 24
        assert assistant.ttft_s > 0 and assistant.seconds >= assistant.ttft_s
        assert assistant.model == "SmolLM2-135M-Instruct.Q4_1"

    exported = json.loads((tmp_path / "paris.json").read_text())
    assert exported["name"] == "paris" and [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert exported["messages"][1]["content"] == answer
    markdown = (tmp_path / "paris.md").read_text()
    assert "# paris" in markdown and "## You" in markdown and answer.strip() in markdown


def test_continue_list_and_export_without_a_model(tmp_path, smollm2_path):
    first = run_chat(
        tmp_path, "-m", str(smollm2_path), "-t", "0", "-n", "16", "--session", "trip", input=f"{QUESTION}\n"
    )
    assert first.returncode == 0, first.stderr
    again = run_chat(tmp_path, "-m", str(smollm2_path), "-t", "0", "-n", "16", "-c", input="And of Italy?\n")
    assert again.returncode == 0, again.stderr
    with store_of(tmp_path) as store:
        session = store.get("trip")
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant"]
    first_turn, second_turn = session.messages[1], session.messages[3]
    assert second_turn.prompt_tokens > first_turn.prompt_tokens + first_turn.completion_tokens  # it saw the first turn

    # no model is loaded: a model that does not exist is never touched
    missing = ("--model", str(tmp_path / "no-such.gguf"))
    listed = run_chat(tmp_path, "--list", "--json", *missing)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["messages"]) for r in rows] == [("trip", 4)]
    out = tmp_path / "trip.md"
    exported = run_chat(tmp_path, "--export", "trip", str(out), *missing)
    assert exported.returncode == 0, exported.stderr
    assert "And of Italy?" in out.read_text()
    unknown = run_chat(tmp_path, "--export", "nope", str(out))
    assert unknown.returncode == 1 and "no session named 'nope' (the sessions: trip)" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad = run_chat(tmp_path, "--export", "trip", str(tmp_path / "trip.txt"))
    assert bad.returncode == 1 and "export to a .md or a .json file" in bad.stderr


def story_until(data_dir, model_path, session: str, sig: int) -> tuple[subprocess.Popen, bytes]:
    """A scripted chat asked for a long story, sent `sig` once 200 bytes of it are on its stdout."""
    proc = subprocess.Popen(
        [*CHAT, "-m", str(model_path), "-t", "0", "-n", "400", "--session", session, "--threads", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=chat_env(data_dir),
    )
    proc.stdin.write(b"Write a long story about a dragon who learns to cook.\nNever asked.\n")
    proc.stdin.flush()
    shown = b""
    deadline = time.monotonic() + 120
    while len(shown) < 200 and time.monotonic() < deadline:
        shown += proc.stdout.read1(4096)
    proc.send_signal(sig)
    proc.wait(30)
    assert len(shown) >= 200, proc.stderr.read().decode()
    return proc, shown


def test_ctrl_c_ends_a_script_keeping_the_partial_answer(tmp_path, smollm2_path):
    proc, shown = story_until(tmp_path, smollm2_path, "interrupted", signal.SIGINT)
    assert proc.returncode == 130
    assert "Traceback" not in proc.stderr.read().decode()
    with store_of(tmp_path) as store:
        user, partial = store.get("interrupted").messages  # the next line was never asked
    assert partial.partial and partial.content.startswith(shown.decode("utf-8", "ignore").rstrip("\ufffd"))


def test_sigkill_mid_answer_keeps_what_was_shown_then_continues(tmp_path, smollm2_path):
    proc, shown = story_until(tmp_path, smollm2_path, "killed", signal.SIGKILL)
    with store_of(tmp_path) as store:
        session = store.get("killed")
    user, partial = session.messages
    assert user.content.startswith("Write a long story")
    assert partial.partial and partial.content.startswith(shown.decode("utf-8", "ignore").rstrip("\ufffd"))

    later = run_chat(tmp_path, "-m", str(smollm2_path), "-t", "0", "-n", "8", "-c", input="Go on.\n")
    assert later.returncode == 0, later.stderr
    with store_of(tmp_path) as store:
        session = store.get("killed")
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.messages[1].partial and session.messages[1].content == partial.content
    assert not session.messages[3].partial


def test_url_against_mistral_serve_gives_the_local_answer(tmp_path, smollm2_path):
    server = Server(smollm2_path)
    try:
        script = f"/set temperature 0\n/set max_tokens 24\n/models\n{QUESTION}\n/stats\n"
        remote = run_chat(tmp_path, "--url", server.url, input=script)
    finally:
        assert server.stop() == 0
    assert remote.returncode == 0, remote.stderr
    answer = greedy_answer(smollm2_path, [{"role": "user", "content": QUESTION}], 24)
    assert answer in remote.stdout
    assert "SmolLM2-135M-Instruct.Q4_1" in remote.stdout  # /models lists the server's
    assert "1 answers:" in remote.stdout  # /stats
    with store_of(tmp_path) as store:
        assistant = store.get(store.sessions()[0].name).messages[1]
    assert assistant.content == answer and assistant.completion_tokens > 0 and assistant.prompt_tokens > 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_url_where_nothing_listens_says_so_and_stays_open(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = run_chat(tmp_path, "--url", url, input="Hello?\n/sessions\n/stats\n", timeout=60)
    assert result.returncode == 1  # a script learns that an answer failed
    assert "Traceback" not in result.stderr
    assert f"cannot reach the server at {url}" in result.stderr and "is it running?" in result.stderr
    assert "no answers yet" in result.stdout  # the chat went on to the next lines
    with store_of(tmp_path) as store:
        assert [store.count(s) for s in store.sessions()] == [0]  # the unanswered message was not kept


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--api-key", "k"], "--api-key: it needs --url"),
        (["--writable", "x"], "--writable: it needs --agent"),
        (["--agent"], "agent mode needs a sandbox: --sandbox-root DIR"),
        (["--agent", "--sandbox-root", "/no/such/dir"], "/no/such/dir is not a directory"),
        (["--agent-permission", "maybe", "--agent", "--sandbox-root", "."], "'maybe' is not one of ask, auto, deny"),
        (["-c", "--session", "x"], "give one of -c"),
        (["--temperature", "hot"], "'hot' is not a valid number"),
    ],
)
def test_bad_flags_are_usage_errors(tmp_path, args, needle):
    result = run_chat(tmp_path, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    flat = " ".join(line.strip("│╭╮╰╯─ ") for line in result.stderr.splitlines())
    assert needle in flat, result.stderr
    assert "Traceback" not in result.stderr
