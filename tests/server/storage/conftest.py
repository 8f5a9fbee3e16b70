"""Storage fixtures: every contract test runs on SQLite and on PostgreSQL (a fresh schema each)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from schnack.server.storage import Storage, open_storage

from ...conftest import require_service

POSTGRES_URL = os.environ.get("SCHNACK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/test")


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | params
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    """A storage URL for a fresh, uniquely named schema (the backend creates it), the schema's name
    and an administrative connection; the schema is dropped afterwards."""
    admin: asyncpg.Connection | None = None
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        require_service(False, f"PostgreSQL not reachable at {POSTGRES_URL}: {err}")
    assert admin is not None
    schema = f"test_{secrets.token_hex(8)}"
    try:
        yield with_query(POSTGRES_URL, schema=schema), schema, admin
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def execute_in_schema(storage_url: str, sql: str) -> None:
    """Run ``sql`` on the PostgreSQL schema of ``storage_url``, on a connection of its own."""
    schema = dict(parse_qsl(urlsplit(storage_url).query))["schema"]
    conn = await asyncpg.connect(storage_url.split("?", maxsplit=1)[0], server_settings={"search_path": schema})
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty store, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        async with postgres_schema() as (url, _, _):
            yield url


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    """An open, empty store, once per backend."""
    store = await open_storage(storage_url)
    try:
        yield store
    finally:
        await store.close()


# SQLite's archive as migrations 0001 to 0003 left it: keyed by the three strings, no counts; and
# the groups' affiliations without their time (0006).
_SQLITE_ARCHIVE_BY_STRINGS = """
CREATE TABLE archive_by_strings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, host TEXT NOT NULL, username TEXT NOT NULL,
    store TEXT NOT NULL, timestamp REAL NOT NULL, with_jid TEXT NOT NULL, payload BLOB NOT NULL
);
INSERT INTO archive_by_strings
    SELECT a.seq, a.id, o.host, o.username, o.store, a.timestamp, a.with_jid, a.payload
    FROM archive AS a JOIN archive_owners AS o USING (owner) ORDER BY a.seq;
DELETE FROM sqlite_sequence WHERE name = 'archive_by_strings';
INSERT INTO sqlite_sequence (name, seq) SELECT 'archive_by_strings', seq FROM sqlite_sequence WHERE name = 'archive';
DROP TRIGGER archive_uncounted;
DROP TABLE archive_counts;
DROP TABLE archive;
DROP TABLE archive_owners;
ALTER TABLE archive_by_strings RENAME TO archive;
CREATE INDEX archive_by_user ON archive (host, username, store, seq, timestamp);
CREATE INDEX archive_by_with ON archive (host, username, store, with_jid, seq, timestamp);
CREATE INDEX archive_by_time ON archive (host, username, store, timestamp);
ALTER TABLE muc_affiliations DROP COLUMN since;
DELETE FROM schema_version WHERE version >= 4;
"""


def rewind_sqlite_archive(path: str) -> None:
    """Take a SQLite store back to the schema of migration 0003, before the archive's items were
    counted (0004) and keyed by numbers (0005), keeping what it holds: the next open migrates it
    again."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(f"BEGIN;\n{_SQLITE_ARCHIVE_BY_STRINGS}\nCOMMIT;")


@contextlib.contextmanager
def write_locked(path: Path | str) -> Iterator[None]:
    """Another connection to a SQLite store holds its write lock (``BEGIN EXCLUSIVE``, as another
    process writing would) until the block ends."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as blocker:
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
