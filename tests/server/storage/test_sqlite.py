"""SQLite specifics the contract cannot show: which index a statement takes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from schnack.server.storage.sqlite import SqliteStorage


async def test_deleting_archived_items_by_id_reads_them_by_id(tmp_path: Path) -> None:
    """Delivering offline messages deletes them page by page by id: on the per-account index
    SQLite would read the account's whole store for each page (a 10,000-message drain took
    twice as long)."""
    path = tmp_path / "store.db"
    storage = await SqliteStorage.open(str(path))
    statements: list[str] = []
    try:
        ids = [await storage.archive.append("localhost", "bob", "offline", float(n), "alice@localhost", b"<m/>")
               for n in range(300)]
        await storage.archive.db.set_trace_callback(statements.append)
        assert await storage.archive.delete("localhost", "bob", "offline", ids=ids[:100]) == 100
    finally:
        await storage.close()
    # The trace repeats the statement for each row the count trigger runs on: the first is the delete.
    delete = next(sql for sql in statements if sql.startswith("DELETE FROM archive"))
    with sqlite3.connect(path) as db:
        plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {delete}"))
    assert "archive_by_" not in plan, plan
    assert "INDEX sqlite_autoindex_archive_1 (id=?)" in plan, plan
