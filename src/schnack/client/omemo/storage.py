"""Where python-omemo keeps an account's OMEMO state: one SQLite file of JSON values by key.

The identity key, the pre keys, the sessions with every device and the trust decisions are all
in it, so the file is created readable by its owner only. python-omemo stores a few dozen small
values per message (sessions, counters, device data) and requires every write to be done before
the call returns. Each is a statement on the one connection, which reads its own writes at
once; :meth:`SqliteStorage.transaction` groups those of one operation (an encryption, a
decryption) into one commit, so that a process killed in the middle leaves the state of before
the operation rather than half of it. The database is in WAL mode with ``synchronous=NORMAL``:
a commit survives the process being killed and costs microseconds, less than handing the
writes to a thread would.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import JSONType

FILENAME = "omemo.sqlite"


class SqliteStorage(Storage):
    """python-omemo's key-value storage in ``<directory>/omemo.sqlite``; in memory without a directory."""

    def __init__(self, directory: Path | None) -> None:
        super().__init__()
        if directory is None:
            self.path: Path | None = None
            self._db = sqlite3.connect(":memory:", isolation_level=None)
        else:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path = directory / FILENAME
            # Created with owner-only permissions before SQLite opens it: the WAL and shared-memory
            # files SQLite makes next to it take the same permissions.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS omemo (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    async def _load(self, key: str) -> Maybe[JSONType]:
        row = self._db.execute("SELECT value FROM omemo WHERE key = ?", (key,)).fetchone()
        if row is None:
            return Nothing()
        value: JSONType = json.loads(row[0])
        return Just(value)

    async def _store(self, key: str, value: JSONType) -> None:
        self._db.execute("INSERT OR REPLACE INTO omemo (key, value) VALUES (?, ?)",
                         (key, json.dumps(value, separators=(",", ":"))))

    async def _delete(self, key: str) -> None:
        self._db.execute("DELETE FROM omemo WHERE key = ?", (key,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for the writes of the block. Committed even when the block fails: python-omemo
        keeps what it wrote in its cache, and the file must not disagree with it."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
