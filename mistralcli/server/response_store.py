"""The Responses API's stored responses, in SQLite (WAL) in the user data directory: each response's body, its
input items, and the conversation it ends (the messages a `previous_response_id` continues), so a conversation
goes on across server restarts. Responses older than the store's time to live are expired."""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mistralcli.sqlite_store import VersionedStore, data_dir

MIGRATIONS: list[list[str]] = [
    [  # 1: responses
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            body TEXT NOT NULL,
            input_items TEXT NOT NULL,
            conversation TEXT NOT NULL
        )""",
        "CREATE INDEX responses_by_age ON responses(created)",
    ],
]
DEFAULT_TTL_S = 30 * 86400  # as long as OpenAI keeps a response
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float | None:
    """A time to live: seconds, or a number with s, m, h or d; "never" (None): kept until deleted. Raises
    ValueError."""
    text = text.strip().lower()
    if text == "never":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration: give seconds, or 30d, 12h, 90m, 45s (or never)")
    return float(match[1]) * _UNITS[match[2] or "s"]


def default_store_path() -> Path:
    return data_dir() / "responses.sqlite3"


@dataclass
class StoredResponse:
    body: dict
    input_items: list[dict]
    conversation: list[dict]  # chat messages, the response's output last (without its instructions)


class ResponseStore(VersionedStore):
    MIGRATIONS = MIGRATIONS
    WHAT = "response store"

    def __init__(self, path: Path | str | None = None, ttl_s: float | None = DEFAULT_TTL_S):
        # the server's event loop is its one user; a background response's end writes from that loop too
        super().__init__(path if path is not None else default_store_path(), check_same_thread=False)
        self.ttl_s = ttl_s
        self.expire()

    def put(self, response_id: str, body: dict, input_items: list[dict], conversation: list[dict]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO responses (id, created, body, input_items, conversation) "
                "VALUES (?, ?, ?, ?, ?)",
                (response_id, time.time(), _dumps(body), _dumps(input_items), _dumps(conversation)),
            )

    def update(self, response_id: str, body: dict, conversation: list[dict] | None = None) -> bool:
        """Rewrite a stored response's body (and conversation); False when it is gone (deleted meanwhile)."""
        with self._transaction() as db:
            if conversation is None:
                cursor = db.execute("UPDATE responses SET body = ? WHERE id = ?", (_dumps(body), response_id))
            else:
                cursor = db.execute(
                    "UPDATE responses SET body = ?, conversation = ? WHERE id = ?",
                    (_dumps(body), _dumps(conversation), response_id),
                )
        return cursor.rowcount == 1

    def get(self, response_id: str) -> StoredResponse | None:
        row = self.db.execute(
            "SELECT body, input_items, conversation, created FROM responses WHERE id = ?", (response_id,)
        ).fetchone()
        if row is None or self._expired(row[3]):
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]), json.loads(row[2]))

    def delete(self, response_id: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount == 1

    def expire(self) -> int:
        """Delete the responses past their time to live; returns how many."""
        if self.ttl_s is None:
            return 0
        with self._transaction() as db:
            return db.execute("DELETE FROM responses WHERE created < ?", (time.time() - self.ttl_s,)).rowcount

    def _expired(self, created: float) -> bool:
        return self.ttl_s is not None and created < time.time() - self.ttl_s


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)
