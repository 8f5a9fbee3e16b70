"""PostgreSQL storage (production and clusters): an asyncpg pool, migrations applied at open.

The URL is a libpq-style ``postgresql://user:password@host:port/database`` with four extra query
parameters that are not sent to the server: ``schema`` (tables live there, created if missing),
``pool_min_size``, ``pool_max_size`` and ``command_timeout`` (seconds; the most any connect, wait
for a pooled connection or statement may take, so that a connection gone silent without closing
fails its operation with StorageError instead of holding it up). Any other query parameter is
handed to asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

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

# Every node takes this transaction-level advisory lock before migrating, so nodes that start
# together apply each migration exactly once.
_MIGRATION_LOCK = int.from_bytes(b"schnack", "big")
# Seconds: long enough for any statement of a healthy server under load (a message archive query
# that must scan a large archive, with `with` set to one of the account's own full JIDs, takes
# seconds), short enough that callers (a client's IQ, the archive writer) fail with a retryable
# error rather than wait on a server that does not answer; ejabberd's default is 60.
_COMMAND_TIMEOUT = 30.0
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# OSError covers refused connections and TimeoutError; InternalClientError is what a pooled
# connection that the server terminated mid-operation can raise on its next use.
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
# What the trigger of migration 0006 raises on a write for an account deleted lately.
_GONE = ("23503", "deleted_accounts")
# An archive append whose id an item has already (DuplicateItem).
_DUPLICATE = ("23505", "archive_id_key")
# The first key of the advisory locks that serialize the appends to one archive (the second is a
# hash of the archive's name); two-key locks never meet the one-key migration lock.
_ARCHIVE_LOCK = int.from_bytes(b"arch", "big")
# One append alone, in one statement and round trip: the materialized CTE takes the archive's lock
# before the row, and so its seq from the sequence, is made; the implicit transaction holds it
# until the commit.
_APPEND = (
    "WITH serialized AS MATERIALIZED "
    f"(SELECT pg_advisory_xact_lock({_ARCHIVE_LOCK}, hashtext($2 || '/' || $3 || '/' || $4))) "
    "INSERT INTO archive (id, host, username, store, timestamp, with_jid, payload, with_resource) "
    "SELECT $1, $2, $3, $4, $5::double precision, $6, $7::bytea, $8 FROM serialized"
)
# Appends to several archives, in one statement and round trip: the materialized CTE takes each
# archive's lock, in the order of the lock keys so that two such statements (on two nodes) cannot
# deadlock, before the first row, and so its seq, is made; the rows follow in the order of the
# arrays (seq is drawn after the sort), so each archive's items keep the order they were issued in.
_APPEND_MANY = (
    "WITH serialized AS MATERIALIZED "
    f"(SELECT pg_advisory_xact_lock({_ARCHIVE_LOCK}, key) FROM (SELECT DISTINCT hashtext(h || '/' || u || '/' || s) "
    "AS key FROM unnest($2::text[], $3::text[], $4::text[]) AS a(h, u, s) ORDER BY key) AS keys) "
    "INSERT INTO archive (id, host, username, store, timestamp, with_jid, payload, with_resource) "
    "SELECT r.id, r.host, r.username, r.store, r.timestamp, r.with_jid, r.payload, r.with_resource "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::double precision[], $6::text[], $7::bytea[], "
    "$8::text[]) WITH ORDINALITY AS r(id, host, username, store, timestamp, with_jid, payload, with_resource, n) "
    "WHERE (SELECT count(*) FROM serialized) > 0 ORDER BY r.n"
)
# The most appends one such statement writes.
_MANY_MAX = 500
# Several appends to one archive: the lock, then the rows, in one transaction.
_LOCK = f"SELECT pg_advisory_xact_lock({_ARCHIVE_LOCK}, hashtext($1 || '/' || $2 || '/' || $3))"
_PUT_BACK = ("INSERT INTO archive (seq, id, host, username, store, timestamp, with_jid, payload, with_resource) "
             "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING")
_INSERT = ("INSERT INTO archive (id, host, username, store, timestamp, with_jid, payload, with_resource) "
           "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
# How many items an archive holds, its host, username and store the parameters numbered {0}, {1}
# and {2}: kept by triggers for BOUNDED_STORES (migration 0005), else counted.
_KEPT_COUNT = "coalesce((SELECT items FROM archive_counts WHERE host=${0} AND username=${1} AND store=${2}), 0)"
_ITEMS_COUNTED = "(SELECT count(*) FROM archive WHERE host=${0} AND username=${1} AND store=${2})"


def _count_sql(store: str) -> str:
    return _KEPT_COUNT if store in BOUNDED_STORES else _ITEMS_COUNTED


# An append with a limit, after the lock (so that the count read is that of the appends before):
# only while the archive holds fewer items than $9, or when its id is taken already: then the
# unique id refuses it as a duplicate, which tells the caller that the item is stored, as a full
# archive would not.
_INSERT_BOUNDED = {
    count: "INSERT INTO archive (id, host, username, store, timestamp, with_jid, payload, with_resource) "
           f"SELECT $1, $2, $3, $4, $5::double precision, $6, $7::bytea, $8 WHERE {count.format(2, 3, 4)} < $9 "
           "OR EXISTS (SELECT 1 FROM archive WHERE id = $1)"
    for count in (_KEPT_COUNT, _ITEMS_COUNTED)
}


Outcome = tuple["asyncio.Future[str]", "str | BaseException"]
"""An append's future and what it is to be told: the item's id, or why it is not stored."""


def _outcome(row: Row, limit: int | None, appended: bool) -> str | StorageError:
    return row[0] if appended else ArchiveFull(f"{row[2]}@{row[1]}: {row[3]} holds {limit} items already")


def _tell(outcomes: Iterable[Outcome]) -> None:
    for done, outcome in outcomes:
        if done.done():
            continue
        if isinstance(outcome, str):
            done.set_result(outcome)
        else:
            done.set_exception(outcome if isinstance(outcome, StorageError) else StorageError(f"PostgreSQL: {outcome}"))


class _Part:
    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    @contextlib.asynccontextmanager
    async def _conn(self, *, transaction: bool = False, snapshot: bool = False) -> AsyncIterator[Any]:
        """A pooled connection, in a transaction if asked (a read-only one on one snapshot if
        ``snapshot``, so that several reads agree); driver failures become StorageError."""
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                if transaction or snapshot:
                    async with conn.transaction(isolation="repeatable_read" if snapshot else None,
                                                readonly=snapshot):
                        yield conn
                else:
                    yield conn
        except _FAILURES as err:
            violated = (getattr(err, "sqlstate", None), getattr(err, "constraint_name", None))
            if violated == _GONE:
                raise AccountGone(str(err)) from err
            if violated == _DUPLICATE:
                raise DuplicateItem(str(err)) from err
            # A timeout says nothing of itself.
            raise StorageError(f"PostgreSQL: {str(err) or type(err).__name__}") from err

    async def _one(self, sql: str, *args: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchrow(sql, *args)

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        async with self._conn() as conn:
            return list(await conn.fetch(sql, *args))

    async def _write(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it touched."""
        async with self._conn() as conn:
            status: str = await conn.execute(sql, *args)
        return int(status.rpartition(" ")[2])


# The entries of deleted_accounts past their time, removed as accounts are deleted and registered
# (so that no name is kept long after its account).
_FORGET_DELETED = "DELETE FROM deleted_accounts WHERE until <= extract(epoch FROM now())"


class Accounts(_Part):
    def __init__(self, pool: Any, timeout: float, archive: Archive) -> None:
        super().__init__(pool, timeout)
        self._archive = archive

    async def create(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> None:
        if not await self._write(f"WITH registered AS ({_FORGET_DELETED} OR (host=$1 AND username=$2)) "
                                 "INSERT INTO accounts VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                                 host, username, credentials_to_json(credentials), time.time()):
            raise AlreadyExists(f"{username}@{host} exists")

    async def get(self, host: str, username: str) -> Account | None:
        row = await self._one("SELECT credentials, created FROM accounts WHERE host=$1 AND username=$2",
                              host, username)
        return Account(host, username, credentials_from_json(row[0]), row[1]) if row else None

    async def set_credentials(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> bool:
        return await self._write("UPDATE accounts SET credentials=$1 WHERE host=$2 AND username=$3",
                                 credentials_to_json(credentials), host, username) > 0

    async def delete(self, host: str, username: str) -> bool:
        """Remove the account and everything stored for it, all or nothing.

        Then, until it is registered again or for DELETED_FOR seconds, the database refuses to
        store anything for it (migration 0006; AccountGone): a message routed to it just before,
        by any node, may come to be written after the deletion, and would wait there for whoever
        next registers the name. The deletion takes the account's lock exclusively, which every
        such write takes shared, so a write that began before it commits first and is deleted
        with the rest. The archive appends this node issued before are written first, so that
        they are deleted rather than refused.
        """
        await self._archive.appended()
        async with self._conn(transaction=True) as conn:
            await conn.execute("SELECT lock_account_for_deletion($1, $2)", host, username)
            await conn.execute(_FORGET_DELETED)
            await conn.execute("INSERT INTO deleted_accounts VALUES ($1, $2, extract(epoch FROM now()) + $3) "
                               "ON CONFLICT (host, username) DO UPDATE SET until=EXCLUDED.until",
                               host, username, DELETED_FOR)
            for table in ("roster", "roster_versions", "kv", "maps", "archive"):
                await conn.execute(f"DELETE FROM {table} WHERE host=$1 AND username=$2", host, username)
            status: str = await conn.execute("DELETE FROM accounts WHERE host=$1 AND username=$2", host, username)
        return status != "DELETE 0"

    async def list(self, host: str) -> list[str]:
        # Byte order, as SQLite sorts, whatever the database's collation.
        rows = await self._all('SELECT username FROM accounts WHERE host=$1 ORDER BY username COLLATE "C"', host)
        return [r[0] for r in rows]


def _item(row: Any) -> RosterItem:
    return RosterItem(row[0], row[1], row[2], row[3], row[4], tuple(row[5]))


_BUMP = ("INSERT INTO roster_versions VALUES ($1, $2, 1) ON CONFLICT (host, username) "
         "DO UPDATE SET version = roster_versions.version + 1 RETURNING version")


class Roster(_Part):
    """RFC 6121 §2 roster items with a version bumped on every change (RFC 6121 §2.6)."""

    async def get(self, host: str, username: str) -> tuple[int, dict[str, RosterItem]]:
        async with self._conn(snapshot=True) as conn:
            rows = await conn.fetch("SELECT jid, name, subscription, ask, approved, groups FROM roster "
                                    "WHERE host=$1 AND username=$2", host, username)
            version = await conn.fetchval("SELECT version FROM roster_versions WHERE host=$1 AND username=$2",
                                          host, username)
        return int(version or 0), {r[0]: _item(r) for r in rows}

    async def get_item(self, host: str, username: str, jid: str) -> RosterItem | None:
        row = await self._one("SELECT jid, name, subscription, ask, approved, groups FROM roster "
                              "WHERE host=$1 AND username=$2 AND jid=$3", host, username, jid)
        return _item(row) if row else None

    async def set_item(self, host: str, username: str, item: RosterItem) -> int:
        check_names(host, username, item.jid)
        async with self._conn(transaction=True) as conn:
            await conn.execute(
                "INSERT INTO roster VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (host, username, jid) "
                "DO UPDATE SET name=EXCLUDED.name, subscription=EXCLUDED.subscription, ask=EXCLUDED.ask, "
                "approved=EXCLUDED.approved, groups=EXCLUDED.groups",
                host, username, item.jid, item.name, item.subscription, item.ask, item.approved, list(item.groups))
            return int(await conn.fetchval(_BUMP, host, username))

    async def remove_item(self, host: str, username: str, jid: str) -> int:
        async with self._conn(transaction=True) as conn:
            status: str = await conn.execute("DELETE FROM roster WHERE host=$1 AND username=$2 AND jid=$3",
                                             host, username, jid)
            if status != "DELETE 0":
                return int(await conn.fetchval(_BUMP, host, username))
            version = await conn.fetchval("SELECT version FROM roster_versions WHERE host=$1 AND username=$2",
                                          host, username)
        return int(version or 0)


class KeyValue(_Part):
    async def get(self, host: str, username: str, store: str) -> bytes | None:
        row = await self._one("SELECT value FROM kv WHERE host=$1 AND username=$2 AND store=$3", host, username, store)
        return bytes(row[0]) if row else None

    async def set(self, host: str, username: str, store: str, value: bytes | None) -> None:
        if value is None:
            await self._write("DELETE FROM kv WHERE host=$1 AND username=$2 AND store=$3", host, username, store)
        else:
            check_names(host, username, store)
            await self._write("INSERT INTO kv VALUES ($1, $2, $3, $4) ON CONFLICT (host, username, store) "
                              "DO UPDATE SET value=EXCLUDED.value", host, username, store, value)

    async def delete(self, host: str, username: str, store: str) -> None:
        await self.set(host, username, store, None)

    async def delete_if(self, host: str, username: str, store: str, value: bytes) -> bool:
        return await self._write("DELETE FROM kv WHERE host=$1 AND username=$2 AND store=$3 AND value=$4",
                                 host, username, store, value) == 1

    async def replace(self, host: str, username: str, store: str, old: bytes, new: bytes) -> bool:
        return await self._write("UPDATE kv SET value=$5 WHERE host=$1 AND username=$2 AND store=$3 AND value=$4",
                                 host, username, store, old, new) == 1

    async def set_default(self, host: str, username: str, store: str, value: bytes) -> bytes:
        check_names(host, username, store)
        while True:
            row = await self._one("INSERT INTO kv VALUES ($1, $2, $3, $4) ON CONFLICT (host, username, store) "
                                  "DO NOTHING RETURNING value", host, username, store, value)
            if row is None:
                # A statement of its own, so on a snapshot of its own: one taken with the insert would
                # not see a row that another node's insert, which this one waited for, committed meanwhile.
                row = await self._one("SELECT value FROM kv WHERE host=$1 AND username=$2 AND store=$3",
                                      host, username, store)
            if row is not None:
                return bytes(row[0])
            # The value this insert gave way to was deleted before the select: nothing is stored now.


def _map_change(host: str, username: str, store: str, key: str, value: bytes | None) -> tuple[Any, ...]:
    """The statement and its arguments that set ``key`` to ``value`` (remove it, for None);
    TooLong before anything is written if the names are too long to store."""
    if value is None:
        return ("DELETE FROM maps WHERE host=$1 AND username=$2 AND store=$3 AND key=$4", host, username, store, key)
    check_names(host, username, store, key)
    return ("INSERT INTO maps VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host, username, store, key) "
            "DO UPDATE SET value=EXCLUDED.value", host, username, store, key, value)


class Maps(_Part):
    async def get(self, host: str, username: str, store: str, key: str) -> bytes | None:
        row = await self._one("SELECT value FROM maps WHERE host=$1 AND username=$2 AND store=$3 AND key=$4",
                              host, username, store, key)
        return bytes(row[0]) if row else None

    async def set(self, host: str, username: str, store: str, key: str, value: bytes | None) -> None:
        await self._write(*_map_change(host, username, store, key, value))

    async def set_many(self, host: str, username: str, store: str, changes: Mapping[str, bytes | None]) -> None:
        statements = [_map_change(host, username, store, key, value) for key, value in changes.items()]
        async with self._conn(transaction=True) as conn:
            for sql, *args in statements:
                await conn.execute(sql, *args)

    async def delete_if(self, host: str, username: str, store: str, key: str, value: bytes) -> bool:
        return await self._write("DELETE FROM maps WHERE host=$1 AND username=$2 AND store=$3 AND key=$4 AND value=$5",
                                 host, username, store, key, value) == 1

    async def delete_all(self, host: str, username: str, store: str) -> None:
        await self._write("DELETE FROM maps WHERE host=$1 AND username=$2 AND store=$3", host, username, store)

    async def items(self, host: str, username: str, store: str) -> dict[str, bytes]:
        rows = await self._all("SELECT key, value FROM maps WHERE host=$1 AND username=$2 AND store=$3",
                               host, username, store)
        return {r[0]: bytes(r[1]) for r in rows}


class _Where:
    """A WHERE clause built from conditions with numbered parameters."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.args: list[Any] = []

    def add(self, template: str, value: Any) -> None:
        """Add ``template`` with its ``{}`` replaced by the next parameter."""
        self.args.append(value)
        self.terms.append(template.format(f"${len(self.args)}"))

    def sql(self) -> str:
        return " AND ".join(self.terms)


# The most items within a time range that a query reads in the time index to find the range's
# first and last seq. Over a wider range it reads in archive order from its 'after' id or from the
# archive's start, skipping what is out of the range: that costs the skipping, not the range.
_SPAN_PROBE = 2000


def _resource_terms(place: int) -> tuple[str, str]:
    """The terms that take a query with a resource (ArchiveStore.query, parameter ``place``) to
    each index: the items appended with it (the '' spelled out lets the planner use the partial
    index), and those archived before resources were kept."""
    return f"AND with_resource=${place} AND with_resource<>''", "AND with_resource IS NULL"


def _seq_of(row: Any) -> int:
    return int(row[4])


class Archive(_Part, QueuedAppends):
    """Archives with RSM paging (XEP-0059) as MAM (XEP-0313) and offline storage need them."""

    def __init__(self, pool: Any, timeout: float) -> None:
        super().__init__(pool, timeout)
        # The appends waiting for their turn, in the order they were issued, and the task writing them.
        self._waiting: list[Appending] = []
        self._writer: asyncio.Task[None] | None = None

    def _write_soon(self) -> None:
        """Start the writer, unless it runs (appends are committed as ArchiveStore.append says).

        Paging reads "after the last seq seen", so an archive's items must become visible in seq
        order. Transactions that commit concurrently could make a later seq visible first, so
        appends to one archive are serialized: each takes the archive's transaction-level advisory
        lock before it draws its seq and holds it until it committed. So that a busy node is not
        held to one commit per append, the appends that wait meanwhile (on this node, to any
        archive) are written together, in the order they were issued: those without a limit in
        one statement, those with one in a transaction per archive.
        """
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_waiting())

    async def drain(self) -> None:
        """Wait until every append issued so far is committed."""
        while self._writer is not None:
            await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)

    async def _write_waiting(self) -> None:
        batch: list[Appending] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:_MANY_MAX], self._waiting[_MANY_MAX:]
                if all(limit is None for _row, limit, _done in batch):
                    _tell(await self._write_many(batch))
                else:
                    archives: dict[tuple[str, str, str], list[Appending]] = {}
                    for appending in batch:
                        archives.setdefault(appending[0][1:4], []).append(appending)
                    # Told together once every archive's transaction is over: a read waits for
                    # the last append issued before it (appended), and must find all of them.
                    written = await asyncio.gather(*(self._write_archive(appends) for appends in archives.values()))
                    _tell(outcome for outcomes in written for outcome in outcomes)
        finally:
            self._writer = None
            waiting, self._waiting = self._waiting, []
            _tell((done, StorageError("PostgreSQL: the archive was closed")) for _row, _limit, done in batch + waiting)

    async def _write_many(self, batch: list[Appending]) -> list[Outcome]:
        """Write ``batch`` (appends without a limit, to any archives) in one statement."""
        try:
            if len(batch) == 1:
                await self._write(_APPEND, *batch[0][0])
            else:
                await self._write(_APPEND_MANY, *(list(column) for column in zip(*(row for row, _l, _d in batch),
                                                                                   strict=True)))
        except BaseException as err:
            return await self._failed(batch, err)
        return [(done, row[0]) for row, _limit, done in batch]

    async def _write_archive(self, batch: list[Appending]) -> list[Outcome]:
        """Write ``batch`` (appends to one archive, some with a limit) in one transaction; each
        caller's outcome."""
        # By place in the batch: two appends may have one id, one refused and one stored.
        refused: set[int] = set()
        try:
            async with self._conn(transaction=True) as conn:
                await conn.execute(_LOCK, *batch[0][0][1:4])
                for place, (row, limit, _done) in enumerate(batch):
                    if not await self._insert(conn, row, limit):
                        refused.add(place)
        except BaseException as err:
            return await self._failed(batch, err)
        return [(done, _outcome(row, limit, place not in refused)) for place, (row, limit, done) in enumerate(batch)]

    async def _failed(self, batch: list[Appending], err: BaseException) -> list[Outcome]:
        """The outcomes of ``batch``, whose transaction failed with ``err`` and so wrote nothing:
        one append fails with it; several are tried alone, each getting its own outcome, unless
        the server could not be reached or did not answer in time (the cause is then an OSError,
        TimeoutError included): each append alone would wait as long again."""
        if not isinstance(err, Exception):
            _tell((done, err) for _row, _limit, done in batch)
            raise err
        if len(batch) == 1 or isinstance(err.__cause__, OSError):
            return [(done, err) for _row, _limit, done in batch]
        outcomes: list[Outcome] = []
        for row, limit, done in batch:
            try:
                async with self._conn(transaction=True) as conn:
                    await conn.execute(_LOCK, *row[1:4])
                    appended = await self._insert(conn, row, limit)
            except Exception as alone:
                outcomes.append((done, alone))
            else:
                outcomes.append((done, _outcome(row, limit, appended)))
        return outcomes

    @staticmethod
    async def _insert(conn: Any, row: Row, limit: int | None) -> bool:
        """Insert one row in the transaction holding the archive's lock; False if its limit refused it."""
        if limit is None:
            await conn.execute(_INSERT, *row)
            return True
        status: str = await conn.execute(_INSERT_BOUNDED[_count_sql(row[3])], *row, limit)
        return status.rpartition(" ")[2] != "0"

    @staticmethod
    async def _seq(conn: Any, host: str, username: str, store: str, item_id: str) -> int:
        seq = await conn.fetchval("SELECT seq FROM archive WHERE host=$1 AND username=$2 AND store=$3 AND id=$4",
                                  host, username, store, item_id)
        if seq is None:
            raise ItemNotFound(f"no archived item {item_id!r}")
        return int(seq)

    @staticmethod
    async def _time_span(conn: Any, host: str, username: str, store: str, start: float | None,
                         end: float | None) -> range | None:
        """The seqs from the first to the last item within a time range (empty if none is), by the
        time index; None if more than _SPAN_PROBE items are within it.

        XEP-0313 pages come in archive (seq) order, and nothing makes timestamps rise with seq (a
        clock stepped back, cluster nodes with clocks apart), so the span is not taken from the
        range's ends in time: min and max read archive_by_time (which has seq since migration
        0004) over the range, index only, without a sort.
        """
        where = _Where()
        where.add("host={}", host)
        where.add("username={}", username)
        where.add("store={}", store)
        if start is not None:
            where.add("timestamp>={}", start)
        if end is not None:
            where.add("timestamp<={}", end)
        where.args.append(_SPAN_PROBE + 1)
        row = await conn.fetchrow(f"SELECT min(seq), max(seq), count(*) FROM (SELECT seq FROM archive "
                                  f"WHERE {where.sql()} LIMIT ${len(where.args)}) AS within", *where.args)
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
        where = _Where()
        where.add("host={}", host)
        where.add("username={}", username)
        where.add("store={}", store)
        if with_jid is not None:
            where.add("with_jid={}", with_jid)
        if ids is not None:
            where.add("id = ANY({}::text[])", list(ids))
        total = None
        async with self._conn(snapshot=True) as conn:
            # XEP-0313 §4.3: an unknown paging id is an error, even where no item matches the filters.
            after_seq, before_seq, after_id_seq, before_id_seq = [
                await self._seq(conn, host, username, store, item_id) if item_id is not None else None
                for item_id in (after, before, after_id, before_id)]
            if after_id_seq is not None:
                where.add("seq>{}", after_id_seq)
            if before_id_seq is not None:
                where.add("seq<{}", before_id_seq)
            if start is not None or end is not None:
                span = await self._time_span(conn, host, username, store, start, end)
                if span is not None and not span:
                    return ArchivePage([], True, 0 if count else None)
                if span is not None:
                    where.add("seq>={}", span.start)
                    where.add("seq<{}", span.stop)
                # Read in seq order, from the span's start when it is known, and stop after the
                # page, checking the timestamp in the index (archive_by_user and archive_by_with
                # carry it).
                if start is not None:
                    where.add("timestamp>={}", start)
                if end is not None:
                    where.add("timestamp<={}", end)
            if count:
                counting = f"SELECT count(*) FROM archive WHERE {where.sql()}"
                if resource is None:
                    total = int(await conn.fetchval(counting, *where.args))
                else:
                    exact, unknown = _resource_terms(len(where.args) + 1)
                    total = int(await conn.fetchval(f"SELECT ({counting} {exact}) + ({counting} {unknown})",
                                                    *where.args, resource))
            if after_seq is not None:
                where.add("seq>{}", after_seq)
            if before_seq is not None:
                where.add("seq<{}", before_seq)
            if reverse is None:
                reverse = before is not None
            order = "DESC" if reverse else "ASC"
            fetch = limit + 1 if limit is not None else None
            select = (f"SELECT id, timestamp, with_jid, payload, seq, with_resource FROM archive WHERE {where.sql()}"
                      " {} ORDER BY seq " + order + " LIMIT ${}")
            places = len(where.args)
            if resource is None:
                rows = list(await conn.fetch(select.format("", places + 1), *where.args, fetch))
            else:
                exact, unknown = _resource_terms(places + 1)
                rows = list(await conn.fetch(select.format(exact, places + 2), *where.args, resource, fetch))
                rows += await conn.fetch(select.format(unknown, places + 1), *where.args, fetch)
                # Each index gives its items in archive order; the page is the first of both.
                rows.sort(key=_seq_of, reverse=reverse)
                rows = rows[:fetch]
        complete = limit is None or len(rows) <= limit
        rows = rows[:limit] if limit is not None else rows
        if reverse:
            rows.reverse()
        items = [ArchivedItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]
        return ArchivePage(items, complete, total)

    async def delete(self, host: str, username: str, store: str, *, ids: Sequence[str] | None = None,
                     before: float | None = None) -> int:
        await self.appended()
        where = _Where()
        where.add("host={}", host)
        where.add("username={}", username)
        where.add("store={}", store)
        if ids is not None:
            if not ids:
                return 0
            where.add("id = ANY({}::text[])", list(ids))
        if before is not None:
            where.add("timestamp<{}", before)
        return await self._write(f"DELETE FROM archive WHERE {where.sql()}", *where.args)

    async def put_back(self, host: str, username: str, store: str, items: Sequence[ArchivedItem]) -> None:
        await self.appended()
        async with self._conn(transaction=True) as conn:
            await conn.execute(_LOCK, host, username, store)
            # The seqs are free: a sequence never hands one out twice.
            await conn.executemany(_PUT_BACK, [(item.seq, item.id, host, username, store, item.timestamp,
                                                item.with_jid, item.payload, item.resource) for item in items])

    async def count(self, host: str, username: str, store: str) -> int:
        await self.appended()
        row = await self._one(f"SELECT {_count_sql(store).format(1, 2, 3)}", host, username, store)
        return int(row[0])


class Muc(_Part):
    """Group chat rooms and affiliations (XEP-0045), in tables of their own."""

    async def save_room(self, service: str, name: str, config: str) -> None:
        check_names(service, name)
        await self._write("INSERT INTO muc_rooms VALUES ($1, $2, $3, $4) ON CONFLICT (service, name) "
                          "DO UPDATE SET config=EXCLUDED.config", service, name, config, time.time())

    async def get_room(self, service: str, name: str) -> StoredRoom | None:
        row = await self._one("SELECT config, created FROM muc_rooms WHERE service=$1 AND name=$2", service, name)
        return StoredRoom(service, name, row[0], row[1]) if row else None

    async def rooms(self, service: str) -> list[StoredRoom]:
        rows = await self._all('SELECT name, config, created FROM muc_rooms WHERE service=$1 ORDER BY name COLLATE "C"',
                               service)
        return [StoredRoom(service, r[0], r[1], r[2]) for r in rows]

    async def delete_room(self, service: str, name: str) -> bool:
        async with self._conn(transaction=True) as conn:
            await conn.execute("DELETE FROM muc_affiliations WHERE service=$1 AND name=$2", service, name)
            status: str = await conn.execute("DELETE FROM muc_rooms WHERE service=$1 AND name=$2", service, name)
        return status != "DELETE 0"

    async def affiliations(self, service: str, name: str) -> dict[str, RoomAffiliation]:
        rows = await self._all("SELECT jid, affiliation, nick, reason, since FROM muc_affiliations "
                               "WHERE service=$1 AND name=$2", service, name)
        return {r[0]: RoomAffiliation(r[0], r[1], r[2], r[3], r[4]) for r in rows}

    async def set_affiliation(self, service: str, name: str, item: RoomAffiliation) -> None:
        if item.affiliation == "none":
            await self._write("DELETE FROM muc_affiliations WHERE service=$1 AND name=$2 AND jid=$3",
                              service, name, item.jid)
        else:
            check_names(service, name, item.jid)
            await self._write(
                "INSERT INTO muc_affiliations (service, name, jid, affiliation, nick, reason, since) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (service, name, jid) DO UPDATE SET "
                "affiliation=EXCLUDED.affiliation, nick=EXCLUDED.nick, reason=EXCLUDED.reason, since=EXCLUDED.since",
                service, name, item.jid, item.affiliation, item.nick, item.reason, item.since)

    async def rooms_of(self, jid: str) -> list[tuple[str, str, str]]:
        rows = await self._all('SELECT service, name, affiliation FROM muc_affiliations WHERE jid=$1 '
                               'ORDER BY service COLLATE "C", name COLLATE "C"', jid)
        return [(r[0], r[1], r[2]) for r in rows]

    async def forget_jid(self, jid: str) -> int:
        return await self._write("DELETE FROM muc_affiliations WHERE jid=$1", jid)

    async def replace_archived(self, service: str, name: str, store: str, item_id: str, payload: bytes) -> bool:
        return await self._write("UPDATE archive SET payload=$1 WHERE host=$2 AND username=$3 AND store=$4 AND id=$5",
                                 payload, service, name, store, item_id) > 0


def _location(netloc: str, options: dict[str, str]) -> str:
    """``host:port`` the URL points at, for messages (never the password)."""
    location = netloc.rpartition("@")[2] or options.get("host") or "localhost"
    if re.search(r":\d+$", location):
        return location
    return f"{location}:{options.get('port') or 5432}"


def _command_timeout(options: dict[str, str]) -> float:
    text = options.pop("command_timeout", None)
    if text is None:
        return _COMMAND_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise StorageError(f"storage URL: command_timeout must be a number of seconds above 0, got {text!r}")
    return seconds


def _pool_size(options: dict[str, str], name: str, default: int, minimum: int) -> int:
    text = options.pop(name, None)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < minimum:
        raise StorageError(f"storage URL: {name} must be a whole number of at least {minimum}, got {text!r}")
    return int(text)


async def _keep_session(conn: Any) -> None:
    """What the pool does to a connection given back, beyond asyncpg's own rollback of a
    transaction left open: nothing. asyncpg's default resets the session (advisory locks, cursors,
    LISTEN, settings) in one more round trip each time a connection is used; this storage leaves no session state
    behind (its advisory locks are transaction-level, its settings are the connection's own from
    the start), so that round trip would only cost CPU on both ends."""


async def _migrate(conn: Any, schema: str | None) -> None:
    """Apply the numbered migrations not yet in schema_migrations, in one locked transaction."""
    folder = resources.files(__package__).joinpath("migrations", "postgres")
    migrations = sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda e: e.name)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        # CREATE SCHEMA checks the CREATE privilege even when the schema exists, so only create a missing one.
        if schema is not None and not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname=$1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0
        for entry in migrations:
            number = int(entry.name.split("_", 1)[0])
            if number > current:
                await conn.execute(entry.read_text())
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, entry.name)


class PostgresStorage:
    """The PostgreSQL backend."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self._pool = pool
        self.archive = Archive(pool, timeout)
        self.accounts = Accounts(pool, timeout, self.archive)
        self.roster = Roster(pool, timeout)
        self.kv = KeyValue(pool, timeout)
        self.maps = Maps(pool, timeout)
        self.muc = Muc(pool, timeout)

    @classmethod
    async def open(cls, url: str) -> PostgresStorage:
        """Connect a pool to ``url`` and migrate; StorageError with a one-line reason on failure."""
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema = options.pop("schema", None)
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise StorageError(f"storage URL: schema must be a plain SQL name (letters, digits, _), got {schema!r}")
        min_size = _pool_size(options, "pool_min_size", 1, 1)
        max_size = _pool_size(options, "pool_max_size", 10, 1)
        timeout = _command_timeout(options)
        if min_size > max_size:
            raise StorageError(f"storage URL: pool_min_size {min_size} is larger than pool_max_size {max_size}")
        dsn = urlunsplit(parts._replace(query=urlencode(options)))
        where = _location(parts.netloc, options)
        settings = {"search_path": f'"{schema}"'} if schema is not None else None
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, reset=_keep_session, server_settings=settings,
                timeout=timeout, command_timeout=timeout,
            )
        except (*_FAILURES, ValueError) as err:
            raise StorageError(f"cannot connect to PostgreSQL at {where}: {err}") from None
        try:
            # On a connection of its own, without command_timeout: a migration may rewrite a large
            # table, and the nodes starting together wait for it on its lock.
            migrating = await asyncpg.connect(dsn, server_settings=settings, timeout=timeout)
            try:
                await _migrate(migrating, schema)
            finally:
                await migrating.close()
        except _FAILURES as err:
            await pool.close()
            raise StorageError(f"cannot migrate the PostgreSQL database at {where}: {err}") from None
        return cls(pool, timeout)

    async def close(self) -> None:
        await self.archive.drain()
        await self._pool.close()
