"""The blob stores, local disk and S3 (a real SeaweedFS), against one contract: streaming writes
that store all or nothing, ranged reads, deletes, and keys that cannot leave their place."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.blobs import BlobError, BlobStore, LocalBlobStore, S3BlobStore

from ..s3 import seaweedfs

BAD_KEYS = ("../etc/passwd", "example.org/../../x", "/abs/path", "example.org/a/b", "..//x", "a", "", "x/..")


async def chunks(*parts: bytes, fail: BaseException | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail is not None:
        raise fail


async def read_all(store: BlobStore, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, offset, length)])


async def write_read_delete(store: BlobStore) -> None:
    data = os.urandom(700_000)
    await store.write("example.org/abc", chunks(data[:100], data[100:]), len(data))
    assert await store.size("example.org/abc") == len(data)
    assert await read_all(store, "example.org/abc") == data
    assert await read_all(store, "example.org/abc", 300_000, 300_001) == data[300_000:600_001]
    assert await read_all(store, "example.org/abc", 699_990) == data[699_990:]
    assert await store.delete("example.org/abc") is True
    assert await store.delete("example.org/abc") is False
    assert await store.size("example.org/abc") is None


async def failed_writes_leave_nothing(store: BlobStore) -> None:
    await store.write("example.org/old", chunks(b"kept"), 4)
    for key in ("example.org/new", "example.org/old"):
        with pytest.raises(TimeoutError):
            await store.write(key, chunks(b"x" * 100_000, b"y" * 100_000, fail=TimeoutError()), 300_000)
        # A body shorter than announced is no blob either.
        with pytest.raises(BlobError):
            await store.write(key, chunks(b"x" * 100_000), 300_000)
    assert await store.size("example.org/new") is None
    # A failed write over an existing blob leaves the old one as it was.
    assert await read_all(store, "example.org/old") == b"kept"
    await store.delete("example.org/old")


async def keys_stay_inside(store: BlobStore) -> None:
    for key in BAD_KEYS:
        with pytest.raises(BlobError):
            await store.write(key, chunks(b"x"), 1)
        with pytest.raises(BlobError):
            await store.size(key)
        with pytest.raises(BlobError):
            await store.delete(key)


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    store = LocalBlobStore(tmp_path / "uploads")
    await store.start()
    yield store
    await store.close()


async def test_local_write_read_delete(local: LocalBlobStore) -> None:
    await write_read_delete(local)
    assert local.partial_files() == []


async def test_local_failed_writes_leave_nothing(local: LocalBlobStore) -> None:
    await failed_writes_leave_nothing(local)
    assert local.partial_files() == []
    assert sorted(p for p in local.root.rglob("*") if p.is_file()) == []


async def test_local_keys_stay_inside(local: LocalBlobStore) -> None:
    await keys_stay_inside(local)
    assert local.partial_files() == []


async def test_local_start_removes_what_a_crash_left(local: LocalBlobStore) -> None:
    (local.root / ".partial" / "half-written").write_bytes(b"x" * 10)
    assert local.partial_files()
    await LocalBlobStore(local.root).start()
    assert local.partial_files() == []


async def test_s3_store(tmp_path: Path) -> None:
    """The same contract on a real S3-compatible server; one server for all of it (it takes seconds to start)."""
    async with seaweedfs(tmp_path / "s3") as s3:
        store = s3.store(prefix="files/")
        await store.start()
        try:
            await write_read_delete(store)
            await failed_writes_leave_nothing(store)
            await keys_stay_inside(store)
        finally:
            await store.close()
        # Requests are signed: a wrong secret gets nowhere.
        wrong = S3BlobStore(s3.endpoint, s3.bucket, s3.access_key, "not the secret")
        await wrong.start()
        try:
            with pytest.raises(BlobError, match="403"):
                await wrong.write("example.org/x", chunks(b"x"), 1)
        finally:
            await wrong.close()
