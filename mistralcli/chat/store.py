"""`mistral chat`'s sessions in SQLite (WAL mode) in the user data directory: every message is stored as it
happens, an answer while it streams (`Message.update` rewrites its row as it grows, so a chat killed
mid-answer keeps what was on the screen, marked partial).

The schema is versioned by `PRAGMA user_version` and migrated forward when a store is opened (`MIGRATIONS`:
the statements that take version i to i + 1); a store written by a newer version is refused with a clear
error rather than misread. A session has a unique name; messages keep their order, role, content, the
model and sampling parameters they were made with, timestamps and token counts."""

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from mistralcli.errors import MistralError
from mistralcli.sqlite_store import VersionedStore, data_dir

# MIGRATIONS[i] takes a store from version i to i + 1
MIGRATIONS: list[list[str]] = [
    [  # 1: sessions and their messages
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            model TEXT,
            system TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            updated REAL NOT NULL
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE INDEX messages_by_session ON messages(session_id, id)",
    ],
    [  # 2: what made each message, and how fast; answers cut short are marked
        "ALTER TABLE messages ADD COLUMN model TEXT",
        "ALTER TABLE messages ADD COLUMN params TEXT",
        "ALTER TABLE messages ADD COLUMN partial INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN prompt_tokens INTEGER",
        "ALTER TABLE messages ADD COLUMN completion_tokens INTEGER",
        "ALTER TABLE messages ADD COLUMN ttft_s REAL",
        "ALTER TABLE messages ADD COLUMN seconds REAL",
    ],
    [  # 3: agent mode's tool calls and results, and a thinking model's thought
        "ALTER TABLE messages ADD COLUMN tool_calls TEXT",
        "ALTER TABLE messages ADD COLUMN tool_call_id TEXT",
        "ALTER TABLE messages ADD COLUMN reasoning TEXT",
        "ALTER TABLE messages ADD COLUMN decode_s REAL",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

# a message's columns but its id, in the order _row writes them and _message reads them (after the id)
_DATA_COLUMNS = (
    "role, content, created, model, params, partial, prompt_tokens, completion_tokens, ttft_s, seconds, "
    "tool_calls, tool_call_id, reasoning, decode_s"
)
_MESSAGE_COLUMNS = f"id, {_DATA_COLUMNS}"
_INSERT = f"INSERT INTO messages (session_id, {_DATA_COLUMNS}) VALUES (?{', ?' * len(_DATA_COLUMNS.split(', '))})"
_UPDATE = f"UPDATE messages SET {', '.join(f'{c} = ?' for c in _DATA_COLUMNS.split(', '))} WHERE id = ?"


def default_store_path() -> Path:
    """sessions.sqlite3 in the user data directory (MISTRALCLI_DATA overrides the directory)."""
    return data_dir() / "sessions.sqlite3"


@dataclass
class Message:
    role: str
    content: str
    id: int | None = None
    created: float = 0.0
    model: str | None = None
    params: dict | None = None
    partial: bool = False  # an answer cut short (stopped, or the chat was killed while it streamed)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    seconds: float | None = None
    tool_calls: list[dict] | None = None  # an assistant's calls, in OpenAI's shape
    tool_call_id: str | None = None  # a tool message: the call it answers
    reasoning: str | None = None  # a thinking model's thought (not sent back to it)
    decode_s: float | None = None  # an answer's time from its first token to its last

    def openai(self) -> dict:
        message = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass
class Session:
    id: int
    name: str
    model: str | None
    system: str | None
    params: dict
    created: float
    updated: float
    messages: list[Message] = field(default_factory=list)

    def conversation(self) -> list[dict]:
        """The messages as a chat template takes them, the system message first."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [m.openai() for m in self.messages]


class SessionStore(VersionedStore):
    MIGRATIONS = MIGRATIONS
    WHAT = "session store"

    def __init__(self, path: Path | str | None = None):
        super().__init__(path if path is not None else default_store_path())

    # ---- sessions
    def create(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        system: str | None = None,
        params: dict | None = None,
    ) -> Session:
        """A new session; without a name, one from the time (chat-YYYYmmdd-HHMMSS, numbered where taken)."""
        now = time.time()
        base = name or time.strftime("chat-%Y%m%d-%H%M%S", time.localtime(now))
        candidate, number = base, 1
        with self._transaction() as db:
            while db.execute("SELECT 1 FROM sessions WHERE name = ?", (candidate,)).fetchone():
                if name is not None:
                    raise MistralError(f"a session named {name!r} exists")
                number += 1
                candidate = f"{base}-{number}"
            cursor = db.execute(
                "INSERT INTO sessions (name, model, system, params, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (candidate, model, system, json.dumps(params or {}), now, now),
            )
        return Session(cursor.lastrowid, candidate, model, system, dict(params or {}), now, now)

    def get(self, name: str) -> Session:
        row = self.db.execute(
            "SELECT id, name, model, system, params, created, updated FROM sessions WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            known = [s.name for s in self.sessions()]
            hint = f" (the sessions: {', '.join(known[:10])})" if known else " (there are none)"
            raise MistralError(f"no session named {name!r}{hint}")
        return self._session(row)

    def last(self) -> Session | None:
        """The session used last, or None."""
        row = self.db.execute(
            "SELECT id, name, model, system, params, created, updated FROM sessions ORDER BY updated DESC, id DESC"
        ).fetchone()
        return self._session(row) if row is not None else None

    def sessions(self) -> list[Session]:
        """Every session, the one used last first (their messages not loaded)."""
        rows = self.db.execute(
            "SELECT id, name, model, system, params, created, updated FROM sessions ORDER BY updated DESC, id DESC"
        ).fetchall()
        return [self._session(row, with_messages=False) for row in rows]

    def count(self, session: Session) -> int:
        return self.db.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?", (session.id,)).fetchone()[0]

    def _session(self, row, with_messages: bool = True) -> Session:
        session = Session(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])
        if with_messages:
            rows = self.db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY id", (row[0],)
            ).fetchall()
            session.messages = [_message(r) for r in rows]
        return session

    def update_session(self, session: Session, **fields) -> None:
        """Set model, system or params (and mark the session used now)."""
        allowed = {"model", "system", "params"}
        if not set(fields) <= allowed:
            raise ValueError(f"a session's {', '.join(sorted(set(fields) - allowed))} cannot be set")
        for key, value in fields.items():
            setattr(session, key, value)
        values = {k: json.dumps(v) if k == "params" else v for k, v in fields.items()}
        session.updated = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as db:
            db.execute(
                f"UPDATE sessions SET {assignments}, updated = ? WHERE id = ?",
                (*values.values(), session.updated, session.id),
            )

    def rename(self, session: Session, name: str) -> None:
        try:
            with self._transaction() as db:
                db.execute("UPDATE sessions SET name = ? WHERE id = ?", (name, session.id))
        except sqlite3.IntegrityError:
            raise MistralError(f"a session named {name!r} exists") from None
        session.name = name

    def copy(self, session: Session, name: str) -> Session:
        """A new session named `name` holding the same settings and messages (/save NAME)."""
        copy = self.create(name, model=session.model, system=session.system, params=session.params)
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO messages (session_id, {_DATA_COLUMNS}) "
                f"SELECT ?, {_DATA_COLUMNS} FROM messages WHERE session_id = ? ORDER BY id",
                (copy.id, session.id),
            )
        return self.get(name)

    def delete(self, name: str) -> None:
        session = self.get(name)
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))

    # ---- messages
    def append(self, session: Session, message: Message) -> Message:
        """Store a message at the end of the session (now); it gets its id."""
        message.created = message.created or time.time()
        with self._transaction() as db:
            cursor = db.execute(
                _INSERT,
                (session.id, *_row(message)),
            )
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (message.created, session.id))
        message.id = cursor.lastrowid
        session.messages.append(message)
        return message

    def update(self, message: Message) -> None:
        """Store the message's content and figures again (an answer as it streams, then when it ends)."""
        with self._transaction() as db:
            db.execute(
                _UPDATE,
                (*_row(message), message.id),
            )

    def drop_from(self, session: Session, message: Message) -> None:
        """Remove this message and every one after it (/undo, /regen)."""
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE session_id = ? AND id >= ?", (session.id, message.id))
        session.messages = [m for m in session.messages if m.id < message.id]

    def clear(self, session: Session) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE session_id = ?", (session.id,))
        session.messages = []


def _row(m: Message) -> tuple:
    params = json.dumps(m.params) if m.params is not None else None
    return (
        m.role,
        m.content,
        m.created,
        m.model,
        params,
        int(m.partial),
        m.prompt_tokens,
        m.completion_tokens,
        m.ttft_s,
        m.seconds,
        json.dumps(m.tool_calls) if m.tool_calls is not None else None,
        m.tool_call_id,
        m.reasoning,
        m.decode_s,
    )


def _message(row) -> Message:
    return Message(
        id=row[0],
        role=row[1],
        content=row[2],
        created=row[3],
        model=row[4],
        params=json.loads(row[5]) if row[5] is not None else None,
        partial=bool(row[6]),
        prompt_tokens=row[7],
        completion_tokens=row[8],
        ttft_s=row[9],
        seconds=row[10],
        tool_calls=json.loads(row[11]) if row[11] is not None else None,
        tool_call_id=row[12],
        reasoning=row[13],
        decode_s=row[14],
    )
