"""Blob storage for uploaded files: one small interface, a local-disk and an S3 implementation.

Keys are chosen by the server (``domain/id``, letters, digits, ``.``, ``_`` and ``-``), never by
a client, so no file name can reach the file system. A write takes the bytes as an async stream
of known size and either stores all of them or nothing: the local store writes a temporary
file in ``root/.partial`` and renames it into place only when the stream ended well, and
removes it whatever went wrong (a timeout, a short body, a cancelled request); partial files
left by a crash are removed at start. A write returns only once the file and its name are on
disk (fsync of the file before the rename, of the directory after it): its URL is shared as
soon as it returns, and a power loss must not leave an empty or cut-short file under it. The S3 store streams the body into one PUT Object, which
S3 stores whole or not at all (a body cut short is no object), so a cluster's nodes share one
bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shutil
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote, urlsplit

import aiohttp

_KEY = re.compile(r"[a-z0-9.-]{1,253}/[A-Za-z0-9_-]{1,64}")
_PARTIAL = ".partial"
READ_CHUNK = 256 * 1024


class BlobError(Exception):
    """A key that is not one the server makes."""


class BlobStore(Protocol):
    """Where uploaded files live."""

    async def start(self) -> None:
        """Get ready (directories, connections); called once before anything else."""
        ...

    async def close(self) -> None:
        """Release what start() took."""
        ...

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Store the stream of ``size`` bytes under ``key``, replacing what was there.

        Whatever the stream raises is raised again after every partial byte is gone.
        """
        ...

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        """The bytes from ``offset`` on (``length`` of them, or to the end), in chunks; closed
        early (``aclose``), it lets go of the file or connection at once."""
        ...

    async def size(self, key: str) -> int | None:
        """The size of the blob, None if there is none."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the blob; False if there was none."""
        ...


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.partition("/")[0]:
        raise BlobError(f"not a blob key: {key!r}")
    return key


class LocalBlobStore:
    """Blobs as files under ``root/domain/id``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._partial = root / _PARTIAL

    async def start(self) -> None:
        """Create the directories and remove what interrupted writes left behind."""
        await asyncio.to_thread(shutil.rmtree, self._partial, ignore_errors=True)
        await asyncio.to_thread(self._partial.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing is held open between calls."""

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        target = self.path(key)
        temp = self._partial / secrets.token_hex(16)
        written = 0
        try:
            f: BinaryIO = await asyncio.to_thread(temp.open, "xb")
            try:
                async for chunk in chunks:
                    # Page-cache writes are quick, but a slow disk must not stall every client.
                    await asyncio.to_thread(f.write, chunk)
                    written += len(chunk)
                if written != size:
                    raise BlobError(f"got {written} bytes, not {size}")
                await asyncio.to_thread(_sync_file, f)
            finally:
                await asyncio.to_thread(f.close)
            await asyncio.to_thread(_place, temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        path = self.path(key)
        f: BinaryIO = await asyncio.to_thread(path.open, "rb")
        try:
            await asyncio.to_thread(f.seek, offset)
            left = length
            while left is None or left > 0:
                chunk = await asyncio.to_thread(f.read, READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> bool:
        try:
            await asyncio.to_thread(self.path(key).unlink)
        except FileNotFoundError:
            return False
        return True

    def partial_files(self) -> list[Path]:
        """Temporary files of writes under way (none once every write ended)."""
        return list(self._partial.iterdir()) if self._partial.is_dir() else []


def _sync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _sync_directory(path: Path) -> None:
    """Make the names in a directory durable: a rename is kept through a crash only then."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(temp: Path, target: Path) -> None:
    """Rename a synced file into place, and sync the rename (and a directory made for it)."""
    directory = target.parent
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        pass
    else:
        _sync_directory(directory.parent)
    os.replace(temp, target)
    _sync_directory(directory)


class S3BlobStore:
    """Blobs as objects ``{prefix}{key}`` in an S3 bucket (AWS Signature Version 4, path-style URLs).

    Any S3-compatible store works (AWS, SeaweedFS, MinIO, Garage, Ceph). Bodies are sent
    unsigned (``UNSIGNED-PAYLOAD``): hashing a stream first would mean holding it.
    """

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, *,
                 region: str = "us-east-1", prefix: str = "") -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        self._access_key = access_key
        self._secret_key = secret_key
        self._host = urlsplit(self.endpoint).netloc
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No total timeout: a large file takes as long as it takes; a dead store is noticed
        # by the socket timeouts.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _path(self, key: str) -> str:
        return f"/{quote(self.bucket, safe='')}/{quote(self.prefix + check_key(key), safe='/')}"

    def _signed(self, method: str, path: str) -> dict[str, str]:
        """The headers that authenticate a request (AWS Signature Version 4, header form)."""
        now = datetime.now(UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": stamp}
        names = ";".join(sorted(headers))
        canonical = "\n".join((
            method, path, "", *(f"{name}:{headers[name]}" for name in sorted(headers)), "", names,
            "UNSIGNED-PAYLOAD",
        ))  # fmt: skip
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = f"AWS4{self._secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, SignedHeaders={names}, Signature={signature}"
        )
        del headers["host"]
        return headers

    def _client(self) -> aiohttp.ClientSession:
        assert self._session is not None, "S3 store not started"
        return self._session

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        path = self._path(key)
        failure: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            # aiohttp reports a failing body as its own connection error; keep the real cause.
            sent = 0
            try:
                async for chunk in chunks:
                    sent += len(chunk)
                    yield chunk
            except BaseException as err:
                failure.append(err)
                raise
            if sent != size:
                failure.append(BlobError(f"got {sent} bytes, not {size}"))
                raise failure[-1]

        headers = {**self._signed("PUT", path), "Content-Length": str(size),
                   "Content-Type": "application/octet-stream"}
        try:
            async with self._client().put(self.endpoint + path, data=body(), headers=headers) as response:
                if response.status != 200:
                    raise BlobError(f"S3 PUT {key}: {response.status} {await _reason(response)}")
        except (aiohttp.ClientError, TimeoutError, BlobError) as err:
            if failure:
                raise failure[0] from None
            if isinstance(err, TimeoutError):
                # The store is slow, not the client: no timeout of the caller's.
                raise BlobError(f"S3 PUT {key}: timed out") from err
            raise

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        headers = self._signed("GET", path)
        if offset or length is not None:
            headers["Range"] = f"bytes={offset}-" + (str(offset + length - 1) if length is not None else "")
        async with self._client().get(self.endpoint + path, headers=headers) as response:
            if response.status not in (200, 206):
                raise BlobError(f"S3 GET {key}: {response.status} {await _reason(response)}")
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                yield chunk

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        async with self._client().head(self.endpoint + path, headers=self._signed("HEAD", path)) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise BlobError(f"S3 HEAD {key}: {response.status}")
            return response.content_length

    async def delete(self, key: str) -> bool:
        # S3 answers a DELETE alike whether or not the object was there.
        existed = await self.size(key) is not None
        path = self._path(key)
        async with self._client().delete(self.endpoint + path, headers=self._signed("DELETE", path)) as response:
            if response.status not in (200, 204):
                raise BlobError(f"S3 DELETE {key}: {response.status} {await _reason(response)}")
        return existed


async def _reason(response: aiohttp.ClientResponse) -> str:
    """The error code in an S3 error body, for one log line."""
    text = (await response.text(errors="replace"))[:2000]
    found = re.search(r"<Code>([^<]*)</Code>", text)
    return found.group(1) if found else response.reason or ""
