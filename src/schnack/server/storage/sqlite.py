"""SQLite storage (the embedded default): one connection, WAL checkpointed by a second one, migrations
applied at open."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import aiosqlite

from .base import (
    BOUNDED_STORES,
    DELETED_FOR,
    Account,
    AccountGone,
    AlreadyExists,
    Appending,
    ArchivedItem,
    ArchiveFull,
    ArchivePage,
    DuplicateItem,
    ItemNotFound,
    QueuedAppends,
    RoomAffiliation,
    RosterItem,
    Row,
    ScramCredential,
    StorageError,
    StoredRoom,
    check_names,
    credentials_from_json,
    credentials_to_json,
)  # fmt: skip

T = TypeVar("T")


def _failed(err: sqlite3.Error) -> StorageError:
    """SQLite's error as the StorageError callers handle (as PostgreSQL's are): 'database is
    locked' once the busy timeout is over, a read-only file, a full disk, an I/O error."""
    return StorageError(f"SQLite: {err}")


async def _in_thread(db: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` on the connection in its own thread, as one trip there; SQLite's errors
    become StorageError.

    Every call goes through here. Every trip to aiosqlite's thread and back costs far more than
    the statements of a message (a wake-up of that thread, one of the event loop, and the GIL
    changing hands each time), so a write and its commit go in one. aiosqlite has no public call
    for several statements: ``_execute`` is what its public calls queue their work with (the same
    since 0.17).
    """
    try:
        return await db._execute(lambda: work(db._conn))  # type: ignore[no-untyped-call,no-any-return]
    except sqlite3.Error as err:
        raise _failed(err) from err


async def _connect(path: str) -> aiosqlite.Connection:
    """A connection to the store at ``path``. One that fails returns only once aiosqlite's thread
    has ended: the thread then still tells the event loop it stopped, and a command that fails
    at once (``schnack admin``) would have closed that loop, with a traceback from the thread."""
    connection = aiosqlite.connect(path)
    try:
        return await connection
    except Exception:
        await asyncio.to_thread(connection._thread.join)
        raise


def _committed(work: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``work`` as one transaction, for a trip to the connection's thread: its statements
    committed, or rolled back if it raises.

    No trip leaves a transaction open behind it: one left open would take in the statements of
    whatever trip runs next, for another caller (an archive round), and be committed or rolled
    back with them.
    """

    def transaction(conn: sqlite3.Connection) -> T:
        try:
            result = work(conn)
            conn.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
        return result

    return transaction


def _queued(db: aiosqlite.Connection) -> Callable[[], bool]:
    """Whether work waits on the connection's queue (aiosqlite's ``_tx``, the same since 0.17)."""
    tx = db._tx
    return lambda: not tx.empty()


class _Part:
    def __init__(self, db: aiosqlite.Connection, deleted: Deleted) -> None:
        self.db = db
        self._deleted = deleted

    # A read is one trip to the connection's thread (a cursor's execute, fetch and close would be
    # three): each trip costs more than the lookup by key that most reads are.
    async def _one(self, sql: str, *args: Any) -> Any:
        return await _in_thread(self.db, lambda conn: conn.execute(sql, args).fetchone())

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        return await _in_thread(self.db, lambda conn: conn.execute(sql, args).fetchall())

    async def _write(self, sql: str, *args: Any, account: tuple[str, str] | None = None) -> int:
        """Run a statement and commit, in one trip; the number of rows it touched. With
        ``account`` (host, username), a write of what that account keeps: refused with
        AccountGone while it is one deleted lately that does not exist (see :class:`Deleted`)."""
        deleted = self._deleted

        def write(conn: sqlite3.Connection) -> int:
            if account is not None:
                deleted.check(conn, *account)
            return conn.execute(sql, args).rowcount

        return await _in_thread(self.db, _committed(write))


class Accounts(_Part):
    def __init__(self, db: aiosqlite.Connection, deleted: Deleted, owners: Owners) -> None:
        super().__init__(db, deleted)
        self._owners = owners

    async def create(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> None:
        row = (host, username, credentials_to_json(credentials), time.time())

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", row)
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"{username}@{host} exists") from None

        await _in_thread(self.db, _committed(insert))

    async def get(self, host: str, username: str) -> Account | None:
        row = await self._one("SELECT credentials, created FROM accounts WHERE host=? AND username=?", host, username)
        return Account(host, username, credentials_from_json(row[0]), row[1]) if row else None

    async def set_credentials(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> bool:
        return await self._write("UPDATE accounts SET credentials=? WHERE host=? AND username=?",
                                 credentials_to_json(credentials), host, username) > 0

    async def delete(self, host: str, username: str) -> bool:
        """Delete the account and everything it keeps, in one transaction."""
        key = (host, username)

        def delete(conn: sqlite3.Connection) -> bool:
            try:
                for table in ("roster", "roster_versions", "kv", "maps"):
                    conn.execute(f"DELETE FROM {table} WHERE host=? AND username=?", key)
                conn.execute("DELETE FROM archive WHERE owner IN "
                             "(SELECT owner FROM archive_owners WHERE host=? AND username=?)", key)
                conn.execute("DELETE FROM archive_owners WHERE host=? AND username=?", key)
                gone = conn.execute("DELETE FROM accounts WHERE host=? AND username=?", key).rowcount > 0
                conn.commit()
            except BaseException:
                self._owners.roll_back(conn)
                raise
            self._owners.forget()  # the account's archive numbers are gone
            self._deleted.add(host, username)
            return gone

        return await _in_thread(self.db, delete)

    async def list(self, host: str) -> list[str]:
        return [r[0] for r in await self._all("SELECT username FROM accounts WHERE host=? ORDER BY username", host)]


def _item(row: Any) -> RosterItem:
    return RosterItem(row[0], row[1], row[2], bool(row[3]), bool(row[4]), tuple(json.loads(row[5])))


_BUMP = ("INSERT INTO roster_versions VALUES (?, ?, 1) ON CONFLICT (host, username) "
         "DO UPDATE SET version = version + 1 RETURNING version")


def _version(conn: sqlite3.Connection, host: str, username: str) -> int:
    row = conn.execute("SELECT version FROM roster_versions WHERE host=? AND username=?", (host, username)).fetchone()
    return int(row[0]) if row else 0


class Roster(_Part):
    async def get(self, host: str, username: str) -> tuple[int, dict[str, RosterItem]]:
        def read(conn: sqlite3.Connection) -> tuple[int, dict[str, RosterItem]]:
            """The items and their version in one trip, so that no change comes between them (a
            client caching the items under that version would miss it for good, RFC 6121 §2.6)."""
            rows = conn.execute("SELECT jid, name, subscription, ask, approved, groups FROM roster "
                                "WHERE host=? AND username=?", (host, username)).fetchall()
            return _version(conn, host, username), {r[0]: _item(r) for r in rows}

        return await _in_thread(self.db, read)

    async def get_item(self, host: str, username: str, jid: str) -> RosterItem | None:
        row = await self._one("SELECT jid, name, subscription, ask, approved, groups FROM roster "
                              "WHERE host=? AND username=? AND jid=?", host, username, jid)
        return _item(row) if row else None

    async def set_item(self, host: str, username: str, item: RosterItem) -> int:
        check_names(host, username, item.jid)
        deleted = self._deleted
        values = (host, username, item.jid, item.name, item.subscription, int(item.ask), int(item.approved),
                  json.dumps(list(item.groups)))

        def write(conn: sqlite3.Connection) -> int:
            """The item and the version it makes, in one transaction (and one trip)."""
            deleted.check(conn, host, username)
            conn.execute("INSERT OR REPLACE INTO roster VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
            return int(conn.execute(_BUMP, (host, username)).fetchone()[0])

        return await _in_thread(self.db, _committed(write))

    async def remove_item(self, host: str, username: str, jid: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            """The removal and the version it makes (the same if there was no such item), in one
            transaction (and one trip)."""
            if conn.execute("DELETE FROM roster WHERE host=? AND username=? AND jid=?", (host, username, jid)).rowcount:
                return int(conn.execute(_BUMP, (host, username)).fetchone()[0])
            return _version(conn, host, username)

        return await _in_thread(self.db, _committed(write))


class KeyValue(_Part):
    async def get(self, host: str, username: str, store: str) -> bytes | None:
        row = await self._one("SELECT value FROM kv WHERE host=? AND username=? AND store=?", host, username, store)
        return bytes(row[0]) if row else None

    async def set(self, host: str, username: str, store: str, value: bytes | None) -> None:
        if value is None:
            await self._write("DELETE FROM kv WHERE host=? AND username=? AND store=?", host, username, store)
        else:
            check_names(host, username, store)
            await self._write("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)", host, username, store, value,
                              account=(host, username))

    async def set_default(self, host: str, username: str, store: str, value: bytes) -> bytes:
        check_names(host, username, store)
        deleted = self._deleted

        def write(conn: sqlite3.Connection) -> bytes:
            deleted.check(conn, host, username)
            conn.execute("INSERT OR IGNORE INTO kv VALUES (?, ?, ?, ?)", (host, username, store, value))
            row = conn.execute("SELECT value FROM kv WHERE host=? AND username=? AND store=?",
                               (host, username, store)).fetchone()
            return bytes(row[0])

        return await _in_thread(self.db, _committed(write))

    async def replace(self, host: str, username: str, store: str, old: bytes, new: bytes) -> bool:
        return await self._write("UPDATE kv SET value=? WHERE host=? AND username=? AND store=? AND value=?",
                                 new, host, username, store, old) == 1

    async def delete(self, host: str, username: str, store: str) -> None:
        await self.set(host, username, store, None)

    async def delete_if(self, host: str, username: str, store: str, value: bytes) -> bool:
        return await self._write("DELETE FROM kv WHERE host=? AND username=? AND store=? AND value=?",
                                 host, username, store, value) == 1


class Maps(_Part):
    async def get(self, host: str, username: str, store: str, key: str) -> bytes | None:
        row = await self._one("SELECT value FROM maps WHERE host=? AND username=? AND store=? AND key=?",
                              host, username, store, key)
        return bytes(row[0]) if row else None

    async def set(self, host: str, username: str, store: str, key: str, value: bytes | None) -> None:
        await self.set_many(host, username, store, {key: value})

    async def set_many(self, host: str, username: str, store: str, changes: Mapping[str, bytes | None]) -> None:
        for key, value in changes.items():
            if value is not None:
                check_names(host, username, store, key)
        deleted = self._deleted

        def write(conn: sqlite3.Connection) -> None:
            if any(value is not None for value in changes.values()):
                deleted.check(conn, host, username)
            for key, value in changes.items():
                if value is None:
                    conn.execute("DELETE FROM maps WHERE host=? AND username=? AND store=? AND key=?",
                                 (host, username, store, key))
                else:
                    conn.execute("INSERT OR REPLACE INTO maps VALUES (?, ?, ?, ?, ?)",
                                 (host, username, store, key, value))

        await _in_thread(self.db, _committed(write))

    async def delete_if(self, host: str, username: str, store: str, key: str, value: bytes) -> bool:
        return await self._write("DELETE FROM maps WHERE host=? AND username=? AND store=? AND key=? AND value=?",
                                 host, username, store, key, value) == 1

    async def delete_all(self, host: str, username: str, store: str) -> None:
        await self._write("DELETE FROM maps WHERE host=? AND username=? AND store=?", host, username, store)

    async def items(self, host: str, username: str, store: str) -> dict[str, bytes]:
        rows = await self._all("SELECT key, value FROM maps WHERE host=? AND username=? AND store=?",
                               host, username, store)
        return {r[0]: bytes(r[1]) for r in rows}


# The most items within a time range that a query reads in the time index to find the range's
# first and last seq. Over a wider range it reads in archive order from its 'after' id or from the
# archive's start, skipping what is out of the range: that costs the skipping, not the range.
_SPAN_PROBE = 2000


# Rows and indexes name an archive by its number in archive_owners (migration 0005). Reads find
# it by this subquery, which SQLite runs once per statement; no archive, no number: no rows.
_OWNER = "(SELECT owner FROM archive_owners WHERE host=? AND username=? AND store=?)"
_APPEND = "INSERT INTO archive (id, owner, timestamp, with_jid, payload, with_resource) VALUES (?, ?, ?, ?, ?, ?)"
_PUT_BACK = ("INSERT INTO archive (seq, id, owner, timestamp, with_jid, payload, with_resource) "
             "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


# The terms that take a query with a resource (ArchiveStore.query) to each index: those appended
# with it (the '' spelled out lets SQLite use the partial index), and those archived before
# resources were kept.
_RESOURCE = "AND with_resource=? AND with_resource<>''"
_UNRESOURCED = "AND with_resource IS NULL"


def _seq_of(row: Any) -> int:
    return int(row[4])


def _count_sql(store: str, owner: str = "?") -> str:
    """How many items an archive of ``store`` holds, given its number (``owner``, a parameter or
    SQL that finds it): kept for BOUNDED_STORES (by the appends below, and by a trigger on
    deletion), else counted."""
    if store in BOUNDED_STORES:
        return f"coalesce((SELECT items FROM archive_counts WHERE owner={owner}), 0)"
    return f"(SELECT count(*) FROM archive WHERE owner={owner})"


@functools.cache
def _append_bounded(store: str) -> str:
    """An append to an archive of ``store`` only while it holds fewer items than the limit
    parameter (the rows appended before it in the transaction count), or when the last
    parameter, its id, is taken already: then the unique id refuses it as a duplicate, which
    tells the caller that the item is stored, as a full archive would not."""
    return (f"INSERT INTO archive (id, owner, timestamp, with_jid, payload, with_resource) SELECT ?, ?, ?, ?, ?, ? "
            f"WHERE {_count_sql(store)} < ? OR EXISTS (SELECT 1 FROM archive WHERE id = ?)")


# Counting an append here rather than by a trigger spares the appends to other archives (the
# message archives, one or two per message) running the trigger's check for every row.
_COUNT_ADDED = "INSERT INTO archive_counts VALUES (?, 1) ON CONFLICT (owner) DO UPDATE SET items = items + 1"
# Rows appended by one statement: sqlite3 lets other threads have the GIL while a statement
# runs, and waits to get it back after it, up to the switch interval when the event loop is busy
# (5 ms). One INSERT of many rows waits once where executemany waited once per row.
_ROWS_PER_INSERT = 200


@functools.cache
def _append_rows(count: int) -> str:
    return _APPEND + ", (?, ?, ?, ?, ?, ?)" * (count - 1)


# Appends committed together at most.
_BATCH_MAX = 1000
# Archive numbers the writer keeps at most: two or three per account that gets messages. Past it
# the writer starts over, and looks each up again (by the unique index) as it next needs it.
_OWNERS_KEPT = 20_000
# The most accounts deleted lately (DELETED_FOR) that the writer keeps.
_GONE_KEPT = 1000


class Deleted:
    """The accounts deleted lately, as the connection's thread deleted them; used only there.

    A message routed to an account just before its deletion may come to be written after it: an
    archive append that was queued, a contact's subscription request, a roster change that a
    contact's presence made. Written then, it would wait for whoever next registers the same
    name (with accounts by phone number, someone else). So what an account deleted lately keeps
    is not written while the account does not exist (AccountGone).
    """

    def __init__(self) -> None:
        # When each was deleted (time.monotonic()), oldest first.
        self._when: dict[tuple[str, str], float] = {}

    def any(self) -> bool:
        """Whether an account was deleted lately (else nothing can be refused)."""
        since = time.monotonic() - DELETED_FOR
        while self._when and next(iter(self._when.values())) < since:
            del self._when[next(iter(self._when))]
        return bool(self._when)

    def add(self, host: str, username: str) -> None:
        """The account's data is deleted (and committed)."""
        self._when.pop((host, username), None)
        self._when[host, username] = time.monotonic()
        if len(self._when) > _GONE_KEPT:
            del self._when[next(iter(self._when))]

    def check(self, conn: sqlite3.Connection, host: str, username: str) -> None:
        """Raise AccountGone if (host, username) is an account deleted lately that does not
        exist; one registered again is taken off the list."""
        if not self.any() or (host, username) not in self._when:
            return
        if not conn.execute("SELECT 1 FROM accounts WHERE host=? AND username=?", (host, username)).fetchone():
            raise AccountGone(f"the account {username}@{host} is deleted")
        del self._when[host, username]


class Owners:
    """The numbers of the archives (migration 0005), as the connection's thread has looked them
    up or given them out; used only in that thread.

    A number given out in a transaction that is rolled back does not exist: whoever rolls back
    does so through :meth:`roll_back`, and whoever deletes archive_owners rows calls
    :meth:`forget`. An archive of an account deleted lately gets no new number while the account
    does not exist (:class:`Deleted`).
    """

    def __init__(self, deleted: Deleted) -> None:
        self._numbers: dict[tuple[str, str, str], int] = {}
        self.deleted = deleted

    def number(self, conn: sqlite3.Connection, host: str, username: str, store: str) -> int:
        """The archive's number, given out now if it has none yet (in the open transaction).
        Raises AccountGone for an archive of an account deleted lately that does not exist."""
        key = (host, username, store)
        owner = self._numbers.get(key)
        if owner is None:
            row = conn.execute("SELECT owner FROM archive_owners WHERE host=? AND username=? AND store=?", key).fetchone()
            if row is None:
                self.deleted.check(conn, host, username)
                row = conn.execute("INSERT INTO archive_owners (host, username, store) VALUES (?, ?, ?) RETURNING owner",
                                   key).fetchone()
            if len(self._numbers) >= _OWNERS_KEPT:
                self._numbers.clear()
            owner = self._numbers[key] = int(row[0])
        return owner

    def forget(self) -> None:
        self._numbers.clear()

    def roll_back(self, conn: sqlite3.Connection) -> None:
        """Roll the open transaction back (a failure to do so leaves the error at hand to the
        caller) and forget the numbers it may have given out."""
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        self.forget()


def _stored(conn: sqlite3.Connection, owners: Owners, row: Row) -> tuple[Any, ...]:
    """``row`` as the archive table holds it: its archive's number instead of the three strings.
    A number given out here is in the transaction from then on: an error in doing so fails the
    batch, and a statement's error that rolls the transaction back is seen by ``_check_kept``."""
    item_id, host, username, store, timestamp, with_jid, payload, resource = row
    return item_id, owners.number(conn, host, username, store), timestamp, with_jid, payload, resource


def insert_unbounded(conn: sqlite3.Connection, owners: Owners, appends: list[tuple[Row, int | None]]) -> int:
    """Insert ``appends`` in statements of many rows; how many of them are in. A statement is
    refused whole, and none after it is tried."""
    for start in range(0, len(appends), _ROWS_PER_INSERT):
        rows = appends[start:start + _ROWS_PER_INSERT]
        values = [value for row, _limit in rows for value in _stored(conn, owners, row)]
        opened = conn.in_transaction
        try:
            conn.execute(_append_rows(len(rows)), values)
        except sqlite3.Error:
            _check_kept(conn, opened)
            return start
    return len(appends)


def _check_kept(conn: sqlite3.Connection, opened: bool) -> None:
    """After a statement failed: raise if SQLite rolled back the transaction that was open before
    it (as it may on a full disk, an I/O error, or lack of memory), and with it the rows inserted
    earlier, which must not be reported stored."""
    if opened and not conn.in_transaction:
        raise StorageError("the transaction was rolled back")


def _numbered(conn: sqlite3.Connection, owners: Owners, appends: list[tuple[Row, int | None]],
              failed: dict[int, Exception]) -> list[int]:
    """The places in ``appends`` of those whose archives have a number now; the others (of
    accounts deleted meanwhile) go to ``failed``."""
    kept = []
    for place, (row, _limit) in enumerate(appends):
        try:
            owners.number(conn, row[1], row[2], row[3])
        except AccountGone as err:
            failed[place] = err
        else:
            kept.append(place)
    return kept


def _insert(conn: sqlite3.Connection, owners: Owners, appends: list[tuple[Row, int | None]]) -> dict[int, Exception]:
    """Insert ``appends`` and commit them; those refused, by their place in ``appends`` (two
    may have one id, and only the second is a duplicate), with why."""
    failed: dict[int, Exception] = {}
    places = _numbered(conn, owners, appends, failed) if owners.deleted.any() else list(range(len(appends)))
    # Rows with a limit or a count go one by one, to learn which were refused and to count them;
    # the others in as few statements as can be.
    start = 0
    kept = [appends[place] for place in places]
    if all(limit is None and row[3] not in BOUNDED_STORES for row, limit in kept):
        start = insert_unbounded(conn, owners, kept)
        if start == len(kept):
            conn.commit()
            return failed
    for place in places[start:]:
        row, limit = appends[place]
        stored = _stored(conn, owners, row)
        opened = conn.in_transaction
        counted = row[3] in BOUNDED_STORES
        if counted:
            # The item and its count are two statements, and SQLite takes back only the one
            # that fails: a savepoint takes the item back should its count fail. It goes in a
            # transaction begun first: one it began itself, its release would commit.
            if not opened:
                conn.execute("BEGIN")
            conn.execute("SAVEPOINT item")
        try:
            if limit is None:
                appended = conn.execute(_APPEND, stored).rowcount > 0
            else:
                appended = conn.execute(_append_bounded(row[3]), (*stored, stored[1], limit, row[0])).rowcount > 0
            if not appended:
                failed[place] = ArchiveFull(f"{row[2]}@{row[1]}: {row[3]} holds {limit} items already")
            elif counted:
                conn.execute(_COUNT_ADDED, (stored[1],))
        except sqlite3.IntegrityError as err:
            _take_back(conn, opened, counted)
            failed[place] = (DuplicateItem if "archive.id" in str(err) else StorageError)(f"SQLite: {err}")
        except Exception as err:
            _take_back(conn, opened, counted)
            failed[place] = StorageError(f"SQLite: {err}")
        if counted and conn.in_transaction:
            conn.execute("RELEASE item")
    conn.commit()
    return failed


def _take_back(conn: sqlite3.Connection, opened: bool, counted: bool) -> None:
    """After a statement of one append failed: what it wrote is taken back, to its savepoint if
    it has one (``counted``); see :func:`_check_kept`."""
    _check_kept(conn, opened)
    if counted and conn.in_transaction:
        conn.execute("ROLLBACK TO item")


def _settle(batch: list[Appending], failed: dict[int, Exception]) -> None:
    """Tell each caller of ``batch`` its own outcome (on the event loop)."""
    for place, (row, _limit, done) in enumerate(batch):
        if done.done():
            continue
        error = failed.get(place)
        if error is None:
            done.set_result(row[0])
        else:
            done.set_exception(error)


def _fail(batch: list[Appending], err: BaseException) -> None:
    """Tell each caller of ``batch`` that its commit failed (on the event loop)."""
    for _row, _limit, done in batch:
        if not done.done():
            done.set_exception(StorageError(f"SQLite: {err}"))


class Archive(_Part, QueuedAppends):
    """Archives with RSM paging (XEP-0059), appended to with group commit.

    Every message is appended before it is acknowledged, so appends are the hot write path. They
    wait in a queue that the connection's thread empties: each round takes every append waiting,
    writes them and commits, and the next round starts at once with those that came meanwhile,
    while the event loop hears of the last one's outcome. Each caller's ``append`` returns once
    its commit is done, so what it acknowledges is durable. They are written in the order they
    were issued.

    The rounds run in the thread without a trip back to the event loop between them: a trip
    there and back costs a wake-up of each side and waits for the GIL (up to its switch
    interval while the loop is busy), several times what a round's SQLite work takes.
    """

    def __init__(self, db: aiosqlite.Connection, owners: Owners) -> None:
        super().__init__(db, owners.deleted)
        self._owners = owners
        # Appended to on the event loop, emptied in the connection's thread (deque's appends and
        # pops are atomic).
        self._waiting: collections.deque[Appending] = collections.deque()
        self._committer: asyncio.Task[None] | None = None

    def _write_soon(self) -> None:
        if self._committer is None:
            self._committer = asyncio.ensure_future(self._commit_waiting())

    async def drain(self) -> None:
        """Wait until every append issued so far is committed."""
        while self._committer is not None:
            await asyncio.shield(self._committer)

    async def _commit_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Whether appends wait is asked here, on the loop, where they are made: one that
            # comes after the last round's look finds no committer and starts one.
            while self._waiting:
                await _in_thread(self.db, lambda conn: self._rounds(conn, loop, _queued(self.db)))
        finally:
            self._committer = None
            while self._waiting:
                _fail([self._waiting.popleft()], StorageError("the archive was closed"))

    def _rounds(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, queued: Callable[[], bool]) -> None:
        """In the connection's thread: commit what waits, round after round while more comes.

        Once other work is queued on the connection (a login's account, a roster, an archive
        query), no further round starts: that work gets its turn, and the loop sends the thread
        on again; a trip runs one round at least, so appends get theirs too. As long as only
        appends come, the rounds go on without the event loop, which a busy server gets back to
        only after each of its turns (100 ms and more at saturation), while the appends pile up.
        A round that fails leaves nothing of its own behind (rolled back), so a caller told of
        the failure finds none of its appends committed by a later round.
        """
        while True:
            batch = [self._waiting.popleft() for _ in range(min(len(self._waiting), _BATCH_MAX))]
            if not batch:
                return
            try:
                failed = _insert(conn, self._owners, [(row, limit) for row, limit, _done in batch])
            except BaseException as err:
                self._owners.roll_back(conn)
                loop.call_soon_threadsafe(_fail, batch, err)
                if not isinstance(err, Exception):
                    raise
                return
            loop.call_soon_threadsafe(_settle, batch, failed)
            if queued():
                return

    async def _seq(self, host: str, username: str, store: str, item_id: str) -> int:
        row = await self._one(f"SELECT seq FROM archive WHERE owner={_OWNER} AND id=?", host, username, store, item_id)
        if row is None:
            raise ItemNotFound(f"no archived item {item_id!r}")
        return int(row[0])

    async def _time_span(self, host: str, username: str, store: str, terms: list[str],
                         bounds: list[float]) -> range | None:
        """The seqs from the first to the last item within a time range (empty if none is), by the
        time index; None if more than _SPAN_PROBE items are within it.

        XEP-0313 pages come in archive (seq) order, and nothing makes timestamps rise with seq (a
        clock stepped back, cluster nodes with clocks apart), so the span is not taken from the
        range's ends in time: min and max read the time index, which ends in the rowid (seq),
        over the range, without a sort and without fetching a row.
        """
        row = await self._one(
            "SELECT min(seq), max(seq), count(*) FROM (SELECT seq FROM archive INDEXED BY archive_by_time "
            f"WHERE owner={_OWNER} AND {' AND '.join(terms)} LIMIT ?)",
            host, username, store, *bounds, _SPAN_PROBE + 1)
        if row[2] > _SPAN_PROBE:
            return None
        return range(int(row[0]), int(row[1]) + 1) if row[2] else range(0)

    async def query(
        self, host: str, username: str, store: str, *, with_jid: str | None = None, start: float | None = None,
        end: float | None = None, ids: Sequence[str] | None = None, after: str | None = None,
        before: str | None = None, limit: int | None = None, reverse: bool | None = None, count: bool = True,
        after_id: str | None = None, before_id: str | None = None, resource: str | None = None,
    ) -> ArchivePage:
        await self.appended()
        # XEP-0313 §4.3: an unknown paging id is an error, even where no item matches the filters.
        after_seq, before_seq, after_id_seq, before_id_seq = [
            await self._seq(host, username, store, item_id) if item_id is not None else None
            for item_id in (after, before, after_id, before_id)]
        # Without statistics SQLite prefers the per-account index to the unique one on id, and would
        # read the whole archive to find a few ids; a unary + keeps those terms off the indexes.
        plus = "+" if ids is not None else ""
        where = [f"{plus}owner={_OWNER}"]
        args: list[Any] = [host, username, store]
        if with_jid is not None:
            where.append("with_jid=?")
            args.append(with_jid)
        if start is not None or end is not None:
            terms = [term for term, bound in (("timestamp>=?", start), ("timestamp<=?", end)) if bound is not None]
            bounds = [bound for bound in (start, end) if bound is not None]
            span = await self._time_span(host, username, store, terms, bounds)
            if span is not None and not span:
                return ArchivePage([], True, 0 if count else None)
            if span is not None:
                where.append("seq BETWEEN ? AND ?")
                args += [span.start, span.stop - 1]
            # Read in seq order, from the span's start when it is known, and stop after the page:
            # the timestamp terms are checked in the index read (without + SQLite would sort by seq
            # whatever the time index finds).
            where += [f"+{term}" for term in terms]
            args += bounds
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += list(ids)
        for term, seq in (("seq>?", after_id_seq), ("seq<?", before_id_seq)):
            if seq is not None:
                where.append(term)
                args.append(seq)
        base = list(where)
        base_args = list(args)
        if after_seq is not None:
            where.append("seq>?")
            args.append(after_seq)
        if before_seq is not None:
            where.append("seq<?")
            args.append(before_seq)
        if reverse is None:
            reverse = before is not None
        order = "DESC" if reverse else "ASC"
        fetch = limit + 1 if limit is not None else -1
        select = (f"SELECT id, timestamp, with_jid, payload, seq, with_resource FROM archive {{}} "
                  f"WHERE {' AND '.join(where)} {{}} ORDER BY seq {order} LIMIT ?")
        # SQLite would read the items archived before resources were kept in the contact's index,
        # fetching every item since to find none: the index of those items alone is what it
        # reads, unless the unique index on id finds the ids asked for.
        unresourced = "INDEXED BY archive_unresourced" if ids is None else ""
        if resource is None:
            rows = await self._all(select.format("", ""), *args, fetch)
        else:
            # Each of the two indexes gives its items in archive order; the page is the first of both.
            rows = await self._all(select.format("", _RESOURCE), *args, resource, fetch)
            rows += await self._all(select.format(unresourced, _UNRESOURCED), *args, fetch)
            rows.sort(key=_seq_of, reverse=reverse)
            rows = rows[:fetch] if limit is not None else rows
        complete = limit is None or len(rows) <= limit
        rows = rows[:limit] if limit is not None else rows
        if reverse:
            rows.reverse()
        total = None
        if count:
            counting = f"SELECT count(*) FROM archive {{}} WHERE {' AND '.join(base)} {{}}"
            if resource is None:
                count_row = await self._one(counting.format("", ""), *base_args)
            else:
                count_row = await self._one(f"SELECT ({counting.format('', _RESOURCE)}) + "
                                            f"({counting.format(unresourced, _UNRESOURCED)})",
                                            *base_args, resource, *base_args)
            total = int(count_row[0])
        items = [ArchivedItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]
        return ArchivePage(items, complete, total)

    async def delete(self, host: str, username: str, store: str, *, ids: Sequence[str] | None = None,
                     before: float | None = None) -> int:
        await self.appended()
        # As in query: with ids, the unique index on id finds the rows; on the per-account index
        # SQLite would read all of the account's store for each page deleted.
        plus = "+" if ids is not None else ""
        sql = f"DELETE FROM archive WHERE {plus}owner={_OWNER}"
        args: list[Any] = [host, username, store]
        if ids is not None:
            if not ids:
                return 0
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += list(ids)
        if before is not None:
            sql += " AND timestamp<?"
            args.append(before)
        return await self._write(sql, *args)

    async def put_back(self, host: str, username: str, store: str, items: Sequence[ArchivedItem]) -> None:
        await self.appended()
        owners = self._owners

        def put(conn: sqlite3.Connection) -> None:
            try:
                owner = owners.number(conn, host, username, store)
                for item in items:
                    # The seq is free: AUTOINCREMENT never hands a deleted row's seq out again.
                    row = (item.seq, item.id, owner, item.timestamp, item.with_jid, item.payload, item.resource)
                    if conn.execute(_PUT_BACK, row).rowcount and store in BOUNDED_STORES:
                        conn.execute(_COUNT_ADDED, (owner,))
                conn.commit()
            except BaseException:
                owners.roll_back(conn)
                raise

        await _in_thread(self.db, put)

    async def count(self, host: str, username: str, store: str) -> int:
        await self.appended()
        row = await self._one(f"SELECT {_count_sql(store, _OWNER)}", host, username, store)
        return int(row[0])


class Muc(_Part):
    """Group chat rooms and affiliations (XEP-0045), in tables of their own."""

    async def save_room(self, service: str, name: str, config: str) -> None:
        check_names(service, name)
        await self._write("INSERT INTO muc_rooms VALUES (?, ?, ?, ?) ON CONFLICT (service, name) "
                          "DO UPDATE SET config=excluded.config", service, name, config, time.time())

    async def get_room(self, service: str, name: str) -> StoredRoom | None:
        row = await self._one("SELECT config, created FROM muc_rooms WHERE service=? AND name=?", service, name)
        return StoredRoom(service, name, row[0], row[1]) if row else None

    async def rooms(self, service: str) -> list[StoredRoom]:
        rows = await self._all("SELECT name, config, created FROM muc_rooms WHERE service=? ORDER BY name", service)
        return [StoredRoom(service, r[0], r[1], r[2]) for r in rows]

    async def delete_room(self, service: str, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            """The room and its affiliations, in one transaction (and one trip)."""
            conn.execute("DELETE FROM muc_affiliations WHERE service=? AND name=?", (service, name))
            return conn.execute("DELETE FROM muc_rooms WHERE service=? AND name=?", (service, name)).rowcount > 0

        return await _in_thread(self.db, _committed(delete))

    async def affiliations(self, service: str, name: str) -> dict[str, RoomAffiliation]:
        rows = await self._all("SELECT jid, affiliation, nick, reason, since FROM muc_affiliations "
                               "WHERE service=? AND name=?", service, name)
        return {r[0]: RoomAffiliation(r[0], r[1], r[2], r[3], r[4]) for r in rows}

    async def set_affiliation(self, service: str, name: str, item: RoomAffiliation) -> None:
        if item.affiliation == "none":
            await self._write("DELETE FROM muc_affiliations WHERE service=? AND name=? AND jid=?",
                              service, name, item.jid)
        else:
            check_names(service, name, item.jid)
            await self._write("INSERT OR REPLACE INTO muc_affiliations (service, name, jid, affiliation, nick, "
                              "reason, since) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              service, name, item.jid, item.affiliation, item.nick, item.reason, item.since)

    async def rooms_of(self, jid: str) -> list[tuple[str, str, str]]:
        rows = await self._all("SELECT service, name, affiliation FROM muc_affiliations WHERE jid=? "
                               "ORDER BY service, name", jid)
        return [(r[0], r[1], r[2]) for r in rows]

    async def forget_jid(self, jid: str) -> int:
        return await self._write("DELETE FROM muc_affiliations WHERE jid=?", jid)

    async def replace_archived(self, service: str, name: str, store: str, item_id: str, payload: bytes) -> bool:
        return await self._write(f"UPDATE archive SET payload=? WHERE owner={_OWNER} AND id=?",
                                 payload, service, name, store, item_id) > 0


# How often the checkpointer copies the WAL back into the database (https://sqlite.org/wal.html,
# "Application-Initiated Checkpoints"), and the writer's own automatic checkpoint, kept only as a
# backstop should the checkpointer fall behind: SQLite's default of 1,000 pages (4 MB) ran inside
# the commit that crossed it, with the copy and the file's sync, so every append of that batch (and
# each message waiting to be delivered with its archive id) waited; at 2,500 messages a second
# that was a fifth of the writer thread's time.
CHECKPOINT_INTERVAL = 1.0
_BACKSTOP_PAGES = 16_000


class _Checkpointer:
    """A second connection to the same file that checkpoints the WAL every ``interval`` seconds
    in its own thread (PASSIVE: it never waits for the writer, nor the writer for it)."""

    def __init__(self, db: aiosqlite.Connection, interval: float) -> None:
        self._db = db
        self._task = asyncio.create_task(self._run(interval))

    @classmethod
    async def open(cls, path: str, interval: float) -> _Checkpointer:
        return cls(await _connect(path), interval)

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            # Busy or failing now: the next round tries again, the writer's backstop bounds the WAL.
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._db.close()


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring the schema up to date: the migrations not applied yet, in order, each with its
    version in one transaction, so that one cut short (a crash, a full disk) leaves the store as
    it was, to be migrated at the next start.

    Another process may open the store at the same moment (an admin command beside the server):
    each transaction takes the write lock first (IMMEDIATE), so one of them migrates while the
    other waits, and a migration that fails because the other applied it meanwhile is skipped.
    """
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    folder = resources.files(__package__).joinpath("migrations", "sqlite")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        number = int(entry.name.split("_", 1)[0])
        if number <= await _schema_version(db):
            continue
        try:
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{entry.read_text()}\nINSERT INTO schema_version VALUES ({number});\nCOMMIT;")
        except sqlite3.Error:
            await db.rollback()
            if number > await _schema_version(db):
                raise


# How long a new store's turn to WAL waits for others turning it at the same moment.
_WAL_WAIT = 5.0


async def _write_ahead(db: aiosqlite.Connection) -> bool:
    """Put the store in WAL mode; False for an in-memory database, which keeps its own journal.

    Turning a new store to WAL takes it whole for a moment. Another connection doing the same
    (a server and an admin command creating the store together) makes SQLite refuse at once,
    without waiting out its busy timeout: tried again for up to ``_WAL_WAIT`` seconds.
    """
    deadline = time.monotonic() + _WAL_WAIT
    while True:
        try:
            async with db.execute("PRAGMA journal_mode=WAL") as cur:
                row = await cur.fetchone()
            return row is not None and row[0] == "wal"
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


async def _schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT max(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    return int((row[0] if row else None) or 0)


class SqliteStorage:
    """The SQLite backend."""

    def __init__(self, db: aiosqlite.Connection, checkpointer: _Checkpointer | None = None) -> None:
        self._db = db
        self._checkpointer = checkpointer
        # The accounts deleted lately and the archives' numbers, shared by every writer and the
        # deletion of accounts: all run in the connection's one thread.
        deleted = Deleted()
        owners = Owners(deleted)
        self.accounts = Accounts(db, deleted, owners)
        self.roster = Roster(db, deleted)
        self.kv = KeyValue(db, deleted)
        self.maps = Maps(db, deleted)
        self.archive = Archive(db, owners)
        self.muc = Muc(db, deleted)

    @classmethod
    async def open(cls, path: str, *, checkpoint_interval: float = CHECKPOINT_INTERVAL) -> SqliteStorage:
        """Open and migrate the store at ``path``; StorageError with a one-line reason on failure."""
        try:
            return await cls._open(path, checkpoint_interval)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the SQLite database at {path}: {err}") from None

    @classmethod
    async def _open(cls, path: str, checkpoint_interval: float) -> SqliteStorage:
        db = await _connect(path)
        try:
            wal = await _write_ahead(db)
            await db.execute("PRAGMA synchronous=NORMAL")
            if wal:
                await db.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
            await _migrate(db)
            checkpointer = await _Checkpointer.open(path, checkpoint_interval) if wal else None
        except BaseException:
            await db.close()
            raise
        return cls(db, checkpointer)

    async def close(self) -> None:
        await self.archive.drain()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        # The last connection to close checkpoints what is left and removes the WAL.
        await self._db.close()
