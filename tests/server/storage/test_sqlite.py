"""SQLite specifics the contract cannot show: which index a statement takes, who checkpoints the WAL,
how a batch that SQLite rolls back is told."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from schnack.server.storage import StorageError
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


def _rows_in_database_file(path: Path) -> int:
    """Archived items in the database file itself, without what its WAL holds (immutable: SQLite
    reads the file alone); none while no checkpoint brought even the schema there."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'archive'").fetchone() is None:
            return 0
        return int(db.execute("SELECT count(*) FROM archive").fetchone()[0])


async def test_commits_leave_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    """The writer's commits never copy the WAL back (SQLite's automatic checkpoint did, every
    1,000 pages, inside the commit that crossed the mark, while its appends waited); the second
    connection does, on its own clock."""
    path = tmp_path / "store.db"
    storage = await SqliteStorage.open(str(path), checkpoint_interval=3600)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema into the file
    try:
        for n in range(500):
            await storage.archive.append("localhost", "bob", "mam", float(n), "alice@localhost", b"<m/>" * 50)
        # 500 commits wrote well over 1,000 pages of WAL, and none of them into the file.
        assert _rows_in_database_file(path) == 0
    finally:
        await storage.close()
    assert _rows_in_database_file(path) == 500  # closing checkpoints what is left

    path = tmp_path / "checkpointed.db"
    storage = await SqliteStorage.open(str(path), checkpoint_interval=0.05)
    try:
        for n in range(500):
            await storage.archive.append("localhost", "bob", "mam", float(n), "alice@localhost", b"<m/>" * 50)
        for _ in range(200):
            if _rows_in_database_file(path) == 500:
                break
            await asyncio.sleep(0.05)
        assert _rows_in_database_file(path) == 500
    finally:
        await storage.close()


async def test_reads_get_their_turn_while_appends_keep_coming(tmp_path: Path) -> None:
    """Appends are committed round after round in the connection's thread while more come; the
    rounds of one trip there stop, so that a read queued behind them is served even while the
    appends never stop."""
    storage = await SqliteStorage.open(str(tmp_path / "store.db"))

    async def append_forever() -> None:
        n = 0
        while True:
            for _ in range(20):
                storage.archive.append_soon("localhost", "bob", "mam", float(n), "alice@x", b"<m/>" * 50)
                n += 1
            await asyncio.sleep(0)

    appenders = [asyncio.create_task(append_forever())]
    try:
        async with asyncio.timeout(60):  # a hang guard, not a measure
            for _ in range(5):
                assert (await storage.accounts.get("localhost", "nobody")) is None
                await asyncio.sleep(0.01)
        assert await storage.archive.count("localhost", "bob", "mam") > 0
    finally:
        for appender in appenders:
            appender.cancel()
        await asyncio.gather(*appenders, return_exceptions=True)
        await storage.close()


async def test_appends_get_their_turn_while_reads_keep_coming(tmp_path: Path) -> None:
    """The other way round: appends are committed while reads keep the connection's queue busy
    (a trip of the appends commits one round at least, whatever waits behind it)."""
    storage = await SqliteStorage.open(str(tmp_path / "store.db"))

    readers: set[asyncio.Task[object]] = set()

    def read(_done: object = None) -> None:
        # A new read as each one ends: 100 always queued.
        reader = asyncio.ensure_future(storage.accounts.get("localhost", "nobody"))
        readers.add(reader)
        reader.add_done_callback(readers.discard)
        reader.add_done_callback(read)

    for _ in range(100):
        read()
    try:
        async with asyncio.timeout(60):  # a hang guard, not a measure
            for n in range(5):
                await storage.archive.append("localhost", "bob", "mam", float(n), "alice@x", b"<m/>")
    finally:
        while readers:
            for reader in list(readers):
                reader.remove_done_callback(read)
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        await storage.close()


@pytest.mark.parametrize("store", ["mam", "offline"])
async def test_a_batch_that_sqlite_rolls_back_fails_whole(tmp_path: Path, store: str) -> None:
    """Some errors make SQLite roll back the whole transaction (a full disk, an I/O error; here a
    trigger's RAISE(ROLLBACK)): then no append of the batch is stored, and each caller is told
    so, also those whose rows went in before the error (they were told stored, and lost)."""
    storage = await SqliteStorage.open(str(tmp_path / "store.db"))
    try:
        await storage.archive.db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON archive WHEN NEW.with_jid = 'rollback@localhost' "
            "BEGIN SELECT RAISE(ROLLBACK, 'refused'); END")
        await storage.archive.db.commit()
        batch = [storage.archive.append_soon("localhost", "bob", store, 1.0, "alice@localhost", b"<m/>"),
                 storage.archive.append_soon("localhost", "bob", store, 2.0, "rollback@localhost", b"<m/>")]
        outcomes = await asyncio.gather(*batch, return_exceptions=True)
        assert all(isinstance(outcome, StorageError) for outcome in outcomes), outcomes
        assert (await storage.archive.query("localhost", "bob", store)).items == []
        assert await storage.archive.count("localhost", "bob", store) == 0
        stored = await storage.archive.append("localhost", "bob", store, 3.0, "alice@localhost", b"<m/>")
        assert [item.id for item in (await storage.archive.query("localhost", "bob", store)).items] == [stored]
        assert await storage.archive.count("localhost", "bob", store) == 1
    finally:
        await storage.close()
