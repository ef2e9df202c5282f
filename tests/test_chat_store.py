"""`mistral chat`'s session store: sessions and messages in SQLite (WAL mode), an answer stored as it streams
(a process killed with SIGKILL mid-answer keeps every finished turn and the partial one as written), the
schema migrated forward from an older store and a newer one refused, and the exports."""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from mistralcli.chat.export import export_session
from mistralcli.chat.store import MIGRATIONS, SCHEMA_VERSION, Message, SessionStore
from mistralcli.errors import MistralError


@pytest.fixture
def store(tmp_path):
    with SessionStore(tmp_path / "sessions.sqlite3") as s:
        yield s


def test_sessions_and_their_messages_round_trip(store, tmp_path):
    session = store.create("trip", model="smollm2", system="Be brief.", params={"temperature": 0.2})
    store.append(session, Message("user", "Hi"))
    answer = store.append(session, Message("assistant", "", model="smollm2", params={"temperature": 0.2}))
    answer.content, answer.completion_tokens, answer.ttft_s = "Hello!", 3, 0.05
    store.update(answer)
    with SessionStore(tmp_path / "sessions.sqlite3") as other:  # another process's view
        again = other.get("trip")
    assert again.system == "Be brief." and again.params == {"temperature": 0.2}
    assert [(m.role, m.content) for m in again.messages] == [("user", "Hi"), ("assistant", "Hello!")]
    assert again.messages[1].completion_tokens == 3 and again.messages[1].params == {"temperature": 0.2}
    assert again.conversation() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_names_last_rename_delete_undo(store):
    first = store.create()
    second = store.create()
    assert first.name.startswith("chat-") and second.name != first.name
    store.append(first, Message("user", "later"))  # used last
    assert store.last().name == first.name and [s.name for s in store.sessions()][0] == first.name
    with pytest.raises(MistralError, match="a session named .* exists"):
        store.create(first.name)
    store.rename(second, "work")
    with pytest.raises(MistralError, match="a session named 'work' exists"):
        store.rename(first, "work")
    store.delete("work")
    with pytest.raises(MistralError, match=r"no session named 'work' \(the sessions: chat-"):
        store.get("work")
    question = store.append(first, Message("user", "q"))
    store.append(first, Message("assistant", "a"))
    store.drop_from(first, question)
    assert [m.content for m in store.get(first.name).messages] == ["later"] and store.count(first) == 1
    store.update_session(first, system="New.", params={"top_k": 5})
    assert store.get(first.name).system == "New." and store.get(first.name).params == {"top_k": 5}
    store.clear(first)
    assert store.get(first.name).messages == []


WRITER = textwrap.dedent(
    """
    import sys, time
    from mistralcli.chat.store import Message, SessionStore
    store = SessionStore(sys.argv[1])
    session = store.create("killed")
    store.append(session, Message("user", "one"))
    store.append(session, Message("assistant", "first answer"))
    store.append(session, Message("user", "two"))
    answer = store.append(session, Message("assistant", "", partial=True))
    for i in range(100000):
        answer.content += f"w{i} "
        store.update(answer)
        if i == 50:
            print("streaming", flush=True)
        time.sleep(0.001)
    """
)


def test_a_chat_killed_mid_answer_keeps_every_turn_and_the_partial_one(tmp_path):
    path = tmp_path / "sessions.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "streaming"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with SessionStore(path) as store:
        messages = store.get("killed").messages
    assert [(m.role, m.content) for m in messages[:3]] == [
        ("user", "one"),
        ("assistant", "first answer"),
        ("user", "two"),
    ]
    partial = messages[3]
    assert partial.partial and partial.content.startswith("w0 w1 w2 ") and "w50 " in partial.content
    words = partial.content.split()
    assert words == [f"w{i}" for i in range(len(words))]  # whole words as written, in order, nothing torn


def test_an_older_store_is_migrated_and_a_newer_one_refused(tmp_path):
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO sessions (name, params, created, updated) VALUES ('old', '{}', 1.0, 1.0)")
    db.execute("INSERT INTO messages (session_id, role, content, created) VALUES (1, 'user', 'from v1', 1.0)")
    db.commit()
    db.close()
    with SessionStore(path) as store:
        assert store.version == SCHEMA_VERSION
        [message] = store.get("old").messages
        assert message.content == "from v1" and not message.partial and message.model is None
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(MistralError, match="newer than this mistralcli reads"):
        SessionStore(path)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(MistralError, match="junk.sqlite3: not a session store"):
        SessionStore(junk)


def test_exports_by_extension(store, tmp_path):
    session = store.create("ex", model="smollm2", system="Be brief.")
    store.append(session, Message("user", "Hi"))
    store.append(session, Message("assistant", "Hel", partial=True))
    assert export_session(session, tmp_path / "ex.md") == "markdown"
    text = (tmp_path / "ex.md").read_text()
    assert text.startswith("# ex\n") and "## System\n\nBe brief." in text and "## Assistant (cut short)\n\nHel" in text
    export_session(session, tmp_path / "ex.json")
    body = json.loads((tmp_path / "ex.json").read_text())
    assert body["name"] == "ex" and [m["content"] for m in body["messages"]] == ["Hi", "Hel"]
    with pytest.raises(MistralError, match="export to a .md or a .json file"):
        export_session(session, tmp_path / "ex.txt")


def test_a_transaction_cut_by_ctrl_c_does_not_wedge_the_store(tmp_path):
    # Ctrl-C can land between a write's BEGIN and its COMMIT; the next write undoes that one and goes on
    with SessionStore(tmp_path / "s.sqlite3") as store:
        session = store.create("cut")
        store.db.execute("BEGIN IMMEDIATE")
        store.db.execute(
            "INSERT INTO messages (session_id, role, content, created) VALUES (?, 'user', 'half', 1.0)", (session.id,)
        )
        store.append(session, Message("user", "whole"))
        assert [m.content for m in store.get("cut").messages] == ["whole"]


def test_markdown_export_shows_tool_calls(tmp_path):
    with SessionStore(tmp_path / "s.sqlite3") as store:
        session = store.create("agent")
        call = {"id": "c1", "type": "function", "function": {"name": "cat", "arguments": '{"path": "a.txt"}'}}
        store.append(session, Message("user", "Read a.txt"))
        store.append(session, Message("assistant", "", tool_calls=[call]))
        store.append(session, Message("tool", "hello", tool_call_id="c1"))
        export_session(store.get("agent"), tmp_path / "a.md")
    text = (tmp_path / "a.md").read_text()
    assert '`cat({"path": "a.txt"})`' in text and "## Tool\n\nhello" in text
