"""Peers the tests run as subprocesses (coturn, HAProxy): waiting until they listen."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def listening(process: subprocess.Popen[bytes], port: int, log: Path, name: str) -> None:
    """Wait until ``process`` accepts TCP connections on 127.0.0.1 ``port``; fail with the end of
    its ``log`` if it exits first."""
    async with asyncio.timeout(60):
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {_tail(log)}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return
