"""A SQLite file in WAL mode whose schema is versioned by `PRAGMA user_version` (the chat sessions, the server's
stored responses): opened with a clear error for a file that is not one, migrated forward on open (MIGRATIONS[i]
takes version i to i + 1), refused when a newer mistralcli wrote it."""

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from mistralcli.errors import MistralError
from mistralcli.paths import APP_NAME


def data_dir() -> Path:
    """The user data directory; MISTRALCLI_DATA overrides it."""
    override = os.environ.get("MISTRALCLI_DATA")
    return Path(override or platformdirs.user_data_dir(APP_NAME))


class VersionedStore:
    MIGRATIONS: list[list[str]] = []
    WHAT = "store"  # in errors: "<path>: cannot open the <WHAT>"

    def __init__(self, path: Path | str, check_same_thread: bool = True):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=check_same_thread)
        except (OSError, sqlite3.Error) as exc:
            raise MistralError(f"{self.path}: cannot open the {self.WHAT} ({exc})") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash of the process loses nothing committed
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise MistralError(f"{self.path}: not a {self.WHAT} ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.db.in_transaction:  # one that Ctrl-C cut between its BEGIN and its end: undone
            self.db.execute("ROLLBACK")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version, latest = self.version, len(self.MIGRATIONS)
        if version > latest:
            raise MistralError(
                f"{self.path}: the {self.WHAT} is version {version}, newer than this mistralcli reads "
                f"({latest}); upgrade mistralcli"
            )
        for target in range(version + 1, latest + 1):
            with self._transaction() as db:
                for statement in self.MIGRATIONS[target - 1]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
