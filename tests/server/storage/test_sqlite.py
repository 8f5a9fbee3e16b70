"""SQLite specifics the contract cannot show: which index a statement takes, who checkpoints the WAL,
what its migrations keep, how a rolled-back batch is told, and that no call leaves a transaction
open for the next trip to the connection's thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from schnack.server.storage import AlreadyExists, ArchivePage, RosterItem, StorageError
from schnack.server.storage import sqlite as sqlite_backend
from schnack.server.storage.base import RoomAffiliation
from schnack.server.storage.sqlite import Deleted, SqliteStorage
from schnack.xmpp.sasl import derive_credentials

from .conftest import rewind_sqlite_archive, write_locked


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
    so, also those whose rows went in before the error (they were told stored, and lost). The
    archive's number given out in that transaction is gone with it: the next append gets one
    that exists."""
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


_ARCHIVES = [("localhost", f"user{n}", "mam") for n in range(3)] + [
    ("localhost", "user0", "offline"), ("other.localhost", "user0", "mam"), ("rooms.localhost", "lounge", "muc")]


async def _archives_seen(storage: SqliteStorage) -> list[object]:
    """What each archive shows: its items in order, a page by contact, a page after an id, its count
    (without the items' resources, which the schema the archive is taken back to has not)."""
    seen: list[object] = []
    for host, username, store in _ARCHIVES:
        page = await storage.archive.query(host, username, store)
        seen += [_unresourced(page), await storage.archive.count(host, username, store),
                 _unresourced(await storage.archive.query(host, username, store, with_jid="peer1@localhost", limit=2))]
        if page.items:
            seen.append(_unresourced(await storage.archive.query(host, username, store, after=page.items[0].id,
                                                                 limit=3)))
    return seen


def _unresourced(page: ArchivePage) -> ArchivePage:
    return ArchivePage([dataclasses.replace(item, resource=None) for item in page.items], page.complete, page.count)


def _seq(path: Path, item_id: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT seq FROM archive WHERE id=?", (item_id,)).fetchone()[0])


async def test_archives_numbered_keep_what_they_held(tmp_path: Path) -> None:
    """Migration 0005 gives each archive a number and moves its rows over: items, their order,
    ids, pages and counts are what they were, and the item counter goes on past a deleted last
    item (its seq is not handed out again)."""
    path = tmp_path / "store.db"
    storage = await SqliteStorage.open(str(path))
    try:
        for n in range(60):
            host, username, store = _ARCHIVES[n % len(_ARCHIVES)]
            await storage.archive.append(host, username, store, float(n), f"peer{n % 4}@localhost", f"<m n='{n}'/>".encode())
        deleted = await storage.archive.append("localhost", "user1", "mam", 99.0, "peer1@localhost", b"<m/>")
        deleted_seq = _seq(path, deleted)
        assert await storage.archive.delete("localhost", "user1", "mam", ids=[deleted]) == 1
        before = await _archives_seen(storage)
    finally:
        await storage.close()
    rewind_sqlite_archive(str(path))
    storage = await SqliteStorage.open(str(path))
    try:
        assert await _archives_seen(storage) == before
        later = await storage.archive.append("localhost", "user1", "mam", 100.0, "peer1@localhost", b"<m/>")
        assert _seq(path, later) > deleted_seq
        last = (await storage.archive.query("localhost", "user1", "mam")).items[-2].id
        assert [item.id for item in (await storage.archive.query("localhost", "user1", "mam", after=last)).items] == [later]
    finally:
        await storage.close()


async def test_an_account_deleted_and_made_again_gets_an_archive_of_its_own(tmp_path: Path) -> None:
    """Deleting an account deletes its archives' numbers with their items (nothing of it is left);
    the writer, which keeps numbers it gave out, gives a new account of the same name a new one,
    and what it appends is found."""
    path = tmp_path / "store.db"
    storage = await SqliteStorage.open(str(path))
    try:
        await storage.accounts.create("localhost", "bob", {})
        await storage.archive.append("localhost", "bob", "mam", 1.0, "alice@localhost", b"<m/>")
        await storage.archive.append("localhost", "bob", "offline", 1.0, "alice@localhost", b"<m/>")
        assert await storage.accounts.delete("localhost", "bob")
        with contextlib.closing(sqlite3.connect(path)) as db:
            for table in ("archive", "archive_owners", "archive_counts"):
                assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        await storage.accounts.create("localhost", "bob", {})
        again = await storage.archive.append("localhost", "bob", "mam", 2.0, "alice@localhost", b"<m/>")
        assert [item.id for item in (await storage.archive.query("localhost", "bob", "mam")).items] == [again]
    finally:
        await storage.close()


async def test_a_migration_cut_short_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """A migration that fails halfway (here 0005, on a table of that name someone left) is
    undone whole with its version: opening fails, the archive is what it was, and once the
    cause is gone the next open migrates."""
    path = tmp_path / "store.db"
    storage = await SqliteStorage.open(str(path))
    try:
        item = await storage.archive.append("localhost", "bob", "mam", 1.0, "alice@localhost", b"<m/>")
    finally:
        await storage.close()
    rewind_sqlite_archive(str(path))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE archive_by_owner (x)")  # 0005 makes archive_owners first, then this
    with pytest.raises(StorageError, match="archive_by_owner already exists"):
        await SqliteStorage.open(str(path))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 4  # 0004 went through
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'archive_owners'").fetchone() is None
        db.execute("DROP TABLE archive_by_owner")
    storage = await SqliteStorage.open(str(path))
    try:
        assert [found.id for found in (await storage.archive.query("localhost", "bob", "mam")).items] == [item]
    finally:
        await storage.close()


def test_deleted_accounts_are_remembered_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long enough for what was on its way to them, and then no longer: the writers go back to
    checking nothing."""
    deleted = Deleted()
    assert not deleted.any()
    deleted.add("localhost", "alice")
    assert deleted.any()
    monkeypatch.setattr(sqlite_backend, "DELETED_FOR", 0.0)
    assert not deleted.any()


async def test_no_call_leaves_a_transaction_open_for_the_next_trip(tmp_path: Path) -> None:
    """Each call's writes are one transaction in one trip to the connection's thread. One left
    open between two trips took in whatever trip came between them, another caller's: an archive
    round that failed there rolled back a roster removal already reported done."""
    storage = await SqliteStorage.open(str(tmp_path / "store.db"))
    db = storage.archive.db
    execute = db._execute
    left_open: list[str] = []

    async def watched(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def trip() -> Any:
            result = fn(*args, **kwargs)
            if db._conn.in_transaction:
                left_open.append(repr(fn))
            return result

        return await execute(trip)

    db._execute = watched  # type: ignore[method-assign]
    try:
        await storage.accounts.create("localhost", "alice", derive_credentials("x"))
        with pytest.raises(AlreadyExists):
            await storage.accounts.create("localhost", "alice", derive_credentials("x"))
        await storage.roster.set_item("localhost", "alice", RosterItem("bob@localhost"))
        assert await storage.roster.remove_item("localhost", "alice", "bob@localhost") == 2
        assert await storage.roster.remove_item("localhost", "alice", "bob@localhost") == 2
        assert await storage.roster.get("localhost", "alice") == (2, {})
        await storage.kv.set("localhost", "alice", "vcard", b"card")
        await storage.maps.set("localhost", "alice", "private", "key", b"value")
        await storage.muc.save_room("muc.localhost", "room", "{}")
        await storage.muc.set_affiliation("muc.localhost", "room", RoomAffiliation("alice@localhost", "owner"))
        assert await storage.muc.delete_room("muc.localhost", "room")
        assert await storage.muc.rooms_of("alice@localhost") == []
        await storage.archive.append("localhost", "alice", "mam", 1.0, "bob@localhost", b"<m/>")
        assert await storage.archive.delete("localhost", "alice", "mam") == 1
        assert await storage.accounts.delete("localhost", "alice")
        assert left_open == []
    finally:
        del db._execute
        await storage.close()



async def test_a_write_held_up_past_the_busy_timeout_fails_with_a_storage_error(tmp_path: Path) -> None:
    """SQLite's own failures ('database is locked' once the busy timeout is over, a read-only or
    full disk) are StorageError, as PostgreSQL's are, whatever the call: callers tell a client to
    try again and try again themselves. Once the lock is gone the same calls succeed."""
    path = tmp_path / "store.db"
    storage = await SqliteStorage.open(str(path))
    # The default busy timeout is 5 s a call; the failure is the same after a shorter one.
    await storage.kv.db.execute("PRAGMA busy_timeout=50")
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "account": lambda: storage.accounts.create("localhost", "alice", derive_credentials("x")),
        "kv": lambda: storage.kv.set("localhost", "alice", "vcard", b"card"),
        "map": lambda: storage.maps.set("localhost", "alice", "private", "key", b"value"),
        "roster": lambda: storage.roster.set_item("localhost", "alice", RosterItem("bob@localhost")),
        "room": lambda: storage.muc.save_room("muc.localhost", "room", "{}"),
        "archive": lambda: storage.archive.append("localhost", "alice", "mam", 1.0, "bob@localhost", b"<m/>"),
    }
    try:
        with write_locked(path):
            for name, call in calls.items():
                with pytest.raises(StorageError, match=r"^SQLite: database is locked"):
                    await call()
                    pytest.fail(f"{name} was written behind another connection's lock")
        for call in calls.values():
            await call()
        assert await storage.kv.get("localhost", "alice", "vcard") == b"card"
        assert await storage.accounts.delete("localhost", "alice")
    finally:
        await storage.close()


async def test_a_store_that_cannot_be_opened_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    """As for PostgreSQL, one line that says where and why, for ``schnack serve`` and the admin
    commands to print."""
    path = tmp_path / "missing" / "store.db"
    with pytest.raises(StorageError, match=rf"^cannot open the SQLite database at {path}: unable to open"):
        await SqliteStorage.open(str(path))


async def test_processes_creating_a_store_together_all_open_it(tmp_path: Path) -> None:
    """A server and an admin command (or the nodes of a test) that create a store at the same
    moment: turning it to WAL met another connection doing the same, and SQLite refused at once,
    without its busy timeout. Each round is a new file, as only a new store is turned to WAL."""
    for attempt in range(20):
        path = str(tmp_path / f"store{attempt}.db")
        opened = await asyncio.gather(*(SqliteStorage.open(path) for _ in range(4)), return_exceptions=True)
        for store in opened:
            if isinstance(store, SqliteStorage):
                await store.close()
        assert all(isinstance(store, SqliteStorage) for store in opened), opened
