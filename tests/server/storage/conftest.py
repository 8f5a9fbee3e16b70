"""Storage fixtures: every contract test runs on SQLite and on PostgreSQL (a fresh schema each)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
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
